"""Serving helpers: the ``mlflow models serve`` command line, its environment, waiting for
``/ping``, and running it with signals forwarded.

kennel does not implement a server of its own: ``mlflow models serve`` serves every kennel
model (any family) the same way. These helpers are shared by ``kennel serve`` and the tests.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.errors import UserError
from kennel.util import first_line

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

#: Signals a wrapper passes on to the server it started.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def serve_command(
    model_uri: str,
    *,
    port: int = 5001,
    host: str = "127.0.0.1",
    workers: int = 1,
    timeout: int = 60,
    python: str | None = None,
) -> list[str]:
    """``python -m mlflow models serve`` for ``model_uri`` in the current environment.

    ``--env-manager local`` always: MLflow's default (virtualenv) would build a fresh
    environment per model, minutes per start and network access. The interpreter is this
    one (``sys.executable``), so the server sees the same packages whatever ``PATH`` says.
    """
    return [
        python or sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-p",
        str(port),
        "-h",
        host,
        "-w",
        str(workers),
        "-t",
        str(timeout),
    ]


def guarded_serve_command(
    model: str,
    *,
    port: int = 5001,
    host: str = "127.0.0.1",
    workers: int = 1,
    timeout: int = 60,
    max_request_mb: float = 32,
    max_columns: int = 1024,
    python: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """What ``kennel serve`` runs: MLflow's scoring app (the one ``mlflow models serve``
    runs) behind kennel's request guard (:mod:`kennel.serving_app`), under uvicorn as MLflow
    runs it. Returns the command and the environment entries it needs on top of
    :func:`serve_env`. ``model`` is a local model folder or any model URI."""
    from kennel import serving_app

    command = [
        python or sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "kennel.serving_app:create_app",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = {
        serving_app.MODEL_ENV: model,
        serving_app.MAX_BYTES_ENV: str(int(max_request_mb * 1024 * 1024)),
        serving_app.MAX_COLUMNS_ENV: str(max_columns),
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(timeout),
    }
    return command, env


def serve_env(tracking_uri: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``MLFLOW_TRACKING_URI`` set, and this interpreter's
    ``bin`` folder first on ``PATH`` (MLflow starts ``uvicorn`` by name)."""
    env = dict(os.environ if base is None else base)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH") or os.defpath
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([bin_dir, path])
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_ping(
    base_url: str,
    *,
    timeout: float = 120.0,
    process: subprocess.Popen | None = None,
    interval: float = 0.25,
) -> float:
    """Poll ``<base_url>/ping`` until it answers 200; returns the seconds waited.

    Raises ``TimeoutError`` after ``timeout`` seconds, ``RuntimeError`` as soon as
    ``process`` (the server, if given) has exited.
    """
    started = time.monotonic()
    url = base_url.rstrip("/") + "/ping"
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(interval)


def run_forwarding_signals(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` in the foreground, pass SIGINT/SIGTERM/SIGHUP on to it, and return
    its exit code (``128 + n`` style codes from a signal are returned as the shell does)."""
    child = subprocess.Popen(list(command), env=dict(env) if env is not None else None)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


# ---------------------------------------------------------------------------- model URIs
@dataclass(frozen=True)
class ModelRef:
    """What a model URI points at in the registry, when it does."""

    uri: str
    name: str | None = None
    version: int | None = None
    run_id: str | None = None


def resolve_model_uri(uri: str) -> ModelRef:
    """Check ``runs:/<id>/<path>``, ``models:/<name>/<version>`` and ``models:/<name>@<alias>``
    against the tracking store and say which registered version they are (if any).

    Raises ``UserError`` naming the missing run, model, version or alias. Other URIs (local
    paths, ``s3://`` ...) are returned as they are; loading them reports their errors.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :].strip("/")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if not name or not alias:
                raise UserError(f"bad model URI '{uri}'; expected models:/<name>@<alias>")
            _check_registered(client, name)
            try:
                mv = client.get_model_version_by_alias(name, alias)
            except MlflowException:
                raise UserError(f"no version of '{name}' holds alias '{alias}'") from None
            return ModelRef(uri, name, int(mv.version), mv.run_id)
        name, _, version = rest.rpartition("/")
        if not name or not version:
            raise UserError(
                f"bad model URI '{uri}'; expected models:/<name>/<version> or "
                "models:/<name>@<alias>"
            )
        _check_registered(client, name)
        if version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise UserError(f"registered model '{name}' has no versions")
            mv = max(versions, key=lambda v: int(v.version))
            return ModelRef(uri, name, int(mv.version), mv.run_id)
        if not version.isdigit():
            raise UserError(
                f"bad model version '{version}' in '{uri}'; expected a number, 'latest' or "
                "models:/<name>@<alias>"
            )
        try:
            mv = client.get_model_version(name, version)
        except MlflowException:
            raise UserError(f"model '{name}' has no version {version}") from None
        return ModelRef(uri, name, int(mv.version), mv.run_id)
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].strip("/").partition("/")
        if not run_id or not path:
            raise UserError(f"bad model URI '{uri}'; expected runs:/<run_id>/<artifact path>")
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise UserError(f"no MLflow run '{run_id}' in the tracking store") from None
        tags = run.data.tags
        registered = tags.get("kennel.registered_model")
        version = tags.get("kennel.registered_version")
        if registered and version and version.isdigit() and path == "model":
            return ModelRef(uri, registered, int(version), run_id)
        return ModelRef(uri, run_id=run_id)
    return ModelRef(uri)


def _check_registered(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise UserError(f"registered model '{name}' does not exist") from None


def load_model(uri: str, *, shown: str | None = None) -> PyFuncModel:
    """``mlflow.pyfunc.load_model`` with a user error (exit 2) for a URI that does not load.
    The error names ``shown`` (the model URI a local copy came from) when given."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    name = shown or uri
    try:
        return mlflow.pyfunc.load_model(uri)
    except UserError as exc:  # kennel's own checks while loading (a damaged bundle)
        raise UserError(f"cannot load model '{name}': {exc}") from None
    except (MlflowException, OSError, ValueError) as exc:
        first = first_line(exc)
        raise UserError(f"cannot load model '{name}': {first}") from None


def required_columns(model: PyFuncModel) -> list[str]:
    """Input columns the model's signature marks as required (empty if it has none)."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return []
    return [spec.name for spec in schema.inputs if getattr(spec, "required", True)]


def explain(exc: BaseException) -> str:
    """One line saying why MLflow refused an input: the part after its last ``Error:``
    (its messages start with a repr of the whole frame and schema), else the first line."""
    text = str(exc).strip()
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1].strip()
    lines = text.splitlines()
    return lines[0] if lines else type(exc).__name__
