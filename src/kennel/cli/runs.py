"""``kennel runs cleanup``: mark FAILED the runs a dead process left RUNNING, in every
experiment of the store (or those named with ``--experiment``).

Only runs whose ``kennel.process`` tag names a process of this machine that no longer exists
are touched; runs of live processes and of other machines are listed and left alone.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kennel.cli.common import emit, prepare
from kennel.errors import UserError

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from kennel import tracking
    from kennel.tracking import processes as runs

    config = prepare(args)
    tracking.configure(config)
    client = tracking.client()
    if args.all or not args.experiment:
        experiments = [e.experiment_id for e in client.search_experiments(max_results=10000)]
    else:
        experiments = []
        for name in args.experiment:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise UserError(f"experiment '{name}' not found in the tracking store")
            experiments.append(found.experiment_id)
    entries = runs.cleanup(client, experiments, dry_run=args.dry_run)
    if entries:
        name_width = max(8, *(len(e.run_name or "-") for e in entries))
        header = "process (host:pid:start)"
        process_width = max(len(header), *(len(e.process or "-") for e in entries))
        sys.stderr.write(
            f"{'run id':<32}  {'run name':<{name_width}}  {header:<{process_width}}  action\n"
        )
        for entry in entries:
            sys.stderr.write(
                f"{entry.run_id:<32}  {entry.run_name or '-':<{name_width}}  "
                f"{entry.process or '-':<{process_width}}  {entry.action}\n"
            )
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.action] = counts.get(entry.action, 0) + 1
    logger.info(
        "%d run(s) left RUNNING in %d experiment(s)%s",
        len(entries),
        len(experiments),
        ": " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) if counts else "",
    )
    emit({"runs": runs.entries_to_dicts(entries), "counts": counts}, args)
    return 0
