"""Serving: real ``mlflow models serve`` processes for the cat and the dog versions (and one
through ``kennel serve --env dev``) answer every request format with exactly what the
family's ModelAPI predicts locally, refuse bad requests with a 4xx and keep answering; the
pyfunc loads where the source tree is not on ``sys.path``.

The servers are started once per module, in parallel, on free ports of 127.0.0.1, with a
bounded wait on ``/ping``, and are always killed (their whole process group) in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import site
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.serve.server import free_port, serve_command, serve_env, wait_for_ping
from tests.conftest import PYTHON, ROOT, TEST_CONFIGS

pytestmark = pytest.mark.slow

PING_TIMEOUT = 240.0
PROBA_TOLERANCE = 1e-6


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _clean_env(uri: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KENNEL_", "MLFLOW_"))}
    base["_KENNEL_DOTENV_LOADED"] = "1"  # never read a developer's .env
    return serve_env(uri, base)


def _start(name: str, command: list[str], env: dict[str, str], folder: Path, port: int) -> Server:
    log = folder / f"{name}.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=folder,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown kills it all
        )
    return Server(name, process, f"http://127.0.0.1:{port}", log)


def _stop(server: Server) -> None:
    if server.process.poll() is not None:
        return
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=15)


def _wait_all(started: dict[str, Server]) -> None:
    """Wait until every server answers ``/ping``; a server that does not fails the test
    with its log's tail."""
    for server in started.values():
        try:
            wait_for_ping(server.url, timeout=PING_TIMEOUT, process=server.process)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{server.name} server did not start: {exc}\n{server.tail()}")


@pytest.fixture(scope="module")
def servers(trained, shared_store, tmp_path_factory) -> Iterator[dict[str, Server]]:
    """cat and dog versions with ``mlflow models serve``; the dev alias with ``kennel serve``."""
    folder = tmp_path_factory.mktemp("servers")
    env = _clean_env(shared_store.uri)
    started: dict[str, Server] = {}
    try:
        for family in ("cat", "dog"):
            port = free_port()
            uri = f"models:/breast-cancer/{trained[family]['registered_version']}"
            command = serve_command(uri, port=port, host="127.0.0.1", workers=1)
            started[family] = _start(family, command, env, folder, port)
        port = free_port()
        command = [
            PYTHON,
            str(ROOT / "run.py"),
            "serve",
            "-c",
            str(TEST_CONFIGS / "tiny_cat.yaml"),
            "--env",
            "dev",
            "-p",
            str(port),
        ]
        started["kennel"] = _start("kennel", command, env, folder, port)
        _wait_all(started)
        yield started
    finally:
        for server in started.values():
            _stop(server)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """Raw breast-cancer rows without the target: both classes, shuffled."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns=["target"])
    return frame.sample(n=120, random_state=7).reset_index(drop=True)


def _local_model_dir(client, version: int) -> str:
    """The registered version's model folder in the (local) artifact store. MLflow 3 keeps
    it with the logged model; ``download_artifacts(tracking_uri=...)`` would resolve a
    ``runs:/`` or ``models:/`` URI against the global tracking URI, not this store."""
    from mlflow.artifacts import download_artifacts

    source = client.get_model_version("breast-cancer", str(version)).source
    model_id = source.removeprefix("models:/")
    return download_artifacts(artifact_uri=client.get_logged_model(model_id).artifact_location)


@pytest.fixture(scope="module")
def local_apis(trained, shared_store) -> dict[str, object]:
    """Each family's ModelAPI, from the logged model loaded in this process (no server)."""
    import mlflow.pyfunc

    client = shared_store.client()
    apis = {}
    for family in ("cat", "dog"):
        path = _local_model_dir(client, trained[family]["registered_version"])
        apis[family] = mlflow.pyfunc.load_model(path).unwrap_python_model().api
    return apis


def _post(url: str, body: bytes | str, content_type: str, request_id: str = "") -> tuple[int, dict]:
    """(status, JSON answer) of ``POST /invocations`` (a body that is not JSON as ``message``)."""
    data = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": content_type, **({"X-Request-Id": request_id} if request_id else {})}
    request = urllib.request.Request(
        url + "/invocations", data=data, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            payload = {"message": text}
        return exc.code, payload


def _bodies(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """The request formats ``mlflow models serve`` documents for tabular input."""
    split = json.loads(frame.to_json(orient="split", index=False, double_precision=15))
    return {
        "dataframe_split": (
            json.dumps(
                {"dataframe_split": {"columns": list(frame.columns), "data": split["data"]}}
            ),
            "application/json",
        ),
        "dataframe_records": (
            json.dumps({"dataframe_records": frame.to_dict(orient="records")}),
            "application/json",
        ),
        "csv": (frame.to_csv(index=False), "text/csv"),
    }


def _assert_same(payload: dict, expected: pd.DataFrame) -> None:
    got = pd.DataFrame(payload["predictions"])
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    assert got["prediction"].astype(str).tolist() == expected["prediction"].astype(str).tolist()
    proba = [c for c in expected.columns if c.startswith("proba_")]
    assert proba, "a classifier returns proba_<class> columns"
    np.testing.assert_allclose(
        got[proba].to_numpy(dtype=float),
        expected[proba].to_numpy(dtype=float),
        rtol=0,
        atol=PROBA_TOLERANCE,
    )


@pytest.mark.parametrize("family", ["cat", "dog"])
@pytest.mark.parametrize("request_format", ["dataframe_split", "dataframe_records", "csv"])
def test_served_predictions_equal_model_api(
    servers, local_apis, rows, family: str, request_format: str
) -> None:
    expected = local_apis[family].predict(rows)
    body, content_type = _bodies(rows)[request_format]
    status, payload = _post(servers[family].url, body, content_type)
    assert status == 200, payload
    _assert_same(payload, expected)


def test_columns_in_any_order_and_a_single_row(servers, local_apis, rows) -> None:
    shuffled = rows[list(reversed(rows.columns))].head(1)
    body, content_type = _bodies(shuffled)["dataframe_records"]
    status, payload = _post(servers["cat"].url, body, content_type)
    assert status == 200, payload
    _assert_same(payload, local_apis["cat"].predict(shuffled))


def _bad_requests(rows: pd.DataFrame) -> dict[str, tuple[str, str]]:
    missing = rows.head(3).drop(columns=["mean radius"])
    wrong = rows.head(3).astype(object)
    wrong.loc[1, "mean texture"] = "not a number"
    return {
        "missing column": (
            json.dumps({"dataframe_records": missing.to_dict(orient="records")}),
            "application/json",
        ),
        "wrong type": (
            json.dumps({"dataframe_records": wrong.to_dict(orient="records")}),
            "application/json",
        ),
        "invalid json": ('{"dataframe_records": [{"mean radius": 1.0,', "application/json"),
    }


@pytest.mark.parametrize("family", ["cat", "dog"])
@pytest.mark.parametrize("case", ["missing column", "wrong type", "invalid json"])
def test_bad_request_is_a_4xx_and_the_server_keeps_answering(
    servers, local_apis, rows, family: str, case: str
) -> None:
    body, content_type = _bad_requests(rows)[case]
    status, payload = _post(servers[family].url, body, content_type)
    assert 400 <= status < 500, (status, payload)
    message = payload.get("message", "")
    assert message.strip(), payload
    if case == "missing column":
        assert "mean radius" in message
    elif case == "wrong type":
        assert "mean texture" in message
    else:
        assert "json" in message.lower()
    # still alive and still right
    good, content_type = _bodies(rows.head(5))["dataframe_split"]
    status, payload = _post(servers[family].url, good, content_type)
    assert status == 200, payload
    _assert_same(payload, local_apis[family].predict(rows.head(5)))


@pytest.fixture
def dev_api(shared_store, trained, local_apis):
    """The ModelAPI of the version ``kennel serve --env dev`` serves."""
    holder = shared_store.client().get_model_version_by_alias("breast-cancer", "dev")
    return next(local_apis[f] for f in ("cat", "dog") if trained[f]["run_id"] == holder.run_id)


def _wide(rows: pd.DataFrame, extra: int) -> pd.DataFrame:
    junk = pd.DataFrame(0.0, index=rows.index, columns=[f"junk{i}" for i in range(extra)])
    return pd.concat([rows, junk], axis=1)


@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "csv"])
def test_kennel_serve_refuses_10k_columns_with_413(servers, dev_api, rows, fmt) -> None:
    """MLflow's own app would answer 200 (it drops columns the signature does not name);
    ``kennel serve`` refuses the request before parsing it into a frame."""
    body, content_type = _bodies(_wide(rows.head(3), 10_000))[fmt]
    status, payload = _post(servers["kennel"].url, body, content_type)
    assert status == 413, payload
    assert payload["error_code"] == "REQUEST_TOO_LARGE"
    assert "10030 columns" in payload["message"]
    assert "--max-columns" in payload["message"]
    _assert_still_answers(servers["kennel"].url, dev_api, rows)


def test_kennel_serve_refuses_a_50mb_body_with_413(servers, dev_api, rows) -> None:
    """A well-formed 50 MB request (about 300k rows): refused from its Content-Length; the
    client still gets the 413 (the body is read and dropped, nothing kept)."""
    frame = pd.concat([rows] * 2_500, ignore_index=True)
    body, content_type = _bodies(frame)["dataframe_split"]
    assert len(body) > 50_000_000
    status, payload = _post(servers["kennel"].url, body, content_type)
    assert status == 413, payload
    assert f"{len(body):,} bytes" in payload["message"]
    assert "--max-request-mb" in payload["message"]
    _assert_still_answers(servers["kennel"].url, dev_api, rows)


def test_kennel_serve_refuses_a_body_streamed_without_a_length(servers, dev_api, rows) -> None:
    """Chunked upload (no Content-Length): counted while it streams in, refused past 32 MB."""
    import http.client

    chunk = b"x" * (1 << 20)
    port = int(servers["kennel"].url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST",
            "/invocations",
            body=iter([chunk] * 40),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        payload = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413, payload
    assert "more than 33,554,432 bytes" in payload["message"]
    _assert_still_answers(servers["kennel"].url, dev_api, rows)


def _assert_still_answers(url: str, api, rows: pd.DataFrame) -> None:
    good, content_type = _bodies(rows.head(5))["dataframe_split"]
    status, payload = _post(url, good, content_type)
    assert status == 200, payload
    _assert_same(payload, api.predict(rows.head(5)))


def test_kennel_serve_serves_the_dev_alias(servers, shared_store, trained, local_apis, rows):
    holder = shared_store.client().get_model_version_by_alias("breast-cancer", "dev")
    family = next(f for f in ("cat", "dog") if trained[f]["run_id"] == holder.run_id)
    body, content_type = _bodies(rows)["csv"]
    status, payload = _post(servers["kennel"].url, body, content_type)
    assert status == 200, payload
    _assert_same(payload, local_apis[family].predict(rows))


def test_kennel_serve_refusal_is_one_line(servers, dev_api, rows) -> None:
    """A request missing most columns: MLflow's app would answer ~2 KB (the frame and the
    schema); kennel serve's message is one line naming the first columns and counting the
    rest, and MLflow's reason (without the rows) is in ``detail``."""
    kept = rows.head(2)[["mean radius", "mean texture"]]
    body = json.dumps({"dataframe_split": kept.to_dict(orient="split")})
    status, payload = _post(servers["kennel"].url, body, "application/json")
    assert status == 400, payload
    message = payload["message"]
    assert message == "missing columns: mean perimeter, mean area, mean smoothness (and 25 more)"
    assert payload["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")  # MLflow's own
    assert "missing inputs" in payload["detail"] and "Failed to predict data" not in str(payload)
    wrong = rows.head(3).astype(object)
    wrong.loc[wrong.index[1], "mean texture"] = "abc"
    body = json.dumps({"dataframe_split": wrong.to_dict(orient="split")})
    status, payload = _post(servers["kennel"].url, body, "application/json")
    assert status == 400
    assert payload["message"] == "column 'mean texture' holds 'abc', which is not a number"
    status, payload = _post(servers["kennel"].url, '{"dataframe_split": ', "application/json")
    assert status == 400 and payload["message"].startswith("the request body is not valid JSON: ")
    assert "Input:" not in payload["detail"] and "dataframe_split" not in payload["detail"]
    _assert_still_answers(servers["kennel"].url, dev_api, rows)


def test_kennel_serve_print_command(shared_store, trained) -> None:
    from tests.conftest import run_cli

    result = run_cli(
        "serve",
        "-c",
        str(TEST_CONFIGS / "tiny_cat.yaml"),
        "--env",
        "dev",
        "-p",
        "5123",
        "-w",
        "2",
        "--timeout",
        "30",
        "--print-command",
        env=shared_store.env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1]
    version = shared_store.client().get_model_version_by_alias("breast-cancer", "dev").version
    assert f"KENNEL_SERVE_MODEL=models:/breast-cancer/{version} " in command
    assert "-m uvicorn --factory kennel.serve.app:create_app" in command
    for part in (
        "--port 5123",
        "--host 127.0.0.1",
        "--workers 2",
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT=30",
        f"KENNEL_SERVE_MAX_BYTES={32 * 1024 * 1024}",
        "KENNEL_SERVE_MAX_COLUMNS=1024",
        f"MLFLOW_TRACKING_URI={shared_store.uri}",
    ):
        assert part in command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--env", "prod"],
            "unknown environment 'prod'; expected one of: dev, staging, production",
        ),
        (["--env", "dev", "--model-name", "no-such-model"], "registered model 'no-such-model'"),
        (["--env", "dev", "-p", "70000"], "--port 70000"),
    ],
)
def test_kennel_serve_user_errors(shared_store, trained, args, message) -> None:
    from tests.conftest import run_cli

    result = run_cli(
        "serve", "-c", str(TEST_CONFIGS / "tiny_cat.yaml"), *args, env=shared_store.env, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_kennel_serve_alias_without_a_holder(store) -> None:
    """A fresh store (never the shared one) with a registered model that has no aliases."""
    from tests.conftest import run_cli

    store.client().create_registered_model("empty-model")
    result = run_cli(
        "serve", "--env", "staging", "--model-name", "empty-model", env=store.env, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "no version of 'empty-model' holds alias 'staging'" in result.stderr
    assert "Traceback" not in result.stderr


def test_pyfunc_loads_without_the_source_tree(trained, shared_store, local_apis, rows, tmp_path):
    """``python -I -S`` with only the venv's site-packages (no editable-install .pth, so no
    ``src`` folder): kennel must come from the model's own ``code/`` folder."""
    site_packages = [p for p in site.getsitepackages() if Path(p).is_dir()]  # the parent's venv
    rows.to_csv(tmp_path / "rows.csv", index=False)
    uris = {f: f"models:/breast-cancer/{trained[f]['registered_version']}" for f in ("cat", "dog")}
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path[:0] = {site_packages!r}
        import pandas as pd
        import mlflow.pyfunc
        source = {str(ROOT / "src")!r}
        assert not any(p and p.startswith(source) for p in sys.path), sys.path
        rows = pd.read_csv("rows.csv")
        out = {{}}
        for family, uri in {uris!r}.items():
            model = mlflow.pyfunc.load_model(uri)
            model.predict(rows).to_csv(family + ".csv", index=False)
            import kennel
            out[family] = kennel.__file__
        json.dump(out, open("where.json", "w"))
        """
    )
    env = {
        "MLFLOW_TRACKING_URI": shared_store.uri,
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", str(tmp_path)),
    }
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    where = json.loads((tmp_path / "where.json").read_text())
    for family in ("cat", "dog"):
        location = Path(where[family]).resolve()
        assert location.parent.name == "kennel" and location.parent.parent.name == "code"
        assert not location.is_relative_to(ROOT)
        got = pd.read_csv(tmp_path / f"{family}.csv")
        expected = local_apis[family].predict(rows)
        _assert_same({"predictions": got.to_dict(orient="records")}, expected)


def _sources(folder: Path) -> dict[Path, bytes]:
    return {
        f.relative_to(folder): f.read_bytes()
        for f in folder.rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
    }


@pytest.mark.parametrize("linking", [True, False])
def test_the_code_copy_is_the_package_without_caches(tmp_path, monkeypatch, linking) -> None:
    """The kennel folder a model ships: every source file, no ``__pycache__``; hard links
    where the file system allows them, else copies; removing it leaves the sources alone."""
    import shutil

    import kennel
    from kennel.serve import pyfunc

    source = Path(kennel.__file__).resolve().parent
    before = _sources(source)
    if not linking:

        def refused(src: str, dst: str) -> None:
            raise PermissionError(1, "Operation not permitted", src)

        monkeypatch.setattr(pyfunc.os, "link", refused)
    copy = pyfunc._code_copy(tmp_path)
    assert copy == tmp_path / "kennel"
    assert not [p for p in copy.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]
    assert _sources(copy) == before and len(before) > 100
    same_device = os.stat(tmp_path).st_dev == os.stat(source).st_dev
    inodes = {(copy / f).stat().st_ino == (source / f).stat().st_ino for f in before}
    assert inodes == {linking and same_device}
    shutil.rmtree(copy)
    assert _sources(source) == before


LOAD_CLIENTS = 32
LOAD_SECONDS = 30.0


def test_kennel_serve_under_load_answers_every_request(
    shared_store, trained, rows, tmp_path
) -> None:
    """32 clients for 30 s against ``kennel serve -w 2``: zero failed requests; p50/p99
    are printed (and written beside the test's files), never asserted: speed belongs in
    ``benchmarks/``."""
    import http.client
    import threading

    port = free_port()
    command = [PYTHON, str(ROOT / "run.py"), "serve", "-c", str(TEST_CONFIGS / "tiny_cat.yaml")]
    command += ["--env", "dev", "-p", str(port), "-w", "2"]
    server = _start("load", command, _clean_env(shared_store.uri), tmp_path, port)
    try:
        wait_for_ping(server.url, timeout=PING_TIMEOUT, process=server.process)
        body, content_type = _bodies(rows.head(5))["dataframe_split"]
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + LOAD_SECONDS

        def client() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    connection.request("POST", "/invocations", body, {"Content-Type": content_type})
                    response = connection.getresponse()
                    payload = response.read()
                    ok = response.status == 200 and b"predictions" in payload
                    problem = None if ok else f"{response.status}: {payload[:200]!r}"
                except (OSError, http.client.HTTPException) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                with lock:
                    if problem:
                        failures.append(problem)
                    else:
                        latencies.append(time.perf_counter() - started)
            connection.close()

        threads = [threading.Thread(target=client) for _ in range(LOAD_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=LOAD_SECONDS + 120)
        assert not failures, f"{len(failures)} failed requests, e.g. {failures[:3]}"
        assert latencies and server.process.poll() is None
        ordered = sorted(latencies)
        report = {
            "clients": LOAD_CLIENTS,
            "seconds": LOAD_SECONDS,
            "requests": len(ordered),
            "failed": 0,
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
            "p99_ms": round(1000 * ordered[int(len(ordered) * 0.99) - 1], 1),
            "requests_per_s": round(len(ordered) / LOAD_SECONDS, 1),
        }
        (tmp_path / "load.json").write_text(json.dumps(report))
        print(f"\nkennel serve -w 2 under load: {report}")
    finally:
        _stop(server)
