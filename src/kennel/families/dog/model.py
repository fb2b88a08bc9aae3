"""``DogModel``: a Keras MLP whose preprocessing (imputation, missing indicators,
normalisation, categorical encoding) lives inside the network, so it is saved with it.

Graph inputs: ``numeric`` (float32, NaN/inf allowed; imputed with the training mean, with a
missing-indicator per column that had missing values in training, then normalised by a
``Normalization`` layer adapted on the training split) and one ``cat_<i>`` int32 input per
categorical column holding ``code + 1`` (0 is unknown/missing), encoded by an ``Embedding`` or
one-hot ``CategoryEncoding``. Regression targets are standardised for training; the mean/std
are kept in ``dog.json`` and :meth:`DogModel.predict_raw` returns de-standardised values.

The network's ``output`` layer ends in a softmax for classifiers, but prediction reads the
layer's pre-activation (the logits) and takes the softmax in float64 here: the served
probabilities and the explained log-odds then come from the same numbers, without a float32
softmax rounding an extreme row's probability to 0 or 1 (or a clip capping its log-odds).

Saved as ``model.keras`` (Keras native format, no pickle) plus ``dog.json``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kennel.families.base import Contributions, Model, ModelSpec
from kennel.families.dog import DogParams
from kennel.logging_setup import native_stderr_to_debug

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logger = logging.getLogger(__name__)

# TensorFlow's C++ start-up lines go to the log at DEBUG, not to the user's terminal: the
# import's, and the device discovery's (on a machine without a GPU it reports a failed cuInit
# as an error, e.g. in every `mlflow models serve` of a dog model), done here once.
with native_stderr_to_debug(logger):
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MODEL_FILE = "model.keras"
STATE_FILE = "dog.json"
FORMAT_VERSION = 1
#: Rows per forward pass when predicting large frames (bounded memory, no per-call overhead).
PREDICT_CHUNK = 16384


@keras.saving.register_keras_serializable(package="kennel")
class Impute(keras.layers.Layer):
    """Replace non-finite values (NaN, inf) column-wise by fixed fill values (training means)."""

    def __init__(self, fill_values: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill_values = [float(v) for v in fill_values]
        self._fill = np.asarray(self.fill_values, dtype="float32")

    def call(self, inputs: Any) -> Any:
        fill = keras.ops.convert_to_tensor(self._fill, dtype=inputs.dtype)
        fill = keras.ops.broadcast_to(fill, keras.ops.shape(inputs))
        return keras.ops.where(keras.ops.isfinite(inputs), inputs, fill)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill_values": self.fill_values}


@keras.saving.register_keras_serializable(package="kennel")
class MissingIndicator(keras.layers.Layer):
    """1.0 where the selected columns are missing (non-finite), else 0.0."""

    def __init__(self, columns: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]

    def call(self, inputs: Any) -> Any:
        selected = keras.ops.take(inputs, self.columns, axis=1)
        return keras.ops.cast(keras.ops.logical_not(keras.ops.isfinite(selected)), "float32")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], len(self.columns))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "columns": self.columns}


class DogModel(Model):
    """Keras MLP for tabular data; built on the training split by :meth:`build_network`."""

    params: DogParams

    def __init__(self, params: DogParams, spec: ModelSpec) -> None:
        super().__init__(params, spec)
        self.network: keras.Model | None = None
        self.target_mean = 0.0
        self.target_std = 1.0
        self.fill_values: list[float] = []
        self.missing_columns: list[str] = []
        self._predict_fn: Callable[[dict[str, Any]], Any] | None = None

    # ----------------------------------------------------------------- inputs
    def to_inputs(self, features: pd.DataFrame) -> dict[str, np.ndarray]:
        """Transformed features -> the network's named input arrays."""
        missing = [c for c in self.spec.features if c not in features.columns]
        if missing:
            raise ValueError(
                f"features are missing column(s) {missing}; expected {self.spec.features}"
            )
        inputs: dict[str, np.ndarray] = {}
        if self.spec.numeric:
            numeric = features[self.spec.numeric].to_numpy(dtype="float32", na_value=np.nan)
            inputs["numeric"] = np.ascontiguousarray(numeric)
        for i, (name, size) in enumerate(self.spec.categorical.items()):
            codes = _codes(features[name], name)
            codes = np.where((codes < 0) | (codes >= size), 0, codes + 1).astype("int32")
            inputs[f"cat_{i}"] = codes.reshape(-1, 1)
        return inputs

    # ------------------------------------------------------------------ build
    def build_network(self, features: pd.DataFrame, target: np.ndarray) -> keras.Model:
        """Create the network, learning imputation, normalisation and target scaling from
        the training split. Call after seeding: weight initialisers draw from the seed."""
        spec, params = self.spec, self.params
        inputs = self.to_inputs(features)
        if spec.task == "regression":
            y = np.asarray(target, dtype="float64")
            self.target_mean = float(np.mean(y)) if len(y) else 0.0
            std = float(np.std(y)) if len(y) else 1.0
            self.target_std = std if np.isfinite(std) and std > 1e-12 else 1.0

        graph_inputs: dict[str, keras.KerasTensor] = {}
        parts: list[keras.KerasTensor] = []
        if spec.numeric:
            numeric = inputs["numeric"]
            finite = np.isfinite(numeric)
            with np.errstate(invalid="ignore"):
                sums = np.where(finite, numeric, 0.0).sum(axis=0, dtype="float64")
                counts = finite.sum(axis=0)
                means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
            self.fill_values = [float(m) for m in means]
            missing_idx = [j for j in range(numeric.shape[1]) if counts[j] < numeric.shape[0]]
            self.missing_columns = [spec.numeric[j] for j in missing_idx]
            imputed = np.where(finite, numeric, means.astype("float32")).astype("float32")

            x_in = keras.Input(shape=(len(spec.numeric),), dtype="float32", name="numeric")
            graph_inputs["numeric"] = x_in
            norm = keras.layers.Normalization(axis=-1, name="normalize")
            norm.adapt(imputed)
            parts.append(norm(Impute(self.fill_values, name="impute")(x_in)))
            if missing_idx:
                parts.append(MissingIndicator(missing_idx, name="missing_indicator")(x_in))
        for i, (name, size) in enumerate(spec.categorical.items()):
            c_in = keras.Input(shape=(1,), dtype="int32", name=f"cat_{i}")
            graph_inputs[f"cat_{i}"] = c_in
            if params.categorical_encoding == "embedding":
                emb = keras.layers.Embedding(size + 1, params.embedding_dim, name=f"embed_{i}")(
                    c_in
                )
                parts.append(keras.layers.Flatten(name=f"flatten_{i}")(emb))
            else:
                parts.append(
                    keras.layers.CategoryEncoding(
                        num_tokens=size + 1, output_mode="one_hot", name=f"onehot_{i}"
                    )(c_in)
                )
            logger.debug(
                "categorical %r (%d values) -> %s", name, size, params.categorical_encoding
            )
        if not parts:
            raise ValueError("the dog model needs at least one feature")
        x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
        regularizer = keras.regularizers.L2(params.l2) if params.l2 > 0 else None
        for k, units in enumerate(params.hidden_units):
            x = keras.layers.Dense(
                units,
                activation=params.activation,
                kernel_regularizer=regularizer,
                name=f"dense_{k}",
            )(x)
            if params.dropout > 0:
                x = keras.layers.Dropout(params.dropout, name=f"dropout_{k}")(x)
        if spec.task == "regression":
            out = keras.layers.Dense(1, name="output")(x)
        else:
            n_out = max(spec.n_classes, 2)
            out = keras.layers.Dense(n_out, activation="softmax", name="output")(x)
        self.network = keras.Model(inputs=graph_inputs, outputs=out, name="dog")
        self._predict_fn = None
        return self.network

    # ---------------------------------------------------------------- predict
    def _fn(self) -> Callable[[dict[str, Any]], Any]:
        if self.network is None:
            raise RuntimeError("the dog model is not built or loaded")
        if self._predict_fn is None:
            network = self.network
            signature = {
                t.name: tf.TensorSpec(shape=(None, *t.shape[1:]), dtype=t.dtype, name=t.name)
                for t in network.inputs
            }
            # Everything up to the output layer, then the output layer without its
            # activation (what keras.layers.Dense.call computes before it): the logits.
            head = network.get_layer("output")
            body = keras.Model(inputs=network.input, outputs=head.input, name="dog_body")

            @tf.function(input_signature=[signature], reduce_retracing=True)
            def forward(inputs: dict[str, Any]) -> Any:
                hidden = body(inputs, training=False)
                return keras.ops.add(keras.ops.matmul(hidden, head.kernel), head.bias)

            self._predict_fn = forward
        return self._predict_fn

    def predict_network(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The output layer's pre-activation, in chunks: the logits of a classifier (before
        the softmax), the standardised value of a regressor."""
        fn = self._fn()
        n = len(next(iter(inputs.values())))
        if n <= PREDICT_CHUNK:
            return np.asarray(fn(inputs))
        chunks = [
            np.asarray(fn({k: v[start : start + PREDICT_CHUNK] for k, v in inputs.items()}))
            for start in range(0, n, PREDICT_CHUNK)
        ]
        return np.concatenate(chunks, axis=0)

    def from_network_output(self, raw: np.ndarray) -> np.ndarray:
        """:meth:`predict_network`'s output -> the value (regression) or the probabilities,
        the softmax of the logits taken in float64."""
        if self.spec.task == "regression":
            return raw.reshape(-1).astype("float64") * self.target_std + self.target_mean
        return np.exp(_log_softmax(raw))

    def predict_raw(self, features: pd.DataFrame) -> np.ndarray:
        if len(features) == 0:
            width = 0 if self.spec.task == "regression" else max(self.spec.n_classes, 2)
            return np.zeros((0,) if width == 0 else (0, width), dtype="float64")
        return self.from_network_output(self.predict_network(self.to_inputs(features)))

    # ------------------------------------------------------------- explanations
    def contributions(
        self, features: pd.DataFrame, groups: Sequence[Sequence[str]]
    ) -> Contributions:
        """Shapley sampling values (Strumbelj & Kononenko, 2014) of each group of features.

        For a permutation of the groups, the groups are switched one by one from a baseline
        row (the training means of the numbers, "unknown" for categories) to the row's own
        values; each group gets the change of the output its switch caused. Along one
        permutation these changes add up to output(row) - output(baseline) exactly, so their
        average over ``explain_permutations`` permutations (half of them the reverse of the
        others: antithetic sampling) does too. Why this and not integrated gradients: it
        switches a whole raw column at once (a date's parts, a number with its missing
        indicator, a category through its embedding, where a path of gradients has no
        meaning), and it needs only forward passes, batched (every permutation's states of
        a block of rows go through the network as one batch).

        The output explained: log-odds of the positive class (binary: the difference of the
        two logits, uncapped), the log-probability of the predicted class (multiclass: the
        log-softmax of the logits), the value (regression); all in float64 from the same
        logits the served probabilities come from (:meth:`from_network_output`).
        """
        x = self.to_inputs(features)
        n = len(features)
        place = self._input_places()
        slots = [[place[f] for f in group] for group in groups]
        full = self._explained(self.predict_network(x), None)
        classes = full[1] if self.spec.task == "multiclass" else None
        base_raw = self.predict_network(self._baseline(1))
        if classes is not None:
            base = _log_softmax(base_raw)[0, classes]
        else:
            base = np.repeat(self._explained(base_raw, None)[0], n)
        values = np.zeros((n, len(groups)), dtype="float64")
        perms = _permutations(len(groups), self.params.explain_permutations, seed=0)
        block = max(1, 65536 // ((len(groups) + 1) * len(perms)))
        for start in range(0, n, block):
            rows = slice(start, min(n, start + block))
            part = {k: v[rows] for k, v in x.items()}
            picked = classes[rows] if classes is not None else None
            values[rows] = self._shapley_block(part, slots, perms, picked)
        output = full[0]
        return Contributions(values, base, output)

    def _input_places(self) -> dict[str, tuple[str, int]]:
        """Feature name -> (network input, column of it)."""
        place = {name: ("numeric", j) for j, name in enumerate(self.spec.numeric)}
        place.update({name: (f"cat_{i}", 0) for i, name in enumerate(self.spec.categorical)})
        return place

    def _baseline(self, rows: int) -> dict[str, np.ndarray]:
        """The reference row: training means for numbers (no missing indicator set),
        "unknown" (0) for every category."""
        inputs: dict[str, np.ndarray] = {}
        if self.spec.numeric:
            fill = np.asarray(self.fill_values, dtype="float32").reshape(1, -1)
            inputs["numeric"] = np.repeat(fill, rows, axis=0)
        for i in range(len(self.spec.categorical)):
            inputs[f"cat_{i}"] = np.zeros((rows, 1), dtype="int32")
        return inputs

    def _explained(
        self, raw: np.ndarray, classes: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(the explained output per row, the predicted class per row for multiclass)."""
        if self.spec.task == "regression":
            return raw.reshape(-1).astype("float64") * self.target_std + self.target_mean, None
        if self.spec.task == "binary":
            logits = raw.astype("float64")
            return logits[:, -1] - logits[:, 0], None
        logp = _log_softmax(raw)
        picked = logp.argmax(axis=1) if classes is None else classes
        return logp[np.arange(len(logp)), picked], picked

    def _shapley_block(
        self,
        x: dict[str, np.ndarray],
        slots: list[list[tuple[str, int]]],
        perms: list[np.ndarray],
        classes: np.ndarray | None,
    ) -> np.ndarray:
        """The averaged marginal contributions of each group for a block of rows: for every
        permutation, the states "first k groups switched to the row" (k = 0..C) of every row
        go through the network in one batch."""
        n, width = len(next(iter(x.values()))), len(slots)
        base = self._baseline(n)
        states: dict[str, list[np.ndarray]] = {key: [] for key in x}
        for perm in perms:
            switched = {key: np.zeros((width + 1,) + x[key].shape[1:], bool) for key in x}
            for k, group in enumerate(perm, start=1):
                for key in x:
                    switched[key][k] = switched[key][k - 1]
                for key, column in slots[group]:
                    switched[key][k:, column] = True
            for key in x:
                mask = switched[key][:, None, ...]
                states[key].append(np.where(mask, x[key][None], base[key][None]))
        batch = {k: np.concatenate(v).reshape(-1, *x[k].shape[1:]) for k, v in states.items()}
        repeated = None if classes is None else np.tile(classes, (width + 1) * len(perms))
        out = self._explained(self.predict_network(batch), repeated)[0]
        out = out.reshape(len(perms), width + 1, n)
        values = np.zeros((n, width))
        for p, perm in enumerate(perms):
            steps = np.diff(out[p], axis=0)  # (width, n): what switching each group added
            values[:, perm] += steps.T
        return values / len(perms)

    # ------------------------------------------------------------- save/load
    def save(self, path: Path) -> None:
        if self.network is None:
            raise RuntimeError("cannot save a dog model that was never built")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.network.save(path / MODEL_FILE)
        state = {
            "format_version": FORMAT_VERSION,
            "family": "dog",
            "params": self.params.model_dump(mode="json"),
            "spec": self.spec.to_dict(),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "fill_values": self.fill_values,
            "missing_columns": self.missing_columns,
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
        }
        (path / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: Path) -> DogModel:
        path = Path(path)
        state = json.loads((path / STATE_FILE).read_text())
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"unsupported dog model format {state.get('format_version')!r} in {path}"
            )
        model = cls(DogParams(**state["params"]), ModelSpec.from_dict(state["spec"]))
        model.target_mean = float(state["target_mean"])
        model.target_std = float(state["target_std"])
        model.fill_values = [float(v) for v in state["fill_values"]]
        model.missing_columns = list(state["missing_columns"])
        model.network = keras.models.load_model(path / MODEL_FILE, compile=False)
        return model


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64, stable for any logits (no probability is clipped)."""
    z = logits.astype("float64")
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _codes(column: pd.Series, name: str) -> np.ndarray:
    """Integer codes of a categorical column (-1 for unknown/missing)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(dtype="int64")
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype="int64")
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype="float64")
        return np.where(np.isfinite(values), values, -1).astype("int64")
    raise ValueError(
        f"categorical feature {name!r} must be a pandas Categorical (or integer codes); "
        f"got dtype {column.dtype}"
    )


def _permutations(width: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` orders of ``width`` groups: random ones and their reverses (antithetic
    pairs halve the variance for the same number of passes); every order when there are few."""
    import itertools
    import math

    if math.factorial(width) <= count:
        return [np.array(p) for p in itertools.permutations(range(width))]
    rng = np.random.default_rng(seed)
    half = [rng.permutation(width) for _ in range(max(1, count // 2))]
    return [*half, *(p[::-1] for p in half)]
