"""``kennel compare``: runs side by side in the terminal (and CI), as one table.

The latest N runs of an experiment (training runs and search trials by default; evaluations
with ``--kind``), or the runs named with ``--run-id``. Columns: run name, family, data,
the params that at least two of the runs have and disagree on, the validation and test
metrics of the task, the registered version and its aliases. ``--output-json`` writes the same rows for
programs; stdout gets the table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from kennel.cli.common import prepare
from kennel.errors import UserError
from kennel.util import write_json

logger = logging.getLogger(__name__)

#: Metrics shown per task, in order (``val_`` and ``test_`` of each).
TASK_METRICS = {
    "binary": ("roc_auc", "log_loss", "accuracy"),
    "multiclass": ("accuracy", "log_loss", "f1"),
    "regression": ("rmse", "mae", "r2"),
}
KINDS = ("training", "trial", "evaluation", "search")
#: Params never shown as "key" params (they say where, not what, or have a column).
HIDDEN_PARAMS = ("tracking.", "logging.", "registry.", "resource.", "search.", "training.output")
#: ``mlflow run``'s own entry-point params, and what has a column of its own.
HIDDEN_KEYS = frozenset({"config", "overrides", "model.family", "data.source"})


def run(args: argparse.Namespace) -> int:
    from kennel import tracking

    config = prepare(args)
    if args.last < 1:
        raise UserError(f"--last {args.last} is not allowed; expected a number >= 1")
    tracking.configure(config)
    client = tracking.client()
    if args.run_id:
        runs = [_get_run(client, run_id) for run_id in args.run_id]
    else:
        name = args.experiment or config.tracking.experiment
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise UserError(f"experiment '{name}' not found in the tracking store")
        kinds = args.kind or ["training", "trial"]
        runs = [
            r
            for r in client.search_runs(
                [experiment.experiment_id],
                order_by=["attributes.start_time DESC"],
                max_results=max(200, args.last * 5),
            )
            if run_kind(r) in kinds
        ][: args.last]
    rows = compare_rows(client, runs)
    sys.stdout.write(render(rows) + "\n")
    sys.stdout.flush()
    if args.output_json:
        write_json(args.output_json, {"runs": rows})
    return 0


def _get_run(client: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run '{run_id}' in the tracking store") from None


def run_kind(run: Any) -> str:
    """``training``, ``trial``, ``evaluation``, ``search`` or ``promotion``."""
    tags = run.data.tags
    kind = tags.get("kennel.kind")
    if kind:
        return str(kind)
    return "training" if "kennel.family" in tags else "other"


def compare_rows(client: Any, runs: list[Any]) -> list[dict[str, Any]]:
    """One dict per run: name, id, kind, family, data, task, key params, metrics, version,
    aliases."""
    params = [
        {
            k: v
            for k, v in r.data.params.items()
            if not k.startswith(HIDDEN_PARAMS) and k not in HIDDEN_KEYS
        }
        for r in runs
    ]
    keys = sorted({k for p in params for k in p})
    # A param is shown when at least two runs have it and they disagree: cat's num_leaves
    # next to dog's hidden_units says nothing a family column does not.
    varying = []
    for key in keys:
        values = [p[key] for p in params if key in p]
        if len(values) > 1 and len(set(values)) > 1:
            varying.append(key)
    aliases_of: dict[str, dict[str, str]] = {}
    out = []
    for run, own in zip(runs, params, strict=True):
        tags = run.data.tags
        task = tags.get("kennel.task") or ""
        metrics = {}
        for name in TASK_METRICS.get(task, ()):
            for prefix in ("val_", "test_"):
                value = run.data.metrics.get(prefix + name)
                if value is not None:
                    metrics[prefix + name] = value
        model = tags.get("kennel.registered_model")
        version = tags.get("kennel.registered_version")
        aliases: list[str] = []
        if model and version:
            if model not in aliases_of:
                try:
                    aliases_of[model] = dict(client.get_registered_model(model).aliases or {})
                except Exception:  # noqa: BLE001 - a deleted model: no aliases
                    aliases_of[model] = {}
            aliases = sorted(a for a, v in aliases_of[model].items() if str(v) == version)
        out.append(
            {
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
                "aliases": aliases,
            }
        )
    return out


def render(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table (one line per run)."""
    if not rows:
        return "no runs to compare"
    param_keys = sorted({k for r in rows for k in r["params"]})
    metric_keys: list[str] = []
    for r in rows:
        metric_keys += [k for k in r["metrics"] if k not in metric_keys]
    heads = ["run", "family", "data", *(_short(k) for k in param_keys), *metric_keys, "version"]
    lines = []
    for r in rows:
        version = ""
        if r["version"] is not None:
            version = f"v{r['version']}" + "".join(f" @{a}" for a in r["aliases"])
        lines.append(
            [
                r["run_name"] or r["run_id"][:8],
                r["family"],
                _data_name(r["data"]),
                *(str(r["params"].get(k, "")) for k in param_keys),
                *(_metric(r["metrics"].get(k)) for k in metric_keys),
                version,
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(heads)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*heads), rule, *(fmt.format(*line) for line in lines)])


def _short(key: str) -> str:
    return key.removeprefix("model.params.").removeprefix("model.")


def _data_name(source: str) -> str:
    if source.startswith("builtin:"):
        return source[len("builtin:") :]
    return source.rstrip("/").rsplit("/", 1)[-1] or source


def _metric(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
