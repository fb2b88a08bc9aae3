"""The reference profile a trained model carries: what its training rows and its test outputs
looked like, in a form a drift check can compare any later batch against.

Why a profile and not the training data: the model artifact must stay small and must not
carry user rows, yet the comparison needs the reference *distribution*. So each raw input
column is reduced to counts over fixed buckets, and those buckets are part of the profile,
so a batch is counted against exactly the same edges and vocabulary, chunk by chunk, on one
machine or per Dask partition (counts add up; see :func:`bin_counts`,
:func:`category_counts`).

What is stored, per raw column the model uses (by the user's column name):

* ``numeric`` columns (numbers, and text holding numbers, parsed as the processor parses them,
  its missing tokens included): interior quantile edges (``bins - 1`` at most, and no more
  bins than one per :data:`MIN_BIN_ROWS` values; deduplicated, so tied or discrete values
  give fewer), the count of rows in each of the ``len(edges) + 1``
  buckets ``(-inf, e1), [e1, e2), ..., [ek, +inf)``, missing rows, min, max and mean. The edges
  are placed on a seeded sample of at most :data:`QUANTILE_SAMPLE` values (cheap on a million
  rows); the counts are over *all* rows.
* ``date`` columns: the same, over **epoch seconds** of the processor's own parse (timezone
  -aware values converted to UTC, then made naive). Note that a later batch naturally holds
  later dates, so a date column reads as drifted once time has moved on.
* ``categorical`` columns: the count of each of the most frequent values of the processor's
  vocabulary (compared as strings via :func:`kennel.data.values.label`), ``other`` (rows whose
  value is not among them) and missing rows. All of the vocabulary is stored unless the table
  has so many categorical columns (or such long values) that the profile would grow past
  about 1 MB: then each column keeps as many of its most frequent values as fit its share of
  :data:`PROFILE_BYTES`, at least :data:`MIN_CATEGORY_BYTES` (``complete: false``).
* ``invalid``: values the served model would refuse (text that is not a number or a date). It
  is 0 for training rows, which the processor has accepted, and counted for batches.

The outputs (the model's ``prediction`` and ``proba_<class>`` columns on the test split) are
profiled the same way: probabilities and regression predictions as numbers, predicted classes
as categories over the model's classes.

The profile is plain JSON (``profile.json``), never a pickle.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.data.labels import apply_rules, case_lookup, rules_from_state
from kennel.data.numbers import read_values
from kennel.data.values import MISSING_TEXT, label

if TYPE_CHECKING:
    from kennel.data.processor import DataProcessor

logger = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
PROFILE_VERSION = 1
#: Values the quantile edges are placed on (a seeded sample when a column has more). The
#: edges only need to be roughly at the quantiles; the counts are exact for whatever edges.
QUANTILE_SAMPLE = 50_000
#: Bytes of JSON a profile aims at, at most (so that a table of 1,500 columns stays under
#: 1 MB): a binned column takes about :data:`BINNED_BYTES`, the categorical columns share
#: the rest for their most frequent values...
PROFILE_BYTES = 900_000
BINNED_BYTES = 500
#: ...and each may use at least this many bytes for them.
MIN_CATEGORY_BYTES = 300
#: Fewest reference values per bin: a smaller table gets fewer bins, because the share of a
#: bin estimated from fewer rows is too noisy for PSI's log ratio (50 rows: about 14 %).
MIN_BIN_ROWS = 50
#: ... but never fewer bins than this while there are 10 values a bin.
MIN_BINS = 5
#: Significant digits of stored bin edges (the counts are made with the rounded edges).
EDGE_DIGITS = 9
#: Invalid values kept as examples per column.
INVALID_EXAMPLES = 5
#: JSON bytes of a categorical column besides its values and counts.
_COLUMN_BYTES = 150
#: Above this many edges, counting by comparisons is slower than a binary search.
_COMPARE_EDGES = 32

Role = Literal["numeric", "date", "categorical"]


@dataclass
class ColumnProfile:
    """The reference distribution of one column (see the module docstring for what is kept).

    Numeric and date columns fill ``edges``/``counts``/``min``/``max``/``mean``; categorical
    ones ``values``/``counts``/``other``/``vocabulary``/``complete``.
    """

    name: str
    role: Role
    rows: int
    missing: int
    counts: list[int]
    invalid: int = 0
    edges: list[float] = field(default_factory=list)
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    values: list[str] = field(default_factory=list)
    other: int = 0
    vocabulary: int = 0
    complete: bool = True
    missing_tokens: list[str] = field(default_factory=list)
    number_format: dict[str, Any] | None = None
    """A column of numbers written as text: read as the processor reads it."""
    text: dict[str, bool] | None = None
    """A categorical column: the processor's text rules (stripped, case merged)."""

    @property
    def binned(self) -> bool:
        """Numbers and dates are binned; categories are counted per value."""
        return self.role != "categorical"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        drop = ("values", "other", "vocabulary", "complete") if self.binned else ("edges",)
        drop += ("min", "max", "mean") if not self.binned else ()
        drop += tuple(k for k in ("number_format", "text") if data[k] is None)
        return {k: v for k, v in data.items() if k not in drop}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnProfile:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Profile:
    """The reference profile of a model: its input columns and its outputs."""

    columns: dict[str, ColumnProfile]
    outputs: dict[str, ColumnProfile]
    rows: int
    output_rows: int
    bins: int
    task: str | None = None
    classes: list[Any] = field(default_factory=list)
    target: str | None = None
    ignored: list[str] = field(default_factory=list)
    """Columns of the training table the model does not use (not "extra" in a batch)."""
    quantile_sample: int = QUANTILE_SAMPLE
    version: int = PROFILE_VERSION
    metrics: dict[str, float] = field(default_factory=dict)
    """The model's test metrics at training (what labelled live rows are compared with)."""
    holdout_id: str | None = None
    """The holdout those metrics were measured on (its scores are cached on the version)."""

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["columns"] = [c.to_dict() for c in self.columns.values()]
        data["outputs"] = [c.to_dict() for c in self.outputs.values()]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        version = int(data.get("version", 0))
        if version > PROFILE_VERSION:
            raise ValueError(
                f"reference profile version {version} is newer than this kennel reads "
                f"({PROFILE_VERSION}); upgrade kennel"
            )
        known = {f.name for f in fields(cls)} - {"columns", "outputs"}
        columns = [ColumnProfile.from_dict(c) for c in data["columns"]]
        outputs = [ColumnProfile.from_dict(c) for c in data.get("outputs", [])]
        return cls(
            columns={c.name: c for c in columns},
            outputs={c.name: c for c in outputs},
            **{k: v for k, v in data.items() if k in known},
        )


# --------------------------------------------------------------------------- parsing
@dataclass
class Parsed:
    """A column read as float64 (NaN where missing or invalid), and what was invalid."""

    values: np.ndarray
    invalid: int = 0
    examples: list[str] = field(default_factory=list)


def parse_numbers(
    series: pd.Series,
    missing_tokens: Iterable[str] = (),
    number_format: Mapping[str, Any] | None = None,
) -> Parsed:
    """Float64 values of a numeric column read the way the processor reads it
    (:func:`kennel.data.values.to_float`), but counting values that are not numbers as
    ``invalid`` instead of raising: a batch is described, not refused."""
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype) or (
        ptypes.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
    ):
        return Parsed(series.to_numpy(dtype=np.float64, na_value=np.nan))
    tokens = set(missing_tokens)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
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
    bad = np.array(
        [
            u is not None and not (isinstance(u, float) and math.isnan(u)) and math.isnan(v)
            for u, v in zip(cleaned, parsed, strict=True)
        ],
        dtype=bool,
    )
    return _from_uniques(codes, parsed, bad, uniques)


def parse_dates(series: pd.Series) -> Parsed:
    """Epoch seconds (float64) of a date column read the way the processor reads it
    (:func:`kennel.data.values.to_datetime`: aware values in UTC, ISO-8601 text with ``-`` or
    ``/``); text that is not a date counts as ``invalid``."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return Parsed(_epoch_seconds(series.dt.tz_convert("UTC").dt.tz_localize(None)))
    if ptypes.is_datetime64_dtype(dtype):
        return Parsed(_epoch_seconds(series))
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    text = pd.Series(
        [
            None
            if isinstance(u, str) and u.strip().lower() in MISSING_TEXT
            else (u.strip().replace("/", "-", 2) if isinstance(u, str) else u)
            for u in uniques
        ],
        dtype=object,
    )
    try:
        stamps = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    except (TypeError, ValueError):  # numbers or other objects that are not dates
        stamps = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    seconds = _epoch_seconds(stamps.dt.tz_localize(None))
    bad = (stamps.isna() & text.notna()).to_numpy(dtype=bool)
    return _from_uniques(codes, seconds, bad, uniques)


def _epoch_seconds(stamps: pd.Series) -> np.ndarray:
    values = stamps.to_numpy(dtype="datetime64[ns]")
    seconds = values.astype(np.int64) / 1e9
    seconds[np.isnat(values)] = np.nan
    return seconds


def _from_uniques(codes: np.ndarray, parsed: np.ndarray, bad: np.ndarray, uniques: Any) -> Parsed:
    """Per-row values from per-unique ones; invalid uniques become NaN and are counted."""
    parsed = np.where(bad, np.nan, parsed)
    values = parsed[codes] if len(parsed) else np.full(len(codes), np.nan)
    values[codes < 0] = np.nan
    if not bad.any():
        return Parsed(values)
    per_unique = np.bincount(codes[codes >= 0], minlength=len(parsed))
    examples = [str(uniques[i]) for i in np.flatnonzero(bad)[:INVALID_EXAMPLES]]
    return Parsed(values, int(per_unique[bad].sum()), examples)


def parse_column(series: pd.Series, column: ColumnProfile) -> Parsed:
    """A numeric or date column of raw rows as float64, by the reference column's role."""
    if column.role == "date":
        return parse_dates(series)
    return parse_numbers(series, column.missing_tokens, column.number_format)


# --------------------------------------------------------------------------- counting
def numeric_edges(values: np.ndarray, bins: int, *, seed: int = 0) -> np.ndarray:
    """Interior quantile edges (at most ``bins - 1``, rounded to :data:`EDGE_DIGITS`
        significant digits, deduplicated) of the finite ``values``.

        Edges are observed values (``inverted_cdf``), so a discrete column gets one bucket per
        value it takes. Fewer than ``bins *`` :data:`MIN_BIN_ROWS` values get fewer bins, but not
    fewer than :data:`MIN_BINS` while each gets 10 values. More
        than :data:`QUANTILE_SAMPLE` values: the edges are placed on a seeded random sample of
        that many.
    """
    n_finite, finite = 0, values[:0]
    if len(values) > QUANTILE_SAMPLE:  # sample first: no full-size mask on a long column
        rng = np.random.default_rng(seed)
        sample = values[rng.integers(0, len(values), QUANTILE_SAMPLE)]
        finite = sample[np.isfinite(sample)]
        n_finite = len(values) * len(finite) // QUANTILE_SAMPLE
    if len(finite) < QUANTILE_SAMPLE // 2:  # short, or mostly missing: use every value
        finite = values[np.isfinite(values)]
        n_finite = len(finite)
    # At least MIN_BINS bins (of 10 values or more) even for a small reference, such as the
    # outputs on a test split of 86 rows: one bucket could never show a change.
    bins = min(bins, max(min(MIN_BINS, n_finite // 10), n_finite // MIN_BIN_ROWS))
    if bins < 2:
        return np.empty(0)
    probs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = np.quantile(finite, probs, method="inverted_cdf")
    return np.unique(np.array([_short(e) for e in edges]))


def _short(number: float) -> float:
    """``number`` rounded to :data:`EDGE_DIGITS` significant digits (shorter JSON)."""
    return float(f"{number:.{EDGE_DIGITS}g}")


def bin_counts(edges: np.ndarray | Sequence[float], values: np.ndarray) -> np.ndarray:
    """Rows per bucket ``(-inf, e1), [e1, e2), ..., [ek, +inf)`` and, last, the NaN rows:
    ``len(edges) + 2`` int64 counts. Counts of chunks add up (``a + b``).

    Counted by one vectorised comparison per edge, several times faster than
    ``np.searchsorted`` + ``np.bincount`` for the few edges a profile has.
    """
    edges = np.asarray(edges, dtype=np.float64)
    missing = int(np.count_nonzero(np.isnan(values)))
    if len(edges) > _COMPARE_EDGES:
        found = np.searchsorted(np.append(edges, np.nan), values, side="right")
        return np.bincount(found, minlength=len(edges) + 2).astype(np.int64)
    buffer = np.empty(len(values), dtype=bool)  # reused: no new pages per edge
    below = [np.count_nonzero(np.less(values, edge, out=buffer)) for edge in edges]
    present = len(values) - missing
    return np.diff(np.array([0, *below, present, present + missing], dtype=np.int64))


def category_counts(
    stored: pd.Index, series: pd.Series, text: Mapping[str, bool] | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Rows per ``stored`` value, then rows with any other value, then missing rows
    (``len(stored) + 2`` int64 counts), and the other values' labels with their counts.

    Values are compared as :func:`kennel.data.values.label` strings after the processor's
    ``text`` rules (stripped, case merged), like the processor does; only the distinct
    values of the chunk go through Python.
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    per_unique = np.bincount(codes + 1, minlength=len(uniques) + 1)
    labels = [label(u) for u in uniques]
    if text:
        rules = rules_from_state(text)
        labels = apply_rules(labels, rules, case_lookup(stored) if rules.merge_case else None)
    lookup = stored.get_indexer(pd.Index(labels, dtype=object)) if labels else np.empty(0, int)
    counts = np.zeros(len(stored) + 2, dtype=np.int64)
    known = lookup >= 0
    np.add.at(counts, lookup[known], per_unique[1:][known])
    counts[-1] = per_unique[0]
    others: dict[str, int] = {}
    for i in np.flatnonzero(~known):
        lab, n = labels[i], int(per_unique[i + 1])
        if lab is None:
            counts[-1] += n
        else:
            others[lab] = others.get(lab, 0) + n
    counts[-2] = sum(others.values())
    return counts, others


def merge_top(first: Mapping[str, int], second: Mapping[str, int], cap: int) -> dict[str, int]:
    """The summed counts of two ``value -> count`` maps, trimmed to the ``cap`` largest
    when they grow past twice that (so the heavy values of a stream stay, counts of values
    trimmed away and seen again restart from zero)."""
    merged = dict(first)
    for key, n in second.items():
        merged[key] = merged.get(key, 0) + n
    if len(merged) > 2 * cap:
        merged = dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:cap])
    return merged


# --------------------------------------------------------------------------- building
def build_profile(
    processor: DataProcessor,
    train_rows: pd.DataFrame,
    outputs: pd.DataFrame | None,
    *,
    bins: int = 20,
) -> Profile:
    """The reference profile of a fitted ``processor``'s input columns over ``train_rows``
    (raw rows as the processor reads them) and of the model's ``outputs`` on the test split
    (``prediction`` and, for classifiers, ``proba_<class>``)."""
    if not processor.fitted:
        raise RuntimeError("build_profile needs a fitted DataProcessor")
    roles = {r.name: r for r in processor.roles}
    n_categorical = max(len(processor.categorical), 1)
    n_binned = len(processor.raw_columns) - len(processor.categorical)
    spare = (PROFILE_BYTES - BINNED_BYTES * n_binned) // n_categorical - _COLUMN_BYTES
    cap = max(MIN_CATEGORY_BYTES, spare)
    columns: dict[str, ColumnProfile] = {}
    for name in processor.raw_columns:
        role = roles[name]
        series = _column(train_rows, name)
        if role.role == "categorical":
            rules = processor.rules.to_dict() if processor.rules.active else None
            columns[name] = categorical_profile(
                name, series, processor.categorical[name], cap, rules
            )
        else:
            kind: Role = "date" if role.role == "date" else "numeric"
            columns[name] = numeric_profile(
                name, series, kind, bins, role.missing_tokens, role.number_format
            )
    output_columns = _output_profiles(processor, outputs, bins)
    profile = Profile(
        columns=columns,
        outputs=output_columns,
        rows=len(train_rows),
        output_rows=0 if outputs is None else len(outputs),
        bins=bins,
        task=processor.task,
        classes=list(processor.classes),
        target=processor.target,
        ignored=[*processor.dropped, *processor.config.drop],
    )
    logger.info(
        "reference profile: %d input columns over %d rows, %d output columns",
        len(columns),
        len(train_rows),
        len(output_columns),
    )
    return profile


def _column(rows: pd.DataFrame, name: str) -> pd.Series:
    if name in rows.columns:
        return rows[name]
    return pd.Series(np.nan, index=rows.index, dtype=np.float64)


def numeric_profile(
    name: str,
    series: pd.Series,
    role: Role = "numeric",
    bins: int = 20,
    missing_tokens: Sequence[str] = (),
    number_format: Mapping[str, Any] | None = None,
) -> ColumnProfile:
    """The profile of a numeric (or, with ``role="date"``, date) column."""
    column = ColumnProfile(
        name,
        role,
        len(series),
        0,
        [],
        missing_tokens=list(missing_tokens),
        number_format=dict(number_format) if number_format else None,
    )
    parsed = parse_column(series, column)
    values = parsed.values
    edges = numeric_edges(values, bins)
    counts = bin_counts(edges, values)
    column.edges = [float(e) for e in edges]
    column.counts = [int(c) for c in counts[:-1]]
    column.missing = int(counts[-1]) - parsed.invalid
    column.invalid = parsed.invalid
    present = len(values) - int(counts[-1])
    if present:  # infinite values make these null in the JSON
        column.min, column.max = _short(np.nanmin(values)), _short(np.nanmax(values))
        column.mean = _short(np.nansum(values) / present)
    return column


def categorical_profile(
    name: str,
    series: pd.Series,
    vocabulary: Sequence[str],
    cap: int | None = None,
    text: Mapping[str, bool] | None = None,
) -> ColumnProfile:
    """The profile of a categorical column: counts of the most frequent values of the
    processor's ``vocabulary`` that fit in ``cap`` bytes of JSON (all of them when ``cap`` is
    None or they fit), the rest as ``other``; values read by the ``text`` rules."""
    full = pd.Index(list(vocabulary), dtype=object)
    counts, _ = category_counts(full, series, text)
    per_value = counts[: len(full)]
    kept = _most_frequent(full, per_value, cap)
    kept_counts = per_value[kept]
    return ColumnProfile(
        name,
        "categorical",
        len(series),
        int(counts[-1]),
        [int(c) for c in kept_counts],
        values=[str(full[i]) for i in kept],
        other=int(len(series) - counts[-1] - kept_counts.sum()),
        vocabulary=len(full),
        complete=len(kept) == len(full),
        text=dict(text) if text else None,
    )


def _most_frequent(values: pd.Index, counts: np.ndarray, cap: int | None) -> list[int]:
    """Positions (in vocabulary order) of the most frequent values whose JSON (the value and
    its count) fits in ``cap`` bytes."""
    sizes = [
        len(json.dumps(str(v))) + len(str(int(c))) + 2 for v, c in zip(values, counts, strict=True)
    ]
    if cap is None or sum(sizes) <= cap:
        return list(range(len(values)))
    order = sorted(range(len(values)), key=lambda i: (-counts[i], values[i]))
    fits = np.cumsum([sizes[i] for i in order]) <= cap
    return sorted(order[: int(fits.sum())])


def _output_profiles(
    processor: DataProcessor, outputs: pd.DataFrame | None, bins: int
) -> dict[str, ColumnProfile]:
    """``prediction`` (classes as categories, or numbers for regression) and every
    ``proba_<class>`` column as numbers; other output columns are not profiled."""
    if outputs is None:
        return {}
    profiles: dict[str, ColumnProfile] = {}
    for name in outputs.columns:
        name = str(name)
        series = outputs[name]
        if name == "prediction" and processor.task != "regression":
            classes = [str(label(c)) for c in processor.classes]
            profiles[name] = categorical_profile(name, series, classes)
        elif name == "prediction" or name.startswith("proba_"):
            profiles[name] = numeric_profile(name, series, "numeric", bins)
    return profiles


# --------------------------------------------------------------------------- files
def profile_json(profile: Profile) -> str:
    """Compact JSON of a profile (non-finite numbers become null)."""
    return json.dumps(finite_json(profile.to_dict()), separators=(",", ":"), allow_nan=False)


def finite_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, infinity) replaced by None, so that it
    writes as strict JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_json(v) for v in data]
    return data


def save_profile(profile: Profile, folder: str | Path) -> Path:
    """Write ``folder/profile.json`` and return its path."""
    path = Path(folder) / PROFILE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile_json(profile), encoding="utf-8")
    return path


def load_profile(folder: str | Path) -> Profile:
    """Read ``folder/profile.json`` (or the file itself when given its path)."""
    path = Path(folder)
    if path.is_dir():
        path = path / PROFILE_FILE
    return Profile.from_dict(json.loads(path.read_text(encoding="utf-8")))
