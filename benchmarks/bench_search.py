"""Issue 12: search throughput. Trials per minute (wall time of the whole command, start-up
included) on builtin:breast_cancer with ``configs/cat.yaml``'s space, with the user's
``resource.num_threads=2`` set (``KENNEL_RESOURCE__NUM_THREADS``, as on this 2-core machine):

- ``kennel search --n-jobs 1`` and ``--n-jobs 2`` (warm launcher, the default);
- ``--n-jobs 2`` with ``search.launcher=subprocess`` (a fresh interpreter per trial);
- the in-process script a user writes instead (``baselines/search_inprocess.py``: Optuna +
  MLflow nested runs + LightGBM in one process) logging a model per trial with MLflow's
  defaults (the target's baseline), with explicit pip requirements (an expert's shortcut),
  and without a model;
- a ``dog`` search (``configs/dog.yaml``, fewer epochs) with both launchers.

    .venv/bin/python benchmarks/bench_search.py [--quick] [--n-trials N] [--no-dog]
"""

from __future__ import annotations

import sys
import tempfile

from _common import (
    BASELINES,
    PYTHON,
    child_env,
    common_args,
    kennel_cmd,
    ratio,
    run_child,
    table,
    temp_store,
    write_result,
)

DOG_OVERRIDES = ("model.params.epochs=15", "model.params.early_stopping_patience=4")


def kennel_search(name: str, config: str, n_trials: int, jobs: int, *extra: str) -> dict:
    with temp_store() as (_, uri), tempfile.TemporaryDirectory() as out:
        env = child_env({"MLFLOW_TRACKING_URI": uri})
        cmd = kennel_cmd(
            "search",
            "-c",
            config,
            "--n-trials",
            str(n_trials),
            "--n-jobs",
            str(jobs),
            "--output-dir",
            out,
            "tracking.experiment=bench-search",
            "registry.model_name=bench-search",
            *extra,
        )
        run = run_child(name, cmd, env=env).check()
    summary = run.json_line()
    return {
        "n_trials": n_trials,
        "wall_s": run.wall_s,
        "peak_mib": run.peak_mib,
        "trials_per_min": round(n_trials / run.wall_s * 60, 2),
        "counts": summary.get("counts"),
        "in_search_trials_per_min": summary.get("trials_per_minute"),
        "timings": summary.get("timings"),
        # Trials per minute once the trials run (no start-up or final reports).
        "steady_trials_per_min": round(n_trials / summary["timings"]["trials_s"] * 60, 2)
        if (summary.get("timings") or {}).get("trials_s")
        else None,
    }


#: Interleaved runs of each short search (1 job, 2 jobs, 1 job, ...); the fastest of each
#: counts, as in the training benchmarks.
SHORT_REPEATS = 3


def short_pair(config: str, count: int, repeats: int) -> dict[str, dict]:
    """``count`` trials with 1 and with 2 jobs, ``repeats`` interleaved runs of each: the
    fastest run of each (its ``all_wall_s`` lists every run)."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(repeats):
        for jobs in (1, 2):
            runs[jobs].append(
                kennel_search(
                    f"search-{jobs}-random-{count}", config, count, jobs, "search.sampler=random"
                )
            )
    return {
        f"kennel n_jobs={jobs}, random sampler, {count} trials": {
            **min(done, key=lambda run: run["wall_s"]),
            "all_wall_s": [run["wall_s"] for run in done],
        }
        for jobs, done in runs.items()
    }


def baseline(name: str, n_trials: int, *extra: str) -> dict:
    with temp_store() as (folder, uri):
        env = child_env({"MLFLOW_TRACKING_URI": uri})
        cmd = [PYTHON, str(BASELINES / "search_inprocess.py"), "--n-trials", str(n_trials)]
        # In the store's folder: its experiment keeps artifacts in ./mlruns, gone with it.
        run = run_child(name, [*cmd, *extra], env=env, cwd=folder).check()
    line = run.json_line()
    return {
        "n_trials": n_trials,
        "wall_s": run.wall_s,
        "peak_mib": run.peak_mib,
        "trials_per_min": line["trials_per_min"],
    }


def main(argv: list[str] | None = None) -> dict:
    argv = list(argv or [])
    no_dog = "--no-dog" in argv
    args = common_args([a for a in argv if a != "--no-dog"], n_trials=0)
    n_trials = args.n_trials or (10 if args.quick else 50)
    dog_trials = 3 if args.quick else 6
    name = "quick_search" if args.quick else "search"
    rows: dict[str, dict] = {}
    cat = "configs/cat.yaml"
    # The scaling pair samples with the seeded random sampler: both run the very same trials
    # (TPE with parallel trials samples differently, so the work itself would differ).
    rows["kennel n_jobs=1, random sampler"] = kennel_search(
        "search-1-random", cat, n_trials, 1, "search.sampler=random"
    )
    rows["kennel n_jobs=2, random sampler"] = kennel_search(
        "search-2-random", cat, n_trials, 2, "search.sampler=random"
    )
    # Issue 25: the short searches users run first (start-up weighs most there). One pair of
    # such short runs swings with the host by ±30 %: pairs run interleaved, the best of each.
    short = [12] if args.quick else [12, 30]
    for count in short:
        rows.update(short_pair(cat, count, repeats=1 if args.quick else SHORT_REPEATS))
    rows["kennel n_jobs=1"] = kennel_search("search-1", cat, n_trials, 1)
    rows["kennel n_jobs=2"] = kennel_search("search-2", cat, n_trials, 2)
    rows["kennel n_jobs=2 subprocess"] = kennel_search(
        "search-2-subprocess", cat, n_trials, 2, "search.launcher=subprocess"
    )
    rows["kennel n_jobs=2 log_models=all"] = kennel_search(
        "search-2-all", cat, n_trials, 2, "search.log_models=all"
    )
    rows["in-process, model per trial"] = baseline("inprocess-model", n_trials)
    rows["in-process, model per trial, explicit requirements"] = baseline(
        "inprocess-model-explicit", n_trials, "--explicit-requirements"
    )
    rows["in-process, no model"] = baseline("inprocess-no-model", n_trials, "--no-model")
    if not no_dog:
        dog = "configs/dog.yaml"
        rows["dog n_jobs=1 warm"] = kennel_search("dog-warm", dog, dog_trials, 1, *DOG_OVERRIDES)
        rows["dog n_jobs=1 subprocess"] = kennel_search(
            "dog-subprocess", dog, dog_trials, 1, "search.launcher=subprocess", *DOG_OVERRIDES
        )
    per_min = {k: v["trials_per_min"] for k, v in rows.items()}
    result = {
        "n_trials": n_trials,
        "dog_trials": dog_trials,
        "rows": rows,
        "trials_per_min_2": per_min["kennel n_jobs=2"],
        "speedup_2_vs_1": ratio(
            per_min["kennel n_jobs=2, random sampler"], per_min["kennel n_jobs=1, random sampler"]
        ),
        **{
            f"speedup_2_vs_1_{count}": ratio(
                per_min[f"kennel n_jobs=2, random sampler, {count} trials"],
                per_min[f"kennel n_jobs=1, random sampler, {count} trials"],
            )
            for count in short
        },
        "speedup_2_vs_1_tpe": ratio(per_min["kennel n_jobs=2"], per_min["kennel n_jobs=1"]),
        "speedup_2_vs_1_steady": ratio(
            rows["kennel n_jobs=2, random sampler"]["steady_trials_per_min"],
            rows["kennel n_jobs=1, random sampler"]["steady_trials_per_min"],
        ),
        "ratio_2_vs_inprocess": ratio(
            per_min["kennel n_jobs=2"], per_min["in-process, model per trial"]
        ),
        "ratio_warm_vs_subprocess": ratio(
            per_min["kennel n_jobs=2"], per_min["kennel n_jobs=2 subprocess"]
        ),
    }
    if not no_dog:
        result["dog_ratio_warm_vs_subprocess"] = ratio(
            per_min["dog n_jobs=1 warm"], per_min["dog n_jobs=1 subprocess"]
        )
    print(
        table(
            ["variant", "trials", "wall s", "trials / min", "once running", "peak MiB"],
            [
                [k, v.get("n_trials", n_trials), v["wall_s"]]
                + [v["trials_per_min"], v.get("steady_trials_per_min", "-"), v["peak_mib"]]
                for k, v in rows.items()
            ],
        )
    )
    print(
        f"2 jobs / 1 job: {result['speedup_2_vs_1']}x (once running "
        f"{result['speedup_2_vs_1_steady']}x; "
        + "".join(f"{c} trials {result[f'speedup_2_vs_1_{c}']}x; " for c in short)
        + f"TPE {result['speedup_2_vs_1_tpe']}x); kennel 2 jobs / in-process script: "
        f"{result['ratio_2_vs_inprocess']}x; warm / subprocess launcher: "
        f"{result['ratio_warm_vs_subprocess']}x"
    )
    write_result(name, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
