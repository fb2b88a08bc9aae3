"""Working as a team: a shared MLflow server on PostgreSQL, a PostgreSQL Optuna study.

Every command runs in a fresh interpreter from a temporary working directory with only
``MLFLOW_TRACKING_URI`` pointing at the server, the way a second machine would.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, TEST_CONFIGS, invoke_server, run_cli
from tests.integration.conftest import (
    HOST,
    MlflowServer,
    Postgres,
    clean_env,
    free_port,
    kill_group,
    wait_http,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCAL_STORES = ("mlflow.db", "mlruns", "mlartifacts")
#: Every experiment and registered model these tests create starts with this.
PREFIX = "team-"


def local_stores(folder: Path) -> set[str]:
    return {name for name in LOCAL_STORES if (folder / name).exists()}


def project_store_leaks(marker: str, since: float) -> list[str]:
    """What in the project folder's local store came from this test: experiments or models
    named ``team-*`` in ``mlflow.db``, run files written since ``since`` that mention
    ``marker`` (the test's own temp folder). Other people working in the same checkout may
    use that store meanwhile, so its mere existence proves nothing."""
    import sqlite3

    leaks = []
    db = ROOT / "mlflow.db"
    if db.exists():
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            ) as c:
                for table in ("experiments", "registered_models"):
                    rows = c.execute(f"SELECT name FROM {table} WHERE name LIKE '{PREFIX}%'")
                    leaks += [f"{db}: {table} {name}" for (name,) in rows]
        except sqlite3.Error as exc:
            if "no such table" not in str(exc):
                raise
    for folder in (ROOT / "mlruns", ROOT / "mlartifacts"):
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if (
                path.suffix in {".log", ".json", ".yaml"}
                and path.stat().st_mtime >= since
                and marker in path.read_text(errors="replace")
            ):
                leaks.append(str(path))
    return leaks


@pytest.fixture
def cwd(tmp_path: Path) -> Iterator[Path]:
    """A working directory of its own. Afterwards it holds no local tracking store, and
    neither does the project folder hold anything of this test's."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    before, started = local_stores(ROOT), time.time() - 1
    yield folder
    assert not local_stores(folder), f"local tracking store written in {folder}"
    new = local_stores(ROOT) - before
    leaks = project_store_leaks(str(tmp_path), started)
    assert not leaks, f"written to the local store of {ROOT} (new there: {new}): {leaks}"


@pytest.fixture
def server_uri(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test process itself talks to the server (pyfunc loads, client queries)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    yield mlflow_server.uri
    mlflow.set_tracking_uri(None)


def kennel(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300):
    return run_cli(*args, cwd=cwd, env=env, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command's closing line: ``kennel <command>: error: ...``."""
    last = (result.stderr.strip().splitlines() or [""])[-1]
    assert last.startswith("kennel ") and ": error: " in last, result.stderr[-3000:]
    return last


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def holdout_rows(config: Path):
    from kennel.config import load_config
    from kennel.data import DataProcessor

    processor = DataProcessor(load_config(str(config), []).config.data)
    test = processor.split(processor.load()).test
    return test.drop(columns=[processor.target]).head(25).reset_index(drop=True)


# --------------------------------------------------------------------------- train/serve
def start(*args: str, cwd: Path, env: dict[str, str], log: Path | None = None):
    """``run.py ARGS`` in the background (its own process group), like a second terminal."""
    out = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115
    try:
        return subprocess.Popen(
            [PYTHON, str(ROOT / "run.py"), *args], cwd=cwd, env=clean_env(**env),
            stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=log is None, start_new_session=True,
        )  # fmt: skip
    finally:
        if log:
            out.close()


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a background command; its stderr, after asserting exit 0."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_group(proc, signal.SIGKILL, wait=10)
    assert proc.returncode == 0, (proc.args[2:5], (stderr or "")[-3000:])
    return stderr or ""


def test_every_command_works_through_the_server(
    mlflow_server: MlflowServer, server_uri: str, team_env: dict[str, str], cwd: Path
) -> None:
    """train (cat and dog, at once), promote, serve, evaluate and predict with only
    MLFLOW_TRACKING_URI set: runs, versions, aliases and artifacts live on the server."""
    import mlflow.pyfunc
    import pandas as pd

    model = unique("team-bc")
    common = [f"registry.model_name={model}", f"tracking.experiment={unique('team')}"]
    cat_cfg, dog_cfg = str(TEST_CONFIGS / "tiny_cat.yaml"), str(TEST_CONFIGS / "tiny_dog.yaml")
    trains = {
        family: start("train", "-c", cfg, *common, "--output-json", str(cwd / f"{family}.json"),
                      cwd=cwd, env=team_env)
        for family, cfg in (("cat", cat_cfg), ("dog", dog_cfg))
    }  # fmt: skip
    for proc in trains.values():
        finish(proc)
    cat, dog = (json.loads((cwd / f"{f}.json").read_text()) for f in ("cat", "dog"))
    assert cat["tracking_uri"] == dog["tracking_uri"] == mlflow_server.uri

    client = mlflow_server.client()
    versions = {int(v.version) for v in client.search_model_versions(f"name='{model}'")}
    assert versions == {cat["registered_version"], dog["registered_version"]} == {1, 2}
    for outcome in (cat, dog):
        run = client.get_run(outcome["run_id"])
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        stored = mlflow_server.artifacts / run.info.artifact_uri[len("mlflow-artifacts:/") :]
        assert (stored / "result.json").is_file(), f"artifacts not on the server: {stored}"

    # Promote cat through the gate ('staging' has no holder yet): scores it from the server.
    promoted = kennel("promote", "-c", cat_cfg, *common, "--to", "staging",
                      "--version", str(cat["registered_version"]), cwd=cwd, env=team_env)  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    holder = client.get_model_version_by_alias(model, "staging")
    assert int(holder.version) == cat["registered_version"]

    # Serve models:/<name>@staging; evaluate and batch-predict the same URI meanwhile.
    uri = f"models:/{model}@staging"
    rows = holdout_rows(TEST_CONFIGS / "tiny_cat.yaml")
    rows.to_parquet(cwd / "rows.parquet")
    port = free_port()
    serve = start("serve", "-c", cat_cfg, *common, "--env", "staging", "--host", HOST,
                  "--port", str(port), cwd=cwd, env=team_env, log=cwd / "serve.log")  # fmt: skip
    try:
        evaluate = start(
            "evaluate",
            "-c",
            cat_cfg,
            *common,
            "--model-uri",
            uri,
            "--output-json",
            str(cwd / "evaluate.json"),
            cwd=cwd,
            env=team_env,
        )
        predict = start("predict", "--model-uri", uri, "--input", str(cwd / "rows.parquet"),
                        "--output", str(cwd / "predictions.parquet"), "--no-progress",
                        cwd=cwd, env=team_env)  # fmt: skip
        local = mlflow.pyfunc.load_model(uri).predict(rows).reset_index(drop=True)
        wait_http(f"http://{HOST}:{port}/ping", serve, 180, cwd / "serve.log")
        served = invoke_server(f"http://{HOST}:{port}", rows)
        finish(evaluate)
        finish(predict)
    finally:
        kill_group(serve, signal.SIGTERM, wait=10)

    assert list(served.columns) == list(local.columns)
    pd.testing.assert_frame_equal(served, local, check_dtype=False)
    batch = pd.read_parquet(cwd / "predictions.parquet").reset_index(drop=True)
    pd.testing.assert_frame_equal(batch[list(local.columns)], local, check_dtype=False)
    evaluated = json.loads((cwd / "evaluate.json").read_text())
    assert client.get_run(evaluated["run_id"]).info.status == "FINISHED"
    assert evaluated["metrics"]["test_roc_auc"] == pytest.approx(cat["metrics"]["test_roc_auc"])


# ----------------------------------------------------------------- concurrent promotions
def test_eight_concurrent_promotions_through_the_server(
    mlflow_server: MlflowServer, server_uri: str, team_env: dict[str, str], cwd: Path
) -> None:
    """8 ``kennel promote`` processes at once against the tracking server (PostgreSQL
    behind it): the lock kept in the registry serialises them, so the alias ends on one
    version, the audit holds all 8 moves as one chain in the order they took effect, and
    ``--rollback`` walks it back. No lock model is left behind."""
    import mlflow

    model = unique("team-race")
    common = [f"registry.model_name={model}", f"tracking.experiment={unique('team')}"]
    cfg = str(TEST_CONFIGS / "tiny_cat.yaml")
    trained = kennel("train", "-c", cfg, *common, "registry.auto_promote=null",
                     "--output-json", str(cwd / "train.json"), cwd=cwd, env=team_env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = json.loads((cwd / "train.json").read_text())["run_id"]
    for _ in range(7):  # versions 2..8 of the same model files
        mlflow.register_model(f"runs:/{run_id}/model", model)
    procs = [
        start("promote", "-c", cfg, *common, "--to", "staging", "--force",
              "--version", str(v), cwd=cwd, env=team_env)
        for v in range(1, 9)
    ]  # fmt: skip
    for proc in procs:
        finish(proc)

    client = mlflow_server.client()
    holder = int(client.get_registered_model(model).aliases["staging"])
    previous = {
        v: client.get_model_version(model, str(v)).tags["kennel.promotion.staging.previous"]
        for v in range(1, 9)
    }
    chain = [next(v for v, p in previous.items() if p == "none")]
    while len(chain) < 8:
        chain.append(next(v for v, p in previous.items() if p == str(chain[-1])))
    assert sorted(chain) == list(range(1, 9)) and chain[-1] == holder, previous
    history = json.loads(client.get_registered_model(model).tags["kennel.alias_history.staging"])
    assert history == chain[:-1]
    names = {m.name for m in client.search_registered_models(f"name LIKE '{model}%'")}
    assert names == {model}, "the promotion lock is released"

    for expected in reversed(chain[-3:-1]):
        result = kennel("promote", "-c", cfg, *common, "--to", "staging", "--rollback",
                        cwd=cwd, env=team_env)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert int(client.get_registered_model(model).aliases["staging"]) == expected


# --------------------------------------------------------------------------- lost server
def test_server_lost_during_training(
    mlflow_server: MlflowServer, team_env: dict[str, str], cwd: Path
) -> None:
    """Kill the server while a run is training: exit 2 with one line naming the URI (its
    password masked), and after a restart no registered version comes from that run."""
    experiment, model = unique("team-lost"), unique("team-lost-bc")
    # Credentials in the URI, as in front of a proxy with basic auth (MLflow ignores them).
    secret_uri = mlflow_server.uri.replace("http://", "http://alice:hunter2-secret@")
    env = {**team_env, "MLFLOW_TRACKING_URI": secret_uri}
    cmd = [PYTHON, str(ROOT / "run.py"), "train", "-c", str(TEST_CONFIGS / "tiny_dog.yaml"),
           f"tracking.experiment={experiment}", f"registry.model_name={model}",
           "model.params.epochs=3000", "model.params.early_stopping_patience=3000"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=clean_env(**env), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run_id = wait_for_training(mlflow_server, experiment, proc, timeout=120)
        mlflow_server.kill()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if not mlflow_server.processes() and mlflow_server.proc.poll() is not None:
            mlflow_server.start()

    assert proc.returncode == 2, stderr[-3000:]
    message = one_line_error(subprocess.CompletedProcess(cmd, 2, "", stderr))
    assert message.startswith("kennel train: error:"), message
    assert secret_uri.replace("hunter2-secret", "***") in message, message
    assert "lost during the command" in message, message
    assert "hunter2-secret" not in stderr
    assert "Traceback" not in stderr

    client = mlflow_server.client()
    assert client.search_model_versions(f"run_id='{run_id}'") == []
    assert client.search_model_versions(f"name='{model}'") == []


def wait_for_training(
    server: MlflowServer, experiment: str, proc: subprocess.Popen, timeout: float
) -> str:
    """The run id once the run is RUNNING on the server and has logged epoch metrics."""
    client = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            for run in client.search_runs([found.experiment_id]):
                if run.info.status == "RUNNING" and any(
                    key.startswith("val_") for key in run.data.metrics
                ):
                    return run.info.run_id
        time.sleep(0.5)
    pytest.fail(f"no training run of {experiment} appeared on the server in {timeout:.0f} s")


# --------------------------------------------------------------------------- unreachable
def test_unreachable_tracking_server_names_uri_without_password(cwd: Path) -> None:
    port = free_port()
    uri = f"http://alice:hunter2-secret@{HOST}:{port}"
    env = {"MLFLOW_TRACKING_URI": uri, "KENNEL_TRAINING__OUTPUT_ROOT": str(cwd / "outputs")}
    experiment = f"tracking.experiment={unique('team-unreachable')}"
    for args in (
        ("train", "-c", str(TEST_CONFIGS / "tiny_cat.yaml"), experiment),
        ("promote", "-c", str(TEST_CONFIGS / "tiny_cat.yaml"), experiment, "--version", "1",
         "--to", "staging"),
    ):  # fmt: skip
        result = kennel(*args, cwd=cwd, env=env, timeout=120)
        assert result.returncode == 2, (args, result.stderr[-3000:])
        message = one_line_error(result)
        assert f"http://alice:***@{HOST}:{port}" in message, message
        assert "hunter2-secret" not in result.stderr + result.stdout


def test_unreachable_database_names_uri_without_password(postgres: Postgres, cwd: Path) -> None:
    """The tracking store as a database URI: down, or the wrong password."""
    closed = postgres.url("mlflow", password="hunter2-secret", port=free_port())
    wrong = postgres.url("mlflow", password="hunter2-secret")
    for uri in (closed, wrong):
        env = {"MLFLOW_TRACKING_URI": uri, "KENNEL_TRAINING__OUTPUT_ROOT": str(cwd / "out")}
        result = kennel("train", "-c", str(TEST_CONFIGS / "tiny_cat.yaml"),
                        f"tracking.experiment={unique('team-db')}", cwd=cwd, env=env,
                        timeout=120)  # fmt: skip
        assert result.returncode == 2, result.stderr[-3000:]
        message = one_line_error(result)
        assert uri.replace("hunter2-secret", "***") in message, message
        assert "hunter2-secret" not in result.stderr + result.stdout


def test_unreachable_search_storage_names_url_without_password(
    postgres: Postgres, team_env: dict[str, str], cwd: Path
) -> None:
    storage = postgres.url("optuna", password="hunter2-secret", port=free_port())
    result = kennel("search", "-c", str(TEST_CONFIGS / "tiny_cat.yaml"), "--n-trials", "1",
                    "--storage", storage, "--study-name", unique("unreachable"),
                    f"tracking.experiment={unique('team-unreachable')}",
                    cwd=cwd, env=team_env, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    message = one_line_error(result)
    assert storage.replace("hunter2-secret", "***") in message, message
    assert "hunter2-secret" not in result.stderr + result.stdout


# --------------------------------------------------------------- a database as the store
def test_a_database_store_password_is_in_no_output(postgres: Postgres, tmp_path: Path) -> None:
    """The tracking store is the database itself, its URI with a password given on the
    command line (``tracking.uri=``), in a YAML config or in ``MLFLOW_TRACKING_URI``: train,
    evaluate and search work, and the password is nowhere they write: not in the terminal,
    not in ``result.json``/``search.json``, params, tags, artifacts or any file of the runs
    (the search's trial configs included)."""
    from urllib.parse import unquote, urlsplit

    import yaml
    from mlflow.tracking import MlflowClient

    password = postgres.direct_password  # holds / # ?: urllib alone would see no password
    uri = postgres.url("direct", user="direct", password=password)
    work = tmp_path / "direct"  # the store's artifacts land here too (./mlruns)
    work.mkdir()
    model, experiment = unique("team-direct"), unique("team-direct")
    common = [f"tracking.experiment={experiment}", f"registry.model_name={model}",
              f"training.output_root={work / 'outputs'}"]  # fmt: skip
    tiny = TEST_CONFIGS / "tiny_cat.yaml"
    with_uri = yaml.safe_load(tiny.read_text())
    with_uri.setdefault("tracking", {})["uri"] = uri
    config_file = tmp_path / "with-uri.yaml"  # outside `work`: the scan below reads all of it
    config_file.write_text(yaml.safe_dump(with_uri))

    def run(name: str, config: Path, *args: str, env: dict[str, str]) -> dict:
        result = subprocess.run(
            [PYTHON, str(ROOT / "run.py"), name, "-c", str(config), *common, *args,
             "--output-json", str(work / f"{name}.json")],
            cwd=work, env=clean_env(**env), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, (name, result.stderr[-3000:])
        assert password not in result.stdout + result.stderr, name
        return json.loads((work / f"{name}.json").read_text())

    trained = run("train", tiny, f"tracking.uri={uri}", env={})
    evaluated = run("evaluate", tiny, "--model-uri", f"models:/{model}/1",
                    env={"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    searched = run("search", config_file, "--n-trials", "2", "registry.enabled=false", env={})
    shown = uri.replace(password, "***")
    assert trained["tracking_uri"] == evaluated["tracking_uri"] == searched["tracking_uri"] == shown
    assert trained["registered_version"] == 1

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=100)
    assert len(runs) == 5, [r.data.tags.get("kennel.kind") for r in runs]  # train, eval, 1+2
    for run_ in runs:
        assert run_.info.status == "FINISHED"
        assert password not in json.dumps([run_.data.params, run_.data.tags])
        artifacts = Path(unquote(urlsplit(run_.info.artifact_uri).path))
        assert artifacts.is_relative_to(work), artifacts  # so the scan below reads them
    assert runs[0].data.params  # params were logged (and checked above)
    version = client.get_model_version(model, "1")
    assert password not in json.dumps([version.tags, version.source, version.description])
    written = [p for p in work.rglob("*") if p.is_file()]
    assert any(p.name == "result.json" and "mlruns" in p.parts for p in written)
    leaks = [str(p) for p in written if password.encode() in p.read_bytes()]
    assert not leaks, leaks


# --------------------------------------------------------------------------- search
def test_two_search_workers_fill_one_study(
    postgres: Postgres, mlflow_server: MlflowServer, team_env: dict[str, str], cwd: Path
) -> None:
    import optuna

    n_trials, study = 2, unique("team-study")
    experiment = unique("team-search")
    storage = postgres.url("optuna")
    cmd = [PYTHON, str(ROOT / "run.py"), "search", "-c", str(TEST_CONFIGS / "tiny_cat.yaml"),
           "--n-trials", str(n_trials), "--n-jobs", "1", "--storage", storage,
           "--study-name", study, f"tracking.experiment={experiment}",
           "registry.enabled=false"]  # fmt: skip
    workers = []
    for i in range(2):
        out = cwd / f"search-{i}.json"
        workers.append(
            (
                subprocess.Popen(
                    [*cmd, "--output-json", str(out)],
                    cwd=cwd,
                    env=clean_env(**team_env),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),  # fmt: skip
                out,
            )
        )
    for proc, _ in workers:
        try:
            _, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, stderr[-3000:]
        assert postgres.password not in stderr

    # Optuna: one study holding every trial of both workers, each once.
    loaded = optuna.load_study(study_name=study, storage=storage)
    trials = loaded.get_trials(deepcopy=False)
    assert len(trials) == 2 * n_trials
    assert sorted(t.number for t in trials) == list(range(2 * n_trials))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    # MLflow: each worker's parent run has its own trials as child runs, each once.
    client = mlflow_server.client()
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2, [r.data.tags.get("mlflow.runName") for r in parents]
    assert len(children) == 2 * n_trials
    parent_ids = {r.info.run_id for r in parents}
    for parent in parent_ids:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent]
        assert len(mine) == n_trials
    assert all(c.info.status == "FINISHED" for c in children)
