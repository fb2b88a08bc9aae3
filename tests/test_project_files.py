"""The files a user clones agree with each other."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_pyproject_and_conda_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(project["dependencies"]) == sorted(pip_section)
    assert any(str(d).startswith("python=3.11") for d in conda["dependencies"])


def test_gitignore_covers_local_state() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in (".env", ".venv/", "mlflow.db", "mlruns/", "outputs/"):
        assert entry in ignored


def test_env_example_documents_every_variable_the_code_reads() -> None:
    example = (ROOT / ".env.example").read_text()
    for name in ("KENNEL_ENV", "MLFLOW_TRACKING_URI", "KENNEL_DATA__STORAGE_OPTIONS"):
        assert name in example
    used = set()
    for path in (ROOT / "src").rglob("*.py"):
        used |= set(
            re.findall(r"environ(?:\.get)?\(\s*\"((?:KENNEL|MLFLOW)_[A-Z_]+)\"", path.read_text())
        )
    missing = sorted(name for name in used if name not in example)
    assert not missing, f".env.example lacks {missing}"


def test_shipped_configs_validate() -> None:
    from kennel.config import load_config

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)
