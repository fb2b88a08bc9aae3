"""How a CSV file is written: separator, quote, decimal and thousands marks, encoding, header.

Files come from spreadsheets and databases, not only from ``pandas.to_csv``: Excel in most of
Europe saves ``;``-separated files with decimal commas, in UTF-8 with a byte-order mark or in
Windows-1252. Reading such a file with pandas' defaults gives one column, so kennel detects the
dialect from the head of each file (the first :data:`HEAD_BYTES`) before reading it:

* **encoding**: a byte-order mark names it (UTF-8, UTF-16, UTF-32); else UTF-8 when the head
  decodes as UTF-8; else Windows-1252 (what Excel writes on Western-European Windows), or
  Latin-1 for the few bytes Windows-1252 leaves undefined;
* **delimiter, quote, escape, header, leading lines to skip, comment character**: DuckDB's
  CSV sniffer (``sniff_csv``), which tries the candidate dialects against the rows and keeps
  the one that gives consistent columns and types. A first line ``sep=;`` (Excel's own hint)
  is obeyed;
* **decimal mark**: for a file not separated by commas, the sniffer is asked again with a
  decimal comma; when more columns then read as numbers, the file's decimal mark is ``,``;
* **thousands mark**: likewise, the mark that is neither separator nor decimal mark
  (``.`` beside a decimal comma) is kept when it makes more columns numbers (``1.234,5``).

Every ``data.csv.*`` setting wins over detection, and the detection of the rest takes the set
values as given. The file is then read by pandas' C parser with the dialect (so clean files give
exactly the types ``pandas.read_csv`` gives); the dialect is logged and saved in the run
(``source.json``).
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kennel.config.sections import CsvConfig

logger = logging.getLogger(__name__)

#: Bytes of the file's head the dialect is detected from.
HEAD_BYTES = 1 << 18
#: What pandas reads as missing by default: the sniffer must type such cells the same way.
NA_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
#: Byte-order marks, longest first (UTF-32's LE mark starts with UTF-16's).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
NUMBER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE"}
EXCEL_SEP_LINE = re.compile(r"^\s*sep=(.)\s*$")
#: Fields of :class:`CsvDialect` a ``data.csv.*`` setting of the same name overrides.
SETTINGS = (
    "delimiter", "quotechar", "escapechar", "decimal", "thousands", "encoding", "header",
    "skiprows", "comment",
)  # fmt: skip


@dataclass
class CsvDialect:
    """How one CSV file is read; :meth:`pandas_kwargs` gives ``pandas.read_csv``'s arguments."""

    delimiter: str = ","
    quotechar: str = '"'
    escapechar: str | None = None
    decimal: str = "."
    thousands: str | None = None
    encoding: str = "utf-8"
    bom: bool = False
    header: bool = True
    skiprows: int = 0
    comment: str | None = None
    names: list[str] | None = None
    """Column names when the file has no header row (``column0``, ``column1``, ...)."""
    set_by_config: list[str] = field(default_factory=list)
    """The fields a ``data.csv.*`` setting gave (the others were detected)."""
    detected_by: str = "defaults"
    notes: list[str] = field(default_factory=list)

    def pandas_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``pandas.read_csv`` for this dialect."""
        kwargs: dict[str, Any] = {
            "sep": self.delimiter,
            "quotechar": self.quotechar or '"',
            "decimal": self.decimal,
            "encoding": self.encoding,
            "header": 0 if self.header else None,
        }
        if not self.quotechar:
            kwargs["quoting"] = 3  # csv.QUOTE_NONE
        if self.escapechar:
            kwargs["escapechar"] = self.escapechar
        if self.thousands:
            kwargs["thousands"] = self.thousands
        if self.skiprows:
            kwargs["skiprows"] = self.skiprows
        if self.comment:
            kwargs["comment"] = self.comment
        if not self.header and self.names:
            kwargs["names"] = list(self.names)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return {"format": "csv", **asdict(self)}

    def describe(self) -> str:
        """``delimiter ';', decimal ',', encoding utf-8 with BOM, header row`` for the log."""
        encoding = self.encoding + (" with BOM" if self.bom else "")
        parts = [
            f"delimiter {self.delimiter!r}",
            f"decimal {self.decimal!r}",
            f"thousands {self.thousands!r}" if self.thousands else "no thousands mark",
            f"encoding {encoding}",
            "header row" if self.header else "no header row",
        ]
        if self.quotechar != '"':
            parts.append(f"quote {self.quotechar!r}")
        if self.skiprows:
            parts.append(f"{self.skiprows} line(s) skipped")
        if self.comment:
            parts.append(f"comment {self.comment!r}")
        if self.escapechar:
            parts.append(f"escape {self.escapechar!r}")
        source = self.detected_by
        if self.set_by_config:
            source += "; set: " + ", ".join(f"data.csv.{k}" for k in self.set_by_config)
        return ", ".join(parts) + f" ({source})"


def detect_encoding(head: bytes) -> tuple[str, bool]:
    """(codec, whether a byte-order mark named it) for the first bytes of a file."""
    for bom, name in BOMS:
        if head.startswith(bom):
            return name, True
    try:
        # An incremental decoder: a character cut at the end of the head is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8", False
    except UnicodeDecodeError:
        pass
    try:
        head.decode("cp1252")
        return "cp1252", False
    except UnicodeDecodeError:
        return "latin-1", False


def head_text(head: bytes, encoding: str, complete: bool) -> str:
    """The head decoded, without a byte-order mark, and (when the file goes on) cut after its
    last line break, so the sniffer sees no half row."""
    text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    if not complete:
        end = text.rfind("\n")
        text = text[: end + 1] if end > 0 else text
    return text


def detect(head: bytes, settings: CsvConfig, *, complete: bool, tab_default: bool) -> CsvDialect:
    """The dialect of a file from its first bytes (``complete``: the whole file); the set
    ``data.csv.*`` values are taken as given. Falls back to pandas' defaults (a tab for
    ``.tsv``) with a warning when the sniffer cannot tell."""
    given = {k: getattr(settings, k) for k in SETTINGS if getattr(settings, k) is not None}
    dialect = CsvDialect(delimiter="\t" if tab_default else ",")
    if "encoding" in given:
        dialect.encoding = given["encoding"]
        dialect.bom = any(head.startswith(b) for b, _ in BOMS)
    else:
        dialect.encoding, dialect.bom = detect_encoding(head)
    text = head_text(head, dialect.encoding, complete)
    first = text.split("\n", 1)[0].rstrip("\r")
    sep_line = EXCEL_SEP_LINE.match(first)
    if sep_line:  # Excel's "sep=;" line: the separator, and one line to skip
        dialect.delimiter = sep_line.group(1)
        text = text.split("\n", 1)[1] if "\n" in text else ""
        dialect.skiprows = 1
        dialect.notes.append("first line 'sep=' names the delimiter")
    try:
        _sniff_into(dialect, text, given, fixed_delimiter=bool(sep_line))
    except Exception as exc:  # noqa: BLE001 - any sniffer failure: pandas' defaults
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        dialect.notes.append(f"the dialect could not be detected ({reason[:200]})")
        logger.warning("CSV dialect not detected (%s); reading with defaults", reason[:200])
    for key, value in given.items():
        setattr(dialect, key, value)
    dialect.set_by_config = sorted(given)
    if dialect.thousands == "":
        dialect.thousands = None
    if dialect.comment == "":
        dialect.comment = None
    return dialect


def _sniff_into(
    dialect: CsvDialect, text: str, given: dict[str, Any], *, fixed_delimiter: bool
) -> None:
    """Fill ``dialect`` from DuckDB's sniffer run on ``text`` (the set values fixed)."""
    import duckdb

    options = _fixed_options(given, dialect.delimiter if fixed_delimiter else None)
    fd, path = tempfile.mkstemp(prefix="kennel-head-", suffix=".csv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        with _cursor() as con:
            found = _sniff(con, path, options)
            rows_skipped = bool(found["SkipRows"]) and not _junk(text, found)
            if rows_skipped and "skiprows" not in given:
                # Keep the delimiter and quote; read from the first line with a header, as
                # pandas would, so a ragged row further down is an error, not lost rows.
                found = {**found, "SkipRows": 0, "HasHeader": True}
                dialect.notes.append("leading lines look like rows: not skipped")
            dialect.detected_by = f"DuckDB {duckdb.__version__} sniffer"
            dialect.delimiter = found["Delimiter"] or dialect.delimiter
            quote = found["Quote"]
            dialect.quotechar = quote if quote and quote not in ("(empty)", "\x00") else '"'
            escape = found["Escape"]
            if escape and escape not in ("(empty)", "\x00", dialect.quotechar):
                dialect.escapechar = escape
            dialect.header = bool(found["HasHeader"])
            dialect.skiprows += int(found["SkipRows"] or 0)
            comment = found["Comment"]
            dialect.comment = comment if comment and comment not in ("(empty)", "\x00") else None
            if not dialect.header:
                dialect.names = [c["name"] for c in found["Columns"]]
            options = {**options, "delim": dialect.delimiter}
            _detect_marks(con, path, options, dialect, found, given)
    finally:
        os.unlink(path)


#: (process id, connection): one in-memory DuckDB per process; each sniff takes a cursor.
_DUCKDB: list[tuple[int, Any]] = []
_LOCK = threading.Lock()


def _cursor() -> Any:
    """A cursor of this process's DuckDB (one thread: the samples are small). Opening a
    database costs ~12 ms, a cursor nothing; a forked child opens its own."""
    import duckdb

    with _LOCK:
        if not _DUCKDB or _DUCKDB[0][0] != os.getpid():
            _DUCKDB[:] = [(os.getpid(), duckdb.connect(config={"threads": 1}))]
        return _DUCKDB[0][1].cursor()


def _junk(text: str, found: dict[str, Any]) -> bool:
    """Whether the lines the sniffer would skip look like a title or notes (blank lines, one
    field, at most one line of several fields) rather than rows: DuckDB also skips rows that
    have fewer fields than a ragged row further down, which would lose data silently."""
    import csv

    quote = found["Quote"] if found["Quote"] not in ("(empty)", "\x00", "") else '"'
    lines = text.splitlines()[: int(found["SkipRows"])]
    reader = csv.reader(lines, delimiter=found["Delimiter"], quotechar=quote)
    row_like = [fields for fields in reader if len([f for f in fields if f.strip()]) >= 2]
    return len(row_like) < 2


def _fixed_options(given: dict[str, Any], delimiter: str | None) -> dict[str, Any]:
    """``sniff_csv`` options for the values that are not to be detected."""
    names = {
        "delimiter": "delim",
        "quotechar": "quote",
        "escapechar": "escape",
        "decimal": "decimal_separator",
        "thousands": "thousands",
        "header": "header",
        "comment": "comment",
    }
    options = {names[k]: v for k, v in given.items() if k in names and v != ""}
    if delimiter is not None:
        options["delim"] = delimiter
    if "skiprows" in given:
        options["skip"] = given["skiprows"]
    return options


def _sniff(con: Any, path: str, options: dict[str, Any]) -> dict[str, Any]:
    """One ``sniff_csv`` call: the dialect and the column types DuckDB found."""
    parts = [f"sample_size=-1, nullstr={_sql(list(NA_VALUES))}"]
    parts += [f"{key}={_sql(value)}" for key, value in options.items()]
    query = (
        "SELECT Delimiter, Quote, Escape, Comment, SkipRows, HasHeader, Columns "
        f"FROM sniff_csv({_sql(path)}, {', '.join(parts)})"
    )
    cursor = con.execute(query)
    row = cursor.fetchone()
    names = [d[0] for d in cursor.description]
    return dict(zip(names, row, strict=True))


def _sql(value: Any) -> str:
    """A literal for DuckDB SQL (strings quoted, quotes doubled)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_sql(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def _numbers(found: dict[str, Any]) -> int:
    return sum(1 for c in found["Columns"] if _is_number(c))


def _detect_marks(
    con: Any,
    path: str,
    options: dict[str, Any],
    dialect: CsvDialect,
    found: dict[str, Any],
    given: dict[str, Any],
) -> None:
    """The decimal and thousands marks: the ones under which more columns are numbers."""
    if "decimal" not in given and dialect.delimiter != ",":
        comma = _sniff(con, path, {**options, "decimal_separator": ","})
        if _numbers(comma) > _numbers(found):
            dialect.decimal, found = ",", comma
    decimal = given.get("decimal", dialect.decimal)
    if "thousands" in given:
        return
    mark = "." if decimal == "," else ","
    if mark == dialect.delimiter:
        return
    base = {**options, "decimal_separator": decimal}
    grouped = _sniff(con, path, {**base, "thousands": mark})
    gained = [
        i
        for i, (after, before) in enumerate(zip(grouped["Columns"], found["Columns"], strict=False))
        if _is_number(after) and not _is_number(before)
    ]
    if gained and _grouped_in_threes(con, path, base, gained, mark, decimal):
        dialect.thousands = mark


def _is_number(column: dict[str, Any]) -> bool:
    return str(column["type"]).upper() in NUMBER_TYPES


def _grouped_in_threes(
    con: Any, path: str, options: dict[str, Any], columns: list[int], mark: str, decimal: str
) -> bool:
    """Whether the columns that became numbers with a thousands mark are written in groups
    of three digits (``1.234,5``), with at least one value that has a group: DuckDB's
    parser also takes ``1,5`` for 15 when told ``,`` groups thousands."""
    m, d = re.escape(mark), re.escape(decimal)
    strict = re.compile(rf"^[+-]?\d{{1,3}}({m}\d{{3}})+({d}\d*)?$")
    loose = re.compile(rf"^[+-]?\d{{1,3}}({m}\d{{3}})*({d}\d*)?$|^[+-]?\d+({d}\d*)?$")
    parts = [f"{key}={_sql(value)}" for key, value in options.items()]
    parts = [p for p in parts if not p.startswith(("decimal_separator", "thousands"))]
    query = f"SELECT * FROM read_csv({_sql(path)}, all_varchar=true, {', '.join(parts)})"
    rows = con.execute(query).fetchall()
    nulls = set(NA_VALUES)
    values = [str(row[i]).strip() for row in rows for i in columns if row[i] not in nulls]
    values = [v for v in values if v and v != "None"]
    return any(strict.match(v) for v in values) and all(loose.match(v) for v in values)


__all__ = ["CsvDialect", "HEAD_BYTES", "NA_VALUES", "detect", "detect_encoding"]
