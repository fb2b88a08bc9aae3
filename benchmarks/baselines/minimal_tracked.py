"""Baseline for a tiny ``kennel train -c cat.yaml``: the least a tracked run needs. Import
mlflow and lightgbm, start a run, train on breast_cancer (kennel's split and cat.yaml's
params), log the params and one model with explicit pip requirements. Prints one JSON line.
"""

from __future__ import annotations

import json
import time

START = time.perf_counter()

import lightgbm as lgb  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from bsplit import SEED, split_indices  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402

frame = load_breast_cancer(as_frame=True).frame
y = frame.pop("target")
tr, va, te = split_indices(y)
x = frame.to_numpy(dtype=np.float64)
y = y.to_numpy()
params = {
    "objective": "binary",
    "metric": "binary_logloss",  # what kennel records per iteration
    "num_leaves": 15,
    "learning_rate": 0.05,
    "min_data_in_leaf": 10,
    "feature_fraction": 0.9,
    "seed": SEED,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": 2,
    "verbose": -1,
}
mlflow.set_experiment("bench-minimal")
with mlflow.start_run():
    dtrain = lgb.Dataset(x[tr], label=y[tr])
    dvalid = lgb.Dataset(x[va], label=y[va], reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=400,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(50, first_metric_only=True, verbose=False)],
    )
    mlflow.log_params(params)
    mlflow.lightgbm.log_model(
        booster,
        name="model",
        pip_requirements=[f"lightgbm=={lgb.__version__}", f"mlflow=={mlflow.__version__}"],
    )
print(json.dumps({"duration_s": round(time.perf_counter() - START, 3)}))
