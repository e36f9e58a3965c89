"""The package's import graph: no cycle, and every module imports only from its own layer or the ones below it.

The layers are docs/layout.md's. An import inside a function counts like one at the top of a module: it runs
when the function does, and a lazy upward import is still an upward dependency (``import_graph`` walks every node).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "capsrobust"

#: docs/layout.md's layers, lowest first. A module belongs to the layer of its longest prefix listed here.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("infrastructure", ("capsrobust", "capsrobust.errors", "capsrobust.runtime", "capsrobust.precision",
                        "capsrobust.plugins", "capsrobust.tomlfile", "capsrobust.execution")),
    ("data", ("capsrobust.data",)),
    ("models", ("capsrobust.models",)),
    ("attacks", ("capsrobust.attacks",)),
    ("evaluation", ("capsrobust.evaluation",)),
    ("detection", ("capsrobust.detection",)),
    ("figures", ("capsrobust.figures",)),
    ("reporting", ("capsrobust.reporting",)),
    # profiles imports only errors, but it is the benchmark's configuration and only the benchmark and the CLI use it
    ("training and benchmark", ("capsrobust.training", "capsrobust.benchmark", "capsrobust.profiles")),
    ("cli", ("capsrobust.cli",)),
)


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


def layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of the layer ``module`` belongs to, or None when no layer names it."""
    found = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
             if module == prefix or module.startswith(prefix + ".")]
    return max(found)[1] if found else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer, as ``importer (layer) → imported (layer)``."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            below, above = layer_of(module), layer_of(target)
            if below is not None and above is not None and above > below:
                found.append(f"{module} ({LAYERS[below][0]}) → {target} ({LAYERS[above][0]})")
    return found


def test_every_module_has_a_layer():
    unplaced = [name for name in import_graph() if layer_of(name) is None]
    assert unplaced == [], f"add these to LAYERS and docs/layout.md: {unplaced}"


def test_every_module_imports_only_from_its_layer_or_below():
    upward = upward_imports(import_graph())
    assert upward == [], "imports against docs/layout.md's layer order:\n" + "\n".join(upward)


def test_the_layer_check_finds_a_planted_upward_import():
    assert layer_of("capsrobust.evaluation.store") == layer_of("capsrobust.evaluation") == 4
    assert layer_of("capsrobust") == layer_of("capsrobust.execution.ray_executor") == 0
    planted = {"capsrobust.models.capsnet": {"capsrobust.attacks.registry", "capsrobust.errors"},
               "capsrobust.training.loop": {"capsrobust.models"}}
    assert upward_imports(planted) == ["capsrobust.models.capsnet (models) → capsrobust.attacks.registry (attacks)"]


def test_each_package_says_its_job():
    for init in PACKAGE.rglob("__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring, f"{init.relative_to(REPO)} has no docstring"


def test_nothing_imports_the_cli():
    importers = [name for name, targets in import_graph().items() if "capsrobust.cli" in targets]
    assert importers == []
