"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def load_benchmark(script: str) -> ModuleType:
    """Import ``benchmarks/<script>.py`` (a script folder, not a package) as a module."""
    spec = importlib.util.spec_from_file_location(
        f"{script}_benchmark", REPO / "benchmarks" / f"{script}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def minimal_experiment(**overrides) -> dict:
    """The smallest valid experiment: components named, everything else defaulted."""
    experiment = {
        "adapter": {"name": "dna_fasta", "params": {"paths": ["x.fa"], "window": 50}},
        "pairs": {"name": "dna_views"},
        "encoder": {"name": "dna_cnn"},
    }
    experiment.update(overrides)
    return experiment


@pytest.fixture
def shared_data() -> Path:
    """The real data sets beside the repository; skips the test when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def small_dna_experiment(
    folder: Path, sequences_per_source: int, training: dict | None = None
) -> tuple[dict, list[Path]]:
    """A small two-source DNA experiment named ``small`` on demo FASTA written to ``folder``.

    Saves its items to ``folder/items`` and its pairs table to ``folder/pairs.parquet``;
    returns the validated experiment and the FASTA files. Labels: ``source`` from file names.
    """
    from scicontrast.config import validate_config
    from scicontrast.data_adapters.demo_dna import generate_demo_dna
    from scicontrast.io import write_parquet
    from scicontrast.registry import ADAPTERS, PAIR_BUILDERS

    fasta = generate_demo_dna(
        folder / "fa", sources=2, sequences_per_source=sequences_per_source, length=90
    )
    small = {
        "adapter": {
            "name": "dna_fasta",
            "params": {
                "paths": [str(p) for p in fasta],
                "window": 40,
                "stride": 20,
                "flank": 2,
                "label_from_filename": r"(?P<source>source_\d+)\.fa$",
            },
        },
        "pairs": {"name": "dna_views", "params": {"max_shift": 2}},
        "encoder": {"name": "dna_cnn", "params": {"channels": 8, "embedding_dim": 12}},
        "head": {"hidden_dim": 8, "output_dim": 4},
        "training": training or {},
        "analysis": {"label_column": "source"},
    }
    experiment = {
        "name": "small",
        **validate_config({"experiments": {"small": small}})["experiments"]["small"],
    }
    items = ADAPTERS.create(experiment["adapter"]).read()
    items.save(folder / "items")
    write_parquet(folder / "pairs.parquet", PAIR_BUILDERS.create(experiment["pairs"]).build(items))
    return experiment, fasta
