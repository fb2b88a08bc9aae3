""" "Did you mean ...?": the one place that suggests a close name for a mistyped one.

Config keys, data set names, column names and metric names all go through here, so every
error that names a bad value offers the same kind of hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: How alike two names must be (``difflib`` ratio) to be suggested.
CUTOFF = 0.5


def close_matches(word: str, options: Iterable[object], *, n: int = 1) -> list[str]:
    """Up to ``n`` of ``options`` (as strings) that look like ``word``, closest first."""
    names = [str(o) for o in options]
    # A case slip ("Survived" for "survived") is the likeliest typo of all: it comes first.
    lowered = {name.lower(): name for name in names}
    same = [lowered[word.lower()]] if word.lower() in lowered and word not in names else []
    found = difflib.get_close_matches(word, names, n=n, cutoff=CUTOFF)
    return (same + [f for f in found if f not in same])[:n]


def did_you_mean(word: str, options: Iterable[object], *, prefix: str = "", n: int = 1) -> str:
    """``"; did you mean 'x'?"`` (or ``'x' or 'y'`` for ``n`` > 1), else ``""``.

    ``prefix`` is put before each suggestion with a dot (``model.params`` + ``num_leaves``).
    """
    close = [f"{prefix}.{c}" if prefix else c for c in close_matches(word, options, n=n)]
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def hint(word: str, options: Iterable[object], *, limit: int = 12) -> str:
    """:func:`did_you_mean`, or when nothing is close, the options themselves:
    ``"; expected one of: a, b, c (and 9 more)"``, so the user always has somewhere to go."""
    names = [str(o) for o in options]
    close = did_you_mean(word, names)
    if close or not names:
        return close
    shown = ", ".join(names[:limit])
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return f"; expected one of: {shown}{more}"
