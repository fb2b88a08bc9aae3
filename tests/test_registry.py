"""Promotion per environment: the gate, dry runs, rollback, the audit trail, and that bad
input or a failure while recording moves no alias.

One store for the module holds three trainings: a good cat (version 1, auto-promoted to
dev), a deliberately bad cat (version 2, refused by dev's gate) and a dog (version 3, not
auto-promoted). Each test that moves aliases uses an environment of its own (declared with
``registry.environments=[...]``), so the tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from kennel import registry
from kennel.errors import UserError
from tests.conftest import TEST_CONFIGS, Store, run_cli

MODEL = "breast-cancer"
TINY_CAT = TEST_CONFIGS / "tiny_cat.yaml"
#: The environments the tests use: the defaults plus one of its own for each test.
TEST_ENVS = [
    "dev",
    "staging",
    "production",
    "t_gate",
    "t_roll",
    "t_dry",
    "t_fail",
    "t_pets",
    "t_reads",
]
ENVS = "registry.environments=[" + ",".join(TEST_ENVS) + "]"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three versions of one registered model in a store of this module's own."""
    with pytest.MonkeyPatch.context() as mp:
        import os

        for name in list(os.environ):
            if name.startswith(("KENNEL_", "MLFLOW_")):
                mp.delenv(name)
        store = Store(tmp_path_factory.mktemp("registry"))
        good = store.train(TINY_CAT)
        bad = store.train(TINY_CAT, "model.params.n_estimators=1", "model.params.num_leaves=2")
        dog = store.train(TEST_CONFIGS / "tiny_dog.yaml", "registry.auto_promote=null")
    return {"store": store, "good": good, "bad": bad, "dog": dog}


# ----------------------------------------------------------------------------- helpers
def promote_cli(store: Store, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """``run.py promote`` in a subprocess: (exit code, decision JSON or None, stderr)."""
    result = run_cli("promote", "-c", str(TINY_CAT), ENVS, *args, env=store.env, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, (json.loads(lines[-1]) if lines else None), result.stderr


@pytest.fixture
def promote_here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``kennel promote`` in this process (fast; lets a test break the store on purpose)."""
    from kennel.cli.manager import main

    def call(store: Store, *args: str) -> tuple[int, dict[str, Any] | None, str]:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
        capsys.readouterr()
        code = main(["promote", "-c", str(TINY_CAT), ENVS, *args])
        out, err = capsys.readouterr()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return code, (json.loads(lines[-1]) if lines else None), err

    yield call
    import mlflow

    from kennel.logging_setup import setup_logging

    mlflow.set_tracking_uri(None)  # the next test finds MLflow pointing nowhere in particular

    setup_logging("WARNING", stream=sys.__stderr__)  # no handler left on capsys's stream


def snapshot(store: Store) -> dict[str, Any]:
    """Everything a promotion may change: aliases, model tags, every version's tags."""
    client = store.client()
    model = client.get_registered_model(MODEL)
    versions = client.search_model_versions(f"name='{MODEL}'")
    return {
        "aliases": dict(model.aliases),
        "model_tags": dict(model.tags),
        "version_tags": {v.version: dict(v.tags) for v in versions},
    }


def holder(store: Store, env: str) -> int | None:
    aliases = store.client().get_registered_model(MODEL).aliases
    return int(aliases[env]) if env in aliases else None


def version_of(result: dict[str, Any]) -> int:
    return int(result["registered_version"])


def promotion_runs(store: Store) -> list[Any]:
    client = store.client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, "tags.`kennel.kind` = 'promotion'")


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


# ----------------------------------------------------------------------------- the gate
def test_gate_decision_rules() -> None:
    assert registry.decide(0.9, 0.8, "roc_auc") == (registry.PROMOTED, "roc_auc 0.9 >= 0.8")
    assert registry.decide(0.8, 0.8, "roc_auc")[0] == registry.PROMOTED  # ties pass
    assert registry.decide(0.7, 0.8, "roc_auc")[0] == registry.REFUSED
    assert registry.decide(0.85, 0.8, "roc_auc", min_delta=0.1)[0] == registry.REFUSED
    assert registry.decide(0.95, 0.8, "roc_auc", min_delta=0.1)[0] == registry.PROMOTED
    assert registry.decide(0.2, 0.3, "log_loss")[0] == registry.PROMOTED  # smaller is better
    assert registry.decide(0.4, 0.3, "rmse")[0] == registry.REFUSED
    assert registry.decide(None, 0.3, "rmse")[0] == registry.REFUSED
    assert registry.decide(math.nan, 0.3, "rmse")[0] == registry.REFUSED
    assert registry.decide(0.1, None, "roc_auc", has_holder=False)[0] == registry.PROMOTED
    assert registry.decide(0.1, 0.9, "roc_auc", force=True)[0] == registry.FORCED


def test_gate_metric_is_checked() -> None:
    from kennel.config import load_config

    config = load_config(None, ["registry.gate.metric=test_f1"]).config
    assert registry.gate_metric(config, "binary") == "f1"
    assert registry.gate_metric(load_config().config, "regression") == "rmse"
    config = load_config(None, ["registry.gate.metric=rmse"]).config
    with pytest.raises(UserError, match=r"'rmse' does not exist for a binary model.*roc_auc"):
        registry.gate_metric(config, "binary")


def test_decision_exit_codes_and_summary() -> None:
    refused = registry.Decision(MODEL, "dev", 2, 1, "roc_auc", outcome=registry.REFUSED)
    assert refused.exit_code == registry.EXIT_REFUSED == 3
    assert "kept version 1" in refused.summary()
    moved = registry.Decision(MODEL, "dev", 2, None, promoted=True, outcome=registry.PROMOTED)
    assert moved.exit_code == 0
    assert "moved from no version to version 2" in moved.summary()
    tags = moved.tags()
    assert tags["kennel.promotion.dev.previous"] == "none"
    assert tags["kennel.promotion.dev.outcome"] == "promoted"


# ----------------------------------------------------------------------------- auto_promote
def test_auto_promote_puts_first_in_dev_and_worse_does_not_displace_it(reg) -> None:
    store, good, bad = reg["store"], reg["good"], reg["bad"]
    assert (version_of(good), version_of(bad), version_of(reg["dog"])) == (1, 2, 3)
    assert good["promotion"]["outcome"] == "promoted"
    assert good["promotion"]["previous"] is None
    assert bad["promotion"]["outcome"] == "refused"
    assert bad["promotion"]["previous"] == 1
    assert bad["promotion"]["candidate_score"] < bad["promotion"]["previous_score"]
    assert reg["dog"]["promotion"] is None  # registry.auto_promote=null
    # dev is untouched by the refusal; the refusal is recorded on version 2 and in its run.
    assert holder(store, "dev") == 1
    tags = store.client().get_model_version(MODEL, "2").tags
    assert tags["kennel.promotion.dev.outcome"] == "refused"
    assert tags["kennel.promotion.dev.previous"] == "1"
    assert tags["kennel.promotion.dev.report_run"] == bad["run_id"]
    report = store.client().download_artifacts(
        bad["run_id"], "promotion.json", str(store.folder / "bad-promotion")
    )
    assert json.loads(Path(report).read_text())["outcome"] == "refused"


# ----------------------------------------------------------------------------- through the CLI
def test_gate_refuses_a_worse_candidate_and_records_it(reg, promote_here) -> None:
    store = reg["store"]
    code, decision, _ = promote_here(store, "--version", "1", "--to", "t_gate")
    assert code == 0 and decision["outcome"] == "promoted" and decision["previous"] is None
    assert holder(store, "t_gate") == 1

    code, decision, stderr = promote_cli(store, "--version", "2", "--to", "t_gate")
    assert code == registry.EXIT_REFUSED, stderr
    assert decision["promoted"] is False and decision["outcome"] == "refused"
    assert decision["metric"] == "roc_auc"
    assert decision["candidate_score"] == pytest.approx(reg["bad"]["metrics"]["test_roc_auc"])
    assert decision["previous_score"] == pytest.approx(reg["good"]["metrics"]["test_roc_auc"])
    assert "t_gate: kept version 1, candidate version 2 refused" in stderr
    assert holder(store, "t_gate") == 1

    # Recorded: tags on the candidate version ...
    tags = store.client().get_model_version(MODEL, "2").tags
    prefix = "kennel.promotion.t_gate."
    assert tags[prefix + "outcome"] == "refused"
    assert tags[prefix + "environment"] == "t_gate"
    assert tags[prefix + "previous"] == "1"
    assert tags[prefix + "user"] == decision["user"]
    assert tags[prefix + "time"] == decision["time"]
    assert float(tags[prefix + "candidate_score"]) == pytest.approx(decision["candidate_score"])
    assert float(tags[prefix + "previous_score"]) == pytest.approx(decision["previous_score"])
    assert tags[prefix + "report_run"] == decision["report_run_id"]
    # ... and promotion.json in a finished run of its own, in the model's promotions
    # experiment: the training experiment's runs table holds only runs to compare.
    run = store.client().get_run(decision["report_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"promote-{MODEL}-t_gate"
    promotions = store.client().get_experiment(run.info.experiment_id)
    assert promotions.name == f"{MODEL}-promotions"
    training = store.client().get_experiment_by_name("kennel-tests")
    assert not store.client().search_runs(
        [training.experiment_id], "tags.`kennel.kind` = 'promotion'"
    )
    assert run.data.tags["kennel.kind"] == "promotion"
    assert run.data.tags["kennel.outcome"] == "refused"
    path = store.client().download_artifacts(
        run.info.run_id, "promotion.json", str(store.folder / "gate-report")
    )
    assert json.loads(Path(path).read_text()) == decision


def test_gate_passes_a_better_candidate_and_rollback_restores(reg, promote_here) -> None:
    store = reg["store"]
    code, decision, _ = promote_here(store, "--version", "2", "--to", "t_roll", "--force")
    assert code == 0 and decision["outcome"] == "forced" and decision["forced"] is True
    assert holder(store, "t_roll") == 2

    code, decision, stderr = promote_cli(store, "--version", "1", "--to", "t_roll")
    assert code == 0, stderr
    assert decision["outcome"] == "promoted" and decision["previous"] == 2
    assert decision["candidate_score"] > decision["previous_score"]
    assert holder(store, "t_roll") == 1
    assert "t_roll: moved from version 2 to version 1" in stderr

    # Promoting the holder again is a no-op, exit 0.
    code, decision, _ = promote_here(store, "--version", "1", "--to", "t_roll")
    assert code == 0 and decision["outcome"] == "unchanged" and holder(store, "t_roll") == 1

    code, decision, stderr = promote_cli(store, "--to", "t_roll", "--rollback")
    assert code == 0, stderr
    assert decision["action"] == "rollback" and decision["outcome"] == "rolled_back"
    assert (decision["candidate"], decision["previous"]) == (2, 1)
    assert holder(store, "t_roll") == 2
    tags = store.client().get_model_version(MODEL, "2").tags
    assert tags["kennel.promotion.t_roll.outcome"] == "rolled_back"
    assert tags["kennel.promotion.t_roll.previous"] == "1"

    # Nothing earlier to go back to: exit 2, the alias stays.
    before = snapshot(store)
    code, _, stderr = promote_here(store, "--to", "t_roll", "--rollback")
    assert code == 2
    assert "no previous holder" in one_error_line(stderr)
    assert snapshot(store) == before


def test_cat_and_dog_compete_under_one_registered_model(reg, promote_here) -> None:
    store = reg["store"]
    versions = store.client().search_model_versions(f"name='{MODEL}'")
    families = {int(v.version): v.tags["kennel.family"] for v in versions}
    assert families == {1: "cat", 2: "cat", 3: "dog"}

    assert promote_here(store, "--version", "1", "--to", "t_pets")[0] == 0
    code, decision, stderr = promote_here(store, "--version", "3", "--to", "t_pets")
    cat_auc = reg["good"]["metrics"]["test_roc_auc"]
    dog_auc = reg["dog"]["metrics"]["test_roc_auc"]
    assert decision["candidate_score"] == pytest.approx(dog_auc)
    assert decision["previous_score"] == pytest.approx(cat_auc)
    assert decision["promoted"] is (dog_auc >= cat_auc)
    assert code == (0 if dog_auc >= cat_auc else registry.EXIT_REFUSED), stderr
    assert holder(store, "t_pets") == (3 if dog_auc >= cat_auc else 1)


# ----------------------------------------------------------------------------- nothing changes
def test_dry_run_changes_nothing(reg, promote_here, tmp_path: Path) -> None:
    store = reg["store"]
    assert promote_here(store, "--version", "1", "--to", "t_dry")[0] == 0
    assert promote_here(store, "--version", "2", "--to", "t_dry", "--force")[0] == 0
    before, runs_before = snapshot(store), len(promotion_runs(store))

    code, decision, stderr = promote_cli(store, "--version", "1", "--to", "t_dry", "--dry-run")
    assert code == 0, stderr
    assert decision["dry_run"] is True and decision["promoted"] is True
    assert decision["report_run_id"] is None
    assert "dry run: breast-cancer@t_dry: would move from version 2 to version 1" in stderr

    code, decision, _ = promote_here(store, "--version", "2", "--to", "dev", "--dry-run")
    assert code == registry.EXIT_REFUSED and decision["outcome"] == "refused"
    code, decision, _ = promote_here(store, "--version", "2", "--to", "dev", "--dry-run", "--force")
    assert code == 0 and decision["promoted"] is True
    code, decision, _ = promote_here(store, "--to", "t_dry", "--rollback", "--dry-run")
    assert code == 0 and decision["candidate"] == 1 and decision["dry_run"] is True

    # A holdout file never scored before: scored, but the score is not cached either.
    from kennel.config import load_config
    from kennel.data import DataProcessor

    frame = DataProcessor(load_config(TINY_CAT).config.data).load()
    csv = tmp_path / "holdout.csv"
    frame.sample(120, random_state=0).to_csv(csv, index=False)
    code, decision, _ = promote_here(
        store, "--version", "1", "--to", "t_dry", "--dry-run", "--data", str(csv)
    )
    assert code == 0
    assert decision["holdout"] == f"all rows of {csv}"
    assert 0.5 < decision["candidate_score"] <= 1.0

    assert snapshot(store) == before
    assert len(promotion_runs(store)) == runs_before
    assert holder(store, "t_dry") == 2


def test_bad_input_changes_nothing(reg, promote_here) -> None:
    store = reg["store"]
    before, runs_before = snapshot(store), len(promotion_runs(store))

    code, _, stderr = promote_cli(store, "--version", "1", "--to", "prod")
    assert code == 2
    assert "unknown environment 'prod'; expected one of: dev" in one_error_line(stderr)

    cases = [
        (["--version", "9", "--to", "dev"], "no version 9; expected one of: 1, 2, 3"),
        (["--version", "1", "--to", "dev", "--model-name", "nope"], "unknown registered model"),
        (["--to", "dev"], "--version is missing"),
        (["--to", "dev", "--rollback"], "has no previous holder"),
        (["--version", "1", "--to", "dev", "--rollback"], "--rollback takes no --version"),
        (["--version", "2", "--to", "dev", "registry.gate.metric=rmse"], "'rmse' does not exist"),
        (["--version", "2", "--to", "dev", "--data", "/no/such.csv"], "such.csv"),
    ]
    for args, message in cases:
        code, decision, stderr = promote_here(store, *args)
        assert code == 2, (args, stderr)
        assert decision is None
        assert message in one_error_line(stderr), args

    assert snapshot(store) == before
    assert len(promotion_runs(store)) == runs_before


@pytest.mark.parametrize("failing", ["set_registered_model_tag", "set_model_version_tag"])
def test_failure_while_recording_moves_no_alias(
    reg, promote_here, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._model_registry.client import ModelRegistryClient

    store = reg["store"]
    if holder(store, "t_fail") != 2:
        assert promote_here(store, "--version", "2", "--to", "t_fail", "--force")[0] == 0
    before = snapshot(store)
    # The alias history goes through MlflowClient, the version's audit tags through
    # MLflow's registry client (one request per tag: registry.versions.set_version_tags).
    owner = MlflowClient if failing == "set_registered_model_tag" else ModelRegistryClient
    original = getattr(owner, failing)

    def broken(self: Any, name: str, *args: Any) -> None:
        key = args[-2]
        if key.startswith(("kennel.promotion.", "kennel.alias_history.")):
            raise RuntimeError("the store went away")
        original(self, name, *args)

    runs_before = [
        r for r in promotion_runs(store) if r.data.tags["kennel.environment"] == "t_fail"
    ]
    monkeypatch.setattr(owner, failing, broken)
    code, decision, stderr = promote_here(store, "--version", "1", "--to", "t_fail")
    assert code == 1, stderr
    assert decision is None
    assert "internal error: RuntimeError: the store went away" in stderr

    assert snapshot(store) == before
    assert holder(store, "t_fail") == 2
    runs = [r for r in promotion_runs(store) if r.data.tags["kennel.environment"] == "t_fail"]
    if failing == "set_registered_model_tag":
        # The alias history is written right after the alias, before any report run: the
        # alias is put back and no run claims the move.
        assert len(runs) == len(runs_before)
        return
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.info.status == "FAILED"
    assert latest.data.tags["kennel.outcome"] == "failed"


def test_recording_a_decision_writes_each_tag_in_one_request(
    reg, promote_here, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 14 audit tags of a decision are one write each: MLflow's client would first read
    the whole registered model back for every tag (its prompt check), 28 requests."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    store = reg["store"]
    calls: dict[str, int] = {"get_registered_model": 0, "set_model_version_tag": 0}
    for method in calls:
        original = getattr(SqlAlchemyStore, method)

        def counted(self: Any, *args: Any, _method: str = method, _orig: Any = original) -> Any:
            calls[_method] += 1
            return _orig(self, *args)

        monkeypatch.setattr(SqlAlchemyStore, method, counted)
    code, decision, stderr = promote_here(store, "--version", "1", "--to", "t_reads")
    assert code == 0 and decision["outcome"] == "promoted", stderr
    tags = store.client().get_model_version(MODEL, "1").tags
    written = [k for k in tags if k.startswith("kennel.promotion.t_reads.")]
    assert len(written) == len(registry.Decision(MODEL, "t_reads", 1, None).tags()) == 14
    assert calls["set_model_version_tag"] == len(written)
    # kennel promote's and promote()'s check_model, the holder in promote() and in
    # record(), the alias history, and MLflow's prompt check in get_model_version_download_uri,
    # set_registered_model_alias and set_registered_model_tag
    assert calls["get_registered_model"] <= 8, calls


# ------------------------------------------------------------ the lock kept in the registry
@pytest.fixture
def lock_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh store (no training needed: the lock is a registered model of its own)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # unset after the test by conftest's _isolated_env
    return Store(tmp_path)


def _lock_models(store: Store) -> list[str]:
    return [m.name for m in store.client().search_registered_models()]


def test_registry_lock_exists_only_while_held(lock_store: Store) -> None:
    with registry.registry_lock("m"):
        assert _lock_models(lock_store) == ["m.promotion-lock"]
        tags = lock_store.client().get_registered_model("m.promotion-lock").tags
        from kennel.tracking.processes import process_tag

        assert tags[registry.LOCK_HOLDER_TAG] == process_tag()
    assert _lock_models(lock_store) == []


def test_registry_lock_waits_then_names_the_holder(lock_store: Store) -> None:
    """A lock held by a live process (here: a child holding it for good) is waited for,
    then the wait ends with one line naming the holder and the way out."""
    import subprocess
    import textwrap

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from kennel import registry
                with registry.registry_lock("m"):
                    print("held", flush=True)
                    time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as caught, registry.registry_lock("m", wait=1.0):
            pass
        message = str(caught.value)
        assert f":{holder.pid}:" in message
        assert "delete registered model 'm.promotion-lock'" in message
    finally:
        holder.kill()
        holder.wait()
    # its process is gone now: the next promotion takes the lock over at once
    with registry.registry_lock("m", wait=1.0):
        pass
    assert _lock_models(lock_store) == []


def test_registry_lock_takes_over_an_expired_lock(
    lock_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    lock_store.client().create_registered_model(
        "m.promotion-lock",
        tags={registry.LOCK_HOLDER_TAG: "elsewhere:42:7", registry.LOCK_EXPIRES_TAG: "1"},
    )
    with caplog.at_level("WARNING"), registry.registry_lock("m", wait=1.0):
        pass
    assert "left by elsewhere:42:7 (it expired)" in caplog.text
    assert _lock_models(lock_store) == []


def test_registry_lock_bare_lock_expires_from_its_creation(lock_store: Store) -> None:
    """A lock read without its tags (made by hand, or caught mid-delete: a SQL store reads
    a model and its tags in two queries) is a live lock until ``ttl`` after its creation."""
    lock_store.client().create_registered_model("m.promotion-lock")
    with pytest.raises(UserError, match="unknown:0:"), registry.registry_lock("m", wait=0.5):
        pass
    assert _lock_models(lock_store) == ["m.promotion-lock"]
    with registry.registry_lock("m", ttl=0.0, wait=1.0):
        pass
    assert _lock_models(lock_store) == []


CONTENDER = """
import os, sys, time
from kennel.registry.lock import registry_lock
for _ in range(6):
    with registry_lock("race"):
        with open(sys.argv[1], "a") as log:
            log.write(f"in {os.getpid()}\\n")
        time.sleep(0.02)
        with open(sys.argv[1], "a") as log:
            log.write(f"out {os.getpid()}\\n")
"""


@pytest.mark.slow
def test_registry_lock_six_contenders_take_turns(lock_store: Store, tmp_path: Path) -> None:
    """Six processes taking the lock six times each on one store: every acquisition is
    exclusive, none fails and none takes over a live holder's lock as stale (both happened
    when a holder released between a contender's create and its read of the lock)."""
    import subprocess

    lock_store.client().search_registered_models()  # the schema, made once
    log = tmp_path / "turns.txt"
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(log)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = [c.communicate(timeout=300)[0] for c in contenders]
    assert [c.returncode for c in contenders] == [0] * 6, outputs
    assert not any("taking over" in out for out in outputs), outputs
    lines = log.read_text().splitlines()
    assert len(lines) == 6 * 6 * 2
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter.split() == ["in", leave.split()[1]] and leave.startswith("out"), lines
    assert _lock_models(lock_store) == []
