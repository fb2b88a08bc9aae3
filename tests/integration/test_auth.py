"""A tracking server with MLflow's authentication app: real users, real permissions.

The server (``mlflow server --app-name basic-auth``, SQLite backend, proxied artifacts) is
started here on 127.0.0.1 with an admin; users are created through MLflow's own auth API.
Each kennel command runs in a fresh interpreter with only the standard MLflow credentials
(``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``) in its environment.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_CONFIGS, cli_env, invoke_server, run_cli
from tests.integration.conftest import BIN, HOST, clean_env, free_port, kill_group, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY_CAT = TEST_CONFIGS / "tiny_cat.yaml"
EXPERIMENT = "auth-tests"
MODEL = "auth-model"
SERVE = [sys.executable, str(ROOT / "run.py")]


class AuthServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://{HOST}:{self.port}"
        self.admin_password = secrets.token_urlsafe(16)
        self.passwords: dict[str, str] = {"admin": self.admin_password}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        config = self.folder / "auth.ini"
        config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.folder / 'auth.db'}\n"
            "admin_username = admin\n"
            f"admin_password = {self.admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        log = self.folder / "server.log"
        env = clean_env(
            MLFLOW_AUTH_CONFIG_PATH=str(config),
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        )
        cmd = [
            str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--serve-artifacts", "--host", HOST, "--port", str(self.port), "--workers", "2",
        ]  # fmt: skip
        with open(log, "wb") as handle:
            self.proc = subprocess.Popen(
                cmd, cwd=self.folder, env=env, stdout=handle, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_http(f"{self.uri}/health", self.proc, 120, log)

    def stop(self) -> None:
        if self.proc:
            kill_group(self.proc, signal.SIGTERM, wait=5)

    def as_user(self, user: str):
        """(auth client, tracking client) of ``user`` (credentials set for this process)."""
        import os

        from mlflow.server import get_app_client
        from mlflow.tracking import MlflowClient

        os.environ["MLFLOW_TRACKING_USERNAME"] = user
        os.environ["MLFLOW_TRACKING_PASSWORD"] = self.passwords[user]
        return get_app_client("basic-auth", tracking_uri=self.uri), MlflowClient(self.uri)

    def add_user(self, user: str) -> None:
        auth, _ = self.as_user("admin")
        self.passwords[user] = f"{user}-{secrets.token_urlsafe(12)}"
        auth.create_user(user, self.passwords[user])

    def env(self, user: str, tmp: Path, password: str | None = None) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password or self.passwords[user],
            "KENNEL_TRAINING__OUTPUT_ROOT": str(tmp / f"outputs-{user}"),
            "KENNEL_TRACKING__EXPERIMENT": EXPERIMENT,
            "KENNEL_REGISTRY__MODEL_NAME": MODEL,
        }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    import os

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    auth = AuthServer(tmp_path_factory.mktemp("auth-server"))
    try:
        auth.start()
        for user in ("alice", "bob", "carol"):
            auth.add_user(user)
        yield auth
    finally:
        auth.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def kennel(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=clean_env(**env), cwd=cwd, timeout=300)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, result
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1]


def test_read_edit_manage_are_enforced_by_the_server(server: AuthServer, tmp_path: Path) -> None:
    import mlflow

    admin_auth, admin = server.as_user("admin")
    experiment = admin.create_experiment(EXPERIMENT)
    admin_auth.grant_user_permission("alice", "experiment", experiment, "EDIT")

    # alice (EDIT on the experiment) trains; registering a new model makes her its MANAGE.
    alice = server.env("alice", tmp_path)
    result = kennel(
        "train", "-c", str(TINY_CAT), "registry.auto_promote=dev", env=alice, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads(result.stdout.strip().splitlines()[-1])
    assert trained["registered_version"] == 1

    bob = server.env("bob", tmp_path)  # READ: the server's default permission
    # READ can evaluate (not recorded: no run may be created) and predict.
    result = kennel("evaluate", "-c", str(TINY_CAT), "--model-uri", f"models:/{MODEL}@dev", env=bob, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(result.stdout.strip().splitlines()[-1])
    assert evaluated["status"] == "NOT_RECORDED" and evaluated["metrics"]["test_roc_auc"] > 0.9
    assert "permission denied: user 'bob' cannot create runs in experiment" in result.stderr
    rows = tmp_path / "rows.csv"
    from sklearn.datasets import load_breast_cancer

    load_breast_cancer(as_frame=True).frame.drop(columns=["target"]).head(20).to_csv(
        rows, index=False
    )
    out = tmp_path / "predictions.csv"
    result = kennel("predict", "--model-uri", f"models:/{MODEL}@dev", "--input", str(rows), "--output", str(out), env=bob, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(out.read_text().splitlines()) == 21
    # ... and serve (the model is downloaded with READ; nothing is written to the store).
    port = free_port()
    log = tmp_path / "serve-bob.log"
    with open(log, "wb") as handle:
        serve = subprocess.Popen(
            [*SERVE, "serve", "-c", str(TINY_CAT), "--env", "dev", "-p", str(port)],
            cwd=tmp_path, env=cli_env(bob), stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(f"http://{HOST}:{port}/ping", serve, 180, log)
        import pandas as pd

        served = invoke_server(f"http://{HOST}:{port}", pd.read_csv(rows))
    finally:
        kill_group(serve, signal.SIGTERM, wait=10)
    predicted = pd.read_csv(out)
    assert served["prediction"].astype(str).tolist() == predicted["prediction"].astype(str).tolist()

    # READ cannot train, promote or roll back: one line, exit 2, nothing moved or recorded.
    _, reader = server.as_user("bob")
    tags_before = reader.get_model_version(MODEL, "1").tags
    result = kennel("promote", "-c", str(TINY_CAT), "--version", "1", "--to", "staging", env=bob, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert last_line(result) == (
        f"kennel promote: error: permission denied: user 'bob' cannot move aliases of "
        f"registered model '{MODEL}' (needs EDIT)"
    )
    assert "staging" not in reader.get_registered_model(MODEL).aliases
    assert reader.get_model_version(MODEL, "1").tags == tags_before  # no audit entry
    result = kennel("promote", "-c", str(TINY_CAT), "--to", "dev", "--rollback", env=bob, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    result = kennel("train", "-c", str(TINY_CAT), env=bob, cwd=tmp_path)
    assert result.returncode == 2
    assert last_line(result) == (
        f"kennel train: error: permission denied: user 'bob' cannot create runs in "
        f"experiment '{EXPERIMENT}' (needs EDIT)"
    )
    assert len(reader.search_model_versions(f"name='{MODEL}'")) == 1

    # A wrong password: exit 2, one line, the password never shown.
    wrong = "not-bobs-password-123"
    result = kennel("train", "-c", str(TINY_CAT), env=server.env("bob", tmp_path, wrong), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert last_line(result).startswith("kennel train: error: authentication failed:")
    assert wrong not in result.stderr + result.stdout

    # MANAGE can grant: alice (MANAGE on her model) makes carol an editor; READ bob cannot.
    alice_auth, _ = server.as_user("alice")
    alice_auth.grant_user_permission("carol", "registered_model", MODEL, "EDIT")
    bob_auth, _ = server.as_user("bob")
    with pytest.raises(mlflow.exceptions.MlflowException, match="403|PERMISSION_DENIED"):
        bob_auth.grant_user_permission("bob", "registered_model", MODEL, "EDIT")
    carol = server.env("carol", tmp_path)
    result = kennel("promote", "-c", str(TINY_CAT), "--version", "1", "--to", "staging", env=carol, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert reader.get_registered_model(MODEL).aliases["staging"] == "1"

    # No password reached anything a run wrote: params, tags, artifacts, local files.
    _, client = server.as_user("admin")
    runs = client.search_runs([experiment])
    assert runs
    secret_values = [server.passwords[u] for u in ("alice", "bob", "carol")] + [wrong]
    for run in runs:
        text = json.dumps([run.data.params, run.data.tags])
        folder = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            dst_path=str(tmp_path / "dl" / run.info.run_id),
            tracking_uri=server.uri,
        )
        for path in Path(folder).rglob("*"):
            if path.is_file():
                text += path.read_bytes().decode(errors="replace")
        assert not any(s in text for s in secret_values), run.info.run_id
    for path in tmp_path.rglob("*"):
        if path.is_file() and "dl" not in path.parts:
            content = path.read_bytes().decode(errors="replace")
            assert not any(s in content for s in secret_values), path
