"""Model URIs: which registered version a URI names, loading it as MLflow serves it, the
columns it requires, and MLflow's refusals in one line. Shared by scoring, the registry and
serving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.errors import UserError
from kennel.util import first_line

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class ModelRef:
    """What a model URI points at in the registry, when it does."""

    uri: str
    name: str | None = None
    version: int | None = None
    run_id: str | None = None


def resolve_model_uri(uri: str) -> ModelRef:
    """Check ``runs:/<id>/<path>``, ``models:/<name>/<version>`` and ``models:/<name>@<alias>``
    against the tracking store and say which registered version they are (if any).

    Raises ``UserError`` naming the missing run, model, version or alias. Other URIs (local
    paths, ``s3://`` ...) are returned as they are; loading them reports their errors.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :].strip("/")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if not name or not alias:
                raise UserError(f"bad model URI '{uri}'; expected models:/<name>@<alias>")
            _check_registered(client, name)
            try:
                mv = client.get_model_version_by_alias(name, alias)
            except MlflowException:
                raise UserError(f"no version of '{name}' holds alias '{alias}'") from None
            return ModelRef(uri, name, int(mv.version), mv.run_id)
        name, _, version = rest.rpartition("/")
        if not name or not version:
            raise UserError(
                f"bad model URI '{uri}'; expected models:/<name>/<version> or "
                "models:/<name>@<alias>"
            )
        _check_registered(client, name)
        if version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise UserError(f"registered model '{name}' has no versions")
            mv = max(versions, key=lambda v: int(v.version))
            return ModelRef(uri, name, int(mv.version), mv.run_id)
        if not version.isdigit():
            raise UserError(
                f"bad model version '{version}' in '{uri}'; expected a number, 'latest' or "
                "models:/<name>@<alias>"
            )
        try:
            mv = client.get_model_version(name, version)
        except MlflowException:
            raise UserError(f"model '{name}' has no version {version}") from None
        return ModelRef(uri, name, int(mv.version), mv.run_id)
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].strip("/").partition("/")
        if not run_id or not path:
            raise UserError(f"bad model URI '{uri}'; expected runs:/<run_id>/<artifact path>")
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise UserError(f"no MLflow run '{run_id}' in the tracking store") from None
        tags = run.data.tags
        registered = tags.get("kennel.registered_model")
        version = tags.get("kennel.registered_version")
        if registered and version and version.isdigit() and path == "model":
            return ModelRef(uri, registered, int(version), run_id)
        return ModelRef(uri, run_id=run_id)
    return ModelRef(uri)


def _check_registered(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise UserError(f"registered model '{name}' does not exist") from None


def load_model(uri: str, *, shown: str | None = None) -> PyFuncModel:
    """``mlflow.pyfunc.load_model`` with a user error (exit 2) for a URI that does not load.
    The error names ``shown`` (the model URI a local copy came from) when given."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    name = shown or uri
    try:
        return mlflow.pyfunc.load_model(uri)
    except UserError as exc:  # kennel's own checks while loading (a damaged bundle)
        raise UserError(f"cannot load model '{name}': {exc}") from None
    except (MlflowException, OSError, ValueError) as exc:
        first = first_line(exc)
        raise UserError(f"cannot load model '{name}': {first}") from None


def required_columns(model: PyFuncModel) -> list[str]:
    """Input columns the model's signature marks as required (empty if it has none)."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return []
    return [spec.name for spec in schema.inputs if getattr(spec, "required", True)]


def explain(exc: BaseException) -> str:
    """One line saying why MLflow refused an input: the part after its last ``Error:``
    (its messages start with a repr of the whole frame and schema), else the first line."""
    text = str(exc).strip()
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1].strip()
    lines = text.splitlines()
    return lines[0] if lines else type(exc).__name__


def alias_version(name: str, env: str) -> int:
    """The version holding alias ``env`` of ``name``, or a user error saying what is missing."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise UserError(
            f"registered model '{name}' does not exist; train one or pass --model-name"
        ) from None
    try:
        return int(client.get_model_version_by_alias(name, env).version)
    except MlflowException:
        raise UserError(f"no version of '{name}' holds alias '{env}'") from None


def download(uri: str, folder: Path) -> Path:
    """The model's files in ``folder``; a refusal or a missing model is one line."""
    import mlflow.artifacts

    try:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(folder)))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any store error is one line for the user
        from kennel.tracking.access import as_user_error, refusal

        if refusal(exc):
            raise as_user_error(exc, f"download model '{uri}'", "READ") from None
        raise UserError(f"cannot load model '{uri}': {first_line(exc)}") from None
