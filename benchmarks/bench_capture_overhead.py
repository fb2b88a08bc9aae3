"""What request capture costs a served request: ``CaptureWriter.submit`` p50/p99 for 1-row and
1,000-row requests (the writer thread running, as in a server), and the background writer's
throughput in rows/s (its GIL time per row is what it takes from the scoring threads).

Frames look like MLflow's scoring app builds them (``pd.DataFrame(records)``: 20 floats and
two strings; outputs ``prediction``, ``proba_0``, ``proba_1``). A last section runs a stand-in
request loop (parse a JSON body into a frame, score it with numpy) with and without capture, so
the writer thread's share of the GIL shows as latency and rows/s. Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_capture_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import pandas as pd

from kennel.serve.capture import CaptureWriter, read_captures


def frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    records = [
        {
            **{f"f{j}": float(v) for j, v in enumerate(rng.standard_normal(20))},
            "city": "Oslo",
            "id": f"c{i}",
        }
        for i in range(rows)
    ]
    p = rng.random(rows)
    outputs = pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
    return pd.DataFrame(records), outputs


def submit_cost(rows: int, requests: int, folder: str) -> tuple[float, float]:
    """(p50, p99) in µs of submit while the writer thread works in the background."""
    inputs, outputs = frames(rows)
    times = []
    with CaptureWriter(
        location=folder, model_name="bench", model_version=1, queue_rows=10_000_000
    ) as capture:
        for n in range(requests):
            began = time.perf_counter_ns()
            capture.submit(inputs, outputs, f"r{n}")
            times.append((time.perf_counter_ns() - began) / 1000)
            if n % 50 == 0:
                time.sleep(0.0005)  # requests arrive over time, not in one burst
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def throughput(rows: int, requests: int, folder: str) -> float:
    """Rows/s of the writer thread: queue everything first, then time start() to close()."""
    pairs = [frames(rows, seed=n % 16) for n in range(min(requests, 16))]
    capture = CaptureWriter(
        location=folder,
        model_name="bench",
        model_version=1,
        queue_rows=10_000_000,
        max_file_rows=100_000,
        start=False,
    )
    for n in range(requests):
        capture.submit(*pairs[n % len(pairs)], f"r{n}")
    began = time.perf_counter()
    capture.close(timeout=600)
    elapsed = time.perf_counter() - began
    written = capture.stats()["rows_written"]
    assert written == rows * requests == len(read_captures(folder)), capture.stats()
    return written / elapsed


def serve_loop(rows: int, requests: int, folder: str | None) -> tuple[float, float]:
    """(p50 latency µs, rows/s) of a stand-in scoring loop, capturing into ``folder`` if given."""
    inputs, _ = frames(rows)
    body = json.dumps({"dataframe_records": inputs.to_dict(orient="records")})
    weights = np.random.default_rng(1).standard_normal(20)
    columns = [f"f{j}" for j in range(20)]
    capture = (
        CaptureWriter(location=folder, model_name="bench", model_version=1, queue_rows=10**7)
        if folder
        else None
    )
    times = []
    began = time.perf_counter()
    for n in range(requests):
        start = time.perf_counter_ns()
        frame = pd.DataFrame(json.loads(body)["dataframe_records"])
        p = 1 / (1 + np.exp(-frame[columns].to_numpy() @ weights))
        outputs = pd.DataFrame(
            {"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p}
        )
        if capture is not None:
            capture.submit(frame, outputs, f"r{n}")
        times.append((time.perf_counter_ns() - start) / 1000)
    elapsed = time.perf_counter() - began
    if capture is not None:
        capture.close()
    return statistics.median(times), rows * requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    quick = parser.parse_args().quick
    print(f"{'case':<34}{'p50 µs':>10}{'p99 µs':>10}")
    for rows, requests in ((1, 2_000 if quick else 20_000), (1_000, 200 if quick else 1_000)):
        with tempfile.TemporaryDirectory() as folder:
            p50, p99 = submit_cost(rows, requests, folder)
        print(f"{f'submit, {rows:,}-row request':<34}{p50:>10.1f}{p99:>10.1f}")
    print(f"\n{'background writer':<34}{'rows/s':>12}{'µs/request':>12}")
    for rows, requests in ((1, 5_000 if quick else 20_000), (1_000, 50 if quick else 200)):
        with tempfile.TemporaryDirectory() as folder:
            rate = throughput(rows, requests, folder)
        print(f"{f'{rows:,}-row requests':<34}{rate:>12,.0f}{rows / rate * 1e6:>12.1f}")
    print(f"\n{'stand-in request loop':<34}{'p50 µs':>10}{'rows/s':>12}")
    for rows, requests in ((1, 2_000 if quick else 10_000), (1_000, 100 if quick else 500)):
        for label, capture in (("without capture", False), ("with capture", True)):
            with tempfile.TemporaryDirectory() as folder:
                p50, rate = serve_loop(rows, requests, folder if capture else None)
            print(f"{f'{rows:,}-row, {label}':<34}{p50:>10.1f}{rate:>12,.0f}")


if __name__ == "__main__":
    main()
