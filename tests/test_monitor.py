"""The production loop end to end, on a real table (``default.csv``: a string, two floats, a
rare positive class): a model trained and promoted to production, served with capture,
ordinary and shifted traffic sent, the server stopped with SIGTERM (no accepted row lost),
``kennel monitor`` on each capture folder: exit 0 for the ordinary traffic, exit 3 naming the
shifted column (and the outputs it moved) for the shifted one; labels joined by request id;
files and bad input too."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PYTHON, ROOT, Store, cli_env, run_cli

DATA = ROOT / "tests" / "data" / "real" / "default.csv"
MODEL = "default"
REQUESTS = 100
LEGACY = ROOT / "tests" / "data" / "legacy" / "cat-titanic-kennel-0.1.0.tar.gz"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("monitor"))
    store.train(
        ROOT / "configs" / "cat.yaml",
        f"data.source={DATA}",
        "data.target=default",
        "registry.auto_promote=production",
    )
    return store


def rows() -> pd.DataFrame:
    return pd.read_csv(DATA).drop(columns=["default"])


def shifted(sd: float = 0.5) -> pd.DataFrame:
    """The same rows with ``balance`` ``sd`` standard deviations higher."""
    frame = rows()
    return frame.assign(balance=frame["balance"] + sd * frame["balance"].std())


def post(url: str, frame: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """(the answer's X-Request-Id, its predictions) for one request."""
    clean = frame.astype(object).where(frame.notna(), None)
    body = json.dumps({"dataframe_split": clean.to_dict(orient="split")}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.headers["X-Request-Id"], pd.DataFrame(
            json.loads(answer.read())["predictions"]
        )


def serve_and_send(store: Store, folder: Path, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``kennel serve --capture folder``, the rows sent in REQUESTS requests, then SIGTERM
    right after the last answer; returns the rows each request id was answered for."""
    from kennel.serve.server import free_port, wait_for_ping

    port = free_port()
    command = [PYTHON, str(ROOT / "run.py"), "serve", "--env", "production", "--model-name"]
    command += [MODEL, "-p", str(port), "--capture", str(folder)]
    server = subprocess.Popen(
        command, env=cli_env(store.env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    sent: dict[str, pd.DataFrame] = {}
    try:
        wait_for_ping(f"http://127.0.0.1:{port}", timeout=120, process=server)
        for part in np.array_split(np.arange(len(frame)), REQUESTS):
            request_id, _ = post(f"http://127.0.0.1:{port}", frame.iloc[part])
            sent[request_id] = frame.iloc[part]
    finally:
        server.send_signal(signal.SIGTERM)  # kennel serve passes it on to the server
        _, err = server.communicate(timeout=60)
    assert server.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), err[-2000:]
    return sent


@pytest.fixture(scope="module")
def captured(store: Store) -> dict[str, tuple[Path, dict[str, pd.DataFrame]]]:
    out = {}
    for name, frame in (("ordinary", rows()), ("shifted", shifted())):
        folder = store.folder / f"captures-{name}"
        out[name] = (folder, serve_and_send(store, folder, frame))
    return out


def monitor(store: Store, *args: str) -> tuple[int, dict, str]:
    out = store.folder / f"monitor-{len(list(store.folder.glob('monitor-*.json')))}.json"
    result = run_cli(
        "monitor", "--model-uri", f"models:/{MODEL}@production", *args,
        "--output-json", str(out), env=store.env,
    )  # fmt: skip
    payload = json.loads(out.read_text()) if out.exists() else {}
    return result.returncode, payload, result.stderr


@pytest.mark.slow
def test_capture_keeps_every_accepted_row_through_sigterm(captured) -> None:
    from kennel.serve.capture import read_captures

    folder, sent = captured["ordinary"]
    frame = read_captures(folder)
    assert len(frame) == sum(len(part) for part in sent.values()) == len(rows())
    assert set(frame["request_id"]) == set(sent)
    assert {"prediction", "proba_No", "proba_Yes", "scored_at"} <= set(frame.columns)
    assert set(frame["model_name"]) == {MODEL} and set(frame["model_alias"]) == {"production"}
    some = next(iter(sent))
    got = frame[frame["request_id"] == some]
    expected = sent[some]
    assert np.allclose(got["balance"].to_numpy(), expected["balance"].to_numpy())
    for path in folder.glob("capture-*.parquet"):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    status = json.loads((folder / "_capture_status.json").read_text())
    assert status["rows_dropped"] == 0 and status["rows_written"] == len(frame)


@pytest.mark.slow
def test_ordinary_traffic_is_ok_and_shifted_traffic_calls_for_retraining(store, captured) -> None:
    code, ordinary, err = monitor(store, "--input", str(captured["ordinary"][0]))
    assert code == 0, err[-3000:]
    assert ordinary["verdict"] == "ok" and ordinary["drifted_columns"] == []
    assert ordinary["rows"] == len(rows())

    code, drifted, err = monitor(store, "--input", str(captured["shifted"][0]))
    assert code == 3, err[-3000:]
    assert drifted["drifted_columns"] == ["balance"]
    assert any("balance" in reason for reason in drifted["reasons"])
    # balance is what the model looks at most: its outputs moved with it (more than by
    # chance; past the threshold at a larger shift, see the file test below).
    psi = {
        c: json.loads(Path(r["output_dir"], "monitor.json").read_text())["report"]
        for c, r in (("ordinary", ordinary), ("shifted", drifted))
    }
    proba = {k: next(o for o in v["outputs"] if o["name"] == "proba_Yes") for k, v in psi.items()}
    assert proba["shifted"]["psi"] > 10 * proba["ordinary"]["psi"]
    assert proba["shifted"]["p_value"] < 1e-3 < proba["ordinary"]["p_value"]
    assert "balance" in err and "verdict: retrain (exit 3)" in err
    client = store.client()
    run = client.get_run(drifted["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == f"{MODEL}-monitoring"
    assert run.data.tags["kennel.kind"] == "monitoring"
    assert run.data.metrics["psi.balance"] > 0.2 and run.data.metrics["retrain"] == 1
    artifacts = {a.path for a in client.list_artifacts(drifted["run_id"])}
    assert {"monitor.html", "monitor.json", "logs"} <= artifacts


@pytest.mark.slow
def test_labels_joined_by_request_id(store, captured, tmp_path) -> None:
    folder, sent = captured["ordinary"]
    truth = pd.read_csv(DATA)["default"]
    labels = pd.concat(
        [
            pd.DataFrame(
                {
                    "request_id": rid,
                    "request_row": range(len(part)),
                    "default": truth.loc[part.index],
                }
            )
            for rid, part in sent.items()
        ]
    )
    good = tmp_path / "labels.csv"
    labels.to_csv(good, index=False)
    code, result, err = monitor(store, "--input", str(folder), "--labels", str(good))
    assert code == 0, err[-3000:]
    performance = result["performance"]
    assert performance["rows"] == len(rows()) and performance["metric"] == "roc_auc"
    assert performance["drop"] < 0.05 and "cached score" in performance["reference_source"]
    flipped = tmp_path / "flipped.csv"
    labels.assign(default=labels["default"].map({"Yes": "No", "No": "Yes"})).to_csv(
        flipped, index=False
    )
    code, result, err = monitor(store, "--input", str(folder), "--labels", str(flipped))
    assert code == 3, err[-3000:]
    assert result["drifted_columns"] == [] and "worse than" in " ".join(result["reasons"])


@pytest.mark.slow
def test_a_file_without_outputs_is_scored_and_compared(store, tmp_path) -> None:
    plain = tmp_path / "plain.csv"
    rows().to_csv(plain, index=False)
    code, result, err = monitor(store, "--input", str(plain))
    assert code == 0, err[-3000:]
    assert "prediction" in err  # the outputs were counted (scored here)
    moved = tmp_path / "moved.parquet"
    shifted(1.0).to_parquet(moved)
    code, result, err = monitor(store, "--input", str(moved))
    assert code == 3 and result["drifted_columns"] == ["balance"], err[-3000:]
    assert result["output_drift"] is True  # prediction drift follows the important feature
    assert "the model's outputs drifted: proba_No, proba_Yes" in result["reasons"]


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2(store, tmp_path) -> None:
    import tarfile

    code, _, err = monitor(store, "--input", str(tmp_path / "absent.csv"))
    assert code == 2 and err.strip().splitlines()[-1].startswith("kennel monitor: error: input")
    with tarfile.open(LEGACY) as archive:
        archive.extractall(tmp_path, filter="data")
    result = run_cli(
        "monitor", "--model-uri", str(tmp_path / "model"), "--input", str(DATA), env=store.env
    )
    assert result.returncode == 2
    assert "has no reference profile" in result.stderr.strip().splitlines()[-1]
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"id": [1]}).to_csv(labels, index=False)
    code, _, err = monitor(store, "--input", str(DATA), "--labels", str(labels))
    assert code == 2 and "lacks column(s) 'request_id', 'default'" in err
    code, _, err = monitor(store, "--input", str(DATA), "--on", "id")
    assert code == 2 and "--labels" in err


def test_monitor_is_an_mlproject_entry_point() -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["monitor"]
    assert {"model_uri", "input", "labels"} <= set(spec["parameters"])
    assert "run.py monitor" in spec["command"]


def test_the_verdict_follows_the_thresholds() -> None:
    from kennel.config import load_config
    from kennel.monitor.check import Performance, decide
    from kennel.monitor.drift import ColumnDrift, DriftReport, Thresholds

    def column(name: str, verdict: str, role: str = "numeric") -> ColumnDrift:
        return ColumnDrift(name, role, verdict, "", rows=1000)

    columns = [
        column("a", "drift"),
        column("b", "ok"),
        column("c", "ok"),
        column("d", "drift", "date"),
    ]
    report = DriftReport(columns, [], 1000, 1000, 5000, Thresholds())
    config = load_config(None, []).config
    verdict = decide(report, None, config)
    # 1 of 3 (the date is reported, not counted): 33% >= 25%
    assert verdict.retrain and "1 of 3 input columns drifted" in verdict.reasons[0]
    assert not decide(report, None, load_config(None, ["monitor.drift_share=0.5"]).config).retrain
    few = DriftReport(columns, [], 50, 50, 5000, Thresholds())
    too_few = decide(few, None, config)
    assert not too_few.retrain and too_few.name == "inconclusive" and too_few.exit_code == 0
    calm = DriftReport(
        [column("a", "ok")], [column("proba_x", "drift")], 1000, 1000, 5000, Thresholds()
    )
    assert decide(calm, None, config).retrain
    assert not decide(calm, None, load_config(None, ["monitor.output_drift=false"]).config).retrain
    worse = Performance("roc_auc", 500, {"roc_auc": 0.80}, {"test_roc_auc": 0.90}, 0.10, "x")
    quiet = DriftReport([column("a", "ok")], [], 1000, 1000, 5000, Thresholds())
    assert (
        decide(quiet, worse, config).retrain
        and not decide(
            quiet, worse, load_config(None, ["monitor.max_metric_drop=0.2"]).config
        ).retrain
    )
    assert os.environ.get("KENNEL_MONITOR__PSI") is None


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path]:
    """A model of ``default.csv`` plus a ``signed_up`` date column, in its own store."""
    folder = tmp_path_factory.mktemp("monitor-dated")
    table = pd.read_csv(DATA)
    table["signed_up"] = pd.date_range("2024-01-01", periods=len(table), freq="h").strftime(
        "%Y-%m-%d %H:%M"
    )
    table.to_csv(folder / "dated.csv", index=False)
    store = Store(folder)
    store.train(
        ROOT / "configs" / "cat.yaml",
        f"data.source={folder / 'dated.csv'}",
        "data.target=default",
        "registry.model_name=dated",
    )
    return store, folder


def monitor_dated(dated: tuple[Store, Path], frame: pd.DataFrame) -> tuple[int, dict, str]:
    store, folder = dated
    name = f"batch-{len(list(folder.glob('batch-*.csv')))}"
    frame.to_csv(folder / f"{name}.csv", index=False)
    result = run_cli(
        "monitor", "--model-uri", "models:/dated/1", "--input", str(folder / f"{name}.csv"),
        "--output-json", str(folder / f"{name}.json"), env=store.env,
    )  # fmt: skip
    return result.returncode, json.loads((folder / f"{name}.json").read_text()), result.stderr


def _dated_batch(sd: float) -> pd.DataFrame:
    frame = shifted(sd)
    frame["signed_up"] = pd.date_range("2026-01-01", periods=len(frame), freq="h").strftime(
        "%Y-%m-%d %H:%M"
    )
    return frame


@pytest.mark.slow
def test_one_drift_share_with_a_date_column(dated) -> None:
    """README walk (2026-12-02): the log said 4 of 5 (80%), the JSON 0.8 with the date among
    the drifted columns, the verdict 3 of 4 (75%). Now one share, the verdict's: the date is
    reported as moved, not counted; every drifted column's full reason is on the terminal."""
    code, result, err = monitor_dated(dated, _dated_batch(1.0))
    assert code == 3, err[-3000:]
    assert result["drifted_columns"] == ["balance"] and result["moved_dates"] == ["signed_up"]
    assert result["drift_share"] == round(1 / 3, 4)
    assert "drift: 1 of 3 input columns drifted (33%)" in err
    assert "1 of 3 input columns drifted (33% >= monitor.drift_share 25%)" in err
    assert result["reasons"][0].startswith("1 of 3 input columns drifted (33%")
    report = json.loads(Path(result["output_dir"], "monitor.json").read_text())["report"]
    assert round(report["drift_share"], 4) == result["drift_share"]
    assert report["compared_columns"] == 3
    columns = {c["name"]: c for c in report["columns"]}
    assert columns["signed_up"]["verdict"] == "moved"
    assert re.search(r"\n\s*signed_up\s+date\s.*\bmoved\b", err)
    for c in [*report["columns"], *report["outputs"]]:
        if c["verdict"] == "drift":
            assert f": {c['reason']}\n" in err  # uncut, not only in the table


@pytest.mark.slow
def test_fewer_rows_than_min_rows_call_no_column_drifted(dated) -> None:
    """README walk: 4 captured rows were 'inconclusive' (exit 0) and yet came back with
    drifted_columns and 'drift' in the table; monitor.min_rows says never called drifted."""
    code, result, err = monitor_dated(dated, _dated_batch(10.0).head(4).drop(columns="income"))
    assert code == 0 and result["verdict"] == "inconclusive", err[-3000:]
    assert result["drifted_columns"] == [] and result["drift_share"] == 0.0
    assert not result["output_drift"]
    table = err[err.index("4 rows of ") :]
    assert not re.search(r"\bdrift\b", table.split("verdict:")[0].split("\n", 2)[2])
    assert "column missing from the batch" in err  # what was seen is still reported
    report = json.loads(Path(result["output_dir"], "monitor.json").read_text())["report"]
    assert {c["verdict"] for c in report["columns"]} == {"n/a"}
    assert all(c["psi"] is not None for c in report["columns"] if c["name"] != "income")
