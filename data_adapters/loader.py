"""An epoch's batches drawn through ``torch.utils.data.DataLoader`` worker processes.

A domain describes an epoch as a :class:`BatchPlan`: the keys of the epoch's batches (a
function of ``(seed, epoch)`` alone: the groups of each batch, or a batch number) and
``make_batch(epoch, key)``, which materialises one :class:`ContrastiveBatch` from
``(seed, epoch, key)`` alone. :class:`EpochLoader` hands ``(epoch, position, key)`` to a
``DataLoader`` with ``batch_size=None``: each worker materialises whole batches, the main
process receives them in key order (the ``DataLoader`` keeps the sampler's order whatever the
number of workers), optionally in pinned memory, ``prefetch_factor`` batches ahead per worker.
Since a batch depends on nothing the worker has seen before, the batches, and so the trained
weights, do not depend on the number of workers, and resuming at batch ``b`` of an epoch yields
the batches an uninterrupted run yields from ``b`` on.

Workers are forked once and kept across epochs (``persistent_workers``): the epoch travels
with each key rather than in the workers' copy of the plan.

Embedding (:func:`embedding_loader`) draws a pair builder's ``embedding_batches`` in order,
through at most one worker process that materialises batches ahead of the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.errors import ConfigError, InputDataError, ScicontrastError


class BatchPlan(Protocol):
    """What a domain tells :class:`EpochLoader` about its epochs (module docstring)."""

    n_groups: int

    def __len__(self) -> int:
        """Batches per epoch (for this process)."""

    def batch_keys(self, epoch: int) -> Sequence[Any]:
        """This process's batch keys of ``epoch``, in order; a function of (seed, epoch)."""

    def make_batch(self, epoch: int, key: Any) -> ContrastiveBatch:
        """The batch ``key`` of ``epoch``; a function of (seed, epoch, key) alone."""


@runtime_checkable
class DeviceBatchPlan(BatchPlan, Protocol):
    """A plan whose views are tensor operations that can run on the training device
    (``training.augment_on_device``; :mod:`scicontrast.data_adapters.tensor_views`)."""

    def to_device(self, device: torch.device) -> None:
        """Keep the data on ``device``; ``make_batch`` then makes its views there."""


class _PlanBatches(Dataset):
    """``dataset[(epoch, position, key)]`` is the plan's batch, errors naming the batch."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan

    def __getitem__(self, index: tuple[int, int, Any]) -> ContrastiveBatch:
        epoch, position, key = index
        try:
            return self.plan.make_batch(epoch, key)
        except (ScicontrastError, torch.OutOfMemoryError):
            # The first already names the file, item or record; the second is the device's
            # memory (views made on a GPU), not the data.
            raise
        except Exception as exc:
            raise InputDataError(
                f"batch {position} of epoch {epoch}: {type(exc).__name__}: {exc}"
            ) from exc


class _Entries(Sampler):
    """The current epoch's ``(epoch, position, key)`` entries; replaced by ``set_epoch``."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, Any]] = []

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def _as_is(batch: Any) -> Any:
    return batch


class EpochLoader:
    """Iterates a :class:`BatchPlan`'s epoch through a ``DataLoader`` (module docstring).

    Satisfies :class:`scicontrast.data_adapters.base.TrainingBatches`. ``workers = 0``
    materialises batches in the calling process.
    """

    def __init__(
        self, plan: BatchPlan, workers: int = 0, pin_memory: bool = False, prefetch: int = 2
    ) -> None:
        self.plan = plan
        self._entries = _Entries()
        self._epoch, self._start = 0, 0
        self._max_steps: int | None = None
        self._loader: DataLoader | None = None
        self.use_workers(workers, pin_memory, prefetch)

    @property
    def n_groups(self) -> int:
        return self.plan.n_groups

    def use_workers(self, workers: int, pin_memory: bool = False, prefetch: int = 2) -> None:
        """Draw batches in ``workers`` processes (0: in this one), ``prefetch`` per worker
        ahead, into pinned memory when ``pin_memory`` (worth it for a CUDA device only)."""
        if workers < 0:
            raise ValueError(f"loader workers must be >= 0, got {workers}")
        self.workers, self.pin_memory, self.prefetch = workers, pin_memory, prefetch
        self._loader = None

    def augment_on(self, device: torch.device) -> None:
        """Make the views on ``device`` (``training.augment_on_device``), in this process:
        a worker process cannot hold a GPU's tensors. ``ConfigError`` if the plan cannot."""
        if not isinstance(self.plan, DeviceBatchPlan):
            raise ConfigError(
                f"training.augment_on_device: the views of {type(self.plan).__name__} are not "
                "made on the device (graph_views', dna_views' and rotations' are); set it to false"
            )
        self.plan.to_device(device)
        self.use_workers(0)

    def limit_steps(self, steps: int | None) -> None:
        """Yield at most the first ``steps`` batches of each epoch (``None``: all of them)."""
        if steps is not None and steps < 1:
            raise ValueError(f"an epoch needs at least 1 step, got {steps}")
        self._max_steps = steps

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self._epoch, self._start = epoch, start_batch

    def __len__(self) -> int:
        return len(self.plan) if self._max_steps is None else min(len(self.plan), self._max_steps)

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(
                _PlanBatches(self.plan),
                batch_size=None,
                sampler=self._entries,
                num_workers=self.workers,
                collate_fn=_as_is,
                pin_memory=self.pin_memory,
                prefetch_factor=self.prefetch if self.workers else None,
                persistent_workers=self.workers > 0,
                # Its own generator: creating an iterator then draws nothing from torch's
                # global one, which training's weights depend on.
                generator=torch.Generator().manual_seed(0),
            )
        return self._loader

    def __iter__(self) -> Iterator[ContrastiveBatch]:
        epoch = self._epoch
        keys = list(self.plan.batch_keys(epoch))[self._start : len(self)]
        self._entries.entries = [(epoch, self._start + i, key) for i, key in enumerate(keys)]
        iterator = iter(self._data_loader())
        for position in range(self._start, self._start + len(keys)):
            try:
                batch = next(iterator)
            except (ScicontrastError, torch.OutOfMemoryError):
                raise
            except RuntimeError as exc:  # a worker killed (out of memory, a segfault)
                raise InputDataError(
                    f"a data loader worker failed while loading batch {position} of epoch "
                    f"{epoch} or one of the {self.prefetch * self.workers} after it: {exc}"
                ) from exc
            yield batch


class EmbeddingSource(Protocol):
    """A pair builder, as far as embedding goes (``PairBuilder.embedding_batches``)."""

    def embedding_batches(self, items: Any, batch_size: int) -> Iterator[Any]:
        """Canonical inputs of every item, in table order."""


class _EmbeddingBatches(IterableDataset):
    """The builder's canonical batches of ``items``, in table order."""

    def __init__(self, builder: EmbeddingSource, items: Any, batch_size: int) -> None:
        self.builder, self.items, self.batch_size = builder, items, batch_size

    def __iter__(self) -> Iterator[Any]:
        return iter(self.builder.embedding_batches(self.items, self.batch_size))


def embedding_loader(
    builder: EmbeddingSource,
    items: Any,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    prefetch: int = 2,
) -> DataLoader:
    """A ``DataLoader`` over ``builder.embedding_batches(items, batch_size)``, in order.

    With ``workers > 0`` one worker process materialises the batches, ``prefetch`` ahead
    of the model: ``embedding_batches`` is a generator, so a second worker would repeat the
    first one's work rather than share it.
    """
    if workers < 0:
        raise ValueError(f"loader workers must be >= 0, got {workers}")
    workers = min(workers, 1)
    return DataLoader(
        _EmbeddingBatches(builder, items, batch_size),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin_memory,
        prefetch_factor=prefetch if workers else None,
    )
