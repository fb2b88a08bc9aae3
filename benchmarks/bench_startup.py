"""Issue 8.5: start-up and tiny runs (what every search trial pays).

``kennel --help``, ``kennel config -c cat.yaml``, the import time of a ``cat`` training
(TensorFlow must not be loaded: asserted), and ``kennel train -c cat.yaml`` on
``builtin:breast_cancer`` against a bare minimal tracked script.

    .venv/bin/python benchmarks/bench_startup.py [--quick]
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
    median_run,
    ratio,
    run_child,
    table,
    temp_store,
    write_result,
)


def main(argv: list[str] | None = None) -> dict:
    args = common_args(argv)
    repeats = 3 if args.quick else 5
    train_repeats = 2 if args.quick else 3
    rows = []
    python = median_run("python -c pass", [PYTHON, "-c", "pass"], repeats)
    helps = median_run("kennel --help", kennel_cmd("--help"), repeats)
    config = median_run("kennel config", kennel_cmd("config", "-c", "configs/cat.yaml"), repeats)
    rows += [
        ["python -c pass", python["wall_s"], python["peak_mib"]],
        ["kennel --help", helps["wall_s"], helps["peak_mib"]],
        ["kennel config -c cat.yaml", config["wall_s"], config["peak_mib"]],
    ]
    with temp_store() as (folder, uri), tempfile.TemporaryDirectory() as out:
        env = child_env({"MLFLOW_TRACKING_URI": uri})
        probe = run_child(
            "import probe", [PYTHON, str(BASELINES / "import_probe.py"), out], env=env
        ).check()
    info = probe.json_line()
    assert not info["heavy_after_training"], f"cat training loaded {info['heavy_after_training']}"
    rows.append(["import for a cat training", info["import_s"], None])

    kennel_runs, bare_runs = [], []
    with temp_store() as (folder, uri), tempfile.TemporaryDirectory() as out:
        env = child_env({"MLFLOW_TRACKING_URI": uri})
        for i in range(train_repeats):  # interleaved, so machine noise hits both alike
            cmd = kennel_cmd("train", "-c", "configs/cat.yaml", "--output-dir", f"{out}/{i}")
            kennel_runs.append(run_child("kennel train", cmd, env=env).check())
            bare = [PYTHON, str(BASELINES / "minimal_tracked.py")]
            bare_runs.append(run_child("minimal", bare, env=env, cwd=folder).check())
    kennel_s = min(r.wall_s for r in kennel_runs)
    bare_s = min(r.wall_s for r in bare_runs)
    timings = kennel_runs[-1].json_line().get("timings")
    rows += [
        ["kennel train -c cat.yaml (tiny)", kennel_s, max(r.peak_mib for r in kennel_runs)],
        ["bare minimal tracked script", bare_s, max(r.peak_mib for r in bare_runs)],
    ]
    result = {
        "python_s": python["wall_s"],
        "help_s": helps["wall_s"],
        "config_s": config["wall_s"],
        "import_cat_training_s": info["import_s"],
        "tensorflow_loaded": bool(info["heavy_after_training"]),
        "heavy_modules": info["heavy_after_training"],
        "tiny_kennel_s": kennel_s,
        "tiny_kennel_all_s": [r.wall_s for r in kennel_runs],
        "tiny_bare_s": bare_s,
        "tiny_bare_all_s": [r.wall_s for r in bare_runs],
        "tiny_kennel_timings": timings,
        "ratio_tiny_kennel_bare": ratio(kennel_s, bare_s),
    }
    print(table(["what", "wall s", "peak MiB"], rows))
    print(
        f"TensorFlow loaded by a cat training: {result['tensorflow_loaded']}; tiny kennel/bare = "
        f"{result['ratio_tiny_kennel_bare']}; kennel timings {timings}"
    )
    write_result("quick_startup" if args.quick else "startup", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
