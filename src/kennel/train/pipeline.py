"""The training run, top to bottom: load → split → fit → evaluate → log → package →
register/promote → report.

:func:`train` is what ``kennel train``, the MLproject entry points and every search trial
run. It returns (and writes as ``result.json`` in the run's output folder) the run id, the
model URI, the registered version and the metrics. Each step is a named function below;
every MLflow call goes through :mod:`kennel.tracking` and :mod:`kennel.registry`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kennel import collector, registry, tracking
from kennel import metrics as km
from kennel.config import Config
from kennel.families import FamilySpec, get_family
from kennel.outputs import RESULT_FILE
from kennel.train.data import (
    ClusterData,
    FitAhead,
    LocalData,
    data_params,
    open_data,
    quick_gil_handover,
    train_context,
)
from kennel.train.explain import explain_summary
from kennel.train.outcome import ModelGate, TrainOutcome
from kennel.train.plots import PlotJob
from kennel.train.report import describe, log_training_report
from kennel.util import redact_url, write_json

logger = logging.getLogger(__name__)

#: What each input column became (artifact of every training run).
COLUMNS_FILE = "columns.json"
#: What reading the data detected (a CSV's dialect, a workbook's sheet).
SOURCE_FILE = "source.json"
#: How the rows were split: method, rows per split, times or groups (artifact of every run).
SPLIT_FILE = "split.json"


class Clock:
    """Seconds per step, for ``timings`` in ``result.json``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = round(time.perf_counter() - start, 3)

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)


@dataclass
class Scores:
    """The kept model's validation and test metrics, and what the plots are drawn from."""

    metrics: dict[str, float]
    test_metrics: dict[str, float]
    y_test: np.ndarray
    test_raw: np.ndarray


def train(config: Config, output_dir: Path, *, model_gate: ModelGate | None = None) -> TrainOutcome:
    """Run one tracked training; the caller has set up logging into ``output_dir``.

    ``model_gate``: log the model and plots only when the metric passes it (the search's
    ``log_models=improving``).
    """
    clock = Clock()
    family = get_family(config.model.family)
    # The plot process starts first: it imports its libraries while this one trains.
    plots = PlotJob.start(config, output_dir, fork_safe=family.fork_safe)
    with contextlib.ExitStack() as stack:
        stack.callback(plots.cancel)  # a no-op once the plots are logged
        with collector.paused():  # a cluster's libraries load (see kennel.collector)
            data = open_data(config, stack)
        uri, counts = set_up(config, family, data, clock, stack)
        processor = data.processor
        log_data_summary(processor, counts)
        name = tracking.run_name(config, processor.source_name)
        tags = {**tracking.run_tags(config, processor), **data.tags()}
        experiment = tracking.experiment_for(config, model_name(config, data))
        with tracking.start_run(config, experiment=experiment, name=name, tags=tags) as run:
            run_id = run.info.run_id
            logger.info("MLflow run %s in experiment '%s' (%s)", run_id, experiment, uri)
            log_inputs(config, data)
            with clock("fit_s"):
                model, result, batcher = fit(config, family, data, run_id)
            with clock("evaluate_s"):
                scores = evaluate(data, model, result, batcher)
            keep = keep_model(config, scores.metrics, model_gate, plots)
            explained = None
            if keep:
                with clock("explain_s"):
                    api = family.ModelAPI(model, processor)
                    explained = explain_summary(api, data.test_rows(), output_dir)
            with clock("artifacts_s"):
                log_artifacts(
                    config, output_dir, data, model, plots, batcher.history, scores, explained
                )
            logged_uri = registration = None
            if keep:
                with clock("profile_s"):
                    profile = reference(config, family, data, model, scores)
                with clock("log_model_s"):
                    logged_uri = package(config, family, data, model, profile, plots)
                if config.registry.enabled:
                    with clock("registry_s"):
                        registration = register(config, family, data, run_id, logged_uri, scores)
            with clock("plots_wait_s"):
                plots.finish_and_log()
            log_training_report(
                config, output_dir, name, family.name, processor, counts, scores.metrics,
                registration, plots.files(),
            )  # fmt: skip
            outcome = TrainOutcome(
                status="FINISHED",
                run_id=run_id,
                experiment_id=run.info.experiment_id,
                family=family.name,
                task=processor.task,
                model_uri=f"runs:/{run_id}/model" if logged_uri else None,
                logged_model_uri=logged_uri,
                metrics=scores.metrics,
                best_step=result.best_step,
                output_dir=str(output_dir),
                tracking_uri=redact_url(uri),  # result.json is logged: no password
                duration_s=clock.total(),
                timings=clock.timings,
                **registered(registration),
            )
            write_json(output_dir / RESULT_FILE, outcome.to_dict())
            tracking.log_artifact_file(output_dir / RESULT_FILE)
            tracking.log_log_file(output_dir, config.logging.file_name)
    return outcome


def set_up(
    config: Config,
    family: FamilySpec,
    data: LocalData | ClusterData,
    clock: Clock,
    stack: contextlib.ExitStack,
) -> tuple[str, dict[str, int]]:
    """Import the family's library and open the tracking store while a thread loads, splits
    and turns the data into features (most of that runs in C without the GIL, beside the
    imports), then builds the Model and Trainer and lets the Trainer prepare its inputs
    (:class:`~kennel.train.data.FitAhead`); the store's URI and the rows and features."""
    ahead = FitAhead(config, family)
    # No cyclic collection while the libraries load (kennel.collector), and a short GIL
    # switch interval so that the data thread's short calls into C get the GIL back soon
    # (kennel.train.data.quick_gil_handover); the data thread's work, which may be long,
    # goes on with both back to normal.
    with quick_gil_handover(), collector.paused():
        data.start_preparing(ahead)
        stack.callback(data.stop_preparing)  # a no-op once the data is prepared
        with clock("setup_s"):
            # The library first: the data thread needs it as soon as the features are ready
            # (if the import fails, the run stops the thread, which then builds nothing).
            family.Model, family.Trainer  # noqa: B018 - the family's library, imported now
            ahead.library_imported()
            uri = tracking.configure(config)
    with clock("data_s"):  # what the run still waits for after the setup
        counts = data.prepare()
    clock.timings["prepare_s"] = data.prepare_s  # the thread's own time
    if ahead.build_s is not None:
        clock.timings["fit_ahead_s"] = ahead.build_s  # the thread's, after prepare_s
    return uri, counts


def model_name(config: Config, data: LocalData | ClusterData) -> str:
    """The task's registered model (``registry.model_name`` or the data's name): also the
    experiment its runs go to unless the user chose one."""
    return registry.default_model_name(config, data.processor.default_model_name())


def registered(registration: registry.Registration | None) -> dict[str, Any]:
    """The outcome's registry fields: model, version and the gate's decision."""
    decision = registration.decision if registration else None
    return {
        "registered_model": registration.name if registration else None,
        "registered_version": registration.version if registration else None,
        "promotion": decision.to_dict() if decision else None,
    }


# --------------------------------------------------------------------------- the steps
def log_data_summary(processor: Any, counts: dict[str, int]) -> None:
    logger.info(
        "data %s: %d rows (%s), train/valid/test = %d/%d/%d, %d features",
        processor.source_name,
        counts["rows"],
        processor.task,
        counts["train"],
        counts["valid"],
        counts["test"],
        counts["features"],
    )


def log_inputs(config: Config, data: LocalData | ClusterData) -> None:
    """Params (the resolved config and what the data became), ``columns.json``,
    ``source.json`` (how the file was read), ``split.json`` and the lineage of the three splits."""
    run_id = tracking.active_run_id()
    processor = data.processor
    # What a training does not depend on (capture, monitoring thresholds, the search) is left
    # out: a runs table of trainings should not scroll past a hundred settings.
    tracking.log_params(
        config,
        run_id,
        extra={**data_params(processor), **data.params()},
        exclude=("capture.", "search.", "monitor."),
        keep=("monitor.bins",),
    )
    tracking.log_dict(processor.column_report(), COLUMNS_FILE)
    tracking.log_dict({"source": processor.source_uri, **processor.source.read_info}, SOURCE_FILE)
    tracking.log_dict(processor.split_report, SPLIT_FILE)
    tracking.log_datasets(processor, data.lineage())


def fit(
    config: Config, family: FamilySpec, data: LocalData | ClusterData, run_id: str
) -> tuple[Any, Any, tracking.MetricsBatcher]:
    """Build the family's Model and Trainer and fit; per-step metrics go to the run in
    batches."""
    batcher = tracking.MetricsBatcher(run_id)
    built = data.built_ahead()
    if built is not None:
        model, trainer = built
        trainer.on_metrics = batcher
    else:
        model = family.Model(config.model.params, data.processor.spec())
        trainer = data.trainer_class(family)(
            config.model.params, train_context(config), on_metrics=batcher
        )
    return model, data.fit(model, trainer), batcher


def evaluate(
    data: LocalData | ClusterData, model: Any, result: Any, batcher: tracking.MetricsBatcher
) -> Scores:
    """The kept model's metrics on the validation and test splits, logged: ``val_*`` as the
    curve's last step, ``test_*`` once."""
    task = data.processor.task
    y_valid, valid_raw, y_test, test_raw = data.evaluate(model, result)
    valid = {f"val_{k}": v for k, v in km.compute_metrics(task, y_valid, valid_raw).items()}
    test_metrics = km.compute_metrics(task, y_test, test_raw)
    test = {f"test_{k}": v for k, v in test_metrics.items()}
    final_step = max((s for v in batcher.history.values() for s, _ in v), default=-1) + 1
    batcher.log_steps([(final_step, valid)])
    batcher.log(test, step=0)
    logger.info("test: %s", ", ".join(f"{k}={v:.4f}" for k, v in test_metrics.items()))
    return Scores({**valid, **test}, test_metrics, y_test, test_raw)


def keep_model(
    config: Config, metrics: dict[str, float], gate: ModelGate | None, plots: PlotJob
) -> bool:
    """Whether the model (and its plots) are logged: ``tracking.log_model`` and, with
    ``--log-model-if``, the metric passing it. Tagged ``kennel.model_logged``."""
    keep = config.tracking.log_model
    if gate is not None and not gate.passes(metrics):
        logger.info(
            "model and plots not logged: %s=%.6g does not meet %s",
            gate.metric,
            metrics.get(gate.metric, float("nan")),
            gate,
        )
        keep = False
        plots.cancel()
    tracking.set_tags({"kennel.model_logged": str(keep).lower()})
    return keep


def log_artifacts(
    config: Config,
    output_dir: Path,
    data: LocalData | ClusterData,
    model: Any,
    plots: PlotJob,
    history: dict[str, list[tuple[int, float]]],
    scores: Scores,
    explained: Any = None,
) -> None:
    """The resolved config and feature importance; the plot process gets its inputs, the
    contributions summary among them (the plots are logged once the model is logged and
    registered)."""
    (output_dir / "config.yaml").write_text(config.to_yaml())
    tracking.log_artifact_file(output_dir / "config.yaml")
    importance = model.feature_importance()
    if importance:
        path = output_dir / "feature_importance.json"
        write_json(path, dict(sorted(importance.items(), key=lambda kv: -kv[1])))
        tracking.log_artifact_file(path)
    y_plot, plot_raw = data.plot_pair(model, scores.y_test, scores.test_raw)
    plots.hand_inputs(data.processor, history, y_plot, plot_raw, importance, explained)


def reference(
    config: Config, family: FamilySpec, data: LocalData | ClusterData, model: Any, scores: Scores
) -> Any:
    """The reference profile the model carries for monitoring: its input columns on the
    training split, its outputs and metrics on the test split."""
    profile = data.profile(family, model, scores.test_raw, config.monitor.bins)
    profile.metrics = {f"test_{k}": v for k, v in scores.test_metrics.items()}
    profile.holdout_id = data.holdout().id
    return profile


def package(
    config: Config,
    family: FamilySpec,
    data: LocalData | ClusterData,
    model: Any,
    profile: Any,
    plots: PlotJob,
) -> str:
    """Log the pyfunc (processor state + model + config + reference profile) to the run;
    its logged-model URI. MLflow's distribution map comes from the plot process when it
    has built it (:mod:`kennel.serve.distributions`)."""
    from kennel.serve import distributions, pyfunc

    distributions.seed(plots.distributions_file())

    info = pyfunc.log_model(
        model=model, processor=data.processor, family=family, config=config, profile=profile
    )
    return info.model_uri


def register(
    config: Config,
    family: FamilySpec,
    data: LocalData | ClusterData,
    run_id: str,
    model_uri: str,
    scores: Scores,
) -> registry.Registration:
    """A new version of the task's registered model, its test scores cached on the holdout,
    and with ``registry.auto_promote`` the gate; the run is tagged with the version."""
    name = model_name(config, data)
    registration = registry.register_and_promote(
        model_uri,
        name,
        run_id=run_id,
        family=family.name,
        config=config,
        holdout=data.holdout,
        task=data.processor.task,
        scores=scores.test_metrics,
    )
    tracking.set_tags(
        {
            "kennel.registered_model": name,
            "kennel.registered_version": str(registration.version),
        }
    )
    if registration.decision is not None:
        tracking.log_dict(registration.decision.to_dict(), "promotion.json")
    return registration


__all__ = ["COLUMNS_FILE", "SPLIT_FILE", "Scores", "describe", "train"]
