"""``kennel search``: hyperparameter search, every trial a ``kennel train`` process.

CLI flags (``--n-trials``, ``--n-jobs``, ``--storage``, ``--study-name``) override the
``search.*`` config values. Exit codes: 0 done, 2 bad space/config, 1 no trial completed,
130 on Ctrl-C and 143 on SIGTERM (running trials killed, their runs marked KILLED).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from kennel.cli.common import emit
from kennel.config import Config

logger = logging.getLogger(__name__)


def resolve(args: argparse.Namespace) -> Config:
    """The config with the command's flags applied (validated like any override)."""
    from pydantic import SecretStr

    from kennel.config import load_config

    flags = list(args.overrides or [])
    if args.n_trials is not None:
        flags.append(f"search.n_trials={args.n_trials}")
    if args.n_jobs is not None:
        flags.append(f"search.n_jobs={args.n_jobs}")
    if args.study_name is not None:
        flags.append(f"search.study_name={json.dumps(args.study_name)}")
    config = load_config(args.config, flags).config
    if args.storage:
        config.search.storage = SecretStr(args.storage)
    return config


def run(args: argparse.Namespace) -> int:
    from kennel import tracking
    from kennel.logging_setup import log_command
    from kennel.outputs import output_folder
    from kennel.search import SearchInterrupted, run_search, storage_secrets

    config = resolve(args)
    kind = f"search-{config.model.family}"
    with output_folder(config, args.output_dir, kind=kind) as output_dir:
        log_command(config, output_dir, secrets=storage_secrets(config))
        logger.info("search over %s; output in %s", config.model.family, output_dir)
        uri = tracking.resolve_tracking_uri(config)
        try:
            with tracking.lost_store_guard(uri):
                outcome = run_search(
                    config, output_dir, list(args.overrides or []), config_file=args.config
                )
        except SearchInterrupted as exc:
            sys.stderr.write(f"kennel search: interrupted ({exc}); running trials stopped\n")
            return exc.exit_code
    emit(outcome.to_dict(), args)
    return 0
