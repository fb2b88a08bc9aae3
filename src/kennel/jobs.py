"""How a kennel command ends: the exit codes other programs rely on, in one place.

Every command (``kennel <command>``, ``python run.py``, a search trial forked by the warm
trial server) runs its work through :func:`run_job`: 0 on success, 2 on a user error (one
line on stderr, no traceback), 130 on Ctrl-C, 1 on an internal failure (one line on stderr,
the traceback in the run's log file).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from kennel.errors import EXIT_INTERNAL, EXIT_USER, UserError

logger = logging.getLogger("kennel")

LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def start_logging() -> None:
    """Logging until the command knows its config: stderr only, the level from
    ``KENNEL_LOGGING__LEVEL`` (INFO when unset or not a level), secrets of the environment
    masked."""
    from kennel.environment import environment_secrets
    from kennel.logging_setup import setup_logging

    level = os.environ.get("KENNEL_LOGGING__LEVEL", "INFO").upper()
    setup_logging(level if level in LEVELS else "INFO", secrets=environment_secrets())


def run_job(command: str, work: Callable[[], int | None]) -> int:
    """Run ``work`` and turn how it ended into an exit code (see the module docstring)."""
    try:
        return int(work() or 0)
    except UserError as exc:
        logger.debug("user error", exc_info=True)
        _say(f"kennel {command}: error: {exc}")
        return EXIT_USER
    except KeyboardInterrupt:
        _say(f"kennel {command}: interrupted")
        return 130
    except Exception as exc:  # internal failure: one line here, traceback in the log
        from kennel.tracking.access import as_user_error, refusal

        if refusal(exc):  # the tracking server refused a call no guard named
            logger.debug("refused by the tracking server", exc_info=True)
            _say(f"kennel {command}: error: {as_user_error(exc)}")
            return EXIT_USER
        logger.debug("internal error in kennel %s", command, exc_info=True)
        _log_traceback_to_file()
        message = str(exc).splitlines()[0] if str(exc) else ""
        _say(f"kennel {command}: internal error: {type(exc).__name__}: {message}")
        return EXIT_INTERNAL


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _log_traceback_to_file() -> None:
    """Write the traceback into the run's log file even when the level hides DEBUG."""
    from kennel.logging_setup import log_file_of

    path = log_file_of()
    if path is None:
        return
    import traceback

    with open(path, "a", encoding="utf-8") as handle:
        handle.write(traceback.format_exc())
