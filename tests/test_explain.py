"""Contributions per prediction, in the user's own columns.

* the sum property on real tables with dates, categories and missing values (binary titanic,
  multiclass penguins, regression flights): ``contrib_base`` + the ``contrib_<column>``
  values = the model's raw output (cat within 1e-6, dog within 1e-5), one column per raw input
  column and nothing else;
* cat's per-feature values equal ``shap.TreeExplainer``'s before they are summed into raw
  columns;
* the same contributions through ``kennel predict --explain``, the pyfunc with
  ``params={"explain": True}`` and a real scoring server; without the flag nothing changes;
* a training run logs ``contributions.json`` and its plots; ``kennel evaluate --explain``
  writes ``explanations.parquet``; a model saved before explanations says so in one line.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.config import DataConfig
from kennel.data import DataProcessor
from kennel.families import TrainContext, get_family
from tests.conftest import PYTHON, ROOT, Store, cli_env, run_cli

REAL = ROOT / "tests" / "data" / "real"
TABLES = {
    "binary": (REAL / "titanic.csv", "survived"),
    "multiclass": (REAL / "penguins.csv", "species"),
    "regression": (REAL / "flights.csv", "arr_delay"),
}
TOLERANCE = {"cat": 1e-6, "dog": 1e-5}


def fitted(task: str, family: str):
    source, target = TABLES[task]
    processor = DataProcessor(DataConfig(source=str(source), target=target))
    splits = processor.split(processor.load())
    processor.fit(splits.train)
    spec = get_family(family)
    params = spec.Params(**({"n_estimators": 40} if family == "cat" else {"epochs": 4}))
    model = spec.Model(params, processor.spec())
    trainer = spec.Trainer(params, TrainContext(num_threads=1))
    trainer.fit(
        model,
        processor.features_and_target(splits.train),
        processor.features_and_target(splits.valid),
    )
    return spec.ModelAPI(model, processor), splits.test


def raw_output(api, rows: pd.DataFrame) -> np.ndarray:
    """The model's raw output, computed apart from the explanation."""
    features = api.processor.transform(rows)
    model, task = api.model, api.processor.task
    if api.model.__class__.__name__ == "CatModel":
        raw = model.booster.predict(model._matrix(features), raw_score=True)
        return raw[np.arange(len(raw)), raw.argmax(axis=1)] if task == "multiclass" else raw
    proba = model.predict_raw(features)
    if task == "regression":
        return proba
    with np.errstate(divide="ignore"):  # no clip: it would cap an extreme row's log-odds
        logp = np.log(proba)
    return logp[:, 1] - logp[:, 0] if task == "binary" else logp.max(axis=1)


@pytest.mark.parametrize("family", ["cat", "dog"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_contributions_sum_to_the_raw_output(task: str, family: str) -> None:
    api, test = fitted(task, family)
    explained = api.explain(test)
    assert list(explained.columns) == [
        *(f"contrib_{c}" for c in api.processor.raw_columns),
        "contrib_base",
    ]
    assert explained.index.equals(test.index)
    total = explained.sum(axis=1).to_numpy()
    assert np.abs(total - raw_output(api, test)).max() < TOLERANCE[family]
    assert explained.drop(columns="contrib_base").abs().to_numpy().sum() > 0
    # Dates give several features; their contributions come back under the date column.
    if task == "regression":
        assert "contrib_time_hour" in explained.columns
        assert not any(c.startswith("contrib_time_hour_") for c in explained.columns)


def test_cat_contributions_equal_shaps_tree_explainer() -> None:
    shap = pytest.importorskip("shap")
    api, test = fitted("regression", "cat")
    matrix = api.model._matrix(api.processor.transform(test))
    ours = api.model.booster.predict(matrix, pred_contrib=True)[:, :-1]
    theirs = shap.TreeExplainer(api.model.booster).shap_values(matrix)
    assert np.abs(ours - theirs).max() < 1e-6
    # ... and summed into raw columns they are what explain() returns
    names = api.model.feature_names
    columns, groups = api.processor.feature_groups()
    summed = np.column_stack([theirs[:, [names.index(f) for f in g]].sum(axis=1) for g in groups])
    explained = api.explain(test)[[f"contrib_{c}" for c in columns]].to_numpy()
    assert np.abs(summed - explained).max() < 1e-6


def test_without_the_flag_nothing_changes() -> None:
    api, test = fitted("binary", "cat")
    plain = api.predict(test)
    both = api.predict(test, explain=True)
    pd.testing.assert_frame_equal(plain, both[plain.columns])
    assert not any(c.startswith("contrib_") for c in plain.columns)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("explain"))
    store.train(
        ROOT / "configs" / "cat.yaml",
        f"data.source={REAL / 'flights.csv'}",
        "data.target=arr_delay",
        "model.params.n_estimators=60",
        "registry.auto_promote=dev",
    )
    return store


def _rows() -> pd.DataFrame:
    return pd.read_csv(REAL / "flights.csv").head(50).drop(columns=["arr_delay"])


@pytest.mark.slow
def test_every_prediction_path_gives_the_same_contributions(store: Store, tmp_path) -> None:
    import mlflow.pyfunc

    from kennel.serve.server import free_port, wait_for_ping

    rows = _rows()
    source = tmp_path / "rows.csv"
    rows.to_csv(source, index=False)
    out = tmp_path / "scored.csv"
    result = run_cli(
        "predict", "--model-uri", "models:/flights@dev", "--input", str(source), "--output",
        str(out), "--explain", env=store.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    batch = pd.read_csv(out).filter(like="contrib_")

    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model("models:/flights@dev")
    local = model.predict(rows, params={"explain": True}).filter(like="contrib_")
    assert model.predict(rows).filter(like="contrib_").empty

    port = free_port()
    command = [PYTHON, str(ROOT / "run.py"), "serve", "--env", "dev", "--model-name", "flights"]
    server = subprocess.Popen(
        [*command, "-p", str(port)], env=cli_env(store.env), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_ping(f"http://127.0.0.1:{port}", timeout=120, process=server)
        clean = rows.astype(object).where(rows.notna(), None)
        body = {"dataframe_split": clean.to_dict(orient="split"), "params": {"explain": True}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            served = pd.DataFrame(json.loads(answer.read())["predictions"]).filter(like="contrib_")
    finally:
        server.terminate()
        server.communicate(timeout=60)
    raw_columns = [c for c in rows.columns if c != "year"]  # year is constant: dropped
    assert list(local.columns) == [*(f"contrib_{c}" for c in raw_columns), "contrib_base"]
    for other in (batch, served):
        np.testing.assert_allclose(other.to_numpy(), local.to_numpy(), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_training_and_evaluation_leave_explanations(store: Store, tmp_path) -> None:
    client = store.client()
    version = client.get_model_version_by_alias("flights", "dev")
    artifacts = {a.path for a in client.list_artifacts(version.run_id)}
    assert "contributions.json" in artifacts
    plots = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert {"plots/contributions.png", "plots/dependence_00.png"} <= plots
    local = Path(client.download_artifacts(version.run_id, "contributions.json", str(tmp_path)))
    summary = json.loads(local.read_text())
    assert summary["output"] == "predicted value" and summary["rows"] > 100
    assert max(summary["mean_abs"], key=summary["mean_abs"].get) == "dep_delay"
    report = Path(client.download_artifacts(version.run_id, "report.html", str(tmp_path)))
    assert report.read_text().count("alt='dependence_") >= 1

    plain = tmp_path / "plain.json"
    result = run_cli(
        "evaluate", "--model-uri", "models:/flights@dev", "--output-json", str(plain),
        "-c", "configs/cat.yaml", f"data.source={REAL / 'flights.csv'}", "data.target=arr_delay",
        env=store.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = Path(json.loads(plain.read_text())["output_dir"])
    assert not (folder / "explanations.parquet").exists()  # only when asked
    out = tmp_path / "evaluate.json"
    result = run_cli(
        "evaluate", "-c", "configs/cat.yaml", "--model-uri", "models:/flights@dev", "--data",
        str(REAL / "flights.csv"), "data.target=arr_delay", "--explain", "--output-json",
        str(out), env=store.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads(out.read_text())
    explained = pd.read_parquet(Path(evaluation["output_dir"]) / "explanations.parquet")
    assert len(explained) == evaluation["rows"] and "contrib_dep_delay" in explained.columns
    assert "arr_delay" in explained.columns  # the holdout rows, with their contributions


def test_a_model_saved_before_explanations_says_so(tmp_path) -> None:
    with tarfile.open(ROOT / "tests" / "data" / "legacy" / "cat-titanic-kennel-0.1.0.tar.gz") as a:
        a.extractall(tmp_path, filter="data")
    rows = tmp_path / "rows.csv"
    pd.read_csv(REAL / "titanic.csv").head(5).to_csv(rows, index=False)
    result = run_cli(
        "predict", "--model-uri", str(tmp_path / "model"), "--input", str(rows), "--output",
        str(tmp_path / "out.csv"), "--explain",
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot explain its predictions" in result.stderr.strip().splitlines()[-1]
