"""Speed of the monitoring statistics core (``kennel.monitor``) against a plain numpy floor.

* ``BatchStats.update`` (chunks of raw rows) + ``compare`` on ``--rows`` x 100 synthetic
  columns (half float, half text categories with some unseen values and nulls), against the
  floor: per chunk and column ``np.searchsorted`` on precomputed edges (numbers), or
  ``pd.factorize`` + ``Index.get_indexer`` of the distinct values on the vocabulary (text),
  + ``np.bincount``; then PSI per column.
  Chunk generation is not timed.
* ``build_profile`` on 1M x 20 float columns (the target: well under 0.3 s, ~3 % of a ~10 s
  LightGBM training on the same rows).

Prints the times and their ratios; asserts nothing (targets are read here, not in tests).

    .venv/bin/python benchmarks/bench_monitor_core.py [--rows 1000000] [--chunk 100000]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd

from kennel.config import DataConfig
from kennel.data import DataProcessor
from kennel.monitor.drift import BatchStats, compare, psi
from kennel.monitor.profile import Profile, build_profile, categorical_profile, numeric_profile

NUMERIC, CATEGORICAL, VOCAB = 50, 50, 50


def chunk(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array([f"value-{k}" for k in range(VOCAB + 5)], dtype=object)  # 5 unseen
    data: dict[str, object] = {}
    for i in range(NUMERIC):
        values = rng.normal(i, 1 + i % 3, rows)
        values[rng.random(rows) < 0.01] = np.nan
        data[f"x{i}"] = values
    for i in range(CATEGORICAL):
        picks = words[np.minimum(rng.geometric(0.08, rows), VOCAB + 4)]
        picks[rng.random(rows) < 0.01] = None
        data[f"c{i}"] = pd.array(picks, dtype="str")
    return pd.DataFrame(data)


def reference(rows: pd.DataFrame) -> Profile:
    columns = {}
    for name in rows.columns:
        if name.startswith("x"):
            columns[name] = numeric_profile(name, rows[name])
        else:
            vocab = [f"value-{k}" for k in range(VOCAB)]
            columns[name] = categorical_profile(name, rows[name], vocab)
    return Profile(columns=columns, outputs={}, rows=len(rows), output_rows=0, bins=20)


def floor(profile: Profile, chunks: list[pd.DataFrame]) -> float:
    """Searchsorted/get_indexer + bincount per chunk and column, then PSI per column."""
    edges = {n: np.append(c.edges, np.nan) for n, c in profile.columns.items() if c.binned}
    vocab = {n: pd.Index(c.values) for n, c in profile.columns.items() if not c.binned}
    totals: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    for frame in chunks:
        for name in frame.columns:
            if name in edges:
                found = np.searchsorted(edges[name], frame[name].to_numpy(), side="right")
                counts = np.bincount(found, minlength=len(edges[name]) + 1)
            else:  # map the distinct values only (get_indexer on all rows is ~5x slower)
                codes, uniques = pd.factorize(frame[name])
                lookup = np.append(vocab[name].get_indexer(uniques), -1)
                counts = np.bincount(lookup[codes] + 1, minlength=len(vocab[name]) + 1)
            totals[name] = totals.get(name, 0) + counts
    for name, column in profile.columns.items():
        ref = [*column.counts, column.missing] if column.binned else [column.other, *column.counts]
        cur = totals[name]
        psi(np.array(ref), np.resize(cur, len(ref)))
    return time.perf_counter() - start


def kennel(profile: Profile, chunks: list[pd.DataFrame]) -> float:
    start = time.perf_counter()
    stats = BatchStats(profile)
    for frame in chunks:
        stats.update(frame)
    compare(profile, stats)
    return time.perf_counter() - start


def profile_time(rows: int) -> float:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(rows, 20)), columns=[f"f{i}" for i in range(20)])
    frame["y"] = rng.normal(size=rows)
    processor = DataProcessor(DataConfig(source="bench.parquet", target="y")).fit(frame)
    start = time.perf_counter()
    build_profile(processor, frame, None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    profile = reference(chunk(200_000, seed=0))
    n_chunks = max(args.rows // args.chunk, 1)
    ours, base = [], []
    for repeat in range(args.repeats):
        chunks = [chunk(args.chunk, seed=1 + repeat * n_chunks + i) for i in range(n_chunks)]
        ours.append(kennel(profile, chunks))
        base.append(floor(profile, chunks))
        del chunks
    mine, plain = min(ours), min(base)
    print(f"update+compare, {n_chunks} x {args.chunk:,} rows x 100 columns (best of repeats)")
    print(f"  kennel BatchStats+compare: {mine:.2f} s")
    print(f"  numpy floor:               {plain:.2f} s")
    print(f"  ratio kennel/floor:        {mine / plain:.2f}  (target <= 3)")
    built = profile_time(args.rows)
    print(f"build_profile, {args.rows:,} rows x 20 float columns: {built:.3f} s (target < 0.3 s)")


if __name__ == "__main__":
    main()
