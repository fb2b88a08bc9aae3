"""The command line: ``kennel <command>`` (and ``python run.py <command>``).

:mod:`kennel.cli.manager` holds the table of commands; each command has a thin module here
that parses, calls a workflow of the rooms below and prints. Nothing outside this package
imports it.
"""

from kennel.cli.manager import main, start

__all__ = ["main", "start"]
