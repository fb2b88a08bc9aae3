"""``CatModel``: a LightGBM Booster plus what it needs to read kennel's feature frames.

Saved as LightGBM's own text model file (``model.txt``) next to a small ``model.json`` with
the typed params, the :class:`~kennel.families.base.ModelSpec` and the feature-name mapping;
never a pickle. Prediction converts the transformed frame to a float matrix itself (numeric
values, categorical codes with NaN for unknown/missing) instead of going through LightGBM's
pandas path, which costs about a millisecond per call on a one-row request.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from kennel.families.base import Contributions, Model, ModelSpec, sum_groups
from kennel.families.cat import CatParams

if TYPE_CHECKING:
    from kennel.families.base import Params

logger = logging.getLogger(__name__)

MODEL_FILE = "model.txt"
META_FILE = "model.json"
FORMAT = "kennel.cat/1"
#: Up to this many rows, prediction runs on one thread (see ``CatModel.predict_raw``).
SINGLE_THREAD_ROWS = 256


def safe_feature_names(names: list[str]) -> list[str]:
    """Names LightGBM accepts: no spaces or JSON special characters, and unique."""
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        base = re.sub(r"[^0-9A-Za-z_]", "_", str(name)) or "feature"
        candidate, i = base, 1
        while candidate in seen:
            candidate, i = f"{base}_{i}", i + 1
        seen.add(candidate)
        out.append(candidate)
    return out


class CatModel(Model):
    """LightGBM gradient-boosted trees for binary, multiclass and regression tasks."""

    params: CatParams

    def __init__(self, params: Params, spec: ModelSpec) -> None:
        if not isinstance(params, CatParams):
            params = CatParams.model_validate(params.model_dump() if params is not None else {})
        super().__init__(params, spec)
        self.booster: lgb.Booster | None = None
        self.best_iteration: int = 0
        self.feature_names: list[str] = spec.features
        self.lgb_feature_names: list[str] = safe_feature_names(self.feature_names)
        self._categories: dict[str, pd.Index] = {}

    # ------------------------------------------------------------------ fitting helpers
    def lgb_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The features in training order with LightGBM-safe column names."""
        if features.columns.tolist() != self.feature_names:  # the usual case needs no copy
            self._check_columns(features)
            features = features[self.feature_names]
        return features.set_axis(self.lgb_feature_names, axis=1)

    def set_booster(self, booster: lgb.Booster, best_iteration: int) -> None:
        """Adopt a trained booster (called by the Trainer and by :meth:`load`)."""
        self.booster = booster
        self.best_iteration = best_iteration
        vocabularies = booster.pandas_categorical or []
        names = list(self.spec.categorical)
        if len(vocabularies) != len(names):
            raise ValueError(
                f"the LightGBM model knows {len(vocabularies)} categorical features, the "
                f"spec {len(names)}"
            )
        self._categories = {
            name: pd.Index(vocab) for name, vocab in zip(names, vocabularies, strict=True)
        }

    # ------------------------------------------------------------------ Model interface
    def predict_raw(self, features: pd.DataFrame) -> np.ndarray:
        booster = self._require_booster()
        matrix = self._matrix(features)
        # A few rows are predicted on the calling thread: waking LightGBM's OpenMP team costs
        # far more than the work (about 10 ms instead of 0.05 ms for one row on a busy 2-core
        # machine, once the workers have gone to sleep between requests). Same predictions.
        threads = {"num_threads": 1} if len(matrix) <= SINGLE_THREAD_ROWS else {}
        raw = booster.predict(matrix, **threads)
        if self.spec.task == "binary":
            return np.column_stack([1.0 - raw, raw])
        return np.asarray(raw, dtype="float64")

    def contributions(
        self, features: pd.DataFrame, groups: Sequence[Sequence[str]]
    ) -> Contributions:
        """LightGBM's exact tree contributions (``pred_contrib``, TreeSHAP) of each feature to
        the raw score, summed into ``groups``. Binary: log-odds of the positive class;
        multiclass: the margin of each row's predicted class; regression: the value."""
        booster = self._require_booster()
        matrix = self._matrix(features)
        threads = {"num_threads": 1} if len(matrix) <= SINGLE_THREAD_ROWS else {}
        contrib = np.asarray(booster.predict(matrix, pred_contrib=True, **threads))
        width = len(self.feature_names) + 1
        if self.spec.task == "multiclass":
            blocks = contrib.reshape(len(matrix), -1, width)
            margins = blocks.sum(axis=2)
            contrib = blocks[np.arange(len(matrix)), margins.argmax(axis=1)]
        values, base = contrib[:, :-1], contrib[:, -1]
        grouped = sum_groups(values, self.feature_names, groups)
        return Contributions(grouped, base, base + values.sum(axis=1))

    def feature_importance(self) -> dict[str, float]:
        """Total gain of the splits on each feature, keyed by the original feature name."""
        gains = self._require_booster().feature_importance(importance_type="gain")
        return {name: float(g) for name, g in zip(self.feature_names, gains, strict=True)}

    def save(self, path: Path) -> None:
        booster = self._require_booster()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(path / MODEL_FILE), num_iteration=self.best_iteration or None)
        meta = {
            "format": FORMAT,
            "lightgbm_version": lgb.__version__,
            "params": self.params.model_dump(mode="json"),
            "spec": self.spec.to_dict(),
            "feature_names": self.feature_names,
            "lgb_feature_names": self.lgb_feature_names,
            "best_iteration": self.best_iteration,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CatModel:
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / META_FILE} is not a kennel cat model ({meta.get('format')})")
        model = cls(CatParams.model_validate(meta["params"]), ModelSpec.from_dict(meta["spec"]))
        model.feature_names = list(meta["feature_names"])
        model.lgb_feature_names = list(meta["lgb_feature_names"])
        booster = lgb.Booster(model_file=str(path / MODEL_FILE))
        model.set_booster(booster, int(meta["best_iteration"]))
        return model

    # ------------------------------------------------------------------ internals
    def _require_booster(self) -> lgb.Booster:
        if self.booster is None:
            raise RuntimeError("the cat model is not trained; fit it or load a saved one")
        return self.booster

    def _check_columns(self, features: pd.DataFrame) -> None:
        missing = [name for name in self.feature_names if name not in features.columns]
        if missing:
            raise ValueError(f"features lack columns the model was trained on: {missing}")

    def _matrix(self, features: pd.DataFrame) -> np.ndarray:
        """Float matrix in training column order; categorical codes, NaN for unknown."""
        n_numeric = len(self.spec.numeric)
        if features.columns.tolist() == self.feature_names:  # the usual case: one block copy
            # All numeric: the frame is the block as it is (``iloc`` builds a frame first,
            # ~0.036 ms, more than LightGBM takes to predict one row).
            numeric = features if not self._categories else features.iloc[:, :n_numeric]
        else:
            self._check_columns(features)
            numeric = features[self.spec.numeric]
        if not self._categories:
            return numeric.to_numpy(dtype="float64", na_value=np.nan)
        out = np.empty((len(features), len(self.feature_names)), dtype="float64")
        out[:, :n_numeric] = numeric.to_numpy(dtype="float64", na_value=np.nan)
        for j, (name, categories) in enumerate(self._categories.items(), start=n_numeric):
            out[:, j] = _codes(features[name], categories)
        return out


def _codes(column: pd.Series, categories: pd.Index) -> np.ndarray:
    """Codes of ``column`` in the training vocabulary ``categories`` (NaN if unknown)."""
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype) and dtype.categories.equals(categories):
        codes = column.array.codes  # the Categorical's own numpy codes, no Series
    else:  # a different vocabulary or order: map through the training one
        codes = pd.Categorical(column.astype("object"), categories=categories).codes
    values = codes.astype("float64")
    values[codes < 0] = np.nan
    return values


def lgb_params(model: CatModel, **extra: Any) -> dict[str, Any]:
    """LightGBM parameters from the typed params (no seeds or threads; see the Trainer)."""
    p = model.params
    return {
        "num_leaves": p.num_leaves,
        "max_depth": p.max_depth,
        "learning_rate": p.learning_rate,
        "min_data_in_leaf": p.min_child_samples,
        "feature_fraction": p.feature_fraction,
        "bagging_fraction": p.bagging_fraction,
        "bagging_freq": p.bagging_freq,
        "lambda_l1": p.lambda_l1,
        "lambda_l2": p.lambda_l2,
        "verbose": -1,
        **extra,
    }
