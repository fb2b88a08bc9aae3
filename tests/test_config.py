"""Configuration: precedence, strictness, secrets, --explain."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from kennel import tracking
from kennel.config import Config, load_config
from kennel.errors import ConfigError
from kennel.search import apply_values
from tests.conftest import run_cli


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_typed() -> None:
    config = Config()
    assert config.data.source == "builtin:breast_cancer"
    assert config.model.family == "cat"
    assert config.model.params.num_leaves == 31  # the cat family's typed Params
    assert config.registry.environments == ["dev", "staging", "production"]


def test_precedence_every_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "model.params.num_leaves"
    cfg = write(tmp_path / "c.yaml", {"model": {"family": "cat", "params": {"num_leaves": 10}}})
    overlay_root = tmp_path / "proj"
    (overlay_root / "configs" / "env").mkdir(parents=True)
    write(overlay_root / "configs" / "env" / "dev.yaml", {"model": {"params": {"num_leaves": 20}}})
    monkeypatch.setenv("KENNEL_HOME", str(overlay_root))

    assert load_config(cfg).config.model.params.num_leaves == 20
    resolved = load_config(cfg)
    assert resolved.source_of(key) == "env overlay dev.yaml"

    monkeypatch.setenv("KENNEL_MODEL__PARAMS__NUM_LEAVES", "30")
    resolved = load_config(cfg)
    assert resolved.config.model.params.num_leaves == 30
    assert resolved.source_of(key) == "environment KENNEL_MODEL__PARAMS__NUM_LEAVES"

    resolved = load_config(cfg, [f"{key}=40"])
    assert resolved.config.model.params.num_leaves == 40
    assert resolved.source_of(key) == "CLI"
    assert f"{key}: 40  # CLI" in resolved.explain()

    monkeypatch.delenv("KENNEL_MODEL__PARAMS__NUM_LEAVES")
    (overlay_root / "configs" / "env" / "dev.yaml").unlink()
    resolved = load_config(cfg)
    assert resolved.config.model.params.num_leaves == 10
    assert resolved.source_of(key) == "file c.yaml"
    assert load_config().source_of(key) == "default"


def test_kennel_env_selects_overlay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNEL_ENV", "production")
    resolved = load_config()
    assert resolved.config.tracking.experiment == "kennel-production"
    assert resolved.source_of("tracking.experiment") == "env overlay production.yaml"
    monkeypatch.setenv("KENNEL_ENV", "moon")
    with pytest.raises(ConfigError, match="KENNEL_ENV 'moon'.*production"):
        load_config()


def test_cli_values_parse_as_yaml() -> None:
    config = load_config(
        None,
        ["model.family=dog", "model.params.hidden_units=[8, 4]", "training.deterministic=false"],
    ).config
    assert config.model.params.hidden_units == [8, 4]
    assert config.training.deterministic is False


def test_env_lists_parse_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNEL_DATA__DROP", '["a", "b"]')
    assert load_config().config.data.drop == ["a", "b"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.sorce=x"], "unknown config key 'data.sorce'.*did you mean 'data.source'"),
        (["dta.source=x"], "unknown config key 'dta'.*did you mean 'data'"),
        (["model.params.num_leafs=3"], "model.params.num_leafs: unknown key.*num_leaves"),
        (["model.params.num_leaves=many"], "model.params.num_leaves: .*integer.*'many'"),
        (["data.split.train=0.9"], "data.split: .*sum to 1"),
        (["model.family=pig"], "unknown model family 'pig'; expected one of: cat, dog"),
        (["logging.level=LOUD"], "logging.level: .*'LOUD'"),
        (["nokey"], "bad override 'nokey'"),
        (
            ["search.space={model.params.num_leaves: {type: int, low: 9, high: 2}}"],
            r"search.space.model.params.num_leaves: low \(9\) must not be greater",
        ),
    ],
)
def test_strict_errors(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_unknown_environment_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNEL_DAAT__SOURCE", "x")
    with pytest.raises(ConfigError, match="KENNEL_DAAT__SOURCE.*did you mean 'data'"):
        load_config()


def test_unknown_nested_key_in_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", {"registry": {"gate": {"metrc": "f1"}}})
    with pytest.raises(ConfigError, match=r"registry.gate.metrc.*c.yaml.*'registry.gate.metric'"):
        load_config(cfg)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  family: [cat\n")
    with pytest.raises(ConfigError, match="invalid YAML in .*bad.yaml at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file 'nope.yaml' not found"):
        load_config("nope.yaml")
    listy = write(tmp_path / "list.yaml", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_bare_name_resolves_under_configs() -> None:
    assert load_config("dog.yaml").config.model.family == "dog"
    assert load_config("cat.yaml").config.model.family == "cat"


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNEL_DATA__STORAGE_OPTIONS", '{"secret": "hunter2-very-secret"}')
    config = load_config().config
    assert isinstance(config.data.storage_options["secret"], SecretStr)
    for text in (repr(config), config.to_yaml(), str(config.flat()), load_config().explain()):
        assert "hunter2-very-secret" not in text
    assert config.flat()["data.storage_options.secret"] == "**********"
    assert config.secret_values() == ["hunter2-very-secret"]


def test_a_tracking_uri_password_is_masked_but_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tracking.uri`` is a plain string (the store must be reachable with it), but its
    password never reaches params, ``config.yaml`` or ``kennel config``; log handlers mask
    it too."""
    uri = "postgresql+psycopg://kennel:hunter2-db-pw@db.example:5432/mlflow"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resolved = load_config("cat.yaml", [f"tracking.uri={uri}"])
    config = resolved.config
    assert config.tracking.uri == uri
    assert tracking.resolve_tracking_uri(config) == uri
    for text in (repr(config), config.to_yaml(), str(config.flat()), resolved.explain()):
        assert "hunter2-db-pw" not in text
    assert config.flat()["tracking.uri"] == "postgresql+psycopg://kennel:***@db.example:5432/mlflow"
    assert config.secret_values() == ["hunter2-db-pw"]
    # The config hash ignores the password (another password, the same settings)...
    other = load_config("cat.yaml", [f"tracking.uri={uri.replace('hunter2-db-pw', 'x/y#z')}"])
    assert other.config.digest() == config.digest()
    assert other.config.secret_values() == ["x/y#z"]
    # ...and a config rebuilt from it (a search trial's values applied) keeps the real one.
    assert apply_values(config, {"model.params.num_leaves": 7}).tracking.uri == uri


def test_digest_is_stable_and_sensitive() -> None:
    a = load_config("cat.yaml").config
    b = load_config("cat.yaml").config
    c = load_config("cat.yaml", ["training.seed=1"]).config
    assert a.digest() == b.digest() != c.digest()


# ------------------------------------------------------------------ through the real CLI
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-c", "cat.yaml", "modle.family=cat"], "unknown config key 'modle'"),
        (["-c", "cat.yaml", "model.params.num_leaves=x"], "model.params.num_leaves"),
        (["-c", "missing.yaml"], "config file 'missing.yaml' not found"),
    ],
)
def test_cli_user_errors_exit_2(args: list[str], expected: str) -> None:
    result = run_cli("config", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_bad_yaml_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {source: [\n")
    result = run_cli("config", "-c", str(bad))
    assert result.returncode == 2
    assert "invalid YAML" in result.stderr and "Traceback" not in result.stderr


def test_cli_explain_names_sources(tmp_path: Path) -> None:
    result = run_cli(
        "config",
        "-c",
        "cat.yaml",
        "--explain",
        "training.seed=5",
        env={"KENNEL_RESOURCE__NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "training.seed: 5  # CLI" in result.stdout
    assert "resource.num_threads: 1  # environment KENNEL_RESOURCE__NUM_THREADS" in result.stdout
    assert 'model.family: "cat"  # file cat.yaml' in result.stdout
    assert 'logging.level: "INFO"  # env overlay dev.yaml' in result.stdout
    assert "tracking.log_model: true  # default" in result.stdout


def test_cli_secret_from_env_never_printed(tmp_path: Path) -> None:
    secret = "s3cr3t-token-value"
    env = {"KENNEL_DATA__STORAGE_OPTIONS": f'{{"token": "{secret}"}}'}
    result = run_cli("config", "-c", "cat.yaml", env=env)
    assert result.returncode == 0
    assert secret not in result.stdout + result.stderr
    assert "**********" in result.stdout
