"""The three interfaces every model family implements (the seed's set), plus its Params.

A family is pure ML: it knows no MLflow and no CLI. It receives features already transformed
by the shared :class:`~kennel.data.DataProcessor` (numeric columns as float64 with NaN
for missing values, categorical columns as pandas ``Categorical`` whose categories are the
training vocabulary; unseen or missing categories are NaN / code -1), and targets encoded as
integer class codes ``0..K-1`` for classifiers or floats for regression.

Per-step metrics go to an ``on_metrics`` callback in batches: ``on_metrics([(step,
{"val_log_loss": 0.3, "val_roc_auc": 0.97}), ...])``. The tracking layer turns one call into
one MLflow batch request, so a Trainer calls it rarely (e.g. once at the end of fitting, or
every N epochs), never once per value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from kennel.spec import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from kennel.data import DataProcessor

StepMetrics = list[tuple[int, dict[str, float]]]
MetricsCallback = Callable[[StepMetrics], None]


class Params(BaseModel):
    """Base for a family's typed hyperparameters: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class TrainContext:
    """Family-independent settings a Trainer honours."""

    seed: int = 42
    num_threads: int = 0
    """0 means every core."""
    use_gpu: bool = False
    deterministic: bool = True


@dataclass
class TrainResult:
    """What fitting produced: the best step and the per-step history."""

    best_step: int
    history: dict[str, list[float]] = field(default_factory=dict)
    valid_raw: np.ndarray | None = None
    """The kept model's raw output on the validation split (what ``predict_raw`` returns),
    when the trainer already has it; ``None`` otherwise. Lets the pipeline skip predicting
    the validation split again."""


@dataclass
class Contributions:
    """How much each input column moved one row's raw model output away from a base value:
    ``base + values.sum(axis=1)`` is the raw output (log-odds of the positive class for a
    binary model, the predicted class's margin for a multiclass one, the value for a
    regressor), row by row."""

    values: np.ndarray
    """(rows, columns): one column per group the caller named (the user's raw columns)."""
    base: np.ndarray
    """(rows,): what the output is before any column contributes."""
    output: np.ndarray
    """(rows,): the raw output the contributions sum to (base + the values)."""


class Model(ABC):
    """Wraps the estimator or network: built from Params and a ModelSpec; saved and loaded
    from a directory in the library's own format (never a pickle)."""

    def __init__(self, params: Params, spec: ModelSpec) -> None:
        self.params = params
        self.spec = spec

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write everything needed to rebuild this model into the directory ``path``."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Model:
        """Rebuild a model saved with :meth:`save`."""

    @abstractmethod
    def predict_raw(self, features: pd.DataFrame) -> np.ndarray:
        """Class probabilities of shape (n, K) for classifiers (binary too: K=2), or
        predictions of shape (n,) for regression, from transformed features."""

    def feature_importance(self) -> dict[str, float] | None:
        """Importance per feature where the family has it."""
        return None

    def contributions(
        self, features: pd.DataFrame, groups: Sequence[Sequence[str]]
    ) -> Contributions:
        """Per row, the contribution of each group of features (the features one raw column
        gave: itself, or a date's parts) to the raw output; a family that cannot explain
        says so."""
        raise NotImplementedError(f"the {type(self).__name__} model cannot explain predictions")


class Trainer(ABC):
    """Owns fitting: early stopping, per-step validation metrics, seeds, threads."""

    def __init__(
        self,
        params: Params,
        context: TrainContext | None = None,
        on_metrics: MetricsCallback | None = None,
    ) -> None:
        self.params = params
        self.context = context or TrainContext()
        self.on_metrics = on_metrics

    @abstractmethod
    def fit(
        self,
        model: Model,
        train: tuple[pd.DataFrame, np.ndarray],
        valid: tuple[pd.DataFrame, np.ndarray],
    ) -> TrainResult:
        """Fit ``model`` in place on (features, encoded target) pairs; validation metrics
        per step are named ``val_<metric>`` and reported through ``on_metrics``."""

    def prepare(  # noqa: B027 - an optional hook: doing nothing is the default
        self,
        model: Model,
        train: tuple[pd.DataFrame, np.ndarray],
        valid: tuple[pd.DataFrame, np.ndarray],
    ) -> None:
        """Optional: build what :meth:`fit` needs from the data alone (LightGBM bins its
        Datasets here), ahead of it. A training run calls it in its data thread, beside
        the imports and the tracking store's set-up, with the model and the very arrays
        :meth:`fit` gets next; ``on_metrics`` is set after. Default: nothing."""

    def report(self, steps: StepMetrics) -> None:
        if self.on_metrics is not None and steps:
            self.on_metrics(steps)


class ModelAPI:
    """Prediction from raw rows: the shared preprocessing, the model, the uniform output.

    Returns a frame with ``prediction`` (the user's label values for classifiers) and, for
    classifiers, one ``proba_<class>`` column per class. Families override
    :meth:`postprocess` only if they must absorb an unusual output shape.
    """

    def __init__(self, model: Model, processor: DataProcessor) -> None:
        self.model = model
        self.processor = processor

    def predict(self, rows: pd.DataFrame, *, explain: bool = False) -> pd.DataFrame:
        """``prediction`` (and ``proba_<class>``); with ``explain``, also one
        ``contrib_<raw column>`` per input column and ``contrib_base`` (see :meth:`explain`)."""
        features = self.processor.transform(rows)
        raw = self.model.predict_raw(features)
        out = self.postprocess(raw, index=rows.index)
        if explain:  # same index on both sides: side by side, no alignment (join costs more)
            import pandas as pd

            out = pd.concat([out, self.contributions_frame(features, rows.index)], axis=1)
        return out

    def explain(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``contrib_<raw column>`` for every input column the model uses, and
        ``contrib_base``: per row, they sum to the model's raw output (log-odds of the
        positive class, the predicted class's margin, or the regression value)."""
        return self.contributions_frame(self.processor.transform(rows), rows.index)

    def contributions_frame(self, features: pd.DataFrame, index: Any = None) -> pd.DataFrame:
        import pandas as pd

        columns, groups = self.processor.feature_groups()
        found = self.model.contributions(features, groups)
        # One constructor call: adding contrib_base as a column costs more than computing it.
        names = [*(f"contrib_{c}" for c in columns), "contrib_base"]
        data = np.column_stack([found.values, found.base])
        return pd.DataFrame(data, columns=names, index=index)

    def postprocess(self, raw: np.ndarray, index: Any = None) -> pd.DataFrame:
        import pandas as pd

        raw = np.asarray(raw)
        if self.model.spec.task == "regression":
            return pd.DataFrame({"prediction": raw.reshape(-1).astype("float64")}, index=index)
        proba = raw.astype("float64")
        if proba.ndim == 1:  # a single positive-class column
            proba = np.column_stack([1.0 - proba, proba])
        proba = proba / proba.sum(axis=1, keepdims=True)
        labels = self.processor.decode_target(proba.argmax(axis=1))
        # One constructor call from a dict of columns: adding columns one by one costs more
        # than the model itself on a one-row request.
        columns: dict[str, Any] = {"prediction": labels}
        for i, cls in enumerate(self.processor.classes):
            columns[f"proba_{cls}"] = proba[:, i]
        return pd.DataFrame(columns, index=index)


@dataclass(frozen=True)
class FamilySpec:
    """Declared by each family package: names of its classes, imported on first use so
    that choosing one family never imports another family's heavy library."""

    name: str
    params: type[Params]
    model: type[Model] | str
    trainer: type[Trainer] | str
    model_api: type[ModelAPI] | str = "kennel.families.base:ModelAPI"
    requirements: Sequence[str] = ()
    """Distribution names this family's saved model needs at serving time."""
    description: str = ""
    fork_safe: bool = True
    """Whether the family's libraries may be imported by a process that then forks (the
    search's warm trial server imports them once for every trial), and a process that has
    fitted with them may fork a copy that runs only other code (a trial's plots:
    :class:`kennel.report.plots.ForkedPlots`). TensorFlow may not."""
    cluster_trainer: type[Trainer] | str | None = None
    """The Trainer that fits on a Dask cluster (``resource.cluster``); None: the family
    trains on one machine only, and ``kennel train`` with a cluster is a user error."""
    _resolved: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    kinds: ClassVar[tuple[str, ...]] = ("model", "trainer", "model_api", "cluster_trainer")

    def _resolve(self, kind: str) -> Any:
        target = getattr(self, kind)
        if not isinstance(target, str):
            return target
        if kind not in self._resolved:
            import importlib

            module_name, _, attr = target.partition(":")
            self._resolved[kind] = getattr(importlib.import_module(module_name), attr)
        return self._resolved[kind]

    @property
    def Params(self) -> type[Params]:  # noqa: N802 - class-like accessor
        return self.params

    @property
    def Model(self) -> type[Model]:  # noqa: N802
        return self._resolve("model")

    @property
    def Trainer(self) -> type[Trainer]:  # noqa: N802
        return self._resolve("trainer")

    @property
    def ModelAPI(self) -> type[ModelAPI]:  # noqa: N802
        return self._resolve("model_api")

    @property
    def ClusterTrainer(self) -> type[Trainer]:  # noqa: N802
        if self.cluster_trainer is None:
            raise TypeError(f"the {self.name} family has no cluster trainer")
        return self._resolve("cluster_trainer")


def stopped_message(
    family: str, rounds: int, limit: int, best: int, metric: str, unit: str = "iteration"
) -> str:
    """One log line that adds up: how many rounds ran of how many allowed, where the
    validation metric was best, and what the kept model holds."""
    if rounds < limit:
        return (
            f"{family} stopped early after {rounds} of up to {limit} {unit}s: "
            f"{metric} was best at {unit} {best}, which the model keeps"
        )
    return (
        f"{family} ran all {limit} {unit}s; {metric} was best at {unit} {best}, "
        "which the model keeps"
    )


def sum_groups(
    values: np.ndarray, names: Sequence[str], groups: Sequence[Sequence[str]]
) -> np.ndarray:
    """Per-feature contributions (rows, features named ``names``) summed into ``groups`` of
    feature names: one matrix product with a 0/1 matrix, cheap next to computing them."""
    position = {name: j for j, name in enumerate(names)}
    members = np.zeros((len(names), len(groups)), dtype=values.dtype)
    for g, group in enumerate(groups):
        for name in group:
            members[position[name], g] = 1.0
    return values @ members
