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


#: A password in a URL's query: ``?password=…`` (libpq, MySQL drivers), ``passwd``, ``pwd``;
#: its value runs to the next ``&`` (a ``;`` is part of it).
_QUERY_PASSWORD = re.compile(r"(?i)[?&](?:password|passwd|pwd)=([^&#\r\n]*)")
#: The ``PWD=…`` of an ODBC connection string in the query (``?odbc_connect=``), its ``=`` and
#: ``;`` often percent-encoded, its value possibly in braces (``}}`` is a brace inside them).
_ODBC_PASSWORD = re.compile(
    r"(?i)(?:[;=]|%3B)(?:[ \t+]|%20)*(?:pwd|password)(?:=|%3D)"
    r"(\{(?:[^}\r\n]|\}\})*\}?|%7B(?:(?!%7D)[^&#\r\n]|%7D%7D)*(?:%7D)?|(?:(?!%3B)[^;&#\r\n])*)"
)


def _password_spans(url: str) -> list[tuple[int, int]]:
    """(start, end) of each reading of the password in ``url``: urllib's (what requests
    sends for http(s) URLs) and, for any other scheme, SQLAlchemy's. They differ when the
    password holds an unencoded ``@`` (``u:Pa@ss@host``: SQLAlchemy logs in with ``Pa``).
    Then any password in the query: a parameter (:data:`_QUERY_PASSWORD`) or an ODBC
    connection string's (:data:`_ODBC_PASSWORD`)."""
    spans = _userinfo_spans(url)
    query = url.find("?")
    if query >= 0:
        for pattern in (_QUERY_PASSWORD, _ODBC_PASSWORD):
            spans += [
                found.span(1)
                for found in pattern.finditer(url, query)
                if found.end(1) > found.start(1)
            ]
    return spans


def _userinfo_spans(url: str) -> list[tuple[int, int]]:
    spans = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            start = len(parts.scheme) + 3 + len(parts.username or "") + 1
            spans.append((start, start + len(parts.password)))
    if not url[:8].lower().startswith(("http://", "https://")):
        found = _DB_PASSWORD.match(url)
        if found and found.group(1):
            spans.append(found.span(1))
    return spans


#: Shorter values are not masked in log lines: they would mask ordinary words (a URL's
#: password is still redacted wherever kennel shows the URL).
MIN_MASKED = 4


def url_secrets(url: str) -> list[str]:
    """What log lines mask for ``url``'s password: each reading of it (see
    :func:`_password_spans`), as written, percent-decoded (``p%40ss``: ``p@ss``) and out of
    an ODBC value's braces, at least :data:`MIN_MASKED` characters long."""
    found: list[str] = []
    for start, end in _password_spans(url):
        password = url[start:end]
        plain = unquote(password)
        braced = plain.startswith("{") and plain.endswith("}")
        inner = plain[1:-1].replace("}}", "}") if braced else plain
        for value in (password, plain, inner):
            if len(value) >= MIN_MASKED and value not in found:
                found.append(value)
    return found


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def redact_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` (for messages and
    anything saved)."""
    spans = _password_spans(url)
    if not spans:
        return url
    # Readings that overlap are hidden as one, the longer: with an unencoded "@", all of
    # the password is hidden.
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        url = f"{url[:start]}***{url[end:]}"
    return url


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


def die_with_parent() -> None:
    """In a child process (Linux): SIGKILL it when the process that started it dies, so a
    killed parent leaves no child running on (elsewhere: no-op). Not inherited by a fork."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
