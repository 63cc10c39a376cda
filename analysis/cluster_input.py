"""The ``cluster`` step's reading and writing of an embeddings folder, a batch of rows at a time.

The folder is the one ``embed`` writes (:mod:`scicontrast.analysis.embed_stream`):
``embeddings.npy`` ``[N, D]`` float32 and ``embeddings.parquet`` (one file, or a partitioned
data set of shards) with ``item_id``, the metadata columns and an ``embedding`` column. Here

* the array is memory-mapped (:func:`open_embeddings`), never loaded whole, and the table is
  read by row group and only in the columns needed (``item_id`` and the label column; never
  the ``embedding`` column, never as a pandas frame of every column);
* beyond the exact methods' size the centred unit vectors are written, a batch at a time, to
  a float32 ``.npy`` file (:func:`unit_vectors_on_disk`), which the methods of
  :mod:`scicontrast.analysis.cluster_scale` read rows of as they need them (:class:`DiskRows`);
* the known labels become one integer code per item (:func:`label_codes`, through Arrow: no
  Python object per item), and the assignments file is written one row group per row group
  of the embeddings table (:func:`write_assignments`).

What stays in memory at any size is one int per item per method and for the labels (8 bytes
each: 8 MB per column at 10^6 items), one batch of rows, and the methods' fitted models.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scicontrast.analysis.embed_stream import EMBEDDING_COLUMN, EMBEDDINGS_ARRAY, EMBEDDINGS_TABLE
from scicontrast.data_adapters.items_store import (
    arrow_row_groups,
    drop_mapped_pages,
    load_array,
    table_schema,
)
from scicontrast.errors import ConfigError, InputDataError

ITEM_ID = "item_id"
MISSING = -1
# Rows per batch where a method reads all N (k-means labels, HDBSCAN predictions): 4 MiB of
# float32 at D = 64, enough to keep the per-call overhead of scikit-learn and hdbscan small.
BATCH_ROWS = 16_384


def row_batches(n_rows: int, batch: int | None = None) -> Iterator[slice]:
    """Contiguous ``slice`` s of at most ``batch`` (default ``BATCH_ROWS``) rows covering
    ``range(n_rows)`` in order."""
    batch = batch or BATCH_ROWS
    for start in range(0, n_rows, batch):
        yield slice(start, min(start + batch, n_rows))


def open_embeddings(folder: str | Path) -> tuple[np.ndarray, Path]:
    """``(embeddings [N, D] memory-mapped read-only, path of the table)`` of an embeddings
    folder; ``InputDataError`` naming the folder if either part is missing or they differ in
    rows."""
    folder = Path(folder)
    table_path, array_path = folder / EMBEDDINGS_TABLE, folder / EMBEDDINGS_ARRAY
    for path in (table_path, array_path):
        if not path.exists():
            raise InputDataError(f"{folder}: not an embeddings folder (no {path.name})")
    embeddings = load_array(array_path)
    if embeddings.ndim != 2:
        raise InputDataError(f"{array_path}: embeddings of shape {embeddings.shape}, not [N, D]")
    rows = sum(part.num_rows for part in arrow_row_groups(table_path, [ITEM_ID]))
    if rows != len(embeddings):
        raise InputDataError(
            f"{folder}: {array_path.name} has {len(embeddings)} rows but "
            f"{table_path.name} has {rows}"
        )
    return embeddings, table_path


def unit_vectors(embeddings: np.ndarray) -> np.ndarray:
    """``[N, D]`` rows of ``embeddings`` centred on their mean and scaled to unit length
    (a zero row stays zero), computed in memory."""
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norms, np.finfo(np.float32).tiny)


def unit_vectors_on_disk(embeddings: np.ndarray, path: Path) -> DiskRows:
    """:func:`unit_vectors` as float32, written to the ``.npy`` file ``path`` a batch of rows
    at a time and returned as :class:`DiskRows` of it. The mean is summed in float64 (two
    passes over ``embeddings``), so it does not drift with ``N``."""
    n_rows, dim = embeddings.shape
    total = np.zeros(dim, dtype=np.float64)
    for rows in row_batches(n_rows):
        total += embeddings[rows].sum(axis=0, dtype=np.float64)
        drop_mapped_pages(embeddings)
    mean = (total / n_rows).astype(np.float32)
    unit = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, dim))
    for rows in row_batches(n_rows):
        centred = np.asarray(embeddings[rows], dtype=np.float32) - mean
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        unit[rows] = centred / np.maximum(norms, np.finfo(np.float32).tiny)
        drop_mapped_pages(embeddings)
        drop_mapped_pages(unit)
    unit.flush()
    del unit
    return DiskRows(path)


class DiskRows:
    """The ``[N, D]`` rows of a 2-D ``.npy`` file, read from it (``os.preadv``) when indexed.

    ``rows[a:b]`` reads one contiguous block; ``rows[indices]`` (an integer array) reads
    row by row, about 1 microsecond each. Not a memory map: the kernel maps 64 KiB around
    each page a mapping faults in, so 4096 random rows of a 10^6 x 64 float32 map made
    all 244 MiB of it resident (``RssFile``), where these reads hold only the rows asked for.
    ``numpy.asarray(rows)`` is the whole file, memory-mapped read-only (what NN-descent needs).
    """

    def __init__(self, path: Path) -> None:
        mapped = np.load(path, mmap_mode="r")
        if mapped.ndim != 2:
            raise InputDataError(f"{path}: an array of shape {mapped.shape}, not [N, D]")
        self.path, self.shape, self.dtype = path, mapped.shape, mapped.dtype
        self._offset, self._row_bytes = mapped.offset, mapped.shape[1] * mapped.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError(f"{self.path}: rows are read with step 1, not {step}")
            out = np.empty((max(stop - start, 0), self.shape[1]), dtype=self.dtype)
            with open(self.path, "rb", buffering=0) as file:
                self._read(file.fileno(), out, start)
            return out
        rows = np.asarray(index, dtype=np.int64)
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        with open(self.path, "rb", buffering=0) as file:
            for position, row in enumerate(rows.tolist()):
                self._read(file.fileno(), out[position : position + 1], row)
        return out

    def _read(self, descriptor: int, out: np.ndarray, first_row: int) -> None:
        wanted = out.nbytes
        got = os.preadv(descriptor, [out.data], self._offset + first_row * self._row_bytes)
        if got != wanted:
            raise InputDataError(f"{self.path}: truncated at row {first_row}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def check_label_column(table_path: Path, label_column: str) -> None:
    """``ConfigError`` naming the table and its columns unless ``label_column`` is one."""
    names = [name for name in table_schema(table_path).names if name != EMBEDDING_COLUMN]
    if label_column not in names:
        raise ConfigError(
            f"{table_path}: label column {label_column!r} is not in the table; "
            f"available columns: {', '.join(names)}"
        )


def label_codes(table_path: Path, label_column: str) -> np.ndarray:
    """``[N]`` int64 code of each item's label: ``0, 1, ...`` in order of first appearance
    (as ``pandas.factorize``), ``MISSING`` where the label is null (or NaN)."""
    chunks = [
        chunk
        for part in arrow_row_groups(table_path, [label_column])
        for chunk in part.column(0).chunks
    ]
    kind = table_schema(table_path).field(label_column).type
    values = pa.chunked_array(chunks, type=kind).combine_chunks()
    if pa.types.is_dictionary(values.type):
        # Codes by first appearance, not by the stored dictionary's order.
        values = values.cast(values.type.value_type)
    if pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    codes = values.dictionary_encode().indices.fill_null(MISSING)
    return codes.to_numpy(zero_copy_only=False).astype(np.int64)


def write_assignments(
    path: Path, table_path: Path, found: dict[str, np.ndarray], label_column: str | None
) -> None:
    """Write ``path``: ``item_id``, one column per method of ``found`` (``[N]`` each, in
    table order), then the label column, one row group per row group of ``table_path``."""
    columns = [ITEM_ID] + ([label_column] if label_column not in (None, ITEM_ID) else [])
    writer: pq.ParquetWriter | None = None
    start = 0
    try:
        for part in arrow_row_groups(table_path, columns):
            stop = start + part.num_rows
            table = pa.table(
                {
                    ITEM_ID: part.column(ITEM_ID),
                    **{method: found[method][start:stop] for method in found},
                    **{name: part.column(name) for name in columns[1:]},
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            start = stop
    finally:
        if writer is not None:
            writer.close()
