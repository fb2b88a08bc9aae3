"""Tables as people export them (issue 23): CSV dialects, encodings, workbooks, ``kennel
inspect``, and messages that list the choices.

Training, every prediction path and ``kennel evaluate --data`` on the real exported files
(``penguins_eu.csv``, ``montreal_election.csv``, ``wage.xlsx``, ``hitters.ods``) are run by
``tests/test_real_tables.py`` from the manifest; this module checks the reading itself: what is
detected, that settings win over detection, that chunked reading (``kennel predict``/``monitor``)
gives what the whole read gives, and the one-line errors (exit 2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.cli.manager import main
from kennel.config import DataConfig
from kennel.data.chunks import open_rows
from kennel.data.sources import Source
from kennel.errors import DataError, UserError

DATA = Path(__file__).parent / "data" / "real"
EU = DATA / "penguins_eu.csv"
CP1252 = DATA / "montreal_election.csv"
XLSX = DATA / "wage.xlsx"
ODS = DATA / "hitters.ods"


def read(path: Path, **settings: object) -> tuple[pd.DataFrame, dict]:
    source = Source(DataConfig(source=str(path), **settings))  # type: ignore[arg-type]
    return source.read(), source.read_info


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# --------------------------------------------------------------------------- detection
def test_european_csv_reads_as_pandas_reads_the_original() -> None:
    frame, info = read(EU)
    original = pd.read_csv(DATA / "penguins.csv")
    pd.testing.assert_frame_equal(frame, original)  # decimal commas are numbers, NA missing
    assert frame["bill_length_mm"].iloc[0] == 39.1
    assert info["delimiter"] == ";" and info["decimal"] == "," and info["encoding"] == "utf-8-sig"
    assert info["bom"] is True and info["detected_by"].startswith("DuckDB")


def test_windows_1252_text_is_decoded() -> None:
    frame, info = read(CP1252)
    assert info["encoding"] == "cp1252" and info["delimiter"] == ";"
    assert "11-Sault-au-Récollet" in set(frame["district"])
    assert "131-Saint-Édouard" in set(frame["district"])
    assert frame["Coderre"].dtype == np.int64


@pytest.mark.parametrize(
    ("text", "encoding", "expected", "detected"),
    [
        (  # decimal comma, thousands dot, BOM, CRLF
            "a;b;c\r\n1,5;x;1.234,5\r\n2,25;y;2.000,0\r\n3;z;12,5\r\n",
            "utf-8-sig",
            {"a": [1.5, 2.25, 3.0], "c": [1234.5, 2000.0, 12.5]},
            {"delimiter": ";", "decimal": ",", "thousands": ".", "bom": True},
        ),
        (  # Excel's "sep=" first line
            "sep=|\na|b\n1.5|x\n2.5|y\n",
            "utf-8",
            {"a": [1.5, 2.5]},
            {"delimiter": "|", "skiprows": 1, "decimal": "."},
        ),
        (  # no header: numbers in the first row
            "1,2.5,x\n3,4.5,y\n5,6.5,z\n",
            "utf-8",
            {"column0": [1, 3, 5], "column1": [2.5, 4.5, 6.5]},
            {"header": False},
        ),
        (  # a title line and a blank line before the header
            "Export of 2024-05-01\n\nid,v\n1,2\n3,4\n5,6\n",
            "utf-8",
            {"v": [2, 4, 6]},
            {"skiprows": 2, "header": True},
        ),
        (  # tab-separated UTF-16 (what Excel's "Unicode text" saves)
            "a\tb\n1,5\tx\n2,5\ty\n",
            "utf-16",
            {"a": [1.5, 2.5]},
            {"delimiter": "\t", "decimal": ",", "encoding": "utf-16"},
        ),
        (  # quoted separators stay in their field
            'name,v\n"Smith, John",1.5\n"Doe, Jane",2.5\n',
            "utf-8",
            {"name": ["Smith, John", "Doe, Jane"], "v": [1.5, 2.5]},
            {"delimiter": ",", "decimal": "."},
        ),
    ],
)
def test_dialects(tmp_path: Path, text: str, encoding: str, expected: dict, detected: dict) -> None:
    frame, info = read(write(tmp_path / "t.csv", text, encoding))
    for column, values in expected.items():
        assert frame[column].tolist() == values, (column, frame)
    assert {k: info[k] for k in detected} == detected


def test_a_comma_is_not_taken_for_a_thousands_mark(tmp_path: Path) -> None:
    """``1,5`` with ``data.csv.decimal=.`` is text, never 15."""
    path = write(tmp_path / "t.csv", "a;b\n1,5;x\n2,5;y\n3,5;z\n")
    frame, info = read(path, csv={"decimal": "."})
    assert info["thousands"] is None
    assert frame["a"].tolist() == ["1,5", "2,5", "3,5"]


def test_settings_win_over_detection() -> None:
    frame, info = read(EU, csv={"delimiter": ",", "encoding": "utf-8"})
    assert frame.shape[1] == 1  # as asked: one column per line
    assert info["set_by_config"] == ["delimiter", "encoding"]
    frame, info = read(EU, csv={"decimal": "."})
    assert frame["bill_length_mm"].dtype != np.float64  # "39,1" stays text
    frame, _ = read(EU, csv={"header": False, "skiprows": 1})
    assert list(frame.columns)[:2] == ["column0", "column1"] and len(frame) == 344


def test_not_utf8_after_the_head_falls_back(tmp_path: Path) -> None:
    rows = "".join(f"{i};{i},5;plain\n" for i in range(30_000))  # > 256 KiB of ASCII
    path = write(tmp_path / "late.csv", "n;v;t\n" + rows + "30000;1,5;Genève\n", "cp1252")
    frame, info = read(path)
    assert frame["t"].iloc[-1] == "Genève" and frame["v"].iloc[0] == 0.5
    assert info["encoding"] == "cp1252" and info["notes"]


def test_chunks_read_what_the_whole_read_gives() -> None:
    """``kennel predict``/``monitor`` inputs: the dialect (or sheet) applies per file."""
    for path, settings in [(EU, {}), (CP1252, {}), (XLSX, {"sheet": "wage"}), (ODS, {"sheet": 1})]:
        whole, _ = read(path, **settings)
        data = DataConfig(source=str(path), **settings)  # type: ignore[arg-type]
        rows = open_rows(str(path), data, 50)
        assert rows.columns == list(whole.columns)
        chunked = pd.concat(list(rows.chunks), ignore_index=True)
        pd.testing.assert_frame_equal(chunked, whole, check_dtype=False)


# --------------------------------------------------------------------------- workbooks
def test_workbook_sheets() -> None:
    first, info = read(XLSX)  # the first sheet unless data.sheet says otherwise
    assert list(first.columns) == ["about"] and info["sheet"] == "notes"
    by_name, info = read(XLSX, sheet="wage")
    by_index, _ = read(XLSX, sheet=1)
    pd.testing.assert_frame_equal(by_name, by_index)
    assert info["sheets"] == ["notes", "wage"] and len(by_name) == 1000
    hitters, info = read(ODS, sheet="Hitters")
    assert info["type"] == "ods" and int(hitters["Salary"].isna().sum()) == 59


@pytest.mark.parametrize("sheet", ["wages", 2, "Notes2"])
def test_unknown_sheet_lists_the_sheets(sheet: object) -> None:
    with pytest.raises(DataError) as caught:
        read(XLSX, sheet=sheet)
    message = str(caught.value)
    assert "\n" not in message and "'notes', 'wage'" in message and "data.sheet" in message
    if sheet == "wages":
        assert "did you mean 'wage'?" in message


# --------------------------------------------------------------------------- messages
@pytest.mark.parametrize("key", ["target", "drop", "keep", "categorical", "numeric"])
def test_unknown_column_lists_the_choices(key: str) -> None:
    from kennel.data import DataProcessor

    value = "zzz_nothing_like_it" if key == "target" else ["zzz_nothing_like_it"]
    settings = {"target": "species", key: value}
    with pytest.raises(DataError) as caught:
        DataProcessor(DataConfig(source=str(EU), **settings)).load()  # type: ignore[arg-type]
    message = str(caught.value)
    assert f"(from data.{key}) does not exist; expected one of: " in message
    assert "island" in message


def test_a_case_slip_is_suggested_first() -> None:
    from kennel.data import DataProcessor

    with pytest.raises(DataError, match="did you mean 'wage'"):
        DataProcessor(DataConfig(source=str(XLSX), sheet="wage", target="Wage")).load()


# --------------------------------------------------------------------------- kennel inspect
@pytest.mark.parametrize(
    ("path", "extra", "expected"),
    [
        (EU, ["data.target=species"], ["CSV: delimiter ';', decimal ','", "multiclass"]),
        (CP1252, ["data.target=winner"], ["encoding cp1252", "district", "identifier"]),
        (XLSX, ["data.sheet=wage", "data.target=wage"], ["sheet 'wage' (2 of 2", "regression"]),
        (ODS, ["data.sheet=1"], ["ods workbook: sheet 'Hitters'", "no target named"]),
    ],
)
def test_inspect(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: Path,
    extra: list[str],
    expected: list[str],
) -> None:
    out = tmp_path / "report.json"
    code = main(["inspect", f"data.source={path}", *extra, "--output-json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    for piece in expected:
        assert piece in text, text
    report = json.loads(out.read_text())
    assert {"source", "target", "task", "rows", "read", "columns"} <= set(report)
    assert len(text.splitlines()) == 4 + 1 + len(report["columns"])  # header, table


def test_inspect_is_light() -> None:
    """No MLflow and no training: the command imports neither MLflow nor a family."""
    code = (
        "import sys; from kennel.cli.manager import main; "
        f"rc = main(['inspect', 'data.source={EU}', 'data.target=species']); "
        "heavy = [m for m in ('mlflow', 'lightgbm', 'tensorflow') if m in sys.modules]; "
        "print(rc, heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stderr[-2000:]


def test_readers_are_imported_only_when_reading() -> None:
    code = (
        "import sys, kennel.data, kennel.cli.manager; "
        "print([m for m in ('duckdb', 'python_calamine') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]


# --------------------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("broken.xlsx", b"PK\x03\x04 not really a zip", "cannot read it as a workbook"),
        ("table.ods", b"plain text, not a spreadsheet\n", "cannot read it as a workbook"),
        ("empty.csv", b"\xef\xbb\xbf\r\n", "the file is empty"),
        ("rows.csv", b"a;b\n1;2\n3;4\n5;6\n7;8;9;10\n", "cannot read it as CSV"),
    ],
)
def test_bad_files_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code = main(["inspect", f"data.source={path}", "data.target=a"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert expected in err[-1] and "Traceback" not in "\n".join(err)


def test_outputs_are_never_workbooks() -> None:
    from kennel.data.chunks import file_format

    assert file_format(Path("in.ods"), "input") == "excel"
    with pytest.raises(UserError, match="kennel writes CSV or Parquet"):
        file_format(Path("scored.xlsx"), "output")


def test_bad_prediction_inputs_are_user_errors(tmp_path: Path) -> None:
    data = DataConfig(source=str(XLSX))
    with pytest.raises(UserError, match="no sheet 'nope'"):
        open_rows(str(XLSX), data.model_copy(update={"sheet": "nope"}), 10)
    junk = tmp_path / "junk.xls"
    junk.write_bytes(b"<html>an export that is a web page</html>")
    with pytest.raises(UserError, match="junk.xls"):
        open_rows(str(junk), data, 10)
