"""Register a logged model and put it through the promotion gate: the one path the training
run and the search share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kennel.registry.gate import Decision
from kennel.registry.holdout import Holdout
from kennel.registry.promote import promote
from kennel.registry.versions import cache_score, register_version

if TYPE_CHECKING:
    from kennel.config import Config

logger = logging.getLogger(__name__)


@dataclass
class Registration:
    """What :func:`register_and_promote` did: the new version and, with
    ``registry.auto_promote``, the gate's decision."""

    name: str
    version: int
    holdout: Holdout | None = None
    decision: Decision | None = None


def register_and_promote(
    model_uri: str,
    name: str,
    *,
    run_id: str,
    family: str,
    config: Config,
    holdout: Callable[[], Holdout],
    task: str | None = None,
    scores: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    report_run_id: str | None = None,
) -> Registration:
    """A new version of ``name`` from ``model_uri`` (tagged with its run and family); its
    ``scores`` on the holdout cached on it (the run just measured them: the gate does not
    predict again); then, when ``registry.auto_promote`` names an environment, the gate.

    ``holdout`` is called only when needed (scores to cache or a promotion): building it may
    read the data.
    """
    version = int(
        register_version(
            model_uri,
            name,
            run_id=run_id,
            tags={"kennel.family": family, "kennel.run_id": run_id, **(tags or {})},
        ).version
    )
    registration = Registration(name, version)
    env = config.registry.auto_promote
    if not scores and not env:
        return registration
    registration.holdout = held = holdout()
    if scores and task:
        cache_score(name, version, held.id, task, dict(scores))
    if env:
        registration.decision = promote(
            name, version, env, config=config, holdout=held, report_run_id=report_run_id
        )
    return registration
