"""The training run, top to bottom: seed, load, split, fit, evaluate, log, package, register.

``train(config)`` is what ``kennel train``, the MLproject entry points and every search trial
run. It returns (and writes as ``result.json`` in the run's output folder) the run id, the
model URI, the registered version and the metrics.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kennel import metrics as km
from kennel.config import Config, project_root
from kennel.util import write_json

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
#: What each input column became (artifact of every training run).
COLUMNS_FILE = "columns.json"


def data_params(processor: Any) -> dict[str, Any]:
    """Run params that say what the data became: unlabeled rows left out, features used,
    columns dropped (name: reason)."""
    return {
        "data.rows_without_target": processor.rows_without_target,
        "data.rows": processor.n_rows,
        "data.features": len(processor.raw_columns),
        "data.dropped_columns": ", ".join(
            f"{name} ({reason.split(' (')[0].split(';')[0]})"
            for name, reason in processor.dropped.items()
        )
        or "none",
    }


@dataclass(frozen=True)
class ModelGate:
    """``--log-model-if val_roc_auc>0.99``: log the model and plots only when the metric
    passes (the search's ``log_models=improving`` passes the best value so far)."""

    metric: str
    sign: str
    threshold: float

    SIGNS: ClassVar[tuple[str, ...]] = (">=", "<=", ">", "<")

    @classmethod
    def parse(cls, text: str) -> ModelGate:
        from kennel.errors import UserError

        for sign in cls.SIGNS:
            name, found, value = text.partition(sign)
            if found and name.strip():
                try:
                    return cls(name.strip(), sign, float(value))
                except ValueError:
                    break
        raise UserError(
            f"--log-model-if '{text}': expected METRIC>VALUE, METRIC>=VALUE, METRIC<VALUE or "
            f"METRIC<=VALUE, e.g. val_roc_auc>0.99"
        )

    def passes(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or np.isnan(value):
            return False
        return {
            ">=": value >= self.threshold,
            "<=": value <= self.threshold,
            ">": value > self.threshold,
            "<": value < self.threshold,
        }[self.sign]

    def __str__(self) -> str:
        return f"{self.metric}{self.sign}{self.threshold:.6g}"


@dataclass
class TrainOutcome:
    """The machine-readable result of a training run."""

    status: str
    run_id: str
    experiment_id: str
    family: str
    task: str
    model_uri: str | None
    registered_model: str | None
    registered_version: int | None
    metrics: dict[str, float]
    best_step: int
    output_dir: str
    tracking_uri: str
    promotion: dict[str, Any] | None = None
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_dir_for(
    config: Config, requested: str | os.PathLike[str] | None = None, kind: str | None = None
) -> Path:
    """A command's own folder: ``--output-dir`` or a new ``<output_root>/<kind>-<time>-<rand>``
    (``kind`` defaults to the family), so parallel runs never share a path."""
    if requested:
        path = Path(requested).resolve()
    else:
        root = Path(config.training.output_root)
        if not root.is_absolute():
            root = project_root() / root
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = root / f"{kind or config.model.family}-{stamp}-{secrets.token_hex(3)}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".kennel-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        from kennel.errors import UserError

        raise UserError(
            f"cannot write to the output folder {path}: {exc.strerror or exc} (set "
            f"--output-dir or training.output_root to a folder you can write)"
        ) from None
    return path


def _timer() -> Any:
    start = time.perf_counter()
    return lambda: round(time.perf_counter() - start, 3)


def train(config: Config, output_dir: Path, *, model_gate: ModelGate | None = None) -> TrainOutcome:
    """Run one tracked training; the caller has set up logging into ``output_dir``.

    ``model_gate``: log the model and plots only when the test/validation metric passes it.
    """
    from kennel import plots

    started = time.perf_counter()
    # The plot process starts first: it imports its libraries while this one trains.
    plot_job: plots.BackgroundPlots | plots.InlinePlots | None = None
    if config.tracking.log_plots:
        job = plots.BackgroundPlots if config.tracking.plots_in_background else plots.InlinePlots
        plot_job = job(output_dir / "plots")
    try:
        return _train(config, output_dir, plot_job, started, model_gate)
    except BaseException:
        if plot_job is not None:
            plot_job.cancel()
        raise


def _train(
    config: Config, output_dir: Path, plot_job: Any, started: float, gate: ModelGate | None
) -> TrainOutcome:
    import mlflow

    from kennel import packaging, registry, tracking
    from kennel.data import DataProcessor
    from kennel.families import TrainContext, get_family

    timings: dict[str, float] = {}
    uri = tracking.configure(config)
    family = get_family(config.model.family)

    t = _timer()
    processor = DataProcessor(config.data)
    frame = processor.load()
    splits = processor.split(frame)
    processor.fit(splits.train)
    x_train, y_train = processor.features_and_target(splits.train)
    x_valid, y_valid = processor.features_and_target(splits.valid)
    x_test, y_test = processor.features_and_target(splits.test)
    timings["data_s"] = t()
    logger.info(
        "data %s: %d rows (%s), train/valid/test = %d/%d/%d, %d features",
        processor.source_name,
        len(frame),
        processor.task,
        len(x_train),
        len(x_valid),
        len(x_test),
        x_train.shape[1],
    )

    model_name = registry.default_model_name(config, processor.default_model_name())
    with tracking.start_run(config, tags=tracking.run_tags(config, processor)) as run:
        run_id = run.info.run_id
        logger.info("MLflow run %s in experiment %s (%s)", run_id, run.info.experiment_id, uri)
        tracking.log_params(config, run_id, extra=data_params(processor))
        mlflow.log_dict(processor.column_report(), COLUMNS_FILE)
        tracking.log_datasets(
            processor,
            {"training": splits.train, "validation": splits.valid, "test": splits.test},
        )

        t = _timer()
        batcher = tracking.MetricsBatcher(run_id)
        context = TrainContext(
            seed=config.training.seed,
            num_threads=config.resource.num_threads,
            use_gpu=config.resource.use_gpu,
            deterministic=config.training.deterministic,
        )
        model = family.Model(config.model.params, processor.spec())
        trainer = family.Trainer(config.model.params, context, on_metrics=batcher)
        result = trainer.fit(model, (x_train, y_train), (x_valid, y_valid))
        timings["fit_s"] = t()

        t = _timer()
        task = processor.task
        # The trainer may already hold the kept model's validation output (e.g. LightGBM's
        # own validation scores when the last iteration is the best); same values, one
        # prediction pass fewer.
        valid_raw = result.valid_raw if result.valid_raw is not None else model.predict_raw(x_valid)
        test_raw = model.predict_raw(x_test)
        valid_metrics = km.compute_metrics(task, y_valid, valid_raw)
        test_metrics = km.compute_metrics(task, y_test, test_raw)
        val_named = {f"val_{k}": v for k, v in valid_metrics.items()}
        test_named = {f"test_{k}": v for k, v in test_metrics.items()}
        final_step = max((s for v in batcher.history.values() for s, _ in v), default=-1) + 1
        batcher.log_steps([(final_step, val_named)])
        batcher.log(test_named, step=0)
        timings["evaluate_s"] = t()
        metrics = {**val_named, **test_named}
        logger.info("test: %s", ", ".join(f"{k}={v:.4f}" for k, v in test_metrics.items()))
        log_model = config.tracking.log_model
        if gate is not None and not gate.passes(metrics):
            logger.info(
                "model and plots not logged: %s=%.6g does not meet %s",
                gate.metric,
                metrics.get(gate.metric, float("nan")),
                gate,
            )
            log_model = False
            if plot_job is not None:
                plot_job.cancel()
                plot_job = None
        mlflow.set_tag("kennel.model_logged", str(log_model).lower())

        t = _timer()
        _log_artifacts(
            config, output_dir, processor, model, plot_job, batcher.history, y_test, test_raw
        )
        timings["artifacts_s"] = t()

        model_uri = version = promotion = None
        if log_model:
            t = _timer()
            info = packaging.log_model(
                model=model, processor=processor, family=family, config=config
            )
            model_uri = f"runs:/{run_id}/{packaging.MODEL_NAME}"
            timings["log_model_s"] = t()
            if config.registry.enabled:
                t = _timer()
                mv = registry.register_version(
                    info.model_uri,
                    model_name,
                    run_id=run_id,
                    tags={"kennel.family": family.name, "kennel.run_id": run_id},
                )
                version = int(mv.version)
                holdout = registry.Holdout.from_processor(processor, splits.test)
                registry.cache_score(model_name, version, holdout.id, task, test_metrics)
                mlflow.set_tags(
                    {
                        "kennel.registered_model": model_name,
                        "kennel.registered_version": str(version),
                    }
                )
                if config.registry.auto_promote:
                    decision = registry.promote(
                        model_name,
                        version,
                        config.registry.auto_promote,
                        config=config,
                        holdout=holdout,
                    )
                    promotion = decision.to_dict()
                    mlflow.log_dict(promotion, "promotion.json")
                timings["registry_s"] = t()

        if plot_job is not None:
            t = _timer()
            plot_job.finish()
            mlflow.log_artifacts(str(plot_job.folder), artifact_path="plots")
            timings["plots_wait_s"] = t()

        outcome = TrainOutcome(
            status="FINISHED",
            run_id=run_id,
            experiment_id=run.info.experiment_id,
            family=family.name,
            task=task,
            model_uri=model_uri,
            registered_model=model_name if version is not None else None,
            registered_version=version,
            metrics=metrics,
            best_step=result.best_step,
            output_dir=str(output_dir),
            tracking_uri=uri,
            promotion=promotion,
            duration_s=round(time.perf_counter() - started, 3),
            timings=timings,
        )
        write_json(output_dir / RESULT_FILE, outcome.to_dict())
        mlflow.log_artifact(str(output_dir / RESULT_FILE))
        _log_log_file(output_dir, config)
    return outcome


def _log_artifacts(
    config: Config,
    output_dir: Path,
    processor: Any,
    model: Any,
    plot_job: Any,
    history: dict[str, list[tuple[int, float]]],
    y_test: np.ndarray,
    test_raw: np.ndarray,
) -> None:
    """Log the resolved config and feature importance; hand the plot process its inputs
    (the plots are logged once the model is logged and registered)."""
    import mlflow

    from kennel import plots

    (output_dir / "config.yaml").write_text(config.to_yaml())
    files = [output_dir / "config.yaml"]
    importance = model.feature_importance()
    if importance:
        path = output_dir / "feature_importance.json"
        write_json(path, dict(sorted(importance.items(), key=lambda kv: -kv[1])))
        files.append(path)
    for path in files:
        mlflow.log_artifact(str(path))
    if plot_job is None:  # tracking.log_plots is off
        return
    plots.save_inputs(
        plot_job.folder,
        task=processor.task,
        labels=[str(c) for c in processor.classes],
        history=history,
        y_test=y_test,
        test_raw=test_raw,
        importance=importance,
    )


def _log_log_file(output_dir: Path, config: Config) -> None:
    import mlflow

    path = output_dir / config.logging.file_name
    if path.exists():
        for handler in logging.getLogger().handlers:
            handler.flush()
        mlflow.log_artifact(str(path), artifact_path="logs")
