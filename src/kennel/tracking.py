"""Everything kennel says to MLflow tracking, in one place: store, runs, params, metrics,
artifacts, tags and dataset lineage.

MLflow is imported inside functions so that light commands stay light.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kennel.config import Config, project_root
from kennel.errors import UserError
from kennel.logging_setup import warnings_to_debug
from kennel.util import first_line, redact_url

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from kennel.data import DataProcessor

logger = logging.getLogger(__name__)

#: Param values longer than this are cut (MLflow's limit is 6000 characters).
MAX_PARAM_LENGTH = 500
#: Tag holding the one-line reason a run FAILED, and the longest value kennel writes there.
ERROR_TAG = "kennel.error"
MAX_TAG_LENGTH = 5000


#: Bounded retries for a tracking server (real environment variables win). MLflow's own
#: defaults (7 retries, backoff factor 2) keep a command retrying for minutes once the
#: server is gone; these give up after about 7 s, then the command exits 2 naming the URI.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


class TrackingUnavailable(UserError):
    """The tracking server or database cannot be reached (exit 2, URI without password)."""


def resolve_tracking_uri(config: Config | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri``, else an absolute SQLite URI in
    the project folder. A relative ``sqlite:///`` path is made absolute (against the working
    directory), so the store never silently changes with it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (config.tracking.uri if config else None)
    if not uri:
        return f"sqlite:///{project_root() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        relative = uri[len("sqlite:///") :]
        if relative != ":memory:":
            return f"sqlite:///{(Path.cwd() / relative).resolve()}"
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri).resolve().as_uri()  # a plain folder: file store
    return uri


def configure(config: Config | None = None) -> str:
    """Point MLflow at the resolved store (env var too, for child processes) and check
    that it answers; returns the URI."""
    import mlflow

    uri = resolve_tracking_uri(config)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    ensure_store(uri)
    return uri


def ensure_store(uri: str) -> None:
    """Create the store's schema (SQLite migrations) once, or fail with exit 2 when a
    server or database does not answer."""
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    _check_database(uri)
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        from kennel.access import as_user_error, refusal

        if refusal(exc):
            raise as_user_error(exc, "read the tracking store", "READ") from None
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {redact_url(uri)}: {_first_line(exc)}"
        ) from None


def _check_database(uri: str) -> None:
    """Connect once to a database store: MLflow itself retries a refused login or a missing
    driver for about 100 s before it gives up."""
    if urlsplit(uri).scheme.split("+")[0] not in {"postgresql", "mysql", "mssql"}:
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except ModuleNotFoundError as exc:
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {redact_url(uri)}: no driver ({exc.name}); "
            "install it, e.g. pip install -e '.[postgres]'"
        ) from None
    except Exception as exc:
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {redact_url(uri)}: {_first_line(exc)}"
        ) from None


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast with a clear message when an HTTP server or database host is down,
    instead of MLflow's minutes of retries."""
    parts = urlsplit(uri)
    if parts.scheme not in {"http", "https", "postgresql", "postgresql+psycopg", "mysql"}:
        return
    host = parts.hostname or "localhost"
    port = parts.port or {"http": 80, "https": 443, "mysql": 3306}.get(parts.scheme, 5432)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise TrackingUnavailable(
            f"cannot reach the MLflow tracking store {redact_url(uri)}: {exc.strerror or exc}"
        ) from None


def _first_line(exc: BaseException) -> str:
    return redact_url(first_line(exc))


def client() -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def run_name(config: Config, data: str | None = None, now: datetime | None = None) -> str:
    """``<family>-<data>-YYYYmmdd-HHMMSS`` (what ran, on what, when) unless
    ``tracking.run_name`` is set."""
    if config.tracking.run_name:
        return config.tracking.run_name
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return "-".join([config.model.family, *([data] if data else []), stamp])


@contextmanager
def start_run(
    config: Config,
    *,
    name: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
) -> Iterator[Any]:
    """Start (or, under ``mlflow run`` / a search parent, resume) a run; always end it,
    FAILED if the body raised, KILLED on Ctrl-C."""
    import mlflow

    from kennel.access import guard
    from kennel.runs import PROCESS_TAG, process_tag

    # Which process owns the run: `kennel runs cleanup` closes it if that process dies.
    tags = {**(tags or {}), PROCESS_TAG: process_tag()}
    resuming = bool(os.environ.get("MLFLOW_RUN_ID"))
    with guard(f"create runs in experiment '{config.tracking.experiment}'"):
        if not resuming:
            set_experiment(config.tracking.experiment)
        run = mlflow.start_run(
            run_name=None if resuming else (name or run_name(config)),
            tags=dict(tags or {}),
            nested=nested,
        )
    if resuming:
        existing = run.data.tags
        own = {k: v for k, v in tags.items() if k != "kennel.kind" or "kennel.kind" not in existing}
        # A run someone else created (``mlflow run`` names it like ``unleashed-gnat-901``)
        # is named by what ran too; a search trial keeps the name its search gave it.
        if name and existing.get("kennel.kind") != "trial":
            own["mlflow.runName"] = name
        if own:
            mlflow.set_tags(own)
    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as exc:
        status = "FAILED"
        with contextlib.suppress(Exception):  # the store may be what failed
            mlflow.set_tag(ERROR_TAG, first_line(exc)[:MAX_TAG_LENGTH])
        raise
    finally:
        try:
            mlflow.end_run(status)
        except Exception:  # the store went away: the command's own error matters more
            logger.warning("could not close MLflow run %s", run.info.run_id)


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite file (absolute), never a
    ``./mlruns`` that moves with the working directory; servers decide for themselves."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlruns").resolve().as_uri()
    return None


def set_experiment(name: str) -> str:
    """Make ``name`` the active experiment, creating it with an absolute artifact root."""
    import mlflow

    tracking = client()
    experiment = tracking.get_experiment_by_name(name)
    if experiment is None:
        from mlflow.exceptions import MlflowException

        location = artifact_root(mlflow.get_tracking_uri())
        with contextlib.suppress(MlflowException):  # created meanwhile by a parallel run
            tracking.create_experiment(name, artifact_location=location)
    return mlflow.set_experiment(name).experiment_id


def log_params(config: Config, run_id: str, extra: Mapping[str, Any] | None = None) -> None:
    """Log the redacted, flattened config in one batch. Keys the run already has (entry-point
    params under ``mlflow run``, a resumed run) are left alone: MLflow refuses changes."""
    from mlflow.entities import Param

    existing = client().get_run(run_id).data.params
    values = {**config.flat(), **(extra or {})}
    params = []
    for key, value in values.items():
        text = _param_text(value)
        if key in existing:
            if existing[key] != text:
                logger.warning("param %s already logged as %r; keeping it", key, existing[key])
            continue
        params.append(Param(key, text))
    if params:
        client().log_batch(run_id, params=params)


def _param_text(value: Any) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


class MetricsBatcher:
    """The ``on_metrics`` callback a Trainer gets: each call becomes one batched request."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.calls = 0
        self.values = 0
        self.history: dict[str, list[tuple[int, float]]] = {}

    def __call__(self, steps: list[tuple[int, dict[str, float]]]) -> None:
        self.log_steps(steps)

    def log_steps(self, steps: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for step, values in steps:
            for key, value in values.items():
                if value is None or value != value:  # NaN: MLflow stores it, plots choke
                    continue
                metrics.append(Metric(key, float(value), now, int(step)))
                self.history.setdefault(key, []).append((int(step), float(value)))
        if metrics:
            client().log_batch(self.run_id, metrics=metrics)
            self.calls += 1
            self.values += len(metrics)

    def log(self, values: Mapping[str, float], step: int = 0) -> None:
        self.log_steps([(step, dict(values))])


def git_tags(root: Path | None = None) -> dict[str, str]:
    """``kennel.git_commit`` and ``kennel.git_dirty`` when the project is a git checkout."""
    root = root or project_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {
        "kennel.git_commit": commit.stdout.strip(),
        "kennel.git_dirty": str(bool(dirty.stdout.strip())).lower(),
        "mlflow.source.git.commit": commit.stdout.strip(),
    }


def run_tags(config: Config, processor: DataProcessor | None = None) -> dict[str, str]:
    tags = {
        "kennel.family": config.model.family,
        "kennel.config_hash": config.digest(),
        "kennel.env": os.environ.get("KENNEL_ENV", "dev"),
        **git_tags(),
    }
    if processor is not None:
        tags["kennel.dataset_digest"] = processor.digest
        tags["kennel.task"] = processor.task
    return tags


def log_datasets(processor: DataProcessor, frames: Mapping[str, Any]) -> None:
    """Dataset lineage for each ``context -> frame`` (training/validation/test): source,
    digest and schema, in one request.

    Metadata-only datasets: no copy of the rows, no profile computed over millions of rows.
    """
    import warnings

    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types.utils import _infer_schema

    uri = processor.source_uri
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(uri)
    except Exception:  # builtin:<name> and schemes MLflow has no source type for
        source = CodeDatasetSource(tags={"kennel.source": uri})
    datasets = []
    for context, frame in frames.items():
        try:
            with warnings_to_debug(logger):
                schema = _infer_schema(frame.head(100))
        except Exception:
            schema = None
        datasets.append(
            MetaDataset(
                source=source,
                name=f"{processor.source_name}-{context}",
                digest=processor.digest,
                schema=schema,
            )
        )
    for attempt in range(4):
        try:
            mlflow.log_inputs(
                datasets=datasets, contexts=list(frames), tags_list=[None] * len(datasets)
            )
            return
        except Exception as exc:
            # Parallel runs (search trials) may insert the same new dataset at once; the
            # loser's transaction rolls back and, retried, finds the row the winner wrote.
            # (SQLite: "UNIQUE constraint failed"; PostgreSQL behind a tracking server:
            # "UniqueViolation ... duplicate key value violates unique constraint".)
            text = str(exc).lower()
            race = any(m in text for m in ("unique constraint", "integrityerror", "duplicate key"))
            if attempt == 3 or not race:
                raise
            time.sleep(0.1 * (attempt + 1))


def log_artifact_file(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def runs_table_url(experiment_id: str, uri: str | None = None) -> str:
    """The MLflow UI link that opens the classic runs table (not the GenAI view)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    base = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def get_run(run_id: str) -> Run:
    return client().get_run(run_id)
