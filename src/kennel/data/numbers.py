"""Numbers written as text the way people export them: ``$1,499.00``, ``1.499,00 €``,
``12.5%``, ``(1,200)``, `` 42 ``.

A spreadsheet or a report tool writes numbers for people to read; pandas reads them back as
text, and a text column with hundreds of values becomes a useless category (or, all
distinct, an identifier). Here such a column is recognised from its values and read back as
numbers, the same way in training, batch prediction and serving:

* **decorations** are stripped: currency symbols and codes (``$``, ``€``, ``£``, ``USD``,
  ``EUR``, ``kr``, ...) before or after the number, surrounding spaces, ``%`` (read as a
  fraction by default: ``12.5%`` is 0.125, what the spreadsheet cell holds; ``data.percent=
  number`` reads 12.5), and accounting negatives in parentheses (``(1,200)`` is -1200);
* **the decimal mark** is the column's own convention, inferred from its values: a value with
  both marks (``1.499,00``) or a mark not followed by exactly three digits (``12,5``) shows
  which one is decimal; a repeated mark (``1,234,567``) is a thousands separator. Values that
  prove nothing (``1,499``) follow the others; with no evidence at all, ``.`` is the decimal
  mark (so ``1,499`` is 1499, as pandas would read ``1499``);
* **thousands separators** (the other mark, spaces, apostrophes) must group digits by three
  (or the Indian ``1,00,000``); anything else is not a number in that convention. A value
  that is not valid in the column's convention but is a plain number (``1499.5`` sent to a
  ``1.499,00`` column) is read as the plain number.

Everything works on the distinct values of a column; :class:`TextNumbers` is an additive
summary, so partitions of a Dask frame give the same decision as the whole pandas column.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Text that means "missing" in a numeric or date column of a request.
MISSING_TEXT = frozenset({"", "nan", "na", "n/a", "null", "none", "nat"})
#: A text column is numeric when at least this share of its filled cells are numbers...
NUMERIC_TEXT_SHARE = 0.95
#: ...and at most this many distinct other values (read as missing) remain.
MAX_MISSING_TOKENS = 5
DECIMAL_MARKS = (".", ",")
#: Currency symbols and ISO 4217 codes stripped before or after a number.
CURRENCY_SYMBOLS = (
    "US$", "C$", "A$", "NZ$", "HK$", "S$", "R$", "$", "€", "£", "¥", "₹", "₽", "₩", "₺", "₪",
    "₫", "฿", "₦", "₱", "₴", "₸", "₡", "₲", "₵", "¢", "zł", "Kč", "kr", "Fr.", "Ft", "lei",
)  # fmt: skip
CURRENCY_CODES = (
    "USD", "EUR", "GBP", "JPY", "CNY", "RMB", "CHF", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK",
    "ISK", "PLN", "CZK", "HUF", "RON", "BGN", "INR", "BRL", "MXN", "ZAR", "RUB", "TRY", "KRW",
    "SGD", "HKD", "ILS", "THB", "IDR", "MYR", "PHP", "VND", "ARS", "CLP", "COP", "PEN", "UAH",
    "AED", "SAR", "EGP", "NGN", "KES", "TWD", "PKR", "BDT",
)  # fmt: skip
_CURRENCY = "|".join(
    re.escape(c) for c in sorted((*CURRENCY_SYMBOLS, *CURRENCY_CODES), key=len, reverse=True)
)
_SIGN = "[-+\u2212]"
_NUMBER = re.compile(
    rf"^(?P<open>\()?\s*(?P<sign1>{_SIGN})?\s*(?P<cur1>{_CURRENCY})?\s*(?P<sign2>{_SIGN})?\s*"
    r"(?P<body>[0-9](?:[0-9.,'\u2019\s]*[0-9])?|[.,][0-9]+)"
    rf"\s*(?P<pct>%)?\s*(?P<cur2>{_CURRENCY})?\s*(?P<close>\))?$"
)
#: Thousands separators besides the other decimal mark (shown by these names in the log).
_SPACES = {" ": "space", "\u00a0": "no-break space", "\u202f": "narrow no-break space"}
_APOSTROPHES = ("'", "\u2019")
_DIGITS = re.compile(r"^[0-9]+$")
#: Placeholder texts a summary keeps (the smallest ones): one more than a verdict allows.
_TOKENS_KEPT = MAX_MISSING_TOKENS + 1


def read_number(text: str, decimal: str) -> tuple[float, tuple[str, ...]] | None:
    """(value, what was stripped) of one decorated number with ``decimal`` as the decimal
    mark, or None. ``%`` is reported, not applied (the caller knows ``data.percent``)."""
    match = _NUMBER.match(text.strip())
    if match is None or bool(match["open"]) != bool(match["close"]):
        return None
    if match["sign1"] and match["sign2"]:
        return None
    if match["cur1"] and match["cur2"]:
        return None
    body = match["body"]
    number = _body_value(body, decimal)
    if number is None:
        return None
    marks: list[str] = []
    for currency in (match["cur1"], match["cur2"]):
        if currency:
            marks.append(currency)
    marks.extend(_separators(body, decimal))
    if match["pct"]:
        marks.append("%")
    negative = (match["sign1"] or match["sign2"] or "+") != "+"
    if match["open"]:
        marks.append("()")
        negative = True
    return (-number if negative else number), tuple(marks)


def _body_value(body: str, decimal: str) -> float | None:
    """The digits of ``body`` with ``decimal`` as the decimal mark and grouped thousands."""
    if body.count(decimal) > 1:
        return None
    whole, _, fraction = body.partition(decimal)
    if fraction and not _DIGITS.match(fraction):
        return None
    if not whole:
        return float("0." + fraction) if fraction else None
    separators = {c for c in whole if not c.isascii() or not c.isdigit()}
    if separators:
        if len(separators) > 1:
            return None
        (sep,) = separators
        if sep in DECIMAL_MARKS and sep == decimal:
            return None
        groups = whole.split(sep)
        if not all(_DIGITS.match(g) for g in groups) or not _grouped(groups):
            return None
        whole = "".join(groups)
    elif not _DIGITS.match(whole):
        return None
    return float(f"{whole}.{fraction}" if fraction else whole)


def _grouped(groups: list[str]) -> bool:
    """Thousands grouping: ``1,234,567`` or the Indian ``12,34,567``."""
    if not 1 <= len(groups[0]) <= 3 or len(groups[-1]) != 3:
        return False
    middle = {len(g) for g in groups[1:-1]}
    return middle <= {3} or (middle <= {2} and len(groups[0]) <= 2)


def _separators(body: str, decimal: str) -> list[str]:
    """The thousands separators of a valid body, as named in the log."""
    whole = body.partition(decimal)[0]
    found = []
    for char in dict.fromkeys(whole):
        if char.isascii() and char.isdigit():
            continue
        found.append(_SPACES.get(char, "'" if char in _APOSTROPHES else char))
    return found


def decimal_hint(text: str) -> str | None:
    """The decimal mark a value proves (``1.499,00`` -> ``,``; ``12.5`` -> ``.``;
    ``1,234,567`` -> ``.``), or None when it proves nothing (``1,499``, ``42``)."""
    match = _NUMBER.match(text.strip())
    if match is None:
        return None
    body = match["body"]
    if "," in body and "." in body:
        return "," if body.rfind(",") > body.rfind(".") else "."
    for mark, other in ((",", "."), (".", ",")):
        if mark not in body:
            continue
        if body.count(mark) > 1:
            return other
        before, _, after = body.partition(mark)
        before = before.strip()
        others = any(c in body for c in (*_SPACES, *_APOSTROPHES))
        if len(after) != 3 or before in ("", "0") or others:
            return mark
        return None
    return None


# --------------------------------------------------------------------------- reading columns
def read_values(cleaned: Sequence[Any], number_format: Mapping[str, Any] | None) -> np.ndarray:
    """Float64 values of a column's distinct values (stripped, missing ones already None),
    NaN where a value is not a number. Without ``number_format`` only plain numbers are
    read (what ``pd.to_numeric`` reads); with it, decorated numbers in its convention too."""
    plain = pd.to_numeric(pd.Series(list(cleaned), dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    if not number_format:
        return plain
    decimal = number_format.get("decimal", ".")
    fraction = number_format.get("percent", "fraction") == "fraction"
    out = plain.copy()
    for i, value in enumerate(cleaned):
        if not isinstance(value, str) or not _needs_reading(value, plain[i], decimal):
            continue
        read = read_number(value, decimal)
        if read is not None:
            number, marks = read
            out[i] = number / 100.0 if fraction and "%" in marks else number
    return out


def _needs_reading(value: str, plain: float, decimal: str) -> bool:
    """Whether a value's plain reading is not its reading in the convention of ``decimal``:
    it is not a plain number, or (with ``,`` decimal) it holds a mark that means otherwise."""
    if math.isnan(plain):
        return True
    return decimal == "," and ("." in value or "," in value)


# --------------------------------------------------------------------------- deciding
@dataclass
class Reading:
    """How a column's values read in one convention (additive over partitions)."""

    rows: int = 0
    """Rows holding a number."""
    other: int = 0
    """Rows holding other text (placeholders such as ``?``)."""
    tokens: list[str] = field(default_factory=list)
    """The smallest few of those texts (enough to tell whether there are too many)."""
    formatted: int = 0
    """Rows that are numbers only when read in this convention (decorated or separated)."""
    marks: dict[str, int] = field(default_factory=dict)
    """What was stripped -> rows."""

    def __add__(self, other: Reading) -> Reading:
        marks = dict(self.marks)
        for mark, n in other.marks.items():
            marks[mark] = marks.get(mark, 0) + n
        return Reading(
            self.rows + other.rows,
            self.other + other.other,
            sorted(set(self.tokens) | set(other.tokens))[:_TOKENS_KEPT],
            self.formatted + other.formatted,
            marks,
        )


@dataclass
class TextNumbers:
    """What the role rules need to know about a text column's values as numbers, for both
    decimal marks; partitions combine with ``+`` (the result does not depend on how the rows
    were cut)."""

    readings: dict[str, Reading] = field(
        default_factory=lambda: {mark: Reading() for mark in DECIMAL_MARKS}
    )
    evidence: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DECIMAL_MARKS, 0))
    """Rows whose value proves each decimal mark."""
    non_str: bool = False
    """A value that is neither a number nor text (the column is not numbers as text)."""

    def __add__(self, other: TextNumbers) -> TextNumbers:
        return TextNumbers(
            {m: self.readings[m] + other.readings[m] for m in DECIMAL_MARKS},
            {m: self.evidence[m] + other.evidence[m] for m in DECIMAL_MARKS},
            self.non_str or other.non_str,
        )

    @property
    def decimal(self) -> str:
        """The column's decimal mark: the one more rows prove; ``.`` when none or a tie."""
        return "," if self.evidence[","] > self.evidence["."] else "."

    def reading(self) -> Reading:
        return self.readings[self.decimal]


def summarize(uniques: Sequence[Any], counts: np.ndarray | Sequence[int]) -> TextNumbers:
    """The :class:`TextNumbers` of a column from its distinct values and rows per value."""
    cleaned = [u.strip() if isinstance(u, str) else u for u in uniques]
    plain = read_values(cleaned, None)
    counts = np.asarray(counts, dtype=np.int64)
    out = TextNumbers()
    for i, value in enumerate(cleaned):
        n = int(counts[i]) if i < len(counts) else 0
        if isinstance(value, str) and value.lower() in MISSING_TEXT:
            continue
        if not isinstance(value, str):
            out.non_str |= math.isnan(plain[i])
            for reading in out.readings.values():
                reading.rows += 0 if math.isnan(plain[i]) else n
            continue
        hint = decimal_hint(value)
        if hint is not None:
            out.evidence[hint] += n
        for mark, reading in out.readings.items():
            _count(reading, value, plain[i], mark, n)
    for reading in out.readings.values():
        reading.tokens = sorted(set(reading.tokens))[:_TOKENS_KEPT]
    return out


def _count(reading: Reading, value: str, plain: float, decimal: str, n: int) -> None:
    if not _needs_reading(value, plain, decimal):
        reading.rows += n
        return
    read = read_number(value, decimal)
    if read is None:
        if not math.isnan(plain):  # a plain number outside the convention: still a number
            reading.rows += n
            return
        reading.other += n
        if len(reading.tokens) < 4 * _TOKENS_KEPT:  # trimmed to the smallest when summarized
            reading.tokens.append(value)
        return
    reading.rows += n
    reading.formatted += n
    for mark in read[1]:
        reading.marks[mark] = reading.marks.get(mark, 0) + n


@dataclass
class NumberVerdict:
    """A text column that holds numbers: its placeholder values (read as missing) and, when
    plain ``pd.to_numeric`` would not read it, the convention to read it with."""

    tokens: list[str]
    number_format: dict[str, Any] | None


def verdict(summary: TextNumbers, *, percent: str = "fraction") -> NumberVerdict | None:
    """Whether a text column is numbers: nearly every filled cell (95%) reads as a number in
    the column's convention and at most 5 distinct other values remain."""
    reading = summary.reading()
    if summary.non_str or reading.rows == 0:
        return None
    if len(reading.tokens) > MAX_MISSING_TOKENS:
        return None
    if reading.rows / max(reading.rows + reading.other, 1) < NUMERIC_TEXT_SHARE:
        return None
    return NumberVerdict(sorted(reading.tokens), number_format(summary, percent=percent))


def number_format(summary: TextNumbers, *, percent: str = "fraction") -> dict[str, Any] | None:
    """The convention a column is read in (saved with its role), or None when plain
    ``pd.to_numeric`` reads it the same (no decorations, ``.`` as the decimal mark)."""
    decimal = summary.decimal
    reading = summary.readings[decimal]
    if decimal == "." and reading.formatted == 0:
        return None
    return {"decimal": decimal, "percent": percent, "stripped": sorted(reading.marks)}


def describe_format(number_format: Mapping[str, Any]) -> str:
    """``decimal mark '.'; stripped '$', ','; '%' read as a fraction``: for the log."""
    stripped = [m for m in number_format.get("stripped", []) if m != "%"]
    text = f"decimal mark '{number_format.get('decimal', '.')}'"
    if stripped:
        text += "; stripped " + ", ".join(f"'{m}'" for m in stripped)
    if "%" in number_format.get("stripped", []):
        how = "a fraction (12.5% -> 0.125)"
        if number_format.get("percent") == "number":
            how = "a number (12.5% -> 12.5)"
        text += f"; '%' read as {how}"
    return text


def target_number_format(
    summary: TextNumbers, *, percent: str = "fraction"
) -> dict[str, Any] | None:
    """The convention of a text target whose every value is a number written for people
    (``$1,499``), else None: a target of labels, or of plain numbers as text, stays what it
    was (a target is never partly missing by placeholder)."""
    found = verdict(summary, percent=percent)
    if found is None or found.tokens or summary.reading().other:
        return None
    return found.number_format


__all__ = [
    "MISSING_TEXT",
    "NumberVerdict",
    "TextNumbers",
    "describe_format",
    "read_number",
    "read_values",
    "summarize",
    "target_number_format",
    "verdict",
]
