"""The data work of a training run on a Dask cluster (``resource.cluster``): read a Parquet
data set partition by partition, decide the column roles, split and fit the processor with
Dask aggregations. Nothing gathers the table on the client: it receives per-partition
summaries (counts, a few thousand distinct values, vocabularies) and row hashes.

The result is an ordinary fitted :class:`~kennel.data.DataProcessor`: the same state (the
same ``processor.json``) the pandas path gives on the same rows, because the role rules run
through the same code (:func:`kennel.data.columns.decide_column`) on facts computed here.

The split differs from the in-process one on purpose (:mod:`kennel.data.dask_splits`): a
row's split comes from a seeded hash of its content, of its group, or from cut times placed
on a sample, so it does not depend on how the data set is partitioned or on which worker
reads it; the shares are approximate.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kennel.data.checks import check_labeled, split_columns
from kennel.data.columns import decide_roles_from_facts
from kennel.data.dask_facts import (
    GATHER_LIMIT,
    DaskFacts,
    _combine,
    _in_order,
    _kind_hint,
    _partials,
    combine_target_pieces,
    count_distinct,
    target_piece,
)
from kennel.data.dask_splits import hash_split, split_on_cluster, split_shares
from kennel.data.splits import MIN_CLASS_ROWS, check_usable_classes, warn_rare
from kennel.data.targets import (
    TargetPlan,
    class_values,
    describe_target,
    merge_classes,
    read_target,
)
from kennel.data.values import json_value, label, label_counts, to_float
from kennel.errors import DataError

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

    from kennel.data.processor import DataProcessor

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the table
class DaskTable:
    """A Parquet data set on the cluster, worked on for ``processor`` (which ends fitted)."""

    def __init__(self, processor: DataProcessor, client: Client) -> None:
        self.processor = processor
        self.client = client
        self.files: list[str] = []
        self.partitions = 0
        self.rare: dict[str, int] = {}
        """Classes too small to stratify (-> rows): their rows all go to train."""

    # ------------------------------------------------------------------ read
    def read(self) -> dd.DataFrame:
        """The data set as a Dask frame (columns as strings), files in sorted order."""
        import dask.dataframe as dd
        import pyarrow.parquet as pq

        from kennel.data.sources import check_duplicates

        source = self.processor.source
        source.check_for_cluster()
        fs, files = source.dataset_files()
        with fs.open(files[0], "rb") as handle:
            check_duplicates(files[0], list(pq.ParquetFile(handle).schema_arrow.names))
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        paths = files if protocol in ("file", "local") else [f"{protocol}://{f}" for f in files]
        self.files = paths
        try:
            frame = dd.read_parquet(paths, storage_options=source.storage_options() or None)
        except Exception as exc:  # noqa: BLE001 - unreadable files are one line
            from kennel.util import first_line

            raise DataError(
                f"{source.display}: cannot read it as PARQUET: {first_line(exc)}"
            ) from None
        frame.columns = [str(c) for c in frame.columns]
        self.partitions = frame.npartitions
        return frame

    # ------------------------------------------------------------------ load
    def load(self) -> dd.DataFrame:
        """:meth:`DataProcessor.load` on the cluster: labeled rows, ``data.drop`` removed;
        records ``n_rows``, ``digest``, ``rows_without_target``, task, classes and roles."""
        p = self.processor
        display = p._display
        raw = self.read()
        columns = list(raw.columns)
        if not p.target:
            raise DataError(f"{display}: data.target is not set; name the target column")
        if len(columns) == 0:
            raise DataError(f"{display}: the table is empty (no rows or no columns)")
        p._check_listed(columns)
        # Global row positions as the index, so the digest hashes the same index as pandas.
        lengths = _in_order(self.client, [_length(part) for part in raw.to_delayed()])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64).tolist()
        total = int(sum(lengths))
        if total == 0:
            raise DataError(f"{display}: the table is empty (no rows or no columns)")
        positioned = raw.map_partitions(_with_positions, offsets, meta=raw._meta)
        labeled = positioned[positioned[p.target].notnull()]
        dropped = set(p.config.drop) - split_columns(p.config)  # a split column stays
        kept = [c for c in columns if c not in dropped]
        # Kept in the workers' memory (spilled to their disks when it does not fit): every
        # later pass (digest, roles, split, fit) reads it from there, not from the files.
        frame = labeled[kept].persist()
        n_rows = int(sum(_in_order(self.client, [_length(part) for part in frame.to_delayed()])))
        p.rows_without_target = total - n_rows
        check_labeled(display, p.target, labeled=n_rows, total=total)
        if len(kept) < 2:
            raise DataError(f"{display}: no feature columns besides '{p.target}'")
        p.n_rows = n_rows
        p.digest = self._digest(frame)
        frame, counts = self._read_target(frame)
        p._loaded_task, p._loaded_classes = self._resolve_task(frame, n_rows, counts)
        self.rare = self._rare_classes(counts)
        p.roles = self._roles(frame)
        logger.info(
            "loaded %s on the cluster: %d rows in %d partitions, %d columns, target '%s', "
            "digest %s",
            p.source_uri,
            n_rows,
            frame.npartitions,
            len(kept),
            p.target,
            p.digest,
        )
        return frame

    def _digest(self, frame: dd.DataFrame) -> str:
        """:func:`kennel.data.sources.frame_digest` streamed: row hashes come partition by
        partition in order (8 bytes a row) and are fed to one SHA-256."""
        import dask

        digest = hashlib.sha256()
        digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
        futures = self.client.compute(
            [dask.delayed(_row_hashes)(part) for part in frame.to_delayed()]
        )
        try:
            for future in futures:
                digest.update(future.result())
                future.release()
        finally:
            self.client.cancel(futures)
        return digest.hexdigest()[:16]

    def _read_target(self, frame: dd.DataFrame) -> tuple[dd.DataFrame, pd.Series | None]:
        """Decide how the target is read (as pandas does, from summed partition facts) and
        the frame with it read so; returns the rows per class too (None: too many values)."""
        import dask

        p = self.processor
        pieces = _in_order(
            self.client,
            [dask.delayed(target_piece)(part[p.target]) for part in frame.to_delayed()],
        )
        counts, numbers = combine_target_pieces(pieces)
        text_counts = None
        if numbers is not None and counts is not None:
            text_counts = {str(k): int(v) for k, v in counts.items()}
        p.plan_target(numbers, text_counts)
        if counts is not None:  # rows per value as the processor reads the values
            read = p.read_target(pd.Series(counts.index, dtype=counts.index.dtype))
            changed = not read.equals(pd.Series(counts.index, dtype=counts.index.dtype))
            counts = pd.Series(counts.to_numpy(), index=pd.Index(read)).groupby(level=0).sum()
        else:
            changed = numbers is not None
        if p.target_format is None and not (changed and p.rules.active):
            return frame, counts
        plan = TargetPlan(p.rules, p.target_format, p._target_lookup)
        dtype = np.float64 if p.target_format else object
        meta = frame._meta.assign(**{p.target: pd.Series([], dtype=dtype)})
        return frame.map_partitions(_target_part, p.target, plan, p._display, meta=meta), counts

    def _rare_classes(self, counts: pd.Series | None) -> dict[str, int]:
        """Classes with too few rows for a stratified split (their rows train), warned."""
        p = self.processor
        cfg = p.config.split
        if counts is None or p._loaded_task == "regression" or not cfg.stratify:
            return {}
        if cfg.time_on is not None or cfg.group_on is not None:
            return {}
        rows: dict[str, int] = {}
        for value, n in counts.items():
            name = str(label(value))
            rows[name] = rows.get(name, 0) + int(n)
        rare = {name: n for name, n in rows.items() if n < MIN_CLASS_ROWS}
        check_usable_classes(
            np.array(list(rows.values())), rare, target=p.target, display=p._display
        )
        if rare:
            warn_rare(rare, target=p.target, display=p._display)
        return rare

    def _resolve_task(
        self, frame: dd.DataFrame, n_rows: int, counts: pd.Series | None
    ) -> tuple[Any, list[Any]]:
        p = self.processor
        if counts is not None:
            return p.resolve_task_from(pd.Series(counts.index, dtype=counts.index.dtype), n_rows)
        # Very many distinct values (a regression target): counted on the cluster, and the
        # rules see the first ones (they need only the count and the dtype then).
        n_unique = count_distinct(self.client, frame, [p.target])[p.target]
        sample = frame[p.target].dropna().head(GATHER_LIMIT, npartitions=-1).drop_duplicates()
        return p.resolve_task_from(sample, n_rows, n_unique=n_unique)

    def _roles(self, frame: dd.DataFrame) -> list[Any]:
        import dask

        p = self.processor
        names = [c for c in frame.columns if c != p.target and c not in set(p.config.drop)]
        hints = {name: _kind_hint(frame.dtypes[name]) for name in names}
        partials = _in_order(
            self.client,
            [dask.delayed(_partials)(part, hints) for part in frame.to_delayed()],
        )
        summaries = {name: _combine([part[name] for part in partials]) for name in names}
        facts = {
            name: DaskFacts(frame, name, summaries[name], frame.dtypes[name], self.client)
            for name in names
        }
        # Columns with more distinct values than a summary keeps: counted on the cluster,
        # all in one computation (one pass over the data, not one per column).
        many = [name for name in names if summaries[name].uniques is None]
        if many:
            for name, count in count_distinct(self.client, frame, many).items():
                facts[name]._distinct = count
        cfg = p.config
        return decide_roles_from_facts(
            list(frame.columns),
            facts.__getitem__,
            target=p.target,
            drop=cfg.drop,
            keep=cfg.keep,
            numeric=cfg.numeric,
            categorical=cfg.categorical,
            percent=cfg.percent,
        )

    # ------------------------------------------------------------------ split
    def split(self, frame: dd.DataFrame) -> tuple[dd.DataFrame, dd.DataFrame, dd.DataFrame]:
        """Train, valid and test rows (:func:`kennel.data.dask_splits.split_on_cluster`);
        ``processor.split_report`` says how (approximate shares)."""
        parts = split_on_cluster(self.client, self.processor, frame, self.rare)
        self.processor.split_report["approximate"] = True
        train, valid_rows, test_rows = (frame[parts == k] for k in (0, 1, 2))
        return train, valid_rows, test_rows

    # ------------------------------------------------------------------ fit
    def fit(self, train: dd.DataFrame) -> int:
        """:meth:`DataProcessor.fit` on the cluster's train rows; returns their count."""
        import dask

        from kennel.data.processor import EXAMPLE_ROWS

        p = self.processor
        used = [r for r in p.roles if r.role != "dropped" and r.name in train.columns]
        if not used:
            raise DataError(
                f"{p._display}: no usable feature columns besides '{p.target}' "
                f"(dropped: {', '.join(p.dropped) or 'none'})"
            )
        summaries = _in_order(
            self.client,
            [
                dask.delayed(_fit_partial)(
                    part, p.target if p._loaded_task != "regression" else None, used, p._display
                )
                for part in train.to_delayed()
            ],
        )
        rows = sum(s["rows"] for s in summaries)
        if rows == 0:
            raise DataError(f"{p._display}: cannot fit on an empty frame")
        task, classes = p._loaded_task, list(p._loaded_classes or [])
        if task != "regression":
            uniques = pd.concat([s["classes"] for s in summaries]).drop_duplicates()
            numeric, whole = describe_target(uniques)
            own = class_values(uniques, numeric=numeric, whole=whole)
            classes = merge_classes(classes, own)
        p.task, p.classes = task, classes if task != "regression" else []
        numeric_features: list[str] = []
        categorical: dict[str, list[str]] = {}
        for role in used:
            if role.role == "numeric":
                numeric_features.append(role.name)
            elif role.role == "date":
                numeric_features.extend(role.features)
            else:
                merged: dict[str, int] = {}
                for s in summaries:
                    for lab, count in s["labels"][role.name].items():
                        merged[lab] = merged.get(lab, 0) + count
                categorical[role.name] = p.vocabulary_from(merged, role.name)
        p.numeric = numeric_features
        p.categorical = categorical
        p.raw_columns = [r.name for r in used]
        p.input_kinds = {r.name: r.kind for r in used}
        missing_in_train = {name for s in summaries for name in s["missing"]}
        p.nullable = [r.name for r in used if r.missing or r.name in missing_in_train]
        head = train[p.raw_columns].head(EXAMPLE_ROWS, npartitions=-1)
        p._examples = [
            {c: json_value(v) for c, v in row.items()} for row in head.to_dict("records")
        ]
        p._finish_fit()
        p._log_report()
        return rows


# --------------------------------------------------------------------------- training
def sample_rows(frame: dd.DataFrame, rows: int, limit: int, seed: int) -> pd.DataFrame:
    """The split's rows in memory when there are at most ``limit``, else a seeded sample of
    about ``limit`` rows (by row hash, like the split: the same rows on any partitioning)."""
    if rows <= limit:
        return frame.compute()
    share = limit / rows

    def pick(part: pd.DataFrame) -> pd.DataFrame:
        # hash_split's "test" band with a different seed: a share of the rows, by content
        return part[hash_split(part, seed + 7919, share, 0.0) == 2]

    return frame.map_partitions(pick, meta=frame._meta).compute()


def _features(part: pd.DataFrame, processor: Any, model: Any) -> pd.DataFrame:
    return model.lgb_frame(processor.transform(part))


def _target(part: pd.Series, processor: Any) -> pd.Series:
    return pd.Series(processor.encode_target(part), index=part.index)


def features_frame(processor: Any, model: Any, frame: dd.DataFrame) -> tuple[Any, Any]:
    """(features, encoded target) of a Dask frame of raw rows, partition by partition with
    the fitted processor: the frames ``lightgbm.dask`` trains on."""
    head = frame.head(2, npartitions=-1)
    x_meta = _features(head, processor, model).iloc[:0]
    y_meta = _target(head[processor.target], processor).iloc[:0]
    x = frame.map_partitions(_features, processor, model, meta=x_meta)
    y = frame[processor.target].map_partitions(_target, processor, meta=y_meta)
    return x, y


def _predict_part(part: pd.DataFrame, processor: Any, model: Any) -> tuple[np.ndarray, Any]:
    x, y = processor.features_and_target(part)
    return y, model.predict_raw(x)


def predict_split(
    client: Client, processor: Any, model: Any, frame: dd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """(encoded targets, raw model output) of every row of a split, predicted on the
    workers partition by partition; the model goes to each worker once."""
    import dask

    shared = client.scatter(model, broadcast=True, hash=False)
    pieces = _in_order(
        client,
        [dask.delayed(_predict_part)(part, processor, shared) for part in frame.to_delayed()],
    )
    pieces = [piece for piece in pieces if len(piece[0])]
    if not pieces:
        return np.array([]), np.array([])
    return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])


def _target_part(part: pd.DataFrame, target: str, plan: TargetPlan, display: str) -> Any:
    """A partition with its target read by ``plan`` (one dtype in every partition)."""
    read = read_target(part[target], plan, target=target, display=display)
    dtype = np.float64 if plan.number_format else object
    return part.assign(**{target: read.astype(dtype)})


def _length(part: Any) -> Any:
    import dask

    return dask.delayed(len)(part)


def _with_positions(part: pd.DataFrame, offsets: list[int], partition_info: Any = None) -> Any:
    start = offsets[partition_info["number"]] if partition_info else 0
    return part.set_axis(pd.RangeIndex(start, start + len(part)), axis=0)


def _row_hashes(part: pd.DataFrame) -> bytes:
    hashed = pd.util.hash_pandas_object(part, index=True)
    return np.ascontiguousarray(hashed.to_numpy(dtype=np.uint64)).tobytes()


def _fit_partial(
    part: pd.DataFrame, target: str | None, used: list[Any], display: str
) -> dict[str, Any]:
    """One train partition's share of the fit: label counts of categorical columns, which
    columns have missing values, the target's classes (``target`` None: a regression, no
    classes); numeric columns are checked."""
    labels: dict[str, dict[str, int]] = {}
    missing: list[str] = []
    for role in used:
        series = part[role.name]
        if bool(series.isna().any()):
            missing.append(role.name)
        if role.role == "numeric":  # fails early on text that is not a number
            to_float(series, role.name, display, role.missing_tokens, role.number_format)
        elif role.role == "categorical":
            labels[role.name] = label_counts(series)
    return {
        "rows": len(part),
        "labels": labels,
        "missing": missing,
        "classes": part[target].dropna().drop_duplicates() if target else None,
    }


__all__ = [
    "DaskFacts",
    "DaskTable",
    "features_frame",
    "hash_split",
    "predict_split",
    "sample_rows",
    "split_shares",
]
