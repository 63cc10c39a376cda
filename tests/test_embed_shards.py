"""Sharded embedding: shards and their gather equal one embedding job; bad shards fail clean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

# The stand-in model fixture of the embedding tests, shared by import.
from test_analysis import make_items, stand_in_model_stack  # noqa: F401

from scicontrast.analysis.embed import embed, load_embeddings
from scicontrast.analysis.embed_shards import gather_shards
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.shards import shard_items, shard_rows
from scicontrast.errors import ConfigError, InputDataError


@pytest.mark.parametrize(("n_items", "shards"), [(10, 3), (7, 7), (5, 8), (1000, 16)])
def test_shards_cover_every_row_once_in_order_with_sizes_within_one(n_items, shards):
    parts = [shard_rows(n_items, k, shards) for k in range(shards)]
    assert [row for part in parts for row in part] == list(range(n_items))
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.usefixtures("stand_in_model_stack")
def test_gathered_shards_equal_one_embedding_job(tmp_path):
    items = make_items(n=23)
    # A column that is all missing in one shard: its type must unify across the parts.
    items.table["note"] = [None] * 8 + ["x"] * 15
    items.save(tmp_path / "items")
    embed("model.pt", tmp_path / "items", tmp_path / "whole")
    shard_dirs = [tmp_path / "shards" / str(k) for k in range(3)]
    for k, folder in enumerate(shard_dirs):
        embed("model.pt", tmp_path / "items", folder, shard=k, shards=3)
    assert gather_shards(shard_dirs, tmp_path / "gathered") == 23

    whole_meta, whole = load_embeddings(tmp_path / "whole")
    meta, gathered = load_embeddings(tmp_path / "gathered")
    np.testing.assert_array_equal(gathered, whole)
    pd.testing.assert_frame_equal(meta, whole_meta)
    table = tmp_path / "gathered" / "embeddings.parquet"
    assert sorted(p.name for p in table.iterdir()) == [f"part-0000{k}.parquet" for k in range(3)]
    frame = pd.read_parquet(table)
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_numpy()), whole)
    assert pq.read_table(table).column("item_id").to_pylist() == items.table["item_id"].tolist()


@pytest.mark.usefixtures("stand_in_model_stack")
def test_gathered_embeddings_export_to_anndata_as_one_table(tmp_path):
    from scicontrast.analysis.export import EMBEDDING_KEY, to_anndata

    items = make_items(n=12)
    items.save(tmp_path / "items")
    shard_dirs = [tmp_path / "shards" / str(k) for k in range(2)]
    for k, folder in enumerate(shard_dirs):
        embed("model.pt", tmp_path / "items", folder, shard=k, shards=2)
    gather_shards(shard_dirs, tmp_path / "gathered")
    adata = to_anndata(*load_embeddings(tmp_path / "gathered"))
    assert adata.shape == (12, 0) and adata.obsm[EMBEDDING_KEY].shape == (12, 8)
    assert list(adata.obs_names) == items.table["item_id"].tolist()


@pytest.mark.usefixtures("stand_in_model_stack")
def test_a_missing_shard_is_named_and_nothing_is_written(tmp_path):
    items = make_items(n=9)
    items.save(tmp_path / "items")
    shard_dirs = [tmp_path / "shards" / str(k) for k in range(3)]
    for k in (0, 2):
        embed("model.pt", tmp_path / "items", shard_dirs[k], shard=k, shards=3)
    with pytest.raises(InputDataError, match=r"shard 1 of 3 .*shards/1\) is missing"):
        gather_shards(shard_dirs, tmp_path / "out" / "embeddings")
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("stand_in_model_stack")
def test_a_truncated_shard_array_is_named(tmp_path):
    items = make_items(n=9)
    items.save(tmp_path / "items")
    shard_dirs = [tmp_path / "shards" / str(k) for k in range(2)]
    for k, folder in enumerate(shard_dirs):
        embed("model.pt", tmp_path / "items", folder, shard=k, shards=2)
    array = shard_dirs[1] / "embeddings.npy"
    array.write_bytes(array.read_bytes()[:-10])
    with pytest.raises(InputDataError, match=r"shard 1 of 2 .* unreadable"):
        gather_shards(shard_dirs, tmp_path / "embeddings")
    assert not (tmp_path / "embeddings").exists()


def test_a_graph_cannot_be_sharded():
    items = Items(table=pd.DataFrame({"item_id": range(4)}), meta={"modality": "graph"})
    assert shard_items(items, 0, 1, "g") is items
    with pytest.raises(ConfigError, match="embed_shards to 1"):
        shard_items(items, 0, 2, "g")


def test_the_workflow_plans_one_job_per_shard_and_a_gather(tmp_path):
    from test_workflow import run_snakemake, tiny_config

    config = tiny_config(tmp_path)
    config["experiments"]["tiny"]["analysis"]["embed_shards"] = 3
    result = run_snakemake(tmp_path, config, "-n", "-p", "results/tiny/embeddings")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for k in range(3):
        assert f"--shard {k}/3 --out results/tiny/embedding_shards/{k}" in output
    shards = " ".join(f"results/tiny/embedding_shards/{k}" for k in range(3))
    assert f"scicontrast gather-embeddings {shards} --out results/tiny/embeddings" in output
