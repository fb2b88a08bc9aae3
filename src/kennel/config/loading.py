"""The layered loader: defaults < the YAML file < the environment overlay < environment
variables (and ``.env``) < CLI overrides; every layer checked for unknown keys before the
whole is validated."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import EnvSettingsSource

from kennel.config.messages import format_validation, source_of, suggest
from kennel.config.sections import DEFAULT_ENV, ENV_PREFIX, RESERVED_ENV, Config, flatten
from kennel.errors import ConfigError
from kennel.paths import project_root


class Resolved:
    """A loaded config and, for each dotted key, where its value came from."""

    def __init__(self, config: Config, sources: dict[str, str]) -> None:
        self.config = config
        self.sources = sources

    def source_of(self, key: str) -> str:
        return source_of(self.sources, key)

    def explain(self) -> str:
        """YAML of the resolved config with the source of every value as a comment."""
        lines = []
        for key, value in self.config.flat().items():
            rendered = json.dumps(value, default=str)
            lines.append(f"{key}: {rendered}  # {self.source_of(key)}")
        return "\n".join(lines) + "\n"


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
            hint = suggest(section, sections)
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
        raise ConfigError(format_validation(exc, sources=sources, model=Config)) from None
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
                hint = suggest(str(key), fields, prefix)
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
                f"unknown config key '{key}'{suggest(parts[2], names, 'model.params')}"
            )
        return
    nested: dict[str, Any] = {}
    node = nested
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = None
    _check_keys(nested, "CLI")
