"""CSV requests, turned by ``kennel serve``'s guard into the JSON MLflow's app reads.

MLflow's scoring app reads a ``text/csv`` body with ``pandas.read_csv(dtype=...)``, the dtypes
taken from the signature (``parse_csv_input``). That fails for every signature with an
``Any`` column (``Schema.pandas_types`` raises "Failed to get pandas types as some of the
inputs types are not DataType"), and kennel declares integer, boolean, category and date
columns ``Any`` (:data:`kennel.serve.pyfunc.MLFLOW_TYPES`): MLflow's app answers 400 to any
CSV for most models trained on real tables. Its JSON path has no such problem, so the guard
reads the CSV itself and hands the app the same rows as a ``dataframe_split`` request: the
answers are exactly those the rows sent as JSON get.

How the CSV is read: ``pandas.read_csv`` with its defaults, as MLflow does (a header line;
empty cells and ``NA``-like text are missing and go as JSON nulls; numbers go as numbers),
forcing only the columns the signature declares ``string`` to text, as MLflow does (a code
written ``02134`` stays ``"02134"``, as a JSON client sends it). Every other column reaches
MLflow's schema checks and kennel's processor as a JSON client would send it: text in a
number column is the same one-line 400 naming the column.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, MutableMapping
from typing import Any

from kennel.serve.answers import clipped

#: The content type MLflow's app reads as CSV.
CSV_TYPE = "text/csv"


class BadCsv(ValueError):
    """A ``text/csv`` body that is not CSV (or not UTF-8); ``str()`` is one line."""

    def answer(self) -> dict[str, str]:
        """The 400's JSON body, shaped like kennel serve's other refusals."""
        return {"error_code": "BAD_REQUEST", "message": str(self), "detail": str(self)}


def convertible(content_type: str) -> bool:
    """Whether a request of ``content_type`` is CSV the guard converts: ``text/csv`` with no
    parameter but ``charset=utf-8``. Anything else goes to MLflow's app as it came (it
    answers 415 to another charset or an unknown parameter)."""
    kind, *parameters = (part.strip() for part in content_type.split(";"))
    if kind.lower() != CSV_TYPE:
        return False
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return False
    return True


def text_columns(schema: Any) -> frozenset[str]:
    """The columns an MLflow input ``schema`` declares ``string`` (read as text, as MLflow's
    own CSV reader does); none for a missing or tensor schema."""
    if schema is None or schema.is_tensor_spec():
        return frozenset()
    from mlflow.types import DataType

    return frozenset(
        col.name for col in schema.inputs if col.name is not None and col.type == DataType.string
    )


def _one_line(text: str) -> str:
    return clipped(" ".join(text.split()))


def csv_to_split(body: bytes, text: Collection[str] = ()) -> bytes:
    """The ``dataframe_split`` JSON request holding the rows of the CSV ``body`` (columns in
    ``text`` read as text). Raises :class:`BadCsv` naming what is wrong."""
    import pandas as pd

    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadCsv(f"the request body is not UTF-8 text: {exc}") from None
    dtypes = dict.fromkeys(text, object)
    try:
        frame = pd.read_csv(io.StringIO(decoded), dtype=dtypes or None)
    except (ValueError, csv.Error) as exc:  # pandas' ParserError and EmptyDataError included
        raise BadCsv(f"the request body is not valid CSV: {_one_line(str(exc))}") from None
    cells = frame.astype(object).where(frame.notna(), None)
    split = {"columns": [str(c) for c in frame.columns], "data": cells.to_numpy().tolist()}
    return json.dumps({"dataframe_split": split}, default=str).encode()


def as_json_request(scope: MutableMapping[str, Any], length: int) -> dict[str, Any]:
    """``scope`` of a CSV request, retyped for its JSON replacement of ``length`` bytes."""
    replaced = {b"content-type", b"content-length"}
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in replaced]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {**scope, "headers": headers}
