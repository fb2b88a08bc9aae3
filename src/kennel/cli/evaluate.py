"""``kennel evaluate``: score a model URI on the test split or a file; result as JSON."""

from __future__ import annotations

import argparse
import logging

from kennel.cli.common import emit, prepare
from kennel.errors import UserError

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from kennel import tracking
    from kennel.config import load_config
    from kennel.outputs import output_folder
    from kennel.score.evaluate import evaluate

    # MLproject passes --data "" when no file is given.
    data_file = (args.data or "").strip() or None
    model_uri = (args.model_uri or "").strip()
    if not model_uri:
        raise UserError("--model-uri is empty; expected runs:/<id>/model or models:/<name>/<N>")
    config = load_config(args.config, args.overrides).config
    with output_folder(config, args.output_dir, kind="evaluate") as output_dir:
        config = prepare(args, output_dir=output_dir)
        uri = tracking.resolve_tracking_uri(config)
        with tracking.lost_store_guard(uri):
            result = evaluate(
                config, model_uri, data_file=data_file, output_dir=output_dir,
                explain=args.explain,
            )  # fmt: skip
    emit(result, args)
    if result["experiment_id"]:
        logger.info("%s", tracking.ui_hint(result["experiment_id"], uri))
    return 0
