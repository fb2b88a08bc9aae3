"""``kennel serve``: serve the version an environment alias points at (see
:func:`kennel.serve.server.serve_environment`)."""

from __future__ import annotations

import argparse
import sys

from kennel.cli.common import prepare


def run(args: argparse.Namespace) -> int:
    from kennel.serve.server import ServerOptions, command_line, serve_environment

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
