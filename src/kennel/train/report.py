"""A training run described for people: the one-line description of the runs table
(``mlflow.note.content``) and ``report.html``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kennel import registry, tracking
from kennel.config import Config
from kennel.metrics import primary_metric

logger = logging.getLogger(__name__)


def describe(
    family: str,
    processor: Any,
    metrics: dict[str, float],
    model: str | None,
    version: int | None,
    aliases: dict[str, int],
) -> str:
    """``cat on breast_cancer (binary): test_roc_auc 0.9925; registered breast-cancer v3``."""
    key = f"test_{primary_metric(processor.task)}"
    text = f"{family} on {processor.source_name} ({processor.task})"
    if key in metrics:
        text += f": {key} {metrics[key]:.4f}"
    if version is not None:
        held = sorted(a for a, v in aliases.items() if v == version)
        text += f"; registered {model} v{version}" + "".join(f" @{a}" for a in held)
    return text


def log_training_report(
    config: Config,
    output_dir: Path,
    name: str,
    family: str,
    processor: Any,
    counts: dict[str, int],
    metrics: dict[str, float],
    registration: registry.Registration | None,
    plots: list[Path],
) -> None:
    """The description tag and ``report.html``: the aliases are read once, as they are now;
    the holders' cached scores on the holdout the new version was scored on are shown."""
    from kennel import report

    model = registration.name if registration else None
    version = registration.version if registration else None
    holdout = registration.holdout if registration else None
    aliases = registry.aliases(model) if model else {}
    description = describe(family, processor, metrics, model, version, aliases)
    tracking.set_tags({"mlflow.note.content": description})
    page = report.RunReport(
        title=name,
        kind="training",
        summary={
            "family": family,
            "data": processor.source_name,
            "source": processor.source_uri,
            "task": processor.task,
            "rows (train / valid / test)": f"{counts['train']} / {counts['valid']} / "
            f"{counts['test']}",
            "features": counts["features"],
            "registered": f"{model} v{version}" if model else "not registered",
        },
        metrics=metrics,
        holdout=holdout.description if holdout else "",
        model_name=model,
        version=version,
        aliases=aliases,
        holders=report.holders(model, aliases, holdout.id, config.registry.environments)
        if model and holdout
        else [],
        columns=processor.column_report()["columns"],
        config_yaml=config.to_yaml(),
        plots=plots,
    )
    report.log_report(page, output_dir)
