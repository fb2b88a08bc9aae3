"""``DogTrainer``: fits a :class:`DogModel` with tf.data, early stopping that restores the
best weights, per-epoch validation metrics (reported in batches), seeds and thread/GPU
settings from the :class:`~kennel.families.base.TrainContext`."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from kennel.families.base import (  # noqa: E402
    Model,
    StepMetrics,
    TrainContext,
    Trainer,
    TrainResult,
)
from kennel.families.dog import DogParams  # noqa: E402
from kennel.families.dog.model import DogModel  # noqa: E402
from kennel.metrics import compute_metrics, metric_names  # noqa: E402

logger = logging.getLogger(__name__)

#: Validation metrics are handed to ``on_metrics`` every this many epochs (and at the end).
REPORT_EVERY = 25
#: The metric early stopping watches, per task (all minimised).
MONITOR = {"binary": "val_log_loss", "multiclass": "val_log_loss", "regression": "val_rmse"}


def configure_runtime(context: TrainContext) -> None:
    """Apply thread counts and GPU visibility; these only take effect before the TF runtime
    initialises, so a later call (a second training in the same process) logs and goes on."""
    if context.num_threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(context.num_threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(context.num_threads, 2))
        except RuntimeError as exc:
            logger.debug("TensorFlow thread counts left unchanged: %s", exc)
    if not context.use_gpu:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as exc:
            gpus = tf.config.list_logical_devices("GPU")
            log = logger.warning if gpus else logger.debug
            log("could not hide GPUs from TensorFlow: %s", exc)
        return
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        logger.info("use_gpu is set but TensorFlow sees no GPU; training on CPU")
        return
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError) as exc:
            logger.debug("GPU memory growth left unchanged: %s", exc)


def seed_everything(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class _ValidationMetrics(keras.callbacks.Callback):
    """Computes ``val_<metric>`` after each epoch (with kennel.metrics, on the model's own
    prediction path), puts them into the epoch logs for early stopping, and hands them to
    the trainer's reporter every ``every`` epochs and at the end of training."""

    def __init__(
        self,
        model: DogModel,
        features: dict[str, np.ndarray],
        target: np.ndarray,
        report: Any,
        every: int = REPORT_EVERY,
        monitor: str | None = None,
    ) -> None:
        super().__init__()
        self.dog = model
        self.features = features
        self.target = target
        self.report_fn = report
        self.every = every
        self.history: dict[str, list[float]] = {}
        self._pending: StepMetrics = []
        # The predictions of the epoch EarlyStopping(mode="min", min_delta=0) considers best
        # (the first epoch, then each strict improvement of ``monitor``), so that the trainer
        # can hand back the restored weights' validation output without predicting again.
        self.monitor = monitor
        self.best_value = float("inf")
        self.best_epoch = -1
        self.best_raw: np.ndarray | None = None
        self.last_raw: np.ndarray | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        raw = self.dog.from_network_output(self.dog.predict_network(self.features))
        values = {
            f"val_{k}": float(v)
            for k, v in compute_metrics(self.dog.spec.task, self.target, raw).items()
        }
        if logs is not None:
            logs.update(values)
        self.last_raw = raw
        current = values.get(self.monitor) if self.monitor else None
        if current is not None and (self.best_epoch < 0 or current < self.best_value):
            self.best_value, self.best_epoch, self.best_raw = current, epoch, raw
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        self._pending.append((epoch + 1, values))
        if len(self._pending) >= self.every:
            self.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.flush()

    def flush(self) -> None:
        if self._pending:
            steps, self._pending = self._pending, []
            self.report_fn(steps)


class DogTrainer(Trainer):
    """Fits a DogModel in place: builds its network on the training split (after seeding),
    trains with Adam, stops early on the validation loss and restores the best weights."""

    params: DogParams

    def fit(
        self,
        model: Model,
        train: tuple[pd.DataFrame, np.ndarray],
        valid: tuple[pd.DataFrame, np.ndarray],
    ) -> TrainResult:
        if not isinstance(model, DogModel):
            raise TypeError(f"DogTrainer fits a DogModel, got {type(model).__name__}")
        params, context, spec = self.params, self.context, model.spec
        started = time.perf_counter()
        configure_runtime(context)
        seed_everything(context.seed, context.deterministic)

        x_train, y_train = train
        x_valid, y_valid = valid
        network = model.build_network(x_train, np.asarray(y_train))
        dataset, loss = self._dataset(model, x_train, y_train)
        network.compile(
            optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
            loss=loss,
            jit_compile=False if context.deterministic else "auto",
        )

        callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
        validation: _ValidationMetrics | None = None
        stopper: keras.callbacks.EarlyStopping | None = None
        if len(y_valid) > 0:
            validation = _ValidationMetrics(
                model,
                model.to_inputs(x_valid),
                np.asarray(y_valid),
                self.report,
                monitor=MONITOR[spec.task],
            )
            callbacks.append(validation)
            if params.early_stopping_patience > 0:
                stopper = keras.callbacks.EarlyStopping(
                    monitor=MONITOR[spec.task],
                    mode="min",
                    patience=params.early_stopping_patience,
                    restore_best_weights=True,
                )
                callbacks.append(stopper)
        else:
            logger.warning("empty validation split: no validation metrics, no early stopping")

        fit_history = network.fit(
            dataset, epochs=params.epochs, verbose=0, shuffle=False, callbacks=callbacks
        )
        epochs_run = len(fit_history.history.get("loss", [])) or params.epochs
        history: dict[str, list[float]] = {
            "loss": [float(v) for v in fit_history.history.get("loss", [])]
        }
        if validation is not None:
            history.update(validation.history)
        if stopper is not None and stopper.best_weights is not None:
            best_step = int(stopper.best_epoch) + 1
        else:
            best_step = epochs_run
        logger.info(
            "dog trained %d epoch(s) in %.1fs; best epoch %d%s",
            epochs_run,
            time.perf_counter() - started,
            best_step,
            "".join(
                f", {k}={v[best_step - 1]:.4g}"
                for k, v in history.items()
                if k.startswith("val_") and k[4:] in metric_names(spec.task)
            ),
        )
        return TrainResult(
            best_step=best_step,
            history=history,
            valid_raw=self._valid_raw(validation, stopper, fit_history),
        )

    def _dataset(
        self, model: DogModel, x_train: pd.DataFrame, y_train: np.ndarray
    ) -> tuple[Any, str]:
        """The shuffled, batched training set (a standardised target for regression) and
        the loss that goes with the task."""
        if model.spec.task == "regression":
            y_fit = (np.asarray(y_train, dtype="float64") - model.target_mean) / model.target_std
            y_fit = y_fit.astype("float32").reshape(-1, 1)
            loss = "mse"
        else:
            y_fit = np.asarray(y_train, dtype="int32")
            loss = "sparse_categorical_crossentropy"
        dataset = (
            tf.data.Dataset.from_tensor_slices((model.to_inputs(x_train), y_fit))
            .shuffle(max(len(y_fit), 1), seed=self.context.seed, reshuffle_each_iteration=True)
            .batch(self.params.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        return dataset, loss

    @staticmethod
    def _valid_raw(
        validation: _ValidationMetrics | None,
        stopper: keras.callbacks.EarlyStopping | None,
        fit_history: Any,
    ) -> np.ndarray | None:
        """The network's validation output as the callback computed it for the weights the
        model now holds: the best epoch's when EarlyStopping restored them, else the last
        epoch's; None when unsure (e.g. training stopped on a NaN loss)."""
        if validation is None:
            return None
        epochs_run = len(fit_history.history.get("loss", []))
        if len(next(iter(validation.history.values()), [])) != epochs_run:
            return None  # an epoch ended without our callback (TerminateOnNaN, ...)
        if stopper is None:
            return validation.last_raw
        if stopper.best_weights is None or stopper.best_epoch != validation.best_epoch:
            return None
        return validation.best_raw
