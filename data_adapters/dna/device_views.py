"""``dna_views``' training views made in the batch, on the training device.

With ``training.augment_on_device`` the loader hands the bound windows' codes
(``uint8 [N, window + 2 * flank]``) and the encoding table to the device once; per batch it
draws each view's random parameters on the CPU, from the generator seeded by
``(seed, epoch, group)`` in the order :meth:`DNAViews.make_view` draws them (neighbour,
shift, mutations, mask), and makes all views at once with the batched tensor operations of
:mod:`scicontrast.data_adapters.tensor_views`::

    codes[b]  = codes_N[row_b, flank + s_b : flank + s_b + window]       (windows)
    codes[b]  = mutated base where u_bj < mutation_rate and the base is A, C, G or T
    codes[b, m_b : m_b + round(mask_fraction * window)] = padding        (mask_blocks)
    x[b]      = encoding[codes[b]].T, reverse-complemented where view_b asks (reverse_complement)

giving ``[B, 4, window]``, the item-by-item CPU views exactly (the same draws, the same
table), on whatever device the codes are on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np
import torch

from scicontrast.data_adapters.base import GroupBatches
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.dna.encoding import PAD_CODE
from scicontrast.data_adapters.tensor_views import mask_blocks, reverse_complement, windows


class _BoundDNAViews(Protocol):
    """What this module reads of a bound ``DNAViews`` (views.py imports this module)."""

    _codes: np.ndarray | None
    _encoding: np.ndarray
    _window: int
    _flank: int
    max_shift: int
    mutation_rate: float
    mask_fraction: float
    neighbours: int

    def composition_neighbours(self) -> np.ndarray: ...


@dataclass
class _Draws:
    """The random parameters of a batch's views, one entry per view."""

    rows: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    reverse: list[bool] = field(default_factory=list)
    uniforms: list[np.ndarray] = field(default_factory=list)
    offsets: list[np.ndarray] = field(default_factory=list)
    mask_starts: list[int] = field(default_factory=list)
    group_ids: list[int] = field(default_factory=list)


class DeviceDNABatches(GroupBatches):
    """:class:`GroupBatches` of ``dna_views`` that makes its views on a device once
    :meth:`to_device` is called (a :class:`~scicontrast.data_adapters.loader.DeviceBatchPlan`);
    before that, the item-by-item CPU views."""

    _codes: torch.Tensor | None = None
    _encoding: torch.Tensor | None = None

    @property
    def builder(self) -> _BoundDNAViews:
        return cast(_BoundDNAViews, self.dataset.builder)

    def to_device(self, device: torch.device) -> None:
        builder = self.builder
        assert builder._codes is not None  # the dataset bound the builder
        self._codes = torch.from_numpy(builder._codes).to(device)
        self._encoding = torch.from_numpy(np.ascontiguousarray(builder._encoding)).to(device)

    def make_batch(self, epoch: int, key: np.ndarray) -> ContrastiveBatch:
        if self._codes is None or self._encoding is None:
            return super().make_batch(epoch, key)
        draws = _Draws()
        for group in key.tolist():
            self._draw(epoch, group, draws)
        builder = self.builder
        device = self._codes.device
        window, flank = builder._window, builder._flank
        starts = torch.tensor(draws.starts, dtype=torch.long) + flank
        codes = self._codes[torch.tensor(draws.rows, device=device)].unsqueeze(1)
        codes = windows(codes, starts, window).squeeze(1).long()
        if builder.mutation_rate > 0:
            uniforms = torch.from_numpy(np.stack(draws.uniforms)).to(device)
            offsets = torch.from_numpy(np.stack(draws.offsets)).to(device)
            base = codes - 1
            mutated = (uniforms < builder.mutation_rate) & (base >= 0) & (base < 4)
            codes = torch.where(mutated, (base + offsets) % 4 + 1, codes)
        if builder.mask_fraction > 0:
            length = round(builder.mask_fraction * window)
            mask_starts = torch.tensor(draws.mask_starts, dtype=torch.long)
            codes = mask_blocks(codes.unsqueeze(1), mask_starts, length, PAD_CODE).squeeze(1)
        x = self._encoding[codes].transpose(1, 2).contiguous()
        x = reverse_complement(x, torch.tensor(draws.reverse, device=device))
        return ContrastiveBatch(x, torch.tensor(draws.group_ids, dtype=torch.long))

    def _draw(self, epoch: int, group: int, draws: _Draws) -> None:
        """Group ``group``'s view parameters, drawn as ``DNAViews.make_view`` draws them."""
        builder, dataset = self.builder, self.dataset
        rng = np.random.default_rng([dataset.seed, epoch, group])
        rows, views = dataset.group_views(group)
        window = builder._window
        for row, view in zip(rows, views, strict=True):
            if view == "neighbour":
                drawn = rng.integers(builder.neighbours)
                row = builder.composition_neighbours()[row, drawn]
            draws.rows.append(int(row))
            draws.starts.append(int(rng.integers(-builder.max_shift, builder.max_shift + 1)))
            if builder.mutation_rate > 0:
                draws.uniforms.append(rng.random(window))
                draws.offsets.append(rng.integers(1, 4, size=window))
            if builder.mask_fraction > 0:
                length = round(builder.mask_fraction * window)
                draws.mask_starts.append(int(rng.integers(window - length + 1)))
            draws.reverse.append(view == "reverse_complement")
            draws.group_ids.append(group)
