"""What a search leaves behind: the parent run's params and metrics, ``trials.csv``, the
optimisation-history plot, ``search.json``, and the best trial registered and promoted."""

from __future__ import annotations

import csv
import json
import logging
import shlex
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel import tracking
from kennel.search.space import apply_values
from kennel.search.study import MODEL_URI_ATTR, RUN_ID_ATTR
from kennel.search.trials import override_text
from kennel.util import redact_url, write_json

if TYPE_CHECKING:
    from kennel.search.runner import Search

logger = logging.getLogger(__name__)

SUMMARY_FILE = "search.json"
TRIALS_FILE = "trials.csv"
PLOT_FILE = "optimization_history.png"


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


class SearchFailed(Exception):
    """No trial of the study completed (exit 1: the cause is in the trial logs)."""


def log_base_params(search: Search) -> None:
    """The base config on the parent, except the searched keys (they get the best
    trial's values at the end)."""
    flat = {
        k: v
        for k, v in search.config.flat().items()
        if not any(k == p or k.startswith(p + ".") for p in search.space.specs)
    }
    flat["search.metric"] = search.metric
    flat["search.direction"] = search.direction
    tracking.log_new_params(search.parent_id, flat)


def trial_rows(search: Search) -> list[dict[str, Any]]:
    """Every trial of the study (all workers), for ``trials.csv``."""
    rows = []
    for t in search.study.get_trials(deepcopy=False):
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
            search.space.decode(t.params) if set(t.params) <= set(search.space.specs) else t.params
        )
        for path in search.space.specs:
            value = decoded.get(path)
            row[path] = json.dumps(value) if isinstance(value, list | dict) else value
        row["error"] = t.user_attrs.get("error")
        rows.append(row)
    return rows


def write_reports(search: Search) -> None:
    """``trials.csv`` and the optimisation-history plot, logged to the parent run."""
    rows = trial_rows(search)
    path = search.output_dir / TRIALS_FILE
    columns = ["number", "state", "value", "duration_s", "run_id", *search.space.specs, "error"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    files = [path]
    history = {
        "rows": [{"number": r["number"], "value": r["value"]} for r in rows],
        "metric": search.metric,
        "direction": search.direction,
        "path": str(search.output_dir / PLOT_FILE),
    }
    # The warm trial server has matplotlib loaded; this process imports it only if the
    # server cannot draw (the subprocess launcher, a server gone).
    plot = None
    if any(row["value"] is not None for row in history["rows"]):
        plot = search.launcher.draw_history(history, search.output_dir / "history-plot.out")
    if plot is None:
        plot = history_plot(history["rows"], search.metric, search.direction, Path(history["path"]))
    if plot is not None:
        files.append(plot)
    for file in files:
        try:
            tracking.log_artifact_file(file)
        except Exception as exc:
            logger.warning("could not log %s: %s", file.name, exc)


def finish(
    search: Search, study_name: str, storage: str | None, uri: str, elapsed: float
) -> SearchOutcome:
    """The parent run's best params and metrics, the best trial registered (with
    ``search.register_best``), ``search.json``."""
    cfg = search.config.search
    mine = Counter(job.state for job in search.jobs.values())
    if search.skipped:
        mine["FAIL"] += len(search.skipped)
    study_counts = Counter(r["state"] for r in trial_rows(search))
    completed = [t for t in search.study.get_trials(deepcopy=False) if t.value is not None]
    outcome = SearchOutcome(
        status="FINISHED",
        parent_run_id=search.parent_id,
        experiment_id=search.experiment_id,
        study_name=study_name,
        storage=storage,
        metric=search.metric,
        direction=search.direction,
        best=None,
        counts=dict(mine),
        study_counts=dict(study_counts),
        n_trials=cfg.n_trials,
        n_jobs=cfg.n_jobs,
        output_dir=str(search.output_dir),
        tracking_uri=redact_url(uri),  # search.json is logged: no password
        duration_s=round(elapsed, 3),
        trials_per_minute=round(len(search.jobs) / elapsed * 60, 2) if elapsed else 0.0,
    )
    history = [
        (job.number, {f"trial_{search.metric}": float(job.value)})
        for job in search.jobs.values()
        if job.value is not None
    ]
    batcher = tracking.MetricsBatcher(search.parent_id)
    if completed:
        _log_best(search, outcome, batcher, history)
    elif history:
        batcher.log_steps(history)
    if len(search.loop_times) == 2:
        first, last = search.loop_times
        outcome.timings = {
            "startup_s": round(first - search.created, 3),
            "trials_s": round(last - first, 3),
            "finish_s": round(time.perf_counter() - last, 3),
        }
    write_json(search.output_dir / SUMMARY_FILE, outcome.to_dict())
    tracking.log_artifact_file(search.output_dir / SUMMARY_FILE)
    logger.info(
        "search %s done: %s in %.0fs (%.2f trials/min)",
        study_name,
        ", ".join(f"{k} {v}" for k, v in sorted(mine.items())),
        elapsed,
        outcome.trials_per_minute,
    )
    return outcome


def _log_best(
    search: Search,
    outcome: SearchOutcome,
    batcher: tracking.MetricsBatcher,
    history: list[tuple[int, dict[str, float]]],
) -> None:
    """The best trial on the parent run (its values as params, ``best_<metric>``, tags),
    marked on its own run, and registered with ``search.register_best``."""
    best = best_trial(search)
    params = search.space.decode(best.params)
    run_id = best.user_attrs.get(RUN_ID_ATTR)
    outcome.best = {"number": best.number, "value": best.value, "params": params, "run_id": run_id}
    tracking.log_new_params(search.parent_id, params)
    batcher.log_steps([(0, {f"best_{search.metric}": float(best.value)}), *history])
    tracking.set_tags({"best_run_id": run_id or "", "kennel.search.best_trial": str(best.number)})
    if run_id:
        search.client.set_tag(run_id, "kennel.search.best", "true")
    values = " ".join(shlex.quote(override_text(k, v)) for k, v in params.items())
    logger.info(
        "best trial %d: %s=%.5g (run %s): %s",
        best.number,
        search.metric,
        best.value,
        run_id,
        values,
    )
    if search.config.search.register_best and run_id:
        register_best(search, outcome, params, run_id, best.user_attrs)
    else:
        logger.info(
            "to register it, search with search.register_best=true, or train it: %s %s",
            train_command(search),
            values,
        )


def train_command(search: Search) -> str:
    """``kennel train`` with the search's config file and the user's overrides (but the
    search's own ``search.*``, and a URL's password as ``***``): the best trial's values
    follow it."""
    args = ["kennel", "train"]
    if search.config_file:
        args += ["-c", search.config_file]
    for override in search.user_overrides:
        key, _, value = override.partition("=")
        if not key.startswith("search."):
            args.append(f"{key}={redact_url(value)}")
    return shlex.join(args)


def best_trial(search: Search) -> Any:
    """Optuna's best trial; if it logged no model (with ``log_models=improving`` a trial
    that only ties the best so far logs none), the earliest tied trial that did."""
    from optuna.trial import TrialState

    best = search.study.best_trial
    if search.config.search.log_models != "improving":
        return best
    tied = sorted(
        (
            t
            for t in search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value == best.value
        ),
        key=lambda t: t.number,
    )
    for trial in (best, *tied):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            continue
        try:
            tags = search.client.get_run(run_id).data.tags
        except Exception:  # a run of another worker's store: take Optuna's choice
            return best
        if tags.get("kennel.model_logged") != "false":
            return trial
    return best


def register_best(
    search: Search, outcome: SearchOutcome, params: dict[str, Any], run_id: str, attrs: Mapping
) -> None:
    """Register the best trial's model (once, even with several workers) and put it
    through the normal promotion gate (:func:`kennel.registry.register_and_promote`)."""
    from kennel import registry
    from kennel.serve.pyfunc import run_model_uri

    tags = search.client.get_run(run_id).data.tags
    if tags.get("kennel.registered_version"):
        logger.info(
            "best run %s is already registered as version %s",
            run_id,
            tags["kennel.registered_version"],
        )
        outcome.registered_model = tags.get("kennel.registered_model")
        outcome.registered_version = int(tags["kennel.registered_version"])
        return
    best_config = apply_values(search.config, params)
    promoting = bool(best_config.registry.auto_promote)
    registration = registry.register_and_promote(
        attrs.get(MODEL_URI_ATTR) or run_model_uri(run_id),
        registry.default_model_name(best_config),
        run_id=run_id,
        family=best_config.model.family,
        config=best_config,
        holdout=lambda: registry.Holdout.from_config(best_config),
        task=search.task,
        # Cached only when the gate needs them: otherwise the holdout is not even read.
        scores=attrs.get("test_metrics") if promoting else None,
        tags={"kennel.search.parent_run_id": search.parent_id},
        report_run_id=search.parent_id,
    )
    name, version = registration.name, registration.version
    for rid in (run_id, search.parent_id):
        search.client.set_tag(rid, "kennel.registered_model", name)
        search.client.set_tag(rid, "kennel.registered_version", str(version))
    outcome.registered_model, outcome.registered_version = name, version
    if registration.decision is not None:
        outcome.promotion = registration.decision.to_dict()
        search.client.log_dict(search.parent_id, outcome.promotion, "promotion.json")


def history_plot(
    rows: list[dict[str, Any]], metric: str, direction: str, path: Path
) -> Path | None:
    """Each completed trial's value and the best so far, by trial number."""
    points = sorted((r["number"], r["value"]) for r in rows if r["value"] is not None)
    if not points:
        return None
    from matplotlib.ticker import MaxNLocator

    from kennel.report.figures import pyplot, save

    plt = pyplot()

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
    save(fig, path)
    return path
