"""Model registry: register versions, promote them per environment through a gate, audit
every decision, roll back.

An environment is an alias on the registered model (``dev``, ``staging``, ``production``).
Promotion re-scores the candidate and the current holder on the same holdout and moves the
alias only if the candidate is at least as good on the gate metric (``registry.gate``).
Scores are cached on each version as a tag keyed by the holdout's identity, so a holdout is
scored once per version.

Every decision that is not a dry run is recorded three ways:

- tags ``kennel.promotion.<env>.*`` on the candidate version (outcome, time, user, metric
  values, previous holder, report run);
- the alias history ``kennel.alias_history.<env>`` on the registered model (for rollback);
- ``promotion.json`` in an MLflow run (a small run of its own, or the training run for
  ``registry.auto_promote``).

Nothing is written before every input has been checked, and a failure while writing puts
the alias and its history back where they were.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import TYPE_CHECKING, Any

from kennel import tracking
from kennel.errors import UserError
from kennel.registry.gate import (
    FORCED,
    PROMOTED,
    REPORT_FILE,
    ROLLED_BACK,
    UNCHANGED,
    Decision,
    decide,
    gate_metric,
)
from kennel.registry.holdout import Holdout
from kennel.registry.lock import promotion_lock
from kennel.registry.versions import (
    HISTORY_TAG,
    _client,
    _history_raw,
    alias_holder,
    check_environment,
    check_model,
    check_version,
    history,
    score_version,
    set_version_tags,
    verify_version,
)

if TYPE_CHECKING:
    from kennel.config import Config

logger = logging.getLogger(__name__)


def promote(
    name: str,
    version: int,
    env: str,
    *,
    config: Config,
    holdout: Holdout,
    force: bool = False,
    dry_run: bool = False,
    report: bool = False,
    report_run_id: str | None = None,
) -> Decision:
    """Move alias ``env`` to ``version`` if it is at least as good as the holder on the
    gate metric (or ``force``). Records the decision unless ``dry_run``; ``report`` also
    logs it as ``promotion.json`` in a run of its own. Without ``report`` the audit tags
    name ``report_run_id`` (a run where the caller logs the decision), else the active run."""
    check_environment(env, config)
    check_model(name)
    check_version(name, version)
    # verify: even when its score is cached, never move an alias to a damaged version.
    task, candidate_scores = score_version(name, version, holdout, cache=not dry_run, verify=True)
    metric = gate_metric(config, task)
    # One promotion of a model at a time on this store: the holder read here is the one
    # the move replaces, and the alias history gets every move in the order they happen.
    with promotion_lock(name):
        previous = alias_holder(name, env)
        decision = Decision(
            model_name=name,
            environment=env,
            candidate=version,
            previous=previous,
            metric=metric,
            min_delta=config.registry.gate.min_delta,
            dry_run=dry_run,
            forced=force,
            holdout=holdout.description,
            holdout_id=holdout.id,
        )
        decision.candidate_score = _score(candidate_scores, metric)
        if previous == version:
            decision.outcome, decision.reason = (
                UNCHANGED,
                f"version {version} already holds '{env}'",
            )
        else:
            if previous is not None:
                previous_task, previous_scores = score_version(
                    name, previous, holdout, cache=not dry_run
                )
                if previous_task == task:
                    decision.previous_score = _score(previous_scores, metric)
            decision.outcome, decision.reason = decide(
                decision.candidate_score,
                decision.previous_score,
                metric,
                min_delta=decision.min_delta,
                has_holder=previous is not None,
                force=force,
            )
            decision.promoted = decision.outcome in (PROMOTED, FORCED)
        if not dry_run:
            record(decision, config, report=report, run_id=report_run_id)
    return decision


def _score(scores: dict[str, float], metric: str) -> float | None:
    value = scores.get(metric)
    return None if value is None or math.isnan(value) else float(value)


def rollback(
    name: str, env: str, *, config: Config, dry_run: bool = False, report: bool = False
) -> Decision:
    """Return alias ``env`` to the version that held it before the current holder."""
    check_environment(env, config)
    check_model(name)
    with promotion_lock(name):
        earlier = history(name, env)
        if not earlier:
            raise UserError(f"'{name}@{env}' has no previous holder to roll back to")
        target = earlier[-1]
        check_version(name, target)
        verify_version(name, target)
        decision = Decision(
            model_name=name,
            environment=env,
            candidate=target,
            previous=alias_holder(name, env),
            outcome=ROLLED_BACK,
            promoted=True,
            action="rollback",
            reason=f"back to the previous holder, version {target}",
            dry_run=dry_run,
        )
        if not dry_run:
            record(decision, config, report=report)
    return decision


# --------------------------------------------------------------------------- recording


def record(
    decision: Decision, config: Config, *, report: bool = False, run_id: str | None = None
) -> None:
    """Write the decision: the alias and its history (when it moves) first, then the report
    run, then the audit tags on the candidate. On any failure the alias and its history are put back and
    the report run is marked FAILED; the error propagates."""
    import mlflow

    client = _client()
    name, env = decision.model_name, decision.environment
    from kennel.tracking.access import PermissionDenied, guard

    holder_before = alias_holder(name, env)
    history_before = _history_raw(name, env)
    own_run = False
    if not report and run_id is None and (active := mlflow.active_run()) is not None:
        run_id = active.info.run_id
    decision.report_run_id = run_id
    moved = False
    model = f"registered model '{name}'"
    try:
        if decision.promoted:
            # The alias first: a user who may not move it is refused before anything else
            # is written (no report run, history or audit tag claiming a move).
            with guard(f"move aliases of {model}"):
                client.set_registered_model_alias(name, env, str(decision.candidate))
            moved = True
            with guard(f"write tags of {model}"):
                client.set_registered_model_tag(
                    name, HISTORY_TAG + env, json.dumps(_new_history(decision, history_before))
                )
        if report:
            promotions = promotions_experiment(name)
            try:
                with guard(f"create runs in experiment '{promotions}'"):
                    run_id, own_run = _open_report_run(decision, config)
            except PermissionDenied as exc:
                # Promoting needs EDIT on the model, not on the promotions experiment: the
                # decision is then recorded on the model (alias history, version tags) only.
                logger.warning("%s: the decision is recorded on the model version only", exc)
                report, run_id = False, None
            decision.report_run_id = run_id
        if report and run_id:
            with guard(f"log to run {run_id} in experiment '{promotions}'"):
                client.log_dict(run_id, decision.to_dict(), REPORT_FILE)
        with guard(f"write tags of version {decision.candidate} of {model}"):
            set_version_tags(name, decision.candidate, decision.tags())
    except BaseException:
        logger.error("recording the decision failed; restoring %s@%s", name, env)
        if moved:
            _restore(name, env, holder_before, history_before)
        if own_run and run_id:
            _quietly(client.set_tag, run_id, "kennel.outcome", "failed")
            _quietly(client.set_terminated, run_id, "FAILED")
        raise
    if own_run and run_id:
        client.set_terminated(run_id, "FINISHED")
    log = logger.warning if decision.refused else logger.info
    log("%s", decision.summary())


def _new_history(decision: Decision, raw: str | None) -> list[int]:
    earlier = [int(v) for v in json.loads(raw or "[]")]
    if decision.action == "rollback":
        return earlier[:-1]
    return [*earlier, decision.previous] if decision.previous is not None else earlier


def _restore(name: str, env: str, holder: int | None, history_raw: str | None) -> None:
    client = _client()
    if holder is not None:
        _quietly(client.set_registered_model_alias, name, env, str(holder))
    else:
        _quietly(client.delete_registered_model_alias, name, env)
    if history_raw is None:
        _quietly(client.delete_registered_model_tag, name, HISTORY_TAG + env)
    else:
        _quietly(client.set_registered_model_tag, name, HISTORY_TAG + env, history_raw)


def _quietly(func: Any, *args: Any) -> None:
    try:
        func(*args)
    except Exception:
        logger.exception("could not undo %s%s", getattr(func, "__name__", func), args)


def _open_report_run(decision: Decision, config: Config) -> tuple[str, bool]:
    """(run id, whether we own it): the ``mlflow run`` entry point's run when there is one,
    else a new run in the experiment ``<model>-promotions``."""
    client = _client()
    tags = {
        "kennel.kind": "promotion",
        "kennel.model_name": decision.model_name,
        "kennel.environment": decision.environment,
        "kennel.action": decision.action,
        "kennel.outcome": decision.outcome,
        "kennel.candidate_version": str(decision.candidate),
        "kennel.promoted": str(decision.promoted).lower(),
    }
    existing = os.environ.get("MLFLOW_RUN_ID")
    if existing:
        for key, value in tags.items():
            client.set_tag(existing, key, value)
        return existing, False
    # Not the training experiment: its runs table is for runs to compare.
    run = client.create_run(
        tracking.ensure_experiment(promotions_experiment(decision.model_name)),
        run_name=f"{decision.action}-{decision.model_name}-{decision.environment}",
        tags={**tags, "mlflow.user": decision.user},
    )
    return run.info.run_id, True


def promotions_experiment(model_name: str) -> str:
    """Where ``kennel promote`` records each decision as a run: ``<model>-promotions``."""
    return f"{model_name}-promotions"


def log_report(decision: Decision, config: Config) -> str:
    """Log an already-made decision as ``promotion.json`` in a run of its own; returns the
    run id. (``promote``/``rollback`` with ``report=True`` do this as part of recording.)"""
    client = _client()
    run_id, own = _open_report_run(decision, config)
    client.log_dict(run_id, decision.to_dict(), REPORT_FILE)
    if own:
        client.set_terminated(run_id, "FINISHED")
    return run_id
