"""What several commands share: config + output folder + logging set-up, results out."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from kennel.config import Config, load_config
from kennel.logging_setup import setup_logging
from kennel.util import write_json

logger = logging.getLogger(__name__)


def prepare(args: argparse.Namespace, *, output_dir: Path | None = None) -> Config:
    """Resolve the config and (re)configure logging, into ``output_dir`` if given."""
    from kennel.manager import environment_secrets

    config = load_config(getattr(args, "config", None), getattr(args, "overrides", []) or []).config
    log_file = output_dir / config.logging.file_name if output_dir is not None else None
    setup_logging(
        config.logging.level,
        log_file,
        secrets=[*config.secret_values(), *environment_secrets()],
    )
    return config


def emit(result: dict[str, Any], args: argparse.Namespace) -> None:
    """``--output-json PATH`` and one JSON line on stdout for programs that launched us."""
    import json

    if getattr(args, "output_json", None):
        write_json(args.output_json, result)
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def tracking_guard(exc: BaseException, uri: str | None) -> None:
    """Turn a lost tracking server into a user error (exit 2) that names it."""
    from kennel.tracking import TrackingUnavailable, check_reachable

    if uri is None or isinstance(exc, TrackingUnavailable):
        return
    try:
        check_reachable(uri)
    except TrackingUnavailable as lost:
        raise TrackingUnavailable(f"{lost} (lost during the command)") from None
