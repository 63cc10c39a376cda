"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
