"""Baseline for ``kennel train`` (dog): a bare Keras ``model.fit`` with the same architecture
(normalisation, Dense 64-32 relu, dropout 0.1, softmax), batch size, optimizer (Adam 1e-3),
epochs, seed, threads and determinism settings as kennel's defaults.

``--autolog``: with ``mlflow.keras.autolog()``; without it, Keras alone (the limit).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

START = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("--autolog", action="store_true")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bsplit import SEED, load  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
tf.config.set_visible_devices([], "GPU")
keras.utils.set_random_seed(SEED)
tf.config.experimental.enable_op_determinism()  # kennel's default (training.deterministic)
timings = {}
if args.autolog:
    import mlflow

    mlflow.set_experiment("bench-autolog")
    mlflow.keras.autolog()
timings["import_s"] = round(time.perf_counter() - START, 3)

t = time.perf_counter()
x, y, names, tr, va, te = load(args.data)
x = x.astype("float32")
timings["data_s"] = round(time.perf_counter() - t, 3)


def build() -> keras.Model:
    inputs = keras.Input(shape=(x.shape[1],), dtype="float32", name="numeric")
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x[tr])
    h = norm(inputs)
    for units in (64, 32):
        h = keras.layers.Dense(units, activation="relu")(h)
        h = keras.layers.Dropout(0.1)(h)
    out = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, out)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        jit_compile=False,
    )
    return model


def fit() -> float:
    model = build()
    model.fit(
        x[tr],
        y[tr],
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x[va], y[va]),
        shuffle=True,
        verbose=0,
    )
    proba = model.predict(x[te], batch_size=16384, verbose=0)
    return float(roc_auc_score(y[te], proba[:, 1]))


t = time.perf_counter()
if args.autolog:
    with mlflow.start_run():
        auc = fit()
        mlflow.log_metric("test_roc_auc", auc)
else:
    auc = fit()
timings["fit_eval_s"] = round(time.perf_counter() - t, 3)
print(
    json.dumps(
        {
            "test_roc_auc": auc,
            "duration_s": round(time.perf_counter() - START, 3),
            "timings": timings,
            "np": np.__version__,
        }
    )
)
