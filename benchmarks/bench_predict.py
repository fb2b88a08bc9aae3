"""Issue 8.3: prediction overhead of the loaded kennel pyfunc vs the raw model it wraps.

A cat model (LightGBM) and a dog model (Keras) are trained with ``kennel train`` on the
synthetic table; then, in one process, ``PyFuncModel.predict(frame)`` is timed against the
raw booster's ``predict`` (float matrix) and the raw Keras network (``model(x)`` and
``model.predict(x)``), on the same rows, at 1 row and 10,000 rows (median of repeats).

    .venv/bin/python benchmarks/bench_predict.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _common import (
    child_env,
    common_args,
    dataset,
    kennel_cmd,
    ratio,
    run_child,
    table,
    temp_store,
    write_result,
)
from bench_cat_train import kennel_overrides

SIZES = (1, 10_000)


def timed(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (lazy graph tracing, caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train(family: str, data: str, out: str, env: dict[str, str], params: dict) -> str:
    cfg = f"configs/{family}.yaml"
    cmd = kennel_cmd("train", "-c", cfg, "--output-dir", out, *kennel_overrides(data, params))
    run = run_child(f"kennel train {family}", cmd, env=env).check()
    return run.json_line()["model_uri"]


def measure(uri: str, family: str, frame: Any, repeats: dict[int, int]) -> list[dict]:
    import mlflow.pyfunc
    import numpy as np

    model = mlflow.pyfunc.load_model(uri)
    inner = model.unwrap_python_model().api.model
    rows_out = []
    for n in SIZES:
        rows = frame.iloc[:n]
        x = rows.to_numpy(dtype=np.float64)
        variants: dict[str, Callable[[], Any]] = {"pyfunc.predict": lambda r=rows: model.predict(r)}
        if family == "cat":
            booster = inner.booster
            variants["booster.predict"] = lambda x=x, b=booster: b.predict(x)
        else:
            network = inner.network
            inputs = {"numeric": x.astype("float32")}
            variants["keras model(x)"] = lambda i=inputs, m=network: m(i, training=False).numpy()
            variants["keras model.predict"] = lambda i=inputs, m=network: m.predict(
                i, batch_size=16384, verbose=0
            )
        medians: dict[str, float] = {}
        # Interleave the variants over several rounds so machine noise hits them alike.
        rounds = 3
        for _ in range(rounds):
            for name, fn in variants.items():
                medians.setdefault(name, [])
                medians[name].append(timed(fn, max(1, repeats[n] // rounds)))
        best = {name: min(v) for name, v in medians.items()}
        raw = min(v for k, v in best.items() if k != "pyfunc.predict")
        for name, seconds in best.items():
            rows_out.append(
                {
                    "family": family,
                    "rows": n,
                    "variant": name,
                    "ms": round(seconds * 1000, 3),
                    "rows_per_s": round(n / seconds),
                    "ratio_to_raw": ratio(seconds, raw),
                }
            )
    return rows_out


def main(argv: list[str] | None = None) -> dict:
    args = common_args(argv)
    quick = args.quick
    repeats = {1: 60 if quick else 300, 10_000: 9 if quick else 30}
    train_rows = 20_000 if quick else 100_000
    data = dataset(train_rows)
    import pandas as pd

    frame = pd.read_parquet(dataset(20_000)).drop(columns=["target"]).iloc[:10_000]
    results = []
    with temp_store() as (folder, uri), tempfile.TemporaryDirectory() as out:
        env = child_env({"MLFLOW_TRACKING_URI": uri})
        cat_uri = train(
            "cat",
            str(data),
            os.path.join(out, "cat"),
            env,
            {"num_leaves": 31, "learning_rate": 0.1, "n_estimators": 200, "min_child_samples": 20},
        )
        dog_uri = train(
            "dog",
            str(data),
            os.path.join(out, "dog"),
            env,
            {"epochs": 1, "batch_size": 256, "hidden_units": "[64,32]"},
        )
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        results += measure(cat_uri, "cat", frame, repeats)
        results += measure(dog_uri, "dog", frame, repeats)
    print(
        table(
            ["family", "rows", "variant", "ms (median)", "rows/s", "/ raw"],
            [
                [r["family"], r["rows"], r["variant"], r["ms"], r["rows_per_s"], r["ratio_to_raw"]]
                for r in results
            ],
        )
    )
    payload = {"repeats": repeats, "train_rows": train_rows, "results": results}
    for fam in ("cat", "dog"):
        for n in SIZES:
            match = [r for r in results if r["family"] == fam and r["rows"] == n]
            py = next(r for r in match if r["variant"] == "pyfunc.predict")
            payload[f"ratio_{fam}_{n}"] = py["ratio_to_raw"]
    write_result("quick_predict" if quick else "predict", payload)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
