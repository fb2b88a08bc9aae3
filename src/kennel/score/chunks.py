"""Scoring one chunk of raw rows, the same way everywhere: in-process batch scoring, the
partitions a cluster's workers score, and (through the pyfunc) the served model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kennel.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


def can_explain(model: Any) -> bool:
    """Whether a loaded kennel model takes the ``explain`` param (models saved before
    explanations existed do not declare it)."""
    params = model.metadata.get_params_schema()
    return params is not None and "explain" in {p.name for p in params.params}


def score_chunk(
    model: Any, chunk: pd.DataFrame, *, where: str, explain: bool = False
) -> pd.DataFrame:
    """The model's prediction columns for ``chunk`` (and its ``contrib_*`` columns with
    ``explain``); a refused chunk is a user error that starts with ``where``
    (``rows 1-100 of 'in.csv'``, ``partition 3``)."""
    from mlflow.exceptions import MlflowException

    from kennel.errors import DataError
    from kennel.serve.models import explain as reason

    schema = model.metadata.get_input_schema()
    if schema is not None and schema.has_input_names():
        # Columns the model does not take (the target, identifiers, extras) stay in the output
        # file but are not sent: MLflow would warn about them once per chunk.
        names = set(schema.input_names())
        chunk = chunk[[c for c in chunk.columns if c in names]]
    try:
        return model.predict(chunk, params={"explain": True}) if explain else model.predict(chunk)
    except NotImplementedError as exc:
        raise UserError(f"{where}: {exc}") from None
    except (MlflowException, DataError) as exc:
        raise UserError(f"{where}: {reason(exc)}") from None


def join_predictions(chunk: pd.DataFrame, out: pd.DataFrame) -> pd.DataFrame:
    """Input columns, then the prediction columns (replacing input columns of those names)."""
    import pandas as pd

    clash = [c for c in out.columns if c in chunk.columns]
    if clash:
        chunk = chunk.drop(columns=clash)
    out = out.set_axis(chunk.index)
    return pd.concat([chunk, out], axis=1)
