"""Clustering methods for embeddings too many for the exact ones (millions of items).

``scicontrast.analysis.cluster`` switches to these beyond ``exact_max_items`` items (config
``analysis.cluster_exact_max_items``); at or below it, the exact methods run and results are
unchanged. Each replaces one exact step by a bounded-cost approximation of the same objective,
and reads the ``[N, D]`` unit vectors only in batches of rows (a seeded uniform sample of
``S`` rows, ``exact_max_items`` or Leiden's ``leiden_sample_items``, or ``BATCH_ROWS`` at a
time), so that they can be rows of a file
(:class:`~scicontrast.analysis.cluster_input.DiskRows`) and memory holds ``O(S D + batch)``
floats plus the ``[N]`` labels, whatever ``N`` (but for Leiden's whole graph, last below):

* **k-means**: ``MiniBatchKMeans`` (Sculley 2010) minimises the same within-cluster sum of
  squares from batches of ``KMEANS_BATCH`` points. It is first fitted on the sample
  (``KMEANS_RESTARTS`` k-means++ restarts, the best kept, steps until its early stop), then
  ``partial_fit`` takes one step per batch of a seeded shuffle of all ``N`` points, so every
  point moves the centres; the labels are ``predict``'s, batch by batch.
* **HDBSCAN**: the principal axes (``PCA``) and the hierarchy are fitted on the sample (the
  ``hdbscan`` library, ``prediction_data=True``); every other point gets the cluster that
  ``hdbscan.approximate_predict`` gives it, batch by batch: the cluster its mutual-reachability
  neighbours in the sample fall in, or noise. Cost ``O(S log S)`` for the fit and
  ``O(N log S)`` to predict. ``min_cluster_size`` counts sample points.
* **Leiden** (default): the exact Leiden of the kNN graph of a seeded sample of ``S`` rows
  (``leiden_sample_items``); every other row joins the community most of its ``k`` nearest
  sampled rows are in, found exactly, batch by batch: ``O(S^2 D + N S D)`` work and
  ``O(S (D + k) + batch)`` memory, as HDBSCAN's sample does for density.
* **Leiden's whole kNN graph** (``leiden_sample_items=None``): nearest neighbours by NN-descent
  (Dong et al. 2011, ``pynndescent``), about ``O(N^1.14)`` distance evaluations instead of the
  exact ``O(N^2)``. NN-descent visits rows in no fixed order, so it reads all of them
  (``4 N D`` bytes of file pages) and holds the ``[N, neighbors + 1]`` graph, and the graph of
  every point and Leiden's working copies of it follow: about 6x the sample's memory at 10^6.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import mode
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from scicontrast.analysis.cluster_input import DiskRows, row_batches

KMEANS_BATCH = 4096
KMEANS_RESTARTS = 3


def seeded_sample(n_rows: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices ``[min(size, n_rows)]`` of a seeded uniform sample of the rows."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=min(size, n_rows), replace=False))


def minibatch_kmeans(
    unit: np.ndarray | DiskRows, clusters: int, seed: int, sample_size: int
) -> np.ndarray:
    """k-means assignment ``[N]`` (int64) of ``unit`` ``[N, D]`` by seeded mini-batch k-means,
    fitted on a sample of ``sample_size`` rows, then one ``partial_fit`` pass over all rows."""
    # k-means++ needs at least one row per centre.
    sample = seeded_sample(len(unit), max(sample_size, clusters), seed)
    model = MiniBatchKMeans(
        n_clusters=clusters,
        batch_size=KMEANS_BATCH,
        n_init=KMEANS_RESTARTS,
        random_state=seed,
        compute_labels=False,
    ).fit(unit[sample])
    order = np.random.default_rng(seed).permutation(len(unit))
    for rows in row_batches(len(unit), KMEANS_BATCH):
        # Sorted, so that the file is read forwards; the batch is the same set.
        model.partial_fit(unit[np.sort(order[rows])])
    found = np.empty(len(unit), dtype=np.int64)
    for rows in row_batches(len(unit)):
        found[rows] = model.predict(unit[rows])
    return found


def sampled_hdbscan(
    points: np.ndarray | DiskRows,
    min_cluster_size: int,
    sample_size: int,
    seed: int,
    pca_components: int | None = None,
) -> np.ndarray:
    """HDBSCAN assignment ``[N]`` (``-1`` = noise) of ``points`` ``[N, D]`` fitted on a sample.

    With ``pca_components``, HDBSCAN runs on that many principal components, the axes fitted
    on the sample. Sample points keep the label of the fit; the rest get
    ``approximate_predict``'s, a batch of rows at a time.
    """
    import hdbscan

    sample = seeded_sample(len(points), sample_size, seed)
    fitted = points[sample]
    pca = None
    if pca_components is not None:
        pca = PCA(pca_components, random_state=seed).fit(fitted)
        fitted = pca.transform(fitted)
    model = hdbscan.HDBSCAN(
        min_cluster_size=max(2, min(min_cluster_size, len(sample))), prediction_data=True
    ).fit(fitted)
    found = np.empty(len(points), dtype=np.int64)
    in_sample = np.zeros(len(points), dtype=bool)
    in_sample[sample] = True
    for rows in row_batches(len(points)):
        rest = ~in_sample[rows]
        if rest.any():
            batch = points[rows][rest]
            if pca is not None:
                batch = pca.transform(batch)
            found[rows][rest] = hdbscan.approximate_predict(model, batch)[0]
    found[sample] = model.labels_
    return found


def approximate_neighbors(unit: np.ndarray | DiskRows, neighbors: int, seed: int) -> np.ndarray:
    """Indices ``[N, neighbors + 1]`` of each row's approximate nearest rows (itself included).

    On unit vectors Euclidean order is cosine order, so NN-descent runs on the cheaper metric.
    """
    from pynndescent import NNDescent
    from threadpoolctl import threadpool_limits

    # NN-descent runs numba's parallel loops. The first of them in a process starts numba's
    # OpenMP layer, which sets this thread's OpenMP thread count to numba's (every CPU), and
    # torch reads its thread count there: restore the caller's, or a later torch run in this
    # process (an in-process train()) changes its sums (docs/experiments/sigterm.md).
    with threadpool_limits(limits=None, user_api="openmp"):
        index = NNDescent(
            np.asarray(unit),
            n_neighbors=neighbors + 1,
            metric="euclidean",
            random_state=seed,
            low_memory=True,
        )
    return index.neighbor_graph[0]


def sampled_leiden(
    unit: np.ndarray | DiskRows,
    fit: Callable[[np.ndarray], tuple[np.ndarray, dict[str, Any]]],
    neighbors: int,
    sample_size: int,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Leiden assignment ``[N]`` of ``unit`` ``[N, D]`` fitted on a seeded sample of its rows,
    and the fit's facts.

    ``fit`` maps the sample's ``[S, D]`` rows to their ``[S]`` communities (the exact Leiden of
    their kNN graph) and its facts. Every other row gets the community most of its
    ``neighbors`` nearest sampled rows are in (ties: the smallest label), found exactly, a
    batch of rows at a time: ``O(N S D)`` work in ``O(S D + batch)`` memory. On unit vectors
    Euclidean order is cosine order, and scikit-learn's Euclidean search reduces the
    distances chunk by chunk, never holding a batch's ``[B, S]`` of them.
    """
    sample = seeded_sample(len(unit), sample_size, seed)
    fitted = unit[sample]
    fitted_labels, facts = fit(fitted)
    index = NearestNeighbors(
        n_neighbors=min(neighbors, len(sample)), metric="euclidean", algorithm="brute"
    ).fit(fitted)
    found = np.empty(len(unit), dtype=np.int64)
    in_sample = np.zeros(len(unit), dtype=bool)
    in_sample[sample] = True
    for rows in row_batches(len(unit)):
        rest = np.flatnonzero(~in_sample[rows]) + rows.start
        if len(rest):
            batch = unit[rows][rest - rows.start]
            nearest = index.kneighbors(batch, return_distance=False)
            found[rest] = mode(fitted_labels[nearest], axis=1, keepdims=False).mode
    found[sample] = fitted_labels
    return found, facts
