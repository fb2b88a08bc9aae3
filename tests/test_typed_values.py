"""Values as people type and export them (issue 23): numbers written as text, labels typed by
hand, classes too rare to stratify, and splits that follow time or groups. Unit level: the
rules of :mod:`kennel.data.numbers`, :mod:`kennel.data.labels` and :mod:`kennel.data.splits`,
and the processor around them (state round trip, prediction-time reading, one-line errors).
End to end on real tables: ``tests/test_exported_tables.py``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.config import Config, DataConfig
from kennel.data import DataProcessor
from kennel.data.labels import TextRules, merge_spellings
from kennel.data.numbers import read_number, read_values, summarize, verdict
from kennel.errors import ConfigError, DataError


def processor(frame: pd.DataFrame, tmp_path: Path, **settings: object) -> DataProcessor:
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return DataProcessor(DataConfig(source=str(path), **settings))


def fitted(frame: pd.DataFrame, tmp_path: Path, **settings: object) -> DataProcessor:
    dp = processor(frame, tmp_path, **settings)
    dp.fit(dp.split(dp.load()).train)
    return dp


def money_table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    price = rng.uniform(-3000, 250_000, n).round(2)
    share = rng.uniform(0, 1, n).round(3)
    return (
        pd.DataFrame(
            {
                "price": [f"(${-v:,.2f})" if v < 0 else f"${v:,.2f}" for v in price],
                "euro": [
                    f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".") + " €"
                    for v in price
                ],  # fmt: skip
                "share": [f" {v * 100:.1f}% " for v in share],
                "kind": rng.choice(["a", "b", "c"], n),
                "label": np.where(price > 100_000, "high", "low"),
            }
        ),
        price,
        share,
    )


# ------------------------------------------------------------------------ numbers as text
@pytest.mark.parametrize(
    ("text", "decimal", "value"),
    [
        ("$1,499", ".", 1499.0),
        ("$1,499.00", ".", 1499.0),
        ("1.499,00 €", ",", 1499.0),
        ("1 499,50", ",", 1499.5),
        ("(1,200)", ".", -1200.0),
        ("($1,200.50)", ".", -1200.5),
        ("-$3.50", ".", -3.5),
        ("$-3.50", ".", -3.5),
        ("USD 1,000.00", ".", 1000.0),
        ("1.000,00 EUR", ",", 1000.0),
        ("CHF 1'234.50", ".", 1234.5),
        ("12,34,567", ".", 1234567.0),
        ("  42  ", ".", 42.0),
        ("12.5%", ".", 12.5),
        ("12,5 %", ",", 12.5),
    ],
)
def test_read_number(text: str, decimal: str, value: float) -> None:
    read = read_number(text, decimal)
    assert read is not None and read[0] == pytest.approx(value), (text, read)


@pytest.mark.parametrize(
    ("text", "decimal"),
    [("1,2,3", "."), ("1.499,00", "."), ("$1,49", "."), ("abc", "."), ("(12", "."), ("$€5", ".")],
)
def test_not_a_number(text: str, decimal: str) -> None:
    assert read_number(text, decimal) is None


def test_the_columns_own_decimal_mark() -> None:
    """``1,499`` alone proves nothing: the other values of the column decide."""
    european = summarize(["1,499", "12,5", "3.000,25"], [5, 1, 1])
    assert european.decimal == ","
    found = verdict(european)
    assert found is not None and found.number_format["decimal"] == ","
    assert list(read_values(["1,499", "3.000,25"], found.number_format)) == [1.499, 3000.25]
    english = summarize(["1,499", "2,252.93"], [5, 1])
    assert english.decimal == "."
    assert list(read_values(["1,499"], verdict(english).number_format)) == [1499.0]
    # No evidence at all: "." is the decimal mark, so 1,499 is 1499.
    assert summarize(["1,499", "2,300"], [1, 1]).decimal == "."
    # Plain numbers as text keep no format (read as before: pd.to_numeric).
    plain = verdict(summarize(["1.5", "2", "?"], [50, 50, 1]))
    assert plain is not None and plain.number_format is None and plain.tokens == ["?"]


def test_summaries_add_up_like_the_whole_column() -> None:
    """Partitions of a Dask frame give the same decision as the whole pandas column."""
    values = ["$1,499.00", "$12.50", "?", "(1,200)", "n/a", "12,5", "1.000,00", "x", "$3"]
    counts = [10, 5, 1, 2, 3, 1, 1, 1, 4]
    whole = summarize(values, counts)
    parts = summarize(values[:4], counts[:4]) + summarize(values[4:], counts[4:])
    assert parts == whole


def test_text_columns_of_money_become_numbers(tmp_path: Path, caplog) -> None:
    frame, price, share = money_table()
    with caplog.at_level(logging.INFO, logger="kennel.data.columns"):
        dp = fitted(frame, tmp_path, target="label")
    roles = {r.name: r for r in dp.roles}
    assert {roles[c].role for c in ("price", "euro", "share")} == {"numeric"}
    assert roles["price"].number_format["decimal"] == "."
    assert roles["euro"].number_format["decimal"] == ","
    assert set(roles["price"].number_format["stripped"]) == {"$", ",", "()"}
    said = [r.getMessage() for r in caplog.records if "written as text" in r.getMessage()]
    assert len(said) == 3 and any("'$'" in line and "price" in line for line in said)
    x = dp.transform(frame)
    np.testing.assert_allclose(x["price"], price)
    np.testing.assert_allclose(x["euro"], price)
    np.testing.assert_allclose(x["share"], share, atol=1e-9)  # 12.5% -> 0.125
    # The state carries the conventions: a request with formatted text reads the same.
    again = DataProcessor.from_state(dp.state())
    request = pd.DataFrame({"price": ["$1,499", " (2,000.50) ", 7], "euro": ["1.499,00 €", None, 3],
                            "share": ["12.5%", "", 0.5], "kind": ["a", "b", "c"]})  # fmt: skip
    x = again.transform(request)
    assert x["price"].tolist() == [1499.0, -2000.5, 7.0]
    assert x["euro"].tolist()[0] == 1499.0 and np.isnan(x["euro"].tolist()[1])
    assert x["share"].tolist()[0] == 0.125 and x["share"].tolist()[2] == 0.5
    with pytest.raises(DataError, match="input rows: column 'price' is numeric but has .*'cheap'"):
        again.transform(request.assign(price=["cheap", "1", "2"]))


def test_percent_as_a_number(tmp_path: Path) -> None:
    frame, _, share = money_table()
    dp = fitted(frame, tmp_path, target="label", percent="number")
    np.testing.assert_allclose(dp.transform(frame)["share"], share * 100, atol=1e-9)
    assert DataProcessor.from_state(dp.state()).transform(frame.head(1))["share"].iloc[0] == (
        pytest.approx(share[0] * 100)
    )


def test_distinct_money_is_not_an_identifier(tmp_path: Path) -> None:
    """All distinct ``"2,252.93"`` strings are numbers, not row names; ``data.numeric`` on
    such a column reads it too."""
    rng = np.random.default_rng(1)
    amounts = rng.permutation(np.arange(1000, 1000 + 60)) * 1.37
    frame = pd.DataFrame({"amount": [f"{v:,.2f}" for v in amounts],
                          "y": rng.choice(["p", "q"], 60)})  # fmt: skip
    dp = fitted(frame, tmp_path, target="y")
    assert {r.name: r.role for r in dp.roles}["amount"] == "numeric"
    dp = fitted(frame, tmp_path, target="y", numeric=["amount"])
    np.testing.assert_allclose(dp.transform(frame)["amount"], amounts.round(2))


def test_a_target_of_money_is_a_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, 80)
    frame = pd.DataFrame({"x": x, "sales": [f"${v * 1000:,.2f}" for v in x]})
    dp = fitted(frame, tmp_path, target="sales")
    assert dp.task == "regression" and dp.target_format["decimal"] == "."
    np.testing.assert_allclose(dp.encode_target(frame["sales"]), (x * 1000).round(2))
    assert DataProcessor.from_state(dp.state()).encode_target(["$1,000"])[0] == 1000.0


# ------------------------------------------------------------------------ labels typed by hand
def test_merge_spellings_keeps_the_most_frequent() -> None:
    merged = merge_spellings({"yes": 5, "YES": 2, " Yes ": 1, "no": 4, "No ": 1}, TextRules())
    assert merged.counts == {"yes": 8, "no": 5}
    assert merged.groups["yes"] == [("yes", 5), ("YES", 2), (" Yes ", 1)]
    assert set(merged.case_groups()) == {"yes", "no"}
    apart = merge_spellings({"yes": 5, "YES": 2, " yes": 1}, TextRules(merge_case=False))
    assert apart.counts == {"yes": 6, "YES": 2}
    assert apart.case_groups() == {}


def typed_table(n: int = 90) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, n)
    answer = np.where(x > 0, "yes", "no").astype(object)
    answer[:6] = ["YES", " Yes ", "YES", "NO", "no ", "No"]
    answer[0] = "YES" if x[0] > 0 else "NO"
    colour = rng.choice(["Red", "Blue"], n).astype(object)
    colour[:4] = ["red", " BLUE", "Blue ", "RED"]
    return pd.DataFrame({"x": x, "colour": colour, "answer": answer})


def test_typed_labels_merge_with_a_warning(tmp_path: Path, caplog) -> None:
    frame = typed_table()
    with caplog.at_level(logging.WARNING):
        dp = fitted(frame, tmp_path, target="answer")
    assert dp.task == "binary" and dp.classes == ["no", "yes"]
    assert dp.categorical["colour"] == ["Blue", "Red"]
    warnings = [r.getMessage() for r in caplog.records if "differ only in case" in r.getMessage()]
    assert len(warnings) == 2  # the target and the column, once each
    target_line = next(w for w in warnings if "target 'answer'" in w)
    assert "'YES'" in target_line and "' Yes '" in target_line and "-> 'yes'" in target_line
    assert "data.merge_case=false" in target_line
    again = DataProcessor.from_state(dp.state())
    request = pd.DataFrame({"x": [0.1, 0.2], "colour": [" RED ", "blue"]})
    assert again.transform(request)["colour"].tolist() == ["Red", "Blue"]
    assert list(again.encode_target([" YES ", "No"])) == [1, 0]


def test_merge_case_false_keeps_spellings_apart(tmp_path: Path) -> None:
    dp = fitted(typed_table(), tmp_path, target="answer", merge_case=False)
    assert dp.task == "multiclass"
    assert "YES" in dp.classes and "yes" in dp.classes and " Yes " not in dp.classes  # stripped
    assert "RED" in dp.categorical["colour"]


def test_states_saved_before_the_rules_read_values_as_written(tmp_path: Path) -> None:
    dp = fitted(typed_table(), tmp_path, target="answer")
    state = dp.state()
    del state["text"], state["target_format"]
    old = DataProcessor.from_state(state)
    assert old.transform(pd.DataFrame({"x": [0.0], "colour": [" RED "]}))["colour"].isna().all()


# ------------------------------------------------------------------------ rare classes
def test_a_one_row_class_trains(tmp_path: Path) -> None:
    frame = typed_table(60).assign(answer=["a", "b", "c"] * 20)
    frame.loc[0, "answer"] = "rare"
    dp = processor(frame, tmp_path, target="answer")
    splits = dp.split(dp.load())
    assert 0 in splits.train.index and dp.split_report["rare_classes"] == {"rare": 1}
    assert "rare" in dp.fit(splits.train).classes


# ------------------------------------------------------------------------ time and groups
def timed_table(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    days = np.sort(rng.integers(0, 60, n))  # many rows share a day
    frame = pd.DataFrame(
        {
            "day": (pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")).strftime(
                "%Y-%m-%d"
            ),
            "period": days,
            "customer": rng.integers(0, 25, n).astype(str),
            "x": rng.normal(0, 1, n),
            "y": rng.choice(["u", "v"], n),
        }
    )
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # rows not in order


@pytest.mark.parametrize("column", ["day", "period"])
def test_time_split_keeps_the_order_and_the_ties(tmp_path: Path, column: str) -> None:
    frame = timed_table()
    frame.loc[3, column] = None  # a row without a time trains
    dp = processor(frame, tmp_path, target="y", split={"time_on": column})
    splits = dp.split(dp.load())
    order = (lambda s: pd.to_datetime(s)) if column == "day" else (lambda s: s.astype(float))
    train, valid, test = (order(part[column]) for part in splits)
    assert train.max() <= valid.min() and valid.max() <= test.min()
    assert train.max() < valid.min() and valid.max() < test.min()  # ties in one split
    assert 3 in splits.train.index
    report = dp.split_report
    assert report["method"] == "time" and report["rows_without_time"] == 1
    assert report["rows"] == {"train": len(splits.train), "valid": len(splits.valid),
                              "test": len(splits.test)}  # fmt: skip
    assert abs(len(splits.test) - 0.15 * len(frame)) < 0.1 * len(frame)
    if column == "day":
        assert report["time"]["valid"]["first"] == valid.min().isoformat()


def test_group_split_keeps_every_group_in_one_split(tmp_path: Path) -> None:
    frame = timed_table(400)
    dp = processor(frame, tmp_path, target="y", split={"group_on": "customer"})
    splits = dp.split(dp.load())
    groups = [set(part["customer"]) for part in splits]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(dp.split_report["groups"].values()) == frame["customer"].nunique()
    assert 0.5 < len(splits.train) / len(frame) < 0.85
    again = processor(frame, tmp_path, target="y", split={"group_on": "customer"})
    assert again.split(again.load()).test.index.equals(splits.test.index)


def test_bad_split_settings_are_one_line(tmp_path: Path) -> None:
    frame = timed_table().assign(when=["soon"] * 200)
    with pytest.raises(
        DataError, match=r"column 'dy' \(from data.split.time_on\) does not exist; did you mean"
    ):
        processor(frame, tmp_path, target="y", split={"time_on": "dy"}).load()
    with pytest.raises(DataError, match=r"data.split.group_on cannot be the target column 'y'"):
        processor(frame, tmp_path, target="y", split={"group_on": "y"}).load()
    dp = processor(frame, tmp_path, target="y", split={"time_on": "when"})
    with pytest.raises(
        DataError,
        match=r"column 'when' has the value 'soon', which is neither a date nor a number; .*"
        r"expected one of: .*day.*period",
    ):
        dp.split(dp.load())
    from kennel.config import load_config

    with pytest.raises(
        ConfigError, match=r"time_on \('day'\) or group_on \('customer'\), not both"
    ):
        load_config(None, ["data.split.time_on=day", "data.split.group_on=customer"])


def test_holdout_ids_of_older_settings_do_not_change(tmp_path: Path) -> None:
    import hashlib
    import json

    from kennel.registry.holdout import holdout_id

    dp = processor(timed_table(), tmp_path, target="y")
    dp.load()
    old = {"digest": dp.digest, "target": "y", "split": {"train": 0.7, "valid": 0.15,
           "test": 0.15, "seed": 42, "stratify": True}}  # fmt: skip
    expected = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]
    assert holdout_id(dp) == expected
    timed = processor(timed_table(), tmp_path, target="y", split={"time_on": "day"})
    timed.load()
    assert holdout_id(timed) != expected


def test_the_config_keeps_the_settings_together() -> None:
    config = Config()
    assert config.data.merge_case is True and config.data.percent == "fraction"
    assert config.data.split.time_on is None and config.data.split.group_on is None


def test_time_split_on_a_parquet_date_column(tmp_path: Path) -> None:
    """Parquet ``date32`` columns arrive as Python dates: a time split orders them."""
    import datetime

    frame = timed_table()
    frame["day"] = [datetime.date.fromisoformat(d) for d in frame["day"]]
    path = tmp_path / "dates.parquet"
    frame.to_parquet(path, index=False)
    dp = DataProcessor(DataConfig(source=str(path), target="y", split={"time_on": "day"}))
    train, valid, test = dp.split(dp.load())
    assert max(train["day"]) < min(valid["day"]) and max(valid["day"]) < min(test["day"])
    assert dp.split_report["time"]["test"]["first"] == f"{min(test['day'])}T00:00:00"


def test_the_reference_profile_reads_values_like_the_processor(tmp_path: Path) -> None:
    """Monitoring counts ``$1,499`` as a number and ``Red`` as ``RED`` (the most frequent
    spelling, `` RED `` stripped), as the model does."""
    from kennel.monitor.profile import Profile, build_profile, category_counts

    frame, price, _ = money_table()
    frame["kind"] = frame["kind"].map({"a": "Red", "b": " RED ", "c": "Blue"})
    dp = fitted(frame, tmp_path, target="label")
    profile = Profile.from_dict(build_profile(dp, frame, None).to_dict())
    column = profile.columns["price"]
    assert column.invalid == 0 and column.min == pytest.approx(price.min(), rel=1e-3)
    kind = profile.columns["kind"]
    assert kind.values == dp.categorical["kind"] == ["Blue", "RED"] and kind.other == 0
    counts, others = category_counts(pd.Index(kind.values), frame["kind"], kind.text)
    assert others == {} and counts[:2].sum() == len(frame)
