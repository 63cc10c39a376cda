"""Cluster embeddings with k-means and HDBSCAN, and score the clusterings.

Both methods run on centred, L2-normalised embeddings: there ``||a - b||^2 = 2 - 2 cos(a,
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

Metrics, per method:

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

Output folder (written atomically): ``assignments.parquet`` with ``item_id``, ``kmeans``,
``hdbscan`` (and the label column when one is given), and ``metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.io import atomic_path

SILHOUETTE_MAX_POINTS = 5000
DEFAULT_KMEANS_CLUSTERS = 8
NOISE = -1


def cluster_embeddings(
    embeddings: np.ndarray,
    labels: pd.Series | np.ndarray | None = None,
    kmeans_clusters: int | None = None,
    hdbscan_min_cluster_size: int = 10,
    hdbscan_pca_components: int | None = 5,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Cluster ``[N, D]`` embeddings; return per-item assignments and metrics.

    Args:
        embeddings: ``[N, D]``, ``N >= 2``.
        labels: ``[N]`` known labels (any hashable values; missing ones are ``NaN``/``None``).
        kmeans_clusters: ``k`` for k-means (capped at ``N``).
        hdbscan_min_cluster_size: HDBSCAN's smallest cluster (capped at ``N``).
        hdbscan_pca_components: principal components HDBSCAN runs on; ``None``: all.
        seed: seeds k-means and the silhouette subsample.

    Returns:
        ``(assignments, metrics)``: assignments has integer columns ``kmeans`` and
        ``hdbscan`` (``-1`` = noise) in input order; metrics as in the module docstring.
    """
    n_items = len(embeddings)
    if n_items < 2:
        raise ValueError(f"clustering needs at least 2 embeddings, got {n_items}")
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = centred / np.maximum(norms, np.finfo(np.float32).tiny)

    known: pd.Series | None = None
    if labels is not None:
        labels = pd.Series(np.asarray(labels, dtype=object))
        if len(labels) != n_items:
            raise ValueError(f"{len(labels)} labels for {n_items} embeddings")
        known = labels[labels.notna()]

    if kmeans_clusters is None:
        kmeans_clusters = known.nunique() if known is not None and len(known) else None
    k = min(kmeans_clusters or DEFAULT_KMEANS_CLUSTERS, n_items)
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(unit)
    min_cluster_size = max(2, min(hdbscan_min_cluster_size, n_items))
    density_space = unit
    if hdbscan_pca_components is not None and hdbscan_pca_components < min(unit.shape):
        density_space = PCA(hdbscan_pca_components, random_state=seed).fit_transform(unit)
    hdbscan = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(density_space)

    is_noise = hdbscan == NOISE
    metrics: dict[str, Any] = {
        "n_items": n_items,
        "kmeans": {
            "n_clusters": len(np.unique(kmeans)),
            "silhouette": _silhouette(unit, kmeans, seed),
        },
        "hdbscan": {
            "min_cluster_size": min_cluster_size,
            "pca_components": density_space.shape[1],
            "n_clusters": len(np.unique(hdbscan[~is_noise])),
            "noise_fraction": float(is_noise.mean()),
            "silhouette": _silhouette(unit[~is_noise], hdbscan[~is_noise], seed),
        },
    }
    if known is not None:
        metrics["n_labelled"] = len(known)
        metrics["n_missing_labels"] = n_items - len(known)
        codes = pd.factorize(known)[0]
        for method, assignment in (("kmeans", kmeans), ("hdbscan", hdbscan)):
            predicted = assignment[known.index.to_numpy()]
            metrics[method]["ari"] = _score(adjusted_rand_score, codes, predicted)
            metrics[method]["nmi"] = _score(normalized_mutual_info_score, codes, predicted)
    assignments = pd.DataFrame({"kmeans": kmeans, "hdbscan": hdbscan})
    return assignments, metrics


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
    )
    metrics["label_column"] = label_column
    assignments.insert(0, "item_id", metadata["item_id"].to_numpy())
    if labels is not None:
        assignments[label_column] = labels.to_numpy()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        assignments.to_parquet(tmp / "assignments.parquet", index=False)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
