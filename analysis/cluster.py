"""Cluster embeddings with k-means, HDBSCAN and Leiden, and score and compare the clusterings.

Every method runs on centred, L2-normalised embeddings: there ``||a - b||^2 = 2 - 2 cos(a,
b)``, so Euclidean k-means and HDBSCAN group by cosine similarity, the similarity the
contrastive loss trains. Centring first removes the offset that encoder outputs often share
(random items at cosine 0.98 are common), which otherwise crowds every point into one cap.

* **k-means** (Lloyd, ``n_init=10``): ``k`` is ``kmeans_clusters``, else the number of
  distinct known labels, else 8.
* **HDBSCAN** (Campello et al. 2013, scikit-learn's implementation) finds the number of
  clusters itself and may call points noise (cluster ``-1``). Density estimates degrade in
  many dimensions, so it runs on the first ``hdbscan_pca_components`` principal components
  (default 5; ``None`` keeps every dimension), as topic-modelling pipelines reduce to about
  5 dimensions before HDBSCAN.
* **Leiden** (Traag et al. 2019, ``leidenalg`` on ``igraph``) partitions the symmetrised,
  unweighted ``leiden_neighbors``-nearest-neighbour graph (cosine), maximising the
  Reichardt-Bornholdt modularity with resolution ``leiden_resolution`` (1 is ordinary
  modularity; larger values give more, smaller clusters), as single-cell pipelines cluster
  a kNN graph of their embedding. Seeded, so it is deterministic.

Beyond ``exact_max_items`` items (config ``analysis.cluster_exact_max_items``) each method
switches to its scalable form in ``scicontrast.analysis.cluster_scale``: mini-batch k-means,
HDBSCAN fitted on a sample of ``exact_max_items`` points with ``approximate_predict`` for the
rest, and Leiden of a sample of ``leiden_sample_items`` points (config
``analysis.leiden_sample_items``; the exact Leiden above on their own kNN graph), every other
point in the community most of its ``leiden_neighbors`` nearest sampled points are in; or, with
``leiden_sample_items=None``, igraph's own Leiden of the whole approximate (NN-descent) kNN
graph, about six times the memory. At or below the threshold nothing changes.
The ``cluster`` step reads its folder as ``scicontrast.analysis.cluster_input`` describes
(the unit vectors in a float32 file, read a batch of rows at a time), so beyond the threshold
memory holds one integer per item and method, not the ``[N, D]`` embeddings: 398 MiB for
all three methods on 10^6 x 64 (docs/experiments/cluster_memory.md).

``methods`` chooses which run (config ``analysis.cluster_methods``). Metrics, per method:

``n_clusters``
    Clusters found (HDBSCAN: noise not counted).
``silhouette``
    Mean silhouette coefficient with cosine distance, in ``[-1, 1]``; ``None`` with fewer
    than 2 clusters. Computed on a seeded subsample of at most 5000 points. For HDBSCAN,
    over the clustered points only: noise has no cluster to be compact in.
``ari``, ``nmi``
    Adjusted Rand index and normalised mutual information against known labels, over the
    items whose label is present (``n_missing_labels`` counts the others). HDBSCAN noise
    counts as one more cluster, so calling points noise costs agreement instead of being
    left out of the score.
``noise_fraction``
    HDBSCAN only: the fraction of points labelled noise.

Output folder (written atomically): ``assignments.parquet`` with ``item_id``, one integer
column per method (and the label column when one is given), ``metrics.json`` (the metrics
above per method, and ``methods``: the methods in order), and ``comparison.csv``: one row per
method with ``n_clusters``, ``silhouette``, ``ari``, ``nmi``, ``noise_fraction``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from scicontrast.analysis.cluster_input import (
    MISSING,
    DiskRows,
    check_label_column,
    label_codes,
    open_embeddings,
    row_batches,
    unit_vectors,
    unit_vectors_on_disk,
    write_assignments,
)
from scicontrast.analysis.cluster_scale import (
    approximate_neighbors,
    minibatch_kmeans,
    sampled_hdbscan,
    sampled_leiden,
)
from scicontrast.errors import InputDataError
from scicontrast.io import atomic_path

SILHOUETTE_MAX_POINTS = 5000
# scikit-learn computes pairwise distances in blocks of its working_memory (default 1 GiB):
# the silhouette's 5000 x 5000 at once (260 MiB more than in 16 MiB blocks), and the exact
# kNN graph of 10^4 points 1.4 GiB. The same distances (tested), in blocks of 16 MiB.
DISTANCE_BLOCK_MIB = 16
DEFAULT_KMEANS_CLUSTERS = 8
NOISE = -1
METHODS = ("kmeans", "hdbscan", "leiden")
COMPARISON_COLUMNS = ("method", "n_clusters", "silhouette", "ari", "nmi", "noise_fraction")
EXACT_MAX_ITEMS = 50_000
LEIDEN_SAMPLE_ITEMS = 50_000


class ClusterSettings(TypedDict, total=False):
    """The settings :func:`cluster_embeddings` and :func:`cluster` pass on to
    :func:`cluster_unit`, whose signature holds their defaults and meanings."""

    kmeans_clusters: int | None
    hdbscan_min_cluster_size: int
    hdbscan_pca_components: int | None
    seed: int
    methods: Sequence[str]
    leiden_resolution: float
    leiden_neighbors: int
    exact_max_items: int
    leiden_sample_items: int | None


def cluster_embeddings(
    embeddings: np.ndarray,
    labels: pd.Series | np.ndarray | None = None,
    **settings: Unpack[ClusterSettings],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Cluster ``[N, D]`` embeddings held in memory; return per-item assignments and metrics.

    Args:
        embeddings: ``[N, D]``, ``N >= 2``.
        labels: ``[N]`` known labels (any hashable values; missing ones are ``NaN``/``None``).
        settings: :class:`ClusterSettings`, as :func:`cluster_unit` takes them.

    Returns:
        ``(assignments, metrics)``: assignments has one integer column per method
        (``-1`` = HDBSCAN noise) in input order; metrics as in the module docstring.
    """
    codes = None
    if labels is not None:
        codes = pd.factorize(pd.Series(np.asarray(labels, dtype=object)))[0].astype(np.int64)
        if len(codes) != len(embeddings):
            raise ValueError(f"{len(codes)} labels for {len(embeddings)} embeddings")
    found, metrics = cluster_unit(unit_vectors(embeddings), codes, **settings)
    return pd.DataFrame(found), metrics


def cluster_unit(
    unit: np.ndarray | DiskRows,
    codes: np.ndarray | None = None,
    kmeans_clusters: int | None = None,
    hdbscan_min_cluster_size: int = 10,
    hdbscan_pca_components: int | None = 5,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    leiden_resolution: float = 1.0,
    leiden_neighbors: int = 15,
    exact_max_items: int = EXACT_MAX_ITEMS,
    leiden_sample_items: int | None = LEIDEN_SAMPLE_ITEMS,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Cluster centred unit vectors ``unit [N, D]`` (in memory, or beyond ``exact_max_items``
    possibly :class:`DiskRows` of a file: the scalable methods read it in batches).

    Args:
        unit: ``[N, D]``, ``N >= 2``, from :func:`~scicontrast.analysis.cluster_input.unit_vectors`.
        codes: ``[N]`` integer code of each item's known label, ``-1`` where it is missing.
        kmeans_clusters: ``k`` for k-means (capped at ``N``); ``None``: the number of codes.
        hdbscan_min_cluster_size: HDBSCAN's smallest cluster (capped at ``N``).
        hdbscan_pca_components: principal components HDBSCAN runs on; ``None``: all.
        seed: seeds k-means, Leiden, the samples and the silhouette subsample.
        methods: which of ``kmeans``, ``hdbscan``, ``leiden`` to run, in this order.
        leiden_resolution: Leiden's resolution parameter.
        leiden_neighbors: neighbours per point in Leiden's kNN graph (capped at ``N - 1``).
        exact_max_items: beyond this many items, the scalable methods run (module docstring).
        leiden_sample_items: beyond ``exact_max_items``, Leiden's sample (:func:`leiden`);
            ``None``: the whole approximate kNN graph.

    Returns:
        ``(found, metrics)``: ``found[method]`` is the ``[N]`` assignment (``-1`` = HDBSCAN
        noise), ``metrics`` as in the module docstring.
    """
    n_items = len(unit)
    _check_request(n_items, methods)
    if kmeans_clusters is None and codes is not None:
        kmeans_clusters = len(np.unique(codes[codes != MISSING])) or None
    exact = n_items <= exact_max_items
    metrics: dict[str, Any] = {"n_items": n_items, "methods": list(methods), "exact": exact}
    found: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "kmeans":
            k = min(kmeans_clusters or DEFAULT_KMEANS_CLUSTERS, n_items)
            found[method], metrics[method] = _kmeans(unit, k, seed, exact_max_items), {}
        elif method == "hdbscan":
            found[method], metrics[method] = _hdbscan(
                unit, hdbscan_min_cluster_size, hdbscan_pca_components, seed, exact_max_items
            )
        else:
            graph = (leiden_neighbors, leiden_resolution, seed, exact_max_items)
            found[method], metrics[method] = leiden(unit, *graph, leiden_sample_items)
        clustered = found[method] != NOISE
        metrics[method]["n_clusters"] = len(np.unique(found[method][clustered]))
        metrics[method]["silhouette"] = _silhouette(unit, found[method], seed)
    if codes is not None:
        _score_against_labels(metrics, found, codes)
    return found, metrics


def _check_request(n_items: int, methods: Sequence[str]) -> None:
    """``ValueError`` unless there are at least 2 items and ``methods`` are known ones."""
    if n_items < 2:
        raise ValueError(f"clustering needs at least 2 embeddings, got {n_items}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown clustering methods {unknown}; known: {list(METHODS)}")


def _score_against_labels(
    metrics: dict[str, Any], found: dict[str, np.ndarray], codes: np.ndarray
) -> None:
    """Add ``n_labelled``, ``n_missing_labels`` and each method's ``ari`` and ``nmi``."""
    known = np.flatnonzero(codes != MISSING)
    metrics["n_labelled"] = len(known)
    metrics["n_missing_labels"] = len(codes) - len(known)
    truth = codes[known]
    for method, assignment in found.items():
        predicted = assignment[known]
        metrics[method]["ari"] = _score(adjusted_rand_score, truth, predicted)
        metrics[method]["nmi"] = _score(normalized_mutual_info_score, truth, predicted)


def _kmeans(unit: np.ndarray | DiskRows, k: int, seed: int, exact_max_items: int) -> np.ndarray:
    if len(unit) <= exact_max_items:
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(unit)
    return minibatch_kmeans(unit, k, seed, exact_max_items)


def _hdbscan(
    unit: np.ndarray | DiskRows,
    min_cluster_size: int,
    pca_components: int | None,
    seed: int,
    exact_max_items: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    min_cluster_size = max(2, min(min_cluster_size, len(unit)))
    if pca_components is not None and pca_components >= min(unit.shape):
        pca_components = None
    if len(unit) <= exact_max_items:
        density_space = unit
        if pca_components is not None:
            density_space = PCA(pca_components, random_state=seed).fit_transform(unit)
        found = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(density_space)
    else:
        found = sampled_hdbscan(unit, min_cluster_size, exact_max_items, seed, pca_components)
    return found, {
        "min_cluster_size": min_cluster_size,
        "pca_components": pca_components or unit.shape[1],
        "fitted_on": min(len(unit), exact_max_items),
        "noise_fraction": float((found == NOISE).mean()),
    }


def knn_graph_edges(
    unit: np.ndarray | DiskRows,
    neighbors: int,
    exact_max_items: int = EXACT_MAX_ITEMS,
    seed: int = 0,
) -> np.ndarray:
    """Undirected edges ``[E, 2]`` (``i < j``, sorted) of the symmetrised cosine kNN graph.

    ``i`` and ``j`` are joined when either is among the other's ``neighbors`` nearest
    points (the point itself excluded; ``neighbors`` capped at ``N - 1``). Beyond
    ``exact_max_items`` points the neighbours are NN-descent's approximate ones.
    """
    n_items = len(unit)
    neighbors = max(1, min(neighbors, n_items - 1))
    if n_items <= exact_max_items:
        index = NearestNeighbors(n_neighbors=neighbors + 1, metric="cosine").fit(unit)
        with config_context(working_memory=DISTANCE_BLOCK_MIB):
            nearest = index.kneighbors(unit, return_distance=False)
    else:
        nearest = approximate_neighbors(unit, neighbors, seed)
    # One int64 key per pair, i * N + j, dedups millions of edges far faster than unique
    # rows, in the same (lexicographic) order; made a batch of rows at a time and sorted in
    # place, so that the [N, neighbors] temporaries of one expression are not all held at once.
    keys = np.empty(nearest.size, dtype=np.int64)
    filled = 0
    for rows in row_batches(n_items):
        targets = nearest[rows].astype(np.int64)
        sources = np.broadcast_to(np.arange(rows.start, rows.stop)[:, None], targets.shape)
        keep = sources != targets
        low = np.minimum(sources[keep], targets[keep])
        high = np.maximum(sources[keep], targets[keep])
        keys[filled : filled + len(low)] = low * n_items + high
        filled += len(low)
    keys = keys[:filled]
    keys.sort()
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    edges = np.empty((len(keys), 2), dtype=np.int64)
    np.floor_divide(keys, n_items, out=edges[:, 0])
    np.remainder(keys, n_items, out=edges[:, 1])
    return edges


def leiden(
    unit: np.ndarray | DiskRows,
    neighbors: int = 15,
    resolution: float = 1.0,
    seed: int = 0,
    exact_max_items: int = EXACT_MAX_ITEMS,
    sample_items: int | None = LEIDEN_SAMPLE_ITEMS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Leiden communities of the kNN graph of ``unit`` (see module docstring).

    Beyond ``exact_max_items`` rows, with ``sample_items``, the exact Leiden of a seeded
    sample of that many rows, the rest voted by their nearest sampled rows
    (:func:`~scicontrast.analysis.cluster_scale.sampled_leiden`); with ``None``, igraph's
    Leiden (:func:`igraph_leiden`) of the whole approximate (NN-descent) kNN graph of the
    distinct rows (:func:`distinct_rows`), each copy in its row's community.

    Returns ``(assignment [N], facts)`` with ``facts``: ``neighbors``, ``resolution``,
    ``fitted_on`` (the rows of the graph), ``graph_edges`` and ``modularity`` (Newman's, of
    the partition found, on that graph).
    """
    if len(unit) > exact_max_items and sample_items is not None:
        return sampled_leiden(
            unit,
            lambda rows: leiden(rows, neighbors, resolution, seed, exact_max_items=len(rows)),
            neighbors,
            sample_items,
            seed,
        )
    import igraph

    copy_of = None
    if len(unit) > exact_max_items:
        unit, copy_of = distinct_rows(unit)
    edges = knn_graph_edges(unit, neighbors, exact_max_items, seed)
    # The same graph as Graph(n, edges), whose constructor peaked 3x higher (2 * 10^6 int64
    # edges: +306 MiB against add_edges' +100 MiB, of which the graph itself is 64 MB).
    graph = igraph.Graph(n=len(unit))
    graph.add_edges(edges)
    del edges
    if len(unit) <= exact_max_items:
        import leidenalg

        membership = leidenalg.find_partition(
            graph,
            leidenalg.RBConfigurationVertexPartition,
            resolution_parameter=resolution,
            seed=seed,
        ).membership
    else:
        membership = igraph_leiden(graph, resolution, seed)
    found = np.asarray(membership, dtype=np.int64)
    return found if copy_of is None else found[copy_of], {
        "neighbors": max(1, min(neighbors, len(unit) - 1)),
        "resolution": resolution,
        "fitted_on": len(unit),
        "graph_edges": graph.ecount(),
        "modularity": float(graph.modularity(membership)),
    }


def distinct_rows(unit: np.ndarray | DiskRows) -> tuple[np.ndarray, np.ndarray | None]:
    """The distinct rows ``[M, D]`` of ``unit`` in the order they first appear, and each row's
    index among them ``[N]`` (``None`` where every row is distinct).

    Where more than ``neighbors`` rows are one vector (repeated reads, copied images), every
    neighbour of each copy is another copy, and the whole kNN graph falls apart into cliques,
    one community each (10^5 images ten times over: 11,780 communities,
    docs/experiments/cluster_fidelity.md); each copy takes its distinct row's community.
    """
    rows = np.asarray(unit)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    if len(first) == len(rows):
        return rows, None
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rows[first[order]], rank[inverse.ravel()]


def igraph_leiden(graph: Any, resolution: float, seed: int) -> list[int]:
    """Seeded Leiden communities (``[N]``) of an ``igraph.Graph`` by igraph's own C Leiden.

    The objective is leidenalg's ``RBConfigurationVertexPartition``'s, ``sum_ij (A_ij - gamma
    k_i k_j / 2m) [c_i = c_j]`` up to the factor ``1 / 2m``, with leidenalg's default of two
    iterations; no leidenalg copy of the graph (at 10^6 points, 40 against 300 CPU s and +0.7
    against +1.3 GiB). A different implementation, so it runs beyond the threshold only.
    python-igraph draws from a Python generator: a seeded one, the module's restored after.
    """
    import random

    import igraph

    igraph.set_random_number_generator(random.Random(seed))
    try:
        return graph.community_leiden(
            objective_function="modularity", resolution=resolution, n_iterations=2
        ).membership
    finally:
        igraph.set_random_number_generator(random)


def comparison_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per method of ``cluster_embeddings``'s metrics: ``COMPARISON_COLUMNS``."""
    rows = [
        {"method": method, **{c: metrics[method].get(c) for c in COMPARISON_COLUMNS[1:]}}
        for method in metrics["methods"]
    ]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _silhouette(unit: np.ndarray | DiskRows, assignment: np.ndarray, seed: int) -> float | None:
    """Cosine silhouette of the clustered (not noise) rows, or ``None`` where it is undefined
    (needs 2 <= clusters < points among the rows scored).

    Beyond ``SILHOUETTE_MAX_POINTS`` clustered rows, on the seeded subsample that
    ``silhouette_score(sample_size=...)`` draws (the same rows, so the same value); only those
    rows are read from ``unit``, and the distances are computed in blocks of
    ``DISTANCE_BLOCK_MIB`` (the same values as in one block). The clusters are counted in the
    subsample: one that holds nearly every point can be all it draws (HDBSCAN on real reads,
    docs/experiments/cluster_fidelity.md), where scikit-learn raises.
    """
    rows = np.flatnonzero(assignment != NOISE)
    if len(rows) > SILHOUETTE_MAX_POINTS:
        drawn = np.random.RandomState(seed).permutation(len(rows))[:SILHOUETTE_MAX_POINTS]
        rows = rows[drawn]
    n_clusters = len(np.unique(assignment[rows]))
    if not 2 <= n_clusters < len(rows):
        return None
    with config_context(working_memory=DISTANCE_BLOCK_MIB):
        return float(silhouette_score(unit[rows], assignment[rows], metric="cosine"))


def _score(metric, truth: np.ndarray, predicted: np.ndarray) -> float | None:
    return float(metric(truth, predicted)) if len(truth) else None


def cluster(
    embeddings_dir: str | Path,
    out_dir: str | Path,
    label_column: str | None = None,
    **settings: Unpack[ClusterSettings],
) -> dict[str, Any]:
    """Cluster the embeddings in ``embeddings_dir``; write ``out_dir``; return the metrics.

    The folder is read as :mod:`scicontrast.analysis.cluster_input` describes: beyond
    ``exact_max_items`` items the unit vectors are a file in the output's temporary folder,
    read a batch of rows at a time, and memory holds ``O(N)`` integers, not ``[N, D]`` floats.
    """
    embeddings, table_path = open_embeddings(embeddings_dir)
    n_items = len(embeddings)
    if n_items < 2:
        raise InputDataError(f"{table_path}: clustering needs at least 2 items, got {n_items}")
    codes = None
    if label_column is not None:
        check_label_column(table_path, label_column)
        codes = label_codes(table_path, label_column)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        unit: np.ndarray | DiskRows
        if n_items <= settings.get("exact_max_items", EXACT_MAX_ITEMS):
            unit = unit_vectors(np.array(embeddings))
        else:
            unit = unit_vectors_on_disk(embeddings, tmp.parent / "unit_vectors.npy")
        found, metrics = cluster_unit(unit, codes, **settings)
        metrics["label_column"] = label_column
        write_assignments(tmp / "assignments.parquet", table_path, found, label_column)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        comparison_table(metrics).to_csv(tmp / "comparison.csv", index=False)
    return metrics
