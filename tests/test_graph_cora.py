"""Cora from ../shared/data: the Planetoid adapter against PyG, and a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from torch_geometric.io.planetoid import read_planetoid_data

from scicontrast.analysis.graph_eval import public_split_probe
from scicontrast.config import validate_config
from scicontrast.data_adapters.graphs.cleaning import EDGE_INDEX, FEATURES
from scicontrast.data_adapters.graphs.views import GraphViews, graph_data
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import load_model
from scicontrast.models.train import train
from scicontrast.registry import ADAPTERS

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def cora_root():
    root = SHARED_DATA / "cora"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    return root


@pytest.fixture(scope="module")
def cora(cora_root):
    return ADAPTERS.create({"name": "planetoid", "params": {"root": str(cora_root)}}).read()


def test_cora_matches_pyg_and_the_published_statistics(cora, cora_root):
    reference = read_planetoid_data(str(cora_root), "cora")
    assert len(cora) == 2708 and cora.arrays[FEATURES].shape == (2708, 1433)
    assert cora.meta["num_edges"] == 10556  # 5,278 undirected edges
    assert cora.table["label"].nunique() == 7 and cora.table["label"].notna().all()
    assert [int(cora.table[m].sum()) for m in ("train_mask", "val_mask", "test_mask")] == [
        140,
        500,
        1000,
    ]
    np.testing.assert_array_equal(cora.arrays[FEATURES], reference.x.numpy())
    np.testing.assert_array_equal(cora.table["label"].to_numpy(dtype=int), reference.y.numpy())
    ours = {tuple(edge) for edge in cora.extras[EDGE_INDEX].T.tolist()}
    assert ours == {tuple(edge) for edge in reference.edge_index.T.tolist()}


@pytest.mark.slow
def test_short_training_beats_raw_features_on_the_public_split(cora, tmp_path):
    items_dir, pairs_path = tmp_path / "items", tmp_path / "pairs.parquet"
    cora.save(items_dir)
    GraphViews().build(cora).to_parquet(pairs_path)
    experiment = {
        "adapter": {"name": "planetoid", "params": {"root": "unused"}},
        "pairs": {"name": "graph_views"},
        "encoder": {"name": "gcn", "params": {"embedding_dim": 64}},
        "head": {"hidden_dim": 64, "output_dim": 64},
        "loss": {"temperature": 0.4},
        "training": {"epochs": 15, "lr": 0.001, "device": "cpu"},
    }
    experiment = {
        "name": "c",
        **validate_config({"experiments": {"c": experiment}})["experiments"]["c"],
    }
    model, _ = load_model(
        train(
            Experiment.from_dict(experiment),
            items_dir,
            pairs_path,
            tmp_path / "model",
            progress=False,
        )
    )
    with torch.no_grad():
        embeddings = model.embed(graph_data(cora)).numpy()
    learned = public_split_probe(embeddings, cora.table, "label")["accuracy"]
    raw = public_split_probe(cora.arrays[FEATURES], cora.table, "label")["accuracy"]
    assert learned > raw + 0.1, (learned, raw)
