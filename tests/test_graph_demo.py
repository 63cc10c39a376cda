"""The embedded graph demo: a stochastic block model whose blocks the embeddings recover."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scicontrast.analysis.cluster import cluster_embeddings
from scicontrast.analysis.embed import embed_items
from scicontrast.cli import main
from scicontrast.config import validate_config
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs.demo import WORD_RATE_IN, WORD_RATE_OUT, generate_demo_graph
from scicontrast.data_adapters.graphs.views import GraphViews
from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import load_model
from scicontrast.models.train import train
from scicontrast.registry import ADAPTERS


def test_block_model_statistics_and_determinism(tmp_path):
    nodes_path, edges_path = generate_demo_graph(
        tmp_path / "a", blocks=3, nodes_per_block=60, p_in=0.2, p_out=0.02, features=30
    )
    nodes, edges = pd.read_csv(nodes_path), pd.read_csv(edges_path)
    assert len(nodes) == 180 and nodes["block"].value_counts().tolist() == [60, 60, 60]
    block = dict(zip(nodes["node_id"], nodes["block"], strict=True))
    same = np.array(
        [block[u] == block[v] for u, v in zip(edges["source"], edges["target"], strict=True)]
    )
    pairs_in, pairs_out = 3 * 60 * 59 / 2, 3 * 60 * 120 / 2
    assert same.sum() / pairs_in == pytest.approx(0.2, abs=0.03)
    assert (~same).sum() / pairs_out == pytest.approx(0.02, abs=0.01)
    words = nodes.filter(regex=r"^w\d+$").to_numpy()
    preferred = words[nodes["block"].eq("block_0").to_numpy()][:, :10].mean()
    assert preferred == pytest.approx(WORD_RATE_IN, abs=0.03)
    assert words[nodes["block"].eq("block_0").to_numpy()][:, 10:].mean() == pytest.approx(
        WORD_RATE_OUT, abs=0.02
    )
    again = generate_demo_graph(
        tmp_path / "b", blocks=3, nodes_per_block=60, p_in=0.2, p_out=0.02, features=30
    )
    assert [p.read_bytes() for p in again] == [nodes_path.read_bytes(), edges_path.read_bytes()]
    with pytest.raises(ConfigError, match="features"):
        generate_demo_graph(tmp_path / "c", blocks=4, features=3)


def test_cli_writes_files_the_graph_table_adapter_reads(tmp_path):
    out = tmp_path / "graph"
    assert main(["-q", "demo-data", "graph", "--out", str(out), "--nodes-per-block", "20"]) == 0
    items = ADAPTERS.create(
        {
            "name": "graph_table",
            "params": {
                "nodes": str(out / "nodes.csv"),
                "edges": str(out / "edges.csv"),
                "label_column": "block",
            },
        }
    ).read()
    assert len(items) == 80 and items.arrays["features"].shape == (80, 64)  # 4 blocks of 20
    assert items.table["block"].nunique() == 4


def test_trained_embeddings_cluster_into_the_blocks(tmp_path):
    nodes, edges = generate_demo_graph(tmp_path / "data", blocks=3, nodes_per_block=40, p_in=0.15)
    params = {"nodes": str(nodes), "edges": str(edges), "label_column": "block"}
    items = ADAPTERS.create({"name": "graph_table", "params": params}).read()
    items.save(tmp_path / "items")
    GraphViews().build(items).to_parquet(tmp_path / "pairs.parquet")
    experiment = {
        "adapter": {"name": "graph_table", "params": params},
        "pairs": {"name": "graph_views"},
        "encoder": {"name": "gcn", "params": {"embedding_dim": 16}},
        "head": {"hidden_dim": 16, "output_dim": 16},
        "loss": {"temperature": 0.5},
        "training": {"epochs": 20, "lr": 0.002, "device": "cpu"},
    }
    experiment = {
        "name": "d",
        **validate_config({"experiments": {"d": experiment}})["experiments"]["d"],
    }
    model_path = train(
        Experiment.from_dict(experiment),
        tmp_path / "items",
        tmp_path / "pairs.parquet",
        tmp_path / "m",
        progress=False,
    )
    model, _ = load_model(model_path)
    embeddings = embed_items(model, GraphViews(), Items.load(tmp_path / "items"), progress=False)
    _, metrics = cluster_embeddings(embeddings, items.table["block"])
    assert metrics["kmeans"]["ari"] > 0.8
