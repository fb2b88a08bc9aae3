"""The fitted DataProcessor: one preprocessing code path for training, batch prediction and
the served model.

Its fitted state is saved next to the model as ``processor.json`` (plain JSON, never a
pickle), so preprocessing cannot drift between training and serving.

Decisions worth knowing (also in README.md, "Your data"):

* **Column roles** are decided once, on the whole table (:mod:`kennel.data.columns`):
  numeric, categorical, date parts or dropped (identifiers, constants, empty columns).
* **Rows without a target** are left out of training and scoring with one warning; the count
  is kept (``rows_without_target``) and logged as a param of the run.
* **Task inference** (``data.task=auto``): a boolean or non-numeric target is a classifier. A
  numeric target is a classifier when every value is a whole number and it has 2 distinct
  values, or at most 20 distinct values that are also at most 5% of the rows (so 0..9 digit
  labels over 1,000 rows are classes, but 200 distinct prices are not). Everything else is
  regression. Two classes make the task ``binary``, more make it ``multiclass``.
* **Classes** keep the user's values and type: strings stay strings, whole numbers become
  ``int``, booleans stay ``bool`` (``[False, True]``), other floats stay ``float``. They are
  sorted, and the code of a class is its position in ``classes``.
* **Categorical values** are compared as strings: ``1``, ``1.0`` and ``"1"`` are the same
  category ``"1"``; ``True`` is ``"True"``. Vocabularies are the most frequent strings seen in
  training (at most ``data.max_categories``), sorted; anything else maps to NaN (code -1).
* **Text typed by hand** (:mod:`kennel.data.labels`): surrounding spaces are stripped from
  target and category values, and spellings that differ only in case are merged into the
  most frequent one (``data.merge_case``). **Numbers written as text** (``$1,499.00``,
  :mod:`kennel.data.numbers`) are read as numbers, in features and in the target. Both
  rules are saved with the state, so prediction reads requests the same way.
* **Splits** (:mod:`kennel.data.splits`): random and stratified, by time or by groups.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kennel.config import DataConfig
from kennel.data.blocks import AT_ONCE_MAX_ROWS, numbers_at_once, numeric_block
from kennel.data.checks import MIN_LABELED_ROWS, check_labeled, check_listed, split_columns
from kennel.data.columns import ColumnRole, decide_roles, log_fit
from kennel.data.labels import TextRules, apply_rules, case_lookup, merge_spellings, warn_merged
from kennel.data.sources import BUILTIN_TARGET, Source, check_duplicates, frame_digest
from kennel.data.splits import Splits, split_frame
from kennel.data.state import STATE_FILE, read_state, restore, save_state, state_of
from kennel.data.targets import (
    TargetPlan,
    class_values,
    describe_target,
    merge_classes,
    plan_target,
    read_target,
    resolve_task,
    target_facts,
)
from kennel.data.values import (
    as_frame,
    factorized_labels,
    json_value,
    label,
    label_counts,
    rows_at,
    to_float,
    vocabulary,
)
from kennel.errors import DataError
from kennel.spec import ColumnSpec, ModelSpec, Task
from kennel.suggest import did_you_mean

logger = logging.getLogger(__name__)

#: Raw training rows kept in the state for ``input_example``.
EXAMPLE_ROWS = 5


class DataProcessor:
    """Reads, checks and splits the table, and owns the preprocessing every consumer shares.

    Construct it from ``config.data``; :meth:`load`, :meth:`split` and :meth:`fit` prepare it
    for training, and :meth:`save` / :meth:`load_state` carry the fitted state to batch
    prediction and the served model.
    """

    def __init__(self, config: DataConfig | None = None) -> None:
        self.config = config if config is not None else DataConfig()
        self.source = Source(self.config)
        self.source_name = self.source.name
        self.source_uri = self.source.uri
        self._display = self.source.display
        self.digest: str | None = None
        self.n_rows: int | None = None
        self.rows_without_target = 0
        # Learnt by load() on the whole table (so every split agrees on task, classes, roles).
        self._loaded_task: Task | None = None
        self._loaded_classes: list[Any] | None = None
        self.roles: list[ColumnRole] = []
        # Fitted state.
        self.target: str = self._configured_target()
        self.task: Task | None = None
        self.classes: list[Any] = []
        self.numeric: list[str] = []
        """Numeric model features in order: numeric columns and date parts."""
        self.categorical: dict[str, list[str]] = {}
        self.raw_columns: list[str] = []
        """The raw input columns the model uses."""
        self.input_kinds: dict[str, str] = {}
        self.nullable: list[str] = []
        self._examples: list[dict[str, Any]] = []
        self._fitted = False
        self._cat_dtypes: dict[str, pd.CategoricalDtype] = {}
        # How text values typed by hand are compared, and how the target is read.
        self.rules = TextRules(strip=True, merge_case=self.config.merge_case)
        self.target_format: dict[str, Any] | None = None
        self._target_lookup: dict[str, str] | None = None
        self.split_report: dict[str, Any] = {}
        """What :meth:`split` did (``split.json`` of a training run)."""

    # ------------------------------------------------------------------ naming
    def _configured_target(self) -> str:
        if self.config.target:
            return self.config.target
        if self.source.is_builtin:
            return BUILTIN_TARGET
        return ""

    def default_model_name(self) -> str:
        """Registered model name derived from the data: ``breast_cancer`` -> ``breast-cancer``."""
        import re

        name = re.sub(r"[^a-z0-9]+", "-", self.source_name.lower()).strip("-")
        return name or "model"

    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def loaded_task(self) -> tuple[Task | None, list[Any]]:
        """The task and classes :meth:`load` decided on the whole table (``kennel inspect``)."""
        return self._loaded_task, list(self._loaded_classes or [])

    @property
    def dropped(self) -> dict[str, str]:
        """Columns left out of the features -> why."""
        return {r.name: r.reason for r in self.roles if r.role == "dropped"}

    # ------------------------------------------------------------------ load
    def load(self) -> pd.DataFrame:
        """Read and validate the table: labeled rows, ``data.drop`` columns removed.

        Also records ``n_rows``, ``digest``, ``rows_without_target``, the task and classes
        and the column roles of the whole table, so that every split agrees on them.
        """
        if not self.source.is_builtin and not self.target:
            raise DataError(
                f"{self._display}: data.target is not set; name the target column, "
                f"e.g. data.target=<column>"
            )
        frame = self._validate(self.source.read())
        self.n_rows = len(frame)
        self.digest = frame_digest(frame)
        self.plan_target(*target_facts(frame[self.target].dropna()))
        frame = self._with_target(frame)
        task, classes = self._resolve_task(frame[self.target])
        self._loaded_task, self._loaded_classes = task, classes
        self.roles = self._decide_roles(frame)
        logger.info(
            "loaded %s: %d rows, %d columns, target '%s', digest %s",
            self.source_uri,
            len(frame),
            frame.shape[1],
            self.target,
            self.digest,
        )
        return frame

    def _decide_roles(self, frame: pd.DataFrame) -> list[ColumnRole]:
        cfg = self.config
        return decide_roles(
            frame,
            target=self.target,
            drop=cfg.drop,
            keep=cfg.keep,
            numeric=cfg.numeric,
            categorical=cfg.categorical,
            percent=cfg.percent,
        )

    def _check_listed(self, columns: Sequence[str], *, dropped: bool = False) -> None:
        """See :func:`kennel.data.checks.check_listed`."""
        check_listed(self.config, self.target, columns, display=self._display, dropped=dropped)

    def _validate(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame.columns = [str(c) for c in frame.columns]
        if frame.columns.duplicated().any():
            check_duplicates(self._display, list(frame.columns))
        if frame.shape[1] == 0 or len(frame) == 0:
            raise DataError(f"{self._display}: the table is empty (no rows or no columns)")
        self._check_listed(list(frame.columns))
        unlabeled = frame[self.target].isna()
        self.rows_without_target = int(unlabeled.sum())
        labeled = len(frame) - self.rows_without_target
        check_labeled(self._display, self.target, labeled=labeled, total=len(frame))
        if self.rows_without_target:
            frame = frame.loc[~unlabeled.to_numpy()]
        keep = split_columns(self.config)  # a split column in data.drop: read, never a feature
        frame = frame.drop(columns=[c for c in self.config.drop if c not in keep])
        if frame.shape[1] < 2:
            raise DataError(f"{self._display}: no feature columns besides '{self.target}'")
        return frame

    # ------------------------------------------------------------------ task and classes
    def _resolve_task(self, target: pd.Series) -> tuple[Task, list[Any]]:
        """The task (configured or inferred, and logged) and the sorted class values."""
        values = target.dropna()
        return self.resolve_task_from(values.drop_duplicates(), len(values))

    def resolve_task_from(
        self, values: pd.Series, n_values: int, n_unique: int | None = None
    ) -> tuple[Task, list[Any]]:
        """See :func:`kennel.data.targets.resolve_task` (Dask passes ``n_unique`` when
        ``values`` holds only some of a target's many values)."""
        return resolve_task(
            values,
            n_values,
            configured=self.config.task,
            target=self.target,
            display=self._display,
            n_unique=n_unique,
        )

    # ------------------------------------------------------------------ the target's values
    def plan_target(self, numbers: Any, counts: Mapping[str, int] | None) -> None:
        """Decide how the raw target is read (:func:`kennel.data.targets.plan_target`), from
        :func:`~kennel.data.targets.target_facts` of the whole table (or their sum over
        partitions)."""
        plan = plan_target(
            numbers,
            counts,
            rules=self.rules,
            percent=self.config.percent,
            task=self.config.task,
            target=self.target,
            display=self._display,
        )
        self.target_format, self._target_lookup = plan.number_format, plan.lookup

    def read_target(self, series: pd.Series) -> pd.Series:
        """Raw target values as the processor reads them (numbers, or labels spelled as the
        classes are)."""
        plan = TargetPlan(self.rules, self.target_format, self._target_lookup)
        return read_target(series, plan, target=self.target, display=self._display)

    def _with_target(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.target not in frame.columns:
            return frame
        series = frame[self.target]
        read = self.read_target(series)
        return frame if read is series else frame.assign(**{self.target: read})

    # ------------------------------------------------------------------ split
    def split(self, df: pd.DataFrame) -> Splits:
        """Train/valid/test rows as ``data.split`` says (:mod:`kennel.data.splits`); what
        was done is kept in :attr:`split_report`."""
        if self.target not in df.columns:
            raise DataError(f"{self._display}: target column '{self.target}' is not in the frame")
        task = self._loaded_task
        if task is None:
            self.plan_target(*target_facts(df[self.target].dropna()))
            df = self._with_target(df)
            task, self._loaded_classes = self._resolve_task(df[self.target])
            self._loaded_task = task
        splits, self.split_report = split_frame(
            df, self.config.split, target=self.target, task=task, display=self._display
        )
        return splits

    # ------------------------------------------------------------------ fit
    def fit(self, train: pd.DataFrame) -> DataProcessor:
        """Learn the features (from the column roles), vocabularies and target classes.

        Logs what each column became, once: this is called once per training run.
        """
        train = train.copy(deep=False)
        train.columns = [str(c) for c in train.columns]
        if train.columns.duplicated().any():
            check_duplicates(self._display, list(train.columns))
        # load() has removed the data.drop columns already (and checked they existed).
        self._check_listed(list(train.columns), dropped=self.n_rows is not None)
        if len(train) == 0:
            raise DataError(f"{self._display}: cannot fit on an empty frame")
        if self.target in train.columns and bool(train[self.target].isna().any()):
            train = train.loc[train[self.target].notna().to_numpy()]
        known = {r.name for r in self.roles}
        if not self.roles or any(c not in known for c in train.columns if c != self.target):
            self.roles = self._decide_roles(train)  # fit() without load(): decide on this frame
        if self._loaded_task is None:
            self.plan_target(*target_facts(train[self.target].dropna()))
            train = self._with_target(train)
            task, classes = self._resolve_task(train[self.target])
        else:  # the whole table decided the task; add any class only the frame has
            train = self._with_target(train)
            task, classes = self._loaded_task, list(self._loaded_classes or [])
            if task != "regression":
                values = train[self.target].dropna()
                numeric, whole = describe_target(values)
                own = class_values(values, numeric=numeric, whole=whole)
                classes = merge_classes(classes, own)
        self.task, self.classes = task, classes if task != "regression" else []

        used = [r for r in self.roles if r.role != "dropped" and r.name in train.columns]
        if not used:
            raise DataError(
                f"{self._display}: no usable feature columns besides '{self.target}' "
                f"(dropped: {', '.join(self.dropped) or 'none'})"
            )
        numeric: list[str] = []
        categorical: dict[str, list[str]] = {}
        for role in used:
            series = train[role.name]
            if role.role == "numeric":  # fails early on text that is not a number
                to_float(series, role.name, self._display, role.missing_tokens, role.number_format)
                numeric.append(role.name)
            elif role.role == "date":
                numeric.extend(role.features)
            else:
                categorical[role.name] = self.vocabulary_from(label_counts(series), role.name)
        self.numeric = numeric
        self.categorical = categorical
        self.raw_columns = [r.name for r in used]
        self.input_kinds = {r.name: r.kind for r in used}
        self.nullable = [r.name for r in used if r.missing or bool(train[r.name].isna().any())]
        head = train[self.raw_columns].head(EXAMPLE_ROWS)
        self._examples = [
            {c: json_value(v) for c, v in row.items()} for row in head.to_dict("records")
        ]
        self._finish_fit()
        self._log_report()
        return self

    def vocabulary_from(self, counts: Mapping[str, int], name: str) -> list[str]:
        """A column's vocabulary from its label counts (summed over partitions on Dask):
        spellings merged by the text rules (a WARNING names them), then the most frequent."""
        merged = merge_spellings(counts, self.rules)
        warn_merged(self._display, f"column '{name}'", merged, self.rules)
        return vocabulary(merged.counts, name, self.config.max_categories)

    def _log_report(self) -> None:
        log_fit(self._display, self.roles, self.raw_columns, self.numeric, self.categorical)

    def _finish_fit(self) -> None:
        self._cat_dtypes = {
            name: pd.CategoricalDtype(categories=pd.Index(vocab, dtype=object), ordered=False)
            for name, vocab in self.categorical.items()
        }
        self._class_index = {label(c): i for i, c in enumerate(self.classes)}
        merge = self.rules.merge_case
        if self.classes and self.target_format is None:
            self._target_lookup = case_lookup(self.classes) if merge else None
        self._lookups = {
            name: case_lookup(vocab) if merge else None for name, vocab in self.categorical.items()
        }
        self._role_of = {r.name: r for r in self.roles}
        self._known = {r.name for r in self.roles} | {self.target} | set(self.config.drop)
        self._required = [c for c in self.raw_columns if c not in set(self.nullable)]
        self._numeric_index = {name: j for j, name in enumerate(self.numeric)}
        self._numeric_labels = pd.Index(self.numeric)  # built once, not per request
        # Every numeric feature is an input column of its own (no date parts): see
        # _numbers_at_once.
        self._numeric_are_columns = all(
            name in self._role_of and self._role_of[name].role == "numeric" for name in self.numeric
        )
        self._fitted = True

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("DataProcessor is not fitted; call fit() or load_state() first")

    # ------------------------------------------------------------------ transform
    def transform(
        self,
        rows: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        at: np.ndarray | None = None,
    ):
        """Raw rows (any column order, as read from a file or sent in a request) -> features.

        Returns numeric features (float64, NaN for missing; date columns give their parts)
        then categorical columns (pandas ``Categorical`` over the training vocabulary; unseen
        or missing values are NaN), in the fitted order, with the index of ``rows``. Columns
        the model does not use (identifiers, extra columns) are ignored. ``at``: only the rows
        at these positions (a split), taken column by column, so the table is never copied
        whole. Vectorised: it is on the serving hot path.
        """
        self._require_fitted()
        frame = as_frame(rows)
        columns = frame.columns
        if columns.duplicated().any():
            dup = columns[columns.duplicated()][0]
            raise DataError(f"input rows: duplicate column '{dup}'")
        names = columns.tolist()  # iterating pandas' string Index costs per item
        present = set(names)
        missing = [c for c in self._required if c not in present]
        if missing:
            raise DataError(
                f"input rows: missing required column '{missing[0]}'"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + did_you_mean(missing[0], [c for c in names if c not in self._known])
            )
        extra = [c for c in names if c not in self._known]
        if extra:
            logger.warning(
                "ignoring %d input column(s) unknown to the model: %s",
                len(extra),
                ", ".join(map(str, extra[:10])) + (" ..." if len(extra) > 10 else ""),
            )
        index = frame.index if at is None else frame.index[at]
        block = self._numeric_block(frame, at, len(index))
        result = pd.DataFrame(block, index=index, columns=self._numeric_labels, copy=False)
        if not self._cat_dtypes:
            return result
        cats = pd.DataFrame(self._categorical_columns(frame, at, len(index)), index=index)
        return pd.concat([result, cats], axis=1, copy=False) if self.numeric else cats

    def _numeric_block(self, frame: pd.DataFrame, at: np.ndarray | None, n: int) -> np.ndarray:
        """The numeric features of ``frame`` (rows ``at``), column-major (see
        :mod:`kennel.data.blocks`): in one conversion for a small frame of plain numbers."""
        if at is None and self._numeric_are_columns and 0 < n <= AT_ONCE_MAX_ROWS:
            block = numbers_at_once(frame, self._numeric_labels)
            if block is not None:
                return block
        return numeric_block(
            frame, at, n, self.numeric, self.raw_columns, self._role_of, self._numeric_index
        )

    def _categorical_columns(
        self, frame: pd.DataFrame, at: np.ndarray | None, n: int
    ) -> dict[str, pd.Categorical]:
        """The categorical features: codes in the training vocabulary, -1 when unseen."""
        categorical: dict[str, pd.Categorical] = {}
        for name, dtype in self._cat_dtypes.items():
            if name in frame.columns:
                column = rows_at(frame[name], at)
                codes, labels = factorized_labels(column)
                if self.rules.active:
                    labels = apply_rules(labels, self.rules, self._lookups[name])
                lookup = dtype.categories.get_indexer(pd.Index(labels, dtype=object))
                mapped = np.where(codes >= 0, lookup[codes] if len(lookup) else -1, -1)
            else:
                mapped = np.full(n, -1)
            categorical[name] = pd.Categorical.from_codes(mapped.astype(np.int64), dtype=dtype)
        return categorical

    # ------------------------------------------------------------------ target
    def encode_target(self, series: pd.Series | Sequence[Any]) -> np.ndarray:
        """Class codes ``0..K-1`` (int64) for classifiers, float64 for regression."""
        self._require_fitted()
        series = pd.Series(series) if not isinstance(series, pd.Series) else series
        series = self.read_target(series)
        if self.task == "regression":
            values = to_float(series, self.target, f"target '{self.target}'")
            if np.isnan(values).any():
                raise DataError(
                    f"{self._display}: target column '{self.target}' has missing values"
                )
            return values
        codes, labels = factorized_labels(series)
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

    def features_and_target(
        self, frame: pd.DataFrame, *, at: np.ndarray | None = None
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Transformed features and encoded target of a split (``at``: its row positions in
        ``frame``, see :meth:`transform`)."""
        if self.target not in frame.columns:
            raise DataError(f"{self._display}: target column '{self.target}' is not in the frame")
        target = rows_at(frame[self.target], at)
        return self.transform(frame, at=at), self.encode_target(target)

    # ------------------------------------------------------------------ schema
    def spec(self) -> ModelSpec:
        """What a family needs to build its model."""
        self._require_fitted()
        assert self.task is not None
        return ModelSpec(
            task=self.task,
            n_classes=len(self.classes) if self.task != "regression" else 1,
            numeric=list(self.numeric),
            categorical={name: len(vocab) for name, vocab in self.categorical.items()},
        )

    def feature_groups(self) -> tuple[list[str], list[list[str]]]:
        """(the raw input columns, the model features each gave): a numeric or categorical
        column gives itself, a date its parts. Contributions are summed over these, so every
        explanation names a column the user knows."""
        self._require_fitted()
        groups = [list(self._role_of[c].features or [c]) for c in self.raw_columns]
        return list(self.raw_columns), groups

    def input_schema(self) -> list[ColumnSpec]:
        """Raw input columns as the served model takes them, with the kind of values they
        held in training. A column is required unless it had missing values, so requests
        may leave it out."""
        self._require_fitted()
        nullable = set(self.nullable)
        return [
            ColumnSpec(name=c, kind=self.input_kinds[c], required=c not in nullable)  # type: ignore[arg-type]
            for c in self.raw_columns
        ]

    def input_example(self, n: int = 3) -> pd.DataFrame:
        """The first ``n`` raw input rows of the training data (up to 5 are kept), with the
        types they had there (whole numbers as integers where the column had no gaps)."""
        self._require_fitted()
        example = pd.DataFrame(self._examples[:n], columns=self.raw_columns)
        for column in self.raw_columns:
            kind = self.input_kinds[column]
            values = example[column]
            if kind == "integer" and values.notna().all():
                example[column] = values.astype("int64")
            elif kind in {"integer", "float"}:
                example[column] = pd.to_numeric(values).astype("float64")
            elif kind == "datetime":
                example[column] = pd.to_datetime(values)
        return example

    def column_report(self) -> dict[str, Any]:
        """What each column became (``columns.json`` of a run)."""
        return {
            "source": self.source_uri,
            "target": self.target,
            "task": self.task,
            "rows": self.n_rows,
            "rows_without_target": self.rows_without_target,
            "read": self.source.read_info,
            "columns": [r.to_dict() for r in self.roles],
        }

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The fitted state as a JSON-able dict (what ``processor.json`` holds)."""
        self._require_fitted()
        return state_of(self)

    def save(self, path_dir: str | Path) -> Path:
        """Write ``processor.json`` into ``path_dir`` (created if needed); returns the file."""
        return save_state(self.state(), path_dir)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DataProcessor:
        """Rebuild a fitted processor from :meth:`state` (version 1 states too)."""
        dp = restore(cls, state)
        dp._finish_fit()
        return dp

    @classmethod
    def load_state(cls, path_dir: str | Path) -> DataProcessor:
        """A fitted processor from ``path_dir/processor.json`` (or the file itself)."""
        return cls.from_state(read_state(path_dir))


__all__ = ["MIN_LABELED_ROWS", "DataProcessor", "STATE_FILE", "Splits"]
