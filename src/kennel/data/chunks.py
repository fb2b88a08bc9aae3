"""Reading a table a chunk at a time, whatever it is: a CSV file (any of the suffixes kennel
reads, compressed too, in the dialect detected for that file), a Parquet file, a workbook (read
whole, then cut into chunks), or a Parquet data set (a folder, a glob, a URL; also a folder of
captured requests). Batch scoring and monitoring read their input through here, so memory stays
flat whatever the size (workbooks aside) and both accept the same inputs as training."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.data.formats import Format, check_duplicates, require_format
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
    """The format of an input or output file by its name: the list training reads (outputs
    are CSV or Parquet)."""
    try:
        fmt = require_format(str(path), f"{what} file")
    except DataError as exc:
        raise UserError(str(exc).split(", or set data.format")[0]) from None
    if what == "output" and fmt == "excel":
        raise UserError(
            f"output file '{path}': kennel writes CSV or Parquet; expected a name ending in "
            ".csv or .parquet"
        )
    return fmt


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
    try:
        return _file_rows(path, fmt, data, chunk_size)
    except UserError:
        raise
    except Exception as exc:  # empty file, not a table of that format at all
        raise UserError(f"cannot read input file '{path}': {first_line(exc)}") from None


def _file_rows(path: Path, fmt: Format, data: DataConfig, chunk_size: int) -> Rows:
    """One file: its columns (and row count when cheap) now, its rows when iterated."""
    import fsspec

    from kennel.data import readers

    file = readers.File(fsspec.filesystem("file"), str(path), str(path))
    if fmt == "csv":
        dialect = readers.csv_dialect(file, data.csv)
        check_duplicates(str(path), readers.csv_header(file, dialect))
        columns = readers.csv_columns(file, dialect)
        return Rows(str(path), columns, None, 1, readers.csv_chunks(file, dialect, chunk_size))
    if fmt == "excel":
        from kennel.data.workbooks import read_workbook

        frame, _ = read_workbook(file, data.sheet)
        chunks = (frame.iloc[i : i + chunk_size] for i in range(0, len(frame), chunk_size))
        return Rows(str(path), list(frame.columns), len(frame), 1, chunks)
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    batches = parquet.iter_batches(batch_size=chunk_size)
    chunks = (batch.to_pandas() for batch in batches)
    return Rows(str(path), list(parquet.schema_arrow.names), parquet.metadata.num_rows, 1, chunks)


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
