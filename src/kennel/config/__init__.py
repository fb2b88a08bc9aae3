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

from kennel.config.loading import (
    Resolved,
    check_override_key,
    deep_merge,
    environment_layer,
    load_config,
    parse_override,
    read_yaml,
    resolve_config_path,
)
from kennel.config.messages import format_validation
from kennel.config.sections import (
    DEFAULT_ENV,
    ENV_PREFIX,
    REDACTED,
    WITH_SECRETS,
    CaptureConfig,
    Categorical,
    Config,
    CsvConfig,
    DataConfig,
    FloatRange,
    GateConfig,
    IntRange,
    LoggingConfig,
    ModelConfig,
    MonitorConfig,
    RegistryConfig,
    ResourceConfig,
    SearchConfig,
    SplitConfig,
    StrictModel,
    TrackingConfig,
    TrainingConfig,
    flatten,
)
from kennel.errors import ConfigError

# ``from kennel.config import project_root`` keeps working (the function lives in the
# import-light kennel.paths so that ``--help`` and .env loading skip pydantic).
from kennel.paths import project_root

__all__ = [
    "DEFAULT_ENV",
    "ENV_PREFIX",
    "REDACTED",
    "WITH_SECRETS",
    "CaptureConfig",
    "Categorical",
    "Config",
    "ConfigError",
    "CsvConfig",
    "DataConfig",
    "FloatRange",
    "GateConfig",
    "IntRange",
    "LoggingConfig",
    "ModelConfig",
    "MonitorConfig",
    "RegistryConfig",
    "Resolved",
    "ResourceConfig",
    "SearchConfig",
    "SplitConfig",
    "StrictModel",
    "TrackingConfig",
    "TrainingConfig",
    "check_override_key",
    "deep_merge",
    "environment_layer",
    "flatten",
    "format_validation",
    "load_config",
    "parse_override",
    "project_root",
    "read_yaml",
    "resolve_config_path",
]
