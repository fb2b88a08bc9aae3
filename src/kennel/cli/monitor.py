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
    """The columns (drifted first, then by PSI) and the verdict, in 120 columns."""
    lines = [f"{result['rows']} rows of {result['input']} against {result['model_uri']}:"]
    rows = sorted(report.columns, key=lambda c: (not c.drifted, -(c.psi or 0.0)))
    rows += [c for c in report.outputs]
    name_width = min(28, max([6, *(len(c.name) for c in rows)]))
    head = f"{'column':<{name_width}}  {'kind':<11}  {'PSI':>6}  {'p-value':>8}  {'missing':>13}  verdict  why"
    lines += [head, "-" * min(WIDTH, len(head) + 20)]
    for c in rows:
        name = c.name if len(c.name) <= name_width else c.name[: name_width - 1] + "~"
        kind = "output" if c in report.outputs else c.role
        psi = "-" if c.psi is None else f"{c.psi:.3f}"
        p = (
            "-"
            if c.p_value is None
            else f"{c.p_value:.1e}"
            if c.p_value < 1e-3
            else f"{c.p_value:.4f}"
        )
        missing = f"{c.missing_ref:.0%}->{c.missing_cur:.0%}"
        line = f"{name:<{name_width}}  {kind:<11}  {psi:>6}  {p:>8}  {missing:>13}  {c.verdict:<7}  {c.reason}"
        lines.append(line if len(line) <= WIDTH else line[: WIDTH - 3] + "...")
    performance = result.get("performance")
    if performance:
        metric = performance["metric"]
        before = performance["reference"].get(f"test_{metric}")
        lines.append(
            f"{metric} on {performance['rows']} labelled rows: {performance['live'][metric]:.4f}"
            + (f" (holdout {before:.4f})" if before is not None else "")
        )
    if result["exit_code"]:
        lines.append("verdict: retrain (exit 3): " + "; ".join(result["reasons"]))
    else:
        lines.append(
            "verdict: ok" + (f" ({'; '.join(result['reasons'])})" if result["reasons"] else "")
        )
    return "\n".join(lines)
