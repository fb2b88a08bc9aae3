"""The layout's rules, read from the source with ``ast`` (nothing is imported):

- nothing outside ``kennel.cli`` imports it (the CLI parses, calls a workflow, prints);
- no import circle between kennel modules, counting imports inside functions too (only
  ``if TYPE_CHECKING:`` blocks are left out: they never run);
- families import neither MLflow nor ``kennel.tracking`` (they are pure ML, tested without a
  store);
- no module over ~600 lines and no function over ~80 lines without a comment that says why
  (``# long: <reason>`` on the line of the ``def`` or the one above it).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "kennel"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
WHY = "# long:"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: list[str]
    imports: list[tuple[str, int]] = field(default_factory=list)
    """(imported module, line) for every kennel import that can run."""
    external: list[tuple[str, int]] = field(default_factory=list)
    """(top-level package, line) for every other import that can run."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runnable_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in getattr(node, "orelse", []):
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def load_modules() -> dict[str, Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = module_name(path)
        modules[name] = Module(name, path, ast.parse(text), text.splitlines())
    for module in modules.values():
        package = (
            module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
        )
        for node in _runnable_imports(module.tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from kennel.search import results``: the submodule when there is one.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                if target == "kennel" or target.startswith("kennel."):
                    module.imports.append((target, node.lineno))
                else:
                    module.external.append((target.split(".")[0], node.lineno))
    return modules


MODULES = load_modules()


def test_the_modules_were_found() -> None:
    assert {"kennel.cli.manager", "kennel.train.pipeline", "kennel.registry"} <= set(MODULES)


def _top_level_names(module: Module) -> set[str]:
    """Names a module defines or imports at its top level (what ``from it import x`` finds)."""
    names: set[str] = set()
    for node in module.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If | ast.Try):  # TYPE_CHECKING, optional imports
            for child in ast.walk(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    names |= {(a.asname or a.name).split(".")[0] for a in child.names}
    if module.name == "kennel":  # the lazy names of kennel/__init__.py
        names |= {"__version__", "Config", "ConfigError", "DataError", "DataProcessor"}
        names |= {"UserError", "load_config"}
    return names


def test_every_kennel_import_resolves() -> None:
    """Also the imports inside functions, which importing the modules does not run."""
    missing = []
    for module in MODULES.values():
        for node in _runnable_imports(module.tree):
            if isinstance(node, ast.Import):
                missing += [
                    f"{module.name}:{node.lineno} import {a.name}"
                    for a in node.names
                    if a.name.startswith("kennel") and a.name not in MODULES
                ]
                continue
            base = node.module or ""
            if node.level or not (base == "kennel" or base.startswith("kennel.")):
                continue
            if base not in MODULES:
                missing.append(f"{module.name}:{node.lineno} from {base}")
                continue
            names = _top_level_names(MODULES[base])
            missing += [
                f"{module.name}:{node.lineno} from {base} import {a.name}"
                for a in node.names
                if a.name != "*" and a.name not in names and f"{base}.{a.name}" not in MODULES
            ]
    assert not missing, missing


def test_nothing_outside_the_cli_imports_it() -> None:
    offenders = [
        f"{module.name}:{line} imports {target}"
        for module in MODULES.values()
        if not (module.name == "kennel.cli" or module.name.startswith("kennel.cli."))
        for target, line in module.imports
        if target == "kennel.cli" or target.startswith("kennel.cli.")
    ]
    assert not offenders, offenders


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module in MODULES.values():
        for target, _ in module.imports:
            while target not in MODULES and "." in target:  # ``from kennel.x import name``
                target = target.rpartition(".")[0]
            if target in MODULES and target != module.name:
                graph[module.name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_circle_between_kennel_modules() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_families_import_neither_mlflow_nor_tracking() -> None:
    offenders = []
    for module in MODULES.values():
        if not module.name.startswith("kennel.families"):
            continue
        offenders += [
            f"{module.name}:{line} imports mlflow"
            for top, line in module.external
            if top == "mlflow"
        ]
        offenders += [
            f"{module.name}:{line} imports {target}"
            for target, line in module.imports
            if target.startswith(("kennel.tracking", "kennel.registry", "kennel.serve"))
        ]
    assert not offenders, offenders


def test_no_module_over_the_limit() -> None:
    long = [
        f"{module.name}: {len(module.lines)} lines"
        for module in MODULES.values()
        if len(module.lines) > MAX_MODULE_LINES
        and not any(WHY in line for line in module.lines[:30])
    ]
    assert not long, long


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_no_function_over_the_limit_without_a_reason() -> None:
    long = []
    for module in MODULES.values():
        for func in _functions(module.tree):
            start = min([func.lineno, *(d.lineno for d in func.decorator_list)])
            size = (func.end_lineno or func.lineno) - start + 1
            said = any(
                WHY in module.lines[i - 1] for i in (start - 1, start, func.lineno) if i >= 1
            )
            if size > MAX_FUNCTION_LINES and not said:
                long.append(f"{module.name}.{func.name}: {size} lines")
    assert not long, long


@pytest.mark.parametrize(
    "room",
    [
        "cli",
        "data",
        "families",
        "monitor",
        "registry",
        "report",
        "score",
        "search",
        "serve",
        "tracking",
        "train",
    ],
)
def test_each_room_is_a_package_with_a_docstring(room: str) -> None:
    init = PACKAGE / room / "__init__.py"
    assert init.is_file(), f"kennel/{room}/ is not a package"
    assert ast.get_docstring(ast.parse(init.read_text())), f"kennel/{room}/__init__.py says nothing"
