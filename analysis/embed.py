"""Embed every item with a trained encoder and write the embeddings with their metadata.

Each item is embedded from its canonical (un-augmented) view,
``builder.canonical(i)``, through ``model.embed``: the encoder output, not the projection
head, since the head is only there to serve the loss (SimCLR, Chen et al. 2020, §4.2).

Output folder (written atomically, both files appear together or not at all):

``embeddings.parquet``
    One row per item, in items-table order: ``item_id``, every items column that is not
    model input (``Items.meta["payload_columns"]``, e.g. ``sequence``), and ``embedding``,
    an Arrow ``fixed_size_list<float32>[D]`` column. ``pandas.read_parquet`` gives one
    float32 ``numpy`` array per row.
``embeddings.npy``
    The same vectors as one ``[N, D]`` float32 array, same row order, for fast loading.

:func:`embed` embeds a prepared items folder; new raw files stream through
:func:`scicontrast.analysis.embed_files.embed_files` (``scicontrast embed --model M FILE...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from scicontrast.analysis.embed_stream import (
    EMBEDDING_COLUMN,
    EMBEDDINGS_ARRAY,
    EMBEDDINGS_TABLE,
    metadata_parts,
    write_stream,
)
from scicontrast.data_adapters.base import Items, PairBuilder, load_items
from scicontrast.data_adapters.loader import embedding_loader
from scicontrast.data_adapters.shards import shard_items, shard_rows
from scicontrast.device import resolve_device
from scicontrast.errors import InputDataError
from scicontrast.io import atomic_path

if TYPE_CHECKING:
    from scicontrast.models.contrastive import ContrastiveModel


def embed_items(
    model: ContrastiveModel,
    builder: PairBuilder,
    items: Items,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: bool = True,
    workers: int = 0,
) -> np.ndarray:
    """Embed the canonical view of every item.

    Args:
        model: has ``embed(x) -> [B, D]`` and ``encoder.embedding_dim``; moved to
            ``device`` and put in eval mode.
        builder: the experiment's pair builder; bound to ``items`` here.
        items: the items to embed.
        batch_size: items per forward pass.
        device: where the forward passes run.
        progress: show a progress bar on stderr.
        workers: make the batches in a worker process, ahead of the model (0: in this one;
            see :func:`~scicontrast.data_adapters.loader.embedding_loader`).

    Returns:
        ``[N, D]`` float32 array, row ``i`` embedding ``items.table`` row ``i``.
    """
    # Every encoder declares its output width (build_model checks it).
    width = cast(int, model.encoder.embedding_dim)
    chunks = [np.zeros((0, width), dtype=np.float32)]
    chunks += embedding_chunks(model, builder, items, batch_size, device, progress, workers)
    embeddings = np.concatenate(chunks)
    if len(embeddings) != len(items):
        raise ValueError(f"embedded {len(embeddings)} rows for {len(items)} items")
    return embeddings


def embedding_chunks(
    model: ContrastiveModel,
    builder: PairBuilder,
    items: Items,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: bool = True,
    workers: int = 0,
) -> Iterator[np.ndarray]:
    """The embeddings of :func:`embed_items`, one ``[b, D]`` batch at a time, as made."""
    device = torch.device(device)
    model.to(device)
    model.eval()
    batches = embedding_loader(
        builder, items, batch_size, workers, pin_memory=device.type == "cuda"
    )
    # Shown on a pipe or log file too: a workflow step's console is rarely a terminal.
    for inputs in tqdm(batches, desc="embed", unit="batch", disable=not progress):
        inputs = inputs.to(device, non_blocking=True)
        # Per batch, not around the loop: a suspended generator would leave grad mode off
        # in its caller.
        with torch.no_grad():
            embedded = model.embed(inputs).float().cpu().numpy()
        yield embedded


def item_metadata(items: Items, source: str = "items table") -> pd.DataFrame:
    """``item_id`` and every column of the items table that is not model input.

    ``source`` names the items folder in error messages.
    """
    payload = set(items.meta.get("payload_columns", []))
    columns = [c for c in items.table.columns if c not in payload]
    if EMBEDDING_COLUMN in columns:
        raise InputDataError(
            f"{source}: items table has a column named {EMBEDDING_COLUMN!r}, which the embeddings "
            "table reserves; rename it in the adapter"
        )
    return items.table[columns].reset_index(drop=True)


def write_embeddings(out_dir: str | Path, metadata: pd.DataFrame, embeddings: np.ndarray) -> None:
    """Write ``embeddings.parquet`` and ``embeddings.npy`` into ``out_dir`` atomically."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(metadata):
        raise ValueError(
            f"embeddings of shape {embeddings.shape} do not match {len(metadata)} metadata rows"
        )
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(embeddings.reshape(-1), type=pa.float32()), embeddings.shape[1]
    )
    table = pa.Table.from_pandas(metadata, preserve_index=False).append_column(
        EMBEDDING_COLUMN, vectors
    )
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        pq.write_table(table, tmp / EMBEDDINGS_TABLE)
        np.save(tmp / EMBEDDINGS_ARRAY, embeddings)


def load_embeddings(folder: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read an embeddings folder: ``(metadata without the embedding column, [N, D] array)``."""
    folder = Path(folder)
    table_path, array_path = folder / EMBEDDINGS_TABLE, folder / EMBEDDINGS_ARRAY
    for path in (table_path, array_path):
        if not path.exists():
            raise InputDataError(f"{folder}: not an embeddings folder (no {path.name})")
    metadata = pq.read_table(table_path).drop_columns([EMBEDDING_COLUMN]).to_pandas()
    embeddings = np.load(array_path)
    if len(embeddings) != len(metadata):
        raise InputDataError(
            f"{folder}: {array_path.name} has {len(embeddings)} rows but "
            f"{table_path.name} has {len(metadata)}"
        )
    return metadata, embeddings


def embed(
    model_path: str | Path,
    items_dir: str | Path,
    out_dir: str | Path,
    batch_size: int = 512,
    device: str = "auto",
    workers: int = 0,
    shard: int = 0,
    shards: int = 1,
) -> None:
    """Embed the items in ``items_dir`` with the model at ``model_path``; write ``out_dir``.

    The pair builder comes from the experiment config stored with the model, so the
    canonical view is the one the model was trained around. With ``shards > 1`` only shard
    ``shard``'s rows are embedded (``scicontrast.analysis.embed_shards``).
    """
    # Imported here: the array-level functions above must work without the model stack.
    from scicontrast.models.contrastive import load_model
    from scicontrast.registry import PAIR_BUILDERS

    model, experiment = load_model(model_path, map_location="cpu")
    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"{model_path}: pairs")
    source = str(items_dir)
    # The table columns the builder reads; the metadata is read again by row group as the
    # embeddings are written, so neither the table nor the embeddings are held whole.
    whole = load_items(items_dir, builder)
    items = shard_items(whole, shard, shards, source)
    rows = shard_rows(len(whole), shard, shards)
    del whole
    stored, metadata = metadata_parts(items_dir, items.meta.get("payload_columns", []), rows)
    run = EmbeddingRun(model, builder, model_path, batch_size, device, workers)
    write_stream(out_dir, stored, metadata, run.chunks(items, source), len(items))


@dataclass
class EmbeddingRun:
    """A loaded model, its pair builder and the embedding settings, for items from a source."""

    model: ContrastiveModel
    builder: PairBuilder
    model_path: str | Path
    batch_size: int
    device: str
    workers: int

    def embed(self, items: Items, source: str) -> np.ndarray:
        """``[len(items), D]`` embeddings; ``InputDataError`` naming ``source`` when the data
        does not fit the model."""
        device = resolve_device(self.device)
        try:
            return embed_items(
                self.model, self.builder, items, self.batch_size, device, workers=self.workers
            )
        except torch.OutOfMemoryError:
            raise  # the device's memory, not the data: a smaller batch size is the cure
        except RuntimeError as exc:
            raise self._misfit(source, exc) from exc

    def chunks(self, items: Items, source: str) -> Iterator[np.ndarray]:
        """The embeddings of :meth:`embed`, one batch at a time."""
        device = resolve_device(self.device)
        batches = embedding_chunks(
            self.model, self.builder, items, self.batch_size, device, workers=self.workers
        )
        try:
            yield from batches
        except torch.OutOfMemoryError:
            raise  # as in embed
        except RuntimeError as exc:
            raise self._misfit(source, exc) from exc

    def _misfit(self, source: str, exc: RuntimeError) -> InputDataError:
        # Usually a shape mismatch: a graph with other node features than the training one.
        return InputDataError(
            f"{source}: the data does not fit the model {self.model_path} (same adapter "
            f"settings, but other input sizes?): {' '.join(str(exc).split())}"
        )
