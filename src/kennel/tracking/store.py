"""The tracking store: which one (an absolute URI, never a relative one), whether it answers,
its schema created once, experiments with an absolute artifact root, the UI's runs table.

MLflow is imported inside functions so that light commands stay light.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kennel import collector
from kennel.config import Config, project_root
from kennel.errors import UserError
from kennel.util import first_line, redact_url, sqlite_file

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)


#: Bounded retries for a tracking server (real environment variables win). MLflow's own
#: defaults (7 retries, backoff factor 2) keep a command retrying for minutes once the
#: server is gone; these give up after about 7 s, then the command exits 2 naming the URI.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


class TrackingUnavailable(UserError):
    """The tracking server or database cannot be reached (exit 2, URI without password)."""


def resolve_tracking_uri(config: Config | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri``, else an absolute SQLite URI in
    the project folder. A relative ``sqlite:///`` path is made absolute (against the working
    directory), so the store never silently changes with it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (config.tracking.uri if config else None)
    if not uri:
        return f"sqlite:///{project_root() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        relative = uri[len("sqlite:///") :]
        if relative != ":memory:":
            return f"sqlite:///{(Path.cwd() / relative).resolve()}"
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri).resolve().as_uri()  # a plain folder: file store
    return uri


def configure(config: Config | None = None) -> str:
    """Point MLflow at the resolved store (env var too, for child processes) and check
    that it answers; returns the URI. Most commands import MLflow here: in kennel's own
    process the garbage collector pauses meanwhile (:mod:`kennel.collector`)."""
    with collector.paused():
        import mlflow

        uri = resolve_tracking_uri(config)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        for name, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(name, value)
        mlflow.set_tracking_uri(uri)
        ensure_store(uri)
    return uri


def ensure_store(uri: str) -> None:
    """Create the store's schema (SQLite migrations) once, or fail with exit 2 when a
    server or database does not answer."""
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    _check_database(uri)
    try:
        _create_sqlite_store(uri)
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        from kennel.tracking.access import as_user_error, refusal

        if refusal(exc):
            raise as_user_error(exc, "read the tracking store", "READ") from None
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {redact_url(uri)}: {_first_line(exc)}"
        ) from None


def _create_sqlite_store(uri: str) -> None:
    """A new SQLite store gets its schema here, with MLflow's ``Default`` experiment (where
    ``mlflow run`` files runs when nobody chose an experiment) keeping its artifacts beside
    the file, as kennel's own experiments do: MLflow would give it ``./mlruns`` of whatever
    folder the first command ran in."""
    path = sqlite_file(uri)
    if path is None or not path.is_absolute():
        return
    if sqlite_created(path):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri, artifact_root(uri))


def sqlite_created(path: Path) -> bool:
    """Whether a SQLite store's file has been created (a schema is in it or on its way)."""
    return path.exists() and path.stat().st_size > 0


def store_kind(uri: str) -> str:
    """The kind of store a URI names: its scheme without a driver (``postgresql+psycopg``
    is ``postgresql``), lower case."""
    return uri.partition("://")[0].lower().split("+")[0]


def _check_database(uri: str) -> None:
    """Connect once to a database store: MLflow itself retries a refused login or a missing
    driver for about 100 s before it gives up."""
    if store_kind(uri) not in DATABASES:
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except ModuleNotFoundError as exc:
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {redact_url(uri)}: no driver ({exc.name}); "
            "install it, e.g. pip install -e '.[postgres]'"
        ) from None
    except Exception as exc:
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {redact_url(uri)}: {_first_line(exc)}"
        ) from None


#: Database stores kennel connects to once before MLflow does (:func:`_check_database`).
DATABASES = {"postgresql", "mysql", "mssql"}
#: Those whose host and port it first probes (:func:`check_reachable`): default ports.
PROBED_PORTS = {"postgresql": 5432, "mysql": 3306}
#: Query options that name the server another way (a socket folder, an ODBC string).
OTHER_ADDRESS = {"host", "unix_socket", "odbc_connect", "hostaddr", "service"}


def _database_address(uri: str, backend: str) -> tuple[str, int] | None:
    """(host, port) of a database URI as SQLAlchemy reads it (a password may hold "/",
    "#" or "?"); None when it names no TCP host of its own (a Unix socket, a service)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's ArgumentError and kin
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {redact_url(uri)}: {_first_line(exc)}"
        ) from None
    if not url.host or OTHER_ADDRESS & set(url.query):
        return None
    return url.host, url.port or PROBED_PORTS[backend]


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast with a clear message when an HTTP server or database host is down,
    instead of MLflow's minutes of retries."""
    scheme = uri.partition("://")[0].lower()
    if scheme in {"http", "https"}:
        try:
            parts = urlsplit(uri)
            host, port = parts.hostname, parts.port or (80 if scheme == "http" else 443)
        except ValueError:  # MLflow's own request says what is wrong with it
            return
    elif store_kind(uri) in PROBED_PORTS:
        address = _database_address(uri, store_kind(uri))
        if address is None:
            return
        host, port = address
    else:
        return
    host = host or "localhost"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except (OSError, UnicodeError, ValueError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or first_line(exc)
        raise TrackingUnavailable(
            f"cannot reach the MLflow tracking store {redact_url(uri)}: {reason}"
        ) from None


def _first_line(exc: BaseException) -> str:
    return redact_url(first_line(exc))


def client() -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite file (absolute), never a
    ``./mlruns`` that moves with the working directory; servers decide for themselves."""
    path = sqlite_file(uri)
    return (path.parent / "mlruns").resolve().as_uri() if path is not None else None


#: The experiment MLflow files runs under when nobody chose one (``mlflow run`` included).
DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT = "Default"


def chosen_experiment(config: Config | None) -> str | None:
    """The experiment a user chose, if any: ``tracking.experiment`` (YAML, ``.env``, CLI),
    else MLflow's own ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` (``mlflow run
    --experiment-name`` sets the id). MLflow's ``Default`` experiment, where ``mlflow run``
    puts runs when nobody chose, counts as no choice."""
    if config is not None and config.tracking.experiment:
        return config.tracking.experiment
    if name := os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return name
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if experiment_id and experiment_id != DEFAULT_EXPERIMENT_ID:
        with contextlib.suppress(Exception):  # an id this store does not know: no choice
            return client().get_experiment(experiment_id).name
    return None


def experiment_for(config: Config | None, default: str) -> str:
    """Where a command's runs go: the user's choice, else ``default`` (the data's name, as
    the registered model is named: cat and dog runs of one data set share it)."""
    return chosen_experiment(config) or default


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created with an absolute artifact root if needed."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking = client()
    experiment = tracking.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return tracking.create_experiment(
            name, artifact_location=artifact_root(mlflow.get_tracking_uri())
        )
    except MlflowException:  # created meanwhile by a parallel run
        found = tracking.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def set_experiment(name: str) -> str:
    """Make ``name`` the active experiment (created if needed, see :func:`ensure_experiment`)."""
    import mlflow

    return mlflow.set_experiment(experiment_id=ensure_experiment(name)).experiment_id


def runs_table_url(experiment_id: str, uri: str | None = None) -> str:
    """The MLflow UI link that opens the classic runs table (not the GenAI view)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    base = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_hint(experiment_id: str, uri: str | None = None) -> str:
    """Where to look at a run's experiment: the runs table, and for a local store how to
    start the UI that serves it."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    link = runs_table_url(experiment_id, uri)
    if uri.startswith(("http://", "https://")):
        return f"runs table: {link}"
    import shlex

    # Quoted for the shell when needed: a SQLite URI may carry options (``?timeout=30``).
    shown = redact_url(uri)
    store = shlex.quote(shown)
    hidden = ", with the password for ***" if shown != uri else ""
    return f"runs table: {link} (start the UI first: mlflow ui --backend-store-uri {store}{hidden})"


def get_run(run_id: str) -> Run:
    return client().get_run(run_id)


@contextlib.contextmanager
def lost_store_guard(uri: str | None) -> Iterator[None]:
    """Turn a tracking server lost during the block into a user error (exit 2) naming it,
    instead of whatever the failed call raised."""
    try:
        yield
    except Exception as exc:
        if uri is None or isinstance(exc, TrackingUnavailable):
            raise
        try:
            check_reachable(uri)
        except TrackingUnavailable as lost:
            raise TrackingUnavailable(f"{lost} (lost during the command)") from None
        raise
