"""Baseline for ``kennel search``: what a user writes instead. One process, Optuna's TPE
over ``configs/cat.yaml``'s space, one MLflow parent run with a nested run per trial, LightGBM
trained on breast_cancer (kennel's split and seed), params and validation metrics logged and,
unless ``--no-model``, the model logged per trial with ``mlflow.lightgbm.log_model``'s
defaults (MLflow infers the pip requirements; ``--explicit-requirements`` passes them). Prints one JSON line with trials per minute (wall time of the whole script,
imports included, like the ``kennel search`` it is compared with).

    python benchmarks/baselines/search_inprocess.py --n-trials 20 [--no-model] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

import lightgbm as lgb  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from bsplit import SEED, split_indices  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-model", action="store_true")
    parser.add_argument(
        "--explicit-requirements",
        action="store_true",
        help="pass pip_requirements (an expert's shortcut: MLflow then skips inferring them, "
        "which imports the model in a subprocess for every log_model call)",
    )
    args = parser.parse_args()

    frame = load_breast_cancer(as_frame=True).frame
    y = frame.pop("target").to_numpy()
    x = frame.to_numpy(dtype=np.float64)
    tr, va, _ = split_indices(pd.Series(y))
    requirements = [f"lightgbm=={lgb.__version__}", f"mlflow=={mlflow.__version__}"]
    mlflow.set_experiment("bench-search-inprocess")

    def objective(trial: optuna.Trial) -> float:
        params = {
            "objective": "binary",
            "metric": ["binary_logloss", "auc"],
            "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "min_data_in_leaf": trial.suggest_int("min_child_samples", 5, 50),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-5, 10.0, log=True),
            "seed": SEED,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": args.threads,
            "verbose": -1,
        }
        with mlflow.start_run(nested=True, run_name=f"trial-{trial.number}"):
            history: dict = {}
            dtrain = lgb.Dataset(x[tr], label=y[tr])
            dvalid = lgb.Dataset(x[va], label=y[va], reference=dtrain)
            booster = lgb.train(
                params,
                dtrain,
                num_boost_round=400,
                valid_sets=[dvalid],
                callbacks=[
                    lgb.early_stopping(50, first_metric_only=True, verbose=False),
                    lgb.record_evaluation(history),
                ],
            )
            proba = booster.predict(x[va], num_iteration=booster.best_iteration)
            metrics = {
                "val_roc_auc": roc_auc_score(y[va], proba),
                "val_log_loss": log_loss(y[va], proba),
                "val_accuracy": accuracy_score(y[va], proba > 0.5),
                "val_f1": f1_score(y[va], proba > 0.5),
            }
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            if not args.no_model:
                mlflow.lightgbm.log_model(
                    booster,
                    name="model",
                    pip_requirements=requirements if args.explicit_requirements else None,
                )
        return metrics["val_roc_auc"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with mlflow.start_run(run_name="search-inprocess"):
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED)
        )
        study.optimize(objective, n_trials=args.n_trials)
        mlflow.log_metric("best_val_roc_auc", study.best_value)
    wall = time.perf_counter() - START
    print(
        json.dumps(
            {
                "n_trials": args.n_trials,
                "wall_s": round(wall, 3),
                "trials_per_min": round(args.n_trials / wall * 60, 2),
                "model_per_trial": not args.no_model,
                "explicit_requirements": args.explicit_requirements,
            }
        )
    )


if __name__ == "__main__":
    main()
