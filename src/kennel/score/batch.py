"""Batch scoring: a CSV or Parquet file (or a Parquet data set) into another one.

The model is loaded once (``mlflow.pyfunc.load_model``, exactly as it is served); the input
is read in chunks (pandas ``chunksize`` for CSV, pyarrow ``iter_batches`` for Parquet) and
each chunk is written out as soon as it is predicted (CSV append, pyarrow ``ParquetWriter``),
so memory stays flat whatever the file size. The output holds every input column followed by
the model's ``prediction`` (and ``proba_<class>``) columns. It is written to a temporary file
beside the target and renamed at the end: a failed run never leaves a half file behind. With
``resource.cluster`` the workers score partition by partition (:mod:`kennel.score.distributed`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from kennel.data.chunks import dataset_of, dataset_rows, file_format, open_rows
from kennel.data.formats import CSV_SUFFIXES, PARQUET_SUFFIXES, Format
from kennel.errors import UserError
from kennel.score.chunks import can_explain, join_predictions, score_chunk
from kennel.util import first_line

if TYPE_CHECKING:
    from kennel.config import Config
    from kennel.data.sources import Source

logger = logging.getLogger(__name__)


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


def predict(
    config: Config,
    model_uri: str,
    input: str,
    output: str,
    *,
    chunk_size: int = 100_000,
    progress: bool = False,
    provenance: bool = False,
    explain: bool = False,
) -> dict[str, Any]:
    """Score ``input`` (a CSV/Parquet file or a Parquet data set) into ``output`` with the
    model at ``model_uri``; on a cluster (``resource.cluster``) partition by partition into
    an output folder. ``provenance``: also ``model_name``, ``model_version``,
    ``model_alias`` and ``scored_at`` (UTC) columns, as captured requests have, so batch
    scores can be monitored like served ones. ``explain``: also ``contrib_<column>`` and
    ``contrib_base`` per row. Returns what ``kennel predict`` prints."""
    from kennel.cluster import is_distributed

    if chunk_size is None or chunk_size < 1:
        raise UserError(f"--chunk-size {chunk_size} is not allowed; expected a number >= 1")
    dataset = dataset_of(input, config.data)
    if is_distributed(config.resource.cluster):
        return _predict_on_cluster(
            config, model_uri, input, output, dataset, progress, explain=explain,
            provenance=provenance,
        )  # fmt: skip
    started = time.perf_counter()
    source = Path(input)
    target = Path(output)
    out_fmt = file_format(target, "output")
    if dataset is None and source.is_file() and source.resolve() == target.resolve():
        raise UserError(f"--output '{target}' is the input file; expected another path")
    rows_in = open_rows(input, config.data, chunk_size)
    columns, total, chunks_of = rows_in.columns, rows_in.total, rows_in.chunks
    if not target.parent.exists():
        raise UserError(f"output folder '{target.parent}' does not exist")

    model_uri = model_uri.strip()
    model = _load(model_uri, explain=explain)
    _check_columns(model, columns, input)
    stamp = provenance_of(model_uri) if provenance else None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    writer = ChunkWriter(tmp, out_fmt)
    try:
        with _progress(total, not progress) as bar:
            rows, chunks, prediction_columns = _write_scores(
                model, chunks_of, writer, bar, f"'{source}'", explain=explain, stamp=stamp
            )
        writer.close()
        if chunks == 0:  # a header-only file: still write a (header-only) result
            raise UserError(f"input file '{source}' has no rows")
        os.replace(tmp, target)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    duration = round(time.perf_counter() - started, 3)
    logger.info("wrote %d rows in %d chunk(s) to %s in %.1f s", rows, chunks, target, duration)
    return {
        "model_uri": model_uri,
        "input": str(input),
        "output": str(target),
        "rows": rows,
        "chunks": chunks,
        "prediction_columns": prediction_columns,
        "duration_s": duration,
    }


def _write_scores(
    model: Any,
    chunks_of: Any,
    writer: ChunkWriter,
    bar: Any,
    where: str,
    *,
    explain: bool,
    stamp: dict[str, Any] | None,
) -> tuple[int, int, list[str]]:
    """Score and write every chunk: (rows, chunks, the prediction columns)."""
    rows = chunks = 0
    prediction_columns: list[str] = []
    for chunk in chunks_of:
        span = f"rows {rows + 1}-{rows + len(chunk)} of {where}"
        out = score_chunk(model, chunk, where=span, explain=explain)
        prediction_columns = list(out.columns)
        scored = join_predictions(chunk, out)
        if stamp is not None:
            scored = scored.assign(**stamp, scored_at=pd.Timestamp.now(tz="UTC"))
        writer.write(scored)
        rows += len(chunk)
        chunks += 1
        bar.update(len(chunk))
    return rows, chunks, prediction_columns


def provenance_of(model_uri: str) -> dict[str, str | None]:
    """``model_name``, ``model_version`` and ``model_alias`` of a model URI (the registered
    version it names, when it names one)."""
    from kennel.serve.models import resolve_model_uri

    ref = resolve_model_uri(model_uri)
    alias = (
        model_uri.rsplit("@", 1)[1]
        if model_uri.startswith("models:/") and "@" in model_uri
        else None
    )
    return {
        "model_name": ref.name or model_uri,
        "model_version": str(ref.version) if ref.version is not None else None,
        "model_alias": alias,
    }


def _load(model_uri: str, *, explain: bool = False) -> Any:
    """The model at ``model_uri`` (its URI checked against the store first); with
    ``explain``, a user error when it cannot explain."""
    from kennel.serve.models import load_model, resolve_model_uri

    if model_uri.startswith(("runs:/", "models:/")):
        from kennel import tracking

        tracking.configure()
        resolve_model_uri(model_uri)
    model = load_model(model_uri)
    if explain and not can_explain(model):
        raise UserError(
            f"model '{model_uri}' cannot explain its predictions (saved before kennel "
            "explained them); retrain it, or leave out --explain"
        )
    return model


def _check_columns(model: Any, columns: list[str], where: str) -> None:
    from kennel.serve.models import required_columns

    missing = [c for c in required_columns(model) if c not in set(columns)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"input '{where}' lacks the model's column '{missing[0]}'{more}")


def _predict_on_cluster(
    config: Config,
    model_uri: str,
    input: str,
    output: str,
    dataset: Source | None,
    progress: bool,
    *,
    explain: bool = False,
    provenance: bool = False,
) -> dict[str, Any]:
    """Score a Parquet data set on the cluster into a folder (one file per partition)."""
    import shutil
    import tempfile

    import mlflow.artifacts

    from kennel import cluster
    from kennel.score import distributed

    started = time.perf_counter()
    target = Path(output)
    _check_output_folder(target)
    if dataset is None:  # one local Parquet file: a data set of one
        dataset = _single_file(config, input)
    footers = dataset_rows(dataset, input, 1)  # footers only: columns and rows
    columns, total = footers.columns, footers.total

    model_uri = model_uri.strip()
    # Checked here: a bad model is one line before any worker starts. Loading puts the
    # model's own copy of kennel (code/) first on sys.path; worker processes inherit
    # sys.path, and must import the installed kennel, so it is put back.
    path = list(sys.path)
    model = _load(model_uri, explain=explain)
    sys.path[:] = path
    _check_columns(model, columns, input)
    local = Path(model_uri)
    folder = Path(tempfile.mkdtemp(prefix="kennel-predict-"))
    try:
        if not local.is_dir():
            local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder)))
        with cluster.connect(config.resource.cluster, num_threads=config.resource.num_threads) as (
            client,
            info,
        ):
            counts = distributed.score_dataset(
                client,
                model_folder=local,
                source=dataset,
                output=target,
                total=total,
                progress=progress,
                explain=explain,
                stamp=provenance_of(model_uri) if provenance else None,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    duration = round(time.perf_counter() - started, 3)
    logger.info(
        "wrote %d rows in %d partition file(s) to %s in %.1f s on %s",
        counts["rows"],
        counts["partitions"],
        target,
        duration,
        info.setting,
    )
    return {
        "model_uri": model_uri,
        "input": str(input),
        "output": str(target),
        **counts,
        "cluster": info.to_dict(),
        "duration_s": duration,
    }


def _single_file(config: Config, input: str) -> Any:
    """One local Parquet file as a data set of one (the cluster reads data sets)."""
    from kennel.data.sources import Source

    if file_format(Path(input), "input") != "parquet":
        raise UserError(
            f"input '{input}' is not Parquet; with resource.cluster the input is a "
            "Parquet file or data set (a folder, a glob or a URL)"
        )
    data = config.data.model_copy(update={"source": str(Path(input).parent), "format": "auto"})
    return _SingleFile(Source(data), Path(input))


def _check_output_folder(target: Path) -> None:
    """With a cluster the output is a new (or empty) folder, one file per partition."""
    if target.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise UserError(
            f"--output '{target}' is a file name; with resource.cluster the output is a folder "
            "(one Parquet file per partition)"
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"--output '{target}' exists and is not an empty folder")
    if not target.parent.exists():
        raise UserError(f"output folder '{target.parent}' does not exist")


class _SingleFile:
    """A one-file 'data set' (the parts of :class:`Source` scoring uses)."""

    def __init__(self, source: Source, file: Path) -> None:
        self._source = source
        self._file = file.resolve()

    def dataset_files(self) -> tuple[Any, list[str]]:
        import fsspec

        if not self._file.is_file():
            raise UserError(f"input file '{self._file}' does not exist")
        return fsspec.filesystem("file"), [str(self._file)]

    def storage_options(self) -> dict[str, Any]:
        return {}
