"""DataProcessor: loading, validation, deterministic splits and the shared preprocessing."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.config import DataConfig
from kennel.data import ColumnSpec, DataProcessor, Splits
from kennel.data.blocks import numbers_at_once
from kennel.errors import DataError

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


# --------------------------------------------------------------------------- fixtures
def penguins(n: int = 60) -> pd.DataFrame:
    """A small mixed-type table: float with NaN, int, string with NaN, bool, category."""
    rng = np.random.default_rng(0)
    bill = rng.normal(45, 5, n).round(1)
    bill[[3, 17]] = np.nan
    island = rng.choice(["Biscoe", "Dream", "Torgersen"], n).astype(object)
    island[[5, 9]] = None
    return pd.DataFrame(
        {
            "bill_length_mm": bill,
            "flipper_length_mm": rng.integers(170, 230, n),
            "island": pd.array(island, dtype="str"),
            "is_male": rng.integers(0, 2, n).astype(bool),
            "size": pd.Categorical(rng.choice(["S", "M", "L"], n)),
            "species": [SPECIES[i % 3] for i in range(n)],
        }
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def processor(source: str | Path, **kwargs: object) -> DataProcessor:
    return DataProcessor(DataConfig(source=str(source), **kwargs))


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return write(penguins(), tmp_path / "Penguins Data.csv")


@pytest.fixture
def fitted(csv_path: Path) -> tuple[DataProcessor, Splits]:
    dp = processor(csv_path, target="species")
    splits = dp.split(dp.load())
    dp.fit(splits.train)
    return dp, splits


# --------------------------------------------------------------------------- builtins
@pytest.mark.parametrize(
    ("name", "task", "first_class", "model_name"),
    [
        ("breast_cancer", "binary", "benign", "breast-cancer"),
        ("wine", "multiclass", "class_0", "wine"),
        ("iris", "multiclass", "setosa", "iris"),
        ("diabetes", "regression", None, "diabetes"),
    ],
)
def test_builtins_load(name: str, task: str, first_class: str | None, model_name: str) -> None:
    dp = processor(f"builtin:{name}")
    df = dp.load()
    assert dp.target == "target" and "target" in df.columns
    assert dp.n_rows == len(df) > 100
    assert len(dp.digest or "") == 16
    assert dp.source_name == name and dp.source_uri == f"builtin:{name}"
    assert dp.default_model_name() == model_name
    splits = dp.split(df)
    dp.fit(splits.train)
    assert dp.task == task
    assert (dp.classes[0] if dp.classes else None) == first_class
    X, y = dp.features_and_target(splits.test)
    assert list(X.columns) == dp.spec().features
    assert (X.dtypes == np.float64).all()
    if task == "regression":
        assert y.dtype == np.float64
    else:
        assert y.dtype == np.int64 and set(y) <= set(range(len(dp.classes)))
        assert set(dp.decode_target(y)) <= set(dp.classes)


def test_unknown_builtin_suggests_name() -> None:
    with pytest.raises(DataError, match="unknown builtin data set 'iriss'.*'iris'"):
        processor("builtin:iriss").load()


def test_split_is_deterministic() -> None:
    """The same data and seed give the same rows on every run and machine."""
    expected = {
        "train": "f64c54876a04617727b57f96e42992c112f2de0035cc9d7d90ffbe08a573853d",
        "valid": "4db6483c732853f8bafa859915e9fc5f6825f92bf25c590fd7bf849f56d174bf",
        "test": "7db822f9f5522aa636387eb5ae453d2284044255742ca8782360510418ff660f",
    }
    dp = processor("builtin:breast_cancer")
    df = dp.load()
    splits = dp.split(df)
    for name, frame in zip(("train", "valid", "test"), splits, strict=True):
        rows = ",".join(str(i) for i in sorted(int(i) for i in frame.index))
        assert hashlib.sha256(rows.encode()).hexdigest() == expected[name], name
    assert sorted([*splits.train.index, *splits.valid.index, *splits.test.index]) == list(df.index)
    # Stratified: each split keeps the class balance within a row or two.
    share = df["target"].eq("malignant").mean()
    for frame in splits:
        assert abs(frame["target"].eq("malignant").mean() - share) < 0.02
    again = processor("builtin:breast_cancer")
    assert again.split(again.load()).train.index.equals(splits.train.index)
    assert again.digest == dp.digest


@pytest.mark.parametrize(
    ("n", "classes", "shares", "seed"),
    [
        (1000, [0.5, 0.5], (0.7, 0.15, 0.15), 42),
        (997, [0.9, 0.07, 0.03], (0.7, 0.15, 0.15), 0),
        (5000, [0.2] * 5, (0.6, 0.2, 0.2), 7),
        (101, [0.34, 0.33, 0.33], (0.8, 0.1, 0.1), 123),
        (800, [0.5, 0.0, 0.5], (0.7, 0.15, 0.15), 3),  # a code with no rows (rare, left out)
        (300, None, (0.7, 0.15, 0.15), 42),
    ],
)
def test_split_rows_are_scikit_learns(n: int, classes, shares, seed: int) -> None:
    """kennel draws the split with arrays; the rows are exactly those of scikit-learn's
    ``train_test_split`` (test first, then valid from the rest), stratified or not, so the
    splits of every earlier version, and the benchmarks' baselines, stay the same."""
    from sklearn.model_selection import train_test_split

    from kennel.config import SplitConfig
    from kennel.data.splits import split_positions

    rng = np.random.default_rng(seed)
    labels = None if classes is None else rng.choice(len(classes), n, p=classes)
    config = SplitConfig(train=shares[0], valid=shares[1], test=shares[2], seed=seed)
    positions = np.arange(n)
    rest, test = train_test_split(
        positions, test_size=config.test, random_state=seed, shuffle=True, stratify=labels
    )
    train, valid = train_test_split(
        rest,
        test_size=config.valid / (config.train + config.valid),
        random_state=seed,
        shuffle=True,
        stratify=None if labels is None else labels[rest],
    )
    ours = split_positions(n, config, labels)
    for mine, theirs in zip(ours, (train, valid, test), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_other_seed_other_rows() -> None:
    dp = DataProcessor(DataConfig(source="builtin:iris", split={"seed": 7}))
    base = processor("builtin:iris")
    assert not dp.split(dp.load()).train.index.equals(base.split(base.load()).train.index)


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".csv.gz"])
def test_file_pipeline(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / f"penguins{suffix}"
    if suffix == ".csv.gz":
        penguins().to_csv(source, index=False)
    else:
        write(penguins(), source)
    dp = processor(source, target="species")
    df = dp.load()
    assert dp.n_rows == 60 and dp.source_uri == str(source.resolve())
    assert dp.default_model_name() == "penguins"
    splits = dp.split(df)
    assert [len(s) for s in splits] == [42, 9, 9]
    dp.fit(splits.train)
    assert dp.task == "multiclass" and dp.classes == SPECIES
    assert dp.numeric == ["bill_length_mm", "flipper_length_mm"]
    assert list(dp.categorical) == ["island", "is_male", "size"]
    assert dp.categorical["island"] == ["Biscoe", "Dream", "Torgersen"]
    assert dp.categorical["is_male"] == ["False", "True"]
    assert dp.categorical["size"] == ["L", "M", "S"]
    X = dp.transform(splits.test)
    assert list(X.columns) == [*dp.numeric, *dp.categorical]
    assert X.index.equals(splits.test.index)
    assert (X[dp.numeric].dtypes == np.float64).all()
    for name, vocab in dp.categorical.items():
        assert isinstance(X[name].dtype, pd.CategoricalDtype)
        assert list(X[name].cat.categories) == vocab
    full = dp.transform(df)
    assert full["bill_length_mm"].isna().sum() == 2
    assert (full["island"].cat.codes == -1).sum() == 2
    y = dp.encode_target(splits.test["species"])
    assert list(dp.decode_target(y)) == list(splits.test["species"])
    spec = dp.spec()
    assert spec.n_classes == 3 and spec.categorical == {"island": 3, "is_male": 2, "size": 3}


def test_file_url(tmp_path: Path) -> None:
    path = write(penguins(), tmp_path / "penguins.parquet")
    dp = processor(path.as_uri(), target="species")
    df = dp.load()
    assert len(df) == 60 and dp.source_uri == path.as_uri()
    local = processor(path, target="species")
    local.load()
    assert dp.digest == local.digest and dp.default_model_name() == "penguins"


def test_digest_follows_the_data(tmp_path: Path) -> None:
    a = processor(write(penguins(), tmp_path / "a.csv"), target="species")
    a.load()
    changed = penguins()
    changed.loc[0, "flipper_length_mm"] += 1
    b = processor(write(changed, tmp_path / "b.csv"), target="species")
    b.load()
    c = processor(tmp_path / "a.csv", target="species")
    c.load()
    assert a.digest == c.digest != b.digest


def test_default_model_name_from_file_stem() -> None:
    assert processor("/data/My Penguins_2024.CSV").default_model_name() == "my-penguins-2024"
    assert processor("s3://bucket/dir/Sales.parquet").default_model_name() == "sales"


def test_format_override(tmp_path: Path) -> None:
    path = tmp_path / "table.data"
    penguins().to_csv(path, index=False)
    with pytest.raises(DataError, match=r"table\.data.*data\.format"):
        processor(path, target="species").load()
    assert len(processor(path, target="species", format="csv").load()) == 60


# --------------------------------------------------------------------------- validation
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found: .*nope.csv"):
        processor(tmp_path / "nope.csv", target="species").load()
    with pytest.raises(DataError, match="data file not found: file://.*nope.csv"):
        processor((tmp_path / "nope.csv").as_uri(), target="species").load()


def test_unknown_protocol_is_a_data_error() -> None:
    with pytest.raises(DataError, match="nosuchproto://bucket/x.csv"):
        processor("nosuchproto://bucket/x.csv", target="y").load()


def test_target_required_for_files(csv_path: Path) -> None:
    with pytest.raises(DataError, match=r"Penguins Data\.csv: data\.target is not set"):
        processor(csv_path).load()


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read it as PARQUET"):
        processor(path, target="species").load()


def test_empty_tables(tmp_path: Path) -> None:
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(DataError, match=r"blank\.csv: the file is empty"):
        processor(blank, target="species").load()
    header = tmp_path / "header_only.csv"
    header.write_text("a,b,species\n")
    with pytest.raises(DataError, match=r"header_only\.csv: the table is empty"):
        processor(header, target="species").load()


def test_missing_target_column_suggests(csv_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"Penguins Data\.csv: column 'specie' \(from data\.target\) does not exist; "
        r"did you mean 'species'\?",
    ):
        processor(csv_path, target="specie").load()


@pytest.mark.parametrize("key", ["categorical", "numeric", "drop"])
def test_listed_column_missing(csv_path: Path, key: str) -> None:
    with pytest.raises(
        DataError, match=rf"'islnd' \(from data\.{key}\) does not exist; did you mean 'island'"
    ):
        processor(csv_path, target="species", **{key: ["islnd"]}).load()


def test_target_with_missing_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frame = penguins()
    frame.loc[[1, 2], "species"] = None
    path = write(frame, tmp_path / "holes.csv")
    dp = processor(path, target="species")
    with caplog.at_level(logging.WARNING, logger="kennel.data"):
        loaded = dp.load()
    assert len(loaded) == 58 and dp.rows_without_target == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["holes.csv: leaving out 2 of 60 rows whose target 'species' is missing"]
    dp.fit(dp.split(loaded).train)
    assert dp.state()["rows_without_target"] == 2
    # Too few labeled rows left to split: a user error naming the counts.
    frame.loc[5:, "species"] = None
    with pytest.raises(DataError, match=r"only 3 of 60 rows have a value in target column"):
        processor(write(frame, tmp_path / "few.csv"), target="species").load()


def test_rare_class(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A class too small to stratify trains (all its rows in train) and is one WARNING
    naming it with its count; the other classes keep their stratified split."""
    frame = penguins()
    frame.loc[[0, 1], "species"] = "Emperor"
    frame.loc[[2], "species"] = "Macaroni"
    path = write(frame, tmp_path / "rare.csv")
    dp = processor(path, target="species")
    with caplog.at_level(logging.WARNING, logger="kennel.data.splits"):
        splits = dp.split(dp.load())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'Emperor' (2 rows)" in warnings[0] and "'Macaroni' (1 row)" in warnings[0]
    assert sorted(splits.train.index[splits.train["species"] == "Emperor"]) == [0, 1]
    assert "Macaroni" in set(splits.train["species"])
    for part in (splits.valid, splits.test):
        assert not part["species"].isin(["Emperor", "Macaroni"]).any()
    assert sorted([*splits.train.index, *splits.valid.index, *splits.test.index]) == list(
        frame.index
    )
    assert dp.split_report["rare_classes"] == {"Emperor": 2, "Macaroni": 1}
    assert {"Emperor", "Macaroni"} <= set(dp.fit(splits.train).classes)
    # Without stratification the split goes through (the class is still known from load).
    dp = processor(path, target="species", split={"stratify": False})
    splits = dp.split(dp.load())
    assert "Emperor" in dp.fit(splits.train).classes


def test_fewer_than_two_usable_classes_stop(tmp_path: Path) -> None:
    frame = penguins(40)
    frame["species"] = ["Adelie"] * 38 + ["Emperor", "Macaroni"]
    path = write(frame, tmp_path / "one.csv")
    dp = processor(path, target="species")
    with pytest.raises(
        DataError,
        match=r"one\.csv: only 1 class\(es\) of target 'species'.*"
        r"'Emperor' \(1\)",
    ):
        dp.split(dp.load())


def test_duplicate_columns_csv(tmp_path: Path) -> None:
    path = tmp_path / "dupes.csv"
    path.write_text("a,b,a,species\n1,2,3,x\n4,5,6,y\n")
    with pytest.raises(DataError, match=r"dupes\.csv: duplicate column name 'a'"):
        processor(path, target="species").load()


def test_duplicate_columns_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dupes.parquet"
    table = pa.Table.from_arrays(
        [pa.array([1, 2]), pa.array([3, 4]), pa.array(["x", "y"])], names=["a", "a", "species"]
    )
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"dupes\.parquet: duplicate column name 'a'"):
        processor(path, target="species").load()


def test_empty_column_dropped_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = penguins()
    frame["notes"] = np.nan
    path = write(frame, tmp_path / "notes.csv")
    dp = processor(path, target="species")
    df = dp.load()
    with caplog.at_level(logging.INFO, logger="kennel.data"):
        dp.fit(dp.split(df).train)
    assert "notes" not in dp.raw_columns
    assert dp.dropped == {"notes": "entirely empty"}
    report = "\n".join(r.getMessage() for r in caplog.records)
    assert "notes: dropped (float; 60 missing): entirely empty" in report
    # Raw rows from the same file still carry the column: ignored without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kennel.data"):
        dp.transform(frame.head(3))
    assert not caplog.records


def test_drop_and_overrides(tmp_path: Path) -> None:
    frame = penguins()
    frame["code"] = [str(i % 4) for i in range(len(frame))]  # numbers as text
    frame["row_id"] = range(len(frame))
    path = write(frame, tmp_path / "over.csv")
    dp = processor(
        path,
        target="species",
        categorical=["flipper_length_mm"],
        numeric=["code"],
        drop=["row_id"],
    )
    df = dp.load()
    assert "row_id" not in df.columns
    dp.fit(dp.split(df).train)
    assert dp.numeric == ["bill_length_mm", "code"]
    assert "flipper_length_mm" in dp.categorical
    assert all(v.isdigit() for v in dp.categorical["flipper_length_mm"])
    schema = {c.name: c for c in dp.input_schema()}
    assert schema["flipper_length_mm"].kind == "integer"
    assert "row_id" not in schema
    X = dp.transform(frame.head(4))
    assert X["code"].tolist() == [0.0, 1.0, 2.0, 3.0]
    flipper = frame.head(4)["flipper_length_mm"].astype(float)  # arrives as floats
    X2 = dp.transform(frame.head(4).assign(flipper_length_mm=flipper))
    assert X2["flipper_length_mm"].tolist() == X["flipper_length_mm"].tolist()


def test_contradictory_lists(csv_path: Path) -> None:
    with pytest.raises(DataError, match="'island' is in both data.categorical and data.numeric"):
        processor(csv_path, target="species", categorical=["island"], numeric=["island"]).load()
    with pytest.raises(DataError, match="target column 'species' cannot be in data.drop"):
        processor(csv_path, target="species", drop=["species"]).load()


# --------------------------------------------------------------------------- task
def test_task_inference(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=200), "label": rng.integers(0, 2, 200)})
    dp = processor(write(frame, tmp_path / "ints.csv"), target="label")
    with caplog.at_level(logging.INFO, logger="kennel.data"):
        dp.fit(dp.split(dp.load()).train)
    assert dp.task == "binary" and dp.classes == [0, 1]
    assert all(type(c) is int for c in dp.classes)
    assert any("task binary inferred" in r.getMessage() for r in caplog.records)

    frame["label"] = rng.normal(size=200)
    dp = processor(write(frame, tmp_path / "floats.csv"), target="label")
    dp.fit(dp.split(dp.load()).train)
    assert dp.task == "regression" and dp.classes == []
    assert dp.spec().n_classes == 1

    frame["label"] = rng.integers(0, 100, 200)  # 100 whole values: too many for classes
    dp = processor(write(frame, tmp_path / "counts.csv"), target="label")
    dp.load()
    assert dp._loaded_task == "regression"

    frame["label"] = rng.integers(0, 2, 200).astype(bool)
    dp = processor(write(frame, tmp_path / "bools.parquet"), target="label")
    dp.fit(dp.split(dp.load()).train)
    assert dp.task == "binary" and dp.classes == [False, True]


def test_explicit_task_mismatch(csv_path: Path) -> None:
    with pytest.raises(DataError, match="data.task=binary but target column 'species' has 3"):
        processor(csv_path, target="species", task="binary").load()
    with pytest.raises(DataError, match="data.task=regression but target column 'species'"):
        processor(csv_path, target="species", task="regression").load()


# --------------------------------------------------------------------------- transform
def test_transform_reordered_extra_and_target_ignored(
    fitted: tuple[DataProcessor, Splits], caplog: pytest.LogCaptureFixture
) -> None:
    dp, splits = fitted
    rows = splits.test
    expected = dp.transform(rows)
    shuffled = rows[list(reversed(rows.columns))].assign(extra1=1, extra2="x")
    with caplog.at_level(logging.WARNING, logger="kennel.data"):
        got = dp.transform(shuffled)
    pd.testing.assert_frame_equal(got, expected)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "extra1" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kennel.data"):
        dp.transform(rows)  # includes the target column: silently ignored
    assert not caplog.records


def test_transform_missing_columns(fitted: tuple[DataProcessor, Splits]) -> None:
    dp, splits = fitted
    with pytest.raises(DataError, match="input rows: missing required column 'flipper_length_mm'"):
        dp.transform(splits.test.drop(columns=["flipper_length_mm"]))
    required = {c.name: c.required for c in dp.input_schema()}
    # Columns with missing values in training may be left out: they come back as NaN.
    optional = [c for c, req in required.items() if not req]
    assert optional, "the fixture has NaN in some feature columns"
    X = dp.transform(splits.test.drop(columns=optional))
    for column in optional:
        assert X[column].isna().all()


def test_transform_coercion_and_unseen(fitted: tuple[DataProcessor, Splits]) -> None:
    dp, _ = fitted
    rows = pd.DataFrame(
        {
            "bill_length_mm": ["3", " 4.5 ", "", None],
            "flipper_length_mm": [200.0, 201.0, np.nan, 199.0],
            "island": ["Dream", "Atlantis", None, "Biscoe"],
            "is_male": [True, False, None, True],
            "size": ["S", "XXL", "M", "L"],
        }
    )
    X = dp.transform(rows)
    assert X["bill_length_mm"].tolist()[:2] == [3.0, 4.5]
    assert X["bill_length_mm"].isna().tolist() == [False, False, True, True]
    assert X["flipper_length_mm"].dtype == np.float64
    assert X["island"].cat.codes.tolist() == [1, -1, -1, 0]
    assert X["is_male"].astype(object).tolist()[:2] == ["True", "False"]
    assert X["size"].cat.codes.tolist() == [2, -1, 1, 0]
    with pytest.raises(
        DataError, match="input rows: column 'bill_length_mm' is numeric but has .*'abc'"
    ):
        dp.transform(rows.assign(bill_length_mm=["1", "abc", "2", "3"]))


def test_categorical_numbers_compared_as_strings(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "grade": [str(i % 3 + 1) for i in range(30)],  # "1", "2", "3" as text
            "x": np.arange(30) * 0.5,
            "y": ["a", "b"] * 15,
        }
    )
    dp = processor(write(frame, tmp_path / "grades.csv"), target="y", categorical=["grade"])
    dp.fit(dp.split(dp.load()).train)
    assert dp.categorical["grade"] == ["1", "2", "3"]
    X = dp.transform(pd.DataFrame({"grade": [1, 2.0, "3", 4], "x": [1, 2, 3, 4]}))
    assert X["grade"].cat.codes.tolist() == [0, 1, 2, -1]
    one = dp.transform({"grade": 2, "x": 5})  # a single request row as a dict
    assert one["grade"].cat.codes.tolist() == [1] and one["x"].tolist() == [5.0]


def test_encode_target_unknown_label(fitted: tuple[DataProcessor, Splits]) -> None:
    dp, _ = fitted
    assert dp.encode_target(pd.Series(["Gentoo", "Adelie"])).tolist() == [2, 0]
    with pytest.raises(DataError, match="target column 'species' has the value 'Emperor'"):
        dp.encode_target(pd.Series(["Emperor"]))


def test_transform_large_batch_is_vectorised(fitted: tuple[DataProcessor, Splits]) -> None:
    dp, _ = fitted
    big = pd.concat([penguins()] * 200, ignore_index=True)  # 12,000 rows
    X = dp.transform(big)
    assert len(X) == 12_000 and X.index.equals(big.index)


def test_numbers_taken_at_once_equal_column_by_column(
    fitted: tuple[DataProcessor, Splits],
) -> None:
    """A frame of plain NumPy numbers (a served request after MLflow's schema) has its
    numeric block converted in one go; ``at`` takes the column-by-column path. Same frame."""
    dp, splits = fitted
    rows = splits.test.reset_index(drop=True)
    optional = [c.name for c in dp.input_schema() if not c.required and c.name in dp.numeric]
    frames = {
        "test split": rows,
        "one row": rows.iloc[[3]],
        "reordered, extras": rows[list(reversed(rows.columns))].assign(extra=1),
        "optional left out": rows.drop(columns=optional),
        "int as float32, float as int": rows.astype(
            {"flipper_length_mm": "float32", "bill_length_mm": "float64"}
        ).assign(bill_length_mm=lambda f: f["bill_length_mm"].fillna(0).astype("int64")),
        "a bool number": rows.assign(flipper_length_mm=rows["flipper_length_mm"] > 200),
    }
    for name, frame in frames.items():
        assert numbers_at_once(frame, dp._numeric_labels) is not None, name  # the one-go path runs
        got = dp.transform(frame)
        column_by_column = dp.transform(frame, at=np.arange(len(frame)))
        pd.testing.assert_frame_equal(got, column_by_column, obj=name)
    # Numbers as text, or nullable integers: read column by column, same values.
    text = rows.assign(bill_length_mm=rows["bill_length_mm"].map(lambda v: f" {v} "))
    nullable = rows.astype({"flipper_length_mm": "Int64"})
    for frame in (text, nullable):
        assert numbers_at_once(frame, dp._numeric_labels) is None
        expected = dp.transform(rows)
        pd.testing.assert_frame_equal(dp.transform(frame)[dp.numeric], expected[dp.numeric])


def test_date_parts_are_not_taken_at_once(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "day": pd.date_range("2024-01-01", periods=40, freq="D").astype(str),
            "x": np.arange(40) * 1.5,
            "y": ["a", "b"] * 20,
        }
    )
    dp = processor(write(frame, tmp_path / "days.csv"), target="y")  # ISO dates: found
    dp.fit(dp.split(dp.load()).train)
    assert len(dp.numeric) > 2 and not dp._numeric_are_columns
    rows = frame.drop(columns=["y"])
    pd.testing.assert_frame_equal(dp.transform(rows), dp.transform(rows, at=np.arange(40)))


# --------------------------------------------------------------------------- schema, state
def test_input_schema_and_example(fitted: tuple[DataProcessor, Splits]) -> None:
    dp, splits = fitted
    schema = dp.input_schema()
    assert all(isinstance(c, ColumnSpec) for c in schema)
    by_name = {c.name: c for c in schema}
    assert "species" not in by_name
    assert by_name["bill_length_mm"].kind == "float"
    assert by_name["flipper_length_mm"] == ColumnSpec("flipper_length_mm", "integer", True)
    assert by_name["island"].kind == "string"
    assert by_name["is_male"].kind == "boolean"
    for column in by_name:
        assert by_name[column].required == (not splits.train[column].isna().any())
    example = dp.input_example(2)
    assert list(example.columns) == dp.raw_columns and len(example) == 2
    json.dumps(dp.state()["examples"])  # JSON-able, NaN as None
    assert dp.state()["examples"][0]["island"] == splits.train["island"].iloc[0]


def test_state_round_trip(tmp_path: Path, fitted: tuple[DataProcessor, Splits]) -> None:
    dp, splits = fitted
    path = dp.save(tmp_path / "model")
    assert path.name == "processor.json"
    state = json.loads(path.read_text())
    assert state["classes"] == SPECIES and state["target"] == "species"
    assert "storage_options" not in state["config"]
    again = DataProcessor.load_state(tmp_path / "model")
    pd.testing.assert_frame_equal(again.transform(splits.test), dp.transform(splits.test))
    assert again.spec() == dp.spec()
    assert again.input_schema() == dp.input_schema()
    assert again.classes == dp.classes and again.task == dp.task
    assert again.digest == dp.digest and again.source_uri == dp.source_uri
    np.testing.assert_array_equal(
        again.encode_target(splits.test["species"]), dp.encode_target(splits.test["species"])
    )
    pd.testing.assert_frame_equal(again.input_example(), dp.input_example())


def test_state_keeps_int_classes(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=100)
    frame = pd.DataFrame({"x": x, "label": [i % 2 for i in range(100)]})
    dp = processor(write(frame, tmp_path / "ints.csv"), target="label")
    dp.fit(dp.split(dp.load()).train)
    dp.save(tmp_path)
    again = DataProcessor.load_state(tmp_path)
    assert again.classes == [0, 1] and all(type(c) is int for c in again.classes)
    assert again.decode_target([1, 0]).tolist() == [1, 0]


def test_unfitted_transform_raises() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        processor("builtin:iris").transform(pd.DataFrame({"a": [1]}))


def test_fsspec_url_and_storage_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any fsspec URL is read; storage_options reach fsspec unwrapped (true/false as bool)."""
    import fsspec
    import fsspec.core

    with fsspec.open("memory://kennel-test/penguins.csv", "w") as handle:
        penguins().to_csv(handle, index=False)
    seen: dict[str, object] = {}
    real = fsspec.core.url_to_fs

    def spy(url: str, **options: object):
        seen.update(options)
        return real(url)

    monkeypatch.setattr(fsspec.core, "url_to_fs", spy)
    dp = DataProcessor(
        DataConfig(
            source="memory://kennel-test/penguins.csv",
            target="species",
            storage_options={"token": "s3cr3t", "anon": "false"},
        )
    )
    assert len(dp.load()) == 60
    assert seen == {"token": "s3cr3t", "anon": False}
    assert dp.source_uri == "memory://kennel-test/penguins.csv"
    assert "s3cr3t" not in json.dumps(dp.fit(dp.split(dp.load()).train).state())
