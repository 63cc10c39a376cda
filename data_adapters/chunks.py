"""Adapters that read in chunks: an items set built and written a chunk of rows at a time.

An adapter's :meth:`~scicontrast.data_adapters.base.Adapter.read_chunks` yields
:class:`~scicontrast.data_adapters.base.Items` chunks: each holds the table rows of one chunk
and the matching rows of its arrays; ``meta`` is that of the last chunk (an adapter learns
facts such as counts of dropped records only at the end), and an extra is the rows of every
chunk that holds it, in order (``ItemsWriter.append_extra``: a patch store's pixels or audio
clips grow with the chunks; a graph's edges come in one chunk). ``prepare`` hands the chunks to
:class:`~scicontrast.data_adapters.items_store.ItemsWriter` as they come, so a FASTA of any
size or a folder of any number of images never lies in memory whole; :func:`concat_chunks`
gives the same set in memory (``Adapter.read``), and both agree for every chunk size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.items_store import ItemsWriter
from scicontrast.errors import InputDataError

# Rows per chunk: small enough that a chunk of 64 px RGB images (12 KiB each) stays under a
# GiB, large enough that Parquet row groups and array writes are not per-row overhead.
CHUNK_ROWS = 65_536
# Bytes of float pixels or samples per chunk, for adapters whose items are large (images at
# their working scale, audio clips): 65,536 one-second clips at 8 kHz would be 2 GiB.
CHUNK_BYTES = 64 * 2**20


def write_chunks(chunks: Iterable[Items], folder: str | Path) -> int:
    """Write ``chunks`` as one items folder (atomically: nothing is left on an error).

    Returns the number of rows written; ``InputDataError`` when no chunk holds a row.
    """
    with ItemsWriter(folder) as writer:
        for chunk in chunks:
            writer.meta = dict(chunk.meta)
            if len(chunk):
                writer.append(chunk.table, chunk.arrays)
            for name, array in chunk.extras.items():
                writer.append_extra(name, array)
        if writer.rows == 0:
            raise InputDataError(f"{folder}: the adapter read no items")
        return writer.rows


def concat_chunks(chunks: Iterable[Items]) -> Items:
    """The chunks as one in-memory :class:`Items` (the folder :func:`write_chunks` writes)."""
    tables: list[pd.DataFrame] = []
    arrays: dict[str, list[np.ndarray]] = {}
    extras: dict[str, list[np.ndarray]] = {}
    meta: dict = {}
    for chunk in chunks:
        meta = chunk.meta
        for name, array in chunk.extras.items():
            extras.setdefault(name, []).append(array)
        if len(chunk):
            tables.append(chunk.table)
            for name, array in chunk.arrays.items():
                arrays.setdefault(name, []).append(array)
    if not tables:
        raise InputDataError("the adapter read no items")
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    return Items(table=table, meta=meta, arrays=_joined(arrays), extras=_joined(extras))


def _joined(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate(p) if len(p) > 1 else p[0] for name, p in parts.items()}


def split_items(items: Items, chunk_rows: int) -> Iterator[Items]:
    """An in-memory set as chunks of ``chunk_rows`` rows, ``meta`` and extras with the last
    (for an adapter that must see every input before the items are final, a graph's)."""
    for start in range(0, len(items), chunk_rows):
        rows = slice(start, start + chunk_rows)
        last = start + chunk_rows >= len(items)
        yield Items(
            table=items.table.iloc[rows].reset_index(drop=True),
            meta=items.meta if last else {},
            arrays={name: array[rows] for name, array in items.arrays.items()},
            extras=items.extras if last else {},
        )
