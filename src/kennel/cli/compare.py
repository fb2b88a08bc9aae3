"""``kennel compare``: runs side by side in the terminal (and CI), as one table.

With no arguments: the latest training runs and trials of the experiment a default ``kennel
train`` files into (else the experiment with the most recent kennel run). ``--experiment``,
``--kind``, ``-n`` and ``--run-id`` choose others. What all rows share (family, data, task)
goes into the line above the table; numbers are rounded; the table fits 120 columns, the
least important columns left out first (``--wide`` shows every column). ``--output-json``
writes the full rows for programs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from kennel.cli.common import prepare
from kennel.errors import UserError
from kennel.util import redact_url, write_json

logger = logging.getLogger(__name__)

WIDTH = 120
GAP = "  "


def run(args: argparse.Namespace) -> int:
    from kennel import tracking
    from kennel.tracking import compare

    config = prepare(args)
    if args.last < 1:
        raise UserError(f"--last {args.last} is not allowed; expected a number >= 1")
    uri = tracking.configure(config)
    if args.run_id:
        runs, where = [compare.get_run(run_id) for run_id in args.run_id], "the runs given"
    else:
        experiment = compare.pick_experiment(config, args.experiment)
        if experiment is None:
            sys.stdout.write(
                f"no kennel runs in {redact_url(uri)} yet; train one: kennel train -c "
                "configs/cat.yaml\n"
            )
            return 0
        kinds = args.kind or ["training", "trial"]
        runs = compare.latest_runs(experiment.experiment_id, kinds, args.last)
        where = f"experiment '{experiment.name}' ({', '.join(kinds)} runs)"
    rows = compare.compare_rows(runs)
    sys.stdout.write(render(rows, where, wide=args.wide) + "\n")
    sys.stdout.flush()
    if args.output_json:
        write_json(args.output_json, {"runs": rows})
    return 0


def render(rows: list[dict[str, Any]], where: str = "", *, wide: bool = False) -> str:
    """A title line (what every row shares), then the rows as a plain-text table."""
    if not rows:
        return f"no runs to compare in {where}" if where else "no runs to compare"
    shared, columns = _columns(rows)
    title = f"{where}: " if where else ""
    title += ", ".join(f"{k} {v}" for k, v in shared.items()) + f"; {len(rows)} run(s)"
    shown = columns if wide else _fit(columns, WIDTH)
    widths = [max(len(head), *(len(v) for v in values)) for head, values, _ in shown]
    lines = [GAP.join(h.ljust(w) for (h, _, _), w in zip(shown, widths, strict=True)).rstrip()]
    lines.append(GAP.join("-" * w for w in widths))
    for i in range(len(rows)):
        cells = [values[i].ljust(w) for (_, values, _), w in zip(shown, widths, strict=True)]
        lines.append(GAP.join(cells).rstrip())
    left_out = [column[0] for column in columns if column not in shown]
    if left_out:
        lines.append(f"({len(left_out)} more column(s): {', '.join(left_out)}; --wide shows them)")
    return "\n".join([title, *lines])


def _columns(rows: list[dict[str, Any]]) -> tuple[dict[str, str], list[tuple[str, list[str], int]]]:
    """(what all rows share, the columns as (header, cells, priority)); lower priority
    numbers are kept first when the table must be narrowed."""
    shared: dict[str, str] = {}
    names = [
        (r["run_name"] or r["run_id"][:8])
        + (f" ({r['status']})" if r.get("status") not in (None, "FINISHED") else "")
        for r in rows
    ]
    columns: list[tuple[str, list[str], int]] = [("run", names, 0)]
    for key, head in (("family", "family"), ("data", "data"), ("task", "task")):
        values = [_data_name(r[key]) if key == "data" else str(r[key] or "") for r in rows]
        if len(set(values)) == 1:
            shared[head] = values[0] or "-"
        else:
            columns.append((head, values, 1))
    metric_keys: list[str] = []
    for r in rows:
        metric_keys += [k for k in r["metrics"] if k not in metric_keys]
    for rank, key in enumerate(metric_keys):
        priority = 2 if rank < 2 else 4  # the task's first metric, test and val
        columns.append((key, [_number(r["metrics"].get(key)) for r in rows], priority))
    versions = []
    for r in rows:
        text = f"v{r['version']}" if r["version"] is not None else ""
        versions.append(text + "".join(f" @{a}" for a in r["aliases"]))
    if any(versions):
        columns.append(("version", versions, 3))
    param_keys = sorted({k for r in rows for k in r["params"]})
    columns += [(_short(k), [_value(r["params"].get(k)) for r in rows], 5) for k in param_keys]
    return shared, columns


def _fit(columns: list[tuple[str, list[str], int]], width: int) -> list[tuple[str, list[str], int]]:
    """The columns, in their order, that fit ``width`` when added by priority."""
    kept: list[tuple[str, list[str], int]] = []
    used = 0
    for column in sorted(columns, key=lambda c: c[2]):  # stable: order within a priority
        need = max(len(column[0]), *(len(v) for v in column[1])) + (len(GAP) if kept else 0)
        if used + need > width and kept:
            continue
        kept.append(column)
        used += need
    return [c for c in columns if c in kept]


def _short(key: str) -> str:
    return key.removeprefix("model.params.").removeprefix("model.")


def _data_name(source: str) -> str:
    if source.startswith("builtin:"):
        return source[len("builtin:") :]
    return source.rstrip("/").rsplit("/", 1)[-1] or source


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _value(text: str | None) -> str:
    """A param as logged (JSON text) made short: 0.0537 for 0.05372518239, [64, 32]."""
    if text is None:
        return ""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return str(text)
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)
