"""Real-world tables end to end: train, then predict every row through every path.

The corpus (``tests/data/real``, sources and licences in its README) holds public tables
no one here wrote: integer columns with and without gaps, missing values in numbers and
text, rows without a target, row-name identifiers (one table sorted by its target), dates,
booleans, a pandas ``category`` column, string, integer-coded, imbalanced and numeric
targets. For each table ``cat`` trains through the CLI exactly as a user would call it
(``data.source=FILE data.target=COL`` and nothing else), and the predictions must agree,
row for row, between:

* the family's ModelAPI on the raw rows (the reference);
* ``mlflow.pyfunc.load_model(uri).predict(pd.read_csv(path).drop(columns=[target]))`` and
  the same with ``pd.read_parquet``;
* ``kennel predict --input path`` (in small chunks, so chunk dtypes differ);
* MLflow's scoring-server request parsing (``dataframe_split``, ``dataframe_records``,
  ``instances``) in front of the same pyfunc, with nulls, whole-number floats in integer
  columns, integers in float columns, extra columns and identifier columns;
* for some tables, a real ``mlflow models serve`` process (marked slow).

Each model must beat the naive baseline (majority class / the mean) on its test split,
and identifier columns must not be features (so they have no importance).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kennel.cli.manager import main

DATA = Path(__file__).parent / "data" / "real"
MANIFEST = {t["file"]: t for t in json.loads((DATA / "manifest.json").read_text())}
#: Tables also served by a real ``mlflow models serve`` process, and trained with dog.
SERVED = ["flights.csv", "titanic.csv", "carseats.parquet", "bikeshare.parquet"]
DOG = ["penguins.csv", "hitters.csv", "titanic.csv", "bikeshare.parquet", "fgl.csv"]
ATOL = 1e-6


#: Workbook suffixes (read with ``pandas.read_excel``).
WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".ods")


def read(path: Path) -> pd.DataFrame:
    """The file as a pandas user reads it: a table's ``read`` entry in the manifest gives the
    reader's arguments (``sep``, ``decimal``, ``encoding``; ``sheet_name``)."""
    kwargs = MANIFEST.get(path.name, {}).get("read", {}) if path.parent == DATA else {}
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in WORKBOOKS:
        return pd.read_excel(path, engine="calamine", **kwargs)
    return pd.read_csv(path, **kwargs)


def settings(table: dict) -> list[str]:
    """``data.*`` overrides a table needs (the sheet of a workbook)."""
    return [f"data.{key}={value}" for key, value in table.get("settings", {}).items()]


def table_params() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in SERVED else name for name in MANIFEST
    ]


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("KENNEL_TRAINING__OUTPUT_ROOT", str(tmp_path / "outputs"))
    mlflow.set_tracking_uri(uri)
    return uri


def train(tmp_path: Path, family: str, table: dict, *extra: str) -> dict:
    out = tmp_path / f"{family}-result.json"
    code = main(
        [
            "train",
            "-c",
            f"{family}.yaml",
            f"data.source={DATA / table['file']}",
            f"data.target={table['target']}",
            *settings(table),
            *extra,
            "--output-json",
            str(out),
        ]
    )
    assert code == 0, f"kennel train exited {code} on {table['file']}"
    return json.loads(out.read_text())


def prediction_frame(out: pd.DataFrame) -> pd.DataFrame:
    return out[[c for c in out.columns if c == "prediction" or c.startswith("proba_")]]


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    actual = prediction_frame(actual).reset_index(drop=True)
    expected = prediction_frame(expected).reset_index(drop=True)
    assert list(actual.columns) == list(expected.columns), what
    assert len(actual) == len(expected), what
    for column in expected.columns:
        a, e = actual[column], expected[column]
        if column == "prediction" and not pd.api.types.is_float_dtype(e.dtype):
            assert [str(v) for v in a] == [str(v) for v in e], f"{what}: {column}"
        else:
            np.testing.assert_allclose(
                a.to_numpy(float), e.to_numpy(float), atol=ATOL, err_msg=f"{what}: {column}"
            )


def json_payloads(frame: pd.DataFrame) -> dict[str, dict]:
    """What JSON clients send for ``frame``: each of MLflow's request formats."""
    from kennel.data.values import json_value

    # Python's json writes floats exactly (pandas' to_json rounds to 10 digits).
    rows = [[json_value(v) for v in row] for row in frame.astype(object).itertuples(index=False)]
    columns = [str(c) for c in frame.columns]
    split = {"columns": columns, "data": rows}
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    return {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
    }


def score_json(model: Any, payload: dict) -> pd.DataFrame:
    """The scoring server's own parsing (``/invocations``) in front of the pyfunc."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    parsed = infer_and_parse_data(payload, model.metadata.get_input_schema())
    return pd.DataFrame(model.predict(parsed))


def variants(raw: pd.DataFrame, kinds: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Request frames a user will send: nulls, retyped numbers, extra columns."""
    rows = raw.head(20).reset_index(drop=True)
    nulls = rows.astype(object).copy()
    for i, column in enumerate(nulls.columns):  # a null in every column, one row at a time
        nulls.loc[i % len(nulls), column] = None
    nulls.loc[len(nulls) - 1, :] = None  # and a row of nothing but nulls
    retyped = rows.copy()
    for column, kind in kinds.items():
        if kind == "integer" and column in retyped:
            retyped[column] = retyped[column].astype("float64")  # 3 -> 3.0
        elif kind == "float" and column in retyped:
            retyped[column] = retyped[column].round().astype("Int64")  # 3.7 -> 4
    extra = rows.assign(an_extra_column="ignored", another=1.5)
    return {"nulls": nulls, "retyped": retyped, "extra": extra}


def ints_as_floats(raw: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    rows = raw.head(20).copy()
    for column, kind in kinds.items():
        if kind == "integer" and column in rows:
            rows[column] = rows[column].astype("float64")
    return rows


def naive_baseline_beaten(result: dict, table: dict) -> None:
    from kennel.config import DataConfig
    from kennel.data import DataProcessor

    metrics = result["metrics"]
    dp = DataProcessor(
        DataConfig(
            source=str(DATA / table["file"]), target=table["target"], **table.get("settings", {})
        )
    )
    splits = dp.split(dp.load())
    if result["task"] == "regression":
        # R² > 0 beats predicting the mean of the test rows themselves (an upper bound for
        # the naive model, which only knows the training mean).
        assert metrics["test_r2"] > 0.05, (table["file"], metrics)
        return
    # The naive classifier predicts the training class shares for every row: its accuracy is
    # the test share of the training majority class, its log loss the cross-entropy.
    train = splits.train[table["target"]].astype(str)
    test = splits.test[table["target"]].astype(str)
    priors = train.value_counts(normalize=True)
    naive_accuracy = float((test == priors.index[0]).mean())
    naive_log_loss = float(-np.log(test.map(priors).fillna(1e-15).to_numpy(float)).mean())
    assert metrics["test_accuracy"] > naive_accuracy or metrics["test_log_loss"] < naive_log_loss, (
        table["file"],
        metrics,
        naive_accuracy,
        naive_log_loss,
    )


def check_columns(result: dict, table: dict, model: Any) -> None:
    """Identifiers are not features (no importance), the run says what each column became."""
    import mlflow

    api = model.unwrap_python_model().api
    features = set(api.processor.raw_columns)
    for column in table["id_columns"]:
        assert column not in features, f"{table['file']}: identifier {column} is a feature"
        importance = api.model.feature_importance() or {}
        assert column not in importance
    for column in table["date_columns"]:
        assert api.processor.input_kinds[column] in {"string", "datetime"}
        assert f"{column}__year" in api.processor.numeric
    run = mlflow.get_run(result["run_id"])
    assert run.data.params["data.rows_without_target"] == str(table["rows_without_target"])
    report = mlflow.artifacts.load_dict(f"runs:/{result['run_id']}/columns.json")
    roles = {c["name"]: c["role"] for c in report["columns"]}
    assert all(roles[c] == "dropped" for c in table["id_columns"])
    assert all(roles[c] == "date" for c in table["date_columns"])


def check_paths(tmp_path: Path, result: dict, table: dict) -> tuple[Any, pd.DataFrame]:
    """Every local prediction path agrees with the ModelAPI on every row of the file."""
    import mlflow

    path = DATA / table["file"]
    target = table["target"]
    model = mlflow.pyfunc.load_model(result["model_uri"])
    api = model.unwrap_python_model().api
    raw = read(path).drop(columns=[target])
    expected = api.predict(raw)
    assert expected.notna().all().all()

    # The user's own call, on the file as pandas reads it, and the same rows as Parquet/CSV.
    assert_same(model.predict(read(path).drop(columns=[target])), expected, "pyfunc")
    if path.suffix == ".parquet":
        other = tmp_path / "same.csv"
        read(path).to_csv(other, index=False)
    else:
        other = tmp_path / "same.parquet"
        read(path).to_parquet(other, index=False)
    converted = read(other).drop(columns=[target])
    assert_same(model.predict(converted), api.predict(converted), f"pyfunc {other.suffix}")

    # kennel predict, in chunks of 97 rows (some chunks have gaps in a column, some not).
    out = tmp_path / "predicted.csv"
    args = ["predict", "--model-uri", result["model_uri"], "--input", str(path), *settings(table)]
    code = main([*args, "--output", str(out), "--chunk-size", "97", "--no-progress"])
    assert code == 0
    assert_same(pd.read_csv(out), expected, "kennel predict")

    # JSON requests through the scoring server's parsing, in every format.
    sample = raw.head(60)
    for name, payload in json_payloads(sample).items():
        assert_same(score_json(model, payload), api.predict(sample), f"json {name}")
    kinds = api.processor.input_kinds
    for name, frame in variants(raw, kinds).items():
        reference = api.predict(frame)
        assert reference.notna().all().all(), name
        for fmt, payload in json_payloads(frame).items():
            assert_same(score_json(model, payload), reference, f"{name} as {fmt}")
        if name == "extra":  # locally: pandas frames as a user builds them
            assert_same(model.predict(frame), reference, f"{name} locally")
    frame = ints_as_floats(raw, kinds)
    assert_same(model.predict(frame), api.predict(frame), "whole floats locally")
    return model, expected


def check_read(tmp_path: Path, result: dict, table: dict) -> None:
    """A file as people export them (a European CSV, a workbook): the run's ``source.json``
    says what was detected, and ``kennel evaluate --data`` scores the same file."""
    import mlflow

    read_info = mlflow.artifacts.load_dict(f"runs:/{result['run_id']}/source.json")
    assert {k: read_info.get(k) for k in table["detected"]} == table["detected"]
    out = tmp_path / "evaluated.json"
    path = str(DATA / table["file"])
    args = ["evaluate", "--model-uri", result["model_uri"], "--data", path, *settings(table)]
    assert main([*args, f"data.target={table['target']}", "--output-json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert ("test_r2" if table["task"] == "regression" else "test_accuracy") in metrics


@pytest.mark.parametrize("file", table_params())
def test_cat_trains_and_predicts_every_path(
    file: str, tmp_path: Path, tracking: str, request: pytest.FixtureRequest
) -> None:
    table = MANIFEST[file]
    result = train(tmp_path, "cat", table)
    assert result["status"] == "FINISHED" and result["registered_version"] == 1
    assert result["task"] == table["task"]
    naive_baseline_beaten(result, table)
    model, expected = check_paths(tmp_path, result, table)
    check_columns(result, table, model)
    if "detected" in table:
        check_read(tmp_path, result, table)
    if file in SERVED:
        serve_and_compare(tmp_path, result, table, expected, tracking)


@pytest.mark.slow
@pytest.mark.parametrize("file", DOG)
def test_dog_trains_and_predicts(file: str, tmp_path: Path, tracking: str) -> None:
    table = MANIFEST[file]
    result = train(
        tmp_path,
        "dog",
        table,
        "model.params.epochs=40",
        "model.params.early_stopping_patience=6",
        "tracking.log_plots=false",
    )
    assert result["task"] == table["task"]
    naive_baseline_beaten(result, table)
    model, _ = check_paths(tmp_path, result, table)
    check_columns(result, table, model)


def serve_and_compare(
    tmp_path: Path, result: dict, table: dict, expected: pd.DataFrame, uri: str
) -> None:
    """A real ``mlflow models serve`` answers every format like the ModelAPI."""
    import urllib.request

    from kennel.serve.server import free_port, serve_command, serve_env, wait_for_ping

    port = free_port()
    command = serve_command(result["model_uri"], port=port)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        command, env=serve_env(uri), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_ping(base, timeout=180, process=server)
        raw = read(DATA / table["file"]).drop(columns=[table["target"]])
        frames = {"rows": raw.head(50), **variants(raw, {})}
        for name, frame in frames.items():
            for fmt, payload in json_payloads(frame).items():
                request = urllib.request.Request(
                    f"{base}/invocations",
                    data=json.dumps(payload).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=60) as response:
                    body = json.loads(response.read())
                served = pd.DataFrame(body["predictions"])
                model_api = _api(result["model_uri"])
                assert_same(served, model_api.predict(frame), f"served {name} as {fmt}")
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


_APIS: dict[str, Any] = {}


def _api(uri: str) -> Any:
    import mlflow

    if uri not in _APIS:
        _APIS[uri] = mlflow.pyfunc.load_model(uri).unwrap_python_model().api
    return _APIS[uri]


def test_user_csv_with_index_id_date_and_gaps(tmp_path: Path, tracking: str) -> None:
    """What a pandas user writes: ``to_csv`` with the index (an ``Unnamed: 0`` column), integer
    columns with gaps, a date column and a missing target; rows sorted by the target, so a
    row number would leak it. Trains, registers and predicts with no exit 1."""
    flights = pd.read_csv(DATA / "flights.csv").sort_values("arr_delay", ignore_index=True)
    path = tmp_path / "my_flights.csv"
    flights.to_csv(path)  # index=True: the first column is the row number
    table = {
        "file": str(path),
        "target": "arr_delay",
        "id_columns": ["Unnamed: 0"],
        "date_columns": ["time_hour"],
        "rows_without_target": int(flights["arr_delay"].isna().sum()),
    }
    result = train(tmp_path, "cat", table)
    import mlflow

    model = mlflow.pyfunc.load_model(result["model_uri"])
    check_columns(result, table, model)
    assert result["metrics"]["test_r2"] < 0.999  # no leak through the row number
    raw = pd.read_csv(path).drop(columns=["arr_delay"])
    assert_same(model.predict(raw), model.unwrap_python_model().api.predict(raw), "pyfunc")
