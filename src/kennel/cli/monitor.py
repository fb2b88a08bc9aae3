"""``kennel monitor``: a batch of rows against the reference profile of a model; a table on
the terminal (stderr), the result as one JSON line (stdout) and ``--output-json``.

Exit codes: 0 no drift past the thresholds, 3 retrain (drift share, output drift or a
performance drop past ``monitor.*``), 2 bad input, 1 internal failure.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kennel.cli.common import emit, prepare
from kennel.errors import UserError

WIDTH = 120


def run(args: argparse.Namespace) -> int:
    from kennel import tracking
    from kennel.config import load_config
    from kennel.monitor.check import monitor
    from kennel.outputs import output_folder

    model_uri = (args.model_uri or "").strip()
    location = (args.input or "").strip()
    if not model_uri:
        raise UserError(
            "--model-uri is empty; expected models:/<name>@<alias> or another model URI"
        )
    if not location:
        raise UserError(
            "--input is empty; expected a capture folder, a CSV/Parquet file or a data set"
        )
    if args.on and not args.labels:
        raise UserError(
            f"--on {args.on} names the key of a labels file; give it with --labels PATH"
        )
    config = load_config(args.config, args.overrides).config
    with output_folder(config, args.output_dir, kind="monitor") as output_dir:
        config = prepare(args, output_dir=output_dir)
        uri = tracking.resolve_tracking_uri(config)
        with tracking.lost_store_guard(uri):
            result = monitor(
                config,
                model_uri,
                location,
                output_dir=output_dir,
                labels=(args.labels or "").strip() or None,
                on=args.on or "request_id",
            )
    report = result.pop("report")
    sys.stderr.write(table(result, report) + "\n")
    emit(result, args)
    return int(result["exit_code"])


def table(result: dict[str, Any], report: Any) -> str:
    """The columns (drifted first, then by PSI) and the verdict, in 120 columns. PSI is shown
    with the part sampling noise alone gives (the threshold applies to their difference)."""
    lines = [f"{result['rows']} rows of {result['input']} against {result['model_uri']}:"]
    rows = sorted(report.columns, key=lambda c: (not c.drifted, -(c.psi or 0.0)))
    rows += list(report.outputs)
    name_width = min(28, max([6, *(len(c.name) for c in rows)]))
    head = (
        f"{'column':<{name_width}}  {'kind':<11}  {'PSI':>6}  {'noise':>6}  {'p-value':>8}  "
        f"{'missing':>11}  verdict  why"
    )
    lines += [head, "-" * WIDTH]
    for c in rows:
        name = c.name if len(c.name) <= name_width else c.name[: name_width - 1] + "~"
        kind = "output" if c in report.outputs else c.role
        psi = "-" if c.psi is None else f"{c.psi:.3f}"
        noise = "-" if c.psi_noise is None else f"{c.psi_noise:.3f}"
        p = (
            "-"
            if c.p_value is None
            else f"{c.p_value:.1e}"
            if c.p_value < 1e-3
            else f"{c.p_value:.4f}"
        )
        missing = f"{c.missing_ref:.0%}->{c.missing_cur:.0%}"
        line = (
            f"{name:<{name_width}}  {kind:<11}  {psi:>6}  {noise:>6}  {p:>8}  {missing:>11}  "
            f"{c.verdict:<7}  {c.reason}"
        )
        lines.append(_cut(line))
    performance = result.get("performance")
    if performance:
        metric = performance["metric"]
        before = performance["reference"].get(f"test_{metric}")
        lines.append(
            f"{metric} on {performance['rows']} labelled rows: {performance['live'][metric]:.4f}"
            + (f" (holdout {before:.4f})" if before is not None else "")
        )
    verdict = {
        "retrain": "retrain (exit 3): ",
        "inconclusive": "too few rows to judge (exit 0): ",
    }.get(result["verdict"], "ok")
    reasons = "; ".join(result["reasons"])
    lines.append(f"verdict: {verdict}{reasons}" if result["verdict"] != "ok" else "verdict: ok")
    return "\n".join(lines)


def _cut(line: str) -> str:
    """A line of at most 120 characters, cut at a word."""
    if len(line) <= WIDTH:
        return line
    return line[: line.rfind(" ", 0, WIDTH - 3)] + " ..."
