"""One trial: its job record, the overrides and command that make it exactly the
``kennel train`` a user would run, how many threads it may use, and stopping it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from kennel.config import Config, project_root

RESULT_FILE = "result.json"
#: Seconds a terminated trial gets before its process group is killed.
KILL_GRACE_S = 5.0


class TrialProcess(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class TrainRequest:
    """The ``kennel train`` a trial is: the same whichever launcher starts it (a new
    interpreter runs :meth:`command`; the warm server's child gets :meth:`to_dict`)."""

    overrides: list[str]
    output_dir: str
    log_model_if: str | None = None
    config: str = ""
    """The trial's YAML, written into a temporary folder at launch."""

    def argv(self) -> list[str]:
        gate = ["--log-model-if", self.log_model_if] if self.log_model_if else []
        return [
            "train",
            "-c",
            self.config,
            "--output-dir",
            self.output_dir,
            "--output-json",
            str(Path(self.output_dir) / RESULT_FILE),
            *gate,
            *self.overrides,
        ]

    def command(self) -> list[str]:
        """``python run.py train ...``."""
        return [sys.executable, str(project_root() / "run.py"), *self.argv()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrialJob:
    """One trial: its Optuna handle, child run, folder and, once run, its outcome."""

    number: int
    trial: Any
    params: dict[str, Any]
    run_id: str
    folder: Path
    request: TrainRequest
    env: dict[str, str]
    proc: TrialProcess | None = None
    started: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    killed: bool = False
    error: str | None = None
    duration_s: float = 0.0
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    state: str = "RUNNING"
    yaml_text: str = ""
    model_threshold: float | None = None
    """``improving``: the best value when the trial started (it logs its model if it is at
    least as good)."""


def override_text(path: str, value: Any) -> str:
    """``path=value`` whose value parses back (as YAML) to exactly ``value``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    if yaml.safe_load(text) != value:
        text = json.dumps(value)
    return f"{path}={text}"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def effective_threads(configured: int, n_jobs: int, cores: int | None = None) -> int:
    """Threads one trial may use: ``min(configured, cores // n_jobs)``, at least 1, where a
    configured 0 means every core. Trials running at once never ask for more threads than
    the machine has cores: OpenMP threads competing for cores spin, and two LightGBM trials
    of 2 threads on 2 cores run several times slower than one after the other."""
    cores = cores or available_cores()
    share = max(1, cores // max(1, n_jobs))
    return min(configured or cores, share)


def trial_threads(config: Config) -> int | None:
    """The ``resource.num_threads`` a trial gets when it differs from the configured one
    (see :func:`effective_threads`); ``None``: keep the configured value (one trial at a
    time with 0 = every core, or a count that already fits)."""
    configured = config.resource.num_threads
    threads = effective_threads(configured, config.search.n_jobs)
    if configured == 0 and config.search.n_jobs <= 1:
        return None
    return threads if threads != configured else None


def trial_yaml(config: Config) -> str:
    """The resolved config for a trial file: no secrets at all (not even redacted ones:
    the trial gets them from its environment)."""
    data = config.redacted()
    data["data"]["storage_options"] = {}
    data["search"]["storage"] = None
    return yaml.safe_dump(data, sort_keys=False)


def kill_group(proc: TrialProcess | None, grace: float | None = 3.0) -> None:
    """SIGTERM the trial's process group, then SIGKILL after ``grace`` seconds
    (``grace=0``: TERM only; ``None``: KILL at once)."""
    if proc is None or proc.poll() is not None:
        return
    sig = signal.SIGKILL if grace is None else signal.SIGTERM
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    if grace:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def last_line(path: Path) -> str:
    """The trial's last meaningful output line (its one-line error)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or ["no output"])[-1][:300]


def trial_overrides(
    base: list[str], params: dict[str, Any], threads: int | None, log_models: str
) -> list[str]:
    """The overrides a trial's ``kennel train`` gets: the user's, then the sampled values,
    then what a trial must be (its precedence is the order here)."""
    return [
        *base,
        # Plots in the trial process: parallel trials leave no core spare for a second
        # one, warm trials have the plotting libraries loaded, and the trial's params
        # stay the same whatever the launcher and n_jobs.
        "tracking.plots_in_background=false",
        *(override_text(path, value) for path, value in params.items()),
        # After the sampled values: never more threads than cores (a searched value too).
        *([f"resource.num_threads={threads}"] if threads is not None else []),
        *(["tracking.log_model=false", "tracking.log_plots=false"] if log_models == "none" else []),
        # Trials never register or promote: the search registers its best trial only.
        "registry.enabled=false",
        "registry.auto_promote=null",
    ]
