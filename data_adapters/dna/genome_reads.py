r"""Reads drawn on the fly from a genome store; positives are reads of the same genome.

A **read** of length :math:`L` from a group :math:`g` (a genome, or any grouping column of
the store: species, strain, record) is drawn as

1. a record :math:`r` of :math:`g` with :math:`P(r) \propto \ell_r - L + 1` over the records
   of length :math:`\ell_r \ge L` (every start of every record equally likely),
2. a start :math:`s \sim U\{0, \dots, \ell_r - L\}`,
3. a strand: the forward read ``x = onehot(codes[s:s+L])`` ``[4, L]`` or, with probability
   1/2, its reverse complement ``x[::-1, ::-1]`` (channels ACGT; see
   :mod:`scicontrast.data_adapters.dna.encoding`).

:class:`GenomeReads` (``genome_reads``) makes the pairs table one row per record with
``group_id`` the code of its group, and overrides ``training_batches``: a batch takes
``batch_size`` groups (all of them when fewer) and ``reads_per_group`` reads of each, so that
every read has ``reads_per_group - 1`` positives from its genome and the reads of the other
genomes as negatives (InfoNCE with group ids, :mod:`scicontrast.models.losses`). All reads of
one batch share one length, drawn uniformly from ``read_length = [min, max]`` (or fixed), so
training never pads; the encoder learns every length across batches. The generator of batch
``b`` of epoch ``e`` is seeded by ``(seed, e, b)``: batches do not depend on when they run.
With ``hard_negatives`` a batch of fewer groups than the corpus pairs random groups with their
closest other group by TNF (:mod:`~scicontrast.data_adapters.dna.hard_negatives`).

:func:`cut_reads` cuts a fixed set of reads (for evaluation) into a new store of the same
layout, one row per read, carrying its genome's metadata; :meth:`GenomeReads.canonical` of
such a row is the read itself, and ``embedding_batches`` pads reads of unequal length with
zero columns (which ``dna_cnn`` with ``mask_padding`` leaves out). An embedding batch holds
at most :data:`EMBED_NUCLEOTIDES` padded bases, whatever ``batch_size`` asks: a small CNN's
feature maps of 64 reads of 500 nt (both strands, 32 channels, float32: 8 MiB) stay in
cache, and on the 2-core test machine 512 reads per pass embedded 3 times slower than 32-64
(docs/experiments/genomes.md, "Embedding speed").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from scicontrast.data_adapters.base import Items, PairBuilder, epoch_seed
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.dna.encoding import one_hot
from scicontrast.data_adapters.dna.genome_store import CODES_EXTRA, record_codes, store_items
from scicontrast.data_adapters.dna.hard_negatives import (
    canonical_tnf,
    closest_groups,
    hard_negative_groups,
)
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import PAIR_BUILDERS

_SYMBOLS = "ACGTRYSWKMBDHVN"
#: Upper bound on the padded bases of one embedding batch (module docstring).
EMBED_NUCLEOTIDES = 2**15
# Row c: the one-hot column of code c (row 0, padding, is zero); N is uniform, 0.25 each.
COLUMN_OF_CODE = np.vstack([np.zeros((1, 4), np.float32), one_hot(_SYMBOLS).T])
# The complement of each code (IUPAC-aware), so that a read's reverse complement is a slice.
COMPLEMENT_CODE = np.concatenate(
    [[0], 1 + np.array([_SYMBOLS.index(c) for c in "TGCAYRSWMKVHDBN"])]
).astype(np.uint8)


def codes_to_tensor(codes: np.ndarray, length: int | None = None) -> torch.Tensor:
    """One-hot ``float32 [4, length]`` of ``codes [L]``, zero columns after ``L`` (padding)."""
    length = len(codes) if length is None else length
    out = np.zeros((length, 4), np.float32)
    out[: len(codes)] = COLUMN_OF_CODE[codes]
    return torch.from_numpy(out.T.copy())


def codes_to_batch(reads: Sequence[np.ndarray], width: int | None = None) -> torch.Tensor:
    """One-hot ``float32 [B, 4, width]`` of ``B`` reads, zero columns after each read's end.

    Equal to stacking :func:`codes_to_tensor` of each read, in one table look-up for the
    whole batch (embedding is several times faster than a look-up per read).
    """
    width = max((len(r) for r in reads), default=0) if width is None else width
    padded = np.zeros((len(reads), width), np.uint8)  # code 0: padding, a zero column
    for row, codes in enumerate(reads):
        padded[row, : len(codes)] = codes
    return torch.from_numpy(COLUMN_OF_CODE[padded]).transpose(1, 2).contiguous()


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    """Codes of the reverse complement strand: complement each code, reverse the order."""
    return COMPLEMENT_CODE[np.asarray(codes)][::-1]


def parse_read_length(read_length: int | Sequence[int]) -> tuple[int, int]:
    """``(min, max)`` of a fixed length or a ``[min, max]`` range; ``ConfigError`` if bad."""
    bounds = [read_length] * 2 if isinstance(read_length, int) else list(read_length)
    if len(bounds) != 2 or not all(isinstance(b, int) and b >= 1 for b in bounds):
        raise ConfigError(
            f"read_length must be a positive integer or [min, max], not {read_length!r}"
        )
    if bounds[0] > bounds[1]:
        raise ConfigError(f"read_length: min {bounds[0]} > max {bounds[1]}")
    return bounds[0], bounds[1]


class ReadSampler:
    """Draws reads of a given length from the records of each group (module docstring)."""

    def __init__(self, items: Items, rows_of_group: dict[int, np.ndarray], max_length: int) -> None:
        self.items = items
        self.rows_of_group = rows_of_group
        lengths = items.table["length"].to_numpy()
        for group, rows in rows_of_group.items():
            longest = rows[np.argmax(lengths[rows])]
            if lengths[longest] < max_length:
                record = items.table.iloc[longest]
                raise InputDataError(
                    f"{record['source_file']}: record {record['record_id']} of group {group} "
                    f"is its longest ({lengths[longest]} nt), shorter than the read length "
                    f"{max_length}"
                )
        self._lengths = lengths

    def draw(self, group: int, length: int, rng: np.random.Generator) -> tuple[int, int, bool]:
        """``(row, start, reverse)`` of one read of ``group``: record, forward start, strand."""
        rows = self.rows_of_group[group]
        starts = np.maximum(self._lengths[rows] - length + 1, 0).astype(float)
        row = int(rows[rng.choice(len(rows), p=starts / starts.sum())])
        start = int(rng.integers(0, self._lengths[row] - length + 1))
        return row, start, bool(rng.random() < 0.5)

    def codes(self, row: int, start: int, length: int, reverse: bool) -> np.ndarray:
        """Codes ``uint8 [length]`` of a read as drawn by :meth:`draw`."""
        codes = np.asarray(record_codes(self.items, row)[start : start + length])
        return reverse_complement_codes(codes) if reverse else codes


class GenomeReadBatches:
    """``batch_size`` groups per batch, ``reads_per_group`` reads each (module docstring)."""

    def __init__(
        self,
        sampler: ReadSampler,
        groups: np.ndarray,
        bounds: tuple[int, int],
        reads_per_group: int,
        batch_size: int,
        steps: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        closest: np.ndarray | None = None,
    ) -> None:
        self.sampler = sampler
        self.closest = closest
        self.groups = groups
        self.n_groups = len(groups)
        self.bounds = bounds
        self.reads_per_group = reads_per_group
        self.per_batch = min(batch_size * world_size, len(groups))
        self.steps = steps
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return self.steps

    def batch_keys(self, epoch: int) -> range:
        return range(self.steps)

    def make_batch(self, epoch: int, index: int) -> ContrastiveBatch:
        """Batch ``index`` of ``epoch``: reads ``[M, 4, L]`` and their group ids ``[M]``."""
        rng = np.random.default_rng([epoch_seed(self.seed, epoch), index])
        length = int(rng.integers(self.bounds[0], self.bounds[1] + 1))
        if self.closest is None:
            chosen = rng.choice(self.groups, size=self.per_batch, replace=False)
        else:
            chosen = self.groups[hard_negative_groups(rng, self.closest, self.per_batch)]
        share = -(-len(chosen) // self.world_size)
        reads, ids = [], []
        for position, group in enumerate(chosen):
            # Every process draws the same global batch; keeping the rng stream identical.
            mine = self.rank * share <= position < (self.rank + 1) * share
            for _ in range(self.reads_per_group):
                drawn = self.sampler.draw(int(group), length, rng)
                if mine:
                    row, start, reverse = drawn
                    reads.append(self.sampler.codes(row, start, length, reverse))
                    ids.append(int(group))
        return ContrastiveBatch(codes_to_batch(reads), torch.tensor(ids, dtype=torch.long))


@PAIR_BUILDERS.register("genome_reads")
class GenomeReads(PairBuilder):
    """Reads of one group (genome, species, ...) are positives of each other.

    Args:
        group_column: The store column whose values are the groups (``genome``, ``species``,
            ``strain_label``, ``record_id``, ...).
        read_length: A fixed length or ``[min, max]``, drawn per batch (module docstring).
        reads_per_group: Reads of each group per batch (>= 2: each needs a positive).
        steps_per_epoch: Batches per epoch (reads are drawn afresh; an epoch is a budget).
        hard_negatives: Fill each batch with random groups each followed by its closest
            other group by TNF profile, computed from the training records only
            (:mod:`~scicontrast.data_adapters.dna.hard_negatives`); changes only batches of
            fewer groups than the corpus. Off by default.
    """

    canonical_view = "read"

    def __init__(
        self,
        group_column: str = "genome",
        read_length: int | Sequence[int] = (150, 1000),
        reads_per_group: int = 4,
        steps_per_epoch: int = 100,
        hard_negatives: bool = False,
    ) -> None:
        self.group_column = group_column
        self.bounds = parse_read_length(read_length)
        if not isinstance(reads_per_group, int) or reads_per_group < 2:
            raise ConfigError(f"reads_per_group must be an integer >= 2, not {reads_per_group!r}")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ConfigError(
                f"steps_per_epoch must be a positive integer, not {steps_per_epoch!r}"
            )
        self.reads_per_group = reads_per_group
        self.steps_per_epoch = steps_per_epoch
        self.hard_negatives = bool(hard_negatives)
        self._items: Items | None = None

    def _group_codes(self, items: Items) -> np.ndarray:
        if self.group_column not in items.table.columns:
            raise InputDataError(f"items table has no group column {self.group_column!r}")
        values = items.table[self.group_column]
        if values.isna().any():
            row = items.table.loc[values.isna()].iloc[0]
            raise InputDataError(
                f"{row.get('source_file', '?')}: record {row['item_id']} has no "
                f"{self.group_column!r}"
            )
        return pd.factorize(values.astype(str), sort=True)[0]

    def build(self, items: Items) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "group_id": self._group_codes(items),
                "item_id": items.table["item_id"].to_numpy(),
                "view": self.canonical_view,
            }
        )

    def bind(self, items: Items) -> None:
        if CODES_EXTRA not in items.extras:
            raise InputDataError("genome_reads needs a genome store (adapter 'genomes')")
        self._items = items

    def make_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> torch.Tensor:
        """The whole record (``rng=None``) or a random read of it drawn with ``rng``."""
        assert self._items is not None, "bind the items first"
        codes = record_codes(self._items, item_index)
        if rng is None:
            return codes_to_tensor(np.asarray(codes))
        low, high = self.bounds
        if len(codes) < low:
            record = self._items.table.iloc[item_index]
            raise InputDataError(
                f"{record['source_file']}: record {record['record_id']} ({len(codes)} nt) is "
                f"shorter than the read length {low}"
            )
        length = int(rng.integers(low, min(high, len(codes)) + 1))
        start = int(rng.integers(0, len(codes) - length + 1))
        read = np.asarray(codes[start : start + length])
        return codes_to_tensor(reverse_complement_codes(read) if rng.random() < 0.5 else read)

    def training_batches(
        self,
        items: Items,
        pairs: pd.DataFrame,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> EpochLoader:
        self.bind(items)
        row_of = pd.Series(np.arange(len(items)), index=items.table["item_id"].to_numpy())
        rows = row_of.loc[pairs["item_id"].to_numpy()].to_numpy()
        groups = pairs["group_id"].to_numpy()
        rows_of_group = {int(g): rows[groups == g] for g in np.unique(groups)}
        sampler = ReadSampler(items, rows_of_group, self.bounds[1])
        closest = None
        if self.hard_negatives:  # the groups of this pairs table only: the training genomes
            profiles = [
                canonical_tnf([record_codes(items, int(r)) for r in rows_of_group[g]])
                for g in sorted(rows_of_group)
            ]
            closest = closest_groups(np.vstack(profiles))
        return EpochLoader(
            GenomeReadBatches(
                sampler,
                np.array(sorted(rows_of_group)),
                self.bounds,
                self.reads_per_group,
                batch_size,
                self.steps_per_epoch,
                seed,
                rank=rank,
                world_size=world_size,
                closest=closest,
            )
        )

    def embedding_batches(self, items: Items, batch_size: int) -> Iterator[torch.Tensor]:
        """Whole records (reads of a cut set), zero-padded to the longest of each batch; at
        most ``batch_size`` records and :data:`EMBED_NUCLEOTIDES` padded bases (or one record)
        per batch."""
        self.bind(items)
        lengths = items.table["length"].to_numpy()
        start = 0
        while start < len(items):
            stop = min(start + batch_size, len(items))
            stop = min(stop, start + max(1, EMBED_NUCLEOTIDES // int(lengths[start:stop].max())))
            width = int(lengths[start:stop].max())
            yield codes_to_batch([record_codes(items, i) for i in range(start, stop)], width)
            start = stop


def cut_reads(
    items: Items,
    length: int,
    reads_per_group: int,
    seed: int,
    group_column: str = "genome",
    groups: Sequence[str] | None = None,
) -> Items:
    """A store of ``reads_per_group`` reads of ``length`` nt from each group, one row per read.

    Each row keeps its record's metadata (genome, species, ...) and adds ``start``
    (0-based, on the forward strand) and ``strand`` (``+`` or ``-``, the read's codes being
    the reverse complement for ``-``). ``groups`` restricts to those values of
    ``group_column`` (each must occur). Raises ``InputDataError`` naming the file and record
    when a group has no record of at least ``length`` nt.
    """
    table = items.table
    values = table[group_column].astype(str)
    chosen = sorted(values.unique()) if groups is None else [str(g) for g in groups]
    unknown = sorted(set(chosen) - set(values))
    if unknown:
        raise InputDataError(f"no record has {group_column} {unknown[0]!r}")
    rows_of_group = {i: np.flatnonzero(values.to_numpy() == g) for i, g in enumerate(chosen)}
    sampler = ReadSampler(items, rows_of_group, length)
    rows, chunks = [], []
    for index in rows_of_group:
        rng = np.random.default_rng([seed, index, length])
        for number in range(reads_per_group):
            row, start, reverse = sampler.draw(index, length, rng)
            chunks.append(sampler.codes(row, start, length, reverse))
            rows.append((row, start, "-" if reverse else "+", number))
    source = table.iloc[[r for r, _, _, _ in rows]].reset_index(drop=True)
    source["start"] = [s for _, s, _, _ in rows]
    source["strand"] = [d for _, _, d, _ in rows]
    source["length"] = length
    source["offset"] = np.arange(len(rows)) * length
    # The read's number in its group keeps ids unique when a small genome repeats a read.
    source["item_id"] = [
        f"{i}:{s + 1}-{s + length}{d}#{n}"
        for i, (_, s, d, n) in zip(source["item_id"], rows, strict=True)
    ]
    return store_items(source, np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))
