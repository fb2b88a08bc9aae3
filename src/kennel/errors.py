"""Exceptions that map onto the exit codes other programs rely on.

`UserError` (and subclasses) means the user gave us something wrong: a bad config key, a
missing file, an unknown model family. The CLI prints its one-line message and exits 2.
Anything else is an internal failure: exit 1, traceback in the log file.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2


class UserError(Exception):
    """A problem with the user's input; the message is one line that names the bad value."""


class ConfigError(UserError):
    """Invalid configuration: unknown key, wrong type, bad value, unreadable file."""


class DataError(UserError):
    """The data set cannot be used as configured (missing file, column, bad target...)."""


class NotAvailableError(UserError):
    """A command that exists in the CLI but is not built yet."""
