"""Where the project lives, with no third-party imports.

Kept apart from :mod:`kennel.config` (pydantic, pydantic-settings, yaml: ~0.2 s to import)
so that ``kennel --help`` and ``.env`` loading stay fast; ``kennel.config`` re-exports
:func:`project_root`.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder holding ``MLproject`` and ``configs/``.

    ``KENNEL_HOME`` wins; else the source checkout this module lives in; else the working
    directory (kennel installed into site-packages and run from a project folder).
    """
    if home := os.environ.get("KENNEL_HOME"):
        return Path(home).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "MLproject").exists():
        return checkout
    return Path.cwd().resolve()
