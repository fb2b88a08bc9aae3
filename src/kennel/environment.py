"""The process environment: the ``.env`` file, and which values in it are secrets.

Kept free of third-party imports but python-dotenv (loaded only when a command runs), so the
launcher, the CLI and the search's trial processes share it cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path

from kennel.paths import project_root
from kennel.util import url_secrets

#: Environment variable names whose values are treated as secrets in logs.
SECRET_HINTS = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL", "ACCESS_KEY", "API_KEY")


def load_dotenv_once() -> Path | None:
    """Load ``.env`` from the working directory, else the project folder; real environment
    variables win. Returns the file loaded, if any."""
    if os.environ.get("_KENNEL_DOTENV_LOADED"):
        return None
    from dotenv import load_dotenv

    os.environ["_KENNEL_DOTENV_LOADED"] = "1"
    for folder in (Path.cwd(), project_root()):
        candidate = folder / ".env"
        if candidate.is_file():
            load_dotenv(candidate, override=False)
            return candidate
    return None


#: MLflow's usage telemetry: off in kennel's commands unless this is set (environment or .env).
TELEMETRY_SWITCH = "MLFLOW_DISABLE_TELEMETRY"


def telemetry_off_by_default() -> None:
    """Turn MLflow's usage telemetry off for this command and the processes it starts, unless
    ``MLFLOW_DISABLE_TELEMETRY`` is set. Called before MLflow is imported and before any
    thread starts. MLflow 3.17's telemetry threads (started when MLflow is imported) resolve
    host names and unset a variable of the process environment while MLflow's
    ``set_experiment`` sets ``MLFLOW_EXPERIMENT_ID`` in the main thread; the C library's
    environment is not safe for that, and ``kennel search`` once died of it (SIGSEGV in
    ``getenv``) as it opened its parent run."""
    os.environ.setdefault(TELEMETRY_SWITCH, "true")


def environment_secrets() -> list[str]:
    """Values of environment variables that look like credentials (masked in logs)."""
    secrets = []
    for name, value in os.environ.items():
        if value and len(value) >= 4 and any(hint in name.upper() for hint in SECRET_HINTS):
            secrets.append(value)
        if "://" in value:
            secrets += url_secrets(value)
    return secrets
