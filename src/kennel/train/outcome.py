"""What a training run returns and writes as ``result.json``, and the ``--log-model-if`` gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from kennel.errors import UserError


@dataclass(frozen=True)
class ModelGate:
    """``--log-model-if val_roc_auc>0.99``: log the model and plots only when the metric
    passes (the search's ``log_models=improving`` passes the best value so far)."""

    metric: str
    sign: str
    threshold: float

    SIGNS: ClassVar[tuple[str, ...]] = (">=", "<=", ">", "<")

    @classmethod
    def parse(cls, text: str) -> ModelGate:
        for sign in cls.SIGNS:
            name, found, value = text.partition(sign)
            if found and name.strip():
                try:
                    return cls(name.strip(), sign, float(value))
                except ValueError:
                    break
        raise UserError(
            f"--log-model-if '{text}': expected METRIC>VALUE, METRIC>=VALUE, METRIC<VALUE or "
            f"METRIC<=VALUE, e.g. val_roc_auc>0.99"
        )

    def passes(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or np.isnan(value):
            return False
        return {
            ">=": value >= self.threshold,
            "<=": value <= self.threshold,
            ">": value > self.threshold,
            "<": value < self.threshold,
        }[self.sign]

    def __str__(self) -> str:
        return f"{self.metric}{self.sign}{self.threshold:.6g}"


@dataclass
class TrainOutcome:
    """The machine-readable result of a training run."""

    status: str
    run_id: str
    experiment_id: str
    family: str
    task: str
    model_uri: str | None
    registered_model: str | None
    registered_version: int | None
    metrics: dict[str, float]
    best_step: int
    output_dir: str
    tracking_uri: str
    promotion: dict[str, Any] | None = None
    logged_model_uri: str | None = None
    """``models:/m-…``: the logged model itself (what the search registers)."""
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
