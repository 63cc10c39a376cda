"""The strand/shift pair builder :class:`DNAViews`.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from scicontrast.data_adapters.base import Items, PairBuilder, ViewDataset
from scicontrast.data_adapters.classical import ClassicalFeatures, kmer_features
from scicontrast.data_adapters.dna.device_views import DeviceDNABatches
from scicontrast.data_adapters.dna.encoding import (
    ENCODING_TABLES,
    PAD_CODE,
    InvalidBaseError,
    encode_codes,
)
from scicontrast.data_adapters.dna.files import CODES_ARRAY, PAYLOAD_COLUMNS
from scicontrast.data_adapters.dna.kmers import kmer_counts, kmer_words, reverse_complement_kmers
from scicontrast.data_adapters.items_store import drop_mapped_pages
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.data_adapters.pair_parts import (
    FirstSeenCodes,
    item_row_groups,
    items_folder,
    repeat_views,
)
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import PAIR_BUILDERS


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
        assert self._codes is not None  # bind sets it
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
        self._check_set(items.meta, CODES_ARRAY in items.arrays, list(items.table.columns))

    def _check_set(self, meta: dict[str, Any], has_codes: bool, columns: list[str]) -> None:
        """Raise unless a set with ``meta`` and table ``columns`` (and the codes array when
        ``has_codes``) is DNA that these views can be made of."""
        modality = meta.get("modality")
        if modality != "dna":
            raise ConfigError(
                f"pairs dna_views: needs DNA items (meta modality 'dna'), got {modality!r}"
            )
        flank = meta.get("flank", 0)
        if flank < self.max_shift:
            raise ConfigError(
                f"pairs dna_views: params.max_shift={self.max_shift} exceeds the adapter's "
                f"params.flank={flank}; set flank >= max_shift"
            )
        if has_codes:
            return
        missing = [c for c in PAYLOAD_COLUMNS if c not in columns]
        if missing:
            raise InputDataError(f"items table lacks the DNA payload columns {missing}")

    def table_columns(self, meta: dict[str, Any]) -> list[str] | None:
        """``item_id`` and the ``group_by`` column; the payload columns too for a set
        written without the codes array (``meta["codes_array"]``), whose windows are then
        encoded from the ``sequence`` column."""
        grouping = [] if self.group_by is None else [self.group_by]
        payload = [] if meta.get("codes_array") == CODES_ARRAY else PAYLOAD_COLUMNS
        return ["item_id", *grouping, *payload]

    def _views(self) -> list[str]:
        """The view names of each window, in pairs-table order."""
        views = ["forward", "reverse_complement" if self.reverse_complement else "forward"]
        return [*views, "neighbour"] if self.neighbours else views

    def _check_group_by(self, columns: list[str]) -> None:
        if self.group_by is not None and self.group_by not in columns:
            raise ConfigError(
                f"pairs dna_views: params.group_by names column {self.group_by!r}, which the "
                f"items table lacks; columns: {', '.join(columns)}"
            )

    def build_parts(self, folder: Path) -> Iterator[pa.Table]:
        """:meth:`build`'s table an items row group at a time, in Arrow: no Python object
        per row, memory independent of the number of windows
        (:mod:`~scicontrast.data_adapters.pair_parts`). With ``neighbours``, whose candidates
        may lie in any row group, the default: ``build`` over all the items."""
        if self.neighbours:
            yield from super().build_parts(folder)
            return
        meta, columns = items_folder(folder)
        self._check_set(meta, (Path(folder) / f"{CODES_ARRAY}.npy").exists(), columns)
        self._check_group_by(columns)
        groups_of = FirstSeenCodes()
        grouping = [] if self.group_by is None else [self.group_by]
        for first, table in item_row_groups(folder, grouping):
            if self.group_by is None:
                groups = np.arange(first, first + len(table), dtype=np.int64)
            else:
                groups = groups_of(table.column(self.group_by).to_pandas())
            yield repeat_views(groups, table.column("item_id"), self._views())

    def build(self, items: Items) -> pd.DataFrame:
        self._check_items(items)
        views = self._views()
        n = len(items)
        if self.neighbours >= n:
            raise ConfigError(
                f"pairs dna_views: params.neighbours={self.neighbours} needs more than "
                f"{self.neighbours} windows, got {n}"
            )
        self._check_group_by(list(items.table.columns))
        if self.group_by is None:
            groups = np.arange(n, dtype=np.int64)
        else:
            groups = pd.factorize(items.table[self.group_by], sort=False)[0].astype(np.int64)
        item_ids = items.table["item_id"].to_numpy()
        pairs = pd.DataFrame(
            {
                "group_id": np.repeat(groups, len(views)),
                "item_id": np.repeat(item_ids, len(views)),
                # Objects, not numpy's fixed-width unicode (72 bytes a row at 18 characters).
                "view": np.tile(np.array(views, dtype=object), n),
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
        """The codes ``uint8 [N, window + 2 * flank]`` of every window with its flanks.

        Codes (one byte per base) instead of one-hot floats; ``make_view`` turns a crop into
        columns with one table lookup. The adapter's ``codes`` array (memory-mapped: only
        the rows that views read are paged in) is used as it is; a set written without it
        is encoded from its ``sequence`` column once (:func:`encode_windows`).
        """
        self._check_items(items)
        window, flank = int(items.meta["window"]), int(items.meta["flank"])
        width = window + 2 * flank
        if CODES_ARRAY in items.arrays:
            codes = items.arrays[CODES_ARRAY]
            if codes.ndim != 2 or codes.shape[1] != width:
                raise InputDataError(
                    f"items array {CODES_ARRAY!r} has shape {codes.shape}, expected "
                    f"[{len(items)}, window + 2 * flank = {width}]"
                )
            self._codes = codes
        else:
            self._codes = encode_windows(items.table, width)
        self._encoding = ENCODING_TABLES[items.meta.get("ambiguous", "uniform")]
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

    def embedding_batches(self, items: Items, batch_size: int) -> Iterator[torch.Tensor]:
        """Canonical views (:meth:`canonical`, ``[b, 4, window]``) of ``batch_size`` windows
        at a time, made for the whole batch at once; a memory-mapped codes array's pages
        are handed back after each batch, so a pass over 10^6 windows does not keep their
        166 MB resident."""
        self.bind(items)
        assert self._codes is not None  # bind sets it
        window = slice(self._flank, self._flank + self._window)
        for start in range(0, len(items), batch_size):
            codes = np.array(self._codes[start : start + batch_size, window])
            drop_mapped_pages(self._codes)
            yield torch.from_numpy(np.ascontiguousarray(self._encoding[codes].transpose(0, 2, 1)))

    def training_batches(
        self,
        items: Items,
        pairs: pd.DataFrame,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> EpochLoader:
        """The default batches, able to make their views on the training device
        (``training.augment_on_device``; :mod:`scicontrast.data_adapters.dna.device_views`)."""
        dataset = ViewDataset(items, pairs, self, seed)
        return EpochLoader(DeviceDNABatches(dataset, batch_size, rank=rank, world_size=world_size))

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
        assert self._codes is not None  # bind sets it
        index, valid = kmer_words(self._codes[:, self._flank : self._flank + self._window], k)
        counts = np.bincount(index[valid], minlength=4**k).astype(np.float64)
        counts += counts[reverse_complement_kmers(k)]
        surprisal = -np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0))
        totals = np.where(valid, surprisal[index], 0.0).sum(axis=1)
        per_window = valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return f"{k}-mer surprisal", np.where(per_window > 0, totals / per_window, np.nan)


def encode_windows(table: pd.DataFrame, width: int) -> np.ndarray:
    """``uint8 [N, width]``: each row's ``sequence`` encoded (:func:`encode_codes`) after
    ``left_pad`` padding codes and before ``right_pad`` ones; ``InputDataError`` naming the
    item whose sizes do not add up to ``width`` or whose sequence holds a non-IUPAC letter."""
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
    return codes
