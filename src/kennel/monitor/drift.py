"""Comparing a batch of rows (and, optionally, the model's outputs on them) with a model's
reference profile: is what the model sees now what it was trained on?

Two steps, so that a batch of any size can be checked in bounded memory and on a cluster:

* :class:`BatchStats` counts raw rows chunk by chunk against the reference's own bin edges
  and vocabulary (``update(chunk)``, ``update_outputs(frame)``); two of them add up
  (``merge``), so Dask partitions can be counted apart and combined on the client.
* :func:`compare` turns the counts into a :class:`DriftReport`: per column a verdict
  (``drift``/``ok``) with the reason, and the statistics behind it.

The statistics, per column:

* **PSI** (population stability index) over the reference buckets: the bins of a number or
  date, or the frequent categories (each holding at least ``1 / (2 * bins)`` of the reference
  rows, at most ``bins - 1`` of them) plus ``other`` (rarer and unseen values); missing values
  (and invalid ones) are one more bucket. A share of 0 is replaced by
  :data:`PSI_EPSILON` (1e-4, the usual choice: an empty bucket that fills up to 1 % then adds
  about 0.05), so PSI is finite.
* A **test**, for "is it more than noise": for numbers and dates the two-sample
  Kolmogorov-Smirnov statistic computed from the *binned* CDFs (the largest CDF gap at the
  bin edges, a lower bound of the exact statistic, so its p-value is conservative), with the
  asymptotic Kolmogorov p-value at the effective size ``n_ref * n_cur / (n_ref + n_cur)``
  of the present values; for categories Pearson's chi-square on the 2 x buckets table.
* The change of the **missing** share, **invalid** values (what the served model would
  refuse), **unseen** categories (the most frequent ones, with counts).

A column is drifted when its distribution changed materially *and* significantly, when its
missing share jumped, when it is missing or empty, when a new category took a material share
or when many of its values do not parse: :class:`Thresholds` gives the numbers and why. Two
exceptions, so that every output (the log line, the report, the verdict) tells one story:

* a **date** column that passed a threshold is ``moved``, not ``drift``: dates move forward
  by nature, so it is reported (with the reason) but left out of the drift share;
* in a batch of fewer than ``min_rows`` rows no column is judged (``n/a``, the reason says
  what was seen): too few rows to tell.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kennel.monitor.profile import (
    INVALID_EXAMPLES,
    ColumnProfile,
    Profile,
    bin_counts,
    category_counts,
    finite_json,
    merge_top,
    parse_column,
)

logger = logging.getLogger(__name__)

#: Share used for an empty bucket in PSI (both sides), so the logarithm stays finite.
PSI_EPSILON = 1e-4
#: Unseen categories reported per column...
UNSEEN_KEEP = 20
#: ...and tracked while counting (counts are exact while a column has fewer than twice as
#: many distinct unseen values; beyond, the heavy ones stay: see
#: :func:`kennel.monitor.profile.merge_top`).
UNSEEN_TRACK = 200
#: Extra columns (in the batch, unknown to the model) named in the report.
EXTRA_KEEP = 20


@dataclass(frozen=True)
class Thresholds:
    """When a column counts as drifted, and when the whole batch does.

    The defaults are chosen so that a model's own test split, resampled, is not called
    drifted (the reference comes from the training split, so the two differ by sampling
    noise, which in a small table is worth a PSI of up to about 0.15), while a shift of half
    a standard deviation in one column is (PSI 0.25 or more).

    * ``psi=0.2``: the common "significant shift" line of the PSI literature, applied to PSI
      less its expected sampling noise (:func:`psi_noise`; 0.03 for 700 reference rows and
      10,000 batch rows in 20 bins, 0.08 for a batch of 300).
    * ``p_value=0.01``: the test must also reject "same distribution" at 1 %; a per-column
      false alarm rate of at most 1 % when the batch really is drawn from the reference.
    * ``missing_change=0.1``: ten percentage points more (or fewer) missing values.
    * ``new_category=0.05``: one value never seen in training in 5 % of the rows.
    * ``invalid=0.01``: 1 % of a column's values are not numbers/dates (any number of them is
      reported; the served model refuses those rows).
    * ``drift_share=0.25``: the batch as a whole drifted when a quarter of the compared input
      columns did (date columns are not counted), or when any output column did.
    * ``min_rows=100``: a column with fewer rows is reported, never called drifted (too few
      to tell).
    """

    psi: float = 0.2
    p_value: float = 0.01
    missing_change: float = 0.1
    new_category: float = 0.05
    invalid: float = 0.01
    drift_share: float = 0.25
    min_rows: int = 100

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# --------------------------------------------------------------------------- counting
@dataclass
class ColumnCounts:
    """A batch's counts for one column: bins then missing (numbers, dates), or stored values,
    ``other``, missing (categories); missing includes invalid values and absent rows."""

    counts: np.ndarray
    rows: int = 0
    absent: int = 0
    invalid: int = 0
    total: float = 0.0
    examples: list[str] = field(default_factory=list)
    unseen: dict[str, int] = field(default_factory=dict)

    def add(self, other: ColumnCounts) -> None:
        self.counts = self.counts + other.counts
        self.rows += other.rows
        self.absent += other.absent
        self.invalid += other.invalid
        self.total += other.total
        self.examples = (self.examples + other.examples)[:INVALID_EXAMPLES]
        self.unseen = merge_top(self.unseen, other.unseen, UNSEEN_TRACK)


class BatchStats:
    """Streaming counts of a batch of raw rows (and outputs) against a reference profile.

    ``update(chunk)`` takes raw rows as read from a file or captured from the server:
    columns may be missing, extra or of other dtypes (integers for floats, numbers as text,
    nulls anywhere). Memory is bounded by the chunk: only counts are kept.
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.rows = 0
        self.output_rows = 0
        self.extra: list[str] = []
        self.columns = {n: _empty(c) for n, c in profile.columns.items()}
        self.outputs = {n: _empty(c) for n, c in profile.outputs.items()}
        self._known = {*profile.columns, *profile.ignored, profile.target}
        self._edges = {
            n: np.asarray(c.edges, dtype=np.float64)
            for n, c in {**profile.columns, **profile.outputs}.items()
            if c.binned
        }
        self._stored = {
            n: pd.Index(c.values, dtype=object)
            for n, c in {**profile.columns, **profile.outputs}.items()
            if not c.binned
        }

    def update(self, chunk: pd.DataFrame) -> None:
        """Count the raw input rows of one chunk."""
        self._count(chunk, self.profile.columns, self.columns)
        self.rows += len(chunk)
        for name in map(str, chunk.columns):
            if name not in self._known and name not in self.extra and len(self.extra) < EXTRA_KEEP:
                self.extra.append(name)

    def update_outputs(self, outputs: pd.DataFrame) -> None:
        """Count the model's outputs (``prediction``, ``proba_<class>``) on a chunk."""
        self._count(outputs, self.profile.outputs, self.outputs)
        self.output_rows += len(outputs)

    def merge(self, other: BatchStats) -> BatchStats:
        """Add the counts of ``other`` (another chunk or partition of the same batch)."""
        for mine, theirs in ((self.columns, other.columns), (self.outputs, other.outputs)):
            for name, counts in theirs.items():
                mine[name].add(counts)
        self.rows += other.rows
        self.output_rows += other.output_rows
        self.extra = list(dict.fromkeys(self.extra + other.extra))[:EXTRA_KEEP]
        return self

    def _count(
        self,
        chunk: pd.DataFrame,
        reference: Mapping[str, ColumnProfile],
        into: dict[str, ColumnCounts],
    ) -> None:
        positions: dict[str, int] = {}
        for i, name in enumerate(chunk.columns):
            positions.setdefault(str(name), i)
        n = len(chunk)
        for name, column in reference.items():
            acc = into[name]
            acc.rows += n
            if name not in positions:
                acc.absent += n
                acc.counts[-1] += n
                continue
            series = chunk.iloc[:, positions[name]]
            if column.binned:
                parsed = parse_column(series, column)
                counts = bin_counts(self._edges[name], parsed.values)
                acc.counts += counts
                acc.invalid += parsed.invalid
                acc.examples = (acc.examples + parsed.examples)[:INVALID_EXAMPLES]
                if counts[-1] < n:
                    acc.total += float(np.nansum(parsed.values))
            else:
                counts, others = category_counts(self._stored[name], series, column.text)
                acc.counts += counts
                acc.unseen = merge_top(acc.unseen, others, UNSEEN_TRACK)


def _empty(column: ColumnProfile) -> ColumnCounts:
    size = len(column.edges) + 2 if column.binned else len(column.values) + 2
    return ColumnCounts(np.zeros(size, dtype=np.int64))


# --------------------------------------------------------------------------- statistics
def psi(reference: np.ndarray, current: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index of two count vectors over the same buckets:
    ``sum((q - p) * ln(q / p))`` with shares ``p``, ``q`` floored at ``eps``."""
    p = np.maximum(reference / max(reference.sum(), 1), eps)
    q = np.maximum(current / max(current.sum(), 1), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_noise(reference: np.ndarray, current: np.ndarray) -> float:
    """The PSI two samples of the same distribution show on average:
    ``(buckets - 1) * (1 / n_ref + 1 / n_cur)`` over the buckets either side fills (PSI is
    about the two-sample chi-square statistic times ``1 / n_ref + 1 / n_cur``; Yurdakul,
    "Statistical properties of the population stability index", 2018). A small batch has
    a large PSI from noise alone, so the rule takes it off before comparing with ``psi``."""
    n, m = int(reference.sum()), int(current.sum())
    filled = int(np.count_nonzero((reference + current) > 0))
    return (filled - 1) * (1 / n + 1 / m) if n and m and filled > 1 else 0.0


def binned_ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic from binned counts (the largest gap of the two CDFs at the
    bin edges) and its asymptotic Kolmogorov p-value at ``n * m / (n + m)``; NaNs when a
    side has no values."""
    from scipy.stats import kstwobign

    n, m = int(reference.sum()), int(current.sum())
    if n == 0 or m == 0:
        return math.nan, math.nan
    gap = np.abs(np.cumsum(reference) / n - np.cumsum(current) / m)
    statistic = float(gap.max())
    return statistic, float(kstwobign.sf(math.sqrt(n * m / (n + m)) * statistic))


def chi_square(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square of the 2 x buckets table (empty buckets left out) and its
    p-value; ``(0, 1)`` when fewer than two buckets hold anything."""
    from scipy.stats import chi2

    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(chi2.sf(statistic, table.shape[1] - 1))


def proportion_p_value(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of the two-proportion z-test (``k1/n1`` vs ``k2/n2``)."""
    from scipy.stats import norm

    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(2 * norm.sf(abs(k2 / n2 - k1 / n1) / se))


# --------------------------------------------------------------------------- report
#: Verdict of a column that passed a threshold but is not counted in the drift share (a date).
MOVED = "moved"
#: Roles left out of the drift share: they move forward by nature.
UNCOUNTED_ROLES = frozenset({"date"})


@dataclass
class ColumnDrift:
    """The verdict on one column and the statistics behind it."""

    name: str
    role: str
    verdict: str
    reason: str
    rows: int
    psi: float | None = None
    psi_noise: float | None = None
    """What sampling noise alone adds to PSI on average (see :func:`psi_noise`)."""
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    missing_ref: float = 0.0
    missing_cur: float = 0.0
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    unseen: list[tuple[str, int]] = field(default_factory=list)
    mean_ref: float | None = None
    mean_cur: float | None = None
    buckets: list[str] = field(default_factory=list)
    ref_shares: list[float] = field(default_factory=list)
    cur_shares: list[float] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return self.verdict == "drift"

    @property
    def counted(self) -> bool:
        """Whether the column counts in the drift share: it has rows and is not a date."""
        return self.rows > 0 and self.role not in UNCOUNTED_ROLES

    def to_dict(self) -> dict[str, Any]:
        return finite_json(asdict(self))


@dataclass
class DriftReport:
    """Per-column verdicts for inputs and outputs, and the batch's overall verdict."""

    columns: list[ColumnDrift]
    outputs: list[ColumnDrift]
    rows: int
    output_rows: int
    reference_rows: int
    thresholds: Thresholds
    extra_columns: list[str] = field(default_factory=list)

    @property
    def compared_columns(self) -> list[str]:
        """The input columns counted in the drift share: those with rows, dates left out."""
        return [c.name for c in self.columns if c.counted]

    @property
    def drifted_columns(self) -> list[str]:
        """The drifted input columns (all of them counted in the drift share)."""
        return [c.name for c in self.columns if c.drifted and c.counted]

    @property
    def moved_dates(self) -> list[str]:
        """Date columns that passed a threshold: reported, not counted in the drift share."""
        return [c.name for c in self.columns if c.verdict == MOVED]

    @property
    def drift_share(self) -> float:
        """Drifted input columns / compared input columns (with rows, not dates)."""
        compared = self.compared_columns
        return len(self.drifted_columns) / len(compared) if compared else 0.0

    @property
    def output_drift(self) -> bool:
        return any(c.drifted for c in self.outputs)

    @property
    def drifted(self) -> bool:
        """The batch drifted: an output column did, or ``drift_share`` of the inputs."""
        share = self.drift_share
        return self.output_drift or (share > 0 and share >= self.thresholds.drift_share)

    def verdicts(self) -> dict[str, str]:
        """``column -> drift/ok`` for inputs, ``output:<column>`` for outputs."""
        verdicts = {c.name: c.verdict for c in self.columns}
        verdicts.update({f"output:{c.name}": c.verdict for c in self.outputs})
        return verdicts

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "compared_columns": len(self.compared_columns),
            "moved_dates": self.moved_dates,
            "output_drift": self.output_drift,
            "rows": self.rows,
            "output_rows": self.output_rows,
            "reference_rows": self.reference_rows,
            "thresholds": self.thresholds.to_dict(),
            "extra_columns": list(self.extra_columns),
            "columns": [c.to_dict() for c in self.columns],
            "outputs": [c.to_dict() for c in self.outputs],
        }


def compare(
    profile: Profile, stats: BatchStats, thresholds: Thresholds | None = None
) -> DriftReport:
    """The drift report of the counted batch ``stats`` against ``profile``."""
    thresholds = thresholds or Thresholds()
    columns = [
        compare_column(column, stats.columns[name], thresholds, profile.bins)
        for name, column in profile.columns.items()
    ]
    outputs = []
    if stats.output_rows:
        outputs = [
            compare_column(column, stats.outputs[name], thresholds, profile.bins)
            for name, column in profile.outputs.items()
        ]
    report = DriftReport(
        columns=columns,
        outputs=outputs,
        rows=stats.rows,
        output_rows=stats.output_rows,
        reference_rows=profile.rows,
        thresholds=thresholds,
        extra_columns=list(stats.extra),
    )
    logger.info("%s", summary(report))
    return report


def summary(report: DriftReport) -> str:
    """The report in words: the drift share as the verdict counts it (dates apart), then the
    full reason of every column that passed a threshold (the terminal's table cuts them)."""
    th = report.thresholds
    head = (
        f"drift: {len(report.drifted_columns)} of {len(report.compared_columns)} input "
        f"columns drifted ({report.drift_share:.0%})"
        f"{', outputs drifted' if report.output_drift else ''} over {report.rows} rows"
    )
    if report.moved_dates:
        head += f"; date column(s) moved, not counted: {', '.join(report.moved_dates)}"
    if 0 < report.rows < th.min_rows:
        head += f"; fewer than min_rows={th.min_rows}: no column called drifted"
    flagged = [
        (f"output {c.name}" if c in report.outputs else c.name, c)
        for c in [*report.columns, *report.outputs]
        if c.drifted or c.verdict == MOVED or c.reason.startswith(_not_judged(c.rows, th) + " (")
    ]
    return "\n".join([head, *(f"  {name}: {c.reason}" for name, c in flagged)])


def compare_column(
    ref: ColumnProfile, cur: ColumnCounts, thresholds: Thresholds, bins: int
) -> ColumnDrift:
    """The verdict on one column (see the module docstring for the rules)."""
    ref_counts, cur_counts, names = _buckets(ref, cur, bins)
    result = ColumnDrift(ref.name, ref.role, "ok", "", cur.rows, buckets=names)
    result.missing_ref = ref.missing / ref.rows if ref.rows else 0.0
    result.invalid, result.invalid_examples = cur.invalid, list(cur.examples)
    result.unseen = sorted(cur.unseen.items(), key=lambda kv: (-kv[1], kv[0]))[:UNSEEN_KEEP]
    if cur.rows == 0:
        result.reason = "no rows to compare"
        return result
    result.missing_cur = (int(cur_counts[-1]) - cur.invalid) / cur.rows
    result.ref_shares = _shares(ref_counts)
    result.cur_shares = _shares(cur_counts)
    result.psi = psi(ref_counts, cur_counts)
    result.psi_noise = psi_noise(ref_counts, cur_counts)
    if ref.binned:
        result.test = "ks"
        result.statistic, result.p_value = binned_ks(ref_counts[:-1], cur_counts[:-1])
        present = cur.rows - int(cur_counts[-1])
        result.mean_ref = ref.mean
        result.mean_cur = cur.total / present if present else None
    else:
        result.test = "chi2"
        result.statistic, result.p_value = chi_square(ref_counts, cur_counts)
    reasons = _reasons(ref, cur, result, thresholds)
    if cur.rows < thresholds.min_rows:
        result.verdict, result.reason = "n/a", _not_judged(cur.rows, thresholds)
        if reasons:
            result.reason += f" (seen: {'; '.join(reasons)})"
    elif reasons and ref.role in UNCOUNTED_ROLES:
        result.verdict = MOVED
        result.reason = f"not counted (a date): {'; '.join(reasons)}"
    elif reasons:
        result.verdict, result.reason = "drift", "; ".join(reasons)
    elif ref.binned and not ref.edges and ref.rows > ref.missing:
        result.verdict = "n/a"
        result.reason = "one bucket: too few reference values to compare the distribution"
    else:
        result.reason = _why_ok(result, thresholds)
    return result


def _not_judged(rows: int, thresholds: Thresholds) -> str:
    return f"{rows} rows < min_rows {thresholds.min_rows}: not judged"


def _why_ok(result: ColumnDrift, thresholds: Thresholds) -> str:
    """Why a column whose PSI looks large is not drifted: within sampling noise, or not
    significant."""
    if result.psi is None or result.psi < thresholds.psi:
        return ""
    if result.psi - (result.psi_noise or 0.0) < thresholds.psi:
        return f"PSI {result.psi:.3g} is mostly sampling noise ({result.psi_noise:.3g})"
    return f"not significant (p {result.p_value:.3g} >= {thresholds.p_value})"


def _buckets(
    ref: ColumnProfile, cur: ColumnCounts, bins: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reference and batch counts over the compared buckets (missing last) and their names.

    Categories rarer than ``1 / (2 * bins)`` of the reference rows (and those past the
    ``bins - 1`` most frequent) are pooled with unseen values as ``other``."""
    if ref.binned:
        ref_counts = np.array([*ref.counts, ref.missing + ref.invalid], dtype=np.int64)
        return ref_counts, cur.counts.copy(), [*_bin_names(ref.edges, ref.role), "(missing)"]
    counts = np.asarray(ref.counts, dtype=np.int64)
    order = np.argsort(-counts, kind="stable")[: max(bins - 1, 1)]
    kept = np.sort(order[counts[order] >= ref.rows / (2 * bins)])
    pooled = np.ones(len(counts), dtype=bool)
    pooled[kept] = False
    ref_counts = np.array(
        [*counts[kept], ref.other + counts[pooled].sum(), ref.missing], dtype=np.int64
    )
    values = cur.counts[:-2]
    cur_counts = np.array(
        [*values[kept], cur.counts[-2] + values[pooled].sum(), cur.counts[-1]], dtype=np.int64
    )
    return ref_counts, cur_counts, [*(ref.values[i] for i in kept), "(other)", "(missing)"]


def _bin_names(edges: list[float], role: str) -> list[str]:
    shown = (
        pd.Timestamp(e, unit="s").strftime("%Y-%m-%d") if role == "date" else f"{e:.4g}"
        for e in edges
    )
    bounds = ["-inf", *shown, "inf"]
    return [f"[{lo}, {hi})" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _shares(counts: np.ndarray) -> list[float]:
    total = max(int(counts.sum()), 1)
    return [round(float(c) / total, 6) for c in counts]


def _reasons(
    ref: ColumnProfile, cur: ColumnCounts, result: ColumnDrift, th: Thresholds
) -> list[str]:
    """What passed its threshold, in words (empty when nothing did)."""
    n, reasons = cur.rows, []
    if cur.absent == n:
        return ["column missing from the batch"]
    missing_ref, missing = result.missing_ref, int(cur.counts[-1]) - cur.invalid
    if missing == n:
        if missing_ref < 1 and missing_ref**n < th.p_value:
            reasons.append(f"all {n} values missing (reference: {missing_ref:.1%})")
    elif missing + cur.invalid < n:
        p = result.p_value
        effect = (result.psi or 0.0) - (result.psi_noise or 0.0)
        if effect >= th.psi and p is not None and p < th.p_value:
            reasons.append(
                f"distribution changed: PSI {result.psi:.3f} (noise {result.psi_noise:.3f}) "
                f">= {th.psi:g}, {result.test} p={p:.2g} < {th.p_value:g}"
            )
        moved = abs(result.missing_cur - missing_ref) >= th.missing_change
        if moved and proportion_p_value(ref.missing, ref.rows, missing, n) < th.p_value:
            reasons.append(
                f"missing share {missing_ref:.1%} -> {result.missing_cur:.1%} "
                f"(change >= {th.missing_change:g})"
            )
    if cur.invalid and cur.invalid / n >= th.invalid:
        example = f", e.g. {cur.examples[0]!r}" if cur.examples else ""
        reasons.append(
            f"{cur.invalid} invalid value(s) ({cur.invalid / n:.1%} >= {th.invalid:g}){example}"
        )
    reasons.extend(_new_categories(ref, result.unseen, n, th))
    return reasons


def _new_categories(
    ref: ColumnProfile, unseen: list[tuple[str, int]], n: int, th: Thresholds
) -> list[str]:
    """Unseen values holding ``new_category`` of the rows, more than the reference makes
    plausible (binomial test, Bonferroni over the unseen values looked at): a value never
    among ``n`` training rows has a share below ``-ln(p_value) / n`` at ``1 - p_value``
    confidence (the "rule of three" at 5 %), or, where the profile pooled rare values as
    ``other``, below that plus the share of its rarest stored value."""
    if ref.binned or not unseen:
        return []
    from scipy.stats import binom

    rarest = min(ref.counts) if ref.other and ref.counts else 0
    ceiling = (max(rarest, 0) - math.log(th.p_value)) / (ref.rows + 1)
    found = []
    for value, count in unseen:
        if count / n < th.new_category:
            break
        if binom.sf(count - 1, n, min(ceiling, 1.0)) * len(unseen) < th.p_value:
            found.append(f"new category {value!r} in {count / n:.1%} of rows")
    return found
