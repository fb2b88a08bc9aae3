"""Shared helpers of the benchmarks: synthetic data, child processes with wall time and peak
memory, temporary MLflow stores, result files and tables.

Every measured variant runs as its own child process, started by a small launcher
(``_launch.py``: ``os.wait4`` there gives that child's own peak RSS), on the same machine,
data, splits and parameters.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"
BASELINES = BENCH_DIR / "baselines"
#: Starts each measured child (see :func:`run_child`).
LAUNCHER = BENCH_DIR / "_launch.py"
PYTHON = sys.executable
RUN_PY = ROOT / "run.py"
#: Threads for every library in every variant (this machine has 2 cores).
THREADS = 2
SEED = 42
TARGET = "target"
N_FEATURES = 20


# --------------------------------------------------------------------------- data
def dataset(rows: int, features: int = N_FEATURES, seed: int = 0) -> Path:
    """A seeded synthetic binary-classification table as Parquet, written once.

    ``f0..f<n-1>`` are float64 (Gaussian, with a few non-linear interactions deciding the
    label) and ``target`` is 0/1 (int64).
    """
    path = DATA_DIR / f"binary_{rows}x{features}_s{seed}.parquet"
    if path.exists():
        return path
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features))
    w = rng.standard_normal(features) / np.sqrt(features)
    logit = x @ w + 0.5 * np.sin(2 * x[:, 0]) * x[:, 1] + 0.3 * (x[:, 2] > 0.5) * x[:, 3] ** 2
    y = (logit + 0.5 * rng.standard_normal(rows) > 0).astype("int64")
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame[TARGET] = y
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def warm_file(path: Path) -> None:
    """Read a file once so that every variant finds it in the page cache."""
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass


# --------------------------------------------------------------------------- processes
@dataclass
class ChildRun:
    """One child process: wall seconds, peak RSS of the child (MiB), exit code, output."""

    name: str
    wall_s: float
    peak_mib: float
    rc: int
    stdout: str = field(default="", repr=False)
    stderr: str = field(default="", repr=False)

    def check(self) -> ChildRun:
        if self.rc != 0:
            tail = "\n".join((self.stderr or self.stdout).splitlines()[-25:])
            raise RuntimeError(f"{self.name} exited {self.rc}:\n{tail}")
        return self

    def json_line(self) -> dict[str, Any]:
        """The last stdout line that is a JSON object (what kennel and baselines print)."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        return {}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT / "src"),
            "OMP_NUM_THREADS": str(THREADS),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONHASHSEED": "0",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            # kennel's commands turn MLflow's telemetry off; the baselines run without it too.
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "KENNEL_RESOURCE__NUM_THREADS": str(THREADS),
            # mlflow models serve runs ``uvicorn`` from PATH: the venv's bin first.
            "PATH": os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "")]),
        }
    )
    env.pop("MLFLOW_RUN_ID", None)
    env.update(extra or {})
    return env


def run_child(
    name: str,
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 1800,
) -> ChildRun:
    """Run ``cmd``; wall time from start to exit, and the child's own peak RSS (wait4).

    The child is started by ``_launch.py``, a small process of its own: Linux carries the
    peak RSS of the process a child is spawned from through ``exec``, so spawning it from
    this one (which may hold a gigabyte of generated data) would report at least that."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="kennel-bench-child-") as tmp,
    ):
        result_file = Path(tmp) / "result.json"
        launcher = [PYTHON, "-I", "-S", str(LAUNCHER), str(result_file), str(timeout)]
        subprocess.run(
            [*launcher, *map(str, cmd)],
            stdout=out,
            stderr=err,
            env=env or child_env(),
            cwd=cwd or ROOT,
            check=True,
        )
        result = json.loads(result_file.read_text())
        out.seek(0)
        err.seek(0)
        return ChildRun(
            name=name,
            wall_s=round(result["wall_s"], 3),
            peak_mib=round(result["maxrss_kib"] / 1024, 1),
            rc=result["rc"],
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def median_run(name: str, cmd: Sequence[str], repeats: int, **kwargs: Any) -> dict[str, Any]:
    """Median wall time (and max peak memory) of ``repeats`` runs of ``cmd``."""
    runs = [run_child(name, cmd, **kwargs).check() for _ in range(repeats)]
    return {
        "wall_s": round(statistics.median(r.wall_s for r in runs), 3),
        "walls_s": [r.wall_s for r in runs],
        "peak_mib": max(r.peak_mib for r in runs),
        "last": runs[-1],
    }


def interleaved(
    variants: dict[str, dict[str, Any]], repeats: int
) -> tuple[dict[str, ChildRun], dict[str, list[float]]]:
    """Run each variant ``repeats`` times, round-robin (A B C A B C), so that noise from other
    jobs on the machine hits every variant alike; keep each variant's fastest run (the one
    least disturbed) and every wall time. ``variants``: name -> run_child keyword args."""
    best: dict[str, ChildRun] = {}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, spec in variants.items():
            run = run_child(name, **spec).check()
            walls[name].append(run.wall_s)
            if name not in best or run.wall_s < best[name].wall_s:
                best[name] = run
    return best, walls


# --------------------------------------------------------------------------- MLflow stores
@contextmanager
def temp_store(prefix: str = "kennel-bench-"):
    """A temporary folder holding a fresh SQLite tracking store whose schema is created
    before any timing (a user's store already exists; migrations are a one-off cost)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    code = "import sys; from mlflow.tracking import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
    run_child("init-store", [PYTHON, "-c", code, uri]).check()
    try:
        yield folder, uri
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- results
def machine() -> dict[str, Any]:
    import importlib.metadata as md

    def ver(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": {
            name: ver(name) for name in ("mlflow", "lightgbm", "tensorflow", "keras", "pandas")
        },
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, ChildRun):
        return {k: v for k, v in asdict(value).items() if k not in {"stdout", "stderr"}}
    if isinstance(value, Path):
        return str(value)
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal too)."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([line, sep, *body])


def kennel_cmd(*args: str) -> list[str]:
    return [PYTHON, str(RUN_PY), *args]


def compile_sources() -> None:
    """Compile kennel's modules to bytecode, as pip does when it installs a package: an
    editable install never does, and with ``PYTHONDONTWRITEBYTECODE`` set (as on the machine
    these numbers come from) every kennel process would compile its ~120 modules again
    (~0.1 s) while the baselines' libraries load compiled. Python still reads the files."""
    import compileall

    compileall.compile_dir(str(ROOT / "src" / "kennel"), quiet=1)


def common_args(argv: Sequence[str] | None = None, **defaults: Any):
    import argparse

    compile_sources()

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    for key, value in defaults.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args(argv)
    return args


def compare_training(
    baseline: Sequence[str],
    kennel: Sequence[str],
    *,
    repeats: int,
    autolog_store: tuple[str, str],
    kennel_store: tuple[str, str],
    result_name: str,
    describe: dict[str, Any],
    floor: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The training comparison shared by the cat and dog benchmarks: the raw baseline, the
    same script with ``--autolog`` and ``kennel train``, interleaved (and ``floor``, the least
    script, when given); prints the table and writes ``result_name``. ``describe`` (rows,
    params, ...) leads the result."""
    variants: dict[str, dict[str, Any]] = {
        **({"floor": {"cmd": list(floor)}} if floor else {}),
        "raw": {"cmd": list(baseline)},
        "autolog": {
            "cmd": [*baseline, "--autolog"],
            "env": child_env({"MLFLOW_TRACKING_URI": autolog_store[1]}),
            "cwd": autolog_store[0],
        },
        "kennel": {"cmd": list(kennel), "env": child_env({"MLFLOW_TRACKING_URI": kennel_store[1]})},
    }
    runs, walls = interleaved(variants, repeats)
    k = runs["kennel"].json_line()
    result = {
        **describe,
        "repeats": repeats,
        "all_wall_s": walls,
        "variants": {
            name: {
                "wall_s": r.wall_s,
                "peak_mib": r.peak_mib,
                "inner": r.json_line() if name != "kennel" else None,
            }
            for name, r in runs.items()
        },
        "kennel_timings": k.get("timings"),
        "kennel_duration_s": k.get("duration_s"),
        "kennel_test_roc_auc": (k.get("metrics") or {}).get("test_roc_auc"),
        "ratio_kennel_autolog": ratio(runs["kennel"].wall_s, runs["autolog"].wall_s),
        "ratio_kennel_raw": ratio(runs["kennel"].wall_s, runs["raw"].wall_s),
        "ratio_autolog_raw": ratio(runs["autolog"].wall_s, runs["raw"].wall_s),
        "mem_ratio_kennel_raw": ratio(runs["kennel"].peak_mib, runs["raw"].peak_mib),
    }
    if floor:
        result["ratio_kennel_floor"] = ratio(runs["kennel"].wall_s, runs["floor"].wall_s)
        result["floor_timings"] = runs["floor"].json_line().get("timings")
    print(
        table(
            ["variant", "wall s", "peak MiB", "wall / raw"],
            [
                [name, r.wall_s, r.peak_mib, ratio(r.wall_s, runs["raw"].wall_s)]
                for name, r in runs.items()
            ],
        )
    )
    print(
        f"kennel / autolog = {result['ratio_kennel_autolog']}, kennel / raw = "
        f"{result['ratio_kennel_raw']}; kennel timings {result['kennel_timings']}"
    )
    write_result(result_name, result)
    return result
