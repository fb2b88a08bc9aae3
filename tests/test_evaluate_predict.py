"""``kennel evaluate`` and ``kennel predict`` end to end against the shared tracked store:
every kind of model URI, a holdout file, the evaluation run's metrics/plots/tags, chunked
CSV and Parquet batch prediction equal to one pass, and one-line user errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TEST_CONFIGS, run_cli

pytestmark = pytest.mark.slow

CAT = str(TEST_CONFIGS / "tiny_cat.yaml")
METRICS = {"test_accuracy", "test_roc_auc", "test_log_loss", "test_f1"}


def _json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


# ------------------------------------------------------------------------------ evaluate
def _evaluate(store, uri: str, *extra: str) -> dict:
    result = run_cli("evaluate", "-c", CAT, "--model-uri", uri, *extra, env=store.env)
    assert result.returncode == 0, result.stderr[-3000:]
    return _json_line(result.stdout)


def _check_run(store, out: dict, uri: str, version: int | None) -> None:
    client = store.client()
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    if version is not None:
        assert run.info.run_name == f"evaluate-breast-cancer-v{version}"
    else:
        assert run.info.run_name.startswith("evaluate-")
    assert set(run.data.metrics) >= METRICS
    for key in METRICS:
        assert run.data.metrics[key] == pytest.approx(out["metrics"][key])
    tags = run.data.tags
    assert tags["kennel.kind"] == "evaluation"
    assert tags["kennel.evaluated_model_uri"] == uri
    if version is not None:
        assert tags["kennel.evaluated_model_name"] == "breast-cancer"
        assert tags["kennel.evaluated_model_version"] == str(version)
    plots = {Path(a.path).name for a in client.list_artifacts(out["run_id"], "plots")}
    assert {"confusion_matrix.png", "roc.png"} <= plots
    top = {a.path for a in client.list_artifacts(out["run_id"])}
    assert {"result.json", "report.html"} <= top


@pytest.mark.parametrize("kind", ["runs", "version", "alias"])
def test_evaluate_any_uri_on_the_test_split(shared_store, trained, kind: str) -> None:
    cat = trained["cat"]
    holder = shared_store.client().get_model_version_by_alias("breast-cancer", "dev")
    uri, version, expected = {
        "runs": (cat["model_uri"], cat["registered_version"], cat),
        "version": ("models:/breast-cancer/1", 1, trained["cat"]),
        "alias": (
            "models:/breast-cancer@dev",
            int(holder.version),
            next(t for t in trained.values() if t["run_id"] == holder.run_id),
        ),
    }[kind]
    out = _evaluate(shared_store, uri)
    assert out["model_uri"] == uri
    assert out["version"] == version
    assert set(out["metrics"]) == METRICS
    # the same split the training run tested on: the same test metrics
    for key in METRICS:
        assert out["metrics"][key] == pytest.approx(expected["metrics"][key], abs=1e-9)
    _check_run(shared_store, out, uri, version)


def test_evaluate_on_a_data_file(shared_store, trained, tmp_path) -> None:
    from kennel.config import load_config
    from kennel.registry import Holdout

    holdout = Holdout.from_config(load_config(CAT).config)
    path = tmp_path / "holdout.csv"
    holdout.rows.to_csv(path, index=False)
    uri = "models:/breast-cancer/2"
    out = _evaluate(shared_store, uri, "--data", str(path))
    assert out["holdout"] == f"all rows of {path}"
    assert out["rows"] == len(holdout.rows)
    for key in METRICS:  # the dog's own test rows, from a file: its test metrics again
        assert out["metrics"][key] == pytest.approx(trained["dog"]["metrics"][key], abs=1e-6)
    _check_run(shared_store, out, uri, 2)


def test_evaluate_empty_data_means_the_test_split(shared_store, trained, tmp_path) -> None:
    """MLproject passes ``--data ""`` when no file is given."""
    out_json = tmp_path / "out.json"
    out = _evaluate(
        shared_store, "models:/breast-cancer/1", "--data", "", "--output-json", str(out_json)
    )
    assert out["holdout"].startswith("test split of")
    assert json.loads(out_json.read_text())["run_id"] == out["run_id"]


@pytest.mark.parametrize(
    ("uri", "fragments"),
    [
        ("models:/no-such-model/1", ["registered model 'no-such-model' does not exist"]),
        ("models:/breast-cancer/999", ["model 'breast-cancer' has no version 999"]),
        ("models:/breast-cancer@nowhere", ["no version of 'breast-cancer' holds alias 'nowhere'"]),
        ("runs:/0123456789abcdef/model", ["no MLflow run '0123456789abcdef'"]),
    ],
)
def test_evaluate_bad_uri_is_a_user_error(shared_store, trained, uri, fragments) -> None:
    result = run_cli("evaluate", "-c", CAT, "--model-uri", uri, env=shared_store.env)
    _one_line_error(result, *fragments)


def test_evaluate_missing_data_file_is_a_user_error(shared_store, trained, tmp_path) -> None:
    missing = tmp_path / "nope.csv"
    result = run_cli(
        "evaluate",
        "-c",
        CAT,
        "--model-uri",
        "models:/breast-cancer/1",
        "--data",
        str(missing),
        env=shared_store.env,
    )
    _one_line_error(result, "nope.csv")


def test_evaluation_plots_for_regression(tmp_path) -> None:
    """The residuals plot (no regression model in the shared store: the plot step alone)."""
    from kennel.score.evaluate import _plots

    y = pd.Series(np.linspace(0, 10, 40))
    output = pd.DataFrame({"prediction": y.to_numpy() + np.sin(np.arange(40))})
    _plots("regression", y, output, tmp_path / "plots")
    assert (tmp_path / "plots" / "residuals.png").stat().st_size > 0


# ------------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def raw_rows() -> pd.DataFrame:
    """All 569 breast-cancer rows, features only, plus an id column to carry through."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns=["target"])
    frame.insert(0, "row_id", [f"r{i}" for i in range(len(frame))])
    return frame


@pytest.fixture(scope="module")
def one_pass(trained, shared_store, raw_rows) -> pd.DataFrame:
    """The cat model's prediction of every row in one call, in this process."""
    import mlflow.pyfunc
    from mlflow.artifacts import download_artifacts

    client = shared_store.client()
    source = client.get_model_version("breast-cancer", "1").source
    logged = client.get_logged_model(source.removeprefix("models:/"))
    path = download_artifacts(artifact_uri=logged.artifact_location)
    return mlflow.pyfunc.load_model(path).predict(raw_rows)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize(("in_ext", "out_ext"), [(".csv", ".csv"), (".parquet", ".parquet")])
def test_predict_in_chunks_equals_one_pass(
    shared_store, trained, raw_rows, one_pass, tmp_path, in_ext: str, out_ext: str
) -> None:
    source = _write(raw_rows, tmp_path / f"rows{in_ext}")
    target = tmp_path / f"predicted{out_ext}"
    result = run_cli(
        "predict",
        "--model-uri",
        "models:/breast-cancer/1",
        "--input",
        str(source),
        "--output",
        str(target),
        "--chunk-size",
        "50",
        env=shared_store.env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _json_line(result.stdout)
    assert summary["rows"] == len(raw_rows) == 569
    assert summary["chunks"] == 12  # ceil(569 / 50)
    got = pd.read_csv(target) if out_ext == ".csv" else pd.read_parquet(target)
    assert list(got.columns) == [*raw_rows.columns, *one_pass.columns]
    assert got["row_id"].tolist() == raw_rows["row_id"].tolist()
    assert got["prediction"].astype(str).tolist() == one_pass["prediction"].astype(str).tolist()
    proba = [c for c in one_pass.columns if c.startswith("proba_")]
    np.testing.assert_allclose(got[proba].to_numpy(), one_pass[proba].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(
        got["mean radius"].to_numpy(), raw_rows["mean radius"].to_numpy(), rtol=1e-12
    )
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_predict_csv_to_parquet(shared_store, trained, raw_rows, one_pass, tmp_path) -> None:
    source = _write(raw_rows.head(120), tmp_path / "rows.csv")
    target = tmp_path / "predicted.parquet"
    result = run_cli(
        "predict",
        "--model-uri",
        "models:/breast-cancer@dev",
        "--input",
        str(source),
        "--output",
        str(target),
        "--chunk-size",
        "7",
        "--no-progress",
        "--output-json",
        str(tmp_path / "result.json"),
        env=shared_store.env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = pd.read_parquet(target)
    assert len(got) == 120 and "prediction" in got.columns
    # The result as one JSON line on stdout and in --output-json, as every command's.
    written = json.loads((tmp_path / "result.json").read_text())
    assert written == _json_line(result.stdout) and written["rows"] == 120


def _predict(store, tmp_path: Path, source: Path, target: str, *extra: str):
    return run_cli(
        "predict",
        "--model-uri",
        "models:/breast-cancer/1",
        "--input",
        str(source),
        "--output",
        str(tmp_path / target),
        *extra,
        env=store.env,
        timeout=300,
    )


def _main_error(capsys, argv: list[str], *fragments: str) -> None:
    """Errors found before any model is loaded: in this process, no interpreter start."""
    from kennel.cli.manager import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_predict_argument_errors(raw_rows, tmp_path, capsys) -> None:
    good = _write(raw_rows.head(10), tmp_path / "rows.csv")
    (tmp_path / "rows.json").write_text("a,b\n1,2\n")
    base = ["predict", "--model-uri", "models:/breast-cancer/1"]
    out = ["--output", str(tmp_path / "o.csv")]
    _main_error(
        capsys, [*base, "--input", str(tmp_path / "absent.csv"), *out], "absent.csv", "not exist"
    )
    _main_error(capsys, [*base, "--input", str(tmp_path / "rows.json"), *out], "extension '.json'")
    _main_error(
        capsys,
        [*base, "--input", str(good), "--output", str(tmp_path / "o.json")],
        "unknown extension '.json'",
    )
    _main_error(capsys, [*base, "--input", str(good), *out, "--chunk-size", "0"], "--chunk-size 0")
    _main_error(
        capsys,
        [*base, "--input", str(good), "--output", str(tmp_path / "no" / "o.csv")],
        "output folder",
    )


def test_predict_data_errors(shared_store, trained, raw_rows, tmp_path) -> None:
    missing = _write(raw_rows.head(60).drop(columns=["mean radius"]), tmp_path / "missing.csv")
    _one_line_error(_predict(shared_store, tmp_path, missing, "o.csv"), "'mean radius'")
    wrong = raw_rows.head(60).astype(object)
    wrong.loc[55, "mean texture"] = "oops"
    bad = _write(wrong, tmp_path / "wrong.csv")
    _one_line_error(
        _predict(shared_store, tmp_path, bad, "o.csv", "--chunk-size", "50"),
        "rows 51-60",
        "mean texture",
    )
    assert not (tmp_path / "o.csv").exists(), "a failed run leaves no output file"
    assert not list(tmp_path.glob(".*.tmp"))
    result = run_cli(
        "predict",
        "--model-uri",
        "models:/breast-cancer@nowhere",
        "--input",
        str(missing),
        "--output",
        str(tmp_path / "o.csv"),
        env=shared_store.env,
    )
    _one_line_error(result, "no version of 'breast-cancer' holds alias 'nowhere'")


def test_plots_sample_large_sets_and_import_matplotlib_lazily(tmp_path) -> None:
    import subprocess
    import sys

    from kennel.report import figures

    code = "import sys, kennel.report.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

    n = figures.MAX_PLOT_ROWS * 3
    y = np.arange(n, dtype="float64")
    (small,), sampled = figures._sample(y[:100])
    assert not sampled and np.array_equal(small, y[:100])
    (a, b), sampled = figures._sample(y, -y)
    assert sampled and len(a) == figures.MAX_PLOT_ROWS and np.array_equal(a, -b)
    assert np.array_equal(a, figures._sample(y)[0][0])  # seeded: the same rows every time
    proba = np.column_stack([1 - y / n, y / n])
    assert figures.roc((y > n / 2).astype(int), proba, ["0", "1"], tmp_path / "roc.png").exists()
    assert figures.residuals(y, y + 1, tmp_path / "residuals.png").exists()
