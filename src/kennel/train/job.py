"""A training as a job: from a config file and overrides to a finished run, with its own
output folder and log file. ``kennel train`` and the warm trial server's children run this."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from kennel.train.outcome import ModelGate, TrainOutcome

logger = logging.getLogger(__name__)


def run_training(
    config_file: str | None,
    overrides: Sequence[str] = (),
    *,
    output_dir: str | None = None,
    log_model_if: str | None = None,
) -> TrainOutcome:
    """Resolve the config, make the run's folder, log into it, train. A tracking server lost
    during the run is a user error naming it (exit 2)."""
    from kennel import tracking
    from kennel.config import load_config
    from kennel.logging_setup import log_command
    from kennel.outputs import output_folder
    from kennel.train.pipeline import train

    gate = ModelGate.parse(log_model_if) if log_model_if else None
    config = load_config(config_file, list(overrides)).config
    with output_folder(config, output_dir) as folder:
        log_command(config, folder)
        logger.info("training %s (pid %d); output in %s", config.model.family, os.getpid(), folder)
        uri = tracking.resolve_tracking_uri(config)
        with tracking.lost_store_guard(uri):
            return train(config, folder, model_gate=gate)
