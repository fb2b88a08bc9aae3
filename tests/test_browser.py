"""The path in a real browser: the README's two training commands, then ``mlflow ui``, and
headless Chromium sees both runs side by side in the data's experiment and the cat run's
``report.html`` rendered (on its own and inside the UI).

The README promises::

    mlflow run . -P config=dog.yaml --env-manager local
    kennel train -c configs/cat.yaml
    mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db     # compare cat vs dog runs

Nothing here passes ``--experiment-name``: kennel itself puts both runs into the experiment
named after the data (``breast-cancer`` for the built-in data).
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.browser import Chromium, find_chromium, install_chromium, mlflow_ui, not_blank
from tests.conftest import PYTHON, ROOT, Store, cli_env

EXPERIMENT = "breast-cancer"
#: Small enough to keep the test fast; the dog run skips its plots, the cat run keeps them
#: so that report.html has images to render.
DOG_OVERRIDES = (
    "model.params.epochs=3 model.params.early_stopping_patience=2 tracking.log_plots=false"
)
CAT_OVERRIDES = ("model.params.n_estimators=30",)
#: MLflow 3 opens an experiment in its GenAI view; the runs table of classic ML lives here.
RUNS_TABLE = "{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
RUN_ARTIFACT = "{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """Headless Chromium; installed with apt-get when missing (as ``.ci/run`` does). Skips,
    naming the reason, only when it is neither here nor installable."""
    binary = find_chromium()
    if binary is None:
        why = install_chromium() or "apt-get installed it, yet no binary is on PATH"
        binary = find_chromium()
        if binary is None:
            pytest.skip(
                "needs headless Chromium: none found (chromium, chromium-browser, "
                f"google-chrome or $CHROME_BIN) and installing Debian's chromium failed: {why}"
            )
    return Chromium(binary, tmp_path_factory.mktemp("chromium"))


def shell_env(store: Store) -> dict[str, str]:
    """The environment of a user's shell after ``source .venv/bin/activate``: ``python``,
    ``mlflow`` and ``kennel`` are the venv's (``mlflow run`` runs ``python run.py`` under
    bash), and the tracking store is the test's own."""
    venv_bin = Path(PYTHON).parent
    return cli_env(
        {
            **store.env,
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv_bin.parent),
        }
    )


def sh(command: list[str], env: dict[str, str]) -> None:
    """Run one of the README's commands from the project folder; it must exit 0."""
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-4000:]}"
    )


def the_run(store: Store, family: str):
    """The one active run of ``family`` in the store, in whatever experiment it landed."""
    client = store.client()
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    runs = client.search_runs(list(experiments), f"tags.`kennel.family` = '{family}'")
    assert len(runs) == 1, f"expected one {family} run, found {len(runs)}"
    run = runs[0]
    where = experiments[run.info.experiment_id]
    assert where == EXPERIMENT, (
        f"the {family} run {run.info.run_name} is in experiment '{where}', not '{EXPERIMENT}'"
    )
    return run


@pytest.mark.slow
def test_mlflow_ui_shows_dog_and_cat_side_by_side(tmp_path: Path, chromium: Chromium) -> None:
    store = Store(tmp_path)
    store.create_schema()
    env = shell_env(store)

    # The README's two commands, as typed (no --experiment-name).
    dog_command = ["mlflow", "run", ".", "-P", "config=dog.yaml", "--env-manager", "local"]
    sh([*dog_command, "-P", f"overrides={DOG_OVERRIDES}"], env)
    sh(["kennel", "train", "-c", "configs/cat.yaml", *CAT_OVERRIDES], env)

    dog, cat = the_run(store, "dog"), the_run(store, "cat")
    experiment_id = store.client().get_experiment_by_name(EXPERIMENT).experiment_id
    names = [dog.info.run_name, cat.info.run_name]

    with mlflow_ui(store.uri, tmp_path / "mlflow-ui.log") as base:
        # The runs table of the experiment lists both runs.
        table = RUNS_TABLE.format(base=base, experiment_id=experiment_id)
        dom = chromium.dump_dom_until(table, names)
        for name in names:
            assert name in dom, f"{name} is not on the rendered runs table {table}"
        shot = chromium.screenshot(table, tmp_path / "runs-table.png")
        assert not_blank(shot), f"the runs table screenshot {shot} is blank"

        # The cat run's report.html renders on its own: titled with the run name, with plots.
        from mlflow.artifacts import download_artifacts

        report = Path(
            download_artifacts(
                run_id=cat.info.run_id,
                artifact_path="report.html",
                dst_path=str(tmp_path / "artifacts"),
                tracking_uri=store.uri,
            )
        )
        dom = chromium.dump_dom(report.as_uri())
        assert f"<title>{cat.info.run_name}</title>" in dom
        assert "<img" in dom and "data:image/png;base64," in dom, "report.html has no plots"
        shot = chromium.screenshot(report.as_uri(), tmp_path / "report.png")
        assert not_blank(shot), f"the report.html screenshot {shot} is blank"

        # ... and the UI serves it: the same bytes over HTTP, shown in the run's artifact view.
        served = f"{base}/get-artifact?path=report.html&run_uuid={cat.info.run_id}"
        with urllib.request.urlopen(served, timeout=30) as response:
            assert response.read() == report.read_bytes()
        page = RUN_ARTIFACT.format(
            base=base, experiment_id=experiment_id, run_id=cat.info.run_id, path="report.html"
        )
        dom = chromium.dump_dom_until(page, ["mlflow-html-iframe"])
        assert "mlflow-html-iframe" in dom, f"the UI shows no HTML view of report.html at {page}"
        shot = chromium.screenshot(page, tmp_path / "report-in-ui.png")
        assert not_blank(shot), f"the screenshot of report.html in the UI {shot} is blank"
