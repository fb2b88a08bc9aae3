"""``kennel inspect``: what kennel would read from a table and decide for each column, without
training and without MLflow.

A user with a new file wants to know, before a run, whether kennel sees the columns they see:
the dialect detected (separator, decimal mark, encoding; the sheet of a workbook), the rows, the
task, and for each column its kind, its role and why. The report holds what a training run
saves as ``columns.json`` (and ``source.json`` as ``read``), decided by the same code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kennel.data.columns import decide_roles
from kennel.data.formats import check_duplicates
from kennel.errors import DataError
from kennel.suggest import hint

if TYPE_CHECKING:
    import pandas as pd

    from kennel.config import DataConfig

logger = logging.getLogger(__name__)

#: Classes listed by name in the table (the JSON report has them all).
SHOWN_CLASSES = 10


def inspect_table(data: DataConfig) -> dict[str, Any]:
    """The report for ``data`` (``data.target`` optional: without it, every column gets a role
    and no task is decided). Bad files, targets and column lists are one-line errors."""
    from kennel.data.processor import DataProcessor

    processor = DataProcessor(data)
    if processor.target:
        processor.load()
        task, classes = processor.loaded_task
        roles = processor.roles
        n_rows = processor.n_rows
    else:
        frame = _read_without_target(processor.source.read(), processor.source.display, data)
        roles = decide_roles(
            frame,
            target="",
            drop=data.drop,
            keep=data.keep,
            numeric=data.numeric,
            categorical=data.categorical,
        )
        task, classes, n_rows = None, [], len(frame)
    return {
        "source": processor.source_uri,
        "display": processor.source.display,
        "target": processor.target or None,
        "task": task,
        "classes": [str(c) for c in classes] if task != "regression" else [],
        "rows": n_rows,
        "rows_without_target": processor.rows_without_target,
        "read": processor.source.read_info,
        "columns": [r.to_dict() for r in roles],
    }


def _read_without_target(frame: pd.DataFrame, display: str, data: DataConfig) -> pd.DataFrame:
    """The checks ``load()`` makes, less the target's: names unique, a table, listed columns
    present."""
    frame.columns = [str(c) for c in frame.columns]
    check_duplicates(display, list(frame.columns))
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataError(f"{display}: the table is empty (no rows or no columns)")
    columns = list(frame.columns)
    for key in ("categorical", "numeric", "drop", "keep"):
        for name in getattr(data, key):
            if name not in columns:
                raise DataError(
                    f"{display}: column '{name}' (from data.{key}) does not exist"
                    f"{hint(name, columns)}"
                )
    return frame


def describe_read(read: dict[str, Any]) -> str:
    """One line on how the file was read."""
    fmt = read.get("format")
    if fmt == "csv":
        from kennel.data.dialects import CsvDialect

        fields = {k: v for k, v in read.items() if k in CsvDialect.__dataclass_fields__}
        return "CSV: " + CsvDialect(**fields).describe()
    if fmt == "excel":
        sheets = read.get("sheets") or []
        return (
            f"{read.get('type', 'workbook')} workbook: sheet '{read.get('sheet')}' "
            f"({int(read.get('sheet_index', 0)) + 1} of {len(sheets)}: {', '.join(sheets)})"
        )
    if fmt == "parquet":
        files = read.get("files")
        return "Parquet" + (f" data set of {files} files" if files else "")
    if fmt == "builtin":
        return "a data set bundled with scikit-learn"
    return str(fmt or "unknown")


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal: a header, then one row per column."""
    lines = [
        f"{report['display']}: {report['rows']} rows, {len(report['columns'])} columns"
        + (" besides the target" if report["target"] else ""),
        f"read as {describe_read(report['read'])}",
    ]
    if report["target"]:
        classes = report["classes"]
        shown = ", ".join(classes[:SHOWN_CLASSES]) + (
            " ..." if len(classes) > SHOWN_CLASSES else ""
        )
        about = f", {len(classes)} classes: {shown}" if classes else ""
        lines.append(
            f"target '{report['target']}': {report['task']}{about}; "
            f"{report['rows_without_target']} rows without a target left out"
        )
    else:
        lines.append("no target named (data.target=...): no task decided")
    header = ("column", "kind", "role", "missing", "features / why")
    rows = [_row(c) for c in report["columns"]]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    lines.append("")
    for row in [header, *rows]:
        cells = [str(v).ljust(w) for v, w in zip(row[:4], widths, strict=True)]
        lines.append("  ".join([*cells, str(row[4])]).rstrip())
    return "\n".join(lines) + "\n"


def _row(column: dict[str, Any]) -> tuple[str, str, str, str, str]:
    why = column["reason"]
    if column["role"] == "categorical" and column.get("distinct") is not None:
        why = f"{column['distinct']} values; {why}"
    if column["role"] == "date":
        why = f"parts {', '.join(column.get('parts') or [])}; {why}"
    if column.get("missing_tokens"):
        why += "; read as missing: " + ", ".join(repr(t) for t in column["missing_tokens"])
    return column["name"], column["kind"], column["role"], str(column.get("missing", 0)), why


__all__ = ["describe_read", "inspect_table", "render"]
