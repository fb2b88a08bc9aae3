"""Evidently's data-drift preset on a reference table and a current batch (the script a user
would otherwise run), for ``bench_monitor.py``. Runs in its own virtual environment
(``benchmarks/.venv-evidently``: Evidently 0.7 needs pandas < 3, which kennel does not use).

    python evidently_drift.py REFERENCE.parquet CURRENT.parquet [COLUMN ...]

Reads the columns given (default: every column but ``target``) of both files with pandas,
runs ``Report([DataDriftPreset()])`` and prints one JSON line: ``report_s`` (the
``Report.run`` call alone), ``read_s``, ``import_s``, ``drifted`` (how many columns the preset
calls drifted, from its ``DriftedColumnsCount`` metric), ``drifted_columns`` (per-column
``ValueDrift`` values past their thresholds), ``methods`` (which test per column, counted).
"""

from __future__ import annotations

import time

started = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402

import evidently  # noqa: E402
import pandas as pd  # noqa: E402
from evidently import Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402


def main() -> None:
    imported = time.perf_counter()
    reference_path, current_path, *columns = sys.argv[1:]
    reference = pd.read_parquet(reference_path, columns=columns or None)
    reference = reference.drop(columns=["target"], errors="ignore")
    current = pd.read_parquet(current_path, columns=list(reference.columns))
    read = time.perf_counter()
    report = Report([DataDriftPreset()])
    snapshot = report.run(current_data=current, reference_data=reference)
    ran = time.perf_counter()
    result = snapshot.dict()
    count, drifted, methods = None, [], Counter()
    for metric in result["metrics"]:
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith("DriftedColumnsCount"):
            count = metric["value"]["count"]
        elif kind.endswith("ValueDrift"):
            methods[config.get("method")] += 1
            if metric["value"] is not None and metric["value"] >= config["threshold"]:
                drifted.append(config["column"])
    # ValueDrift's verdict: statistic >= threshold for distances, p-value < threshold for
    # tests; the preset picks distances (Wasserstein, Jensen-Shannon) above 1,000 rows.
    print(
        json.dumps(
            {
                "evidently": evidently.__version__,
                "pandas": pd.__version__,
                "reference_rows": len(reference),
                "current_rows": len(current),
                "columns": len(reference.columns),
                "import_s": round(imported - started, 3),
                "read_s": round(read - imported, 3),
                "report_s": round(ran - read, 3),
                "total_s": round(time.perf_counter() - started, 3),
                "drifted": None if count is None else int(count),
                "drifted_columns": sorted(drifted),
                "methods": dict(methods),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
