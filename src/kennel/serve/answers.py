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
    start with ``Failed to predict data '<the frame>'``)."""
    text = message.strip()
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1].strip()
    return text


def one_line(message: str) -> str:
    """The refusal in one line: the missing columns when that is what it is, else MLflow's
    reason's first line."""
    why = reason(message)
    if found := _MISSING.search(why):
        missing = _names(found.group(1))
        if missing:
            line = f"missing columns: {listed(missing)}"
            if extra := _EXTRA.search(why):
                unknown = _names(extra.group(1))
                line += f"; columns the model does not take: {listed(unknown)}" if unknown else ""
            return line
    first = why.splitlines()[0] if why else "the model refused the request"
    return first if len(first) <= MAX_MESSAGE else first[: MAX_MESSAGE - 3] + "..."


def rewrite(body: bytes) -> bytes:
    """A 400 body of MLflow's app, rewritten (see the module docstring); bodies that are not
    MLflow's JSON errors come back as they were."""
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
        "message": one_line(message),
        "detail": detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 3] + "...",
    }
    return json.dumps(out).encode()
