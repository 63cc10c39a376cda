"""Embedding in shards: N independent jobs, one gather, one partitioned Parquet table.

Shard ``k`` of ``N`` embeds the contiguous rows ``[floor(k n / N), floor((k + 1) n / N))`` of
an ``n``-item set (:func:`shard_rows`) and writes an ordinary embeddings folder of those rows
(``scicontrast embed ITEMS --model M --shard k --shards N --out S_k``), so each shard is a
separate cluster job with its own memory and time. :func:`gather_shards` then writes the
experiment's embeddings folder:

``embeddings.parquet/part-00000.parquet, part-00001.parquet, ...``
    A partitioned Parquet dataset, one part per shard in shard order, every part cast to one
    unified schema; ``pandas.read_parquet``, ``pyarrow.parquet.read_table`` and
    :func:`scicontrast.analysis.embed.load_embeddings` (hence the AnnData export and every
    later step) read it as one table in items-table order.
``embeddings.npy``
    ``[n, D]`` float32, filled shard by shard through a memory map, so the gather holds at
    most one shard's rows in memory.

A missing or incomplete shard is an error naming it, and the gather writes atomically: no
output is left that a rerun would take for finished work. A graph is embedded whole (the
encoder passes messages along every edge), so it cannot be split into shards here; graphs
too large for one pass embed layer-wise (``scicontrast.models.graph_minibatch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scicontrast.analysis.embed import EMBEDDINGS_ARRAY, EMBEDDINGS_TABLE
from scicontrast.errors import InputDataError
from scicontrast.io import atomic_path

PART_NAME = "part-{:05d}.parquet"


def gather_shards(shard_dirs: Sequence[str | Path], out_dir: str | Path) -> int:
    """Join the embeddings folders ``shard_dirs`` (in shard order) into ``out_dir``.

    Returns the number of rows written. Raises ``InputDataError`` naming the first shard
    that is missing or incomplete, before anything is written.
    """
    folders = [Path(d) for d in shard_dirs]
    if not folders:
        raise InputDataError(f"{out_dir}: no embedding shards to gather")
    rows: list[int] = []
    widths: set[int] = set()
    for index, folder in enumerate(folders):
        rows.append(_check_shard(folder, index, len(folders), widths))
    if len(widths) > 1:
        raise InputDataError(f"{out_dir}: shards disagree on the embedding width: {widths}")
    schema = pa.unify_schemas(
        [pq.read_schema(d / EMBEDDINGS_TABLE) for d in folders], promote_options="permissive"
    )
    with atomic_path(out_dir) as tmp:
        (tmp / EMBEDDINGS_TABLE).mkdir(parents=True)
        array = np.lib.format.open_memmap(
            tmp / EMBEDDINGS_ARRAY, mode="w+", dtype=np.float32, shape=(sum(rows), widths.pop())
        )
        start = 0
        for index, folder in enumerate(folders):
            table = pq.read_table(folder / EMBEDDINGS_TABLE).select(schema.names).cast(schema)
            pq.write_table(table, tmp / EMBEDDINGS_TABLE / PART_NAME.format(index))
            array[start : start + rows[index]] = np.load(folder / EMBEDDINGS_ARRAY, mmap_mode="r")
            start += rows[index]
        array.flush()
        del array
    return start


def _check_shard(folder: Path, index: int, shards: int, widths: set[int]) -> int:
    """Rows of one shard's embeddings folder; its width goes into ``widths``."""
    name = f"shard {index} of {shards} ({folder})"
    if not folder.is_dir():
        raise InputDataError(f"{name} is missing: embed it before gathering")
    for file in (EMBEDDINGS_TABLE, EMBEDDINGS_ARRAY):
        if not (folder / file).is_file():
            raise InputDataError(f"{name} is incomplete: no {file}")
    try:
        array = np.load(folder / EMBEDDINGS_ARRAY, mmap_mode="r")
        table_rows = pq.read_metadata(folder / EMBEDDINGS_TABLE).num_rows
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise InputDataError(f"{name} is unreadable: {exc}") from exc
    if array.ndim != 2 or len(array) != table_rows:
        raise InputDataError(
            f"{name}: {EMBEDDINGS_ARRAY} has shape {array.shape} but "
            f"{EMBEDDINGS_TABLE} has {table_rows} rows"
        )
    widths.add(array.shape[1])
    return table_rows
