"""The train/valid/test split of a Dask frame (``resource.cluster``): the same kinds of split
as in-process (:mod:`kennel.data.splits`), decided partition by partition without gathering
the table, so the shares are approximate (the log and ``split.json`` say so):

* **random**: a row's split comes from a seeded hash of its content (:func:`hash_split`), so
  it does not depend on how the data set is partitioned or on which worker reads it. Classes
  are not stratified exactly: every class is split by the same hash, so each split holds
  about its share of each class; a class too small to stratify goes to train, as in-process.
* **time**: the cut times are placed on an evenly spaced sample of every partition's sorted
  times (about :data:`TIME_SAMPLE` in all), then every row is compared with them; rows with
  the same time stay together as in-process.
* **group**: a group's split comes from a seeded hash of its value alone, so every partition
  decides it the same way; the shares are groups rather than rows.

Functions here are sent to the workers, so they live in an importable module."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kennel.data.dask_facts import _in_order
from kennel.data.splits import (
    SPLITS,
    assign_groups,
    assign_times,
    seeded_unit,
    time_columns,
    time_cuts,
    time_kind,
    time_span,
    time_values,
)
from kennel.data.values import factorized_labels

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

logger = logging.getLogger(__name__)

#: Sorted times sent to the client to place the cuts of a time split (in all partitions).
TIME_SAMPLE = 100_000


def hash_split(frame: pd.DataFrame, seed: int, test: float, valid: float) -> np.ndarray:
    """Per row: 0 train, 1 valid, 2 test, from a seeded hash of the row's values (column
    names and the index play no part). The same rows get the same splits however the
    table is partitioned, in pandas or on any worker."""
    content = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    u = seeded_unit(content, seed)
    out = np.zeros(len(frame), dtype=np.int8)
    out[u < test + valid] = 1
    out[u < test] = 2
    return out


def split_shares(config: Any) -> tuple[float, float]:
    """(test share, valid share) of ``data.split`` as fractions of all rows."""
    total = config.train + config.valid + config.test
    return config.test / total, config.valid / total


# --------------------------------------------------------------------------- per partition
def random_part(
    part: pd.DataFrame, seed: int, test: float, valid: float, target: str, rare: list[str]
) -> pd.Series:
    which = hash_split(part, seed, test, valid)
    if rare and len(part):
        codes, labels = factorized_labels(part[target])
        small = np.array([lab in set(rare) for lab in labels], dtype=bool)
        which[(codes >= 0) & (small[codes] if len(small) else False)] = 0
    return pd.Series(which, index=part.index, dtype="int8")


def time_part(
    part: pd.DataFrame, column: str, kind: str, cuts: tuple[float, float], display: str
) -> pd.Series:
    times = time_values(part[column], kind, column, display)
    return pd.Series(assign_times(times, cuts), index=part.index, dtype="int8")


def group_part(part: pd.DataFrame, column: str, config: Any) -> pd.Series:
    return pd.Series(assign_groups(part[column], config), index=part.index, dtype="int8")


def time_sample(series: pd.Series, kind: str, column: str, display: str, step: float) -> Any:
    """Every ``step``-th of the partition's sorted times (at least one when it has any)."""
    times = time_values(series, kind, column, display)
    ordered = np.sort(times[np.isfinite(times)])
    if not len(ordered):
        return ordered
    picks = np.arange(step / 2.0, len(ordered), step).astype(np.int64)
    return ordered[picks] if len(picks) else ordered[[len(ordered) // 2]]


def time_spans(
    series: pd.Series, kind: str, column: str, display: str, cuts: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(rows, first, last) per split of a partition, and its rows without a time."""
    times = time_values(series, kind, column, display)
    which = assign_times(times, cuts)
    present = np.isfinite(times)
    rows = np.bincount(which, minlength=3)
    first, last = np.full(3, np.inf), np.full(3, -np.inf)
    for k in range(3):
        chosen = times[(which == k) & present]
        if len(chosen):
            first[k], last[k] = chosen.min(), chosen.max()
    return rows, first, last, int((~present).sum())


# --------------------------------------------------------------------------- the split
def split_on_cluster(
    client: Client, processor: Any, frame: dd.DataFrame, rare: dict[str, int]
) -> dd.Series:
    """Split labels (0 train, 1 valid, 2 test) of every row, lazily; the report of what was
    decided is left in ``processor.split_report`` (rows are counted by the caller)."""
    cfg = processor.config.split
    meta = pd.Series([], dtype="int8")
    display = processor._display
    if cfg.time_on is not None:
        column = cfg.time_on
        head = frame.head(2000, npartitions=-1)
        kind = time_kind(
            head[column],
            column,
            display,
            lambda: time_columns(head, exclude=processor.target),
        )
        cuts = _time_cuts(client, processor, frame, column, kind)
        processor.split_report = _time_report(client, frame, column, kind, cuts, display)
        return frame.map_partitions(time_part, column, kind, cuts, display, meta=meta)
    if cfg.group_on is not None:
        processor.split_report = {"method": "group", "column": cfg.group_on, "seed": cfg.seed}
        return frame.map_partitions(group_part, cfg.group_on, cfg, meta=meta)
    test, valid = split_shares(cfg)
    stratified = cfg.stratify and processor._loaded_task != "regression"
    processor.split_report = {"method": "stratified" if stratified else "random", "seed": cfg.seed}
    if rare:
        processor.split_report["rare_classes"] = dict(rare)
    return frame.map_partitions(
        random_part, cfg.seed, test, valid, processor.target, list(rare), meta=meta
    )


def _time_cuts(
    client: Client, processor: Any, frame: dd.DataFrame, column: str, kind: str
) -> tuple[float, float]:
    import dask

    cfg = processor.config.split
    step = max(1.0, (processor.n_rows or 1) / TIME_SAMPLE)
    parts = frame[column].to_delayed()
    display = processor._display
    samples = _in_order(
        client,
        [dask.delayed(time_sample)(part, kind, column, display, step) for part in parts],
    )
    ordered = np.sort(np.concatenate([np.asarray(s, dtype=np.float64) for s in samples]))
    return time_cuts(ordered, cfg.train, cfg.valid, column, display)


def _time_report(
    client: Client,
    frame: dd.DataFrame,
    column: str,
    kind: str,
    cuts: tuple[float, float],
    display: str,
) -> dict[str, Any]:
    import dask

    pieces = _in_order(
        client,
        [
            dask.delayed(time_spans)(part, kind, column, display, cuts)
            for part in frame[column].to_delayed()
        ],
    )
    first = np.min([p[1] for p in pieces], axis=0)
    last = np.max([p[2] for p in pieces], axis=0)
    missing = sum(p[3] for p in pieces)
    if missing:
        logger.warning(
            "%s: %d row(s) have no time in '%s'; they go to train", display, missing, column
        )
    spans = {
        name: time_span(first[k], last[k], kind) if np.isfinite(first[k]) else None
        for k, name in enumerate(SPLITS)
    }
    return {
        "method": "time",
        "column": column,
        "kind": kind,
        "time": spans,
        "rows_without_time": int(missing),
    }


__all__ = ["TIME_SAMPLE", "hash_split", "split_on_cluster", "split_shares"]
