"""The synthetic DNA demo data."""

from __future__ import annotations

import time

import numpy as np
import pytest
from Bio import SeqIO

from scicontrast.data_adapters.dna.demo import (
    DEMO_FILENAME_PATTERN,
    _source_model,
    generate_demo_dna,
)
from scicontrast.data_adapters.dna.encoding import encode_codes, reverse_complement
from scicontrast.data_adapters.dna.reading import FastaAdapter
from scicontrast.errors import ConfigError


def read_sequences(path) -> dict[str, str]:
    return {r.id: str(r.seq) for r in SeqIO.parse(path, "fasta")}


def canonical_3mer_frequencies(sequence: str) -> np.ndarray:
    """Frequencies of the 64 3-mers with each k-mer merged with its reverse complement."""
    codes = encode_codes(sequence).astype(np.int64) - 1  # A, C, G, T -> 0..3
    index = 16 * codes[:-2] + 4 * codes[1:-1] + codes[2:]
    counts = np.bincount(index, minlength=64).astype(float)
    complement = (3 - codes)[::-1]
    rc_index = 16 * complement[:-2] + 4 * complement[1:-1] + complement[2:]
    counts += np.bincount(rc_index, minlength=64)
    return counts / counts.sum()


def test_files_records_and_determinism(tmp_path):
    paths = generate_demo_dna(tmp_path / "a", sources=3, sequences_per_source=20, length=120)
    assert [p.name for p in paths] == ["source_0.fa", "source_1.fa", "source_2.fa"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in paths]
    for k, path in enumerate(paths):
        sequences = read_sequences(path)
        assert list(sequences) == [f"s{k}_{i}" for i in range(20)]
        assert all(len(s) == 120 and set(s) <= set("ACGT") for s in sequences.values())
    again = generate_demo_dna(tmp_path / "b", sources=3, sequences_per_source=20, length=120)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    other = generate_demo_dna(
        tmp_path / "c", sources=3, sequences_per_source=20, length=120, seed=1
    )
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(paths, other, strict=True))


def test_defaults_are_fast_and_parse_with_the_adapter(tmp_path):
    began = time.perf_counter()
    paths = generate_demo_dna(tmp_path)
    assert time.perf_counter() - began < 1.0
    adapter = FastaAdapter(
        paths=[str(tmp_path / "source_*.fa")],
        window=100,
        stride=50,
        flank=8,
        label_from_filename=DEMO_FILENAME_PATTERN,
    )
    items = adapter.read()
    assert items.meta["records"] == 4 * 150
    assert len(items) == 4 * 150 * 5
    assert sorted(items.table["source"].unique()) == [p.stem for p in paths]
    for row in items.table.sample(20, random_state=0).itertuples():
        assert row.record_id.startswith(f"s{row.source.split('_')[1]}_")


def test_sources_differ_in_strand_merged_3mer_statistics(tmp_path):
    paths = generate_demo_dna(tmp_path, sequences_per_source=60)
    features = np.array(
        [[canonical_3mer_frequencies(s) for s in read_sequences(path).values()] for path in paths]
    )  # [source, sequence, 64]
    centroids = features.mean(axis=1)
    distances = np.linalg.norm(features[:, :, None, :] - centroids[None, None], axis=-1)
    nearest = distances.argmin(axis=-1)
    assert (nearest == np.arange(len(paths))[:, None]).mean() > 0.95

    def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a[:, None] - b[None], axis=-1).mean())

    within = max(mean_distance(f, f) for f in features)
    between = min(
        mean_distance(features[a], features[b])
        for a in range(len(paths))
        for b in range(a + 1, len(paths))
    )
    assert between > 1.2 * within


def test_motifs_are_planted_on_both_strands(tmp_path):
    paths = generate_demo_dna(tmp_path, sources=2, sequences_per_source=50)
    for k, path in enumerate(paths):
        _, motifs = _source_model(0, k)
        sequences = list(read_sequences(path).values())
        for motif in motifs:
            forward = "".join("ACGT"[c] for c in motif)
            backward = reverse_complement(forward)
            assert 8 <= len(forward) <= 10
            with_motif = [forward in s or backward in s for s in sequences]
            assert np.mean(with_motif) > 0.95
            assert any(forward in s for s in sequences) and any(backward in s for s in sequences)


@pytest.mark.parametrize("kwargs", [{"sources": 0}, {"sequences_per_source": 0}, {"length": 5}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError, match=r"demo_data\.dna"):
        generate_demo_dna(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
