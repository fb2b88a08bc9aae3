"""Refusals a person can read: MLflow's scoring app answers a request it cannot take with a
400 whose message starts with a repr of the whole parsed frame and schema (~2 KB for 30
columns). ``kennel serve`` sends the same status and error code with a one-line ``message``
(``missing columns: a, b, c (and 26 more)``) and MLflow's own reason, without the data, in
``detail``.
"""

from __future__ import annotations

import ast
import json
import re

#: Columns named in a one-line message; the rest are counted.
SHOWN_COLUMNS = 3
#: The longest ``message`` and ``detail`` sent back.
MAX_MESSAGE = 300
MAX_DETAIL = 2000

_MISSING = re.compile(r"missing inputs (\[.*?\])(?:\.|$)", re.DOTALL)
#: ``'ValueError("could not convert string to float: 'abc'")'``: a Python repr in MLflow's text.
_REPR = re.compile(r"""^'?(\w+)\((['"])(.*)\2\)'?$""", re.DOTALL)
_NOT_A_NUMBER = re.compile(r"could not convert string to float: (.+)$")
_EXTRA = re.compile(r"extra inputs: (\[.*?\])\.", re.DOTALL)


def _names(text: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def listed(names: list[str], shown: int = SHOWN_COLUMNS) -> str:
    """``a, b, c (and 26 more)``."""
    more = f" (and {len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def reason(message: str) -> str:
    """MLflow's reason without the data: the part after its last ``Error:`` (its messages
    start with ``Failed to predict data '<the frame>'``), without the ``Input:`` echo of the
    request, and a Python repr (``'ValueError("...")'``) turned into its text."""
    text = message.strip()
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1].strip()
    text = text.split("\nInput:", 1)[0].strip()
    if found := _REPR.match(text):
        kind, inner = found.group(1), found.group(3)
        text = f"{kind}: {inner}" if kind not in ("ValueError", "MlflowException") else inner
    return text


def _column_holding(body: bytes, value: str) -> str | None:
    """The first column of a JSON request holding ``value`` (which MLflow could not read as
    a number), for a message that names it."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(request, dict):
        return None
    split = request.get("dataframe_split")
    if isinstance(split, dict):
        for row in split.get("data") or []:
            for column, cell in zip(split.get("columns") or [], row or [], strict=False):
                if cell == value:
                    return str(column)
    records = request.get("dataframe_records") or request.get("instances")
    if isinstance(records, list):
        for record in records:
            for column, cell in record.items() if isinstance(record, dict) else []:
                if cell == value:
                    return str(column)
    inputs = request.get("inputs")
    if isinstance(inputs, dict):
        for column, cells in inputs.items():
            if value in (cells if isinstance(cells, list) else [cells]):
                return str(column)
    return None


def clipped(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to at most ``limit`` characters, ``...`` marking the cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(message: str, body: bytes = b"") -> str:
    """The refusal in one line: the missing columns, the column holding text where numbers
    go, a request that is not JSON; else MLflow's reason's first line."""
    why = reason(message)
    if found := _NOT_A_NUMBER.search(why):
        shown = found.group(1).strip()
        try:
            value = ast.literal_eval(shown)
        except (ValueError, SyntaxError):
            value = shown
        column = _column_holding(body, value) if isinstance(value, str) else None
        where = f"column '{column}'" if column else "a number column"
        return f"{where} holds {shown}, which is not a number"
    if why.startswith("JSONDecodeError: "):
        return "the request body is not valid JSON: " + why.removeprefix("JSONDecodeError: ")
    if found := _MISSING.search(why):
        missing = _names(found.group(1))
        if missing:
            line = f"missing columns: {listed(missing)}"
            if extra := _EXTRA.search(why):
                unknown = _names(extra.group(1))
                line += f"; columns the model does not take: {listed(unknown)}" if unknown else ""
            return line
    first = why.splitlines()[0] if why else "the model refused the request"
    return clipped(first)


def rewrite(body: bytes, request: bytes = b"") -> bytes:
    """A 400 body of MLflow's app, rewritten (see the module docstring), ``request`` being
    what the client sent; bodies that are not MLflow's JSON errors come back as they were."""
    try:
        error = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return body
    message = error["message"]
    detail = reason(message)
    out = {
        "error_code": error.get("error_code", "BAD_REQUEST"),
        "message": one_line(message, request),
        "detail": clipped(detail, MAX_DETAIL),
    }
    return json.dumps(out).encode()
