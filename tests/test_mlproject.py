"""MLproject: every parameter reaches the CLI it names, the command lines MLflow builds parse
(empty defaults included), and ``mlflow run`` trains, logs and registers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kennel.cli.manager import COMMANDS, _split_extras, build_parser
from kennel.config import parse_override
from tests.conftest import ROOT, Store

PROJECT = yaml.safe_load((ROOT / "MLproject").read_text())
ENTRY_POINTS: dict[str, dict[str, Any]] = PROJECT["entry_points"]
COMMAND = re.compile(r"(?:^|;\s*)python run\.py (\w+)(?P<rest>.*)$")
#: Values for parameters without a default, as a user would pass them.
REQUIRED = {"model_uri": "models:/breast-cancer@dev", "version": "3", "input": "captures/"}


def subcommand_parser(name: str) -> Any:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices[name]


def option_strings(name: str) -> set[str]:
    return {opt for action in subcommand_parser(name)._actions for opt in action.option_strings}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_parameter_reaches_a_real_option(entry: str) -> None:
    spec = ENTRY_POINTS[entry]
    command = spec["command"]
    match = COMMAND.search(command)
    assert match, f"{entry}: command must run 'python run.py <command>': {command}"
    kennel_command = match.group(1)
    assert kennel_command in COMMANDS, f"{entry}: no kennel command '{kennel_command}'"
    options = option_strings(kennel_command)
    tokens = command.split()
    for param in spec["parameters"]:
        placeholder = "{" + param + "}"
        assert placeholder in command, f"{entry}: parameter {param} is not used in the command"
        if param == "overrides":
            # key=value positionals: assigned to a variable that bash splits into words at
            # the end of the kennel command line.
            assert f"OVERRIDES={placeholder};" in command
            assert command.endswith(" $OVERRIDES")
            assert "set -f;" in command, "no globbing of [..] in override values"
            continue
        (index,) = [i for i, token in enumerate(tokens) if token == placeholder]
        flag = tokens[index - 1]
        assert flag.startswith("-"), f"{entry}: {placeholder} follows no option ({flag})"
        assert flag in options, f"{entry}: {flag} is not an option of 'kennel {kennel_command}'"
    # And every placeholder in the command is a declared parameter.
    used = set(re.findall(r"\{(\w+)\}", command))
    assert used == set(spec["parameters"]), entry


def mlflow_command(entry: str, params: dict[str, str]) -> str:
    """The shell command MLflow itself builds (its quoting of values included)."""
    from mlflow.projects._project_spec import load_project

    project = load_project(str(ROOT))
    return project.get_entry_point(entry).compute_command(params, storage_dir=None)


@pytest.fixture(scope="module")
def fake_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``python`` that prints its arguments as JSON instead of running them."""
    folder = tmp_path_factory.mktemp("fake-python")
    script = folder / "python"
    script.write_text(
        f'#!/bin/sh\nexec {sys.executable} -c "import json, sys; '
        f'print(json.dumps(sys.argv[1:]))" "$@"\n'
    )
    script.chmod(0o755)
    return folder


def argv_of(entry: str, params: dict[str, str], fake_python: Path, cwd: Path) -> list[str]:
    """The argv ``run.py`` would get when MLflow runs ``entry`` with ``params`` (under bash,
    as MLflow's local backend does)."""
    command = mlflow_command(entry, params)
    env = {**os.environ, "PATH": f"{fake_python}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def parse(argv: list[str]) -> Any:
    assert argv[0] == "run.py"
    parser = build_parser()
    args, extras = parser.parse_known_args(argv[1:])
    _split_extras(args, extras, parser)
    return args


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_defaults_and_empty_strings_parse(
    entry: str, fake_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow passes an empty default as ``''``: an empty option value (read as "not given"),
    and for ``overrides`` no argument at all (an empty positional would be a bad override)."""
    # Files named like an override value must not be globbed into the command line.
    (tmp_path / "model.params.hidden_units=1").touch()
    spec = ENTRY_POINTS[entry]
    params = {p: REQUIRED[p] for p, v in spec["parameters"].items() if v.get("default") is None}
    args = parse(argv_of(entry, params, fake_python, tmp_path))
    assert args.command == COMMAND.search(spec["command"]).group(1)
    if "overrides" in spec["parameters"]:
        assert args.overrides == []
    for param, value in spec["parameters"].items():
        if value.get("default") == "":
            assert getattr(args, param) in ("", [])  # "not given" to the command

    if "overrides" in spec["parameters"]:
        overrides = "model.params.hidden_units=[16,8] training.seed=7"
        args = parse(argv_of(entry, {**params, "overrides": overrides}, fake_python, tmp_path))
        assert args.overrides == ["model.params.hidden_units=[16,8]", "training.seed=7"]
        assert [parse_override(o) for o in args.overrides] == [
            (["model", "params", "hidden_units"], [16, 8]),
            (["training", "seed"], 7),
        ]


@pytest.mark.slow
def test_mlflow_run_trains_logs_and_registers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_experiment("kennel-mlproject")
    venv_bin = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KENNEL_", "MLFLOW_"))},
        **store.env,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",  # `python` is the venv's
    }
    overrides = "model.params.num_leaves=5 model.params.n_estimators=20"

    def mlflow_run(entry: str, *params: str) -> subprocess.CompletedProcess[str]:
        pairs = [arg for param in params for arg in ("-P", param)]
        return subprocess.run(
            [str(venv_bin / "mlflow"), "run", ".", "-e", entry, *pairs, "--env-manager", "local"]
            + ["--experiment-name", "kennel-mlproject"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    result = mlflow_run("main", "config=tests/configs/tiny_cat.yaml", f"overrides={overrides}")
    assert result.returncode == 0, result.stderr[-4000:]
    client = store.client()
    experiment = client.get_experiment_by_name("kennel-mlproject")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    # The run `mlflow run` created is named by what ran, like a `kennel train` run.
    assert re.fullmatch(r"cat-breast_cancer-\d{8}-\d{6}", run.info.run_name), run.info.run_name
    params = run.data.params
    # MLflow's own entry-point params ...
    assert params["config"] == "tests/configs/tiny_cat.yaml"
    assert params["overrides"] == f"'{overrides}'"  # MLflow logs the shell-quoted value
    # ... and kennel's dotted config, with the overrides applied.
    assert params["model.family"] == "cat"
    assert params["model.params.num_leaves"] == "5"
    assert params["model.params.n_estimators"] == "20"
    assert run.data.tags["kennel.family"] == "cat"
    assert "test_roc_auc" in run.data.metrics
    (version,) = client.search_model_versions("name='breast-cancer'")
    assert version.run_id == run.info.run_id
    assert client.get_registered_model("breast-cancer").aliases == {"dev": version.version}

    # The promote entry point: the decision goes into the entry point's own run.
    result = mlflow_run("promote", "version=1", "to=staging", "config=tests/configs/tiny_cat.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    assert client.get_registered_model("breast-cancer").aliases == {"dev": 1, "staging": 1}
    (promotion,) = client.search_runs(
        [experiment.experiment_id], "tags.`kennel.kind` = 'promotion'"
    )
    assert promotion.data.params["version"] == "1"
    assert promotion.data.params["to"] == "staging"
    assert promotion.data.tags["kennel.outcome"] == "promoted"
    assert promotion.info.status == "FINISHED"
    assert "promotion.json" in {a.path for a in client.list_artifacts(promotion.info.run_id)}
