"""How an items set lies on disk: read in row groups, arrays memory-mapped, written in chunks.

The folder (``Items.save`` / ``Items.load``, layout in :mod:`scicontrast.data_adapters.base`):

``items.parquet``
    The table: one Parquet file, or a folder of Parquet files (a partitioned data set, e.g.
    one file per shard or hive partitions ``key=value/``), read in the order of their paths.
    It is read one row group at a time (pyarrow datasets), so a damaged row group is an
    :class:`~scicontrast.errors.InputDataError` naming the file and the row group.
``<name>.npy``, ``<name>.extra.npy``
    Arrays, memory-mapped when loaded (``np.load(mmap_mode="c")``: pages are read from disk
    where they are used; writes stay private to the process, so the file never changes),
    so that a set larger than memory loads; a truncated array names its file.

:class:`ItemsWriter` writes the folder chunk by chunk, as an adapter reads its input: each
chunk's table rows become one Parquet row group and its array rows are appended to the
``.npy`` files, whose header is written last. The folder appears atomically when the writer
closes without error; on an error nothing is left.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from scicontrast.data_adapters.id_hashes import HashedIdSet
from scicontrast.errors import InputDataError
from scicontrast.io import AtomicFolderWriter

TABLE_FILE = "items.parquet"
META_FILE = "meta.json"
EXTRA_SUFFIX = ".extra.npy"
# Room for any header numpy writes for the arrays here: the shape's first number is known
# only once the last chunk is written, so the header is written into a fixed-size slot.
_NPY_HEADER_BYTES = 256


def _dataset(path: Path) -> ds.Dataset:
    try:
        return ds.dataset(path, format="parquet", partitioning="hive")
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(f"{path}: not a readable Parquet table ({exc})") from None


def table_schema(path: str | Path) -> pa.Schema:
    """The Arrow schema of the table at ``path`` (a Parquet file or a folder of them)."""
    return _dataset(Path(path)).schema


def table_rows(path: str | Path) -> int:
    """The number of rows of the table at ``path``, from the Parquet footers."""
    return _dataset(Path(path)).count_rows()


def table_row_groups(path: str | Path, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The table at ``path`` (a Parquet file or a folder of them), one row group at a time.

    Raises ``InputDataError`` naming the file (and the row group) that cannot be read.
    """
    for table in arrow_row_groups(path, columns):
        yield table.to_pandas()


def arrow_row_groups(path: str | Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """:func:`table_row_groups` as Arrow tables (no Python object per string)."""
    path = Path(path)
    dataset = _dataset(path)
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        try:
            row_groups = fragment.split_by_row_group()
        except (OSError, pa.ArrowException) as exc:
            raise InputDataError(f"{fragment.path}: truncated or not Parquet ({exc})") from None
        for index, row_group in enumerate(row_groups):
            try:
                table = row_group.to_table(columns=columns, schema=dataset.schema)
            except (OSError, pa.ArrowException) as exc:
                raise InputDataError(
                    f"{fragment.path}: row group {index} is damaged or truncated ({exc})"
                ) from None
            yield table


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The table at ``path`` (only ``columns``, ``None``: all), read row group by row group
    (:func:`table_row_groups`)."""
    parts = list(table_row_groups(path, columns))
    if not parts:
        raise InputDataError(f"{path}: a Parquet table without row groups")
    table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    release_arrow_memory()
    return table


def release_arrow_memory() -> None:
    """Hand the memory Arrow freed back to the system. Its pool (mimalloc) keeps freed
    blocks for reuse: after reading 2 x 10^6 pairs rows by row group it held 200 MiB that
    nothing used, which a long step (training) would keep to its end."""
    pa.default_memory_pool().release_unused()


def load_array(path: Path) -> np.ndarray:
    """The array in ``path``, memory-mapped copy-on-write; ``InputDataError`` if damaged."""
    try:
        return np.load(path, mmap_mode="c")
    except (OSError, ValueError, EOFError) as exc:
        raise InputDataError(f"{path}: truncated or not a .npy array ({exc})") from None


def load_arrays(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(arrays, extras)`` of the items folder ``folder``, each memory-mapped, by name."""
    arrays, extras = {}, {}
    for path in sorted(Path(folder).glob("*.npy")):
        if path.name.endswith(EXTRA_SUFFIX):
            extras[path.name.removesuffix(EXTRA_SUFFIX)] = load_array(path)
        else:
            arrays[path.stem] = load_array(path)
    return arrays, extras


def drop_mapped_pages(array: np.ndarray) -> None:
    """Let the kernel take back the pages of a memory-mapped ``array`` that are resident
    (they are read from the file again when used; nothing is written to a ``"c"`` mapping).
    A pass over a whole set, embedding say, would otherwise keep all of it resident."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None:
        mapping.madvise(mmap.MADV_DONTNEED)


class GrowingArray:
    """A ``.npy`` file written a block of rows at a time; its header, which holds the row
    count, is written last into a fixed-size slot."""

    def __init__(self, path: Path, first: np.ndarray, label: str) -> None:
        self.path, self.dtype, self.row_shape = path, first.dtype, first.shape[1:]
        self.label = label
        self.rows = 0
        self._file = open(path, "wb")
        self._file.write(b"\0" * _NPY_HEADER_BYTES)

    def append(self, array: np.ndarray) -> None:
        if array.dtype != self.dtype or array.shape[1:] != self.row_shape:
            raise ValueError(
                f"{self.label}: chunk of {array.dtype} rows {array.shape[1:]}, "
                f"earlier chunks {self.dtype} rows {self.row_shape}"
            )
        self._file.write(np.ascontiguousarray(array).data)
        self.rows += len(array)

    def finish(self) -> None:
        self._file.seek(0)
        self._file.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))

    def close(self) -> None:
        self._file.close()


class ItemsWriter(AtomicFolderWriter):
    """Writes an items folder chunk by chunk (module docstring).

    Example::

        with ItemsWriter(folder, meta={"modality": "dna"}) as writer:
            for table, arrays in chunks:  # pd.DataFrame, {name: array with len(table) rows}
                writer.append(table, arrays)
            writer.add_extra("edge_index", edges)

    Every chunk must have the same columns and arrays (same dtypes and row shapes); item
    ids must be unique across all chunks. An extra that grows with the chunks (the pixels of
    a patch store, the clips of audio events) is written with :meth:`append_extra`.
    """

    def __init__(self, folder: str | Path, meta: dict[str, Any] | None = None) -> None:
        super().__init__(folder)
        self.folder = Path(folder)
        self.meta = dict(meta or {})
        self._table: pq.ParquetWriter | None = None
        self._arrays: dict[str, GrowingArray] = {}
        self._extras: dict[str, GrowingArray] = {}
        # Hashes, not the ids: 16 bytes an id, however many rows the set has.
        self._ids = HashedIdSet()
        self._held: list[pa.Table] = []
        self.rows = 0

    def append(self, table: pd.DataFrame, arrays: dict[str, np.ndarray] | None = None) -> None:
        """Add ``table``'s rows (one row group) and the matching rows of ``arrays``."""
        arrays = arrays or {}
        self._check_chunk(table, arrays)
        if not self._arrays and not self.rows:
            for name, array in arrays.items():
                self._arrays[name] = GrowingArray(
                    self.folder_being_written / f"{name}.npy", array, f"array {name!r}"
                )
        self._write_table(pa.Table.from_pandas(table, preserve_index=False))
        for name, array in arrays.items():
            self._arrays[name].append(array)
        self.rows += len(table)

    def _write_table(self, chunk: pa.Table | None) -> None:
        """Write ``chunk`` as a row group (``None``: flush what is held back).

        A column that is null in every row so far has no type yet (a labels column whose
        first chunk matched no label): such chunks are held back until a chunk types every
        column, or the set ends, and are then written with the types found.
        """
        if self._table is not None:
            if chunk is not None:
                self._table.write_table(chunk.cast(self._table.schema))
            return
        if chunk is not None:
            self._held.append(chunk)
        schema = pa.unify_schemas([t.schema for t in self._held], promote_options="permissive")
        if chunk is not None and any(pa.types.is_null(f.type) for f in schema):
            return
        self._table = pq.ParquetWriter(self.folder_being_written / TABLE_FILE, schema)
        for held in self._held:
            self._table.write_table(held.cast(schema))
        self._held = []

    def add_extra(self, name: str, array: np.ndarray) -> None:
        """An array of any shape that belongs to the set as a whole (``<name>.extra.npy``)."""
        np.save(self.folder_being_written / f"{name}.extra.npy", array)

    def append_extra(self, name: str, rows: np.ndarray) -> None:
        """Rows appended to the extra ``name`` (along its first axis), written as they come:
        the extra is every chunk's rows in order, same dtype and row shape."""
        if name not in self._extras:
            self._extras[name] = GrowingArray(
                self.folder_being_written / f"{name}.extra.npy", rows, f"extra {name!r}"
            )
        self._extras[name].append(rows)

    def _check_chunk(self, table: pd.DataFrame, arrays: dict[str, np.ndarray]) -> None:
        if "item_id" not in table.columns:
            raise ValueError("items table needs an 'item_id' column")
        ids = table["item_id"].to_numpy()
        repeated = self._ids.add_new(ids)
        if repeated is not None:
            raise ValueError(f"items table has duplicate item_id {ids[repeated]!r}")
        if self.rows and set(arrays) != set(self._arrays):
            raise ValueError(f"chunk arrays {sorted(arrays)}, earlier {sorted(self._arrays)}")
        for name, array in arrays.items():
            if len(array) != len(table):
                raise ValueError(f"array {name!r} has {len(array)} rows, table {len(table)}")
            if name.endswith(".extra"):
                raise ValueError(f"array name {name!r} would be read back as an extra")

    def _finish(self) -> None:
        if not self.rows:
            raise ValueError(f"{self.folder}: no rows were written")
        self._write_table(None)
        for growing in (*self._arrays.values(), *self._extras.values()):
            growing.finish()
        (self.folder_being_written / META_FILE).write_text(
            json.dumps(self.meta, indent=2, sort_keys=True)
        )

    def _close(self) -> None:
        if self._table is not None:
            self._table.close()  # writes the Parquet footer
        for growing in (*self._arrays.values(), *self._extras.values()):
            growing.close()


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A ``.npy`` version 1.0 header of exactly ``_NPY_HEADER_BYTES`` bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.empty((0,), dtype))
    header["shape"] = shape
    text = "{" + "".join(f"'{key}': {value!r}, " for key, value in sorted(header.items())) + "}"
    size = _NPY_HEADER_BYTES - 10  # magic (6), version (2), header length (2)
    if len(text) + 1 > size:
        raise ValueError(f"a .npy header for {dtype} {shape} does not fit {size} bytes")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", size) + (text.ljust(size - 1) + "\n").encode()
