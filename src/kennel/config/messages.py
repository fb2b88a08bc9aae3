"""Configuration errors in one line: the key path, the bad value, what was expected, where the
value came from, and the closest valid name."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from kennel.suggest import did_you_mean


def source_of(sources: Mapping[str, str], key: str) -> str:
    """Where the value of dotted ``key`` came from (``file cat.yaml``, ``CLI``, ...): the
    deepest layer that set it or a section above it, else ``default``."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        if (label := sources.get(".".join(parts[:end]))) is not None:
            return label
    below = [label for k, label in sources.items() if k.startswith(key + ".")]
    return below[-1] if below else "default"


def suggest(word: str, options: Any, prefix: str = "") -> str:
    return did_you_mean(word, options, prefix=prefix, n=3)


def format_validation(
    exc: ValidationError,
    *,
    prefix: str = "",
    sources: Mapping[str, str] | None = None,
    model: type[BaseModel],
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
        siblings = _fields_at(model, [str(p) for p in err["loc"]][:-1])
        message = "unknown key" + suggest(loc[-1], siblings)
        shown = ""
    where = ""
    if sources is not None:
        where = f" (from {source_of(sources, path)})"
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
