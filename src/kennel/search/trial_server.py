"""The warm trial server: one process per search worker that pays the start-up once.

It imports kennel, MLflow, scikit-learn, matplotlib and (for fork-safe families) the
family's libraries, reads the search's data once, and then forks a fresh child for every
trial. The child is still a process of its own (its own process group, killed as one on a
timeout or Ctrl-C; a crash or a leak ends with it) and runs exactly what a subprocess trial
runs: ``kennel train`` with the same arguments and environment, through
:func:`kennel.train.run_training` under the exit-code policy of :func:`kennel.jobs.run_job`,
with its output in the trial's ``trial.out``.

Nothing that starts threads or keeps a connection runs here before a fork: no training.
OpenMP (LightGBM) and TensorFlow's runtime start in the children only. The tracking store is
opened once, at the first trial, and every connection is closed again before the fork
(:func:`warm_store`): each child opens its own.

Protocol: JSON lines. The search writes ``{"op": "trial", "id", "train", "env", "out"}``
(``train``: a :class:`kennel.search.trials.TrainRequest` as a dict), and at its end
``{"op": "plot", "id", "history", "out"}`` (``history``: the arguments of
:func:`kennel.search.results.history_plot`; a child with matplotlib warm draws it, so the
search process never imports it) (``"op": "stop"`` or end of input stops the server, which
then kills its live children);
the server answers ``{"event": "task", "task", "rows"}`` as soon as it has read the table when
the hello asked for the task (both left out when it could not decide it),
``{"event": "ready", "timings"}`` once warm, ``{"event": "started", "id", "pid"}``
and ``{"event": "exit", "id", "returncode"}`` (negative: killed by that signal).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from kennel import collector

logger = logging.getLogger("kennel.search.trial_server")

#: Modules every trial imports, whatever the family (all fork-safe).
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "sklearn.metrics",
    "sqlalchemy",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.models",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "kennel.jobs",
    "kennel.train",
    "kennel.tracking",
    "kennel.serve.pyfunc",
    "kennel.registry",
    "kennel.report",
    "kennel.report.plots",
    "kennel.metrics",
    "kennel.data",
)
#: Imported too when installed: GitPython (MLflow's git run context imports it in every
#: run, ~35 ms a trial; without a git executable it may fail to import, as in the trials).
OPTIONAL_PRELOAD = ("git",)
#: Seconds a child gets between SIGTERM and SIGKILL when the server stops.
STOP_GRACE_S = 3.0


def _send(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def warm_up(
    hello: dict[str, Any], report: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, float]:
    """Read the data, import, draw once; each step is optional (a failure is logged and
    left to the trials, which report it as their own error). With ``"task": true`` in the
    hello, ``report`` gets what :func:`_task` decided as soon as the data is read, before
    the other imports (the search then needs no read of its own)."""
    import importlib

    timings: dict[str, float] = {}
    if hello.get("config"):  # first: the search may be waiting for the task
        t = time.perf_counter()
        found: dict[str, Any] = {}
        try:
            from kennel.config import load_config
            from kennel.data.sources import preload

            config = load_config(hello["config"], hello.get("overrides", [])).config
            # On a cluster the workers read the data.
            preloaded = config.resource.cluster == "none" and preload(config.data)
            timings["data_s"] = round(time.perf_counter() - t, 3)
            if preloaded and hello.get("task"):
                t = time.perf_counter()
                found = _task(config)
                timings["task_s"] = round(time.perf_counter() - t, 3)
        except Exception as exc:  # the trial will report it with its own exit code
            logger.info("warm-up: data not preloaded: %s", exc)
        if hello.get("task") and report is not None:
            report(found)
    started = time.perf_counter()
    for name in (*PRELOAD, *hello.get("preload", []), *OPTIONAL_PRELOAD):
        try:
            importlib.import_module(name)
        except Exception as exc:
            log = logger.info if name in OPTIONAL_PRELOAD else logger.warning
            log("warm-up: cannot import %s: %s", name, exc)
    timings["imports_s"] = round(time.perf_counter() - started, 3)
    if hello.get("family"):
        t = time.perf_counter()
        try:
            from kennel.families import get_family

            family = get_family(hello["family"])
            if family.fork_safe:
                for kind in family.kinds:
                    family._resolve(kind)
                timings["family_s"] = round(time.perf_counter() - t, 3)
            else:
                logger.info(
                    "family %s is not fork-safe: each trial imports its libraries", family.name
                )
        except Exception as exc:
            logger.warning("warm-up: family %s: %s", hello["family"], exc)
    t = time.perf_counter()
    try:
        # Logging a model checks its requirements against the installed distributions;
        # MLflow maps modules to distributions once per process (~0.3 s), then caches it.
        # The search builds that map while this server imports; else it is built here.
        from pathlib import Path

        from kennel.serve import distributions

        given = hello.get("distributions")
        if not (given and distributions.seed(Path(given))):
            from mlflow.utils.requirements_utils import _init_packages_to_modules_map

            _init_packages_to_modules_map()
        timings["requirements_s"] = round(time.perf_counter() - t, 3)
    except Exception as exc:  # a private MLflow helper: only a missed saving if it moves
        logger.info("warm-up: requirements map not built: %s", exc)
    t = time.perf_counter()
    try:
        from kennel.report.figures import warm_up as warm_plots

        warm_plots()
        timings["plots_s"] = round(time.perf_counter() - t, 3)
    except Exception as exc:
        logger.warning("warm-up: plots: %s", exc)
    return timings


def warm_store(env: Mapping[str, str]) -> float | None:
    """Before the first fork: build MLflow's tracking and registry stores for the trials'
    tracking URI (from ``env``, the trial's environment), then close every connection they
    opened (SQLAlchemy's ``Engine.dispose()`` before a fork, as its documentation advises).

    MLflow keeps one store per URI in each process, so each child finds them built: the
    tracing modules its URI needs imported, the schema checked, SQLAlchemy's mappers
    configured. It opens its own connection on first use. That is ~0.1 s less per trial.
    SQL stores only (sqlite, postgresql, mysql, mssql), and a SQLite file only once it holds
    a schema; the seconds it took, or None when nothing was warmed (a failure is logged and
    left to the trials)."""
    from kennel.tracking.store import DATABASES, sqlite_created, store_kind
    from kennel.util import first_line, redact_url, sqlite_file

    uri = env.get("MLFLOW_TRACKING_URI") or ""
    registry_uri = env.get("MLFLOW_REGISTRY_URI") or uri
    if not {store_kind(uri), store_kind(registry_uri)} <= {"sqlite", *DATABASES}:
        return None
    for sqlite in filter(None, map(sqlite_file, (uri, registry_uri))):
        if not sqlite_created(sqlite):
            return None  # no schema yet: never migrate a store here (the trials' own check)
    started = time.perf_counter()
    try:
        import mlflow
        from mlflow.tracking._model_registry.utils import _get_store as registry_store
        from mlflow.tracking._tracking_service.utils import _get_store as tracking_store

        mlflow.set_tracking_uri(uri)
        tracking_store(uri)
        registry_store(registry_uri)
    except Exception as exc:  # private MLflow helpers: only a missed saving if they move
        # A database's error may quote its URI: no password in the server's log.
        logger.info("warm-up: tracking store not opened: %s", redact_url(first_line(exc)))
        return None
    finally:
        _close_connections()
    return round(time.perf_counter() - started, 3)


def _close_connections() -> None:
    """Close every pooled connection of the SQL engines MLflow keeps per URI (also those of
    a store whose set-up failed): a child opens its own."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    from kennel.util import first_line, redact_url

    for store in (TrackingStore, RegistryStore):
        for engine in list(getattr(store, "_engine_map", {}).values()):
            try:
                engine.dispose()
            except Exception as exc:  # the child's own pool is made on first use anyway
                logger.warning(
                    "warm-up: closing %s: %s",
                    redact_url(str(engine.url)),
                    redact_url(first_line(exc)),
                )


def _task(config: Any) -> dict[str, Any]:
    """``task`` decided on the whole (preloaded) table, as every trial decides it, with the
    table's ``rows``; nothing when the table cannot be loaded (the search then loads it
    itself and reports why)."""
    from kennel.data import DataProcessor

    try:
        processor = DataProcessor(config.data)
        processor.load()
    except Exception as exc:
        logger.info("warm-up: no task decided: %s", exc)
        return {}
    return {"task": processor.loaded_task[0], "rows": processor.n_rows}


def _child(request: dict[str, Any]) -> int:
    """In the forked child: become the trial process and run ``kennel train`` (or, for a
    ``plot`` request, draw the search's history plot)."""
    from kennel.search.launchers import die_with_parent

    server = int(request.get("server_pid") or 0)
    os.setpgid(0, 0)
    die_with_parent()  # the server gone (killed with its search): so is the trial
    if server and os.getppid() != server:  # it died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    if request.get("op") == "plot":
        return _draw_history(request["history"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["run.py", "train"]
    logging.getLogger().handlers.clear()
    from kennel.jobs import run_job, start_logging
    from kennel.train import run_training

    train = request["train"]
    start_logging()
    return run_job(
        "train",
        lambda: (
            run_training(
                train["config"],
                train["overrides"],
                output_dir=train["output_dir"],
                log_model_if=train["log_model_if"],
            )
            and 0
        ),
    )


def _draw_history(history: dict[str, Any]) -> int:
    from pathlib import Path

    from kennel.search.results import history_plot

    drawn = history_plot(
        history["rows"], history["metric"], history["direction"], Path(history["path"])
    )
    return 0 if drawn is not None else 3


def _fork(request: dict[str, Any], children: dict[int, Any]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _child(request)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                import atexit

                atexit._run_exitfuncs()
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    # Also here: no window where a kill would miss the group (the child may have done it
    # first, or exited already).
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    children[pid] = request["id"]
    _send({"event": "started", "id": request["id"], "pid": pid})


def _reap(children: dict[int, Any]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ident = children.pop(pid, None)
        if ident is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        _send({"event": "exit", "id": ident, "pid": pid, "returncode": code})


def _stop_children(children: dict[int, Any]) -> None:
    for pid in list(children):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while children and time.monotonic() < deadline:
        _reap(children)
        time.sleep(0.05)
    for pid in list(children):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    while children:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        children.pop(pid, None)


def serve() -> int:
    """The server loop: read requests from stdin, fork, report exits; stop on EOF."""
    # Ctrl-C reaches the search's whole process group; the search decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    collector.own_process()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-8s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    buffer = b""
    children: dict[int, Any] = {}
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    ready = False
    store_warm = False
    while True:
        events = selector.select(timeout=0.02)
        _reap(children)
        if not events:
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        buffer += chunk
        stop = False
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            request = json.loads(line)
            op = request.get("op")
            if op == "hello" and not ready:
                with collector.paused():  # frozen before the first fork
                    timings = warm_up(request, lambda found: _send({"event": "task", **found}))
                ready = True
                logger.info("warm: %s; %d objects frozen", timings, gc.get_freeze_count())
                _send({"event": "ready", "timings": timings})
            elif op == "trial" or (op == "plot" and ready):
                if op == "trial" and not store_warm:  # the search's parent run exists now
                    store_warm = True
                    with collector.paused():
                        took = warm_store(request.get("env") or {})
                    if took is not None:
                        logger.info("tracking store opened and closed again in %.3f s", took)
                request["server_pid"] = os.getpid()
                try:
                    _fork(request, children)
                except OSError as exc:
                    _send({"event": "error", "id": request.get("id"), "message": str(exc)})
            elif op == "stop":
                stop = True
        if stop:
            break
    _stop_children(children)
    return 0


if __name__ == "__main__":
    code = serve()
    logging.shutdown()
    sys.stderr.flush()
    # No interpreter tear-down (a second for all the modules loaded here): nothing is left
    # to flush, and the search waits for this exit.
    os._exit(code)
