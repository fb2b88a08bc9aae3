"""The typed configuration tree: every behaviour of kennel is a field here, with its default
in code. IDEs complete every field; unknown keys and wrong types are errors at every depth."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from kennel.config.messages import format_validation
from kennel.util import redact_url, url_secrets

ENV_PREFIX = "KENNEL_"
#: Environment variables with the prefix that are not config keys.
RESERVED_ENV = {"KENNEL_ENV", "KENNEL_HOME"}
DEFAULT_ENV = "dev"
REDACTED = "**********"
#: ``model_dump(context={WITH_SECRETS: True})`` keeps the password in ``tracking.uri``: for
#: a config rebuilt in this process (``SecretStr`` values are unwrapped by the caller).
WITH_SECRETS = "with_secrets"


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data
class SplitConfig(StrictModel):
    """Fractions of the rows in each split; seeded and stratified for classifiers."""

    train: float = Field(0.7, gt=0, lt=1)
    valid: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    stratify: bool = True
    # --- splits that follow time or groups (issue 23) -------------------------------------
    time_on: str | None = None
    """A column of dates or numbers: train before valid before test in its order (rows with
    the same time stay in one split; rows without one go to train). Not stratified."""
    group_on: str | None = None
    """A column of group ids (a customer, a patient): every group in exactly one split,
    shares counted in rows. Not stratified."""

    @model_validator(mode="after")
    def _one_order(self) -> SplitConfig:
        if self.time_on is not None and self.group_on is not None:
            raise ValueError(
                f"set time_on ('{self.time_on}') or group_on ('{self.group_on}'), not both"
            )
        return self

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + valid + test must sum to 1, got {self.train} + {self.valid} + "
                f"{self.test} = {total:g}"
            )
        return self


#: Spellings of a tab accepted for ``data.csv.delimiter`` (a shell passes ``\\t`` literally).
TAB_NAMES = {"\\t": "\t", "tab": "\t", "TAB": "\t"}


class CsvConfig(StrictModel):
    """How CSV files are read. Every ``None`` is detected from the file itself (the dialect
    by DuckDB's CSV sniffer, the encoding from the bytes); a value set here wins over the
    detection. Applies wherever kennel reads a CSV: training, ``kennel evaluate --data``,
    ``kennel predict --input`` and ``kennel monitor --input``."""

    delimiter: str | None = None
    """The field separator: one character (``;``, ``,``, ``|``; a tab as ``\\t`` or ``tab``)."""
    quotechar: str | None = None
    """The character around fields that hold the separator (``"`` unless detected)."""
    escapechar: str | None = None
    """The character before a quote inside a quoted field, when it is not a doubled quote."""
    decimal: str | None = None
    """The decimal mark of numbers: ``.`` or ``,`` (``1,5`` is 1.5)."""
    thousands: str | None = None
    """The thousands mark inside numbers (``.`` in ``1.234,5``); ``""`` for none."""
    encoding: str | None = None
    """Any Python codec name: ``utf-8``, ``utf-8-sig``, ``cp1252``, ``latin-1``, ``utf-16``."""
    header: bool | None = None
    """Whether the first row (after ``skiprows``) names the columns; without one, columns are
    named ``column0``, ``column1``, ..."""
    skiprows: int | None = Field(None, ge=0)
    """Lines before the header (a title, an export note)."""
    comment: str | None = None
    """Lines starting with this character are skipped (``#``); ``""`` for none."""

    @field_validator("delimiter", "decimal", mode="before")
    @classmethod
    def _one_character(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = TAB_NAMES.get(value, value)
            if len(value) != 1:
                raise ValueError(f"'{value}' is not one character")
        return value

    @field_validator("quotechar", "escapechar", "thousands", "comment")
    @classmethod
    def _one_or_none(cls, value: str | None) -> str | None:
        if value is not None and len(value) > 1:
            raise ValueError(f"'{value}' is not one character (or \"\" for none)")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        import codecs

        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"unknown encoding '{value}'; expected a Python codec name such as "
                    "utf-8, utf-8-sig, cp1252, latin-1 or utf-16"
                ) from None
        return value


class DataConfig(StrictModel):
    """Where the table lives and how to read it."""

    source: str = "builtin:breast_cancer"
    """``builtin:<name>``, a local path, ``file://`` or any fsspec URL (CSV, Parquet, or an
    Excel/OpenDocument workbook)."""
    format: Literal["auto", "csv", "parquet", "excel"] = "auto"
    csv: CsvConfig = Field(default_factory=CsvConfig)
    """How CSV files are read; unset values are detected."""
    sheet: str | int | None = None
    """The sheet of a workbook (``.xlsx``, ``.xlsm``, ``.xls``, ``.xlsb``, ``.ods``): its name or
    its 0-based position; the first sheet when unset."""
    target: str | None = None
    """Target column; builtin data sets know their own."""
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    """Columns that are never features (the target is never one anyway)."""
    keep: list[str] = Field(default_factory=list)
    """Columns kept as features even where kennel would drop them as identifiers or
    constants."""
    max_categories: int = Field(1000, ge=2)
    """Most distinct values a categorical column keeps (the most frequent); the rest count
    as unknown."""
    split: SplitConfig = Field(default_factory=SplitConfig)
    storage_options: dict[str, SecretStr] = Field(default_factory=dict)
    """Passed to fsspec (credentials): secret, never logged."""
    # --- values typed by hand (issue 23): labels and numbers written as text --------------
    merge_case: bool = True
    """Merge target and category values that differ only in case (``yes``, ``YES``) into
    their most frequent spelling, with a warning; false keeps them apart. Surrounding spaces
    are stripped from text values either way."""
    percent: Literal["fraction", "number"] = "fraction"
    """How ``12.5%`` in a column of numbers written as text is read: ``fraction`` (0.125, what
    a spreadsheet stores) or ``number`` (12.5)."""


# --------------------------------------------------------------------------- model
class ModelConfig(StrictModel):
    """Which family to train and its typed parameters."""

    family: str = "cat"
    params: Any = Field(default_factory=dict)
    """Validated by the chosen family's ``Params`` class; becomes an instance of it."""

    @model_validator(mode="after")
    def _validate_params(self) -> ModelConfig:
        from kennel.families import get_family

        family = get_family(self.family)
        if not isinstance(self.params, family.Params):
            raw = self.params.model_dump() if isinstance(self.params, BaseModel) else self.params
            try:
                params = family.Params.model_validate(raw or {})
            except ValidationError as exc:
                raise ValueError(
                    format_validation(exc, prefix="params", model=family.Params)
                ) from None
            object.__setattr__(self, "params", params)
        return self

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        from kennel.families import available_families

        names = available_families()
        if value not in names:
            raise ValueError(
                f"unknown model family '{value}'; expected one of: {', '.join(sorted(names))}"
            )
        return value


# --------------------------------------------------------------------------- training
class TrainingConfig(StrictModel):
    """How a training run behaves, independent of the family."""

    seed: int = 42
    deterministic: bool = True
    output_root: str = "outputs"
    """Each run writes into its own folder below this one (relative to the project)."""


class TrackingConfig(StrictModel):
    """MLflow tracking. The store is ``MLFLOW_TRACKING_URI`` if set, else ``uri``, else an
    absolute ``sqlite:///<project>/mlflow.db``."""

    uri: str | None = Field(default=None, repr=False)
    """A database URI's password (``postgresql://user:pw@host/db``) is shown as ``***`` in
    everything saved or logged (params, ``config.yaml``, ``kennel config``)."""
    experiment: str | None = None
    """Where runs go. Unset: the data's name, as the registered model is named (cat and dog
    runs of one data set meet in one experiment, whatever launched them); MLflow's own
    ``MLFLOW_EXPERIMENT_NAME`` and ``mlflow run --experiment-name`` are respected too."""
    run_name: str | None = None
    log_model: bool = True
    log_plots: bool = True
    plots_in_background: bool = True
    """Draw the plots in a second interpreter, started with the run, while the model is
    logged (uses a spare core). ``false`` (what the search sets for its trials, and any run
    may set): no second interpreter; on Linux, with a family whose library survives a fork
    (cat) and no cluster, a forked copy of the run draws them while the model is logged,
    else the run itself draws them at its end."""

    @field_serializer("uri")
    def _uri_without_password(self, uri: str | None, info: SerializationInfo) -> str | None:
        if not uri or (info.context or {}).get(WITH_SECRETS):
            return uri
        return redact_url(uri)


class GateConfig(StrictModel):
    """The promotion gate: a candidate must be at least as good as the current holder."""

    metric: str | None = None
    """Primary test metric; default roc_auc (binary), accuracy (multiclass), rmse (regression)."""
    min_delta: float = 0.0
    """How much better than the holder the candidate must be (0: at least as good)."""


class RegistryConfig(StrictModel):
    """Model registry: one registered model per task, environment aliases."""

    model_name: str | None = None
    """Default derived from the data set, e.g. ``breast-cancer``."""
    enabled: bool = True
    """Register each trained model as a new version of ``model_name``."""
    environments: list[str] = Field(default_factory=lambda: ["dev", "staging", "production"])
    auto_promote: str | None = "dev"
    gate: GateConfig = Field(default_factory=GateConfig)

    @model_validator(mode="after")
    def _auto_promote_known(self) -> RegistryConfig:
        if self.auto_promote is not None and self.auto_promote not in self.environments:
            raise ValueError(
                f"auto_promote '{self.auto_promote}' is not an environment; expected one of: "
                f"{', '.join(self.environments)}"
            )
        return self


class ResourceConfig(StrictModel):
    """Machine-specific resources; usually set per machine through the environment."""

    num_threads: int = Field(0, ge=0)
    """Threads for training and inference; 0 uses every core."""
    use_gpu: bool = False
    cluster: str = "none"
    """Where data work runs: ``none`` (this process, pandas), ``local`` / ``local:N`` (a Dask
    ``LocalCluster`` of N worker processes, started and stopped by the command) or a Dask
    scheduler address such as ``tcp://host:8786`` (an existing cluster, never stopped)."""

    @field_validator("cluster", mode="before")
    @classmethod
    def _cluster(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if re.fullmatch(r"none|local(:[1-9][0-9]*)?|(tcp|tls|ucx|ws|wss)://\S+", text):
            return text
        raise ValueError(
            f"'{value}' is not a cluster; expected none, local, local:N (N worker processes) "
            "or a Dask scheduler address such as tcp://host:8786"
        )


class LoggingConfig(StrictModel):
    """Log level and file; every line has time, logger name and level."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    file_name: str = "kennel.log"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# --------------------------------------------------------------------------- search
class FloatRange(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        _check_range(self.low, self.high, self.log)
        return self


class IntRange(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        _check_range(self.low, self.high, self.log)
        return self


class Categorical(StrictModel):
    type: Literal["categorical"]
    choices: list[Any]

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("choices must not be empty")
        return value


def _check_range(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must not be greater than high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")


SearchParam = Annotated[FloatRange | IntRange | Categorical, Field(discriminator="type")]


class SearchConfig(StrictModel):
    """Hyperparameter search: the space is keyed by dotted config paths."""

    space: dict[str, SearchParam] = Field(default_factory=dict)
    metric: str | None = None
    """Default: the task's primary validation metric (val_roc_auc, val_accuracy, val_rmse)."""
    direction: Literal["minimize", "maximize"] | None = None
    n_trials: int = Field(10, ge=1)
    n_jobs: int = Field(1, ge=1)
    trial_timeout: float | None = Field(None, gt=0)
    """Seconds before a trial is killed and marked FAILED."""
    register_best: bool = False
    launcher: Literal["warm", "subprocess"] = "warm"
    """How trial processes start. ``warm``: forked from a trial server that has imported
    kennel, MLflow and the family's libraries and read the data once (families whose
    libraries are not fork-safe, such as TensorFlow, import them in each trial).
    ``subprocess``: a fresh ``run.py train`` interpreter per trial. Both run the same
    training with the same arguments, so a trial's result does not depend on it."""
    log_models: Literal["all", "improving", "none"] = "improving"
    """Which trials log their model and plots (every trial logs its params, metrics,
    learning curves, config and log). ``improving``: a trial whose validation metric is at
    least as good as the best one completed when it started, so the study's best trial
    always has a registrable model; ``all``: every trial; ``none``: no trial (not with
    ``register_best``)."""
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 42
    study_name: str | None = None
    storage: SecretStr | None = None
    """Optuna RDB storage URL (may hold a password): SQLite file or PostgreSQL."""
    heartbeat_interval: float = Field(10.0, ge=0)
    """Shared storage only: seconds between a worker's heartbeats for its running trials
    (0: none). A trial whose worker stops beating for ``grace_period`` is failed by the
    other workers, its MLflow run marked FAILED, and retried."""
    grace_period: float | None = Field(None, gt=0)
    """Seconds without a heartbeat before a trial counts as dead (default: 3 x interval)."""
    retries: int = Field(1, ge=0)
    """How many times a trial of a dead worker is retried with the same values."""


# --------------------------------------------------------------------------- production
class CaptureConfig(StrictModel):
    """What ``kennel serve`` records of the requests it scores (``--capture`` turns it on):
    every scored row, its outputs and provenance, as Parquet files in ``path``."""

    path: str | None = None
    """A local folder or any fsspec URL (``s3://bucket/captures/``); unset: no capture."""
    sample: float = Field(1.0, gt=0, le=1)
    """Share of requests recorded (each request kept or left out whole)."""
    exclude: list[str] = Field(default_factory=list)
    """Input columns never written (names, e-mail addresses, ...)."""
    retention_days: float | None = Field(None, gt=0)
    """Capture files older than this are deleted (at start and at every new file)."""
    file_mode: str = "600"
    """Permissions of local capture files, octal: readable by the owner only by default."""
    max_file_rows: int = Field(100_000, ge=1)
    max_file_seconds: float = Field(60.0, gt=0)
    """A file is written when it holds this many rows, or its first row is this old."""
    queue_rows: int = Field(50_000, ge=1)
    """Rows waiting to be written at most; beyond, requests are still answered but their
    rows dropped (and counted)."""

    @field_validator("file_mode")
    @classmethod
    def _octal(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise ValueError(f"file_mode '{value}' is not an octal mode like 600 or 640")
        return value


class MonitorConfig(StrictModel):
    """When ``kennel monitor`` calls a batch drifted and exits 3 (see docs/monitoring.md)."""

    psi: float = Field(0.2, gt=0)
    """A column's PSI (less its expected sampling noise) at or above this, and ..."""
    p_value: float = Field(0.01, gt=0, lt=1)
    """... its test's p-value below this: the column drifted."""
    missing_change: float = Field(0.1, gt=0, le=1)
    """Or its share of missing values moved by this much (0.1 = ten points)."""
    new_category: float = Field(0.05, gt=0, le=1)
    """Or one value never seen in training holds this share of the rows."""
    invalid: float = Field(0.01, gt=0, le=1)
    """Or this share of its values would be refused (text in a number column)."""
    drift_share: float = Field(0.25, gt=0, le=1)
    """The batch drifted when this share of the input columns did (dates left out: they move
    forward by nature) ..."""
    output_drift: bool = True
    """... or when the model's outputs did."""
    max_metric_drop: float = Field(0.05, ge=0)
    """With labels: the main metric may be this much worse than on the holdout (absolute)."""
    min_rows: int = Field(100, ge=1)
    """Fewer rows than this: reported, never called drifted (too few to tell)."""
    chunk_size: int = Field(100_000, ge=1)
    """Rows read at a time (memory stays flat whatever the batch size)."""
    bins: int = Field(20, ge=2, le=100)
    """Bins per number column in the reference profile saved with each model."""


# --------------------------------------------------------------------------- root
class Config(BaseSettings):
    """The whole configuration. ``Config()`` alone gives the defaults plus ``KENNEL_*``
    environment variables; :func:`load_config` adds YAML files and CLI overrides."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        validate_assignment=True,
    )

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    resource: ResourceConfig = Field(default_factory=ResourceConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    def redacted(self) -> dict[str, Any]:
        """Plain data with every secret shown as ``**********``; safe to log or save."""
        return self.model_dump(mode="json")

    def secret_values(self) -> list[str]:
        """The plain-text secrets in this config, so log handlers can mask them."""
        found: list[str] = []

        def walk(obj: Any) -> None:
            if isinstance(obj, SecretStr):
                if value := obj.get_secret_value():
                    found.append(value)
            elif isinstance(obj, BaseModel):
                for name in type(obj).model_fields:
                    walk(getattr(obj, name))
            elif isinstance(obj, Mapping):
                for item in obj.values():
                    walk(item)
            elif isinstance(obj, list | tuple):
                for item in obj:
                    walk(item)

        walk(self)
        if self.tracking.uri:
            found += url_secrets(self.tracking.uri)
        return found

    def flat(self) -> dict[str, Any]:
        """The redacted config flattened with dotted keys (``model.params.num_leaves``)."""
        return flatten(self.redacted())

    def digest(self) -> str:
        """A stable hash of the redacted config (tag ``kennel.config_hash``)."""
        text = json.dumps(self.redacted(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.redacted(), sort_keys=False)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out
