"""Torch names our code uses that an older torch's Python sources do not define.

::

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform macosx_11_0_arm64 torch==2.11.0 -d /tmp/old
    unzip -q /tmp/old/torch-*.whl 'torch/*.py' 'torch/*.pyi' -d /tmp/old/src
    python benchmarks/torch_api_scan.py /tmp/old/src

(the macOS wheel: 80 MB against the Linux one's 900, the same Python sources). Every dotted
torch name in the repository's Python files (``torch.x.y``, through import aliases such as
``F`` or ``nn``, and ``from torch.x import y``) is resolved in the torch installed here,
prefix by prefix; a module counts as present in the old torch when its file is there, any
other name when its parent module's file mentions it or the old sources define it anywhere
(``def``, ``class`` or an assignment; the ``.pyi`` stubs cover the C functions). It prints the
names found in neither. A new keyword argument of an old function is not caught.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("scicontrast", "models", "analysis", "data_adapters", "benchmarks", "tests", "examples")


def torch_names(tree: ast.AST) -> Iterator[str]:
    """The dotted torch names of one module: its torch imports and attribute chains."""
    alias = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.name.split(".")[0] == "torch":
                    alias[name.asname or "torch"] = name.name if name.asname else "torch"
                    yield name.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            for name in node.names:
                alias[name.asname or name.name] = f"{node.module}.{name.name}"
                yield f"{node.module}.{name.name}"
    for node in ast.walk(tree):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name) and node.id in alias:
            yield ".".join([alias[node.id], *reversed(parts)])


def resolved_prefixes(name: str) -> Iterator[tuple[str, object]]:
    """``(prefix, object)`` for every prefix of ``name`` below ``torch`` that resolves here."""
    parts, found = name.split("."), torch
    for i in range(1, len(parts)):
        prefix = ".".join(parts[: i + 1])
        try:
            found = getattr(found, parts[i])
        except AttributeError:
            try:
                found = __import__(prefix, fromlist=["_"])
            except ImportError:
                return
        yield prefix, found


def missing_names(old: Path) -> list[tuple[str, str]]:
    """``(name, first file using it)`` for the names that ``old`` (an unpacked wheel) lacks."""
    texts = {path: path.read_text(errors="ignore") for path in old.rglob("torch/**/*.py*")}
    everything = "\n".join(texts.values())

    def files(module: str) -> list[Path]:
        base = old / Path(*module.split("."))
        candidates = (base.with_suffix(".py"), base / "__init__.py", base.with_suffix(".pyi"))
        return [path for path in candidates if path in texts]

    def present(name: str, found: object) -> bool:
        if isinstance(found, types.ModuleType):
            return bool(files(name)) or not found.__name__.startswith("torch")
        parent, attribute = name.rsplit(".", 1)
        word = re.escape(attribute)
        if any(re.search(rf"\b{word}\b", texts[path]) for path in files(parent)):
            return True
        return bool(re.search(rf"(def|class) {word}\b|\b{word}\s*[:=]", everything))

    seen, missing = set(), []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            for name in torch_names(ast.parse(path.read_text())):
                for prefix, found in resolved_prefixes(name):
                    if prefix not in seen:
                        seen.add(prefix)
                        if not present(prefix, found):
                            missing.append((prefix, str(path.relative_to(REPO))))
    print(f"torch {torch.__version__} here: {len(seen)} torch names used", file=sys.stderr)
    return missing


if __name__ == "__main__":
    found = missing_names(Path(sys.argv[1]))
    print(f"not in {sys.argv[1]}: {len(found)}")
    for name, path in found:
        print(f"  {name}  ({path})")
