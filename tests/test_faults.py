"""Faults injected into real runs: nothing may be lost (see docs/reliability.md).

A killed training (SIGKILL during fit, model logging or registration) leaves no version
pointing at missing files and no moved alias; its run, left RUNNING, is closed by
``kennel runs cleanup``, which never touches the run of a live process. Unwritable places
stop a command with exit 2 and one line before anything is registered.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, TEST_CONFIGS, Store, cli_env, run_cli

TINY_CAT = TEST_CONFIGS / "tiny_cat.yaml"
MODEL = "faults"

#: Python run in the training process: replace one function by a SIGKILL of the process.
KILL_AT = {
    # inside the trainer, after the data is loaded and the run started
    "fit": ("kennel.families.cat.trainer", "CatTrainer", "fit"),
    # while the model's files are being written to the run's artifacts
    "log_model": (
        "mlflow.store.artifact.local_artifact_repo",
        "LocalArtifactRepository",
        "log_artifacts",
    ),
    # after the registered model exists, before its version is created
    "register": (
        "mlflow.tracking._model_registry.client",
        "ModelRegistryClient",
        "create_model_version",
    ),
}
LAUNCH = """
import importlib, os, signal, sys
sys.path.insert(0, {src!r})
module, cls, name = {target!r}
owner = getattr(importlib.import_module(module), cls)
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(owner, name, die)
from kennel.cli.manager import main
main({argv!r})
"""


def train_killed(store: Store, where: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    argv = ["train", "-c", str(TINY_CAT), f"registry.model_name={MODEL}", *overrides]
    code = LAUNCH.format(src=str(ROOT / "src"), target=KILL_AT[where], argv=argv)
    env = cli_env(store.env)
    return subprocess.run(
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


def registry_state(store: Store) -> dict:
    client = store.client()
    try:
        model = client.get_registered_model(MODEL)
    except Exception:
        return {"aliases": {}, "versions": []}
    versions = client.search_model_versions(f"name='{MODEL}'")
    return {"aliases": dict(model.aliases), "versions": sorted(int(v.version) for v in versions)}


def versions_load(store: Store) -> None:
    """Every registered version's model loads (no version points at missing files)."""
    import mlflow

    mlflow.set_tracking_uri(store.uri)
    try:
        for version in registry_state(store)["versions"]:
            mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    finally:
        mlflow.set_tracking_uri(None)


def cleanup(store: Store, *args: str) -> dict:
    out = store.folder / f"cleanup-{time.monotonic_ns()}.json"
    result = run_cli(
        "runs", "cleanup", "-c", str(TINY_CAT), "--output-json", str(out), *args, env=store.env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stderr.splitlines() if not line[:4].isdigit()]
    if table:  # the table of runs left RUNNING: its columns line up under the header
        column = table[0].index("action")
        assert all(line[column - 2 : column] == "  " for line in table[1:]), result.stderr
        assert all(line[column] != " " for line in table[1:]), result.stderr
    return json.loads(out.read_text())


@pytest.mark.slow
def test_killed_trainings_lose_nothing_and_cleanup_closes_their_runs(store: Store) -> None:
    first = store.train(TINY_CAT, f"registry.model_name={MODEL}", "registry.auto_promote=dev")
    assert first["registered_version"] == 1
    before = registry_state(store)
    assert before == {"aliases": {"dev": 1}, "versions": [1]}

    killed = {}
    for where in KILL_AT:
        result = train_killed(store, where, "registry.auto_promote=dev")
        assert result.returncode == -signal.SIGKILL, (where, result.stderr[-2000:])
        # No version without its model, no alias moved.
        assert registry_state(store) == before, where
        killed[where] = True
    versions_load(store)

    client = store.client()
    experiment = client.get_experiment_by_name("kennel-tests").experiment_id
    running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert len(running) == len(KILL_AT)
    assert all(r.data.tags["kennel.process"].count(":") == 2 for r in running)

    assert cleanup(store, "--dry-run")["counts"] == {"would fail": len(KILL_AT)}
    assert len(client.search_runs([experiment], "attributes.status = 'RUNNING'")) == 3
    done = cleanup(store)
    assert done["counts"] == {"failed": len(KILL_AT)}
    for run_id in (r.info.run_id for r in running):
        run = client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert "marked FAILED by kennel runs cleanup" in run.data.tags["kennel.error"]
    assert cleanup(store)["counts"] == {}  # nothing left to close

    # The next training works and registers the next version.
    after = store.train(TINY_CAT, f"registry.model_name={MODEL}")
    assert after["registered_version"] == 2
    versions_load(store)


@pytest.mark.slow
def test_cleanup_never_touches_the_run_of_a_live_process(store: Store) -> None:
    env = cli_env(store.env)
    out = store.folder / "slow"
    proc = subprocess.Popen(
        [PYTHON, str(ROOT / "run.py"), "train", "-c", str(TINY_CAT), "--output-dir", str(out)]
        + ["model.params.n_estimators=200000", "model.params.early_stopping_rounds=0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        log = out / "kennel.log"
        while not (log.exists() and "validating on" in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert cleanup(store)["counts"] == {"alive": 1}
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert cleanup(store)["counts"] == {"failed": 1}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_process_tags_tell_live_dead_and_foreign_processes() -> None:
    from kennel.tracking.processes import process_alive, process_tag

    mine = process_tag()
    assert process_alive(mine) is True
    host, pid, start = mine.rsplit(":", 2)
    assert process_alive(f"{host}:{pid}:{int(start) + 1}") is False  # pid reused later
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert process_alive(f"{host}:{dead.pid}:1") is False
    assert process_alive(f"another-host:{pid}:{start}") is None
    assert process_alive("garbage") is None


@pytest.mark.slow
@pytest.mark.parametrize("place", ["output", "tracking"])
def test_unwritable_places_stop_before_anything_is_registered(
    store: Store, tmp_path: Path, place: str
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    locked = folder
    if os.geteuid() == 0:  # root writes anywhere it has permission bits for: use /proc
        locked = Path("/proc") / f"kennel-unwritable-{os.getpid()}"
    try:
        env = dict(store.env)
        args = ["train", "-c", str(TINY_CAT), f"registry.model_name={MODEL}"]
        if place == "output":
            args += ["--output-dir", str(locked / "run")]
        else:
            env["MLFLOW_TRACKING_URI"] = f"sqlite:///{locked / 'mlflow.db'}"
        result = run_cli(*args, env=env)
    finally:
        folder.chmod(stat.S_IRWXU)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("kennel train: error:") and str(locked) in lines[-1]
    assert "Traceback" not in result.stderr
    assert registry_state(store)["versions"] == []


@pytest.mark.slow
def test_eight_concurrent_promotions_keep_every_move_in_order(store: Store) -> None:
    import mlflow

    first = store.train(TINY_CAT, f"registry.model_name={MODEL}")
    mlflow.set_tracking_uri(store.uri)
    try:
        for _ in range(7):  # versions 2..8 of the same model files
            mlflow.register_model(f"runs:/{first['run_id']}/model", MODEL)
    finally:
        mlflow.set_tracking_uri(None)
    env = cli_env(store.env)
    base = [PYTHON, str(ROOT / "run.py"), "promote", "-c", str(TINY_CAT)]
    base += ["--model-name", MODEL, "--to", "staging", "--force"]
    procs = [
        subprocess.Popen(
            [*base, "--version", str(v)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for v in range(1, 9)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]

    client = store.client()
    holder = int(client.get_registered_model(MODEL).aliases["staging"])
    previous = {}
    for version in range(1, 9):
        tags = client.get_model_version(MODEL, str(version)).tags
        previous[version] = tags["kennel.promotion.staging.previous"]
    # The moves form one chain: none -> a -> b -> ... -> the holder, each version once.
    chain = [next(v for v, p in previous.items() if p == "none")]
    while len(chain) < 8:
        chain.append(next(v for v, p in previous.items() if p == str(chain[-1])))
    assert sorted(chain) == list(range(1, 9)) and chain[-1] == holder
    history = json.loads(client.get_registered_model(MODEL).tags["kennel.alias_history.staging"])
    assert history == chain[:-1]

    # --rollback walks the chain back, one move at a time.
    for expected in reversed(chain[:-1]):
        result = run_cli(
            "promote", "-c", str(TINY_CAT), "--model-name", MODEL, "--to", "staging",
            "--rollback", env=store.env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert int(client.get_registered_model(MODEL).aliases["staging"]) == expected


DAMAGES = {
    "processor state missing": ("artifacts/kennel/processor.json", None),
    "model file missing": ("artifacts/kennel/model/model.txt", None),
    "model file corrupted": ("artifacts/kennel/model/model.txt", b"tree\nnot a model\n"),
    "MLmodel missing": ("MLmodel", None),
}


@pytest.mark.slow
def test_a_damaged_model_is_one_line_in_every_command(store: Store, tmp_path: Path) -> None:
    import shutil
    from urllib.parse import urlparse

    trained = store.train(TINY_CAT, f"registry.model_name={MODEL}", "registry.auto_promote=dev")
    client = store.client()
    source = client.get_model_version(MODEL, str(trained["registered_version"])).source
    location = client.get_logged_model(source.split("/")[-1]).artifact_location
    folder = Path(urlparse(location).path)
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    rows = tmp_path / "rows.csv"
    from sklearn.datasets import load_breast_cancer

    load_breast_cancer(as_frame=True).frame.drop(columns=["target"]).head(5).to_csv(rows)
    uri = f"models:/{MODEL}/1"
    commands = {
        "predict": ["predict", "--model-uri", uri, "--input", str(rows), "--output", str(tmp_path / "p.csv")],
        "evaluate": ["evaluate", "-c", str(TINY_CAT), "--model-uri", uri],
        "promote": ["promote", "-c", str(TINY_CAT), "--model-name", MODEL, "--version", "1", "--to", "staging"],
        "serve": ["serve", "-c", str(TINY_CAT), "--model-name", MODEL, "--env", "dev", "-p", "1"],
    }  # fmt: skip
    for damage, (name, content) in DAMAGES.items():
        target = folder / name
        if content is None:
            target.unlink()
        else:
            target.write_bytes(content)
        try:
            for command, args in commands.items():
                result = run_cli(*args, env=store.env, timeout=120)
                assert result.returncode == 2, (damage, command, result.stderr[-2000:])
                line = result.stderr.strip().splitlines()[-1]
                assert line.startswith(f"kennel {command}: error: cannot load model"), line
                assert "models:/" in line and name in line, (damage, command, line)
                assert "Traceback" not in result.stderr
        finally:
            shutil.rmtree(folder)
            shutil.copytree(backup, folder)
    aliases = client.get_registered_model(MODEL).aliases
    assert "staging" not in aliases  # no promotion to a damaged version
