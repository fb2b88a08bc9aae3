"""Every ``kennel ...`` command shown in README.md and docs/*.md parses: the command exists,
every option it uses exists and takes the value shown, and every ``key=value`` override names
a real setting. (Running them all would take an hour; ``make demo``, the CLI and end-to-end
tests run the everyday ones for real.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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
    from kennel.cli.manager import build_parser
    from kennel.config import check_override_key

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


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (outside code blocks)."""
    found, inside = set(), False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        heading = None if inside else re.match(r"^#{1,6} (.*)$", line)
        if heading:
            text = heading.group(1).strip().lower().replace("`", "").replace("*", "")
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def test_links_between_the_docs_resolve() -> None:
    """README is the front door and the reference lives in docs/: every relative link (and
    its #anchor) between them points at a file and a heading that exist."""
    broken = []
    for path in DOCS:
        for target in re.findall(r"\[[^\]]+\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"^[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, broken
