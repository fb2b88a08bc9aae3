"""kennel's work on a Dask cluster (``resource.cluster``): batch scoring of a Parquet data set.

Scoring, partition by partition on the workers:

* the client downloads the model once, checks that it loads, and sends its files (zipped,
  a few MB) to every worker once (``Client.scatter(broadcast=True)``); each worker process
  unpacks and loads the pyfunc once and keeps it for all its partitions;
* ``dask.dataframe.read_parquet`` reads the data set's files in sorted order (the order the
  in-process path reads them); each partition is scored with the same code as
  ``kennel predict`` in-process (:func:`kennel.score.chunks.score_chunk`) and written by the worker
  as ``part.<partition>.parquet``, so the output holds the input's rows in the input's order;
* the client only holds futures and row counts: its memory does not grow with the rows.

The output goes to a hidden folder beside the target and is renamed at the end: a failed run
leaves no half-written output behind.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.errors import UserError

if TYPE_CHECKING:
    from distributed import Client

    from kennel.data.sources import Source

logger = logging.getLogger(__name__)

PART_NAME = "part.{:05d}.parquet"

# ------------------------------------------------------------------ the model on workers
_WORKER_MODELS: dict[str, Any] = {}
_WORKER_LOCK = threading.Lock()


def pack_model(folder: Path) -> tuple[str, bytes]:
    """(key, zip bytes) of a local model folder: what is sent to the workers."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest()[:16], data


def worker_model(key: str, payload: bytes) -> Any:
    """The pyfunc model ``key``, unpacked and loaded once per worker process."""
    with _WORKER_LOCK:
        model = _WORKER_MODELS.get(key)
        if model is None:
            import mlflow.pyfunc

            folder = Path(tempfile.mkdtemp(prefix=f"kennel-model-{key}-"))
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                archive.extractall(folder)
            model = mlflow.pyfunc.load_model(str(folder))
            _WORKER_MODELS[key] = model
        return model


def _score_partition(
    frame: Any,
    index: int,
    key: str,
    payload: bytes,
    folder: str,
    where: str,
    explain: bool = False,
    stamp: dict[str, Any] | None = None,
) -> int:
    """Runs on a worker: score one partition (with contributions when ``explain``, with
    the provenance columns ``stamp``) and write it as ``part.<index>.parquet``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kennel.score.chunks import join_predictions, score_chunk

    model = worker_model(key, payload)
    frame = frame.reset_index(drop=True)
    out = score_chunk(model, frame, where=f"{where} {index}", explain=explain)
    scored = join_predictions(frame, out)
    if stamp is not None:
        scored = scored.assign(**stamp, scored_at=pd.Timestamp.now(tz="UTC"))
    table = pa.Table.from_pandas(scored, preserve_index=False)
    pq.write_table(table, os.path.join(folder, PART_NAME.format(index)))
    return len(frame)


# ------------------------------------------------------------------ scoring
def score_dataset(
    client: Client,
    *,
    model_folder: Path,
    source: Source,
    output: Path,
    total: int,
    progress: bool,
    explain: bool = False,
    stamp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every row of the Parquet data set ``source`` (``total`` rows, from its
    files' footers) with the model in ``model_folder`` on the cluster, into the folder
    ``output``. Returns counts."""
    import dask
    import dask.dataframe as dd
    from distributed import as_completed

    fs, files = source.dataset_files()
    key, payload = pack_model(model_folder)
    shared = client.scatter(payload, broadcast=True, hash=False)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    paths = files if protocol in ("file", "local") else [f"{protocol}://{f}" for f in files]
    frame = dd.read_parquet(paths, storage_options=source.storage_options() or None)
    parts = frame.to_delayed()
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    try:
        tasks = [
            dask.delayed(_score_partition)(
                part, i, key, shared, str(tmp), "partition", explain, stamp
            )
            for i, part in enumerate(parts)
        ]
        futures = client.compute(tasks)
        rows = done = 0
        bar = _bar(total, progress)
        last_logged = 0.0
        try:
            for future in as_completed(futures):
                try:
                    count = future.result()
                except UserError:
                    raise
                except Exception as exc:  # a worker's error: one line, the rest cancelled
                    from kennel.util import first_line

                    raise UserError(first_line(exc)) from None
                rows += count
                done += 1
                bar.update(count)
                now = time.perf_counter()
                if not bar.disable:
                    continue
                if now - last_logged > 10 or done == len(futures):
                    logger.info(
                        "scored %d/%d partitions (%s of %s rows)",
                        done,
                        len(futures),
                        f"{rows:,}",
                        f"{total:,}",
                    )
                    last_logged = now
        finally:
            bar.close()
            client.cancel(futures)
        if output.exists():
            output.rmdir()  # empty (checked before): replaced by the finished folder
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "rows": rows,
        "partitions": len(parts),
        "files": len(files),
        "scoring_s": round(time.perf_counter() - started, 3),
    }


def _bar(total: int, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="rows",
        unit_scale=True,
        desc="predict (cluster)",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )


__all__ = ["pack_model", "score_dataset", "worker_model"]
