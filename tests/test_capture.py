"""Request capture: rows round trip in Parquet, off the request path, with nothing lost on close."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kennel.serve.capture import (
    STATUS_FILE,
    CaptureWriter,
    capture_files,
    iter_captures,
    read_captures,
)


def request(rows: int, start: int = 0, **extra: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(inputs, outputs) of one scored request of ``rows`` rows numbered from ``start``."""
    ids = list(range(start, start + rows))
    inputs = pd.DataFrame({"i": ids, "age": [30.5 + i for i in ids], "city": ["Oslo"] * rows})
    for name, value in extra.items():
        inputs[name] = value
    outputs = pd.DataFrame(
        {"prediction": [i % 2 for i in ids], "proba_0": [0.25] * rows, "proba_1": [0.75] * rows}
    )
    return inputs, outputs


def writer(location: object, **options: object) -> CaptureWriter:
    settings = {"model_name": "dogs", "model_version": 3, "alias": "production"}
    settings.update({"flush_seconds": 0.05, **options})
    return CaptureWriter(location=location, **settings)


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("capture-*.parquet"))


def test_rows_and_provenance_round_trip(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    with writer(tmp_path) as capture:
        assert capture.submit(*request(2), "req-a")
        inputs, outputs = request(3, start=2, prediction=[7, 8, 9])  # an input named like an output
        assert capture.submit(inputs, outputs, "req-b")
    after = datetime.now(UTC)
    rows = read_captures(tmp_path)
    assert list(rows.columns) == [
        *["i", "age", "city", "input_prediction", "prediction", "proba_0", "proba_1"],
        *["request_id", "request_row", "scored_at", "model_name", "model_version", "model_alias"],
    ]
    assert rows["i"].tolist() == [0, 1, 2, 3, 4]
    assert rows["age"].tolist() == [30.5, 31.5, 32.5, 33.5, 34.5]
    assert rows["city"].tolist() == ["Oslo"] * 5
    assert rows["input_prediction"].tolist()[2:] == [7, 8, 9]
    assert rows["input_prediction"].isna().tolist()[:2] == [True, True]
    assert rows["prediction"].tolist() == [0, 1, 0, 1, 0]
    assert rows["proba_1"].tolist() == [0.75] * 5
    assert rows["request_id"].tolist() == ["req-a"] * 2 + ["req-b"] * 3
    assert rows["request_row"].tolist() == [0, 1, 0, 1, 2]
    assert rows["model_name"].unique().tolist() == ["dogs"]
    assert rows["model_version"].unique().tolist() == ["3"]
    assert rows["model_alias"].unique().tolist() == ["production"]
    assert str(rows["scored_at"].dt.tz) == "UTC"
    assert rows["scored_at"].between(before, after).all()
    meta = json.loads(pq.read_schema(files(tmp_path)[0]).metadata[b"kennel.capture"])
    assert meta["outputs"] == ["prediction", "proba_0", "proba_1"]
    assert meta["renamed"] == {"prediction": "input_prediction"}
    stats = capture.stats()
    assert stats["rows_captured"] == stats["rows_written"] == 5
    assert stats["files_written"] == 1 and stats["write_errors"] == 0
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert status["rows_written"] == 5 and status["model_version"] == "3"


def test_excluded_columns_are_never_written(tmp_path: Path) -> None:
    with writer(tmp_path, exclude=["ssn", "proba_0"]) as capture:
        capture.submit(*request(4, ssn=["123-45-6789"] * 4), "r1")
    for path in files(tmp_path):
        names = pq.read_schema(path).names
        assert "ssn" not in names and "proba_0" not in names
        assert b"123-45-6789" not in path.read_bytes()
    rows = read_captures(tmp_path)
    assert "ssn" not in rows.columns and len(rows) == 4


def test_sampling_keeps_about_the_fraction_and_one_keeps_all(tmp_path: Path) -> None:
    sampled = writer(tmp_path / "sampled", sample=0.3, seed=7, start=False)
    kept = writer(tmp_path / "all", sample=1.0, start=False)
    inputs, outputs = request(1)
    for n in range(2000):
        sampled.submit(inputs, outputs, f"r{n}")
        kept.submit(inputs, outputs, f"r{n}")
    stats = sampled.stats()
    assert stats["rows_captured"] + stats["rows_sampled_out"] == 2000
    assert 0.25 < stats["rows_captured"] / 2000 < 0.35
    assert kept.stats()["rows_captured"] == 2000 and kept.stats()["rows_sampled_out"] == 0
    sampled.close()
    kept.close()
    assert len(read_captures(tmp_path / "sampled")) == stats["rows_captured"]
    assert len(read_captures(tmp_path / "all")) == 2000


def test_a_full_queue_drops_and_counts_without_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture = writer(tmp_path, queue_rows=10, start=False)  # a writer that does not drain
    slowest = 0.0
    with caplog.at_level(logging.WARNING, logger="kennel.serve.capture"):
        results = []
        for n in range(8):
            began = time.perf_counter()
            results.append(capture.submit(*request(3, start=3 * n), f"r{n}"))
            slowest = max(slowest, time.perf_counter() - began)
    assert results == [True, True, True] + [False] * 5
    assert slowest < 0.5  # a blocking put would never return
    stats = capture.stats()
    assert stats["rows_captured"] == 9 and stats["rows_dropped"] == 15
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1  # once per drop_log_every drops, not once per request
    assert capture.close()
    assert read_captures(tmp_path)["i"].tolist() == list(range(9))
    assert capture.stats()["rows_written"] == 9


def test_close_writes_everything_accepted_from_many_threads(tmp_path: Path) -> None:
    capture = writer(tmp_path, max_file_seconds=3600, flush_seconds=0.01)

    def client(t: int) -> None:
        for n in range(50):
            assert capture.submit(*request(1 + n % 3, start=1000 * t + 10 * n), f"t{t}-{n}")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert capture.close(timeout=20)
    rows = read_captures(tmp_path)
    expected = sum(1 + n % 3 for n in range(50)) * 4
    assert len(rows) == expected == capture.stats()["rows_written"]
    assert rows["request_id"].nunique() == 200
    assert capture.stats()["rows_queued"] == 0
    assert not capture.submit(*request(1), "late")  # closed: dropped and counted
    assert capture.stats()["rows_dropped"] == 1
    assert capture.close()  # again: nothing to do


def test_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with writer(tmp_path / "captures") as capture:
            capture.submit(*request(2), "r")
        with writer(tmp_path / "group", file_mode=0o640) as capture:
            os.umask(0o077)  # the mode asked for wins over the umask
            capture.submit(*request(2), "r")
    finally:
        os.umask(old)
    for path in [*files(tmp_path / "captures"), tmp_path / "captures" / STATUS_FILE]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "captures").stat().st_mode) == 0o700
    assert [stat.S_IMODE(p.stat().st_mode) for p in files(tmp_path / "group")] == [0o640]
    assert not list((tmp_path / "captures").glob(".*"))  # no temporary file left behind


def test_an_fsspec_url_works() -> None:
    url = f"memory://kennel-capture-{uuid.uuid4().hex}/captures"
    fs = fsspec.filesystem("memory")
    try:
        with writer(url) as capture:
            capture.submit(*request(3), "r1")
            capture.submit(*request(2, start=3), "r2")
        assert len(capture_files(url)) == 1
        assert read_captures(url)["i"].tolist() == [0, 1, 2, 3, 4]
        status = json.loads(fs.cat_file(url.removeprefix("memory://") + "/" + STATUS_FILE))
        assert status["rows_written"] == 5
    finally:
        fs.rm(url.removeprefix("memory://").split("/")[0], recursive=True)


def test_rolling_by_rows_writes_several_files_read_back_in_order(tmp_path: Path) -> None:
    capture = writer(tmp_path, max_file_rows=10, start=False)
    for n in range(7):
        capture.submit(*request(5, start=5 * n), f"r{n}")
    capture.close()
    names = files(tmp_path)
    assert [pq.read_metadata(p).num_rows for p in names] == [10, 10, 10, 5]
    assert read_captures(tmp_path)["i"].tolist() == list(range(35))
    chunks = [t.num_rows for t in iter_captures(tmp_path, columns=["i", "request_id", "nope"])]
    assert chunks == [10, 10, 10, 5]
    assert read_captures(tmp_path, columns=["i"]).columns.tolist() == ["i"]


def test_rolling_by_time_writes_several_files(tmp_path: Path) -> None:
    with writer(tmp_path, max_file_seconds=0.15, flush_seconds=0.02) as capture:
        for n in range(3):
            capture.submit(*request(2, start=2 * n), f"r{n}")
            time.sleep(0.4)
    assert len(files(tmp_path)) >= 2  # 3 unless the writer thread was starved for 0.4 s
    assert read_captures(tmp_path)["request_id"].tolist() == ["r0", "r0", "r1", "r1", "r2", "r2"]


def test_requests_with_different_columns_and_dtypes_share_a_file(tmp_path: Path) -> None:
    requests = [
        pd.DataFrame({"x": [1, 2], "n": [None, None], "s": ["a", "b"]}),  # ints, null-only
        pd.DataFrame({"x": [2.5], "n": [1.5], "s": [7], "only": [True]}),  # floats, int text
        pd.DataFrame({"x": [3], "s": [None], "mixed": [1]}),
        pd.DataFrame({"x": [4, 5], "mixed": [2, "two"]}),  # numbers and text in one column
    ]
    with writer(tmp_path) as capture:
        for n, inputs in enumerate(requests):
            assert capture.submit(inputs, pd.DataFrame({"prediction": [0] * len(inputs)}), f"r{n}")
    assert len(files(tmp_path)) == 1 and capture.stats()["write_errors"] == 0
    rows = read_captures(tmp_path)
    assert rows["x"].tolist() == [1.0, 2.0, 2.5, 3.0, 4.0, 5.0]
    assert rows["n"].tolist()[2] == 1.5 and rows["n"].isna().sum() == 5
    assert rows["s"].tolist()[:3] == ["a", "b", "7"] and rows["s"].isna().sum() == 3
    assert rows["only"].tolist()[2] is True and rows["only"].isna().sum() == 5
    assert rows["mixed"].tolist()[3:] == ["1", "2", "two"]
    assert rows["request_id"].tolist() == ["r0", "r0", "r1", "r2", "r3", "r3"]


def test_files_with_different_schemas_are_read_together(tmp_path: Path) -> None:
    with writer(tmp_path, max_file_rows=1) as capture:
        capture.submit(pd.DataFrame({"s": [1]}), pd.DataFrame({"prediction": [0]}), "r0")
        capture.submit(pd.DataFrame({"s": ["b"]}), pd.DataFrame({"prediction": [1.5]}), "r1")
        capture.submit(pd.DataFrame({"t": [None]}), pd.DataFrame({"prediction": [1]}), "r2")
    assert len(files(tmp_path)) == 3
    rows = read_captures(tmp_path)
    assert rows["s"].tolist()[:2] == ["1", "b"]
    assert rows["prediction"].tolist() == [0.0, 1.5, 1.0]


def test_retention_deletes_old_capture_files_only(tmp_path: Path) -> None:
    old = "capture-20000101T000000.000Z-1-abcdef-000001.parquet"
    now = datetime.now(UTC)
    recent = f"capture-{now:%Y%m%dT%H%M%S}.000Z-1-abcdef-000002.parquet"
    for name in (old, f".{old}.tmp", recent, "old.parquet", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    capture = writer(tmp_path, retention_days=7)
    capture.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([STATUS_FILE, recent, "old.parquet", "notes.txt"])
    assert capture_files(tmp_path) == [str(tmp_path / recent)]
    with writer(tmp_path) as keep_all:  # retention_days=None keeps everything
        keep_all.submit(*request(1), "r")
    assert (tmp_path / recent).exists() and len(files(tmp_path)) == 2


def test_submit_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="kennel.serve.capture"):
        capture = writer(blocked)
        assert capture.submit(*request(3), "r1")  # accepted; the write fails later
        assert not capture.submit(None, None, "bad")  # type: ignore[arg-type]
        assert not capture.submit(*request(2)[:1], pd.DataFrame({"prediction": [1]}), "r2")
        assert capture.close(timeout=10)
    stats = capture.stats()
    assert stats["submit_errors"] == 2
    assert stats["write_errors"] >= 1 and stats["rows_failed"] == 3 and stats["rows_written"] == 0
    assert any(r.levelno >= logging.ERROR for r in caplog.records)
    assert blocked.read_text() == "not a folder"


def test_settings_are_checked(tmp_path: Path) -> None:
    for bad in ({"sample": 0}, {"sample": 1.5}, {"queue_rows": 0}, {"retention_days": -1}):
        with pytest.raises(ValueError):
            writer(tmp_path, start=False, **bad)
    assert read_captures(tmp_path / "nothing-here").empty


def test_close_runs_at_exit_when_the_owner_forgot(tmp_path: Path) -> None:
    script = (
        "import pandas as pd\n"
        "from kennel.serve.capture import CaptureWriter\n"
        f"w = CaptureWriter(location={str(tmp_path)!r}, model_name='m', model_version=1)\n"
        "w.submit(pd.DataFrame({'x': [1, 2]}), pd.DataFrame({'prediction': [0, 1]}), 'r')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert read_captures(tmp_path)["x"].tolist() == [1, 2]


def test_close_inside_the_request_path_lock_does_not_deadlock(tmp_path: Path) -> None:
    capture = writer(tmp_path)
    capture.submit(*request(2), "r")
    with capture._lock:  # as if SIGTERM's handler ran close() in the middle of a submit
        assert capture.close(timeout=10)
    assert len(read_captures(tmp_path)) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_rows_only(tmp_path: Path) -> None:
    capture = writer(tmp_path, status_file="_capture_status-{pid}.json")
    capture.submit(*request(2), "parent")
    pid = os.fork()
    if pid == 0:  # the child: its copy starts empty, with its own thread and file names
        code = 1
        try:
            capture.submit(*request(1, start=100), "child")
            code = 0 if capture.close(timeout=20) and capture.stats()["rows_written"] == 1 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert capture.close()
    rows = read_captures(tmp_path)
    assert sorted(rows["request_id"]) == ["child", "parent", "parent"]
    assert len(files(tmp_path)) == 2
    statuses = [json.loads(p.read_text()) for p in tmp_path.glob("_capture_status-*.json")]
    assert sorted(s["rows_written"] for s in statuses) == [1, 2]
