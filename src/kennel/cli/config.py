"""``kennel config``: print the resolved configuration (secrets masked)."""

from __future__ import annotations

import argparse
import sys

from kennel.config import load_config


def run(args: argparse.Namespace) -> int:
    resolved = load_config(args.config, args.overrides)
    text = resolved.explain() if args.explain else resolved.config.to_yaml()
    sys.stdout.write(text)
    return 0
