"""``kennel serve``: serve the version an environment alias points at, with MLflow's own
server (``mlflow models serve --env-manager local``).

A thin wrapper: it checks the environment and the alias first (exit 2 with a clear message
instead of a server that dies on start), points the server at the same tracking store,
forwards Ctrl-C / SIGTERM to it and exits with its exit code.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from kennel.commands.common import prepare
from kennel.errors import UserError

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from kennel import registry, tracking
    from kennel.serving import load_model, run_forwarding_signals, serve_command, serve_env
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
    command = serve_command(
        model_uri, port=args.port, host=args.host, workers=args.workers, timeout=args.timeout
    )
    if args.print_command:
        sys.stdout.write(shlex.join(command) + "\n")
        sys.stdout.flush()
        return 0
    # Load it once here: a damaged model is one line now, not a server that dies starting.
    load_model(f"models:/{name}/{version}")
    logger.info(
        "serving %s (version %d) at http://%s:%d/invocations; tracking store %s",
        model_uri,
        version,
        args.host,
        args.port,
        redact_url(uri),
    )
    logger.debug("running %s", shlex.join(command))
    return run_forwarding_signals(command, serve_env(uri))


def _check_options(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port; expected 1-65535")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers} is not allowed; expected a number >= 1")
    if args.timeout < 1:
        raise UserError(f"--timeout {args.timeout} is not allowed; expected seconds >= 1")


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
