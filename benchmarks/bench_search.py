"""Issue 8.6: search scaling: trials per minute with ``--n-jobs 1`` and ``--n-jobs 2`` on the
same small space (``configs/cat.yaml``'s, on builtin:breast_cancer).

    .venv/bin/python benchmarks/bench_search.py [--quick] [--n-trials N]
"""

from __future__ import annotations

import sys
import tempfile

from _common import (
    ROOT,
    child_env,
    common_args,
    kennel_cmd,
    ratio,
    run_child,
    table,
    temp_store,
    write_result,
)

SEARCH = ROOT / "src" / "kennel" / "commands" / "search.py"


def main(argv: list[str] | None = None) -> dict:
    args = common_args(argv, n_trials=0)
    n_trials = args.n_trials or (4 if args.quick else 8)
    name = "quick_search" if args.quick else "search"
    if not SEARCH.exists():
        print(f"search scaling: skipped ({SEARCH.relative_to(ROOT)} does not exist yet)")
        result = {"skipped": "kennel search is not available", "n_trials": n_trials}
        write_result(name, result)
        return result
    runs = {}
    for jobs in (1, 2):
        with temp_store() as (folder, uri), tempfile.TemporaryDirectory() as out:
            env = child_env({"MLFLOW_TRACKING_URI": uri})
            cmd = kennel_cmd(
                "search",
                "-c",
                "configs/cat.yaml",
                "--n-trials",
                str(n_trials),
                "--n-jobs",
                str(jobs),
                "--output-dir",
                out,
                "tracking.experiment=bench-search",
                "registry.model_name=bench-search",
            )
            runs[jobs] = run_child(f"search n_jobs={jobs}", cmd, env=env).check()
    per_min = {jobs: round(n_trials / r.wall_s * 60, 2) for jobs, r in runs.items()}
    result = {
        "n_trials": n_trials,
        "wall_s": {str(j): r.wall_s for j, r in runs.items()},
        "peak_mib": {str(j): r.peak_mib for j, r in runs.items()},
        "trials_per_min": {str(j): v for j, v in per_min.items()},
        "speedup_2_vs_1": ratio(per_min[2], per_min[1]),
    }
    print(
        table(
            ["n_jobs", "trials", "wall s", "trials / min"],
            [[j, n_trials, runs[j].wall_s, per_min[j]] for j in (1, 2)],
        )
    )
    print(f"speed-up with 2 jobs: {result['speedup_2_vs_1']}x")
    write_result(name, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
