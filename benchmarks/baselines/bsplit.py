"""The split every baseline uses: exactly kennel's rows (``DataProcessor.split`` defaults:
70/15/15, seed 42, stratified on the factorized target, test first, then valid; each
split in the table's row order)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

SEED = 42


def split_indices(target: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes, _ = pd.factorize(target)
    index = np.arange(len(target))
    rest, test = train_test_split(
        index, test_size=0.15, random_state=SEED, shuffle=True, stratify=codes
    )
    train, valid = train_test_split(
        rest, test_size=0.15 / 0.85, random_state=SEED, shuffle=True, stratify=codes[rest]
    )
    return np.sort(train), np.sort(valid), np.sort(test)  # kennel keeps the table's order


def load(path: str, target: str = "target"):
    """(x, y, train, valid, test): float64 features, int labels, row indices per split."""
    frame = pd.read_parquet(path)
    y = frame[target].to_numpy()
    x = frame.drop(columns=[target]).to_numpy(dtype=np.float64)
    names = [c for c in frame.columns if c != target]
    train, valid, test = split_indices(frame[target])
    return x, y, names, train, valid, test
