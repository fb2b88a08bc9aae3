"""How a search starts its trial processes (``search.launcher``).

Both launchers run the same thing, ``kennel train`` with the trial's arguments and
environment, as a process of its own in its own process group, and hand back an object
with the part of :class:`subprocess.Popen`'s interface the search uses (``pid``,
``poll()``, ``wait(timeout)``), so timeouts and Ctrl-C kill a trial the same way:

- :class:`SubprocessLauncher`: a fresh interpreter per trial (``python run.py train``).
- :class:`WarmLauncher`: a child forked from :mod:`kennel.search.trial_server`, which imported the
  libraries and read the data once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kennel.search.trials import TrainRequest, TrialProcess
from kennel.util import die_with_parent

logger = logging.getLogger(__name__)

#: Seconds the warm trial server may take to read the data and import.
READY_TIMEOUT_S = 600.0
#: Seconds a launch waits for the server to report the forked child.
START_TIMEOUT_S = 60.0
#: Seconds the server's child may take to draw the search's history plot.
PLOT_TIMEOUT_S = 60.0
#: Environment variables that size the thread pools of OpenMP and the BLAS libraries.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def thread_environment(threads: int, env: Mapping[str, str]) -> dict[str, str]:
    """The thread-pool variables for a process allowed ``threads`` threads (a lower value
    the user already set is kept)."""
    found: dict[str, str] = {}
    for name in THREAD_VARIABLES:
        current = env.get(name, "")
        value = threads
        if current.isdigit() and 0 < int(current) < threads:
            value = int(current)
        found[name] = str(value)
    return found


class SubprocessLauncher:
    """``python run.py train ...``: a new interpreter for every trial."""

    name = "subprocess"
    #: Whether :meth:`draw_history` draws the search's history plot in another process (a
    #: search whose launcher does not loads matplotlib itself while its trials run).
    draws_history = False

    def begin(self) -> None:
        pass

    def wait_ready(self) -> None:
        pass

    def launch(
        self, ident: int, request: TrainRequest, env: Mapping[str, str], out: Path
    ) -> TrialProcess:
        with open(out, "wb") as handle:
            return subprocess.Popen(
                request.command(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                start_new_session=True,  # its own process group: killed as one
                preexec_fn=die_with_parent,
            )

    def draw_history(self, history: Mapping[str, Any], out: Path) -> Path | None:
        """No process here has matplotlib warm: the search draws the plot itself."""
        return None

    def close(self) -> None:
        pass


class WarmChild:
    """A trial forked by the trial server; its exit code arrives through the server."""

    def __init__(self, ident: int | str) -> None:
        self.ident = ident
        self.pid = 0
        self.returncode: int | None = None
        self.error: str | None = None
        self.started = threading.Event()
        self.done = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.done.wait(timeout):
            raise subprocess.TimeoutExpired(f"trial {self.ident}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def finish(self, returncode: int, error: str | None = None) -> None:
        if self.returncode is None:
            self.returncode, self.error = returncode, error
        self.started.set()
        self.done.set()


class WarmLauncher:
    """The client side of :mod:`kennel.search.trial_server`: starts it, sends trials, tracks exits.

    A server that dies (killed, out of memory) fails the trials it was running; the next
    launch starts a new one.
    """

    name = "warm"
    draws_history = True  # a child of the server, which has matplotlib loaded

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        hello: Mapping[str, Any],
        log_path: Path,
    ) -> None:
        self.env = dict(env)
        self.hello = {"op": "hello", **hello}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.children: dict[int | str, WarmChild] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.timings: dict[str, float] = {}
        #: The task the server decided on the table it read (when the hello asked for it),
        #: and that table's rows; ``task_reported`` once it said (or exited).
        self.task: str | None = None
        self.rows: int | None = None
        self.task_reported = threading.Event()
        self.reader: threading.Thread | None = None

    # ------------------------------------------------------------------ the server
    def start(self) -> None:
        """Start the server and wait until it is warm."""
        self.begin()
        self.wait_ready()

    def begin(self) -> None:
        """Start the server; it warms up (imports, data) while the caller goes on."""
        import kennel

        src = str(Path(kennel.__file__).resolve().parent.parent)
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self.ready.clear()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kennel.search.trial_server"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                preexec_fn=die_with_parent,  # and it stops its trials when its input closes
            )
        self.reader = threading.Thread(
            target=self._read, args=(self.proc,), name="trial-server", daemon=True
        )
        self.reader.start()
        self._send(self.hello)

    def wait_ready(self) -> None:
        if self.proc is None:
            self.begin()
        assert self.proc is not None
        if not self.ready.wait(READY_TIMEOUT_S) or not self.alive():
            raise RuntimeError(f"the warm trial server did not start; see {self.log_path}")
        logger.info(
            "warm trial server ready (pid %d): %s",
            self.proc.pid,
            ", ".join(f"{k} {v:g}" for k, v in self.timings.items()),
        )

    def wait_task(self) -> str | None:
        """The task the server decided on the table it read (the hello asked for it), or
        None when it could not (the caller then loads the table itself)."""
        if self.proc is None:
            self.begin()
        self.task_reported.wait(READY_TIMEOUT_S)
        return self.task

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _send(self, message: Mapping[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                message = json.loads(raw)
            except json.JSONDecodeError:
                continue
            event = message.get("event")
            if event == "task":
                task, rows = message.get("task"), message.get("rows")
                self.task = task if isinstance(task, str) else None
                self.rows = rows if isinstance(rows, int) else None
                self.hello["task"] = False  # decided: a restarted server need not again
                self.task_reported.set()
                continue
            if event == "ready":
                self.timings = message.get("timings") or {}
                self.ready.set()
                continue
            with self.lock:
                child = self.children.get(message.get("id"))
            if child is None:
                continue
            if event == "started":
                child.pid = int(message["pid"])
                child.started.set()
            elif event == "exit":
                with self.lock:
                    self.children.pop(child.ident, None)
                child.finish(int(message["returncode"]))
            elif event == "error":
                with self.lock:
                    self.children.pop(child.ident, None)
                child.finish(-1, f"could not fork the trial: {message.get('message')}")
        # The server is gone: its children are orphans now; stop them and fail their trials.
        proc.wait()
        self.ready.set()
        self.task_reported.set()
        with self.lock:
            orphans = list(self.children.values())
            self.children.clear()
        for child in orphans:
            if child.pid:
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
            child.finish(-1, f"the warm trial server exited ({proc.returncode})")

    # ------------------------------------------------------------------ trials
    def launch(
        self, ident: int, request: TrainRequest, env: Mapping[str, str], out: Path
    ) -> TrialProcess:
        """Fork trial ``ident``: the server's child runs ``request``."""
        if not self.alive():
            logger.warning("the warm trial server is not running; starting a new one")
            self.start()
        child = self._submit(
            WarmChild(ident),
            {"op": "trial", "train": request.to_dict(), "env": dict(env), "out": str(out)},
        )
        if not child.started.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the warm trial server did not start trial {ident}")
        if child.error and child.pid == 0:
            raise RuntimeError(child.error)
        return child

    def draw_history(self, history: Mapping[str, Any], out: Path) -> Path | None:
        """The search's history plot (``history``: the arguments of
        :func:`kennel.search.results.history_plot`), drawn by a child of the warm server,
        which has matplotlib loaded; its path, or None when the server could not draw it
        (the caller then draws it itself)."""
        if not (self.ready.is_set() and self.alive()):
            return None
        child = WarmChild("history")
        try:
            self._submit(child, {"op": "plot", "history": dict(history), "out": str(out)})
            code = child.wait(PLOT_TIMEOUT_S)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            logger.info("the trial server did not draw the history plot: %s", exc)
            if child.pid:
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
            return None
        finally:
            with self.lock:
                self.children.pop(child.ident, None)
        path = Path(history["path"])
        if code == 0 and path.is_file():
            out.unlink(missing_ok=True)
            return path
        logger.info("the trial server did not draw the history plot (exit %s; see %s)", code, out)
        return None

    def _submit(self, child: WarmChild, request: dict[str, Any]) -> WarmChild:
        """Send ``request`` for ``child``, registered first: the server reports the child's
        start and exit by its id, possibly before the send returns."""
        with self.lock:
            self.children[child.ident] = child
        self._send({**request, "id": child.ident})
        return child

    def close(self) -> None:
        """Stop the server (it kills any child still running) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self.reader is not None:
            self.reader.join(timeout=5)
