"""Issue 8.4: ``mlflow models serve --env-manager local`` of a kennel ``cat`` model vs the
same booster logged with ``mlflow.lightgbm.log_model`` (the native flavor).

One server at a time (1 worker each) on 127.0.0.1; a keep-alive ``http.client`` load
generator sends a bounded number of requests: single-row requests (p50/p99 latency) and
1,000-row requests (rows/s).

    .venv/bin/python benchmarks/bench_serve.py [--quick]
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

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
    cmd = [
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
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    while time.perf_counter() - started < 180:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {uri} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc, port, time.perf_counter() - started
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start in 180 s")


def stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own session (uvicorn workers)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def load(port: int, bodies: list[bytes]) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    times = []
    for body in bodies:
        t = time.perf_counter()
        conn.request("POST", "/invocations", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        times.append(time.perf_counter() - t)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    conn.close()
    return times


def body(frame) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    ).encode()


def measure(port: int, frame, n_single: int, n_batch: int) -> dict:
    singles = [body(frame.iloc[[i]]) for i in range(n_single)]
    batches = [body(frame.iloc[i * 1000 : (i + 1) * 1000]) for i in range(n_batch)]
    load(port, singles[:20] + batches[:2])  # warm-up
    single = sorted(load(port, singles))
    batch = load(port, batches)
    return {
        "p50_ms": round(statistics.median(single) * 1000, 2),
        "p99_ms": round(single[min(len(single) - 1, int(0.99 * len(single)))] * 1000, 2),
        "rows_per_s_1000": round(1000 * len(batch) / sum(batch)),
        "n_single": n_single,
        "n_batch": n_batch,
    }


def main(argv: list[str] | None = None) -> dict:
    args = common_args(argv)
    n_single, n_batch = (100, 10) if args.quick else (400, 30)
    data = dataset(100_000 if not args.quick else 20_000)
    import pandas as pd

    frame = pd.read_parquet(data).drop(columns=["target"]).iloc[: n_batch * 1000]
    servers = {}
    with temp_store() as (folder, uri), tempfile.TemporaryDirectory() as out:
        env = child_env({"MLFLOW_TRACKING_URI": uri})
        params = {"num_leaves": 31, "learning_rate": 0.1, "n_estimators": 200}
        cmd = kennel_cmd(
            "train", "-c", "configs/cat.yaml", "--output-dir", out, *kennel_overrides(data, params)
        )
        kennel_uri = run_child("kennel train", cmd, env=env).check().json_line()["model_uri"]
        native = run_child(
            "native log_model", [PYTHON, "-c", NATIVE, kennel_uri, str(data)], env=env, cwd=folder
        ).check()
        native_uri = native.stdout.strip().splitlines()[-1]
        for name, model_uri in (("kennel pyfunc", kennel_uri), ("native lightgbm", native_uri)):
            proc, port, startup = serve(model_uri, env)
            try:
                servers[name] = {
                    "startup_s": round(startup, 2),
                    **measure(port, frame, n_single, n_batch),
                }
            finally:
                stop(proc)
    k, n = servers["kennel pyfunc"], servers["native lightgbm"]
    result = {
        "servers": servers,
        "ratio_p50_kennel_native": ratio(k["p50_ms"], n["p50_ms"]),
        "ratio_rows_per_s_kennel_native": ratio(k["rows_per_s_1000"], n["rows_per_s_1000"]),
    }
    print(
        table(
            ["server", "start s", "p50 ms", "p99 ms", "rows/s (1000-row)"],
            [
                [name, s["startup_s"], s["p50_ms"], s["p99_ms"], s["rows_per_s_1000"]]
                for name, s in servers.items()
            ],
        )
    )
    print(
        f"kennel/native p50 = {result['ratio_p50_kennel_native']}, rows/s = "
        f"{result['ratio_rows_per_s_kennel_native']}"
    )
    write_result("quick_serve" if args.quick else "serve", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
