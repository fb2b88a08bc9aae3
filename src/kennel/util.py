"""Small helpers shared by several rooms."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def url_password(url: str) -> str | None:
    """The password part of ``scheme://user:password@host/...``, if any."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def redact_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


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
