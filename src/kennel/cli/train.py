"""``kennel train``: one tracked training run, its result as JSON."""

from __future__ import annotations

import argparse
import logging

from kennel.cli.common import emit

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from kennel.tracking import ui_hint
    from kennel.train import run_training

    outcome = run_training(
        args.config, args.overrides, output_dir=args.output_dir, log_model_if=args.log_model_if
    )
    emit(outcome.to_dict(), args)
    logger.info("%s", ui_hint(outcome.experiment_id, outcome.tracking_uri))
    return 0
