"""``DaskCatTrainer``: cat on a Dask cluster with ``lightgbm.dask`` (data-parallel LightGBM
over the workers), producing the same kind of booster the in-process trainer does.

Early stopping. ``lightgbm.dask`` has none of its own: each worker would judge its own
share of the validation rows and stop at its own iteration, and the others wait for it
forever (LightGBM issues #3712, #6351). Here every worker runs the same callback on the same
validation rows (a seeded sample of the valid split, up to ``EARLY_STOPPING_ROWS``, sent to
every worker): it adds each new tree's output to a running score, so an iteration costs one
tree over the sample, and every worker takes the same decision at the same iteration. The
learning curves are recomputed the same way on the client from the final booster (its first
trees are the ones the workers judged). The final validation and test metrics are computed
over the whole splits by the pipeline.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from kennel.families.base import Model, TrainResult, stopped_message
from kennel.families.cat.model import CatModel, lgb_params
from kennel.families.cat.trainer import COMPLEMENT, OBJECTIVES, CatTrainer

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

logger = logging.getLogger(__name__)


class _DropIgnoredParams(logging.Filter):
    """lightgbm.dask warns that ``n_jobs`` is ignored on every fit: threads come from the
    workers, which is what kennel wants."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be ignored" not in record.getMessage()


_LIGHTGBM_LOG = logging.getLogger("lightgbm")
_LIGHTGBM_LOG.addFilter(_DropIgnoredParams())

#: Validation rows every worker judges early stopping on (a seeded sample beyond this).
EARLY_STOPPING_ROWS = 100_000


def running_scores(booster: lgb.Booster, matrix: np.ndarray, iteration: int) -> np.ndarray:
    """Raw output of tree ``iteration`` (0-based) alone on ``matrix`` (the float matrix
    ``CatModel`` predicts from: numbers, category codes, NaN for missing)."""
    return np.asarray(
        booster.predict(
            matrix, start_iteration=iteration, num_iteration=1, raw_score=True,
            validate_features=False,
        ),
        dtype="float64",
    )  # fmt: skip


def curve_values(
    task: str, y: np.ndarray, raw: np.ndarray, only: str | None = None
) -> dict[str, float]:
    """LightGBM's validation metrics (its names) from running raw scores (``only``: just
    that one, the early-stopping metric)."""
    if task == "regression":
        err = raw - y
        return {"rmse": float(np.sqrt(np.mean(err**2))), "l1": float(np.mean(np.abs(err)))}
    if task == "binary":
        p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
        out = {"binary_logloss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))}
        if only is None or only == "auc":
            from sklearn.metrics import roc_auc_score

            out["auc"] = float(roc_auc_score(y, p)) if len(np.unique(y)) > 1 else float("nan")
        return out
    z = raw - raw.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    picked = np.clip(p[np.arange(len(y)), y.astype(int)], 1e-15, 1.0)
    return {
        "multi_logloss": float(-np.mean(np.log(picked))),
        "multi_error": float(np.mean(p.argmax(axis=1) != y)),
    }


class SameDecisionStopping:
    """LightGBM callback for every worker: early stopping judged on the same rows everywhere
    (so all workers stop at the same iteration); ``rounds`` 0 only records nothing."""

    order = 30
    before_iteration = False

    def __init__(self, matrix: np.ndarray, y: np.ndarray, task: str, metric: str, rounds: int):
        self.matrix, self.y, self.task, self.metric, self.rounds = matrix, y, task, metric, rounds
        self.raw: np.ndarray | None = None
        self.best_score = np.inf
        self.best_iteration = -1

    def __call__(self, env: Any) -> None:
        step = running_scores(env.model, self.matrix, env.iteration)
        self.raw = step if self.raw is None else self.raw + step
        score = curve_values(self.task, self.y, self.raw, only=self.metric)[self.metric]
        if score < self.best_score:
            self.best_score, self.best_iteration = score, env.iteration
        # Patience spent, or the last round with a better one before it: stop at the best,
        # as LightGBM's own early stopping does in-process (the model keeps its trees).
        last = env.iteration == env.end_iteration - 1
        if env.iteration - self.best_iteration >= self.rounds or (
            last and self.best_iteration < env.iteration
        ):
            raise lgb.callback.EarlyStopException(
                self.best_iteration, [("valid", self.metric, self.best_score, False)]
            )


class DaskCatTrainer(CatTrainer):
    """Fits a :class:`CatModel` on Dask frames of features and encoded targets."""

    def fit(  # type: ignore[override]
        self,
        model: Model,
        train: tuple[dd.DataFrame, dd.Series],
        valid: tuple[pd.DataFrame, np.ndarray],
        *,
        client: Client,
        threads_per_worker: int,
    ) -> TrainResult:
        """``train``: Dask features and target on the cluster. ``valid``: the validation
        rows every worker judges early stopping on (in memory, already sampled)."""
        from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRegressor

        if not isinstance(model, CatModel):
            raise TypeError(f"DaskCatTrainer fits a CatModel, got {type(model).__name__}")
        spec, params, ctx = model.spec, model.params, self.context
        objective, metric_names = OBJECTIVES[spec.task]
        extra: dict[str, Any] = {
            "objective": objective,
            "metric": "None",  # LightGBM evaluates nothing; the callback does
            "seed": ctx.seed,
            "deterministic": ctx.deterministic,
            "force_col_wise": True,
        }  # threads: lightgbm.dask uses each worker's own (threads_per_worker)
        if spec.task == "multiclass":
            extra["num_class"] = spec.n_classes
        booster_params = lgb_params(model, **extra)
        booster_params.pop("verbose", None)
        lgb.register_logger(_LIGHTGBM_LOG)  # its network set-up lines, in kennel's log
        x_train, y_train = train
        x_valid, y_valid = valid
        # The float matrix CatModel predicts from: category codes of the training
        # vocabularies, in the order the booster will know them (set before training here).
        model._categories = {
            name: pd.Index(x_valid[name].dtype.categories) for name in model.spec.categorical
        }
        x_valid = model._matrix(x_valid)
        y_valid = np.asarray(y_valid)
        stop_metric = next(iter(metric_names))
        callbacks = []
        if params.early_stopping_rounds > 0 and len(x_valid):
            callbacks.append(
                SameDecisionStopping(
                    x_valid, y_valid, spec.task, stop_metric, params.early_stopping_rounds
                )
            )
        weights = _balanced_weights(y_train, spec) if params.class_weight == "balanced" else None
        estimator_type = DaskLGBMRegressor if spec.task == "regression" else DaskLGBMClassifier
        estimator = estimator_type(
            client=client, n_estimators=params.n_estimators, verbose=-1, **booster_params
        )
        logger.info(
            "training cat (%s) on the cluster: %d partitions, %d workers x %d threads, up to "
            "%d iterations; early stopping judged on %d validation rows by every worker",
            spec.task,
            x_train.npartitions,
            len(client.scheduler_info().get("workers", {})),
            threads_per_worker,
            params.n_estimators,
            len(x_valid),
        )
        estimator.fit(x_train, y_train, sample_weight=weights, callbacks=callbacks or None)
        booster = estimator.booster_
        best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        model.set_booster(trimmed, best)
        history = self._curves(trimmed, x_valid, y_valid, spec.task, metric_names, best)
        self._report(history)
        rounds = booster.current_iteration()
        if callbacks and rounds == best < params.n_estimators:
            # LightGBM returns only the kept trees after an early stop; the callback stops
            # once the patience is spent after the best round, or at the last round.
            rounds = min(best + params.early_stopping_rounds, params.n_estimators)
        logger.info(
            "%s",
            stopped_message(
                "cat", rounds, params.n_estimators, best, "val_" + next(iter(metric_names.values()))
            ),
        )
        return TrainResult(best_step=best, history=history)

    @staticmethod
    def _curves(
        booster: lgb.Booster,
        frame: np.ndarray,
        y: np.ndarray,
        task: str,
        metric_names: dict[str, str],
        iterations: int,
    ) -> dict[str, list[float]]:
        """``val_<metric>`` per iteration on the early-stopping rows, as in-process."""
        if not len(frame):
            return {}
        history: dict[str, list[float]] = {f"val_{name}": [] for name in metric_names.values()}
        raw: np.ndarray | None = None
        for i in range(iterations):
            step = running_scores(booster, frame, i)
            raw = step if raw is None else raw + step
            values = curve_values(task, y, raw)
            for lgb_name, name in metric_names.items():
                value = values[lgb_name]
                history[f"val_{name}"].append(1.0 - value if lgb_name in COMPLEMENT else value)
        return history


def _balanced_weights(y_train: dd.Series, spec: Any) -> dd.Series | None:
    """``class_weight: balanced`` on the cluster: n / (K * count of the row's class)."""
    if spec.task == "regression":
        return None
    counts = y_train.value_counts().compute().reindex(range(spec.n_classes), fill_value=0)
    total, present = float(counts.sum()), int((counts > 0).sum())
    per_class = {k: (total / (present * c) if c else 0.0) for k, c in counts.items()}
    return y_train.map(per_class, meta=("weight", "float64"))
