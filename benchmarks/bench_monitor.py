"""Issue 22: ``kennel monitor`` on 1,000,000 rows x 100 columns, against Evidently's data-drift
preset on the same rows and against a plain numpy floor, in one run.

Data (``monitor_data.py``, seeded, cached in ``data/``): 50 float, 25 integer (~5 % missing)
and 25 text columns (5-50 levels) + a binary target. A cat model (30 rounds) is trained on the
200,000-row reference table with ``registry.auto_promote=production`` into a temporary store,
so it carries a reference profile. Two current batches of 1,000,000 rows: ``same`` (the same
distribution, another seed) and ``shifted`` (10 numeric columns +0.5 SD, 2 categorical columns
with a new level in 20 % of the rows). Each is scored once with ``kennel predict --provenance``
(timed, info only), so it carries the model's outputs as a capture does and ``kennel monitor``
does not score it.

* kennel: ``python run.py monitor --model-uri models:/bench-monitor@production --input
  <scored.parquet>`` as a child process: wall time from spawn to exit (imports, reading the
  model's profile, counting in chunks of ``monitor.chunk_size`` rows, comparing, the MLflow
  run in ``bench-monitor-monitoring`` with monitor.html) and the child's peak RSS (``wait4``).
  Also once on the unscored shifted batch, where it scores the rows itself (info).
* numpy floor, in this process: the same Parquet file read in chunks with pyarrow (only the
  103 columns compared), numbers binned against precomputed edges (``np.searchsorted`` +
  ``np.bincount``; the reference's 20-quantile edges), categories by ``pd.factorize`` +
  ``Index.get_indexer`` + ``np.bincount``, the model outputs against the profile's edges; then
  PSI per column. Only the counting and PSI are timed (edges and reference counts are made
  before the clock starts).
* Evidently (``baselines/evidently_drift.py`` in ``benchmarks/.venv-evidently``, created on
  first use: Evidently 0.7 needs pandas < 3): ``Report([DataDriftPreset()]).run`` on the 100
  feature columns of the same 200,000 reference rows and 1,000,000 current rows. The ratio
  uses the ``Report.run`` call alone (not its imports or reading the files); the total is
  reported too.

    .venv/bin/python benchmarks/bench_monitor.py [--quick] [--skip-evidently] [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import monitor_data
import numpy as np
from _common import (
    BASELINES,
    BENCH_DIR,
    DATA_DIR,
    PYTHON,
    THREADS,
    child_env,
    kennel_cmd,
    ratio,
    run_child,
    table,
    temp_store,
    warm_file,
    write_result,
)

MODEL = "bench-monitor"
MODEL_URI = f"models:/{MODEL}@production"
EVIDENTLY_VENV = BENCH_DIR / ".venv-evidently"
EVIDENTLY_REQUIREMENTS = ["evidently==0.7.*", "pandas<3", "pyarrow"]
#: PSI above which the floor calls a column shifted (kennel's default line, no test).
FLOOR_PSI = 0.2
PSI_EPSILON = 1e-4
BINS = 20


# --------------------------------------------------------------------------- Evidently
def evidently_python() -> tuple[Path | None, str]:
    """The Evidently venv's interpreter (created and installed on first use), or None and
    why not. Kept between runs; a stamp file marks a finished install. The venv holds a
    ``.gitignore`` of ``*``, so git and ruff leave it alone."""
    python = EVIDENTLY_VENV / "bin" / "python"
    stamp = EVIDENTLY_VENV / ".bench-installed"
    if python.exists() and stamp.exists():
        return python, "cached"
    try:
        shutil.rmtree(EVIDENTLY_VENV, ignore_errors=True)
        subprocess.run([PYTHON, "-m", "venv", str(EVIDENTLY_VENV)], check=True, timeout=300)
        # Git (and ruff, which follows .gitignore) skip the venv, as Python >= 3.13 does.
        (EVIDENTLY_VENV / ".gitignore").write_text("*\n")
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        print(f"installing {' '.join(EVIDENTLY_REQUIREMENTS)} into {EVIDENTLY_VENV}", flush=True)
        done = subprocess.run(
            [*pip, *EVIDENTLY_REQUIREMENTS], capture_output=True, text=True, timeout=1200
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"pip install failed: {' | '.join(tail)}"
        check = "import evidently, pandas; from evidently.presets import DataDriftPreset"
        subprocess.run([str(python), "-c", check], check=True, timeout=300, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not set up {EVIDENTLY_VENV.name}: {exc}"
    stamp.write_text(" ".join(EVIDENTLY_REQUIREMENTS) + "\n")
    return python, "installed now"


def run_evidently(python: Path, reference: Path, current: Path) -> dict[str, Any]:
    env = child_env()
    env.pop("PYTHONPATH", None)  # kennel's src is not Evidently's business
    cmd = [python, BASELINES / "evidently_drift.py", reference, current, *monitor_data.FEATURES]
    run = run_child("evidently", cmd, env=env, timeout=3600).check()
    return {**run.json_line(), "wall_s": run.wall_s, "peak_mib": run.peak_mib}


# --------------------------------------------------------------------------- numpy floor
def psi(reference: np.ndarray, current: np.ndarray) -> float:
    r = np.maximum(reference / max(reference.sum(), 1), PSI_EPSILON)
    c = np.maximum(current / max(current.sum(), 1), PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def floor_reference(reference: Path, profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per column: bin edges (numbers: 20-quantile edges of the reference rows, deduplicated)
    or the vocabulary (text), and the reference counts; the model outputs from its profile."""
    import pandas as pd

    frame = pd.read_parquet(reference, columns=monitor_data.FEATURES)
    columns: dict[str, dict[str, Any]] = {}
    for name in monitor_data.FEATURES:
        series = frame[name]
        if name in monitor_data.CATS:
            vocab = pd.Index(series.dropna().unique())
            columns[name] = {"vocab": vocab, "ref": count_categories(vocab, series)}
        else:
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = values[np.isfinite(values)]
            edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))
            search = np.append(edges, np.nan)
            columns[name] = {"edges": search, "ref": count_numbers(search, values)}
    for out in profile["outputs"]:
        if out["role"] == "categorical":
            vocab = pd.Index(out["values"])
            ref = np.array([*out["counts"], out["other"], out["missing"]])
            columns[out["name"]] = {"vocab": vocab, "ref": ref, "as_text": True}
        else:
            edges = np.append(np.array(out["edges"], dtype=np.float64), np.nan)
            columns[out["name"]] = {
                "edges": edges,
                "ref": np.array([*out["counts"], out["missing"]]),
            }
    return columns


def count_numbers(search: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Rows per bucket of ``search`` (edges then NaN): the last bucket holds the NaN rows."""
    found = np.searchsorted(search, values, side="right")
    return np.bincount(found, minlength=len(search) + 1)


def count_categories(vocab: Any, series: Any, as_text: bool = False) -> np.ndarray:
    """Rows per vocabulary value, then any other value, then missing."""
    import pandas as pd

    codes, uniques = pd.factorize(series)
    if as_text:
        uniques = pd.Index([str(u) for u in uniques])
    lookup = vocab.get_indexer(uniques)
    lookup = np.where(lookup < 0, len(vocab), lookup)
    slots = np.append(lookup, len(vocab) + 1)  # code -1 (missing) -> last slot
    return np.bincount(slots[codes], minlength=len(vocab) + 2)


def floor(path: Path, columns: dict[str, dict[str, Any]], chunk: int) -> dict[str, Any]:
    """Read ``path`` in chunks, count every column against ``columns``, PSI per column."""
    import pyarrow.parquet as pq

    started = time.perf_counter()
    totals: dict[str, np.ndarray] = {}
    rows = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk, columns=list(columns)):
        rows += batch.num_rows
        for name, ref in columns.items():
            array = batch.column(name)
            if "edges" in ref:
                values = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
                counts = count_numbers(ref["edges"], values)
            else:
                counts = count_categories(
                    ref["vocab"], array.to_pandas(), ref.get("as_text", False)
                )
            totals[name] = totals[name] + counts if name in totals else counts
    scores = {name: psi(ref["ref"], totals[name]) for name, ref in columns.items()}
    elapsed = time.perf_counter() - started
    shifted = sorted(n for n, v in scores.items() if v >= FLOOR_PSI and n in monitor_data.FEATURES)
    return {"s": round(elapsed, 3), "rows": rows, "psi_over_0.2": shifted}


# --------------------------------------------------------------------------- kennel
def kennel_monitor(env: dict[str, str], data: Path, out: Path) -> dict[str, Any]:
    cmd = kennel_cmd(
        "monitor",
        "--model-uri",
        MODEL_URI,
        "--input",
        str(data),
        "--output-dir",
        str(out),
        f"resource.num_threads={THREADS}",
    )
    run = run_child("kennel monitor", cmd, env=env)
    if run.rc not in (0, 3):  # 3: drift found (the shifted batch)
        run.check()
    line = run.json_line()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_s": run.wall_s,
        "peak_mib": run.peak_mib,
        "rc": run.rc,
        "rows": line.get("rows"),
        "duration_s": line.get("duration_s"),
        "drifted_columns": line.get("drifted_columns"),
        "drift_share": line.get("drift_share"),
        "output_drift": line.get("output_drift"),
        "exit_code": line.get("exit_code"),
    }


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run (the least disturbed), every wall time, the highest peak."""
    fastest = min(runs, key=lambda r: r["wall_s"])
    return {
        **fastest,
        "walls_s": [r["wall_s"] for r in runs],
        "peak_mib": max(r["peak_mib"] for r in runs),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, 20k reference rows")
    parser.add_argument("--rows", type=int, default=0, help="rows per current batch")
    parser.add_argument("--repeats", type=int, default=0, help="kennel and floor runs per batch")
    parser.add_argument("--skip-evidently", action="store_true", help="do not run Evidently")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    with contextlib.ExitStack() as stack:
        return _main(argv, stack)


def _main(argv: list[str] | None, stack: contextlib.ExitStack) -> dict:
    args = parse(argv)
    skip_evidently = args.skip_evidently
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    ref_rows = 20_000 if args.quick else 200_000
    repeats = args.repeats or (1 if args.quick else 2)
    chunk = 100_000
    load_before = os.getloadavg()
    started = time.perf_counter()
    print(
        f"monitoring, {rows:,} x 100 columns against a {ref_rows:,}-row reference; "
        f"best of {repeats}",
        flush=True,
    )
    reference = monitor_data.table(DATA_DIR, ref_rows, 0, target=True)
    batches = {
        "same": monitor_data.table(DATA_DIR, rows, 1),
        "shifted": monitor_data.table(DATA_DIR, rows, 2, shifted=True),
    }
    generated = time.perf_counter()
    evidently, evidently_status = (None, "skipped (--skip-evidently)")
    if not skip_evidently:
        evidently, evidently_status = evidently_python()
    folder, uri = stack.enter_context(temp_store("kennel-bench-monitor-"))
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kennel-bench-mon-")))
    env = child_env({"MLFLOW_TRACKING_URI": uri})
    train = run_child(
        "kennel train",
        kennel_cmd(
            "train",
            "-c",
            "configs/cat.yaml",
            "--output-dir",
            str(tmp / "train"),
            f"data.source={reference}",
            f"data.target={monitor_data.TARGET}",
            "tracking.experiment=bench-monitor",
            f"registry.model_name={MODEL}",
            "registry.auto_promote=production",
            f"resource.num_threads={THREADS}",
            "model.params.n_estimators=30",
        ),
        env=env,
    ).check()
    trained = train.json_line()
    profile_path = next(folder.rglob("profile.json"))
    profile = json.loads(profile_path.read_text())
    print(
        f"trained in {train.wall_s:.1f} s (test AUC {trained['metrics']['test_roc_auc']:.3f}); "
        f"profile.json {profile_path.stat().st_size:,} bytes",
        flush=True,
    )

    scored: dict[str, Path] = {}
    predict_s: dict[str, float] = {}
    for name, path in batches.items():
        scored[name] = tmp / f"scored_{name}.parquet"
        run = run_child(
            "kennel predict",
            kennel_cmd(
                "predict",
                "--model-uri",
                MODEL_URI,
                "--input",
                str(path),
                "--output",
                str(scored[name]),
                "--provenance",
                f"resource.num_threads={THREADS}",
            ),
            env=env,
        ).check()
        predict_s[name] = run.wall_s
        print(f"kennel predict --provenance, {name}: {run.wall_s:.1f} s", flush=True)

    references = floor_reference(reference, profile)
    kennel_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in batches}
    floor_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in batches}
    for name in batches:
        warm_file(scored[name])
    for r in range(repeats):  # interleaved: kennel and the floor, batch after batch
        for name in batches:
            kennel_runs[name].append(kennel_monitor(env, scored[name], tmp / f"mon-{name}-{r}"))
            floor_runs[name].append(floor(scored[name], references, chunk))
            k, f = kennel_runs[name][-1], floor_runs[name][-1]
            print(
                f"  {name}: kennel monitor {k['wall_s']:.2f} s, {k['peak_mib']:.0f} MiB, "
                f"{len(k['drifted_columns'] or [])} drifted; floor {f['s']:.2f} s",
                flush=True,
            )
    kennel = {name: best(runs) for name, runs in kennel_runs.items()}
    floors = {
        name: {**min(runs, key=lambda r: r["s"]), "all_s": [r["s"] for r in runs]}
        for name, runs in floor_runs.items()
    }
    warm_file(batches["shifted"])
    scoring = kennel_monitor(env, batches["shifted"], tmp / "mon-scoring")
    print(
        f"  shifted, unscored (kennel monitor scores it): {scoring['wall_s']:.2f} s, "
        f"{scoring['peak_mib']:.0f} MiB",
        flush=True,
    )

    evidently_runs: dict[str, dict[str, Any]] = {}
    if evidently is not None:
        for name in batches:
            evidently_runs[name] = run_evidently(evidently, reference, scored[name])
            e = evidently_runs[name]
            print(
                f"  {name}: Evidently Report.run {e['report_s']:.1f} s (total {e['total_s']:.1f} s, "
                f"{e['peak_mib']:.0f} MiB), {e['drifted']} drifted",
                flush=True,
            )
    else:
        print(f"Evidently not run: {evidently_status}", flush=True)

    def worst(values: list[float | None], pick=max) -> float | None:
        known = [v for v in values if v is not None]
        return pick(known) if known else None

    result: dict[str, Any] = {
        "rows": rows,
        "reference_rows": ref_rows,
        "columns": 100,
        "chunk_size": chunk,
        "repeats": repeats,
        "threads": THREADS,
        "generate_s": round(generated - started, 1),
        "train_s": train.wall_s,
        "test_roc_auc": trained["metrics"]["test_roc_auc"],
        "profile_json_bytes": profile_path.stat().st_size,
        "predict_provenance_s": predict_s,
        "kennel": kennel,
        "kennel_with_scoring_shifted": scoring,
        "floor": floors,
        "evidently": evidently_runs or {"skipped": evidently_status},
        "evidently_status": evidently_status,
        "expected_drifted": sorted(
            [*monitor_data.SHIFTED_NUMERIC, *monitor_data.SHIFTED_CATEGORICAL]
        ),
        # The targets: the slower batch's wall, the higher peak, the worse ratio.
        "wall_s": max(k["wall_s"] for k in kennel.values()),
        "peak_mib": max(k["peak_mib"] for k in kennel.values()),
        "ratio_kennel_floor": worst(
            [ratio(kennel[n]["wall_s"], floors[n]["s"]) for n in batches], max
        ),
        "ratio_evidently_kennel": worst(
            [ratio(evidently_runs[n]["report_s"], kennel[n]["wall_s"]) for n in evidently_runs],
            min,
        ),
        "ratio_evidently_total_kennel": worst(
            [ratio(evidently_runs[n]["total_s"], kennel[n]["wall_s"]) for n in evidently_runs],
            min,
        ),
        "ratio_scoring_included_floor": ratio(scoring["wall_s"], floors["shifted"]["s"]),
        "flagged": {
            name: {
                "kennel": len(kennel[name]["drifted_columns"] or []),
                "evidently": evidently_runs[name]["drifted"] if name in evidently_runs else None,
                "floor_psi_over_0.2": len(floors[name]["psi_over_0.2"]),
            }
            for name in batches
        },
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "total_s": round(time.perf_counter() - started, 1),
    }
    if evidently_runs:
        result["evidently_version"] = next(iter(evidently_runs.values())).get("evidently")
    rows_table = []
    for name in batches:
        k, f = kennel[name], floors[name]
        e = evidently_runs.get(name, {})
        rows_table.append(
            [
                name,
                k["wall_s"],
                k["peak_mib"],
                f["s"],
                e.get("report_s"),
                e.get("total_s"),
                ratio(e.get("report_s"), k["wall_s"]),
                ratio(k["wall_s"], f["s"]),
                len(k["drifted_columns"] or []),
                e.get("drifted"),
                len(f["psi_over_0.2"]),
            ]
        )
    print(
        table(
            [
                "batch",
                "kennel s",
                "kennel MiB",
                "floor s",
                "evidently run s",
                "evidently total s",
                "evidently / kennel",
                "kennel / floor",
                "flagged kennel",
                "flagged evidently",
                "floor PSI>=0.2",
            ],
            rows_table,
        )
    )
    print(
        f"kennel monitor on the unscored shifted batch (scores it too): {scoring['wall_s']:.1f} s, "
        f"{scoring['peak_mib']:.0f} MiB; kennel predict --provenance: "
        + ", ".join(f"{n} {s:.1f} s" for n, s in predict_s.items())
        + f"; expected drifted: {len(result['expected_drifted'])} (shifted), 0 (same)"
    )
    print(
        f"load average (1 min) before/after: {load_before[0]:.1f}/{result['loadavg_after'][0]:.1f}"
    )
    write_result("quick_monitor" if args.quick else "monitor", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
