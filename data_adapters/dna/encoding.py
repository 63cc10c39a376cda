"""DNA encoding: one-hot with IUPAC ambiguity codes, reverse complements and windows.

Encoding
--------
A sequence ``s`` of length ``L`` becomes ``x = one_hot(s)``, a float32 array ``[4, L]`` with
channels in the order ``A, C, G, T``. Watson-Crick complement swaps ``A <-> T`` (channels
0 <-> 3) and ``C <-> G`` (1 <-> 2), i.e. it reverses the channel axis, so

.. math::

    \\mathrm{onehot}(\\mathrm{rc}(s)) = x[::-1, ::-1]
    \\qquad(\\text{torch: } x\\text{.flip(-2).flip(-1)}).

IUPAC ambiguity codes (Cornish-Bowden, *Nucleic Acids Res.* 13:3021, 1985) stand for a set
of bases. Under ``ambiguous="uniform"`` a code is the uniform distribution over its set
(``R = {A, G} -> [0.5, 0, 0.5, 0]``, ``N -> 0.25`` each); under ``ambiguous="zero"`` it is
the zero column. The IUPAC complement of a code is the code of the complementary set
(``R <-> Y``, ``K <-> M``, ``B <-> V``, ``D <-> H``; ``S``, ``W``, ``N`` are their own), so
the identity above holds for ambiguity codes too. Lowercase (soft-masked) letters are read
as uppercase and ``U`` as ``T``; any other character is an error. Positions beyond a
record's ends (padding) are all-zero columns, distinct from ``N`` under the uniform policy.

Windows
-------
A record of length ``L`` is cut into windows of ``window`` bases at starts
``0, stride, 2*stride, ...`` while ``start + window <= L``. Tail policy: when the window
could still slide right by more than half a stride (``L - window - last_start >
stride / 2``), one more window aligned to the record's end (start ``L - window``) is added,
so at most about half a stride of sequence is left uncovered. Each window is stored with up
to ``flank`` extra bases on each side, so that a view can move its start by up to ``flank``
without re-reading the file; flank positions beyond the record's ends are padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

BASES = "ACGT"
_ACGT = set(BASES)

#: The bases each IUPAC symbol stands for (``U`` is RNA's ``T``).
IUPAC_BASES: dict[str, str] = {
    "A": "A",
    "C": "C",
    "G": "G",
    "T": "T",
    "U": "T",
    "R": "AG",
    "Y": "CT",
    "S": "CG",
    "W": "AT",
    "K": "GT",
    "M": "AC",
    "B": "CGT",
    "D": "AGT",
    "H": "ACT",
    "V": "ACG",
    "N": "ACGT",
}

_COMPLEMENT_PAIRS = {
    "A": "T",
    "C": "G",
    "G": "C",
    "T": "A",
    "U": "A",
    "R": "Y",
    "Y": "R",
    "S": "S",
    "W": "W",
    "K": "M",
    "M": "K",
    "B": "V",
    "V": "B",
    "D": "H",
    "H": "D",
    "N": "N",
}
_COMPLEMENT = str.maketrans(
    {**_COMPLEMENT_PAIRS, **{k.lower(): v.lower() for k, v in _COMPLEMENT_PAIRS.items()}}
)

# Integer codes: 0 is padding, 1..15 the IUPAC symbols; U shares T's code. Encoding goes
# byte -> code -> column through two lookup tables, so it is vectorised over a whole string.
_SYMBOLS = "ACGTRYSWKMBDHVN"
PAD_CODE = 0
_CODE_OF_BYTE = np.full(256, -1, dtype=np.int16)
for _code, _symbol in enumerate(_SYMBOLS, start=1):
    _CODE_OF_BYTE[ord(_symbol)] = _CODE_OF_BYTE[ord(_symbol.lower())] = _code
_CODE_OF_BYTE[ord("U")] = _CODE_OF_BYTE[ord("u")] = _CODE_OF_BYTE[ord("T")]
IS_AMBIGUOUS = np.array([False] + [len(IUPAC_BASES[s]) > 1 for s in _SYMBOLS])

AMBIGUOUS_POLICIES = ("uniform", "zero")


def _encoding_table(ambiguous: str) -> np.ndarray:
    """``[16, 4]`` float32: the column of each code (row 0, padding, is zero)."""
    table = np.zeros((len(_SYMBOLS) + 1, 4), dtype=np.float32)
    for code, symbol in enumerate(_SYMBOLS, start=1):
        bases = IUPAC_BASES[symbol]
        if len(bases) == 1 or ambiguous == "uniform":
            for base in bases:
                table[code, BASES.index(base)] = 1.0 / len(bases)
    return table


ENCODING_TABLES = {policy: _encoding_table(policy) for policy in AMBIGUOUS_POLICIES}


class InvalidBaseError(ValueError):
    """A character that is no IUPAC nucleotide code; ``position`` is 1-based."""

    def __init__(self, character: str, position: int) -> None:
        super().__init__(f"invalid character {character!r} at position {position}")
        self.character = character
        self.position = position


def encode_codes(seq: str) -> np.ndarray:
    """Integer codes ``uint8 [L]`` (1..15, see module docstring) of a nucleotide string.

    Raises :class:`InvalidBaseError` at the first character that is not an IUPAC code.
    """
    try:
        raw = np.frombuffer(seq.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError as exc:
        raise InvalidBaseError(seq[exc.start], exc.start + 1) from None
    codes = _CODE_OF_BYTE[raw]
    invalid = np.flatnonzero(codes < 0)
    if invalid.size:
        raise InvalidBaseError(seq[invalid[0]], int(invalid[0]) + 1)
    return codes.astype(np.uint8)


def one_hot(seq: str, ambiguous: str = "uniform") -> np.ndarray:
    """One-hot encoding ``float32 [4, L]``, channels ``A, C, G, T``.

    Ambiguity codes follow ``ambiguous`` (``"uniform"`` or ``"zero"``); an invalid
    character raises :class:`InvalidBaseError` (a ``ValueError``) naming its position.
    """
    table = ENCODING_TABLES.get(ambiguous)
    if table is None:
        raise ValueError(f"ambiguous must be one of {AMBIGUOUS_POLICIES}, got {ambiguous!r}")
    return np.ascontiguousarray(table[encode_codes(seq)].T)


def reverse_complement(seq: str) -> str:
    """IUPAC-aware reverse complement; keeps case and ``N`` (``U`` becomes ``A``)."""
    encode_codes(seq)  # validation only: raises on the first invalid character
    return seq.translate(_COMPLEMENT)[::-1]


def shared_stretches(
    sequences: Sequence[str], stretch: int = 20, both_strands: bool = True
) -> sparse.csr_matrix:
    """Which windows share a stretch of DNA: ``bool [N, N]``, symmetric, ``True`` at
    ``(i, j)``, ``i != j``, when windows ``i`` and ``j`` hold the same ``stretch`` consecutive
    bases (read on either strand with ``both_strands``).

    Windows cut from one stretch of genome at different starts (tiled windows, a stride
    shorter than the window) share such stretches; unrelated windows of 20 or more bases
    almost never do. Stretches with anything but ``ACGT`` (case-insensitive) are skipped.
    """
    if stretch < 1:
        raise ValueError(f"stretch must be >= 1, got {stretch}")
    holders: dict[str, list[int]] = {}
    for i, sequence in enumerate(sequences):
        sequence = sequence.upper()
        words = {sequence[p : p + stretch] for p in range(len(sequence) - stretch + 1)}
        for word in words:
            if not set(word) <= _ACGT:
                continue
            if both_strands:
                word = min(word, word.translate(_COMPLEMENT)[::-1])
            holders.setdefault(word, []).append(i)
    shared = [np.unique(h) for h in holders.values() if len(h) > 1]
    rows = np.concatenate([np.repeat(h, len(h)) for h in shared] or [np.zeros(0, int)])
    cols = np.concatenate([np.tile(h, len(h)) for h in shared] or [np.zeros(0, int)])
    off_diagonal = rows != cols
    n = len(sequences)
    matrix = sparse.coo_matrix(
        (np.ones(off_diagonal.sum(), dtype=bool), (rows[off_diagonal], cols[off_diagonal])),
        shape=(n, n),
    )
    return matrix.tocsr().astype(bool)


def overlap_groups(
    sequences: Sequence[str], stretch: int = 20, both_strands: bool = True
) -> np.ndarray:
    """One group id per window, ``int64 [N]``: windows linked by chains of shared stretches
    (:func:`shared_stretches`) share a group, so grouped probe splits
    (:func:`scicontrast.analysis.probes.stratified_splits`) keep a stretch of genome on
    one side."""
    _, groups = connected_components(
        shared_stretches(sequences, stretch, both_strands), directed=False
    )
    return groups.astype(np.int64)


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """0-based starts of the windows of a record (tail policy in the module docstring)."""
    if length < window:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, length - window + 1, stride, dtype=np.int64)
    leftover = length - window - int(starts[-1])
    if 2 * leftover > stride:
        starts = np.append(starts, length - window)
    return starts
