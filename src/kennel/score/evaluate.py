"""Evaluation: score any model URI on the configured test split or a file, as its own tracked
run (test metrics, plots, ``report.html``, tags naming the model).

The model is loaded the way it is served (``mlflow.pyfunc.load_model``) and given raw rows
without the target, so this measures exactly what a client of the served model gets.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kennel import registry, tracking
from kennel.errors import UserError
from kennel.metrics import classified_output, metrics_from_output
from kennel.outputs import RESULT_FILE
from kennel.score.chunks import can_explain
from kennel.tracking.access import PermissionDenied
from kennel.util import first_line, redact_url, write_json

if TYPE_CHECKING:
    import pandas as pd

    from kennel.config import Config

logger = logging.getLogger(__name__)

#: Every holdout row with its contributions (``kennel evaluate --explain``).
EXPLANATIONS_FILE = "explanations.parquet"


def evaluate(
    config: Config,
    model_uri: str,
    *,
    data_file: str | None,
    output_dir: Path,
    explain: bool = False,
) -> dict[str, Any]:
    """Load ``model_uri``, predict the holdout, log a ``kennel.kind=evaluation`` run (with
    ``explain``, also every holdout row's contributions as ``explanations.parquet``)."""
    from kennel.serve.models import load_model, resolve_model_uri

    started = time.perf_counter()
    tracking_uri = tracking.configure(config)
    ref = resolve_model_uri(model_uri)  # cheap checks first: a bad URI or file fails fast
    holdout = registry.Holdout.from_config(config, data_file)
    rows = holdout.rows
    if holdout.target not in rows.columns:
        raise UserError(f"{holdout.description}: target column '{holdout.target}' is missing")
    model = load_model(model_uri)
    logger.info("evaluating %s on the %s (%d rows)", model_uri, holdout.description, len(rows))
    output = _predict(model, model_uri, holdout, output_dir, explain=explain)
    task, scores = metrics_from_output(rows[holdout.target], output)
    metrics = {f"test_{k}": float(v) for k, v in scores.items()}
    logger.info("test: %s", ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    tags, family = _tags(config, model_uri, ref, model, task, holdout)

    plot_dir = output_dir / "plots"
    if config.tracking.log_plots:
        _plots(task, rows[holdout.target], output, plot_dir)
    result = {
        "status": "FINISHED",
        "run_id": None,
        "experiment_id": None,
        "model_uri": model_uri,
        "model_name": ref.name,
        "version": ref.version,
        "task": task,
        "holdout": holdout.description,
        "rows": len(rows),
        "metrics": metrics,
        "output_dir": str(output_dir),
        "tracking_uri": redact_url(tracking_uri),  # logged: no password
        "duration_s": round(time.perf_counter() - started, 3),
    }
    name = _evaluation_name(ref, model_uri)
    page = _report(
        config, name, ref, model_uri, holdout, len(rows), task, family, metrics, plot_dir
    )
    try:
        return _record(config, name, tags, metrics, plot_dir, output_dir, result, page)
    except PermissionDenied as exc:
        # A READ user may evaluate; the server keeps them from recording it.
        logger.warning("%s: the evaluation is not recorded as a run", exc)
        result["status"] = "NOT_RECORDED"
        write_json(output_dir / RESULT_FILE, result)
        return result


def _predict(
    model: Any, model_uri: str, holdout: Any, output_dir: Path, *, explain: bool
) -> pd.DataFrame:
    """The model's outputs on the holdout rows (without the target); with ``explain`` the
    rows and their contributions are also written as ``explanations.parquet``."""
    from mlflow.exceptions import MlflowException

    from kennel.serve.models import explain as reason

    if explain and not can_explain(model):
        raise UserError(
            f"model '{model_uri}' cannot explain its predictions (saved before kennel "
            "explained them); retrain it, or leave out --explain"
        )
    rows = holdout.rows
    try:
        features = rows.drop(columns=[holdout.target])
        output = model.predict(features, params={"explain": True} if explain else None)
    except MlflowException as exc:
        raise UserError(
            f"{holdout.description} does not fit model '{model_uri}': {reason(exc)}"
        ) from None
    if explain:
        explained = rows.join(output.filter(like="contrib_").set_axis(rows.index))
        explained.to_parquet(output_dir / EXPLANATIONS_FILE, index=False)
        output = output[[c for c in output.columns if not c.startswith("contrib_")]]
    return output


def _tags(
    config: Config, model_uri: str, ref: Any, model: Any, task: str, holdout: Any
) -> tuple[dict[str, str], str | None]:
    """The evaluation run's tags (naming the model evaluated), and the model's family."""
    tags = {
        **tracking.run_tags(config),
        "kennel.kind": "evaluation",
        "kennel.evaluated_model_uri": model_uri,
        "kennel.task": task,
        "kennel.holdout": holdout.description,
        "kennel.holdout_id": holdout.id,
    }
    tags.pop("kennel.family", None)  # the model's family, not the config's, if known below
    if ref.name is not None and ref.version is not None:
        tags["kennel.evaluated_model_name"] = ref.name
        tags["kennel.evaluated_model_version"] = str(ref.version)
    if ref.run_id is not None:
        tags["kennel.evaluated_run_id"] = ref.run_id
    family = (model.metadata.metadata or {}).get("kennel_family")
    if family:
        tags["kennel.family"] = str(family)
    return tags, family


def _evaluation_name(ref: Any, model_uri: str) -> str:
    """``evaluate-<model>-v<version>``; a run's model: ``evaluate-<run name>``; else the
    model folder's name."""
    if ref.name is not None and ref.version is not None:
        return f"evaluate-{ref.name}-v{ref.version}"
    if ref.run_id is not None:
        try:
            return f"evaluate-{tracking.get_run(ref.run_id).info.run_name}"
        except Exception:  # noqa: BLE001 - the name is a convenience
            return f"evaluate-{ref.run_id[:8]}"
    return f"evaluate-{Path(model_uri.rstrip('/')).name or 'model'}"


def _report(
    config: Config,
    name: str,
    ref: Any,
    model_uri: str,
    holdout: Any,
    rows: int,
    task: str,
    family: Any,
    metrics: dict[str, float],
    plot_dir: Path,
) -> Any:
    from kennel import report

    aliases = {}
    holders = []
    if ref.name is not None:
        try:
            aliases = registry.aliases(ref.name)
        except Exception:  # noqa: BLE001
            aliases = {}
        holders = report.holders(ref.name, aliases, holdout.id, config.registry.environments)
    return report.RunReport(
        title=name,
        kind="evaluation",
        summary={
            "model": model_uri,
            "family": family or "",
            "data": holdout.description,
            "task": task,
            "rows": rows,
        },
        metrics=metrics,
        holdout=holdout.description,
        model_name=ref.name,
        version=ref.version,
        aliases=aliases,
        holders=holders,
        config_yaml=config.to_yaml(),
        plots=sorted(plot_dir.glob("*.png")) if plot_dir.is_dir() else [],
    )


def _record(
    config: Config,
    name: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    plot_dir: Path,
    output_dir: Path,
    result: dict[str, Any],
    page: Any = None,
) -> dict[str, Any]:
    """Log the evaluation as a ``kennel.kind=evaluation`` run."""
    with tracking.start_run(
        config, experiment=_experiment(config, tags), name=name, tags=tags
    ) as active:
        run_id = active.info.run_id
        tracking.MetricsBatcher(run_id).log(metrics, step=0)
        if page is not None:
            from kennel.report import log_report

            log_report(page, output_dir)
        tracking.log_folder(plot_dir, artifact_path="plots")
        if (output_dir / EXPLANATIONS_FILE).exists():
            tracking.log_artifact_file(output_dir / EXPLANATIONS_FILE)
        result = {
            **result,
            "run_id": run_id,
            "experiment_id": active.info.experiment_id,
        }
        write_json(output_dir / RESULT_FILE, result)
        tracking.log_artifact_file(output_dir / RESULT_FILE)
        tracking.log_log_file(output_dir, config.logging.file_name)
    return result


def _experiment(config: Config, tags: dict[str, str]) -> str:
    """Beside the runs of the model evaluated (a registered model's name is its data's
    experiment; a run's model: that run's experiment), unless the user chose one."""
    if chosen := tracking.chosen_experiment(config):
        return chosen
    if name := tags.get("kennel.evaluated_model_name"):
        return name
    if run_id := tags.get("kennel.evaluated_run_id"):
        with contextlib.suppress(Exception):
            run = tracking.get_run(run_id)
            return tracking.client().get_experiment(run.info.experiment_id).name
    return registry.default_model_name(config)


def _plots(task: str, y_true: pd.Series, output: pd.DataFrame, plot_dir: Path) -> None:
    """Confusion matrix + ROC (classifiers) or residuals (regression); a plot that cannot be
    drawn (one class only in the data, say) is skipped with a warning."""
    from kennel.report import figures

    plot_dir.mkdir(parents=True, exist_ok=True)
    try:
        if task == "regression":
            figures.residuals(
                np.asarray(y_true, dtype="float64"),
                output["prediction"].to_numpy(dtype="float64"),
                plot_dir / "residuals.png",
            )
            return
        labels, codes, proba = classified_output(y_true, output)  # type: ignore[misc]
        figures.confusion_matrix(
            codes, proba.argmax(axis=1), labels, plot_dir / "confusion_matrix.png"
        )
        figures.roc(codes, proba, labels, plot_dir / "roc.png")
    except Exception as exc:  # a plot is never worth failing the evaluation for
        logger.warning("could not draw evaluation plots: %s", first_line(exc))
