"""The launcher and the command table: exit codes, lazy imports, run.py anywhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kennel.cli.manager import COMMANDS, main
from tests.conftest import PYTHON, ROOT, run_cli


def test_help_imports_no_heavy_library() -> None:
    code = textwrap.dedent(
        """
        import sys
        from kennel.cli.manager import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0
        for name in ("tensorflow", "mlflow", "lightgbm", "keras"):
            assert name not in sys.modules, name
        for command in ("train", "search", "promote", "serve", "evaluate", "predict"):
            try:
                main([command, "--help"])
            except SystemExit:
                pass
        heavy = [m for m in ("tensorflow", "mlflow", "keras") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
        """
    )
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_every_command_exists() -> None:
    assert {"config", "train", "evaluate", "predict", "search", "promote", "serve"} <= set(COMMANDS)


def test_run_py_from_another_directory_without_install(tmp_path: Path) -> None:
    """run.py puts src/ on sys.path itself: no editable install, any working directory."""
    import site

    code = textwrap.dedent(
        f"""
        import runpy, sys
        # Site-packages without .pth processing: the editable install of kennel is invisible.
        sys.path.extend({site.getsitepackages()!r})
        try:
            import kennel  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("kennel importable without run.py")
        sys.argv = ["run.py", "config", "-c", "dog.yaml"]
        runpy.run_path({str(ROOT / "run.py")!r}, run_name="__main__")
        """
    )
    result = subprocess.run(
        [PYTHON, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "family: dog" in result.stdout


def test_unknown_argument_is_exit_2() -> None:
    result = run_cli("config", "--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr


def test_overrides_anywhere_on_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "training.seed=3", "-c", "cat.yaml", "resource.num_threads=1"]) == 0
    out = capsys.readouterr().out
    assert "seed: 3" in out and "num_threads: 1" in out


def test_internal_error_is_exit_1(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import kennel.cli.config as cmd

    def boom(args):
        raise RuntimeError("kaput\nsecond line")

    monkeypatch.setattr(cmd, "run", boom)
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaput" in err
    assert "second line" not in err and "Traceback" not in err


def test_dotenv_is_loaded_by_run_py(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KENNEL_TRAINING__SEED=1234\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "config", "--explain"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in __import__("os").environ.items() if not k.startswith("_KENNEL")},
    )
    assert result.returncode == 0, result.stderr
    assert "training.seed: 1234  # environment KENNEL_TRAINING__SEED" in result.stdout
