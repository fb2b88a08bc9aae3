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
    from kennel.cluster import is_distributed

    if not is_distributed(config.resource.cluster):
        return _train_with(config, output_dir, plot_job, started, gate, LocalData(config))
    from kennel import cluster
    from kennel.families import get_family

    family = get_family(config.model.family)
    if family.cluster_trainer is None:
        from kennel.errors import UserError

        raise UserError(
            f"the {family.name} family trains on one machine, not on a cluster "
            f"(resource.cluster={config.resource.cluster}); set resource.cluster=none, or "
            "train cat on the cluster"
        )
    with cluster.connect(config.resource.cluster, num_threads=config.resource.num_threads) as (
        client,
        info,
    ):
        return _train_with(
            config, output_dir, plot_job, started, gate, ClusterData(config, client, info)
        )


class LocalData:
    """The in-process data path: one pandas frame, the seeded scikit-learn split."""

    def __init__(self, config: Config) -> None:
        from kennel.data import DataProcessor

        self.processor = DataProcessor(config.data)

    def prepare(self) -> dict[str, int]:
        processor = self.processor
        frame = processor.load()
        self.splits = processor.split(frame)
        processor.fit(self.splits.train)
        self.train = processor.features_and_target(self.splits.train)
        self.valid = processor.features_and_target(self.splits.valid)
        self.test = processor.features_and_target(self.splits.test)
        return {
            "rows": len(frame),
            "train": len(self.train[0]),
            "valid": len(self.valid[0]),
            "test": len(self.test[0]),
            "features": self.train[0].shape[1],
        }

    def lineage(self) -> dict[str, Any]:
        return {
            "training": self.splits.train,
            "validation": self.splits.valid,
            "test": self.splits.test,
        }

    def params(self) -> dict[str, Any]:
        return {}

    def fit(self, family: Any, model: Any, trainer: Any) -> Any:
        return trainer.fit(model, self.train, self.valid)

    def evaluate(self, model: Any, result: Any) -> tuple[np.ndarray, ...]:
        """(y_valid, valid_raw, y_test, test_raw)."""
        # The trainer may already hold the kept model's validation output (e.g. LightGBM's
        # own validation scores when the last iteration is the best); same values, one
        # prediction pass fewer.
        x_valid, y_valid = self.valid
        x_test, y_test = self.test
        valid_raw = result.valid_raw if result.valid_raw is not None else model.predict_raw(x_valid)
        return y_valid, valid_raw, y_test, model.predict_raw(x_test)

    def plot_pair(
        self, model: Any, y_test: np.ndarray, test_raw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the plots are drawn from: the whole test split."""
        return y_test, test_raw

    def holdout(self) -> Any:
        from kennel import registry

        return registry.Holdout.from_processor(self.processor, self.splits.test)


class ClusterData:
    """The Dask path: a Parquet data set on the cluster (:mod:`kennel.data.dask_table`)."""

    #: Rows of a split kept in memory: early stopping (valid), plots and the promotion
    #: holdout (test). Seeded samples beyond this.
    SAMPLE_ROWS = 100_000

    def __init__(self, config: Config, client: Any, info: Any) -> None:
        from kennel.data import DataProcessor
        from kennel.data.dask_table import DaskTable

        self.config = config
        self.client = client
        self.info = info
        self.processor = DataProcessor(config.data)
        self.table = DaskTable(self.processor, client)

    def prepare(self) -> dict[str, int]:
        import dask

        from kennel.data.dask_table import sample_rows

        frame = self.table.load()
        train, valid, test = self.table.split(frame)
        self.raw = {"training": train, "validation": valid, "test": test}
        # Kept in the workers' memory: every later pass (fit summaries, LightGBM, metrics)
        # reads it from there instead of reading and splitting the files again.
        train, valid, test = dask.persist(train, valid, test)
        self.splits = (train, valid, test)
        n_train = self.table.fit(train)
        n_valid, n_test = (int(len(x)) for x in (valid, test))
        cfg = self.config.data.split
        self.valid_sample = sample_rows(valid, n_valid, self.SAMPLE_ROWS, cfg.seed)
        self.test_sample = sample_rows(test, n_test, self.SAMPLE_ROWS, cfg.seed)
        logger.info(
            "split on the cluster by row hash (seed %d): train %d, valid %d, test %d rows%s",
            cfg.seed,
            n_train,
            n_valid,
            n_test,
            "; each class is split by the same hash, so stratification is approximate"
            if cfg.stratify and self.processor.task != "regression"
            else "",
        )
        return {
            "rows": int(self.processor.n_rows or 0),
            "train": n_train,
            "valid": n_valid,
            "test": n_test,
            "features": len(self.processor.numeric) + len(self.processor.categorical),
        }

    def lineage(self) -> dict[str, Any]:
        return self.raw

    def params(self) -> dict[str, Any]:
        return {
            **self.info.params(),
            "cluster.partitions": self.table.partitions,
            "cluster.early_stopping_rows": len(self.valid_sample),
        }

    def fit(self, family: Any, model: Any, trainer: Any) -> Any:
        from kennel.data.dask_table import features_frame

        x_train, y_train = features_frame(self.processor, model, self.splits[0])
        x_valid, y_valid = self.processor.features_and_target(self.valid_sample)
        threads = max(1, self.info.threads // max(self.info.workers, 1))
        return trainer.fit(
            model, (x_train, y_train), (x_valid, y_valid), client=self.client,
            threads_per_worker=threads,
        )  # fmt: skip

    def evaluate(self, model: Any, result: Any) -> tuple[np.ndarray, ...]:
        """Raw outputs of the whole validation and test splits, predicted on the workers
        (only the outputs and the encoded targets come back: a few numbers per row)."""
        from kennel.data.dask_table import predict_split

        _, valid, test = self.splits
        y_valid, valid_raw = predict_split(self.client, self.processor, model, valid)
        y_test, test_raw = predict_split(self.client, self.processor, model, test)
        return y_valid, valid_raw, y_test, test_raw

    def plot_pair(
        self, model: Any, y_test: np.ndarray, test_raw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the plots are drawn from: the seeded sample of the test split."""
        x, y = self.processor.features_and_target(self.test_sample)
        return y, model.predict_raw(x)

    def holdout(self) -> Any:
        from kennel import registry

        rows = len(self.test_sample)
        return registry.Holdout(
            rows=self.test_sample,
            target=self.processor.target,
            id=f"{registry.holdout_id(self.processor)}-sample{rows}",
            description=f"{rows}-row sample of the test split of {self.processor.source_name}",
        )


def _train_with(
    config: Config,
    output_dir: Path,
    plot_job: Any,
    started: float,
    gate: ModelGate | None,
    data: LocalData | ClusterData,
) -> TrainOutcome:
    import mlflow

    from kennel import packaging, registry, tracking
    from kennel.families import TrainContext, get_family

    timings: dict[str, float] = {}
    uri = tracking.configure(config)
    family = get_family(config.model.family)

    t = _timer()
    processor = data.processor
    counts = data.prepare()
    timings["data_s"] = t()
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

    model_name = registry.default_model_name(config, processor.default_model_name())
    name = tracking.run_name(config, processor.source_name)
    with tracking.start_run(config, name=name, tags=tracking.run_tags(config, processor)) as run:
        run_id = run.info.run_id
        logger.info("MLflow run %s in experiment %s (%s)", run_id, run.info.experiment_id, uri)
        tracking.log_params(config, run_id, extra={**data_params(processor), **data.params()})
        mlflow.log_dict(processor.column_report(), COLUMNS_FILE)
        tracking.log_datasets(processor, data.lineage())
        if isinstance(data, ClusterData):
            mlflow.set_tags(
                {
                    "kennel.cluster": data.info.setting,
                    "kennel.cluster.dashboard": data.info.dashboard or "",
                }
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
        trainer_type = family.ClusterTrainer if isinstance(data, ClusterData) else family.Trainer
        trainer = trainer_type(config.model.params, context, on_metrics=batcher)
        result = data.fit(family, model, trainer)
        timings["fit_s"] = t()

        t = _timer()
        task = processor.task
        y_valid, valid_raw, y_test, test_raw = data.evaluate(model, result)
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
        y_plot, plot_raw = data.plot_pair(model, y_test, test_raw)
        _log_artifacts(
            config, output_dir, processor, model, plot_job, batcher.history, y_plot, plot_raw
        )
        timings["artifacts_s"] = t()

        model_uri = version = promotion = holdout = None
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
                holdout = data.holdout()
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

        # Read once for the description and the report: the aliases as they are now.
        aliases = registry.aliases(model_name) if version is not None else {}
        mlflow.set_tag(
            "mlflow.note.content",
            _description(family.name, processor, metrics, model_name, version, aliases),
        )
        _log_report(
            config, output_dir, name, family.name, processor, counts, metrics,
            model_name if version is not None else None, version, aliases, holdout, plot_job,
        )  # fmt: skip

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


def main_metric(task: str) -> str:
    """The metric a run is summed up by: ROC AUC, accuracy or RMSE."""
    return {"binary": "roc_auc", "multiclass": "accuracy"}.get(task, "rmse")


def _description(
    family: str,
    processor: Any,
    metrics: dict[str, float],
    model: str,
    version: int | None,
    aliases: dict[str, int],
) -> str:
    """``cat on breast_cancer (binary): test_roc_auc 0.9925; registered breast-cancer v3``."""
    key = f"test_{main_metric(processor.task)}"
    text = f"{family} on {processor.source_name} ({processor.task})"
    if key in metrics:
        text += f": {key} {metrics[key]:.4f}"
    if version is not None:
        held = sorted(a for a, v in aliases.items() if v == version)
        text += f"; registered {model} v{version}" + "".join(f" @{a}" for a in held)
    return text


def _log_report(
    config: Config,
    output_dir: Path,
    name: str,
    family: str,
    processor: Any,
    counts: dict[str, int],
    metrics: dict[str, float],
    model: str | None,
    version: int | None,
    aliases: dict[str, int],
    holdout: Any,
    plot_job: Any,
) -> None:
    """``report.html``: the run at a glance (see :mod:`kennel.report`); ``holdout`` is the
    one the new version was scored on (None when it was not registered)."""
    from kennel import report

    page = report.RunReport(
        title=name,
        kind="training",
        summary={
            "family": family,
            "data": processor.source_name,
            "source": processor.source_uri,
            "task": processor.task,
            "rows (train / valid / test)": f"{counts['train']} / {counts['valid']} / "
            f"{counts['test']}",
            "features": counts["features"],
            "registered": f"{model} v{version}" if model else "not registered",
        },
        metrics=metrics,
        holdout=holdout.description if holdout else "",
        model_name=model,
        version=version,
        aliases=aliases,
        holders=report.holders(model, aliases, holdout.id, config.registry.environments)
        if model and holdout
        else [],
        columns=processor.column_report()["columns"],
        config_yaml=config.to_yaml(),
        plots=sorted(plot_job.folder.glob("*.png")) if plot_job is not None else [],
    )
    report.log_report(page, output_dir)


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
