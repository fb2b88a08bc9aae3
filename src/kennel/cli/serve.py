"""``kennel serve``: serve the version an environment alias points at (see
:func:`kennel.serve.server.serve_environment`)."""

from __future__ import annotations

import argparse
import json
import sys

from kennel.cli.common import prepare


def run(args: argparse.Namespace) -> int:
    from kennel.serve.server import ServerOptions, command_line, serve_environment

    if args.capture:
        args.overrides = [*(args.overrides or []), f"capture.path={json.dumps(args.capture)}"]
    if args.capture_sample is not None:
        args.overrides = [*args.overrides, f"capture.sample={args.capture_sample}"]
    config = prepare(args)
    options = ServerOptions(
        port=args.port,
        host=args.host,
        workers=args.workers,
        timeout=args.timeout,
        max_request_mb=args.max_request_mb,
        max_columns=args.max_columns,
    )
    if args.print_command:
        sys.stdout.write(command_line(config, args.env, options, args.model_name) + "\n")
        return 0
    return serve_environment(config, args.env, options, model_name=args.model_name)
