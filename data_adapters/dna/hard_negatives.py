r"""Hard negatives for same-genome reads: batches that hold each genome's closest other genome.

The **TNF profile** of a group :math:`g` (a genome, or any grouping of records) is its
canonical tetranucleotide frequency vector over all bases of its records,

.. math::

    t_g = \frac{c_g}{\sum_w c_{g,w}} \in \mathbb{R}^{136}, \qquad
    c_{g,w} = n_{g,w} + n_{g,\bar w} \ (w \ne \bar w), \quad c_{g,w} = n_{g,w} \ (w = \bar w),

with :math:`n_{g,w}` the count of word :math:`w` on the forward strand and :math:`\bar w` its
reverse complement (:func:`~scicontrast.data_adapters.dna.kmers.kmer_frequencies` with
``canonical``), the composition signal by which genome binning groups contigs (Teeling et
al., 2004). The closest other group of :math:`g` is :math:`\arg\min_{h \ne g} \lVert t_g -
t_h \rVert_2`. Profiles are computed from the records the pair builder trains on (the
training genomes of a split), never from held-out ones.

A batch of ``m`` groups with hard negatives (:func:`hard_negative_groups`) takes anchors in a
random order and puts after each anchor its closest group not yet in the batch, until ``m``
groups are in: about half the batch are anchors, and every anchor meets the genome it is
most easily confused with among its negatives. Without hard negatives a batch is ``m``
groups drawn uniformly, and when ``m`` is at least the number of groups every batch holds all
of them, so the option only changes batches smaller than the corpus.
"""

from __future__ import annotations

import numpy as np

from scicontrast.data_adapters.dna.kmers import kmer_counts, reverse_complement_kmers

#: Bases counted per pass, so that a 30 Mb genome is counted in bounded memory.
CHUNK_BASES = 2**20


def canonical_tnf(chunks: list[np.ndarray]) -> np.ndarray:
    """Canonical 4-mer frequencies ``float64 [136]`` of the records whose codes ``uint8
    [L_i]`` are ``chunks`` (module docstring); no word spans two records."""
    counts = np.zeros(4**4)
    for codes in chunks:
        for start in range(0, len(codes), CHUNK_BASES):
            # Overlap by 3 bases so that no word at a pass boundary is lost or counted twice.
            piece = np.asarray(codes[start : start + CHUNK_BASES + 3])
            counts += kmer_counts(piece[None, :], 4)[0]
    partner = reverse_complement_kmers(4)
    words = np.arange(4**4)
    counts = np.where(partner != words, counts + counts[partner], counts)[words <= partner]
    return counts / max(counts.sum(), 1.0)


def closest_groups(profiles: np.ndarray) -> np.ndarray:
    """``int64 [G, G-1]``: for each group (row of ``profiles [G, F]``) the other groups by
    increasing Euclidean distance of profiles (ties by index)."""
    distance = np.linalg.norm(profiles[:, None, :] - profiles[None, :, :], axis=-1)
    np.fill_diagonal(distance, np.inf)
    return np.argsort(distance, axis=1, kind="stable")[:, :-1]


def hard_negative_groups(
    rng: np.random.Generator, closest: np.ndarray, per_batch: int
) -> np.ndarray:
    """Positions of ``per_batch`` groups: random anchors, each followed by its closest group
    not yet chosen (``closest`` as from :func:`closest_groups`)."""
    chosen: list[int] = []
    taken = np.zeros(len(closest), dtype=bool)
    for anchor in rng.permutation(len(closest)):
        if len(chosen) == per_batch:
            break
        if taken[anchor]:
            continue
        chosen.append(int(anchor))
        taken[anchor] = True
        if len(chosen) < per_batch:
            partner = next(int(g) for g in closest[anchor] if not taken[g])
            chosen.append(partner)
            taken[partner] = True
    return np.array(chosen, dtype=np.int64)
