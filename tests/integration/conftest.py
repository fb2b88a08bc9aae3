"""Real services for the team set-up: a PostgreSQL cluster and an MLflow tracking server.

Both are started once per session on free ports of 127.0.0.1, in temporary folders, and
stopped in finalizers even when a test (or the start itself) fails. Every wait is bounded.
Nothing is skipped: without the PostgreSQL server binaries the tests fail and say how to
install them (``.ci/run`` does).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
DB_USER = "kennel"

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: the integration tests need them. "
    "Install them with `apt-get update && apt-get install -y postgresql` (.ci/run does), "
    "or put their folder on PATH."
)


# --------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _live_processes(field: int, value: int) -> list[int]:
    """Live (non-zombie) processes whose /proc stat field (after the name: 1 = parent,
    2 = process group) equals ``value``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[field]) == value:
            found.append(int(entry.name))
    return found


def pids_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    return _live_processes(2, pgid)


def children_of(ppid: int) -> list[int]:
    """Live (non-zombie) children of ``ppid``."""
    return _live_processes(1, ppid)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 20) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=wait)
    deadline = time.monotonic() + wait
    while pids_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pids_in_group(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while pids_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    # Reap it: a leader that exited after the first wait timed out is a zombie until
    # waited for (and Python warns "subprocess ... is still running" at exit).
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Until ``url`` answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a server or CLI child: no MLflow/kennel variables leak in."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KENNEL_", "_KENNEL_"))
    }
    env.update(extra)
    return env


# --------------------------------------------------------------------------- PostgreSQL
def find_pg_bin() -> Path:
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)  # type: ignore[arg-type]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    pytest.fail(INSTALL_HINT, pytrace=False)


class Postgres:
    """A throwaway cluster: ``initdb`` into a temp folder, ``pg_ctl`` on 127.0.0.1:<port>.

    initdb refuses to run as root, so as root the server runs as the ``postgres`` OS user
    (created by Debian's package) through ``runuser``.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(8)
        #: The ``direct`` database's owner: a password as generated ones often are, with
        #: characters urllib reads as the end of the user part (``/``, ``#``, ``?``).
        self.direct_password = f"pw/{secrets.token_hex(6)}#?x"
        self.folder = Path(tempfile.mkdtemp(prefix="kennel-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.postmaster: int | None = None
        self.os_user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(
                    "running as root, PostgreSQL needs an unprivileged OS user 'postgres' "
                    "(apt-get install postgresql creates it)",
                    pytrace=False,
                )
            self.os_user = "postgres"
            shutil.chown(self.folder, user="postgres")
            self.folder.chmod(0o700)

    def url(
        self,
        database: str,
        *,
        password: str | None = None,
        port: int | None = None,
        user: str = DB_USER,
    ) -> str:
        pw = self.password if password is None else password
        return f"postgresql+psycopg://{user}:{pw}@{HOST}:{port or self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", self.os_user, "--"] if self.os_user else []
        return [*prefix, *args]

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            self._cmd(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
            env=clean_env(LC_ALL="C.UTF-8", LANG="C.UTF-8"),
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}\n{tail(self.log)}"
            )

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = f"-h {HOST} -p {self.port} -k {self.folder} -c fsync=off -c max_connections=100"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.postmaster = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        import psycopg

        admin = psycopg.connect(
            host=str(self.folder), port=self.port, user="postgres", dbname="postgres",
            autocommit=True, connect_timeout=10,
        )  # fmt: skip
        with admin:
            admin.execute(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{self.password}'")
            for database in ("mlflow", "optuna"):
                admin.execute(f"CREATE DATABASE {database} OWNER {DB_USER}")
            admin.execute(f"CREATE ROLE direct LOGIN PASSWORD '{self.direct_password}'")
            admin.execute("CREATE DATABASE direct OWNER direct")

    def processes(self) -> list[int]:
        if self.postmaster is None or not pid_alive(self.postmaster):
            return []
        return [self.postmaster, *children_of(self.postmaster)]

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(Exception):
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                    "-t", "30", "stop", timeout=40,
                )  # fmt: skip
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- MLflow server
class MlflowServer:
    """``mlflow server`` on a PostgreSQL backend, artifacts proxied into a temp folder.

    ``kill()`` simulates a lost server; ``start()`` again reuses the same port and database.
    """

    def __init__(self, backend_uri: str, folder: Path) -> None:
        self.backend_uri = backend_uri
        self.folder = folder
        self.artifacts = folder / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 120) -> None:
        self.starts += 1
        log = self.folder / f"server-{self.starts}.log"
        cmd = [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", str(self.artifacts),
            "--serve-artifacts",
            "--host", HOST, "--port", str(self.port),
            "--workers", "2",
        ]  # fmt: skip
        with open(log, "wb") as handle:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.folder,
                env=clean_env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_http(f"{self.uri}/health", self.proc, timeout, log)
        except RuntimeError as exc:
            self.stop()
            pytest.fail(f"mlflow server did not start: {exc}", pytrace=False)

    def processes(self) -> list[int]:
        return pids_in_group(self.proc.pid) if self.proc else []

    def kill(self) -> None:
        """Lose the server at once (SIGKILL), as a crash or a pulled cable would."""
        if self.proc:
            kill_group(self.proc, signal.SIGKILL, wait=15)

    def stop(self) -> None:
        if self.proc:
            kill_group(self.proc, signal.SIGTERM, wait=3)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A running PostgreSQL with databases ``mlflow`` (the server's) and ``optuna`` owned by
    ``kennel``, and ``direct`` (a tracking store used without a server) owned by ``direct``."""
    cluster = Postgres(find_pg_bin())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    left = cluster.processes()
    assert not left, f"PostgreSQL processes left behind: {left}"


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """A tracking server on the ``mlflow`` database (restartable on the same port)."""
    server = MlflowServer(postgres.url("mlflow"), tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
    left = server.processes()
    assert not left, f"mlflow server processes left behind: {left}"


@pytest.fixture
def team_env(mlflow_server: MlflowServer, tmp_path: Path) -> dict[str, str]:
    """What a team member's machine sets: the server URI (and a local output folder)."""
    return {
        "MLFLOW_TRACKING_URI": mlflow_server.uri,
        "KENNEL_TRAINING__OUTPUT_ROOT": str(tmp_path / "outputs"),
    }
