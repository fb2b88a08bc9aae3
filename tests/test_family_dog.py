"""The dog family (TensorFlow/Keras MLP) on tiny hand-made frames: every task trains in a
second or two, saves and loads to identical predictions, tolerates missing values and unseen
categories, is deterministic for a seed, restores its best weights and reports metrics in
batches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kennel.families.base import ModelSpec, TrainContext, TrainResult
from kennel.families.dog import FAMILY, DogParams

tf = pytest.importorskip("tensorflow")

from kennel.families.dog.model import DogModel  # noqa: E402
from kennel.families.dog.model_api import DogModelAPI  # noqa: E402
from kennel.families.dog.trainer import DogTrainer, configure_runtime  # noqa: E402
from kennel.metrics import compute_metrics, metric_names  # noqa: E402

VOCAB = ["x", "y", "z"]
FAST = {"hidden_units": [16], "epochs": 8, "batch_size": 32, "learning_rate": 0.01}


def make_frame(n: int, seed: int) -> pd.DataFrame:
    """Two numeric columns (``a`` with NaN, ``b`` complete) and one categorical with NaN."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    a[rng.random(n) < 0.15] = np.nan
    b = rng.normal(loc=5.0, scale=3.0, size=n)
    codes = rng.integers(0, len(VOCAB), size=n)
    codes[rng.random(n) < 0.1] = -1
    colour = pd.Categorical.from_codes(codes, categories=VOCAB)
    return pd.DataFrame({"a": a, "b": b, "colour": colour})


def make_target(frame: pd.DataFrame, task: str) -> np.ndarray:
    a = frame["a"].fillna(0.0).to_numpy()
    b = (frame["b"].to_numpy() - 5.0) / 3.0
    c = frame["colour"].cat.codes.to_numpy().astype("float64")
    score = a + 0.5 * b + 0.8 * (c == 1) - 0.8 * (c == 2)
    if task == "binary":
        return (score > 0).astype("int64")
    if task == "multiclass":
        return np.digitize(score, [-0.5, 0.5]).astype("int64")
    return 1000.0 + 100.0 * score


def make_spec(task: str) -> ModelSpec:
    n_classes = {"binary": 2, "multiclass": 3, "regression": 1}[task]
    return ModelSpec(task=task, n_classes=n_classes, numeric=["a", "b"], categorical={"colour": 3})


def train(
    task: str,
    seed: int = 0,
    on_metrics: Any = None,
    **overrides: Any,
) -> tuple[DogModel, TrainResult, tuple[pd.DataFrame, np.ndarray]]:
    params = DogParams(**{**FAST, **overrides})
    train_x, valid_x = make_frame(240, seed=1), make_frame(80, seed=2)
    model = DogModel(params, make_spec(task))
    trainer = DogTrainer(params, TrainContext(seed=seed, num_threads=1), on_metrics=on_metrics)
    result = trainer.fit(
        model, (train_x, make_target(train_x, task)), (valid_x, make_target(valid_x, task))
    )
    return model, result, (valid_x, make_target(valid_x, task))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_trains_and_predicts_each_task(task: str) -> None:
    calls: list[list[tuple[int, dict[str, float]]]] = []
    model, result, (valid_x, valid_y) = train(task, on_metrics=calls.append)
    raw = model.predict_raw(valid_x)
    if task == "regression":
        assert raw.shape == (len(valid_x),)
        assert raw.dtype == np.float64
        # de-standardised: on the target's own scale, and better than predicting the mean
        assert abs(raw.mean() - valid_y.mean()) < 100
        assert compute_metrics(task, valid_y, raw)["r2"] > 0.3
    else:
        k = make_spec(task).n_classes
        assert raw.shape == (len(valid_x), k)
        np.testing.assert_allclose(raw.sum(axis=1), 1.0, atol=1e-9)
        assert compute_metrics(task, valid_y, raw)["accuracy"] > 0.6
    assert 1 <= result.best_step <= FAST["epochs"]
    expected = {f"val_{m}" for m in metric_names(task)}
    assert expected <= set(result.history)
    steps = [step for call in calls for step, _ in call]
    assert steps == list(range(1, len(result.history["loss"]) + 1))
    assert all(set(values) == expected for call in calls for _, values in call)


@pytest.mark.parametrize(
    ("task", "encoding"),
    [("binary", "embedding"), ("multiclass", "onehot"), ("regression", "embedding")],
)
def test_save_load_round_trip_is_identical(task: str, encoding: str, tmp_path: Path) -> None:
    model, _, (valid_x, _) = train(task, epochs=3, categorical_encoding=encoding)
    model.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["dog.json", "model.keras"]
    loaded = DogModel.load(tmp_path / "m")
    assert loaded.params == model.params
    assert loaded.spec == model.spec
    np.testing.assert_array_equal(loaded.predict_raw(valid_x), model.predict_raw(valid_x))
    one = valid_x.iloc[[3]]
    np.testing.assert_array_equal(loaded.predict_raw(one), model.predict_raw(one))


def test_missing_values_and_unknown_categories_predict() -> None:
    model, _, _ = train("binary", epochs=3)
    assert model.missing_columns == ["a"]  # ``b`` is complete in training
    rows = pd.DataFrame(
        {
            "a": [np.nan, np.inf, 0.5, np.nan],
            "b": [np.nan, 1.0, -np.inf, 2.0],  # missing only at prediction time
            "colour": pd.Categorical.from_codes([-1, 0, -1, 2], categories=VOCAB),
        }
    )
    raw = model.predict_raw(rows)
    assert raw.shape == (4, 2)
    assert np.isfinite(raw).all()
    # integer codes (e.g. out of range) are tolerated too: unknown -> index 0
    coded = rows.assign(colour=np.array([7, -1, 1, 0]))
    assert np.isfinite(model.predict_raw(coded)).all()
    assert model.predict_raw(rows.iloc[:0]).shape == (0, 2)


def test_missing_feature_column_is_a_clear_error() -> None:
    model, _, (valid_x, _) = train("binary", epochs=1)
    with pytest.raises(ValueError, match="colour"):
        model.predict_raw(valid_x.drop(columns=["colour"]))


def test_same_seed_gives_identical_predictions() -> None:
    first, _, (valid_x, _) = train("multiclass", seed=7, epochs=4)
    second, _, _ = train("multiclass", seed=7, epochs=4)
    other, _, _ = train("multiclass", seed=8, epochs=4)
    np.testing.assert_array_equal(first.predict_raw(valid_x), second.predict_raw(valid_x))
    assert not np.array_equal(first.predict_raw(valid_x), other.predict_raw(valid_x))


def test_early_stopping_restores_best_weights() -> None:
    # a large learning rate and no regularisation: validation loss soon gets worse
    model, result, (valid_x, valid_y) = train(
        "binary", epochs=60, early_stopping_patience=3, learning_rate=0.05, hidden_units=[64, 64]
    )
    epochs_run = len(result.history["loss"])
    assert epochs_run < 60
    assert result.best_step == epochs_run - 3
    losses = result.history["val_log_loss"]
    assert losses[result.best_step - 1] == min(losses)
    restored = compute_metrics("binary", valid_y, model.predict_raw(valid_x))["log_loss"]
    assert restored == pytest.approx(losses[result.best_step - 1], rel=1e-6)


def test_metrics_are_reported_in_batches() -> None:
    calls: list[list[tuple[int, dict[str, float]]]] = []
    _, result, _ = train(
        "regression", on_metrics=calls.append, epochs=30, early_stopping_patience=0
    )
    assert result.best_step == 30  # early stopping off: the last epoch's weights
    assert 1 <= len(calls) <= 2
    steps = [step for call in calls for step, _ in call]
    assert steps == list(range(1, 31))
    assert len(result.history["val_rmse"]) == 30


def test_model_api_returns_uniform_columns() -> None:
    model, _, (valid_x, valid_y) = train("multiclass", epochs=2)

    class Processor:  # the slice of DataProcessor the ModelAPI uses
        classes = ["low", "mid", "high"]

        def transform(self, rows: pd.DataFrame) -> pd.DataFrame:
            return rows

        def decode_target(self, codes: np.ndarray) -> np.ndarray:
            return np.asarray(self.classes, dtype=object)[codes]

    api = FAMILY.ModelAPI(model, Processor())  # type: ignore[arg-type]
    assert isinstance(api, DogModelAPI)
    out = api.predict(valid_x)
    assert list(out.columns) == ["prediction", "proba_low", "proba_mid", "proba_high"]
    assert set(out["prediction"]) <= {"low", "mid", "high"}
    assert out.index.equals(valid_x.index)


def test_repeated_predictions_of_any_size_do_not_retrace(caplog, tmp_path: Path) -> None:
    """A served model is called with 1, 3, 17, 500 ... rows: one traced function serves every
    size (no "triggered tf.function retracing" warning, as TensorFlow prints after five), also
    after a save and load."""
    import logging

    model, _, (valid_x, _) = train("binary", epochs=2)
    model.save(tmp_path / "m")
    loaded = DogModel.load(tmp_path / "m")
    with caplog.at_level(logging.WARNING):
        for size in (1, 2, 3, 5, 7, 11, 17, 29, 80, 1, 64):
            loaded.predict_raw(valid_x.head(size))
            model.predict_raw(valid_x.head(size))
    assert not [r for r in caplog.records if "retracing" in r.getMessage()], caplog.text
    assert loaded._fn().experimental_get_tracing_count() == 1


def test_family_spec_resolves_dog_classes() -> None:
    assert FAMILY.Model is DogModel
    assert FAMILY.Trainer is DogTrainer
    assert FAMILY.Params is DogParams


def test_runtime_settings_after_initialisation_do_not_fail() -> None:
    tf.constant(1.0) + 1.0  # the runtime is initialised now
    configure_runtime(TrainContext(num_threads=3, use_gpu=False))
    configure_runtime(TrainContext(num_threads=1, use_gpu=True))


def test_importing_the_dog_package_does_not_import_tensorflow() -> None:
    code = (
        "import sys, kennel.families.dog as d; d.DogParams(); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"early_stopping_patience": 0},
        # stops early: the restored best epoch's output, not the last epoch's
        {
            "epochs": 60,
            "early_stopping_patience": 3,
            "learning_rate": 0.05,
            "hidden_units": [64, 64],
        },
    ],
)
def test_valid_raw_is_the_restored_models_validation_output(task: str, overrides: dict) -> None:
    model, result, (valid_x, _) = train(task, **overrides)
    assert result.valid_raw is not None
    np.testing.assert_allclose(result.valid_raw, model.predict_raw(valid_x), rtol=0, atol=1e-12)


def _extreme_rows() -> pd.DataFrame:
    """Rows far outside the training range (the MLP extrapolates linearly), with the numbers
    pushing the same way and opposite ways, so that the output and the states in between are
    extreme."""
    rows = [
        (sa * k, 5.0 + sb * 3.0 * k, colour)
        for k in (8.0, 15.0, 30.0)
        for sa, sb in ((1, 1), (-1, -1), (1, -1), (-1, 1))
        for colour in (0, 2)
    ]
    a, b, codes = (np.array(v) for v in zip(*rows, strict=True))
    colour = pd.Categorical.from_codes(codes.astype("int64"), categories=VOCAB)
    return pd.DataFrame({"a": a, "b": b, "colour": colour})


def _served_output(model: DogModel, rows: pd.DataFrame, classes: np.ndarray | None) -> np.ndarray:
    """What the explanation should add up to, from the served predictions alone: the log-odds
    of the served probabilities (binary), the served log-probability of the given class
    (multiclass), the served value (regression)."""
    served = model.predict_raw(rows)
    if model.spec.task == "regression":
        return served
    with np.errstate(divide="ignore"):
        logp = np.log(served)
    if model.spec.task == "binary":
        return logp[:, 1] - logp[:, 0]
    return logp[np.arange(len(rows)), classes]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_contributions_are_exact_shapley_values_of_the_served_output_for_extreme_rows(
    task: str,
) -> None:
    """Three columns give 3! = 6 <= explain_permutations orders, so the contributions are the
    exact Shapley values; here they are computed apart, from the served predictions of every
    row with a subset of its columns set to the baseline. Rows so sure that a probability is
    below 1e-14 (log-odds beyond the 27.6 = log(1e12) a clip once capped them at) still add
    up to the log-odds of the served probabilities."""
    import itertools
    import math

    model, _, _ = train(task, hidden_units=[8], epochs=6)
    rows = _extreme_rows()
    if task != "regression":
        smallest = model.predict_raw(rows).min(axis=1)
        rows = rows[(smallest > 0) & (smallest < 1e-14)].reset_index(drop=True)
        assert len(rows) >= 4, smallest
    columns = ["a", "b", "colour"]
    found = model.contributions(rows, [[c] for c in columns])
    served_classes = model.predict_raw(rows).argmax(axis=1) if task == "multiclass" else None
    served = _served_output(model, rows, served_classes)
    assert np.isfinite(served).all()
    tolerance = {"rtol": 1e-5, "atol": 1e-4}
    np.testing.assert_allclose(found.output, served, **tolerance)
    np.testing.assert_allclose(found.base + found.values.sum(axis=1), served, **tolerance)

    baseline = pd.DataFrame(
        {
            "a": model.fill_values[0],
            "b": model.fill_values[1],
            "colour": pd.Categorical([None] * len(rows), categories=VOCAB),
        }
    )

    def value(kept: tuple[str, ...]) -> np.ndarray:
        hybrid = baseline.copy()
        for column in kept:
            hybrid[column] = rows[column]
        return _served_output(model, hybrid, served_classes)

    np.testing.assert_allclose(found.base, value(()), **tolerance)
    if task != "regression":  # beyond log(1e-12): the row (binary), a state in between (multiclass)
        states = [
            value(kept) for size in range(4) for kept in itertools.combinations(columns, size)
        ]
        assert np.abs(states).max() > 40
    n = len(columns)
    for i, column in enumerate(columns):
        others = [c for c in columns if c != column]
        exact = np.zeros(len(rows))
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for kept in itertools.combinations(others, size):
                exact += weight * (value((*kept, column)) - value(kept))
        np.testing.assert_allclose(found.values[:, i], exact, **tolerance)
