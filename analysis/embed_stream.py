"""An embeddings folder written as the batches come: one items row group in memory at a time.

``embed`` of a prepared items folder used to hold the items' metadata columns (every column
that is not model input) and the ``[N, D]`` embeddings whole before writing; at 10^6 reads
that is about 300 MiB of metadata and 256 MiB of vectors. Here the metadata is read one
row group of the items table at a time (:func:`metadata_parts`), matched with the next rows
of the embedding batches, and written as one row group of ``embeddings.parquet`` and the
next rows of ``embeddings.npy`` (:class:`EmbeddingsWriter`), so memory holds one row group
and one batch. The folder is the one :func:`scicontrast.analysis.embed.write_embeddings`
writes (same rows, columns and values; the table in several row groups; the file
names are defined here) and appears
atomically: a failure leaves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scicontrast.data_adapters.items_store import (
    TABLE_FILE,
    GrowingArray,
    table_row_groups,
    table_schema,
)
from scicontrast.errors import InputDataError
from scicontrast.io import AtomicFolderWriter

EMBEDDINGS_TABLE = "embeddings.parquet"
EMBEDDINGS_ARRAY = "embeddings.npy"
EMBEDDING_COLUMN = "embedding"


def metadata_parts(
    items_dir: str | Path, payload: Iterable[str], rows: range
) -> tuple[pa.Schema, Iterator[pd.DataFrame]]:
    """The items table's metadata (``item_id`` and every column not in ``payload``) of
    ``rows``, one row group at a time, and its Arrow schema as stored."""
    path = Path(items_dir) / TABLE_FILE
    stored = table_schema(path)
    excluded = set(payload)
    columns = [name for name in stored.names if name not in excluded]
    if EMBEDDING_COLUMN in columns:
        raise InputDataError(
            f"{items_dir}: items table has a column named {EMBEDDING_COLUMN!r}, which the "
            "embeddings table reserves; rename it in the adapter"
        )

    def parts() -> Iterator[pd.DataFrame]:
        start = 0
        for part in table_row_groups(path, columns):
            stop = start + len(part)
            low, high = max(rows.start, start), min(rows.stop, stop)
            if low < high:
                yield part.iloc[low - start : high - start].reset_index(drop=True)
            start = stop

    return pa.schema([stored.field(name) for name in columns]), parts()


class EmbeddingsWriter(AtomicFolderWriter):
    """Writes an embeddings folder part by part (``with`` block; atomic)."""

    def __init__(self, out_dir: str | Path, stored: pa.Schema) -> None:
        super().__init__(out_dir)
        self._stored = stored
        self._table: pq.ParquetWriter | None = None
        self._array: GrowingArray | None = None
        self.rows = 0

    def write(self, metadata: pd.DataFrame, embeddings: np.ndarray) -> None:
        """Add ``metadata``'s rows with their ``embeddings [len(metadata), D]``."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        vectors = pa.FixedSizeListArray.from_arrays(
            pa.array(embeddings.reshape(-1), type=pa.float32()), embeddings.shape[1]
        )
        table = pa.Table.from_pandas(metadata, preserve_index=False)
        table = table.append_column(EMBEDDING_COLUMN, vectors)
        if self._table is None:
            folder = self.folder_being_written
            self._table = pq.ParquetWriter(folder / EMBEDDINGS_TABLE, self._typed(table))
            self._array = GrowingArray(folder / EMBEDDINGS_ARRAY, embeddings, EMBEDDINGS_ARRAY)
        assert self._array is not None  # made with the table writer
        self._table.write_table(table.cast(self._table.schema))
        self._array.append(embeddings)
        self.rows += len(metadata)

    def _typed(self, table: pa.Table) -> pa.Schema:
        """``table``'s schema, a column that is null throughout the first part typed as
        the items table stores it (later parts may hold values)."""
        schema = table.schema
        for index, field in enumerate(schema):
            if pa.types.is_null(field.type) and field.name in self._stored.names:
                schema = schema.set(index, field.with_type(self._stored.field(field.name).type))
        return schema

    def _finish(self) -> None:
        if self._array is None:
            raise ValueError("no embeddings were written")
        self._array.finish()

    def _close(self) -> None:
        if self._table is not None:
            self._table.close()
        if self._array is not None:
            self._array.close()


def write_stream(
    out_dir: str | Path,
    stored: pa.Schema,
    metadata: Iterable[pd.DataFrame],
    chunks: Iterable[np.ndarray],
    n_items: int,
) -> None:
    """Write ``metadata``'s parts with the rows of ``chunks`` (the embedding batches, in
    item order) as they come; ``ValueError`` unless there are ``n_items`` of both."""
    batches = iter(chunks)
    held: list[np.ndarray] = []
    held_rows = 0
    with EmbeddingsWriter(out_dir, stored) as writer:
        for part in metadata:
            while held_rows < len(part):
                batch = next(batches, None)
                if batch is None:
                    break
                held.append(batch)
                held_rows += len(batch)
            if held_rows < len(part):
                break
            joined = np.concatenate(held) if len(held) > 1 else held[0]
            writer.write(part, joined[: len(part)])
            rest = joined[len(part) :]
            held, held_rows = ([rest] if len(rest) else []), len(rest)
        embedded = writer.rows + held_rows + sum(len(b) for b in batches)
        if writer.rows != n_items or embedded != n_items:
            raise ValueError(f"embedded {embedded} rows for {n_items} items")
