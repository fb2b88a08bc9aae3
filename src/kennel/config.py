"""The typed configuration tree and the layered loader.

Every behaviour of kennel is a field here, with its default in code. Values are layered,
lowest to highest:

1. defaults in the classes below;
2. the YAML file named by ``-c/--config`` (a bare name resolves under ``configs/``);
3. the environment overlay ``configs/env/<KENNEL_ENV>.yaml`` (``dev`` when unset);
4. environment variables ``KENNEL_<SECTION>__<KEY>`` (a ``.env`` file is loaded into the
   environment once at start-up by the CLI, never at import);
5. CLI overrides ``section.key=value`` (values parsed as YAML scalars or lists).

Everything is strict: unknown keys at any depth, wrong types and bad values raise
:class:`~kennel.errors.ConfigError` with one line naming the key path, the bad value, what
was expected and where the value came from.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from kennel.errors import ConfigError

# Re-exported: ``from kennel.config import project_root`` keeps working (the function lives
# in the import-light kennel.paths so that ``--help`` and .env loading skip pydantic).
from kennel.paths import project_root  # noqa: F401

ENV_PREFIX = "KENNEL_"
#: Environment variables with the prefix that are not config keys.
RESERVED_ENV = {"KENNEL_ENV", "KENNEL_HOME"}
DEFAULT_ENV = "dev"
REDACTED = "**********"


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

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + valid + test must sum to 1, got {self.train} + {self.valid} + "
                f"{self.test} = {total:g}"
            )
        return self


class DataConfig(StrictModel):
    """Where the table lives and how to read it."""

    source: str = "builtin:breast_cancer"
    """``builtin:<name>``, a local path, ``file://`` or any fsspec URL (CSV or Parquet)."""
    format: Literal["auto", "csv", "parquet"] = "auto"
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
                    _format_validation(exc, prefix="params", model=family.Params)
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

    uri: str | None = None
    experiment: str = "kennel"
    run_name: str | None = None
    log_model: bool = True
    log_plots: bool = True
    plots_in_background: bool = True
    """Draw the plots in a second process while the model is logged (uses a spare core);
    parallel search trials, which have no spare core, draw them in-process."""


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


# --------------------------------------------------------------------------- loading
class Resolved:
    """A loaded config and, for each dotted key, where its value came from."""

    def __init__(self, config: Config, sources: dict[str, str]) -> None:
        self.config = config
        self.sources = sources

    def source_of(self, key: str) -> str:
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            if (label := self.sources.get(".".join(parts[:end]))) is not None:
                return label
        below = [label for k, label in self.sources.items() if k.startswith(key + ".")]
        return below[-1] if below else "default"

    def explain(self) -> str:
        """YAML of the resolved config with the source of every value as a comment."""
        lines = []
        for key, value in self.config.flat().items():
            rendered = json.dumps(value, default=str)
            lines.append(f"{key}: {rendered}  # {self.source_of(key)}")
        return "\n".join(lines) + "\n"


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


def resolve_config_path(name: str | os.PathLike[str]) -> Path:
    """A path as given if it exists, else a bare name under the project's ``configs/``."""
    path = Path(name)
    if path.exists():
        return path.resolve()
    for base in (Path.cwd() / "configs", project_root() / "configs"):
        if (base / path).exists():
            return (base / path).resolve()
    raise ConfigError(
        f"config file '{name}' not found (looked in {Path.cwd()} and {project_root() / 'configs'})"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; empty files are an empty mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections, got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``model.params.num_leaves=63`` -> (['model', 'params', 'num_leaves'], 63)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override '{text}'; expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def nest(path: Sequence[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into a copy of ``base``; mappings merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def environment_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """``KENNEL_<SECTION>__<KEY>`` variables as a nested mapping (parsed by
    pydantic-settings: JSON for lists and mappings); unknown sections are errors."""
    sections = set(Config.model_fields)
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in RESERVED_ENV:
            continue
        section = upper[len(ENV_PREFIX) :].split("__")[0].lower()
        if section not in sections:
            hint = _did_you_mean(section, sections)
            raise ConfigError(
                f"unknown environment variable {name}: no config section '{section}'{hint}"
            )
    source = EnvSettingsSource(
        Config,
        case_sensitive=False,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_parse_none_str="null",
    )
    source.env_vars = {k.lower(): v for k, v in environ.items()}
    try:
        return source()
    except Exception as exc:  # pydantic-settings reports bad JSON as SettingsError
        raise ConfigError(f"bad environment variable value: {exc}") from None


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    kennel_env: str | None = None,
) -> Resolved:
    """Resolve the configuration from every source; see the module docstring."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        path = resolve_config_path(config_file)
        layers.append((f"file {path.name}", read_yaml(path)))
    env_name = kennel_env or environ.get("KENNEL_ENV") or DEFAULT_ENV
    overlay = project_root() / "configs" / "env" / f"{env_name}.yaml"
    if overlay.exists():
        layers.append((f"env overlay {env_name}.yaml", read_yaml(overlay)))
    elif kennel_env or environ.get("KENNEL_ENV"):
        raise ConfigError(
            f"KENNEL_ENV '{env_name}' has no overlay file {overlay}; expected one of: "
            + ", ".join(sorted(p.stem for p in overlay.parent.glob("*.yaml")))
        )
    env_values = environment_layer(environ)
    if env_values:
        layers.append(("environment", env_values))
    for text in overrides:
        path_parts, value = parse_override(text)
        layers.append((f"CLI {'.'.join(path_parts)}", nest(path_parts, value)))

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for label, layer in layers:
        _check_keys(layer, label)
        merged = deep_merge(merged, layer)
        for key in flatten(layer):
            for existing in [k for k in sources if k == key or k.startswith(key + ".")]:
                del sources[existing]
            sources[key] = _source_label(label, key)
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, sources=sources)) from None
    return Resolved(config, sources)


def _source_label(label: str, key: str) -> str:
    if label == "environment":
        return "environment " + ENV_PREFIX + key.upper().replace(".", "__")
    if label.startswith("CLI "):
        return "CLI"
    return label


# --------------------------------------------------------------------------- errors
def _check_keys(layer: Mapping[str, Any], label: str) -> None:
    """Unknown keys fail before validation, with the closest valid names."""

    def walk(data: Mapping[str, Any], model: type[BaseModel], prefix: str) -> None:
        if not isinstance(data, Mapping):
            return
        fields = model.model_fields
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in fields:
                hint = _did_you_mean(str(key), fields, prefix)
                origin = _source_label(label, path)
                raise ConfigError(
                    f"unknown config key '{path}' (from {origin}){hint}; valid keys here: "
                    f"{', '.join(fields)}"
                )
            annotation = fields[key].annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(value, annotation, path)

    walk(layer, Config, "")


def check_override_key(key: str) -> None:
    """A :class:`ConfigError` when the dotted ``key`` of a ``key=value`` override names no
    setting (``model.params.<name>`` must be a param of some family)."""
    parts = key.split(".")
    if parts[:2] == ["model", "params"] and len(parts) > 2:
        from kennel.families import available_families, get_family

        names = {f for n in available_families() for f in get_family(n).params.model_fields}
        if parts[2] not in names:
            raise ConfigError(
                f"unknown config key '{key}'{_did_you_mean(parts[2], names, 'model.params')}"
            )
        return
    nested: dict[str, Any] = {}
    node = nested
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = None
    _check_keys(nested, "CLI")


def _did_you_mean(word: str, options: Any, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    close = [f"{prefix}.{c}" if prefix else c for c in close]
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _format_validation(
    exc: ValidationError,
    *,
    prefix: str = "",
    sources: Mapping[str, str] | None = None,
    model: type[BaseModel] | None = None,
) -> str:
    """One line for the first error: key path, bad value, what was expected, source."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    # Discriminated unions put the tag in the location; drop it for readability.
    loc = [p for i, p in enumerate(loc) if p not in {"float", "int", "categorical"} or i == 0]
    message = err["msg"].removeprefix("Value error, ")
    nested = re.match(r"^(params(?:\.[\w-]+)*): (.*)$", message)
    if nested and loc and loc[-1] == "model":
        # The family's Params error, raised inside ModelConfig: splice its path in.
        loc = [*loc, *nested.group(1).split(".")]
        message = nested.group(2)
    path = ".".join([prefix, *loc] if prefix else loc)
    value = err.get("input")
    shown = "" if isinstance(value, Mapping) or nested else f" (got {value!r})"
    if err["type"] == "extra_forbidden":
        siblings = _fields_at(model or Config, [str(p) for p in err["loc"]][:-1])
        message = "unknown key" + _did_you_mean(loc[-1], siblings)
        shown = ""
    where = ""
    if sources is not None:
        resolved = Resolved.__new__(Resolved)
        resolved.sources = dict(sources)
        where = f" (from {resolved.source_of(path)})"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    text = f"{path}: {message}{shown}{where}{more}" if path else f"{message}{shown}{more}"
    return "invalid config: " + text if not prefix else text


def _fields_at(model: type[BaseModel], loc: Sequence[str]) -> list[str]:
    """Field names of the model found by walking ``loc`` through nested models."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    return list(getattr(current, "model_fields", {}) or [])
