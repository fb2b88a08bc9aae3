"""Value-level helpers shared by the data room: labels, numbers and dates from raw cells.

Everything here is vectorised over the distinct values of a column, so a large text column
stays cheap: only the distinct values go through Python.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.data.numbers import MISSING_TEXT, read_values
from kennel.errors import DataError

logger = logging.getLogger(__name__)

#: Date strings kennel reads as dates: ``2013-01-01``, ``2013/1/1``, ``2013-01-01T10:00:00Z``,
#: ``2013-01-01 10:00:00.5+02:00``, ...
DATE_PATTERN = re.compile(
    r"^\d{4}[-/]\d{1,2}[-/]\d{1,2}"
    r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\s*(?:Z|[+-]\d{2}:?\d{2})?$"
)


def label(value: Any) -> str | None:
    """The string form a categorical value or class label is compared by (None if missing).

    Whole floats drop their ``.0`` so that a category learnt from ``1`` matches ``1.0`` from a
    JSON request and ``"1"`` from a CSV read as text.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        if number.is_integer():
            return str(int(number))
        return repr(number)
    return str(value)


def factorized_labels(series: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """Codes into the distinct values and their :func:`label` strings."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, [label(u) for u in uniques]


def json_value(value: Any) -> Any:
    """A JSON-able Python scalar (NaN and missing values become None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def is_missing_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in MISSING_TEXT


def to_float(
    series: pd.Series,
    column: str,
    where: str,
    missing_tokens: Iterable[str] = (),
    number_format: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Float64 values of a numeric column, coercing losslessly (``"3"`` -> 3.0).

    Empty strings, ``NA``-like text and the column's own ``missing_tokens`` (e.g. ``?`` in a
    table that marks unknown values that way) count as missing; any other text that is not a
    number is an error naming the column and the value, because silently turning it into NaN
    would hide a broken input. A column of numbers written as text (``$1,499.00``) is read in
    its ``number_format`` (:mod:`kennel.data.numbers`).
    """
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if ptypes.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    tokens = set(missing_tokens)
    codes, uniques = pd.factorize(series.astype(object), use_na_sentinel=True)
    cleaned: list[Any] = []
    for u in uniques:
        if isinstance(u, str):
            u = u.strip()
            if u.lower() in MISSING_TEXT or u in tokens:
                u = None
        elif isinstance(u, bool | np.bool_):
            u = float(u)
        cleaned.append(u)
    parsed = read_values(cleaned, number_format)
    bad = [u for u, v in zip(cleaned, parsed, strict=True) if u is not None and math.isnan(v)]
    bad = [u for u in bad if not (isinstance(u, float) and math.isnan(u))]
    if bad:
        raise DataError(
            f"{where}: column '{column}' is numeric but has the non-numeric value {bad[0]!r}"
        )
    numbers = np.where(codes >= 0, parsed[codes] if len(parsed) else np.nan, np.nan)
    return numbers.astype(np.float64)


def to_datetime(series: pd.Series, column: str, where: str) -> pd.Series:
    """Timezone-naive timestamps (UTC for aware values) of a date column; missing -> NaT.

    Accepts datetime64 columns (any unit, with or without a timezone), Python datetimes and
    date strings (:data:`DATE_PATTERN`). Text that is not a date is an error naming it.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None)
    if ptypes.is_datetime64_dtype(dtype):
        return series
    values = series.astype(object)
    text = values.map(lambda v: v.strip().replace("/", "-", 2) if isinstance(v, str) else v)
    text = text.map(lambda v: None if is_missing_text(v) else v)
    try:
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    except (TypeError, ValueError):  # numbers or other objects that are not dates
        parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns, UTC]")
    failed = parsed.isna() & text.notna()
    if failed.any():
        bad = values[failed].iloc[0]
        raise DataError(f"{where}: column '{column}' is a date but has the value {bad!r}")
    return parsed.dt.tz_localize(None)


def looks_like_dates(uniques: Iterable[Any]) -> bool:
    """Whether every distinct non-missing value is a date string (see :data:`DATE_PATTERN`)."""
    present = [
        u
        for u in uniques
        if not (u is None or u is pd.NA or (isinstance(u, float) and math.isnan(u)))
        and not is_missing_text(u)
    ]
    if not present or not all(isinstance(u, str) for u in present):
        return False
    return all(DATE_PATTERN.match(u.strip()) for u in present)


__all__ = [
    "DATE_PATTERN",
    "MISSING_TEXT",
    "factorized_labels",
    "json_value",
    "label",
    "looks_like_dates",
    "to_datetime",
    "to_float",
]


def label_counts(series: pd.Series) -> dict[str, int]:
    """Rows per :func:`label` string of a column (missing values left out): what a
    vocabulary is chosen from. Counts of several partitions add up."""
    codes, labels = factorized_labels(series)
    counts = np.bincount(codes[codes >= 0], minlength=len(labels))
    merged: dict[str, int] = {}
    for lab, count in zip(labels, counts, strict=True):
        if lab is not None:
            merged[lab] = merged.get(lab, 0) + int(count)
    return merged


def vocabulary(counts: Mapping[str, int], name: str, limit: int) -> list[str]:
    """The sorted labels kept for column ``name``: all of them, or the ``limit`` most
    frequent (ties by label) when there are more (``data.max_categories``)."""
    if len(counts) > limit:
        kept = sorted(counts, key=lambda k: (-counts[k], k))[:limit]
        logger.info(
            "column '%s': keeping the %d most frequent of %d values; the rest count as "
            "unknown (data.max_categories)",
            name,
            limit,
            len(counts),
        )
        return sorted(kept)
    return sorted(counts)


def gather(values: np.ndarray, at: np.ndarray | None, out: np.ndarray) -> None:
    """Write ``values`` (or its rows at positions ``at``) into ``out``, a feature block's
    column: float64 rows go straight there, without a temporary array."""
    if at is not None and values.dtype == np.float64:
        np.take(values, at, out=out, mode="clip")
    else:
        out[:] = values if at is None else values[at]


def rows_at(series: pd.Series, at: np.ndarray | None) -> pd.Series:
    """``series``, or its rows at positions ``at`` (a split's rows)."""
    return series if at is None else series.take(at)


def as_frame(rows: Any) -> pd.DataFrame:
    """Rows as a frame: a frame as it is, one record (a mapping of scalars), records, or a
    mapping of columns."""
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, Mapping):
        rows = [rows] if not any(isinstance(v, list | tuple) for v in rows.values()) else rows
    return pd.DataFrame(rows)
