"""Serving an environment: ``kennel serve`` runs MLflow's own scoring app (the app ``mlflow
models serve`` runs, same routes and request formats) behind a guard that answers 413 to
oversized requests (:mod:`kennel.serve.app`); plus the ``mlflow models serve`` command line,
the server's environment, waiting for ``/ping`` and running it with signals forwarded.

kennel does not implement a scoring server of its own: ``mlflow models serve`` serves every
kennel model (any family) the same way. These helpers are shared by ``kennel serve`` and the
tests.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.errors import UserError

if TYPE_CHECKING:
    from kennel.config import Config

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
    runs) behind kennel's request guard (:mod:`kennel.serve.app`), under uvicorn as MLflow
    runs it. Returns the command and the environment entries it needs on top of
    :func:`serve_env`. ``model`` is a local model folder or any model URI."""
    from kennel.serve import app as serving_app

    command = [
        python or sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "kennel.serve.app:create_app",
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
    its exit code: 0 when it stopped because of a signal passed on (a server asked to stop
    that stopped has done its job: uvicorn re-raises the signal after its graceful
    shutdown), else its own code (``128 + n`` for a signal nobody sent through here)."""
    child = subprocess.Popen(list(command), env=dict(env) if env is not None else None)
    forwarded: set[int] = set()

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            forwarded.add(signum)
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code < 0 and -code in forwarded or code - 128 in forwarded:
        return 0
    return 128 - code if code < 0 else code


@dataclass(frozen=True)
class ServerOptions:
    """How ``kennel serve`` runs the scoring app (checked by :meth:`check`)."""

    port: int = 5001
    host: str = "127.0.0.1"
    workers: int = 1
    timeout: int = 60
    max_request_mb: float = 32
    max_columns: int = 1024

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"--port {self.port} is not a TCP port; expected 1-65535")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers} is not allowed; expected a number >= 1")
        if self.timeout < 1:
            raise UserError(f"--timeout {self.timeout} is not allowed; expected seconds >= 1")
        if not self.max_request_mb > 0:
            raise UserError(
                f"--max-request-mb {self.max_request_mb:g} is not allowed; expected megabytes > 0"
            )
        if self.max_columns < 1:
            raise UserError(
                f"--max-columns {self.max_columns} is not allowed; expected a number >= 1"
            )


def pinned_version(
    config: Config, env: str, options: ServerOptions, model_name: str | None = None
) -> tuple[str, str, int, str]:
    """(tracking URI, model name, version, ``models:/<name>/<version>``) of what alias ``env``
    names now, every input checked first (exit 2 with a clear message instead of a server
    that dies on start)."""
    from kennel import registry, tracking
    from kennel.serve.models import alias_version

    registry.check_environment(env, config)
    options.check()
    uri = tracking.configure(config)
    name = model_name or registry.default_model_name(config)
    version = alias_version(name, env)
    return uri, name, version, f"models:/{name}/{version}"


def command_line(
    config: Config, env: str, options: ServerOptions, model_name: str | None = None
) -> str:
    """The environment and uvicorn command ``kennel serve`` would run (for ``--print-command``),
    the tracking URI without its password."""
    from kennel.util import redact_url

    uri, _, _, pinned = pinned_version(config, env, options, model_name)
    command, extra = guarded_serve_command(pinned, **asdict(options))
    extra["MLFLOW_TRACKING_URI"] = redact_url(uri)
    assignments = [f"{key}={shlex.quote(value)}" for key, value in extra.items()]
    return " ".join([*assignments, shlex.join(command)])


def capture_environment(
    config: Config, options: ServerOptions, name: str, version: int, alias: str
) -> dict[str, str]:
    """The server's capture settings (``KENNEL_SERVE_CAPTURE``), from ``capture.*``, with a
    local folder made absolute and created readable by its owner only."""
    from kennel.serve.app import CAPTURE_ENV

    settings = config.capture.model_dump()
    path = str(settings["path"])
    if "://" not in path:
        folder = Path(path).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = str(folder)
    settings.update(
        path=path, model_name=name, model_version=str(version), model_alias=alias,
        workers=options.workers,
    )  # fmt: skip
    share = (
        f"{config.capture.sample:.0%} of requests" if config.capture.sample < 1 else "every request"
    )
    logger.info(
        "capturing %s to %s (Parquet, a new file every %d rows or %g s%s); counters at "
        "GET /capture",
        share,
        path,
        config.capture.max_file_rows,
        config.capture.max_file_seconds,
        f", kept {config.capture.retention_days:g} days" if config.capture.retention_days else "",
    )
    return {CAPTURE_ENV: json.dumps(settings)}


def serve_environment(
    config: Config, env: str, options: ServerOptions, *, model_name: str | None = None
) -> int:
    """Serve the version alias ``env`` names: pinned, downloaded and checked once (a damaged
    model is one line), then MLflow's scoring app under uvicorn with the same tracking store;
    Ctrl-C / SIGTERM are forwarded and its exit code returned."""
    from kennel.serve.models import download, load_model
    from kennel.util import redact_url

    uri, name, version, pinned = pinned_version(config, env, options, model_name)
    folder = Path(tempfile.mkdtemp(prefix="kennel-serve-"))
    try:
        # Download and load it once here: every worker then reads the same local files,
        # and a damaged model is one line now, not a server that dies starting.
        local = download(pinned, folder)
        load_model(str(local), shown=pinned)
        command, extra = guarded_serve_command(str(local), **asdict(options))
        if config.capture.path:
            extra.update(capture_environment(config, options, name, version, env))
        logger.info(
            "serving models:/%s@%s (version %d) at http://%s:%d/invocations; tracking store "
            "%s; requests over %s MB or %d columns get 413",
            name,
            env,
            version,
            options.host,
            options.port,
            redact_url(uri),
            f"{options.max_request_mb:g}",
            options.max_columns,
        )
        logger.debug("running %s", shlex.join(command))
        return run_forwarding_signals(command, {**serve_env(uri), **extra})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
