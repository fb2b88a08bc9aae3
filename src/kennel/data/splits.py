"""Seeded train/valid/test row positions: the same table and seed give the same rows anywhere."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from kennel.config import SplitConfig


class Splits(NamedTuple):
    """The three row sets of one data set; each keeps the original index and the target."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def split_positions(
    n_rows: int, config: SplitConfig, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) row positions.

    Two calls of scikit-learn's ``train_test_split`` (test first, then valid from the rest)
    with ``config.seed``, stratified by ``labels`` when given. Drawn on positions, so the frame
    is gathered once per split (the permutation depends only on the row count and labels).
    Raises ``ValueError`` when the rows cannot be split so.
    """
    from sklearn.model_selection import train_test_split

    valid_share = config.valid / (config.train + config.valid)
    positions = np.arange(n_rows)
    rest, test = train_test_split(
        positions, test_size=config.test, random_state=config.seed, shuffle=True, stratify=labels
    )
    train, valid = train_test_split(
        rest,
        test_size=valid_share,
        random_state=config.seed,
        shuffle=True,
        stratify=labels[rest] if labels is not None else None,
    )
    return train, valid, test


__all__ = ["Splits", "split_positions"]
