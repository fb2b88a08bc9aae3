"""Issue 8.2: ``kennel train`` (dog) end to end vs a bare ``mlflow.keras.autolog()`` script vs
a bare ``model.fit``, on the same synthetic table, split, architecture and settings.

    .venv/bin/python benchmarks/bench_dog_train.py [--quick] [--rows N] [--epochs E]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile

from _common import (
    BASELINES,
    PYTHON,
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
from bench_cat_train import kennel_overrides

BATCH = 64


def main(argv: list[str] | None = None) -> dict:
    with contextlib.ExitStack() as stack:
        return _main(argv, stack)


def _main(argv: list[str] | None, stack: contextlib.ExitStack) -> dict:
    args = common_args(argv, rows=0, epochs=0, repeats=0)
    rows = args.rows or (50_000 if args.quick else 200_000)
    epochs = args.epochs or (3 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 2)
    data = dataset(rows)
    warm_file(data)
    print(f"dog training, {rows:,} x 20 rows, {epochs} epochs, batch {BATCH}", flush=True)
    baseline = [
        PYTHON,
        str(BASELINES / "dog_train.py"),
        str(data),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(BATCH),
    ]
    store_a = stack.enter_context(temp_store())
    store_k = stack.enter_context(temp_store())
    out = stack.enter_context(tempfile.TemporaryDirectory())
    params = {
        "hidden_units": "[64,32]",
        "activation": "relu",
        "dropout": 0.1,
        "learning_rate": 0.001,
        "batch_size": BATCH,
        "epochs": epochs,
        "early_stopping_patience": 0,
    }
    cmd = kennel_cmd(
        "train", "-c", "configs/dog.yaml", "--output-dir", out, *kennel_overrides(data, params)
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
        "epochs": epochs,
        "batch_size": BATCH,
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
    write_result("quick_dog_train" if args.quick else "dog_train", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
