"""The seeded synthetic table of the monitoring benchmark (``bench_monitor.py``): 100 feature
columns resembling a real table, and a binary target.

* ``f00``..``f49``: floats. By ``i % 5``: normal; log-normal (skewed amounts); uniform; a
  mixture of two normals (bimodal); normal with 3 % missing.
* ``i00``..``i24``: integers with ~5 % missing (nullable ``int64`` in Parquet). By ``i % 3``:
  Poisson counts (mean 1-20); ages (18-90); geometric counts (long tail).
* ``c00``..``c24``: text categories with 5 to 50 levels (Zipf-like shares, 1 % missing).
* ``target``: 0/1 from a few of the columns plus noise (only in the reference table).

Every distribution parameter comes from one fixed seed, so tables written with different
``seed`` values are samples of the *same* distribution. ``shifted=True`` moves 10 numeric
columns (:data:`SHIFTED_NUMERIC`) by +0.5 standard deviation and gives 2 categorical columns
(:data:`SHIFTED_CATEGORICAL`) a level never seen before in 20 % of the rows. Tables are written
chunk by chunk (one Parquet row group per chunk), so generating 1M rows needs ~0.3 GB.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

N_FLOAT, N_INT, N_CAT = 50, 25, 25
FLOATS = [f"f{i:02d}" for i in range(N_FLOAT)]
INTS = [f"i{i:02d}" for i in range(N_INT)]
CATS = [f"c{i:02d}" for i in range(N_CAT)]
FEATURES = [*FLOATS, *INTS, *CATS]
TARGET = "target"
#: 6 float and 4 integer columns, of every kind, moved by +0.5 SD in the shifted batch...
SHIFTED_NUMERIC = ["f00", "f01", "f02", "f03", "f04", "f05", "i00", "i01", "i02", "i03"]
#: ... and 2 categorical columns where a new level takes 20 % of the rows.
SHIFTED_CATEGORICAL = ["c00", "c01"]
NEW_LEVEL = "a-level-never-seen"
NEW_LEVEL_SHARE = 0.2
SHIFT_SD = 0.5
CHUNK_ROWS = 100_000
#: Bump when the generator changes: cached files carry it in their name.
VERSION = 2


@cache
def spec() -> dict[str, Any]:
    """Distribution parameters of every column (fixed seed: the same for every table)."""
    rng = np.random.default_rng(20240622)
    floats = []
    for i in range(N_FLOAT):
        kind = i % 5
        mu, sd = float(rng.uniform(-50, 50)), float(rng.uniform(0.5, 20))
        floats.append({"kind": kind, "mu": mu, "sd": sd, "sigma": float(rng.uniform(0.3, 1.2))})
    ints = [{"kind": i % 3, "lam": float(rng.uniform(1, 20))} for i in range(N_INT)]
    cats = []
    for i in range(N_CAT):
        levels = 5 + (i * 45) // (N_CAT - 1)  # 5 .. 50
        weights = 1.0 / np.arange(1, levels + 1) ** rng.uniform(0.6, 1.4)
        names = [f"{CATS[i]}-level-{k:02d}" for k in range(levels)]
        cats.append({"levels": np.array(names, dtype=object), "p": weights / weights.sum()})
    return {"floats": floats, "ints": ints, "cats": cats}


def _float(rng: np.random.Generator, p: dict[str, Any], n: int) -> tuple[np.ndarray, float]:
    """Values and the distribution's standard deviation."""
    kind, mu, sd = p["kind"], p["mu"], p["sd"]
    if kind == 1:
        s = p["sigma"]
        values = np.exp(rng.normal(np.log(sd), s, n))
        return values, float(sd * np.sqrt((np.exp(s * s) - 1) * np.exp(s * s)))
    if kind == 2:
        return rng.uniform(mu - sd, mu + sd, n), float(2 * sd / np.sqrt(12))
    if kind == 3:
        second = rng.random(n) < 0.3
        values = rng.normal(mu, sd, n)
        values[second] = rng.normal(mu + 3 * sd, sd / 2, int(second.sum()))
        mean = 0.7 * mu + 0.3 * (mu + 3 * sd)
        var = 0.7 * (sd**2 + (mu - mean) ** 2) + 0.3 * (sd**2 / 4 + (mu + 3 * sd - mean) ** 2)
        return values, float(np.sqrt(var))
    values = rng.normal(mu, sd, n)
    if kind == 4:
        values[rng.random(n) < 0.03] = np.nan
    return values, sd


def _int(rng: np.random.Generator, p: dict[str, Any], n: int) -> tuple[np.ndarray, float]:
    kind, lam = p["kind"], p["lam"]
    if kind == 0:
        return rng.poisson(lam, n).astype(np.float64), float(np.sqrt(lam))
    if kind == 1:
        return np.clip(np.rint(rng.normal(40, 12, n)), 18, 90), 12.0
    q = 1 / (1 + lam)
    return rng.geometric(q, n).astype(np.float64), float(np.sqrt(1 - q) / q)


def chunk(rows: int, seed: int, *, shifted: bool = False, target: bool = False) -> Any:
    """One chunk of the table (a pandas DataFrame)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    s = spec()
    data: dict[str, Any] = {}
    for name, p in zip(FLOATS, s["floats"], strict=True):
        values, sd = _float(rng, p, rows)
        if shifted and name in SHIFTED_NUMERIC:
            values = values + SHIFT_SD * sd
        data[name] = values
    for name, p in zip(INTS, s["ints"], strict=True):
        values, sd = _int(rng, p, rows)
        if shifted and name in SHIFTED_NUMERIC:  # whole steps, +0.5 SD on average
            step = SHIFT_SD * sd
            values = values + np.floor(step) + (rng.random(rows) < step - np.floor(step))
        missing = rng.random(rows) < 0.05
        data[name] = pd.array(values.astype(np.int64), dtype="Int64")
        data[name][missing] = pd.NA
    for name, p in zip(CATS, s["cats"], strict=True):
        codes = rng.choice(len(p["levels"]), size=rows, p=p["p"])
        values = p["levels"][codes]
        values[rng.random(rows) < 0.01] = None
        if shifted and name in SHIFTED_CATEGORICAL:
            values[rng.random(rows) < NEW_LEVEL_SHARE] = NEW_LEVEL
        data[name] = values
    frame = pd.DataFrame(data)
    if target:
        frame[TARGET] = _target(rng, frame)
    return frame


def _target(rng: np.random.Generator, frame: Any) -> np.ndarray:
    def z(name: str) -> np.ndarray:
        v = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        v = (v - np.nanmean(v)) / (np.nanstd(v) or 1.0)
        return np.nan_to_num(v)

    logit = 0.9 * z("f00") - 0.7 * z("f07") + 0.5 * z("f12") * z("f13") + 0.4 * z("i05")
    logit += 0.8 * (frame["c02"] == "c02-level-00").to_numpy(dtype=float) - 0.3
    return (logit + rng.logistic(size=len(frame)) > 0).astype(np.int64)


def table(
    data_dir: Path, rows: int, seed: int, *, shifted: bool = False, target: bool = False
) -> Path:
    """Write the table once (seeded; cached by name) and return its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = "shifted" if shifted else "same"
    path = (
        data_dir / f"monitor_v{VERSION}_{rows}x100_{kind}_s{seed}{'_y' if target else ''}.parquet"
    )
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    writer = None
    try:
        for k, start in enumerate(range(0, rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, rows - start)
            frame = chunk(n, seed * 1000 + k, shifted=shifted, target=target)
            batch = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                schema = batch.schema.remove_metadata()
                schema = pa.schema(
                    [pa.field(f.name, pa.string()) if f.name in CATS else f for f in schema]
                )
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(batch.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, path)
    return path
