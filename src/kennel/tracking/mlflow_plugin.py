"""kennel's MLflow plugin: ``mlflow run`` of this project files its run where ``kennel train``
files it.

``mlflow run`` creates its run before the entry point's command starts, in MLflow's
``Default`` experiment unless the user chose one (``--experiment-name``, ``--experiment-id``,
``MLFLOW_EXPERIMENT_NAME``/``_ID``). kennel files runs in the experiment of the data (named
like the registered model: ``breast-cancer``). This provider, registered under MLflow's
``mlflow.default_experiment_provider`` entry-point group, answers MLflow's "which experiment
when nobody chose?" inside ``mlflow run`` of a kennel project only, with the experiment the
entry point's command will use: the same :func:`kennel.tracking.store.experiment_for` on the
config the ``-P config=... -P overrides=...`` parameters give.

MLflow imports this module in every process that imports MLflow, so it imports nothing at
module level beyond MLflow's base class; the work happens only inside ``mlflow run``.
"""

from __future__ import annotations

import logging
import shlex
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

logger = logging.getLogger(__name__)

#: ``name:`` in the MLproject file of a kennel project.
PROJECT_NAME = "kennel"


def mlflow_run_arguments(argv: list[str]) -> dict[str, Any] | None:
    """The options of ``mlflow run ...`` (``python -m mlflow run ...`` too) as MLflow's own
    command parses them, or None when this process is not ``mlflow run``."""
    if len(argv) < 3 or argv[1] != "run":
        return None
    program = Path(argv[0])
    if program.name != "mlflow" and not (
        program.name == "__main__.py" and program.parent.name == "mlflow"
    ):
        return None
    from mlflow.cli import run

    try:
        return run.make_context("run", list(argv[2:]), resilient_parsing=True).params
    except Exception:  # noqa: BLE001 - not parseable: MLflow reports it itself
        return None


def project_entry_points(uri: str) -> dict[str, Any] | None:
    """The entry points of a local kennel project folder (None for any other project)."""
    import yaml

    try:
        spec = yaml.safe_load((Path(uri) / "MLproject").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(spec, dict) or spec.get("name") != PROJECT_NAME:
        return None
    return spec.get("entry_points") or {}


def project_parameters(arguments: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
    """(entry point, parameters with the MLproject defaults filled in) of ``mlflow run``
    of a kennel project; None for another project."""
    entry_points = project_entry_points(str(arguments.get("uri") or "."))
    if entry_points is None:
        return None
    entry = arguments.get("entry_point") or "main"
    declared = (entry_points.get(entry) or {}).get("parameters") or {}
    values = {
        name: str(spec.get("default", "")) if isinstance(spec, dict) else str(spec)
        for name, spec in declared.items()
    }
    for item in arguments.get("param_list") or ():
        key, _, value = str(item).partition("=")
        values[key] = value
    return entry, values


def experiment_name(entry: str, params: dict[str, str]) -> str:
    """The experiment the entry point's command will file its run in."""
    from kennel import registry
    from kennel.config import load_config
    from kennel.tracking.store import experiment_for

    overrides = shlex.split(params.get("overrides", ""))
    config = load_config(params.get("config") or None, overrides).config
    if entry == "promote":
        model = params.get("model_name") or registry.default_model_name(config)
        return registry.promotions_experiment(model)
    default = registry.default_model_name(config)
    uri = params.get("model_uri", "") if entry == "evaluate" else ""
    if uri.startswith("models:/"):
        default = uri[len("models:/") :].split("/")[0].split("@")[0] or default
    return experiment_for(config, default)


class KennelProjectExperiment(DefaultExperimentProvider):
    """In ``mlflow run`` of a kennel project without a chosen experiment: the experiment
    kennel's own command will use (created if needed, with an absolute artifact root)."""

    @cached_property
    def _project(self) -> tuple[str, dict[str, str]] | None:
        arguments = mlflow_run_arguments(sys.argv)
        if arguments is None or arguments.get("run_id"):
            return None
        if arguments.get("experiment_name") or arguments.get("experiment_id"):
            return None
        return project_parameters(arguments)

    def in_context(self) -> bool:
        return self._project is not None

    def get_experiment_id(self) -> str | None:
        from kennel.tracking.store import ensure_experiment

        assert self._project is not None
        entry, params = self._project
        name = experiment_name(entry, params)
        logger.info("kennel: mlflow run files this run in experiment '%s'", name)
        return ensure_experiment(name)
