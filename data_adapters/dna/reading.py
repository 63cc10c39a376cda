"""DNA: one-hot encoding, the FASTA/FASTQ adapter and the strand/shift pair builder.

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

Items table (one row per window; payload columns for :class:`DNAViews`)::

    item_id       "{record_id}:{start+1}-{end}" (1-based, inclusive; prefixed with
                  "{file}/" when the record id occurs in more than one file)
    record_id, source_file, start (0-based), end (exclusive; the record's length for a
                  short record padded to one window)
    sequence      flank + window + flank as read (uppercase), clipped at the record's ends
    window_start  offset of the window inside ``sequence``
    left_pad, right_pad
                  padding columns before/after ``sequence``; for every row
                  left_pad + len(sequence) + right_pad == window + 2 * flank
    ...           metadata columns (labels table, file-name groups)

Views
-----
:class:`DNAViews` pairs the two strands of a window (the same molecule read in the other
direction) and, optionally, windows shifted by up to ``max_shift`` bases (the same locus
seen with a slightly different crop). A view of item ``i`` is the crop
``[flank + s, flank + s + window)`` of its padded encoding ``[4, window + 2 * flank]``
with ``s ~ U{-max_shift, ..., max_shift}``, with point mutations at ``mutation_rate`` and
one block of ``round(mask_fraction * window)`` positions, at a uniform start, set to padding,
then reverse-complemented for the ``reverse_complement`` view.

With ``neighbours = m > 0`` each window also gets a ``neighbour`` view: the forward view
of a window drawn uniformly, per epoch, from its ``m`` composition neighbours, the windows
whose k-mer profiles are nearest. The profile of window ``i`` is its forward-strand k-mer
frequency vector ``f_i`` (:func:`kmer_counts`, normalised to sum 1), each of the ``4^k``
columns standardised over all windows, ``z_i = (f_i - mean) / std``; neighbours are the
``m`` windows ``j != i`` of largest cosine ``cos(z_i, z_j)``. Composition (above all
tetranucleotide frequency) is what metagenomic binning groups contigs of one genome by
(Teeling et al., *Environ. Microbiol.* 6:938, 2004), and windows of one kind of element
(promoters, coding sequence, repeats) share it too; the positive then says "windows that
read alike are alike", a signal no single window's own views carry, in the spirit of
nearest-neighbour positives (NNCLR: Dwibedi et al., ICCV 2021), here from a fixed,
domain-given neighbourhood rather than the encoder's own.
"""

from __future__ import annotations

import copy
import glob
import gzip
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from Bio import SeqIO
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from scicontrast.data_adapters.base import Adapter, Items, PairBuilder
from scicontrast.data_adapters.classical import ClassicalFeatures, kmer_features
from scicontrast.data_adapters.kmers import kmer_counts, kmer_words, reverse_complement_kmers
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS, PAIR_BUILDERS

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
_IS_AMBIGUOUS = np.array([False] + [len(IUPAC_BASES[s]) > 1 for s in _SYMBOLS])

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


_ENCODING_TABLES = {policy: _encoding_table(policy) for policy in AMBIGUOUS_POLICIES}


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
    table = _ENCODING_TABLES.get(ambiguous)
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
    (:func:`scicontrast.analysis.evaluate.stratified_splits`) keep a stretch of genome on
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


# --- adapter -----------------------------------------------------------------------------

_FORMAT_OF_SUFFIX = {
    ".fa": "fasta",
    ".fasta": "fasta",
    ".fna": "fasta",
    ".fas": "fasta",
    ".fq": "fastq",
    ".fastq": "fastq",
}
_GLOB_CHARS = re.compile(r"[*?\[]")
_TABLE_COLUMNS = (
    "item_id",
    "record_id",
    "source_file",
    "start",
    "end",
    "sequence",
    "window_start",
    "left_pad",
    "right_pad",
)
PAYLOAD_COLUMNS = ["sequence", "window_start", "left_pad", "right_pad"]


@dataclass
class _Windows:
    """The kept windows of one record, as columns."""

    path: Path
    record_id: str
    starts: np.ndarray
    ends: np.ndarray
    sequences: list[str]
    offsets: np.ndarray
    left_pads: np.ndarray
    right_pads: np.ndarray


def _strip_gz(path: Path) -> tuple[str, bool]:
    """The file name without ``.gz``, and whether it was gzipped."""
    name = path.name
    if name.lower().endswith(".gz"):
        return name[:-3], True
    return name, False


def _stem(path: Path) -> str:
    name, _ = _strip_gz(path)
    return Path(name).stem


def _biopython_message(exc: Exception) -> str:
    """Biopython's first paragraph, on one line (its messages can be a page long)."""
    return " ".join(str(exc).split("\n\n")[0].split())


@ADAPTERS.register("dna_fasta")
class FastaAdapter(Adapter):
    """FASTA/FASTQ files (plain or gzipped) cut into fixed-length windows.

    Args:
        paths: Files or glob patterns (``**`` allowed). Format by extension: ``.fa``,
            ``.fasta``, ``.fna``, ``.fas`` (FASTA), ``.fq``, ``.fastq`` (FASTQ), each
            optionally followed by ``.gz``. A single string is read as one path.
        format: ``"fasta"`` or ``"fastq"`` to force the format of every file (then the
            extension only decides gzip); ``None`` infers it from the extension.
        window: Window length in bases.
        stride: Distance between window starts; ``None`` means ``window`` (no overlap).
            The tail policy is in the module docstring.
        flank: Extra bases stored on each side of a window, so that a pair builder can
            shift the window by up to ``flank``; beyond the record's ends they are padding.
        short_sequences: A record shorter than ``window``: ``"error"`` stops, ``"skip"``
            drops it (counted in the warning and in ``meta["dropped_windows"]``), ``"pad"``
            makes one window of the whole record followed by padding columns.
        ambiguous: Encoding of IUPAC ambiguity codes: ``"uniform"`` over the bases they
            stand for, or ``"zero"``. Stored in ``meta`` for the pair builder.
        max_ambiguous_fraction: Windows with a larger fraction of ambiguous bases (any
            IUPAC code other than A, C, G, T, U) are dropped and counted.
        labels: A CSV (``.csv``), TSV (``.tsv``, ``.tab``, ``.txt``) or Parquet
            (``.parquet``, ``.pq``) table with one row per record; its other columns become
            metadata columns of every window of that record.
        labels_key: The labels table's column holding record ids.
        labels_missing: A record with no row in the labels table: ``"error"`` stops,
            ``"allow"`` leaves its metadata missing (NaN).
        label_from_filename: A regular expression with named groups, searched
            (``re.search``) in each file's path as listed by :meth:`input_files`, so it may
            capture folder names too; each group becomes a metadata column. A file it does
            not match is an error. Example: ``"(?P<source>[^/.]+)\\.fa"``.
        duplicate_ids: A record id that occurs again in the same file: ``"error"`` stops
            (a repeated id usually means a concatenated or mislabelled file), ``"number"``
            renames the n-th occurrence to ``"<id>#<n>"`` (n >= 2) and counts them in
            ``meta["renamed_duplicate_ids"]``.

    New files embedded through a trained model (``scicontrast embed --model``) replace
    ``paths`` and are read without the label parameters, which describe the training files.
    """

    input_param = "paths"
    training_only_params = ("labels", "labels_key", "labels_missing", "label_from_filename")

    def __init__(
        self,
        paths: list[str] | str,
        window: int = 200,
        stride: int | None = None,
        flank: int = 0,
        short_sequences: str = "error",
        ambiguous: str = "uniform",
        max_ambiguous_fraction: float = 0.1,
        labels: str | None = None,
        labels_key: str = "record_id",
        labels_missing: str = "error",
        label_from_filename: str | None = None,
        format: str | None = None,
        duplicate_ids: str = "error",
    ) -> None:
        self.paths = [paths] if isinstance(paths, str) else [str(p) for p in paths]
        self.window = window
        self.stride = window if stride is None else stride
        self.flank = flank
        self.short_sequences = short_sequences
        self.ambiguous = ambiguous
        self.max_ambiguous_fraction = max_ambiguous_fraction
        self.labels = labels
        self.labels_key = labels_key
        self.labels_missing = labels_missing
        self.format = format
        self.duplicate_ids = duplicate_ids
        self._check_params()
        self.filename_pattern = self._compile_filename_pattern(label_from_filename)

    def _check_params(self) -> None:
        def require(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"adapter dna_fasta: params.{key}: {message}")

        require(bool(self.paths), "paths", "give at least one file or glob pattern")
        for key, value, minimum in (
            ("window", self.window, 1),
            ("stride", self.stride, 1),
            ("flank", self.flank, 0),
        ):
            require(
                isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
                key,
                f"must be an integer >= {minimum}, got {value!r}",
            )
        for key, value, allowed in (
            ("short_sequences", self.short_sequences, ("error", "skip", "pad")),
            ("ambiguous", self.ambiguous, AMBIGUOUS_POLICIES),
            ("labels_missing", self.labels_missing, ("error", "allow")),
            ("format", self.format, (None, "fasta", "fastq")),
            ("duplicate_ids", self.duplicate_ids, ("error", "number")),
        ):
            require(value in allowed, key, f"must be one of {list(allowed)}, got {value!r}")
        require(
            isinstance(self.max_ambiguous_fraction, (int, float))
            and 0.0 <= self.max_ambiguous_fraction <= 1.0,
            "max_ambiguous_fraction",
            f"must be a number in [0, 1], got {self.max_ambiguous_fraction!r}",
        )

    def _compile_filename_pattern(self, pattern: str | None) -> re.Pattern | None:
        if pattern is None:
            return None
        where = "adapter dna_fasta: params.label_from_filename"
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None
        if not compiled.groupindex:
            raise ConfigError(
                f"{where}: {pattern!r} has no named group; write e.g. (?P<source>...)"
            )
        reserved = sorted(set(compiled.groupindex) & set(_TABLE_COLUMNS))
        if reserved:
            raise ConfigError(f"{where}: group names {reserved} are reserved column names")
        return compiled

    def input_files(self) -> list[Path]:
        """The files to read: glob patterns expanded (sorted), literal paths as given.

        A literal path is returned even when it does not exist yet (a workflow may build it);
        a glob pattern that matches no file raises ``InputDataError``.
        """
        files: list[Path] = []
        for pattern in self.paths:
            if _GLOB_CHARS.search(pattern):
                matches = [
                    Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()
                ]
                if not matches:
                    raise InputDataError(f"{pattern}: glob pattern matches no file")
                files.extend(matches)
            else:
                files.append(Path(pattern))
        return list(dict.fromkeys(files))

    def _format_of(self, path: Path) -> str:
        name, _ = _strip_gz(path)
        if self.format is not None:
            return self.format
        fmt = _FORMAT_OF_SUFFIX.get(Path(name).suffix.lower())
        if fmt is None:
            raise ConfigError(
                f"{path}: cannot tell FASTA from FASTQ by the extension (known: "
                f"{', '.join(_FORMAT_OF_SUFFIX)}, optionally + .gz); "
                "set adapter params.format to 'fasta' or 'fastq'"
            )
        return fmt

    def read(self) -> Items:
        files = self.input_files()
        for path in files:
            if not path.is_file():
                raise InputDataError(f"{path}: file not found")
        formats = {path: self._format_of(path) for path in files}
        filename_metadata = {path: self._filename_metadata(path) for path in files}

        windows: list[_Windows] = []
        record_files: dict[str, list[Path]] = {}
        dropped = Counter({"too_ambiguous": 0, "short_record": 0})
        self._renamed_duplicates = 0
        for path in files:
            for record_id, sequence in self._records(path, formats[path]):
                record_files.setdefault(record_id, []).append(path)
                kept = self._windows(path, record_id, sequence, dropped)
                if kept is not None:
                    windows.append(kept)
        n_records = sum(len(v) for v in record_files.values())
        self._warn_dropped(dropped)
        if not windows or all(len(w.starts) == 0 for w in windows):
            raise InputDataError(
                f"{', '.join(map(str, files))}: no windows left from {n_records} records "
                f"(dropped: {dict(dropped)}); check window, short_sequences and "
                "max_ambiguous_fraction"
            )

        table = self._items_table(windows, record_files, files)
        table = self._add_filename_metadata(table, filename_metadata)
        unmatched_label_rows = 0
        if self.labels is not None:
            table, unmatched_label_rows = self._add_labels(table, record_files)
        metadata_columns = [c for c in table.columns if c not in _TABLE_COLUMNS]
        meta: dict[str, Any] = {
            "modality": "dna",
            "window": self.window,
            "stride": self.stride,
            "flank": self.flank,
            "ambiguous": self.ambiguous,
            "payload_columns": list(PAYLOAD_COLUMNS),
            "metadata_columns": metadata_columns,
            "dropped_windows": dict(dropped),
            "records": n_records,
            "source_files": [str(p) for p in files],
            "unmatched_label_rows": unmatched_label_rows,
            "renamed_duplicate_ids": self._renamed_duplicates,
        }
        return Items(table=table, meta=meta)

    # -- reading --------------------------------------------------------------------------

    def _records(self, path: Path, fmt: str) -> list[tuple[str, str]]:
        """``(record_id, uppercase sequence)`` for each record, validated."""
        _, gzipped = _strip_gz(path)
        records: list[tuple[str, str]] = []
        seen: set[str] = set()
        previous = None
        try:
            opener = gzip.open if gzipped else open
            with opener(path, "rt", encoding="utf-8") as handle:
                for record in SeqIO.parse(handle, fmt):
                    record_id = record.id
                    number = len(records) + 1
                    if not record_id:
                        raise InputDataError(f"{path}: record #{number} has an empty id")
                    if record_id in seen:
                        if self.duplicate_ids == "error":
                            raise InputDataError(
                                f"{path}: record {record_id!r} occurs twice (record #{number});"
                                " set params.duplicate_ids: number to rename repeats"
                            )
                        occurrence = 2
                        while f"{record_id}#{occurrence}" in seen:
                            occurrence += 1
                        record_id = f"{record_id}#{occurrence}"
                        self._renamed_duplicates += 1
                    sequence = str(record.seq)
                    if not sequence:
                        raise InputDataError(f"{path}: record {record_id!r} has no sequence")
                    try:
                        encode_codes(sequence)
                    except InvalidBaseError as exc:
                        raise InputDataError(f"{path}: record {record_id!r}: {exc}") from None
                    seen.add(record_id)
                    records.append((record_id, sequence.upper()))
                    previous = record_id
        except UnicodeDecodeError:
            raise InputDataError(
                f"{path}: not a text {fmt.upper()} file (it holds bytes that are not UTF-8 "
                "text; a gzipped file needs the .gz extension)"
            ) from None
        except ValueError as exc:
            where = "before the first record" if previous is None else f"after {previous!r}"
            raise InputDataError(
                f"{path}: malformed {fmt.upper()} {where}: {_biopython_message(exc)}"
            ) from None
        except (OSError, EOFError, zlib.error) as exc:
            raise InputDataError(f"{path}: cannot read ({exc})") from None
        if not records:
            raise InputDataError(f"{path}: no records (an empty {fmt.upper()} file?)")
        return records

    def _windows(
        self, path: Path, record_id: str, sequence: str, dropped: Counter
    ) -> _Windows | None:
        length = len(sequence)
        if length < self.window:
            if self.short_sequences == "error":
                raise InputDataError(
                    f"{path}: record {record_id!r} has {length} bases, shorter than "
                    f"window={self.window}; set adapter params.short_sequences to 'skip' "
                    "or 'pad'"
                )
            if self.short_sequences == "skip":
                dropped["short_record"] += 1
                return None
            starts = np.zeros(1, dtype=np.int64)
            ends = np.full(1, length, dtype=np.int64)
        else:
            starts = window_starts(length, self.window, self.stride)
            ends = starts + self.window

        ambiguous_before = np.concatenate([[0], np.cumsum(_IS_AMBIGUOUS[encode_codes(sequence)])])
        n_ambiguous = ambiguous_before[ends] - ambiguous_before[starts]
        # a quotient, not frac * length: 29 / 100 rounds to the float 0.29, 0.29 * 100 does not
        keep = n_ambiguous / (ends - starts) <= self.max_ambiguous_fraction
        dropped["too_ambiguous"] += int((~keep).sum())
        starts, ends = starts[keep], ends[keep]

        lows = np.maximum(starts - self.flank, 0)
        highs = np.minimum(ends + self.flank, length)
        left_pads = self.flank - (starts - lows)
        right_pads = self.window + 2 * self.flank - left_pads - (highs - lows)
        return _Windows(
            path=path,
            record_id=record_id,
            starts=starts,
            ends=ends,
            sequences=[
                sequence[lo:hi] for lo, hi in zip(lows.tolist(), highs.tolist(), strict=True)
            ],
            offsets=starts - lows,
            left_pads=left_pads,
            right_pads=right_pads,
        )

    def _warn_dropped(self, dropped: Counter) -> None:
        if dropped["too_ambiguous"]:
            warnings.warn(
                f"dna_fasta: dropped {dropped['too_ambiguous']} windows with more than "
                f"{self.max_ambiguous_fraction:.0%} ambiguous bases",
                stacklevel=3,
            )
        if dropped["short_record"]:
            warnings.warn(
                f"dna_fasta: skipped {dropped['short_record']} records shorter than "
                f"window={self.window}",
                stacklevel=3,
            )

    # -- table ----------------------------------------------------------------------------

    def _items_table(
        self, windows: list[_Windows], record_files: dict[str, list[Path]], files: list[Path]
    ) -> pd.DataFrame:
        stems = Counter(_stem(p) for p in files)
        prefix = {p: _stem(p) if stems[_stem(p)] == 1 else str(p) for p in files}
        columns: dict[str, list] = {name: [] for name in _TABLE_COLUMNS}
        for w in windows:
            n = len(w.starts)
            shared = len(record_files[w.record_id]) > 1
            head = f"{prefix[w.path]}/{w.record_id}" if shared else w.record_id
            columns["item_id"].extend(
                f"{head}:{s + 1}-{e}"
                for s, e in zip(w.starts.tolist(), w.ends.tolist(), strict=True)
            )
            columns["record_id"].extend([w.record_id] * n)
            columns["source_file"].extend([str(w.path)] * n)
            columns["start"].append(w.starts)
            columns["end"].append(w.ends)
            columns["sequence"].extend(w.sequences)
            columns["window_start"].append(w.offsets)
            columns["left_pad"].append(w.left_pads)
            columns["right_pad"].append(w.right_pads)
        for name in ("start", "end", "window_start", "left_pad", "right_pad"):
            columns[name] = np.concatenate(columns[name]).astype(np.int64)
        return pd.DataFrame(columns)

    def _filename_metadata(self, path: Path) -> dict[str, str]:
        if self.filename_pattern is None:
            return {}
        match = self.filename_pattern.search(path.as_posix())
        if match is None:
            raise InputDataError(
                f"{path}: file name does not match label_from_filename "
                f"{self.filename_pattern.pattern!r}"
            )
        return match.groupdict()

    def _add_filename_metadata(
        self, table: pd.DataFrame, metadata: dict[Path, dict[str, str]]
    ) -> pd.DataFrame:
        if self.filename_pattern is None:
            return table
        by_file = {str(p): groups for p, groups in metadata.items()}
        for group in self.filename_pattern.groupindex:
            table[group] = table["source_file"].map(lambda f, g=group: by_file[f][g])
        return table

    def _read_labels(self) -> pd.DataFrame:
        path = Path(self.labels)
        if not path.is_file():
            raise InputDataError(f"{path}: labels table not found")
        suffix = path.suffix.lower()
        key_as_text = {self.labels_key: str}
        try:
            if suffix == ".csv":
                frame = pd.read_csv(path, dtype=key_as_text)
            elif suffix in (".tsv", ".tab", ".txt"):
                frame = pd.read_csv(path, sep="\t", dtype=key_as_text)
            elif suffix in (".parquet", ".pq"):
                frame = pd.read_parquet(path)
            else:
                raise ConfigError(
                    f"{path}: labels table must be .csv, .tsv/.tab/.txt or .parquet/.pq"
                )
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise InputDataError(f"{path}: cannot read labels table: {exc}") from None
        if self.labels_key not in frame.columns:
            raise InputDataError(
                f"{path}: no column {self.labels_key!r} (labels_key); "
                f"columns: {list(frame.columns)}"
            )
        keys = frame[self.labels_key]
        if keys.isna().any():
            row = int(np.flatnonzero(keys.isna().to_numpy())[0]) + 1
            raise InputDataError(f"{path}: row {row} has no {self.labels_key!r}")
        keys = keys.astype(str)
        duplicated = keys.duplicated()
        if duplicated.any():
            row = int(np.flatnonzero(duplicated.to_numpy())[0])
            first = int(np.flatnonzero((keys == keys.iloc[row]).to_numpy())[0])
            raise InputDataError(
                f"{path}: row {row + 1}: duplicate {self.labels_key} {keys.iloc[row]!r} "
                f"(first in row {first + 1}; rows counted from 1 after the header)"
            )
        frame = frame.assign(**{self.labels_key: keys}).set_index(self.labels_key)
        taken = set(_TABLE_COLUMNS) | set(
            self.filename_pattern.groupindex if self.filename_pattern else ()
        )
        clashes = sorted(set(map(str, frame.columns)) & taken)
        if clashes:
            raise InputDataError(
                f"{path}: columns {clashes} clash with item-table or label_from_filename "
                "columns; rename them"
            )
        return frame

    def _add_labels(
        self, table: pd.DataFrame, record_files: dict[str, list[Path]]
    ) -> tuple[pd.DataFrame, int]:
        labels = self._read_labels()
        unmatched = int((~labels.index.isin(list(record_files))).sum())
        if unmatched:
            warnings.warn(
                f"{self.labels}: {unmatched} rows name no record in the input files",
                stacklevel=3,
            )
        missing = [r for r in record_files if r not in labels.index]
        if missing and self.labels_missing == "error":
            raise InputDataError(
                f"{self.labels}: no row for record {missing[0]!r} "
                f"(file {record_files[missing[0]][0]}; {len(missing)} records in all); "
                "set adapter params.labels_missing to 'allow' to keep them unlabelled"
            )
        return table.join(labels, on="record_id"), unmatched


# --- pair builder ------------------------------------------------------------------------


@PAIR_BUILDERS.register("dna_views")
class DNAViews(PairBuilder):
    """Two views of each window: the other strand and/or a shifted crop.

    Args:
        reverse_complement: Pair the forward strand with the reverse complement (views
            ``["forward", "reverse_complement"]``); ``False`` gives ``["forward",
            "forward"]``, which differ only by their shifts.
        max_shift: Each view's window start moves by ``s ~ U{-max_shift..max_shift}``
            bases, drawn per view; needs the adapter's ``flank >= max_shift``.
        mutation_rate: Each base (A, C, G or T) of a view is substituted, with this
            probability and independently per position and view, by one of the three other
            bases, uniformly: point mutations, which a binding site tolerates in a few of its
            positions. Ambiguity codes and padding are kept. ``0`` (default) mutates nothing.
        mask_fraction: Each view hides one contiguous block of ``round(mask_fraction *
            window)`` bases, at a start drawn uniformly per view, as padding (zero columns)
            while every other base keeps its place: the view then shows only part of the
            window, so the positives of an object are partial readings of it that the
            encoder must match from what each part shows (block masking, the sequence
            counterpart of cutout; Devries & Taylor, arXiv:1708.04552, 2017). ``0``
            (default) hides nothing.
        neighbours: ``m > 0`` adds a third view, ``neighbour``: the forward view of one of
            the window's ``m`` composition neighbours (module docstring), drawn per epoch
            and shifted, mutated and masked like the others. The pairs table lists the
            candidates of each ``neighbour`` row in a column ``neighbour_ids``. ``0``
            (default) adds none.
        neighbour_k: The word length of the composition profile (default 4, the
            tetranucleotides of genome binning; 1 to 6).
        group_by: ``None`` (default): each window is its own object, so its positives are
            its own views (instance discrimination). The name of an items column (e.g.
            ``record_id``, or a genome/contig column): every window sharing that value is
            one object, so all their views are positives for each other (multi-positive
            InfoNCE). Use it when the domain says windows of one record share an origin,
            as in binning sequences by genome of origin.

    ``make_view`` returns ``float32 [4, window]``; with ``rng=None`` the shift is 0, so the
    canonical view (``"forward"``) is the window exactly as read.
    """

    canonical_view = "forward"
    VIEWS = ("forward", "reverse_complement", "neighbour")

    def __init__(
        self,
        reverse_complement: bool = True,
        max_shift: int = 0,
        mutation_rate: float = 0.0,
        mask_fraction: float = 0.0,
        neighbours: int = 0,
        neighbour_k: int = 4,
        group_by: str | None = None,
    ) -> None:
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ConfigError(
                f"pairs dna_views: params.max_shift must be an integer >= 0, got {max_shift!r}"
            )
        for key, value in (("mutation_rate", mutation_rate), ("mask_fraction", mask_fraction)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ConfigError(
                    f"pairs dna_views: params.{key} must be a number in [0, 1), got {value!r}"
                )
        for key, value, low, high in (
            ("neighbours", neighbours, 0, None),
            ("neighbour_k", neighbour_k, 1, 6),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < low
                or (high is not None and value > high)
            ):
                bounds = f">= {low}" if high is None else f"from {low} to {high}"
                raise ConfigError(
                    f"pairs dna_views: params.{key} must be an integer {bounds}, got {value!r}"
                )
        augmentations = (max_shift, mutation_rate, mask_fraction, neighbours)
        if not reverse_complement and not any(augmentations):
            raise ConfigError(
                "pairs dna_views: params.reverse_complement is false and params.max_shift, "
                "params.mutation_rate, params.mask_fraction and params.neighbours are 0, so "
                "both views would be identical; enable at least one augmentation"
            )
        self.reverse_complement = bool(reverse_complement)
        self.max_shift = max_shift
        self.mutation_rate = float(mutation_rate)
        self.mask_fraction = float(mask_fraction)
        self.neighbours = neighbours
        self.neighbour_k = neighbour_k
        self.group_by = group_by
        self._codes: np.ndarray | None = None
        self._neighbour_table: np.ndarray | None = None

    def classical_features(self, items: Items) -> list[ClassicalFeatures]:
        """Tetranucleotide frequencies of each window, canonical and strand-specific
        (:func:`~scicontrast.data_adapters.classical.kmer_frequencies`)."""
        self.bind(items)
        windows = self._codes[:, self._flank : self._flank + self._window]
        return [kmer_features(windows, 4, canonical) for canonical in (True, False)]

    def symmetry_only(self) -> tuple[str, PairBuilder] | None:
        """The reverse complement without shifts, mutations, masks or neighbours (for
        per-window groups only)."""
        augmented = any((self.max_shift, self.mutation_rate, self.mask_fraction, self.neighbours))
        if not self.reverse_complement or not augmented or self.group_by is not None:
            return None
        symmetry = copy.copy(self)
        symmetry.max_shift, symmetry.mutation_rate, symmetry.neighbours = 0, 0.0, 0
        symmetry.mask_fraction = 0.0
        return "reverse complement", symmetry

    def _check_items(self, items: Items) -> None:
        modality = items.meta.get("modality")
        if modality != "dna":
            raise ConfigError(
                f"pairs dna_views: needs DNA items (meta modality 'dna'), got {modality!r}"
            )
        flank = items.meta.get("flank", 0)
        if flank < self.max_shift:
            raise ConfigError(
                f"pairs dna_views: params.max_shift={self.max_shift} exceeds the adapter's "
                f"params.flank={flank}; set flank >= max_shift"
            )
        missing = [c for c in PAYLOAD_COLUMNS if c not in items.table.columns]
        if missing:
            raise InputDataError(f"items table lacks the DNA payload columns {missing}")

    def build(self, items: Items) -> pd.DataFrame:
        self._check_items(items)
        views = ["forward", "reverse_complement" if self.reverse_complement else "forward"]
        if self.neighbours:
            views.append("neighbour")
        n = len(items)
        if self.neighbours >= n:
            raise ConfigError(
                f"pairs dna_views: params.neighbours={self.neighbours} needs more than "
                f"{self.neighbours} windows, got {n}"
            )
        if self.group_by is None:
            groups = np.arange(n, dtype=np.int64)
        elif self.group_by in items.table.columns:
            groups = pd.factorize(items.table[self.group_by], sort=False)[0].astype(np.int64)
        else:
            raise ConfigError(
                f"pairs dna_views: params.group_by names column {self.group_by!r}, which the "
                f"items table lacks; columns: {', '.join(items.table.columns)}"
            )
        item_ids = items.table["item_id"].to_numpy()
        pairs = pd.DataFrame(
            {
                "group_id": np.repeat(groups, len(views)),
                "item_id": np.repeat(item_ids, len(views)),
                "view": np.tile(views, n),
            }
        )
        if self.neighbours:
            # Written down so that the table shows every window a neighbour view can show.
            self.bind(items)
            candidates = [list(item_ids[rows]) for rows in self.composition_neighbours()]
            pairs["neighbour_ids"] = [
                candidates[row // len(views)] if view == "neighbour" else None
                for row, view in enumerate(pairs["view"])
            ]
        return pairs

    def bind(self, items: Items) -> None:
        """Encode every window with its flanks once, as codes ``uint8 [N, window+2*flank]``.

        Codes (one byte per base) instead of one-hot floats keep 1e5 windows at a few tens
        of MB; ``make_view`` turns a crop into columns with one table lookup.
        """
        self._check_items(items)
        table = items.table
        window, flank = int(items.meta["window"]), int(items.meta["flank"])
        width = window + 2 * flank
        sequences = table["sequence"].tolist()
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        left_pads = table["left_pad"].to_numpy(dtype=np.int64)
        sizes = left_pads + lengths + table["right_pad"].to_numpy(dtype=np.int64)
        wrong = np.flatnonzero(sizes != width)
        if wrong.size:
            row = int(wrong[0])
            raise InputDataError(
                f"item {table['item_id'].iloc[row]!r}: left_pad + len(sequence) + right_pad "
                f"= {sizes[row]}, expected window + 2 * flank = {width}"
            )
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        try:
            flat = encode_codes("".join(sequences))
        except InvalidBaseError as exc:
            row = int(np.searchsorted(offsets, exc.position - 1, side="right")) - 1
            raise InputDataError(
                f"item {table['item_id'].iloc[row]!r}: invalid character {exc.character!r} "
                f"at position {exc.position - offsets[row]} of its sequence"
            ) from None
        codes = np.full((len(table), width), PAD_CODE, dtype=np.uint8)
        for row, (pad, begin, end) in enumerate(
            zip(left_pads.tolist(), offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        ):
            codes[row, pad : pad + end - begin] = flat[begin:end]
        self._codes = codes
        self._encoding = _ENCODING_TABLES[items.meta.get("ambiguous", "uniform")]
        self._window, self._flank = window, flank
        self._neighbour_table = None

    def make_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> torch.Tensor:
        if view not in self.VIEWS:
            raise ValueError(f"dna_views: unknown view {view!r}; known: {list(self.VIEWS)}")
        if self._codes is None:
            raise RuntimeError("dna_views: call bind(items) before make_view")
        if view == "neighbour":
            drawn = 0 if rng is None else rng.integers(self.neighbours)
            item_index = int(self.composition_neighbours()[item_index, drawn])
        shift = 0 if rng is None else int(rng.integers(-self.max_shift, self.max_shift + 1))
        start = self._flank + shift
        codes = self._codes[item_index, start : start + self._window]
        if rng is not None and self.mutation_rate > 0:
            codes = self._mutate(codes, rng)
        if rng is not None and self.mask_fraction > 0:
            codes = self._mask(codes, rng)
        columns = self._encoding[codes].T
        if view == "reverse_complement":
            columns = columns[::-1, ::-1]
        return torch.from_numpy(np.ascontiguousarray(columns))

    def composition_neighbours(self) -> np.ndarray:
        """``int64 [N, neighbours]``: the rows of each bound window's composition neighbours,
        nearest first (module docstring); computed once per ``bind``."""
        if self._codes is None:
            raise RuntimeError("dna_views: call bind(items) before composition_neighbours")
        if self.neighbours == 0:
            raise ValueError("dna_views: params.neighbours is 0, so there are no neighbours")
        if self._neighbour_table is None:
            from sklearn.neighbors import NearestNeighbors
            from sklearn.preprocessing import StandardScaler

            window = self._codes[:, self._flank : self._flank + self._window]
            counts = kmer_counts(window, self.neighbour_k)
            profiles = StandardScaler().fit_transform(
                counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            )
            search = NearestNeighbors(n_neighbors=self.neighbours + 1, metric="cosine")
            nearest = search.fit(profiles).kneighbors(profiles, return_distance=False)
            # A window is usually its own nearest, but an identical window can tie with it:
            # drop the window itself wherever it is, else the farthest candidate.
            others = nearest != np.arange(len(nearest))[:, None]
            order = np.argsort(~others, axis=1, kind="stable")[:, : self.neighbours]
            self._neighbour_table = np.take_along_axis(nearest, order, axis=1)
        return self._neighbour_table

    def _mutate(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``codes`` with each of A, C, G, T (codes 1-4) replaced, with probability
        ``mutation_rate``, by one of the other three."""
        base = codes.astype(np.int64) - 1
        mutated = (rng.random(len(codes)) < self.mutation_rate) & (base >= 0) & (base < 4)
        other = (base + rng.integers(1, 4, size=len(codes))) % 4 + 1
        return np.where(mutated, other, codes).astype(codes.dtype)

    def _mask(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``codes`` with one block of ``round(mask_fraction * window)`` positions, at a
        uniformly drawn start, set to padding."""
        length = round(self.mask_fraction * len(codes))
        start = int(rng.integers(len(codes) - length + 1))
        masked = codes.copy()
        masked[start : start + length] = PAD_CODE
        return masked

    def specificity(self, items: Items, k: int = 4) -> tuple[str, np.ndarray]:
        """Mean k-mer surprisal of each window: ``mean_j -log f(kmer_j)``.

        ``f`` is the frequency of a k-mer among all k-mers of all windows, a k-mer and its
        reverse complement pooled (so both strands of a window score alike); k-mers with an
        ambiguous base or padding are skipped. A window made of rare k-mers scores high: it
        is specific. A window without a single clean k-mer gets ``NaN``.
        """
        self.bind(items)
        index, valid = kmer_words(self._codes[:, self._flank : self._flank + self._window], k)
        counts = np.bincount(index[valid], minlength=4**k).astype(np.float64)
        counts += counts[reverse_complement_kmers(k)]
        surprisal = -np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0))
        totals = np.where(valid, surprisal[index], 0.0).sum(axis=1)
        per_window = valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return f"{k}-mer surprisal", np.where(per_window > 0, totals / per_window, np.nan)
