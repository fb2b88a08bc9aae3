"""What several commands share: the config with logging set up, results out as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kennel.config import Config, load_config
from kennel.logging_setup import log_command
from kennel.util import write_json


def prepare(args: argparse.Namespace, *, output_dir: Path | None = None) -> Config:
    """Resolve the config and (re)configure logging, into ``output_dir`` if given."""
    config = load_config(getattr(args, "config", None), getattr(args, "overrides", []) or []).config
    log_command(config, output_dir)
    return config


def emit(result: dict[str, Any], args: argparse.Namespace) -> None:
    """``--output-json PATH`` and one JSON line on stdout for programs that launched us."""
    if getattr(args, "output_json", None):
        write_json(args.output_json, result)
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
