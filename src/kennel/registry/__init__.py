"""The model registry: register versions, promote them per environment through a gate, audit
every decision, roll back; one promotion of a model at a time.

An environment is an alias on the registered model (``dev``, ``staging``, ``production``).
Outsiders import from here (``from kennel import registry``); the modules are
:mod:`~kennel.registry.holdout` (what versions are scored on), :mod:`~kennel.registry.versions`
(versions, cached scores, aliases), :mod:`~kennel.registry.gate` (the decision),
:mod:`~kennel.registry.promote` (moving, recording, rolling back),
:mod:`~kennel.registry.lock` and :mod:`~kennel.registry.register` (the path training and the
search share).
"""

from kennel.registry.gate import (
    EXIT_REFUSED,
    FORCED,
    PROMOTED,
    REFUSED,
    ROLLED_BACK,
    UNCHANGED,
    Decision,
    decide,
    gate_metric,
)
from kennel.registry.holdout import Holdout, holdout_id
from kennel.registry.lock import (
    LOCK_EXPIRES_TAG,
    LOCK_HOLDER_TAG,
    LOCK_SUFFIX,
    promotion_lock,
    registry_lock,
)
from kennel.registry.promote import log_report, promote, promotions_experiment, record, rollback
from kennel.registry.register import Registration, register_and_promote
from kennel.registry.versions import (
    HISTORY_TAG,
    SCORE_TAG,
    alias_holder,
    aliases,
    cache_score,
    cached_scores,
    check_environment,
    check_model,
    check_version,
    default_model_name,
    history,
    register_version,
    score_version,
    verify_version,
    version_tags,
)

__all__ = [
    "EXIT_REFUSED",
    "FORCED",
    "HISTORY_TAG",
    "LOCK_EXPIRES_TAG",
    "LOCK_HOLDER_TAG",
    "LOCK_SUFFIX",
    "PROMOTED",
    "REFUSED",
    "ROLLED_BACK",
    "SCORE_TAG",
    "UNCHANGED",
    "Decision",
    "Holdout",
    "Registration",
    "alias_holder",
    "aliases",
    "cache_score",
    "cached_scores",
    "check_environment",
    "check_model",
    "check_version",
    "decide",
    "default_model_name",
    "gate_metric",
    "history",
    "holdout_id",
    "log_report",
    "promote",
    "promotion_lock",
    "promotions_experiment",
    "record",
    "register_and_promote",
    "register_version",
    "registry_lock",
    "rollback",
    "score_version",
    "verify_version",
    "version_tags",
]
