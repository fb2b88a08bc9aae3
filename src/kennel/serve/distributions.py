"""MLflow's map of the installed distributions, built in a process that has time for it.

Logging a model checks its pip requirements against the installed distributions, and for
that MLflow maps every importable module to its distribution once per process
(``importlib_metadata.packages_distributions()``: it reads every installed package's file
list, ~0.26 s in kennel's environment, on the critical path of every training run). kennel's
requirements are pins of the installed versions, so the check always passes; what costs is
only building the map.

A process with an idle core builds it instead and writes it to a file (:func:`write`): a
training run's plot process while the run imports and trains, the search while its warm
trial server imports. The process that logs the model hands the file to MLflow
(:func:`seed`), through MLflow's own initialisation of its map, so MLflow adds its usual
entries. The file names the directories it was built from (those of ``sys.path`` that hold
installed distributions); a file from other directories, or one that is missing, late or
unreadable, is ignored and MLflow builds the map itself, as it always did.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

logger = logging.getLogger(__name__)

#: File name of the map, in the folder the two processes share.
FILE_NAME = ".distributions.json"


def _sites() -> list[str]:
    """The directories of ``sys.path`` that hold installed distributions (what
    ``packages_distributions`` reads), sorted."""
    found = set()
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        if any(n.endswith((".dist-info", ".egg-info")) for n in names):
            found.add(os.path.abspath(entry or "."))
    return sorted(found)


def write(path: Path) -> None:
    """Build the map (``importlib_metadata``, as MLflow does) and write it atomically."""
    import importlib_metadata

    searched = sys.path[:]
    sys.path[:] = list(dict.fromkeys(searched))  # a folder listed twice is read once
    try:
        mapping = importlib_metadata.packages_distributions()
    finally:
        sys.path[:] = searched
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"sites": _sites(), "map": mapping}))
    partial.replace(path)


def seed(path: Path | None) -> bool:
    """Give MLflow the map in ``path`` if it has not built its own yet and the file was
    built from this process's directories; True when it did. The file is removed."""
    if path is None or not path.is_file():
        return False
    try:
        from mlflow.utils import requirements_utils as mlflow_requirements

        if getattr(mlflow_requirements, "_MODULES_TO_PACKAGES", True) is not None:
            return False  # built already, or an MLflow that keeps it elsewhere
        data = json.loads(path.read_text())
        if data.get("sites") != _sites():
            logger.debug("distribution map %s: built from other directories", path)
            return False
        mapping = {str(k): [str(d) for d in v] for k, v in data["map"].items()}
        real = mlflow_requirements.importlib_metadata
        mlflow_requirements.importlib_metadata = SimpleNamespace(
            packages_distributions=lambda: mapping
        )
        try:
            mlflow_requirements._init_packages_to_modules_map()
        finally:
            mlflow_requirements.importlib_metadata = real
        return True
    except Exception as exc:  # MLflow then builds the map itself
        logger.debug("distribution map %s not used: %s", path, exc)
        return False
    finally:
        path.unlink(missing_ok=True)
