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
import dataclasses
import json
import logging
import math
import os
import subprocess
import tempfile
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime
from pathlib import Path
from typing import Any

from kennel import collector, registry, tracking
from kennel.config import Config, ConfigError
from kennel.search import results
from kennel.search.launchers import SubprocessLauncher, WarmLauncher, thread_environment
from kennel.search.results import SearchFailed, SearchOutcome
from kennel.search.signals import Signals
from kennel.search.space import Space, apply_values
from kennel.search.study import (
    RUN_ID_ATTR,
    StaleTrials,
    check_metric_name,
    make_sampler,
    open_study,
    resolve_objective,
    storage_url,
)
from kennel.search.trials import (
    KILL_GRACE_S,
    RESULT_FILE,
    TrainRequest,
    TrialJob,
    available_cores,
    effective_threads,
    kill_group,
    last_line,
    trial_overrides,
    trial_threads,
    trial_yaml,
)
from kennel.serve import distributions
from kennel.util import redact_url, store_lock

logger = logging.getLogger(__name__)


class Search:
    """One worker of a search: asks Optuna for trials, runs them as processes, tells."""

    def __init__(
        self,
        config: Config,
        output_dir: Path,
        overrides: list[str],
        *,
        begin: bool = False,
        config_file: str | None = None,
        user_overrides: list[str] | None = None,
    ) -> None:
        """``begin``: start the trial launcher at once (the warm server then imports and
        reads the data while this process imports Optuna and MLflow). ``config_file`` and
        ``user_overrides`` (default: ``overrides``) are what the user typed: the command that
        trains the best trial repeats them."""
        self.created = time.perf_counter()
        self.loop_times: list[float] = []
        self.config = config
        self.output_dir = output_dir
        self.overrides = list(overrides)
        self.config_file = config_file
        self.user_overrides = list(overrides if user_overrides is None else user_overrides)
        self.launcher: SubprocessLauncher | WarmLauncher = SubprocessLauncher()
        self.launcher_begun = False
        if begin:
            self.begin_launcher()
        self.space = Space(config.search.space)
        self.jobs: dict[int, TrialJob] = {}
        self.skipped: dict[int, str] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self.signals = Signals()
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
            (self.output_dir / distributions.FILE_NAME).unlink(missing_ok=True)

    def _run(self) -> SearchOutcome:
        started = time.perf_counter()
        setting_up = contextlib.ExitStack()  # the collector paused until the trials start
        setting_up.enter_context(collector.paused())
        try:
            return self._run_search(started, setting_up)
        finally:
            setting_up.close()

    def _run_search(self, started: float, setting_up: contextlib.ExitStack) -> SearchOutcome:
        uri, task = None, None
        if isinstance(self.launcher, WarmLauncher) and self.launcher.hello.get("task"):
            # The warm server decides the task on the table it reads first thing; MLflow
            # loads here meanwhile, so the task costs this process no read of its own.
            check_metric_name(self.config)  # a wrong name fails before anything opens
            uri = self._open_store()
            task = self.launcher.wait_task()  # not shielded: Ctrl-C stops a long read
            if task:
                logger.info(
                    "task %s, decided on the %s rows of %s the trial server read (its log: "
                    "%s; set data.task to override)",
                    task,
                    self.launcher.rows,
                    redact_url(self.config.data.source),
                    self.launcher.log_path.name,
                )
        self.metric, self.direction, self.task = resolve_objective(self.config, task=task)
        storage = storage_url(self.config)
        shown_storage = redact_url(storage) if storage else None
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        study_name = self.config.search.study_name or f"kennel-{self.config.model.family}-{stamp}"
        self._open_study(study_name, storage)
        if uri is None:
            uri = self._open_store()
        name = f"search-{self.config.model.family}-{study_name}"
        tags = self._parent_tags(study_name, shown_storage, name)
        experiment = tracking.experiment_for(self.config, registry.default_model_name(self.config))
        with tracking.start_run(self.config, experiment=experiment, name=name, tags=tags) as parent:
            self.parent_id = parent.info.run_id
            self.experiment_id = parent.info.experiment_id
            with self.signals.shielded():
                results.log_base_params(self)
            try:
                with self.signals.shielded():
                    self.launcher.wait_ready()
                if not self.launcher.draws_history:
                    # matplotlib for the history plot loads while the trials run, not after.
                    threading.Thread(target=_warm_plots, name="warm-plots", daemon=True).start()
                setting_up.close()
                self.loop_times.append(time.perf_counter())
                self._loop()
                self.loop_times.append(time.perf_counter())
            finally:
                # Stop, kill and record whatever is still running, even on Ctrl-C.
                self._shutdown()
                self.beating.set()
                try:
                    results.write_reports(self)  # the history plot drawn by the trial server
                finally:
                    self.launcher.close()
            outcome = results.finish(
                self, study_name, shown_storage, uri, time.perf_counter() - started
            )
            if outcome.best is None:
                raise SearchFailed(
                    f"every trial of study '{study_name}' failed; see the trial logs "
                    f"under {self.output_dir}"
                )
        return outcome

    def _open_store(self) -> str:
        """The tracking store; its schema is created once, before any trial process starts,
        and never half-way. Returns the tracking URI."""
        uri = tracking.resolve_tracking_uri(self.config)
        with self.signals.shielded(), store_lock(uri):
            uri = tracking.configure(self.config)
        self.client = tracking.client()
        self.stale.client = self.client
        return uri

    def _open_study(self, study_name: str, storage: str | None) -> None:
        """Create or join the study (its schema too, once, before any trial starts)."""
        cfg = self.config.search
        with self.signals.shielded():
            self.study = open_study(
                name=study_name,
                storage=storage,
                direction=self.direction,
                sampler=make_sampler(self.config, parallel=cfg.n_jobs > 1, shared=bool(storage)),
                heartbeat_interval=cfg.heartbeat_interval if storage else 0.0,
                grace_period=cfg.grace_period,
                stale_callback=self.stale,
            )
        logger.info(
            "search %s: %d trials, %d at once, %s %s, sampler %s, storage %s",
            study_name,
            cfg.n_trials,
            cfg.n_jobs,
            self.direction,
            self.metric,
            cfg.sampler,
            redact_url(storage) if storage else "in memory",
        )

    def _parent_tags(self, study_name: str, shown_storage: str | None, name: str) -> dict[str, str]:
        cfg = self.config.search
        tags = {
            "kennel.kind": "search",
            "kennel.family": self.config.model.family,
            "kennel.search.study": study_name,
            "kennel.search.metric": self.metric,
            "kennel.search.direction": self.direction,
            "kennel.config_hash": self.config.digest(),
            "kennel.search.launcher": cfg.launcher,
            "kennel.search.log_models": cfg.log_models,
            "mlflow.runName": name,  # also names the run ``mlflow run -e search`` started
            **tracking.git_tags(),
        }
        if shown_storage:
            tags["kennel.search.storage"] = shown_storage
        if self.task:
            tags["kennel.task"] = self.task
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
        return tags

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
        base.write_text(trial_yaml(self.config))
        self.launcher = WarmLauncher(
            env=env,
            hello={
                "family": self.config.model.family,
                "config": str(base),
                "overrides": self.overrides,
                "distributions": str(self.output_dir / distributions.FILE_NAME),
                # data.task auto: the server decides it on the table it holds for the
                # trials (none on a cluster or for a remote file: this process loads it).
                "task": self.config.data.task == "auto" and self.config.resource.cluster == "none",
            },
            log_path=self.output_dir / "trial-server.log",
        )
        try:
            self.launcher.begin()
        except BaseException:
            self.launcher.close()
            raise
        # While the server imports: the map MLflow needs to log a trial's model, built
        # here (this process waits for the server anyway) instead of on its critical path.
        with contextlib.suppress(Exception):
            distributions.write(self.output_dir / distributions.FILE_NAME)

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
        overrides = trial_overrides(self.overrides, params, threads, cfg.log_models)
        gate = None
        if threshold is not None:
            sign = ">" if self.direction == "maximize" else "<"
            gate = f"{self.metric}{sign}{threshold!r}"
        request = TrainRequest(overrides, str(folder), gate)
        env = dict(os.environ)
        env.update(self._thread_env(trial_config))
        env["MLFLOW_RUN_ID"] = run_id
        env.pop("MLFLOW_NESTED_RUN", None)
        if trial_config.data.storage_options:
            env["KENNEL_DATA__STORAGE_OPTIONS"] = json.dumps(
                {k: v.get_secret_value() for k, v in trial_config.data.storage_options.items()}
            )
        job = TrialJob(number, trial, params, run_id, folder, request, env)
        job.yaml_text = trial_yaml(trial_config)
        job.model_threshold = threshold
        with self.lock:
            self.jobs[number] = job
        logger.info(
            "trial %d: %s (run %s)",
            number,
            ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
            ),
            run_id,
        )
        return job

    def _execute(self, job: TrialJob) -> TrialJob:
        """Worker thread: run the trial process to its end, a timeout or a stop."""
        timeout = self.config.search.trial_timeout
        with tempfile.TemporaryDirectory(prefix=f"kennel-trial-{job.number}-") as tmp:
            config_file = Path(tmp) / "config.yaml"
            config_file.write_text(job.yaml_text)
            request = dataclasses.replace(job.request, config=str(config_file))
            with self.lock:
                if self.stopping:
                    job.killed = True
                    return job
                job.started = time.perf_counter()
                job.proc = self.launcher.launch(
                    job.number, request, job.env, job.folder / "trial.out"
                )
            try:
                job.returncode = job.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                job.timed_out = True
                kill_group(job.proc)
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
                f"exit {job.returncode}: {last_line(job.folder / 'trial.out')}"
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
            kill_group(job.proc, grace=0)
        deadline = time.monotonic() + KILL_GRACE_S
        for job in running:
            assert job.proc is not None
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_group(job.proc, grace=None)

    def _shutdown(self) -> None:
        """Record every trial not told yet (killed ones as KILLED)."""
        for job in list(self.jobs.values()):
            if job.state == "RUNNING":
                try:
                    self._record(job)
                except Exception as exc:  # the search's own error matters more
                    logger.warning("could not record trial %d: %s", job.number, exc)

    # ------------------------------------------------------------------ reports


def _warm_plots() -> None:
    with contextlib.suppress(Exception):
        from kennel.report.figures import warm_up

        warm_up()


# --------------------------------------------------------------------------- entry
def quiet_optuna() -> None:
    """Optuna's records go through kennel's logging, warnings only ("A new study created in
    memory ...": kennel's own line says it, with more)."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def search_output_dir(config: Config, requested: str | os.PathLike[str] | None = None) -> Path:
    """``--output-dir`` or a new ``<output_root>/search-<family>-<time>-<rand>``."""
    from kennel.outputs import output_dir_for

    return output_dir_for(config, requested, kind=f"search-{config.model.family}")
