"""Small helpers shared by several rooms."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

#: ``scheme://user:password@…`` of a database URL, read the way SQLAlchemy (which opens
#: MLflow's and Optuna's stores) reads it: the user up to the first ``:``, the password
#: everything up to the next ``@``, ``/``, ``?`` and ``#`` included (generated passwords
#: often hold a ``/``; urllib would see no password at all).
_DB_PASSWORD = re.compile(r"^[A-Za-z][\w+.-]*://[^:/]*:([^@]*)@")


def _password_span(url: str) -> tuple[int, int] | None:
    """(start, end) of the password in ``url``: urllib's reading for http(s) URLs, which
    requests sends, SQLAlchemy's for every other scheme; None without one."""
    if url[:8].lower().startswith(("http://", "https://")):
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            return None
        if not password:
            return None
        start = len(parts.scheme) + 3 + len(parts.username or "") + 1
        return start, start + len(password)
    found = _DB_PASSWORD.match(url)
    return found.span(1) if found and found.group(1) else None


def url_password(url: str) -> str | None:
    """The password part of ``scheme://user:password@host/...`` as written, if any."""
    span = _password_span(url)
    return url[span[0] : span[1]] if span else None


def url_secrets(url: str) -> list[str]:
    """What to mask for ``url``'s password: as written and, when percent-encoded
    (``p%40ss``), as the server sees it (``p@ss``)."""
    password = url_password(url)
    if not password:
        return []
    decoded = unquote(password)
    return [password] if decoded == password else [password, decoded]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def redact_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` (for messages and
    anything saved)."""
    span = _password_span(url)
    return url if span is None else f"{url[: span[0]]}***{url[span[1] :]}"


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


def sqlite_file(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` URI, without its query (``?timeout=30``: the
    driver's options); None for any other URI and for ``:memory:``."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def store_lock(target: str | None, suffix: str = ".lock") -> Iterator[None]:
    """An exclusive lock between processes of this machine on a SQLite file store (schema
    creation, promotions): ``<file><suffix>`` beside it. Other stores: no lock."""
    path = sqlite_file(target)
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, create schemas before parallel starts
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + suffix), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
