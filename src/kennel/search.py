"""Hyperparameter search: Optuna proposes, every trial is ``run.py train`` in its own process.

Why processes: a trial that crashes, leaks memory or hangs cannot take the search down, it
can be killed (its whole process group) on a timeout or Ctrl-C, and each trial is exactly
the training a user would run by hand: its resolved config is written as YAML into a
temporary folder and handed to ``run.py train`` with the sampled values as CLI overrides.

MLflow: the search is one parent run (tag ``kennel.kind=search``); the parent pre-creates
every trial's child run (``mlflow.parentRunId``) and hands its id to the trial through
``MLFLOW_RUN_ID``, so the trial resumes it and the parent can still mark it FAILED or
KILLED when the trial dies. The parent ends with the best trial's sampled values as params,
``best_<metric>``, a ``best_run_id`` tag, ``trials.csv`` and an optimisation-history plot.

Optuna: in-memory by default; ``search.storage`` (an RDB URL, SQLite or PostgreSQL) with
``search.study_name`` lets several ``kennel search`` workers, on one or several machines,
share one study. Each worker runs its own ``n_trials``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import SecretStr, ValidationError

from kennel import metrics as km
from kennel.config import (
    Categorical,
    Config,
    ConfigError,
    FloatRange,
    IntRange,
    _format_validation,
    project_root,
)
from kennel.errors import UserError
from kennel.launchers import (
    SubprocessLauncher,
    TrialProcess,
    WarmLauncher,
    thread_environment,
)
from kennel.util import first_line, redact_url, store_lock, url_password, write_json

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SUMMARY_FILE = "search.json"
TRIALS_FILE = "trials.csv"
PLOT_FILE = "optimization_history.png"
#: Optuna user attributes kept on every trial (shared between workers through the storage).
RUN_ID_ATTR = "mlflow_run_id"
#: Seconds a terminated trial gets before its process group is killed.
KILL_GRACE_S = 5.0
#: Config sections a search space may not touch: they steer the search or its bookkeeping.
FORBIDDEN_SECTIONS = ("search",)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a search; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


# --------------------------------------------------------------------------- the space
def _plain(config: Config) -> dict[str, Any]:
    """The config as plain data with real secret values (for re-validation only)."""
    data = config.model_dump()

    def unwrap(obj: Any) -> Any:
        if isinstance(obj, SecretStr):
            return obj.get_secret_value()
        if isinstance(obj, dict):
            return {k: unwrap(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [unwrap(v) for v in obj]
        return obj

    return unwrap(data)


def apply_values(config: Config, values: Mapping[str, Any]) -> Config:
    """A new config with each dotted path set to its value, validated like ``load_config``
    (unknown keys name the closest valid one)."""
    data = _plain(config)
    for path, value in values.items():
        parts = path.split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"search.space '{path}': '{'.'.join(parts[: depth + 1])}' is a value, "
                    f"not a section"
                )
            node = child
        node[parts[-1]] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None


def _samples(spec: FloatRange | IntRange | Categorical) -> list[Any]:
    if isinstance(spec, Categorical):
        return list(spec.choices)
    return [spec.low, spec.high] if spec.low != spec.high else [spec.low]


def validate_space(config: Config) -> None:
    """Every path of ``search.space`` must be a config key, and every bound or choice a
    valid value for it; raises :class:`ConfigError` (exit 2) naming the first bad one."""
    space = config.search.space
    if not space:
        raise ConfigError(
            "search.space is empty; add ranges keyed by config paths, e.g. "
            "search.space: {model.params.num_leaves: {type: int, low: 4, high: 64}}"
        )
    for path, spec in space.items():
        if not path or any(not part for part in path.split(".")):
            raise ConfigError(f"search.space key '{path}' is not a dotted config path")
        if path.split(".")[0] in FORBIDDEN_SECTIONS:
            raise ConfigError(f"search.space key '{path}': the search section cannot be searched")
        for value in _samples(spec):
            try:
                apply_values(config, {path: value})
            except ConfigError as exc:
                detail = str(exc).removeprefix("invalid config: ")
                raise ConfigError(
                    f"invalid search.space '{path}' (value {value!r}): {detail}"
                ) from None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


class Space:
    """``search.space`` as Optuna distributions; non-scalar choices (lists such as
    ``hidden_units``) travel through Optuna as JSON strings."""

    def __init__(self, space: Mapping[str, FloatRange | IntRange | Categorical]) -> None:
        from optuna.distributions import (
            BaseDistribution,
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        self.specs = dict(space)
        self.encoded: set[str] = set()
        self.distributions: dict[str, BaseDistribution] = {}
        for path, spec in self.specs.items():
            if isinstance(spec, FloatRange):
                dist: BaseDistribution = FloatDistribution(spec.low, spec.high, log=spec.log)
            elif isinstance(spec, IntRange):
                step = 1 if spec.log else spec.step
                dist = IntDistribution(spec.low, spec.high, log=spec.log, step=step)
            else:
                choices = list(spec.choices)
                if not all(_is_scalar(c) for c in choices):
                    self.encoded.add(path)
                    choices = [json.dumps(c, sort_keys=True) for c in choices]
                dist = CategoricalDistribution(choices)
            self.distributions[path] = dist

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna's params -> config values."""
        return {
            path: json.loads(value) if path in self.encoded else value
            for path, value in params.items()
        }


# --------------------------------------------------------------------------- objective
def resolve_objective(config: Config) -> tuple[str, str, str | None]:
    """(metric, direction, task): ``search.metric``/``search.direction`` or the task's
    primary validation metric. The task comes from ``data.task`` or, when that is
    ``auto``, from loading the data (only if it is needed)."""
    metric = config.search.metric
    task: str | None = config.data.task if config.data.task != "auto" else None
    if metric is None or task is None:
        if task is None:
            task = _infer_task(config)
        if metric is None:
            metric = f"val_{km.primary_metric(task)}"  # type: ignore[arg-type]
    if "_" not in metric or not metric.startswith(("val_", "test_")):
        metric = f"val_{metric}"
    base = metric.split("_", 1)[1]
    names = km.metric_names(task)  # type: ignore[arg-type]
    if base not in names:
        import difflib

        close = difflib.get_close_matches(base, names, n=1)
        hint = f"; did you mean 'val_{close[0]}'?" if close else ""
        raise ConfigError(
            f"search.metric '{config.search.metric}' is not a {task} metric{hint}; expected "
            f"val_<name> with <name> one of: {', '.join(names)}"
        )
    direction = config.search.direction or km.direction(metric)
    return metric, direction, task


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
        from optuna.storages import RetryFailedTrialCallback

        self.retry = RetryFailedTrialCallback(max_retry=retries) if retries else None
        self.client: Any = None
        self.failed: list[int] = []

    def __call__(self, study: Any, trial: Any) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        logger.warning(
            "trial %d: its worker stopped sending heartbeats; FAILED%s",
            trial.number,
            " and retried" if self.retry else "",
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
        if self.retry is not None:
            self.retry(study, trial)


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


# --------------------------------------------------------------------------- trials
@dataclass
class TrialJob:
    """One trial: its Optuna handle, child run, folder and, once run, its outcome."""

    number: int
    trial: Any
    params: dict[str, Any]
    run_id: str
    folder: Path
    command: list[str]
    env: dict[str, str]
    proc: TrialProcess | None = None
    started: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    killed: bool = False
    error: str | None = None
    duration_s: float = 0.0
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    state: str = "RUNNING"
    yaml_text: str = ""
    model_threshold: float | None = None
    """``improving``: the best value when the trial started (it logs its model if it is at
    least as good)."""


@dataclass
class SearchOutcome:
    """The machine-readable result of a search (``search.json``, ``--output-json``)."""

    status: str
    parent_run_id: str
    experiment_id: str
    study_name: str
    storage: str | None
    metric: str
    direction: str
    best: dict[str, Any] | None
    counts: dict[str, int]
    study_counts: dict[str, int]
    n_trials: int
    n_jobs: int
    output_dir: str
    tracking_uri: str
    registered_model: str | None = None
    registered_version: int | None = None
    promotion: dict[str, Any] | None = None
    duration_s: float = 0.0
    trials_per_minute: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    """``startup_s`` (command start to the first trial: imports, study, store, the warm
    server), ``trials_s`` (first trial start to last trial end), ``finish_s`` (reports,
    registration)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _override_text(path: str, value: Any) -> str:
    """``path=value`` whose value parses back (as YAML) to exactly ``value``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    if yaml.safe_load(text) != value:
        text = json.dumps(value)
    return f"{path}={text}"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def effective_threads(configured: int, n_jobs: int, cores: int | None = None) -> int:
    """Threads one trial may use: ``min(configured, cores // n_jobs)``, at least 1, where a
    configured 0 means every core. Trials running at once never ask for more threads than
    the machine has cores: OpenMP threads competing for cores spin, and two LightGBM trials
    of 2 threads on 2 cores run several times slower than one after the other."""
    cores = cores or available_cores()
    share = max(1, cores // max(1, n_jobs))
    return min(configured or cores, share)


def trial_threads(config: Config) -> int | None:
    """The ``resource.num_threads`` a trial gets when it differs from the configured one
    (see :func:`effective_threads`); ``None``: keep the configured value (one trial at a
    time with 0 = every core, or a count that already fits)."""
    configured = config.resource.num_threads
    threads = effective_threads(configured, config.search.n_jobs)
    if configured == 0 and config.search.n_jobs <= 1:
        return None
    return threads if threads != configured else None


def _trial_yaml(config: Config) -> str:
    """The resolved config for a trial file: no secrets at all (not even redacted ones:
    the trial gets them from its environment)."""
    data = config.redacted()
    data["data"]["storage_options"] = {}
    data["search"]["storage"] = None
    return yaml.safe_dump(data, sort_keys=False)


def search_output_dir(config: Config, requested: str | os.PathLike[str] | None = None) -> Path:
    """``--output-dir`` or a new ``<output_root>/search-<family>-<time>-<rand>``."""
    from kennel.pipeline import output_dir_for

    return output_dir_for(config, requested, kind=f"search-{config.model.family}")


class _Signals:
    """SIGINT/SIGTERM raise :class:`SearchInterrupted` in the main thread, except inside a
    shielded block (a store write, ask/tell), where the signal waits for its end."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.raised = False
        self.depth = 0
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum
        if self.depth or self.raised:
            return
        self.raised = True
        raise SearchInterrupted(signum)

    def check(self) -> None:
        if self.pending is not None and not self.raised:
            self.raised = True
            raise SearchInterrupted(self.pending)

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth:
            self.check()


class Search:
    """One worker of a search: asks Optuna for trials, runs them as processes, tells."""

    def __init__(
        self, config: Config, output_dir: Path, overrides: list[str], *, begin: bool = False
    ) -> None:
        """``begin``: start the trial launcher at once (the warm server then imports and
        reads the data while this process imports Optuna and MLflow)."""
        self.created = time.perf_counter()
        self.loop_times: list[float] = []
        self.config = config
        self.output_dir = output_dir
        self.overrides = list(overrides)
        self.launcher: SubprocessLauncher | WarmLauncher = SubprocessLauncher()
        self.launcher_begun = False
        if begin:
            self.begin_launcher()
        self.space = Space(config.search.space)
        self.jobs: dict[int, TrialJob] = {}
        self.skipped: dict[int, str] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self.signals = _Signals()
        self.study: Any = None
        self.client: Any = None
        self.parent_id = ""
        self.experiment_id = ""
        self.threads = trial_threads(config)
        self.stale = StaleTrials(config.search.retries)
        self.beating = threading.Event()

    # ------------------------------------------------------------------ the loop
    def run(self) -> SearchOutcome:
        """The whole search; SIGINT/SIGTERM raise :class:`SearchInterrupted` throughout,
        except while a store is being written (schemas, ask/tell), which finishes first."""
        self.signals.install()
        try:
            if self.launcher_begun is False:
                self.begin_launcher()
            return self._run()
        finally:
            self.launcher.close()
            self.signals.restore()

    def _run(self) -> SearchOutcome:
        import mlflow
        from mlflow.tracking import MlflowClient

        from kennel import tracking

        started = time.perf_counter()
        cfg = self.config.search
        metric, direction, task = resolve_objective(self.config)
        self.metric, self.direction, self.task = metric, direction, task
        storage = storage_url(self.config)
        shown_storage = redact_url(storage) if storage else None
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        study_name = cfg.study_name or f"kennel-{self.config.model.family}-{stamp}"

        # Schemas are created once, before any trial process starts, and never half-way.
        with self.signals.shielded():
            self.study = open_study(
                name=study_name,
                storage=storage,
                direction=direction,
                sampler=make_sampler(self.config, parallel=cfg.n_jobs > 1, shared=bool(storage)),
                heartbeat_interval=cfg.heartbeat_interval if storage else 0.0,
                grace_period=cfg.grace_period,
                stale_callback=self.stale,
            )
        uri = tracking.resolve_tracking_uri(self.config)
        with self.signals.shielded(), store_lock(uri):
            uri = tracking.configure(self.config)
        self.client = MlflowClient(uri)
        self.stale.client = self.client
        logger.info(
            "search %s: %d trials, %d at once, %s %s, sampler %s, storage %s",
            study_name,
            cfg.n_trials,
            cfg.n_jobs,
            direction,
            metric,
            cfg.sampler,
            shown_storage or "in memory",
        )
        tags = {
            "kennel.kind": "search",
            "kennel.family": self.config.model.family,
            "kennel.search.study": study_name,
            "kennel.search.metric": metric,
            "kennel.search.direction": direction,
            "kennel.config_hash": self.config.digest(),
            **tracking.git_tags(),
        }
        if shown_storage:
            tags["kennel.search.storage"] = shown_storage
        if self.threads is not None:
            # never more threads than cores between the parallel trials (see trial_threads)
            tags["kennel.search.trial_threads"] = str(self.threads)
            configured = self.config.resource.num_threads
            logger.info(
                "resource.num_threads=%s%s and %d trial(s) at once on %d cores: each trial "
                "gets %d thread(s)",
                configured,
                " (every core)" if configured == 0 else "",
                cfg.n_jobs,
                available_cores(),
                self.threads,
            )
        tags["kennel.search.launcher"] = cfg.launcher
        tags["kennel.search.log_models"] = cfg.log_models
        if task:
            tags["kennel.task"] = task
        name = f"search-{self.config.model.family}-{study_name}"
        tags["mlflow.runName"] = name  # also names the run ``mlflow run -e search`` started
        with tracking.start_run(self.config, name=name, tags=tags) as parent:
            self.parent_id = parent.info.run_id
            self.experiment_id = parent.info.experiment_id
            with self.signals.shielded():
                self._log_base_params()
            try:
                with self.signals.shielded():
                    self.launcher.wait_ready()
                # matplotlib for the history plot loads while the trials run, not after.
                threading.Thread(target=_warm_plots, name="warm-plots", daemon=True).start()
                self.loop_times.append(time.perf_counter())
                self._loop()
                self.loop_times.append(time.perf_counter())
            finally:
                # Stop, kill and record whatever is still running, even on Ctrl-C.
                self._shutdown()
                self.beating.set()
                self.launcher.close()
                self._write_reports(mlflow)
            outcome = self._finish(
                mlflow, study_name, shown_storage, uri, time.perf_counter() - started
            )
            if outcome.best is None:
                raise SearchFailed(
                    f"every trial of study '{study_name}' failed; see the trial logs "
                    f"under {self.output_dir}"
                )
        return outcome

    def _thread_env(self, config: Config) -> dict[str, str]:
        """OpenMP/BLAS thread variables for a trial of ``config`` (see effective_threads)."""
        threads = effective_threads(config.resource.num_threads, config.search.n_jobs)
        return thread_environment(threads, os.environ)

    def begin_launcher(self) -> None:
        """``search.launcher=warm``: start the trial server (imports, data) now; the first
        trial waits until it is ready. ``subprocess`` needs nothing."""
        self.launcher_begun = True
        if self.config.search.launcher != "warm":
            return
        env = dict(os.environ)
        env.update(self._thread_env(self.config))
        env.pop("MLFLOW_RUN_ID", None)
        base = self.output_dir / "trial-server.yaml"  # no secrets: see _trial_yaml
        base.write_text(_trial_yaml(self.config))
        self.launcher = WarmLauncher(
            env=env,
            hello={
                "family": self.config.model.family,
                "config": str(base),
                "overrides": self.overrides,
            },
            log_path=self.output_dir / "trial-server.log",
        )
        try:
            self.launcher.begin()
        except BaseException:
            self.launcher.close()
            raise

    def _best_value(self) -> float | None:
        """The study's best value so far (every worker's trials), if any completed."""
        try:
            value = self.study.best_value
        except ValueError:  # no completed trial yet
            return None
        return None if value is None or math.isnan(value) else float(value)

    def _heartbeats(self) -> bool:
        """Whether the study's storage takes heartbeats (a shared RDB study)."""
        from optuna.storages._heartbeat import is_heartbeat_enabled

        return is_heartbeat_enabled(self.study._storage)

    def _beat(self) -> None:
        """Heartbeat thread: this worker's running trials are alive (Optuna's ask-and-tell
        interface leaves heartbeats to the caller)."""
        storage = self.study._storage
        interval = storage.get_heartbeat_interval()
        while not self.beating.wait(interval):
            with self.lock:
                running = [j.trial._trial_id for j in self.jobs.values() if j.state == "RUNNING"]
            for trial_id in running:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception as exc:  # the storage is shared: a blip must not stop us
                    logger.debug("heartbeat of trial %s not recorded: %s", trial_id, exc)

    def _loop(self) -> None:
        cfg = self.config.search
        futures: dict[Future[TrialJob], TrialJob] = {}
        launched = 0
        heartbeats = self._heartbeats()
        if heartbeats:
            threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()
        with ThreadPoolExecutor(max_workers=cfg.n_jobs, thread_name_prefix="trial") as pool:
            try:
                while launched < cfg.n_trials or futures:
                    while launched < cfg.n_trials and len(futures) < cfg.n_jobs:
                        with self.signals.shielded():
                            if heartbeats:
                                from optuna.storages import fail_stale_trials

                                with warnings.catch_warnings():
                                    warnings.simplefilter("ignore")
                                    fail_stale_trials(self.study)
                            job = self._prepare_trial()
                            if job is not None:
                                futures[pool.submit(self._execute, job)] = job
                        launched += 1
                    done, _ = wait_futures(
                        list(futures), timeout=0.5, return_when="FIRST_COMPLETED"
                    )
                    for future in done:
                        job = futures.pop(future)
                        if (exc := future.exception()) is not None:
                            job.returncode, job.error = -1, f"could not run: {exc}"
                        with self.signals.shielded():
                            self._record(job)
                    self.signals.check()
            except BaseException:
                self._terminate_all()
                raise

    # ------------------------------------------------------------------ one trial
    def _prepare_trial(self) -> TrialJob | None:
        """Ask for a trial and prepare its run; ``None`` when its values combine into an
        invalid config (told FAIL at once, the search goes on)."""
        from optuna.trial import TrialState

        trial = self.study.ask(self.space.distributions)
        if self._heartbeats():
            self.study._storage.record_heartbeat(trial._trial_id)
        number = trial.number
        params = self.space.decode(trial.params)
        try:
            trial_config = apply_values(self.config, params)
        except ConfigError as exc:
            trial.set_user_attr("error", str(exc)[:500])
            self.study.tell(trial, state=TrialState.FAIL)
            self.skipped[number] = str(exc)
            logger.warning("trial %d FAILED before it ran: %s", number, exc)
            return None
        except BaseException:
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        folder = self.output_dir / f"trial-{number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.config.model.family}-trial-{number}",
            tags={
                "mlflow.parentRunId": self.parent_id,
                "kennel.kind": "trial",
                "kennel.family": self.config.model.family,
                "kennel.search.study": self.study.study_name,
                "kennel.search.trial": str(number),
            },
        )
        run_id = run.info.run_id
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        cfg = self.config.search
        threads = trial_threads(trial_config)
        threshold = self._best_value() if cfg.log_models == "improving" else None
        overrides = [
            *self.overrides,
            # Plots in the trial process: parallel trials leave no core spare for a second
            # one, warm trials have the plotting libraries loaded, and the trial's params
            # stay the same whatever the launcher and n_jobs.
            "tracking.plots_in_background=false",
            *(_override_text(path, value) for path, value in params.items()),
            # After the sampled values: never more threads than cores (a searched value too).
            *([f"resource.num_threads={threads}"] if threads is not None else []),
            *(
                ["tracking.log_model=false", "tracking.log_plots=false"]
                if cfg.log_models == "none"
                else []
            ),
            # Trials never register or promote: the search registers its best trial only.
            "registry.enabled=false",
            "registry.auto_promote=null",
        ]
        gate = []
        if threshold is not None:
            sign = ">" if self.direction == "maximize" else "<"
            gate = ["--log-model-if", f"{self.metric}{sign}{threshold!r}"]
        command = [
            sys.executable,
            str(project_root() / "run.py"),
            "train",
            "-c",
            "",  # the trial's YAML, written into a temporary folder at launch
            "--output-dir",
            str(folder),
            "--output-json",
            str(folder / RESULT_FILE),
            *gate,
            *overrides,
        ]
        env = dict(os.environ)
        env.update(self._thread_env(trial_config))
        env["MLFLOW_RUN_ID"] = run_id
        env.pop("MLFLOW_NESTED_RUN", None)
        if trial_config.data.storage_options:
            env["KENNEL_DATA__STORAGE_OPTIONS"] = json.dumps(
                {k: v.get_secret_value() for k, v in trial_config.data.storage_options.items()}
            )
        job = TrialJob(number, trial, params, run_id, folder, command, env)
        job.yaml_text = _trial_yaml(trial_config)
        job.model_threshold = threshold
        with self.lock:
            self.jobs[number] = job
        logger.info(
            "trial %d: %s (run %s)",
            number,
            ", ".join(f"{k}={v}" for k, v in params.items()),
            run_id,
        )
        return job

    def _execute(self, job: TrialJob) -> TrialJob:
        """Worker thread: run the trial process to its end, a timeout or a stop."""
        timeout = self.config.search.trial_timeout
        with tempfile.TemporaryDirectory(prefix=f"kennel-trial-{job.number}-") as tmp:
            config_file = Path(tmp) / "config.yaml"
            config_file.write_text(job.yaml_text)
            command = list(job.command)
            command[command.index("-c") + 1] = str(config_file)
            with self.lock:
                if self.stopping:
                    job.killed = True
                    return job
                job.started = time.perf_counter()
                job.proc = self.launcher.launch(
                    job.number, command, job.env, job.folder / "trial.out"
                )
            try:
                job.returncode = job.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                job.timed_out = True
                _kill_group(job.proc)
                job.returncode = job.proc.wait()
            if getattr(job.proc, "error", None):
                job.error = job.proc.error  # type: ignore[union-attr]
        job.duration_s = round(time.perf_counter() - job.started, 3) if job.started else 0.0
        return job

    def _record(self, job: TrialJob) -> None:
        """Tell Optuna and MLflow how a finished trial went."""
        from optuna.trial import TrialState

        if job.state != "RUNNING":
            return
        result = job.folder / RESULT_FILE
        if job.killed or (self.stopping and job.returncode != 0):
            job.state, job.error = "KILLED", "search interrupted"
        elif job.timed_out:
            job.state = "FAIL"
            job.error = f"timed out after {self.config.search.trial_timeout:g}s"
        elif job.returncode != 0:
            job.state = "FAIL"
            job.error = job.error or (
                f"exit {job.returncode}: {_last_line(job.folder / 'trial.out')}"
            )
        elif not result.exists():
            job.state, job.error = "FAIL", f"no {RESULT_FILE} written"
        else:
            outcome = json.loads(result.read_text())
            job.metrics = {k: float(v) for k, v in (outcome.get("metrics") or {}).items()}
            value = job.metrics.get(self.metric)
            if value is None or math.isnan(value):
                job.state, job.error = "FAIL", f"{self.metric} missing or NaN in {RESULT_FILE}"
            else:
                job.state, job.value = "COMPLETE", value
        trial = job.trial
        trial.set_user_attr("duration_s", job.duration_s)
        if job.state == "COMPLETE":
            trial.set_user_attr(
                "test_metrics",
                {k[5:]: v for k, v in job.metrics.items() if k.startswith("test_")},
            )
            self.study.tell(trial, job.value)
            best = self.study.best_trial
            logger.info(
                "trial %d finished in %.1fs: %s=%.5g (best %.5g, trial %d)",
                job.number,
                job.duration_s,
                self.metric,
                job.value,
                best.value,
                best.number,
            )
            return
        trial.set_user_attr("error", (job.error or "")[:500])
        if job.state == "KILLED":
            trial.set_user_attr("interrupted", True)
        self.study.tell(trial, state=TrialState.FAIL)
        status = "KILLED" if job.state == "KILLED" else "FAILED"
        try:
            self.client.set_tag(job.run_id, "kennel.search.error", (job.error or "")[:500])
            self.client.set_terminated(job.run_id, status)
        except Exception as exc:
            logger.warning("could not mark run %s %s: %s", job.run_id, status, exc)
        log = logger.info if job.state == "KILLED" else logger.warning
        log("trial %d %s: %s", job.number, status, job.error)

    # ------------------------------------------------------------------ stopping
    def _terminate_all(self) -> None:
        with self.lock:
            self.stopping = True
            running = []
            for job in self.jobs.values():
                if job.state != "RUNNING" or job.returncode is not None:
                    continue  # told already, or ended on its own: recorded as it ended
                job.killed = True
                if job.proc is not None:
                    running.append(job)
        if running:
            logger.info("stopping: terminating %d running trial(s)", len(running))
        for job in running:
            _kill_group(job.proc, grace=0)
        deadline = time.monotonic() + KILL_GRACE_S
        for job in running:
            assert job.proc is not None
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(job.proc, grace=None)

    def _shutdown(self) -> None:
        """Record every trial not told yet (killed ones as KILLED)."""
        for job in list(self.jobs.values()):
            if job.state == "RUNNING":
                try:
                    self._record(job)
                except Exception as exc:  # the search's own error matters more
                    logger.warning("could not record trial %d: %s", job.number, exc)

    # ------------------------------------------------------------------ reports
    def _log_base_params(self) -> None:
        """The base config on the parent, except the searched keys (they get the best
        trial's values at the end)."""
        flat = {
            k: v
            for k, v in self.config.flat().items()
            if not any(k == p or k.startswith(p + ".") for p in self.space.specs)
        }
        flat["search.metric"] = self.metric
        flat["search.direction"] = self.direction
        _log_new_params(self.client, self.parent_id, flat)

    def trial_rows(self) -> list[dict[str, Any]]:
        """Every trial of the study (all workers), for ``trials.csv``."""
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            duration = t.duration.total_seconds() if t.duration else t.user_attrs.get("duration_s")
            state = t.state.name
            if t.user_attrs.get("interrupted"):
                state = "KILLED"
            row: dict[str, Any] = {
                "number": t.number,
                "state": state,
                "value": t.value,
                "duration_s": round(duration, 3) if duration is not None else None,
                "run_id": t.user_attrs.get(RUN_ID_ATTR),
            }
            decoded = (
                self.space.decode(t.params) if set(t.params) <= set(self.space.specs) else t.params
            )
            for path in self.space.specs:
                value = decoded.get(path)
                row[path] = json.dumps(value) if isinstance(value, list | dict) else value
            row["error"] = t.user_attrs.get("error")
            rows.append(row)
        return rows

    def _write_reports(self, mlflow: Any) -> None:
        rows = self.trial_rows()
        path = self.output_dir / TRIALS_FILE
        columns = ["number", "state", "value", "duration_s", "run_id", *self.space.specs, "error"]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        files = [path]
        plot = history_plot(rows, self.metric, self.direction, self.output_dir / PLOT_FILE)
        if plot is not None:
            files.append(plot)
        for file in files:
            try:
                mlflow.log_artifact(str(file))
            except Exception as exc:
                logger.warning("could not log %s: %s", file.name, exc)

    def _finish(
        self, mlflow: Any, study_name: str, storage: str | None, uri: str, elapsed: float
    ) -> SearchOutcome:
        from mlflow.entities import Metric

        cfg = self.config.search
        mine = Counter(job.state for job in self.jobs.values())
        if self.skipped:
            mine["FAIL"] += len(self.skipped)
        study_counts = Counter(r["state"] for r in self.trial_rows())
        best_info: dict[str, Any] | None = None
        completed = [t for t in self.study.get_trials(deepcopy=False) if t.value is not None]
        outcome = SearchOutcome(
            status="FINISHED",
            parent_run_id=self.parent_id,
            experiment_id=self.experiment_id,
            study_name=study_name,
            storage=storage,
            metric=self.metric,
            direction=self.direction,
            best=None,
            counts=dict(mine),
            study_counts=dict(study_counts),
            n_trials=cfg.n_trials,
            n_jobs=cfg.n_jobs,
            output_dir=str(self.output_dir),
            tracking_uri=uri,
            duration_s=round(elapsed, 3),
            trials_per_minute=round(len(self.jobs) / elapsed * 60, 2) if elapsed else 0.0,
        )
        now = int(time.time() * 1000)
        history = [
            Metric(f"trial_{self.metric}", float(job.value), now, job.number)
            for job in self.jobs.values()
            if job.value is not None
        ]
        if completed:
            best = self._best_trial()
            params = self.space.decode(best.params)
            run_id = best.user_attrs.get(RUN_ID_ATTR)
            best_info = {
                "number": best.number,
                "value": best.value,
                "params": params,
                "run_id": run_id,
            }
            outcome.best = best_info
            _log_new_params(self.client, self.parent_id, params)
            self.client.log_batch(
                self.parent_id,
                metrics=[Metric(f"best_{self.metric}", float(best.value), now, 0), *history],
            )
            mlflow.set_tags(
                {
                    "best_run_id": run_id or "",
                    "kennel.search.best_trial": str(best.number),
                }
            )
            if run_id:
                self.client.set_tag(run_id, "kennel.search.best", "true")
            logger.info(
                "best trial %d: %s=%.5g (run %s) %s",
                best.number,
                self.metric,
                best.value,
                run_id,
                params,
            )
            if cfg.register_best and run_id:
                self._register_best(outcome, params, run_id, best.user_attrs)
        elif history:
            self.client.log_batch(self.parent_id, metrics=history)
        if len(self.loop_times) == 2:
            first, last = self.loop_times
            outcome.timings = {
                "startup_s": round(first - self.created, 3),
                "trials_s": round(last - first, 3),
                "finish_s": round(time.perf_counter() - last, 3),
            }
        write_json(self.output_dir / SUMMARY_FILE, outcome.to_dict())
        mlflow.log_artifact(str(self.output_dir / SUMMARY_FILE))
        logger.info(
            "search %s done: %s in %.0fs (%.2f trials/min)",
            study_name,
            ", ".join(f"{k} {v}" for k, v in sorted(mine.items())),
            elapsed,
            outcome.trials_per_minute,
        )
        return outcome

    def _best_trial(self) -> Any:
        """Optuna's best trial; if it logged no model (with ``log_models=improving`` a trial
        that only ties the best so far logs none), the earliest tied trial that did."""
        from optuna.trial import TrialState

        best = self.study.best_trial
        if self.config.search.log_models != "improving":
            return best
        tied = sorted(
            (
                t
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value == best.value
            ),
            key=lambda t: t.number,
        )
        for trial in (best, *tied):
            run_id = trial.user_attrs.get(RUN_ID_ATTR)
            if not run_id:
                continue
            try:
                tags = self.client.get_run(run_id).data.tags
            except Exception:  # a run of another worker's store: take Optuna's choice
                return best
            if tags.get("kennel.model_logged") != "false":
                return trial
        return best

    def _register_best(
        self, outcome: SearchOutcome, params: dict[str, Any], run_id: str, attrs: Mapping
    ) -> None:
        """Register the best trial's model (once, even with several workers) and put it
        through the normal promotion gate."""
        from kennel import registry

        tags = self.client.get_run(run_id).data.tags
        if tags.get("kennel.registered_version"):
            logger.info(
                "best run %s is already registered as version %s",
                run_id,
                tags["kennel.registered_version"],
            )
            outcome.registered_model = tags.get("kennel.registered_model")
            outcome.registered_version = int(tags["kennel.registered_version"])
            return
        best_config = apply_values(self.config, params)
        name = registry.default_model_name(best_config)
        mv = registry.register_version(
            f"runs:/{run_id}/model",
            name,
            run_id=run_id,
            tags={
                "kennel.family": best_config.model.family,
                "kennel.run_id": run_id,
                "kennel.search.parent_run_id": self.parent_id,
            },
        )
        version = int(mv.version)
        for rid in (run_id, self.parent_id):
            self.client.set_tag(rid, "kennel.registered_model", name)
            self.client.set_tag(rid, "kennel.registered_version", str(version))
        outcome.registered_model, outcome.registered_version = name, version
        env = best_config.registry.auto_promote
        if env:
            holdout = registry.Holdout.from_config(best_config)
            if attrs.get("test_metrics") and self.task:
                registry.cache_score(name, version, holdout.id, self.task, attrs["test_metrics"])
            decision = registry.promote(
                name,
                version,
                env,
                config=best_config,
                holdout=holdout,
                report_run_id=self.parent_id,
            )
            outcome.promotion = decision.to_dict()
            self.client.log_dict(self.parent_id, outcome.promotion, "promotion.json")


class SearchFailed(Exception):
    """No trial of the study completed (exit 1: the cause is in the trial logs)."""


def _log_new_params(client: Any, run_id: str, values: Mapping[str, Any]) -> None:
    """Log params in one batch, leaving keys the run already has alone (entry-point params
    under ``mlflow run``): MLflow refuses to change a param."""
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    params = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        text = text if len(text) <= 500 else text[:497] + "..."
        if key in existing:
            if existing[key] != text:
                logger.warning("param %s already logged as %r; keeping it", key, existing[key])
            continue
        params.append(Param(key, text))
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])


def _kill_group(proc: TrialProcess | None, grace: float | None = 3.0) -> None:
    """SIGTERM the trial's process group, then SIGKILL after ``grace`` seconds
    (``grace=0``: TERM only; ``None``: KILL at once)."""
    if proc is None or proc.poll() is not None:
        return
    sig = signal.SIGKILL if grace is None else signal.SIGTERM
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    if grace:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def _last_line(path: Path) -> str:
    """The trial's last meaningful output line (its one-line error)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or ["no output"])[-1][:300]


def _warm_plots() -> None:
    with contextlib.suppress(Exception):
        from kennel.plots import warm_up

        warm_up()


def history_plot(
    rows: list[dict[str, Any]], metric: str, direction: str, path: Path
) -> Path | None:
    """Each completed trial's value and the best so far, by trial number."""
    points = sorted((r["number"], r["value"]) for r in rows if r["value"] is not None)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    numbers, values = zip(*points, strict=True)
    pick = max if direction == "maximize" else min
    best = [pick(values[: i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(numbers, values, s=18, label="trial")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    failed = [r["number"] for r in rows if r["value"] is None]
    if failed:
        ax.scatter(failed, [best[-1]] * len(failed), marker="x", color="grey", label="failed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"optimisation history ({direction})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- entry
def run_search(
    config: Config, output_dir: Path, overrides: list[str] | None = None
) -> SearchOutcome:
    """Validate the space, then run this worker's trials; see the module docstring.

    ``overrides`` are the user's CLI overrides, repeated on every trial's command line so
    they keep their precedence over the environment overlay there too.
    """
    validate_space(config)
    if config.search.register_best and not config.tracking.log_model:
        raise ConfigError("search.register_best needs tracking.log_model=true")
    if config.search.register_best and config.search.log_models == "none":
        raise ConfigError(
            "search.register_best needs a model from the best trial; set search.log_models "
            "to improving (the default) or all"
        )
    from kennel.cluster import is_distributed

    if is_distributed(config.resource.cluster):
        return _run_search_on_cluster(config, output_dir, overrides or [])
    search = Search(config, output_dir, overrides or [], begin=True)
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    return search.run()


def _run_search_on_cluster(config: Config, output_dir: Path, overrides: list[str]) -> SearchOutcome:
    """A search whose trials train on a Dask cluster: one after another, each using the
    whole cluster (LightGBM's data-parallel training already keeps every worker busy; two
    trials at once would halve each one's workers and double the network set-ups). For
    ``local:N`` the search starts one LocalCluster and every trial connects to it."""
    from kennel import cluster
    from kennel.families import get_family

    family = get_family(config.model.family)
    if family.cluster_trainer is None:
        raise UserError(
            f"the {family.name} family trains on one machine, not on a cluster "
            f"(resource.cluster={config.resource.cluster}); set resource.cluster=none"
        )
    if config.search.n_jobs > 1:
        logger.info(
            "resource.cluster=%s: each trial trains on the whole cluster, so trials run one "
            "after another (search.n_jobs %d -> 1)",
            config.resource.cluster,
            config.search.n_jobs,
        )
        config = config.model_copy(
            update={"search": config.search.model_copy(update={"n_jobs": 1})}
        )
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    if not config.resource.cluster.startswith("local"):
        return Search(config, output_dir, overrides, begin=True).run()
    with cluster.connect(config.resource.cluster, num_threads=config.resource.num_threads) as (
        _,
        info,
    ):
        trials_overrides = [*overrides, f"resource.cluster={info.address}"]
        return Search(config, output_dir, trials_overrides, begin=True).run()


def storage_secrets(config: Config) -> list[str]:
    """What to mask in logs for the search: every secret but the storage URL itself,
    whose password alone is masked (the URL is shown redacted)."""
    raw = config.search.storage.get_secret_value() if config.search.storage else None
    url = storage_url(config)
    found = [s for s in config.secret_values() if s != raw]
    if url and (password := url_password(url)):
        found.append(password)
    return found
