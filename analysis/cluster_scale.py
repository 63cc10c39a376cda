"""Clustering methods for embeddings too many for the exact ones (millions of items).

``scicontrast.analysis.cluster`` switches to these beyond ``exact_max_items`` items (config
``analysis.cluster_exact_max_items``); at or below it, the exact methods run and results are
unchanged. Each replaces one exact step by a bounded-cost approximation of the same objective:

* **k-means**: ``MiniBatchKMeans`` (Sculley 2010) minimises the same within-cluster sum of
  squares from random batches of ``KMEANS_BATCH`` points, so each step costs ``O(batch k D)``
  instead of ``O(N k D)``; three k-means++ restarts instead of ten.
* **HDBSCAN**: the hierarchy is built on a seeded uniform sample of ``sample_size`` points
  (the ``hdbscan`` library, ``prediction_data=True``); every other point gets the cluster that
  ``hdbscan.approximate_predict`` gives it: the cluster its mutual-reachability neighbours in
  the sample fall in, or noise. Cost ``O(S log S)`` for the fit and ``O(N log S)`` to predict.
  ``min_cluster_size`` counts sample points.
* **Leiden's kNN graph**: nearest neighbours by NN-descent (Dong et al. 2011, ``pynndescent``),
  about ``O(N^1.14)`` distance evaluations instead of the exact ``O(N^2)``.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import MiniBatchKMeans

KMEANS_BATCH = 4096
KMEANS_RESTARTS = 3


def minibatch_kmeans(unit: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """k-means assignment ``[N]`` of ``unit`` ``[N, D]`` by seeded mini-batch k-means."""
    model = MiniBatchKMeans(
        n_clusters=clusters, batch_size=KMEANS_BATCH, n_init=KMEANS_RESTARTS, random_state=seed
    )
    return model.fit_predict(unit).astype(np.int64)


def sampled_hdbscan(
    points: np.ndarray, min_cluster_size: int, sample_size: int, seed: int
) -> np.ndarray:
    """HDBSCAN assignment ``[N]`` (``-1`` = noise) fitted on a sample of ``points`` ``[N, d]``.

    Sample points keep the label of the fit; the rest get ``approximate_predict``'s.
    """
    import hdbscan

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(points), size=min(sample_size, len(points)), replace=False))
    model = hdbscan.HDBSCAN(
        min_cluster_size=max(2, min(min_cluster_size, len(sample))), prediction_data=True
    ).fit(points[sample])
    found = np.empty(len(points), dtype=np.int64)
    rest = np.ones(len(points), dtype=bool)
    rest[sample] = False
    found[sample] = model.labels_
    if rest.any():
        found[rest] = hdbscan.approximate_predict(model, points[rest])[0]
    return found


def approximate_neighbors(unit: np.ndarray, neighbors: int, seed: int) -> np.ndarray:
    """Indices ``[N, neighbors + 1]`` of each row's approximate nearest rows (itself included).

    On unit vectors Euclidean order is cosine order, so NN-descent runs on the cheaper metric.
    """
    from pynndescent import NNDescent

    index = NNDescent(
        unit, n_neighbors=neighbors + 1, metric="euclidean", random_state=seed, low_memory=True
    )
    return index.neighbor_graph[0]
