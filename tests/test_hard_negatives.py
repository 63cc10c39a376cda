"""Hard negatives of the same-genome pair rule: TNF profiles, closest genomes, batch content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.dna import hard_negatives
from scicontrast.data_adapters.dna.encoding import encode_codes
from scicontrast.data_adapters.dna.genome_reads import GenomeReads
from scicontrast.data_adapters.dna.genome_store import GenomeAdapter
from scicontrast.data_adapters.dna.hard_negatives import (
    canonical_tnf,
    closest_groups,
    hard_negative_groups,
)
from scicontrast.data_adapters.dna.kmers import kmer_frequencies

# GC content of each genome: two low-GC and two high-GC ones, and a held-out one whose
# closest genome would be g30 if its profile were used.
GC = {"g30": 0.30, "g34": 0.34, "g60": 0.60, "g64": 0.64, "held_out": 0.31}


def random_bases(length: int, gc: float, seed: int) -> str:
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), size=length, p=p))


@pytest.fixture
def store(tmp_path: Path) -> Items:
    paths = []
    for seed, (genome, gc) in enumerate(GC.items()):
        path = tmp_path / f"{genome}.fa"
        path.write_text(f">{genome}_chr\n{random_bases(20000, gc, seed)}\n")
        paths.append(str(path))
    return GenomeAdapter(paths).read()


def test_tnf_counted_in_passes_equals_the_whole_record(monkeypatch):
    records = [encode_codes(random_bases(1000, 0.4, 0)), encode_codes(random_bases(37, 0.6, 1))]
    whole = kmer_frequencies(np.concatenate(records)[None, :], 4, canonical=True)[0]
    monkeypatch.setattr(hard_negatives, "CHUNK_BASES", 10)
    # Counting records apart drops the 3 words that would span the two records.
    counts = [kmer_frequencies(r[None, :], 4, canonical=True)[0] * (len(r) - 3) for r in records]
    apart = sum(counts) / sum(len(r) - 3 for r in records)
    assert np.allclose(canonical_tnf(records), apart)
    assert canonical_tnf(records).shape == (136,) and np.isclose(canonical_tnf(records).sum(), 1)
    assert not np.allclose(apart, whole)  # the boundary words do count when concatenated


def test_closest_groups_orders_by_distance():
    profiles = np.array([[0.0], [1.0], [5.0], [1.5]])
    assert closest_groups(profiles).tolist() == [[1, 3, 2], [3, 0, 2], [3, 1, 0], [1, 0, 2]]


def test_each_anchor_is_followed_by_its_closest_free_group():
    rng = np.random.default_rng(0)
    closest = closest_groups(rng.random((10, 3)))
    for seed in range(20):
        chosen = hard_negative_groups(np.random.default_rng(seed), closest, 7)
        assert len(chosen) == 7 and len(set(chosen.tolist())) == 7
        for position in range(0, 6, 2):
            anchor, partner = chosen[position], chosen[position + 1]
            earlier = set(chosen[: position + 1].tolist())
            assert partner == next(g for g in closest[anchor] if g not in earlier)


def test_batches_hold_the_closest_training_genome(store):
    """Batches of 2 genomes: with hard negatives always a close pair (g30 with g34, g60 with
    g64); the held-out genome, left out of the pairs table, is never drawn nor used."""
    builder = GenomeReads(read_length=100, reads_per_group=2, steps_per_epoch=30)
    pairs = builder.build(store)
    names = sorted(store.table["genome"])
    training = pairs[store.table["genome"].to_numpy() != "held_out"]

    def batch_genomes(hard: bool) -> list[set[str]]:
        builder.hard_negatives = hard
        batches = builder.training_batches(store, training, seed=0, batch_size=2)
        return [{names[int(g)] for g in batch.group_ids.unique()} for batch in batches]

    hard = batch_genomes(True)
    assert all(genomes in ({"g30", "g34"}, {"g60", "g64"}) for genomes in hard)
    assert {frozenset(g) for g in hard} == {frozenset({"g30", "g34"}), frozenset({"g60", "g64"})}
    uniform = batch_genomes(False)
    assert any(genomes not in ({"g30", "g34"}, {"g60", "g64"}) for genomes in uniform)
    assert all("held_out" not in genomes for genomes in hard + uniform)
