"""The family registry: a name -> :class:`FamilySpec` (Model, Trainer, ModelAPI, Params).

Built-in families are ``cat`` (LightGBM) and ``dog`` (TensorFlow/Keras). A third-party
package adds one through the ``kennel.families`` entry-point group, pointing at a
``FamilySpec`` object; code can also call :func:`register`. Nothing heavy is imported here.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from kennel.errors import UserError
from kennel.families.base import (
    FamilySpec,
    Model,
    ModelAPI,
    ModelSpec,
    Params,
    TrainContext,
    Trainer,
    TrainResult,
)
from kennel.suggest import did_you_mean

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kennel.families"
_BUILTIN = {"cat": "kennel.families.cat", "dog": "kennel.families.dog"}
_REGISTRY: dict[str, FamilySpec] = {}
_loaded_entry_points = False

__all__ = [
    "FamilySpec",
    "Model",
    "ModelAPI",
    "ModelSpec",
    "Params",
    "TrainContext",
    "TrainResult",
    "Trainer",
    "available_families",
    "cluster_trainer",
    "get_family",
    "register",
    "unregister",
]


def register(family: FamilySpec, *, replace: bool = False) -> FamilySpec:
    """Add a family under ``family.name``; refuse to shadow one unless ``replace``."""
    if family.name in _REGISTRY and not replace and _REGISTRY[family.name] is not family:
        raise ValueError(f"model family '{family.name}' is already registered")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY or ep.name in _BUILTIN:
            continue
        try:
            family = ep.load()
        except Exception:  # a broken plug-in must not break kennel
            logger.warning("could not load model family %r from %s", ep.name, ep.value)
            continue
        if isinstance(family, FamilySpec):
            register(family)
        else:
            logger.warning("entry point %r is not a FamilySpec; ignored", ep.name)


def available_families() -> list[str]:
    """Names of every family: built-in, registered in code and from entry points."""
    _load_entry_points()
    return sorted({*_BUILTIN, *_REGISTRY})


def get_family(name: str) -> FamilySpec:
    """The family called ``name``; unknown names are a user error listing the choices."""
    if name not in _REGISTRY and name in _BUILTIN:
        module = importlib.import_module(_BUILTIN[name])
        register(module.FAMILY)
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise UserError(
            f"unknown model family '{name}'{did_you_mean(name, available_families())}; "
            f"expected one of: {', '.join(available_families())}"
        )
    return _REGISTRY[name]


def cluster_trainer(family: FamilySpec, setting: str) -> type[Trainer]:
    """The family's Trainer for a Dask cluster (``resource.cluster``), or a one-line user
    error naming the setting when the family trains on one machine only."""
    if family.cluster_trainer is None:
        able = [n for n in available_families() if get_family(n).cluster_trainer is not None]
        raise UserError(
            f"the {family.name} family trains on one machine, not on a cluster "
            f"(resource.cluster={setting}); set resource.cluster=none, or choose a family "
            f"that trains on a cluster ({', '.join(able) or 'none installed'})"
        )
    return family.ClusterTrainer
