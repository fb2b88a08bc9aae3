"""The garbage collector in kennel's own processes: paused while they import, then frozen
(:mod:`kennel.collector`). Each check runs in a fresh interpreter: freezing this test
process's heap would keep what later tests drop."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, TEST_CONFIGS, Store, cli_env, run_cli


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_paused_only_in_kennels_own_process_and_resumed_by_the_outermost() -> None:
    result = _python(
        """
        import gc
        from kennel import collector

        # A notebook or a test calling kennel: its collector is left alone.
        with collector.paused():
            assert gc.isenabled()
        assert gc.get_freeze_count() == 0

        collector.own_process()
        garbage = [[] for _ in range(1000)]
        with collector.paused():
            assert not gc.isenabled()
            with collector.paused():  # nested: the inner one resumes nothing
                assert not gc.isenabled()
            assert not gc.isenabled() and gc.get_freeze_count() == 0
        assert gc.isenabled()
        assert gc.get_freeze_count() >= 1000  # what existed, frozen

        try:  # an error inside still resumes
            with collector.paused():
                raise KeyError("x")
        except KeyError:
            pass
        assert gc.isenabled()

        import weakref

        class Node:
            pass

        def cycle():  # garbage only the cyclic collector can free
            node = Node()
            node.me = node
            return weakref.ref(node)

        with collector.paused():
            kept = cycle()
        assert kept() is not None  # frozen with the rest: never freed
        with collector.paused(collect=True):
            freed = cycle()
        assert freed() is None and gc.isenabled()

        gc.disable()  # the user's choice stands
        with collector.paused():
            pass
        assert not gc.isenabled()
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_a_kennel_train_process_freezes_its_imports(store: Store, tmp_path: Path) -> None:
    """The command line's process: no full collections over MLflow's and scikit-learn's
    objects after the set-up (they are frozen), and the collector on again for the rest."""
    report = tmp_path / "gc.json"
    result = _python(
        f"""
        import atexit, gc, json, sys

        def record():  # run by kennel's exit, after the command
            state = {{"frozen": gc.get_freeze_count(), "enabled": gc.isenabled()}}
            open({str(report)!r}, "w").write(json.dumps(state))

        atexit.register(record)
        sys.argv = ["run.py", "train", "-c", {str(TEST_CONFIGS / "tiny_cat.yaml")!r},
                    "--output-dir", {str(tmp_path / "out")!r}]
        from kennel.cli import start
        start()
        """,
        env=store.env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads(report.read_text())
    assert state["enabled"] is True
    assert state["frozen"] > 100_000, state  # MLflow, pandas, scikit-learn, LightGBM...
    assert (tmp_path / "out" / "plots").is_dir()
    assert list((tmp_path / "out" / "plots").glob("*.png"))  # the plot process exits fast


@pytest.mark.slow
def test_the_trial_server_freezes_before_it_forks_trials(store: Store) -> None:
    out = store.folder / "search-frozen"
    result = run_cli(
        "search", "-c", str(TEST_CONFIGS / "tiny_cat.yaml"), "--n-trials", "2",
        "--n-jobs", "1", "--output-dir", str(out), "search.sampler=random",
        "tracking.log_model=false", "tracking.log_plots=false", env=store.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "trial-server.log").read_text()
    frozen = [line for line in log.splitlines() if "objects frozen" in line]
    assert len(frozen) == 1, log
    count = int(frozen[0].rsplit(";", 1)[1].split()[0])
    assert count > 100_000, frozen[0]
    # Before the first fork: the store built, its connections closed (tests/test_warm_trials).
    assert log.count("tracking store opened and closed again") == 1, log
    assert json.loads(result.stdout.strip().splitlines()[-1])["counts"] == {"COMPLETE": 2}
