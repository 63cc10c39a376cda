"""Synthetic DNA from a few distinct sources: the embedded demo data set.

Source ``k`` is an order-2 Markov chain over ``A, C, G, T`` (codes 0..3)

.. math::

    P(b_t = j \\mid b_{t-2} b_{t-1} = c) = T_k[c, j], \\qquad
    T_k[c, :] \\sim \\mathrm{Dirichlet}(0.7 \\cdot \\mathbf{1}_4),

so sources differ in GC content and in their 2- and 3-mer spectra. A Dirichlet
concentration below 1 makes the rows peaked, so the sources differ clearly. Random
transition matrices are not strand-symmetric, and neither are two of them each other's
reverse complement, so the sources stay apart when both strands of a window are merged (as
an embedding invariant to reverse complement does). Each source also has two motifs of 8-10
uniform random bases; each motif is planted 2-4 times per sequence, at a random position,
on a random strand (the motif or its reverse complement), overwriting the chain's bases.

Output: ``out_dir/source_{k}.fa`` for ``k = 0 .. sources-1``, plain FASTA with records
``s{k}_{i}`` of ``length`` bases, 60 per line. A source's chain and motifs depend only on
``(seed, k)``, its sequences on ``(seed, k)`` and the size arguments, so the output is
deterministic given the arguments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scicontrast.errors import ConfigError
from scicontrast.io import atomic_path

#: ``label_from_filename`` for the demo files: the source is the label.
DEMO_FILENAME_PATTERN = r"(?P<source>source_\d+)\.fa$"

DIRICHLET_CONCENTRATION = 0.7
MOTIFS_PER_SOURCE = 2
MOTIF_LENGTHS = (8, 10)  # inclusive range
PLANTINGS_PER_MOTIF = (2, 4)  # inclusive range
_BURN_IN = 10  # chain steps discarded so that sequences start near the stationary law
_LINE_WIDTH = 60
_LETTERS = np.frombuffer(b"ACGT", dtype=np.uint8)


def _source_model(seed: int, source: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cumulative transition rows ``[16, 4]`` and the motifs (codes) of one source."""
    rng = np.random.default_rng([seed, source, 0])
    transitions = rng.dirichlet(np.full(4, DIRICHLET_CONCENTRATION), size=16)
    motifs = [
        rng.integers(0, 4, size=rng.integers(MOTIF_LENGTHS[0], MOTIF_LENGTHS[1] + 1))
        for _ in range(MOTIFS_PER_SOURCE)
    ]
    return np.cumsum(transitions, axis=1), motifs


def _sample_chain(
    cumulative: np.ndarray, n: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` chains of ``length`` codes, vectorised over the sequences."""
    codes = np.empty((n, length + _BURN_IN), dtype=np.int64)
    codes[:, :2] = rng.integers(0, 4, size=(n, 2))
    uniforms = rng.random((n, length + _BURN_IN))
    for t in range(2, length + _BURN_IN):
        rows = cumulative[4 * codes[:, t - 2] + codes[:, t - 1]]
        # min(.., 3) guards against a cumulative row that ends just below 1 by rounding
        codes[:, t] = np.minimum((uniforms[:, t, None] > rows).sum(axis=1), 3)
    return codes[:, _BURN_IN:]


def _plant_motifs(codes: np.ndarray, motifs: list[np.ndarray], rng: np.random.Generator) -> None:
    length = codes.shape[1]
    for motif in motifs:
        reverse_complement = 3 - motif[::-1]  # codes A,C,G,T = 0..3: complement is 3 - code
        for row in range(codes.shape[0]):
            count = rng.integers(PLANTINGS_PER_MOTIF[0], PLANTINGS_PER_MOTIF[1] + 1)
            starts = rng.integers(0, length - len(motif) + 1, size=count)
            strands = rng.random(count) < 0.5
            for start, forward in zip(starts, strands, strict=True):
                codes[row, start : start + len(motif)] = motif if forward else reverse_complement


def _fasta(source: int, codes: np.ndarray) -> str:
    lines = []
    for i, row in enumerate(codes):
        sequence = _LETTERS[row].tobytes().decode("ascii")
        lines.append(f">s{source}_{i}")
        lines.extend(sequence[j : j + _LINE_WIDTH] for j in range(0, len(sequence), _LINE_WIDTH))
    return "\n".join(lines) + "\n"


def generate_demo_dna(
    out_dir: str | Path,
    sources: int = 4,
    sequences_per_source: int = 150,
    length: int = 300,
    seed: int = 0,
) -> list[Path]:
    """Write ``source_{k}.fa`` for each source into ``out_dir``; return their paths.

    Each file is written atomically; other files in ``out_dir`` are left alone.
    """
    if sources < 1 or sequences_per_source < 1:
        raise ConfigError(
            f"demo_data.dna: sources ({sources}) and sequences_per_source "
            f"({sequences_per_source}) must be >= 1"
        )
    if length < MOTIF_LENGTHS[1]:
        raise ConfigError(
            f"demo_data.dna: length={length} is shorter than the motifs ({MOTIF_LENGTHS[1]})"
        )
    out_dir = Path(out_dir)
    paths = []
    for source in range(sources):
        cumulative, motifs = _source_model(seed, source)
        rng = np.random.default_rng([seed, source, 1])
        codes = _sample_chain(cumulative, sequences_per_source, length, rng)
        _plant_motifs(codes, motifs, rng)
        path = out_dir / f"source_{source}.fa"
        with atomic_path(path) as tmp:
            tmp.write_text(_fasta(source, codes))
        paths.append(path)
    return paths
