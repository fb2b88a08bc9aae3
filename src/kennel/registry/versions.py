"""Registered models and their versions: register, the cached score per holdout, aliases
and their history, and the checks that name what exists when a name or version does not."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kennel.errors import UserError
from kennel.metrics import metrics_from_output
from kennel.registry.holdout import Holdout
from kennel.util import first_line

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from kennel.config import Config

logger = logging.getLogger(__name__)

SCORE_TAG = "kennel.score."
HISTORY_TAG = "kennel.alias_history."


def _client() -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def set_version_tags(name: str, version: int, tags: Mapping[str, str]) -> None:
    """Write ``tags`` on one version of ``name``, one request each.

    ``MlflowClient.set_model_version_tag`` first reads the whole registered model back to
    check that it is not a prompt: a second request per tag (14 audit tags per promotion).
    The registry's own client writes the tag alone; the store still checks that the version
    exists and validates key and value."""
    registry = _client()._get_registry_client()  # MLflow's registry client
    for key, value in tags.items():
        registry.set_model_version_tag(name, str(version), key, value)


# --------------------------------------------------------------------------- registering
def default_model_name(config: Config, source_name: str | None = None) -> str:
    """``registry.model_name``, else the data set's name (``breast-cancer``)."""
    if config.registry.model_name:
        return config.registry.model_name
    if source_name is None:
        from kennel.data import DataProcessor

        return DataProcessor(config.data).default_model_name()
    return source_name


def register_version(
    model_uri: str, name: str, *, run_id: str, tags: dict[str, str] | None = None
) -> ModelVersion:
    """A new version of ``name`` (created if needed) from a logged model."""
    import contextlib
    import io

    import mlflow

    # MLflow prints "Successfully registered model ..." itself; kennel logs it once, below.
    from kennel.tracking.access import guard

    printed = io.StringIO()
    with (
        contextlib.redirect_stderr(printed),
        guard(f"register versions of registered model '{name}'"),
    ):
        # One request creates the version with its tags: never a version without them.
        version = mlflow.register_model(
            model_uri, name, tags={"kennel.run_id": run_id, **(tags or {})}
        )
    for line in printed.getvalue().splitlines():
        logger.debug("mlflow: %s", line)
    logger.info("registered %s version %s", name, version.version)
    return version


# --------------------------------------------------------------------------- scoring
def cache_score(
    name: str, version: int, holdout_id: str, task: str, scores: dict[str, float]
) -> None:
    from kennel.tracking.access import refusal

    payload = {"task": task, "metrics": _clean(scores)}
    try:
        set_version_tags(name, version, {SCORE_TAG + holdout_id: json.dumps(payload)})
    except Exception as exc:  # a cache: a user who may not write tags scores every time
        if refusal(exc) is None:
            raise
        logger.debug("score of %s v%s not cached: %s", name, version, exc)


def _clean(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or math.isnan(v) else float(v)) for k, v in scores.items()}


def cached_scores(
    tags: dict[str, str] | None, holdout_id: str
) -> tuple[str, dict[str, float]] | None:
    """(task, metrics) a version's tags hold for ``holdout_id`` (see :func:`cache_score`),
    missing values as NaN; None when that holdout was never scored."""
    cached = (tags or {}).get(SCORE_TAG + holdout_id)
    if not cached:
        return None
    payload = json.loads(cached)
    scores = {k: (float("nan") if v is None else v) for k, v in payload["metrics"].items()}
    return payload["task"], scores


def score_version(
    name: str, version: int, holdout: Holdout, *, cache: bool = True, verify: bool = False
) -> tuple[str, dict[str, float]]:
    """(task, test metrics) of ``name`` version ``version`` on the holdout, cached per
    holdout on the version (``cache=False``: read the cache, never write it). ``verify``:
    check the version's files even when the score is cached (scoring loads, and so checks,
    them anyway)."""
    client = _client()
    mv = client.get_model_version(name, str(version))
    cached = cached_scores(mv.tags, holdout.id)
    if cached is not None:
        if verify:
            verify_version(name, version)
        return cached
    logger.info("scoring %s version %s on the %s", name, version, holdout.description)
    from kennel.serve.models import load_model

    model = load_model(f"models:/{name}/{version}")
    features = holdout.rows.drop(columns=[holdout.target])
    output = model.predict(features)
    task, scores = metrics_from_output(holdout.rows[holdout.target], output)
    if cache:
        cache_score(name, version, holdout.id, task, scores)
    return task, scores


def alias_holder(name: str, env: str) -> int | None:
    """The version holding alias ``env``, or None."""
    aliases = _client().get_registered_model(name).aliases or {}
    return int(aliases[env]) if env in aliases else None


def version_tags(name: str, version: int) -> dict[str, str]:
    """The tags of one version (its cached scores, audit of its promotions)."""
    return dict(_client().get_model_version(name, str(version)).tags or {})


def aliases(name: str) -> dict[str, int]:
    """Every alias of ``name`` and the version holding it."""
    return {k: int(v) for k, v in (_client().get_registered_model(name).aliases or {}).items()}


def _history_raw(name: str, env: str) -> str | None:
    return (_client().get_registered_model(name).tags or {}).get(HISTORY_TAG + env)


def history(name: str, env: str) -> list[int]:
    """Earlier holders of ``env``, oldest first (the last one is where rollback goes)."""
    return [int(v) for v in json.loads(_history_raw(name, env) or "[]")]


def verify_version(name: str, version: int) -> None:
    """The version's model files are all there and unchanged (its manifest), checked before
    an alias moves to it even when its score is cached; a user error names the file. Only
    what the manifest covers is fetched (``MLmodel`` is listed, the bundle downloaded): the
    model's copy of kennel's code, most of its files, is not read here."""
    import tempfile
    from pathlib import Path

    import mlflow.artifacts

    from kennel.serve.bundle import ARTIFACT_KEY, verify_bundle

    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="kennel-verify-") as tmp:
        try:
            root = _client().get_model_version_download_uri(name, str(version)).rstrip("/")
            top = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=root)}
            if "MLmodel" not in top:
                raise UserError(f"cannot load model '{uri}': MLmodel is missing")
            bundle = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root}/artifacts/{ARTIFACT_KEY}", dst_path=tmp
            )
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"cannot load model '{uri}': {first_line(exc)}") from None
        try:
            verify_bundle(Path(bundle))
        except UserError as exc:
            raise UserError(f"cannot load model '{uri}': {exc}") from None


def check_environment(env: str, config: Config) -> None:
    if env not in config.registry.environments:
        raise UserError(
            f"unknown environment '{env}'; expected one of: "
            f"{', '.join(config.registry.environments)}"
        )


def check_model(name: str) -> None:
    """A user error naming the registered models that do exist when ``name`` does not."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        expected = ", ".join(known) if known else "none registered yet (run kennel train)"
        raise UserError(
            f"unknown registered model '{name}'; expected one of: {expected} "
            f"(--model-name or registry.model_name)"
        ) from None


def check_version(name: str, version: int) -> None:
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        if not versions:
            raise UserError(f"registered model '{name}' has no versions") from None
        raise UserError(
            f"model '{name}' has no version {version}; expected one of: "
            f"{', '.join(map(str, versions))}"
        ) from None
