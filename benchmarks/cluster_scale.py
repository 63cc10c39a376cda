"""Clustering at scale: k-means, HDBSCAN and Leiden on N x D synthetic embeddings.

::

    OMP_NUM_THREADS=2 NUMBA_NUM_THREADS=2 python benchmarks/cluster_scale.py --items 1000000

The embeddings are a seeded mixture of ``--centres`` Gaussian clusters in ``--dim``
dimensions (centres at distance about ``6 sqrt(2 D)``, unit noise), so the known mixture
component is a label the clusterings can be scored against. Each method runs alone through
:func:`scicontrast.analysis.cluster.cluster_embeddings` (beyond ``--exact-max-items`` items
its scalable form: mini-batch k-means, sampled HDBSCAN with ``approximate_predict``, Leiden
of a 50,000-point sample with the rest voted by their nearest sampled points); the table gives
wall seconds, clusters found, ARI against the mixture, and the process's peak resident memory
after that method (cumulative, so it only grows).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from scicontrast.analysis.cluster import EXACT_MAX_ITEMS, METHODS, cluster_embeddings


def mixture(items: int, dim: int, centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``[items, dim]`` float32 points of a Gaussian mixture and their component ``[items]``."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim)).astype(np.float32) * 6
    labels = rng.integers(0, centres, size=items)
    points = rng.standard_normal((items, dim), dtype=np.float32)
    points += means[labels]
    return points, labels


def peak_rss_gib() -> float:
    """Peak resident set of this process so far, GiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--centres", type=int, default=20)
    parser.add_argument("--exact-max-items", type=int, default=EXACT_MAX_ITEMS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    points, labels = mixture(args.items, args.dim, args.centres, args.seed)
    print(f"{args.items} x {args.dim} embeddings, {args.centres} centres")
    print("| method | seconds | clusters | ARI | peak RSS GiB |")
    print("|---|---|---|---|---|")
    total = 0.0
    for method in args.methods:
        start = time.perf_counter()
        _, metrics = cluster_embeddings(
            points,
            labels,
            kmeans_clusters=args.centres,
            seed=args.seed,
            methods=[method],
            exact_max_items=args.exact_max_items,
        )
        seconds = time.perf_counter() - start
        total += seconds
        facts = metrics[method]
        print(
            f"| {method} | {seconds:.1f} | {facts['n_clusters']} | {facts['ari']:.3f} "
            f"| {peak_rss_gib():.2f} |",
            flush=True,
        )
    print(f"| all | {total:.1f} | | | {peak_rss_gib():.2f} |")


if __name__ == "__main__":
    main()
