"""What drove a training run's predictions, in the user's own columns: the mean absolute
contribution of each raw input column on (a seeded sample of) the test split, as
``contributions.json``, a bar chart, and dependence plots (value against contribution) of the
columns that matter most. ``report.html`` shows them."""

from __future__ import annotations

import logging
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


def explain_summary(
    api: Any, rows: pd.DataFrame, output_dir: Path, *, plots: bool = True, seed: int = 0
) -> list[Path]:
    """Explain ``rows`` (raw test rows, sampled to :data:`SUMMARY_ROWS`), log
    ``contributions.json`` and the plots; returns the plot files (none when the family cannot
    explain: that is said once in the log)."""
    if len(rows) > SUMMARY_ROWS:
        rows = rows.sample(SUMMARY_ROWS, random_state=seed).sort_index()
    inputs = rows[[c for c in api.processor.raw_columns if c in rows.columns]]
    try:
        contributions = api.explain(inputs)
    except NotImplementedError as exc:
        logger.info("no contributions summary: %s", first_line(exc))
        return []
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
    drawn = _plots(output_dir / "explain", summary, inputs, contributions) if plots else []
    for plot in drawn:
        tracking.log_artifact_file(plot, artifact_path="plots")
    top = ", ".join(f"{k} {v:.3g}" for k, v in list(summary["mean_abs"].items())[:5])
    logger.info("mean |contribution| on %d test rows (%s): %s", len(rows), summary["output"], top)
    return drawn


def _output_name(task: str | None) -> str:
    return {"binary": "log-odds", "multiclass": "predicted class's margin"}.get(
        task or "", "predicted value"
    )


def _plots(
    folder: Path, summary: dict[str, Any], rows: pd.DataFrame, contributions: pd.DataFrame
) -> list[Path]:
    try:
        from kennel.report.plots import pyplot

        plt = pyplot()
        folder.mkdir(parents=True, exist_ok=True)
        made = [_bars(plt, folder / "contributions.png", summary)]
        for name in list(summary["mean_abs"])[:DEPENDENCE_PLOTS]:
            made.append(
                _dependence(plt, folder, name, rows[name], contributions[f"contrib_{name}"])
            )
        return made
    except Exception as exc:  # noqa: BLE001 - a plot is never worth failing the run for
        logger.warning("could not draw the contribution plots: %s", first_line(exc))
        return []


def _bars(plt: Any, path: Path, summary: dict[str, Any]) -> Path:
    items = list(summary["mean_abs"].items())[:20][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_xlabel(f"mean |contribution| to the {summary['output']}")
    ax.set_title(f"what drives the predictions ({summary['rows']} test rows)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _dependence(plt: Any, folder: Path, name: str, values: pd.Series, contrib: pd.Series) -> Path:
    """The column's value against its contribution: numbers as points, categories (and
    text) as one strip per value."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().mean() > 0.9 and values.nunique() > 10:
        ax.scatter(numbers, contrib, s=8, alpha=0.5)
        ax.set_xlabel(name)
    else:
        labels = values.astype(object).where(values.notna(), "(missing)").astype(str)
        order = labels.value_counts().index[:15]
        for i, label in enumerate(order):
            picked = contrib[labels == label].to_numpy()
            jitter = np.random.default_rng(i).uniform(-0.2, 0.2, len(picked))
            ax.scatter(i + jitter, picked, s=8, alpha=0.5)
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([str(o)[:16] for o in order], rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("contribution")
    ax.set_title(f"{name}: value and contribution", fontsize=10)
    fig.tight_layout()
    path = folder / f"dependence_{len(list(folder.glob('dependence_*.png'))):02d}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
