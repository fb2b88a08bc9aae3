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
    # A test that called mlflow.set_tracking_uri (or kennel's tracking.configure in-process)
    # must not point the next test's MLflow calls at its store: the global wins over the env.
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a kennel child process: this one's (without kennel's own
    ``_KENNEL_*`` markers, so the child loads ``.env`` itself) plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("_KENNEL_")}
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    cwd: Path | str = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    use_run_py: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python run.py ARGS`` (or ``-m kennel.cli.manager``) in a fresh interpreter."""
    full_env = cli_env(env)
    cmd = (
        [PYTHON, str(ROOT / "run.py"), *args]
        if use_run_py
        else [PYTHON, "-m", "kennel.cli.manager", *args]
    )
    return subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_cli


# ---------------------------------------------------------------- a shared tracked store
TEST_CONFIGS = ROOT / "tests" / "configs"


class Store:
    """A temporary SQLite tracking store and the environment that points at it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.env = {
            "MLFLOW_TRACKING_URI": self.uri,
            "KENNEL_TRAINING__OUTPUT_ROOT": str(folder / "outputs"),
        }

    def train(self, config: str | Path, *overrides: str, timeout: float = 600) -> dict:
        """``run.py train`` in a subprocess; returns its result.json as a dict."""
        import json

        out = self.folder / f"result-{len(list(self.folder.glob('result-*.json')))}.json"
        result = run_cli(
            "train",
            "-c",
            str(config),
            *overrides,
            "--output-json",
            str(out),
            env=self.env,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(out.read_text())

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def create_schema(self) -> None:
        """The schema, once, before several processes use the store (a fresh SQLite store
        migrated by two at once fails), as kennel creates it: MLflow's ``Default``
        experiment keeps its artifacts beside the file, not in the project folder."""
        from kennel.tracking.store import ensure_store

        ensure_store(self.uri)

    def create_experiment(self, name: str) -> str:
        """An experiment made before ``mlflow run --experiment-name`` uses it, with its
        artifacts beside the store (created by MLflow's CLI itself it would keep them in
        ``./mlruns`` of the folder the command ran in: here the project's)."""
        from kennel.tracking.store import artifact_root

        self.create_schema()
        return self.client().create_experiment(name, artifact_location=artifact_root(self.uri))


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store for the whole session (read-only users: do not move its aliases)."""
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def trained(shared_store: Store) -> dict[str, dict]:
    """A cat and a dog model trained once per session into ``shared_store`` as versions of
    the registered model ``breast-cancer`` (cat first)."""
    return {
        "cat": shared_store.train(TEST_CONFIGS / "tiny_cat.yaml"),
        "dog": shared_store.train(TEST_CONFIGS / "tiny_dog.yaml"),
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh store of this test's own (for tests that move aliases)."""
    return Store(tmp_path)


def invoke_server(base_url: str, rows):
    """POST ``rows`` (a DataFrame) to a scoring server as ``dataframe_split``; its
    predictions as a DataFrame. Missing values are sent as JSON nulls."""
    import json
    import urllib.request

    import pandas as pd

    clean = rows.astype(object).where(rows.notna(), None)
    body = json.dumps({"dataframe_split": clean.to_dict(orient="split")}, default=str).encode()
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return pd.DataFrame(json.loads(response.read())["predictions"])
