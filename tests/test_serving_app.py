"""kennel serve's request guard, as an ASGI app in this process (no server, no model): what
it counts, what it refuses, and that what it lets through reaches MLflow's app unchanged.
The same guard in front of a real server is tested in ``test_serving.py``."""

from __future__ import annotations

import asyncio
import json

import pytest

from kennel.serve.app import RequestGuard, count_columns, limits_from_environment
from kennel.serve.csv_requests import csv_to_split, text_columns


def _columns(n: int) -> list[str]:
    return [f"c{i}" for i in range(n)]


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ({"dataframe_split": {"columns": _columns(3000), "data": [[0] * 3000]}}, "json", 3000),
        ({"dataframe_split": {"data": [[0] * 2000, [0] * 2500]}}, "json", 2500),
        ({"dataframe_records": [dict.fromkeys(_columns(1500), 0)]}, "json", 1500),
        (
            {
                "dataframe_records": [
                    dict.fromkeys(_columns(800), 0),
                    dict.fromkeys([f"d{i}" for i in range(800)], 0),
                ]
            },
            "json",
            1600,
        ),
        ({"inputs": dict.fromkeys(_columns(1200), [0])}, "json", 1200),
        ({"instances": [dict.fromkeys(_columns(1300), 0)]}, "json", 1300),
        (",".join(_columns(5000)) + "\n" + ",".join("0" * 5000), "csv", 5000),
        # too short to name more columns than the limit: not parsed at all
        ({"dataframe_split": {"columns": _columns(3), "data": [[1, 2, 3]]}}, "json", 0),
        # malformed bodies are MLflow's to answer (its own 400)
        ("{not json" + " " * 5000, "json", 0),
        ({"something_else": list(range(5000))}, "json", 0),
        ("x" * 5000, "text/plain", 0),
    ],
)
def test_count_columns(body: object, content_type: str, expected: int) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    kind = {"json": "application/json; charset=utf-8", "csv": "text/csv"}.get(
        content_type, content_type
    )
    assert count_columns(text.encode(), kind, limit=1024) == expected


def test_split_column_names_read_before_the_rows() -> None:
    """A dataframe_split body names its columns before its rows: only the names are read
    (the rows are MLflow's to parse), whether ``index`` comes first or not."""
    names = json.dumps(_columns(3000))
    bad_rows = "[[0, 1], [oops" + " " * 5000
    for opening in ('{"dataframe_split": {', '{ "dataframe_split" : {"index": [0, 1], '):
        body = f'{opening}"columns": {names}, "data": {bad_rows}'.encode()
        assert count_columns(body, "application/json", limit=1024) == 3000
    # "columns" written twice (a key repeated, or a value): the whole body decides, as for
    # MLflow, which reads the last copy of a repeated key.
    twice = f'{{"dataframe_split": {{"columns": ["a"], "columns": {names}, "data": []}}}}'
    assert count_columns(twice.encode(), "application/json", limit=1024) == 3000
    # the split repeated, or its key escaped: MLflow would read the second copy
    again = '{"dataframe_split": {"columns": ["a"], "data": [[1]]}, "dataframe_split": '
    again += f'{{"data": [{json.dumps([1.0] * 5000)}]}}}}'
    assert count_columns(again.encode(), "application/json", limit=1024) == 5000
    escaped = (
        f'{{"dataframe_split": {{"columns": ["a"], "data": [[1]], "col\\u0075mns": {names}}}}}'
    )
    assert json.loads(escaped)["dataframe_split"]["columns"] == _columns(3000)
    assert count_columns(escaped.encode(), "application/json", limit=1024) == 3000
    as_value = {"dataframe_split": {"columns": _columns(1100), "data": [["columns"] * 1100]}}
    assert count_columns(json.dumps(as_value).encode(), "application/json", limit=1024) == 1100
    # rows first: parsed whole
    rows_first = {"dataframe_split": {"data": [[0] * 1100], "columns": _columns(1100)}}
    assert count_columns(json.dumps(rows_first).encode(), "application/json", limit=1024) == 1100


class _App:
    """Stands for MLflow's scoring app: records the body it was given and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(guard, chunks, *, path="/invocations", method="POST", headers=()):
    """Run one request through ``guard``: returns (status, body, bytes the guard read)."""
    sent: list[dict] = []
    pending = list(chunks)
    read = 0

    async def receive():
        nonlocal read
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(guard(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, read


def test_a_request_within_the_limits_reaches_the_app_unchanged() -> None:
    app = _App()
    guard = RequestGuard(app, max_bytes=1000, max_columns=10)
    chunks = [b'{"dataframe_split": ', b'{"columns": ["a"], "data": [[1]]}}']
    status, body, _ = _call(guard, chunks, headers=[("content-type", "application/json")])
    assert (status, body) == (200, b"ok")
    assert app.bodies == [b"".join(chunks)]


def test_a_declared_length_over_the_limit_is_refused_and_the_body_dropped() -> None:
    app = _App()
    guard = RequestGuard(app, max_bytes=1000, max_columns=10)
    chunks = [b"x" * 600, b"x" * 600]
    status, body, read = _call(guard, chunks, headers=[("content-length", "1200")])
    assert status == 413
    message = json.loads(body)["message"]
    assert message.startswith("the request body is 1,200 bytes; this server accepts at most 1,000")
    assert read == 1200, "read to the end so the client gets the answer, not a reset"
    assert app.bodies == []


def test_a_client_waiting_for_continue_is_answered_before_it_sends() -> None:
    guard = RequestGuard(_App(), max_bytes=1000, max_columns=10)
    headers = [("content-length", "5000000"), ("expect", "100-continue")]
    status, _, read = _call(guard, [b"x" * 5000], headers=headers)
    assert (status, read) == (413, 0)


def test_a_streamed_body_is_cut_off_past_the_limit() -> None:
    app = _App()
    guard = RequestGuard(app, max_bytes=1000, max_columns=10)
    status, body, _ = _call(guard, [b"x" * 400] * 5)
    assert status == 413
    assert "more than 1,000 bytes" in json.loads(body)["message"]
    assert app.bodies == []


def test_too_many_columns_is_refused() -> None:
    app = _App()
    guard = RequestGuard(app, max_bytes=10**6, max_columns=10)
    payload = json.dumps({"dataframe_split": {"columns": _columns(11), "data": [[0] * 11]}})
    headers = [("content-type", "application/json")]
    status, body, _ = _call(guard, [payload.encode()], headers=headers)
    assert status == 413
    assert json.loads(body) == {
        "error_code": "REQUEST_TOO_LARGE",
        "message": "the request names 11 columns; this server accepts at most 10 "
        "(kennel serve --max-columns)",
    }
    assert app.bodies == []


@pytest.mark.parametrize(("method", "path"), [("GET", "/ping"), ("GET", "/version")])
def test_other_routes_pass_untouched(method: str, path: str) -> None:
    app = _App()
    guard = RequestGuard(app, max_bytes=1, max_columns=1)
    status, _, _ = _call(guard, [b"x" * 100], method=method, path=path)
    assert status == 200
    assert app.bodies == [b"x" * 100]


def test_limits_from_environment() -> None:
    assert limits_from_environment({}) == (32 * 1024 * 1024, 1024)
    env = {"KENNEL_SERVE_MAX_BYTES": "2048", "KENNEL_SERVE_MAX_COLUMNS": "50"}
    assert limits_from_environment(env) == (2048, 50)


def test_a_400_of_the_app_goes_back_in_one_line() -> None:
    """MLflow's refusal (the whole frame printed before the reason) becomes one line; the
    status and error code stay, the reason without the data is in ``detail``."""
    from kennel.serve.answers import one_line, rewrite

    frame = "\n".join(f"{i}  0.1  0.2  0.3" for i in range(40))
    names = [f"col {i}" for i in range(29)]
    mlflow_message = (
        f"Failed to predict data '{frame}'. \nError: Model is missing inputs {names}. "
        "Note that there were extra inputs: ['junk']."
    )
    body = json.dumps({"error_code": "BAD_REQUEST", "message": mlflow_message}).encode()
    answer = json.loads(rewrite(body))
    assert answer["error_code"] == "BAD_REQUEST"
    assert answer["message"] == (
        "missing columns: col 0, col 1, col 2 (and 26 more); columns the model does not take: junk"
    )
    assert (
        answer["detail"].startswith("Model is missing inputs")
        and "0.1  0.2" not in answer["detail"]
    )
    assert one_line(
        "Failed to predict data 'x'. \nError: Failed to convert column a to float64.\nmore"
    ) == ("Failed to convert column a to float64.")
    assert rewrite(b"not json") == b"not json"


def test_the_guard_rewrites_only_400_answers() -> None:
    from kennel.serve.app import readable_refusals

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def answer(status: int, body: bytes) -> None:
        wrapped = readable_refusals(send)
        await wrapped(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", b"9")],
            }
        )
        await wrapped({"type": "http.response.body", "body": body[:5], "more_body": True})
        await wrapped({"type": "http.response.body", "body": body[5:], "more_body": False})

    asyncio.run(answer(200, b'{"a": 1}x'))
    assert [m.get("body") for m in sent[1:]] == [b'{"a":', b" 1}x"]
    sent.clear()
    refusal = json.dumps(
        {"error_code": "BAD_REQUEST", "message": "Error: Model is missing inputs ['a']."}
    )
    asyncio.run(answer(400, refusal.encode()))
    start, body = sent
    assert start["status"] == 400 and json.loads(body["body"])["message"] == "missing columns: a"
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()


class _Recorder(_App):
    """Stands for MLflow's app, also recording the content type each request came with."""

    def __init__(self) -> None:
        super().__init__()
        self.types: list[str] = []

        self.lengths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        headers = [(k.lower(), v.decode()) for k, v in scope["headers"]]
        self.types += [v for k, v in headers if k == b"content-type"]
        self.lengths += [v for k, v in headers if k == b"content-length"]
        await super().__call__(scope, receive, send)


def test_a_csv_body_reaches_the_app_as_the_same_rows_in_json() -> None:
    """Numbers as numbers (whole numbers stay whole), empty cells and ``NA`` as null, the
    signature's text columns as text (``02134`` is not the number 2134), booleans kept."""
    app = _Recorder()
    guard = RequestGuard(app, max_bytes=10_000, max_columns=10, text_columns=frozenset({"zip"}))
    body = "n,x,zip,city,ok\n3,1.5,02134,Oslo,True\n,NA,,,\n7,2,10115,,False\n"
    headers = [("content-type", "text/csv"), ("content-length", str(len(body)))]
    status, _, _ = _call(guard, [body.encode()], headers=headers)
    assert status == 200
    assert app.types == ["application/json"] and app.lengths == [str(len(app.bodies[0]))]
    assert json.loads(app.bodies[0]) == {
        "dataframe_split": {
            "columns": ["n", "x", "zip", "city", "ok"],
            "data": [
                [3.0, 1.5, "02134", "Oslo", True],
                [None, None, None, None, None],
                [7.0, 2.0, "10115", None, False],
            ],
        }
    }
    whole = json.loads(csv_to_split(b"n,city\n3,Oslo\n4,Bergen\n"))["dataframe_split"]["data"]
    assert whole == [[3, "Oslo"], [4, "Bergen"]] and isinstance(whole[0][0], int)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"a,b\n1,2\n3,4,5\n", "not valid CSV: Error tokenizing data. C error: Expected 2 fields"),
        (b'a,b\n"1,2\n', "not valid CSV: Error tokenizing data. C error: EOF inside string"),
        (b"", "not valid CSV: No columns to parse from file"),
        ("a,b\n1,caf\u00e9\n".encode("latin-1"), "not UTF-8 text: 'utf-8' codec can't decode"),
    ],
)
def test_a_malformed_csv_is_a_one_line_400(body: bytes, message: str) -> None:
    app = _App()
    guard = RequestGuard(app, max_bytes=10_000, max_columns=10)
    headers = [("content-type", "text/csv; charset=utf-8")]
    status, answer, _ = _call(guard, [body], headers=headers)
    payload = json.loads(answer)
    assert status == 400 and payload["error_code"] == "BAD_REQUEST"
    assert payload["message"].startswith("the request body is " + message), payload
    assert "\n" not in payload["message"]
    assert app.bodies == []


@pytest.mark.parametrize("content_type", ["text/csv; charset=latin-1", "text/csv; header=present"])
def test_csv_the_app_refuses_itself_passes_untouched(content_type: str) -> None:
    """MLflow answers these with its own 415 (another charset, an unknown parameter)."""
    app = _Recorder()
    guard = RequestGuard(app, max_bytes=10_000, max_columns=10)
    _call(guard, [b"a,b\n1,2\n"], headers=[("content-type", content_type)])
    assert app.bodies == [b"a,b\n1,2\n"] and app.types == [content_type]


def test_a_wide_csv_is_refused_before_it_is_read() -> None:
    app = _App()
    guard = RequestGuard(app, max_bytes=10**6, max_columns=10)
    body = ",".join(_columns(30)) + "\n" + ",".join("0" * 30) + "\n" + "1,2\n"  # also malformed
    status, answer, _ = _call(guard, [body.encode()], headers=[("content-type", "text/csv")])
    assert status == 413 and "names 30 columns" in json.loads(answer)["message"]
    assert app.bodies == []


def test_text_columns_are_the_signatures_string_columns() -> None:
    from mlflow.types.schema import AnyType, ColSpec, Schema

    schema = Schema([ColSpec("string", "city"), ColSpec("double", "x"), ColSpec(AnyType(), "n")])
    assert text_columns(schema) == frozenset({"city"})
    assert text_columns(None) == frozenset()
