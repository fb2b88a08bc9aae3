"""Baseline for ``kennel train`` (cat): ``lightgbm.train`` on the same data, split and params.

``--autolog``: a bare script a user would write with ``mlflow.lightgbm.autolog()``; without
it, LightGBM alone (no MLflow), the limit. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("--autolog", action="store_true")
parser.add_argument("--num-leaves", type=int, default=31)
parser.add_argument("--learning-rate", type=float, default=0.1)
parser.add_argument("--n-estimators", type=int, default=200)
parser.add_argument("--early-stopping", type=int, default=20)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

import lightgbm as lgb  # noqa: E402
from bsplit import SEED, load  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

timings = {}
t = time.perf_counter()
if args.autolog:
    import mlflow

    mlflow.set_experiment("bench-autolog")
    mlflow.lightgbm.autolog()
timings["import_s"] = round(time.perf_counter() - START, 3)

t = time.perf_counter()
x, y, names, tr, va, te = load(args.data)
timings["data_s"] = round(time.perf_counter() - t, 3)
params = {
    "objective": "binary",
    "metric": "binary_logloss",  # what kennel records per iteration (AUC at the end)
    "num_leaves": args.num_leaves,
    "learning_rate": args.learning_rate,
    "min_data_in_leaf": 20,
    "seed": SEED,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": args.threads,
    "verbose": -1,
}


def fit():
    dtrain = lgb.Dataset(x[tr], label=y[tr], feature_name=names, free_raw_data=True)
    dvalid = lgb.Dataset(x[va], label=y[va], reference=dtrain)
    return lgb.train(
        params,
        dtrain,
        num_boost_round=args.n_estimators,
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(args.early_stopping, first_metric_only=True, verbose=False)],
    )


t = time.perf_counter()
if args.autolog:
    with mlflow.start_run() as run:
        booster = fit()
        auc = roc_auc_score(y[te], booster.predict(x[te], num_threads=args.threads))
        mlflow.log_metric("test_roc_auc", auc)
else:
    booster = fit()
    auc = roc_auc_score(y[te], booster.predict(x[te], num_threads=args.threads))
timings["fit_eval_s"] = round(time.perf_counter() - t, 3)
print(
    json.dumps(
        {
            "test_roc_auc": auc,
            "best_iteration": booster.best_iteration,
            "duration_s": round(time.perf_counter() - START, 3),
            "timings": timings,
        }
    )
)
