"""The target column: how its raw values are read (numbers written as text, labels typed by
hand), which task it makes (configured, or inferred by the rule in
:mod:`kennel.data.processor`'s docstring) and its classes in the user's own values and type."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.data.labels import TextRules, case_lookup, merge_spellings, relabel, warn_merged
from kennel.data.numbers import TextNumbers, describe_format, summarize, target_number_format
from kennel.data.values import label, to_float
from kennel.errors import DataError
from kennel.spec import Task

logger = logging.getLogger(__name__)

#: Limits of the ``task=auto`` rule for whole-number targets.
MAX_AUTO_CLASSES = 20
MAX_AUTO_CLASS_RATIO = 0.05


def describe_target(values: pd.Series) -> tuple[bool, bool]:
    """(numeric, whole): whether the non-missing target values are numbers, and all whole."""
    numeric = ptypes.is_numeric_dtype(values.dtype) and not ptypes.is_bool_dtype(values.dtype)
    if not numeric and ptypes.is_object_dtype(values.dtype):
        numeric = ptypes.infer_dtype(values, skipna=True) in {
            "integer",
            "floating",
            "mixed-integer-float",
            "decimal",
        }
    whole = False
    if numeric:
        as_float = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        whole = bool(np.all(np.isfinite(as_float) & (np.mod(as_float, 1) == 0)))
    return numeric, whole


def _shown(values: pd.Series, limit: int = 4) -> str:
    """``benign, malignant`` or ``a, b, c, d, ...``: a few of the values, for the log."""
    names = sorted({str(label(v)) for v in values.head(200)})
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def infer_task(
    values: pd.Series, n_values: int, n_unique: int, *, target: str, display: str
) -> Task:
    """``data.task=auto``: a classifier for text, booleans and whole numbers with few
    distinct values (2, or at most 20 that are also at most 5% of the rows), else regression.
    Logs the reason."""
    numeric, whole = describe_target(values)
    if ptypes.is_bool_dtype(values.dtype):
        reason, classify = f"boolean target ({_shown(values)})", True
    elif not numeric:
        reason, classify = f"text target with {n_unique} distinct values ({_shown(values)})", True
    elif whole and (
        n_unique <= 2
        or (n_unique <= MAX_AUTO_CLASSES and n_unique <= MAX_AUTO_CLASS_RATIO * n_values)
    ):
        reason = f"whole-number target with {n_unique} distinct values ({_shown(values)})"
        classify = True
    else:
        reason, classify = f"numeric target with {n_unique} distinct values", False
    task: Task = "regression" if not classify else ("binary" if n_unique == 2 else "multiclass")
    if classify and n_unique < 2:
        raise DataError(f"{display}: target column '{target}' has a single value; nothing to learn")
    logger.info(
        "task %s inferred from target '%s': %s (set data.task to override)", task, target, reason
    )
    return task


def check_configured_task(
    task: Task, values: pd.Series, n_unique: int, *, target: str, display: str
) -> None:
    """A configured ``data.task`` that the target cannot be is a one-line error."""
    numeric, _ = describe_target(values)
    if task == "regression" and not numeric:
        raise DataError(
            f"{display}: data.task=regression but target column '{target}' is not numeric "
            f"({values.dtype})"
        )
    if task == "binary" and n_unique != 2:
        raise DataError(
            f"{display}: data.task=binary but target column '{target}' has {n_unique} distinct "
            "values"
        )
    if task == "multiclass" and n_unique < 3:
        raise DataError(
            f"{display}: data.task=multiclass but target column '{target}' has {n_unique} "
            "distinct value(s); use binary for two classes"
        )
    logger.info("task %s (configured) for target '%s'", task, target)


def resolve_task(
    values: pd.Series,
    n_values: int,
    *,
    configured: str,
    target: str,
    display: str,
    n_unique: int | None = None,
) -> tuple[Task, list[Any]]:
    """(task, sorted class values) from the target's distinct non-missing ``values`` (every
    rule depends only on which values occur) and the number of labeled rows."""
    n_unique = int(values.nunique()) if n_unique is None else n_unique
    if configured == "auto":
        task = infer_task(values, n_values, n_unique, target=target, display=display)
    else:
        task = configured  # type: ignore[assignment]
        check_configured_task(task, values, n_unique, target=target, display=display)
    if task == "regression":
        return task, []
    numeric, whole = describe_target(values)
    classes = class_values(values, numeric=numeric, whole=whole)
    if len(classes) > 100:
        logger.warning("target '%s' has %d classes; is it really a label?", target, len(classes))
    return task, classes


def class_values(values: pd.Series, *, numeric: bool, whole: bool) -> list[Any]:
    """Sorted JSON-able class values in the user's own type (strings stay strings, whole
    numbers become ``int``, booleans stay ``bool``, other floats stay ``float``)."""
    if ptypes.is_bool_dtype(values.dtype) or ptypes.infer_dtype(values, skipna=True) == "boolean":
        return sorted({bool(v) for v in values.unique()})
    if numeric:
        numbers = pd.to_numeric(values, errors="coerce").unique()
        if whole:
            return sorted({int(v) for v in numbers})
        return sorted({float(v) for v in numbers})
    return sorted({str(label(v)) for v in values.unique()})


def merge_classes(first: list[Any], second: list[Any]) -> list[Any]:
    """The classes of two frames together, sorted (by text when types differ)."""
    merged = {label(c): c for c in [*first, *second]}
    try:
        return sorted(merged.values())
    except TypeError:
        return sorted(merged.values(), key=str)


# --------------------------------------------------------------------------- reading raw values
@dataclass
class TargetPlan:
    """How the target's raw values are read before anything else sees them: as numbers in
    a convention (``$1,499.00``), or as labels with the text rules (``' YES '`` -> ``yes``)."""

    rules: TextRules = field(default_factory=TextRules.before_normalising)
    number_format: dict[str, Any] | None = None
    lookup: dict[str, str] | None = None
    """``casefold -> kept spelling`` when spellings are merged."""


def target_facts(values: pd.Series) -> tuple[TextNumbers | None, dict[str, int] | None]:
    """What :func:`plan_target` needs of a text target's non-missing values: the values read
    as numbers and the rows per label (both add up over partitions); (None, None) for a
    target that is not text."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if not len(uniques) or not all(isinstance(u, str) for u in uniques):
        return None, None
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    return summarize(list(uniques), counts), {
        u: int(n) for u, n in zip(uniques, counts, strict=True)
    }


def plan_target(
    numbers: TextNumbers | None,
    counts: Mapping[str, int] | None,
    *,
    rules: TextRules,
    percent: str,
    task: str,
    target: str,
    display: str,
) -> TargetPlan:
    """Decide (and log, once) how a text target is read: numbers written as text when every
    value is one and the task may be a regression, else labels with ``rules`` (the spellings
    merged are a WARNING). ``counts`` None: too many distinct values to merge any."""
    if numbers is None:
        return TargetPlan(rules=rules)
    if task in ("auto", "regression"):
        written = target_number_format(numbers, percent=percent)
        if written is not None:
            logger.info(
                "%s: target '%s' holds numbers written as text, read as numbers: %s",
                display,
                target,
                describe_format(written),
            )
            return TargetPlan(rules=rules, number_format=written)
    if counts is None:
        return TargetPlan(rules=rules)
    merged = merge_spellings(counts, rules)
    warn_merged(display, f"target '{target}'", merged, rules)
    return TargetPlan(rules=rules, lookup=case_lookup(merged.counts) if rules.merge_case else None)


def read_target(series: pd.Series, plan: TargetPlan, *, target: str, display: str) -> pd.Series:
    """The target as the plan reads it (the same object when nothing changes)."""
    if plan.number_format:
        values = to_float(series, target, f"{display}: target", (), plan.number_format)
        return pd.Series(values, index=series.index, name=series.name)
    return relabel(series, plan.rules, plan.lookup)
