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

import contextlib
import getpass
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kennel import metrics as km
from kennel.errors import UserError
from kennel.util import first_line

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from kennel.config import Config
    from kennel.data import DataProcessor

logger = logging.getLogger(__name__)

#: Exit code of ``kennel promote`` when the gate refused the candidate (the alias did not
#: move). Distinct from 0 (moved or already there) and 2 (bad input) so scripts can tell.
EXIT_REFUSED = 3

SCORE_TAG = "kennel.score."
HISTORY_TAG = "kennel.alias_history."
DECISION_TAG = "kennel.promotion."
"""Prefix of the audit tags on a version: ``kennel.promotion.<env>.<field>``."""
REPORT_FILE = "promotion.json"

PROMOTED = "promoted"
FORCED = "forced"
REFUSED = "refused"
UNCHANGED = "unchanged"
ROLLED_BACK = "rolled_back"


# --------------------------------------------------------------------------- holdout
def holdout_id(processor: DataProcessor, *, whole_file: bool = False) -> str:
    """Identity of a holdout: the data's digest, its target and (for a test split) the
    split settings. Two holdouts with the same id hold the same rows and labels."""
    parts: dict[str, Any] = {"digest": processor.digest, "target": processor.target}
    if not whole_file:
        parts["split"] = processor.config.split.model_dump()
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Holdout:
    """Rows (with the target) every version is scored on, and their identity."""

    rows: pd.DataFrame
    target: str
    id: str
    description: str

    @classmethod
    def from_config(cls, config: Config, data_file: str | None = None) -> Holdout:
        """The configured test split, or every row of ``data_file`` (same target column
        as the configured data unless ``data.target`` says otherwise)."""
        from kennel.data import DataProcessor

        data_config = config.data
        if data_file:
            target = data_config.target or DataProcessor(data_config).target
            data_config = data_config.model_copy(update={"source": data_file, "target": target})
        processor = DataProcessor(data_config)
        frame = processor.load()
        if data_file:
            return cls(
                rows=frame,
                target=processor.target,
                id=holdout_id(processor, whole_file=True),
                description=f"all rows of {data_file}",
            )
        return cls.from_processor(processor, processor.split(frame).test)

    @classmethod
    def from_processor(cls, processor: DataProcessor, test: pd.DataFrame) -> Holdout:
        """The test split a training run just used (same identity as ``from_config``)."""
        return cls(
            rows=test,
            target=processor.target,
            id=holdout_id(processor),
            description=f"test split of {processor.source_name}",
        )


# --------------------------------------------------------------------------- decision
@dataclass
class Decision:
    """What a promotion or rollback did (or, in a dry run, would do); also the report."""

    model_name: str
    environment: str
    candidate: int | None
    previous: int | None
    metric: str = ""
    candidate_score: float | None = None
    previous_score: float | None = None
    min_delta: float = 0.0
    outcome: str = REFUSED
    """``promoted``, ``forced``, ``refused`` (gate), ``unchanged`` (already there) or
    ``rolled_back``."""
    promoted: bool = False
    """True when the alias moves (or, in a dry run, would move) to ``candidate``."""
    action: str = "promote"
    reason: str = ""
    dry_run: bool = False
    forced: bool = False
    holdout: str = ""
    holdout_id: str = ""
    report_run_id: str | None = None
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    user: str = field(default_factory=lambda: _user())

    @property
    def refused(self) -> bool:
        return self.outcome == REFUSED

    @property
    def exit_code(self) -> int:
        """0 when the alias moved or already pointed at the candidate, :data:`EXIT_REFUSED`
        when the gate said no (dry runs included, so CI can ask "would it pass?")."""
        return EXIT_REFUSED if self.refused else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for humans: what happened to which alias and why."""
        prefix = "dry run: " if self.dry_run else ""
        where = f"{self.model_name}@{self.environment}"
        if self.promoted:
            verb = "would move" if self.dry_run else "moved"
            return (
                f"{prefix}{where}: {verb} from {_name(self.previous)} to version "
                f"{self.candidate} ({self.outcome}: {self.reason})"
            )
        verb = "would keep" if self.dry_run else "kept"
        return (
            f"{prefix}{where}: {verb} {_name(self.previous)}, candidate version "
            f"{self.candidate} {self.outcome} ({self.reason})"
        )

    def tags(self) -> dict[str, str]:
        """The audit tags written on the candidate version."""
        prefix = f"{DECISION_TAG}{self.environment}."

        def text(value: Any) -> str:
            if value is None:
                return "none"
            if isinstance(value, float):
                return repr(value)
            return str(value)

        values = {
            "outcome": self.outcome,
            "action": self.action,
            "environment": self.environment,
            "time": self.time,
            "user": self.user,
            "previous": self.previous,
            "metric": self.metric,
            "candidate_score": self.candidate_score,
            "previous_score": self.previous_score,
            "min_delta": self.min_delta,
            "forced": str(self.forced).lower(),
            "reason": self.reason,
            "holdout": self.holdout,
            "report_run": self.report_run_id,
        }
        return {prefix + key: text(value)[:4000] for key, value in values.items()}


def _name(version: int | None) -> str:
    return "no version" if version is None else f"version {version}"


def decide(
    candidate_score: float | None,
    previous_score: float | None,
    metric: str,
    *,
    min_delta: float = 0.0,
    has_holder: bool = True,
    force: bool = False,
) -> tuple[str, str]:
    """The gate alone: ``(outcome, reason)`` for a candidate against the holder."""
    if force:
        return FORCED, "--force: gate skipped"
    if not has_holder:
        return PROMOTED, "no version held the alias"
    if candidate_score is None or math.isnan(candidate_score):
        return REFUSED, f"candidate has no {metric} on this holdout"
    if previous_score is None or math.isnan(previous_score):
        return PROMOTED, f"holder has no {metric} on this holdout"
    better = km.is_better(candidate_score, previous_score, metric, min_delta)
    if km.direction(metric) == "minimize":
        sign = "<=" if better else ">"
        bound = previous_score - min_delta
    else:
        sign = ">=" if better else "<"
        bound = previous_score + min_delta
    margin = f" (holder {previous_score:.6g} with min_delta {min_delta:g})" if min_delta else ""
    reason = f"{metric} {candidate_score:.6g} {sign} {bound:.6g}{margin}"
    return (PROMOTED if better else REFUSED), reason


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _client() -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


# --------------------------------------------------------------------------- registering
def default_model_name(config: Config, source_name: str | None = None) -> str:
    """``registry.model_name``, else the data set's name (``breast-cancer``)."""
    if config.registry.model_name:
        return config.registry.model_name
    if source_name is None:
        from kennel.data import DataProcessor

        return DataProcessor(config.data).default_model_name()
    return source_name


def register_version(
    model_uri: str, name: str, *, run_id: str, tags: dict[str, str] | None = None
) -> ModelVersion:
    """A new version of ``name`` (created if needed) from a logged model."""
    import contextlib
    import io

    import mlflow

    # MLflow prints "Successfully registered model ..." itself; kennel logs it once, below.
    from kennel.access import guard

    printed = io.StringIO()
    with (
        contextlib.redirect_stderr(printed),
        guard(f"register versions of registered model '{name}'"),
    ):
        # One request creates the version with its tags: never a version without them.
        version = mlflow.register_model(
            model_uri, name, tags={"kennel.run_id": run_id, **(tags or {})}
        )
    for line in printed.getvalue().splitlines():
        logger.debug("mlflow: %s", line)
    logger.info("registered %s version %s", name, version.version)
    return version


# --------------------------------------------------------------------------- scoring
def cache_score(
    name: str, version: int, holdout_id: str, task: str, scores: dict[str, float]
) -> None:
    from kennel.access import refusal

    payload = {"task": task, "metrics": _clean(scores)}
    try:
        _client().set_model_version_tag(
            name, str(version), SCORE_TAG + holdout_id, json.dumps(payload)
        )
    except Exception as exc:  # a cache: a user who may not write tags scores every time
        if refusal(exc) is None:
            raise
        logger.debug("score of %s v%s not cached: %s", name, version, exc)


def _clean(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or math.isnan(v) else float(v)) for k, v in scores.items()}


def cached_scores(
    tags: dict[str, str] | None, holdout_id: str
) -> tuple[str, dict[str, float]] | None:
    """(task, metrics) a version's tags hold for ``holdout_id`` (see :func:`cache_score`),
    missing values as NaN; None when that holdout was never scored."""
    cached = (tags or {}).get(SCORE_TAG + holdout_id)
    if not cached:
        return None
    payload = json.loads(cached)
    scores = {k: (float("nan") if v is None else v) for k, v in payload["metrics"].items()}
    return payload["task"], scores


def score_version(
    name: str, version: int, holdout: Holdout, *, cache: bool = True, verify: bool = False
) -> tuple[str, dict[str, float]]:
    """(task, test metrics) of ``name`` version ``version`` on the holdout, cached per
    holdout on the version (``cache=False``: read the cache, never write it). ``verify``:
    check the version's files even when the score is cached (scoring loads, and so checks,
    them anyway)."""
    client = _client()
    mv = client.get_model_version(name, str(version))
    cached = cached_scores(mv.tags, holdout.id)
    if cached is not None:
        if verify:
            verify_version(name, version)
        return cached
    logger.info("scoring %s version %s on the %s", name, version, holdout.description)
    from kennel.serving import load_model

    model = load_model(f"models:/{name}/{version}")
    features = holdout.rows.drop(columns=[holdout.target])
    output = model.predict(features)
    task, scores = metrics_from_output(holdout.rows[holdout.target], output)
    if cache:
        cache_score(name, version, holdout.id, task, scores)
    return task, scores


def classified_output(y_true: Any, output: pd.DataFrame) -> tuple[list[str], Any, Any] | None:
    """For a classifier's uniform frame: (class labels, true labels as class codes, the
    probability matrix); ``None`` for a regressor (no ``proba_<class>`` columns)."""
    import numpy as np

    proba_cols = [c for c in output.columns if c.startswith("proba_")]
    if not proba_cols:
        return None
    classes = [c[len("proba_") :] for c in proba_cols]
    index = {label: i for i, label in enumerate(classes)}
    labels = [str(v) for v in np.asarray(y_true)]
    unknown = sorted({v for v in labels if v not in index})
    if unknown:
        raise UserError(
            f"holdout labels {unknown[:5]} are not classes of the model (expected {classes})"
        )
    codes = np.array([index[v] for v in labels])
    return classes, codes, output[proba_cols].to_numpy(dtype="float64")


def metrics_from_output(y_true: Any, output: pd.DataFrame) -> tuple[str, dict[str, float]]:
    """(task, metrics) from the uniform prediction frame (``prediction`` and, for
    classifiers, ``proba_<class>``)."""
    import numpy as np

    classified = classified_output(y_true, output)
    if classified is None:
        scores = km.compute_metrics(
            "regression", np.asarray(y_true, dtype="float64"), output["prediction"].to_numpy()
        )
        return "regression", scores
    classes, codes, proba = classified
    task = "binary" if len(classes) == 2 else "multiclass"
    return task, km.compute_metrics(task, codes, proba)


def gate_metric(config: Config, task: str) -> str:
    """``registry.gate.metric`` (a ``test_`` prefix is allowed), else the task's primary
    metric; a name the task does not have is a user error."""
    metric = config.registry.gate.metric or km.primary_metric(task)  # type: ignore[arg-type]
    metric = metric.removeprefix("test_")
    names = km.metric_names(task)  # type: ignore[arg-type]
    if metric not in names:
        raise UserError(
            f"registry.gate.metric '{metric}' does not exist for a {task} model; expected one "
            f"of: {', '.join(names)}"
        )
    return metric


# --------------------------------------------------------------------------- checks
def alias_holder(name: str, env: str) -> int | None:
    """The version holding alias ``env``, or None."""
    aliases = _client().get_registered_model(name).aliases or {}
    return int(aliases[env]) if env in aliases else None


def aliases(name: str) -> dict[str, int]:
    """Every alias of ``name`` and the version holding it."""
    return {k: int(v) for k, v in (_client().get_registered_model(name).aliases or {}).items()}


def _history_raw(name: str, env: str) -> str | None:
    return (_client().get_registered_model(name).tags or {}).get(HISTORY_TAG + env)


def history(name: str, env: str) -> list[int]:
    """Earlier holders of ``env``, oldest first (the last one is where rollback goes)."""
    return [int(v) for v in json.loads(_history_raw(name, env) or "[]")]


def verify_version(name: str, version: int) -> None:
    """The version's model files are all there and unchanged (its manifest), checked before
    an alias moves to it even when its score is cached; a user error names the file."""
    import tempfile
    from pathlib import Path

    import mlflow.artifacts

    from kennel.packaging import ARTIFACT_KEY, verify_bundle

    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="kennel-verify-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        except Exception as exc:
            raise UserError(f"cannot load model '{uri}': {first_line(exc)}") from None
        if not (local / "MLmodel").is_file():
            raise UserError(f"cannot load model '{uri}': MLmodel is missing")
        try:
            verify_bundle(local / "artifacts" / ARTIFACT_KEY)
        except UserError as exc:
            raise UserError(f"cannot load model '{uri}': {exc}") from None


def check_environment(env: str, config: Config) -> None:
    if env not in config.registry.environments:
        raise UserError(
            f"unknown environment '{env}'; expected one of: "
            f"{', '.join(config.registry.environments)}"
        )


def check_model(name: str) -> None:
    """A user error naming the registered models that do exist when ``name`` does not."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        expected = ", ".join(known) if known else "none registered yet (run kennel train)"
        raise UserError(
            f"unknown registered model '{name}'; expected one of: {expected} "
            f"(--model-name or registry.model_name)"
        ) from None


def check_version(name: str, version: int) -> None:
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        if not versions:
            raise UserError(f"registered model '{name}' has no versions") from None
        raise UserError(
            f"model '{name}' has no version {version}; expected one of: "
            f"{', '.join(map(str, versions))}"
        ) from None


# --------------------------------------------------------------------------- promote
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


@contextlib.contextmanager
def promotion_lock(name: str) -> Iterator[None]:
    """One promotion or rollback of model ``name`` at a time, so the holder read under the
    lock is the one the move replaces and the alias history gets every move in the order
    they take effect.

    On a local SQLite store: a file lock beside the database (processes of this machine).
    On any other store (a tracking server, a database): :func:`registry_lock`, a lock held
    in the store itself, so it works between machines too.
    """
    import mlflow

    from kennel.util import store_lock

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        with store_lock(uri, ".promote.lock"):
            yield
        return
    with registry_lock(name):
        yield


LOCK_SUFFIX = ".promotion-lock"
LOCK_HOLDER_TAG = "kennel.lock.holder"
LOCK_EXPIRES_TAG = "kennel.lock.expires"
#: A lock older than this is taken to be left by a dead process (a promotion takes seconds).
LOCK_TTL_S = 600.0
#: How long a promotion waits for another one of the same model to finish.
LOCK_WAIT_S = 600.0


@contextlib.contextmanager
def registry_lock(
    name: str, *, ttl: float = LOCK_TTL_S, wait: float = LOCK_WAIT_S
) -> Iterator[None]:
    """A lock on model ``name`` held in the model registry itself: the registered model
    ``<name>.promotion-lock``, which exists only while a promotion holds it.

    MLflow offers no lock or compare-and-set over HTTP, but creating a registered model is
    atomic and fails when the name exists (a unique key in the store), whatever the store
    and however many servers front it. The lock carries its holder (``host:pid:start``) and
    an expiry: a lock whose holder is a dead process of this machine, or which is past its
    expiry, is deleted and taken over (with a WARNING naming the holder).
    """
    import random
    import time

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from kennel.access import guard
    from kennel.runs import process_alive, process_tag

    client = MlflowClient()
    lock = f"{name}{LOCK_SUFFIX}"
    token = process_tag()
    deadline = time.monotonic() + wait
    waited = False
    while True:
        try:
            with guard(f"create registered model '{lock}' (the promotion lock of '{name}')"):
                client.create_registered_model(
                    lock,
                    tags={LOCK_HOLDER_TAG: token, LOCK_EXPIRES_TAG: f"{time.time() + ttl:.0f}"},
                    description=(
                        f"kennel: held while a promotion of '{name}' runs and deleted after "
                        "it. Safe to delete when no kennel promote of it is running."
                    ),
                )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        holder = _lock_holder(client, lock)
        if holder is None:
            continue  # released between our two calls: try again at once
        owner, expires = holder
        dead = process_alive(owner) is False
        if dead or time.time() > expires:
            logger.warning(
                "taking over the promotion lock of '%s' left by %s (%s)",
                name,
                owner,
                "its process is gone" if dead else "it expired",
            )
            # Delete only the lock just judged stale (another process may have taken it
            # over since; MLflow has no conditional delete, so this narrows the window).
            if _lock_holder(client, lock) == holder:
                stale = f"delete registered model '{lock}' (a stale promotion lock)"
                with contextlib.suppress(MlflowException), guard(stale, "MANAGE"):
                    client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise UserError(
                f"model '{name}' is being promoted by {owner} and its lock was not released "
                f"within {wait:.0f} s; try again, or delete registered model '{lock}' if no "
                "promotion of it is running"
            )
        if not waited:
            logger.info("waiting for the promotion of '%s' by %s to finish", name, owner)
            waited = True
        time.sleep(0.1 + random.random() * 0.3)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as exc:  # it expires; the next promotion takes it over
            logger.warning("could not release the promotion lock '%s': %s", lock, first_line(exc))


def _lock_holder(client: MlflowClient, lock: str) -> tuple[str, float] | None:
    """(holder, expiry) of an existing lock; ``None`` when it is gone."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(lock).tags
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    try:
        expires = float(tags.get(LOCK_EXPIRES_TAG, "0"))
    except ValueError:
        expires = 0.0
    return tags.get(LOCK_HOLDER_TAG, "unknown:0:?"), expires


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
    from kennel.access import PermissionDenied, guard

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
            for key, value in decision.tags().items():
                client.set_model_version_tag(name, str(decision.candidate), key, value)
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
        _experiment_id(promotions_experiment(decision.model_name)),
        run_name=f"{decision.action}-{decision.model_name}-{decision.environment}",
        tags={**tags, "mlflow.user": decision.user},
    )
    return run.info.run_id, True


def promotions_experiment(model_name: str) -> str:
    """Where ``kennel promote`` records each decision as a run: ``<model>-promotions``."""
    return f"{model_name}-promotions"


def _experiment_id(name: str) -> str:
    from mlflow.exceptions import MlflowException

    from kennel.tracking import artifact_root

    client = _client()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    import mlflow

    try:
        return client.create_experiment(
            name, artifact_location=artifact_root(mlflow.get_tracking_uri())
        )
    except MlflowException:  # created meanwhile by a parallel process
        return client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]


def log_report(decision: Decision, config: Config) -> str:
    """Log an already-made decision as ``promotion.json`` in a run of its own; returns the
    run id. (``promote``/``rollback`` with ``report=True`` do this as part of recording.)"""
    client = _client()
    run_id, own = _open_report_run(decision, config)
    client.log_dict(run_id, decision.to_dict(), REPORT_FILE)
    if own:
        client.set_terminated(run_id, "FINISHED")
    return run_id
