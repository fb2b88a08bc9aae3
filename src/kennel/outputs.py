"""Where a command writes its files: its own folder, so parallel runs never share a path."""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path

from kennel.config import Config, project_root
from kennel.errors import UserError

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
