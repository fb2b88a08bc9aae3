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
    assert result.stderr.splitlines() == [
        "kennel config: error: unrecognized arguments: --bogus; see 'kennel config --help'"
    ]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["trian", "-c", "cat.yaml"],
            "kennel: error: unknown command 'trian'; did you mean 'train'?; see 'kennel --help'",
        ),
        (
            ["train", "--output-jsn", "x.json"],
            "kennel train: error: unrecognized arguments: --output-jsn; "
            "did you mean '--output-json'?; see 'kennel train --help'",
        ),
        (
            ["evaluate", "--model-uri", "m", "--outputdir=out"],
            "kennel evaluate: error: unrecognized arguments: --outputdir=out; "
            "did you mean '--output-dir'?; see 'kennel evaluate --help'",
        ),
        (
            ["predict", "--model-uri", "m"],
            "kennel predict: error: the following arguments are required: --input, --output; "
            "see 'kennel predict --help'",
        ),
    ],
)
def test_command_line_mistakes_get_one_line_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line naming the bad word, from the command's own parser, with the closest real
    command or option when one is close; no usage block."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_every_command_with_a_result_takes_output_json() -> None:
    """README: commands that produce a result print it as one JSON line and write it to
    --output-json PATH (a long-running server and the config printer excepted)."""
    from kennel.cli.manager import build_parser

    parser = build_parser()
    for name in set(COMMANDS) - {"serve", "config"}:
        command = parser._subparsers._group_actions[0].choices[name]
        options = {o for action in command._actions for o in action.option_strings}
        assert "--output-json" in options, name


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
