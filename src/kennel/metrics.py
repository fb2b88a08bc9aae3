"""Metric names and computation shared by every family, the pipeline and the search.

Classification: ``accuracy, roc_auc, log_loss, f1``; regression: ``rmse, mae, r2``. Logged
as ``val_<metric>`` per step and at the end, ``test_<metric>`` after training.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from kennel.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

Task = Literal["binary", "multiclass", "regression"]

CLASSIFICATION_METRICS = ("accuracy", "roc_auc", "log_loss", "f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")
#: Metrics where smaller is better; every other one is maximised.
MINIMIZE = {"log_loss", "rmse", "mae"}
#: The metric the promotion gate and the search use unless configured otherwise.
PRIMARY = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def metric_names(task: Task) -> tuple[str, ...]:
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


def primary_metric(task: Task) -> str:
    return PRIMARY[task]


def direction(metric: str) -> Literal["minimize", "maximize"]:
    """Optimisation direction of a metric name, with or without a ``val_``/``test_`` prefix."""
    base = metric.split("_", 1)[1] if metric.startswith(("val_", "test_")) else metric
    return "minimize" if base in MINIMIZE else "maximize"


def is_better(candidate: float, incumbent: float, metric: str, min_delta: float = 0.0) -> bool:
    """True when ``candidate`` is at least as good as ``incumbent`` (+ ``min_delta``)."""
    if math.isnan(candidate):
        return False
    if math.isnan(incumbent):
        return True
    if direction(metric) == "minimize":
        return candidate <= incumbent - min_delta
    return candidate >= incumbent + min_delta


def compute_metrics(task: Task, y_true: np.ndarray, raw: np.ndarray) -> dict[str, float]:
    """Metrics from encoded targets and a model's raw output.

    ``raw`` is class probabilities (n, K) for classifiers or predictions (n,) for
    regression; ``y_true`` is integer codes ``0..K-1`` or floats. A multiclass ``roc_auc``
    is the one-vs-rest mean over the classes present in ``y_true`` (a test split may lack a
    class too rare to stratify).
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    raw = np.asarray(raw, dtype="float64")
    if task == "regression":
        pred = raw.reshape(-1)
        return {
            "rmse": float(math.sqrt(skm.mean_squared_error(y_true, pred))),
            "mae": float(skm.mean_absolute_error(y_true, pred)),
            "r2": float(skm.r2_score(y_true, pred)) if len(y_true) > 1 else float("nan"),
        }
    proba = raw if raw.ndim == 2 else np.column_stack([1 - raw, raw])
    proba = np.clip(proba, 1e-15, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    n_classes = proba.shape[1]
    labels = list(range(n_classes))
    pred = proba.argmax(axis=1)
    out = {
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "log_loss": float(skm.log_loss(y_true, proba, labels=labels)),
        "f1": float(
            skm.f1_score(
                y_true,
                pred,
                average="binary" if n_classes == 2 else "macro",
                # classes neither present nor predicted (a rare class trains only) do not
                # count as a zero in the mean
                labels=np.union1d(np.unique(y_true), pred) if n_classes > 2 else None,
                zero_division=0,
            )
        ),
    }
    present = np.unique(y_true)
    try:
        if n_classes == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
        elif len(present) == n_classes:
            out["roc_auc"] = float(
                skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=labels)
            )
        elif len(present) >= 2:  # a class with no rows here (a rare class trains only)
            out["roc_auc"] = float(
                np.mean([skm.roc_auc_score(y_true == c, proba[:, int(c)]) for c in present])
            )
        else:
            out["roc_auc"] = float("nan")
    except ValueError:  # a split with a single class present
        out["roc_auc"] = float("nan")
    return {name: out[name] for name in CLASSIFICATION_METRICS}


# ----------------------------------------------- metrics of a served model's output frame
def classified_output(y_true: Any, output: pd.DataFrame) -> tuple[list[str], Any, Any] | None:
    """For a classifier's uniform frame: (class labels, true labels as class codes, the
    probability matrix); ``None`` for a regressor (no ``proba_<class>`` columns)."""
    proba_cols = [c for c in output.columns if c.startswith("proba_")]
    if not proba_cols:
        return None
    classes = [c[len("proba_") :] for c in proba_cols]
    index = {label: i for i, label in enumerate(classes)}
    labels = [_as_class(str(v), index) for v in np.asarray(y_true)]
    unknown = sorted({v for v in labels if v not in index})
    if unknown:
        raise UserError(
            f"holdout labels {unknown[:5]} are not classes of the model (expected {classes})"
        )
    codes = np.array([index[v] for v in labels])
    return classes, codes, output[proba_cols].to_numpy(dtype="float64")


def metrics_from_output(y_true: Any, output: pd.DataFrame) -> tuple[str, dict[str, float]]:
    """(task, metrics) from the uniform prediction frame (``prediction`` and, for
    classifiers, ``proba_<class>``)."""
    classified = classified_output(y_true, output)
    if classified is None:
        scores = compute_metrics(
            "regression", np.asarray(y_true, dtype="float64"), output["prediction"].to_numpy()
        )
        return "regression", scores
    classes, codes, proba = classified
    task = "binary" if len(classes) == 2 else "multiclass"
    return task, compute_metrics(task, codes, proba)


def _as_class(value: str, index: dict[str, int]) -> str:
    """A true label as the model's class it names: as written, else without surrounding
    spaces, else the one class equal to it but for case (labels typed by hand, read the way
    the processor reads them)."""
    if value in index:
        return value
    stripped = value.strip()
    if stripped in index:
        return stripped
    same = [c for c in index if c.casefold() == stripped.casefold()]
    return same[0] if len(same) == 1 else value
