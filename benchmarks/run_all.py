"""Run every benchmark of issue 8 and print one table with the targets and PASS/MISS.

    .venv/bin/python benchmarks/run_all.py            # full sizes (make bench), ~50 min
    #   (~25 of them in bench_monitor.py, mostly Evidently on 2 x 1M rows)
    .venv/bin/python benchmarks/run_all.py --quick    # small sizes (make bench-quick)
    .venv/bin/python benchmarks/run_all.py --only cat_train,predict
    .venv/bin/python benchmarks/run_all.py --summary-only --no-docs   # table from results/

Each benchmark also runs on its own (``benchmarks/bench_<name>.py``) and writes
``benchmarks/results/<name>.json`` (``quick_<name>.json`` with ``--quick``). A full run
rewrites the results table in ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cat_train  # noqa: E402
import bench_cluster  # noqa: E402
import bench_dog_train  # noqa: E402
import bench_explain  # noqa: E402
import bench_monitor  # noqa: E402
import bench_predict  # noqa: E402
import bench_read  # noqa: E402
import bench_search  # noqa: E402
import bench_serve  # noqa: E402
import bench_startup  # noqa: E402
from _common import RESULTS_DIR, ROOT, machine, table, write_result  # noqa: E402

BENCHMARKS: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "startup": bench_startup.main,
    "cat_train": bench_cat_train.main,
    "dog_train": bench_dog_train.main,
    "predict": bench_predict.main,
    "serve": bench_serve.main,
    "search": bench_search.main,
    "cluster": bench_cluster.main,
    "read": bench_read.main,
    "monitor": bench_monitor.main,
    "explain": bench_explain.main,
}
#: Files whose results table (between the marks) each full run rewrites.
DOCS = (ROOT / "README.md", ROOT / "docs" / "performance.md")
START_MARK, END_MARK = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Target:
    bench: str
    key: str
    label: str
    limit: float
    upper: bool = True
    """True: the measured value must be <= limit; False: >= limit."""

    def check(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        ok = value <= self.limit if self.upper else value >= self.limit
        return "PASS" if ok else "MISS"

    @property
    def text(self) -> str:
        sign = "<=" if self.upper else ">="
        big = self.limit >= 100_000 and float(self.limit).is_integer()  # 1,048,576, not 1.05e+06
        return f"{sign} {self.limit:,.0f}" if big else f"{sign} {self.limit:g}"


TARGETS = [
    Target("cat_train", "ratio_kennel_raw", "cat train end to end / raw lightgbm.train", 1.10),
    Target("cat_train", "ratio_kennel_floor", "cat train end to end / float32 floor script", 1.35),
    Target(
        "cat_train",
        "ratio_data_kennel_floor",
        "cat data phase on the critical path / floor read-and-convert",
        2.0,
    ),
    Target(
        "cat_train",
        "ratio_data_own_floor",
        "cat data phase's own time, beside the imports / floor (info)",
        float("inf"),
    ),
    Target("cat_train", "mem_ratio_kennel_raw", "cat train peak memory / raw lightgbm.train", 1.2),
    Target("cat_train", "ratio_kennel_autolog", "cat train end to end / bare autolog", 1.0),
    Target("dog_train", "ratio_kennel_raw", "dog train end to end / raw model.fit", 1.15),
    Target("dog_train", "ratio_kennel_autolog", "dog train end to end / bare autolog", 1.0),
    Target("predict", "ratio_cat_10000", "cat pyfunc predict / booster, 10k rows", 1.2),
    Target("predict", "ratio_dog_10000", "dog pyfunc predict / keras, 10k rows", 1.2),
    Target("predict", "ratio_cat_1", "cat pyfunc predict / booster, 1 row (info)", float("inf")),
    Target("predict", "ratio_dog_1", "dog pyfunc predict / keras, 1 row (info)", float("inf")),
    Target("serve", "ratio_p50_kennel_native", "served cat p50 latency / native flavor", 1.0),
    Target(
        "serve",
        "ratio_rows_per_s_kennel_native",
        "served cat rows/s (1000-row) / native flavor",
        1.0,
        upper=False,
    ),
    Target("startup", "help_s", "kennel --help (s)", 0.5),
    Target("startup", "tensorflow_loaded", "TensorFlow loaded by a cat training", 0),
    Target("startup", "ratio_tiny_kennel_bare", "tiny cat run / bare minimal script", 1.05),
    Target("search", "speedup_2_vs_1", "search trials/min, 2 jobs / 1 job", 1.7, upper=False),
    Target("search", "speedup_2_vs_1_12", "search 12 trials, 2 jobs / 1 job", 1.7, upper=False),
    Target("search", "speedup_2_vs_1_30", "search 30 trials, 2 jobs / 1 job", 2.0, upper=False),
    Target(
        "search",
        "ratio_2_vs_inprocess",
        "search 2 jobs / in-process script (model per trial)",
        2.0,
        upper=False,
    ),
    Target("search", "trials_per_min_2", "search trials/min, 2 jobs (cat)", 60, upper=False),
    Target("cluster", "score.client_peak_mib", "cluster predict: client peak MiB (20M rows)", 1536),
    Target(
        "cluster",
        "score.ratio_rows_per_s_cluster_inprocess",
        "cluster predict rows/s / in-process (info)",
        0,
        upper=False,
    ),
    Target(
        "cluster",
        "train.ratio_time_cluster_inprocess",
        "cat train 5M rows, local:2 / in-process time",
        1.5,
    ),
    Target(
        "cluster",
        "train.auc_inprocess_minus_cluster",
        "cat train 5M rows, test AUC in-process - local:2",
        0.005,
    ),
    Target(
        "search",
        "dog_ratio_warm_vs_subprocess",
        "dog search trials/min, warm / subprocess launcher (info)",
        0,
        upper=False,
    ),
    Target("read", "ratio_kennel_pandas", "CSV read 1M x 20: kennel / pandas.read_csv", 1.0),
    Target(
        "read",
        "ratio_cpu_kennel_pandas",
        "CSV read 1M x 20, CPU time: kennel / pandas (info)",
        float("inf"),
    ),
    # Issue 22: the production loop (profile, capture, monitor).
    Target("monitor", "wall_s", "kennel monitor 1M rows x 100 cols, wall s", 60),
    Target("monitor", "peak_mib", "kennel monitor 1M rows x 100 cols, peak MiB", 2048),
    Target(
        "monitor",
        "ratio_evidently_kennel",
        "Evidently drift preset / kennel monitor, time",
        20,
        upper=False,
    ),
    Target("monitor", "ratio_kennel_floor", "kennel monitor / numpy PSI floor, time", 3),
    Target("serve", "capture_p50_delta_ms", "served cat p50, with capture - without (ms)", 0.5),
    Target(
        "serve",
        "capture_ratio_rows_per_s",
        "served cat rows/s, with capture / without",
        0.95,
        upper=False,
    ),
    Target("cat_train", "ratio_profile_wall", "reference profile / cat train wall (1M rows)", 0.03),
    Target("cat_train", "wide_profile_bytes", "profile.json bytes, 1,500 columns", 1_048_576),
    # Issue 24: explanations.
    Target("explain", "explain_over_floor", "cat explain 10k rows / LightGBM pred_contrib", 1.2),
    Target("explain", "explain_over_shap", "cat explain 10k rows / shap TreeExplainer", 1.0),
    Target("explain", "served_explain_extra_ms", "served 1 row p50, explain - plain (ms)", 2),
]


def summary_rows(results: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for target in TARGETS:
        result = results.get(target.bench) or {}
        value = result.get(target.key)
        if isinstance(value, bool):
            value = float(value)
        status = target.check(value)
        if "error" in result:
            status = "ERROR"
        elif "skipped" in result:
            status = "SKIP"
        text = target.text if target.limit != float("inf") else "-"
        if target.limit == float("inf") and status == "PASS":
            status = "info"
        rows.append([target.label, value, text, status])
    return rows


def update_doc(text: str) -> None:
    for doc_path in DOCS:
        if not doc_path.exists():
            continue
        doc = doc_path.read_text()
        if START_MARK not in doc or END_MARK not in doc:
            continue
        head, rest = doc.split(START_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
        doc_path.write_text(f"{head}{START_MARK}\n{text}\n{END_MARK}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="do not rewrite the results table in README.md and docs/performance.md",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="run nothing: rebuild the table from the latest results/*.json",
    )
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    if args.summary_only:
        names = []
    extra = ["--quick"] if args.quick else []
    results: dict[str, dict[str, Any]] = {}
    durations: dict[str, float] = {}
    load_before = os.getloadavg()
    for name in names:
        print(f"\n== {name} ==", flush=True)
        started = time.perf_counter()
        try:
            results[name] = BENCHMARKS[name](extra)
        except Exception as exc:  # one failing benchmark must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        durations[name] = round(time.perf_counter() - started, 1)
    # Benchmarks not run now: their latest result file (so --only refreshes one line).
    prefix = "quick_" if args.quick else ""
    for name in BENCHMARKS:
        path = RESULTS_DIR / f"{prefix}{name}.json"
        if name not in results and path.exists():
            results[name] = json.loads(path.read_text())
    rows = summary_rows(results)
    headers = ["target", "measured", "goal", "result"]
    rendered = table(headers, rows)
    info = machine()
    load_after = os.getloadavg()
    footer = (
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"Python {info['python']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
        + f". Load average (1 min) before/after: {load_before[0]:.1f}/{load_after[0]:.1f}. "
        + f"Mode: {'quick' if args.quick else 'full'}"
        + (
            "; minutes: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in durations.items())
            if durations
            else ""
        )
        + "."
    )
    print("\n" + rendered + "\n\n" + footer)
    write_result(
        "quick_summary" if args.quick else "summary",
        {
            "mode": "quick" if args.quick else "full",
            "rows": [dict(zip(headers, r, strict=True)) for r in rows],
            "durations_s": durations,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "results": json.loads(json.dumps(results, default=str)),
        },
    )
    if not args.quick and not args.no_docs:
        update_doc(rendered + "\n\n" + footer)
    return 1 if any(r[3] == "ERROR" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
