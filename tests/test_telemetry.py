"""kennel's commands turn MLflow's usage telemetry off unless the user set
``MLFLOW_DISABLE_TELEMETRY``: its background threads change the process environment while the
main thread sets ``MLFLOW_EXPERIMENT_ID``, which crashed ``kennel search`` (SIGSEGV in
``getenv``). Each case runs in a fresh interpreter without the variables (pytest's, CI's) that
make MLflow turn its telemetry off by itself, so the control case really has it on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: What MLflow 3.17 reads as "CI or testing: no telemetry" (mlflow/telemetry/utils.py).
CI_MARKERS = (
    "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL",
    "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE",
    "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME",
    "RUNBOT_WORKER_ID", "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY",
)  # fmt: skip

PROBE = """
import json, os, sys, threading
if sys.argv[1] == "kennel":  # what a kennel command does before anything imports MLflow
    from kennel.cli.manager import main
    main(["config", "-c", "configs/cat.yaml"])
import mlflow
from mlflow.telemetry.client import get_telemetry_client
print(json.dumps({
    "client": get_telemetry_client() is not None,
    "switch": os.environ.get("MLFLOW_DISABLE_TELEMETRY"),
    "threads": sorted(t.name for t in threading.enumerate()),
}))
"""


def probe(how: str, tmp_path: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in CI_MARKERS}
    clean |= {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", **env}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE), how],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=clean,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plain_mlflow_here_has_telemetry_on(tmp_path: Path) -> None:
    """The control: without kennel, MLflow starts its telemetry in this environment."""
    out = probe("plain", tmp_path)
    assert out["client"] and out["switch"] is None


def test_a_kennel_command_turns_it_off_for_itself_and_its_children(tmp_path: Path) -> None:
    out = probe("kennel", tmp_path)
    assert not out["client"] and out["switch"] == "true"  # children inherit the variable
    assert not [name for name in out["threads"] if "Telemetry" in name]


@pytest.mark.parametrize("value", ["false", "true"])
def test_the_users_setting_wins(tmp_path: Path, value: str) -> None:
    out = probe("kennel", tmp_path, MLFLOW_DISABLE_TELEMETRY=value)
    assert out["switch"] == value and out["client"] == (value == "false")
