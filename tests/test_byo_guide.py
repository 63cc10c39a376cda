"""docs/bring_your_own_data.md: its worked example is the package in examples/, shown
verbatim, and it works as the guide says once pip has installed it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli

GUIDE = REPO / "docs" / "bring_your_own_data.md"
EXAMPLE = REPO / "examples" / "my_lab_adapters"


def guide_blocks() -> dict[str, str]:
    """Code blocks of the guide whose first line is ``# examples/my_lab_adapters/<path>``."""
    blocks = re.findall(
        r"```\w*\n# (examples/my_lab_adapters/\S+)\n(.*?)```", GUIDE.read_text(), re.S
    )
    return {path: body for path, body in blocks}


def test_guide_shows_the_example_files_verbatim():
    blocks = guide_blocks()
    assert {
        "examples/my_lab_adapters/pyproject.toml",
        "examples/my_lab_adapters/src/my_lab_adapters/amplicons.py",
        "examples/my_lab_adapters/example/config.yaml",
    } <= set(blocks)
    for path, body in blocks.items():
        assert (REPO / path).read_text() == body, f"{path} differs from the guide"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """The example package pip-installed into a private site folder (as `pip install .`):
    the folder to run in, and the site folder."""
    root = tmp_path_factory.mktemp("byo")
    source = root / "my_lab_adapters"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    site = root / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return source / "example", site


@pytest.fixture
def run(monkeypatch) -> Callable[..., SimpleNamespace]:
    """``scicontrast ARGS`` in ``workdir`` with the installed package on the path, as a shell
    with ``PYTHONPATH=site`` would run it; in this process (see ``run_cli``)."""

    def run_in(workdir: Path, site: Path, *args: str) -> SimpleNamespace:
        monkeypatch.chdir(workdir)
        monkeypatch.syspath_prepend(str(site))  # also makes its entry points visible
        for name in [m for m in sys.modules if m.startswith("my_lab_adapters")]:
            monkeypatch.delitem(sys.modules, name)
        return run_cli(*args)

    return run_in


@pytest.mark.slow
def test_registered_adapter_runs_prepare_pairs_train_and_embed(installed, run):
    workdir, site = installed
    result = run(workdir, site, "prepare", "--config", "config.yaml", "--out", "items")
    assert result.returncode == 0, result.stderr
    items = pd.read_parquet(workdir / "items" / "items.parquet")
    assert len(items) == 48 and set(items["sample"]) == {"gut", "soil"}
    assert (items["sequence"].str.len() + items["right_pad"] == 100).all()

    steps = [
        ("pairs", "--config", "config.yaml", "--items", "items", "--out", "pairs.parquet"),
        (
            "train",
            "--config",
            "config.yaml",
            "--items",
            "items",
            "--pairs",
            "pairs.parquet",
            "--out",
            "model",
            "--no-progress",
        ),
        ("embed", "new_amplicons.tsv", "--model", "model/model.pt", "--out", "new"),
    ]
    for step in steps:
        result = run(workdir, site, *step)
        assert result.returncode == 0, (step, result.stderr)
    new = pd.read_parquet(workdir / "new" / "embeddings.parquet")
    assert list(new["item_id"]) == [f"new_{i}" for i in range(4)]
    assert np.stack(new["embedding"]).shape == (4, 16)


def test_registered_adapter_reports_bad_lines(installed, run, tmp_path):
    workdir, site = installed
    bad = tmp_path / "bad.tsv"
    rows = (workdir / "amplicons.tsv").read_text().splitlines()
    rows[3] = rows[3][:-10] + "ACGTJACGTA"
    bad.write_text("\n".join(rows) + "\n")
    config = (workdir / "config.yaml").read_text().replace("amplicons.tsv", str(bad))
    (tmp_path / "config.yaml").write_text(config)
    result = run(tmp_path, site, "prepare", "--config", "config.yaml", "--out", "items")
    assert result.returncode == 2
    assert f"{bad}: line 4: invalid character 'J' at position 137" in result.stderr
    assert not (tmp_path / "items").exists()
