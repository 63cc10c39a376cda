"""Embed new raw files with a trained model, streaming them through disk.

``scicontrast embed --model M FILE... --out OUT`` reads the files with the adapter the
model was trained with (its stored settings, input files replaced, training-only settings
such as label tables dropped: ``Adapter.params_for_new_inputs``):

    FILE... --read_chunks--> scratch items folder --parts of chunk_rows--> part_1..part_P
            --gather--> OUT

The adapter's chunks are written to a scratch items folder beside ``OUT`` as they are read
(:func:`~scicontrast.data_adapters.chunks.write_chunks`; its ``meta`` is known only once the
last chunk is read), which is then embedded ``chunk_rows`` items at a time from its
memory-mapped arrays, each part written as an embeddings folder of its own; the parts are
gathered into one partitioned Parquet table and one ``embeddings.npy``
(:func:`~scicontrast.analysis.embed_shards.gather_shards`, the format of sharded embedding,
read as one table by pandas, pyarrow and every later step). Memory holds one part whatever
the size of the files. Input that fits one part gives an ordinary embeddings folder. Either
way the rows equal those of preparing the files with that adapter and embedding the items
folder, and nothing is left at ``OUT`` or beside it when a file is bad.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

from scicontrast.analysis.embed import EmbeddingRun, item_metadata, write_embeddings
from scicontrast.analysis.embed_shards import gather_shards
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.chunks import CHUNK_ROWS, write_chunks
from scicontrast.data_adapters.shards import shard_items
from scicontrast.experiment import Component, Experiment


def embed_files(
    model_path: str | Path,
    paths: list[str | Path],
    out_dir: str | Path,
    batch_size: int = 512,
    device: str = "auto",
    workers: int = 0,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Read ``paths`` with the model's adapter, embed them chunk by chunk, write ``out_dir``.

    Returns the number of items embedded. Raises ``InputDataError`` naming the file and
    record for bad input, and when the data does not fit the model.
    """
    from scicontrast.models.contrastive import load_model
    from scicontrast.registry import PAIR_BUILDERS

    model, experiment = load_model(model_path, map_location="cpu")
    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"{model_path}: pairs")
    source = ", ".join(map(str, paths))
    chunks = _chunks(experiment, paths, model_path, chunk_rows)
    run = EmbeddingRun(model, builder, model_path, batch_size, device, workers)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Beside out_dir, on the same disk; removed with everything in it, even on an error.
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.parts-", dir=out_dir.parent) as tmp:
        n_items = write_chunks(chunks, Path(tmp) / "items")
        items = Items.load(Path(tmp) / "items")
        # A graph is embedded whole: its encoder passes messages along every edge.
        whole = items.meta.get("modality") == "graph"
        n_parts = 1 if whole else math.ceil(n_items / chunk_rows)
        parts = [Path(tmp) / f"part-{index:05d}" for index in range(n_parts)]
        for index, part in enumerate(parts):
            some = shard_items(items, index, n_parts, source)
            embeddings = run.embed(some, source)
            write_embeddings(
                out_dir if n_parts == 1 else part, item_metadata(some, source), embeddings
            )
        if n_parts > 1:
            gather_shards(parts, out_dir)
    return n_items


def _chunks(
    experiment: Experiment, paths: list[str | Path], model_path: str | Path, chunk_rows: int
) -> Iterator[Items]:
    """The new files' items, in the adapter's chunks."""
    from scicontrast.registry import ADAPTERS

    adapter = experiment.adapter
    params = ADAPTERS.get(adapter.name).params_for_new_inputs(
        adapter.params, [str(p) for p in paths]
    )
    new_inputs = Component(name=adapter.name, params=params)
    return ADAPTERS.create(new_inputs, where=f"{model_path}: adapter").read_chunks(chunk_rows)
