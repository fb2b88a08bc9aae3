"""Model registry: register versions, promote them per environment through a gate, audit
every decision, roll back.

An environment is an alias on the registered model (``dev``, ``staging``, ``production``).
Promotion re-scores the candidate and the current holder on the same holdout and moves the
alias only if the candidate is at least as good on the gate metric. Scores are cached on
each version as a tag keyed by the holdout's identity, so a holdout is scored once per
version. Every decision is recorded: tags on the version, the alias history on the
registered model (for rollback) and a JSON report in an MLflow run.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kennel import metrics as km
from kennel.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from kennel.config import Config

logger = logging.getLogger(__name__)

SCORE_TAG = "kennel.score."
HISTORY_TAG = "kennel.alias_history."
PROMOTED_TAG = "kennel.promoted."


@dataclass
class Holdout:
    """Rows (with the target) every version is scored on, and their identity."""

    rows: pd.DataFrame
    target: str
    id: str
    description: str

    @classmethod
    def from_config(cls, config: Config, data_file: str | None = None) -> Holdout:
        """The configured test split, or every row of ``data_file``."""
        from kennel.data_processor import DataProcessor

        data_config = config.data
        if data_file:
            data_config = data_config.model_copy(update={"source": data_file})
        processor = DataProcessor(data_config)
        frame = processor.load()
        if data_file:
            rows, what, ident = frame, f"all rows of {data_file}", processor.digest
        else:
            rows = processor.split(frame).test
            what = f"test split of {processor.source_name}"
            split = json.dumps(data_config.split.model_dump(), sort_keys=True)
            ident = f"{processor.digest}:{split}"
        digest = hashlib.sha256(str(ident).encode()).hexdigest()[:12]
        return cls(rows=rows, target=processor.target, id=digest, description=what)

    @classmethod
    def from_processor(cls, processor: Any, test: pd.DataFrame) -> Holdout:
        """The test split a training run just used (same identity as ``from_config``)."""
        split = json.dumps(processor.config.split.model_dump(), sort_keys=True)
        digest = hashlib.sha256(f"{processor.digest}:{split}".encode()).hexdigest()[:12]
        return cls(
            rows=test,
            target=processor.target,
            id=digest,
            description=f"test split of {processor.source_name}",
        )


@dataclass
class Decision:
    """What a promotion did or would do; also the JSON report."""

    model_name: str
    environment: str
    candidate: int | None
    previous: int | None
    metric: str
    candidate_score: float | None = None
    previous_score: float | None = None
    promoted: bool = False
    action: str = "promote"
    reason: str = ""
    dry_run: bool = False
    forced: bool = False
    holdout: str = ""
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    user: str = field(default_factory=lambda: _user())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verb = "would move" if self.dry_run else "moved"
        if not self.promoted:
            verb = "would keep" if self.dry_run else "kept"
            return (
                f"{self.model_name}@{self.environment}: {verb} version {self.previous} "
                f"({self.reason})"
            )
        return (
            f"{self.model_name}@{self.environment}: {verb} alias from version {self.previous} "
            f"to {self.candidate} ({self.reason})"
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _client() -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def default_model_name(config: Config, source_name: str | None = None) -> str:
    if config.registry.model_name:
        return config.registry.model_name
    if source_name is None:
        from kennel.data_processor import DataProcessor

        return DataProcessor(config.data).default_model_name()
    return source_name


def register_version(
    model_uri: str, name: str, *, run_id: str, tags: dict[str, str] | None = None
) -> ModelVersion:
    """A new version of ``name`` (created if needed) from a logged model."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags or {})
    logger.info("registered %s version %s", name, version.version)
    return version


def cache_score(
    name: str, version: int, holdout_id: str, task: str, scores: dict[str, float]
) -> None:
    payload = {"task": task, "metrics": _clean(scores)}
    _client().set_model_version_tag(name, str(version), SCORE_TAG + holdout_id, json.dumps(payload))


def _clean(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or math.isnan(v) else float(v)) for k, v in scores.items()}


def score_version(name: str, version: int, holdout: Holdout) -> tuple[str, dict[str, float]]:
    """(task, test metrics) of ``name`` version ``version`` on the holdout, cached per
    holdout on the version."""
    client = _client()
    mv = client.get_model_version(name, str(version))
    cached = (mv.tags or {}).get(SCORE_TAG + holdout.id)
    if cached:
        payload = json.loads(cached)
        scores = {k: (float("nan") if v is None else v) for k, v in payload["metrics"].items()}
        return payload["task"], scores
    import mlflow.pyfunc

    logger.info("scoring %s version %s on the %s", name, version, holdout.description)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    features = holdout.rows.drop(columns=[holdout.target])
    output = model.predict(features)
    task, scores = metrics_from_output(holdout.rows[holdout.target], output)
    cache_score(name, version, holdout.id, task, scores)
    return task, scores


def metrics_from_output(y_true: Any, output: pd.DataFrame) -> tuple[str, dict[str, float]]:
    """(task, metrics) from the uniform prediction frame (``prediction`` and, for
    classifiers, ``proba_<class>``)."""
    import numpy as np

    proba_cols = [c for c in output.columns if c.startswith("proba_")]
    if not proba_cols:
        scores = km.compute_metrics(
            "regression", np.asarray(y_true, dtype="float64"), output["prediction"].to_numpy()
        )
        return "regression", scores
    proba_cols = [c for c in output.columns if c.startswith("proba_")]
    classes = [c[len("proba_") :] for c in proba_cols]
    index = {label: i for i, label in enumerate(classes)}
    labels = [str(v) for v in np.asarray(y_true)]
    unknown = sorted({v for v in labels if v not in index})
    if unknown:
        raise UserError(
            f"holdout labels {unknown[:5]} are not classes of the model (expected {classes})"
        )
    codes = np.array([index[v] for v in labels])
    task = "binary" if len(classes) == 2 else "multiclass"
    return task, km.compute_metrics(task, codes, output[proba_cols].to_numpy())


def alias_holder(name: str, env: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(_client().get_model_version_by_alias(name, env).version)
    except MlflowException:
        return None


def _history(name: str, env: str) -> list[int]:
    tags = _client().get_registered_model(name).tags or {}
    return [int(v) for v in json.loads(tags.get(HISTORY_TAG + env, "[]"))]


def _check_env(env: str, config: Config) -> None:
    if env not in config.registry.environments:
        raise UserError(
            f"unknown environment '{env}'; expected one of: "
            f"{', '.join(config.registry.environments)}"
        )


def _check_version(name: str, version: int) -> None:
    from mlflow.exceptions import MlflowException

    try:
        _client().get_model_version(name, str(version))
    except MlflowException:
        try:
            versions = sorted(
                int(v.version) for v in _client().search_model_versions(f"name='{name}'")
            )
        except MlflowException:
            versions = []
        if not versions:
            raise UserError(f"registered model '{name}' has no versions") from None
        raise UserError(
            f"model '{name}' has no version {version}; expected one of: "
            f"{', '.join(map(str, versions))}"
        ) from None


def gate_metric(config: Config, task: str) -> str:
    return config.registry.gate.metric or km.primary_metric(task)  # type: ignore[arg-type]


def promote(
    name: str,
    version: int,
    env: str,
    *,
    config: Config,
    holdout: Holdout,
    force: bool = False,
    dry_run: bool = False,
) -> Decision:
    """Move alias ``env`` to ``version`` if it is at least as good as the holder."""
    _check_env(env, config)
    _check_version(name, version)
    task, candidate_scores = score_version(name, version, holdout)
    metric = gate_metric(config, task)
    if metric not in km.metric_names(task):  # type: ignore[arg-type]
        raise UserError(
            f"gate metric '{metric}' does not exist for a {task} task; expected one "
            f"of: {', '.join(km.metric_names(task))}"  # type: ignore[arg-type]
        )
    previous = alias_holder(name, env)
    decision = Decision(
        model_name=name,
        environment=env,
        candidate=version,
        previous=previous,
        metric=metric,
        dry_run=dry_run,
        forced=force,
        holdout=holdout.description,
    )
    decision.candidate_score = candidate_scores.get(metric)
    if previous == version:
        decision.reason = f"version {version} already holds '{env}'"
        return decision
    if previous is not None:
        decision.previous_score = score_version(name, previous, holdout)[1].get(metric)
    if force:
        decision.promoted, decision.reason = True, "forced, gate skipped"
    elif previous is None:
        decision.promoted, decision.reason = True, f"'{env}' had no holder"
    else:
        better = km.is_better(
            decision.candidate_score,
            decision.previous_score,
            metric,
            config.registry.gate.min_delta,
        )
        relation = "at least as good as" if better else "worse than"
        decision.promoted = better
        decision.reason = (
            f"{metric} {decision.candidate_score:.6g} is {relation} {decision.previous_score:.6g}"
        )
    if decision.promoted and not dry_run:
        _move_alias(decision)
    return decision


def rollback(name: str, env: str, *, config: Config, dry_run: bool = False) -> Decision:
    """Return alias ``env`` to the version that held it before the current holder."""
    _check_env(env, config)
    current = alias_holder(name, env)
    history = _history(name, env)
    if not history:
        raise UserError(f"'{name}@{env}' has no previous holder to roll back to")
    target = history[-1]
    decision = Decision(
        model_name=name,
        environment=env,
        candidate=target,
        previous=current,
        metric="",
        promoted=True,
        action="rollback",
        reason=f"rollback to the previous holder, version {target}",
        dry_run=dry_run,
    )
    if not dry_run:
        _move_alias(decision, rollback=True)
    return decision


def _move_alias(decision: Decision, *, rollback: bool = False) -> None:
    """Set the alias, then the audit tags; on failure put the alias back."""
    client = _client()
    name, env = decision.model_name, decision.environment
    history = _history(name, env)
    new_history = (
        history[:-1]
        if rollback
        else ([*history, decision.previous] if decision.previous is not None else history)
    )
    client.set_registered_model_alias(name, env, str(decision.candidate))
    try:
        client.set_registered_model_tag(name, HISTORY_TAG + env, json.dumps(new_history))
        client.set_model_version_tag(
            name, str(decision.candidate), PROMOTED_TAG + env, json.dumps(decision.to_dict())
        )
    except Exception:
        if decision.previous is not None:
            client.set_registered_model_alias(name, env, str(decision.previous))
        else:
            client.delete_registered_model_alias(name, env)
        raise
    logger.info("%s", decision.summary())


def log_report(decision: Decision, config: Config) -> str | None:
    """A small MLflow run holding the decision as ``promotion.json``; returns its id."""
    import mlflow

    from kennel.tracking import set_experiment

    set_experiment(config.tracking.experiment)
    name = f"{decision.action}-{decision.model_name}-{decision.environment}"
    with mlflow.start_run(run_name=name, tags={"kennel.kind": "promotion"}) as run:
        mlflow.log_dict(decision.to_dict(), "promotion.json")
        mlflow.set_tags(
            {
                "kennel.model_name": decision.model_name,
                "kennel.environment": decision.environment,
                "kennel.promoted": str(decision.promoted).lower(),
            }
        )
    return run.info.run_id
