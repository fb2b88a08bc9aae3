"""Issue 26 (info only, no target): scoring a million rows with ``mlflow.pyfunc.spark_udf`` on
a local Spark session vs ``kennel predict``, and how closely they agree.

A seeded synthetic table (``id``, integers, floats with gaps, strings with and without gaps,
a date stored as Parquet ``date32`` so Spark reads a ``DateType``) is written once; a ``cat``
binary model is trained with ``kennel train`` on its first 50,000 rows (with the target). Both
paths then read the same Parquet file of 1,000,000 rows (no target), score every row and write
Parquet (the input columns, then ``prediction`` and the ``proba_`` columns):

* ``kennel predict --input rows.parquet --output scored.parquet`` as a child process (what a
  user runs: interpreter start, model load, chunks of 100,000 rows);
* ``spark.read.parquet`` -> ``withColumn(spark_udf(...)(struct(*columns)))`` -> ``write.parquet``
  on ``local[2]`` (one Python worker per core, one OpenMP thread each), in this process; the
  session's start is reported apart (a cluster is already up), the UDF's creation (which
  downloads the model) is in the time.

A third run, the floor, is the same Spark job with a pandas UDF that returns zeros: the read,
the Arrow round trip through the Python workers and the write, without a model.

Agreement: rows joined on ``id``; the largest absolute difference of any ``proba_`` column and
the share of equal predicted classes.

    .venv/bin/python benchmarks/bench_spark.py [--quick] [--rows N] [--repeats N]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    DATA_DIR,
    PYTHON,
    THREADS,
    child_env,
    common_args,
    kennel_cmd,
    ratio,
    run_child,
    table,
    temp_store,
    warm_file,
    write_result,
)

TRAIN_ROWS = 50_000
SEED = 26
PARAMS = {"num_leaves": 31, "learning_rate": 0.1, "n_estimators": 200, "min_child_samples": 20}


# --------------------------------------------------------------------------- data
def spark_table(rows: int, seed: int = SEED) -> tuple[Path, Path]:
    """(the scoring file of ``rows`` rows without the target, the training file of its first
    50,000 rows with it), both Parquet, written once."""
    score = DATA_DIR / f"spark_{rows}_s{seed}.parquet"
    train = DATA_DIR / f"spark_train_{TRAIN_ROWS}_of_{rows}_s{seed}.parquet"
    if score.exists() and train.exists():
        return score, train
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = max(rows, TRAIN_ROWS)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"id": np.arange(n, dtype="int64")})
    for i in range(3):  # integers: counts, ages, a code
        frame[f"i{i}"] = rng.integers(0, [20, 90, 1000][i], n).astype("int64")
    floats = rng.standard_normal((n, 4))
    floats[rng.random((n, 4)) < 0.05] = np.nan  # 5% gaps
    for i in range(4):
        frame[f"f{i}"] = floats[:, i]
    colours = np.array(["red", "green", "blue", "black", "white", "grey", "pink", "teal"])
    frame["s0"] = colours[rng.integers(0, len(colours), n)]
    shops = np.array([f"shop-{k:03d}" for k in range(200)], dtype=object)
    s1 = shops[rng.integers(0, len(shops), n)]
    s1[rng.random(n) < 0.02] = None
    frame["s1"] = s1
    days = np.datetime64("2021-01-01") + rng.integers(0, 3 * 365, n).astype("timedelta64[D]")
    month = (days.astype("datetime64[M]").astype(int) % 12).astype(float)
    logit = (
        0.9 * np.nan_to_num(floats[:, 0])
        - 0.6 * np.nan_to_num(floats[:, 1]) * (frame["i0"].to_numpy() > 10)
        + 0.02 * (frame["i1"].to_numpy() - 45)
        + 0.5 * np.isin(frame["s0"].to_numpy(), ["red", "pink"])
        + 0.4 * np.sin(month / 12 * 2 * np.pi)
        + 0.3 * np.isnan(floats[:, 2])
    )
    target = (logit + 0.7 * rng.standard_normal(n) > 0).astype("int64")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.append_column("d", pa.array(days, type=pa.date32()))
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for path, part in (
        (score, table.slice(0, rows)),
        (train, table.slice(0, TRAIN_ROWS).append_column("target", pa.array(target[:TRAIN_ROWS]))),
    ):
        tmp = path.with_suffix(".tmp")
        # Row groups of 100,000 rows, so that Spark splits the file over both cores.
        pq.write_table(part, tmp, row_group_size=100_000)
        os.replace(tmp, path)
    return score, train


# --------------------------------------------------------------------------- the two paths
def train(data: Path, out: str, env: dict[str, str]) -> str:
    overrides = [
        f"data.source={data}",
        "data.target=target",
        "tracking.experiment=bench",
        "registry.model_name=bench-spark",
        f"resource.num_threads={THREADS}",
        *(f"model.params.{k}={v}" for k, v in PARAMS.items()),
    ]
    cmd = kennel_cmd("train", "-c", "configs/cat.yaml", "--output-dir", out, *overrides)
    return run_child("kennel train cat", cmd, env=env).check().json_line()["model_uri"]


def kennel_predict(uri: str, data: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = kennel_cmd("predict", "--model-uri", uri, "--input", str(data), "--output", str(out))
    run = run_child("kennel predict", [*cmd, "--no-progress"], env=env).check()
    return {"wall_s": run.wall_s, "peak_mib": run.peak_mib, "inner": run.json_line()}


def spark_session() -> tuple[Any, float]:
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = PYTHON  # the executors' Python: this one
    started = time.perf_counter()
    spark = (
        SparkSession.builder.master(f"local[{THREADS}]")
        .appName("kennel-bench-spark")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "2g")
        .config("spark.executorEnv.OMP_NUM_THREADS", "1")  # one core per task, as on a cluster
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1).count()  # the JVM and the first job are up
    return spark, round(time.perf_counter() - started, 3)


def spark_score(spark: Any, uri: str, data: Path, out: Path) -> dict[str, Any]:
    import mlflow.pyfunc
    from pyspark.sql.functions import col, struct

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    predict = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local")
    created = time.perf_counter() - started
    frame = spark.read.parquet(str(data))
    columns = list(frame.columns)
    scored = frame.withColumn("scored", predict(struct(*[col(f"`{c}`") for c in columns])))
    scored.select(*columns, "scored.*").write.parquet(str(out))
    wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 3),
        "udf_create_s": round(created, 3),
        "partitions": frame.rdd.getNumPartitions(),
        "spark_types": dict(frame.dtypes),
    }


def spark_floor(spark: Any, data: Path, out: Path) -> float:
    """The same read, Arrow round trip through a Python worker and write, with a pandas UDF
    that returns zeros instead of a model: what any Python model costs on Spark here."""
    import pandas as pd
    from pyspark.sql.functions import col, pandas_udf, struct

    def zeros(rows):  # type: ignore[no-untyped-def]
        n = len(rows)
        return pd.DataFrame({"prediction": [0] * n, "proba_0": 0.0, "proba_1": 0.0})

    # Real classes, not the strings ``from __future__ import annotations`` makes of them:
    # pyspark reads the UDF's kind (a frame in, a frame out) from its type hints.
    zeros.__annotations__ = {"rows": pd.DataFrame, "return": pd.DataFrame}
    zeros = pandas_udf(zeros, "prediction bigint, proba_0 double, proba_1 double")
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    frame = spark.read.parquet(str(data))
    columns = list(frame.columns)
    scored = frame.withColumn("scored", zeros(struct(*[col(f"`{c}`") for c in columns])))
    scored.select(*columns, "scored.*").write.parquet(str(out))
    return round(time.perf_counter() - started, 3)


def agreement(kennel_out: Path, spark_out: Path) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    k = pd.read_parquet(kennel_out).sort_values("id").reset_index(drop=True)
    s = pd.read_parquet(spark_out).sort_values("id").reset_index(drop=True)
    assert len(k) == len(s) and (k["id"].to_numpy() == s["id"].to_numpy()).all()
    proba = [c for c in k.columns if c.startswith("proba_")]
    diff = np.abs(k[proba].to_numpy(float) - s[proba].to_numpy(float))
    return {
        "rows": len(k),
        "max_abs_diff_proba": float(diff.max()),
        "same_prediction_share": float((k["prediction"].to_numpy() == s["prediction"]).mean()),
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    args = common_args(argv, rows=0, repeats=0)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 2)
    data, train_data = spark_table(rows)
    warm_file(data)
    import pyspark

    print(f"scoring {rows:,} rows: spark_udf on local[{THREADS}] vs kennel predict", flush=True)
    with temp_store() as (folder, uri), tempfile.TemporaryDirectory() as out:
        env = child_env({"MLFLOW_TRACKING_URI": uri})
        model = train(train_data, os.path.join(out, "train"), env)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        spark, startup_s = spark_session()
        kennel_runs, spark_runs, floors = [], [], []
        try:
            for _ in range(repeats):  # interleaved, so machine noise hits all alike
                kennel_runs.append(kennel_predict(model, data, Path(out) / "kennel.parquet", env))
                spark_runs.append(spark_score(spark, model, data, Path(out) / "spark"))
                floors.append(spark_floor(spark, data, Path(out) / "floor"))
            agree = agreement(Path(out) / "kennel.parquet", Path(out) / "spark")
        finally:
            spark.stop()
    best_k = min(kennel_runs, key=lambda r: r["wall_s"])
    best_s = min(spark_runs, key=lambda r: r["wall_s"])
    result = {
        "rows": rows,
        "train_rows": TRAIN_ROWS,
        "params": PARAMS,
        "repeats": repeats,
        "pyspark": pyspark.__version__,
        "spark_master": f"local[{THREADS}]",
        "spark_session_start_s": startup_s,
        "spark_partitions": best_s["partitions"],
        "spark_types": best_s["spark_types"],
        "kennel_predict": {"wall_s": best_k["wall_s"], "peak_mib": best_k["peak_mib"]},
        "kennel_predict_all_wall_s": [r["wall_s"] for r in kennel_runs],
        "kennel_predict_duration_s": best_k["inner"].get("duration_s"),
        "spark_udf": {"wall_s": best_s["wall_s"], "udf_create_s": best_s["udf_create_s"]},
        "spark_udf_all_wall_s": [r["wall_s"] for r in spark_runs],
        "spark_floor_wall_s": min(floors),
        "spark_floor_all_wall_s": floors,
        "kennel_predict_rows_per_s": round(rows / best_k["wall_s"]),
        "spark_udf_rows_per_s": round(rows / best_s["wall_s"]),
        "ratio_spark_kennel": ratio(best_s["wall_s"], best_k["wall_s"]),
        **agree,
    }
    print(
        table(
            ["path", "wall s", "rows/s"],
            [
                [
                    "kennel predict (child process)",
                    best_k["wall_s"],
                    result["kennel_predict_rows_per_s"],
                ],
                [f"spark_udf, local[{THREADS}]", best_s["wall_s"], result["spark_udf_rows_per_s"]],
                ["Spark floor (a UDF of zeros)", min(floors), round(rows / min(floors))],
            ],
        )
    )
    print(
        f"agreement on {agree['rows']:,} rows: max |proba difference| "
        f"{agree['max_abs_diff_proba']:.2e}, same class {agree['same_prediction_share']:.4%}; "
        f"Spark session start {startup_s} s (not in the time)"
    )
    write_result("quick_spark" if args.quick else "spark", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
