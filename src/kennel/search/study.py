"""The Optuna side of a search: the objective, the storage (shared by several workers when
it is a database), the study with heartbeats, the sampler."""

from __future__ import annotations

import logging
import os
import time
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from kennel import metrics as km
from kennel.config import Config, ConfigError
from kennel.errors import UserError
from kennel.util import first_line, redact_url, store_lock, url_secrets

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

#: Optuna user attributes kept on every trial (shared between workers through the storage).
RUN_ID_ATTR = "mlflow_run_id"
#: The model a trial logged (``models:/m-…``), from its ``result.json``.
MODEL_URI_ATTR = "model_uri"


def resolve_objective(config: Config, task: str | None = None) -> tuple[str, str, str | None]:
    """(metric, direction, task): ``search.metric``/``search.direction`` or the task's
    primary validation metric. The task comes from ``data.task`` or, when that is
    ``auto``, from ``task`` (decided by the warm trial server on the table it read) or
    else from loading the data here."""
    metric = config.search.metric
    if config.data.task != "auto":
        task = config.data.task
    if metric is None or task is None:
        if task is None:
            task = _infer_task(config)
        if metric is None:
            metric = f"val_{km.primary_metric(task)}"  # type: ignore[arg-type]
    metric = _prefixed(metric)
    _check_metric(metric, config, km.metric_names(task), f"a {task} metric")  # type: ignore[arg-type]
    direction = config.search.direction or km.direction(metric)
    return metric, direction, task


def check_metric_name(config: Config) -> None:
    """An unknown ``search.metric`` fails before the search opens anything, even while the
    task is still to be decided (:func:`resolve_objective` then checks it for the task)."""
    if config.search.metric is not None:
        names = [n for task in get_args(km.Task) for n in km.metric_names(task)]
        metric = _prefixed(config.search.metric)
        _check_metric(metric, config, list(dict.fromkeys(names)), "a metric kennel records")


def _prefixed(metric: str) -> str:
    if "_" not in metric or not metric.startswith(("val_", "test_")):
        return f"val_{metric}"
    return metric


def _check_metric(metric: str, config: Config, names: Sequence[str], what: str) -> None:
    base = metric.split("_", 1)[1]
    if base not in names:
        import difflib

        close = difflib.get_close_matches(base, names, n=1)
        hint = f"; did you mean 'val_{close[0]}'?" if close else ""
        raise ConfigError(
            f"search.metric '{config.search.metric}' is not {what}{hint}; expected "
            f"val_<name> with <name> one of: {', '.join(names)}"
        )


def _infer_task(config: Config) -> str:
    from kennel.data import DataProcessor

    processor = DataProcessor(config.data)
    processor.load()  # decides the task on the whole table, as every trial does
    task = processor._loaded_task
    assert task is not None
    return task


# --------------------------------------------------------------------------- storage
def storage_url(config: Config) -> str | None:
    """The Optuna storage URL; a bare file path means a SQLite file."""
    if config.search.storage is None:
        return None
    url = config.search.storage.get_secret_value().strip()
    if not url:
        return None
    if "://" not in url:
        url = f"sqlite:///{Path(url).resolve()}"
    return url


class StaleTrials:
    """Optuna's callback for a trial whose worker stopped sending heartbeats (killed, lost
    its machine): mark its MLflow run FAILED and retry it with the same values."""

    def __init__(self, retries: int) -> None:
        # Optuna's retry callback is made when a stale trial is first met: only searches
        # sharing a study in a database have heartbeats, and making it warns (see below).
        self.retries = retries
        self.client: Any = None
        self.failed: list[int] = []

    def __call__(self, study: Any, trial: Any) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        logger.warning(
            "trial %d: its worker stopped sending heartbeats; FAILED%s",
            trial.number,
            " and retried" if self.retries else "",
        )
        self.failed.append(trial.number)
        if run_id and self.client is not None:
            try:
                if self.client.get_run(run_id).info.status == "RUNNING":
                    self.client.set_tag(
                        run_id,
                        "kennel.search.error",
                        "its search worker stopped sending heartbeats (killed or lost)",
                    )
                    self.client.set_terminated(run_id, "FAILED")
            except Exception as exc:
                logger.warning("could not mark run %s FAILED: %s", run_id, exc)
        if self.retries:
            _retry_callback(self.retries)(study, trial)


def _retry_callback(retries: int) -> Any:
    """Optuna's callback that retries a stale trial with the same values: the one Optuna 4.9
    introduced (``RetryFailedTrialCallback`` is deprecated there), else the older one."""
    import optuna
    from optuna import storages

    callback = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    with warnings.catch_warnings():
        # Optuna marks it experimental (its interface may change); kennel pins optuna < 5.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if callback is None:
            callback = storages.RetryFailedTrialCallback
        return callback(max_retry=retries)


def open_study(
    *,
    name: str,
    storage: str | None,
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    heartbeat_interval: float = 0.0,
    grace_period: float | None = None,
    stale_callback: StaleTrials | None = None,
) -> optuna.Study:
    """Create the study, or join it when it exists in a shared storage (with heartbeats
    when ``heartbeat_interval`` > 0)."""
    import optuna

    rdb: Any = None
    if storage:
        kwargs: dict[str, Any] = {}
        beats: dict[str, Any] = {}
        if heartbeat_interval > 0:
            beats = {
                "heartbeat_interval": max(1, round(heartbeat_interval)),
                "grace_period": max(1, round(grace_period or 3 * heartbeat_interval)),
                "failed_trial_callback": stale_callback,
            }
        if storage.startswith("sqlite"):
            kwargs = {"connect_args": {"timeout": 60}}
        for attempt in range(5):
            try:
                with store_lock(storage), warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    rdb = optuna.storages.RDBStorage(storage, engine_kwargs=kwargs, **beats)
                break
            except Exception as exc:
                text = first_line(exc)
                # Workers creating a fresh database's schema at once: the loser's CREATE
                # TABLE fails; retried, it finds the tables.
                racing = ("duplicate key", "already exists", "uniqueviolation")
                if attempt < 4 and any(m in text.lower() for m in racing):
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise UserError(
                    f"cannot open the Optuna storage {redact_url(storage)}: {redact_url(text)}"
                ) from None
    for attempt in range(5):
        try:
            study = optuna.create_study(
                study_name=name,
                storage=rdb,
                sampler=sampler,
                direction=direction,
                load_if_exists=True,
            )
            break
        except optuna.exceptions.DuplicatedStudyError:  # created meanwhile by another worker
            time.sleep(0.2 * (attempt + 1))
    else:
        raise UserError(f"cannot create or join the Optuna study '{name}'")
    if study.direction.name.lower() != direction:
        raise UserError(
            f"study '{name}' in {redact_url(storage or 'memory')} is "
            f"{study.direction.name.lower()}d, but this search would {direction} "
            f"(set search.direction or use another --study-name)"
        )
    return study


def make_sampler(config: Config, *, parallel: bool, shared: bool) -> optuna.samplers.BaseSampler:
    """TPE (default) or random, seeded by ``search.seed``. Workers sharing a study get
    distinct seeds (else their random start-up trials would coincide)."""
    import optuna

    seed = config.search.seed
    if shared:
        seed = (seed + zlib.crc32(f"{os.uname().nodename}:{os.getpid()}".encode())) % 2**31
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: trials still running count as bad, so parallel trials spread out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel or shared)


def storage_secrets(config: Config) -> list[str]:
    """What to mask in logs for the search: every secret but the storage URL itself,
    whose password alone is masked (the URL is shown redacted)."""
    raw = config.search.storage.get_secret_value() if config.search.storage else None
    url = storage_url(config)
    found = [s for s in config.secret_values() if s != raw]
    if url:
        found += url_secrets(url)
    return found
