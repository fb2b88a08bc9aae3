"""Issue 8.4: ``mlflow models serve --env-manager local`` of a kennel ``cat`` model vs the
same booster logged with ``mlflow.lightgbm.log_model`` (the native flavor).

Both servers up at once (1 worker each) on 127.0.0.1; a keep-alive ``http.client`` load
generator sends a bounded number of requests, each to one server then the other, the order
flipping each time, so drift in the machine's load hits both alike: single-row requests
(p50/p99 latency) and 1,000-row requests (rows/s).

Issue 22, request capture: ``kennel serve --env production`` of the same model with
``--capture <temporary folder>`` and without, both running at once (1 worker each); every
request goes to one then the other, the order flipping each time (A B, B A, ...), so drift in
the machine's load hits both alike: p50 of 1-row requests (difference, ms) and rows/s of
1,000-row requests (ratio), plus both over 6 consecutive slices of the run to show the spread. ``GET /capture`` is read at the end, and the rows in the capture files are
counted after the server has stopped (it writes what it holds on shutdown).

    .venv/bin/python benchmarks/bench_serve.py [--quick]
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import (
    PYTHON,
    child_env,
    common_args,
    dataset,
    kennel_cmd,
    ratio,
    run_child,
    table,
    temp_store,
    write_result,
)
from bench_cat_train import kennel_overrides

MODEL_NAME = "bench-model"  # registry.model_name in kennel_overrides
#: 1,000-row requests per server in the capture comparison (full size).
CAPTURE_BATCHES = 60

NATIVE = """
import sys, mlflow, pandas as pd
m = mlflow.pyfunc.load_model(sys.argv[1])
booster = m.unwrap_python_model().api.model.booster
example = pd.read_parquet(sys.argv[2]).drop(columns=["target"]).head(3)
mlflow.set_experiment("bench-native")
with mlflow.start_run():
    info = mlflow.lightgbm.log_model(booster, name="model", input_example=example)
print(info.model_uri)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(uri: str, env: dict[str, str]) -> tuple[subprocess.Popen, int, float]:
    port = free_port()
    return start_server(mlflow_serve_cmd(uri, port), port, env, uri)


def start_server(
    cmd: list[str], port: int, env: dict[str, str], what: str
) -> tuple[subprocess.Popen, int, float]:
    """Start ``cmd`` in its own session; wait until ``/ping`` answers on ``port``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    while time.perf_counter() - started < 180:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {what} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc, port, time.perf_counter() - started
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError("server did not start in 180 s")


def mlflow_serve_cmd(uri: str, port: int) -> list[str]:
    return [
        os.path.join(os.path.dirname(PYTHON), "mlflow"),
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]


def kennel_server(
    capture: Path | None, env: dict[str, str], name: str
) -> tuple[subprocess.Popen, int, float]:
    port = free_port()
    return start_server(kennel_serve_cmd(port, capture), port, env, f"kennel serve ({name})")


def kennel_serve_cmd(port: int, capture: Path | None) -> list[str]:
    """``kennel serve`` of the bench model's ``production`` version (1 worker)."""
    return kennel_cmd(
        "serve",
        "--env",
        "production",
        "--model-name",
        MODEL_NAME,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
        *(["--capture", str(capture)] if capture is not None else []),
    )


def stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own session (uvicorn workers)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return json.loads(data) if response.status == 200 else {"status": response.status}


def body(frame) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    ).encode()


class Client:
    """A keep-alive connection to one server; ``post`` returns the seconds a request took
    (``answered``: the size of the last answer, bytes)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.answered = 0

    def post(self, data: bytes) -> float:
        t = time.perf_counter()
        self.conn.request(
            "POST", "/invocations", body=data, headers={"Content-Type": "application/json"}
        )
        response = self.conn.getresponse()
        answer = response.read()
        took = time.perf_counter() - t
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {answer[:300]!r}")
        self.answered = len(answer)
        return took

    def close(self) -> None:
        self.conn.close()


def measure_interleaved(
    ports: dict[str, int], frame, n_single: int, n_batch: int, segments: int
) -> dict[str, dict]:
    """Every request goes to each server in turn, the order flipping each time (A B, B A,
    ...), so a burst of load from elsewhere hits both alike: 1-row p50 and p99, and rows/s of
    the 1,000-row requests (their total time; also 1,000 / their median time). ``segments``:
    the same figures over consecutive slices of the run, to show how much they vary."""
    singles = [body(frame.iloc[[i]]) for i in range(n_single)]
    batches = [body(frame.iloc[i * 1000 : (i + 1) * 1000]) for i in range(n_batch)]
    if len(frame) < n_batch * 1000:
        raise RuntimeError(f"{len(frame)} rows: too few for {n_batch} requests of 1,000 rows")
    names = list(ports)
    clients = {name: Client(port) for name, port in ports.items()}
    single: dict[str, list[float]] = {name: [] for name in names}
    batch: dict[str, list[float]] = {name: [] for name in names}
    try:
        for name in names:  # warm-up
            for data in singles[:20] + batches[:2]:
                clients[name].post(data)
        for requests, times in ((singles, single), (batches, batch)):
            for i, data in enumerate(requests):
                for name in names if i % 2 == 0 else names[::-1]:
                    times[name].append(clients[name].post(data))
    finally:
        for client in clients.values():
            client.close()
    result: dict = {}
    for name in names:
        ordered = sorted(single[name])
        result[name] = {
            "p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
            "rows_per_s_1000": round(1000 * len(batch[name]) / sum(batch[name])),
            "rows_per_s_1000_median": round(1000 / statistics.median(batch[name])),
            "n_single": len(ordered),
            "n_batch": len(batch[name]),
            "answer_bytes_1000": clients[name].answered,  # the last 1,000-row answer
        }
    off, on = names
    per_segment: dict[str, list[float]] = {"p50_delta_ms": [], "ratio_rows_per_s": []}
    for k in range(segments):
        cut = slice(k * n_single // segments, (k + 1) * n_single // segments)
        p50 = {n: statistics.median(single[n][cut]) * 1000 for n in names}
        per_segment["p50_delta_ms"].append(round(p50[on] - p50[off], 3))
        cut = slice(k * n_batch // segments, (k + 1) * n_batch // segments)
        rate = {n: len(batch[n][cut]) / sum(batch[n][cut]) for n in names}
        per_segment["ratio_rows_per_s"].append(round(rate[on] / rate[off], 3))
    result["per_segment"] = per_segment
    result["rows_sent"] = 20 + 2000 + n_single + 1000 * n_batch  # per server, warm-up included
    return result


@contextlib.contextmanager
def servers_up(
    starts: dict[str, Callable[[], tuple[subprocess.Popen, int, float]]],
) -> Iterator[tuple[dict[str, int], dict[str, float]]]:
    """Start every server (``name -> start``, one after the other) and keep them all up;
    their ports and start-up seconds. All are stopped on the way out, even when one of them
    failed to start."""
    procs: list[subprocess.Popen] = []
    ports: dict[str, int] = {}
    startup: dict[str, float] = {}
    try:
        for name, start in starts.items():
            proc, ports[name], startup[name] = start()
            procs.append(proc)
        yield ports, startup
    finally:
        for proc in procs:
            stop(proc)


def native_against_kennel(
    uris: dict[str, str], env: dict[str, str], frame, n_single: int, n_batch: int, segments: int
) -> dict[str, dict]:
    """``mlflow models serve`` of both models, up at once, measured interleaved (the native
    flavor first in each pair's names, so ``per_segment`` holds kennel - native)."""
    starts = {name: functools.partial(serve, uri, env) for name, uri in uris.items()}
    with servers_up(starts) as (ports, startup):
        measured = measure_interleaved(ports, frame, n_single, n_batch, segments)
    measured.pop("rows_sent")
    return {
        **{name: {"startup_s": round(startup[name], 2), **measured[name]} for name in uris},
        "per_segment": measured["per_segment"],
    }


def capture_overhead(env: dict[str, str], frame, quick: bool) -> dict:
    """``kennel serve`` with and without ``--capture``, both up at once, interleaved."""
    import pyarrow.parquet as pq

    n_single, n_batch, slices = (200, 10, 4) if quick else (1200, CAPTURE_BATCHES, 6)
    with tempfile.TemporaryDirectory(prefix="kennel-bench-capture-") as tmp:
        folder = Path(tmp) / "capture"
        starts = {
            name: functools.partial(kennel_server, capture, env, name)
            for name, capture in (("without capture", None), ("with capture", folder))
        }
        with servers_up(starts) as (ports, startup):
            measured = measure_interleaved(ports, frame, n_single, n_batch, slices)
            status = get_json(ports["with capture"], "/capture")
        files = sorted(folder.glob("capture-*.parquet"))
        on_disk = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    rows_sent = measured.pop("rows_sent")
    segments = measured.pop("per_segment")
    for name in measured:
        measured[name]["startup_s"] = round(startup[name], 2)
    off, on = measured["without capture"], measured["with capture"]
    result = {
        "servers": measured,
        "segments": slices,
        "p50_delta_ms": round(on["p50_ms"] - off["p50_ms"], 3),
        "ratio_rows_per_s": ratio(on["rows_per_s_1000"], off["rows_per_s_1000"]),
        "ratio_rows_per_s_median": ratio(
            on["rows_per_s_1000_median"], off["rows_per_s_1000_median"]
        ),
        "segment_p50_deltas_ms": segments["p50_delta_ms"],
        "segment_ratios_rows_per_s": segments["ratio_rows_per_s"],
        "rows_sent": rows_sent,
        "capture_status": status,
        "rows_captured": status.get("rows_captured"),
        "rows_dropped": status.get("rows_dropped"),
        "rows_in_files_after_stop": on_disk,
        "capture_files": len(files),
    }
    print(
        table(
            ["kennel serve", "start s", "p50 ms", "p99 ms", "rows/s (1000-row)"],
            [
                [name, s["startup_s"], s["p50_ms"], s["p99_ms"], s["rows_per_s_1000"]]
                for name, s in measured.items()
            ],
        )
    )
    deltas, ratios = segments["p50_delta_ms"], segments["ratio_rows_per_s"]
    print(
        f"capture: p50 {result['p50_delta_ms']:+.3f} ms, rows/s x {result['ratio_rows_per_s']} "
        f"(by median request time x {result['ratio_rows_per_s_median']}; over {slices} slices "
        f"of the run: p50 {min(deltas):+.2f}..{max(deltas):+.2f} ms, rows/s x "
        f"{min(ratios)}..{max(ratios)})\n"
        f"GET /capture: {status.get('rows_captured')} rows captured, "
        f"{status.get('rows_dropped')} dropped, {status.get('rows_written')} written so far; "
        f"{on_disk} rows in {len(files)} file(s) after stop ({rows_sent} sent)"
    )
    return result


def main(argv: list[str] | None = None) -> dict:
    args = common_args(argv)
    n_single, n_batch, segments = (100, 10, 2) if args.quick else (400, 30, 4)
    data = dataset(100_000 if not args.quick else 20_000)
    import pandas as pd

    # Rows for every 1,000-row request of both comparisons (a short frame sends empty ones).
    frame = pd.read_parquet(data).drop(columns=["target"]).iloc[: CAPTURE_BATCHES * 1000]
    with temp_store() as (folder, uri), tempfile.TemporaryDirectory() as out:
        env = child_env({"MLFLOW_TRACKING_URI": uri})
        params = {"num_leaves": 31, "learning_rate": 0.1, "n_estimators": 200}
        cmd = kennel_cmd(
            "train",
            "-c",
            "configs/cat.yaml",
            "--output-dir",
            out,
            *kennel_overrides(data, params),
            "registry.auto_promote=production",  # kennel serve --env production below
        )
        kennel_uri = run_child("kennel train", cmd, env=env).check().json_line()["model_uri"]
        native = run_child(
            "native log_model", [PYTHON, "-c", NATIVE, kennel_uri, str(data)], env=env, cwd=folder
        ).check()
        native_uri = native.stdout.strip().splitlines()[-1]
        servers = native_against_kennel(
            {"native lightgbm": native_uri, "kennel pyfunc": kennel_uri},
            env,
            frame,
            n_single,
            n_batch,
            segments,
        )
        capture = capture_overhead(env, frame, args.quick)
    per_segment = servers.pop("per_segment")
    k, n = servers["kennel pyfunc"], servers["native lightgbm"]
    result = {
        "servers": servers,
        "segment_p50_deltas_ms": per_segment["p50_delta_ms"],
        "segment_ratios_rows_per_s": per_segment["ratio_rows_per_s"],
        "ratio_p50_kennel_native": ratio(k["p50_ms"], n["p50_ms"]),
        "ratio_rows_per_s_kennel_native": ratio(k["rows_per_s_1000"], n["rows_per_s_1000"]),
        "capture": capture,
        "capture_p50_delta_ms": capture["p50_delta_ms"],
        "capture_ratio_rows_per_s": capture["ratio_rows_per_s"],
    }
    print(
        table(
            ["server", "start s", "p50 ms", "p99 ms", "rows/s (1000-row)", "answer bytes"],
            [
                [name, s["startup_s"], s["p50_ms"], s["p99_ms"], s["rows_per_s_1000"]]
                + [s["answer_bytes_1000"]]
                for name, s in servers.items()
            ],
        )
    )
    print(
        f"kennel/native p50 = {result['ratio_p50_kennel_native']}, rows/s = "
        f"{result['ratio_rows_per_s_kennel_native']} (over {segments} slices of the run: p50 "
        f"{min(per_segment['p50_delta_ms']):+.2f}..{max(per_segment['p50_delta_ms']):+.2f} ms, "
        f"rows/s x {min(per_segment['ratio_rows_per_s'])}.."
        f"{max(per_segment['ratio_rows_per_s'])})"
    )
    write_result("quick_serve" if args.quick else "serve", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
