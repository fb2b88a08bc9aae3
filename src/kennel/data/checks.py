"""Checks of the ``data`` settings against the table's columns: every column a setting names
exists (the closest name is suggested), and the settings do not contradict each other.
Each problem is one line naming the file, the setting and the column (exit 2)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kennel.config import DataConfig
from kennel.data.splits import check_split_columns
from kennel.errors import DataError
from kennel.suggest import hint

logger = logging.getLogger(__name__)

#: Fewer labeled rows than this cannot make a train/valid/test split worth the name.
MIN_LABELED_ROWS = 10


def check_listed(
    config: DataConfig,
    target: str,
    columns: Sequence[str],
    *,
    display: str,
    dropped: bool = False,
) -> None:
    """Every column named in the config exists; the lists do not contradict each other.
    ``dropped``: the ``data.drop`` columns were removed from ``columns`` already."""
    if not target:
        raise DataError(f"{display}: data.target is not set; name the target column")
    present = set(columns)
    listed = [
        ("data.target", [target]),
        ("data.categorical", config.categorical),
        ("data.numeric", config.numeric),
        ("data.drop", config.drop),
        ("data.keep", config.keep),
    ]
    for key, names in listed:
        for name in names:
            if name not in present and not (dropped and name in config.drop):
                raise DataError(
                    f"{display}: column '{name}' (from {key}) does not exist{hint(name, columns)}"
                )
    both = set(config.categorical) & set(config.numeric)
    if both:
        raise DataError(
            f"{display}: column '{sorted(both)[0]}' is in both data.categorical and data.numeric"
        )
    for key, names in listed[1:]:
        if target in names:
            raise DataError(f"{display}: the target column '{target}' cannot be in {key}")
    dropped_and_typed = set(config.drop) & (set(config.categorical) | set(config.numeric))
    if dropped_and_typed:
        raise DataError(
            f"{display}: column '{sorted(dropped_and_typed)[0]}' is both dropped "
            f"(data.drop) and typed (data.categorical/data.numeric)"
        )
    if not dropped:
        check_split_columns(config.split, list(columns), target=target, display=display)


def check_labeled(display: str, target: str, *, labeled: int, total: int) -> None:
    """Rows without a target are left out with one warning; too few labeled rows stop."""
    if labeled == total:
        return
    if labeled < MIN_LABELED_ROWS:
        raise DataError(
            f"{display}: only {labeled} of {total} rows have a value in target column "
            f"'{target}'; at least {MIN_LABELED_ROWS} are needed"
        )
    logger.warning(
        "%s: leaving out %d of %d rows whose target '%s' is missing",
        display,
        total - labeled,
        total,
        target,
    )


def split_columns(config: DataConfig) -> set[str]:
    """Columns a split follows: read for the split even when ``data.drop`` lists them (they
    are never features then)."""
    return {c for c in (config.split.time_on, config.split.group_on) if c is not None}


__all__ = ["MIN_LABELED_ROWS", "check_labeled", "check_listed", "split_columns"]
