"""What each column becomes: every dtype CSV and Parquet readers produce, identifiers, dates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.config import DataConfig
from kennel.data import DataProcessor
from kennel.data.columns import decide_roles, input_kind

N = 60


def every_dtype() -> pd.DataFrame:
    """One column per dtype a reader produces, plus the awkward ones, and a target."""
    rng = np.random.default_rng(1)
    ints_with_gaps = pd.array(rng.integers(0, 50, N), dtype="Int64")
    ints_with_gaps[[2, 7]] = pd.NA
    text = rng.choice(["red", "green", "blue"], N).astype(object)
    text[[1, 4]] = None
    stamps = pd.date_range("2024-01-01 08:30", periods=N, freq="37h")
    mixed = np.array([1, "two", 3.5, None] * (N // 4), dtype=object)
    numbers_as_text = [str(v) for v in rng.integers(50, 200, N)]
    numbers_as_text[3] = "?"
    return pd.DataFrame(
        {
            "int": rng.integers(0, 100, N),
            "int_gaps": ints_with_gaps,
            "float": rng.normal(size=N),
            "whole_floats": rng.integers(0, 9, N).astype(float),
            "flag": rng.integers(0, 2, N).astype(bool),
            "text": pd.array(text, dtype="str"),
            "cat": pd.Categorical(rng.choice(["S", "M", "L"], N)),
            "when": stamps,
            "when_utc": stamps.tz_localize("UTC"),
            "iso": [s.strftime("%Y-%m-%d") for s in stamps],
            "mixed": mixed,
            "constant": "same",
            "empty": np.nan,
            "wait": pd.to_timedelta(rng.integers(0, 100, N), unit="s"),
            "horsepower": numbers_as_text,
            "label": [["a", "b", "c"][i % 3] for i in range(N)],
        }
    )


def roles_of(frame: pd.DataFrame, **kwargs: object) -> dict[str, tuple[str, str]]:
    return {
        r.name: (r.role, r.kind)
        for r in decide_roles(frame, target="label", **kwargs)  # type: ignore[arg-type]
    }


def test_every_dtype_gets_a_role() -> None:
    roles = roles_of(every_dtype())
    assert roles.pop("wait")[0] == "dropped"  # timedelta64[<unit>]
    assert roles == {
        "int": ("numeric", "integer"),
        "int_gaps": ("numeric", "integer"),
        "float": ("numeric", "float"),
        "whole_floats": ("numeric", "integer"),
        "flag": ("categorical", "boolean"),
        "text": ("categorical", "string"),
        "cat": ("categorical", "category"),
        "when": ("date", "datetime"),
        "when_utc": ("date", "datetime_tz"),
        "iso": ("date", "string"),
        "mixed": ("categorical", "mixed"),
        "constant": ("dropped", "string"),
        "empty": ("dropped", "float"),
        "horsepower": ("numeric", "string"),
    }


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_every_dtype_trains_and_transforms(tmp_path: Path, suffix: str) -> None:
    frame = every_dtype().drop(columns=["mixed"])  # Parquet cannot store mixed objects
    path = tmp_path / f"all{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.drop(columns=["wait"]).to_csv(path, index=False)
    dp = DataProcessor(DataConfig(source=str(path), target="label", split={"stratify": False}))
    loaded = dp.load()
    dp.fit(dp.split(loaded).train)
    features = dp.transform(loaded.drop(columns=["label"]))
    assert len(features) == N
    assert {"when__year", "when__hour", "iso__weekday"} <= set(dp.numeric)
    assert "iso__hour" not in dp.numeric  # date strings without a time of day
    assert features["horsepower"].isna().sum() == 1  # "?" read as missing
    assert not {"constant", "empty", "wait"} & set(dp.raw_columns)
    # Parts are the calendar's: 2024-01-01 was a Monday, 08:30.
    first = features.iloc[0]
    assert (first["when__year"], first["when__month"], first["when__weekday"]) == (2024, 1, 0)
    assert first["when__hour"] == 8
    # The state round-trips, and a request of nulls only is accepted.
    again = DataProcessor.from_state(dp.state())
    pd.testing.assert_frame_equal(again.transform(loaded), features)
    nulls = pd.DataFrame([dict.fromkeys(dp.raw_columns)])
    assert len(again.transform(nulls)) == 1


def test_mixed_object_column_fits_in_memory() -> None:
    frame = every_dtype()
    dp = DataProcessor(DataConfig(target="label")).fit(frame)
    assert "mixed" in dp.categorical and dp.categorical["mixed"] == ["1", "3.5", "two"]
    assert len(dp.transform(frame.head(5))) == 5


def test_identifiers() -> None:
    rng = np.random.default_rng(2)
    n = 100
    frame = pd.DataFrame(
        {
            "rownames": np.arange(1, n + 1),
            "Unnamed: 0": rng.permutation(n),
            "PassengerId": rng.permutation(n) + 1000,
            "store_id": rng.integers(0, 5, n),  # repeats: a grouping, kept
            "name": [f"person {i}" for i in rng.permutation(n)],
            "seq": rng.permutation(n),  # 0..n-1 in any order: a row number
            "year": np.arange(1901, 1901 + n),  # distinct, consecutive, but not from 0/1
            "measure": rng.normal(size=n),  # distinct floats: a measurement
            "dates": pd.date_range("2020-01-01", periods=n).strftime("%Y-%m-%d"),
            "label": rng.choice(["x", "y"], n),
        }
    )
    roles = {r.name: r for r in decide_roles(frame, target="label")}
    dropped = {name for name, r in roles.items() if r.role == "dropped"}
    assert dropped == {"rownames", "Unnamed: 0", "PassengerId", "name", "seq"}
    assert all("data.keep=[" in roles[name].reason for name in dropped)
    assert roles["measure"].role == "numeric" and roles["year"].role == "numeric"
    assert roles["dates"].role == "date" and roles["store_id"].role == "numeric"
    kept = {r.name: r.role for r in decide_roles(frame, target="label", keep=["seq"])}
    assert kept["seq"] == "numeric"


def test_identifier_sorted_by_target_is_not_a_feature(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": rng.normal(size=200)})
    frame["label"] = np.where(frame["x"] + rng.normal(size=200) > 0, "hi", "lo")
    frame = frame.sort_values("label", ignore_index=True)
    path = tmp_path / "sorted.csv"
    frame.to_csv(path)  # the index becomes "Unnamed: 0", sorted with the target
    dp = DataProcessor(DataConfig(source=str(path), target="label"))
    with caplog.at_level(logging.WARNING, logger="kennel.data"):
        dp.fit(dp.split(dp.load()).train)
    assert dp.raw_columns == ["x", "y"]
    assert any(
        "column 'Unnamed: 0' dropped: identifier" in r.getMessage()
        and "data.keep=[Unnamed: 0]" in r.getMessage()
        for r in caplog.records
    )


def test_input_kind_of_object_columns() -> None:
    assert input_kind(pd.Series([True, False, None], dtype=object)) == "boolean"
    assert input_kind(pd.Series([1, 2, None], dtype=object)) == "integer"
    assert input_kind(pd.Series([1.5, 2, None], dtype=object)) == "float"
    assert input_kind(pd.Series(["a", 1], dtype=object)) == "mixed"


def test_max_categories_keeps_the_most_frequent(tmp_path: Path) -> None:
    values = ["common"] * 30 + ["usual"] * 20 + [f"rare{i}" for i in range(10)]
    frame = pd.DataFrame({"v": values, "x": np.linspace(0, 1, 60) ** 2, "label": ["a", "b"] * 30})
    path = tmp_path / "cats.csv"
    frame.to_csv(path, index=False)
    dp = DataProcessor(DataConfig(source=str(path), target="label", max_categories=2))
    dp.fit(dp.split(dp.load()).train)
    assert dp.categorical["v"] == ["common", "usual"]
