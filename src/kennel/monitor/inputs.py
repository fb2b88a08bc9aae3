"""Counting a batch against a model's reference: rows from a capture folder, a CSV or Parquet
file or a Parquet data set, chunk by chunk (or partition by partition on a Dask cluster),
their inputs and the model's outputs counted, and labelled rows kept for the performance
check.

What a chunk holds decides what is counted: captured rows and ``kennel predict`` output carry
the model's answers (``prediction``, ``proba_<class>``); other rows are scored here, with the
same model, to count its outputs. Provenance columns (``request_id``, ``scored_at``, model
name/version/alias) are never inputs; a captured input renamed ``input_<name>`` (its name
clashed with an output) is put back under its own name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kennel.config import Config
from kennel.errors import UserError
from kennel.monitor.drift import BatchStats
from kennel.monitor.profile import Profile
from kennel.monitor.reference import split_frame
from kennel.util import first_line

#: A captured row's position in its request (with the request id, the key of a label).
ROW = "request_row"

logger = logging.getLogger(__name__)


@dataclass
class Labelled:
    """The labelled rows of a batch: true labels and the model's outputs on those rows."""

    truth: list[pd.Series] = field(default_factory=list)
    outputs: list[pd.DataFrame] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(t) for t in self.truth)

    def add(self, truth: pd.Series, outputs: pd.DataFrame) -> None:
        known = truth.notna().to_numpy()
        if known.any():
            self.truth.append(truth[known].reset_index(drop=True))
            self.outputs.append(outputs[known].reset_index(drop=True))

    def frames(self) -> tuple[pd.Series, pd.DataFrame]:
        return pd.concat(self.truth, ignore_index=True), pd.concat(self.outputs, ignore_index=True)


@dataclass
class Batch:
    """What :func:`count_batch` found."""

    stats: BatchStats
    labelled: Labelled
    chunks: int = 0
    unscored: int = 0
    """Rows whose outputs could not be counted (the model refused their chunk)."""
    notes: list[str] = field(default_factory=list)


def read_labels(path: str, on: str, target: str, data: Any) -> pd.Series:
    """``target`` by ``on`` (e.g. ``request_id``) from a CSV/Parquet file of labels; by
    ``(on, request_row)`` when the file has ``request_row`` (requests of several rows)."""
    from kennel.data.chunks import open_rows

    rows = open_rows(path, data, 1_000_000)
    missing = [c for c in (on, target) if c not in rows.columns]
    if missing:
        raise UserError(
            f"labels file '{path}' lacks column(s) {', '.join(repr(m) for m in missing)}; it "
            f"needs '{on}' (--on) and the target '{target}'"
        )
    frame = pd.concat(list(rows.chunks), ignore_index=True)
    key = [on, ROW] if ROW in frame.columns and on != ROW else [on]
    if frame.duplicated(key).any():
        raise UserError(
            f"labels file '{path}' has several rows for one {on}; for requests of several "
            f"rows add the column {ROW} (the row's position in its request, as captured)"
        )
    return frame.set_index(key)[target]


class Counter:
    """Counts chunks into one :class:`Batch` (scoring them when they carry no outputs)."""

    def __init__(
        self, profile: Profile, model_folder: Path, labels: pd.Series | None, on: str | None
    ) -> None:
        self.profile = profile
        self.model_folder = model_folder
        self.labels, self.on = labels, on
        self.batch = Batch(BatchStats(profile), Labelled())
        self._model: Any = None

    def add(self, chunk: pd.DataFrame) -> None:
        inputs, outputs = split_frame(chunk, self.profile)
        stats = self.batch.stats
        stats.update(inputs)
        if outputs is None:
            outputs = self._score(inputs, stats.rows - len(inputs))
        if outputs is not None:
            stats.update_outputs(outputs)
            self._labelled(chunk, outputs)
        self.batch.chunks += 1

    def _score(self, inputs: pd.DataFrame, start: int) -> pd.DataFrame | None:
        from kennel.score.chunks import score_chunk
        from kennel.serve.models import load_model

        if self._model is None:
            self._model = load_model(str(self.model_folder))
        try:
            return score_chunk(self._model, inputs, where=f"rows {start + 1}-{start + len(inputs)}")
        except UserError as exc:
            self.batch.unscored += len(inputs)
            self.batch.notes.append(f"outputs of {exc} not counted")
            logger.warning("outputs not counted for %s", first_line(exc))
            return None

    def _labelled(self, chunk: pd.DataFrame, outputs: pd.DataFrame) -> None:
        target = self.profile.target
        if self.labels is not None and self.on in chunk.columns:
            names = list(self.labels.index.names)
            if not set(names) <= set(chunk.columns):
                return
            keys = pd.MultiIndex.from_frame(chunk[names]) if len(names) > 1 else chunk[self.on]
            truth = pd.Series(self.labels.reindex(keys).to_numpy(), index=chunk.index)
        elif target and target in chunk.columns:
            truth = chunk[target]
        else:
            return
        self.batch.labelled.add(truth.reset_index(drop=True), outputs.reset_index(drop=True))


def count_batch(
    config: Config,
    profile: Profile,
    model_folder: Path,
    location: str,
    *,
    labels: pd.Series | None = None,
    on: str | None = None,
) -> Batch:
    """Every row of ``location`` counted against ``profile``: in this process a chunk at a
    time (``monitor.chunk_size``), or on the Dask cluster of ``resource.cluster`` when the
    input is a Parquet data set."""
    from kennel.cluster import is_distributed
    from kennel.data.chunks import dataset_of, open_rows

    if is_distributed(config.resource.cluster) and dataset_of(location, config.data) is not None:
        return _count_on_cluster(config, profile, location)
    rows = open_rows(location, config.data, config.monitor.chunk_size)
    counter = Counter(profile, model_folder, labels, on)
    for chunk in rows.chunks:
        counter.add(chunk)
    if counter.batch.stats.rows == 0:
        raise UserError(f"input '{location}' has no rows")
    return counter.batch


def _count_on_cluster(config: Config, profile: Profile, location: str) -> Batch:
    """A Parquet data set counted partition by partition on the workers (inputs, and the
    outputs the rows carry: rows without them are not scored on the cluster)."""
    import dask.dataframe as dd

    from kennel import cluster
    from kennel.data.chunks import dataset_of
    from kennel.monitor.reference import count_on_cluster

    source = dataset_of(location, config.data)
    assert source is not None
    _, files = source.dataset_files()
    with cluster.connect(config.resource.cluster, num_threads=config.resource.num_threads) as (
        client,
        _,
    ):
        frame = dd.read_parquet(files, storage_options=source.storage_options())
        stats = count_on_cluster(client, frame, profile)
    batch = Batch(stats, Labelled())
    if not stats.output_rows:
        batch.notes.append(
            "outputs not compared: the rows carry no prediction columns (on a cluster, score "
            "them with kennel predict first, or monitor a capture folder)"
        )
    return batch
