"""A kennel model folder: processor state + the family's model files + config, together, and
checked. No MLflow here: batch scoring on workers and tests read bundles directly.

A bundle (the ``kennel`` artifact of the pyfunc) holds::

    meta.json        family, task, classes, versions, class paths
    processor.json   the fitted DataProcessor (plain JSON)
    profile.json     the reference profile of the training data and outputs (monitoring)
    config.yaml      the resolved, redacted config of the training run
    model/           the family's own files (LightGBM text model, .keras, ...)
    manifest.json    size and SHA-256 of every other file, written last
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.errors import UserError
from kennel.families import FamilySpec, get_family
from kennel.families.base import Model, ModelAPI
from kennel.util import first_line

if TYPE_CHECKING:
    from kennel.config import Config
    from kennel.data import DataProcessor
    from kennel.monitor.profile import Profile

logger = logging.getLogger(__name__)

ARTIFACT_KEY = "kennel"
"""The bundle's name inside the logged model: ``artifacts/kennel``."""


def _class_path(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _import_path(path: str) -> Any:
    module, _, attr = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


def save_bundle(
    target: Path,
    *,
    model: Model,
    processor: DataProcessor,
    family: FamilySpec,
    config: Config | None = None,
    profile: Profile | None = None,
) -> Path:
    """Write the model directory described in the module docstring."""
    from kennel import __version__

    target.mkdir(parents=True, exist_ok=True)
    model.save(target / "model")
    processor.save(target)
    if config is not None:
        (target / "config.yaml").write_text(config.to_yaml())
    if profile is not None:
        from kennel.monitor.profile import save_profile

        save_profile(profile, target)
    meta = {
        "family": family.name,
        "task": processor.task,
        "classes": list(processor.classes),
        "kennel_version": __version__,
        "model_class": _class_path(type(model)),
        "model_api_class": _class_path(family.ModelAPI),
    }
    (target / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    write_manifest(target)
    return target


#: Every file of the bundle with its size and SHA-256, written last when the model is saved.
MANIFEST = "manifest.json"
#: How a bundle file is named in errors: its path inside the logged MLflow model.
BUNDLE_PREFIX = f"artifacts/{ARTIFACT_KEY}"


class DamagedModel(UserError):
    """A saved model lost a file or holds a changed one."""


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def write_manifest(target: Path) -> None:
    files = {
        str(p.relative_to(target)): {"size": p.stat().st_size, "sha256": _digest(p)}
        for p in sorted(target.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (target / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def verify_bundle(path: Path) -> None:
    """Every file the manifest lists is there, unchanged; raises :class:`DamagedModel`
    naming the first that is not. Bundles saved before manifests existed pass."""
    manifest = path / MANIFEST
    if not manifest.exists():
        if (path / "meta.json").exists():
            return  # saved by an older kennel
        raise DamagedModel(f"{BUNDLE_PREFIX}/meta.json is missing")
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise DamagedModel(f"{BUNDLE_PREFIX}/{MANIFEST} cannot be read: {exc}") from None
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise DamagedModel(f"{BUNDLE_PREFIX}/{name} is missing")
        if file.stat().st_size != expected["size"] or _digest(file) != expected["sha256"]:
            raise DamagedModel(f"{BUNDLE_PREFIX}/{name} is corrupted (its SHA-256 changed)")


def load_bundle(path: str | Path) -> ModelAPI:
    """The family's ModelAPI for a model directory (no MLflow needed), after checking
    its files against the manifest."""
    from kennel.data import DataProcessor

    path = Path(path)
    verify_bundle(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise DamagedModel(f"{BUNDLE_PREFIX}/meta.json cannot be read: {exc}") from None
    try:
        family = get_family(meta["family"])
        model_cls, api_cls = family.Model, family.ModelAPI
    except Exception:  # a family registered only in the training process: use class paths
        model_cls = _import_path(meta["model_class"])
        api_cls = _import_path(meta["model_api_class"])
    try:
        model = model_cls.load(path / "model")
    except Exception as exc:  # whatever the family's library says about a bad file
        raise DamagedModel(f"{BUNDLE_PREFIX}/model cannot be loaded: {first_line(exc)}") from None
    processor = DataProcessor.load_state(path)
    return api_cls(model, processor)
