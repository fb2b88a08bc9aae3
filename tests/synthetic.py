"""A partitioned Parquet data set that looks like a real table: a row id, nullable integers,
floats with gaps, text categories with missing values, date strings, numbers stored as text
with placeholders, booleans, rows without a target. Used by the cluster tests and the
benchmarks (``benchmarks/bench_cluster.py``); deterministic for a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CITIES = [
    "Oslo", "Lima", "Pune", "Accra", "Quito", "Hanoi", "Perth", "Turin", "Dakar", "Cusco",
    "Bergen", "Malmo", "Graz", "Leeds", "Porto", "Split", "Riga", "Kyiv", "Cork", "Bonn",
]  # fmt: skip
PLANS = ["basic", "pro", "team"]


def frame(rows: int, *, seed: int = 0, start: int = 0, extra: int = 0) -> pd.DataFrame:
    """``rows`` rows; ``start`` is the first row id (so chunks of one table can be made);
    ``extra`` more float features ``x0``... (half of them carry signal)."""
    rng = np.random.default_rng(seed + start)
    more = rng.normal(0.0, 1.0, (rows, extra))
    age = rng.integers(18, 90, rows)
    income = rng.gamma(2.0, 20_000.0, rows)
    city = rng.choice(np.array(CITIES, dtype=object), rows)
    plan = rng.choice(np.array(PLANS, dtype=object), rows, p=[0.6, 0.3, 0.1])
    days = rng.integers(0, 3 * 365, rows)
    visits = rng.poisson(4.0, rows)
    flag = rng.random(rows) < 0.3
    noise = rng.normal(0.0, 1.0, rows)
    logit = (
        0.04 * (age - 50)
        + 0.00002 * (income - 40_000)
        + np.where(plan == "pro", 0.8, np.where(plan == "team", 1.5, 0.0))
        + 0.2 * visits
        - 0.6 * flag
        + noise
        - 0.8
        + (more[:, ::2].sum(axis=1) * 0.3 if extra else 0.0)
    )
    out = pd.DataFrame(
        {
            "row_id": np.arange(start, start + rows, dtype=np.int64),
            "age": pd.array(age, dtype="Int64"),
            "income": income,
            "city": pd.array(city, dtype="str"),
            "plan": pd.array(plan, dtype="str"),
            "signup": (pd.Timestamp("2022-01-01") + pd.to_timedelta(days, unit="D")).strftime(
                "%Y-%m-%d"
            ),
            "visits_text": pd.array(visits.astype(str), dtype="str"),
            "flag": flag,
            "churned": np.where(logit > 0, "yes", "no"),
            "spend": np.round(50.0 + 3.0 * visits + 0.001 * income + 10.0 * noise, 2),
        }
    )
    for j in range(extra):
        out[f"x{j}"] = more[:, j]
    out["signup"] = out["signup"].astype("str")
    out.loc[rng.random(rows) < 0.05, "age"] = pd.NA
    out.loc[rng.random(rows) < 0.08, "income"] = np.nan
    out.loc[rng.random(rows) < 0.04, "city"] = None
    out.loc[rng.random(rows) < 0.01, "visits_text"] = "?"
    out.loc[rng.random(rows) < 0.002, "churned"] = None
    out.loc[rng.random(rows) < 0.002, "spend"] = np.nan
    return out


def write_dataset(folder: Path, rows: int, files: int, *, seed: int = 0, extra: int = 0) -> Path:
    """``rows`` rows of :func:`frame` in ``files`` Parquet files ``part-000.parquet``..."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for i in range(files):
        chunk = frame(int(bounds[i + 1] - bounds[i]), seed=seed, start=int(bounds[i]), extra=extra)
        chunk.to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    return folder
