"""What ``kennel serve`` runs: MLflow's own scoring app behind a request guard.

The app is exactly the one ``mlflow models serve`` runs (``scoring_server.init`` of the
pyfunc model: the same routes, request formats, schema enforcement and answers). The guard
in front of it refuses, with 413 and a JSON error in MLflow's format, what MLflow's app
would otherwise accept and work through:

* a body larger than ``KENNEL_SERVE_MAX_BYTES`` (from ``Content-Length`` before anything is
  read, else while the body streams in, so a huge upload is cut off early);
* a request naming more than ``KENNEL_SERVE_MAX_COLUMNS`` columns (``dataframe_split``,
  ``dataframe_records``, ``inputs``/``instances`` and a CSV header). MLflow drops columns its
  signature does not name, so without this 10,000 junk columns are parsed into a frame and
  thrown away on every request.

A ``text/csv`` body within the limits is read by the guard and handed to the app as the
same rows in a JSON ``dataframe_split`` request (:mod:`kennel.serve.csv_requests`: MLflow's
own CSV reader refuses every model with an ``Any`` column, and kennel declares integer,
boolean, category and date columns ``Any``); a body that is not CSV is a one-line 400.

A 400 of the app (a request the model cannot take) goes back with a one-line message
(:mod:`kennel.serve.answers`); every other answer is MLflow's, byte for byte.

Every answer to ``/invocations`` carries an ``X-Request-Id`` header (the client's own, else a
new one), so a client can send the label of a scored row later. With capture on
(``KENNEL_SERVE_CAPTURE``), every scored row, its outputs and that id are recorded off the
request path (:mod:`kennel.serve.capture`); ``GET /capture`` answers the writer's counters,
and the queue is written out when the server shuts down (SIGTERM included).

uvicorn starts it with ``--factory kennel.serve.app:create_app``; the settings come from
the environment (each worker process builds its own app).
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kennel import collector
from kennel.serve.csv_requests import BadCsv, as_json_request, convertible, csv_to_split

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Environment of the server process (set by ``kennel serve``).
MODEL_ENV = "KENNEL_SERVE_MODEL"
MAX_BYTES_ENV = "KENNEL_SERVE_MAX_BYTES"
MAX_COLUMNS_ENV = "KENNEL_SERVE_MAX_COLUMNS"
#: JSON: the capture settings and what is served (see :func:`capture_from_environment`).
CAPTURE_ENV = "KENNEL_SERVE_CAPTURE"
#: The request being scored (the id the answer's ``X-Request-Id`` header carries).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("kennel_request_id", default="")
REQUEST_ID_HEADER = b"x-request-id"

DEFAULT_MAX_MB = 32
DEFAULT_MAX_COLUMNS = 1024

#: Only POSTs to these paths carry data.
GUARDED_PATHS = frozenset({"/invocations"})


class RequestGuard:
    """ASGI middleware: 413 for bodies over ``max_bytes`` or requests over ``max_columns``.

    Everything else (other paths, other methods, bodies within the limits) goes to ``app``
    untouched: the guarded body is replayed to it as one message. The one change: a CSV body
    goes as the same rows in JSON (``text_columns``, the signature's ``string`` columns, read
    as text; :mod:`kennel.serve.csv_requests`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        max_columns: int,
        capture: Any = None,
        text_columns: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_columns = max_columns
        self.capture = capture
        self.text_columns = text_columns
        #: A refused body is read (and dropped) up to this many bytes before the answer.
        self.drain_limit = 8 * max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan" and self.capture is not None:
            await self.app(scope, self._closing_capture(receive), send)
            return
        if kind == "http" and scope.get("method") == "GET" and scope.get("path") == "/capture":
            await _json_answer(send, 200 if self.capture else 404, self._capture_status())
            return
        if (
            kind != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in GUARDED_PATHS
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id", "").strip()[:200] or uuid.uuid4().hex
        REQUEST_ID.set(request_id)
        send = _with_request_id(send, request_id)
        body = await self._read_body(headers, receive, send)
        if body is None:
            return
        columns = count_columns(body, headers.get("content-type", ""), self.max_columns)
        if columns > self.max_columns:
            await _refuse(
                send,
                f"the request names {columns if columns < _MANY else 'more than ' + str(_MANY)} "
                f"columns; this server accepts at most {self.max_columns} "
                "(kennel serve --max-columns)",
            )
            return
        if convertible(headers.get("content-type", "")):
            try:
                body = await asyncio.to_thread(csv_to_split, body, self.text_columns)
            except BadCsv as exc:
                await _json_answer(send, 400, exc.answer())
                return
            scope = as_json_request(scope, len(body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # http.disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, readable_refusals(send, body))

    async def _read_body(
        self, headers: dict[str, str], receive: Receive, send: Send
    ) -> bytes | None:
        """The whole body, or None when it was refused (413, answered here) or the client
        went away."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            # A client waiting for "100 Continue" (curl does, for big bodies) has sent
            # nothing yet: answer now. Others are sending: read to the end first (nothing
            # kept), else they meet a reset connection instead of the 413.
            waiting = "100-continue" in headers.get("expect", "").lower()
            if not waiting and not await _discard(receive, self.drain_limit):
                return None
            await _refuse(send, self._too_large(int(declared)))
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if size > self.max_bytes:
                chunks.clear()
                if more and not await _discard(receive, self.drain_limit - size):
                    return None
                await _refuse(send, self._too_large(size, streamed=True))
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _closing_capture(self, receive: Receive) -> Receive:
        """The server's lifespan messages; on shutdown (uvicorn's answer to SIGTERM) every
        captured row still queued is written before the app is told."""
        capture = self.capture

        async def lifespan() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                await asyncio.to_thread(capture.close, 60.0)
                counts = capture.stats()
                logger.info(
                    "capture: %d row(s) written to %s in %d file(s); %d dropped, %d sampled out",
                    counts["rows_written"],
                    capture.location,
                    counts["files_written"],
                    counts["rows_dropped"],
                    counts["rows_sampled_out"],
                )
            return message

        return lifespan

    def _capture_status(self) -> dict[str, Any]:
        if self.capture is None:
            return {"capture": "off (kennel serve --capture PATH turns it on)"}
        return {"capture": str(self.capture.location), **self.capture.stats()}

    def _too_large(self, size: int, *, streamed: bool = False) -> str:
        got = f"more than {self.max_bytes:,}" if streamed else f"{size:,}"
        return (
            f"the request body is {got} bytes; this server accepts at most "
            f"{self.max_bytes:,} bytes (kennel serve --max-request-mb)"
        )


#: Counting stops here: the answer is "too many" long before.
_MANY = 1_000_000


def count_columns(body: bytes, content_type: str, limit: int) -> int:
    """How many distinct columns a request names (0 when it cannot tell: MLflow's app then
    answers a malformed body itself, with its own 400).

    A body too short to name more than ``limit`` columns is not parsed at all: each column
    takes at least two bytes (a value and a separator), so typical requests cost nothing.
    """
    if len(body) <= 2 * limit:
        return 0
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "text/csv":
        return _csv_columns(body)
    if kind != "application/json":
        return 0
    named = _split_columns_named_first(body)
    if named is not None:
        return named
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return 0
    if not isinstance(payload, dict):
        return 0
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if not isinstance(split, dict):
            return 0
        if isinstance(split.get("columns"), list):
            return len(split["columns"])
        data = split.get("data")
        if isinstance(data, list) and data and isinstance(data[0], list):
            return max(len(row) for row in data if isinstance(row, list))
        return 0
    for key in ("dataframe_records", "inputs", "instances"):
        if key in payload:
            return _record_columns(payload[key], limit)
    return 0


#: A ``dataframe_split`` request's opening, up to its first key.
_SPLIT_OPENING = re.compile(rb'\A\s*\{\s*"dataframe_split"\s*:\s*\{\s*')
#: The keys that may come before ``columns`` (MLflow's clients and ``DataFrame.to_dict``
#: put ``index`` first; ``to_json(orient="split")`` puts ``columns`` first).
_SPLIT_KEY = re.compile(r'"(index|columns|dtype)"\s*:\s*')
_COMMA = re.compile(r"\s*,\s*")


def _split_columns_named_first(body: bytes) -> int | None:
    """How many column names a ``dataframe_split`` request gives, read without parsing its
    rows when the names come before them (1,000 rows of 20 numbers: ~4 ms for the whole body,
    which MLflow's app then parses again). None: parse it all (rows first, another shape,
    or a key written twice or escaped: the last copy of a key is the one MLflow reads)."""
    opening = _SPLIT_OPENING.match(body)
    if (
        opening is None
        or body.count(b'"columns"') != 1
        or body.count(b'"dataframe_split"') != 1
        or b"\\u" in body  # an escaped key: "col\u0075mns" reads "columns"
    ):
        return None
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    decoder, at = json.JSONDecoder(), opening.end()
    for _ in range(3):
        key = _SPLIT_KEY.match(text, at)
        if key is None:
            return None
        try:
            value, at = decoder.raw_decode(text, key.end())
        except ValueError:
            return None
        if key.group(1) == "columns":
            return len(value) if isinstance(value, list) else None
        comma = _COMMA.match(text, at)
        if comma is None:
            return None
        at = comma.end()
    return None


def _record_columns(value: object, limit: int) -> int:
    """Columns of ``dataframe_records`` / ``inputs`` / ``instances``: the union of the keys
    of its records (a dict of columns counts its keys)."""
    if isinstance(value, dict):
        return len(value)
    if not isinstance(value, list):
        return 0
    names: set[str] = set()
    for record in value:
        if isinstance(record, dict):
            names.update(record)
        elif isinstance(record, list):
            names.update(str(i) for i in range(len(record)))
        if len(names) > limit:
            break
    return len(names)


def _csv_columns(body: bytes) -> int:
    end = body.find(b"\n")
    header = body if end < 0 else body[:end]
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    row = next(csv.reader(io.StringIO(text)), [])
    return len(row)


async def _discard(receive: Receive, limit: int) -> bool:
    """Read the rest of a refused body without keeping it. False when the client went away
    (nothing left to answer). Past ``limit`` bytes it stops: the answer goes out at once and
    the connection is closed behind it."""
    size = 0
    while size <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return True


def _with_request_id(send: Send, request_id: str) -> Send:
    """``send`` adding the request's id to the answer's headers."""

    async def answer(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER
            ]
            message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, request_id.encode())]}
        await send(message)

    return answer


async def _json_answer(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def readable_refusals(send: Send, request: bytes = b"") -> Send:
    """``send`` for the scoring app's answer to ``request``: a 400 goes out with a one-line
    message (:func:`kennel.serve.answers.rewrite`); every other answer passes untouched."""
    from kennel.serve.answers import rewrite

    held: Message | None = None
    chunks: list[bytes] = []

    async def answer(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message.get("status") == 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = rewrite(b"".join(chunks), request)
        headers = [(k, v) for k, v in held.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return answer


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"error_code": "REQUEST_TOO_LARGE", "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def limits_from_environment(environ: MutableMapping[str, str] | None = None) -> tuple[int, int]:
    """(max bytes, max columns) from the server's environment, with the defaults."""
    env = os.environ if environ is None else environ
    max_bytes = int(env.get(MAX_BYTES_ENV) or DEFAULT_MAX_MB * 1024 * 1024)
    max_columns = int(env.get(MAX_COLUMNS_ENV) or DEFAULT_MAX_COLUMNS)
    return max_bytes, max_columns


def _log_to_stderr() -> None:
    """kennel's lines in the server process (uvicorn configures only its own loggers)."""
    from kennel.logging_setup import DATE_FORMAT, FORMAT

    kennel = logging.getLogger("kennel")
    if not kennel.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        kennel.addHandler(handler)
        kennel.setLevel(logging.INFO)


class _NotAboutInstances(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "If using `instances` as input key" not in record.getMessage()


class CapturingModel:
    """The loaded pyfunc as MLflow's scoring app sees it, handing every scored frame and its
    answer to the capture writer (which never blocks or raises)."""

    def __init__(self, model: Any, capture: Any) -> None:
        self._model = model
        self._capture = capture

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        output = self._model.predict(data, params=params)
        import pandas as pd

        if isinstance(data, pd.DataFrame) and isinstance(output, pd.DataFrame):
            self._capture.submit(data, output, REQUEST_ID.get())
        return output


def capture_from_environment(environ: MutableMapping[str, str] | None = None) -> Any:
    """The capture writer ``KENNEL_SERVE_CAPTURE`` describes (JSON: ``path`` and the other
    ``capture.*`` settings, plus ``model_name``, ``model_version``, ``model_alias`` and
    ``workers``), or None when capture is off."""
    env = os.environ if environ is None else environ
    if not env.get(CAPTURE_ENV):
        return None
    from kennel.serve.capture import STATUS_FILE, CaptureWriter

    settings = json.loads(env[CAPTURE_ENV])
    status = STATUS_FILE
    if int(settings.get("workers", 1)) > 1:  # one status file per worker process
        status = STATUS_FILE.replace(".json", f"-{os.getpid()}.json")
    return CaptureWriter(
        location=settings["path"],
        model_name=settings["model_name"],
        model_version=settings["model_version"],
        alias=settings.get("model_alias"),
        exclude=settings.get("exclude", []),
        sample=float(settings.get("sample", 1.0)),
        retention_days=settings.get("retention_days"),
        file_mode=int(str(settings.get("file_mode", "600")), 8),
        max_file_rows=int(settings.get("max_file_rows", 100_000)),
        max_file_seconds=float(settings.get("max_file_seconds", 60.0)),
        queue_rows=int(settings.get("queue_rows", 50_000)),
        status_file=status,
    )


def create_app() -> ASGIApp:
    """uvicorn's factory: load the model named by ``KENNEL_SERVE_MODEL`` (a local folder or
    any model URI), build MLflow's scoring app for it (its predictions captured when
    ``KENNEL_SERVE_CAPTURE`` says so) and put the guard in front."""
    collector.own_process()  # a server worker of kennel's (see kennel.collector)
    # MLflow's app, its web framework and the model's libraries load; then one collection
    with collector.paused(collect=True):
        from mlflow.pyfunc import scoring_server

        from kennel.serve.csv_requests import text_columns

        # MLflow logs this after any refused request, though only requests keyed "instances"
        # are converted as it describes; kennel's one-line 400 says what was wrong instead.
        logging.getLogger("mlflow.pyfunc.scoring_server").addFilter(_NotAboutInstances())
        _log_to_stderr()
        model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_ENV])
        max_bytes, max_columns = limits_from_environment()
        capture = capture_from_environment()
        served = CapturingModel(model, capture) if capture is not None else model
        return RequestGuard(
            scoring_server.init(served),
            max_bytes=max_bytes,
            max_columns=max_columns,
            capture=capture,
            text_columns=text_columns(model.metadata.get_input_schema()),
        )
