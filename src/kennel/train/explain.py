"""What drove a training run's predictions, in the user's own columns: the mean absolute
contribution of each raw input column on (a seeded sample of) the test split, as
``contributions.json``. The plot process draws it (a bar chart, and dependence plots of value
against contribution for the columns that matter most) with the run's other plots;
``report.html`` shows them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kennel import tracking
from kennel.util import first_line, write_json

logger = logging.getLogger(__name__)

CONTRIBUTIONS_FILE = "contributions.json"
#: Test rows explained for the summary (a seeded sample when the split is larger): exact
#: tree contributions cost far more than a prediction, and the ranking is stable long before.
SUMMARY_ROWS = 1000
#: Columns given a dependence plot.
DEPENDENCE_PLOTS = 3


@dataclass
class Explained:
    """The summary (``contributions.json``) and, for the dependence plots, the values and
    contributions of its top columns: numbers as floats, anything else as text."""

    summary: dict[str, Any]
    dependence: list[dict[str, Any]] = field(default_factory=list)


def explain_summary(
    api: Any, rows: pd.DataFrame, output_dir: Path, *, seed: int = 0
) -> Explained | None:
    """Explain ``rows`` (raw test rows, sampled to :data:`SUMMARY_ROWS`) and log
    ``contributions.json``; None when the family cannot explain (said once in the log)."""
    if len(rows) > SUMMARY_ROWS:
        rows = rows.sample(SUMMARY_ROWS, random_state=seed).sort_index()
    inputs = rows[[c for c in api.processor.raw_columns if c in rows.columns]]
    try:
        contributions = api.explain(inputs)
    except NotImplementedError as exc:
        logger.info("no contributions summary: %s", first_line(exc))
        return None
    columns = [c for c in contributions.columns if c != "contrib_base"]
    importance = contributions[columns].abs().mean().sort_values(ascending=False)
    summary = {
        "rows": len(rows),
        "output": _output_name(api.processor.task),
        "base": float(contributions["contrib_base"].mean()),
        "mean_abs": {c.removeprefix("contrib_"): float(v) for c, v in importance.items()},
    }
    path = write_json(output_dir / CONTRIBUTIONS_FILE, summary)
    tracking.log_artifact_file(path)
    top = ", ".join(f"{k} {v:.3g}" for k, v in list(summary["mean_abs"].items())[:5])
    logger.info("mean |contribution| on %d test rows (%s): %s", len(rows), summary["output"], top)
    dependence = [
        _dependence_points(name, inputs[name], contributions[f"contrib_{name}"])
        for name in list(summary["mean_abs"])[:DEPENDENCE_PLOTS]
    ]
    return Explained(summary, dependence)


def _dependence_points(name: str, values: pd.Series, contrib: pd.Series) -> dict[str, Any]:
    """A column's values (floats when nearly all are numbers with more than 10 distinct
    values, else text with ``(missing)``) and its contributions."""
    numbers = pd.to_numeric(values, errors="coerce")
    numeric = bool(numbers.notna().mean() > 0.9 and values.nunique() > 10)
    if numeric:
        shown = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = values.astype(object).where(values.notna(), "(missing)")
        shown = np.array([str(v) for v in text], dtype=str)
    return {
        "name": name,
        "numeric": numeric,
        "values": shown,
        "contrib": contrib.to_numpy(dtype=np.float64),
    }


def _output_name(task: str | None) -> str:
    return {"binary": "log-odds", "multiclass": "predicted class's margin"}.get(
        task or "", "predicted value"
    )
