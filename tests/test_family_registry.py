"""Adding a model family without touching kennel: a third family defined right here.

``linear`` wraps scikit-learn's LogisticRegression / Ridge. It is registered through the
public API, chosen by name in a Config, and trained and served end to end through the shared
DataProcessor, its Trainer and the base ModelAPI. README.md ("Add a model family") walks through this file.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import Field, ValidationError

import kennel.families as families
from kennel.config import Config, load_config
from kennel.errors import ConfigError, UserError
from kennel.families import (
    FamilySpec,
    Model,
    ModelSpec,
    Params,
    Trainer,
    TrainResult,
    get_family,
    register,
    unregister,
)
from kennel.metrics import compute_metrics


# --------------------------------------------------------------------------- the family
class LinearParams(Params):
    """Typed params: unknown keys and wrong types are rejected by the base class."""

    C: float = Field(1.0, gt=0)
    """Inverse regularisation strength of the logistic regression (classifiers)."""
    alpha: float = Field(1.0, ge=0)
    """Ridge penalty (regression)."""
    max_iter: int = Field(500, ge=1)


class LinearModel(Model):
    """Standardised numbers (missing -> 0) and one-hot categories, then a linear layer.

    Prediction is plain numpy on the saved coefficients, so a loaded model predicts exactly
    what the trained one did; saved as JSON, never a pickle.
    """

    params: LinearParams

    def __init__(self, params: LinearParams, spec: ModelSpec) -> None:
        super().__init__(params, spec)
        self.state: dict[str, list] = {}

    def design(self, features: pd.DataFrame) -> np.ndarray:
        numeric = features[self.spec.numeric].to_numpy(dtype="float64", na_value=np.nan)
        if "mean" not in self.state:  # fitting: learn the scaling from this (training) data
            mean = np.nan_to_num(np.nanmean(numeric, axis=0)) if len(numeric) else []
            scale = np.nan_to_num(np.nanstd(numeric, axis=0), nan=1.0) if len(numeric) else []
            self.state["mean"] = list(map(float, mean))
            self.state["scale"] = [float(s) if s > 0 else 1.0 for s in scale]
        numeric = np.nan_to_num((numeric - self.state["mean"]) / self.state["scale"])
        blocks = [numeric]
        for name, size in self.spec.categorical.items():
            codes = features[name].cat.codes.to_numpy()
            blocks.append((codes[:, None] == np.arange(size)).astype("float64"))
        return np.hstack(blocks)

    def predict_raw(self, features: pd.DataFrame) -> np.ndarray:
        coef = np.asarray(self.state["coef"])
        z = self.design(features) @ coef.T + np.asarray(self.state["intercept"])
        if self.spec.task == "regression":
            return z[:, 0]
        if self.spec.task == "binary":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p, p])
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def feature_importance(self) -> dict[str, float]:
        coef = np.abs(np.asarray(self.state["coef"])).sum(axis=0)
        out = dict(zip(self.spec.numeric, map(float, coef), strict=False))
        start = len(self.spec.numeric)
        for name, size in self.spec.categorical.items():
            out[name] = float(coef[start : start + size].sum())
            start += size
        return out

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        payload = {
            "params": self.params.model_dump(mode="json"),
            "spec": self.spec.to_dict(),
            "state": self.state,
        }
        (path / "linear.json").write_text(json.dumps(payload), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        payload = json.loads((path / "linear.json").read_text(encoding="utf-8"))
        model = cls(LinearParams(**payload["params"]), ModelSpec.from_dict(payload["spec"]))
        model.state = payload["state"]
        return model


class LinearTrainer(Trainer):
    """One fit; the validation metrics are reported as a single step."""

    def fit(self, model: Model, train, valid) -> TrainResult:
        from sklearn.linear_model import LogisticRegression, Ridge

        assert isinstance(model, LinearModel)
        (x_train, y_train), (x_valid, y_valid) = train, valid
        params = model.params
        if model.spec.task == "regression":
            estimator = Ridge(alpha=params.alpha, random_state=self.context.seed)
        else:
            estimator = LogisticRegression(
                C=params.C, max_iter=params.max_iter, random_state=self.context.seed
            )
        model.state = {}
        estimator.fit(model.design(x_train), y_train)
        model.state["coef"] = np.atleast_2d(estimator.coef_).tolist()
        model.state["intercept"] = np.atleast_1d(estimator.intercept_).tolist()
        scores = compute_metrics(model.spec.task, y_valid, model.predict_raw(x_valid))
        metrics = {f"val_{name}": value for name, value in scores.items()}
        self.report([(1, metrics)])
        return TrainResult(best_step=1, history={k: [v] for k, v in metrics.items()})


LINEAR = FamilySpec(
    name="linear",
    params=LinearParams,
    model=LinearModel,
    trainer=LinearTrainer,  # ModelAPI: the base class's uniform output is all it needs
    requirements=("scikit-learn",),
    description="scikit-learn linear models (test example)",
)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def linear() -> Iterator[FamilySpec]:
    register(LINEAR)
    yield LINEAR
    unregister("linear")


def write_csv(path: Path, task: str, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    score = 2 * x1 - x2 + np.where(colour == "red", 1.5, 0.0) + 0.3 * rng.normal(size=n)
    if task == "binary":
        target: np.ndarray = np.where(score > 0.5, "sick", "well")
    elif task == "multiclass":
        target = np.array(["a", "b", "c"])[np.digitize(score, [-0.5, 1.0])]
    else:
        target = score
    frame = pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "target": target})
    frame.loc[::17, "x1"] = np.nan
    frame.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_third_family_end_to_end(linear: FamilySpec, task: str, tmp_path: Path) -> None:
    from kennel.data import DataProcessor

    csv = write_csv(tmp_path / "data.csv", task)
    config = Config.model_validate(
        {
            "data": {"source": str(csv), "target": "target", "categorical": ["colour"]},
            "model": {"family": "linear", "params": {"C": 2.0}},
        }
    )
    assert isinstance(config.model.params, LinearParams)
    assert config.model.params.C == 2.0

    family = get_family(config.model.family)
    processor = DataProcessor(config.data)
    splits = processor.split(processor.load())
    processor.fit(splits.train)
    assert processor.task == task
    model = family.Model(config.model.params, processor.spec())
    steps: list = []
    family.Trainer(config.model.params, on_metrics=steps.extend).fit(
        model,
        processor.features_and_target(splits.train),
        processor.features_and_target(splits.valid),
    )
    assert [s for s, _ in steps] == [1]

    rows = splits.test.drop(columns=["target"])
    out = family.ModelAPI(model, processor).predict(rows)
    model.save(tmp_path / "model")
    again = family.ModelAPI(family.Model.load(tmp_path / "model"), processor).predict(rows)
    pd.testing.assert_frame_equal(out, again)

    _, y_test = processor.features_and_target(splits.test)
    raw = model.predict_raw(processor.transform(rows))
    scores = compute_metrics(task, y_test, raw)
    if task == "regression":
        assert list(out.columns) == ["prediction"]
        assert scores["r2"] > 0.5
    else:
        assert list(out.columns) == ["prediction", *[f"proba_{c}" for c in processor.classes]]
        assert scores["accuracy"] > 0.75


def test_registered_family_is_listed_and_can_be_removed(linear: FamilySpec) -> None:
    assert "linear" in families.available_families()
    assert get_family("linear") is linear
    with pytest.raises(ValueError, match="already registered"):
        register(FamilySpec(name="linear", params=LinearParams, model="x:y", trainer="x:z"))
    unregister("linear")
    assert "linear" not in families.available_families()


def test_unknown_family_is_a_user_error_listing_the_choices() -> None:
    with pytest.raises(UserError, match=r"unknown model family 'nope'.*cat.*dog"):
        get_family("nope")
    with pytest.raises(ConfigError, match=r"model.family.*unknown model family 'nope'.*cat"):
        load_config(overrides=["model.family=nope"])


def test_params_are_validated_by_the_family(linear: FamilySpec) -> None:
    with pytest.raises(ValidationError, match="C"):
        Config.model_validate({"model": {"family": "linear", "params": {"C": "lots"}}})
    with pytest.raises(ValidationError, match="gamma"):
        Config.model_validate({"model": {"family": "linear", "params": {"gamma": 1}}})
    with pytest.raises(ConfigError, match=r"model\.params\.C"):
        load_config(overrides=["model.family=linear", "model.params.C=-1"])
    with pytest.raises(ConfigError, match=r"model\.params\.num_leaves"):
        load_config(overrides=["model.family=cat", "model.params.num_leaves=many"])


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed-looking distribution on sys.path with a ``kennel.families`` entry point."""
    (tmp_path / "kennel_plugin_demo.py").write_text(
        textwrap.dedent(
            """
            from kennel.families import FamilySpec
            from kennel.families.cat import CatParams

            FAMILY = FamilySpec(
                name="plugged",
                params=CatParams,
                model="kennel.families.cat.model:CatModel",
                trainer="kennel.families.cat.trainer:CatTrainer",
                description="a plug-in reusing cat's classes",
            )
            NOT_A_FAMILY = 42
            """
        )
    )
    dist = tmp_path / "kennel_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kennel-plugin-demo\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[kennel.families]\n"
        "plugged = kennel_plugin_demo:FAMILY\n"
        "wrong = kennel_plugin_demo:NOT_A_FAMILY\n"
        "broken = kennel_plugin_no_such_module:FAMILY\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(families, "_loaded_entry_points", False)
    yield tmp_path
    for name in ("plugged", "wrong", "broken"):
        unregister(name)
    sys.modules.pop("kennel_plugin_demo", None)


def test_family_from_an_entry_point(plugin_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = families.available_families()
    assert "plugged" in names
    assert "wrong" not in names and "broken" not in names  # logged, never fatal
    assert "could not load model family 'broken'" in caplog.text
    assert "'wrong' is not a FamilySpec" in caplog.text
    family = get_family("plugged")
    assert family.Model.__name__ == "CatModel"
    config = Config.model_validate({"model": {"family": "plugged", "params": {"num_leaves": 5}}})
    assert config.model.params.num_leaves == 5
