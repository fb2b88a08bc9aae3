"""kennel on a Dask cluster: a ``LocalCluster`` of 2 worker processes on 127.0.0.1 and a
partitioned Parquet data set that looks like a real table (200k rows in 8 files: a row id,
nullable integers, floats with gaps, text categories with missing values, date strings,
numbers stored as text with a placeholder, booleans, rows without a target).

* the processor fitted with Dask aggregations has the same state and digest as the pandas
  processor on the same rows (binary and regression targets);
* ``kennel train`` with ``resource.cluster=local:2`` trains cat binary and regression with
  ``lightgbm.dask``; the logged pyfunc, the registry and ``kennel serve`` work as for an
  in-process model (the served model answers like the pyfunc loaded here);
* ``kennel predict`` on the cluster writes one Parquet file per partition, equal row for row
  to the in-process ``kennel predict`` of the same data set;
* an unreachable scheduler and dog on a cluster are one-line errors (exit 2).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PYTHON, ROOT, TEST_CONFIGS, Store, cli_env, invoke_server, run_cli
from tests.synthetic import write_dataset

pytestmark = pytest.mark.slow

ROWS, FILES = 200_000, 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cluster-data") / "customers", ROWS, FILES)


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    from kennel.cluster import connect

    with connect("local:2") as (dask_client, info):
        assert info.workers == 2
        yield dask_client


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("cluster-store"))


def mlflow_dict(store: Store, run_id: str, name: str) -> dict:
    import mlflow

    mlflow.set_tracking_uri(store.uri)
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{name}")


def _config(tmp: Path, dataset: Path, target: str, model: str) -> Path:
    path = tmp / f"{model}.yaml"
    path.write_text(
        "model:\n  family: cat\n  params:\n    n_estimators: 150\n    learning_rate: 0.1\n"
        "    early_stopping_rounds: 10\n"
        f"data:\n  source: {dataset}\n  target: {target}\n"
        f"registry:\n  model_name: {model}\n"
    )
    return path


# ------------------------------------------------------------------------ the processor
@pytest.mark.parametrize("target", ["churned", "spend"])
def test_processor_state_on_the_cluster_equals_pandas(dataset, client, target) -> None:
    from kennel.config import DataConfig
    from kennel.data import DataProcessor
    from kennel.data.dask_table import DaskTable, hash_split, split_shares

    config = DataConfig(source=str(dataset), target=target)
    on_cluster = DataProcessor(config)
    table = DaskTable(on_cluster, client)
    frame = table.load()
    train, _, _ = table.split(frame)
    rows = table.fit(train)

    in_memory = DataProcessor(config)
    full = in_memory.load()
    test_share, valid_share = split_shares(config.split)
    which = hash_split(full, config.split.seed, test_share, valid_share)
    in_memory.fit(full[which == 0])

    assert rows == int((which == 0).sum())
    assert on_cluster.state() == in_memory.state()
    roles = {r.name: r.role for r in on_cluster.roles}
    assert roles == {
        "row_id": "dropped", "age": "numeric", "income": "numeric", "city": "categorical",
        "plan": "categorical", "signup": "date", "visits_text": "numeric", "flag": "categorical",
        **({"spend": "numeric"} if target == "churned" else {"churned": "categorical"}),
    }  # fmt: skip
    assert on_cluster.rows_without_target > 0


def typed_frame(rows: int, seed: int) -> pd.DataFrame:
    """Values as people export them: money as text (US and European), labels typed by hand,
    a date and a customer id, a class of two rows."""
    rng = np.random.default_rng(seed)
    price = rng.uniform(-500, 90_000, rows).round(2)
    answer = np.where(price + rng.normal(0, 20_000, rows) > 40_000, "yes", "no").astype(object)
    typed = rng.random(rows) < 0.1
    answer[typed] = [rng.choice([v.upper(), f" {v.title()} ", f"{v} "]) for v in answer[typed]]
    colour = rng.choice(np.array(["Red", "Blue", "Green"], dtype=object), rows)
    colour[rng.random(rows) < 0.05] = " RED "
    days = rng.integers(0, 400, rows)
    return pd.DataFrame(
        {
            "price": pd.array(
                [f"(${-v:,.2f})" if v < 0 else f"${v:,.2f}" for v in price], dtype="str"
            ),
            "euro": pd.array(
                [
                    f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".") + " €"
                    for v in price
                ],
                dtype="str",
            ),  # fmt: skip
            "colour": pd.array(colour, dtype="str"),
            "day": pd.array(
                (pd.Timestamp("2023-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d"),
                dtype="str",
            ),
            "customer": pd.array([f"c{v}" for v in rng.integers(0, 300, rows)], dtype="str"),
            "answer": pd.array(answer, dtype="str"),
        }
    )


@pytest.fixture(scope="module")
def typed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("typed-data") / "orders"
    folder.mkdir()
    for i in range(4):
        part = typed_frame(5_000, seed=i)
        if i == 2:
            part.loc[[10, 20], "answer"] = "maybe"  # a class of two rows: trains only
        part.to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    return folder


def test_typed_values_on_the_cluster_equal_pandas(typed_dataset, client) -> None:
    """Numbers as text, merged spellings and a rare class: the cluster decides as pandas."""
    from kennel.config import DataConfig
    from kennel.data import DataProcessor
    from kennel.data.dask_table import DaskTable, hash_split, split_shares

    config = DataConfig(source=str(typed_dataset), target="answer")
    on_cluster = DataProcessor(config)
    table = DaskTable(on_cluster, client)
    train, _, test = table.split(table.load())
    rows = table.fit(train)

    in_memory = DataProcessor(config)
    full = in_memory.load()
    which = hash_split(full, config.split.seed, *split_shares(config.split))
    which[(full["answer"] == "maybe").to_numpy()] = 0
    in_memory.fit(full[which == 0])

    assert rows == int((which == 0).sum())
    assert on_cluster.state() == in_memory.state()
    assert on_cluster.classes == ["maybe", "no", "yes"]
    assert on_cluster.categorical["colour"] == ["Blue", "Green", "Red"]
    roles = {r.name: r for r in on_cluster.roles}
    assert roles["price"].number_format["decimal"] == "."
    assert roles["euro"].number_format["decimal"] == ","
    assert table.rare == {"maybe": 2}
    assert "maybe" not in set(test["answer"].compute())
    assert on_cluster.split_report["rare_classes"] == {"maybe": 2}


def test_time_and_group_splits_on_the_cluster(typed_dataset, client) -> None:
    from kennel.config import DataConfig
    from kennel.data import DataProcessor
    from kennel.data.dask_table import DaskTable

    config = DataConfig(source=str(typed_dataset), target="answer", split={"time_on": "day"})
    table = DaskTable(DataProcessor(config), client)
    parts = [p.compute() for p in table.split(table.load())]
    days = [pd.to_datetime(p["day"]) for p in parts]
    assert days[0].max() < days[1].min() and days[1].max() < days[2].min()
    shares = np.array([len(p) for p in parts]) / 20_000
    assert np.allclose(shares, [0.7, 0.15, 0.15], atol=0.03)
    report = table.processor.split_report
    assert report["method"] == "time" and report["approximate"] is True
    assert report["time"]["test"]["first"] == days[2].min().isoformat()

    config = DataConfig(source=str(typed_dataset), target="answer", split={"group_on": "customer"})
    table = DaskTable(DataProcessor(config), client)
    groups = [set(p["customer"].compute()) for p in table.split(table.load())]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert 200 < len(groups[0]) < 240


def test_the_split_does_not_depend_on_partitioning(dataset) -> None:
    from kennel.data.dask_table import hash_split

    frame = pd.concat([pd.read_parquet(f) for f in sorted(dataset.glob("*.parquet"))])
    whole = hash_split(frame, 42, 0.15, 0.15)
    pieces = np.concatenate([hash_split(frame.iloc[i::7], 42, 0.15, 0.15) for i in range(7)])
    order = np.concatenate([np.arange(len(frame))[i::7] for i in range(7)])
    assert np.array_equal(whole[order], pieces)
    shares = np.bincount(whole) / len(whole)
    assert abs(shares[1] - 0.15) < 0.01 and abs(shares[2] - 0.15) < 0.01
    assert not np.array_equal(whole, hash_split(frame, 43, 0.15, 0.15))


# ------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def trained(dataset, store, tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("cluster-configs")
    out = {}
    for target, model in (("churned", "cluster-churn"), ("spend", "cluster-spend")):
        config = _config(tmp, dataset, target, model)
        result = tmp / f"{model}.json"
        done = run_cli(
            "train", "-c", str(config), "resource.cluster=local:2", "--output-json",
            str(result), env=store.env, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        out[target] = {**json.loads(result.read_text()), "stderr": done.stderr}
    return out


def test_cat_trains_on_the_cluster(trained, store) -> None:
    binary, regression = trained["churned"], trained["spend"]
    assert binary["task"] == "binary" and regression["task"] == "regression"
    assert binary["metrics"]["test_roc_auc"] > 0.95
    assert regression["metrics"]["test_r2"] > 0.5
    client = store.client()
    for outcome in (binary, regression):
        run = client.get_run(outcome["run_id"])
        params, tags = run.data.params, run.data.tags
        assert params["cluster"] == "local:2"
        assert params["cluster.workers"] == "2"
        assert params["cluster.partitions"] == str(FILES)
        assert tags["kennel.cluster"] == "local:2"
        # A local cluster's dashboard stops with the command: in the log, not on the run.
        assert "kennel.cluster.dashboard" not in tags
        assert "Warning" not in outcome["stderr"], outcome["stderr"][-3000:]
        # The stop line adds up: an early stop comes the patience (10) after the best round.
        best = outcome["best_step"]
        stopped = re.search(r"after (\d+) of up to 150 iterations: \S+ was best at iteration "
                            r"(\d+)", outcome["stderr"])  # fmt: skip
        if stopped:
            assert (int(stopped[1]), int(stopped[2])) == (min(best + 10, 150), best)
        else:
            ran_all = rf"ran all 150 iterations; \S+ was best at iteration {best},"
            assert re.search(ran_all, outcome["stderr"]), outcome["stderr"][-3000:]
        assert "data.rows_without_target" in params
        curve = "val_log_loss" if outcome["task"] == "binary" else "val_rmse"
        history = client.get_metric_history(outcome["run_id"], curve)
        assert len(history) >= outcome["best_step"], "a learning curve, step by step"
        inputs = {d.dataset.digest for d in run.inputs.dataset_inputs}
        assert len(inputs) == 1 and len(next(iter(inputs))) == 16
        artifacts = {a.path for a in client.list_artifacts(outcome["run_id"])}
        assert {"columns.json", "config.yaml", "result.json", "plots", "split.json"} <= artifacts
        split = mlflow_dict(store, outcome["run_id"], "split.json")
        assert split["approximate"] is True and sum(split["rows"].values()) == int(
            params["data.rows"]
        )
        assert outcome["registered_version"] == 1


def test_the_model_trained_on_the_cluster_serves_like_the_pyfunc(
    trained, store, dataset, tmp_path
) -> None:
    """The logged pyfunc of a Dask-trained run is an ordinary kennel model: ``kennel serve``
    (MLflow's scoring app) answers like ``mlflow.pyfunc.load_model`` in this process."""
    import mlflow

    from kennel.serve.server import free_port, wait_for_ping

    rows = pd.read_parquet(sorted(dataset.glob("*.parquet"))[3]).head(200)
    rows = rows.drop(columns=["churned"])
    mlflow.set_tracking_uri(store.uri)
    try:
        local = mlflow.pyfunc.load_model("models:/cluster-churn/1").predict(rows)
    finally:
        mlflow.set_tracking_uri(None)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as handle:
        server = subprocess.Popen(
            [PYTHON, str(ROOT / "run.py"), "serve", "-c", str(TEST_CONFIGS / "tiny_cat.yaml"),
             "--model-name", "cluster-churn", "--env", "dev", "-p", str(port)],
            env=cli_env(store.env), stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_ping(f"http://127.0.0.1:{port}", timeout=120, process=server)
        served = invoke_server(f"http://127.0.0.1:{port}", rows)
    finally:
        import os

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert served["prediction"].tolist() == local["prediction"].astype(str).tolist()
    np.testing.assert_allclose(served["proba_yes"], local["proba_yes"], rtol=1e-9)


# ------------------------------------------------------------------------ batch scoring
def test_predict_on_the_cluster_equals_predict_in_process(trained, store, dataset, tmp_path):
    uri = "models:/cluster-churn/1"
    folder = tmp_path / "scored"
    on_cluster = run_cli(
        "predict", "--model-uri", uri, "--input", str(dataset), "--output", str(folder),
        "resource.cluster=local:2", env=store.env, timeout=600,
    )  # fmt: skip
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    result = json.loads(on_cluster.stdout.strip().splitlines()[-1])
    assert result["rows"] == ROWS and result["partitions"] == FILES
    assert result["cluster"]["dashboard"] is None, "a local cluster's is gone by now"
    parts = sorted(folder.glob("part.*.parquet"))
    assert len(parts) == FILES
    in_process = run_cli(
        "predict", "--model-uri", uri, "--input", str(dataset), "--output",
        str(tmp_path / "scored.parquet"), env=store.env, timeout=600,
    )  # fmt: skip
    assert in_process.returncode == 0, in_process.stderr[-3000:]
    expected = pd.read_parquet(tmp_path / "scored.parquet")
    got = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(got, expected)
    assert got["row_id"].tolist() == list(range(ROWS)), "the input's row order is kept"


# ------------------------------------------------------------------------ monitoring
def test_the_reference_profile_is_counted_on_the_workers(trained, store, monkeypatch) -> None:
    """A model trained on the cluster carries a profile of every training row (edges placed
    on a sample, counts from all the partitions): its counts add up to the training rows."""
    import mlflow

    from kennel.monitor.reference import profile_of_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    mlflow.set_tracking_uri(store.uri)

    profile, _ = profile_of_model("models:/cluster-churn/1")
    run = store.client().get_run(trained["churned"]["run_id"])
    train_rows = int(run.data.params["data.rows"]) * 0.7
    assert abs(profile.rows - train_rows) < 0.02 * train_rows
    for column in profile.columns.values():
        counted = sum(column.counts) + column.missing + column.invalid + column.other
        assert counted == profile.rows, column.name
    assert profile.outputs and profile.metrics["test_roc_auc"] > 0.95


def test_monitor_on_the_cluster_equals_monitor_in_process(trained, store, dataset, tmp_path):
    """A Parquet data set counted partition by partition on the workers gives the same
    statistics and verdicts as in this process (outputs the rows carry: kennel predict's)."""
    scored = tmp_path / "scored"
    result = run_cli(
        "predict", "--model-uri", "models:/cluster-churn/1", "--input", str(dataset),
        "--output", str(scored), "--provenance", "resource.cluster=local:2", env=store.env,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reports = {}
    for where, extra in (("cluster", ["resource.cluster=local:2"]), ("here", [])):
        out = tmp_path / f"{where}.json"
        checked = run_cli(
            "monitor", "--model-uri", "models:/cluster-churn/1", "--input", str(scored),
            "--output-json", str(out), *extra, env=store.env, timeout=600,
        )  # fmt: skip
        assert checked.returncode in (0, 3), checked.stderr[-3000:]
        reports[where] = json.loads(
            Path(json.loads(out.read_text())["output_dir"], "monitor.json").read_text()
        )
    cluster, here = reports["cluster"], reports["here"]
    assert cluster["rows"] == here["rows"] == ROWS
    assert cluster["report"]["drift_share"] == here["report"]["drift_share"]
    for a, b in zip(cluster["report"]["columns"], here["report"]["columns"], strict=True):
        assert a["name"] == b["name"] and a["verdict"] == b["verdict"]
        assert a["cur_shares"] == pytest.approx(b["cur_shares"])
    assert [o["name"] for o in cluster["report"]["outputs"]] == [
        o["name"] for o in here["report"]["outputs"]
    ]


# ------------------------------------------------------------------------ one-line errors
def test_an_unreachable_scheduler_is_one_line(dataset, store, tmp_path) -> None:
    from kennel.serve.server import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    config = _config(tmp_path, dataset, "churned", "cluster-unreachable")
    result = run_cli(
        "train", "-c", str(config), f"resource.cluster={address}", env=store.env, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"kennel train: error: cannot reach the Dask scheduler at {address}")
    assert "Traceback" not in result.stderr


def test_a_missing_or_single_file_data_set_fails_before_a_cluster_starts(
    dataset, store, tmp_path
) -> None:
    config = _config(tmp_path, dataset, "churned", "cluster-missing")
    missing = tmp_path / "no-such-folder"
    result = run_cli(
        "train", "-c", str(config), f"data.source={missing}/", "resource.cluster=local:2",
        env=store.env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"kennel train: error: data set not found: {missing}/"
    assert "LocalCluster" not in result.stderr
    # One file is not a data set on a cluster: said before a cluster starts too.
    one_file = tmp_path / "one.csv"
    one_file.write_text("x,churned\n1,0\n2,1\n")
    config.write_text(
        config.read_text()
        + "search:\n  space:\n    model.params.num_leaves: {type: int, low: 4, high: 32}\n"
    )
    for command in ("train", "search"):
        result = run_cli(
            command, "-c", str(config), f"data.source={one_file}", "resource.cluster=local:2",
            env=store.env, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last == (
            f"kennel {command}: error: {one_file.name}: with resource.cluster, data.source must be a "
            "Parquet data set (a folder, a glob or a URL ending in /)"
        )
        assert "LocalCluster" not in result.stderr


def test_dog_on_a_cluster_is_one_line(dataset, store, tmp_path) -> None:
    result = run_cli(
        "train", "-c", str(TEST_CONFIGS / "tiny_dog.yaml"), "resource.cluster=local:2",
        env=store.env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "the dog family trains on one machine, not on a cluster" in last
    assert "Traceback" not in result.stderr


def test_search_on_a_cluster_runs_trials_one_after_another(dataset, store, tmp_path) -> None:
    """``local:2``: the search starts one LocalCluster; its trials (one at a time, whatever
    ``--n-jobs`` says) connect to it and train with lightgbm.dask."""
    config = _config(tmp_path, dataset, "churned", "cluster-search")
    config.write_text(
        config.read_text()
        + "search:\n  space:\n    model.params.num_leaves: {type: int, low: 4, high: 32}\n"
    )
    out = tmp_path / "search.json"
    result = run_cli(
        "search", "-c", str(config), "--n-trials", "2", "--n-jobs", "2", "--output-json",
        str(out), "resource.cluster=local:2", "model.params.n_estimators=30",
        "search.register_best=false", env=store.env, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(out.read_text())
    assert outcome["n_jobs"] == 1 and outcome["counts"] == {"COMPLETE": 2}
    assert "trials run one after another (search.n_jobs 2 -> 1)" in result.stderr
    client = store.client()
    for run in client.search_runs(
        [outcome["experiment_id"]], f"tags.mlflow.parentRunId = '{outcome['parent_run_id']}'"
    ):
        assert run.data.params["cluster"].startswith("tcp://127.0.0.1:")
        assert run.data.params["cluster.workers"] == "2"
