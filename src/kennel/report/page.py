"""``report.html``: one self-contained page per training or evaluation run, the first thing a
user opens in the MLflow UI (it previews HTML artifacts).

It shows the run at a glance: what ran (family, data, task, rows), the metrics on validation
and test next to the current holder of each environment alias on the same holdout (scores
kennel cached on those versions; a holder never scored on this holdout says so instead of
being scored here, which could import another family's library), the plots embedded as
data URIs, what each input column became, the resolved config, the registered version and
its aliases. No external URL, script or stylesheet: it opens offline and in the UI's
sandboxed preview.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1f2328;
max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#d0d7de;padding-bottom:4px} p.lead{color:#57606a;margin:0 0 16px}
table{border-collapse:collapse;font-size:14px;margin:4px 0}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:600} .muted{color:#6e7781} .plots img{max-width:520px;margin:6px 12px 6px 0;vertical-align:top;
border:1px solid #d0d7de} .plots img.wide{max-width:100%} pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:13px}
.tag{display:inline-block;background:#ddf4ff;border-radius:10px;padding:0 8px;margin-right:4px}
"""


@dataclass
class Holder:
    """The current holder of an environment alias and its cached scores on the holdout."""

    environment: str
    version: int
    scores: dict[str, float] | None = None
    """None: never scored on this holdout."""


@dataclass
class RunReport:
    """Everything the page shows; built by the pipeline (training) or ``kennel evaluate``."""

    title: str
    kind: str
    """``training`` or ``evaluation``."""
    summary: dict[str, Any]
    metrics: dict[str, float]
    holdout: str = ""
    model_name: str | None = None
    version: int | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    holders: list[Holder] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    config_yaml: str = ""
    plots: list[Path] = field(default_factory=list)

    def render(self) -> str:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{_e(self.title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{_e(self.title)}</h1>",
            f"<p class='lead'>{_e(self._lead())}</p>",
            _key_values(self.summary),
            "<h2>Metrics</h2>",
            self._metrics_table(),
        ]
        if self.plots:
            parts.append("<h2>Plots</h2><div class='plots'>")
            parts.extend(_image(path) for path in self.plots if path.exists())
            parts.append("</div>")
        if self.columns:
            parts += ["<h2>Input columns</h2>", _columns_table(self.columns)]
        if self.config_yaml:
            parts += ["<h2>Resolved config</h2>", f"<pre>{_e(self.config_yaml)}</pre>"]
        parts.append("</body></html>")
        return "\n".join(parts)

    def _lead(self) -> str:
        what = "Trained" if self.kind == "training" else "Evaluated"
        family = self.summary.get("family", "")
        data = self.summary.get("data", "")
        text = f"{what} {family} on {data}".strip()
        if self.model_name and self.version is not None:
            tags = ", ".join(f"@{a}" for a, v in sorted(self.aliases.items()) if v == self.version)
            text += f"; registered as {self.model_name} version {self.version}"
            if tags:
                text += f" ({tags})"
        return text + "."

    def _metrics_table(self) -> str:
        names = sorted({k.split("_", 1)[1] for k in self.metrics if "_" in k})
        heads = ["metric"]
        has_valid = any(k.startswith("val_") for k in self.metrics)
        if has_valid:
            heads.append("validation")
        heads.append("test" if self.kind == "training" else "holdout")
        for holder in self.holders:
            heads.append(f"{holder.environment}: v{holder.version}")
        rows = []
        for name in names:
            row = [f"<td>{_e(name)}</td>"]
            if has_valid:
                row.append(_num(self.metrics.get(f"val_{name}")))
            row.append(_num(self.metrics.get(f"test_{name}")))
            for holder in self.holders:
                if holder.scores is None:
                    row.append("<td class='muted'>not scored on this holdout</td>")
                else:
                    row.append(_num(holder.scores.get(name)))
            rows.append("<tr>" + "".join(row) + "</tr>")
        head = "".join(f"<th>{_e(h)}</th>" for h in heads)
        note = (
            f"<p class='muted'>This model's test scores and the scores of the versions holding "
            f"each environment are on the same holdout: {_e(self.holdout)}.</p>"
            if self.holders and self.holdout
            else ""
        )
        return f"<table><tr>{head}</tr>{''.join(rows)}</table>{note}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    if value is None or value != value:  # NaN
        return "<td class='num muted'>-</td>"
    return f"<td class='num'>{value:.4f}</td>"


def _key_values(values: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in values.items() if v is not None
    )
    return f"<table>{rows}</table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    wide = " class='wide'" if path.stem == "learning_curve" else ""
    return (
        f"<img{wide} alt='{_e(path.stem)}' title='{_e(path.stem)}' "
        f"src='data:image/png;base64,{data}'>"
    )


def _columns_table(columns: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for column in columns:
        features = ", ".join(column.get("features") or []) or "-"
        rows.append(
            "<tr>"
            f"<td>{_e(column.get('name'))}</td><td>{_e(column.get('role'))}</td>"
            f"<td>{_e(column.get('kind'))}</td><td class='num'>{_e(column.get('missing', 0))}</td>"
            f"<td>{_e(features)}</td><td>{_e(column.get('reason', ''))}</td>"
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("column", "became", "kind", "missing", "features", "why")
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def holders(
    model_name: str,
    aliases: Mapping[str, int],
    holdout_id: str | None,
    environments: Sequence[str],
) -> list[Holder]:
    """The holder of each environment alias (``aliases``: the model's aliases and their
    versions) and its cached scores on ``holdout_id``."""
    from kennel import registry

    out = []
    for env in environments:
        version = aliases.get(env)
        if version is None:
            continue
        scores = None
        if holdout_id:
            try:
                tags = registry.version_tags(model_name, version)
                cached = registry.cached_scores(tags, holdout_id)
                scores = cached[1] if cached is not None else None
            except Exception as exc:  # noqa: BLE001 - a report never fails a run
                logger.debug("no cached score of %s v%s: %s", model_name, version, exc)
        out.append(Holder(env, version, scores))
    return out


def log_report(report: RunReport, folder: Path, run_id: str | None = None) -> Path:
    """Write ``report.html`` into ``folder`` and log it to the run (active, or ``run_id``).
    A failure to build it is logged and never fails the run."""
    path = folder / REPORT_FILE
    try:
        path.write_text(report.render(), encoding="utf-8")
        from kennel import tracking

        tracking.log_artifact_file(path, run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - the report is a convenience
        logger.warning("report.html not written: %s", exc)
    return path


#: The pieces other pages (``monitor.html``) are built from, so every kennel page looks alike.
STYLE = _STYLE
escape = _e
key_values = _key_values
image_tag = _image

__all__ = [
    "REPORT_FILE",
    "STYLE",
    "Holder",
    "RunReport",
    "escape",
    "holders",
    "image_tag",
    "key_values",
    "log_report",
]
