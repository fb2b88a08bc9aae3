"""MLflow's map of installed distributions (what logging a model needs to check its pip
requirements) is built by a process with time for it and handed to the one that logs the model
(issue 25): the same map MLflow builds itself, really used (logging a model then never builds
it), ignored when built from other directories, never left behind or logged as a plot."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kennel.serve import distributions
from tests.conftest import Store


def run_script(code: str, *args: str, timeout: float = 240) -> str:
    """``code`` in a fresh interpreter (MLflow's map not built yet); its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def mlflow_own_map() -> dict[str, list[str]]:
    """The map MLflow builds itself in a fresh process."""
    out = run_script(
        """
        import json
        from mlflow.utils import requirements_utils as r
        r._init_packages_to_modules_map()
        print(json.dumps(r._MODULES_TO_PACKAGES))
        """
    )
    return json.loads(out)


@pytest.mark.slow
def test_the_plot_process_builds_the_map_the_run_hands_to_mlflow(
    tmp_path: Path, mlflow_own_map: dict[str, list[str]], store: Store
) -> None:
    """A real plot process writes the map; the run seeds MLflow with it, and logging a pyfunc
    with pip requirements (their check needs the map) then works with MLflow's own way of
    building it broken: the map handed over is the one used."""
    store.create_schema()  # its Default experiment, where the pyfunc goes, beside the file
    out = run_script(
        """
        import json, sys, time
        from pathlib import Path

        import mlflow
        import importlib_metadata
        from mlflow.utils import requirements_utils as r
        from kennel.report.plots import BackgroundPlots
        from kennel.serve import distributions

        folder = Path(sys.argv[1])
        plots = BackgroundPlots(folder)
        file = plots.distributions_file()
        deadline = time.monotonic() + 120
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert file.exists(), "the plot process wrote no map"
        assert r._MODULES_TO_PACKAGES is None
        assert distributions.seed(file) is True
        assert not file.exists()

        def broken():
            raise AssertionError("MLflow built the map itself")

        importlib_metadata.packages_distributions = broken

        class Echo(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input):
                return model_input

        mlflow.set_tracking_uri(sys.argv[2])
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="m",
                python_model=Echo(),
                pip_requirements=[f"mlflow=={mlflow.__version__}", "numpy"],
            )
        plots.cancel()
        print(json.dumps(r._MODULES_TO_PACKAGES))
        """,
        str(tmp_path / "plots"),
        store.uri,
    )
    seeded = json.loads(out.strip().splitlines()[-1])
    assert {k: sorted(v) for k, v in seeded.items()} == {
        k: sorted(v) for k, v in mlflow_own_map.items()
    }
    assert list((tmp_path / "plots").iterdir()) == []  # no map left beside the plots


@pytest.mark.slow
def test_a_training_run_leaves_no_map_and_logs_none(
    trained: dict[str, dict], shared_store: Store
) -> None:
    for result in trained.values():
        plots = Path(result["output_dir"]) / "plots"
        assert any(plots.glob("*.png"))
        assert not (plots / distributions.FILE_NAME).exists()
        logged = shared_store.client().list_artifacts(result["run_id"], "plots")
        names = {Path(f.path).name for f in logged}
        assert names and all(name.endswith(".png") for name in names), names


def test_a_map_from_other_directories_is_not_used(tmp_path: Path) -> None:
    file = tmp_path / distributions.FILE_NAME
    run_script(
        "import sys; from pathlib import Path; from kennel.serve import distributions; "
        "distributions.write(Path(sys.argv[1]))",
        str(file),
    )
    data = json.loads(file.read_text())
    assert data["sites"] and "mlflow" in data["map"]
    data["sites"] = [*data["sites"], str(tmp_path)]
    file.write_text(json.dumps(data))
    out = run_script(
        """
        import sys
        from pathlib import Path
        from mlflow.utils import requirements_utils as r
        from kennel.serve import distributions
        print(distributions.seed(Path(sys.argv[1])), r._MODULES_TO_PACKAGES is None)
        """,
        str(file),
    )
    assert out.split() == ["False", "True"]  # MLflow builds its own when it needs it
    assert not file.exists()


def test_a_missing_or_unreadable_map_leaves_mlflow_to_build_its_own(tmp_path: Path) -> None:
    file = tmp_path / distributions.FILE_NAME
    file.write_text("{not json")
    out = run_script(
        """
        import sys
        from pathlib import Path
        from mlflow.utils import requirements_utils as r
        from kennel.serve import distributions
        missing = distributions.seed(Path(sys.argv[1]) / "nothing.json")
        unreadable = distributions.seed(Path(sys.argv[2]))
        print(missing, unreadable, r._MODULES_TO_PACKAGES is None)
        """,
        str(tmp_path),
        str(file),
    )
    assert out.split() == ["False", "False", "True"]


@pytest.mark.slow
def test_the_search_hands_the_map_to_its_trial_server(
    tmp_path: Path, mlflow_own_map: dict[str, list[str]]
) -> None:
    """The search writes the map while its warm server imports; the server's warm-up uses it
    (and consumes the file) instead of building it."""
    file = tmp_path / distributions.FILE_NAME
    run_script(
        "import sys; from pathlib import Path; from kennel.serve import distributions; "
        "distributions.write(Path(sys.argv[1]))",
        str(file),
    )
    out = run_script(
        """
        import json, sys
        import importlib_metadata
        from mlflow.utils import requirements_utils as r
        from kennel.search.trial_server import warm_up

        def broken():
            raise AssertionError("the server built the map itself")

        importlib_metadata.packages_distributions = broken
        timings = warm_up({"distributions": sys.argv[1]})
        assert "requirements_s" in timings, timings
        print(json.dumps(r._MODULES_TO_PACKAGES))
        """,
        str(file),
    )
    seeded = json.loads(out.strip().splitlines()[-1])
    assert {k: sorted(v) for k, v in seeded.items()} == {
        k: sorted(v) for k, v in mlflow_own_map.items()
    }
    assert not file.exists()
