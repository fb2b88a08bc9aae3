#!/usr/bin/env python
"""Launcher: ``python run.py <command> ...`` works without installing the package.

It loads ``.env``, puts ``src/`` on ``sys.path`` and hands over to :mod:`kennel.cli`.
MLproject entry points and the search's trial processes call it.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))

if __name__ == "__main__":
    from kennel.cli import start
    from kennel.environment import load_dotenv_once

    load_dotenv_once()
    start()
