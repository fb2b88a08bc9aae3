"""The contract every registered family honours, for every task type.

Fit on tiny data -> report ``val_<metric>`` steps -> save -> load into a fresh object ->
identical predictions; the served columns are ``prediction`` (+ ``proba_<class>`` for
classifiers). The ``slow`` tests check each family reaches a sensible quality on the
built-in data sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.config import DataConfig, SplitConfig
from kennel.families import TrainContext, available_families, get_family
from kennel.metrics import compute_metrics, metric_names

FAMILIES = available_families()
TASKS = ["binary", "multiclass", "regression"]
#: Parameters that keep each fit to a second or two; other families use their defaults.
FAST_PARAMS: dict[str, dict] = {
    "cat": {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 5, "learning_rate": 0.2},
    "dog": {"hidden_units": [8], "epochs": 3, "batch_size": 32},
}


def write_tiny_csv(path: Path, task: str, n: int = 240, seed: int = 0) -> Path:
    """A small table with missing numbers, a string category (with gaps) and a target."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    score = x1 + 0.5 * x2 + np.where(colour == "red", 1.0, 0.0) + 0.2 * rng.normal(size=n)
    if task == "binary":
        target: np.ndarray = np.where(score > 0.3, "yes", "no")
    elif task == "multiclass":
        target = np.array(["low", "mid", "high"])[np.digitize(score, [-0.3, 0.8])]
    else:
        target = score
    frame = pd.DataFrame({"x 1": x1, "x2": x2, "colour": colour, "target": target})
    frame.loc[::11, "x 1"] = np.nan
    frame.loc[::13, "colour"] = None
    frame.to_csv(path, index=False)
    return path


def prepare(config: DataConfig):
    from kennel.data import DataProcessor

    processor = DataProcessor(config)
    splits = processor.split(processor.load())
    processor.fit(splits.train)
    return processor, splits


@pytest.fixture(scope="module", params=TASKS)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    task = request.param
    csv = write_tiny_csv(tmp_path_factory.mktemp("data") / f"tiny_{task}.csv", task)
    config = DataConfig(
        source=str(csv),
        target="target",
        task=task,
        categorical=["colour"],
        split=SplitConfig(train=0.6, valid=0.2, test=0.2, seed=0),
    )
    processor, splits = prepare(config)
    assert processor.task == task
    return task, processor, splits


def train(family_name: str, processor, splits, params: dict | None = None, seed: int = 0):
    family = get_family(family_name)
    if params is None:
        params = FAST_PARAMS.get(family_name, {})
    typed = family.Params.model_validate(params)
    model = family.Model(typed, processor.spec())
    batches: list = []
    trainer = family.Trainer(typed, TrainContext(seed=seed, num_threads=1), batches.append)
    result = trainer.fit(
        model,
        processor.features_and_target(splits.train),
        processor.features_and_target(splits.valid),
    )
    return family, model, result, batches


def raw_rows(processor, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[processor.target])


@pytest.mark.parametrize("family_name", FAMILIES)
def test_fit_save_load_predict(family_name: str, tiny, tmp_path: Path) -> None:
    task, processor, splits = tiny
    family, model, result, batches = train(family_name, processor, splits)

    # Per-step validation metrics, named from kennel.metrics, reported in batches.
    allowed = {f"val_{m}" for m in metric_names(task)}
    assert 1 <= len(batches) <= 10
    steps = [step for batch in batches for step in batch]
    assert steps, "no validation metrics were reported"
    assert all(set(values) <= allowed and values for _, values in steps)
    assert [s for s, _ in steps] == sorted({s for s, _ in steps})
    assert isinstance(result.best_step, int)

    rows = raw_rows(processor, splits.test)
    api = family.ModelAPI(model, processor)
    before = api.predict(rows)
    raw_before = model.predict_raw(processor.transform(rows))

    model.save(tmp_path / "model")
    processor.save(tmp_path / "processor")
    from kennel.data import DataProcessor

    loaded = family.Model.load(tmp_path / "model")
    assert loaded is not model
    assert loaded.spec == model.spec
    assert loaded.params == model.params
    reloaded = DataProcessor.load_state(tmp_path / "processor")
    after = family.ModelAPI(loaded, reloaded).predict(rows)
    np.testing.assert_allclose(
        loaded.predict_raw(reloaded.transform(rows)), raw_before, rtol=1e-6, atol=1e-7
    )

    if task == "regression":
        assert list(after.columns) == ["prediction"]
        assert raw_before.shape == (len(rows),)
    else:
        classes = list(processor.classes)
        assert list(after.columns) == ["prediction", *[f"proba_{c}" for c in classes]]
        assert raw_before.shape == (len(rows), len(classes))
        proba = after[[f"proba_{c}" for c in classes]].to_numpy()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
        assert set(after["prediction"]) <= set(classes)
        assert (before["prediction"] == after["prediction"]).all()
    pd.testing.assert_index_equal(after.index, rows.index)
    numeric = [c for c in after.columns if c != "prediction" or task == "regression"]
    np.testing.assert_allclose(
        after[numeric].to_numpy(), before[numeric].to_numpy(), rtol=1e-6, atol=1e-7
    )

    # One row (the serving case) gives the same answer as in the batch.
    one = family.ModelAPI(loaded, reloaded).predict(rows.iloc[[3]])
    np.testing.assert_allclose(
        one[numeric].to_numpy(), after[numeric].iloc[[3]].to_numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("family_name", FAMILIES)
def test_params_reject_unknown_keys(family_name: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        get_family(family_name).Params.model_validate({"no_such_param": 1})


QUALITY = [
    ("breast_cancer", "roc_auc", 0.97),
    ("wine", "accuracy", 0.9),
    ("diabetes", "r2", 0.25),
]


@pytest.mark.slow
@pytest.mark.parametrize("family_name", [f for f in FAMILIES if f in {"cat", "dog"}])
@pytest.mark.parametrize(("dataset", "metric", "threshold"), QUALITY)
def test_quality_on_builtin_data(
    family_name: str, dataset: str, metric: str, threshold: float
) -> None:
    processor, splits = prepare(DataConfig(source=f"builtin:{dataset}"))
    _, model, _, _ = train(family_name, processor, splits, params={}, seed=42)
    x_test, y_test = processor.features_and_target(splits.test)
    scores = compute_metrics(processor.task, y_test, model.predict_raw(x_test))
    assert scores[metric] >= threshold, scores
