"""Labels typed by hand: ``yes``, ``YES`` and `` Yes `` are one class, not three.

Text values of the target and of categorical columns are compared after these rules
(:class:`TextRules`, saved with the fitted processor so that prediction applies the same):

* surrounding whitespace is always stripped (`` Yes `` is ``Yes``);
* values that differ only in case are merged (``data.merge_case``, on by default) into their
  **most frequent spelling** (ties: the first in sorted order). The model's classes and the
  category vocabularies hold those spellings, so predictions return them, and a request with
  `` YES `` is read as the class ``yes``. The merge is a WARNING naming every spelling and
  its rows, once per column and training; ``data.merge_case=false`` keeps them apart.

The merge is decided from label counts, which add up over partitions, so the Dask path
reaches the same spellings as pandas.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.data.values import label

logger = logging.getLogger(__name__)

#: Spellings named per group in a warning (the rest are counted).
SHOWN_SPELLINGS = 6
#: Groups named per column in a warning.
SHOWN_GROUPS = 8


@dataclass(frozen=True)
class TextRules:
    """How text values are compared: stripped, and merged across case."""

    strip: bool = True
    merge_case: bool = True

    @classmethod
    def before_normalising(cls) -> TextRules:
        """What processors saved before these rules existed did: compare values as written."""
        return cls(strip=False, merge_case=False)

    @property
    def active(self) -> bool:
        return self.strip or self.merge_case

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


@dataclass
class Merged:
    """Label counts after the rules, and the spellings that became one value."""

    counts: dict[str, int]
    groups: dict[str, list[tuple[str, int]]]
    """Kept spelling -> every raw spelling merged into it with its rows (most first); only
    values written in more than one way."""

    def case_groups(self) -> dict[str, list[tuple[str, int]]]:
        """The groups whose spellings differ in more than surrounding spaces."""
        return {
            kept: spellings
            for kept, spellings in self.groups.items()
            if len({s.strip() for s, _ in spellings}) > 1
        }


def merge_spellings(counts: Mapping[str, int], rules: TextRules) -> Merged:
    """Apply ``rules`` to label counts (``label -> rows``): stripped spellings add up, and
    with ``merge_case`` the spellings of one value keep the most frequent."""
    if not rules.active:
        return Merged(dict(counts), {})
    by_key: dict[str, dict[str, int]] = {}
    raw: dict[str, list[tuple[str, int]]] = {}
    for spelling, n in counts.items():
        text = spelling.strip() if rules.strip else spelling
        key = text.casefold() if rules.merge_case else text
        written = by_key.setdefault(key, {})
        written[text] = written.get(text, 0) + n
        raw.setdefault(key, []).append((spelling, n))
    merged: dict[str, int] = {}
    groups: dict[str, list[tuple[str, int]]] = {}
    for key, written in by_key.items():
        kept = min(written, key=lambda s: (-written[s], s))
        merged[kept] = sum(written.values())
        if len(raw[key]) > 1:
            groups[kept] = sorted(raw[key], key=lambda sn: (-sn[1], sn[0]))
    return Merged(merged, groups)


def case_lookup(values: Iterable[Any]) -> dict[str, str]:
    """``casefold -> kept spelling`` for the labels of merged values (classes, a vocabulary)."""
    lookup: dict[str, str] = {}
    for value in values:
        text = label(value)
        if text is not None:
            lookup.setdefault(text.casefold(), text)
    return lookup


def apply_rules(
    labels: Sequence[str | None], rules: TextRules, lookup: Mapping[str, str] | None
) -> list[str | None]:
    """Distinct labels as the fitted processor compares them: stripped, then (with a
    ``lookup`` from :func:`case_lookup`) spelled as the kept value of their case group."""
    out: list[str | None] = []
    for text in labels:
        if text is not None:
            if rules.strip:
                text = text.strip()
            if lookup is not None:
                text = lookup.get(text.casefold(), text)
        out.append(text)
    return out


def is_text(series: pd.Series) -> bool:
    """Whether a column holds text labels (the rules do nothing to numbers and booleans)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return ptypes.infer_dtype(dtype.categories, skipna=True) == "string"
    return (ptypes.is_string_dtype(dtype) or ptypes.is_object_dtype(dtype)) and (
        ptypes.infer_dtype(series, skipna=True) == "string"
    )


def relabel(series: pd.Series, rules: TextRules, lookup: Mapping[str, str] | None) -> pd.Series:
    """The column with every text value written as the rules read it; the same object when
    nothing changes (so its content hash stays the same)."""
    if not rules.active or not is_text(series):
        return series
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    written = [u if isinstance(u, str) else label(u) for u in uniques]
    kept = apply_rules(written, rules, lookup)
    if kept == list(uniques):
        return series
    values = np.asarray(kept, dtype=object)[codes]
    values[codes < 0] = np.nan
    return pd.Series(values, index=series.index, name=series.name, dtype=object)


def warn_merged(display: str, what: str, merged: Merged, rules: TextRules) -> None:
    """One WARNING naming the spellings merged across case (``what``: ``target 'default'``
    or ``column 'student'``); one INFO line for values that only lost surrounding spaces."""
    cased = merged.case_groups()
    if cased:
        shown = [_group_text(kept, spellings) for kept, spellings in cased.items()]
        more = f"; and {len(shown) - SHOWN_GROUPS} more" if len(shown) > SHOWN_GROUPS else ""
        logger.warning(
            "%s: %s has values that differ only in case, merged into their most frequent "
            "spelling: %s%s (data.merge_case=false keeps them apart)",
            display,
            what,
            "; ".join(shown[:SHOWN_GROUPS]),
            more,
        )
    spaced = {k: v for k, v in merged.groups.items() if k not in cased}
    if spaced and rules.strip:
        rows = sum(n for spellings in spaced.values() for s, n in spellings if s != s.strip())
        logger.info(
            "%s: %s: surrounding spaces stripped from %d value(s) in %d row(s) (e.g. %r)",
            display,
            what,
            len(spaced),
            rows,
            next(s for spellings in spaced.values() for s, _ in spellings if s != s.strip()),
        )


def _group_text(kept: str, spellings: list[tuple[str, int]]) -> str:
    named = ", ".join(f"{s!r} ({n})" for s, n in spellings[:SHOWN_SPELLINGS])
    if len(spellings) > SHOWN_SPELLINGS:
        named += f", ... ({len(spellings) - SHOWN_SPELLINGS} more)"
    return f"{named} -> {kept!r}"


def rules_from_state(data: Mapping[str, Any] | None) -> TextRules:
    """The rules a saved processor used (none for states saved before they existed)."""
    if not data:
        return TextRules.before_normalising()
    return TextRules(strip=bool(data.get("strip", True)), merge_case=bool(data.get("merge_case")))


__all__ = [
    "Merged",
    "TextRules",
    "apply_rules",
    "case_lookup",
    "is_text",
    "merge_spellings",
    "relabel",
    "rules_from_state",
    "warn_merged",
]
