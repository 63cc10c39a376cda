"""Leiden on a kNN graph, method choice, and the table comparing clusterings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from scicontrast.analysis.cluster import cluster, cluster_embeddings, knn_graph_edges, leiden
from scicontrast.analysis.embed import write_embeddings
from scicontrast.analysis.summary import format_report


def blobs(n_per: int = 60, centres: int = 4, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim)) * 6
    labels = np.repeat(np.arange(centres), n_per)
    return means[labels] + rng.standard_normal((len(labels), dim)), labels


def unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_knn_graph_is_undirected_simple_and_covers_every_point():
    x, _ = blobs(n_per=20)
    edges = knn_graph_edges(unit(x), neighbors=5)
    assert (edges[:, 0] < edges[:, 1]).all()  # no self loops, each pair once
    assert len(np.unique(edges, axis=0)) == len(edges)
    degree = np.bincount(edges.reshape(-1), minlength=len(x))
    assert degree.min() >= 5  # every point keeps its own 5 neighbours
    assert len(knn_graph_edges(unit(x[:3]), neighbors=15)) == 3  # capped at n - 1


def test_leiden_recovers_blobs_deterministically():
    x, labels = blobs()
    found, facts = leiden(unit(x), neighbors=15, resolution=1.0, seed=0)
    assert adjusted_rand_score(labels, found) > 0.95
    assert facts["modularity"] > 0.5 and facts["neighbors"] == 15
    again, _ = leiden(unit(x), neighbors=15, resolution=1.0, seed=0)
    np.testing.assert_array_equal(found, again)


def test_higher_resolution_gives_more_clusters():
    x, _ = blobs(centres=2, n_per=100)
    coarse, _ = leiden(unit(x), resolution=0.2)
    fine, _ = leiden(unit(x), resolution=5.0)
    assert len(np.unique(fine)) > len(np.unique(coarse))


def test_methods_are_chosen_and_compared(tmp_path):
    x, labels = blobs()
    assignments, metrics = cluster_embeddings(x, labels, methods=["leiden", "kmeans"])
    assert list(assignments.columns) == ["leiden", "kmeans"]
    assert metrics["methods"] == ["leiden", "kmeans"] and "hdbscan" not in metrics
    assert metrics["leiden"]["ari"] > 0.95 and metrics["leiden"]["n_clusters"] == 4
    with pytest.raises(ValueError, match="unknown clustering methods"):
        cluster_embeddings(x, methods=["dbscan"])

    metadata = pd.DataFrame({"item_id": [f"i{i}" for i in range(len(x))], "kind": labels})
    write_embeddings(tmp_path / "emb", metadata, x)
    written = cluster(tmp_path / "emb", tmp_path / "clusters", label_column="kind")
    table = pd.read_csv(tmp_path / "clusters" / "comparison.csv")
    assert table["method"].tolist() == ["kmeans", "hdbscan", "leiden"]
    assert list(table.columns) == [
        "method",
        "n_clusters",
        "silhouette",
        "ari",
        "nmi",
        "noise_fraction",
    ]
    assert table.loc[2, "ari"] == pytest.approx(written["leiden"]["ari"])
    assert np.isnan(table.loc[0, "noise_fraction"]) and table.loc[1, "noise_fraction"] >= 0

    evaluation = {"n_items": len(x), "embedding_dim": x.shape[1]}
    report = format_report(evaluation, written)
    leiden_row = next(line for line in report.splitlines() if line.strip().startswith("leiden"))
    assert f"{written['leiden']['ari']:.3f}" in leiden_row
