"""``kennel inspect``: what kennel would read from a table and make of each column (no
training, no MLflow)."""

from __future__ import annotations

import argparse
import sys

from kennel.cli.common import prepare
from kennel.data.inspection import inspect_table, render
from kennel.util import write_json


def run(args: argparse.Namespace) -> int:
    config = prepare(args)
    report = inspect_table(config.data)
    if args.output_json:
        write_json(args.output_json, report)
    sys.stdout.write(render(report))
    sys.stdout.flush()
    return 0
