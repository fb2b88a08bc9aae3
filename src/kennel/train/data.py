"""Where the training data lives: one pandas frame in this process (:class:`LocalData`), or a
Parquet data set on a Dask cluster (:class:`ClusterData`). Both answer the same questions, so
the training run reads the same whichever it is."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from kennel.config import Config

if TYPE_CHECKING:
    from kennel.families import TrainContext

logger = logging.getLogger(__name__)

#: Seconds a thread holds the GIL before another one waiting for it gets it, while the data
#: thread works beside the imports (Python's default is 0.005).
OVERLAP_SWITCH_INTERVAL = 0.0005


@contextlib.contextmanager
def quick_gil_handover(interval: float = OVERLAP_SWITCH_INTERVAL) -> Iterator[None]:
    """A shorter GIL switch interval inside, the previous one restored on the way out.

    While the main thread imports (pure Python, holding the GIL) the data thread makes many
    short calls into C that let the GIL go (pyarrow, numpy copies, pandas' block operations),
    and after each one it waits for the importing thread to hand the GIL back: up to the
    switch interval, 5 ms by default. Hundreds of such waits made the data thread's own
    time up to 2.2 s beside the imports for 0.4-0.75 s of work alone (1M x 20 Parquet rows),
    and in 2 of 10 runs the run waited 0.5-0.6 s for it after the setup. At 0.5 ms the wait
    was 0.19 s at worst (mean 0.138 -> 0.063 s), the setup up to 0.2 s longer, the wall
    time the same."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def open_data(config: Config, stack: contextlib.ExitStack) -> LocalData | ClusterData:
    """The data path ``resource.cluster`` asks for; a cluster is connected (and, for
    ``local``, started) inside ``stack`` and stopped when it closes."""
    from kennel.cluster import is_distributed

    if not is_distributed(config.resource.cluster):
        return LocalData(config)
    from kennel import cluster
    from kennel.data.sources import Source
    from kennel.families import cluster_trainer, get_family

    cluster_trainer(get_family(config.model.family), config.resource.cluster)  # fails early
    Source(config.data).check_for_cluster()  # a wrong or missing data set: before it starts
    client, info = stack.enter_context(
        cluster.connect(config.resource.cluster, num_threads=config.resource.num_threads)
    )
    return ClusterData(config, client, info)


def release_arrow_memory() -> None:
    """Give what Arrow's allocator holds unused (a table read from Parquet, freed) back to
    the system, so that it does not stay in the process for the rest of the run."""
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


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


class Cancelled(Exception):
    """The preparing thread was stopped (:meth:`LocalData.stop_preparing`)."""


def train_context(config: Config) -> TrainContext:
    """The family-independent settings a Trainer honours, from the config."""
    from kennel.families import TrainContext

    return TrainContext(
        seed=config.training.seed,
        num_threads=config.resource.num_threads,
        use_gpu=config.resource.use_gpu,
        deterministic=config.training.deterministic,
    )


class FitAhead:
    """The family's Model and Trainer, built in the data thread as soon as the features are
    ready, with :meth:`~kennel.families.Trainer.prepare` run there too (LightGBM bins its
    Datasets: ~1 s of the fit on 1M rows) while the main thread still imports MLflow and
    opens the store. The thread waits until the main thread has imported the family's
    library (:meth:`library_imported`): two threads importing the same modules can trip
    Python's import deadlock detection. Best effort: whatever fails here, the fit builds
    again and raises inside the run."""

    def __init__(self, config: Config, family: Any) -> None:
        self.config = config
        self.family = family
        self.model: Any = None
        self.trainer: Any = None
        #: Seconds the Model, the Trainer and :meth:`Trainer.prepare` took in the thread.
        self.build_s: float | None = None
        self._imported = threading.Event()

    def library_imported(self) -> None:
        self._imported.set()

    def build(self, processor: Any, train: Any, valid: Any, cancelled: threading.Event) -> None:
        from kennel.families import Trainer

        while not self._imported.wait(0.01):
            if cancelled.is_set():
                return
        if cancelled.is_set():
            return
        started = time.perf_counter()
        try:
            if self.family.Trainer.prepare is Trainer.prepare:
                return  # the family has nothing to build ahead
            model = self.family.Model(self.config.model.params, processor.spec())
            trainer = self.family.Trainer(self.config.model.params, train_context(self.config))
            trainer.prepare(model, train, valid)
        except Exception as exc:
            logger.debug("nothing built ahead of the fit: %s", exc)
            return
        self.model, self.trainer = model, trainer
        self.build_s = round(time.perf_counter() - started, 3)


class LocalData:
    """The in-process data path: one pandas frame, the seeded scikit-learn split."""

    def __init__(self, config: Config) -> None:
        from kennel.data import DataProcessor

        self.config = config
        self.processor = DataProcessor(config.data)
        self.ahead: FitAhead | None = None
        self._preparing: threading.Thread | None = None
        self._prepared: dict[str, int] | BaseException | None = None
        self._cancelled = threading.Event()
        #: Seconds the data took to read, check, split and turn into features (in the
        #: preparing thread when it was started).
        self.prepare_s: float | None = None

    def start_preparing(self, ahead: FitAhead | None = None) -> None:
        """Prepare the data (:meth:`prepare`) in a thread while the run sets up tracking and
        imports the family's library: reading Parquet, hashing the rows, drawing the split
        and gathering the features run mostly in C without the GIL, so the two overlap.
        ``ahead`` then builds the Model and Trainer in that thread (:class:`FitAhead`).
        :meth:`prepare` waits for it (and raises what it raised)."""
        self.ahead = ahead
        # What the read imports is imported here first: two threads importing modules that
        # import each other can trip Python's import deadlock detection.
        self.processor.source.import_readers()
        self._preparing = threading.Thread(target=self._prepare, name="kennel-data")
        self._preparing.start()

    def stop_preparing(self) -> None:
        """Stop the preparing thread after its current step, and wait for it (the run failed
        before it needed the data: nothing may log into the closed run's files after)."""
        self._cancelled.set()
        if self._preparing is not None:
            self._preparing.join()

    def _prepare(self) -> None:
        started = time.perf_counter()
        try:
            self._prepared = self._prepare_now()
        except BaseException as exc:  # handed to the main thread by prepare()
            self._prepared = exc
        self.prepare_s = round(time.perf_counter() - started, 3)
        if self.ahead is not None and not isinstance(self._prepared, BaseException):
            self.ahead.build(self.processor, self.train, self.valid, self._cancelled)

    def prepare(self) -> dict[str, int]:
        """Load, split and fit the processor (or wait for the thread doing it): the rows of
        the whole table and of each split, and the number of features."""
        if self._preparing is None:
            self._prepare()
        else:
            self._preparing.join()
            self._preparing = None
        prepared, self._prepared = self._prepared, None
        if isinstance(prepared, BaseException):
            raise prepared
        assert prepared is not None
        return prepared

    def _step(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("the run stopped before it needed the data")

    def _prepare_now(self) -> dict[str, int]:
        processor = self.processor
        frame = processor.load()
        self._step()
        splits = self.splits = processor.split(frame)
        self._step()
        processor.fit(splits.train)
        self._step()
        # Features come straight from the table's columns at each split's rows: the valid
        # rows are never copied as raw rows, and no split is copied twice.
        at = splits.positions
        self.train, self.valid, self.test = (
            processor.features_and_target(splits.frame, at=at[name])
            for name in ("train", "valid", "test")
        )
        # What the lineage records: the schema of each split (a few rows are enough).
        self.heads = {name: splits.frame.take(at[name][:100]) for name in at}
        splits.keep_only("train", "test")  # the reference profile, the holdout, explanations
        release_arrow_memory()  # the table read from Parquet is gone
        return {
            "rows": len(frame),
            "train": len(self.train[0]),
            "valid": len(self.valid[0]),
            "test": len(self.test[0]),
            "features": self.train[0].shape[1],
        }

    def lineage(self) -> dict[str, Any]:
        return {
            "training": self.heads["train"],
            "validation": self.heads["valid"],
            "test": self.heads["test"],
        }

    def params(self) -> dict[str, Any]:
        return {}

    def tags(self) -> dict[str, str]:
        return {}

    def trainer_class(self, family: Any) -> Any:
        return family.Trainer

    def built_ahead(self) -> tuple[Any, Any] | None:
        """(model, trainer) the data thread built (:class:`FitAhead`), or None."""
        if self.ahead is None or self.ahead.trainer is None:
            return None
        return self.ahead.model, self.ahead.trainer

    def fit(self, model: Any, trainer: Any) -> Any:
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

    def test_rows(self) -> Any:
        """The raw rows of the test split (what the contributions summary explains)."""
        return self.splits.test

    def profile(self, family: Any, model: Any, test_raw: np.ndarray, bins: int) -> Any:
        """The reference profile: the training split's columns, the test split's outputs."""
        from kennel.monitor.profile import build_profile

        outputs = family.ModelAPI(model, self.processor).postprocess(test_raw)
        return build_profile(self.processor, self.splits.train, outputs, bins=bins)


#: Why a split on a cluster has approximate shares, by its method.
APPROXIMATE = {
    "random": "each row's split comes from a seeded hash of its values",
    "stratified": "each row's split comes from a seeded hash of its values; every class is "
    "split by the same hash, so stratification is approximate",
    "time": "the cut times are placed on a sample of the sorted times",
    "group": "each group's split comes from a seeded hash of its value, so the shares are "
    "groups rather than rows",
}


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

    #: The cluster prepares the data in :meth:`prepare`.
    prepare_s = None

    def start_preparing(self, ahead: FitAhead | None = None) -> None:
        """Nothing to start: the cluster reads the table in :meth:`prepare` (and its
        trainer builds its inputs on the workers, so nothing is built ahead)."""

    def built_ahead(self) -> None:
        return None

    def stop_preparing(self) -> None:
        """Nothing to stop."""

    def prepare(self) -> dict[str, int]:
        import dask

        from kennel.data.dask_table import sample_rows
        from kennel.data.splits import describe_split

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
        report = self.processor.split_report
        report["rows"] = {"train": n_train, "valid": n_valid, "test": n_test}
        logger.info(
            "split on the cluster (%s): train %d, valid %d, test %d rows; the shares are "
            "approximate (%s)",
            describe_split(report),
            n_train,
            n_valid,
            n_test,
            APPROXIMATE[report["method"]],
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

    def tags(self) -> dict[str, str]:
        dashboard = self.info.lasting_dashboard  # a local cluster's stops with the run
        return {"kennel.cluster": self.info.setting} | (
            {"kennel.cluster.dashboard": dashboard} if dashboard else {}
        )

    def trainer_class(self, family: Any) -> Any:
        from kennel.families import cluster_trainer

        return cluster_trainer(family, self.config.resource.cluster)

    def fit(self, model: Any, trainer: Any) -> Any:
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

    def profile(self, family: Any, model: Any, test_raw: np.ndarray, bins: int) -> Any:
        """The reference profile, counted on the workers: edges and vocabularies placed on a
        seeded sample of the training split, then every training row counted against them
        (the test outputs are the whole test split's, already on the client)."""
        from kennel.data.dask_table import sample_rows
        from kennel.monitor.profile import QUANTILE_SAMPLE, build_profile
        from kennel.monitor.reference import count_on_cluster, recount

        train = self.splits[0]
        sample = sample_rows(train, self.processor.n_rows or 0, QUANTILE_SAMPLE, 0)
        outputs = family.ModelAPI(model, self.processor).postprocess(test_raw)
        profile = build_profile(self.processor, sample, outputs, bins=bins)
        return recount(profile, count_on_cluster(self.client, train, profile))

    def test_rows(self) -> Any:
        """The seeded sample of the test split kept on the client."""
        return self.test_sample

    def holdout(self) -> Any:
        from kennel import registry

        rows = len(self.test_sample)
        return registry.Holdout(
            rows=self.test_sample,
            target=self.processor.target,
            id=f"{registry.holdout_id(self.processor)}-sample{rows}",
            description=f"{rows}-row sample of the test split of {self.processor.source_name}",
        )
