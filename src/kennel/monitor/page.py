"""``monitor.html``: a check at a glance, in the style of ``report.html`` (one self-contained
page, no script, stylesheet or external URL): the verdict and why, every column's statistics
(drifted first, then by PSI), the outputs, the performance on labelled rows, and for the
columns that moved most the reference and current shares side by side."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kennel.monitor.drift import ColumnDrift, DriftReport
from kennel.report.page import STYLE, escape, image_tag, key_values

logger = logging.getLogger(__name__)

PAGE_FILE = "monitor.html"
#: Columns drawn (the drifted ones, then the largest PSI).
PLOTTED = 6


def write_page(folder: Path, title: str, result: dict[str, Any], report: DriftReport) -> Path:
    """Write ``monitor.html`` into ``folder`` (its plots drawn into ``folder/plots``)."""
    path = folder / PAGE_FILE
    ordered = sorted(report.columns, key=lambda c: (not c.drifted, -(c.psi or 0.0)))
    plots = _plots(folder / "plots", ordered[:PLOTTED] + report.outputs[:2])
    verdict = "retrain" if result["exit_code"] else "ok"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='lead'>{escape(_lead(result, verdict))}</p>",
        key_values(_summary(result, report)),
        "<h2>Input columns</h2>",
        _table(ordered),
    ]
    if report.outputs:
        parts += ["<h2>Outputs</h2>", _table(report.outputs)]
    if result.get("performance"):
        parts += ["<h2>Performance on labelled rows</h2>", _performance(result["performance"])]
    if plots:
        parts += ["<h2>Reference and current shares</h2><div class='plots'>"]
        parts += [image_tag(p) for p in plots]
        parts.append("</div>")
    if result.get("notes"):
        parts += ["<h2>Notes</h2><ul>", *(f"<li>{escape(n)}</li>" for n in result["notes"])]
        parts.append("</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _lead(result: dict[str, Any], verdict: str) -> str:
    text = f"{result['rows']} rows of {result['input']} against the reference of {result['model_uri']}: "
    if verdict == "retrain":
        return text + "retrain (exit 3): " + "; ".join(result["reasons"]) + "."
    if result["verdict"] == "inconclusive":
        return text + "too few rows to judge (exit 0): " + "; ".join(result["reasons"]) + "."
    return text + "no drift past the thresholds (exit 0)."


def _summary(result: dict[str, Any], report: DriftReport) -> dict[str, Any]:
    return {
        "model": result["model_uri"],
        "version": result.get("version"),
        "input": result["input"],
        "rows (reference)": f"{report.rows} ({report.reference_rows})",
        "drifted input columns": ", ".join(report.drifted_columns) or "none",
        "drift share": (
            f"{report.drift_share:.0%} ({len(report.drifted_columns)} of "
            f"{len(report.compared_columns)}; dates not counted)"
        ),
        "dates moved (not counted)": ", ".join(report.moved_dates) or "none",
        "outputs drifted": "yes" if report.output_drift else "no",
        "columns the model does not take": ", ".join(report.extra_columns) or "none",
    }


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "<td class='num muted'>-</td>"
    return f"<td class='num'>{value:.{digits}f}</td>"


def _table(columns: list[ColumnDrift]) -> str:
    head = ["column", "kind", "PSI", "test", "p-value", "missing ref → now", "verdict", "why"]
    rows = []
    for c in columns:
        unseen = ", ".join(f"{v} ({n})" for v, n in c.unseen[:3])
        why = c.reason + (f"; unseen: {unseen}" if unseen else "")
        verdict = (
            f"<td class='best'>{escape(c.verdict)}</td>" if c.drifted else f"<td>{c.verdict}</td>"
        )
        rows.append(
            "<tr>"
            f"<td>{escape(c.name)}</td><td>{escape(c.role)}</td>{_num(c.psi)}"
            f"<td>{escape(c.test or '-')}</td>{_num(c.p_value, 4)}"
            f"<td class='num'>{c.missing_ref:.1%} → {c.missing_cur:.1%}</td>{verdict}"
            f"<td>{escape(why)}</td></tr>"
        )
    return (
        "<table><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def _performance(performance: dict[str, Any]) -> str:
    rows = []
    for name, live in sorted(performance["live"].items()):
        before = performance["reference"].get(f"test_{name}")
        rows.append(f"<tr><td>{escape(name)}</td>{_num(live, 4)}{_num(before, 4)}</tr>")
    head = "<tr><th>metric</th><th>labelled rows</th><th>holdout</th></tr>"
    note = (
        f"<p class='muted'>{performance['rows']} labelled rows; the holdout score is "
        f"{escape(performance['reference_source'])}.</p>"
    )
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _plots(folder: Path, columns: list[ColumnDrift]) -> list[Path]:
    """Bars of the reference and current shares per bucket of each column."""
    columns = [c for c in columns if c.buckets and c.rows]
    if not columns:
        return []
    try:
        from kennel.report.figures import pyplot, save

        plt = pyplot()
        folder.mkdir(parents=True, exist_ok=True)
        made = []
        for c in columns:
            fig, ax = plt.subplots(figsize=(6, 3.2))
            x = range(len(c.buckets))
            ax.bar([i - 0.2 for i in x], c.ref_shares, width=0.4, label="reference")
            ax.bar([i + 0.2 for i in x], c.cur_shares, width=0.4, label="now")
            ax.set_xticks(list(x))
            ax.set_xticklabels(c.buckets, rotation=60, ha="right", fontsize=7)
            psi = f", PSI {c.psi:.2f}" if c.psi is not None else ""
            ax.set_title(f"{c.name} ({c.verdict}{psi})", fontsize=10)
            ax.legend(fontsize=8)
            path = folder / f"drift_{len(made):02d}.png"
            save(fig, path)
            made.append(path)
        return made
    except Exception as exc:  # noqa: BLE001 - a plot is never worth failing the check for
        logger.warning("could not draw the drift plots: %s", exc)
        return []
