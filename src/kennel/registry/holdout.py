"""The holdout every registered version is scored on, and its identity.

Two holdouts with the same id hold the same rows and labels, so a score cached on a version
for that id (``kennel.score.<id>``) is reused instead of predicting again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from kennel.config import Config
    from kennel.data import DataProcessor


def holdout_id(processor: DataProcessor, *, whole_file: bool = False) -> str:
    """Identity of a holdout: the data's digest, its target and (for a test split) the
    split settings (``time_on``/``group_on`` included). Two holdouts with the same id hold
    the same rows and labels."""
    parts: dict[str, Any] = {"digest": processor.digest, "target": processor.target}
    if not whole_file:  # settings left unset are left out: older ids stay the same
        split = processor.config.split.model_dump()
        parts["split"] = {key: value for key, value in split.items() if value is not None}
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Holdout:
    """Rows (with the target) every version is scored on, and their identity."""

    rows: pd.DataFrame
    target: str
    id: str
    description: str

    @classmethod
    def from_config(cls, config: Config, data_file: str | None = None) -> Holdout:
        """The configured test split, or every row of ``data_file`` (same target column
        as the configured data unless ``data.target`` says otherwise)."""
        from kennel.data import DataProcessor

        data_config = config.data
        if data_file:
            target = data_config.target or DataProcessor(data_config).target
            data_config = data_config.model_copy(update={"source": data_file, "target": target})
        processor = DataProcessor(data_config)
        frame = processor.load()
        if data_file:
            return cls(
                rows=frame,
                target=processor.target,
                id=holdout_id(processor, whole_file=True),
                description=f"all rows of {data_file}",
            )
        return cls.from_processor(processor, processor.split(frame).test)

    @classmethod
    def from_processor(cls, processor: DataProcessor, test: pd.DataFrame) -> Holdout:
        """The test split a training run just used (same identity as ``from_config``)."""
        return cls(
            rows=test,
            target=processor.target,
            id=holdout_id(processor),
            description=f"test split of {processor.source_name}",
        )
