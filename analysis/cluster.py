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
rest, and Leiden on an approximate (NN-descent) kNN graph. At or below it nothing changes.

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
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from scicontrast.analysis.cluster_scale import (
    approximate_neighbors,
    minibatch_kmeans,
    sampled_hdbscan,
)
from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.io import atomic_path

SILHOUETTE_MAX_POINTS = 5000
DEFAULT_KMEANS_CLUSTERS = 8
NOISE = -1
METHODS = ("kmeans", "hdbscan", "leiden")
COMPARISON_COLUMNS = ("method", "n_clusters", "silhouette", "ari", "nmi", "noise_fraction")
EXACT_MAX_ITEMS = 50_000


def cluster_embeddings(
    embeddings: np.ndarray,
    labels: pd.Series | np.ndarray | None = None,
    kmeans_clusters: int | None = None,
    hdbscan_min_cluster_size: int = 10,
    hdbscan_pca_components: int | None = 5,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    leiden_resolution: float = 1.0,
    leiden_neighbors: int = 15,
    exact_max_items: int = EXACT_MAX_ITEMS,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Cluster ``[N, D]`` embeddings; return per-item assignments and metrics.

    Args:
        embeddings: ``[N, D]``, ``N >= 2``.
        labels: ``[N]`` known labels (any hashable values; missing ones are ``NaN``/``None``).
        kmeans_clusters: ``k`` for k-means (capped at ``N``).
        hdbscan_min_cluster_size: HDBSCAN's smallest cluster (capped at ``N``).
        hdbscan_pca_components: principal components HDBSCAN runs on; ``None``: all.
        seed: seeds k-means, Leiden and the silhouette subsample.
        methods: which of ``kmeans``, ``hdbscan``, ``leiden`` to run, in this order.
        leiden_resolution: Leiden's resolution parameter.
        leiden_neighbors: neighbours per point in Leiden's kNN graph (capped at ``N - 1``).
        exact_max_items: beyond this many items, the scalable methods run (module docstring).

    Returns:
        ``(assignments, metrics)``: assignments has one integer column per method
        (``-1`` = HDBSCAN noise) in input order; metrics as in the module docstring.
    """
    n_items = len(embeddings)
    if n_items < 2:
        raise ValueError(f"clustering needs at least 2 embeddings, got {n_items}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown clustering methods {unknown}; known: {list(METHODS)}")
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = centred / np.maximum(norms, np.finfo(np.float32).tiny)

    known: pd.Series | None = None
    if labels is not None:
        label_series = pd.Series(np.asarray(labels, dtype=object))
        if len(label_series) != n_items:
            raise ValueError(f"{len(label_series)} labels for {n_items} embeddings")
        known = label_series[label_series.notna()]

    if kmeans_clusters is None:
        kmeans_clusters = known.nunique() if known is not None and len(known) else None
    assignments = pd.DataFrame(index=range(n_items))
    exact = n_items <= exact_max_items
    metrics: dict[str, Any] = {"n_items": n_items, "methods": list(methods), "exact": exact}
    for method in methods:
        if method == "kmeans":
            k = min(kmeans_clusters or DEFAULT_KMEANS_CLUSTERS, n_items)
            if exact:
                found = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(unit)
            else:
                found = minibatch_kmeans(unit, k, seed)
            metrics[method] = {}
        elif method == "hdbscan":
            found, metrics[method] = _hdbscan(
                unit, hdbscan_min_cluster_size, hdbscan_pca_components, seed, exact_max_items
            )
        else:
            found, metrics[method] = leiden(
                unit, leiden_neighbors, leiden_resolution, seed, exact_max_items
            )
        clustered = found != NOISE
        metrics[method]["n_clusters"] = len(np.unique(found[clustered]))
        # Noise has no cluster to be compact in, so the silhouette skips it.
        metrics[method]["silhouette"] = _silhouette(unit[clustered], found[clustered], seed)
        assignments[method] = found
    if known is not None:
        metrics["n_labelled"] = len(known)
        metrics["n_missing_labels"] = n_items - len(known)
        codes = pd.factorize(known)[0]
        for method in methods:
            predicted = assignments[method].to_numpy()[known.index.to_numpy()]
            metrics[method]["ari"] = _score(adjusted_rand_score, codes, predicted)
            metrics[method]["nmi"] = _score(normalized_mutual_info_score, codes, predicted)
    return assignments, metrics


def _hdbscan(
    unit: np.ndarray,
    min_cluster_size: int,
    pca_components: int | None,
    seed: int,
    exact_max_items: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    min_cluster_size = max(2, min(min_cluster_size, len(unit)))
    density_space = unit
    if pca_components is not None and pca_components < min(unit.shape):
        density_space = PCA(pca_components, random_state=seed).fit_transform(unit)
    if len(unit) <= exact_max_items:
        found = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(density_space)
    else:
        found = sampled_hdbscan(density_space, min_cluster_size, exact_max_items, seed)
    return found, {
        "min_cluster_size": min_cluster_size,
        "pca_components": density_space.shape[1],
        "fitted_on": min(len(unit), exact_max_items),
        "noise_fraction": float((found == NOISE).mean()),
    }


def knn_graph_edges(
    unit: np.ndarray, neighbors: int, exact_max_items: int = EXACT_MAX_ITEMS, seed: int = 0
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
        nearest = index.kneighbors(unit, return_distance=False)
    else:
        nearest = approximate_neighbors(unit, neighbors, seed)
    sources = np.repeat(np.arange(n_items, dtype=np.int64), nearest.shape[1])
    targets = nearest.reshape(-1).astype(np.int64)
    keep = sources != targets
    low = np.minimum(sources[keep], targets[keep])
    high = np.maximum(sources[keep], targets[keep])
    # One int64 key per pair dedups millions of edges far faster than unique rows, in the
    # same (lexicographic) order.
    keys = np.unique(low * n_items + high)
    return np.stack([keys // n_items, keys % n_items], axis=1)


def leiden(
    unit: np.ndarray,
    neighbors: int = 15,
    resolution: float = 1.0,
    seed: int = 0,
    exact_max_items: int = EXACT_MAX_ITEMS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Leiden communities of the kNN graph of ``unit`` (see module docstring).

    Returns ``(assignment [N], facts)`` with ``facts``: ``neighbors``, ``resolution``,
    ``graph_edges`` and ``modularity`` (Newman's, of the partition found, on that graph).
    """
    import igraph
    import leidenalg

    edges = knn_graph_edges(unit, neighbors, exact_max_items, seed)
    graph = igraph.Graph(n=len(unit), edges=edges)
    partition = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        resolution_parameter=resolution,
        seed=seed,
    )
    return np.asarray(partition.membership, dtype=np.int64), {
        "neighbors": max(1, min(neighbors, len(unit) - 1)),
        "resolution": resolution,
        "graph_edges": len(edges),
        "modularity": float(graph.modularity(partition.membership)),
    }


def comparison_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per method of ``cluster_embeddings``'s metrics: ``COMPARISON_COLUMNS``."""
    rows = [
        {"method": method, **{c: metrics[method].get(c) for c in COMPARISON_COLUMNS[1:]}}
        for method in metrics["methods"]
    ]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _silhouette(unit: np.ndarray, assignment: np.ndarray, seed: int) -> float | None:
    """Cosine silhouette, or ``None`` where it is undefined (needs 2 <= clusters < points)."""
    n_clusters = len(np.unique(assignment))
    if not 2 <= n_clusters < len(assignment):
        return None
    sample_size = SILHOUETTE_MAX_POINTS if len(assignment) > SILHOUETTE_MAX_POINTS else None
    return float(
        silhouette_score(
            unit, assignment, metric="cosine", sample_size=sample_size, random_state=seed
        )
    )


def _score(metric, truth: np.ndarray, predicted: np.ndarray) -> float | None:
    return float(metric(truth, predicted)) if len(truth) else None


def cluster(
    embeddings_dir: str | Path,
    out_dir: str | Path,
    label_column: str | None = None,
    kmeans_clusters: int | None = None,
    hdbscan_min_cluster_size: int = 10,
    hdbscan_pca_components: int | None = 5,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    leiden_resolution: float = 1.0,
    leiden_neighbors: int = 15,
    exact_max_items: int = EXACT_MAX_ITEMS,
) -> dict[str, Any]:
    """Cluster the embeddings in ``embeddings_dir``; write ``out_dir``; return the metrics."""
    metadata, embeddings = load_embeddings(embeddings_dir)
    source = Path(embeddings_dir) / EMBEDDINGS_TABLE
    if len(embeddings) < 2:
        raise InputDataError(f"{source}: clustering needs at least 2 items, got {len(embeddings)}")
    labels = None
    if label_column is not None:
        if label_column not in metadata.columns:
            raise ConfigError(
                f"{source}: label column {label_column!r} is not in the table; "
                f"available columns: {', '.join(map(str, metadata.columns))}"
            )
        labels = metadata[label_column]
    assignments, metrics = cluster_embeddings(
        embeddings,
        labels,
        kmeans_clusters=kmeans_clusters,
        hdbscan_min_cluster_size=hdbscan_min_cluster_size,
        hdbscan_pca_components=hdbscan_pca_components,
        seed=seed,
        methods=methods,
        leiden_resolution=leiden_resolution,
        leiden_neighbors=leiden_neighbors,
        exact_max_items=exact_max_items,
    )
    metrics["label_column"] = label_column
    assignments.insert(0, "item_id", metadata["item_id"].to_numpy())
    if labels is not None:
        assignments[label_column] = labels.to_numpy()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        assignments.to_parquet(tmp / "assignments.parquet", index=False)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        comparison_table(metrics).to_csv(tmp / "comparison.csv", index=False)
    return metrics
