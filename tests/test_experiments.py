"""One experiment whatever the launcher: ``mlflow run . -P config=dog.yaml`` and ``kennel train
-c configs/cat.yaml`` file their runs in the data's experiment (``breast-cancer``) in either
order, MLflow's ``Default`` stays empty, and an experiment the user chose wins everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Store, cli_env, run_cli

DOG = "model.params.epochs=2 model.params.early_stopping_patience=1 tracking.log_plots=false"
CAT = ("model.params.n_estimators=20", "tracking.log_plots=false")


def mlflow_run(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    """``mlflow run`` from the project folder, as README shows it (the venv's bin first on
    PATH, as after ``source .venv/bin/activate``)."""
    env = cli_env(store.env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [str(Path(sys.executable).parent / "mlflow"), "run", ".", "--env-manager", "local"]
    return subprocess.run(
        [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def runs_by_experiment(store: Store) -> dict[str, list[str]]:
    """Experiment name -> family of every run in it (deleted runs too)."""
    client = store.client()
    found: dict[str, list[str]] = {}
    for experiment in client.search_experiments(view_type=3):
        runs = client.search_runs([experiment.experiment_id], run_view_type=3)
        found[experiment.name] = sorted(r.data.tags.get("kennel.family", "?") for r in runs)
    return found


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path)
    store.create_schema()
    return store


@pytest.mark.slow
@pytest.mark.parametrize("order", ["mlflow run first", "kennel train first"])
def test_cat_and_dog_share_the_data_experiment(store: Store, order: str) -> None:
    def dog() -> None:
        result = mlflow_run(store, "-P", "config=dog.yaml", "-P", f"overrides={DOG}")
        assert result.returncode == 0, result.stderr[-3000:]

    def cat() -> None:
        result = run_cli("train", "-c", "configs/cat.yaml", *CAT, env=store.env)
        assert result.returncode == 0, result.stderr[-3000:]

    for step in (dog, cat) if order == "mlflow run first" else (cat, dog):
        step()
    found = runs_by_experiment(store)
    assert found["breast-cancer"] == ["cat", "dog"]
    assert found.get("Default", []) == []


@pytest.mark.slow
def test_a_chosen_experiment_wins(store: Store) -> None:
    store.create_experiment("mine")  # the team's experiment exists already
    result = mlflow_run(
        store, "-P", "config=dog.yaml", "-P", f"overrides={DOG}", "--experiment-name", "mine"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli(
        "train", "-c", "configs/cat.yaml", *CAT, "tracking.experiment=cats", env=store.env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    env = {**store.env, "MLFLOW_EXPERIMENT_NAME": "from-env"}
    result = run_cli("train", "-c", "configs/cat.yaml", *CAT, "registry.enabled=false", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli(
        "evaluate", "-c", "configs/cat.yaml", "--model-uri", "models:/breast-cancer/1",
        env=store.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = runs_by_experiment(store)
    assert found["mine"] == ["dog"] and found["cats"] == ["cat"] and found["from-env"] == ["cat"]
    # The evaluation of a registered model goes beside that model's runs.
    assert found["breast-cancer"] == ["dog"]  # the evaluated model's family
    assert found.get("Default", []) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["mlflow", "run", ".", "-P", "config=dog.yaml"], ("main", {"config": "dog.yaml"})),
        (["/x/bin/mlflow", "run", ".", "-e", "search", "--env-manager", "local"], ("search", {})),
        (
            [
                "/x/mlflow/__main__.py",
                "run",
                ".",
                "-e",
                "evaluate",
                "-P",
                "model_uri=models:/m@dev",
            ],
            ("evaluate", {"model_uri": "models:/m@dev"}),
        ),  # fmt: skip
    ],
)
def test_the_plugin_reads_mlflow_runs_arguments(argv, expected, monkeypatch) -> None:
    from kennel.tracking.mlflow_plugin import mlflow_run_arguments, project_parameters

    monkeypatch.chdir(ROOT)
    entry, params = project_parameters(mlflow_run_arguments(argv))
    assert entry == expected[0]
    assert expected[1].items() <= params.items()
    assert "overrides" in params  # every declared parameter, with its default


def test_the_plugin_stays_out_of_other_programs(monkeypatch, tmp_path) -> None:
    from kennel.tracking.mlflow_plugin import KennelProjectExperiment, mlflow_run_arguments

    assert mlflow_run_arguments(["python", "train.py"]) is None
    assert mlflow_run_arguments(["mlflow", "ui"]) is None
    monkeypatch.setattr(sys, "argv", ["mlflow", "run", ".", "--experiment-name", "x"])
    monkeypatch.chdir(ROOT)
    assert not KennelProjectExperiment().in_context()  # the user chose
    monkeypatch.setattr(sys, "argv", ["mlflow", "run", "."])
    assert KennelProjectExperiment().in_context()
    monkeypatch.chdir(tmp_path)  # not a kennel project
    assert not KennelProjectExperiment().in_context()


def test_the_plugin_names_each_entry_points_experiment() -> None:
    from kennel.tracking.mlflow_plugin import experiment_name

    assert experiment_name("main", {"config": "dog.yaml", "overrides": ""}) == "breast-cancer"
    assert experiment_name("search", {"config": "cat.yaml", "overrides": ""}) == "breast-cancer"
    wine = {"config": "cat.yaml", "overrides": "data.source=builtin:wine"}
    assert experiment_name("train", wine) == "wine"
    chosen = {"config": "cat.yaml", "overrides": "tracking.experiment=mine"}
    assert experiment_name("train", chosen) == "mine"
    evaluate = {"config": "cat.yaml", "overrides": "", "model_uri": "models:/churn@prod"}
    assert experiment_name("evaluate", evaluate) == "churn"
    promote = {"config": "cat.yaml", "overrides": "", "model_name": ""}
    assert experiment_name("promote", promote) == "breast-cancer-promotions"
