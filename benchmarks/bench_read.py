"""Issue 23: reading a CSV file, kennel's reader against ``pandas.read_csv`` with defaults.

A seeded synthetic table of 1,000,000 rows x 20 columns (6 integer, 6 float, 3 integer with
gaps, 5 text columns, some with missing cells) is written once as a comma-separated CSV. In one
process with every library already imported, ``pandas.read_csv(path)`` and kennel's reading of
the same file (``Source(DataConfig(source=path)).read()``: the dialect detected by DuckDB's
sniffer, then pandas' C parser with that dialect) are timed alternately, and the fastest run of
each is kept; the ratio kennel / pandas is the target (<= 1). The readers kennel could have used
instead are timed in the same loop (information: why kennel reads with pandas), and a cold start
(a fresh interpreter importing what it needs and reading once) is timed for each as well.

    .venv/bin/python benchmarks/bench_read.py [--quick] [--rows N] [--repeats N]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from _common import (
    DATA_DIR,
    PYTHON,
    child_env,
    common_args,
    ratio,
    run_child,
    table,
    warm_file,
    write_result,
)

COLUMNS = 20


def read_dataset(rows: int, seed: int = 0) -> Path:
    """The CSV, written once: ``i0..i5`` int64, ``f0..f5`` floats (half with 5% missing),
    ``n0..n2`` whole numbers with 10% gaps, ``s0..s4`` text (some with 5% missing)."""
    path = DATA_DIR / f"read_{rows}x{COLUMNS}_s{seed}.csv"
    if path.exists():
        return path
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for i in range(6):
        columns[f"i{i}"] = rng.integers(-1000, 100_000, rows)
    for i in range(6):
        values = (rng.standard_normal(rows) * 100).round(4)
        if i % 2 == 0:
            values[rng.random(rows) < 0.05] = np.nan
        columns[f"f{i}"] = values
    for i in range(3):
        values = rng.integers(0, 50, rows).astype(float)
        values[rng.random(rows) < 0.1] = np.nan
        columns[f"n{i}"] = pd.array(values).astype("Int64")
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
    for i in range(5):
        text = words[rng.integers(0, len(words), rows)].astype(object)
        if i % 2 == 0:
            text[rng.random(rows) < 0.05] = None
        columns[f"s{i}"] = text
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.DataFrame(columns).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def _readers(path: Path) -> dict[str, object]:
    """Name -> a function reading ``path`` into a pandas frame."""
    import duckdb
    import pandas as pd
    import pyarrow.csv as pacsv

    from kennel.config import DataConfig
    from kennel.data.sources import Source

    def duck() -> pd.DataFrame:
        with duckdb.connect() as con:
            result = con.read_csv(str(path)).arrow()
            table = result.read_all() if hasattr(result, "read_all") else result
        return table.to_pandas()

    return {
        "pandas": lambda: pd.read_csv(path),
        "kennel": lambda: Source(DataConfig(source=str(path))).read(),
        "pyarrow": lambda: pacsv.read_csv(path).to_pandas(),
        "duckdb": duck,
    }


def timed(path: Path, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Each reader ``repeats`` times, round-robin (noise from other jobs hits all alike):
    wall seconds, and the process's CPU seconds (less sensitive to other jobs on a busy
    machine; pandas reads on one thread, kennel's sniffer too, pyarrow and DuckDB on all)."""
    readers = _readers(path)
    for read in readers.values():  # first touch: imports, caches
        read()  # type: ignore[operator]
    walls: dict[str, list[float]] = {name: [] for name in readers}
    cpus: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(repeats):
        for name, read in readers.items():
            started, cpu = time.perf_counter(), time.process_time()
            frame = read()  # type: ignore[operator]
            walls[name].append(round(time.perf_counter() - started, 4))
            cpus[name].append(round(time.process_time() - cpu, 4))
            del frame
    return {"walls_s": walls, "cpu_s": cpus}


def cold(path: Path) -> dict[str, float]:
    """A fresh interpreter importing what it needs and reading once (wall seconds)."""
    programs = {
        "pandas": f"import pandas as pd; pd.read_csv({str(path)!r})",
        "kennel": (
            "from kennel.config import DataConfig; from kennel.data.sources import Source; "
            f"Source(DataConfig(source={str(path)!r})).read()"
        ),
    }
    return {
        name: run_child(f"cold {name}", [PYTHON, "-c", code], env=child_env()).check().wall_s
        for name, code in programs.items()
    }


def measured(path: Path, repeats: int) -> dict[str, dict[str, list[float]]]:
    """:func:`timed` in a child process (kennel's ``src`` first on its path)."""
    cmd = [PYTHON, str(Path(__file__).resolve()), "--child", str(path), str(repeats)]
    return run_child("read loop", cmd, env=child_env()).check().json_line()


def main(argv: list[str] | None = None) -> dict:
    args = common_args(argv, rows=0, repeats=0)
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    repeats = args.repeats or (3 if args.quick else 7)
    path = read_dataset(rows)
    warm_file(path)
    times = measured(path, repeats)
    walls, cpus = times["walls_s"], times["cpu_s"]
    best = {name: min(values) for name, values in walls.items()}
    best_cpu = {name: min(values) for name, values in cpus.items()}
    starts = cold(path)
    size_mib = path.stat().st_size / 2**20
    result = {
        "rows": rows,
        "columns": COLUMNS,
        "file_mib": round(size_mib, 1),
        "repeats": repeats,
        "walls_s": walls,
        "cpu_s": cpus,
        "best_s": best,
        "best_cpu_s": best_cpu,
        "cold_s": starts,
        "ratio_kennel_pandas": ratio(best["kennel"], best["pandas"]),
        "ratio_pyarrow_pandas": ratio(best["pyarrow"], best["pandas"]),
        "ratio_duckdb_pandas": ratio(best["duckdb"], best["pandas"]),
        "ratio_cold_kennel_pandas": ratio(starts["kennel"], starts["pandas"]),
        "ratio_cpu_kennel_pandas": ratio(best_cpu["kennel"], best_cpu["pandas"]),
    }
    rows_out = [
        [name, best[name], ratio(best[name], best["pandas"]), best_cpu[name]] for name in best
    ]
    rows_out += [[f"{name} (cold start)", starts[name], None, None] for name in starts]
    print(f"{rows:,} rows x {COLUMNS} columns, {size_mib:.0f} MiB CSV, best of {repeats}")
    print(table(["reader", "wall s", "/ pandas", "CPU s"], rows_out))
    print(
        f"kennel read / pandas.read_csv = {result['ratio_kennel_pandas']} "
        f"(kennel {best['kennel']:.3f}s, pandas {best['pandas']:.3f}s; CPU time ratio "
        f"{result['ratio_cpu_kennel_pandas']})"
    )
    write_result("quick_read" if args.quick else "read", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        import json

        print(json.dumps(timed(Path(sys.argv[2]), int(sys.argv[3]))))
    else:
        main(sys.argv[1:])
