"""Load, validate, split and preprocess the user's table: one code path for every consumer.

Training, batch prediction and the served model all call the same :class:`DataProcessor`, and
its fitted state is saved next to the model as ``processor.json`` (plain JSON, never a pickle),
so preprocessing cannot drift between training and serving.

Decisions worth knowing (also in README.md, "Your data"):

* **Task inference** (``data.task=auto``): a boolean or non-numeric target is a classifier. A
  numeric target is a classifier when every value is a whole number and it has 2 distinct
  values, or at most 20 distinct values that are also at most 5% of the rows (so 0..9 digit
  labels over 1,000 rows are classes, but 200 distinct prices are not). Everything else is
  regression. Two classes make the task ``binary``, more make it ``multiclass``.
* **Classes** keep the user's values and type: strings stay strings, whole numbers become
  ``int``, booleans stay ``bool`` (``[False, True]``), other floats stay ``float``. They are
  sorted, and the code of a class is its position in ``classes``.
* **Categorical values** are compared as strings: ``1``, ``1.0`` and ``"1"`` are the same
  category ``"1"``; ``True`` is ``"True"``. Vocabularies are the sorted strings seen in
  training; anything else maps to NaN (code -1).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.config import DataConfig
from kennel.errors import DataError

if TYPE_CHECKING:
    from kennel.families.base import ModelSpec

logger = logging.getLogger(__name__)

Task = Literal["binary", "multiclass", "regression"]
InputDtype = Literal["double", "long", "string", "boolean"]

STATE_FILE = "processor.json"
STATE_VERSION = 1
BUILTIN_PREFIX = "builtin:"
#: Target column name of every builtin data set.
BUILTIN_TARGET = "target"
#: Limits of the ``task=auto`` rule for whole-number targets (see the module docstring).
MAX_AUTO_CLASSES = 20
MAX_AUTO_CLASS_RATIO = 0.05
#: Raw training rows kept in the state for ``input_example``.
EXAMPLE_ROWS = 5

_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
#: Text that means "missing" in a numeric column of a request.
_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}


class Splits(NamedTuple):
    """The three row sets of one data set; each keeps the original index and the target."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class ColumnSpec:
    """One raw input column as the served model accepts it (the MLflow signature's source)."""

    name: str
    dtype: InputDtype
    required: bool = True


# --------------------------------------------------------------------------- builtins
def _sklearn_frame(loader_name: str) -> pd.DataFrame:
    """A bundled scikit-learn data set as one frame whose target uses the human labels."""
    from sklearn import datasets

    bunch = getattr(datasets, loader_name)(as_frame=True)
    frame = bunch.frame.copy()
    target = bunch.target
    names = getattr(bunch, "target_names", None)
    if names is not None and loader_name != "load_diabetes":
        labels = np.asarray(names, dtype=object)[np.asarray(target, dtype=np.int64)]
        frame[BUILTIN_TARGET] = pd.Series(labels, index=frame.index, dtype="str")
    else:
        frame[BUILTIN_TARGET] = np.asarray(target, dtype=np.float64)
    return frame


#: Builtin data sets: name -> scikit-learn loader (bundled with the package, no network).
BUILTINS: dict[str, str] = {
    "breast_cancer": "load_breast_cancer",
    "wine": "load_wine",
    "iris": "load_iris",
    "diabetes": "load_diabetes",
}


# --------------------------------------------------------------------------- helpers
def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _label(value: Any) -> str | None:
    """The string form a categorical value or class label is compared by (None if missing).

    Whole floats drop their ``.0`` so that a category learnt from ``1`` matches ``1.0`` from a
    JSON request and ``"1"`` from a CSV read as text.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        if number.is_integer():
            return str(int(number))
        return repr(number)
    return str(value)


def _factorized_labels(series: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """Codes into the distinct values and their :func:`_label` strings.

    Only the distinct values go through Python, so this stays vectorised for large frames.
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, [_label(u) for u in uniques]


def _json_value(value: Any) -> Any:
    """A JSON-able Python scalar (NaN and missing values become None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _is_categorical_dtype(series: pd.Series) -> bool:
    """Strings (pandas 3 ``str`` included), objects, ``category`` and booleans."""
    return ptypes.is_bool_dtype(series.dtype) or not ptypes.is_numeric_dtype(series.dtype)


def _unsupported_dtype(series: pd.Series) -> bool:
    dtype = series.dtype
    return bool(
        ptypes.is_datetime64_any_dtype(dtype)
        or ptypes.is_timedelta64_dtype(dtype)
        or ptypes.is_complex_dtype(dtype)
        or isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype)
    )


def _to_float(series: pd.Series, column: str, where: str) -> np.ndarray:
    """Float64 values of a numeric column, coercing losslessly (``"3"`` -> 3.0).

    Empty strings count as missing; any other text that is not a number is an error naming the
    column and the value, because silently turning it into NaN would hide a broken input.
    """
    dtype = series.dtype
    if ptypes.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    # Only the distinct values are parsed, so a large text column stays cheap.
    codes, uniques = pd.factorize(series.astype(object), use_na_sentinel=True)
    cleaned = [u.strip() if isinstance(u, str) else u for u in uniques]
    cleaned = [None if isinstance(u, str) and u.lower() in _MISSING_TEXT else u for u in cleaned]
    parsed = pd.to_numeric(pd.Series(cleaned, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    bad = [u for u, v in zip(cleaned, parsed, strict=True) if u is not None and math.isnan(v)]
    bad = [u for u in bad if not (isinstance(u, float) and math.isnan(u))]
    if bad:
        raise DataError(
            f"{where}: column '{column}' is numeric but has the non-numeric value {bad[0]!r}"
        )
    numbers = np.where(codes >= 0, parsed[codes] if len(parsed) else np.nan, np.nan)
    return numbers.astype(np.float64)


def _source_parts(source: str) -> tuple[str, str]:
    """(kind, location): kind is ``builtin``, ``path`` (local) or ``url`` (fsspec)."""
    if source.startswith(BUILTIN_PREFIX):
        return "builtin", source[len(BUILTIN_PREFIX) :]
    scheme = urlparse(source).scheme
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter
        return "path", source
    return "url", source


def _strip_suffixes(name: str) -> tuple[str, str]:
    """(stem, format suffix) with compression suffixes removed: ``a.csv.gz`` -> (a, .csv)."""
    path = PurePosixPath(name)
    while path.suffix.lower() in _COMPRESSION_SUFFIXES:
        path = path.with_suffix("")
    return path.stem, path.suffix.lower()


# --------------------------------------------------------------------------- processor
class DataProcessor:
    """Reads, checks and splits the table, and owns the preprocessing every consumer shares.

    Construct it from ``config.data``; :meth:`load`, :meth:`split` and :meth:`fit` prepare it
    for training, and :meth:`save` / :meth:`load_state` carry the fitted state to batch
    prediction and the served model.
    """

    def __init__(self, config: DataConfig | None = None) -> None:
        self.config = config if config is not None else DataConfig()
        self._kind, self._location = _source_parts(self.config.source)
        if self._kind == "builtin":
            self.source_name = self._location
            self.source_uri = self.config.source
            self._display = self.config.source
            self._format_suffix = ""
        else:
            if self._kind == "path":
                path = Path(self._location).expanduser().resolve()
                self.source_uri = str(path)
                name = path.name
            else:
                self.source_uri = self._location
                name = PurePosixPath(urlparse(self._location).path).name
            stem, self._format_suffix = _strip_suffixes(name)
            self.source_name = stem
            self._display = name or self._location
        self.digest: str | None = None
        self.n_rows: int | None = None
        # Learnt by load() on the whole table (so every split agrees on the task and classes).
        self._loaded_task: Task | None = None
        self._loaded_classes: list[Any] | None = None
        self._removed: list[str] = []
        # Fitted state.
        self.target: str = self._configured_target()
        self.task: Task | None = None
        self.classes: list[Any] = []
        self.numeric: list[str] = []
        self.categorical: dict[str, list[str]] = {}
        self.raw_columns: list[str] = []
        self.input_dtypes: dict[str, InputDtype] = {}
        self.nullable: list[str] = []
        self._examples: list[dict[str, Any]] = []
        self._fitted = False
        self._cat_dtypes: dict[str, pd.CategoricalDtype] = {}

    # ------------------------------------------------------------------ naming
    def _configured_target(self) -> str:
        if self.config.target:
            return self.config.target
        if self._kind == "builtin":
            return BUILTIN_TARGET
        return ""

    def default_model_name(self) -> str:
        """Registered model name derived from the data: ``breast_cancer`` -> ``breast-cancer``."""
        name = re.sub(r"[^a-z0-9]+", "-", self.source_name.lower()).strip("-")
        return name or "model"

    @property
    def fitted(self) -> bool:
        return self._fitted

    # ------------------------------------------------------------------ load
    def load(self) -> pd.DataFrame:
        """Read and validate the table: features plus the target, configured drops removed.

        Also records ``n_rows``, ``digest`` and the task and classes of the whole table, so
        that a class absent from the training split is still a known class.
        """
        if self._kind == "builtin":
            frame = self._load_builtin()
        else:
            if not self.target:
                raise DataError(
                    f"{self._display}: data.target is not set; name the target column, "
                    f"e.g. data.target=<column>"
                )
            frame = self._read_file()
        frame = self._validate(frame)
        self.n_rows = len(frame)
        self.digest = self._compute_digest(frame)
        task, classes = self._resolve_task(frame[self.target])
        self._loaded_task, self._loaded_classes = task, classes
        logger.info(
            "loaded %s: %d rows, %d columns, target '%s', digest %s",
            self.source_uri,
            len(frame),
            frame.shape[1],
            self.target,
            self.digest,
        )
        return frame

    def _load_builtin(self) -> pd.DataFrame:
        name = self._location
        if name not in BUILTINS:
            raise DataError(
                f"unknown builtin data set '{name}'{_did_you_mean(name, BUILTINS)}; expected "
                f"one of: {', '.join(sorted(BUILTINS))}"
            )
        return _sklearn_frame(BUILTINS[name])

    def _storage_options(self) -> dict[str, Any]:
        """Secrets unwrapped for fsspec; ``true``/``false`` become booleans (e.g. ``anon``)."""
        options: dict[str, Any] = {}
        for key, secret in self.config.storage_options.items():
            value: Any = secret.get_secret_value()
            if isinstance(value, str) and value.lower() in {"true", "false"}:
                value = value.lower() == "true"
            options[key] = value
        return options

    def _format(self) -> Literal["csv", "parquet"]:
        fmt = self.config.format
        if fmt != "auto":
            return fmt
        if self._format_suffix in _CSV_SUFFIXES:
            return "csv"
        if self._format_suffix in _PARQUET_SUFFIXES:
            return "parquet"
        raise DataError(
            f"{self._display}: cannot tell the file format from its extension "
            f"'{self._format_suffix or '(none)'}'; set data.format=csv or data.format=parquet"
        )

    def _read_file(self) -> pd.DataFrame:
        import fsspec
        from fsspec.utils import infer_compression

        fmt = self._format()
        if self._kind == "path":
            path = Path(self.source_uri)
            if not path.exists():
                raise DataError(f"data file not found: {path}")
            if path.is_dir():
                raise DataError(f"data source is a directory, not a file: {path}")
            fs = fsspec.filesystem("file")
            fs_path = str(path)
        else:
            try:
                fs, fs_path = fsspec.core.url_to_fs(self._location, **self._storage_options())
            except ImportError as exc:
                protocol = urlparse(self._location).scheme
                raise DataError(
                    f"{self._location}: reading '{protocol}://' URLs needs a package that is not "
                    f"installed ({str(exc).splitlines()[0]})"
                ) from None
            except ValueError as exc:
                raise DataError(f"{self._location}: {str(exc).splitlines()[0]}") from None
            try:
                exists = fs.exists(fs_path)
            except Exception as exc:  # network or credential failures of any filesystem
                raise DataError(
                    f"{self._location}: cannot reach the file ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''})"
                ) from None
            if not exists:
                raise DataError(f"data file not found: {self._location}")
        compression = infer_compression(fs_path) if fmt == "csv" else None
        sep = "\t" if self._format_suffix == ".tsv" else ","
        try:
            if fmt == "csv":
                with fs.open(fs_path, "rb", compression=compression) as handle:
                    header = pd.read_csv(
                        handle, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False
                    )
                columns = [str(c) for c in header.iloc[0].tolist()] if len(header) else []
                self._check_duplicates(columns)
                with fs.open(fs_path, "rb", compression=compression) as handle:
                    frame = pd.read_csv(handle, sep=sep)
            else:
                import pyarrow.parquet as pq

                with fs.open(fs_path, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    self._check_duplicates(list(parquet.schema_arrow.names))
                    frame = parquet.read().to_pandas()
        except DataError:
            raise
        except pd.errors.EmptyDataError:
            raise DataError(f"{self._display}: the file is empty") from None
        except Exception as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{self._display}: cannot read it as {fmt.upper()}: {detail}") from None
        frame.columns = [str(c) for c in frame.columns]
        return frame

    def _check_duplicates(self, columns: Sequence[str]) -> None:
        seen: set[str] = set()
        for column in columns:
            if column in seen:
                raise DataError(
                    f"{self._display}: duplicate column name '{column}'; column names must be "
                    f"unique"
                )
            seen.add(column)

    def _check_listed(self, columns: Sequence[str]) -> None:
        """Every column named in the config exists; the lists do not contradict each other."""
        cfg = self.config
        if not self.target:
            raise DataError(f"{self._display}: data.target is not set; name the target column")
        present = set(columns)
        listed = [
            ("data.target", [self.target]),
            ("data.categorical", cfg.categorical),
            ("data.numeric", cfg.numeric),
            ("data.drop", cfg.drop),
        ]
        for key, names in listed:
            for name in names:
                if name not in present and name not in self._removed:
                    raise DataError(
                        f"{self._display}: column '{name}' (from {key}) does not exist"
                        f"{_did_you_mean(name, columns)}"
                    )
        both = set(cfg.categorical) & set(cfg.numeric)
        if both:
            raise DataError(
                f"{self._display}: column '{sorted(both)[0]}' is in both data.categorical and "
                f"data.numeric"
            )
        for key, names in listed[1:]:
            if self.target in names:
                raise DataError(
                    f"{self._display}: the target column '{self.target}' cannot be in {key}"
                )
        dropped_and_typed = set(cfg.drop) & (set(cfg.categorical) | set(cfg.numeric))
        if dropped_and_typed:
            raise DataError(
                f"{self._display}: column '{sorted(dropped_and_typed)[0]}' is both dropped "
                f"(data.drop) and typed (data.categorical/data.numeric)"
            )

    def _validate(self, frame: pd.DataFrame) -> pd.DataFrame:
        if frame.columns.duplicated().any():
            self._check_duplicates(list(frame.columns))
        if frame.shape[1] == 0 or len(frame) == 0:
            raise DataError(f"{self._display}: the table is empty (no rows or no columns)")
        self._check_listed(list(frame.columns))
        target = frame[self.target]
        missing = int(target.isna().sum())
        if missing:
            raise DataError(
                f"{self._display}: target column '{self.target}' has {missing} missing "
                f"value(s); remove those rows or choose another target"
            )
        frame = frame.drop(columns=list(self.config.drop))
        empty = [c for c in frame.columns if c != self.target and frame[c].isna().all()]
        if empty:
            logger.warning(
                "%s: dropping %d entirely empty column(s): %s",
                self._display,
                len(empty),
                ", ".join(empty),
            )
            frame = frame.drop(columns=empty)
        self._removed = [*self.config.drop, *empty]
        for column in frame.columns:
            if column != self.target and _unsupported_dtype(frame[column]):
                raise DataError(
                    f"{self._display}: column '{column}' has unsupported type "
                    f"{frame[column].dtype}; convert it to numbers or text, or add it to data.drop"
                )
            if column.startswith("Unnamed: "):
                logger.warning(
                    "%s: column '%s' has no name (a saved index?); add it to data.drop "
                    "if it is not a feature",
                    self._display,
                    column,
                )
        if frame.shape[1] < 2:
            raise DataError(f"{self._display}: no feature columns besides '{self.target}'")
        return frame

    @staticmethod
    def _compute_digest(frame: pd.DataFrame) -> str:
        """Stable content hash: column names, dtypes and every value, index included."""
        digest = hashlib.sha256()
        digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
        hashed = pd.util.hash_pandas_object(frame, index=True)
        digest.update(np.ascontiguousarray(hashed.to_numpy(dtype=np.uint64)).tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ task and classes
    @staticmethod
    def _describe_target(values: pd.Series) -> tuple[bool, bool]:
        """(numeric, whole): whether the non-missing target values are numbers, and all whole."""
        numeric = ptypes.is_numeric_dtype(values.dtype) and not ptypes.is_bool_dtype(values.dtype)
        if not numeric and ptypes.is_object_dtype(values.dtype):
            numeric = ptypes.infer_dtype(values, skipna=True) in {
                "integer",
                "floating",
                "mixed-integer-float",
                "decimal",
            }
        whole = False
        if numeric:
            as_float = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
            whole = bool(np.all(np.isfinite(as_float) & (np.mod(as_float, 1) == 0)))
        return numeric, whole

    def _resolve_task(self, target: pd.Series) -> tuple[Task, list[Any]]:
        """The task (configured or inferred, and logged) and the sorted class values."""
        values = target.dropna()
        n_unique = int(values.nunique())
        configured = self.config.task
        numeric, whole = self._describe_target(values)
        if configured == "auto":
            if not numeric:
                reason = f"non-numeric target ({values.dtype})"
                classify = True
            elif whole and (
                n_unique <= 2
                or (n_unique <= MAX_AUTO_CLASSES and n_unique <= MAX_AUTO_CLASS_RATIO * len(values))
            ):
                reason = f"whole-number target with {n_unique} distinct values"
                classify = True
            else:
                reason = f"numeric target with {n_unique} distinct values"
                classify = False
            task: Task = (
                "regression" if not classify else ("binary" if n_unique == 2 else "multiclass")
            )
            if classify and n_unique < 2:
                raise DataError(
                    f"{self._display}: target column '{self.target}' has a single value; "
                    f"nothing to learn"
                )
            logger.info(
                "task %s inferred from target '%s': %s (set data.task to override)",
                task,
                self.target,
                reason,
            )
        else:
            task = configured
            if task == "regression" and not numeric:
                raise DataError(
                    f"{self._display}: data.task=regression but target column '{self.target}' "
                    f"is not numeric ({values.dtype})"
                )
            if task == "binary" and n_unique != 2:
                raise DataError(
                    f"{self._display}: data.task=binary but target column '{self.target}' has "
                    f"{n_unique} distinct values"
                )
            if task == "multiclass" and n_unique < 3:
                raise DataError(
                    f"{self._display}: data.task=multiclass but target column '{self.target}' "
                    f"has {n_unique} distinct value(s); use binary for two classes"
                )
            logger.info("task %s (configured) for target '%s'", task, self.target)
        if task == "regression":
            return task, []
        classes = self._class_values(values, numeric=numeric, whole=whole)
        if len(classes) > 100:
            logger.warning(
                "target '%s' has %d classes; is it really a label?", self.target, len(classes)
            )
        return task, classes

    @staticmethod
    def _class_values(values: pd.Series, *, numeric: bool, whole: bool) -> list[Any]:
        """Sorted JSON-able class values in the user's own type (see module docstring)."""
        if ptypes.is_bool_dtype(values.dtype) or ptypes.infer_dtype(values, skipna=True) == (
            "boolean"
        ):
            return sorted({bool(v) for v in values.unique()})
        if numeric:
            numbers = pd.to_numeric(values, errors="coerce").unique()
            if whole:
                return sorted({int(v) for v in numbers})
            return sorted({float(v) for v in numbers})
        return sorted({str(_label(v)) for v in values.unique()})

    @staticmethod
    def _merge_classes(first: list[Any], second: list[Any]) -> list[Any]:
        merged = {_label(c): c for c in [*first, *second]}
        try:
            return sorted(merged.values())
        except TypeError:
            return sorted(merged.values(), key=str)

    # ------------------------------------------------------------------ split
    def split(self, df: pd.DataFrame) -> Splits:
        """Seeded train/valid/test rows (stratified by class when configured).

        Two calls of scikit-learn's ``train_test_split`` (test first, then valid from the rest)
        with ``data.split.seed``: the same table and seed give the same rows on every machine.
        """
        from sklearn.model_selection import train_test_split

        cfg = self.config.split
        if self.target not in df.columns:
            raise DataError(f"{self._display}: target column '{self.target}' is not in the frame")
        task = self._loaded_task
        if task is None:
            task, self._loaded_classes = self._resolve_task(df[self.target])
            self._loaded_task = task
        stratify = cfg.stratify and task != "regression"
        labels = None
        if stratify:
            codes, names = _factorized_labels(df[self.target])
            counts = np.bincount(codes, minlength=len(names))
            rarest = int(np.argmin(counts))
            if counts[rarest] < 3:
                raise DataError(
                    f"{self._display}: class '{names[rarest]}' of target '{self.target}' has only "
                    f"{counts[rarest]} row(s); a stratified train/valid/test split needs at least "
                    f"3 per class (remove the class or set data.split.stratify=false)"
                )
            labels = codes
        valid_share = cfg.valid / (cfg.train + cfg.valid)
        # The splits are drawn on row positions and the frame is gathered once per split at
        # the end: the same rows in the same order as splitting the frame itself (the
        # permutation depends only on the row count and the labels), without copying the
        # train+valid rows twice (about a second on a 1M-row table).
        positions = np.arange(len(df))
        try:
            rest, test_pos = train_test_split(
                positions, test_size=cfg.test, random_state=cfg.seed, shuffle=True, stratify=labels
            )
            train_pos, valid_pos = train_test_split(
                rest,
                test_size=valid_share,
                random_state=cfg.seed,
                shuffle=True,
                stratify=labels[rest] if labels is not None else None,
            )
        except ValueError as exc:
            raise DataError(
                f"{self._display}: cannot split {len(df)} rows into train/valid/test "
                f"({str(exc).splitlines()[0]})"
            ) from None
        train, valid, test = df.take(train_pos), df.take(valid_pos), df.take(test_pos)
        logger.info(
            "split %s: train %d, valid %d, test %d rows (seed %d%s)",
            self._display,
            len(train),
            len(valid),
            len(test),
            cfg.seed,
            ", stratified" if stratify else "",
        )
        return Splits(train, valid, test)

    # ------------------------------------------------------------------ fit
    def fit(self, train: pd.DataFrame) -> DataProcessor:
        """Learn the feature columns, their types and vocabularies, and the target classes."""
        if train.columns.duplicated().any():
            self._check_duplicates([str(c) for c in train.columns])
        self._check_listed([str(c) for c in train.columns])
        if len(train) == 0:
            raise DataError(f"{self._display}: cannot fit on an empty frame")
        cfg = self.config
        removed = set(self._removed) | set(cfg.drop)
        features = [str(c) for c in train.columns if c != self.target and c not in removed]
        if not features:
            raise DataError(f"{self._display}: no feature columns besides '{self.target}'")
        if self._loaded_task is None:
            task, classes = self._resolve_task(train[self.target])
        else:  # the whole table decided the task; add any class only the frame has
            task, classes = self._loaded_task, list(self._loaded_classes or [])
            if task != "regression":
                values = train[self.target].dropna()
                numeric, whole = self._describe_target(values)
                own = self._class_values(values, numeric=numeric, whole=whole)
                classes = self._merge_classes(classes, own)
        self.task, self.classes = task, classes if task != "regression" else []

        numeric: list[str] = []
        categorical: dict[str, list[str]] = {}
        input_dtypes: dict[str, InputDtype] = {}
        for column in features:
            series = train[column]
            if _unsupported_dtype(series):
                raise DataError(
                    f"{self._display}: column '{column}' has unsupported type {series.dtype}; "
                    f"convert it to numbers or text, or add it to data.drop"
                )
            is_cat = column in cfg.categorical or (
                column not in cfg.numeric and _is_categorical_dtype(series)
            )
            bool_like = ptypes.is_bool_dtype(series.dtype) or (
                ptypes.is_object_dtype(series.dtype)
                and ptypes.infer_dtype(series, skipna=True) == "boolean"
            )
            if is_cat:
                _, labels = _factorized_labels(series)
                categorical[column] = sorted({lab for lab in labels if lab is not None})
                if bool_like:
                    input_dtypes[column] = "boolean"
                elif ptypes.is_integer_dtype(series.dtype) and not ptypes.is_bool_dtype(
                    series.dtype
                ):
                    input_dtypes[column] = "long"
                elif ptypes.is_float_dtype(series.dtype):
                    input_dtypes[column] = "double"
                else:
                    input_dtypes[column] = "string"
            else:
                _to_float(series, column, self._display)  # fails early on text in a number column
                numeric.append(column)
                input_dtypes[column] = "double"
        self.numeric = numeric
        self.categorical = categorical
        self.raw_columns = features
        self.input_dtypes = input_dtypes
        self.nullable = [c for c in features if bool(train[c].isna().any())]
        head = train[features].head(EXAMPLE_ROWS)
        self._examples = [
            {c: _json_value(v) for c, v in row.items()} for row in head.to_dict("records")
        ]
        self._finish_fit()
        logger.info(
            "fitted data processor: %d numeric, %d categorical features, task %s%s",
            len(numeric),
            len(categorical),
            self.task,
            f", {len(self.classes)} classes" if self.classes else "",
        )
        return self

    def _finish_fit(self) -> None:
        self._cat_dtypes = {
            name: pd.CategoricalDtype(categories=pd.Index(vocab, dtype=object), ordered=False)
            for name, vocab in self.categorical.items()
        }
        self._class_index = {_label(c): i for i, c in enumerate(self.classes)}
        self._known = set(self.raw_columns) | {self.target} | set(self._removed)
        self._required = [c for c in self.raw_columns if c not in set(self.nullable)]
        self._fitted = True

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("DataProcessor is not fitted; call fit() or load_state() first")

    # ------------------------------------------------------------------ transform
    def transform(self, rows: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]]):
        """Raw rows (any column order, as read from a file or sent in a request) -> features.

        Returns numeric columns (float64, NaN for missing) then categorical columns (pandas
        ``Categorical`` over the training vocabulary; unseen or missing values are NaN), in the
        fitted order, with the index of ``rows``. Vectorised: it is on the serving hot path.
        """
        self._require_fitted()
        frame = self._as_frame(rows)
        columns = frame.columns
        if columns.duplicated().any():
            dup = columns[columns.duplicated()][0]
            raise DataError(f"input rows: duplicate column '{dup}'")
        present = set(columns)
        missing = [c for c in self._required if c not in present]
        if missing:
            raise DataError(
                f"input rows: missing required column '{missing[0]}'"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + _did_you_mean(missing[0], [c for c in columns if c not in self._known])
            )
        extra = [c for c in columns if c not in self._known]
        if extra:
            logger.warning(
                "ignoring %d input column(s) unknown to the model: %s",
                len(extra),
                ", ".join(map(str, extra[:10])) + (" ..." if len(extra) > 10 else ""),
            )
        n = len(frame)
        dtypes = dict(zip(columns, frame.dtypes, strict=True))
        block = np.full((n, len(self.numeric)), np.nan)
        ready = [
            i
            for i, c in enumerate(self.numeric)
            if c in dtypes
            and ptypes.is_numeric_dtype(dtypes[c])
            and not isinstance(dtypes[c], pd.CategoricalDtype)
        ]
        if ready:
            names = [self.numeric[i] for i in ready]
            block[:, ready] = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
        for i, column in enumerate(self.numeric):
            if column in dtypes and (not ready or i not in ready):
                block[:, i] = _to_float(frame[column], column, "input rows")
        result = pd.DataFrame(block, index=frame.index, columns=self.numeric, copy=False)
        if not self._cat_dtypes:
            return result
        categorical: dict[str, pd.Categorical] = {}
        for column, dtype in self._cat_dtypes.items():
            if column in dtypes:
                codes, labels = _factorized_labels(frame[column])
                lookup = dtype.categories.get_indexer(pd.Index(labels, dtype=object))
                mapped = np.where(codes >= 0, lookup[codes] if len(lookup) else -1, -1)
            else:
                mapped = np.full(n, -1)
            categorical[column] = pd.Categorical.from_codes(mapped.astype(np.int64), dtype=dtype)
        cats = pd.DataFrame(categorical, index=frame.index)
        return pd.concat([result, cats], axis=1, copy=False) if self.numeric else cats

    @staticmethod
    def _as_frame(rows: Any) -> pd.DataFrame:
        if isinstance(rows, pd.DataFrame):
            return rows
        if isinstance(rows, Mapping):
            rows = [rows] if not any(isinstance(v, list | tuple) for v in rows.values()) else rows
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ target
    def encode_target(self, series: pd.Series | Sequence[Any]) -> np.ndarray:
        """Class codes ``0..K-1`` (int64) for classifiers, float64 for regression."""
        self._require_fitted()
        series = pd.Series(series) if not isinstance(series, pd.Series) else series
        if self.task == "regression":
            values = _to_float(series, self.target, f"target '{self.target}'")
            if np.isnan(values).any():
                raise DataError(
                    f"{self._display}: target column '{self.target}' has missing values"
                )
            return values
        codes, labels = _factorized_labels(series)
        if (codes < 0).any():
            raise DataError(f"{self._display}: target column '{self.target}' has missing values")
        lookup = np.array([self._class_index.get(lab, -1) for lab in labels], dtype=np.int64)
        encoded = lookup[codes] if len(lookup) else codes.astype(np.int64)
        if (encoded < 0).any():
            bad = labels[int(np.flatnonzero(lookup < 0)[0])]
            raise DataError(
                f"{self._display}: target column '{self.target}' has the value '{bad}' that is not "
                f"one of the fitted classes {self.classes}"
            )
        return encoded

    def decode_target(self, codes: Sequence[int] | np.ndarray) -> np.ndarray:
        """The user's labels for class codes (classifiers); floats pass through (regression)."""
        self._require_fitted()
        codes = np.asarray(codes)
        if self.task == "regression":
            return codes.astype(np.float64)
        return np.asarray(self.classes)[codes.astype(np.int64)]

    def features_and_target(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Transformed features and encoded target of a split."""
        if self.target not in frame.columns:
            raise DataError(f"{self._display}: target column '{self.target}' is not in the frame")
        return self.transform(frame), self.encode_target(frame[self.target])

    # ------------------------------------------------------------------ schema
    def spec(self) -> ModelSpec:
        """What a family needs to build its model."""
        from kennel.families.base import ModelSpec

        self._require_fitted()
        assert self.task is not None
        return ModelSpec(
            task=self.task,
            n_classes=len(self.classes) if self.task != "regression" else 1,
            numeric=list(self.numeric),
            categorical={name: len(vocab) for name, vocab in self.categorical.items()},
        )

    def input_schema(self) -> list[ColumnSpec]:
        """Raw feature columns as the served model takes them.

        Numeric features are ``double`` (whole numbers are fine); categorical ones keep the
        type they had in the file (``string``, ``long``, ``double`` or ``boolean``). A column is
        required unless it had missing values in training, so requests may leave it out.
        """
        self._require_fitted()
        nullable = set(self.nullable)
        return [
            ColumnSpec(name=c, dtype=self.input_dtypes[c], required=c not in nullable)
            for c in self.raw_columns
        ]

    def input_example(self, n: int = 3) -> pd.DataFrame:
        """The first ``n`` raw feature rows of the training data (up to 5 are kept)."""
        self._require_fitted()
        return pd.DataFrame(self._examples[:n], columns=self.raw_columns)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The fitted state as a JSON-able dict (what ``processor.json`` holds)."""
        self._require_fitted()
        config = self.config.model_dump(mode="json", exclude={"storage_options"})
        return {
            "version": STATE_VERSION,
            "config": config,
            "source_name": self.source_name,
            "source_uri": self.source_uri,
            "digest": self.digest,
            "n_rows": self.n_rows,
            "target": self.target,
            "task": self.task,
            "classes": list(self.classes),
            "numeric": list(self.numeric),
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "raw_columns": list(self.raw_columns),
            "input_dtypes": dict(self.input_dtypes),
            "nullable": list(self.nullable),
            "removed": list(self._removed),
            "examples": self._examples,
        }

    def save(self, path_dir: str | Path) -> Path:
        """Write ``processor.json`` into ``path_dir`` (created if needed); returns the file."""
        directory = Path(path_dir)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / STATE_FILE
        target.write_text(json.dumps(self.state(), indent=2, ensure_ascii=False) + "\n")
        return target

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DataProcessor:
        """Rebuild a fitted processor from :meth:`state`."""
        version = state.get("version")
        if version != STATE_VERSION:
            raise DataError(f"{STATE_FILE}: unsupported state version {version!r}")
        try:
            config = DataConfig.model_validate(state.get("config") or {})
        except Exception:
            logger.warning("%s: saved data config no longer validates; using defaults", STATE_FILE)
            config = DataConfig(target=state["target"])
        dp = cls(config)
        dp.source_name = state["source_name"]
        dp.source_uri = state["source_uri"]
        dp.digest = state.get("digest")
        dp.n_rows = state.get("n_rows")
        dp.target = state["target"]
        dp.task = state["task"]
        dp.classes = list(state["classes"])
        dp.numeric = list(state["numeric"])
        dp.categorical = {k: list(v) for k, v in state["categorical"].items()}
        dp.raw_columns = list(state["raw_columns"])
        dp.input_dtypes = dict(state["input_dtypes"])
        dp.nullable = list(state["nullable"])
        dp._removed = list(state.get("removed", []))
        dp._examples = list(state.get("examples", []))
        dp._loaded_task = dp.task
        dp._loaded_classes = list(dp.classes)
        dp._finish_fit()
        return dp

    @classmethod
    def load_state(cls, path_dir: str | Path) -> DataProcessor:
        """A fitted processor from ``path_dir/processor.json`` (or the file itself)."""
        path = Path(path_dir)
        if path.is_dir():
            path = path / STATE_FILE
        if not path.exists():
            raise DataError(f"data processor state not found: {path}")
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read the data processor state: {exc}") from None
        return cls.from_state(state)


__all__ = ["BUILTINS", "ColumnSpec", "DataProcessor", "Splits", "STATE_FILE"]
