"""``kennel train``: one tracked training run, its result as JSON."""

from __future__ import annotations

import argparse
import logging

from kennel.commands.common import emit, prepare, tracking_guard

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from kennel.config import load_config
    from kennel.pipeline import output_dir_for, train
    from kennel.tracking import resolve_tracking_uri, runs_table_url

    config = load_config(args.config, args.overrides).config
    output_dir = output_dir_for(config, args.output_dir)
    config = prepare(args, output_dir=output_dir)
    logger.info("training %s; output in %s", config.model.family, output_dir)
    uri = resolve_tracking_uri(config)
    try:
        outcome = train(config, output_dir)
    except Exception as exc:
        tracking_guard(exc, uri)
        raise
    emit(outcome.to_dict(), args)
    logger.info("compare runs: %s", runs_table_url(outcome.experiment_id, outcome.tracking_uri))
    return 0
