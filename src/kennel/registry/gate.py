"""The promotion gate: a decision (what moved, why, by whom) and the rule that takes it."""

from __future__ import annotations

import getpass
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kennel import metrics as km
from kennel.errors import UserError

if TYPE_CHECKING:
    from kennel.config import Config

#: Exit code of ``kennel promote`` when the gate refused the candidate (the alias did not
#: move). Distinct from 0 (moved or already there) and 2 (bad input) so scripts can tell.
EXIT_REFUSED = 3

DECISION_TAG = "kennel.promotion."
"""Prefix of the audit tags on a version: ``kennel.promotion.<env>.<field>``."""
REPORT_FILE = "promotion.json"

PROMOTED = "promoted"
FORCED = "forced"
REFUSED = "refused"
UNCHANGED = "unchanged"
ROLLED_BACK = "rolled_back"


@dataclass
class Decision:
    """What a promotion or rollback did (or, in a dry run, would do); also the report."""

    model_name: str
    environment: str
    candidate: int | None
    previous: int | None
    metric: str = ""
    candidate_score: float | None = None
    previous_score: float | None = None
    min_delta: float = 0.0
    outcome: str = REFUSED
    """``promoted``, ``forced``, ``refused`` (gate), ``unchanged`` (already there) or
    ``rolled_back``."""
    promoted: bool = False
    """True when the alias moves (or, in a dry run, would move) to ``candidate``."""
    action: str = "promote"
    reason: str = ""
    dry_run: bool = False
    forced: bool = False
    holdout: str = ""
    holdout_id: str = ""
    report_run_id: str | None = None
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    user: str = field(default_factory=lambda: _user())

    @property
    def refused(self) -> bool:
        return self.outcome == REFUSED

    @property
    def exit_code(self) -> int:
        """0 when the alias moved or already pointed at the candidate, :data:`EXIT_REFUSED`
        when the gate said no (dry runs included, so CI can ask "would it pass?")."""
        return EXIT_REFUSED if self.refused else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for humans: what happened to which alias and why."""
        prefix = "dry run: " if self.dry_run else ""
        where = f"{self.model_name}@{self.environment}"
        if self.promoted:
            verb = "would move" if self.dry_run else "moved"
            return (
                f"{prefix}{where}: {verb} from {_name(self.previous)} to version "
                f"{self.candidate} ({self.outcome}: {self.reason})"
            )
        verb = "would keep" if self.dry_run else "kept"
        return (
            f"{prefix}{where}: {verb} {_name(self.previous)}, candidate version "
            f"{self.candidate} {self.outcome} ({self.reason})"
        )

    def tags(self) -> dict[str, str]:
        """The audit tags written on the candidate version."""
        prefix = f"{DECISION_TAG}{self.environment}."

        def text(value: Any) -> str:
            if value is None:
                return "none"
            if isinstance(value, float):
                return repr(value)
            return str(value)

        values = {
            "outcome": self.outcome,
            "action": self.action,
            "environment": self.environment,
            "time": self.time,
            "user": self.user,
            "previous": self.previous,
            "metric": self.metric,
            "candidate_score": self.candidate_score,
            "previous_score": self.previous_score,
            "min_delta": self.min_delta,
            "forced": str(self.forced).lower(),
            "reason": self.reason,
            "holdout": self.holdout,
            "report_run": self.report_run_id,
        }
        return {prefix + key: text(value)[:4000] for key, value in values.items()}


def _name(version: int | None) -> str:
    return "no version" if version is None else f"version {version}"


def decide(
    candidate_score: float | None,
    previous_score: float | None,
    metric: str,
    *,
    min_delta: float = 0.0,
    has_holder: bool = True,
    force: bool = False,
) -> tuple[str, str]:
    """The gate alone: ``(outcome, reason)`` for a candidate against the holder."""
    if force:
        return FORCED, "--force: gate skipped"
    if not has_holder:
        return PROMOTED, "no version held the alias"
    if candidate_score is None or math.isnan(candidate_score):
        return REFUSED, f"candidate has no {metric} on this holdout"
    if previous_score is None or math.isnan(previous_score):
        return PROMOTED, f"holder has no {metric} on this holdout"
    better = km.is_better(candidate_score, previous_score, metric, min_delta)
    if km.direction(metric) == "minimize":
        sign = "<=" if better else ">"
        bound = previous_score - min_delta
    else:
        sign = ">=" if better else "<"
        bound = previous_score + min_delta
    margin = f" (holder {previous_score:.6g} with min_delta {min_delta:g})" if min_delta else ""
    reason = f"{metric} {candidate_score:.6g} {sign} {bound:.6g}{margin}"
    return (PROMOTED if better else REFUSED), reason


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def gate_metric(config: Config, task: str) -> str:
    """``registry.gate.metric`` (a ``test_`` prefix is allowed), else the task's primary
    metric; a name the task does not have is a user error."""
    metric = config.registry.gate.metric or km.primary_metric(task)  # type: ignore[arg-type]
    metric = metric.removeprefix("test_")
    names = km.metric_names(task)  # type: ignore[arg-type]
    if metric not in names:
        raise UserError(
            f"registry.gate.metric '{metric}' does not exist for a {task} model; expected one "
            f"of: {', '.join(names)}"
        )
    return metric
