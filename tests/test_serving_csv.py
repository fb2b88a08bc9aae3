"""CSV requests to real servers of a model trained on a real table with integer columns (with
gaps, declared ``Any`` in the signature) and text columns: ``penguins.csv`` (``NA`` cells).

``kennel serve`` answers a CSV body exactly as it answers the same rows as JSON
``dataframe_split`` (its guard hands MLflow's app the rows as JSON), missing cells included;
a malformed CSV is a one-line 400; the capture records the rows. ``mlflow models serve`` of
the same model refuses every CSV with MLflow's own 400 (its CSV reader takes dtypes from the
signature and has none for ``Any``), as docs/serving.md says; JSON and Parquet work there.

Both servers start once for the module on free ports of 127.0.0.1 and are always stopped.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.serve.server import free_port, serve_command
from tests.conftest import PYTHON, ROOT, Store
from tests.test_serving import Server, _clean_env, _post, _start, _stop, _wait_all

pytestmark = pytest.mark.slow

TABLE = ROOT / "tests" / "data" / "real" / "penguins.csv"
TARGET = "species"
MODEL = "penguins"
#: Columns a request sends: whole numbers with gaps (``Any``), decimals, text with gaps.
COLUMNS = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
COLUMNS += ["sex", "year"]
PARQUET = "application/vnd.apache.parquet"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """A cat model of penguins.csv (20 trees) as ``models:/penguins@dev``, served by
    ``kennel serve --capture`` and by ``mlflow models serve``."""
    store = Store(tmp_path_factory.mktemp("csv-serving"))
    store.train(
        ROOT / "configs" / "cat.yaml",
        f"data.source={TABLE}",
        f"data.target={TARGET}",
        "model.params.n_estimators=20",
        f"registry.model_name={MODEL}",
        "registry.auto_promote=dev",
    )
    env = _clean_env(store.uri)
    started: dict[str, Server] = {}
    try:
        port = free_port()
        command = [PYTHON, str(ROOT / "run.py"), "serve", "--env", "dev", "--model-name", MODEL]
        command += ["-p", str(port), "--capture", str(store.folder / "captures")]
        command += ["capture.max_file_seconds=0.5"]
        started["kennel"] = _start("kennel", command, env, store.folder, port)
        port = free_port()
        command = serve_command(f"models:/{MODEL}/1", port=port, host="127.0.0.1")
        started["mlflow"] = _start("mlflow", command, env, store.folder, port)
        _wait_all(started)
        yield started
    finally:
        for server in started.values():
            _stop(server)


def post(
    server: Server, body: bytes | str, content_type: str, request_id: str = ""
) -> tuple[int, dict]:
    """(status, JSON answer) of ``POST /invocations``."""
    return _post(server.url, body, content_type, request_id)


def file_csv() -> str:
    """The table's own text without the target (its first column): ``NA`` cells, whole
    numbers written as ``181``, no quoting."""
    text = TABLE.read_text()
    assert text.startswith(TARGET + ",") and '"' not in text
    return "\n".join(line.split(",", 1)[1] for line in text.splitlines()) + "\n"


def as_json(frame: pd.DataFrame) -> str:
    """``frame`` as a JSON client sends it: ``dataframe_split``, missing values as null."""
    from kennel.data.values import json_value

    data = [[json_value(v) for v in row] for row in frame.astype(object).itertuples(index=False)]
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": data}})


def test_mlflow_models_serve_refuses_any_csv_for_this_model(servers) -> None:
    """What docs/serving.md says ``mlflow models serve`` answers: MLflow's CSV reader asks the
    signature for every column's dtype and the ``Any`` columns have none. (This is also the
    proof that the model has the columns the fix is for.)"""
    status, payload = post(servers["mlflow"], file_csv(), "text/csv")
    assert status == 400
    assert payload["message"].startswith("Failed to parse input as a Pandas DataFrame.")
    assert payload["message"].endswith(
        "Error: 'Failed to get pandas types as some of the inputs types are not DataType.'"
    )


def test_csv_gets_exactly_the_answer_of_the_same_rows_as_json(servers) -> None:
    rows = pd.read_csv(TABLE).drop(columns=[TARGET])
    assert rows.isna().any(axis=1).sum() >= 10, "the table has rows with NA cells"
    status, from_csv = post(servers["kennel"], file_csv(), "text/csv")
    assert status == 200, from_csv
    status, from_json = post(servers["kennel"], as_json(rows), "application/json")
    assert status == 200, from_json
    assert from_csv == from_json
    assert len(from_csv["predictions"]) == len(rows)
    # the same model behind MLflow's own app, JSON and Parquet
    status, mlflow_json = post(servers["mlflow"], as_json(rows), "application/json")
    assert status == 200 and mlflow_json == from_json
    parquet = io.BytesIO()
    rows.to_parquet(parquet, index=False)
    status, mlflow_parquet = post(servers["mlflow"], parquet.getvalue(), PARQUET)
    assert status == 200, mlflow_parquet
    got, expected = (pd.DataFrame(p["predictions"]) for p in (mlflow_parquet, from_csv))
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    proba = [c for c in expected.columns if c.startswith("proba_")]
    np.testing.assert_allclose(got[proba].to_numpy(), expected[proba].to_numpy(), atol=1e-12)


def test_missing_cells_are_nulls(servers) -> None:
    """Empty cells in integer, decimal and text columns: the answer of JSON nulls."""
    csv = (
        ",".join(COLUMNS) + "\n"
        "Biscoe,45.2,,230,,female,2009\n"
        "Dream,,18.1,,3700,,2008\n"
        "Torgersen,39.1,18.7,181,3750,male,2007\n"
    )
    rows = [
        ["Biscoe", 45.2, None, 230, None, "female", 2009],
        ["Dream", None, 18.1, None, 3700, None, 2008],
        ["Torgersen", 39.1, 18.7, 181, 3750, "male", 2007],
    ]
    status, from_csv = post(servers["kennel"], csv, "text/csv; charset=utf-8")
    assert status == 200, from_csv
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}})
    status, from_json = post(servers["kennel"], body, "application/json")
    assert status == 200, from_json
    assert from_csv == from_json
    assert [p["prediction"] for p in from_csv["predictions"]][0] == "Gentoo"


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (
            ",".join(COLUMNS) + "\nBiscoe,45.2,14.8,230,5000,female,2009\nDream,1,2,3,4,5,6,7,8\n",
            "the request body is not valid CSV: Error tokenizing data. C error: "
            "Expected 7 fields in line 3, saw 9",
        ),
        (
            ",".join(COLUMNS) + '\n"Biscoe,45.2,14.8,230,5000,female,2009\n',
            "the request body is not valid CSV: Error tokenizing data. C error: "
            "EOF inside string starting at row 1",
        ),
    ],
    ids=["extra fields", "open quote"],
)
def test_a_malformed_csv_is_a_one_line_400(servers, csv: str, message: str) -> None:
    status, payload = post(servers["kennel"], csv, "text/csv")
    assert status == 400, payload
    assert payload["error_code"] == "BAD_REQUEST" and payload["message"] == message
    status, payload = post(servers["kennel"], file_csv(), "text/csv")
    assert status == 200 and len(payload["predictions"]) == 344


def test_text_in_a_number_column_names_it(servers) -> None:
    csv = ",".join(COLUMNS) + "\nBiscoe,abc,14.8,230,5000,female,2009\n"
    status, payload = post(servers["kennel"], csv, "text/csv")
    assert status == 400
    assert payload["message"] == "column 'bill_length_mm' holds 'abc', which is not a number"


def test_the_capture_records_the_rows_of_a_csv_request(servers) -> None:
    from kennel.serve.capture import read_captures

    folder = Path(servers["kennel"].log).parent / "captures"
    status, payload = post(servers["kennel"], file_csv(), "text/csv", request_id="csv-capture")
    assert status == 200, payload
    deadline = time.monotonic() + 30
    captured = pd.DataFrame()
    while time.monotonic() < deadline:
        frame = read_captures(folder) if folder.exists() else pd.DataFrame()
        if "request_id" in frame and (frame["request_id"] == "csv-capture").sum() >= 344:
            captured = frame[frame["request_id"] == "csv-capture"].reset_index(drop=True)
            break
        time.sleep(0.25)
    assert len(captured) == 344, "the CSV request's rows were not captured in 30 s"
    rows = pd.read_csv(TABLE).drop(columns=[TARGET])
    for column in ("flipper_length_mm", "bill_length_mm"):
        np.testing.assert_array_equal(captured[column].to_numpy(float), rows[column].to_numpy())
    assert captured["sex"].isna().sum() == rows["sex"].isna().sum()
    answered = pd.DataFrame(payload["predictions"])
    assert captured["prediction"].tolist() == answered["prediction"].tolist()
