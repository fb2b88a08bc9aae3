"""Which runs ``kennel compare`` shows, and what of each: the latest training runs and trials of
an experiment (by default the one a default ``kennel train`` files into, else the experiment
with the most recent kennel run), one row per run with the params they disagree on, the
task's metrics and the registered version with its aliases."""

from __future__ import annotations

from typing import Any

from kennel.config import Config
from kennel.errors import UserError
from kennel.tracking.store import client, experiment_for

#: Metrics shown per task, in order (``test_`` and ``val_`` of each).
TASK_METRICS = {
    "binary": ("roc_auc", "log_loss", "accuracy"),
    "multiclass": ("log_loss", "accuracy", "f1"),
    "regression": ("rmse", "mae", "r2"),
}
KINDS = ("training", "trial", "evaluation", "search")
#: Params never shown as "key" params (they say where, not what, or have a column).
HIDDEN_PARAMS = ("tracking.", "logging.", "registry.", "resource.", "search.", "training.output")
#: ``mlflow run``'s own entry-point params, and what has a column of its own.
HIDDEN_KEYS = frozenset({"config", "overrides", "model.family", "data.source"})
#: What tells a kennel run from any other run in a shared store.
KENNEL_RUN = "tags.`kennel.family` LIKE '%'"


def run_kind(run: Any) -> str:
    """``training``, ``trial``, ``evaluation``, ``search`` or ``promotion``."""
    tags = run.data.tags
    kind = tags.get("kennel.kind")
    if kind:
        return str(kind)
    return "training" if "kennel.family" in tags else "other"


def get_run(run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client().get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run '{run_id}' in the tracking store") from None


def pick_experiment(config: Config, name: str | None = None) -> Any | None:
    """The experiment named ``name`` (a user error listing the ones with kennel runs when it
    does not exist); else the one a default ``kennel train`` of ``config`` files into, when
    it holds kennel runs; else the experiment of the most recent kennel run; None on a store
    without kennel runs."""
    from kennel import registry
    from kennel.suggest import hint

    tracking = client()
    if name:
        found = tracking.get_experiment_by_name(name)
        if found is None:
            names = [e.name for e in tracking.search_experiments(max_results=200)]
            raise UserError(
                f"experiment '{name}' not found in the tracking store{hint(name, names)}"
            )
        return found
    default = tracking.get_experiment_by_name(
        experiment_for(config, registry.default_model_name(config))
    )
    if default is not None and tracking.search_runs(
        [default.experiment_id], KENNEL_RUN, max_results=1
    ):
        return default
    ids = [e.experiment_id for e in tracking.search_experiments(max_results=1000)]
    latest = tracking.search_runs(
        ids, KENNEL_RUN, max_results=1, order_by=["attributes.start_time DESC"]
    ) if ids else []  # fmt: skip
    return tracking.get_experiment(latest[0].info.experiment_id) if latest else None


def latest_runs(experiment_id: str, kinds: list[str], last: int) -> list[Any]:
    """The latest ``last`` runs of those ``kinds`` in the experiment, newest first."""
    runs = client().search_runs(
        [experiment_id], order_by=["attributes.start_time DESC"], max_results=max(200, last * 5)
    )
    return [r for r in runs if run_kind(r) in kinds][:last]


def compare_rows(runs: list[Any]) -> list[dict[str, Any]]:
    """One dict per run: name, id, kind, family, data, task, the params at least two runs
    have and disagree on (cat's num_leaves next to dog's hidden_units says nothing a family
    column does not), metrics, version, aliases."""
    params = [
        {
            k: v
            for k, v in r.data.params.items()
            if not k.startswith(HIDDEN_PARAMS) and k not in HIDDEN_KEYS
        }
        for r in runs
    ]
    keys = sorted({k for p in params for k in p})
    varying = [
        key
        for key in keys
        if len(values := [p[key] for p in params if key in p]) > 1 and len(set(values)) > 1
    ]
    aliases = _aliases(runs)
    return [_row(run, own, varying, aliases) for run, own in zip(runs, params, strict=True)]


def _aliases(runs: list[Any]) -> dict[str, dict[str, str]]:
    """The aliases of every registered model the runs registered a version of."""
    found: dict[str, dict[str, str]] = {}
    for name in {r.data.tags.get("kennel.registered_model") for r in runs} - {None}:
        try:
            found[name] = {
                k: str(v) for k, v in client().get_registered_model(name).aliases.items()
            }
        except Exception:  # noqa: BLE001 - a deleted model: no aliases
            found[name] = {}
    return found


def _row(
    run: Any, own: dict[str, str], varying: list[str], aliases: dict[str, dict[str, str]]
) -> dict[str, Any]:
    tags = run.data.tags
    task = tags.get("kennel.task") or ""
    metrics = {
        prefix + name: run.data.metrics[prefix + name]
        for name in TASK_METRICS.get(task, ())
        for prefix in ("test_", "val_")
        if prefix + name in run.data.metrics
    }
    model = tags.get("kennel.registered_model")
    version = tags.get("kennel.registered_version")
    held = sorted(a for a, v in aliases.get(model or "", {}).items() if v == version)
    return {
        "run_name": run.info.run_name,
        "run_id": run.info.run_id,
        "kind": run_kind(run),
        "status": run.info.status,
        "family": tags.get("kennel.family", ""),
        "data": run.data.params.get("data.source", ""),
        "task": task,
        "params": {k: own.get(k) for k in varying},
        "metrics": metrics,
        "registered_model": model,
        "version": int(version) if version and version.isdigit() else None,
        "aliases": held if version else [],
    }
