"""Headless Chromium and the MLflow UI for tests that look at pages the way a user does.

The MLflow UI is a React app: its HTML is an empty shell until the JavaScript has fetched the
runs, so reading it over plain HTTP proves nothing. Chromium renders it; ``--dump-dom`` prints
the DOM after the page has run and ``--screenshot`` paints it. ``--virtual-time-budget`` makes
Chromium wait: virtual time stands still while fetches are in flight, so the budget only runs
down once the page is idle, and the dump comes after the data has arrived.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

#: Where Debian (``chromium``), other distributions and Google put the browser.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Headless, as root (no sandbox), in a container (no GPU, a small /dev/shm), and quiet on
#: a machine without network: no background requests to Google's hosts, no updates, no
#: sync, no first-run dialogs, no proxy for 127.0.0.1.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--hide-scrollbars",
    "--mute-audio",
)


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROME_BIN`` when set, else the first of ``CHROMIUM_NAMES``
    on PATH (or in /usr/bin, which a test's PATH may lack)."""
    if os.environ.get("CHROME_BIN"):
        return shutil.which(os.environ["CHROME_BIN"])
    for name in CHROMIUM_NAMES:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if found:
            return found
    return None


def install_chromium(timeout: float = 240) -> str | None:
    """Install Debian's ``chromium`` with apt-get, as ``.ci/run`` does; ``None`` when that
    worked, else one line saying why not (so a skip can name the reason)."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]
    else:
        return "not root and no sudo to run apt-get"
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    deadline = time.monotonic() + timeout
    for step in (
        ["update", "-qq"],
        ["install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        command = [*apt, *step]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired:
            return f"'{' '.join(command)}' took over {timeout:.0f}s"
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            return f"'{' '.join(command)}' exited {result.returncode}: {lines[-1]}"
    return None


@dataclass(frozen=True)
class Chromium:
    """One headless Chromium binary; every call runs a fresh browser with a profile of its
    own under ``scratch`` (no state carries over, and parallel calls never share a lock)."""

    binary: str
    scratch: Path

    def dump_dom(self, url: str, *, budget_ms: int = 20_000, timeout: float = 90) -> str:
        """The DOM of ``url`` once the page has been idle for ``budget_ms`` of virtual time."""
        return self._run(url, [f"--virtual-time-budget={budget_ms}", "--dump-dom"], timeout)

    def dump_dom_until(
        self, url: str, texts: Iterable[str], *, timeout: float = 120, budget_ms: int = 20_000
    ) -> str:
        """The DOM of ``url`` as soon as it holds every one of ``texts``, else the last DOM
        seen when ``timeout`` runs out. Each try doubles the budget: a loaded machine (or a
        server still warming its workers) can answer the first fetches late."""
        wanted = list(texts)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            dom = self.dump_dom(url, budget_ms=budget_ms, timeout=max(left, 30))
            if all(text in dom for text in wanted) or time.monotonic() >= deadline:
                return dom
            budget_ms *= 2
            time.sleep(1)

    def screenshot(
        self,
        url: str,
        path: Path,
        *,
        size: tuple[int, int] = (1600, 1000),
        budget_ms: int = 20_000,
        timeout: float = 90,
    ) -> Path:
        """A PNG of ``url`` painted in a ``size`` window (idle for ``budget_ms`` first)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        flags = [
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={path}",
        ]
        self._run(url, flags, timeout)
        if not path.is_file():
            raise AssertionError(f"chromium wrote no screenshot of {url} to {path}")
        return path

    def _run(self, url: str, flags: list[str], timeout: float) -> str:
        """Run the browser on ``url``; its stdout. Chromium starts a tree of processes
        (zygote, renderer, GPU), so it gets a process group that a timeout kills whole."""
        with tempfile.TemporaryDirectory(dir=self.scratch, prefix="profile-") as profile:
            command = [self.binary, *FLAGS, f"--user-data-dir={profile}", *flags, url]
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_group(process, grace=0)
                _, err = process.communicate()
                raise TimeoutError(
                    f"chromium took over {timeout:.0f}s on {url}: {_tail(err)}"
                ) from None
            finally:
                stop_group(process, grace=5)
        if process.returncode != 0:
            raise AssertionError(f"chromium exited {process.returncode} on {url}: {_tail(err)}")
        return out


def not_blank(png: Path) -> bool:
    """Whether a screenshot shows anything: not every pixel the same colour (a page that
    failed to paint, or a blank one, is a single flat colour)."""
    from PIL import Image

    with Image.open(png) as image:
        extrema = image.convert("RGB").getextrema()
    return any(low != high for low, high in extrema)


def wait_for_http(
    url: str, *, timeout: float = 120, process: subprocess.Popen | None = None
) -> float:
    """Poll ``url`` until it answers 200; the seconds waited. ``RuntimeError`` as soon as
    ``process`` (the server) has exited, ``TimeoutError`` after ``timeout`` seconds."""
    started = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(0.25)


def stop_group(process: subprocess.Popen, *, grace: float = 30) -> None:
    """Stop ``process`` and every process of its group (it must have been started with
    ``start_new_session=True``): SIGTERM, then SIGKILL for whatever is left after ``grace``
    seconds. ``mlflow ui`` leaves job consumers behind that outlive its main process by
    seconds, so the group, not the leader, is waited for."""
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, or the group never empties
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    process.wait()


@contextmanager
def mlflow_ui(backend_store_uri: str, log: Path, *, timeout: float = 120) -> Iterator[str]:
    """``mlflow ui --backend-store-uri URI`` on a free port of 127.0.0.1, as a user starts
    it; yields its base URL and always stops it (the whole process group) on the way out."""
    from kennel.serve.server import free_port

    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend_store_uri]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as sink:
        server = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            try:
                wait_for_http(f"{base}/health", timeout=timeout, process=server)
            except (RuntimeError, TimeoutError) as error:
                raise AssertionError(f"{error}; its log: {_tail(log.read_text())}") from None
            yield base
        finally:
            stop_group(server)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
