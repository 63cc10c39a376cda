"""The installed package is the repository's: every folder with an ``__init__.py`` is listed in
pyproject.toml's ``packages``, so a non-editable install (a wheel) carries every subpackage."""

from __future__ import annotations

import tomllib
from conftest import REPO


def installed_name(folder: str, package_dir: dict[str, str]) -> str:
    """The dotted name a repository folder installs as, through ``package-dir``."""
    for name, root in sorted(package_dir.items(), key=lambda kv: -len(kv[1])):
        if folder == root or folder.startswith(root + "/"):
            return name + folder[len(root) :].replace("/", ".")
    raise AssertionError(f"{folder} is under no package-dir root")


def test_every_subpackage_is_listed():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = setuptools["package-dir"]
    folders = {
        str(init.parent.relative_to(REPO))
        for root in roots.values()
        for init in (REPO / root).rglob("__init__.py")
    }
    expected = {installed_name(folder, roots) for folder in folders}
    assert expected == set(setuptools["packages"]), (
        f"missing from packages: {sorted(expected - set(setuptools['packages']))}; "
        f"listed but absent: {sorted(set(setuptools['packages']) - expected)}"
    )
