"""The ``synchronized_pairs`` table built from the items folder in parts, without a Python
string per item.

The pairs table has two rows per event, sorted by event, the audio item first:
``(event, audio item id, "audio"), (event, image item id, "image")``. Built in memory
(:meth:`~.pairs.SynchronizedPairs.build`) it needs the items' ids as Python strings and the
whole table at once (547 MiB at 10^6 items against 347 at 10^4). :func:`pair_parts` reads
the items table twice:

1. ``event`` and ``modality`` a row group at a time (every ``item_id`` checked for repeats
   as a hash, :func:`~scicontrast.data_adapters.pair_parts.item_row_groups`), kept as
   ``int64`` and ``bool`` columns: 9 bytes an item; then the row order by :func:`event_order`;
2. the ``item_id`` of ``PART_ROWS`` rows of that order at a time, taken from the row groups
   that hold them (:class:`RowGroupIds`: the adapter writes an event's audio items in event
   order, then its images, so a part's rows lie in a few row groups of each side).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from scicontrast.data_adapters.items_store import TABLE_FILE
from scicontrast.data_adapters.pair_parts import item_row_groups
from scicontrast.errors import InputDataError

# Pairs rows per part (half as many events).
PART_ROWS = 65_536
VIEWS = ("audio", "image")


def event_order(events: np.ndarray, modality: np.ndarray) -> np.ndarray:
    """``int64 [2P]``: the items' rows in pairs-table order (by event, audio first), from
    each item's ``events`` and ``modality`` (``"audio"`` / ``"image"`` strings, or the codes
    0 / 1). ``InputDataError`` unless every event has exactly one audio and one image item.
    """
    if modality.dtype.kind in "iu":
        is_audio, is_image = modality == 0, modality == 1
    else:
        is_audio, is_image = modality == VIEWS[0], modality == VIEWS[1]
    found, event_of = np.unique(events, return_inverse=True)
    audio = np.bincount(event_of, weights=is_audio, minlength=len(found))
    image = np.bincount(event_of, weights=is_image, minlength=len(found))
    incomplete = found[(audio != 1) | (image != 1)]
    if len(incomplete):
        raise InputDataError(
            f"items: event {incomplete[0]!r} does not have exactly one audio and one image item"
        )
    if not (is_audio | is_image).all():
        row = int(np.flatnonzero(~(is_audio | is_image))[0])
        raise InputDataError(f"items: row {row} is neither an audio nor an image item")
    return np.lexsort((is_image, events))


def pair_parts(folder: Path) -> Iterator[pa.Table]:
    """The pairs table of the items in ``folder`` (module docstring) in Arrow parts of
    ``PART_ROWS`` rows: ``group_id`` (the event, ``int64``), ``item_id``, ``view``."""
    events, modality = [], []
    for _, table in item_row_groups(folder, ["event", "modality"]):
        events.append(table.column("event").to_numpy())
        codes = pc.index_in(table.column("modality"), value_set=pa.array(VIEWS))
        modality.append(codes.fill_null(len(VIEWS)).to_numpy().astype(np.int8))
    event, code = np.concatenate(events), np.concatenate(modality)
    order = event_order(event, code)
    ids = RowGroupIds(Path(folder) / TABLE_FILE)
    views = pa.array(VIEWS, pa.string())
    for start in range(0, max(len(order), 1), PART_ROWS):
        rows = order[start : start + PART_ROWS]
        yield pa.table(
            {
                "group_id": pa.array(event[rows], pa.int64()),
                "item_id": ids.take(rows),
                "view": views.take(pa.array(code[rows])),
            }
        )


class RowGroupIds:
    """The ``item_id`` of any rows of an items table (a Parquet file or a folder of them),
    read a row group at a time; the last ``CACHED`` row groups read are kept."""

    CACHED = 4

    def __init__(self, path: Path) -> None:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
        fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
        self._groups = [g for f in fragments for g in f.split_by_row_group()]
        sizes = [sum(info.num_rows for info in g.row_groups) for g in self._groups]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._type = dataset.schema.field("item_id").type
        self._cache: dict[int, pa.ChunkedArray] = {}

    def take(self, rows: np.ndarray) -> pa.Array:
        """The ids of ``rows`` (table rows), in that order."""
        owner = np.searchsorted(self._starts, rows, side="right") - 1
        pieces, places = [], []
        for group in np.unique(owner):
            mine = np.flatnonzero(owner == group)
            local = rows[mine] - self._starts[group]
            pieces.append(self._ids(int(group)).take(local).combine_chunks())
            places.append(mine)
        if not pieces:
            return pa.array([], self._type)
        ids = pa.concat_arrays(pieces)
        return ids.take(np.argsort(np.concatenate(places), kind="stable"))

    def _ids(self, group: int) -> pa.ChunkedArray:
        if group not in self._cache:
            if len(self._cache) >= self.CACHED:
                self._cache.pop(next(iter(self._cache)))
            table = self._groups[group].to_table(columns=["item_id"])
            self._cache[group] = table.column("item_id")
        return self._cache[group]
