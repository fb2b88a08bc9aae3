"""Request capture: what the served model was asked and answered, as Parquet, off the request path.

``kennel monitor`` compares the rows a model really sees, and its answers, with its reference
profile. Recording them must not cost the request: ``submit`` only samples and appends the frames
to a bounded queue (no copy, conversion, I/O or exception); a thread does the GIL-heavy work in
batches (per flush one ``pd.concat`` and one Arrow conversion per group of same-column requests;
per roll one file). Files: ``capture-<UTC yyyymmddTHHMMSS.mmm>Z-<pid>-<token>-<seq>.parquet``,
timed by their first row so that names sort by time, pid and random token keeping workers and
hosts apart; written under a hidden temporary name (mode ``file_mode``) then renamed, or put whole
on an object store. Columns: the inputs as received (``exclude`` removed), the outputs
(``prediction``, ``proba_<class>``), ``request_id``, ``request_row`` (the row's position in
its request), ``scored_at`` (UTC, at submit),
``model_name``, ``model_version``, ``model_alias``; an input named like one of the others becomes
``input_<name>`` (an output named like provenance, ``output_<name>``), as the file's
``kennel.capture`` metadata records. Requests may differ in columns and dtypes: a missing column
is null, ints with floats are floats, a null-only column takes the others' type, and numbers mixed
with text become text, so no value is lost.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import math
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

STATUS_FILE = "_capture_status.json"
PROVENANCE = (
    "request_id",
    "request_row",
    "scored_at",
    "model_name",
    "model_version",
    "model_alias",
)
#: A capture file (or its temporary name); ``ts`` is the UTC time of its first row.
_NAME = re.compile(r"^(?P<tmp>\.?)capture-(?P<ts>\d{8}T\d{6}\.\d{3})Z-.+\.parquet(?P<t>\.tmp)?$")
#: Object stores: an object appears only once it is completely written.
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
#: A queued request: (inputs, outputs, request id, time.time() of submit, rows).
Item = tuple[Any, Any, Any, float, int]
#: A local folder or an fsspec URL (``s3://bucket/captures``, ``memory://…``).
Location = str | os.PathLike[str]


class CaptureWriter:
    """Records (inputs, outputs, request id) of scored requests in Parquet, off the request path.

    ``sample``: the fraction of requests kept, each kept or skipped whole by one draw of
    ``random.Random(seed)`` (``None``: seeded by the OS); 1.0 keeps all without drawing. Memory
    is bounded by ``queue_rows`` (rows waiting; a request that does not fit is dropped and
    counted) plus ``max_file_rows`` (converted rows of the file being filled). A file is written
    when it holds ``max_file_rows`` rows, when its first row is ``max_file_seconds`` old, and at
    :meth:`close`. Files older than ``retention_days`` (by the time in their name) are deleted at
    start and at each roll. A failed write is logged and counted; its rows are not retried.
    One writer per process: build it in the worker (after a fork, the child's copy starts empty);
    with several workers, ``status_file="_capture_status-{pid}.json"`` gives each its own.
    """

    def __init__(
        self,
        *,
        location: Location,
        model_name: str,
        model_version: str | int,
        alias: str | None = None,
        exclude: Collection[str] = (),
        sample: float = 1.0,
        seed: int | None = None,
        queue_rows: int = 50_000,
        max_file_rows: int = 100_000,
        max_file_seconds: float = 60.0,
        flush_seconds: float = 0.5,
        file_mode: int = 0o600,
        retention_days: float | None = None,
        drop_log_every: int = 1000,
        status_file: str = STATUS_FILE,
        storage_options: Mapping[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        for bad, what in (
            (not 0.0 < sample <= 1.0, f"sample {sample!r} must be in (0, 1]"),
            (min(queue_rows, max_file_rows) < 1, "queue_rows and max_file_rows must be >= 1"),
            (min(max_file_seconds, flush_seconds) <= 0, "file and flush seconds must be > 0"),
            ((retention_days or 1) <= 0, f"retention_days {retention_days!r} must be > 0"),
            (not 0 <= file_mode <= 0o777, f"file_mode {file_mode!r} is not a permission mode"),
        ):
            if bad:
                raise ValueError(what)
        self.location = os.fspath(location)
        self._fs, self._root = fsspec.core.url_to_fs(self.location, **dict(storage_options or {}))
        self._root = self._root.rstrip("/") or "/"
        self._local = isinstance(self._fs, LocalFileSystem)
        protocols = self._fs.protocol  # a name or a tuple of names
        self._atomic_put = bool(
            _ATOMIC_PUT.intersection([protocols] if isinstance(protocols, str) else protocols)
        )
        self.model = {"model_name": str(model_name), "model_version": str(model_version)}
        self.model["model_alias"] = None if alias is None else str(alias)
        self.exclude = frozenset(map(str, exclude))
        self.sample, self._seed = float(sample), seed
        self.queue_rows, self.max_file_rows = int(queue_rows), int(max_file_rows)
        self.max_file_seconds = float(max_file_seconds)
        self._tick = min(flush_seconds, max_file_seconds)
        self.file_mode, self.retention_days = file_mode, retention_days
        self.drop_log_every, self.status_file = max(1, int(drop_log_every)), status_file
        self._wake_rows = max(1, min(self.queue_rows // 2, self.max_file_rows))
        self._reset(seed)
        ref = weakref.ref(self)
        atexit.register(_close_at_exit, ref)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _forked(ref))
        if start:
            self.start()

    def _reset(self, seed: int | str | None) -> None:
        """Fresh state for this process (construction, and a child after a fork)."""
        self._pid, self._token = os.getpid(), os.urandom(3).hex()
        self._rng = random.Random(seed)
        self._lock = threading.RLock()  # re-entrant: close() may run in a signal handler
        self._wake, self._closing = threading.Event(), threading.Event()
        self._queue: collections.deque[Item] = collections.deque()
        self._thread: threading.Thread | None = None
        self._closed, self._failing, self._seq = False, False, 0
        self._pending: list[pa.Table] = []
        self._pending_rows, self._opened, self._status_at = 0, 0.0, 0.0
        self._outputs: dict[str, None] = {}
        self._renamed: dict[str, str] = {}
        self._status_stats: dict[str, int] = {}
        self._started_at = datetime.now(UTC).isoformat()
        self._last_file: str | None = None
        self._last_error: str | None = None
        # counted by submit (under the lock), then by the writer thread alone
        self._accepted = self._dropped = self._sampled_out = self._submit_errors = 0
        self._drop_events = 0
        self._taken = self._written = self._failed = self._write_errors = self._files = 0

    # ------------------------------------------------------------------ request path
    def submit(self, inputs: pd.DataFrame, outputs: pd.DataFrame, request_id: str) -> bool:
        """Queue one scored request; True when queued. Never blocks, never raises.

        The frames are kept, not copied: the caller must not change them afterwards (MLflow's
        scoring app builds new ones for every request).
        """
        try:
            if not isinstance(inputs, pd.DataFrame):
                raise TypeError(f"inputs must be a pandas DataFrame, not {type(inputs).__name__}")
            rows = len(inputs)
            if rows == 0:
                return False
            if len(outputs) != rows:
                raise ValueError(f"{rows} input rows but {len(outputs)} output rows")
            if self.sample < 1.0 and self._rng.random() >= self.sample:
                with self._lock:
                    self._sampled_out += rows
                return False
            with self._lock:
                if not self._closed and self._accepted - self._taken + rows <= self.queue_rows:
                    self._queue.append((inputs, outputs, request_id, time.time(), rows))
                    self._accepted += rows
                    if self._accepted - self._taken >= self._wake_rows:
                        self._wake.set()
                    return True
                self._dropped += rows
                self._drop_events += 1
                events = self._drop_events
            if events % self.drop_log_every == 1 or self.drop_log_every == 1:
                why = "the writer is closed" if self._closed else f"{self.queue_rows} rows queued"
                logger.warning("request capture: %d requests dropped so far (%s)", events, why)
        except Exception:
            with self._lock:
                self._submit_errors += 1
                errors = self._submit_errors
            if errors % self.drop_log_every == 1 or self.drop_log_every == 1:
                logger.warning("request capture: a request was not recorded", exc_info=True)
        return False

    def stats(self) -> dict[str, int]:
        """This process's counters (also in the status file, rewritten at each roll)."""
        return {
            "rows_captured": self._accepted,
            "rows_written": self._written,
            "rows_dropped": self._dropped,
            "rows_sampled_out": self._sampled_out,
            "rows_failed": self._failed,
            "rows_queued": self._accepted - self._taken + self._pending_rows,
            "files_written": self._files,
            "write_errors": self._write_errors,
            "submit_errors": self._submit_errors,
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the writer thread (the constructor does, unless ``start=False``)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kennel-capture", daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write everything accepted so far and stop; True when it was all handled in time.

        Idempotent, and safe from atexit or a signal handler: the writer thread never waits for
        the request path's lock. Requests submitted afterwards are dropped and counted.
        """
        with self._lock:
            self._closed = True
        self._closing.set()
        self._wake.set()
        thread = self._thread
        if thread is None:  # built with start=False: write what it holds here, no new thread
            self._thread = threading.current_thread()
            self._run()
        elif thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                left = self.stats()["rows_queued"]
                logger.warning("request capture: close timed out with %d rows unwritten", left)
                return False
        return True

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        self._guard("prepare the capture location", self._prepare)
        while True:
            closing = self._closing.is_set()  # read first: all accepted is queued by now
            if not closing:
                self._wake.wait(self._tick)
                self._wake.clear()
            self._guard("convert captured rows", self._flush)
            self._guard("write a capture file", self._roll, closing)
            if closing and not self._queue:
                break
            stale = time.monotonic() - self._status_at >= self.max_file_seconds
            if stale and self.stats() != self._status_stats:
                self._write_status()
        self._write_status()

    def _guard(self, what: str, step: Callable[..., object], *args: Any) -> bool:
        """One step of the writer thread: a failure is counted and logged (with its traceback
        the first time in a row), never raised, so that the thread lives on."""
        try:
            step(*args)
            return True
        except Exception as exc:
            self._write_errors += 1
            self._last_error = f"{what}: {type(exc).__name__}: {exc}"
            if self._failing:
                logger.warning("request capture could not %s", self._last_error)
            else:
                logger.error("request capture could not %s", what, exc_info=True)
            self._failing = True
            return False

    def _prepare(self) -> None:
        if self._local:  # the folder gets x wherever the files get r (0o600 -> 0o700)
            mode = self.file_mode | (self.file_mode & 0o444) >> 2
            os.makedirs(self._root, mode=mode, exist_ok=True)
        else:
            self._fs.makedirs(self._root, exist_ok=True)
        self._prune()

    def _flush(self) -> None:
        """Move what is queued into the current file's buffer, converted to Arrow at once."""
        items = []
        while self._queue:
            items.append(self._queue.popleft())
        if not items:
            return
        rows = sum(item[4] for item in items)
        try:
            table = self._to_table(items)
        except Exception:
            self._failed += rows
            raise
        finally:
            self._taken += rows  # only now: rows being converted still count against the bound
        if table is not None:
            if not self._pending:
                self._opened = time.monotonic()
            self._pending.append(table)
            self._pending_rows += table.num_rows

    def _to_table(self, items: list[Item]) -> pa.Table | None:
        """Requests grouped by columns, each group converted once, unified, in arrival order.
        A group that cannot be converted is counted as failed, not the whole batch."""
        groups: dict[tuple[tuple[Any, ...], ...], list[int]] = {}
        frames = [(_as_frame(item[0]), _as_frame(item[1])) for item in items]
        for i, (inputs, outputs) in enumerate(frames):
            key = (tuple(inputs.columns.tolist()), tuple(outputs.columns.tolist()))
            groups.setdefault(key, []).append(i)
        tables, order = [], []
        for members in groups.values():
            group = [(*frames[i], *items[i][2:]) for i in members]
            counts = [items[i][4] for i in members]
            if self._guard("convert captured rows", lambda g: tables.append(self._group(g)), group):
                order.append(np.repeat(np.asarray(members), counts))
            else:
                self._failed += sum(counts)
        if len(tables) <= 1:
            return tables[0] if tables else None
        table = _arrange(unify_tables(tables), self._outputs)
        return table.take(np.argsort(np.concatenate(order), kind="stable"))

    def _group(self, items: list[Item]) -> pa.Table:
        """Requests with the same columns: one concat and one conversion for each side."""
        inputs = pd.concat([item[0] for item in items], ignore_index=True)
        outputs = pd.concat([item[1] for item in items], ignore_index=True)
        kept_in = [i for i, c in enumerate(inputs.columns) if str(c) not in self.exclude]
        kept_out = [i for i, c in enumerate(outputs.columns) if str(c) not in self.exclude]
        taken = set(PROVENANCE)
        out_names = [_free(str(outputs.columns[i]), taken, "output_") for i in kept_out]
        in_names = [_free(str(inputs.columns[i]), taken, "input_") for i in kept_in]
        olds = [*(inputs.columns[i] for i in kept_in), *(outputs.columns[i] for i in kept_out)]
        for old, new in zip(olds, in_names + out_names, strict=True):
            if str(old) != new:
                self._renamed[str(old)] = new
        self._outputs.update(dict.fromkeys(out_names))
        counts = np.fromiter((item[4] for item in items), np.int64, len(items))
        stamps = np.fromiter((item[3] for item in items), np.float64, len(items))
        rows = int(counts.sum())
        arrays = [*_arrays(inputs.iloc[:, kept_in]), *_arrays(outputs.iloc[:, kept_out])]
        arrays.append(_repeat([_text(item[2]) for item in items], counts))
        # the row's position in its request: (request_id, request_row) names one scored row
        arrays.append(pa.array(np.arange(rows) - np.repeat(np.cumsum(counts) - counts, counts)))
        micros = np.repeat((stamps * 1e6).astype(np.int64), counts)
        arrays.append(pa.array(micros, pa.timestamp("us", tz="UTC")))
        arrays += [_repeat([value], [rows]) for value in self.model.values()]
        return pa.Table.from_arrays(arrays, names=[*in_names, *out_names, *PROVENANCE])

    def _roll(self, force: bool) -> None:
        """Write the full files, and the partial one once it is old enough (or on close)."""
        if not self._pending:
            return
        due = force or time.monotonic() - self._opened >= self.max_file_seconds
        if not due and self._pending_rows < self.max_file_rows:
            return
        pending, rows = self._pending, self._pending_rows
        self._pending, self._pending_rows = [], 0
        try:
            table = _arrange(unify_tables(pending), self._outputs)
        except Exception:
            self._failed += rows
            raise
        while table.num_rows >= self.max_file_rows or (due and table.num_rows):
            part, table = table.slice(0, self.max_file_rows), table.slice(self.max_file_rows)
            self._guard("write a capture file", self._write_file, part)
        self._pending = [table] if table.num_rows else []
        self._pending_rows, self._opened = table.num_rows, time.monotonic()
        self._outputs, self._renamed = {}, {}
        self._guard("delete old capture files", self._prune)
        self._write_status()

    def _write_file(self, table: pa.Table) -> None:
        first = table.column("scored_at")[0].as_py()
        self._seq += 1
        stamp = f"{first:%Y%m%dT%H%M%S}.{first.microsecond // 1000:03d}Z"
        name = f"capture-{stamp}-{self._pid}-{self._token}-{self._seq:06d}.parquet"
        meta = {"outputs": list(self._outputs), "renamed": self._renamed, **self.model}
        table = table.replace_schema_metadata({"kennel.capture": json.dumps(meta)})
        try:
            self._put(name, lambda fh: pq.write_table(table, fh, compression="zstd"))
        except Exception:
            self._failed += table.num_rows
            raise
        self._written += table.num_rows
        self._files, self._last_file, self._failing = self._files + 1, name, False
        logger.debug("request capture: %d rows written to %s", table.num_rows, name)

    def _put(self, name: str, write: Callable[[IO[bytes]], object]) -> None:
        """Write a file whole: locally under a temporary name, with ``file_mode``, then renamed."""
        path, tmp = f"{self._root}/{name}", f"{self._root}/.{name}.tmp"
        if not self._local:
            with self._fs.open(path if self._atomic_put else tmp, "wb") as fh:
                write(fh)
            if not self._atomic_put:
                self._fs.mv(tmp, path)
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.file_mode)
        try:
            os.fchmod(fd, self.file_mode)  # the umask may have cleared bits the mode asks for
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _write_status(self) -> None:
        self._status_at, self._status_stats = time.monotonic(), self.stats()
        status = dict(self._status_stats, **self.model, pid=self._pid, location=self.location)
        status.update(sample=self.sample, started_at=self._started_at, last_file=self._last_file)
        status.update(last_error=self._last_error, updated_at=datetime.now(UTC).isoformat())
        data = json.dumps(status, indent=1).encode()
        try:
            self._put(self.status_file.format(pid=self._pid), lambda fh: fh.write(data))
        except Exception as exc:  # the files' own failures are counted and logged
            logger.debug("request capture: could not write %s: %s", self.status_file, exc)

    def _prune(self) -> None:
        if self.retention_days is None:
            return
        cutoff = datetime.now(UTC) - timedelta(days=self.retention_days)
        for path in self._fs.ls(self._root, detail=False):
            found = _NAME.match(path.rstrip("/").rsplit("/", 1)[-1])
            stamp = found and datetime.strptime(found["ts"], "%Y%m%dT%H%M%S.%f")
            if stamp and stamp.replace(tzinfo=UTC) < cutoff:
                self._fs.rm_file(path)
                logger.info("request capture: %s deleted (retention_days)", path)


# ---------------------------------------------------------------------- reading


def capture_files(location: Location, **storage_options: Any) -> list[str]:
    """The capture files of a folder, oldest first (temporary and other files left out)."""
    fs, paths = _listing(location, storage_options)
    return paths if isinstance(fs, LocalFileSystem) else [fs.unstrip_protocol(p) for p in paths]


def iter_captures(
    location: Location, columns: Sequence[str] | None = None, **storage_options: Any
) -> Iterator[pa.Table]:
    """One Arrow table per capture file, oldest first: for folders too large to read whole."""
    fs, paths = _listing(location, storage_options)
    for path in paths:
        with fs.open(path, "rb") as fh:
            parquet = pq.ParquetFile(fh)
            names = parquet.schema_arrow.names
            yield parquet.read(None if columns is None else [c for c in columns if c in names])


def read_captures(
    location: Location, columns: Sequence[str] | None = None, **storage_options: Any
) -> pd.DataFrame:
    """All captured rows of a folder in one frame: files in time order, schemas unified."""
    tables = list(iter_captures(location, columns, **storage_options))
    if not tables:
        return pd.DataFrame(columns=list(columns or []))
    outputs: dict[str, None] = {}
    for table in tables:
        meta = json.loads((table.schema.metadata or {}).get(b"kennel.capture", b"{}"))
        outputs.update(dict.fromkeys(meta.get("outputs", [])))
    return _arrange(unify_tables(tables), outputs).to_pandas()


def _listing(location: Location, storage_options: Mapping[str, Any]) -> tuple[Any, list[str]]:
    fs, root = fsspec.core.url_to_fs(os.fspath(location), **storage_options)
    if not fs.isdir(root):
        return fs, []
    named = sorted((p.rstrip("/").rsplit("/", 1)[-1], p) for p in fs.ls(root, detail=False))
    return fs, [p for n, p in named if (m := _NAME.match(n)) and not m["tmp"] and not m["t"]]


def unify_tables(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate tables whose columns or types differ, without losing a value.

    Arrow's permissive promotion first (a missing column is null, int with float is float,
    null-only takes the other type); a column whose types still clash becomes text.
    """
    tables = [table.replace_schema_metadata(None) for table in tables]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except _ARROW_ERRORS:
        pass
    fields: dict[str, list[pa.Field]] = {}
    for field in (field for table in tables for field in table.schema):
        fields.setdefault(field.name, []).append(field)
    clash = {name for name, found in fields.items() if not _unifiable(found)}
    for n, table in enumerate(tables):
        for i, name in enumerate(table.column_names):
            if name in clash:
                tables[n] = table = table.set_column(i, name, _stringify(table.column(i)))
    return pa.concat_tables(tables, promote_options="permissive")


def _unifiable(fields: list[pa.Field]) -> bool:
    try:
        pa.unify_schemas([pa.schema([field]) for field in fields], promote_options="permissive")
        return True
    except _ARROW_ERRORS:
        return False


# ---------------------------------------------------------------------- helpers
def _arrays(frame: pd.DataFrame) -> list[pa.ChunkedArray | pa.Array]:
    """A frame's columns in Arrow; a column of mixed Python objects becomes text."""
    frame = frame.set_axis(range(frame.shape[1]), axis=1)  # names are set by the caller
    try:
        # one thread: no pool to start (impossible at interpreter exit, where close() may
        # run) and no core taken from the scoring threads
        return pa.Table.from_pandas(frame, preserve_index=False, nthreads=1).columns
    except _ARROW_ERRORS:
        pass
    out = []
    for i in range(frame.shape[1]):
        try:
            out.append(pa.array(frame[i], from_pandas=True))
        except _ARROW_ERRORS:
            out.append(pa.array([_text(v) for v in frame[i]], pa.large_string()))
    return out


def _repeat(values: list[str | None], counts: Any) -> pa.Array:
    """``values[i]`` repeated ``counts[i]`` times, as Arrow strings (a take, not a Python loop)."""
    indices = np.repeat(np.arange(len(values), dtype=np.int32), counts)
    return pa.array(values, pa.string()).take(pa.array(indices))


def _arrange(table: pa.Table, outputs: Collection[str]) -> pa.Table:
    """Columns in their places: inputs, then outputs, then provenance."""
    names = table.column_names
    last = [c for c in names if c in outputs] + [c for c in PROVENANCE if c in names]
    return table.select([c for c in names if c not in set(last)] + last)


def _stringify(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        return pc.cast(column, pa.large_string())
    except _ARROW_ERRORS:
        return pa.array([_text(v) for v in column.to_pylist()], pa.large_string())


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _as_frame(value: Any) -> pd.DataFrame:
    """A frame as it is; a Series, array or records (what a pyfunc may return) made one."""
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame(value)


def _free(name: str, taken: set[str], prefix: str) -> str:
    """``name``, or ``prefix + name`` (again) while it is taken; the result is then taken."""
    while name in taken:
        name = prefix + name
    taken.add(name)
    return name


def _close_at_exit(ref: weakref.ref[CaptureWriter]) -> None:
    writer = ref()
    if writer is not None and writer._pid == os.getpid():
        writer.close()


def _forked(ref: weakref.ref[CaptureWriter]) -> None:
    """In a forked child: no writer thread, and a copy of a queue the parent writes itself.
    Start empty (new token, counters, lock) and, if the parent's was running, a new thread."""
    writer = ref()
    if writer is not None:
        started, closed = writer._thread is not None, writer._closed
        seed = writer._seed
        writer._reset(None if seed is None else f"{seed}-{os.getpid()}")  # not the parent's draws
        writer._closed = closed
        if started and not closed:
            writer.start()
