"""Shared fixtures: an isolated environment, a CLI runner, tiny configs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No KENNEL_* or MLflow variables leak in from the developer's shell or .env."""
    for name in list(os.environ):
        if name.startswith(("KENNEL_", "MLFLOW_", "_KENNEL_")):
            monkeypatch.delenv(name, raising=False)
    # Pretend .env was already loaded so a developer's .env never affects tests.
    monkeypatch.setenv("_KENNEL_DOTENV_LOADED", "1")
    yield


def run_cli(
    *args: str,
    cwd: Path | str = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    use_run_py: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python run.py ARGS`` (or ``-m kennel.manager``) in a fresh interpreter."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("_KENNEL_")}
    full_env.update(env or {})
    cmd = (
        [PYTHON, str(ROOT / "run.py"), *args]
        if use_run_py
        else [PYTHON, "-m", "kennel.manager", *args]
    )
    return subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_cli
