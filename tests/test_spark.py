"""Spark users score kennel models with ``mlflow.pyfunc.spark_udf`` (issue 26).

Four models are trained through ``run.py train`` on real tables, each chosen for what Spark
does to its values: ``lung.csv`` (cat, binary with the integer classes 0/1, integers written
as ``3.0`` with empty fields, dotted column names such as ``ph.ecog``), ``seattle_weather.csv``
(cat, five string classes, a ``2012/01/01`` date column that Spark reads as text, as a
``DateType`` after ``to_date`` and as a timestamp from pandas), ``flights.csv`` (cat,
regression: integers with ``NA``, strings with gaps, an ISO-8601 UTC timestamp ``time_hour``)
and ``titanic.csv`` (dog, binary string classes, missing ages, a row-name identifier).

Each table is read into Spark the ways a user does (``spark.read.csv(..., header=True,
inferSchema=True)``, ``spark.createDataFrame(pd.read_csv(...))``, ``spark.read.parquet``) and
scored, in one job, through every ``result_type`` a user writes: none (MLflow infers it from
the model's output schema: a struct for a classifier, a double for a regressor), an explicit
struct DDL, a single ``prediction`` column (``"string"`` / ``"double"``) and the struct with
contributions (``params={"explain": True}``, the type from
:func:`kennel.serve.spark.result_type`). Every result must equal ``kennel predict`` on the
same file: same rows in the same order, numbers within 1e-6, classes of the type they were
trained with.

Spark needs Java: without it the test is skipped (with that reason). pyspark itself is the
``spark`` extra, which CI installs: a missing pyspark fails.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, TEST_CONFIGS, Store, run_cli

DATA = ROOT / "tests" / "data" / "real"
ATOL = 1e-6

# pyspark 4 warns on every pandas conversion that it does not yet fully support pandas 3.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support:FutureWarning")


@dataclass
class Case:
    table: str
    target: str
    family: str
    struct: str
    """The struct a user writes by hand for this model (``result_type``)."""
    single: str
    """The ``result_type`` of the single ``prediction`` column."""
    spark_reads: dict[str, Callable[[Any, Path, Path], Any]] = field(default_factory=dict)
    """How the table reaches Spark: name -> (spark, path, scratch folder) -> DataFrame."""
    expect_types: dict[str, str] = field(default_factory=dict)
    """Spark types the reads must give (so the test scores what it says it does)."""
    gaps: str | None = None
    """A column with missing values: Spark must hold them as nulls (but where read as text)."""


def csv_read(**options: Any) -> Callable[[Any, Path, Path], Any]:
    def read(spark: Any, path: Path, folder: Path) -> Any:
        return spark.read.csv(str(path), header=True, inferSchema=True, **options)

    return read


def pandas_read(**options: Any) -> Callable[[Any, Path, Path], Any]:
    def read(spark: Any, path: Path, folder: Path) -> Any:
        return spark.createDataFrame(pd.read_csv(path, **options))

    return read


def parquet_read(**options: Any) -> Callable[[Any, Path, Path], Any]:
    """The table as a Parquet file written by pandas, read by ``spark.read.parquet``."""

    def read(spark: Any, path: Path, folder: Path) -> Any:
        target = folder / f"{path.stem}.parquet"
        pd.read_csv(path, **options).to_parquet(target, index=False)
        return spark.read.parquet(str(target))

    return read


def weather_dates(spark: Any, path: Path, folder: Path) -> Any:
    """The slashed dates as a Spark ``DateType`` (what a user does with ``to_date``)."""
    from pyspark.sql.functions import col, to_date

    frame = spark.read.csv(str(path), header=True, inferSchema=True)
    return frame.withColumn("date", to_date(col("date"), "yyyy/MM/dd"))


CASES = {
    "binary": Case(
        "lung.csv",
        "status",
        "cat",
        "prediction bigint, proba_0 double, proba_1 double",
        "string",
        {"csv": csv_read(), "pandas": pandas_read()},
        {"ph.ecog": "double", "wt.loss": "double"},
        "wt.loss",
    ),
    "multiclass": Case(
        "seattle_weather.csv",
        "weather",
        "cat",
        "prediction string, proba_drizzle double, proba_fog double, proba_rain double, "
        "proba_snow double, proba_sun double",
        "string",
        {
            "csv": csv_read(),
            "csv-to_date": weather_dates,
            "pandas": pandas_read(parse_dates=["date"]),
        },
        {"date": "string|date|timestamp"},
    ),
    "regression": Case(
        "flights.csv",
        "arr_delay",
        "cat",
        "prediction double",
        "double",
        {
            "csv": csv_read(nullValue="NA"),
            "csv-NA-as-text": csv_read(),
            "pandas": pandas_read(parse_dates=["time_hour"]),
            "parquet": parquet_read(parse_dates=["time_hour"]),
        },
        {"time_hour": "timestamp", "carrier": "string"},
        "dep_time",
    ),
    "dog": Case(
        "titanic.csv",
        "survived",
        "dog",
        "prediction string, proba_no double, proba_yes double",
        "string",
        {"csv": csv_read(), "pandas": pandas_read()},
        {"age": "double", "sex": "string"},
        "age",
    ),
}


# ------------------------------------------------------------------------------ fixtures
def java_missing() -> bool:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return False
    return shutil.which("java") is None


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """A local Spark session (2 threads, small Arrow batches so a partition is several
    batches, some with gaps and some without; UTC, as on Databricks)."""
    if java_missing():
        pytest.skip("Java is not installed: a local Spark session needs a JVM (Java 17+)")
    from pyspark.sql import SparkSession  # the spark extra: CI installs it, so no skip here

    before = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the executors' Python: this one
    session = (
        SparkSession.builder.master("local[2]")
        .appName("kennel-test-spark")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "300")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    # Close the JVM gateway now: left to the interpreter's exit, py4j logs its goodbyes
    # into pytest's already closed stream ("--- Logging error ---" after the summary).
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None
    if before is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = before


@pytest.fixture(scope="module")
def spark_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("spark-store"))


def model_uri(store: Store, case: Case) -> str:
    """Train ``case`` with tiny params; the URI a user writes: the registered model at the
    alias training promoted it to."""
    result = store.train(
        TEST_CONFIGS / f"tiny_{case.family}.yaml",
        f"data.source={DATA / case.table}",
        f"data.target={case.target}",
    )
    promotion = result.get("promotion") or {}
    if promotion.get("promoted"):
        return f"models:/{result['registered_model']}@{promotion['environment']}"
    return result["model_uri"]


def kennel_predict(store: Store, uri: str, path: Path, out: Path, *extra: str) -> pd.DataFrame:
    """``kennel predict`` of the whole file: the output columns from ``prediction`` on."""
    done = run_cli(
        "predict",
        "--model-uri",
        uri,
        "--input",
        str(path),
        "--output",
        str(out),
        "--no-progress",
        *extra,
        env=store.env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(out)
    return frame.iloc[:, list(frame.columns).index("prediction") :]


# ------------------------------------------------------------------------------ scoring
def score(spark: Any, frame: Any, uri: str, case: Case) -> dict[str, pd.DataFrame]:
    """Every ``result_type`` form over ``frame`` in one Spark job; per form, its columns."""
    import mlflow.pyfunc
    from pyspark.sql.functions import col, struct
    from pyspark.sql.types import StructType

    from kennel.serve.spark import result_type

    def udf(**kwargs: Any) -> Any:
        return mlflow.pyfunc.spark_udf(spark, uri, env_manager="local", **kwargs)

    forms = {
        "inferred": udf(),
        "struct": udf(result_type=case.struct),
        "single": udf(result_type=case.single),
        "explain": udf(result_type=result_type(uri, explain=True), params={"explain": True}),
    }
    # Backticks: a name like ``ph.ecog`` would otherwise be read as a nested field.
    rows = struct(*[col(f"`{name}`") for name in frame.columns])
    scored = frame.select(*[fn(rows).alias(name) for name, fn in forms.items()])
    flat = []
    for name in forms:
        kind = scored.schema[name].dataType
        if isinstance(kind, StructType):
            flat += [scored[name].getField(f.name).alias(f"{name}:{f.name}") for f in kind.fields]
        else:
            flat.append(scored[name].alias(f"{name}:prediction"))
    got = scored.select(*flat).toPandas()
    return {
        name: got[[c for c in got.columns if c.startswith(f"{name}:")]].rename(
            columns=lambda c: c.split(":", 1)[1]
        )
        for name in forms
    }


def assert_same(got: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    """Same columns and rows in the same order; numbers within 1e-6; classes as trained."""
    assert list(got.columns) == list(expected.columns), what
    assert len(got) == len(expected), what
    for column in expected.columns:
        g, e = got[column].reset_index(drop=True), expected[column].reset_index(drop=True)
        if column == "prediction" and not pd.api.types.is_float_dtype(e.dtype):
            assert pd.api.types.is_integer_dtype(g.dtype) == pd.api.types.is_integer_dtype(
                e.dtype
            ), f"{what}: classes {e.dtype} came back as {g.dtype}"
            assert g.tolist() == e.tolist(), f"{what}: {column}"
        else:
            np.testing.assert_allclose(
                g.to_numpy(dtype=float),
                e.to_numpy(dtype=float),
                rtol=0,
                atol=ATOL,
                err_msg=f"{what}: {column}",
            )


def check_types(frame: Any, case: Case, read: str, path: Path) -> None:
    from pyspark.sql.functions import col

    types = dict(frame.dtypes)
    for column, allowed in case.expect_types.items():
        assert types[column] in allowed.split("|"), (read, column, types[column])
    if read == "csv-to_date":
        assert types["date"] == "date"
    if case.gaps and read != "csv-NA-as-text":
        nulls = frame.where(col(f"`{case.gaps}`").isNull()).count()
        missing = int(pd.read_csv(path)[case.gaps].isna().sum())
        assert nulls == missing > 0, (read, case.gaps, nulls, missing)


# ------------------------------------------------------------------------------ tests
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_spark_udf_equals_kennel_predict(
    name: str, spark: Any, spark_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from kennel.serve.spark import result_type

    case = CASES[name]
    path = DATA / case.table
    uri = model_uri(spark_store, case)
    expected = kennel_predict(spark_store, uri, path, tmp_path / "scored.parquet")
    explained = kennel_predict(spark_store, uri, path, tmp_path / "why.parquet", "--explain")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", spark_store.uri)
    mlflow.set_tracking_uri(spark_store.uri)
    # What a user writes by hand is what kennel writes from the model's signature.
    assert result_type(uri) == ", ".join(
        f"`{part.split(' ')[0]}` {part.split(' ')[1]}" for part in case.struct.split(", ")
    )
    classifier = "proba_" in case.struct
    for read, reader in case.spark_reads.items():
        frame = reader(spark, path, tmp_path)
        check_types(frame, case, read, path)
        got = score(spark, frame, uri, case)
        what = f"{case.table} ({case.family}) read by {read}"
        if classifier:
            assert_same(got["inferred"], expected, f"{what}, inferred struct")
        else:  # one output column: MLflow's inferred type is that column, a double
            assert_same(got["inferred"], expected[["prediction"]], f"{what}, inferred double")
        assert_same(got["struct"], expected, f"{what}, explicit struct")
        single = expected[["prediction"]]
        if case.single == "string":
            single = single.astype(str)
        assert_same(got["single"], single, f"{what}, result_type={case.single!r}")
        assert_same(got["explain"], explained, f"{what}, explain")


def test_explain_struct_names_every_column() -> None:
    """The DDL of the explained struct: outputs, one contribution per input column (quoted,
    dots and all) and the base; a model without the explain param is told to retrain."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    from kennel.errors import DataError
    from kennel.serve.spark import struct_ddl

    inputs = Schema([ColSpec(AnyType(), "ph.ecog"), ColSpec("string", "odd`name")])
    outputs = Schema([ColSpec("long", "prediction"), ColSpec("double", "proba_1")])
    params = ParamSchema([ParamSpec("explain", "boolean", False)])
    signature = ModelSignature(inputs=inputs, outputs=outputs, params=params)
    assert struct_ddl(signature) == "`prediction` bigint, `proba_1` double"
    assert struct_ddl(signature, explain=True) == (
        "`prediction` bigint, `proba_1` double, `contrib_ph.ecog` double, "
        "`contrib_odd``name` double, `contrib_base` double"
    )
    old = ModelSignature(inputs=inputs, outputs=outputs)
    with pytest.raises(DataError, match="retrain"):
        struct_ddl(old, explain=True)


def test_kennel_never_imports_pyspark() -> None:
    """pyspark is the ``spark`` extra for users and tests; kennel itself never imports it."""
    offenders = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "pyspark" or n.startswith("pyspark.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
