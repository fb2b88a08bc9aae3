"""Where data work runs: this process, a Dask ``LocalCluster``, or an existing Dask cluster.

``resource.cluster`` picks it:

* ``none`` (default): nothing here is imported; every command works on pandas in-process.
* ``local`` / ``local:N``: a ``distributed.LocalCluster`` of N worker processes on 127.0.0.1
  (``local`` = one per core), started by the command and stopped when it ends. Each worker
  gets ``cores // N`` threads (``resource.num_threads`` caps it) and the matching
  ``OMP_NUM_THREADS``, so LightGBM in N workers never oversubscribes the machine.
* a scheduler address (``tcp://host:8786``): an existing cluster (``dask scheduler`` /
  ``dask worker``, Kubernetes, YARN ...). kennel connects, never stops it. Its workers need
  the same kennel and libraries installed.

Dask is imported only here and only when a cluster is asked for (the ``cluster`` extra).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kennel.errors import UserError
from kennel.util import first_line

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

#: Seconds to wait for a scheduler before giving up with a one-line error.
CONNECT_TIMEOUT_S = 10
#: Seconds to wait for a LocalCluster's workers to start.
START_TIMEOUT_S = 120


@dataclass(frozen=True)
class ClusterInfo:
    """What a run records about the cluster it used (params ``cluster.*``, tag)."""

    setting: str
    """``local:2`` or the scheduler address, as configured."""
    address: str
    workers: int
    threads: int
    """Threads of all workers together."""
    dashboard: str | None

    def params(self) -> dict[str, str]:
        return {
            "cluster": self.setting,
            "cluster.workers": str(self.workers),
            "cluster.threads": str(self.threads),
        }

    @property
    def lasting_dashboard(self) -> str | None:
        """The dashboard, where it outlives the command: a scheduler the user runs (a local
        cluster's stops with the command; its address is in the log only)."""
        return None if self.setting.startswith("local") else self.dashboard

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dashboard": self.lasting_dashboard}


def is_distributed(setting: str) -> bool:
    return setting.strip() != "none"


def local_workers(setting: str, cores: int | None = None) -> int:
    """N of ``local:N`` (``local`` = one worker per core)."""
    _, _, count = setting.partition(":")
    return int(count) if count else max(1, cores or os.cpu_count() or 1)


def _require_dask() -> None:
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"resource.cluster needs Dask ({exc.name} is not installed); install kennel's "
            "cluster extra: pip install -e '.[cluster]'"
        ) from None


def _quiet_dask_logs() -> None:
    """Dask logs every worker start and stop at INFO; kennel's log says what matters."""
    for name in ("distributed", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)  # each nunique's shuffle
    logging.getLogger("bokeh").setLevel(logging.ERROR)  # "Host wildcard '*'" on every start


@contextlib.contextmanager
def connect(setting: str, *, num_threads: int = 0) -> Iterator[tuple[Client, ClusterInfo]]:
    """A Dask client for ``setting`` (not ``none``), and what to record about it.

    A LocalCluster is started here and closed on exit; a scheduler address is connected to
    and left running. A scheduler that cannot be reached is a :class:`UserError` naming it.
    """
    _require_dask()
    import dask
    from distributed import Client

    _quiet_dask_logs()  # after the import: distributed sets its loggers' levels on import

    # Tasks write their own output; nothing must spill the client's own memory.
    dask.config.set({"distributed.worker.daemon": False, "dataframe.convert-string": False})
    if setting.startswith("local"):
        with _local_cluster(setting, num_threads) as (client, info):
            yield client, info
        return
    try:
        client = Client(setting, timeout=CONNECT_TIMEOUT_S, set_as_default=True)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UserError(
            f"cannot reach the Dask scheduler at {setting} (resource.cluster) within "
            f"{CONNECT_TIMEOUT_S} s: {first_line(exc)}"
        ) from None
    try:
        info = _describe(client, setting)
        if info.workers == 0:
            raise UserError(f"the Dask scheduler at {setting} has no workers")
        logger.info(
            "connected to the Dask scheduler at %s: %d workers, %d threads; dashboard %s",
            setting,
            info.workers,
            info.threads,
            info.dashboard or "(not available)",
        )
        yield client, info
    finally:
        client.close()


@contextlib.contextmanager
def _local_cluster(setting: str, num_threads: int) -> Iterator[tuple[Client, ClusterInfo]]:
    """A LocalCluster of ``local:N`` worker processes on 127.0.0.1, closed on exit."""
    from distributed import Client, LocalCluster

    cores = os.cpu_count() or 1
    workers = local_workers(setting, cores)
    threads = max(1, cores // workers)
    if num_threads:
        threads = min(threads, num_threads)
    env = {
        name: str(threads)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }
    try:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            env=env,
            silence_logs=logging.WARNING,
            timeout=START_TIMEOUT_S,
        )
    except Exception as exc:  # noqa: BLE001 - any start failure is one line
        raise UserError(
            f"cannot start a Dask LocalCluster ({setting}): {first_line(exc)}"
        ) from None
    _quiet_dask_logs()  # again: LocalCluster(silence_logs=...) reset the levels
    try:
        client = Client(cluster)
        # Native libraries in the workers (LightGBM's network set-up) print to stdout,
        # which a LocalCluster's workers share with this terminal: silence it there.
        client.run(_silence_stdout)
        info = _describe(client, setting)
        logger.info(
            "started a Dask LocalCluster: %d worker processes x %d thread(s); dashboard %s",
            info.workers,
            threads,
            info.dashboard or "(not available)",
        )
        try:
            yield client, info
        finally:
            client.close()
    finally:
        cluster.close()


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _describe(client: Client, setting: str) -> ClusterInfo:
    workers = client.scheduler_info().get("workers", {})
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    dashboard = None
    with contextlib.suppress(Exception):
        dashboard = client.dashboard_link or None
    return ClusterInfo(
        setting=setting,
        address=str(client.scheduler.address),
        workers=len(workers),
        threads=threads,
        dashboard=dashboard,
    )


__all__ = ["ClusterInfo", "connect", "is_distributed", "local_workers"]
