"""Ctrl-C and SIGTERM during a search: raised in the main thread, except while a store is
being written (schemas, ask/tell), which finishes first."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a search; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class Signals:
    """SIGINT/SIGTERM raise :class:`SearchInterrupted` in the main thread, except inside a
    shielded block (a store write, ask/tell), where the signal waits for its end."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.raised = False
        self.depth = 0
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum
        if self.depth or self.raised:
            return
        self.raised = True
        raise SearchInterrupted(signum)

    def check(self) -> None:
        if self.pending is not None and not self.raised:
            self.raised = True
            raise SearchInterrupted(self.pending)

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth:
            self.check()
