"""Every ``kennel ...`` command shown in README.md and docs/*.md parses: the command exists,
every option it uses exists and takes the value shown, and every ``key=value`` override names
a real setting. (Running them all would take an hour; ``make demo``, the CLI and end-to-end
tests run the everyday ones for real.)"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Text that marks an example as a sketch with a placeholder, not a runnable command.
PLACEHOLDERS = ("<", "…", "...", "$(")


def shown_commands() -> list[tuple[str, str]]:
    """(file:line, command) for each ``kennel`` command in a fenced code block."""
    found = []
    for path in DOCS:
        inside = False
        pending = ""
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip().startswith("```"):
                inside = not inside
                pending = ""
                continue
            if not inside:
                continue
            text = pending + line.strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            text = re.sub(r"\s+#\s.*$", "", text).strip()
            # environment assignments before the command (FOO=bar kennel ...)
            while re.match(r"^[A-Z_][A-Z0-9_]*=\S+\s", text):
                text = text.split(None, 1)[1]
            for prefix in ("kennel ", "python run.py ", ".venv/bin/kennel "):
                rest = text[len(prefix) :]
                # "kennel train: error: ..." is output shown in the docs, not a command
                if text.startswith(prefix) and not rest.split(" ", 1)[0].endswith(":"):
                    found.append((f"{path.name}:{number}", rest))
    return found


COMMANDS = shown_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_shown_command_parses(where: str, command: str) -> None:
    from kennel.config import check_override_key
    from kennel.manager import build_parser

    if any(p in command for p in PLACEHOLDERS) or command.startswith(("--help", "-h")):
        pytest.skip("a sketch with a placeholder")
    argv = shlex.split(command)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `kennel {command}` does not parse (exit {exc.code})")
    for override in getattr(args, "overrides", None) or []:
        key = override.split("=", 1)[0]
        try:
            check_override_key(key)
        except Exception as exc:
            pytest.fail(f"{where}: `kennel {command}`: {exc}")
