"""Which process owns a run, and closing runs whose process died (``kennel runs cleanup``).

A run that kennel starts or resumes carries the tag ``kennel.process`` =
``<host>:<pid>:<start>``, where ``<start>`` is the process's start time (clock ticks since
boot on Linux), so that a recycled pid is not taken for the run's owner. A process killed
with SIGKILL (or a machine that lost power) cannot end its run: it stays ``RUNNING`` in
MLflow. ``kennel runs cleanup`` finds such runs and marks them ``FAILED`` with the tag
``kennel.error``; a run whose process is alive, or that belongs to another machine, is never
touched (another machine's processes cannot be checked from here).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROCESS_TAG = "kennel.process"
ERROR_TAG = "kennel.error"


def _start_ticks(pid: int) -> str | None:
    """The process's start time as the kernel reports it (``/proc/<pid>/stat`` field 22),
    ``None`` where there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has finished: its run is not being written
        return None
    return fields[19]


def process_tag() -> str:
    """``<host>:<pid>:<start>`` of this process."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def process_alive(tag: str) -> bool | None:
    """True/False for a process of this host; ``None`` when it cannot be checked here
    (another host, or a malformed tag)."""
    try:
        host, pid_text, start = tag.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    ticks = _start_ticks(pid)
    if ticks is not None:
        return start == "?" or ticks == start
    if Path("/proc").is_dir():
        return False
    try:  # no /proc: the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class CleanupEntry:
    run_id: str
    experiment_id: str
    run_name: str
    process: str | None
    action: str
    """``failed`` (marked FAILED now), ``would fail`` (``--dry-run``), ``alive``,
    ``other host`` or ``unknown owner`` (no ``kennel.process`` tag)."""


def cleanup(client: Any, experiment_ids: list[str], *, dry_run: bool = False) -> list[CleanupEntry]:
    """Every RUNNING run of the experiments, and what was done with it."""
    entries: list[CleanupEntry] = []
    if not experiment_ids:
        return entries
    runs = client.search_runs(
        experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=5000
    )
    for run in runs:
        tag = run.data.tags.get(PROCESS_TAG)
        alive = process_alive(tag) if tag else None
        if tag is None:
            action = "unknown owner"
        elif alive is None:
            action = "other host"
        elif alive:
            action = "alive"
        else:
            action = "would fail" if dry_run else "failed"
        if action == "failed":
            host, pid, _ = tag.rsplit(":", 2)  # type: ignore[union-attr]
            client.set_tag(
                run.info.run_id,
                ERROR_TAG,
                f"process {pid} on {host} ended without closing the run "
                f"(marked FAILED by kennel runs cleanup)",
            )
            client.set_terminated(run.info.run_id, "FAILED")
            logger.info("run %s (%s): marked FAILED", run.info.run_id, run.info.run_name)
        entries.append(
            CleanupEntry(
                run.info.run_id, run.info.experiment_id, run.info.run_name or "", tag, action
            )
        )
    return entries


def entries_to_dicts(entries: list[CleanupEntry]) -> list[dict[str, Any]]:
    return [asdict(e) for e in entries]
