"""``CatTrainer``: ``lightgbm.train`` with early stopping on the validation split.

The validation metrics are recorded at every boosting iteration and reported through the
``on_metrics`` callback at the end, in a few large batches. Steps are 1-based iteration
numbers, the same numbering as LightGBM's ``best_iteration`` (and ``TrainResult.best_step``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from kennel.families.base import Model, StepMetrics, Trainer, TrainResult, stopped_message
from kennel.families.cat.model import CatModel, lgb_params

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Per task: the LightGBM objective and the validation metrics recorded at every iteration
#: -> kennel metric names. The first metric drives early stopping. A binary model's AUC is
#: not among them: ranking the validation rows at every iteration costs a fifth of the fit
#: (1.8 s of 8.6 s on 1M rows); it is computed once, for the kept model, with the others.
OBJECTIVES: dict[str, tuple[str, dict[str, str]]] = {
    "binary": ("binary", {"binary_logloss": "log_loss"}),
    "multiclass": ("multiclass", {"multi_logloss": "log_loss", "multi_error": "accuracy"}),
    "regression": ("regression", {"rmse": "rmse", "l1": "mae"}),
}
#: LightGBM metrics reported as ``1 - value`` (an error rate becomes an accuracy).
COMPLEMENT = {"multi_error"}
#: Values per ``on_metrics`` call (MLflow accepts 1000 metrics per batch request).
MAX_VALUES_PER_BATCH = 1000


class CatTrainer(Trainer):
    """Fits a :class:`CatModel` deterministically for a given seed."""

    #: (train, valid, dtrain, valid sets) from :meth:`prepare`, until ``fit`` takes them.
    _prepared: tuple[Any, Any, lgb.Dataset, list[lgb.Dataset]] | None = None

    def fit(
        self,
        model: Model,
        train: tuple[pd.DataFrame, np.ndarray],
        valid: tuple[pd.DataFrame, np.ndarray],
    ) -> TrainResult:
        if not isinstance(model, CatModel):
            raise TypeError(f"CatTrainer fits a CatModel, got {type(model).__name__}")
        # The model's params are authoritative: they are what gets saved with it.
        spec, params = model.spec, model.params
        metric_names = OBJECTIVES[spec.task][1]
        dtrain, valid_sets = self._take_prepared(train, valid) or self._datasets(
            model, train, valid
        )
        evals: dict[str, dict[str, list[float]]] = {}
        final_scores = _FinalValidScores()
        callbacks: list[Any] = []
        if valid_sets:
            callbacks += [lgb.record_evaluation(evals), final_scores]
            if params.early_stopping_rounds > 0:
                callbacks.append(
                    lgb.early_stopping(
                        params.early_stopping_rounds, first_metric_only=True, verbose=False
                    )
                )
        logger.info(
            "training cat (%s) on %d rows, validating on %d, up to %d iterations",
            spec.task,
            len(train[0]),
            len(valid[0]),
            params.n_estimators,
        )
        booster = lgb.train(
            self._booster_params(model),
            dtrain,
            num_boost_round=params.n_estimators,
            valid_sets=valid_sets,
            valid_names=["valid"] * len(valid_sets),
            callbacks=callbacks,
        )
        best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        # Keep only the trees up to the best iteration, exactly as saved and reloaded (no copy
        # when every tree trained is kept).
        if booster.current_iteration() != best:
            booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        model.set_booster(booster, best)

        history = self._history(evals.get("valid", {}), metric_names)
        self._report(history)
        rounds = len(next(iter(evals.get("valid", {}).values()), [])) or best
        logger.info(
            "%s",
            stopped_message(
                "cat", rounds, params.n_estimators, best, "val_" + next(iter(metric_names.values()))
            ),
        )
        # LightGBM's own validation scores cover every tree trained; they are the kept model's
        # predictions only when the best iteration is the last one (no trees trimmed). Then
        # they equal model.predict_raw(x_valid) and spare the pipeline predicting it again.
        valid_raw = None
        # (current_iteration() cannot tell: lgb.train may already have dropped the trees
        # after the best iteration, so compare with the round the scores were taken at.)
        if final_scores.scores is not None and best == final_scores.iteration:
            valid_raw = _to_raw(final_scores.scores, spec.task)
        return TrainResult(best_step=best, history=history, valid_raw=valid_raw)

    def prepare(
        self,
        model: Model,
        train: tuple[pd.DataFrame, np.ndarray],
        valid: tuple[pd.DataFrame, np.ndarray],
    ) -> None:
        """Bin LightGBM's training and validation Datasets now (~1 s on 700,000 x 20 rows,
        in C without the GIL), with the params :meth:`fit` trains with: ``lgb.train`` then
        finds them constructed and only checks that the Dataset params still match."""
        if not isinstance(model, CatModel):
            raise TypeError(f"CatTrainer prepares a CatModel, got {type(model).__name__}")
        params = self._booster_params(model)
        dtrain, valid_sets = self._datasets(model, train, valid, params)
        dtrain.construct()
        for dataset in valid_sets:
            dataset.construct()
        self._prepared = (train, valid, dtrain, valid_sets)

    def _take_prepared(
        self, train: tuple[pd.DataFrame, np.ndarray], valid: tuple[pd.DataFrame, np.ndarray]
    ) -> tuple[lgb.Dataset, list[lgb.Dataset]] | None:
        """The Datasets :meth:`prepare` built, when ``fit`` gets the same arrays (once)."""
        prepared, self._prepared = self._prepared, None
        if prepared is None or prepared[0] is not train or prepared[1] is not valid:
            return None
        return prepared[2], prepared[3]

    def _booster_params(self, model: CatModel) -> dict[str, Any]:
        spec, ctx = model.spec, self.context
        objective, metric_names = OBJECTIVES[spec.task]
        extra: dict[str, Any] = {
            "objective": objective,
            "metric": list(metric_names),
            "seed": ctx.seed,
            "deterministic": ctx.deterministic,
            "force_col_wise": True,
            "num_threads": ctx.num_threads,  # LightGBM: 0 = OpenMP default, every core
        }
        if spec.task == "multiclass":
            extra["num_class"] = spec.n_classes
        if ctx.use_gpu:
            logger.info("cat trains on the CPU: the LightGBM wheel has no GPU support")
        return lgb_params(model, **extra)

    def _datasets(
        self,
        model: CatModel,
        train: tuple[pd.DataFrame, np.ndarray],
        valid: tuple[pd.DataFrame, np.ndarray],
        params: dict[str, Any] | None = None,
    ) -> tuple[lgb.Dataset, list[lgb.Dataset]]:
        """LightGBM's training set (class weights when asked) and the validation set;
        ``params``: the booster's, to construct them with ahead of ``lgb.train``."""
        spec = model.spec
        x_train, y_train = train
        x_valid, y_valid = valid
        y_train = np.asarray(y_train)
        dtrain = lgb.Dataset(
            model.lgb_frame(x_train),
            label=y_train,
            weight=None
            if spec.task == "regression"
            else self._weights(y_train, spec.n_classes, model.params.class_weight),
            params=dict(params) if params else {"verbose": -1},
            free_raw_data=True,
        )
        if not len(x_valid):
            return dtrain, []
        dvalid = lgb.Dataset(
            model.lgb_frame(x_valid),
            label=np.asarray(y_valid),
            reference=dtrain,
            params=dict(params) if params else None,
        )
        return dtrain, [dvalid]

    @staticmethod
    def _weights(y: np.ndarray, n_classes: int, class_weight: str) -> np.ndarray | None:
        """Per-row weights for ``class_weight: balanced``: n / (K * count of the row's class)."""
        if class_weight != "balanced":
            return None
        counts = np.bincount(y.astype("int64"), minlength=n_classes).astype("float64")
        present = counts > 0
        per_class = np.zeros(n_classes, dtype="float64")
        per_class[present] = len(y) / (present.sum() * counts[present])
        return per_class[y.astype("int64")]

    @staticmethod
    def _history(
        recorded: dict[str, list[float]], metric_names: dict[str, str]
    ) -> dict[str, list[float]]:
        history: dict[str, list[float]] = {}
        for lgb_name, name in metric_names.items():
            values = recorded.get(lgb_name)
            if values is None:
                continue
            if lgb_name in COMPLEMENT:
                values = [1.0 - v for v in values]
            history[f"val_{name}"] = [float(v) for v in values]
        return history

    def _report(self, history: dict[str, list[float]]) -> None:
        if not history:
            return
        n_steps = min(len(v) for v in history.values())
        per_batch = max(1, MAX_VALUES_PER_BATCH // len(history))
        steps: StepMetrics = [
            (i + 1, {name: values[i] for name, values in history.items()}) for i in range(n_steps)
        ]
        for start in range(0, n_steps, per_batch):
            self.report(steps[start : start + per_batch])


class _FinalValidScores:
    """LightGBM callback: at the last possible boosting round, keeps the validation set's
    predictions (objective-transformed, as ``Booster.predict`` returns them) that LightGBM
    computed anyway to evaluate its metrics. Early stopping before that round leaves
    ``scores`` None (the best iteration is then not the last one)."""

    order = 25  # after record_evaluation (20), before early_stopping (30) may stop training
    before_iteration = False

    def __init__(self) -> None:
        self.scores: np.ndarray | None = None
        self.iteration = 0  # 1-based round the scores belong to (0: none kept)

    def __call__(self, env: Any) -> None:
        if env.iteration + 1 != env.end_iteration:
            return

        def grab(preds: np.ndarray, data: Any) -> tuple[str, float, bool]:
            self.scores = np.array(preds, dtype="float64")  # a copy of LightGBM's buffer
            return "kennel_capture", 0.0, False

        env.model.eval_valid(feval=grab)
        self.iteration = env.iteration + 1


def _to_raw(scores: np.ndarray, task: str) -> np.ndarray:
    """Booster predictions -> ``CatModel.predict_raw``'s shape (same conversion)."""
    if task == "binary":
        return np.column_stack([1.0 - scores, scores])
    return np.asarray(scores, dtype="float64")
