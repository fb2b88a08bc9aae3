"""The search space: ``search.space`` checked against the config, turned into Optuna
distributions, and sampled values applied to a config (validated like any override)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr, ValidationError

from kennel.config import (
    WITH_SECRETS,
    Categorical,
    Config,
    ConfigError,
    FloatRange,
    IntRange,
    format_validation,
)

#: Config sections a search space may not touch: they steer the search or its bookkeeping.
FORBIDDEN_SECTIONS = ("search",)


def _plain(config: Config) -> dict[str, Any]:
    """The config as plain data with real secret values (for re-validation only)."""
    data = config.model_dump(context={WITH_SECRETS: True})

    def unwrap(obj: Any) -> Any:
        if isinstance(obj, SecretStr):
            return obj.get_secret_value()
        if isinstance(obj, dict):
            return {k: unwrap(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [unwrap(v) for v in obj]
        return obj

    return unwrap(data)


def apply_values(config: Config, values: Mapping[str, Any]) -> Config:
    """A new config with each dotted path set to its value, validated like ``load_config``
    (unknown keys name the closest valid one)."""
    data = _plain(config)
    for path, value in values.items():
        parts = path.split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"search.space '{path}': '{'.'.join(parts[: depth + 1])}' is a value, "
                    f"not a section"
                )
            node = child
        node[parts[-1]] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, model=Config)) from None


def _samples(spec: FloatRange | IntRange | Categorical) -> list[Any]:
    if isinstance(spec, Categorical):
        return list(spec.choices)
    return [spec.low, spec.high] if spec.low != spec.high else [spec.low]


def validate_space(config: Config) -> None:
    """Every path of ``search.space`` must be a config key, and every bound or choice a
    valid value for it; raises :class:`ConfigError` (exit 2) naming the first bad one."""
    space = config.search.space
    if not space:
        raise ConfigError(
            "search.space is empty; add ranges keyed by config paths, e.g. "
            "search.space: {model.params.num_leaves: {type: int, low: 4, high: 64}}"
        )
    for path, spec in space.items():
        if not path or any(not part for part in path.split(".")):
            raise ConfigError(f"search.space key '{path}' is not a dotted config path")
        if path.split(".")[0] in FORBIDDEN_SECTIONS:
            raise ConfigError(f"search.space key '{path}': the search section cannot be searched")
        for value in _samples(spec):
            try:
                apply_values(config, {path: value})
            except ConfigError as exc:
                detail = str(exc).removeprefix("invalid config: ")
                raise ConfigError(
                    f"invalid search.space '{path}' (value {value!r}): {detail}"
                ) from None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


class Space:
    """``search.space`` as Optuna distributions; non-scalar choices (lists such as
    ``hidden_units``) travel through Optuna as JSON strings."""

    def __init__(self, space: Mapping[str, FloatRange | IntRange | Categorical]) -> None:
        from optuna.distributions import (
            BaseDistribution,
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        self.specs = dict(space)
        self.encoded: set[str] = set()
        self.distributions: dict[str, BaseDistribution] = {}
        for path, spec in self.specs.items():
            if isinstance(spec, FloatRange):
                dist: BaseDistribution = FloatDistribution(spec.low, spec.high, log=spec.log)
            elif isinstance(spec, IntRange):
                step = 1 if spec.log else spec.step
                dist = IntDistribution(spec.low, spec.high, log=spec.log, step=step)
            else:
                choices = list(spec.choices)
                if not all(_is_scalar(c) for c in choices):
                    self.encoded.add(path)
                    choices = [json.dumps(c, sort_keys=True) for c in choices]
                dist = CategoricalDistribution(choices)
            self.distributions[path] = dist

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna's params -> config values."""
        return {
            path: json.loads(value) if path in self.encoded else value
            for path, value in params.items()
        }
