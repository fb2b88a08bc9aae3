"""Everything kennel says to MLflow tracking, in one place: the store, runs, params, metrics,
artifacts, tags and dataset lineage; which process owns a run; refusals of an
authenticated server as one-line errors; the runs a comparison shows.

Workflows import this package (``from kennel import tracking``), never ``mlflow`` for their
own runs. MLflow itself is imported inside functions, so light commands stay light.
"""

from kennel.tracking.runs import (
    ERROR_TAG,
    MAX_PARAM_LENGTH,
    MetricsBatcher,
    active_run_id,
    git_tags,
    log_artifact_file,
    log_datasets,
    log_dict,
    log_folder,
    log_log_file,
    log_new_params,
    log_params,
    run_name,
    run_tags,
    set_tags,
    start_run,
)
from kennel.tracking.store import (
    HTTP_RETRY_DEFAULTS,
    TrackingUnavailable,
    artifact_root,
    check_reachable,
    client,
    configure,
    ensure_store,
    get_run,
    lost_store_guard,
    resolve_tracking_uri,
    runs_table_url,
    set_experiment,
)

__all__ = [
    "ERROR_TAG",
    "HTTP_RETRY_DEFAULTS",
    "MAX_PARAM_LENGTH",
    "MetricsBatcher",
    "TrackingUnavailable",
    "active_run_id",
    "artifact_root",
    "check_reachable",
    "client",
    "configure",
    "ensure_store",
    "get_run",
    "git_tags",
    "log_artifact_file",
    "log_datasets",
    "log_dict",
    "log_folder",
    "log_log_file",
    "log_new_params",
    "log_params",
    "lost_store_guard",
    "resolve_tracking_uri",
    "run_name",
    "run_tags",
    "runs_table_url",
    "set_experiment",
    "set_tags",
    "start_run",
]
