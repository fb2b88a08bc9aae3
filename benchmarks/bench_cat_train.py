"""Issue 8.1: ``kennel train`` (cat) end to end vs a bare ``mlflow.lightgbm.autolog()``
script vs ``lightgbm.train`` alone, on the same synthetic binary table, split and params.

    .venv/bin/python benchmarks/bench_cat_train.py [--quick] [--rows N]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from _common import (
    BASELINES,
    BENCH_DIR,
    PYTHON,
    THREADS,
    common_args,
    compare_training,
    dataset,
    kennel_cmd,
    ratio,
    run_child,
    temp_store,
    warm_file,
    write_result,
)

PARAMS = {"num_leaves": 31, "learning_rate": 0.1, "n_estimators": 200, "early_stopping": 20}


def kennel_overrides(data: Path, family_params: dict[str, object]) -> list[str]:
    return [
        f"data.source={data}",
        "data.target=target",
        "tracking.experiment=bench",
        "registry.model_name=bench-model",
        f"resource.num_threads={THREADS}",
        *(f"model.params.{k}={v}" for k, v in family_params.items()),
    ]


def main(argv: list[str] | None = None) -> dict:
    with contextlib.ExitStack() as stack:
        return _main(argv, stack)


def _main(argv: list[str] | None, stack: contextlib.ExitStack) -> dict:
    args = common_args(argv, rows=0, repeats=0)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 2)
    data = dataset(rows)
    warm_file(data)
    print(f"cat training, {rows:,} x 20 rows, params {PARAMS}, {THREADS} threads", flush=True)
    baseline = [PYTHON, str(BASELINES / "cat_train.py"), str(data)]
    floor = [PYTHON, str(BASELINES / "cat_floor.py"), str(data)]
    store_a = stack.enter_context(temp_store())
    store_k = stack.enter_context(temp_store())
    out = stack.enter_context(tempfile.TemporaryDirectory())
    cmd = kennel_cmd(
        "train",
        "-c",
        "configs/cat.yaml",
        "--output-dir",
        out,
        *kennel_overrides(
            data,
            {
                "num_leaves": PARAMS["num_leaves"],
                "learning_rate": PARAMS["learning_rate"],
                "n_estimators": PARAMS["n_estimators"],
                "early_stopping_rounds": PARAMS["early_stopping"],
                "min_child_samples": 20,
                "feature_fraction": 1.0,
            },
        ),
    )
    name = "quick_cat_train" if args.quick else "cat_train"
    result = compare_training(
        baseline,
        cmd,
        repeats=repeats,
        autolog_store=store_a,
        kennel_store=store_k,
        result_name=name,
        describe={"rows": rows, "params": PARAMS, "threads": THREADS},
        floor=floor,
    )
    result.update(data_phase(result))
    result.update(profile_cost(result, store_k[0]))
    write_result(name, result)
    return result


def data_phase(result: dict) -> dict:
    """Issue 25: kennel's data phase against the floor script's read-and-convert to a float32
    matrix. kennel reads, checks, splits and gathers the features in a thread while MLflow
    imports: ``timings.data_s`` is what the run still waits for after its setup (the
    critical path), ``timings.prepare_s`` the thread's own wall time (slowed by sharing two
    cores with the imports)."""
    timings = result.get("kennel_timings") or {}
    waited_s, own_s = timings.get("data_s"), timings.get("prepare_s")
    floor_s = (result.get("floor_timings") or {}).get("data_s")
    out = {
        "ratio_data_kennel_floor": ratio(waited_s, floor_s),
        "ratio_data_own_floor": ratio(own_s, floor_s),
    }
    print(
        f"kennel / floor = {result.get('ratio_kennel_floor')}; data phase on kennel's critical "
        f"path {waited_s} s vs the floor's read-and-convert {floor_s} s "
        f"({out['ratio_data_kennel_floor']}); its own time, beside the imports, {own_s} s "
        f"({out['ratio_data_own_floor']})"
    )
    return out


def profile_cost(result: dict, store: Path) -> dict:
    """Issue 22: the reference profile's share of the (fastest) kennel training's wall time
    (``timings.profile_s`` / the child's wall), the size of the models' ``profile.json``, and
    the size of a 1,500-column table's profile (``wide_profile.py``, a child process)."""
    wall = result["variants"]["kennel"]["wall_s"]
    profile_s = (result.get("kennel_timings") or {}).get("profile_s")
    sizes = [p.stat().st_size for p in store.rglob("profile.json")]
    wide = run_child("wide profile", [PYTHON, str(BENCH_DIR / "wide_profile.py")]).check()
    found = wide.json_line()
    out = {
        "profile_s": profile_s,
        "ratio_profile_wall": None if profile_s is None else round(profile_s / wall, 4),
        "profile_json_bytes": max(sizes) if sizes else None,
        "wide_profile": found,
        "wide_profile_bytes": found.get("max_bytes"),
    }
    print(
        f"reference profile: {profile_s} s of {wall} s "
        f"({out['ratio_profile_wall']}), profile.json {out['profile_json_bytes']} bytes; "
        f"1,500-column profile: {found.get('mixed', {}).get('bytes')} bytes (1,000 numbers + "
        f"500 text), {found.get('text', {}).get('bytes')} bytes (1,500 text columns)"
    )
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
