"""Overlapping k-mers of DNA windows: word indices, counts, reverse-complement pairing.

Windows are codes ``uint8 [N, L]`` (``scicontrast.data_adapters.dna.encoding``: 1..4 are A, C, G, T;
anything else is an ambiguity code or padding). A word over ``ACGT`` of length ``k`` is
numbered in lexicographic order, A0 C1 G2 T3 with the first base most significant, so
``index = sum_j 4^(k-1-j) b_j``.
"""

from __future__ import annotations

import numpy as np


def kmer_words(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-mer at each start of each window: ``(index int64 [N, L-k+1], valid bool)``.

    ``codes`` is ``uint8 [N, L]`` (module docstring). ``index`` numbers a word over ``ACGT``
    in lexicographic order (A0 C1 G2 T3, first base most significant); a word holding an
    ambiguity code or padding is not ``valid``.
    """
    codes = np.asarray(codes, dtype=np.int64)
    clean = (codes >= 1) & (codes <= 4)  # codes 1..4 are A, C, G, T
    base = np.where(clean, codes - 1, 0)
    n_words = max(codes.shape[1] - k + 1, 0)
    index = np.zeros((len(codes), n_words), dtype=np.int64)
    valid = np.ones((len(codes), n_words), dtype=bool)
    for offset in range(k):
        index = index * 4 + base[:, offset : offset + n_words]
        valid &= clean[:, offset : offset + n_words]
    return index, valid


def kmer_counts(codes: np.ndarray, k: int) -> np.ndarray:
    """Forward-strand k-mer counts ``float64 [N, 4**k]`` of windows ``uint8 [N, L]``.

    Every overlapping word is counted; words with an ambiguity code or padding are skipped.
    Columns follow :func:`kmer_words`' numbering.
    """
    index, valid = kmer_words(codes, k)
    rows = np.broadcast_to(np.arange(len(index))[:, None], index.shape)
    flat = rows[valid] * 4**k + index[valid]
    return np.bincount(flat, minlength=len(index) * 4**k).reshape(len(index), 4**k).astype(float)


def reverse_complement_kmers(k: int) -> np.ndarray:
    """``int64 [4**k]``: the index of each k-mer's reverse complement, in
    :func:`kmer_counts`' numbering."""
    powers = 4 ** np.arange(k - 1, -1, -1)
    digits = (np.arange(4**k)[:, None] // powers) % 4
    return (3 - digits[:, ::-1]) @ powers


def kmer_frequencies(codes: np.ndarray, k: int, canonical: bool = False) -> np.ndarray:
    """k-mer frequencies ``float64 [N, F]`` of windows ``uint8 [N, L]``.

    ``f_w = n_w / sum_v n_v`` over the clean overlapping words (:func:`kmer_counts`); a window
    without any gives a zero row. With ``canonical`` a word and its reverse complement are one
    column (``n_w + n_rc(w)``, a palindrome counted once), kept where the word is not larger
    than its reverse complement, so both strands of a window have the same frequencies.
    """
    counts = kmer_counts(codes, k)
    if canonical:
        partner = reverse_complement_kmers(k)
        words = np.arange(4**k)
        counts = np.where(partner != words, counts + counts[:, partner], counts)
        counts = counts[:, words <= partner]
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
