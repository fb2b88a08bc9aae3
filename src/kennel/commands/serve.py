"""``kennel serve``: serve the version an environment alias points at with MLflow's own
scoring app (the app ``mlflow models serve`` runs, same routes and request formats), behind
a guard that answers 413 to oversized requests (:mod:`kennel.serving_app`).

It checks the environment and the alias first (exit 2 with a clear message instead of a
server that dies on start), pins the version the alias names, downloads and checks the model
once (a damaged model is one line), starts uvicorn on it with the same tracking store,
forwards Ctrl-C / SIGTERM to it and exits with its exit code.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from kennel.commands.common import prepare
from kennel.errors import UserError
from kennel.util import first_line

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from kennel import registry, tracking
    from kennel.serving import (
        guarded_serve_command,
        load_model,
        run_forwarding_signals,
        serve_env,
    )
    from kennel.util import redact_url

    config = prepare(args)
    env = args.env
    if env not in config.registry.environments:
        raise UserError(
            f"unknown environment '{env}'; expected one of: "
            f"{', '.join(config.registry.environments)}"
        )
    _check_options(args)
    uri = tracking.configure(config)
    name = args.model_name or registry.default_model_name(config)
    version = _alias_version(name, env)
    model_uri = f"models:/{name}@{env}"
    pinned = f"models:/{name}/{version}"
    if args.print_command:
        command, extra = guarded_serve_command(pinned, **_server_options(args))
        extra["MLFLOW_TRACKING_URI"] = redact_url(uri)
        assignments = [f"{key}={shlex.quote(value)}" for key, value in extra.items()]
        sys.stdout.write(" ".join([*assignments, shlex.join(command)]) + "\n")
        sys.stdout.flush()
        return 0
    folder = Path(tempfile.mkdtemp(prefix="kennel-serve-"))
    try:
        # Download and load it once here: every worker then reads the same local files,
        # and a damaged model is one line now, not a server that dies starting.
        local = _download(pinned, folder)
        load_model(str(local), shown=pinned)
        command, extra = guarded_serve_command(str(local), **_server_options(args))
        logger.info(
            "serving %s (version %d) at http://%s:%d/invocations; tracking store %s; "
            "requests over %s MB or %d columns get 413",
            model_uri,
            version,
            args.host,
            args.port,
            redact_url(uri),
            f"{args.max_request_mb:g}",
            args.max_columns,
        )
        logger.debug("running %s", shlex.join(command))
        return run_forwarding_signals(command, {**serve_env(uri), **extra})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "port": args.port,
        "host": args.host,
        "workers": args.workers,
        "timeout": args.timeout,
        "max_request_mb": args.max_request_mb,
        "max_columns": args.max_columns,
    }


def _download(uri: str, folder: Path) -> Path:
    import mlflow.artifacts

    try:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(folder)))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any store error is one line for the user
        from kennel.access import as_user_error, refusal

        if refusal(exc):
            raise as_user_error(exc, f"download model '{uri}'", "READ") from None
        raise UserError(f"cannot load model '{uri}': {first_line(exc)}") from None


def _check_options(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port; expected 1-65535")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers} is not allowed; expected a number >= 1")
    if args.timeout < 1:
        raise UserError(f"--timeout {args.timeout} is not allowed; expected seconds >= 1")
    if not args.max_request_mb > 0:
        raise UserError(
            f"--max-request-mb {args.max_request_mb:g} is not allowed; expected megabytes > 0"
        )
    if args.max_columns < 1:
        raise UserError(f"--max-columns {args.max_columns} is not allowed; expected a number >= 1")


def _alias_version(name: str, env: str) -> int:
    """The version holding alias ``env`` of ``name``, or a user error saying what is missing."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise UserError(
            f"registered model '{name}' does not exist; train one or pass --model-name"
        ) from None
    try:
        return int(client.get_model_version_by_alias(name, env).version)
    except MlflowException:
        raise UserError(f"no version of '{name}' holds alias '{env}'") from None
