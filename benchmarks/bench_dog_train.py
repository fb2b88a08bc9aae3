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
    common_args,
    compare_training,
    dataset,
    kennel_cmd,
    temp_store,
    warm_file,
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
    return compare_training(
        baseline,
        cmd,
        repeats=repeats,
        autolog_store=store_a,
        kennel_store=store_k,
        result_name="quick_dog_train" if args.quick else "dog_train",
        describe={"rows": rows, "epochs": epochs, "batch_size": BATCH},
    )


if __name__ == "__main__":
    main(sys.argv[1:])
