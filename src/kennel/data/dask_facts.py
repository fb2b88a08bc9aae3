"""Column facts on a Dask cluster: the same questions :class:`~kennel.data.columns.SeriesFacts`
answers for pandas (counts, distinct values, date checks, numbers in text), computed per
partition and combined on the client, so the role rules run on the same code either way.
Functions here are sent to the workers, so they live in an importable module."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.data.columns import DATE_SAMPLE, ColumnFacts, has_time_of_day, input_kind
from kennel.data.numbers import TextNumbers, summarize
from kennel.data.values import looks_like_dates

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client


logger = logging.getLogger(__name__)

#: A column's distinct values are gathered while there are at most this many; beyond, they
#: are counted on the cluster (``nunique``) and never leave it.
GATHER_LIMIT = 50_000
#: A partition sends its distinct values of a column while it has at most this many.
PARTITION_UNIQUES = 5_000


@dataclass
class _Partial:
    """One partition's summary of one column (combined over partitions in order)."""

    n: int = 0
    missing: int = 0
    uniques: list[Any] | None = field(default_factory=list)
    """Distinct values in order of appearance; None when there are more than GATHER_LIMIT."""
    first: list[Any] = field(default_factory=list)
    inferred: set[str] = field(default_factory=set)
    whole: bool = True
    any_finite: bool = False
    low: float = np.inf
    high: float = -np.inf
    dates: bool = True
    numbers: TextNumbers = field(default_factory=TextNumbers)


def _column_partial(series: pd.Series, kind_hint: str) -> _Partial:
    p = _Partial(n=len(series), missing=int(series.isna().sum()))
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    values = list(uniques)
    # A partition with many distinct values sends none: the column is counted on the
    # cluster instead (count_distinct), which is exact either way and cheaper.
    p.uniques = values if len(values) <= PARTITION_UNIQUES else None
    p.first = values[:DATE_SAMPLE]
    if kind_hint == "object":
        p.inferred = {ptypes.infer_dtype(series, skipna=True)}
    if kind_hint in {"float", "object"}:
        numbers = pd.to_numeric(series, errors="coerce") if kind_hint == "object" else series
        finite = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = finite[np.isfinite(finite)]
        p.any_finite = bool(len(finite))
        p.whole = bool(np.all(np.mod(finite, 1) == 0))
    if kind_hint in {"integer", "float", "object"}:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if len(numbers) and not np.all(np.isnan(numbers)):
            p.low, p.high = float(np.nanmin(numbers)), float(np.nanmax(numbers))
    if kind_hint in {"string", "object"}:
        p.dates = looks_like_dates(values)
        counts = np.bincount(codes[codes >= 0], minlength=len(values))
        p.numbers = summarize(values, counts)
    return p


def _kind_hint(dtype: Any) -> str:
    """Which partial facts a column of ``dtype`` needs."""
    if ptypes.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "other"
    if ptypes.is_integer_dtype(dtype):
        return "integer"
    if ptypes.is_float_dtype(dtype):
        return "float"
    if ptypes.is_string_dtype(dtype) and not ptypes.is_object_dtype(dtype):
        return "string"
    if ptypes.is_object_dtype(dtype):
        return "object"
    return "other"


def _partials(frame: pd.DataFrame, hints: dict[str, str]) -> dict[str, _Partial]:
    return {name: _column_partial(frame[name], hint) for name, hint in hints.items()}


def _combine(parts: list[_Partial]) -> _Partial:
    out = _Partial()
    seen: dict[Any, None] = {}
    many = False
    for p in parts:
        out.n += p.n
        out.missing += p.missing
        if p.uniques is None or many:
            many = True
        else:
            seen.update(dict.fromkeys(p.uniques))
            many = len(seen) > GATHER_LIMIT
        for value in p.first:
            if len(out.first) >= DATE_SAMPLE:
                break
            if value not in out.first:
                out.first.append(value)
        out.inferred |= p.inferred
        out.whole &= p.whole
        out.any_finite |= p.any_finite
        out.low, out.high = min(out.low, p.low), max(out.high, p.high)
        out.dates &= p.dates
        out.numbers = out.numbers + p.numbers
    out.uniques = None if many else list(seen)
    return out


def _first_in_order(values: list[Any]) -> list[Any]:
    """The first DATE_SAMPLE distinct values of ``values`` (already in appearance order)."""
    return list(dict.fromkeys(values))[:DATE_SAMPLE]


class DaskFacts(ColumnFacts):
    """:class:`ColumnFacts` of a column of a Dask frame, from combined partition partials;
    what a partial cannot answer exactly (a count of very many distinct values, dates with a
    time of day) is computed on the cluster when a rule asks."""

    def __init__(
        self, frame: dd.DataFrame, name: str, summary: _Partial, dtype: Any, client: Client
    ) -> None:
        self._frame, self._name, self._summary, self._client = frame, name, summary, client
        self.n = summary.n
        self.missing = summary.missing
        self.kind = _kind_of(dtype, summary)
        self._distinct: int | None = None

    @property
    def distinct(self) -> int:
        if self._distinct is None:
            if self._summary.uniques is not None:
                self._distinct = len(self._summary.uniques)
            else:
                counted = count_distinct(self._client, self._frame, [self._name])
                self._distinct = counted[self._name]
        return self._distinct

    def first_uniques(self) -> list[Any]:
        return _first_in_order(self._summary.first)

    def all_uniques_look_like_dates(self) -> bool:
        return self._summary.dates

    def text_numbers(self) -> TextNumbers:
        return self._summary.numbers

    def integer_range(self) -> tuple[float, float]:
        return self._summary.low, self._summary.high

    def date_has_time(self, name: str) -> bool:
        parts = self._frame[self._name].to_delayed()
        import dask

        flags = _in_order(
            self._client, [dask.delayed(has_time_of_day)(part, name) for part in parts]
        )
        return any(flags)


def _kind_of(dtype: Any, summary: _Partial) -> str:
    """:func:`input_kind` of a whole column from its dtype and combined partials."""
    if ptypes.is_float_dtype(dtype):
        return "integer" if summary.any_finite and summary.whole else "float"
    if not ptypes.is_object_dtype(dtype):
        return input_kind(pd.Series([], dtype=dtype))
    inferred = summary.inferred - {"empty"}
    if not inferred:
        return "string"
    if inferred <= {"integer", "floating", "mixed-integer-float", "decimal"}:
        return "integer" if summary.any_finite and summary.whole else "float"
    if len(inferred) == 1:
        (only,) = inferred
        if only == "boolean":
            return "boolean"
        if only in {"datetime64", "datetime", "date"}:
            return "datetime"
        if only == "string":
            return "string"
    return "mixed"


def _unique(series: pd.Series) -> np.ndarray:
    values = series.dropna().to_numpy()
    return pd.unique(values) if values.dtype == object else np.unique(values)


def _bucketed(part: pd.DataFrame, names: list[str], buckets: int) -> tuple[np.ndarray, ...]:
    """Each column's distinct values in this partition, cut into ``buckets`` by hash:
    (column 0 bucket 0, column 0 bucket 1, ..., column 1 bucket 0, ...)."""
    out: list[np.ndarray] = []
    for name in names:
        values = _unique(part[name])
        which = pd.util.hash_array(values) % np.uint64(buckets) if len(values) else values
        out.extend(values[which == b] for b in range(buckets))
    return tuple(out)


def _count_bucket(*pieces: np.ndarray) -> int:
    joined = np.concatenate(pieces) if pieces else np.array([])
    return len(pd.unique(joined)) if joined.dtype == object else len(np.unique(joined))


def count_distinct(client: Client, frame: dd.DataFrame, names: list[str]) -> dict[str, int]:
    """Exact distinct non-missing values of several columns in one pass: each partition cuts
    its distinct values into hash buckets, each (column, bucket) is counted by one task, so
    no task holds more than a bucket of one column (a hand-made shuffle of distinct values,
    cheaper than one ``nunique`` shuffle per column)."""
    import dask

    workers = len(client.scheduler_info().get("workers", {})) or 1
    buckets = max(2, 2 * workers)
    parts = [
        dask.delayed(_bucketed, nout=len(names) * buckets, pure=True)(part, names, buckets)
        for part in frame.to_delayed()
    ]
    counts = [
        dask.delayed(_count_bucket, pure=True)(*[piece[i * buckets + b] for piece in parts])
        for i in range(len(names))
        for b in range(buckets)
    ]
    totals = dask.compute(*counts)
    return {name: int(sum(totals[i * buckets : (i + 1) * buckets])) for i, name in enumerate(names)}


# --------------------------------------------------------------------------- the target
def target_piece(series: pd.Series) -> tuple[pd.Series | None, TextNumbers | None]:
    """One partition's share of what the target's reading is decided from: rows per
    distinct value (None when there are more than :data:`PARTITION_UNIQUES`), and the values
    read as numbers when they are text (None when they are not)."""
    values = series.dropna()
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    text = all(isinstance(u, str) for u in uniques)
    numbers = summarize(list(uniques), counts) if text else None
    if len(uniques) > PARTITION_UNIQUES:
        return None, numbers
    return pd.Series(counts, index=pd.Index(list(uniques), dtype=object), dtype=np.int64), numbers


def combine_target_pieces(
    pieces: list[tuple[pd.Series | None, TextNumbers | None]],
) -> tuple[pd.Series | None, TextNumbers | None]:
    """Rows per distinct target value over all partitions (None when too many), and the
    summed number readings (None unless every value is text), as pandas would find them."""
    numbers: TextNumbers | None = TextNumbers()
    for _, piece in pieces:
        numbers = None if numbers is None or piece is None else numbers + piece
    counted = [c for c, _ in pieces]
    if any(c is None for c in counted):
        return None, numbers
    joined = pd.concat([c for c in counted if c is not None and len(c)])
    if not len(joined):
        return joined, numbers
    totals = joined.groupby(level=0, sort=False).sum()
    return (totals if len(totals) <= GATHER_LIMIT else None), numbers


def _in_order(client: Client, tasks: list[Any]) -> list[Any]:
    """Compute delayed tasks on the cluster; results in task order. The first failing task
    in that order raises (so an error names the first bad value in row order)."""
    futures = client.compute(tasks)
    try:
        return [future.result() for future in futures]
    finally:
        client.cancel(futures)
