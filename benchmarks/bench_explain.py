"""Explanations: what ``contrib_<column>`` costs (issue 24), ratios measured in one run.

* kennel's ``ModelAPI.explain`` of 10,000 raw rows (transform, LightGBM's exact tree
  contributions, the sum into raw columns) against the floor, LightGBM's own
  ``booster.predict(matrix, pred_contrib=True)`` on the already converted float matrix
  (target <= 1.2), and against ``shap.TreeExplainer(booster).shap_values(matrix)`` (target
  <= 1.0: no slower than shap); the three take turns, fastest of 4 each;
* one served row with ``"params": {"explain": true}`` against the same row without, p50 over
  interleaved requests to one ``kennel serve`` (target: <= 2 ms more);
* dog (Shapley sampling values, 8 permutations) on 10,000 rows: seconds, reported.

    .venv/bin/python benchmarks/bench_explain.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import (  # noqa: E402
    PYTHON,
    ROOT,
    THREADS,
    child_env,
    common_args,
    dataset,
    machine,
    ratio,
    table,
    temp_store,
    write_result,
)


def _fitted(family: str, rows: int, trees: int) -> tuple[Any, Any]:
    """A model of ``family`` on the synthetic table, and its test rows (raw)."""
    from kennel.config import DataConfig
    from kennel.data import DataProcessor
    from kennel.families import TrainContext, get_family

    processor = DataProcessor(DataConfig(source=str(dataset(rows)), target="target"))
    splits = processor.split(processor.load())
    processor.fit(splits.train)
    spec = get_family(family)
    params = (
        spec.Params(n_estimators=trees, early_stopping_rounds=0, num_leaves=31)
        if family == "cat"
        else spec.Params(epochs=2, hidden_units=[64, 32])
    )
    model = spec.Model(params, processor.spec())
    spec.Trainer(params, TrainContext(num_threads=THREADS)).fit(
        model,
        processor.features_and_target(splits.train),
        processor.features_and_target(splits.valid),
    )
    return spec.ModelAPI(model, processor), splits.test.drop(columns=["target"])


def _best(func: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def batch_costs(rows: int, trees: int, repeats: int) -> dict[str, float]:
    """Seconds to explain ``rows`` test rows: kennel, the pred_contrib floor, shap."""
    api, test = _fitted("cat", max(rows * 5, 20_000), trees)
    test = test.head(rows)
    matrix = api.model._matrix(api.processor.transform(test))
    booster = api.model.booster
    out: dict[str, float] = {"rows": float(len(test))}
    out["predict_s"] = _best(lambda: api.predict(test), repeats)
    calls: dict[str, Any] = {
        "floor_s": lambda: booster.predict(matrix, pred_contrib=True),
        "kennel_s": lambda: api.explain(test),
    }
    try:
        import shap

        explainer = shap.TreeExplainer(booster)
        calls["shap_s"] = lambda: explainer.shap_values(matrix)
    except ImportError:  # shap is a test/benchmark dependency (the dev extra)
        out["shap_s"] = float("nan")
    out.update(_interleaved_best(calls, repeats))
    return out


def _interleaved_best(calls: dict[str, Any], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs of each call, the calls taking turns (A B C, then C B A,
    ...), so that the host's drift over the ~30 s falls on all of them alike. shap's
    TreeExplainer calls LightGBM's own ``pred_contrib`` for a LightGBM model: measured one
    after the other, the same work differed by up to 10 %."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for i in range(repeats):
        for name in order if i % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def dog_cost(rows: int) -> dict[str, float]:
    api, test = _fitted("dog", 20_000, 0)
    test = test.head(rows)
    api.explain(test.head(10))  # traces the network's function once
    return {"dog_rows": float(len(test)), "dog_explain_s": _best(lambda: api.explain(test), 1)}


def _post(url: str, body: bytes) -> float:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as answer:
        answer.read()
    return time.perf_counter() - started


def served_costs(requests: int) -> dict[str, float]:
    """p50 of one-row requests with and without ``explain`` to one kennel serve."""
    import pandas as pd

    from kennel.serve.server import free_port, wait_for_ping

    data = dataset(20_000)
    row = pd.read_parquet(data).drop(columns=["target"]).head(1)
    split = row.to_dict(orient="split")
    plain = json.dumps({"dataframe_split": {"columns": split["columns"], "data": split["data"]}})
    explained = json.dumps({**json.loads(plain), "params": {"explain": True}})
    with temp_store("kennel-bench-explain-") as (folder, uri):
        env = child_env(
            {"MLFLOW_TRACKING_URI": uri, "KENNEL_TRAINING__OUTPUT_ROOT": str(folder / "out")}
        )
        train = [PYTHON, str(ROOT / "run.py"), "train", "-c", "configs/cat.yaml",
                 f"data.source={data}", "data.target=target", "model.params.n_estimators=200",
                 "model.params.early_stopping_rounds=0", "registry.auto_promote=dev",
                 "tracking.log_plots=false"]  # fmt: skip
        subprocess.run(train, cwd=ROOT, env=env, check=True, capture_output=True)
        port = free_port()
        serve = [PYTHON, str(ROOT / "run.py"), "serve", "--env", "dev", "--model-name",
                 data.stem.replace("_", "-"), "-p", str(port)]  # fmt: skip
        server = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_ping(url, timeout=120, process=server)
            times: dict[str, list[float]] = {"plain": [], "explain": []}
            for i in range(requests):
                for name, body in (("plain", plain), ("explain", explained))[:: 1 if i % 2 else -1]:
                    times[name].append(_post(f"{url}/invocations", body.encode()))
        finally:
            server.terminate()
            server.wait(timeout=60)
    p50 = {k: statistics.median(v[5:]) * 1000 for k, v in times.items()}
    return {"served_p50_ms": p50["plain"], "served_explain_p50_ms": p50["explain"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common_args(argv)
    quick = args.quick
    rows = 2_000 if quick else 10_000
    costs = batch_costs(rows, trees=50 if quick else 200, repeats=2 if quick else 4)
    costs.update(dog_cost(rows))
    costs.update(served_costs(40 if quick else 200))
    result = {
        "machine": machine(),
        "mode": "quick" if quick else "full",
        **costs,
        "explain_over_floor": ratio(costs["kennel_s"], costs["floor_s"]),
        "explain_over_shap": ratio(costs["kennel_s"], costs["shap_s"]),
        "served_explain_extra_ms": costs["served_explain_p50_ms"] - costs["served_p50_ms"],
    }
    print(
        table(
            ["measure", "value"],
            [
                [f"cat explain {rows:,} rows (s)", f"{costs['kennel_s']:.3f}"],
                ["LightGBM pred_contrib floor (s)", f"{costs['floor_s']:.3f}"],
                ["shap TreeExplainer (s)", f"{costs['shap_s']:.3f}"],
                ["cat predict, same rows (s)", f"{costs['predict_s']:.3f}"],
                ["kennel / floor", f"{result['explain_over_floor']:.3f}"],
                ["kennel / shap", f"{result['explain_over_shap']:.3f}"],
                ["served 1 row p50 (ms)", f"{costs['served_p50_ms']:.2f}"],
                ["served 1 row with explain p50 (ms)", f"{costs['served_explain_p50_ms']:.2f}"],
                [f"dog explain {rows:,} rows (s)", f"{costs['dog_explain_s']:.2f}"],
            ],
        )
    )
    write_result("explain" if not quick else "quick_explain", result)
    return result


if __name__ == "__main__":
    main()
