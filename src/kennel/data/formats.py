"""The file formats kennel reads: one list for training (``data.source``), ``kennel evaluate
--data``, ``kennel predict --input`` and ``kennel monitor --input``, so a file one command
accepts every other command accepts too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Literal

from kennel.errors import DataError

Format = Literal["csv", "parquet", "excel"]
#: The formats ``data.format`` may name (besides ``auto``).
FORMATS: tuple[Format, ...] = ("csv", "parquet", "excel")

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
#: Workbooks python-calamine reads: Excel (also macro-enabled, binary and 97-2003) and
#: OpenDocument spreadsheets.
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")
#: Every suffix a table file may have (before a compression suffix, for CSV).
SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES + EXCEL_SUFFIXES


def strip_suffixes(name: str) -> tuple[str, str]:
    """(stem, format suffix) with compression suffixes removed: ``a.csv.gz`` -> (a, .csv)."""
    path = PurePosixPath(name)
    while path.suffix.lower() in COMPRESSION_SUFFIXES:
        path = path.with_suffix("")
    return path.stem, path.suffix.lower()


def format_of(name: str) -> Format | None:
    """The format a file name says (``rows.csv.gz`` -> csv, ``book.xlsx`` -> excel), or None."""
    suffix = strip_suffixes(name)[1]
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in EXCEL_SUFFIXES:
        return "excel"
    return None


def require_format(name: str, what: str, configured: str = "auto") -> Format:
    """``configured`` unless it is ``auto``, else the format the name says; a name without
    a known suffix is a one-line error listing the suffixes."""
    if configured in FORMATS:
        return configured  # type: ignore[return-value]
    fmt = format_of(name)
    if fmt is None:
        suffix = strip_suffixes(name)[1] or "(none)"
        raise DataError(
            f"{what} '{name}' has the unknown extension '{suffix}'; expected one of: "
            f"{', '.join(SUFFIXES)} (CSV also compressed: {', '.join(COMPRESSION_SUFFIXES[:4])}"
            f"), or set data.format=csv, data.format=parquet or data.format=excel"
        )
    return fmt


def check_duplicates(display: str, columns: Sequence[str]) -> None:
    """One-line error for the first repeated column name (readers rename repeats ``a.1``,
    so the names are checked as the file writes them)."""
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise DataError(
                f"{display}: duplicate column name '{column}'; column names must be unique"
            )
        seen.add(column)
