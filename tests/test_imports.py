"""The package's import graph has no cycle: every module imports only from modules upstream of it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "capsrobust"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module → the capsrobust modules it imports (lazy imports inside functions included)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("capsrobust"):
                # `from package import submodule` imports the submodule, not the package's other names
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                           else node.module for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("capsrobust")]
            else:
                continue
            targets = [*targets, *(package for target in targets for package in cross_package_parents(name, target))]
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def cross_package_parents(importer: str, target: str) -> list[str]:
    """The packages Python initialises on the way to ``target`` that ``importer`` does not live in.

    Importing ``capsrobust.evaluation.accuracy`` runs ``capsrobust/evaluation/__init__.py`` first, so a module
    outside that package depends on everything the package's ``__init__`` re-exports; a module inside it does not
    (its package is already being initialised).
    """
    parts = target.split(".")
    parents = [".".join(parts[:end]) for end in range(2, len(parts))]
    return [parent for parent in parents if not (importer == parent or importer.startswith(parent + "."))]


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first repeated at the end), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " → ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_importing_a_submodule_depends_on_its_package_init():
    assert cross_package_parents("capsrobust.attacks.art_backend", "capsrobust.evaluation.accuracy") == [
        "capsrobust.evaluation"
    ]
    assert cross_package_parents("capsrobust.evaluation.sweep", "capsrobust.evaluation.accuracy") == []


def test_each_package_says_its_job():
    for init in PACKAGE.rglob("__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring, f"{init.relative_to(REPO)} has no docstring"


def test_nothing_imports_the_cli():
    importers = [name for name, targets in import_graph().items() if "capsrobust.cli" in targets]
    assert importers == []
