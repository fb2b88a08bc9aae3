"""Logging: one set-up call, timestamped lines to stderr and a file, secrets masked."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from kennel.logging_setup import log_file_of, setup_logging

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|DEBUG|WARNING) +[\w.]+: .+$")


def test_lines_have_time_level_name_and_go_to_file(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = tmp_path / "run" / "kennel.log"
    setup_logging("INFO", log, stream=stream)
    logging.getLogger("kennel.test").info("hello %s", "world")
    logging.getLogger("kennel.test").debug("hidden")
    for handler in logging.getLogger().handlers:
        handler.flush()
    for text in (stream.getvalue(), log.read_text()):
        lines = text.strip().splitlines()
        assert len(lines) == 1 and LINE.match(lines[0]), text
        assert "kennel.test: hello world" in lines[0]
    assert log_file_of() == log


def test_noisy_libraries_quiet_unless_debug() -> None:
    setup_logging("INFO", stream=io.StringIO())
    assert logging.getLogger("alembic").level == logging.WARNING
    assert logging.getLogger("tensorflow").level == logging.WARNING
    setup_logging("DEBUG", stream=io.StringIO())
    assert logging.getLogger("alembic").level == logging.NOTSET


def test_secrets_are_masked_in_messages_and_tracebacks(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = tmp_path / "kennel.log"
    setup_logging("INFO", log, secrets=["p4ssw0rd-xyz"], stream=stream)
    logger = logging.getLogger("kennel.test")
    logger.info("connecting with %s", "postgresql://u:p4ssw0rd-xyz@h/db")
    try:
        raise ValueError("bad password p4ssw0rd-xyz")
    except ValueError:
        logger.exception("failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    for text in (stream.getvalue(), log.read_text()):
        assert "p4ssw0rd-xyz" not in text
        assert "u:**********@h" in text


def test_setup_twice_replaces_handlers(tmp_path: Path) -> None:
    setup_logging("INFO", stream=io.StringIO())
    setup_logging("INFO", tmp_path / "a.log", stream=io.StringIO())
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_kennel_handler", False)]
    assert len(ours) == 2


def test_native_capture_keeps_kennel_lines_on_the_terminal() -> None:
    """While TensorFlow's C++ start-up lines are captured (file descriptor 2 points at a
    file), a line kennel logs from another thread still reaches the terminal at its level,
    and the native line is logged at DEBUG only (hidden at INFO)."""
    import subprocess
    import sys

    script = """
import logging, os, threading
from kennel.logging_setup import native_stderr_to_debug, setup_logging
setup_logging("INFO")
log = logging.getLogger("kennel.data.test")
with native_stderr_to_debug(log):
    os.write(2, b"native start-up line\\n")
    worker = threading.Thread(target=log.info, args=("loaded 5 rows",))
    worker.start()
    worker.join()
    log.warning("column 'id' dropped")
log.info("after the block")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "loaded 5 rows",
        "column 'id' dropped",
        "after the block",
    ], done.stderr
    assert "INFO     kennel.data.test: loaded 5 rows" in lines[0]
    assert "WARNING  kennel.data.test" in lines[1]
