"""Tables as people export them (issue 23), end to end on real public tables
(``tests/data/real``, conversions in its README): ``kennel train`` exactly as a user calls
it, then every prediction path (the pyfunc, JSON requests through the scoring server's
parsing, ``kennel predict``) and ``kennel evaluate``.

* ``default_typed.csv``: labels typed by hand (``No``, ``NO``, `` No``, ``no ``...) merge into
  the most frequent spelling, with a WARNING naming them; predictions return it, and a request
  with `` YES `` or ``$1,499`` is read like the training rows;
* ``wage_text.csv``: a target of money as text (``$75,043.15``) is a regression in dollars;
* ``fgl_rare.csv``: a class with one row trains, is warned about, and stops nothing;
* ``seattle_weather.csv`` split by ``date``: train before valid before test, the same split in
  the run's ``split.json``, the promotion holdout, ``kennel evaluate`` and a search trial;
* ``flights.csv`` split by ``tailnum``: no aircraft in two splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kennel.cli.manager import main
from tests.test_real_tables import (
    DATA,
    MANIFEST,
    assert_same,
    check_paths,
    score_json,
    tracking,  # noqa: F401 - the fixture
    train,
)


def run_log(result: dict) -> str:
    return (Path(result["output_dir"]) / "kennel.log").read_text()


def artifact(result: dict, name: str) -> Any:
    import mlflow

    return mlflow.artifacts.load_dict(f"runs:/{result['run_id']}/{name}")


def evaluate(tmp_path: Path, uri: str, *args: str) -> dict:
    out = tmp_path / f"evaluate-{len(list(tmp_path.glob('evaluate-*.json')))}.json"
    code = main(
        ["evaluate", "-c", "cat.yaml", "--model-uri", uri, *args, "--output-json", str(out)]
    )
    assert code == 0, f"kennel evaluate exited {code}"
    return json.loads(out.read_text())


def data_args(table: dict, *extra: str) -> list[str]:
    return [f"data.source={DATA / table['file']}", f"data.target={table['target']}", *extra]


# ------------------------------------------------------------------------ typed labels, money
def test_typed_labels_and_money(tmp_path: Path, tracking: str) -> None:  # noqa: F811
    table = MANIFEST["default_typed.csv"]
    result = train(tmp_path, "cat", table)
    log = run_log(result)
    warned = [line for line in log.splitlines() if "differ only in case" in line]
    assert any("target 'default'" in line and "'NO'" in line and "' Yes '" in line
               and "-> 'Yes'" in line for line in warned), warned  # fmt: skip
    assert any("column 'student'" in line for line in warned)
    assert "column 'balance' holds numbers written as text" in log
    assert "column 'income' holds numbers written as text, read as numbers: decimal mark ','" in log

    model, expected = check_paths(tmp_path, result, table)
    assert set(expected["prediction"]) <= {"No", "Yes"}
    assert [c for c in expected.columns if c.startswith("proba_")] == ["proba_No", "proba_Yes"]
    api = model.unwrap_python_model().api
    assert api.processor.classes == table["classes"]
    report = artifact(result, "columns.json")
    roles = {c["name"]: c for c in report["columns"]}
    assert {roles[c]["role"] for c in table["number_columns"]} == {"numeric"}

    # A request typed by hand reads like the clean values, on every path.
    typed = pd.DataFrame(
        {
            "student": [" YES ", "no", "Yes"],
            "balance": ["$1,499", "$0.00", "($12.50)"],
            "income": ["1.499,00 €", "44.361,63 €", "800,5 €"],
        }  # fmt: skip
    )
    clean = pd.DataFrame(
        {
            "student": ["Yes", "No", "Yes"],
            "balance": ["1499", "0", "-12.5"],
            "income": ["1499", "44361.63", "800.5"],
        }  # fmt: skip
    )
    reference = model.predict(clean)
    assert_same(model.predict(typed), reference, "typed request, pyfunc")
    for payload in ({"dataframe_records": typed.to_dict("records")},
                    {"dataframe_split": typed.to_dict("split")}):  # fmt: skip
        payload = json.loads(json.dumps(payload))
        assert_same(score_json(model, payload), reference, f"typed request {list(payload)[0]}")
    rows = tmp_path / "typed.csv"
    typed.to_csv(rows, index=False)
    out = tmp_path / "typed-predicted.csv"
    assert main(["predict", "--model-uri", result["model_uri"], "--input", str(rows),
                 "--output", str(out), "--no-progress"]) == 0  # fmt: skip
    assert_same(pd.read_csv(out), reference, "typed request, kennel predict")

    # kennel evaluate: the configured test split scores as in training; the typed file too.
    scored = evaluate(tmp_path, result["model_uri"], *data_args(table))
    for key in ("test_accuracy", "test_log_loss", "test_roc_auc"):
        assert scored["metrics"][key] == pytest.approx(result["metrics"][key], abs=1e-9)
    whole = evaluate(tmp_path, result["model_uri"], "--data", str(DATA / table["file"]),
                     "data.target=default")  # fmt: skip
    assert whole["rows"] == table["rows"] and whole["metrics"]["test_accuracy"] > 0.9


def test_a_target_of_money_is_a_regression_in_dollars(tmp_path: Path, tracking: str) -> None:  # noqa: F811
    table = MANIFEST["wage_text.csv"]
    result = train(tmp_path, "cat", table)
    assert result["task"] == "regression"
    assert "target 'wage' holds numbers written as text" in run_log(result)
    import mlflow

    model = mlflow.pyfunc.load_model(result["model_uri"])
    raw = pd.read_csv(DATA / table["file"])
    predicted = model.predict(raw.drop(columns=["wage"]).head(50))["prediction"]
    truth = raw["wage"].head(50).str.replace(r"[$,]", "", regex=True).astype(float)
    assert predicted.between(10_000, 400_000).all()
    assert np.corrcoef(predicted, truth)[0, 1] > 0.9
    scored = evaluate(tmp_path, result["model_uri"], "--data", str(DATA / table["file"]),
                      "data.target=wage")  # fmt: skip
    assert scored["task"] == "regression" and scored["metrics"]["test_r2"] > 0.5


def test_a_one_row_class_trains_and_is_warned(tmp_path: Path, tracking: str) -> None:  # noqa: F811
    table = MANIFEST["fgl_rare.csv"]
    result = train(tmp_path, "cat", table)
    ((rare, rows),) = table["rare_classes"].items()
    warned = [line for line in run_log(result).splitlines() if "too few for a stratified" in line]
    assert len(warned) == 1 and f"'{rare}' ({rows} row)" in warned[0], warned
    split = artifact(result, "split.json")
    assert split["method"] == "stratified" and split["rare_classes"] == table["rare_classes"]
    import mlflow

    model = mlflow.pyfunc.load_model(result["model_uri"])
    assert rare in model.unwrap_python_model().api.processor.classes
    assert f"proba_{rare}" in model.predict(pd.read_csv(DATA / table["file"]).head(3)).columns
    assert np.isfinite(result["metrics"]["test_roc_auc"])


# ------------------------------------------------------------------------ time and groups
def split_rows(table: dict, **split: Any) -> Any:
    from kennel.config import DataConfig
    from kennel.data import DataProcessor

    dp = DataProcessor(
        DataConfig(source=str(DATA / table["file"]), target=table["target"], split=split)
    )
    return dp, dp.split(dp.load())


def test_time_split_every_path(tmp_path: Path, tracking: str) -> None:  # noqa: F811
    table = MANIFEST["seattle_weather.csv"]
    result = train(tmp_path, "cat", table, "data.split.time_on=date")
    report = artifact(result, "split.json")
    assert report["method"] == "time" and report["column"] == "date"
    spans = report["time"]
    assert spans["train"]["last"] <= spans["valid"]["first"] <= spans["valid"]["last"]
    assert spans["valid"]["last"] <= spans["test"]["first"]

    processor, splits = split_rows(table, time_on="date")
    train_t, valid_t, test_t = (pd.to_datetime(s["date"]) for s in splits)
    assert train_t.max() <= valid_t.min() <= valid_t.max() <= test_t.min()
    assert report["rows"] == {"train": len(train_t), "valid": len(valid_t), "test": len(test_t)}
    assert spans["test"]["first"] == test_t.min().isoformat()
    assert "date" in processor.fit(splits.train).raw_columns  # still a feature, by its parts

    check_paths(tmp_path, result, table)
    # The promotion holdout and kennel evaluate score the same test rows.
    from kennel import registry
    from kennel.config import load_config

    config = load_config("cat.yaml", data_args(table, "data.split.time_on=date")).config
    holdout = registry.Holdout.from_config(config)
    assert holdout.rows.index.equals(splits.test.index)
    import mlflow

    version = mlflow.MlflowClient().get_model_version("seattle-weather", "1")
    assert f"kennel.score.{holdout.id}" in version.tags
    scored = evaluate(tmp_path, "models:/seattle-weather/1",
                      *data_args(table, "data.split.time_on=date"))  # fmt: skip
    assert scored["rows"] == len(test_t)
    assert scored["metrics"]["test_log_loss"] == pytest.approx(result["metrics"]["test_log_loss"])


def test_group_split_keeps_each_aircraft_in_one_split(tmp_path: Path, tracking: str) -> None:  # noqa: F811
    table = MANIFEST["flights.csv"]
    result = train(tmp_path, "cat", table, "data.split.group_on=tailnum")
    report = artifact(result, "split.json")
    _, splits = split_rows(table, group_on="tailnum")
    groups = [set(part["tailnum"].fillna("<missing>")) for part in splits]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2])
    assert not (groups[1] & groups[2])
    assert report["method"] == "group" and report["groups"] == {
        name: len(g) for name, g in zip(("train", "valid", "test"), groups, strict=True)
    }
    assert report["rows"] == {
        name: len(part) for name, part in zip(("train", "valid", "test"), splits, strict=True)
    }
    scored = evaluate(
        tmp_path, result["model_uri"], *data_args(table, "data.split.group_on=tailnum")
    )
    assert scored["rows"] == len(splits.test)


@pytest.mark.slow
def test_a_search_trial_uses_the_same_time_split(tmp_path: Path) -> None:
    from tests.conftest import Store, run_cli

    store = Store(tmp_path)
    table = MANIFEST["seattle_weather.csv"]
    out = tmp_path / "search.json"
    result = run_cli(
        "search", "-c", "cat.yaml", "--n-trials", "1", "--output-json", str(out),
        *data_args(table, "data.split.time_on=date", "model.params.n_estimators=30"),
        env=store.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = store.client()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trial = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    import mlflow

    mlflow.set_tracking_uri(store.uri)
    report = mlflow.artifacts.load_dict(f"runs:/{trial.info.run_id}/split.json")
    _, splits = split_rows(table, time_on="date")
    assert report["rows"] == {
        name: len(part) for name, part in zip(("train", "valid", "test"), splits, strict=True)
    }
    assert report["time"]["test"]["first"] == pd.to_datetime(splits.test["date"]).min().isoformat()
