"""Scalable clustering: exact below the threshold, approximate forms that agree above it."""

from __future__ import annotations

import random

import igraph
import leidenalg
import numpy as np
import pytest
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from scicontrast.analysis.cluster import (
    cluster_embeddings,
    distinct_rows,
    igraph_leiden,
    knn_graph_edges,
    leiden,
)
from scicontrast.analysis.cluster_scale import sampled_hdbscan, sampled_leiden, seeded_sample


def blobs(n_per: int, centres: int = 5, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim)) * 6
    labels = np.repeat(np.arange(centres), n_per)
    return means[labels] + rng.standard_normal((len(labels), dim)), labels


def unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_at_the_threshold_every_method_is_the_exact_one():
    """At N == exact_max_items the assignments are those of the exact methods, run here."""
    x, labels = blobs(n_per=40)
    found, metrics = cluster_embeddings(x, labels, seed=3, exact_max_items=len(x))
    assert metrics["exact"] is True
    u = unit(x)
    kmeans = KMeans(n_clusters=5, n_init=10, random_state=3).fit_predict(u)
    np.testing.assert_array_equal(found["kmeans"], kmeans)
    density_space = PCA(5, random_state=3).fit_transform(u)
    hdb = HDBSCAN(min_cluster_size=10, copy=True).fit_predict(density_space)
    np.testing.assert_array_equal(found["hdbscan"], hdb)
    nearest = NearestNeighbors(n_neighbors=16, metric="cosine").fit(u).kneighbors(u)[1]
    sources = np.repeat(np.arange(len(u)), 16)
    keep = sources != nearest.reshape(-1)
    pairs = np.sort(np.stack([sources[keep], nearest.reshape(-1)[keep]], axis=1), axis=1)
    edges = np.unique(pairs, axis=0)
    np.testing.assert_array_equal(knn_graph_edges(u, 15), edges)
    graph = igraph.Graph(n=len(u), edges=edges.tolist())
    partition = leidenalg.find_partition(
        graph, leidenalg.RBConfigurationVertexPartition, resolution_parameter=1.0, seed=3
    )
    np.testing.assert_array_equal(found["leiden"], partition.membership)


def test_beyond_the_threshold_kmeans_and_hdbscan_recover_blobs_deterministically():
    x, labels = blobs(n_per=600)
    methods = ["kmeans", "hdbscan"]
    found, metrics = cluster_embeddings(x, labels, methods=methods, exact_max_items=500)
    assert metrics["exact"] is False and metrics["hdbscan"]["fitted_on"] == 500
    for method in methods:
        assert adjusted_rand_score(labels, found[method]) > 0.9, method
    again, _ = cluster_embeddings(x, labels, methods=methods, exact_max_items=500)
    for method in methods:
        np.testing.assert_array_equal(found[method], again[method])


@pytest.mark.slow  # pynndescent compiles its numba kernels in each process: 20-40 s
def test_approximate_knn_graph_holds_nearly_every_exact_edge_and_leiden_finds_blobs():
    x, labels = blobs(n_per=400, dim=32)
    u = unit(x)
    exact = {tuple(e) for e in knn_graph_edges(u, 10, exact_max_items=len(u))}
    approximate = knn_graph_edges(u, 10, exact_max_items=100)
    assert (approximate[:, 0] < approximate[:, 1]).all()
    assert len(np.unique(approximate, axis=0)) == len(approximate)
    recall = len(exact & {tuple(e) for e in approximate}) / len(exact)
    assert recall > 0.95
    whole_graph = {"methods": ["leiden"], "exact_max_items": 100, "leiden_sample_items": None}
    found, metrics = cluster_embeddings(x, labels, **whole_graph)
    assert metrics["leiden"]["fitted_on"] == len(x)
    assert adjusted_rand_score(labels, found["leiden"]) > 0.9
    again, _ = cluster_embeddings(x, labels, **whole_graph)
    np.testing.assert_array_equal(found["leiden"], again["leiden"])


def test_whole_graph_leiden_gives_copies_of_a_row_its_community_not_a_clique_of_their_own():
    """20 copies of each of 150 rows: with 15 neighbours each copy's are all copies, so a
    graph over every row is 150 cliques; over the distinct rows Leiden finds the 3 blobs."""
    x, labels = blobs(n_per=50, centres=3, dim=8)
    copies = np.tile(np.arange(len(x)), 20)
    whole_graph = {"methods": ["leiden"], "exact_max_items": 1000, "leiden_sample_items": None}
    found, metrics = cluster_embeddings(x[copies], labels[copies], **whole_graph)
    assert metrics["leiden"]["fitted_on"] == len(x)
    assert adjusted_rand_score(labels[copies], found["leiden"]) > 0.95
    assignment = np.asarray(found["leiden"])
    assert (assignment.reshape(20, -1) == assignment[: len(x)]).all()
    distinct, copy_of = distinct_rows(x[copies])
    np.testing.assert_array_equal(distinct, x)
    np.testing.assert_array_equal(copy_of, copies)


def test_sampled_hdbscan_keeps_the_fit_labels_on_the_sample_and_predicts_the_rest():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    labels = np.repeat(np.arange(4), 300)
    x = centres[labels] + rng.standard_normal((len(labels), 2))
    found = sampled_hdbscan(x, min_cluster_size=20, sample_size=400, seed=0)
    assert found.shape == labels.shape
    clustered = found != -1
    assert clustered.mean() > 0.9
    assert adjusted_rand_score(labels[clustered], found[clustered]) > 0.95


@pytest.mark.parametrize("size", [2, 3])
def test_tiny_inputs_beyond_a_tiny_threshold_still_cluster(size):
    x, _ = blobs(n_per=size, centres=2, dim=4)
    found, metrics = cluster_embeddings(x, methods=["kmeans", "hdbscan"], exact_max_items=2)
    assert len(found) == len(x) and metrics["exact"] is (len(x) <= 2)


def test_sampled_leiden_keeps_the_fit_on_the_sample_and_gives_the_rest_their_neighbours_vote():
    """Rows outside the sample get the most common fit label among their 5 nearest sampled
    rows (ties: the smallest), as a brute-force search over the sample finds them."""
    rng = np.random.default_rng(2)
    u = unit(rng.standard_normal((700, 8)))
    sample = seeded_sample(len(u), 200, seed=4)
    fit_labels = np.arange(len(sample)) % 3

    def fit(rows: np.ndarray):
        np.testing.assert_array_equal(rows, u[sample])
        return fit_labels, {"fitted_on": len(rows)}

    found, facts = sampled_leiden(u, fit, neighbors=5, sample_size=200, seed=4)
    assert facts == {"fitted_on": 200}
    nearest = np.argsort(((u[:, None, :] - u[sample][None]) ** 2).sum(-1), axis=1)[:, :5]
    votes = np.stack([np.bincount(row, minlength=3) for row in fit_labels[nearest]])
    expected = votes.argmax(axis=1)
    expected[sample] = fit_labels
    np.testing.assert_array_equal(found, expected)


def test_beyond_the_threshold_leiden_of_a_sample_recovers_blobs_deterministically():
    """The sample's communities are the exact Leiden of the sample's own kNN graph."""
    x, labels = blobs(n_per=300)
    options = {"methods": ["leiden"], "exact_max_items": 500, "leiden_sample_items": 400}
    found, metrics = cluster_embeddings(x, labels, seed=1, **options)
    assert metrics["exact"] is False and metrics["leiden"]["fitted_on"] == 400
    assert adjusted_rand_score(labels, found["leiden"]) > 0.99
    sample = seeded_sample(len(x), 400, seed=1)
    exact_on_sample, _ = leiden(unit(x)[sample], seed=1, exact_max_items=400)
    np.testing.assert_array_equal(found["leiden"][sample], exact_on_sample)
    again, _ = cluster_embeddings(x, labels, seed=1, **options)
    np.testing.assert_array_equal(found["leiden"], again["leiden"])


def test_igraph_leiden_is_seeded_finds_blobs_and_leaves_the_random_module_alone():
    x, labels = blobs(n_per=100)
    graph = igraph.Graph(n=len(x))
    graph.add_edges(knn_graph_edges(unit(x), 10))
    random.seed(5)
    expected = random.random()
    random.seed(5)
    found = igraph_leiden(graph, resolution=1.0, seed=2)
    assert random.random() == expected
    assert adjusted_rand_score(labels, found) > 0.99
    assert igraph_leiden(graph, resolution=1.0, seed=2) == found
    assert len(set(igraph_leiden(graph, resolution=5.0, seed=2))) > len(set(found))
