"""The reference profile of a wide table: its JSON size and build time (run by
``bench_cat_train.py`` as a child process, so kennel is imported there, not here).

``build_profile`` on a fitted ``DataProcessor`` over a seeded 2,000-row frame of 1,500 columns,
built the way ``tests/test_monitor_stats.py`` builds one, in two shapes:

* ``mixed``: 1,000 numeric columns (normal) + 500 text columns of 400 levels (Zipf shares);
* ``text``: 1,500 text columns of 300 levels each with 40-character values (the heaviest case
  for the JSON: every column brings its vocabulary).

Prints one JSON line: per shape the columns profiled, ``profile.json`` bytes, seconds.

    .venv/bin/python benchmarks/wide_profile.py [ROWS]
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kennel.config import DataConfig
from kennel.data import DataProcessor
from kennel.monitor.profile import build_profile, save_profile


def frame(shape: str, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(12)
    data: dict[str, object] = {}
    if shape == "mixed":
        data.update({f"x{i}": rng.normal(100, 30, rows) for i in range(1000)})
        words = np.array([f"category-{k:04d}" for k in range(400)])
        for i in range(500):
            data[f"c{i}"] = words[rng.zipf(1.3, rows) % len(words)]
    else:
        words = np.array([f"{k:04d}-a-rather-long-category-value-text" for k in range(300)])
        for i in range(1500):
            data[f"c{i}"] = words[rng.zipf(1.2, rows) % len(words)]
    data["y"] = rng.normal(size=rows)
    return pd.DataFrame(data)


def measure(shape: str, rows: int, folder: Path) -> dict[str, object]:
    table = frame(shape, rows)
    processor = DataProcessor(DataConfig(source=str(folder / "wide.parquet"), target="y"))
    processor.fit(table)
    started = time.perf_counter()
    profile = build_profile(processor, table, pd.DataFrame({"prediction": table["y"]}))
    elapsed = time.perf_counter() - started
    size = save_profile(profile, folder / shape).stat().st_size
    incomplete = sum(1 for c in profile.columns.values() if not c.complete)
    return {
        "columns": len(profile.columns),
        "bytes": size,
        "build_s": round(elapsed, 3),
        "categorical_trimmed": incomplete,
    }


def main() -> None:
    logging.disable(logging.WARNING)
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as tmp:
        result = {shape: measure(shape, rows, Path(tmp)) for shape in ("mixed", "text")}
    result["rows"] = rows
    result["max_bytes"] = max(result[s]["bytes"] for s in ("mixed", "text"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
