"""The result type of ``mlflow.pyfunc.spark_udf`` for a kennel model, as a Spark DDL string.

Without ``result_type`` MLflow infers the UDF's type from the model's output schema: a struct
of ``prediction`` and the ``proba_<class>`` columns for a classifier, a ``double`` for a
regressor. The ``contrib_*`` columns of ``params={"explain": True}`` are not in that schema
(they come only when asked), so MLflow would drop them; :func:`result_type` writes the struct
that holds them, from the model's signature alone (the model is not downloaded).

Nothing here imports pyspark: a DDL string is what ``spark_udf`` takes, and kennel's core
never needs Spark.
"""

from __future__ import annotations

from typing import Any

from kennel.errors import DataError

#: Spark SQL type names of the MLflow column types kennel outputs use.
SPARK_TYPES = {
    "string": "string",
    "long": "bigint",
    "integer": "int",
    "double": "double",
    "float": "float",
    "boolean": "boolean",
}


def result_type(model_uri: str, *, explain: bool = False) -> str:
    """``prediction <type>, proba_<class> double, ...`` for the model at ``model_uri``; with
    ``explain``, also ``contrib_<column> double`` for every input column and ``contrib_base``
    (pass ``params={"explain": True}`` to ``spark_udf`` too)."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None or signature.outputs is None:
        raise DataError(f"{model_uri}: the model has no output schema; is it a kennel model?")
    return struct_ddl(signature, model_uri=model_uri, explain=explain)


def struct_ddl(signature: Any, *, model_uri: str = "the model", explain: bool = False) -> str:
    """The DDL struct of a kennel model's outputs (see :func:`result_type`)."""
    fields = [(spec.name, _spark_type(spec, model_uri)) for spec in signature.outputs.inputs]
    if explain:
        params = signature.params.params if signature.params is not None else []
        if not any(param.name == "explain" for param in params):
            raise DataError(
                f"{model_uri}: the model declares no 'explain' param (it was saved before kennel "
                "explained predictions); retrain it"
            )
        fields += [(f"contrib_{name}", "double") for name in signature.inputs.input_names()]
        fields.append(("contrib_base", "double"))
    return ", ".join(f"{_quoted(name)} {kind}" for name, kind in fields)


def _spark_type(spec: Any, model_uri: str) -> str:
    name = getattr(spec.type, "name", str(spec.type))
    if name not in SPARK_TYPES:
        raise DataError(f"{model_uri}: output column '{spec.name}' has type {name}, unknown here")
    return SPARK_TYPES[name]


def _quoted(name: str) -> str:
    """A column name as DDL takes any name: in backticks (dots, spaces), doubled inside."""
    return "`" + name.replace("`", "``") + "`"
