"""Reading one table file into pandas, whatever its format: CSV in its detected dialect
(:mod:`kennel.data.dialects`), Parquet, and workbooks (:mod:`kennel.data.workbooks`).

Training (:class:`kennel.data.sources.Source`) reads a file whole; batch scoring and monitoring
(:mod:`kennel.data.chunks`) read it a chunk at a time. Both go through here, so a file gives the
same columns and types on every path. CSV files are read by pandas' C parser with the detected
dialect: it was the fastest reader measured on this project's machines (docs/data.md,
"Which reader"), and it gives exactly the types ``pandas.read_csv`` gives.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kennel.data.dialects import HEAD_BYTES, CsvDialect, detect
from kennel.data.formats import Format, check_duplicates, strip_suffixes
from kennel.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from kennel.config.sections import CsvConfig, DataConfig

logger = logging.getLogger(__name__)

#: What an undecodable file is retried in when its head looked like UTF-8.
FALLBACK_ENCODING = "cp1252"


class File:
    """One file on an fsspec filesystem (local ones are read by path, so pandas reads them
    directly); ``display`` names it in messages."""

    def __init__(self, fs: Any, path: str, display: str) -> None:
        from fsspec.utils import infer_compression

        self.fs = fs
        self.path = path
        self.display = display
        self.compression = infer_compression(path)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.local = protocol in ("file", "local")

    def open(self) -> Any:
        """A binary handle on the (decompressed) bytes."""
        return self.fs.open(self.path, "rb", compression=self.compression)

    def target(self) -> Any:
        """What ``pandas.read_csv`` is given: the path of a local file, else a handle."""
        return self.path if self.local else self.open()

    def head(self, size: int = HEAD_BYTES + 1) -> bytes:
        with self.open() as handle:
            return handle.read(size)


def csv_dialect(file: File, settings: CsvConfig) -> CsvDialect:
    """The file's dialect (the set ``data.csv.*`` values win), logged once."""
    head = file.head()
    if not head.lstrip(codecs.BOM_UTF8).strip():
        raise DataError(f"{file.display}: the file is empty")
    tab = strip_suffixes(file.path)[1] == ".tsv"
    dialect = detect(head[:HEAD_BYTES], settings, complete=len(head) <= HEAD_BYTES, tab_default=tab)
    logger.info("reading %s as CSV: %s", file.display, dialect.describe())
    return dialect


def _read_csv(file: File, dialect: CsvDialect, **extra: Any) -> Any:
    import pandas as pd

    target = file.target()
    try:
        return pd.read_csv(target, **{**dialect.pandas_kwargs(), **extra})
    finally:
        if not isinstance(target, str) and "chunksize" not in extra:
            target.close()


def csv_header(file: File, dialect: CsvDialect) -> list[str]:
    """The column names as written (pandas renames a repeated name ``a.1``: checked here)."""
    if not dialect.header:
        return list(dialect.names or [])
    header = _with_fallback(
        file, dialect, lambda: _read_csv(file, dialect, header=None, nrows=1, dtype=str)
    )
    return [str(c) for c in header.iloc[0].tolist()] if len(header) else []


def read_csv(file: File, dialect: CsvDialect) -> pd.DataFrame:
    """The whole file with ``dialect``; a file that is not UTF-8 after a UTF-8 head is read
    again as Windows-1252 (with a warning, and the dialect says so)."""
    return _with_fallback(file, dialect, lambda: _read_csv(file, dialect))


def _with_fallback(file: File, dialect: CsvDialect, read: Any) -> Any:
    try:
        return read()
    except UnicodeDecodeError as exc:
        if "encoding" in dialect.set_by_config or dialect.encoding != "utf-8":
            raise DataError(
                f"{file.display}: cannot decode it as {dialect.encoding} ({exc.reason} at byte "
                f"{exc.start}); set data.csv.encoding, e.g. data.csv.encoding=cp1252"
            ) from None
        logger.warning(
            "%s: not UTF-8 after its first %d KiB; reading it as %s",
            file.display,
            HEAD_BYTES // 1024,
            FALLBACK_ENCODING,
        )
        dialect.encoding = FALLBACK_ENCODING
        dialect.notes.append(f"not UTF-8 past the first {HEAD_BYTES // 1024} KiB")
        return read()


def csv_columns(file: File, dialect: CsvDialect) -> list[str]:
    """The column names as pandas will give them, without reading the rows."""
    return [str(c) for c in _read_csv(file, dialect, nrows=0).columns]


def csv_chunks(file: File, dialect: CsvDialect, chunk_size: int) -> Iterator[pd.DataFrame]:
    """The rows ``chunk_size`` at a time (an undecodable chunk is a one-line error naming
    ``data.csv.encoding``: earlier chunks may have been written already)."""
    reader = _read_csv(file, dialect, chunksize=chunk_size)
    try:
        with reader:
            yield from reader
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{file.display}: cannot decode it as {dialect.encoding} ({exc.reason}); set "
            "data.csv.encoding, e.g. data.csv.encoding=cp1252"
        ) from None


def arrow_to_pandas(table: Any) -> pd.DataFrame:
    """An Arrow table as pandas, one block per column: each column's Arrow memory is let go
    as it is converted (the caller keeps no reference to ``table``), and what Arrow's
    allocator then holds unused goes back to the system. A million rows × 20 numbers: peak
    70 MiB lower, and 200 MiB less kept through the rest of a training run."""
    import pyarrow as pa

    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    pa.default_memory_pool().release_unused()
    return frame


def read_file(file: File, fmt: Format, data: DataConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The whole file as one frame with string column names, and what was detected (the
    dialect of a CSV, the sheet of a workbook) for the log and the run's ``source.json``."""
    if fmt == "excel":
        from kennel.data.workbooks import read_workbook

        frame, info = read_workbook(file, data.sheet)
    elif fmt == "csv":
        dialect = csv_dialect(file, data.csv)
        check_duplicates(file.display, csv_header(file, dialect))
        frame = read_csv(file, dialect)
        info = dialect.to_dict()
    else:
        import pyarrow.parquet as pq

        with file.fs.open(file.path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            check_duplicates(file.display, list(parquet.schema_arrow.names))
            frame = arrow_to_pandas(parquet.read())
        info = {"format": "parquet"}
    frame.columns = [str(c) for c in frame.columns]
    return frame, info


__all__ = [
    "File",
    "csv_chunks",
    "csv_columns",
    "csv_dialect",
    "csv_header",
    "arrow_to_pandas",
    "read_csv",
    "read_file",
]
