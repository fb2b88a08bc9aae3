"""Issue 8.1: ``kennel train`` (cat) end to end vs a bare ``mlflow.lightgbm.autolog()``
script vs ``lightgbm.train`` alone, on the same synthetic binary table, split and params.

    .venv/bin/python benchmarks/bench_cat_train.py [--quick] [--rows N]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from _common import (
    BASELINES,
    PYTHON,
    THREADS,
    child_env,
    common_args,
    dataset,
    interleaved,
    kennel_cmd,
    ratio,
    table,
    temp_store,
    warm_file,
    write_result,
)

PARAMS = {"num_leaves": 31, "learning_rate": 0.1, "n_estimators": 200, "early_stopping": 20}


def kennel_overrides(data: Path, family_params: dict[str, object]) -> list[str]:
    return [
        f"data.source={data}",
        "data.target=target",
        "tracking.experiment=bench",
        "registry.model_name=bench-model",
        f"resource.num_threads={THREADS}",
        *(f"model.params.{k}={v}" for k, v in family_params.items()),
    ]


def main(argv: list[str] | None = None) -> dict:
    with contextlib.ExitStack() as stack:
        return _main(argv, stack)


def _main(argv: list[str] | None, stack: contextlib.ExitStack) -> dict:
    args = common_args(argv, rows=0, repeats=0)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 2)
    data = dataset(rows)
    warm_file(data)
    print(f"cat training, {rows:,} x 20 rows, params {PARAMS}, {THREADS} threads", flush=True)
    baseline = [PYTHON, str(BASELINES / "cat_train.py"), str(data)]
    store_a = stack.enter_context(temp_store())
    store_k = stack.enter_context(temp_store())
    out = stack.enter_context(tempfile.TemporaryDirectory())
    cmd = kennel_cmd(
        "train",
        "-c",
        "configs/cat.yaml",
        "--output-dir",
        out,
        *kennel_overrides(
            data,
            {
                "num_leaves": PARAMS["num_leaves"],
                "learning_rate": PARAMS["learning_rate"],
                "n_estimators": PARAMS["n_estimators"],
                "early_stopping_rounds": PARAMS["early_stopping"],
                "min_child_samples": 20,
                "feature_fraction": 1.0,
            },
        ),
    )
    variants = {
        "raw": {"cmd": baseline},
        "autolog": {
            "cmd": [*baseline, "--autolog"],
            "env": child_env({"MLFLOW_TRACKING_URI": store_a[1]}),
            "cwd": store_a[0],
        },
        "kennel": {"cmd": cmd, "env": child_env({"MLFLOW_TRACKING_URI": store_k[1]})},
    }
    runs, walls = interleaved(variants, repeats)
    k = runs["kennel"].json_line()
    result = {
        "rows": rows,
        "repeats": repeats,
        "all_wall_s": walls,
        "params": PARAMS,
        "threads": THREADS,
        "variants": {
            name: {
                "wall_s": r.wall_s,
                "peak_mib": r.peak_mib,
                "inner": r.json_line() if name != "kennel" else None,
            }
            for name, r in runs.items()
        },
        "kennel_timings": k.get("timings"),
        "kennel_duration_s": k.get("duration_s"),
        "kennel_test_roc_auc": (k.get("metrics") or {}).get("test_roc_auc"),
        "ratio_kennel_autolog": ratio(runs["kennel"].wall_s, runs["autolog"].wall_s),
        "ratio_kennel_raw": ratio(runs["kennel"].wall_s, runs["raw"].wall_s),
        "ratio_autolog_raw": ratio(runs["autolog"].wall_s, runs["raw"].wall_s),
        "mem_ratio_kennel_raw": ratio(runs["kennel"].peak_mib, runs["raw"].peak_mib),
    }
    print(
        table(
            ["variant", "wall s", "peak MiB", "wall / raw"],
            [
                [name, r.wall_s, r.peak_mib, ratio(r.wall_s, runs["raw"].wall_s)]
                for name, r in runs.items()
            ],
        )
    )
    print(
        f"kennel / autolog = {result['ratio_kennel_autolog']}, kennel / raw = "
        f"{result['ratio_kennel_raw']}; kennel timings {result['kennel_timings']}"
    )
    write_result("quick_cat_train" if args.quick else "cat_train", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
