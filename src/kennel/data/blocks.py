"""The numeric block of a frame's features: what :meth:`DataProcessor.transform
<kennel.data.processor.DataProcessor.transform>` hands a family as float64 columns, NaN for
missing, date columns as their parts. Column-major: each feature is written in one contiguous
pass, and pandas and LightGBM take the block as it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kennel.data.columns import ColumnRole, date_parts
from kennel.data.values import gather, rows_at, to_datetime, to_float

#: Frames up to this many rows may be converted in one go (:func:`numbers_at_once`): that
#: saves a fixed cost per column, which only small frames (requests) notice, and costs a
#: second copy of the block, which only large ones would.
AT_ONCE_MAX_ROWS = 10_000


def numbers_at_once(frame: pd.DataFrame, labels: pd.Index) -> np.ndarray | None:
    """The block in one conversion when every numeric feature (``labels``) is a column of
    plain NumPy numbers, or is not sent (NaN, as column by column). That is what a served
    request holds after MLflow's schema: one row's 30 columns cost ~0.34 ms one by one and
    ~0.06 ms here. None: some column needs its own reading (text, nullable, dates)."""
    picked = frame.reindex(columns=labels)
    if not all(isinstance(d, np.dtype) and d.kind in "fiub" for d in picked.dtypes):
        return None
    return np.asfortranarray(picked.to_numpy(dtype=np.float64))


def numeric_block(
    frame: pd.DataFrame,
    at: np.ndarray | None,
    n: int,
    numeric: Sequence[str],
    raw_columns: Sequence[str],
    role_of: Mapping[str, ColumnRole],
    numeric_index: Mapping[str, int],
) -> np.ndarray:
    """The block column by column, rows ``at`` only (a split's rows, gathered straight into
    the block): every kind of column a fitted processor reads."""
    block = np.empty((n, len(numeric)), order="F")
    filled = np.zeros(len(numeric), dtype=bool)
    dtypes = dict(zip(frame.columns, frame.dtypes, strict=True))
    for name in raw_columns:
        role, dtype = role_of[name], dtypes.get(name)
        if dtype is None or role.role not in ("numeric", "date"):
            continue
        column = frame[name]
        if role.role == "date":
            stamps = to_datetime(rows_at(column, at), name, "input rows")
            for part, values in date_parts(stamps, role.parts).items():
                j = numeric_index[f"{name}__{part}"]
                block[:, j], filled[j] = values, True
            continue
        j = numeric_index[name]
        if isinstance(dtype, np.dtype) and dtype.kind in "fiub":  # NaN is its missing value
            gather(column.to_numpy(), at, block[:, j])  # only the rows at `at`
        elif ptypes.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
            part = rows_at(column, at)  # nullable: pd.NA -> NaN
            block[:, j] = part.to_numpy(dtype=np.float64, na_value=np.nan)
        else:  # text holding numbers ("$1,499.00", "?" for missing)
            part = rows_at(column, at)
            how = (name, "input rows", role.missing_tokens, role.number_format)
            block[:, j] = to_float(part, *how)
        filled[j] = True
    block[:, ~filled] = np.nan  # columns not sent (optional in a request)
    return block
