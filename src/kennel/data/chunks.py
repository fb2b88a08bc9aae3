"""Reading a table a chunk at a time, whatever it is: a CSV file (any of the suffixes kennel
reads, compressed too), a Parquet file, or a Parquet data set (a folder, a glob, a URL; also a
folder of captured requests). Batch scoring and monitoring read their input through here, so
memory stays flat whatever the size and both accept the same inputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.data.formats import Format, csv_separator, require_format
from kennel.errors import DataError, UserError
from kennel.util import first_line

if TYPE_CHECKING:
    import pandas as pd

    from kennel.config import DataConfig
    from kennel.data.sources import Source


@dataclass
class Rows:
    """A table to read chunk by chunk: its columns (all files' together, in order of first
    appearance), its row count when cheap to know, and the chunks (read when iterated)."""

    location: str
    columns: list[str]
    total: int | None
    files: int
    chunks: Iterator[pd.DataFrame]


def file_format(path: Path, what: str) -> Format:
    """The format of an input or output file by its name: the list training reads."""
    try:
        return require_format(str(path), f"{what} file")
    except DataError as exc:
        raise UserError(str(exc).split(", or set data.format")[0]) from None


def dataset_of(location: str, data: DataConfig) -> Source | None:
    """``location`` as a Parquet data set (a folder, a glob, a URL), or None for one file."""
    from kennel.data.sources import Source

    source = Source(data.model_copy(update={"source": location, "format": "auto"}))
    remote_folder = "://" in location and not Path(location).suffix
    return source if source.is_dataset or remote_folder else None


def open_rows(location: str, data: DataConfig, chunk_size: int) -> Rows:
    """The table at ``location``, to be read ``chunk_size`` rows at a time; a missing or
    unreadable input is a one-line user error."""
    dataset = dataset_of(location, data)
    if dataset is not None:
        return dataset_rows(dataset, location, chunk_size)
    path = Path(location)
    fmt = file_format(path, "input")
    if not path.is_file():
        raise UserError(f"input file '{path}' does not exist")
    columns, total = _file_columns(path, fmt)
    return Rows(location, columns, total, 1, _file_chunks(path, fmt, chunk_size))


def _file_columns(path: Path, fmt: Format) -> tuple[list[str], int | None]:
    """(column names, row count if cheap to know) without reading the rows."""
    import pandas as pd

    try:
        if fmt == "csv":
            return list(pd.read_csv(path, nrows=0, sep=csv_separator(str(path))).columns), None
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        return list(parquet.schema_arrow.names), parquet.metadata.num_rows
    except Exception as exc:  # empty file, not a CSV/Parquet file at all
        raise UserError(f"cannot read input file '{path}': {first_line(exc)}") from None


def _file_chunks(path: Path, fmt: Format, chunk_size: int) -> Iterator[pd.DataFrame]:
    if fmt == "csv":
        import pandas as pd

        with pd.read_csv(path, chunksize=chunk_size, sep=csv_separator(str(path))) as reader:
            yield from reader
        return
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
        yield batch.to_pandas()


def dataset_rows(source: Any, location: str, chunk_size: int) -> Rows:
    """A Parquet data set read file by file, in sorted order (footers first: the columns of
    every file and the row count)."""
    import pyarrow.parquet as pq

    try:
        fs, files = source.dataset_files()
    except DataError as exc:
        raise UserError(str(exc)) from None
    total = 0
    columns: dict[str, None] = {}
    for file in files:
        with fs.open(file, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            total += parquet.metadata.num_rows
            columns.update(dict.fromkeys(parquet.schema_arrow.names))

    def chunks() -> Iterator[pd.DataFrame]:
        for file in files:
            with fs.open(file, "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_size):
                    yield batch.to_pandas()

    return Rows(location, list(columns), total, len(files), chunks())
