"""Deciding what each raw column becomes: a numeric feature, a categorical one, date parts,
or dropped (and why). The decision is taken once per data set, on the whole table, and saved
with the fitted processor and as ``columns.json`` in the run.

The rules, in order (README.md, "Your data", says the same for users):

1. ``data.drop`` columns are dropped; entirely empty columns and constant columns (one value
   and no missing cells) are dropped, because they cannot inform a model.
2. Identifier columns are dropped with a warning naming ``data.keep``: a name that only an
   identifier has (``rownames``, ``Unnamed: 0``, ``...1``); a name like ``id``, ``index``,
   ``row_id`` or ``*_id``/``*Id`` whose values are all distinct; whole numbers that are all
   distinct and form the run ``0..n-1`` or ``1..n`` (a saved row number); strings that are
   all distinct. A distinct float measurement is never an identifier. Columns named in
   ``data.keep``, ``data.numeric`` or ``data.categorical`` are never dropped this way.
3. Dates (datetime columns, and text columns whose every value is a date such as
   ``2013-01-01``, ``2013/01/01`` or ``2013-01-01T10:00:00Z``) become numeric parts: year,
   month, day, weekday (0 = Monday) and, when the training values have a time of day, hour.
4. ``data.categorical`` / ``data.numeric`` force a role. Otherwise numbers are numeric;
   text, booleans and pandas ``category`` columns are categorical, except text columns whose
   values are numbers but for a few tokens (``?``, ``-``): those are numeric, and the tokens
   are read as missing values. Numbers written as text for people (``$1,499.00``,
   ``1.499,00 €``, ``12.5%``, ``(1,200)``) count as numbers, read in the column's own
   convention (:mod:`kennel.data.numbers`), which is saved with the role.
5. Columns of types no model can use (timedeltas, complex numbers, periods, intervals) are
   dropped with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.data.numbers import TextNumbers, describe_format, number_format, summarize, verdict
from kennel.data.values import looks_like_dates

logger = logging.getLogger(__name__)

Role = Literal["numeric", "categorical", "date", "dropped"]

#: Names only an identifier has (case-insensitive): R's and pandas' saved row names.
ID_NAMES = re.compile(r"^(rownames|row\.names|unnamed: ?\d+|\.\.\.\d+|)$", re.IGNORECASE)
#: Names of identifiers when every value is distinct: id, index, row_id, customer_id, PassengerId.
ID_LIKE_NAMES = re.compile(
    r"^(id|idx|index|row|rowid|row_id|row_num|rownum|row_number|rownumber|key|uuid|guid)$"
    r"|(^|[_\W])id$|[a-z]Id$|[a-z]ID$",
    re.IGNORECASE,
)
#: The value rules (distinct integers or strings) need at least this many rows to mean much.
MIN_ROWS_FOR_VALUE_RULES = 20
#: Share of all-distinct text values that must read as numbers for it not to be an identifier.
NUMERIC_TEXT_SHARE = 0.95
DATE_PARTS = ("year", "month", "day", "weekday", "hour")
#: Distinct values checked before a text column is parsed as dates in full.
DATE_SAMPLE = 2000
#: Values of a float column checked for a fraction before all of them are.
WHOLE_PROBE = 1024
#: Kinds a model can use (see :func:`input_kind`); anything else is dropped with a warning.
USABLE_KINDS = frozenset(
    {"integer", "float", "string", "boolean", "category", "datetime", "datetime_tz", "mixed"}
)


@dataclass
class ColumnRole:
    """What one raw column became, and why (one entry of ``columns.json``)."""

    name: str
    role: Role
    kind: str
    """The raw values' kind (see :data:`kennel.spec.InputKind`), or the dtype if unusable."""
    reason: str
    features: list[str] = field(default_factory=list)
    """The model features this column gives (none when dropped)."""
    missing: int = 0
    distinct: int | None = None
    missing_tokens: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    number_format: dict[str, Any] | None = None
    """How a column of numbers written as text is read (:mod:`kennel.data.numbers`); None
    when plain numbers (left out of the dict then, as in states saved before it existed)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["number_format"] is None:
            del data["number_format"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnRole:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """``numeric (integer, 3 missing)``: one line of the column report."""
        details = [self.kind]
        if self.missing:
            details.append(f"{self.missing} missing")
        if self.missing_tokens:
            details.append("read as missing: " + ", ".join(repr(t) for t in self.missing_tokens))
        if self.number_format:
            details.append(describe_format(self.number_format))
        if self.role == "date":
            details.append("parts: " + ", ".join(self.parts))
        if self.role == "categorical" and self.distinct is not None:
            details.append(f"{self.distinct} values")
        return f"{self.role} ({'; '.join(details)}): {self.reason}"


def input_kind(series: pd.Series) -> str:
    """The kind of raw values a column holds (see :data:`kennel.spec.InputKind`)."""
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return "boolean"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "datetime_tz"
    if ptypes.is_datetime64_dtype(dtype):
        return "datetime"
    if (
        ptypes.is_timedelta64_dtype(dtype)
        or ptypes.is_complex_dtype(dtype)
        or isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype)
    ):
        return str(dtype)
    if ptypes.is_integer_dtype(dtype):
        return "integer"
    if ptypes.is_float_dtype(dtype):
        return "integer" if _whole(series) else "float"
    if ptypes.is_string_dtype(dtype) and not ptypes.is_object_dtype(dtype):
        return "string"
    inferred = ptypes.infer_dtype(series, skipna=True)
    if inferred == "boolean":
        return "boolean"
    if inferred in {"integer", "floating", "mixed-integer-float", "decimal"}:
        return "integer" if _whole(pd.to_numeric(series, errors="coerce")) else "float"
    if inferred in {"datetime64", "datetime", "date"}:
        return "datetime"
    if inferred in {"string", "empty"}:
        return "string"
    return "mixed"


def _whole(series: pd.Series) -> bool:
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    # A measurement shows a fraction within its first values: look there before the rest.
    head = values[:WHOLE_PROBE]
    head = head[np.isfinite(head)]
    if len(head) and not np.all(np.mod(head, 1) == 0):
        return False
    finite = values[np.isfinite(values)]
    return bool(len(finite)) and bool(np.all(np.mod(finite, 1) == 0))


class ColumnFacts:
    """What the role rules need to know about one column. :class:`SeriesFacts` reads them
    from a pandas column; ``kennel.data.dask_table`` computes the same facts with Dask
    aggregations, so both paths decide every role by the same code (:func:`decide_column`).

    Facts that cost a pass over the values are methods, asked for only when a rule needs
    them."""

    n: int
    """Rows."""
    kind: str
    missing: int

    @property
    def distinct(self) -> int:
        """Distinct non-missing values."""
        raise NotImplementedError

    def single_value(self) -> bool:
        """Whether every row holds the same value (none missing)."""
        return self.missing == 0 and self.distinct == 1

    def first_uniques(self) -> list[Any]:
        """The first :data:`DATE_SAMPLE` distinct values, in order of first appearance."""
        raise NotImplementedError

    def all_uniques_look_like_dates(self) -> bool:
        raise NotImplementedError

    def text_numbers(self) -> TextNumbers:
        """The column's text values read as numbers (:func:`kennel.data.numbers.summarize`)."""
        raise NotImplementedError

    def integer_range(self) -> tuple[float, float]:
        """(min, max) of the values as numbers."""
        raise NotImplementedError

    def numeric_share(self) -> float:
        """Share of the rows that read as numbers in the column's convention (asked only
        when every value is distinct and none is missing)."""
        return self.text_numbers().reading().rows / max(self.n, 1)

    def date_has_time(self, name: str) -> bool:
        """Whether any value (as a timestamp) has a time of day; a value that is not a date
        is a ``DataError`` naming it."""
        raise NotImplementedError


class SeriesFacts(ColumnFacts):
    """:class:`ColumnFacts` of a pandas column (the in-process path)."""

    def __init__(self, series: pd.Series) -> None:
        self.series = series
        self.n = len(series)
        self.kind = input_kind(series)
        self.missing = int(series.isna().sum())
        self._factorized: tuple[np.ndarray, Any] | None = None
        self._numbers: TextNumbers | None = None

    def _factorize(self) -> tuple[np.ndarray, Any]:
        if self._factorized is None:
            self._factorized = pd.factorize(self.series, use_na_sentinel=True)
        return self._factorized

    @property
    def distinct(self) -> int:
        return len(self._factorize()[1])

    def single_value(self) -> bool:
        if self.missing or not ptypes.is_numeric_dtype(self.series.dtype):
            return super().single_value()
        values = self.series.to_numpy()
        return bool(values.min() == values.max())

    def first_uniques(self) -> list[Any]:
        return list(self._factorize()[1][:DATE_SAMPLE])

    def all_uniques_look_like_dates(self) -> bool:
        return looks_like_dates(self._factorize()[1])

    def text_numbers(self) -> TextNumbers:
        if self._numbers is None:
            codes, uniques = self._factorize()
            counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
            self._numbers = summarize(list(uniques), counts)
        return self._numbers

    def integer_range(self) -> tuple[float, float]:
        values = pd.to_numeric(self.series, errors="coerce").to_numpy(dtype=np.float64)
        return float(values.min()), float(values.max())

    def date_has_time(self, name: str) -> bool:
        return has_time_of_day(self.series, name)


def has_time_of_day(series: pd.Series, name: str) -> bool:
    from kennel.data.values import to_datetime

    stamps = to_datetime(series, name, "training data").dropna()
    return bool((stamps.dt.hour != 0).any() or (stamps.dt.minute != 0).any())


def decide_roles(
    frame: pd.DataFrame,
    *,
    target: str,
    drop: Iterable[str] = (),
    keep: Iterable[str] = (),
    numeric: Iterable[str] = (),
    categorical: Iterable[str] = (),
    percent: str = "fraction",
) -> list[ColumnRole]:
    """One :class:`ColumnRole` per column of ``frame`` other than the target (``percent``:
    how ``12%`` is read in a column of numbers written as text, ``data.percent``)."""
    return decide_roles_from_facts(
        [str(c) for c in frame.columns],
        lambda name: SeriesFacts(frame[name]),
        target=target,
        drop=drop,
        keep=keep,
        numeric=numeric,
        categorical=categorical,
        percent=percent,
    )


def decide_roles_from_facts(
    columns: Iterable[str],
    facts_of: Any,
    *,
    target: str,
    drop: Iterable[str] = (),
    keep: Iterable[str] = (),
    numeric: Iterable[str] = (),
    categorical: Iterable[str] = (),
    percent: str = "fraction",
) -> list[ColumnRole]:
    """:func:`decide_roles` for columns whose facts ``facts_of(name)`` gives."""
    drop, keep = set(drop), set(keep)
    numeric, categorical = set(numeric), set(categorical)
    roles = []
    for name in columns:
        if name == target:
            continue
        if name in drop:
            roles.append(ColumnRole(name, "dropped", "-", "listed in data.drop"))
            continue
        roles.append(
            decide_column(
                facts_of(name),
                str(name),
                protected=name in keep or name in numeric or name in categorical,
                force="numeric"
                if name in numeric
                else ("categorical" if name in categorical else None),
                percent=percent,
            )
        )
    return roles


def decide_column(
    facts: ColumnFacts, name: str, *, protected: bool, force: str | None, percent: str = "fraction"
) -> ColumnRole:
    n, kind, missing = facts.n, facts.kind, facts.missing
    if missing == n:
        return ColumnRole(name, "dropped", kind, "entirely empty", missing=missing, distinct=0)
    if kind not in USABLE_KINDS and force is None:
        return ColumnRole(
            name,
            "dropped",
            kind,
            f"values of type {kind} are not supported; convert them to numbers or text",
            missing=missing,
        )
    # The distinct values of a measurement (floats with fractions) decide nothing: a float
    # is never an identifier by its values, so they are not counted (a hash of every value).
    measured = kind == "float" and not ID_LIKE_NAMES.search(name.strip())
    distinct = None if measured else facts.distinct
    if not protected and (
        facts.single_value() if distinct is None else distinct + (1 if missing else 0) <= 1
    ):
        return ColumnRole(name, "dropped", kind, "constant (one value in every row)", distinct=1)
    if not protected:
        reason = _identifier_reason(facts, name)
        if reason:
            return ColumnRole(
                name,
                "dropped",
                kind,
                f"identifier ({reason}); keep it with data.keep=[{name}]",
                missing=missing,
                distinct=distinct,
            )
    if force == "categorical":
        return ColumnRole(
            name, "categorical", kind, "listed in data.categorical", [name], missing, distinct
        )
    if force == "numeric":
        written = (
            number_format(facts.text_numbers(), percent=percent)
            if kind in {"string", "mixed"}
            else None
        )
        return ColumnRole(
            name,
            "numeric",
            kind,
            "listed in data.numeric",
            [name],
            missing,
            distinct,
            number_format=written,
        )
    if kind in {"datetime", "datetime_tz"}:
        return _date_role(facts, name, "datetime values")
    if kind in {"string", "mixed"}:
        return _text_role(facts, name, percent)
    if kind in {"boolean", "category"}:
        return ColumnRole(name, "categorical", kind, f"{kind} values", [name], missing, distinct)
    return ColumnRole(name, "numeric", kind, "numbers", [name], missing, distinct)


def _text_role(facts: ColumnFacts, name: str, percent: str) -> ColumnRole:
    """Text: dates, numbers (plain, or written for people), else categories."""
    kind, missing, distinct = facts.kind, facts.missing, facts.distinct
    if looks_like_dates(facts.first_uniques()) and (
        distinct <= DATE_SAMPLE or facts.all_uniques_look_like_dates()
    ):
        return _date_role(facts, name, "date strings")
    numbers = verdict(facts.text_numbers(), percent=percent)
    if numbers is None:
        return ColumnRole(name, "categorical", kind, "text values", [name], missing, distinct)
    tokens = numbers.tokens
    reason = "text holding numbers" + (" written for people" if numbers.number_format else "")
    if tokens:
        reason += f" (and {len(tokens)} placeholder value(s) read as missing)"
    return ColumnRole(
        name,
        "numeric",
        kind,
        reason,
        [name],
        missing,
        distinct,
        missing_tokens=tokens,
        number_format=numbers.number_format,
    )


def _identifier_reason(facts: ColumnFacts, name: str) -> str | None:
    n, kind = facts.n, facts.kind
    if ID_NAMES.match(name.strip()):
        return f"the name '{name}' is a saved row name"
    id_like = bool(ID_LIKE_NAMES.search(name.strip()))
    if kind == "float" and not id_like:
        return None  # a measurement: its values never make it an identifier
    all_distinct = facts.missing == 0 and facts.distinct == n
    if all_distinct and id_like:
        return f"the name '{name}' and all {n} values distinct"
    if n < MIN_ROWS_FOR_VALUE_RULES or not all_distinct:
        return None
    if kind == "integer":
        low, high = facts.integer_range()
        if low in (0.0, 1.0) and high - low == n - 1:
            return f"all {n} values distinct whole numbers {low:.0f}..{high:.0f}, a row number"
        return None
    if kind in {"string", "mixed"}:
        if looks_like_dates(facts.first_uniques()):
            return None
        if facts.numeric_share() >= NUMERIC_TEXT_SHARE:
            return None
        return f"all {n} values distinct strings"
    return None


def _date_role(facts: ColumnFacts, name: str, what: str) -> ColumnRole:
    has_time = facts.date_has_time(name)
    parts = [p for p in DATE_PARTS if p != "hour" or has_time]
    return ColumnRole(
        name,
        "date",
        facts.kind,
        f"{what}, used as numeric parts",
        [f"{name}__{p}" for p in parts],
        facts.missing,
        facts.distinct,
        parts=parts,
    )


def date_parts(stamps: pd.Series, parts: Iterable[str]) -> dict[str, np.ndarray]:
    """Float64 arrays of the requested parts of naive timestamps (NaN where missing)."""
    out = {}
    accessor = stamps.dt
    for part in parts:
        values = getattr(accessor, part)
        out[part] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def report_lines(roles: Iterable[ColumnRole]) -> list[str]:
    """``  age: numeric (integer, 3 missing): numbers``, one line per column, except that
    plain numbers (complete, taken as they are) share one line: thirty lines saying
    "numbers" tell the reader nothing the summary does not."""
    plain: list[str] = []
    lines: list[str] = []
    for role in roles:
        if role.role == "numeric" and role.reason == "numbers" and not role.missing:
            plain.append(role.name)
        else:
            lines.append(f"  {role.name}: {role.describe()}")
    if plain:
        shown = ", ".join(plain[:6]) + (f" and {len(plain) - 6} more" if len(plain) > 6 else "")
        lines.insert(0, f"  {len(plain)} complete number column(s), used as they are: {shown}")
    return lines


__all__ = [
    "ColumnFacts",
    "ColumnRole",
    "DATE_PARTS",
    "SeriesFacts",
    "date_parts",
    "decide_column",
    "decide_roles",
    "decide_roles_from_facts",
    "input_kind",
    "report_lines",
]


def log_fit(
    display: str,
    roles: list[ColumnRole],
    used: list[str],
    numeric: list[str],
    categorical: Mapping[str, Any],
) -> None:
    """What the columns became, once per training: identifiers and unusable columns dropped
    (warnings), then one line that adds up (columns used of all, the features they give)
    and a line per column."""
    for role in roles:
        if role.role == "dropped" and (
            role.reason.startswith("identifier") or "not supported" in role.reason
        ):
            logger.warning("%s: column '%s' dropped: %s", display, role.name, role.reason)
        if role.number_format and role.name in used:
            logger.info(
                "%s: column '%s' holds numbers written as text, read as numbers: %s",
                display,
                role.name,
                describe_format(role.number_format),
            )
    kept = set(used)
    dates = sum(1 for r in roles if r.role == "date" and r.name in kept)
    plain = sum(1 for r in roles if r.role == "numeric" and r.name in kept)
    features = f"{len(numeric) + len(categorical)} features: {len(numeric)} numeric"
    if dates:
        features += f" ({len(numeric) - plain} of them parts of {dates} date column(s))"
    features += f", {len(categorical)} categorical"
    dropped = len([r for r in roles if r.role == "dropped"])
    logger.info(
        "columns of %s: %d of %d used, %d dropped; the model gets %s\n%s",
        display,
        len(used),
        len(used) + dropped,
        dropped,
        features,
        "\n".join(report_lines(roles)),
    )
