"""What the warm trial server prepares before it forks a trial (kennel.search.trial_server):
MLflow's stores built once with no connection left open, and the readers of the data
imported. Each check runs in a fresh interpreter, as the server does."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT, Store


def _python(code: str, *args: str) -> dict:
    """``code`` in a fresh interpreter; the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"),
             "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_store_is_built_once_and_no_connection_crosses_the_fork(store: Store) -> None:
    store.create_schema()
    found = _python(
        """
        import json, os, sys
        from pathlib import Path
        from kennel.search.trial_server import warm_store
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        uri, db = sys.argv[1], Path(sys.argv[2]).resolve()

        def open_on_db():
            fds = Path("/proc/self/fd")
            return sum(1 for fd in fds.iterdir()
                       if str(os.path.realpath(fd)).startswith(str(db)))

        took = warm_store({"MLFLOW_TRACKING_URI": uri})
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a trial: finds the engine built, opens its own connection
            from mlflow.tracking import MlflowClient
            built = uri.removeprefix("sqlite:///") in str(list(SqlAlchemyStore._engine_map))
            inherited = open_on_db()
            client = MlflowClient(uri)
            exp = client.create_experiment("forked")
            run = client.create_run(exp)
            client.log_metric(run.info.run_id, "m", 1.0)
            client.set_terminated(run.info.run_id)
            os.write(write, json.dumps({"built": built, "inherited": inherited}).encode())
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        child = json.loads(os.read(read, 4096))
        print(json.dumps({"took": took, "open": open_on_db(), "status": status, **child}))
        """,
        store.uri,
        str(store.folder / "mlflow.db"),
    )
    assert isinstance(found["took"], float), found
    assert found["open"] == 0, found  # the server holds no connection to the store
    assert found["inherited"] == 0, found
    assert found["built"] is True, found
    assert found["status"] == 0, found
    with sqlite3.connect(store.folder / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    runs = store.client().search_runs(
        [store.client().get_experiment_by_name("forked").experiment_id]
    )
    assert [r.data.metrics for r in runs] == [{"m": 1.0}]


def test_stores_without_sql_connections_are_left_to_the_trials(tmp_path: Path) -> None:
    found = _python(
        """
        import json, sys
        from kennel.search.trial_server import warm_store
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        missing = "sqlite:///" + sys.argv[1] + "/no/such/folder/mlflow.db"
        print(json.dumps({
            "http": warm_store({"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
            "file": warm_store({"MLFLOW_TRACKING_URI": "file:///tmp/mlruns"}),
            "registry on http": warm_store({"MLFLOW_TRACKING_URI": "sqlite:////tmp/x.db",
                                            "MLFLOW_REGISTRY_URI": "http://127.0.0.1:9"}),
            "none": warm_store({}),
            "unopenable": warm_store({"MLFLOW_TRACKING_URI": missing}),
            "pools": [e.pool.checkedin() for e in SqlAlchemyStore._engine_map.values()],
        }))
        """,
        str(tmp_path),
    )
    assert found["http"] is None and found["file"] is None and found["none"] is None, found
    assert found["registry on http"] is None, found
    assert found["unopenable"] is None, found  # the trials report it themselves
    assert not (tmp_path / "no").exists()  # no store created (nor migrated) by the server
    assert found["pools"] == [0] * len(found["pools"]), found


def test_preloading_the_data_imports_what_a_read_of_it_imports() -> None:
    found = _python(
        """
        import json, sys
        from kennel.config import DataConfig
        from kennel.data.sources import preload

        before = {m for m in ("fsspec", "kennel.data.readers") if m in sys.modules}
        preload(DataConfig(source="builtin:breast_cancer"))
        after = [m for m in ("fsspec", "kennel.data.readers") if m in sys.modules]
        print(json.dumps({"before": sorted(before), "after": after}))
        """
    )
    assert found == {"before": [], "after": ["fsspec", "kennel.data.readers"]}


def test_a_store_that_fails_to_open_leaves_no_password_in_the_servers_log(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not empty")
    found = _python(
        """
        import io, json, logging, sys
        from mlflow.tracking._tracking_service import utils
        from kennel.search.trial_server import warm_store

        def refused(uri=None, artifact_uri=None):
            raise RuntimeError(f"cannot connect to {uri}\\nsecond line")

        utils._get_store = refused
        log = io.StringIO()
        logging.basicConfig(level=logging.INFO, stream=log)
        uri = "sqlite:///" + sys.argv[1] + "?user=u&password=s3cret"
        print(json.dumps({"took": warm_store({"MLFLOW_TRACKING_URI": uri}),
                          "log": log.getvalue()}))
        """,
        str(db),
    )
    assert found["took"] is None, found
    assert "tracking store not opened: cannot connect to" in found["log"], found
    assert "s3cret" not in found["log"] and "second line" not in found["log"], found


def test_the_server_draws_the_history_plot_and_the_search_never_loads_matplotlib(
    tmp_path: Path,
) -> None:
    """The search's history plot comes from a child of the warm server (matplotlib is loaded
    there): the same PNG the search would draw itself, no matplotlib in the search's
    process. A drawing that fails, or a server gone, hands the plot back (None)."""
    found = _python(
        """
        import json, os, sys
        from pathlib import Path
        from kennel.search.launchers import WarmLauncher

        out = Path(sys.argv[1])
        launcher = WarmLauncher(env=dict(os.environ), hello={}, log_path=out / "server.log")
        launcher.start()
        rows = [{"number": i, "value": v} for i, v in enumerate([0.9, None, 0.95, 0.93])]
        history = {"rows": rows, "metric": "val_roc_auc", "direction": "maximize"}
        drawn = launcher.draw_history({**history, "path": str(out / "server.png")},
                                      out / "drawn.out")
        loaded = "matplotlib" in sys.modules
        failed = launcher.draw_history({**history, "path": str(out / "no" / "such.png")},
                                       out / "failed.out")
        launcher.close()
        gone = launcher.draw_history({**history, "path": str(out / "gone.png")},
                                     out / "gone.out")
        from kennel.search.results import history_plot
        here = history_plot(rows, "val_roc_auc", "maximize", out / "here.png")
        print(json.dumps({
            "drawn": str(drawn), "loaded": loaded, "failed": failed, "gone": gone,
            "same": (out / "server.png").read_bytes() == here.read_bytes(),
            "failed_log": (out / "failed.out").read_text()[-500:],
            "files": sorted(p.name for p in out.iterdir()),
        }))
        """,
        str(tmp_path),
    )
    assert found["drawn"] == str(tmp_path / "server.png"), found
    assert found["loaded"] is False, found
    assert found["same"] is True, found
    assert found["failed"] is None and "No such file or directory" in found["failed_log"]
    assert found["gone"] is None, found
    assert "drawn.out" not in found["files"] and "gone.png" not in found["files"], found
