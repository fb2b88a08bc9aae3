"""The one pyfunc model for every family: a bundle (:mod:`kennel.serve.bundle`) wrapped so
that MLflow loads, serves and registers it like any other model.

The kennel package itself travels in the model's ``code/`` folder (``code_paths``), so the
model loads and serves where kennel is not installed. Requirements are explicit and name
only the chosen family's library: a ``cat`` model never asks for TensorFlow.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd

from kennel.families import FamilySpec
from kennel.families.base import Model
from kennel.logging_setup import warnings_to_debug
from kennel.serve.bundle import ARTIFACT_KEY, load_bundle, save_bundle

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from kennel.config import Config
    from kennel.data import DataProcessor
    from kennel.monitor.profile import Profile

logger = logging.getLogger(__name__)

MODEL_NAME = "model"
#: The inference param that asks for contributions (declared in every signature).
EXPLAIN = "explain"
#: What every kennel pyfunc needs to load, whatever the family.
BASE_REQUIREMENTS = ("mlflow", "pandas", "numpy", "pydantic", "pydantic-settings", "pyyaml")


def requirements(family: FamilySpec) -> list[str]:
    """Pinned requirements for serving a model of ``family`` (and nothing else)."""
    pins = []
    for name in (*BASE_REQUIREMENTS, *family.requirements):
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


class KennelPyfunc(mlflow.pyfunc.PythonModel):
    """Generic pyfunc around any family's ModelAPI: raw rows in, uniform frame out."""

    def load_context(self, context: Any) -> None:
        self.api = load_bundle(context.artifacts[ARTIFACT_KEY])

    # A DataFrame hint keeps the request format MLflow's default (list/dict hints would
    # change it) and tells MLflow not to infer a schema from hints: the signature does that.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """``params={"explain": true}`` adds ``contrib_<column>`` and ``contrib_base`` (the
        signature declares the param, so MLflow passes it, from a request's ``params`` too)."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.api.predict(frame, explain=bool((params or {}).get(EXPLAIN)))


#: MLflow column types by the kind of values a column held in training. MLflow's schema
#: enforcement refuses a float64 pandas column (whole numbers with gaps) for a ``long`` input
#: and JSON nulls for ``long``, refuses an int64 column for ``double``, turns a JSON null into
#: ``False`` for ``boolean``, and refuses a pandas ``category`` column for ``string``. So
#: integer, boolean and category columns are declared ``Any``: what pandas reads and what JSON
#: clients send both reach kennel's own processor, which checks them (text in a number column
#: is a 400 naming the column and the value). Float columns stay ``double`` (JSON integers are
#: cast); locally, send them as floats. MLflow's scoring server reads a CSV body with a dtype
#: per column from the signature and refuses any signature with an ``Any`` column, so
#: ``kennel serve`` reads CSV itself (:mod:`kennel.serve.csv_requests`); ``mlflow models
#: serve`` takes such a model's rows as JSON or Parquet only. Every column is named in the
#: signature, and its kennel kind is in the model's metadata (``kennel_input_kinds``) and in
#: ``columns.json`` of the run.
#:
#: Date columns (see :func:`input_colspecs`) are ``Any`` whatever their kind: the same column
#: arrives as text from a CSV or JSON (``2013-01-01T10:00:00Z``), as ``datetime64`` from
#: Parquet and from Spark (``mlflow.pyfunc.spark_udf`` hands timestamps over as
#: ``datetime64[us]``), and as Python ``date`` objects from a Spark ``DateType``; MLflow's
#: ``string`` refuses timestamps and its ``datetime`` cannot read ``Z`` offsets, while the
#: processor reads all of them (and names a value that is not a date).
MLFLOW_TYPES = {"float": "double", "string": "string", "datetime": "datetime"}


def input_colspecs(processor: DataProcessor) -> list[Any]:
    """One MLflow ``ColSpec`` per raw input column (optional where training had gaps; date
    columns ``Any``, see :data:`MLFLOW_TYPES`)."""
    from mlflow.types.schema import AnyType, ColSpec

    dates = {role.name for role in processor.roles if role.role == "date"}
    return [
        ColSpec(
            MLFLOW_TYPES[col.kind]
            if col.kind in MLFLOW_TYPES and col.name not in dates
            else AnyType(),
            col.name,
            required=col.required,
        )
        for col in processor.input_schema()
    ]


def signature(processor: DataProcessor, example_output: pd.DataFrame) -> Any:
    """Inputs from the processor's raw schema (see :data:`MLFLOW_TYPES`); outputs from a
    prediction on the input example."""
    import warnings

    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema
    from mlflow.types.utils import _infer_schema

    with warnings.catch_warnings():  # the integer-column hint: our outputs have no gaps
        warnings.simplefilter("ignore")
        outputs = _infer_schema(example_output)
    params = ParamSchema([ParamSpec(EXPLAIN, "boolean", False)])
    return ModelSignature(inputs=Schema(input_colspecs(processor)), outputs=outputs, params=params)


def _code_copy(workdir: Path) -> Path:
    """A clean copy of the kennel package (no caches) for ``code_paths``, made of hard links
    where the file system allows (MLflow copies it into the model right after and the
    folder is removed then; ~120 file copies cost ~0.13 s here, the links ~5 ms)."""
    import kennel

    source = Path(kennel.__file__).resolve().parent
    target = workdir / "kennel"
    shutil.copytree(
        source,
        target,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        copy_function=_link_or_copy,
    )
    return target


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link to ``src`` at ``dst``; a copy where linking is refused (another file
    system, a file owned by someone else)."""
    try:
        os.link(src, dst)
    except OSError:
        return shutil.copy2(src, dst)
    return dst


def log_model(
    *,
    model: Model,
    processor: DataProcessor,
    family: FamilySpec,
    config: Config | None = None,
    profile: Profile | None = None,
    name: str = MODEL_NAME,
) -> ModelInfo:
    """Log the pyfunc (with the reference ``profile`` in its bundle) to the active run and
    return its ModelInfo."""
    with tempfile.TemporaryDirectory(prefix="kennel-model-") as tmp:
        work = Path(tmp)
        # MLflow names the artifact folder after the source folder: artifacts/kennel/.
        bundle = save_bundle(
            work / "bundle" / ARTIFACT_KEY,
            model=model,
            processor=processor,
            family=family,
            config=config,
            profile=profile,
        )
        api = family.ModelAPI(model, processor)
        example = processor.input_example(3)
        output = api.predict(example)
        with warnings_to_debug(logger):
            info = _log_pyfunc(
                name=name,
                bundle=bundle,
                code=_code_copy(work),
                signature=signature(processor, output),
                example=example,
                family=family,
                processor=processor,
            )
    logger.info("logged %s model %s", family.name, info.model_uri)
    return info


def _log_pyfunc(
    *,
    name: str,
    bundle: Path,
    code: Path,
    signature: Any,
    example: pd.DataFrame,
    family: FamilySpec,
    processor: DataProcessor,
) -> ModelInfo:
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).with_name("pyfunc_model.py")),
        artifacts={ARTIFACT_KEY: str(bundle)},
        code_paths=[str(code)],
        signature=signature,
        input_example=example,
        pip_requirements=requirements(family),
        metadata={
            "kennel_family": family.name,
            "kennel_task": processor.task,
            "kennel_input_kinds": dict(processor.input_kinds),
        },
    )


def run_model_uri(run_id: str) -> str:
    """The URI of the model a kennel training run logged: ``runs:/<id>/model``."""
    return f"runs:/{run_id}/{MODEL_NAME}"
