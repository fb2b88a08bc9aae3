"""``kennel train``: one tracked training run, its result as JSON."""

from __future__ import annotations

import argparse
import logging
import os

from kennel.commands.common import emit, prepare, tracking_guard

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from kennel.config import load_config
    from kennel.pipeline import ModelGate, output_dir_for, train
    from kennel.tracking import resolve_tracking_uri, runs_table_url

    gate = ModelGate.parse(args.log_model_if) if getattr(args, "log_model_if", None) else None
    config = load_config(args.config, args.overrides).config
    output_dir = output_dir_for(config, args.output_dir)
    config = prepare(args, output_dir=output_dir)
    logger.info("training %s (pid %d); output in %s", config.model.family, os.getpid(), output_dir)
    uri = resolve_tracking_uri(config)
    try:
        outcome = train(config, output_dir, model_gate=gate)
    except Exception as exc:
        tracking_guard(exc, uri)
        raise
    emit(outcome.to_dict(), args)
    logger.info("compare runs: %s", runs_table_url(outcome.experiment_id, outcome.tracking_uri))
    return 0
