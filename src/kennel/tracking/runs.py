"""Runs: names, start/resume/end, params, metrics in batches, artifacts, tags and dataset
lineage. Every MLflow call a workflow makes on its run goes through here.

MLflow is imported inside functions so that light commands stay light.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.config import Config, project_root
from kennel.logging_setup import warnings_to_debug
from kennel.tracking.store import (
    DEFAULT_EXPERIMENT,
    DEFAULT_EXPERIMENT_ID,
    client,
    set_experiment,
)
from kennel.util import first_line

if TYPE_CHECKING:
    from kennel.data import DataProcessor

logger = logging.getLogger(__name__)

#: Param values longer than this are cut (MLflow's limit is 6000 characters).
MAX_PARAM_LENGTH = 500
#: Tag holding the one-line reason a run FAILED, and the longest value kennel writes there.
ERROR_TAG = "kennel.error"
MAX_TAG_LENGTH = 5000


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
    experiment: str,
    name: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
) -> Iterator[Any]:
    """Start a run in ``experiment`` (see :func:`~kennel.tracking.store.experiment_for`) or,
    under ``mlflow run`` / a search parent, resume ``MLFLOW_RUN_ID``; always end it, FAILED
    if the body raised, KILLED on Ctrl-C.

    ``mlflow run`` creates its run before kennel starts; kennel's MLflow plugin
    (:mod:`kennel.tracking.mlflow_plugin`) has it created in the same experiment, so cat and
    dog runs of one data set meet whatever launched them.
    """
    import mlflow

    from kennel.tracking.access import guard
    from kennel.tracking.processes import PROCESS_TAG, process_tag

    # Which process owns the run: `kennel runs cleanup` closes it if that process dies.
    tags = {**(tags or {}), PROCESS_TAG: process_tag()}
    resuming = bool(os.environ.get("MLFLOW_RUN_ID"))
    with guard(f"create runs in experiment '{experiment}'"):
        if not resuming:
            set_experiment(experiment)
        run = mlflow.start_run(
            run_name=None if resuming else (name or run_name(config)),
            tags=dict(tags or {}),
            nested=nested,
        )
    if resuming:
        _name_resumed(run, tags, name)
        _warn_if_elsewhere(run, experiment)
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


def _name_resumed(run: Any, tags: Mapping[str, str], name: str | None) -> None:
    """Tags of a run someone else created, and its name: what ran (``mlflow run`` names it
    like ``unleashed-gnat-901``); a search trial keeps the name its search gave it."""
    import mlflow

    existing = run.data.tags
    own = {k: v for k, v in tags.items() if k != "kennel.kind" or "kennel.kind" not in existing}
    if name and existing.get("kennel.kind") != "trial":
        own["mlflow.runName"] = name
    if own:
        mlflow.set_tags(own)


def _warn_if_elsewhere(run: Any, experiment: str) -> None:
    """``mlflow run`` without kennel's plugin (kennel not installed in the environment that
    runs ``mlflow``) files its run in ``Default``: say how to get it beside the others."""
    if run.info.experiment_id != DEFAULT_EXPERIMENT_ID or experiment == DEFAULT_EXPERIMENT:
        return
    if run.data.tags.get("mlflow.source.type") != "PROJECT":
        return
    logger.warning(
        "mlflow run filed run %s in experiment '%s', not '%s' beside the other runs on this "
        "data: install kennel where mlflow runs (pip install -e .), or pass "
        "--experiment-name %s",
        run.info.run_id,
        DEFAULT_EXPERIMENT,
        experiment,
        experiment,
    )


def log_params(
    config: Config,
    run_id: str,
    extra: Mapping[str, Any] | None = None,
    *,
    exclude: tuple[str, ...] = (),
    keep: tuple[str, ...] = (),
) -> None:
    """Log the redacted, flattened config (and ``extra``) in one batch; keys starting with
    one of ``exclude`` are left out unless they are in ``keep``."""
    flat = {
        k: v for k, v in config.flat().items() if k in keep or not k.startswith(exclude or ("\0",))
    }
    log_new_params(run_id, {**flat, **(extra or {})})


def log_new_params(run_id: str, values: Mapping[str, Any]) -> None:
    """Log params in batches, leaving keys the run already has alone (entry-point params
    under ``mlflow run``, a resumed run): MLflow refuses to change a param."""
    from mlflow.entities import Param

    existing = client().get_run(run_id).data.params
    params = []
    for key, value in values.items():
        text = _param_text(value)
        if key in existing:
            if existing[key] != text:
                logger.warning("param %s already logged as %r; keeping it", key, existing[key])
            continue
        params.append(Param(key, text))
    for start in range(0, len(params), 100):
        client().log_batch(run_id, params=params[start : start + 100])


def _param_text(value: Any) -> str:

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
                schema = _infer_schema(_first_rows(frame, 100))
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


def active_run_id() -> str:
    """The id of the run this process is logging to."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run")
    return run.info.run_id


def log_artifact_file(
    path: Path, artifact_path: str | None = None, *, run_id: str | None = None
) -> None:
    """One file into the active run, or run ``run_id`` (into ``artifact_path`` if given)."""
    import mlflow

    if run_id is None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    else:
        client().log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_folder(folder: Path, artifact_path: str | None = None) -> None:
    """Every file of ``folder`` into the active run (nothing when it is empty or absent)."""
    import mlflow

    if folder.is_dir() and any(folder.iterdir()):
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


def log_dict(data: Mapping[str, Any] | list[Any], name: str) -> None:
    """``data`` as a JSON (or YAML, by ``name``'s suffix) artifact of the active run."""
    import mlflow

    mlflow.log_dict(data, name)


def set_tags(tags: Mapping[str, str]) -> None:
    """Tags on the active run, in one request."""
    import mlflow

    mlflow.set_tags(dict(tags))


def log_log_file(output_dir: Path, file_name: str) -> None:
    """The command's log file (flushed first) into the active run's ``logs/``."""
    path = output_dir / file_name
    if path.exists():
        for handler in logging.getLogger().handlers:
            handler.flush()
        log_artifact_file(path, artifact_path="logs")


def _first_rows(frame: Any, n: int) -> Any:
    """Up to ``n`` first rows as pandas. A Dask frame's come from its first partition only,
    without the warning Dask's workers print on the terminal when it has fewer."""
    partitions = getattr(frame, "partitions", None)
    if partitions is None:
        return frame.head(n)
    return partitions[0].map_partitions(lambda part: part.head(n)).compute()
