"""``kennel search``: the space, trials as processes, nested runs, failures, signals, workers."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kennel.config import ConfigError, load_config
from kennel.search import (
    apply_values,
    available_cores,
    effective_threads,
    resolve_objective,
    trial_threads,
    validate_space,
)
from kennel.search.launchers import thread_environment
from kennel.search.trials import override_text
from tests.conftest import PYTHON, ROOT, TEST_CONFIGS, Store, cli_env, run_cli

TINY_CAT = TEST_CONFIGS / "tiny_cat.yaml"
#: Quicker trials where the model and plots are beside the point.
LEAN = ("tracking.log_model=false", "tracking.log_plots=false")
#: Trials that train for many seconds (no early stopping), to be stopped or timed out.
SLOW = ("model.params.n_estimators=200000", "model.params.early_stopping_rounds=0")
LAUNCHERS = ("warm", "subprocess")


def write_config(tmp_path: Path, search: dict[str, Any], name: str = "search.yaml") -> Path:
    """tiny_cat with its ``search`` section replaced."""
    data = yaml.safe_load(TINY_CAT.read_text())
    data["search"] = search
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def search_cli(store: Store, config: Path | str, *args: str, timeout: float = 300):
    out = store.folder / f"search-{time.monotonic_ns()}.json"
    result = run_cli(
        "search",
        "-c",
        str(config),
        *args,
        "--output-json",
        str(out),
        env=store.env,
        timeout=timeout,
    )
    summary = json.loads(out.read_text()) if out.exists() else None
    return result, summary


def runs_by_kind(store: Store) -> tuple[list[Any], list[Any]]:
    client = store.client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000)
    parents = [r for r in runs if r.data.tags.get("kennel.kind") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[1])


def descendants(root: int) -> set[int]:
    """Live processes below ``root`` (children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = _parent(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return {pid for pid in found if _alive(pid)}


def trial_pids(folder: Path) -> list[int]:
    """The pid each trial under ``folder`` logged when it started (both launchers)."""
    import re

    pids = []
    for log in sorted(folder.rglob("trial-*/kennel.log")):
        match = re.search(r"training \w+ \(pid (\d+)\)", log.read_text())
        if match:
            pids.append(int(match.group(1)))
    return pids


def trials_training(folder: Path) -> int:
    """Trials under ``folder`` whose trainer has started."""
    return sum("validating on" in log.read_text() for log in folder.rglob("trial-*/kennel.log"))


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (psutil-free /proc scan)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------- the space (fast)
def test_space_unknown_key_names_the_closest(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"space": {"model.params.num_leafs": {"type": "int", "low": 4, "high": 8}}}
    )
    config = load_config(path).config
    with pytest.raises(ConfigError, match=r"model\.params\.num_leafs.*did you mean 'num_leaves'"):
        validate_space(config)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"model.params.num_leaves": {"type": "int", "low": 1, "high": 8}},
            "greater than or equal",
        ),
        ({"modle.params.num_leaves": {"type": "int", "low": 4, "high": 8}}, "did you mean 'model'"),
        ({"data.source.x": {"type": "categorical", "choices": ["a"]}}, "not a section"),
        ({"search.n_trials": {"type": "int", "low": 1, "high": 3}}, "cannot be searched"),
        ({}, "search.space is empty"),
    ],
)
def test_space_invalid(tmp_path: Path, space: dict, message: str) -> None:
    config = load_config(write_config(tmp_path, {"space": space})).config
    with pytest.raises(ConfigError, match=message):
        validate_space(config)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"model.params.learning_rate": {"type": "float", "low": 0.3, "high": 0.1}}, "low"),
        ({"model.params.num_leaves": {"type": "categorical", "choices": []}}, "must not be empty"),
    ],
)
def test_space_bad_ranges_fail_when_loaded(tmp_path: Path, space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, {"space": space}))


def test_shipped_spaces_are_valid() -> None:
    for name in ("cat.yaml", "dog.yaml"):
        validate_space(load_config(ROOT / "configs" / name).config)


def test_apply_values_and_overrides_round_trip() -> None:
    config = load_config(TINY_CAT).config
    changed = apply_values(config, {"model.params.num_leaves": 9, "data.split.seed": 3})
    assert changed.model.params.num_leaves == 9 and changed.data.split.seed == 3
    assert config.model.params.num_leaves == 7  # the base is untouched
    for value in (1e-05, 0.1, 7, "builtin:breast_cancer", [64, 32], True, None, "123"):
        text = override_text("k", value)
        assert yaml.safe_load(text.split("=", 1)[1]) == value, text


def test_threads_per_trial_never_exceed_the_cores() -> None:
    # min(configured, cores // jobs), at least one; 0 means every core.
    assert effective_threads(0, 2, cores=2) == 1
    assert effective_threads(2, 2, cores=2) == 1  # the user's 2 lowered: 2 x 2 > 2 cores
    assert effective_threads(2, 1, cores=2) == 2
    assert effective_threads(8, 1, cores=2) == 2  # never more than the machine has
    assert effective_threads(1, 2, cores=8) == 1  # a smaller count is kept
    assert effective_threads(0, 2, cores=8) == 4
    assert effective_threads(0, 32, cores=8) == 1  # never below one thread
    assert effective_threads(3, 2, cores=8) == 3


def test_trial_threads_override_only_what_changes() -> None:
    base = load_config(TINY_CAT).config
    cores = available_cores()

    def threads(num_threads: int, n_jobs: int) -> int | None:
        return trial_threads(
            apply_values(base, {"resource.num_threads": num_threads, "search.n_jobs": n_jobs})
        )

    assert threads(0, 2) == max(1, cores // 2)
    assert threads(0, cores * 4) == 1
    assert threads(0, 1) is None  # one trial at a time: 0 already means every core
    assert threads(1, 2) is None  # already fits
    assert threads(cores, 2) == max(1, cores // 2)  # lowered: never oversubscribed


def test_thread_environment_caps_openmp_and_blas() -> None:
    env = thread_environment(2, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "8"})
    assert env["OMP_NUM_THREADS"] == "1"  # the user's lower value stays
    assert env["MKL_NUM_THREADS"] == "2"
    assert env["OPENBLAS_NUM_THREADS"] == "2"


def test_objective_defaults_to_the_primary_validation_metric() -> None:
    config = load_config(TINY_CAT, ["data.task=binary"]).config
    assert resolve_objective(config) == ("val_roc_auc", "maximize", "binary")
    config = load_config(TINY_CAT, ["data.task=binary", "search.metric=log_loss"]).config
    assert resolve_objective(config)[:2] == ("val_log_loss", "minimize")
    config = load_config(TINY_CAT, ["data.task=binary", "search.metric=val_rmse"]).config
    with pytest.raises(ConfigError, match="not a binary metric"):
        resolve_objective(config)


def test_cli_invalid_space_exits_2_before_anything_runs(store: Store, tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"space": {"model.params.num_leafs": {"type": "int", "low": 4, "high": 8}}}
    )
    result, _ = search_cli(store, path, "--n-trials", "1")
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "num_leafs" in lines[0] and "num_leaves" in lines[0]
    assert not (store.folder / "mlflow.db").exists()  # no store touched, no trial run


def test_cli_flags_are_validated(store: Store) -> None:
    result, _ = search_cli(store, TINY_CAT, "--n-trials", "0")
    assert result.returncode == 2
    assert "search.n_trials" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- real searches (slow)
@pytest.mark.slow
def test_search_nests_trials_and_registers_only_the_best(store: Store) -> None:
    result, summary = search_cli(
        store,
        TINY_CAT,
        "--n-trials",
        "4",
        "--n-jobs",
        "2",
        "search.register_best=true",
        "resource.num_threads=0",  # every core: split between the 2 parallel trials
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["counts"] == {"COMPLETE": 4}
    assert summary["metric"] == "val_roc_auc" and summary["direction"] == "maximize"

    parents, children = runs_by_kind(store)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == summary["parent_run_id"]
    assert parent.info.run_name.startswith("search-cat-")
    assert parent.info.status == "FINISHED"
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    threads = max(1, available_cores() // 2)
    assert parent.data.tags["kennel.search.trial_threads"] == str(threads)
    assert {c.data.params["resource.num_threads"] for c in children} == {str(threads)}

    best = max(children, key=lambda r: r.data.metrics["val_roc_auc"])
    best_value = best.data.metrics["val_roc_auc"]
    assert parent.data.metrics["best_val_roc_auc"] == pytest.approx(best_value)
    assert summary["best"]["value"] == pytest.approx(best_value)
    best_run = store.client().get_run(parent.data.tags["best_run_id"])
    assert best_run.data.metrics["val_roc_auc"] == pytest.approx(best_value)
    for key, value in summary["best"]["params"].items():
        assert json.loads(parent.data.params[key]) == value  # best values, dotted keys

    artifacts = {a.path for a in store.client().list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "optimization_history.png"} <= artifacts
    table = Path(summary["output_dir"]) / "trials.csv"
    rows = list(csv.DictReader(table.open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    assert {r["run_id"] for r in rows} == {c.info.run_id for c in children}
    assert {"state", "value", "duration_s", "model.params.num_leaves"} <= set(rows[0])

    # log_models=improving: a trial logs its model and plots only if it beat the best value
    # completed when it started; the best trial always has one.
    logged = {c.info.run_id: c.data.tags["kennel.model_logged"] for c in children}
    assert logged[parent.data.tags["best_run_id"]] == "true"
    for child in children:
        artifacts = {a.path for a in store.client().list_artifacts(child.info.run_id)}
        assert {"config.yaml", "columns.json", "result.json", "logs"} <= artifacts
        assert ("plots" in artifacts) == (logged[child.info.run_id] == "true")
        assert "val_roc_auc" in child.data.metrics
    assert parent.data.tags["kennel.search.launcher"] == "warm"

    # Trials never register; the search registers the best trial's model once.
    versions = store.client().search_model_versions("name='breast-cancer'")
    assert len(versions) == 1
    assert versions[0].run_id == parent.data.tags["best_run_id"]
    assert summary["registered_version"] == int(versions[0].version)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_failing_trial_is_failed_and_the_search_goes_on(
    store: Store, tmp_path: Path, launcher: str
) -> None:
    missing = str(tmp_path / "missing.csv")
    path = write_config(
        tmp_path,
        {
            "sampler": "random",
            "seed": 0,  # with this seed the 3 trials draw: builtin, missing, builtin
            "space": {
                "data.source": {
                    "type": "categorical",
                    "choices": [missing, "builtin:breast_cancer"],
                }
            },
        },
    )
    result, summary = search_cli(
        store, path, "--n-trials", "3", "--n-jobs", "2", f"search.launcher={launcher}", *LEAN
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # trials.csv holds the Optuna study's own view of every trial.
    rows = list(csv.DictReader((Path(summary["output_dir"]) / "trials.csv").open()))
    sources = [r["data.source"] for r in rows]
    assert missing in sources and "builtin:breast_cancer" in sources, sources
    assert summary["counts"] == {
        "COMPLETE": sources.count("builtin:breast_cancer"),
        "FAIL": sources.count(missing),
    }
    _, children = runs_by_kind(store)
    status = {c.info.run_id: c.info.status for c in children}
    assert len(status) == 3
    for row in rows:
        failed = row["data.source"] == missing
        assert row["state"] == ("FAIL" if failed else "COMPLETE")
        assert status[row["run_id"]] == ("FAILED" if failed else "FINISHED")
        if failed:
            assert row["error"].startswith("exit 2: kennel train: error:"), row["error"]
    assert summary["best"]["params"] == {"data.source": "builtin:breast_cancer"}
    # The command that trains the best trial: the user's config and overrides (not the
    # search's own), then the best values.
    train = shlex.join(["kennel", "train", "-c", str(path), *LEAN])
    assert f"train it: {train} data.source=builtin:breast_cancer\n" in result.stderr


def test_the_best_trials_command_repeats_what_the_user_typed() -> None:
    from types import SimpleNamespace

    from kennel.search.results import train_command

    search = SimpleNamespace(
        config_file="my configs/cat.yaml",
        user_overrides=[
            "data.source=s3://bucket/sales data.csv",
            "search.n_trials=30",
            "tracking.uri=postgresql://kennel:hunter2@db:5432/mlflow",
        ],
    )
    assert train_command(search) == (  # type: ignore[arg-type]
        "kennel train -c 'my configs/cat.yaml' 'data.source=s3://bucket/sales data.csv' "
        "'tracking.uri=postgresql://kennel:***@db:5432/mlflow'"
    )
    assert train_command(SimpleNamespace(config_file=None, user_overrides=[])) == (  # type: ignore[arg-type]
        "kennel train"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "how"),
    [("warm", "sigterm"), ("subprocess", "sigterm"), ("warm", "ctrl-c")],
)
def test_sigterm_stops_trials_and_marks_runs_killed(store: Store, launcher: str, how: str) -> None:
    """SIGTERM to the search, or Ctrl-C at a terminal (SIGINT to its whole process group,
    the warm trial server included)."""
    out = store.folder / "sigterm"
    env = cli_env(store.env)
    proc = subprocess.Popen(
        [PYTHON, str(ROOT / "run.py"), "search", "-c", str(TINY_CAT)]
        + ["--n-trials", "4", "--n-jobs", "2", "--output-dir", str(out), *LEAN, *SLOW]
        + [f"search.launcher={launcher}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, like a terminal's job
    )
    try:
        deadline = time.monotonic() + 120
        while trials_training(out) < 2:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "trials did not start"
            time.sleep(0.2)
        started = descendants(proc.pid)  # trial processes (and the warm trial server)
        assert len(started) >= 2
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if how == "sigterm" else 130), stderr[-2000:]
    assert "Traceback" not in stderr
    time.sleep(0.2)
    assert [pid for pid in started if _alive(pid)] == []  # no orphan processes
    assert len(trial_pids(out)) == 2 and not any(_alive(p) for p in trial_pids(out))
    parents, children = runs_by_kind(store)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert children and {c.info.status for c in children} == {"KILLED"}


@pytest.mark.slow
def test_two_workers_share_one_study(store: Store, tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = cli_env(store.env)
    command = [PYTHON, str(ROOT / "run.py"), "search", "-c", str(TINY_CAT)]
    command += ["--n-trials", "2", "--n-jobs", "1", "--storage", storage, "--study-name", "shared"]
    command += LEAN
    # Both start at once on a fresh tracking store and a fresh study file.
    workers = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    summaries = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert all(s["study_name"] == "shared" and s["storage"] == storage for s in summaries)

    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == [0, 1, 2, 3]
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    parents, children = runs_by_kind(store)
    assert len(parents) == 2 and len(children) == 4
    run_ids = {t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert run_ids == {c.info.run_id for c in children}
    assert {c.info.status for c in children} == {"FINISHED"}


def test_storage_password_is_never_shown(store: Store) -> None:
    result, _ = search_cli(
        store,
        TINY_CAT,
        "--n-trials",
        "1",
        "--storage",
        "postgresql://kennel:s3cr3t-pw@127.0.0.1:1/optuna",
        "data.task=binary",
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert "Optuna storage" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_trial_timeout_kills_the_trial_and_marks_it_failed(store: Store, launcher: str) -> None:
    result, summary = search_cli(
        store,
        TINY_CAT,
        "--n-trials",
        "1",
        "search.trial_timeout=3",
        f"search.launcher={launcher}",
        "data.task=binary",
        *LEAN,
        *SLOW,
    )
    assert result.returncode == 1  # no trial completed
    assert "every trial" in result.stderr and "Traceback" not in result.stderr
    parents, children = runs_by_kind(store)
    assert [p.info.status for p in parents] == ["FAILED"]
    assert [c.info.status for c in children] == ["FAILED"]
    assert "timed out" in children[0].data.tags["kennel.search.error"]
    pids = trial_pids(store.folder / "outputs")
    assert len(pids) == 1 and not _alive(pids[0])
    assert processes_mentioning(str(store.folder / "outputs")) == []


def test_log_model_gate_parses_and_compares() -> None:
    from kennel.errors import UserError
    from kennel.train import ModelGate

    gate = ModelGate.parse("val_roc_auc>0.99")
    assert gate.passes({"val_roc_auc": 0.995}) and not gate.passes({"val_roc_auc": 0.99})
    assert ModelGate.parse("val_rmse<=3.5").passes({"val_rmse": 3.5})
    assert not ModelGate.parse("val_rmse<3.5").passes({"val_rmse": float("nan")})
    assert not gate.passes({})
    for bad in ("val_roc_auc=0.9", ">0.9", "val_roc_auc>high"):
        with pytest.raises(UserError, match="expected METRIC>VALUE"):
            ModelGate.parse(bad)


def test_register_best_needs_logged_models(store: Store) -> None:
    result, _ = search_cli(
        store, TINY_CAT, "--n-trials", "1", "search.register_best=true", "search.log_models=none"
    )
    assert result.returncode == 2
    assert "search.log_models" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_both_launchers_run_the_same_trial(store: Store) -> None:
    """Same sampled values -> same metrics and the same logged run contents."""
    client = store.client()
    seen = {}
    for launcher in LAUNCHERS:
        result, summary = search_cli(
            store,
            TINY_CAT,
            "--n-trials",
            "2",
            "search.sampler=random",
            "search.log_models=all",
            f"search.launcher={launcher}",
            f"tracking.experiment=launcher-{launcher}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        experiment = client.get_experiment_by_name(f"launcher-{launcher}").experiment_id
        runs = client.search_runs([experiment], "tags.`kennel.kind` = 'trial'")
        trials = {}
        for run in runs:
            number = int(run.data.tags["kennel.search.trial"])
            artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
            artifacts += sorted(a.path for a in client.list_artifacts(run.info.run_id, "plots"))
            trials[number] = (
                {k: v for k, v in run.data.params.items()},
                run.data.metrics,
                artifacts,
                run.data.tags["kennel.model_logged"],
            )
        seen[launcher] = trials
    warm, sub = seen["warm"], seen["subprocess"]
    assert sorted(warm) == sorted(sub) == [0, 1]
    for number in warm:
        params_w, metrics_w, artifacts_w, logged_w = warm[number]
        params_s, metrics_s, artifacts_s, logged_s = sub[number]
        # the one thing that differs (a training's params leave out the search section)
        params_w.pop("tracking.experiment"), params_s.pop("tracking.experiment")
        assert not any(k.startswith("search.") for k in params_w)
        assert params_w == params_s
        assert metrics_w.keys() == metrics_s.keys()
        for key, value in metrics_w.items():
            assert value == pytest.approx(metrics_s[key], abs=1e-12), key
        assert artifacts_w == artifacts_s
        assert logged_w == logged_s == "true"


@pytest.mark.slow
def test_a_dead_trial_server_fails_its_trial_and_the_search_goes_on(store: Store) -> None:
    out = store.folder / "server-killed"
    env = cli_env(store.env)
    proc = subprocess.Popen(
        [PYTHON, str(ROOT / "run.py"), "search", "-c", str(TINY_CAT), "--n-trials", "3"]
        + ["--n-jobs", "1", "--output-dir", str(out), "search.sampler=random", *LEAN]
        + ["model.params.n_estimators=3000", "model.params.early_stopping_rounds=0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while trials_training(out) < 1:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first trial did not start"
            time.sleep(0.1)
        servers = [p for p in processes_mentioning("trial_server") if _parent(p) == proc.pid]
        assert len(servers) == 1
        os.kill(servers[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["counts"] == {"COMPLETE": 2, "FAIL": 1}
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert rows[0]["state"] == "FAIL" and "trial server exited" in rows[0]["error"]
    assert not any(_alive(pid) for pid in trial_pids(out))
    _, children = runs_by_kind(store)
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]


@pytest.mark.slow
def test_dog_search_with_the_warm_launcher(store: Store) -> None:
    """TensorFlow is not fork-safe: the trial server leaves it to each trial."""
    result, summary = search_cli(
        store,
        TEST_CONFIGS / "tiny_dog.yaml",
        "--n-trials",
        "2",
        "search.space={model.params.learning_rate: {type: float, low: 0.001, high: 0.01}}",
        *LEAN,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["counts"] == {"COMPLETE": 2}
    log = (Path(summary["output_dir"]) / "trial-server.log").read_text()
    assert "family dog is not fork-safe" in log


@pytest.mark.slow
def test_the_warm_server_decides_the_task_so_the_search_reads_no_data(store: Store) -> None:
    """data.task auto: the trial server decides the task on the table it reads anyway; the
    search process itself never loads the data (no second read of a big table)."""
    result, summary = search_cli(store, TINY_CAT, "--n-trials", "1", *LEAN)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (Path(summary["output_dir"]) / "kennel.log").read_text()
    assert "task binary, decided on the 569 rows of builtin:breast_cancer" in log, log
    assert "kennel.data.processor: loaded" not in log, log
    server_log = (Path(summary["output_dir"]) / "trial-server.log").read_text()
    assert "kennel.data.processor: loaded builtin:breast_cancer" in server_log
    parents, _ = runs_by_kind(store)
    assert parents[0].data.tags["kennel.task"] == "binary"
    assert parents[0].data.tags["kennel.search.metric"] == "val_roc_auc"

    # The table cannot be loaded: the search loads it itself and says why (exit 2).
    result, _ = search_cli(store, TINY_CAT, "--n-trials", "1", "data.target=nope", *LEAN)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "column 'nope' (from data.target) does not exist" in result.stderr


def test_an_unknown_metric_fails_before_the_store_opens(tmp_path: Path) -> None:
    """While the task is still to be decided (data.task auto), a search.metric that no task
    has stops the search before it opens anything: no store file appears."""
    db = tmp_path / "fresh" / "mlflow.db"
    db.parent.mkdir()
    result = run_cli(
        "search", "-c", str(TINY_CAT), "--n-trials", "1", "--output-dir", str(tmp_path / "out"),
        "search.metric=val_rocauc", *LEAN,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        "search.metric 'val_rocauc' is not a metric kennel records; did you mean 'val_roc_auc'?"
        in result.stderr
    )
    assert not db.exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_killed_worker_trial_is_failed_by_heartbeat_and_retried(
    store: Store, tmp_path: Path, launcher: str
) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = cli_env(store.env)
    common = [PYTHON, str(ROOT / "run.py"), "search", "-c", str(TINY_CAT), "--storage", storage]
    common += ["--study-name", "beats", "--n-jobs", "1", f"search.launcher={launcher}", *LEAN]
    common += ["search.heartbeat_interval=1", "search.grace_period=2", "search.sampler=random"]
    out_a = tmp_path / "worker-a"
    worker_a = subprocess.Popen(
        [*common, "--n-trials", "1", "--output-dir", str(out_a), *SLOW],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while trials_training(out_a) < 1:
            assert worker_a.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(worker_a.pid, signal.SIGKILL)  # the worker dies; its trial must not linger
        worker_a.wait(timeout=30)
        worker_b = subprocess.run(
            [*common, "--n-trials", "4", "--output-dir", str(tmp_path / "worker-b")]
            + ["model.params.n_estimators=1500", "model.params.early_stopping_rounds=0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if worker_a.poll() is None:
            os.killpg(worker_a.pid, signal.SIGKILL)
    assert worker_b.returncode == 0, worker_b.stderr[-3000:]
    assert "stopped sending heartbeats" in worker_b.stderr
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in trial_pids(out_a))  # killed with its worker

    study = optuna.load_study(study_name="beats", storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert states[0] == "FAIL" and "RUNNING" not in states.values(), states
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == study.trials[0].params
    run_id = study.trials[0].user_attrs["mlflow_run_id"]
    run = store.client().get_run(run_id)
    assert run.info.status == "FAILED"
    assert "heartbeats" in run.data.tags["kennel.search.error"]


@pytest.mark.parametrize("searched", [False, True])
def test_a_cluster_search_checks_its_data_unless_the_space_varies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, searched: bool
) -> None:
    """Before a cluster search starts, ``data.source`` must be a Parquet data set; when the
    space picks the data set, each trial checks its own (the base value may be anything)."""
    import pandas as pd

    from kennel.errors import DataError
    from kennel.search import start

    folder = tmp_path / "parts"
    folder.mkdir()
    pd.DataFrame({"x": [1.0, 2.0], "target": [0, 1]}).to_parquet(folder / "part-0.parquet")
    space: dict[str, Any] = {"model.params.num_leaves": {"type": "int", "low": 4, "high": 8}}
    if searched:
        space["data.source"] = {"type": "categorical", "choices": [f"{folder}/"]}
    config = load_config(
        str(write_config(tmp_path, {"space": space})),
        ["resource.cluster=tcp://127.0.0.1:1", "data.target=target"],
    ).config
    started: list[Any] = []

    class NoSearch:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            started.append(args)

        def run(self) -> str:
            return "ran"

    monkeypatch.setattr(start, "Search", NoSearch)
    if searched:  # the base data.source (builtin:breast_cancer) is no data set: not checked
        assert start.run_search(config, tmp_path / "out") == "ran"
        assert len(started) == 1
    else:
        with pytest.raises(DataError, match="data.source must be a Parquet data set"):
            start.run_search(config, tmp_path / "out")
        assert not started
