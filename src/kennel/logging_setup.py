"""One set-up call for logging: timestamped, leveled lines to stderr and to a file.

Call :func:`setup_logging` once at the start of a command (the CLI does); modules only do
``logger = logging.getLogger(__name__)``. Secrets handed to the set-up are masked in every
record before any handler writes it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Third-party loggers that are chatty at INFO; quiet unless the level is DEBUG.
NOISY = (
    "tensorflow",
    "absl",
    "h5py",
    "alembic",
    "urllib3",
    "matplotlib",
    "PIL",
    "mlflow",
    "git",
    "optuna",
    "werkzeug",
    "py.warnings",
)
_HANDLER_TAG = "_kennel_handler"


class RedactingFilter(logging.Filter):
    """Replaces secret values in a record's message and arguments by ``**********``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, "**********")
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self.secrets:
                text = text.replace(secret, "**********")
            record.exc_text, record.exc_info = text, None
        return True


def setup_logging(
    level: str | int = "INFO",
    log_file: str | os.PathLike[str] | None = None,
    *,
    secrets: Iterable[str] = (),
    stream: object = None,
) -> logging.Logger:
    """Configure the root logger; calling it again replaces kennel's handlers (e.g. to add
    the run's log file once the output folder is known)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
            handler.close()
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    root.setLevel(numeric)
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    redactor = RedactingFilter(secrets)

    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)

    quiet = numeric > logging.DEBUG
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
    if quiet:
        # 3 hides TensorFlow's C++ errors too: on a CPU-only machine it reports a failed
        # cuInit as an error on every start; at DEBUG all of them are shown.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # MLflow configures its own logger when imported; these keep it (and its progress
        # bars) quiet in commands and in the child processes they start.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.captureWarnings(True)
    return root


def log_file_of(root: logging.Logger | None = None) -> Path | None:
    """The file kennel's handler writes to, if any."""
    for handler in (root or logging.getLogger()).handlers:
        if getattr(handler, _HANDLER_TAG, False) and isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


@contextmanager
def warnings_to_debug(log: logging.Logger) -> Iterator[None]:
    """Turn the Python warnings raised inside the block into DEBUG lines of ``log``.

    For library notices that look like failures to a user but are expected here (MLflow's
    hint about integer columns, which kennel's signature already handles).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        log.debug("%s: %s", warning.category.__name__, str(warning.message).splitlines()[0])


@contextmanager
def native_stderr_to_debug(log: logging.Logger) -> Iterator[None]:
    """Capture what native code writes to file descriptor 2 inside the block (TensorFlow's
    C++ start-up lines: oneDNN notices, "Could not find cuda drivers", absl's pre-init
    warning, which no environment variable silences) and log each line at DEBUG instead."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    # kennel's own lines keep going to the terminal meanwhile (another thread may log, e.g.
    # the data thread while TensorFlow imports): its handlers write to the saved descriptor.
    terminal = open(saved, "w", buffering=1, closefd=False)  # noqa: SIM115 - closed below
    moved = {handler: handler.setStream(terminal) for handler in _stderr_handlers()}
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            for handler, stream in moved.items():
                handler.setStream(stream)
            terminal.close()
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            for line in text.splitlines():
                if line.strip():
                    log.debug("%s", line)


def _stderr_handlers() -> list[logging.StreamHandler]:
    """The root logger's stream handlers that write to file descriptor 2."""
    found = []
    for handler in logging.getLogger().handlers:
        if type(handler) is not logging.StreamHandler:  # not a file or other subclass
            continue
        try:
            if handler.stream.fileno() == 2:
                found.append(handler)
        except (AttributeError, OSError, ValueError):  # a stream with no descriptor
            continue
    return found


def log_command(
    config: Any, output_dir: Path | None = None, *, secrets: Iterable[str] | None = None
) -> None:
    """Logging once a command knows its config: ``logging.level``, the run's log file
    (``logging.file_name``) in ``output_dir`` when it has one, and every secret masked: the
    config's and the environment's, or ``secrets`` when given."""
    from kennel.environment import environment_secrets

    if secrets is None:
        secrets = config.secret_values()
    log_file = output_dir / config.logging.file_name if output_dir is not None else None
    setup_logging(config.logging.level, log_file, secrets=[*secrets, *environment_secrets()])
