"""Types shared by the data room and the model families, importing neither.

``kennel.data`` produces them and ``kennel.families`` consumes them; keeping them here breaks
the import circle ``config -> families -> families.base -> data -> families.base``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Task = Literal["binary", "multiclass", "regression"]

#: What kind of values a raw input column holds, as kennel saw it in training:
#: ``integer`` (whole numbers, also float columns holding only whole numbers and missing
#: values), ``float``, ``string``, ``boolean``, ``category`` (pandas ``category``),
#: ``datetime`` (timezone-naive), ``datetime_tz`` and ``mixed`` (an object column holding
#: several Python types).
InputKind = Literal[
    "integer", "float", "string", "boolean", "category", "datetime", "datetime_tz", "mixed"
]


@dataclass(frozen=True)
class ColumnSpec:
    """One raw input column as the served model accepts it (the MLflow signature's source)."""

    name: str
    kind: InputKind
    required: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs to know about the data; saved with the model."""

    task: Task
    n_classes: int
    """Number of classes (1 for regression)."""
    numeric: list[str]
    categorical: dict[str, int]
    """Categorical feature name -> vocabulary size (codes 0..size-1; -1 is unknown/missing)."""

    @property
    def features(self) -> list[str]:
        """Feature column order as produced by ``DataProcessor.transform``."""
        return [*self.numeric, *self.categorical]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n_classes": self.n_classes,
            "numeric": list(self.numeric),
            "categorical": dict(self.categorical),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            task=data["task"],
            n_classes=int(data["n_classes"]),
            numeric=list(data["numeric"]),
            categorical={k: int(v) for k, v in data["categorical"].items()},
        )


__all__ = ["ColumnSpec", "InputKind", "ModelSpec", "Task"]
