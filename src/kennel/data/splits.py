"""Which rows train, which validate and which test: seeded, and the same anywhere.

Three kinds of split (``data.split``), the same for a training run, every trial of a search
and the promotion holdout (which rebuilds the test split through ``DataProcessor.split``):

* **random** (default): two seeded draws (test first, then valid from the rest; the rows of
  scikit-learn's ``train_test_split``), stratified by class for classifiers. A class with
  fewer than :data:`MIN_CLASS_ROWS` rows cannot be stratified into three splits: its rows all
  go to train (the model still learns the class), it is left out of the stratification and
  named in one WARNING with its count. Only when fewer than two classes have enough rows is
  it an error.
* **time** (``time_on: <column>``): train before valid before test in the column's order
  (dates, or numbers such as a period index). Cut points fall between distinct times, so rows
  with the same time stay in one split; the cut nearest to each share is taken. Rows without a
  time go to train. Not stratified.
* **group** (``group_on: <column>``): every group (a customer, a patient; missing values are
  one group) lies in exactly one split, so no group is both learnt and tested. Groups are
  ordered by a seeded hash of their value and cut by rows, so the shares are rows, not groups.
  Not stratified.

Every split leaves a report (``split.json`` of a training run): the rows of each split and,
for a time split, the first and last time in each; for a group split, the groups in each.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from math import ceil
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.config import SplitConfig
from kennel.data.values import factorized_labels, looks_like_dates, to_datetime, to_float
from kennel.errors import DataError
from kennel.suggest import hint

logger = logging.getLogger(__name__)

#: Rows a class needs to be stratified into train, valid and test.
MIN_CLASS_ROWS = 3
#: The seeded hashes below are scaled to [0, 1) by this.
HASH_SCALE = float(2**64)
#: Classes named in the rare-class warning (the rest are counted).
SHOWN_CLASSES = 10
SPLITS = ("train", "valid", "test")


class Splits:
    """The three row sets of one data set, held as row positions into its frame. A split's
    frame (its rows with the original index and the target) is gathered the first time it
    is asked for, so a split that is only transformed (:meth:`DataProcessor.transform` with
    ``at``) is never copied as raw rows."""

    def __init__(self, frame: pd.DataFrame, positions: Sequence[np.ndarray]) -> None:
        self.frame = frame
        self.positions = dict(zip(SPLITS, positions, strict=True))
        self._frames: dict[str, pd.DataFrame] = {}

    def rows(self, name: str) -> pd.DataFrame:
        """The rows of split ``name`` (``train``, ``valid`` or ``test``)."""
        if name not in self._frames:
            self._frames[name] = self.frame.take(self.positions[name])
        return self._frames[name]

    @property
    def train(self) -> pd.DataFrame:
        return self.rows("train")

    @property
    def valid(self) -> pd.DataFrame:
        return self.rows("valid")

    @property
    def test(self) -> pd.DataFrame:
        return self.rows("test")

    def sizes(self) -> dict[str, int]:
        return {name: len(at) for name, at in self.positions.items()}

    def keep_only(self, *names: str) -> None:
        """Gather the rows of ``names`` and let the whole frame go (its memory with it):
        other splits cannot be asked for afterwards."""
        for name in names:
            self.rows(name)
        self._frames = {name: self._frames[name] for name in names}
        self.positions = {name: self.positions[name] for name in names}
        self.frame = self.frame.iloc[:0].copy()  # a view would keep the whole table

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return (self.rows(name) for name in SPLITS)


def split_positions(
    n_rows: int, config: SplitConfig, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) row positions.

    Two seeded draws (test first, then valid from the rest) with ``config.seed``, stratified
    by ``labels`` (integer class codes) when given: the rows scikit-learn's
    ``train_test_split(..., random_state=seed, shuffle=True, stratify=labels)`` gives, drawn
    with arrays instead of its Python lists (a third of a second on a million rows).
    Raises ``ValueError`` when the rows cannot be split so.
    """
    valid_share = config.valid / (config.train + config.valid)
    positions = np.arange(n_rows)
    rest_at, test_at = _draw(n_rows, config.test, config.seed, labels)
    rest, test = positions[rest_at], positions[test_at]
    train_at, valid_at = _draw(
        len(rest), valid_share, config.seed, labels[rest] if labels is not None else None
    )
    return rest[train_at], rest[valid_at], test


def _draw(
    n: int, test_size: float, seed: int, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One ``train_test_split`` of ``n`` rows as positions (train, test): scikit-learn's
    ``ShuffleSplit`` or ``StratifiedShuffleSplit`` draw, step for step with the same
    ``RandomState``, so the same rows (a test holds them equal)."""
    n_test = ceil(test_size * n)
    n_train = n - n_test
    if n_train <= 0 or n_test <= 0:
        raise ValueError(
            f"with n_samples={n} and test_size={test_size}, one of the sets would be empty"
        )
    rng = np.random.RandomState(seed)
    if labels is None:
        order = rng.permutation(n)
        return order[n_test : n_test + n_train], order[:n_test]
    counts = np.bincount(labels)
    classes = np.flatnonzero(counts)
    counts = counts[classes]
    if counts.min() < 2:
        raise ValueError("The least populated class in y has only 1 member, which is too few")
    if n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"a split of {n} rows cannot hold all {len(classes)} classes")
    # Rows of each class in ascending order (what a stable argsort of the classes gives).
    rank = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    rank[classes] = np.arange(len(classes))
    by_class = np.split(np.argsort(rank[labels], kind="stable"), np.cumsum(counts)[:-1])
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train, test = [], []
    for i, rows in enumerate(by_class):
        shuffled = rows.take(rng.permutation(counts[i]), mode="clip")
        train.append(shuffled[: n_i[i]])
        test.append(shuffled[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    """scikit-learn's ``utils.extmath._approximate_mode``: rows drawn per class, ties in the
    remainders broken by ``rng``."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def seeded_unit(hashes: np.ndarray, seed: int, salt: str = "kennel") -> np.ndarray:
    """uint64 hashes mixed with a seed and scaled to [0, 1): the same on every machine."""
    key = int.from_bytes(hashlib.sha256(f"{salt}:{seed}".encode()).digest()[:8])
    mixed = pd.util.hash_array(hashes.astype(np.uint64) ^ np.uint64(key))
    return mixed.astype(np.float64) / HASH_SCALE


# --------------------------------------------------------------------------- the whole split
def split_frame(
    df: pd.DataFrame, config: SplitConfig, *, target: str, task: str, display: str
) -> tuple[Splits, dict[str, Any]]:
    """The configured split of ``df`` and its report (``split.json``)."""
    check_split_columns(config, list(df.columns), target=target, display=display)
    if config.time_on is not None:
        which, report = time_split(df[config.time_on], config, display, frame=df, target=target)
        parts = [np.flatnonzero(which == k) for k in range(3)]
    elif config.group_on is not None:
        which, report = group_split(df[config.group_on], config, display)
        parts = [np.flatnonzero(which == k) for k in range(3)]
    else:
        parts, report = random_split(df, config, target=target, task=task, display=display)
    splits = Splits(df, parts)
    report["rows"] = splits.sizes()
    logger.info(
        "split %s: train %d, valid %d, test %d rows (%s)",
        display,
        *report["rows"].values(),
        describe_split(report),
    )
    return splits, report


def describe_split(report: dict[str, Any]) -> str:
    """``seed 42, stratified`` / ``by time on 'date'`` / ``by groups of 'tailnum'``."""
    method = report["method"]
    if method == "time":
        return f"by time on '{report['column']}'"
    if method == "group":
        groups = report.get("groups", {})
        counted = "/".join(str(groups.get(s, "?")) for s in SPLITS)
        return f"by groups of '{report['column']}': {counted} groups"
    return f"seed {report['seed']}{', stratified' if method == 'stratified' else ''}"


def check_split_columns(
    config: SplitConfig, columns: list[str], *, target: str, display: str
) -> None:
    """``time_on`` / ``group_on`` name a column of the table other than the target."""
    for key in ("time_on", "group_on"):
        name = getattr(config, key)
        if name is None:
            continue
        if name not in columns:
            raise DataError(
                f"{display}: column '{name}' (from data.split.{key}) does not exist"
                f"{hint(name, [c for c in columns if c != target])}"
            )
        if name == target:
            raise DataError(
                f"{display}: data.split.{key} cannot be the target column '{target}'; name "
                "another column"
            )


# --------------------------------------------------------------------------- random
def random_split(
    df: pd.DataFrame, config: SplitConfig, *, target: str, task: str, display: str
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Seeded positions, stratified by class (rare classes all in train)."""
    stratify = config.stratify and task != "regression"
    report: dict[str, Any] = {"method": "stratified" if stratify else "random", "seed": config.seed}
    labels = None
    inner = np.arange(len(df))
    rare_rows = np.empty(0, dtype=np.int64)
    if stratify:
        codes, names = factorized_labels(df[target])
        counts = np.bincount(codes[codes >= 0], minlength=len(names))
        rare = {str(names[i]): int(counts[i]) for i in np.flatnonzero(counts < MIN_CLASS_ROWS)}
        check_usable_classes(counts, rare, target=target, display=display)
        if rare:
            warn_rare(rare, target=target, display=display)
            report["rare_classes"] = rare
            keep = counts[codes] >= MIN_CLASS_ROWS
            inner, rare_rows = np.flatnonzero(keep), np.flatnonzero(~keep)
        labels = codes[inner]
    try:
        train, valid, test = split_positions(len(inner), config, labels)
    except ValueError as exc:
        raise DataError(
            f"{display}: cannot split {len(df)} rows into train/valid/test "
            f"({str(exc).splitlines()[0]})"
        ) from None
    # Each split keeps the table's row order: gathering rows in order is several times
    # faster than in a shuffled order (a million rows: 0.03 s against 0.12-0.34 s a split).
    parts = [np.concatenate([inner[train], rare_rows]), inner[valid], inner[test]]
    return [np.sort(part) for part in parts], report


def check_usable_classes(
    counts: np.ndarray, rare: dict[str, int], *, target: str, display: str
) -> None:
    """Exit 2 when fewer than two classes have enough rows to stratify."""
    usable = int((counts >= MIN_CLASS_ROWS).sum())
    if usable >= 2:
        return
    named = ", ".join(f"'{name}' ({n})" for name, n in list(rare.items())[:SHOWN_CLASSES])
    raise DataError(
        f"{display}: only {usable} class(es) of target '{target}' have at least "
        f"{MIN_CLASS_ROWS} rows (too few: {named}); a stratified train/valid/test split needs "
        "two (add rows or set data.split.stratify=false)"
    )


def warn_rare(rare: dict[str, int], *, target: str, display: str) -> None:
    """The one WARNING for classes too small to stratify."""
    named = ", ".join(f"'{name}' ({n} row{'s' if n != 1 else ''})" for name, n in rare.items())
    if len(rare) > SHOWN_CLASSES:
        shown = list(rare.items())[:SHOWN_CLASSES]
        named = ", ".join(f"'{name}' ({n})" for name, n in shown)
        named += f" and {len(rare) - SHOWN_CLASSES} more"
    logger.warning(
        "%s: class(es) of target '%s' with fewer than %d rows, too few for a stratified "
        "train/valid/test split: %s; kept in training (the model knows them), left out of "
        "the stratification, so validation and test have none of their rows",
        display,
        target,
        MIN_CLASS_ROWS,
        named,
    )


# --------------------------------------------------------------------------- time
def time_kind(
    series: pd.Series, column: str, display: str, choices: Callable[[], list[str]]
) -> str:
    """``date`` or ``number``: how a ``time_on`` column is ordered. Anything else is a
    one-line error naming a bad value and the columns that could be used (``choices()``)."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or ptypes.is_datetime64_dtype(dtype):
        return "date"
    if ptypes.is_numeric_dtype(dtype) and not ptypes.is_bool_dtype(dtype):
        return "number"
    uniques = pd.unique(series.dropna().to_numpy())[:2000]
    if len(uniques) and looks_like_dates(uniques):
        return "date"
    if ptypes.infer_dtype(uniques, skipna=True) in {"date", "datetime", "datetime64"}:
        return "date"  # Python dates, e.g. a Parquet date32 column
    if not ptypes.is_bool_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        numbers = pd.to_numeric(
            pd.Series([u.strip() if isinstance(u, str) else u for u in uniques], dtype=object),
            errors="coerce",
        )
        if len(uniques) and bool(numbers.notna().all()):
            return "number"
        bad = uniques[int(np.flatnonzero(numbers.isna().to_numpy())[0])] if len(uniques) else None
    else:
        bad = uniques[0] if len(uniques) else None
    columns = choices()
    raise DataError(
        f"{display}: data.split.time_on: column '{column}' has the value {bad!r}, which is "
        f"neither a date nor a number; name a column of dates or numbers"
        f"{hint('', columns) if columns else ''}"
    )


def time_values(series: pd.Series, kind: str, column: str, display: str) -> np.ndarray:
    """Float64 times of a ``time_on`` column (epoch seconds for dates), NaN where missing."""
    where = f"{display}: data.split.time_on"
    if kind == "number":
        return to_float(series, column, where)
    stamps = to_datetime(series, column, where).to_numpy(dtype="datetime64[ns]")
    seconds = stamps.astype(np.int64) / 1e9
    seconds[np.isnat(stamps)] = np.nan
    return seconds


def time_cuts(
    ordered: np.ndarray, train: float, valid: float, column: str, display: str
) -> tuple[float, float]:
    """(first valid time, first test time) from sorted times: each cut between two distinct
    times, the one nearest to the share; rows before the first cut train."""
    n = len(ordered)
    first = _cut(ordered, round(n * train))
    second = _cut(ordered, round(n * (train + valid)))
    if first is not None and (second is None or second <= first):
        after = int(np.searchsorted(ordered, first, side="right"))
        second = float(ordered[after]) if after < n else None
    if first is None or second is None:
        distinct = len(np.unique(ordered))
        raise DataError(
            f"{display}: data.split.time_on: column '{column}' has {distinct} distinct time(s) "
            "among the rows; train, valid and test need at least 3"
        )
    return first, second


def _cut(ordered: np.ndarray, k: int) -> float | None:
    """The time that starts the next split nearest to sorted position ``k`` (None: none)."""
    n = len(ordered)
    if n < 2:
        return None
    k = min(max(k, 1), n - 1)
    value = ordered[k]
    low = int(np.searchsorted(ordered, value, side="left"))
    high = int(np.searchsorted(ordered, value, side="right"))
    if low > 0 and (high >= n or k - low <= high - k):
        return float(value)
    return float(ordered[high]) if high < n else None


def assign_times(times: np.ndarray, cuts: tuple[float, float]) -> np.ndarray:
    """0 train, 1 valid, 2 test per row; rows without a time train."""
    which = np.zeros(len(times), dtype=np.int8)
    with np.errstate(invalid="ignore"):
        which[times >= cuts[0]] = 1
        which[times >= cuts[1]] = 2
    return which


def time_split(
    series: pd.Series, config: SplitConfig, display: str, *, frame: pd.DataFrame, target: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Split labels (0/1/2 per row) and the report of a split by time."""
    column = str(series.name)
    kind = time_kind(series, column, display, lambda: time_columns(frame, exclude=target))
    times = time_values(series, kind, column, display)
    present = np.isfinite(times)
    ordered = np.sort(times[present], kind="stable")
    cuts = time_cuts(ordered, config.train, config.valid, column, display)
    which = assign_times(times, cuts)
    missing = int((~present).sum())
    if missing:
        logger.warning(
            "%s: %d row(s) have no time in '%s'; they go to train", display, missing, column
        )
    spans = {}
    for k, name in enumerate(SPLITS):
        chosen = times[(which == k) & present]
        spans[name] = time_span(chosen.min(), chosen.max(), kind) if len(chosen) else None
    report = {"method": "time", "column": column, "kind": kind, "time": spans}
    report["rows_without_time"] = missing
    return which, report


def time_span(first: float, last: float, kind: str) -> dict[str, Any]:
    """``{"first": ..., "last": ...}`` as ISO dates or numbers."""
    return {"first": time_text(first, kind), "last": time_text(last, kind)}


def time_text(value: float, kind: str) -> Any:
    if kind == "date":
        return pd.Timestamp(round(value * 1e9), unit="ns").isoformat()
    return int(value) if float(value).is_integer() else float(value)


def time_columns(frame: pd.DataFrame, *, exclude: str | None = None) -> list[str]:
    """Columns a time split could follow (dates or numbers), for error messages."""
    out = []
    for name, dtype in frame.dtypes.items():
        if name == exclude:
            continue
        if (
            isinstance(dtype, pd.DatetimeTZDtype)
            or ptypes.is_datetime64_dtype(dtype)
            or ptypes.is_numeric_dtype(dtype)
            and not ptypes.is_bool_dtype(dtype)
        ):
            out.append(str(name))
        elif ptypes.is_string_dtype(dtype) or ptypes.is_object_dtype(dtype):
            head = frame[name].dropna().head(50).to_numpy()
            if len(head) and looks_like_dates(head):
                out.append(str(name))
    return out


# --------------------------------------------------------------------------- groups
def group_keys(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes per row into the distinct groups, and the groups as text (missing values are
    one group, so rows with an unknown customer are not spread over the splits)."""
    codes, labels = factorized_labels(series)
    keys = [("\x00missing" if lab is None else lab.strip()) for lab in labels]
    merged: dict[str, int] = {}
    remap = np.array([merged.setdefault(k, len(merged)) for k in keys], dtype=np.int64)
    rows = remap[codes] if len(remap) else np.zeros(len(codes), dtype=np.int64)
    if (codes < 0).any():
        rows[codes < 0] = merged.setdefault("\x00missing", len(merged))
    return rows, list(merged)


def group_units(keys: list[str], seed: int) -> np.ndarray:
    """A seeded position in [0, 1) for each group (the same on every machine)."""
    hashes = pd.util.hash_array(np.asarray(keys, dtype=object))
    return seeded_unit(hashes, seed, "kennel-group")


def group_split(
    series: pd.Series, config: SplitConfig, display: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Split labels (0/1/2 per row) and the report of a split by groups: groups in seeded
    order, each where the middle of its rows falls in the train/valid/test shares."""
    column = str(series.name)
    codes, keys = group_keys(series)
    units = group_units(keys, config.seed)
    sizes = np.bincount(codes, minlength=len(keys))
    order = np.lexsort((np.asarray(keys, dtype=object), units))
    ends = np.cumsum(sizes[order])
    middle = (ends - sizes[order] / 2.0) / max(len(series), 1)
    ordered_split = np.where(
        middle < config.train, 0, np.where(middle < config.train + config.valid, 1, 2)
    )
    group_split_of = np.empty(len(keys), dtype=np.int8)
    group_split_of[order] = ordered_split
    counted = np.bincount(group_split_of, minlength=3)
    if (counted == 0).any():
        raise DataError(
            f"{display}: data.split.group_on: column '{column}' has {len(keys)} group(s); "
            "train, valid and test need at least one each (use a column with more groups)"
        )
    which = group_split_of[codes]
    groups = {name: int(counted[k]) for k, name in enumerate(SPLITS)}
    return which, {"method": "group", "column": column, "seed": config.seed, "groups": groups}


def assign_groups(series: pd.Series, config: SplitConfig) -> np.ndarray:
    """0/1/2 per row from each group's seeded position alone (no row counts needed): what a
    Dask partition can do by itself; the shares are groups, approximately."""
    codes, keys = group_keys(series)
    units = group_units(keys, config.seed)
    split_of = np.where(
        units < config.train, 0, np.where(units < config.train + config.valid, 1, 2)
    ).astype(np.int8)
    return split_of[codes] if len(keys) else np.zeros(len(series), dtype=np.int8)


__all__ = [
    "MIN_CLASS_ROWS",
    "Splits",
    "assign_groups",
    "assign_times",
    "check_split_columns",
    "group_split",
    "seeded_unit",
    "split_frame",
    "split_positions",
    "time_cuts",
    "time_kind",
    "time_split",
    "time_values",
]
