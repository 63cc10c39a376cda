"""One fixed epoch of batches, made once and then kept in memory while it is small.

Training's held-out pass scores the same views after every epoch (they are drawn for one
fixed epoch, ``VIEW_EPOCH``), so making them again each time is wasted work: on the small
demos it was a seventh to a quarter of an epoch's CPU time
(docs/experiments/scale2.md). :class:`FixedBatches` makes them on the first pass and yields the
kept batches on later passes, unless together they hold more than ``max_bytes`` of tensors
(a held-out tenth of a large image set) or there is one pass only (``max_bytes = 0``), in
which case every pass makes them afresh. Either way every pass yields equal batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from scicontrast.data_adapters.batch import ContrastiveBatch

DEFAULT_MAX_BYTES = 256 * 2**20


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value``: a tensor, a dataclass (a batch, an audio-image
    batch), a PyG ``Data``/``Batch``, or a list, tuple or dict of those."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(tensor_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if hasattr(value, "to_dict"):  # PyG Data and Batch
        return tensor_bytes(value.to_dict())
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


class FixedBatches:
    """The batches of ``batches``' epoch ``epoch``, kept after the first whole pass when they
    hold at most ``max_bytes`` (module docstring). ``batches``: ``TrainingBatches``.

    Whether they fit is judged from the first batch times the number of batches, before
    any is kept, so that a set too large to keep never holds more than one batch at a time.
    """

    def __init__(self, batches: Any, epoch: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.batches, self.epoch, self.max_bytes = batches, epoch, max_bytes
        self.kept: list[ContrastiveBatch] | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[ContrastiveBatch]:
        if self.kept is not None:
            yield from self.kept
            return
        self.batches.set_epoch(self.epoch)
        kept: list[ContrastiveBatch] | None = [] if self.max_bytes > 0 else None
        for batch in self.batches:
            if kept == [] and tensor_bytes(batch) * len(self.batches) > self.max_bytes:
                kept = None
            if kept is not None:
                kept.append(batch)
            yield batch
        self.kept = kept
