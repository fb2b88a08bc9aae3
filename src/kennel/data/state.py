"""The fitted processor's state: plain JSON (``processor.json``, never a pickle) saved with
the model, so preprocessing cannot drift between training and serving. Older states (version
1) still load.

Version 2 grew, without a new version number, what reading values typed by hand needs:
``text`` (the :class:`~kennel.data.labels.TextRules`: strip, merge_case), ``target_format``
(a target of numbers written as text) and each role's ``number_format``. A state without
them was saved before they existed and keeps reading values as written (no stripping, no case
merge), so an older model predicts exactly as it did."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from kennel.config import DataConfig
from kennel.data.columns import ColumnRole
from kennel.data.labels import rules_from_state
from kennel.errors import DataError

logger = logging.getLogger(__name__)

STATE_FILE = "processor.json"
STATE_VERSION = 2
#: Version-1 states named MLflow types; these are the kinds they meant.
_V1_KINDS = {"double": "float", "long": "integer", "string": "string", "boolean": "boolean"}

P = TypeVar("P")


def state_of(dp: Any) -> dict[str, Any]:
    """A fitted processor's state as a JSON-able dict."""
    config = dp.config.model_dump(mode="json", exclude={"storage_options"})
    return {
        "version": STATE_VERSION,
        "config": config,
        "source_name": dp.source_name,
        "source_uri": dp.source_uri,
        "digest": dp.digest,
        "n_rows": dp.n_rows,
        "rows_without_target": dp.rows_without_target,
        "target": dp.target,
        "task": dp.task,
        "classes": list(dp.classes),
        "numeric": list(dp.numeric),
        "categorical": {k: list(v) for k, v in dp.categorical.items()},
        "raw_columns": list(dp.raw_columns),
        "input_kinds": dict(dp.input_kinds),
        "nullable": list(dp.nullable),
        "roles": [r.to_dict() for r in dp.roles],
        "examples": dp._examples,
        "text": dp.rules.to_dict(),
        "target_format": dp.target_format,
    }


def save_state(state: Mapping[str, Any], path_dir: str | Path) -> Path:
    """Write ``processor.json`` into ``path_dir`` (created if needed); returns the file."""
    directory = Path(path_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / STATE_FILE
    target.write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    return target


def restore(cls: type[P], state: Mapping[str, Any]) -> P:
    """A processor of class ``cls`` with the state's fields set (the caller finishes it)."""
    version = state.get("version")
    if version not in (1, STATE_VERSION):
        raise DataError(f"{STATE_FILE}: unsupported state version {version!r}")
    try:
        config = DataConfig.model_validate(state.get("config") or {})
    except Exception:
        logger.warning("%s: saved data config no longer validates; using defaults", STATE_FILE)
        config = DataConfig(target=state["target"])
    dp: Any = cls(config)  # type: ignore[call-arg]
    dp.source_name = state["source_name"]
    dp.source_uri = state["source_uri"]
    dp.digest = state.get("digest")
    dp.n_rows = state.get("n_rows")
    dp.rows_without_target = int(state.get("rows_without_target") or 0)
    dp.target = state["target"]
    dp.task = state["task"]
    dp.classes = list(state["classes"])
    dp.numeric = list(state["numeric"])
    dp.categorical = {k: list(v) for k, v in state["categorical"].items()}
    dp.raw_columns = list(state["raw_columns"])
    dp.nullable = list(state["nullable"])
    dp._examples = list(state.get("examples", []))
    if version == 1:
        kinds = {c: _V1_KINDS.get(t, "string") for c, t in state["input_dtypes"].items()}
        dp.input_kinds = kinds
        dp.roles = [
            ColumnRole(c, "numeric" if c in dp.numeric else "categorical", kinds[c], "", [c])
            for c in dp.raw_columns
        ] + [ColumnRole(c, "dropped", "-", "") for c in state.get("removed", [])]
    else:
        dp.input_kinds = dict(state["input_kinds"])
        dp.roles = [ColumnRole.from_dict(r) for r in state["roles"]]
    dp.rules = rules_from_state(state.get("text"))
    dp.target_format = state.get("target_format")
    dp._loaded_task = dp.task
    dp._loaded_classes = list(dp.classes)
    return dp


def read_state(path_dir: str | Path) -> dict[str, Any]:
    """The state in ``path_dir/processor.json`` (or the file itself)."""
    path = Path(path_dir)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.exists():
        raise DataError(f"data processor state not found: {path}")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the data processor state: {exc}") from None
