"""Where a command writes its files: its own folder, so parallel runs never share a path."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from kennel.config import Config, project_root
from kennel.errors import UserError

logger = logging.getLogger(__name__)

#: The machine-readable result every run writes into its folder.
RESULT_FILE = "result.json"


def output_dir_for(
    config: Config, requested: str | os.PathLike[str] | None = None, kind: str | None = None
) -> Path:
    """``--output-dir`` or a new ``<output_root>/<kind>-<time>-<rand>`` (``kind`` defaults to
    the family: ``cat-20261130-141503-1a2b3c``), checked writable (exit 2 if not)."""
    if requested:
        path = Path(requested).resolve()
    else:
        root = Path(config.training.output_root)
        if not root.is_absolute():
            root = project_root() / root
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = root / f"{kind or config.model.family}-{stamp}-{secrets.token_hex(3)}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".kennel-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to the output folder {path}: {exc.strerror or exc} (set "
            f"--output-dir or training.output_root to a folder you can write)"
        ) from None
    return path


@contextlib.contextmanager
def output_folder(
    config: Config, requested: str | os.PathLike[str] | None = None, kind: str | None = None
) -> Iterator[Path]:
    """:func:`output_dir_for` for the length of a command. A folder this made is removed
    again when the command stops on a user error (the one-line message says it all; a
    folder per typo would pile up in ``outputs/``); after an internal failure it stays, with
    the traceback in its log file. A folder the user named (``--output-dir``) always stays."""
    path = output_dir_for(config, requested, kind)
    try:
        yield path
    except UserError:
        if not requested:
            _close_file_logs(path)
            shutil.rmtree(path, ignore_errors=True)
        raise


def _close_file_logs(folder: Path) -> None:
    """Stop writing log files inside ``folder`` (so it can be removed)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
            root.removeHandler(handler)
            handler.close()
