"""``kennel predict``: batch prediction from a file or data set into another; result as JSON."""

from __future__ import annotations

import argparse
import sys

from kennel.cli.common import emit, prepare


def run(args: argparse.Namespace) -> int:
    from kennel.score.batch import predict

    config = prepare(args)
    result = predict(
        config,
        args.model_uri,
        args.input,
        args.output,
        chunk_size=args.chunk_size,
        progress=not args.no_progress and sys.stderr.isatty(),
        provenance=args.provenance,
        explain=args.explain,
    )
    emit(result, args)
    return 0
