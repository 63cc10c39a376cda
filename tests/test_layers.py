"""Imports flow one way, down the layers of the package:

    cli, workflow  >  analysis  >  models  >  data_adapters  >  ground (the rest of scicontrast/)

A module may import from its own layer or any layer below, never from one above, at the top
of the file or inside a function alike (a lazy import is still a dependency). And no module
imports another module's underscore names: what is shared is public.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

LAYERS = {
    "scicontrast.cli": 4,
    "scicontrast.workflow": 4,
    "scicontrast.analysis": 3,
    "scicontrast.models": 2,
    "scicontrast.data_adapters": 1,
    "scicontrast": 0,
}
FOLDERS = {
    "scicontrast": REPO / "scicontrast",
    "scicontrast.models": REPO / "models",
    "scicontrast.data_adapters": REPO / "data_adapters",
    "scicontrast.analysis": REPO / "analysis",
}


def layer(module: str) -> int:
    """The layer of a dotted module name: its longest prefix in :data:`LAYERS`."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def package_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the installed package."""
    modules = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every ``scicontrast`` import in the file, wherever it is."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scicontrast"):
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("scicontrast"):
                    found.append((node.lineno, alias.name, []))
    return found


MODULES = package_modules()


def test_the_walk_sees_every_layer():
    assert {layer(name) for name in MODULES} == set(LAYERS.values())
    assert layer("scicontrast.models.train") == 2 and layer("scicontrast.errors") == 0


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers_and_name_no_private_names(module):
    upward, private = [], []
    for line, target, names in imports(MODULES[module]):
        full_names = [f"{target}.{name}" for name in names]
        # `from scicontrast.analysis import embed` imports the submodule.
        targets = [n for n in full_names if n in MODULES] or [target]
        if any(layer(t) > layer(module) for t in targets):
            upward.append(f"line {line}: {target}")
        private += [f"line {line}: {target}.{n}" for n in names if n.startswith("_")]
    assert not upward, f"{module} imports from a higher layer: {upward}"
    assert not private, f"{module} imports private names: {private}"


def test_no_two_modules_import_each_other_even_through_others():
    """A cycle (evaluate -> graph_eval -> evaluate, say) is found by a depth-first walk."""
    graph = {
        module: {
            target
            for _, base, names in imports(path)
            for target in ([f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES] or [base])
            if target in MODULES and target != module and target != "scicontrast"
        }
        for module, path in MODULES.items()
    }
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = [*path[path.index(target) :], target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
