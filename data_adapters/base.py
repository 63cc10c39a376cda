"""The adapter and pair-builder protocols, and the dataset that draws views from them.

Data flow::

    raw files --Adapter.read()--> Items --PairBuilder.build_parts()--> pairs table
    (Items, pairs table, seed, epoch) --ViewDataset--> ContrastiveBatch per batch

An **items set** is a folder holding ``items.parquet`` (one row per object: a unique
``item_id``, metadata columns such as labels, and the domain's payload columns, e.g.
``sequence``; a Parquet file or a folder of them), ``meta.json`` (facts the later steps need,
e.g. the modality), optional ``<name>.npy`` arrays aligned with the table rows, and optional
``<name>.extra.npy`` arrays that are not (e.g. a graph's edge index ``[2, E]``). The table is
read in row groups and every array is memory-mapped; adapters may write in chunks
(:mod:`scicontrast.data_adapters.items_store`).

A **pairs table** has one row per view: ``group_id`` (the object the view came from: views
sharing it are positives for each other), ``item_id`` and ``view`` (a name the pair builder
understands, e.g. ``forward`` or ``reverse_complement``). No randomness is stored in it: the
random part of a view (a shift, an angle) is drawn when the view is materialised, from a
generator seeded by ``(seed, epoch, group)``, so every epoch sees fresh views and a resumed
run sees exactly the views an uninterrupted one would.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from scicontrast.data_adapters.batch import ContrastiveBatch, collate_views
from scicontrast.data_adapters.items_store import (
    EXTRA_SUFFIX,
    META_FILE,
    TABLE_FILE,
    ItemsWriter,
    drop_mapped_pages,
    load_arrays,
    read_table,
)
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.data_adapters.pairs_table import PAIRS_COLUMNS, frame_parts
from scicontrast.errors import ConfigError, InputDataError, ScicontrastError

if TYPE_CHECKING:  # for annotations only: every adapter imports this module
    import pyarrow as pa

    from scicontrast.data_adapters.classical import ClassicalFeatures


@dataclass
class Items:
    """A table of objects plus aligned arrays and metadata; saved as one folder.

    ``arrays`` have one row per table row; ``extras`` are arrays of any shape that belong to
    the set as a whole (a graph's edges).
    """

    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "item_id" not in self.table.columns:
            raise ValueError("items table needs an 'item_id' column")
        duplicated = self.table["item_id"].duplicated()
        if duplicated.any():
            first = self.table.loc[duplicated, "item_id"].iloc[0]
            raise ValueError(f"items table has duplicate item_id {first!r}")
        for name, array in self.arrays.items():
            if len(array) != len(self.table):
                raise ValueError(f"array {name!r} has {len(array)} rows, table {len(self.table)}")
            if f"{name}.npy".endswith(EXTRA_SUFFIX):
                raise ValueError(f"array name {name!r} would be read back as an extra")

    def __len__(self) -> int:
        return len(self.table)

    def save(self, folder: str | Path) -> None:
        """Write the folder atomically (all files appear together or not at all); an
        adapter that reads more than fits in memory writes it in chunks with
        :class:`~scicontrast.data_adapters.items_store.ItemsWriter` instead."""
        with ItemsWriter(folder, self.meta) as writer:
            writer.append(self.table, self.arrays)
            for name, array in self.extras.items():
                writer.add_extra(name, array)

    @classmethod
    def load(cls, folder: str | Path, columns: Sequence[str] | None = None) -> Items:
        """Read an items folder: the table row group by row group, every array
        memory-mapped (:mod:`~scicontrast.data_adapters.items_store`).

        ``columns``: the table columns to read (``item_id`` always; ``None``: all). The
        others stay on disk, e.g. a payload that a pair builder reads from an array instead
        (:meth:`PairBuilder.table_columns`).
        """
        folder = Path(folder)
        table_path = folder / TABLE_FILE
        if not table_path.exists():
            raise InputDataError(f"{folder}: not an items folder (no {TABLE_FILE})")
        wanted = None if columns is None else list(dict.fromkeys(["item_id", *columns]))
        table = read_table(table_path, wanted)
        arrays, extras = load_arrays(folder)
        return cls(table=table, meta=read_meta(folder), arrays=arrays, extras=extras)


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of the items folder ``folder``."""
    return json.loads((Path(folder) / META_FILE).read_text())


def load_items(folder: str | Path, builder: PairBuilder) -> Items:
    """The items in ``folder`` with the table columns ``builder`` reads (all by default)."""
    return Items.load(folder, columns=builder.table_columns(read_meta(folder)))


class Adapter(ABC):
    """Reads a lab's raw files into an :class:`Items` set.

    To add a format: subclass, take your settings as keyword arguments in ``__init__`` (they
    come from ``adapter.params`` in the config), implement :meth:`read` and
    :meth:`input_files`, and register the class (see ``scicontrast.registry``).
    ``read`` must raise :class:`~scicontrast.errors.InputDataError` naming the file and the
    record or line for bad input; it must not write anything.

    To let ``scicontrast embed --model model.pt NEW_FILE...`` read new files with the settings
    a model was trained with, name the parameter that holds the input files in
    ``input_param``: a string names a parameter that takes a list of any number of paths, a
    tuple names parameters that take one path each, filled in order (``("nodes", "edges")``).
    Name the parameters that only describe the training data (label tables) in
    ``training_only_params``; override :meth:`params_for_new_inputs` when that is not enough.
    """

    registry_name: ClassVar[str]
    input_param: ClassVar[str | tuple[str, ...] | None] = None
    training_only_params: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def params_for_new_inputs(cls, params: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        """The constructor parameters that read ``paths`` instead of the training inputs.

        The default puts ``paths`` into ``input_param`` (see the class docstring) and drops
        ``training_only_params``; raises ``ConfigError`` when ``input_param`` is ``None`` or
        names parameters for another number of paths.
        """
        name = getattr(cls, "registry_name", cls.__name__)
        if cls.input_param is None:
            raise ConfigError(
                f"adapter {name!r} does not say which parameter holds its input files "
                "(Adapter.input_param); write a config for the new data, run "
                "'scicontrast prepare' and embed the items folder instead"
            )
        kept = {k: v for k, v in params.items() if k not in cls.training_only_params}
        if isinstance(cls.input_param, str):
            return {**kept, cls.input_param: list(paths)}
        return {**kept, **one_path_each(name, cls.input_param, paths)}

    @abstractmethod
    def input_files(self) -> list[Path]:
        """The files ``read`` will open (the workflow declares them as inputs)."""

    @abstractmethod
    def read(self) -> Items:
        """Read, validate and normalise the raw data."""

    def read_chunks(self, chunk_rows: int) -> Iterator[Items]:
        """The items of :meth:`read` in chunks of about ``chunk_rows`` rows, read as they come.

        ``prepare`` writes each chunk as it is yielded (:mod:`scicontrast.data_adapters.chunks`:
        the folder's ``meta`` is the last chunk's). The default yields ``read()`` whole; an
        adapter whose inputs may not fit in memory overrides this and defines ``read`` as
        ``concat_chunks(self.read_chunks(CHUNK_ROWS))``.
        """
        yield self.read()


def one_path_each(adapter: str, names: Sequence[str], paths: Sequence[str]) -> dict[str, str]:
    """``{names[i]: paths[i]}``; ``ConfigError`` unless there is one path per name."""
    if len(paths) != len(names):
        raise ConfigError(
            f"adapter {adapter!r} reads {len(names)} input path(s), {', '.join(names)} in that "
            f"order; got {len(paths)}: {' '.join(map(str, paths)) or '(none)'}"
        )
    return {name: str(path) for name, path in zip(names, paths, strict=True)}


class PairBuilder(ABC):
    """Domain knowledge: which views of which items show the same object.

    ``build`` writes down the pairing (a table that can be inspected); ``make_view`` turns
    one row of it into a tensor, drawing any randomness from ``rng``. With ``rng=None``,
    ``make_view`` returns the canonical, un-augmented input used for embedding.
    """

    registry_name: ClassVar[str]

    @abstractmethod
    def build(self, items: Items) -> pd.DataFrame:
        """Return the pairs table: columns ``group_id``, ``item_id``, ``view``."""

    def build_parts(self, folder: Path) -> Iterator[pa.Table]:
        """:meth:`build`'s table for the items in ``folder``, in Arrow parts written as they
        come (:mod:`~scicontrast.data_adapters.pair_parts`); default: ``build``'s, cut up."""
        return frame_parts(self.build(load_items(folder, self)))

    @abstractmethod
    def bind(self, items: Items) -> None:
        """Prepare to materialise views of ``items`` (e.g. encode sequences once)."""

    @abstractmethod
    def make_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> torch.Tensor:
        """The input tensor for row ``item_index`` of the bound items, seen as ``view``."""

    def canonical(self, item_index: int) -> torch.Tensor:
        """The un-augmented input of one item, for embedding."""
        return self.make_view(item_index, self.canonical_view, None)

    def table_columns(self, meta: dict[str, Any]) -> list[str] | None:
        """The items-table columns that :meth:`build`, :meth:`bind` and the batches read, for
        a set with ``meta``; ``None`` (the default): all. Naming fewer keeps a large set's
        other columns (a payload that an array also holds) on disk."""
        return None

    canonical_view: ClassVar[str] = "identity"
    # True when an item can only be embedded together with all the others (graph nodes need
    # their neighbours), so that a subset of the items is embedded by embedding all of them.
    embeds_whole_set: ClassVar[bool] = False

    def specificity(self, items: Items) -> tuple[str, np.ndarray] | None:
        """A domain proxy for how specific each item is: ``(name, values [N])`` or ``None``.

        Higher means more specific (rarer content, fewer neighbours); the diagnostics
        correlate it with the embedding norm (``scicontrast.analysis.diagnostics``). The
        default has no proxy.
        """
        return None

    def classical_features(self, items: Items) -> list[ClassicalFeatures]:
        """The domain's classical features of ``items``, the bar the embedding must clear.

        ``evaluate`` scores each beside the embedding with the same probe, kNN and
        clustering, and its summary says whether the embedding beats the best of them
        (``scicontrast.analysis.baselines``). Return one
        :class:`~scicontrast.data_adapters.classical.ClassicalFeatures` per feature set,
        rows in items order, or with ``skipped`` set when it cannot be computed for these
        items. The default declares none.
        """
        return []

    def symmetry_only(self) -> tuple[str, PairBuilder] | None:
        """The same pairing with only the symmetry the domain knowledge names, or ``None``.

        Training views may add nuisance augmentations on top of the symmetry (intensity
        jitter on a rotated grain, a shifted window on a reverse-complemented locus) that an
        encoder is not built to ignore exactly. The invariance score over this builder's
        views measures the symmetry alone. Returns ``(name of the symmetry, builder)``, a copy
        whose own ``build`` gives the pairs to score (views that are no symmetry, such as
        another window standing in as a positive, drop out) and which is bound before use,
        or ``None`` when the views add nothing to the symmetry (the default).
        """
        return None

    def training_batches(
        self,
        items: Items,
        pairs: pd.DataFrame,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> TrainingBatches:
        """What one epoch of training iterates over, for process ``rank`` of ``world_size``.

        The default draws ``batch_size`` groups per batch and process with all their views
        (see :class:`GroupBatches`). A domain whose objects cannot be batched independently
        (nodes of one graph) overrides this with its own
        :class:`~scicontrast.data_adapters.loader.BatchPlan`.
        """
        return EpochLoader(
            GroupBatches(
                ViewDataset(items, pairs, self, seed), batch_size, rank=rank, world_size=world_size
            )
        )

    def embedding_batches(self, items: Items, batch_size: int) -> Iterator[Any]:
        """Canonical inputs of every item, in table order, ``batch_size`` items at a time.

        The encoder maps each yielded input to ``[n, D]`` embeddings; the rows of all
        batches together are the items' rows. The pages of memory-mapped arrays are handed
        back after each batch, so one pass over a set larger than memory does not keep all
        of it resident.
        """
        self.bind(items)
        for start in range(0, len(items), batch_size):
            stop = min(start + batch_size, len(items))
            batch = torch.stack([self.canonical(i) for i in range(start, stop)])
            for array in items.arrays.values():
                drop_mapped_pages(array)
            yield batch


def check_pairs_table(pairs: pd.DataFrame, items: Items, source: str) -> None:
    """Raise ``InputDataError`` unless ``pairs`` is a valid pairs table over ``items``."""
    missing = [c for c in PAIRS_COLUMNS if c not in pairs.columns]
    if missing:
        raise InputDataError(f"{source}: pairs table lacks columns {missing}")
    try:
        item_rows(pairs["item_id"], items.table["item_id"])
    except InputDataError as exc:
        raise InputDataError(f"{source}: {exc}") from None


def item_rows(pair_item_ids: pd.Series, item_ids: pd.Series) -> np.ndarray:
    """``int64 [n]``: the items-table row of each pairs row's ``item_id``.

    A categorical column over exactly the items' ids (:func:`read_pairs`) gives its codes;
    otherwise the ids are looked up. ``InputDataError`` for an id the items lack.
    """
    if isinstance(pair_item_ids.dtype, pd.CategoricalDtype) and (
        pair_item_ids.cat.categories.equals(pd.Index(item_ids))
    ):
        rows = pair_item_ids.cat.codes.to_numpy().astype(np.int64)
    else:
        rows = pd.Index(item_ids).get_indexer(pair_item_ids)
    unknown = np.flatnonzero(rows < 0)
    if unknown.size:
        raise InputDataError(
            f"pairs row {int(unknown[0])} names item_id "
            f"{pair_item_ids.iloc[int(unknown[0])]!r}, which is not in the items table"
        )
    return rows


class ViewDataset(Dataset):
    """One entry per group: all its views, materialised with fresh randomness per epoch.

    ``dataset.views(e, g)`` returns ``(views, g)`` with ``views`` stacked along dim 0, drawn
    from a generator seeded by ``(seed, e, g)``, so the views do not depend on batch order,
    worker count or where a run was resumed; ``dataset[g]`` is ``views(epoch, g)`` for the
    epoch of the last ``set_epoch``. A view that cannot be made is an ``InputDataError``
    naming the item.
    """

    def __init__(self, items: Items, pairs: pd.DataFrame, builder: PairBuilder, seed: int) -> None:
        self.builder = builder
        self.seed = seed
        self.epoch = 0
        builder.bind(items)
        self._item_ids = items.table["item_id"].to_numpy()
        # The pairs as integer arrays sorted by group (stable: pairs-table order within a
        # group), a group's views a slice: a few bytes a view rather than Python objects.
        rows = item_rows(pairs["item_id"], items.table["item_id"])
        groups = pairs["group_id"].to_numpy()
        views = pairs["view"].to_numpy()
        if len(groups) > 1 and not (groups[1:] >= groups[:-1]).all():  # else: no copies
            order = np.argsort(groups, kind="stable")
            groups, rows, views = groups[order], rows[order], views[order]
        starts = np.flatnonzero(groups[1:] != groups[:-1]) + 1
        self.group_ids = groups[np.append(0, starts)] if len(groups) else groups
        self._bounds = np.concatenate([[0], starts, [len(groups)]])
        self._rows = rows
        view_codes, self._view_names = pd.factorize(views)
        self._view_codes = view_codes.astype(np.int32)
        self._mapped = list(items.arrays.values())

    def release_pages(self) -> None:
        """Hand back the resident pages of the memory-mapped item arrays (to the page cache)."""
        for array in self._mapped:
            drop_mapped_pages(array)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def group_views(self, index: int) -> tuple[np.ndarray, list[str]]:
        """Group ``index``'s item rows and view names, in pairs-table order."""
        begin, end = self._bounds[index], self._bounds[index + 1]
        names = self._view_names
        return self._rows[begin:end], [names[code] for code in self._view_codes[begin:end]]

    def __len__(self) -> int:
        return len(self.group_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.views(self.epoch, index)

    def views(self, epoch: int, index: int) -> tuple[torch.Tensor, int]:
        """Group ``index``'s views in ``epoch``: ``(views [k, ...], index)``."""
        rng = np.random.default_rng([self.seed, epoch, index])
        rows, views = self.group_views(index)
        tensors = []
        for row, view in zip(rows, views, strict=True):
            try:
                tensors.append(self.builder.make_view(int(row), view, rng))
            except ScicontrastError:
                raise
            except Exception as exc:
                raise InputDataError(
                    f"item_id {self._item_ids[row]!r} (view {view!r} of group "
                    f"{self.group_ids[index]!r}): {type(exc).__name__}: {exc}"
                ) from exc
        return torch.stack(tensors), int(index)


class TrainingBatches(Protocol):
    """An epoch's batches: iterating yields :class:`ContrastiveBatch` objects.

    ``set_epoch(epoch, start_batch)`` makes the next iteration yield that epoch's batches
    from ``start_batch`` on, identical to the ones an uninterrupted run yields (resuming
    after preemption). :class:`~scicontrast.data_adapters.loader.EpochLoader` is the
    implementation; ``use_workers`` sets its worker processes.
    """

    @property
    def n_groups(self) -> int: ...

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...

    def use_workers(self, workers: int, pin_memory: bool = False, prefetch: int = 2) -> None: ...

    def limit_steps(self, steps: int | None) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[ContrastiveBatch]: ...


class GroupBatches:
    """``batch_size`` groups per batch and process, all their views, in a fresh order per epoch.

    A :class:`~scicontrast.data_adapters.loader.BatchPlan`. Each epoch's order is a
    permutation from a generator seeded by ``(seed, epoch)``, cut into global batches of
    ``batch_size * world_size`` groups; process ``rank`` takes its slice of each, so the
    processes of a distributed run together see exactly the batches that one process with
    ``batch_size * world_size`` sees. A last global batch that cannot give every process at
    least two groups is dropped (a process with one group has no negative of its own). Views
    come from :class:`ViewDataset`, so the batches do not depend on when or where they run.
    """

    def __init__(
        self, dataset: ViewDataset, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.dataset = dataset
        self.n_groups = len(dataset)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        size = self.batch_size * self.world_size
        full, rest = divmod(self.n_groups, size)
        return full + (rest >= 2 * self.world_size)

    def batch_keys(self, epoch: int) -> list[np.ndarray]:
        """This process's group indices for each batch of ``epoch``: views of one int64 array."""
        generator = torch.Generator().manual_seed(epoch_seed(self.dataset.seed, epoch))
        order = torch.randperm(self.n_groups, generator=generator).numpy()
        size = self.batch_size * self.world_size
        starts = range(0, self.n_groups, size)
        if starts and self.n_groups - starts[-1] < 2 * self.world_size:
            starts = starts[:-1]
        batches = [order[start : start + size] for start in starts]  # views, not copies
        shares = [-(-len(batch) // self.world_size) for batch in batches]
        return [
            b[self.rank * s : (self.rank + 1) * s] for b, s in zip(batches, shares, strict=True)
        ]

    def make_batch(self, epoch: int, key: np.ndarray) -> ContrastiveBatch:
        batch = collate_views([self.dataset.views(epoch, g) for g in key.tolist()])
        # A view maps the folio around its row: 30 batches held all 10^6 windows' codes.
        self.dataset.release_pages()
        return batch


def held_out_groups(pairs: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """The group ids training leaves out (``training.holdout_fraction``), sorted.

    A seeded random ``round(fraction * n_groups)`` of the distinct groups, the same for
    training and for the diagnostics that are computed on them.
    """
    groups = np.unique(pairs["group_id"].to_numpy())
    count = round(fraction * len(groups))
    if count == 0:
        return groups[:0]
    chosen = np.random.default_rng([seed, 0x401D]).choice(len(groups), size=count, replace=False)
    return np.sort(groups[chosen])


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's batch order, well mixed from ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
