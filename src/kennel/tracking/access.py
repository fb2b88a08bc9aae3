"""Refusals by an authenticated tracking server, as one-line user errors.

A team server runs MLflow's authentication app (``mlflow server --app-name basic-auth``): it
knows users and grants READ, EDIT or MANAGE per experiment and per registered model, and
refuses a request with 401 (who are you?) or 403 (not allowed). kennel sends the standard
MLflow credentials (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
``MLFLOW_TRACKING_TOKEN``, from the environment or ``.env``) and turns a refusal into exit 2
with one line saying who was refused what::

    permission denied: user 'bob' cannot move aliases of registered model 'breast-cancer'
    (needs EDIT)

The checks are the server's; nothing here decides who may do what.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from kennel.errors import UserError
from kennel.util import redact_url

#: MLflow error codes of a refused request.
DENIED_CODES = {"PERMISSION_DENIED"}
UNAUTHENTICATED_CODES = {"UNAUTHENTICATED"}


class PermissionDenied(UserError):
    """The server refused this user the action (HTTP 403)."""


class NotAuthenticated(UserError):
    """The server did not accept the credentials, or got none (HTTP 401)."""


def current_user() -> str | None:
    """The user kennel authenticates as (never the password)."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or None


def refusal(exc: BaseException) -> str | None:
    """``"denied"`` (403), ``"unauthenticated"`` (401) or ``None`` for any other error."""
    code = getattr(exc, "error_code", None)
    status = None
    with contextlib.suppress(Exception):
        status = exc.get_http_status_code()  # type: ignore[attr-defined]
    text = str(exc)
    if code in DENIED_CODES or status == 403 or "error code 403" in text:
        return "denied"
    if code in UNAUTHENTICATED_CODES or status == 401 or "error code 401" in text:
        return "unauthenticated"
    return None


def _endpoint(exc: BaseException) -> str:
    match = re.search(r"endpoint (\S+)", str(exc))
    return match.group(1) if match else "a request"


def as_user_error(exc: BaseException, action: str | None = None, needs: str = "EDIT") -> UserError:
    """The one-line error for a refused request (``action`` names what was attempted)."""
    kind = refusal(exc)
    user = current_user()
    who = f"user '{user}'" if user else "an anonymous client (MLFLOW_TRACKING_USERNAME is not set)"
    uri = redact_url(os.environ.get("MLFLOW_TRACKING_URI", "the tracking server"))
    if kind == "unauthenticated":
        if user:
            return NotAuthenticated(
                f"authentication failed: {uri} did not accept the password of user '{user}' "
                f"(check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
            )
        return NotAuthenticated(
            f"authentication required: {uri} needs a user; set MLFLOW_TRACKING_USERNAME and "
            f"MLFLOW_TRACKING_PASSWORD (environment or .env)"
        )
    what = action or f"call {_endpoint(exc)}"
    return PermissionDenied(f"permission denied: {who} cannot {what} (needs {needs})")


@contextlib.contextmanager
def guard(action: str, needs: str = "EDIT") -> Iterator[None]:
    """Turn a 401/403 from the tracking server inside the block into a one-line user error
    naming ``action`` (``"move aliases of registered model 'x'"``); other errors pass."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if refusal(exc) is None:
            raise
        raise as_user_error(exc, action, needs) from None
