"""Small rooms: no module of the package over 500 lines, no function over 60.

Lines are counted as written (docstrings and comments included): what a reader scrolls
through. A module or function over the limit is allowed only when it is listed below with
the reason; an entry that no longer exceeds its limit fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast

import pytest
from test_layers import MODULES

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

# Modules over the limit.
LONG_MODULES: dict[str, str] = {}

# Functions over the limit, as "module:Class.function" or "module:function".
LONG_FUNCTIONS = {
    # Flat sequences: one step after another, each a few lines, no branch worth a name of
    # its own; cut into helpers they would pass a dozen locals back and forth.
    "scicontrast.analysis.summary:format_report": "flat: one block per section of the text",
    "scicontrast.analysis.plots:plot_training_curves": "flat: one panel after another",
    "scicontrast.analysis.plots:make_plots": "flat: one figure after another",
    "scicontrast.analysis.retrieval:format_audio_image": "flat: one table after another",
    "scicontrast.analysis.export:export": "flat: one output file after another",
    "scicontrast.data_adapters.grains.folders:segment": "flat: per image segment and save",
    "scicontrast.data_adapters.graphs.cleaning:GraphAdapter._graph_items": (
        "flat: one cleaning policy after another, each counted in `cleaning`"
    ),
    # Checks in the order the user's file is read, each with its own message.
    "scicontrast.data_adapters.audio_image.manifests:manifest_events": "checks in file order",
    "scicontrast.data_adapters.graphs.planetoid:PyGDataAdapter.read": "checks in file order",
    "scicontrast.analysis.invariance:invariance_score": "the formula's terms in order",
    # The loss forms: the math in one place, matching the module docstring line by line.
    "scicontrast.models.losses:InfoNCELoss.against_keys": "the MoCo form's math in one place",
    "scicontrast.models.chunked_loss:chunked_info_nce": "the strip loop's math in one place",
    "scicontrast.models.audio_image:TwoTowerEncoder.__init__": "checks in parameter order",
}


def functions(tree: ast.Module) -> dict[str, ast.AST]:
    """``"Class.function"`` or ``"function"`` -> node, for every def at any depth."""
    found: dict[str, ast.AST] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[prefix + child.name] = child
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def sizes() -> tuple[dict[str, int], dict[str, int]]:
    """Lines of every module, and of every function as ``module:qualified name``."""
    module_lines, function_lines = {}, {}
    for module, path in MODULES.items():
        source = path.read_text()
        module_lines[module] = len(source.splitlines())
        for name, node in functions(ast.parse(source)).items():
            function_lines[f"{module}:{name}"] = node.end_lineno - node.lineno + 1
    return module_lines, function_lines


MODULE_LINES, FUNCTION_LINES = sizes()


def test_the_walk_counts_what_it_should():
    assert MODULE_LINES["scicontrast.data_adapters.dna.reading"] > 100
    assert "scicontrast.cli.parsers:build_parser" in FUNCTION_LINES
    assert "scicontrast.models.losses:InfoNCELoss.forward" in FUNCTION_LINES


@pytest.mark.parametrize(
    ("limit", "lines", "allowed"),
    [
        (MAX_MODULE_LINES, MODULE_LINES, LONG_MODULES),
        (MAX_FUNCTION_LINES, FUNCTION_LINES, LONG_FUNCTIONS),
    ],
    ids=["modules", "functions"],
)
def test_no_room_over_the_limit_unless_listed(limit, lines, allowed):
    over = {name: n for name, n in lines.items() if n > limit}
    unlisted = {name: n for name, n in over.items() if name not in allowed}
    assert not unlisted, f"over {limit} lines: {unlisted}; split them or list them with why"
    stale = sorted(set(allowed) - set(over))
    assert not stale, f"listed but not over {limit} lines (remove from the list): {stale}"
