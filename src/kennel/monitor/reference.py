"""The reference a model carries (``profile.json`` in its bundle): made at training, on one
machine or on a Dask cluster, and read back from any model URI without the training data."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from kennel.errors import UserError
from kennel.monitor.drift import BatchStats
from kennel.monitor.profile import PROFILE_FILE, Profile, load_profile

if TYPE_CHECKING:
    import dask.dataframe as dd

logger = logging.getLogger(__name__)


def recount(profile: Profile, stats: BatchStats) -> Profile:
    """``profile`` (edges and vocabulary placed on a sample) with the counts of every row
    ``stats`` counted against them: how a profile is made on a cluster, where the training
    split never comes to one machine. Min and max stay the sample's."""
    for name, column in profile.columns.items():
        counted = stats.columns[name]
        counts = [int(c) for c in counted.counts]
        column.rows = counted.rows
        if column.binned:
            column.counts = counts[:-1]
            column.invalid = counted.invalid
            column.missing = counts[-1] - counted.invalid
            present = counted.rows - counts[-1]
            column.mean = counted.total / present if present else None
        else:
            column.counts, column.other, column.missing = counts[:-2], counts[-2], counts[-1]
    profile.rows = stats.rows
    return profile


#: What a capture adds to each row besides the inputs and outputs (:mod:`kennel.serve.capture`).
PROVENANCE = (
    "request_id",
    "request_row",
    "scored_at",
    "model_name",
    "model_version",
    "model_alias",
)


def split_frame(chunk: pd.DataFrame, profile: Profile) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(input columns, the model's output columns or None when the chunk has none)."""
    outputs = [c for c in chunk.columns if c in profile.outputs or str(c) == "prediction"]
    renamed = {
        c: c[len("input_") :]
        for c in chunk.columns
        if str(c).startswith("input_") and c[len("input_") :] not in chunk.columns
    }
    explained = [c for c in chunk.columns if str(c).startswith("contrib_")]
    dropped = [*outputs, *explained, *(p for p in PROVENANCE if p in chunk.columns)]
    inputs = chunk.drop(columns=dropped)
    inputs = inputs.rename(columns=renamed)
    return inputs, (chunk[outputs] if outputs else None)


def count_partition(part: Any, profile: Profile) -> BatchStats:
    """One partition's counts against ``profile``: its inputs and, when it carries them,
    the model's outputs (runs on a Dask worker)."""
    stats = BatchStats(profile)
    inputs, outputs = split_frame(part, profile)
    stats.update(inputs)
    if outputs is not None:
        stats.update_outputs(outputs)
    return stats


def count_on_cluster(client: Any, frame: dd.DataFrame, profile: Profile) -> BatchStats:
    """Every partition of ``frame`` counted on the workers, added up on the client."""
    import dask

    count = dask.delayed(count_partition, pure=True)
    total = BatchStats(profile)
    for stats in client.compute([count(part, profile) for part in frame.to_delayed()], sync=True):
        total.merge(stats)
    return total


def profile_of_model(model_uri: str) -> tuple[Profile, Path]:
    """The reference profile saved with the model at ``model_uri`` (any MLflow model URI or
    local folder), checked against the bundle's manifest; a user error when the model has
    none (saved by kennel 0.1: retrain it to monitor it)."""
    from kennel.serve.bundle import ARTIFACT_KEY, verify_bundle
    from kennel.serve.models import download

    local = Path(model_uri)
    if not local.is_dir():
        local = download(model_uri, Path(tempfile.mkdtemp(prefix="kennel-monitor-")))
    bundle = local / "artifacts" / ARTIFACT_KEY
    if not bundle.is_dir():
        raise UserError(f"'{model_uri}' is not a kennel model (no artifacts/{ARTIFACT_KEY})")
    try:
        verify_bundle(bundle)
    except UserError as exc:
        raise UserError(f"cannot load model '{model_uri}': {exc}") from None
    if not (bundle / PROFILE_FILE).is_file():
        raise UserError(
            f"model '{model_uri}' has no reference profile (it was saved before kennel made "
            "one with every model); retrain it to monitor it"
        )
    return load_profile(bundle), local
