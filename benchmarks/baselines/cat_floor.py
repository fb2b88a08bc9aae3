"""The floor for ``kennel train`` (cat): the least a script can do for the same result.

Reads the Parquet file into a float32 matrix with pyarrow, splits 70/15/15 with one seeded
numpy permutation, trains ``lightgbm.train`` with the same params and early stopping on one
validation metric, and scores the test split (AUC by ranks, no scikit-learn). No tracking,
no checks, no plots. Prints one JSON line with ``timings``: ``import_s``, ``data_s`` (read
and convert), ``split_s``, ``fit_s``, ``score_s``.
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("--target", default="target")
parser.add_argument("--num-leaves", type=int, default=31)
parser.add_argument("--learning-rate", type=float, default=0.1)
parser.add_argument("--n-estimators", type=int, default=200)
parser.add_argument("--early-stopping", type=int, default=20)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

timings: dict[str, float] = {"import_s": round(time.perf_counter() - START, 3)}


def clock(name: str, started: float) -> None:
    timings[name] = round(time.perf_counter() - started, 3)


t = time.perf_counter()
table = pq.read_table(args.data)
names = [c for c in table.column_names if c != args.target]
x = np.empty((table.num_rows, len(names)), dtype=np.float32)
for i, name in enumerate(names):
    x[:, i] = table.column(name).to_numpy()
y = table.column(args.target).to_numpy()
del table
clock("data_s", t)

t = time.perf_counter()
order = np.random.default_rng(42).permutation(len(y))
n_train, n_valid = int(len(y) * 0.70), int(len(y) * 0.15)
tr, va, te = np.split(order, [n_train, n_train + n_valid])
x_train, x_valid, x_test = x[tr], x[va], x[te]
del x
clock("split_s", t)

t = time.perf_counter()
params = {
    "objective": "binary",
    "metric": "binary_logloss",
    "num_leaves": args.num_leaves,
    "learning_rate": args.learning_rate,
    "min_data_in_leaf": 20,
    "seed": 42,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": args.threads,
    "verbose": -1,
}
dtrain = lgb.Dataset(x_train, label=y[tr], feature_name=names, free_raw_data=True)
dvalid = lgb.Dataset(x_valid, label=y[va], reference=dtrain)
booster = lgb.train(
    params,
    dtrain,
    num_boost_round=args.n_estimators,
    valid_sets=[dvalid],
    valid_names=["valid"],
    callbacks=[lgb.early_stopping(args.early_stopping, verbose=False)],
)
clock("fit_s", t)

t = time.perf_counter()
scores = booster.predict(x_test, num_threads=args.threads)
labels = y[te]
ranks = np.empty(len(scores))
ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
positives = labels == 1
n_pos, n_neg = int(positives.sum()), int((~positives).sum())
auc = (ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
clock("score_s", t)

print(
    json.dumps(
        {
            "test_roc_auc": float(auc),
            "best_iteration": booster.best_iteration,
            "duration_s": round(time.perf_counter() - START, 3),
            "timings": timings,
        }
    )
)
