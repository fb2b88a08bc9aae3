"""``kennel monitor``: a batch of rows (captured, scored or new) against the reference profile
its model carries; drift per column and of the outputs, the model's performance on labelled
rows next to its holdout score, one MLflow run in ``<model>-monitoring`` with ``monitor.html``,
and the verdict a scheduler acts on: exit 3 (retrain) when the drift share, the outputs or the
performance pass the ``monitor.*`` thresholds.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kennel import metrics as km
from kennel import tracking
from kennel.config import Config
from kennel.monitor.drift import DriftReport, Thresholds, compare
from kennel.monitor.inputs import Batch, count_batch, read_labels
from kennel.monitor.profile import Profile
from kennel.monitor.reference import profile_of_model
from kennel.outputs import RESULT_FILE
from kennel.util import write_json

logger = logging.getLogger(__name__)

#: ``kennel monitor``'s exit code when the batch calls for retraining.
EXIT_DRIFT = 3
REPORT_FILE = "monitor.json"


@dataclass
class Performance:
    """The model on the batch's labelled rows, next to its score on the holdout."""

    metric: str
    rows: int
    live: dict[str, float]
    reference: dict[str, float]
    drop: float | None
    """How much worse the main metric is than on the holdout (positive: worse)."""
    reference_source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    """What the batch calls for: ``retrain`` (exit 3), ``ok``, or ``inconclusive`` (too few
    rows to judge: exit 0), and why."""

    retrain: bool
    reasons: list[str] = field(default_factory=list)
    inconclusive: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_DRIFT if self.retrain else 0

    @property
    def name(self) -> str:
        return "retrain" if self.retrain else "inconclusive" if self.inconclusive else "ok"


def thresholds(config: Config) -> Thresholds:
    m = config.monitor
    return Thresholds(
        psi=m.psi,
        p_value=m.p_value,
        missing_change=m.missing_change,
        new_category=m.new_category,
        invalid=m.invalid,
        drift_share=m.drift_share,
        min_rows=m.min_rows,
    )


def monitor(
    config: Config,
    model_uri: str,
    location: str,
    *,
    output_dir: Path,
    labels: str | None = None,
    on: str = "request_id",
) -> dict[str, Any]:
    """Check ``location`` against the model at ``model_uri``; returns the result (what
    ``--output-json`` holds) with ``exit_code`` 0 or :data:`EXIT_DRIFT`."""
    from kennel.serve.models import resolve_model_uri

    started = time.perf_counter()
    tracking.configure(config)
    ref = resolve_model_uri(model_uri)
    profile, model_folder = profile_of_model(model_uri)
    truth = read_labels(labels, on, profile.target or "", config.data) if labels else None
    batch = count_batch(config, profile, model_folder, location, labels=truth, on=on)
    report = compare(profile, batch.stats, thresholds(config))
    performance = measure(batch, profile, ref)
    verdict = decide(report, performance, config)
    name = model_name(ref, model_folder)
    result = {
        "status": "FINISHED",
        "model_uri": model_uri,
        "model_name": name,
        "version": ref.version,
        "input": location,
        "rows": report.rows,
        "verdict": verdict.name,
        "reasons": verdict.reasons,
        "exit_code": verdict.exit_code,
        "drift_share": round(report.drift_share, 4),
        "drifted_columns": report.drifted_columns,
        "moved_dates": report.moved_dates,
        "output_drift": report.output_drift,
        "performance": performance.to_dict() if performance else None,
        "notes": batch.notes,
        "run_id": None,
        "output_dir": str(output_dir),
        "duration_s": round(time.perf_counter() - started, 3),
    }
    result["run_id"] = record(config, name, ref, result, report, output_dir)
    if result["run_id"] is None:  # not recorded: the files are still written
        write_json(output_dir / REPORT_FILE, {**result, "report": report.to_dict()})
    write_json(output_dir / RESULT_FILE, result)
    return {**result, "report": report}


def model_name(ref: Any, model_folder: Path) -> str:
    """The registered model's name, else the data's (what the training would register)."""
    if ref.name:
        return str(ref.name)
    from kennel.data import DataProcessor
    from kennel.serve.bundle import ARTIFACT_KEY

    return DataProcessor.load_state(model_folder / "artifacts" / ARTIFACT_KEY).default_model_name()


def measure(batch: Batch, profile: Profile, ref: Any) -> Performance | None:
    """The metrics of the labelled rows, and how much the main one dropped from the
    holdout's (the version's cached score on its holdout, else the one in the profile)."""
    if not batch.labelled.rows or not profile.task:
        return None
    truth, outputs = batch.labelled.frames()
    task, live = km.metrics_from_output(truth, outputs)
    metric = km.primary_metric(task)  # type: ignore[arg-type]
    reference, source = dict(profile.metrics), "the model's test split at training"
    if ref.name and ref.version and profile.holdout_id:
        from kennel import registry

        cached = registry.cached_scores(
            registry.version_tags(ref.name, ref.version), profile.holdout_id
        )
        if cached is not None:
            reference = {f"test_{k}": v for k, v in cached[1].items()}
            source = f"version {ref.version}'s cached score on its holdout"
    before = reference.get(f"test_{metric}")
    now = live.get(metric)
    drop = None
    if before is not None and now is not None:
        drop = before - now if km.direction(metric) == "maximize" else now - before
    return Performance(metric, len(truth), live, reference, drop, source)


def decide(report: DriftReport, performance: Performance | None, config: Config) -> Verdict:
    """Retrain when the input drift share, the outputs or the main metric pass the
    ``monitor.*`` thresholds; date columns are reported but left out of the share (they move
    forward by nature); batches under ``monitor.min_rows`` are never called drifted."""
    m = config.monitor
    reasons = []
    if report.rows < m.min_rows:
        reason = f"{report.rows} rows: fewer than monitor.min_rows={m.min_rows}"
        return Verdict(False, [reason], inconclusive=True)
    # the report's share (dates left out), the one its log line and JSON give
    compared, drifted, share = report.compared_columns, report.drifted_columns, report.drift_share
    if drifted and share >= m.drift_share:
        reasons.append(
            f"{len(drifted)} of {len(compared)} input columns drifted ({share:.0%} >= "
            f"monitor.drift_share {m.drift_share:.0%}): {', '.join(drifted[:8])}"
        )
    if m.output_drift and report.output_drift:
        names = [c.name for c in report.outputs if c.drifted]
        reasons.append(f"the model's outputs drifted: {', '.join(names)}")
    if performance and performance.drop is not None and performance.drop > m.max_metric_drop:
        reasons.append(
            f"{performance.metric} {performance.live[performance.metric]:.4f} on "
            f"{performance.rows} labelled rows is {performance.drop:.4f} worse than "
            f"{performance.reference[f'test_{performance.metric}']:.4f} (> "
            f"monitor.max_metric_drop {m.max_metric_drop})"
        )
    return Verdict(bool(reasons), reasons)


_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")


def record(
    config: Config,
    name: str,
    ref: Any,
    result: dict[str, Any],
    report: DriftReport,
    output_dir: Path,
) -> str | None:
    """The check as a run in ``<model>-monitoring``: params, metrics (per column PSI too),
    ``monitor.json``, ``monitor.html``, the log. A READ user's check is not recorded."""
    from kennel.monitor.page import write_page
    from kennel.tracking.access import PermissionDenied

    version = f"-v{ref.version}" if ref.version else ""
    run_name = f"monitor-{name}{version}-{datetime.now():%Y%m%d-%H%M%S}"
    tags = {
        **tracking.git_tags(),
        "kennel.kind": "monitoring",
        "kennel.monitored_model_uri": str(result["model_uri"]),
        "kennel.monitored_model": name,
        "kennel.verdict": str(result["verdict"]),
        "mlflow.note.content": _description(result),
    }
    if ref.version:
        tags["kennel.monitored_version"] = str(ref.version)
    try:
        with tracking.start_run(
            config, experiment=f"{name}-monitoring", name=run_name, tags=tags
        ) as run:
            run_id = result["run_id"] = run.info.run_id
            write_json(output_dir / REPORT_FILE, {**result, "report": report.to_dict()})
            tracking.log_new_params(run_id, _params(config, result))
            tracking.MetricsBatcher(run_id).log(_metrics(result, report))
            tracking.log_artifact_file(output_dir / REPORT_FILE)
            tracking.log_artifact_file(write_page(output_dir, run_name, result, report))
            tracking.log_log_file(output_dir, config.logging.file_name)
            return run_id
    except PermissionDenied as exc:
        logger.warning("%s: the check is not recorded as a run", exc)
        return None


def _description(result: dict[str, Any]) -> str:
    text = f"{result['rows']} rows of {result['input']}: {result['verdict']}"
    return text + (f" ({'; '.join(result['reasons'])})" if result["reasons"] else "")


def _params(config: Config, result: dict[str, Any]) -> dict[str, Any]:
    values = {f"monitor.{k}": v for k, v in config.monitor.model_dump().items()}
    values.update(
        model_uri=result["model_uri"], model_version=result["version"], input=result["input"]
    )
    return values


def _metrics(result: dict[str, Any], report: DriftReport) -> dict[str, float]:
    values = {
        "rows": float(report.rows),
        "drift_share": float(report.drift_share),
        "drifted_columns": float(len(report.drifted_columns)),
        "output_drift": float(report.output_drift),
        "retrain": float(result["exit_code"] != 0),
    }
    for column in [*report.columns, *report.outputs]:
        if column.psi is not None:
            prefix = "psi.output." if column in report.outputs else "psi."
            values[prefix + _METRIC_NAME.sub("_", column.name)[:200]] = float(column.psi)
    performance = result.get("performance")
    if performance:
        values.update({f"live_{k}": float(v) for k, v in performance["live"].items()})
        if performance["drop"] is not None:
            values["metric_drop"] = float(performance["drop"])
    return {k: v for k, v in values.items() if v == v}  # no NaN


__all__ = ["EXIT_DRIFT", "Performance", "Verdict", "decide", "monitor", "thresholds"]
