"""Fidelity of the scalable clusterers on real embeddings: each against its exact form.

::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
    python benchmarks/cluster_fidelity.py /tmp/imgwhole/embeddings --label-column orientation \\
        --items 100000 --split report \\
        --runs kmeans:exact kmeans:sampled hdbscan:exact hdbscan:sampled leiden:whole leiden:50000

The items of an embeddings folder (what ``embed`` writes) are split by a seeded permutation
into two halves: ``validation``, where settings such as Leiden's sample size are chosen, and
``report``, whose figures are quoted (``--split all``: every item). ``--items`` of the split
are drawn (seeded, sorted) and their centred unit vectors written to a float32 file, as the
``cluster`` step does beyond ``analysis.cluster_exact_max_items``; every run reads that same
file, so two runs differ only in the algorithm. A run is ``method:path``:

* ``kmeans:sampled``, ``hdbscan:sampled``: the scalable forms (mini-batch k-means; HDBSCAN
  fitted on a sample with ``approximate_predict``), samples of ``--exact-max-items`` rows;
* ``kmeans:exact``, ``hdbscan:exact``, ``leiden:exact``: the exact forms on all the rows in
  memory (``leiden:exact``: leidenalg on the exact kNN graph);
* ``leiden:whole``: igraph's Leiden of the whole NN-descent kNN graph
  (``leiden_sample_items: null``); ``leiden:<S>``: Leiden of a seeded sample of ``S`` rows,
  the rest voted by their 15 nearest sampled rows.

Each run is one spawned child process, so its CPU seconds (user + system, less its imports) and
peak resident memory (``ru_maxrss``, its imports included) are its own. The table gives per run:
clusters, noise fraction (HDBSCAN), ARI and NMI against the labels (noise counted as one more
cluster), ARI against the method's reference run (its first ``exact`` or ``whole`` run), CPU s
and peak MiB. A run of the reference path with another seed (``kmeans:exact@1``) measures how
much the exact method agrees with
itself: the floor a scalable form's agreement is to be read against.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score

from scicontrast.analysis.cluster import EXACT_MAX_ITEMS, METHODS, cluster_unit
from scicontrast.analysis.cluster_input import (
    DiskRows,
    label_codes,
    open_embeddings,
    row_batches,
    unit_vectors_on_disk,
)

SPLITS = ("validation", "report", "all")
REFERENCE_PATHS = ("exact", "whole")


@dataclass(frozen=True)
class Run:
    """One clustering of the drawn rows: ``method`` by ``path`` (module docstring), its
    seed ``--seed`` plus ``reseed``."""

    method: str
    path: str
    reseed: int = 0

    @property
    def name(self) -> str:
        return f"{self.method}:{self.path}" + (f"@{self.reseed}" if self.reseed else "")

    def settings(self, n_items: int, exact_max_items: int) -> dict[str, Any]:
        """``cluster_unit`` keyword arguments that make it take this path on ``n_items`` rows."""
        if self.path == "exact":
            return {"exact_max_items": n_items}
        if self.path == "sampled":
            return {"exact_max_items": exact_max_items}
        if self.path == "whole":
            return {"exact_max_items": exact_max_items, "leiden_sample_items": None}
        return {"exact_max_items": exact_max_items, "leiden_sample_items": int(self.path)}


def parse_run(text: str) -> Run:
    """``Run`` of ``method:path`` or ``method:path@reseed``; ``ValueError`` naming the text
    if a part is unknown."""
    method, _, path = text.partition(":")
    path, _, reseed = path.partition("@")
    paths = {"kmeans": ("exact", "sampled"), "hdbscan": ("exact", "sampled")}
    known = path in paths.get(method, ("exact", "whole")) or (
        method == "leiden" and path.isdigit() and int(path) > 0
    )
    if method not in METHODS or not known or not (reseed == "" or reseed.isdigit()):
        raise ValueError(
            f"run {text!r}: expected kmeans|hdbscan:exact|sampled, leiden:exact|whole|<sample>,"
            " then optionally @<seed offset>"
        )
    return Run(method, path, int(reseed or 0))


def split_rows(n_rows: int, split: str, seed: int) -> np.ndarray:
    """Sorted row indices of one half of a seeded permutation of ``range(n_rows)``:
    ``validation`` the first ``n_rows // 2``, ``report`` the rest; ``all``: every row."""
    if split == "all":
        return np.arange(n_rows)
    order = np.random.default_rng(seed).permutation(n_rows)
    half = order[: n_rows // 2] if split == "validation" else order[n_rows // 2 :]
    return np.sort(half)


def draw_rows(rows: np.ndarray, items: int | None, seed: int) -> np.ndarray:
    """Sorted seeded sample of ``items`` of ``rows`` (all of them when ``items`` is ``None``
    or not smaller); ``ValueError`` if ``items`` exceeds them."""
    if items is None or items == len(rows):
        return rows
    if items > len(rows):
        raise ValueError(f"{items} items asked of a split of {len(rows)}")
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(rows, size=items, replace=False))


def reference_runs(runs: list[Run]) -> dict[str, str]:
    """Each method's reference: the name of its first ``exact`` or ``whole`` run of the
    unchanged seed."""
    found: dict[str, str] = {}
    for run in runs:
        if run.path in REFERENCE_PATHS and not run.reseed:
            found.setdefault(run.method, run.name)
    return found


def write_unit_rows(folder: Path, rows: np.ndarray, out: Path) -> DiskRows:
    """The centred unit vectors ``[len(rows), D]`` of the embeddings ``rows`` of ``folder``,
    written to ``out`` (float32 ``.npy``) as the ``cluster`` step writes them, and read back
    as :class:`DiskRows`; the parent never holds the ``[N, D]`` array."""
    embeddings, _ = open_embeddings(folder)
    source = out.with_name("drawn.npy")
    drawn = np.lib.format.open_memmap(
        source, mode="w+", dtype=np.float32, shape=(len(rows), embeddings.shape[1])
    )
    for batch in row_batches(len(rows)):
        drawn[batch] = embeddings[rows[batch]]
    drawn.flush()
    del drawn, embeddings
    unit = unit_vectors_on_disk(np.load(source, mmap_mode="r"), out)
    source.unlink()
    return unit


def cluster_once(
    unit_path: Path, codes: np.ndarray, run: Run, exact_max_items: int, seed: int
) -> tuple[np.ndarray, dict[str, Any], float, float]:
    """In a child process: ``(assignment [N], the method's metrics, CPU s, peak MiB)``."""
    before = resource.getrusage(resource.RUSAGE_SELF)  # the child's imports are not the run's
    unit: np.ndarray | DiskRows = DiskRows(unit_path)
    if run.path == "exact":
        unit = np.array(unit)
    settings = run.settings(len(unit), exact_max_items)
    found, metrics = cluster_unit(
        unit, codes, seed=seed + run.reseed, methods=[run.method], **settings
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    return found[run.method], metrics[run.method], cpu, usage.ru_maxrss / 1024


@dataclass
class Result:
    """One run's outcome, as the table prints it."""

    run: Run
    assignment: np.ndarray
    metrics: dict[str, Any]
    cpu_s: float
    peak_mib: float
    agreement: float | None = field(default=None)


def agreements(results: list[Result]) -> None:
    """Set each result's ``agreement``: ARI with its method's reference run (1 for itself)."""
    references = reference_runs([r.run for r in results])
    by_name = {r.run.name: r for r in results}
    for result in results:
        reference = references.get(result.run.method)
        if reference is not None:
            result.agreement = float(
                adjusted_rand_score(by_name[reference].assignment, result.assignment)
            )


def table(results: list[Result]) -> str:
    """Markdown table of the results, one row per run."""

    def fmt(value: float | None, digits: int = 3) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    lines = [
        "| run | clusters | noise | ARI | NMI | ARI vs exact | CPU s | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.metrics
        lines.append(
            f"| {r.run.name} | {m['n_clusters']} | {fmt(m.get('noise_fraction'), 2)} "
            f"| {fmt(m.get('ari'))} | {fmt(m.get('nmi'))} | {fmt(r.agreement)} "
            f"| {r.cpu_s:.1f} | {r.peak_mib:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("embeddings", type=Path, help="an embeddings folder (embed's output)")
    parser.add_argument("--label-column", required=True)
    parser.add_argument("--split", choices=SPLITS, default="report")
    parser.add_argument("--items", type=int, default=None, help="rows of the split drawn")
    parser.add_argument("--runs", nargs="+", type=parse_run, required=True)
    parser.add_argument("--exact-max-items", type=int, default=EXACT_MAX_ITEMS)
    parser.add_argument("--seed", type=int, default=0, help="split, draw and clusterers")
    args = parser.parse_args(argv)
    embeddings, table_path = open_embeddings(args.embeddings)
    n_total, dim = embeddings.shape
    del embeddings
    rows = draw_rows(split_rows(n_total, args.split, args.seed), args.items, args.seed)
    codes = label_codes(table_path, args.label_column)[rows]
    print(
        f"{args.embeddings}: {len(rows)} of {n_total} x {dim}, split {args.split}, "
        f"{len(np.unique(codes))} labels ({args.label_column}), seed {args.seed}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="cluster_fidelity.") as tmp:
        unit_path = Path(tmp) / "unit_vectors.npy"
        write_unit_rows(args.embeddings, rows, unit_path)
        for run in args.runs:
            # spawn, not fork: a forked child hung twice in HDBSCAN's worker pool
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                outcome = pool.submit(
                    cluster_once, unit_path, codes, run, args.exact_max_items, args.seed
                ).result()
            results.append(Result(run, *outcome))
            print(f"done {run.name}: cpu_s={outcome[2]:.1f} peak_mib={outcome[3]:.0f}", flush=True)
    agreements(results)
    print(table(results))


if __name__ == "__main__":
    main()
