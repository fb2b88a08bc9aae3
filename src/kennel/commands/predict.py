"""``kennel predict``: batch prediction from a CSV or Parquet file into another one.

The model is loaded once (``mlflow.pyfunc.load_model``, exactly as it is served); the input
is read in chunks (pandas ``chunksize`` for CSV, pyarrow ``iter_batches`` for Parquet) and
each chunk is written out as soon as it is predicted (CSV append, pyarrow ``ParquetWriter``),
so memory stays flat whatever the file size. The output holds every input column followed by
the model's ``prediction`` (and ``proba_<class>``) columns. It is written to a temporary file
beside the target and renamed at the end: a failed run never leaves a half file behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kennel.commands.common import emit
from kennel.errors import UserError
from kennel.util import first_line

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

Format = Literal["csv", "parquet"]
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


def file_format(path: Path, what: str) -> Format:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise UserError(
        f"{what} file '{path}' has the unknown extension '{suffix or '(none)'}'; expected "
        f"one of: {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def input_columns(path: Path, fmt: Format) -> tuple[list[str], int | None]:
    """(column names, row count if cheap to know) without reading the rows."""
    import pandas as pd

    try:
        if fmt == "csv":
            return list(pd.read_csv(path, nrows=0).columns), None
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        return list(parquet.schema_arrow.names), parquet.metadata.num_rows
    except UserError:
        raise
    except Exception as exc:  # empty file, not a CSV/Parquet file at all
        raise UserError(f"cannot read input file '{path}': {first_line(exc)}") from None


def iter_chunks(path: Path, fmt: Format, chunk_size: int) -> Iterator[pd.DataFrame]:
    if fmt == "csv":
        import pandas as pd

        with pd.read_csv(path, chunksize=chunk_size) as reader:
            yield from reader
        return
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=chunk_size):
        yield batch.to_pandas()


class ChunkWriter:
    """Appends frames to a CSV file or a Parquet file (schema fixed by the first chunk)."""

    def __init__(self, path: Path, fmt: Format) -> None:
        self.path = path
        self.fmt = fmt
        self._writer: Any = None
        self._schema: Any = None
        self._started = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "csv":
            frame.to_csv(
                self.path, mode="a" if self._started else "w", header=not self._started, index=False
            )
            self._started = True
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.path, self._schema)
        else:
            try:
                table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise UserError(
                    f"a chunk's column types differ from the first chunk's: {first_line(exc)}"
                ) from None
        self._writer.write_table(table)
        self._started = True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _progress(total: int | None, disable: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="rows",
        unit_scale=True,
        desc="predict",
        file=sys.stderr,
        disable=disable,
        dynamic_ncols=True,
    )


def run(args: argparse.Namespace) -> int:
    from kennel.serving import load_model, required_columns, resolve_model_uri

    started = time.perf_counter()
    source = Path(args.input)
    target = Path(args.output)
    if args.chunk_size is None or args.chunk_size < 1:
        raise UserError(f"--chunk-size {args.chunk_size} is not allowed; expected a number >= 1")
    in_fmt = file_format(source, "input")
    out_fmt = file_format(target, "output")
    if not source.is_file():
        raise UserError(f"input file '{source}' does not exist")
    if source.resolve() == target.resolve():
        raise UserError(f"--output '{target}' is the input file; expected another path")
    if not target.parent.exists():
        raise UserError(f"output folder '{target.parent}' does not exist")
    columns, total = input_columns(source, in_fmt)

    model_uri = args.model_uri.strip()
    if model_uri.startswith(("runs:/", "models:/")):
        from kennel import tracking

        tracking.configure()
        resolve_model_uri(model_uri)
    model = load_model(model_uri)
    missing = [c for c in required_columns(model) if c not in set(columns)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"input file '{source}' lacks the model's column '{missing[0]}'{more}")

    disable = bool(args.no_progress) or not sys.stderr.isatty()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    writer = ChunkWriter(tmp, out_fmt)
    rows = chunks = 0
    prediction_columns: list[str] = []
    try:
        with _progress(total, disable) as bar:
            for chunk in iter_chunks(source, in_fmt, args.chunk_size):
                out = _predict_chunk(model, chunk, rows, source)
                prediction_columns = list(out.columns)
                writer.write(_join(chunk, out))
                rows += len(chunk)
                chunks += 1
                bar.update(len(chunk))
        writer.close()
        if chunks == 0:  # a header-only file: still write a (header-only) result
            raise UserError(f"input file '{source}' has no rows")
        os.replace(tmp, target)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    duration = round(time.perf_counter() - started, 3)
    logger.info("wrote %d rows in %d chunk(s) to %s in %.1f s", rows, chunks, target, duration)
    emit(
        {
            "model_uri": model_uri,
            "input": str(source),
            "output": str(target),
            "rows": rows,
            "chunks": chunks,
            "prediction_columns": prediction_columns,
            "duration_s": duration,
        },
        args,
    )
    return 0


def _predict_chunk(model: Any, chunk: pd.DataFrame, offset: int, source: Path) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    from kennel.errors import DataError
    from kennel.serving import explain

    schema = model.metadata.get_input_schema()
    if schema is not None and schema.has_input_names():
        # Columns the model does not take (the target, identifiers, extras) stay in the output
        # file but are not sent: MLflow would warn about them once per chunk.
        names = set(schema.input_names())
        chunk = chunk[[c for c in chunk.columns if c in names]]
    try:
        return model.predict(chunk)
    except (MlflowException, DataError) as exc:
        raise UserError(
            f"rows {offset + 1}-{offset + len(chunk)} of '{source}': {explain(exc)}"
        ) from None


def _join(chunk: pd.DataFrame, out: pd.DataFrame) -> pd.DataFrame:
    """Input columns, then the prediction columns (replacing input columns of those names)."""
    import pandas as pd

    clash = [c for c in out.columns if c in chunk.columns]
    if clash:
        chunk = chunk.drop(columns=clash)
    out = out.set_axis(chunk.index)
    return pd.concat([chunk, out], axis=1)
