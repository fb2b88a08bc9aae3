"""The ``cat`` family (LightGBM): fitting, metrics, determinism, save/load, speed paths."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.families import TrainContext, get_family
from kennel.families.base import ModelSpec
from kennel.families.cat import CatParams
from kennel.metrics import compute_metrics

FAST = {"n_estimators": 40, "num_leaves": 7, "learning_rate": 0.2, "min_child_samples": 5}


def make_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Numeric float64 (with NaN) then categorical columns, as DataProcessor.transform gives."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x1[rng.random(n) < 0.1] = np.nan
    colour = rng.choice(["red", "green", "blue", None], size=n, p=[0.3, 0.3, 0.3, 0.1])
    return pd.DataFrame(
        {
            "mean radius": x1,
            "x2": rng.normal(size=n),
            "colour": pd.Categorical(colour, categories=["blue", "green", "red"]),
        }
    )


def make_target(frame: pd.DataFrame, task: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    score = (
        np.nan_to_num(frame["mean radius"].to_numpy())
        + 0.5 * frame["x2"].to_numpy()
        + np.where(frame["colour"] == "red", 1.0, 0.0)
        + 0.3 * rng.normal(size=len(frame))
    )
    if task == "binary":
        return (score > 0.3).astype("int64")
    if task == "multiclass":
        return np.digitize(score, [-0.3, 0.8]).astype("int64")
    return score.astype("float64")


def make_spec(task: str) -> ModelSpec:
    n_classes = {"binary": 2, "multiclass": 3, "regression": 1}[task]
    return ModelSpec(task, n_classes, ["mean radius", "x2"], {"colour": 3})


def fit(task: str, params: dict | None = None, context: TrainContext | None = None):
    family = get_family("cat")
    p = CatParams(**{**FAST, **(params or {})})
    train, valid = make_frame(400, 0), make_frame(150, 1)
    steps: list = []
    model = family.Model(p, make_spec(task))
    trainer = family.Trainer(p, context or TrainContext(num_threads=1), steps.extend)
    result = trainer.fit(
        model, (train, make_target(train, task, 0)), (valid, make_target(valid, task, 1))
    )
    return model, result, steps


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_fit_predicts_and_learns(task: str) -> None:
    model, result, _ = fit(task)
    test = make_frame(300, 7)
    raw = model.predict_raw(test)
    if task == "regression":
        assert raw.shape == (300,)
        assert compute_metrics(task, make_target(test, task, 7), raw)["r2"] > 0.5
    else:
        k = 2 if task == "binary" else 3
        assert raw.shape == (300, k)
        np.testing.assert_allclose(raw.sum(axis=1), 1.0, rtol=1e-9)
        assert compute_metrics(task, make_target(test, task, 7), raw)["accuracy"] > 0.7
    assert 1 <= result.best_step <= FAST["n_estimators"]


@pytest.mark.parametrize(
    ("task", "names"),
    [
        ("binary", {"val_log_loss"}),  # AUC only for the kept model (a fifth of the fit)
        ("multiclass", {"val_log_loss", "val_accuracy"}),
        ("regression", {"val_rmse", "val_mae"}),
    ],
)
def test_validation_metrics_every_iteration_in_one_batch(task: str, names: set[str]) -> None:
    batches: list = []
    family = get_family("cat")
    p = CatParams(**{**FAST, "early_stopping_rounds": 0})
    train, valid = make_frame(300, 0), make_frame(100, 1)
    model = family.Model(p, make_spec(task))
    trainer = family.Trainer(p, TrainContext(num_threads=1), batches.append)
    result = trainer.fit(
        model, (train, make_target(train, task)), (valid, make_target(valid, task, 1))
    )
    assert len(batches) == 1
    steps = batches[0]
    assert [s for s, _ in steps] == list(range(1, FAST["n_estimators"] + 1))
    assert all(set(values) == names for _, values in steps)
    assert set(result.history) == names
    assert result.best_step == FAST["n_estimators"]
    if task == "multiclass":  # accuracy is 1 - multi_error: a fraction of the valid rows
        acc = np.array(result.history["val_accuracy"])
        assert ((acc >= 0) & (acc <= 1)).all()
        raw = model.predict_raw(valid)
        expected = compute_metrics(task, make_target(valid, task, 1), raw)["accuracy"]
        assert acc[-1] == pytest.approx(expected)


def test_large_histories_are_reported_in_a_few_batches() -> None:
    batches: list = []
    family = get_family("cat")
    p = CatParams(**{**FAST, "n_estimators": 1500, "early_stopping_rounds": 0})  # 1 metric
    train, valid = make_frame(200, 0), make_frame(80, 1)
    trainer = family.Trainer(p, TrainContext(num_threads=1), batches.append)
    trainer.fit(
        family.Model(p, make_spec("binary")),
        (train, make_target(train, "binary")),
        (valid, make_target(valid, "binary", 1)),
    )
    assert len(batches) == 2
    assert all(sum(len(v) for _, v in batch) <= 1000 for batch in batches)
    assert [s for batch in batches for s, _ in batch] == list(range(1, 1501))


def test_early_stopping_on_validation_split() -> None:
    model, result, steps = fit(
        "binary", {"n_estimators": 2000, "learning_rate": 0.5, "early_stopping_rounds": 5}
    )
    assert result.best_step < 2000
    assert len(steps) == result.best_step + 5  # recorded until the patience ran out
    assert model.booster.current_iteration() == result.best_step  # trimmed to the best
    losses = result.history["val_log_loss"]
    assert min(losses[: result.best_step]) == losses[result.best_step - 1]


def test_same_seed_same_predictions_other_seed_differs() -> None:
    bagging = {"bagging_fraction": 0.7, "bagging_freq": 1, "feature_fraction": 0.7}
    test = make_frame(200, 9)
    a = fit("binary", bagging, TrainContext(seed=3, num_threads=2))[0].predict_raw(test)
    b = fit("binary", bagging, TrainContext(seed=3, num_threads=2))[0].predict_raw(test)
    c = fit("binary", bagging, TrainContext(seed=4, num_threads=2))[0].predict_raw(test)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_save_load_round_trip(task: str, tmp_path: Path) -> None:
    model, result, _ = fit(task, {"n_estimators": 300, "early_stopping_rounds": 5})
    test = make_frame(100, 5)
    before = model.predict_raw(test)
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.txt"]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["spec"] == make_spec(task).to_dict()
    assert meta["best_iteration"] == result.best_step
    loaded = get_family("cat").Model.load(tmp_path)
    assert loaded.params == model.params
    assert loaded.spec == model.spec
    np.testing.assert_allclose(loaded.predict_raw(test), before, rtol=0, atol=1e-12)
    assert loaded.feature_importance() == pytest.approx(model.feature_importance())


def test_feature_names_with_spaces_and_json_characters(tmp_path: Path) -> None:
    family = get_family("cat")
    frame = make_frame(300)
    frame = frame.rename(columns={"x2": 'odd "name": [1], {2}'})
    spec = ModelSpec("binary", 2, ["mean radius", 'odd "name": [1], {2}'], {"colour": 3})
    p = CatParams(**FAST)
    model = family.Model(p, spec)
    y = make_target(make_frame(300), "binary")
    family.Trainer(p, TrainContext(num_threads=1)).fit(model, (frame, y), (frame, y))
    importance = model.feature_importance()
    assert list(importance) == ["mean radius", 'odd "name": [1], {2}', "colour"]
    assert importance["mean radius"] > 0
    model.save(tmp_path)
    reloaded = family.Model.load(tmp_path)
    np.testing.assert_array_equal(reloaded.predict_raw(frame), model.predict_raw(frame))


def test_fast_matrix_path_matches_lightgbm_pandas_path() -> None:
    model, _, _ = fit("multiclass")
    test = make_frame(200, 3)
    ours = model.predict_raw(test)
    theirs = model.booster.predict(model.lgb_frame(test))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_all_numeric_features_go_to_lightgbm_as_they_are() -> None:
    """Without categorical features the frame in the fitted order is the matrix itself (no
    column slice first): the same predictions as LightGBM's own pandas path, NaN included,
    and as a frame in another column order."""
    family = get_family("cat")
    p = CatParams(**FAST)
    model = family.Model(p, ModelSpec("binary", 2, ["mean radius", "x2"], {}))
    data = [make_frame(n, seed) for n, seed in ((400, 0), (150, 1), (200, 3))]
    train, valid, test = (frame.drop(columns="colour") for frame in data)
    family.Trainer(p, TrainContext(num_threads=1), lambda steps: None).fit(
        model,
        (train, make_target(data[0], "binary", 0)),
        (valid, make_target(data[1], "binary", 1)),
    )
    assert test["mean radius"].isna().any()
    ours = model.predict_raw(test)
    theirs = model.booster.predict(model.lgb_frame(test))
    np.testing.assert_allclose(ours[:, 1], theirs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.predict_raw(test[["x2", "mean radius"]]), ours)


def test_unseen_and_missing_categories_are_missing_values() -> None:
    model, _, _ = fit("binary")
    rows = make_frame(3, 4)
    rows["colour"] = pd.Categorical([None, None, "red"], categories=["blue", "green", "red"])
    raw = model.predict_raw(rows)
    # Reordered or different vocabularies are mapped through the training one.
    other = rows.copy()
    other["colour"] = pd.Categorical(["purple", None, "red"], categories=["red", "purple"])
    np.testing.assert_array_equal(model.predict_raw(other), raw)


def test_one_row_prediction_is_quick() -> None:
    import time

    model, _, _ = fit("binary")
    row = make_frame(1, 4)
    model.predict_raw(row)
    start = time.perf_counter()
    for _ in range(50):
        model.predict_raw(row)
    # About 0.3 ms on an idle core (LightGBM's own pandas path costs about 1 ms); the bound
    # only catches a pathological path on a busy machine.
    assert (time.perf_counter() - start) / 50 < 0.02


def test_balanced_class_weight_weights_rows() -> None:
    from kennel.families.cat.trainer import CatTrainer

    y = np.array([0, 0, 0, 1])
    w = CatTrainer._weights(y, 2, "balanced")
    np.testing.assert_allclose(w, [4 / 6, 4 / 6, 4 / 6, 2.0])
    assert CatTrainer._weights(y, 2, "none") is None
    # On imbalanced data balanced weights raise the minority class's probabilities.
    base = fit("binary", {"class_weight": "none"})[0].predict_raw(make_frame(200, 2))
    bal = fit("binary", {"class_weight": "balanced"})[0].predict_raw(make_frame(200, 2))
    assert not np.array_equal(base, bal)


def test_params_are_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        CatParams(num_leaves="many")
    with pytest.raises(ValidationError):
        CatParams(nmu_leaves=3)
    with pytest.raises(ValidationError):
        CatParams(class_weight="heavy")


def test_untrained_model_refuses_to_predict() -> None:
    model = get_family("cat").Model(CatParams(), make_spec("binary"))
    with pytest.raises(RuntimeError, match="not trained"):
        model.predict_raw(make_frame(2))


def test_cat_never_imports_tensorflow(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_family_cat import fit, make_frame
        from kennel.families import get_family
        model, _, _ = fit("binary")
        model.save({str(tmp_path)!r})
        get_family("cat").Model.load({str(tmp_path)!r}).predict_raw(make_frame(5))
        get_family("cat").ModelAPI
        assert "tensorflow" not in sys.modules, "cat imported tensorflow"
        assert "keras" not in sys.modules, "cat imported keras"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_column_order_and_extra_columns_do_not_matter() -> None:
    model, _, _ = fit("regression")
    test = make_frame(50, 6)
    shuffled = test[["colour", "x2", "mean radius"]].assign(extra=1.0)
    np.testing.assert_array_equal(model.predict_raw(shuffled), model.predict_raw(test))
    with pytest.raises(ValueError, match="x2"):
        model.predict_raw(test.drop(columns=["x2"]))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize(
    ("params", "provided"),
    [
        ({"early_stopping_rounds": 0}, True),  # every round kept: LightGBM's scores are the model's
        ({"n_estimators": 6, "learning_rate": 0.05}, True),  # best round is the last one
        ({"n_estimators": 400, "early_stopping_rounds": 5}, False),  # trees trimmed
    ],
)
def test_valid_raw_is_the_kept_models_validation_output(
    task: str, params: dict, provided: bool
) -> None:
    model, result, _ = fit(task, params)
    assert (result.valid_raw is not None) == provided
    if provided:
        expected = model.predict_raw(make_frame(150, 1))
        assert result.valid_raw.shape == expected.shape
        np.testing.assert_allclose(result.valid_raw, expected, rtol=0, atol=1e-9)


def test_cluster_early_stopping_keeps_the_best_round_at_the_last_round() -> None:
    """The Dask trainer's callback (judged on the same rows by every worker) stops like
    LightGBM's own early stopping: once the patience is spent after the best round, and at
    the last round when a better one came before it, so the model keeps the best trees
    even when the patience was never spent."""
    import lightgbm as lgb
    from sklearn.datasets import make_classification

    from kennel.families.cat.dask_trainer import SameDecisionStopping

    x, y = make_classification(n_samples=600, n_features=8, flip_y=0.3, random_state=0)
    x_train, y_train, x_valid, y_valid = x[:400], y[:400], x[400:], y[400:].astype(float)
    params = {"objective": "binary", "metric": "None", "learning_rate": 0.5, "verbose": -1}

    def fit(rounds: int, patience: int) -> tuple[lgb.Booster, SameDecisionStopping]:
        stop = SameDecisionStopping(x_valid, y_valid, "binary", "binary_logloss", patience)
        booster = lgb.train(
            params, lgb.Dataset(x_train, y_train), num_boost_round=rounds, callbacks=[stop]
        )
        return booster, stop

    # A high learning rate on noisy labels: the validation loss is best early, then worse.
    booster, stop = fit(rounds=60, patience=1000)
    assert 0 < stop.best_iteration < 59
    assert booster.best_iteration == stop.best_iteration + 1
    booster, stop = fit(rounds=200, patience=5)
    assert booster.best_iteration == stop.best_iteration + 1 < 200 - 5
