"""CPU time and peak memory of the ``cluster`` step, run through the CLI on an embeddings folder.

::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/cluster_memory.py \
        --items 10000 100000 1000000 --methods kmeans hdbscan --work /tmp/cluster_memory

For each size it writes an embeddings folder of a seeded 20-component Gaussian mixture in
64 dimensions the way ``embed`` writes one (``EmbeddingsWriter``: ``embeddings.parquet`` with
``item_id``, the known ``component`` and the ``embedding`` column in row groups of
``--rows-per-group``, and ``embeddings.npy``), then runs ``scicontrast cluster`` on it in one
child process and reports that process's CPU seconds (user + system) and peak resident set
(``ru_maxrss`` from ``wait4``, so only that process and its children count), with the
clusters found and the ARI against the mixture from its ``metrics.json``. The folders are
kept in ``--work`` and reused when present (the mixture does not depend on anything else).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from scicontrast.analysis.cluster import LEIDEN_SAMPLE_ITEMS, METHODS
from scicontrast.analysis.embed_stream import EmbeddingsWriter

REPO = Path(__file__).resolve().parents[1]
LABEL = "component"


def write_mixture(out: Path, items: int, dim: int, centres: int, rows_per_group: int) -> None:
    """An embeddings folder of ``items`` points of a seeded Gaussian mixture, in row groups.

    Centres ``6 * N(0, I)`` (as ``benchmarks/cluster_scale.py``), unit noise; each row group's
    points and components come from their own seeded generator, so memory holds one group.
    """
    means = np.random.default_rng(0).standard_normal((centres, dim)).astype(np.float32) * 6
    stored = pa.schema([("item_id", pa.string()), (LABEL, pa.string())])
    with EmbeddingsWriter(out, stored) as writer:
        for start in range(0, items, rows_per_group):
            rng = np.random.default_rng([1, start])
            rows = min(rows_per_group, items - start)
            component = rng.integers(0, centres, size=rows)
            points = rng.standard_normal((rows, dim), dtype=np.float32) + means[component]
            metadata = pd.DataFrame(
                {
                    "item_id": [f"item{i:08d}" for i in range(start, start + rows)],
                    LABEL: [f"c{c:02d}" for c in component],
                }
            )
            writer.write(metadata, points)


def run_cluster(embeddings: Path, config: Path, out: Path) -> tuple[float, float]:
    """Run ``scicontrast cluster`` in a child process: ``(CPU seconds, peak RSS MiB)``."""
    command = [sys.executable, "-m", "scicontrast.cli", "cluster", "--config", str(config)]
    command += ["--experiment", "bench", "--embeddings", str(embeddings), "--out", str(out)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {child.returncode}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def write_config(
    path: Path, methods: list[str], centres: int, exact_max_items: int, leiden_sample: int | None
) -> None:
    """A config whose experiment ``bench`` is ``dna_demo`` with this run's analysis keys."""
    demo = yaml.safe_load((REPO / "config.yaml").read_text())["experiments"]["dna_demo"]
    demo["analysis"] = {
        "label_column": LABEL,
        "kmeans_clusters": centres,
        "cluster_methods": methods,
        "cluster_exact_max_items": exact_max_items,
        "leiden_sample_items": leiden_sample,
    }
    path.write_text(yaml.safe_dump({"experiments": {"bench": demo}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--centres", type=int, default=20)
    parser.add_argument("--rows-per-group", type=int, default=65_536)
    parser.add_argument("--methods", nargs="+", default=["kmeans", "hdbscan"], choices=METHODS)
    parser.add_argument("--exact-max-items", type=int, default=50_000)
    parser.add_argument(
        "--leiden-sample-items",
        type=lambda value: None if value == "none" else int(value),
        default=LEIDEN_SAMPLE_ITEMS,
        help="Leiden's sample beyond the threshold; none: the whole approximate kNN graph",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/cluster_memory"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    config = args.work / "config.yaml"
    write_config(config, args.methods, args.centres, args.exact_max_items, args.leiden_sample_items)
    print(f"methods {' + '.join(args.methods)}, {args.dim} dimensions, {args.centres} centres")
    print("| items | CPU s | peak MiB | clusters | ARI |")
    print("|---|---|---|---|---|")
    for items in args.items:
        embeddings = args.work / f"embeddings_{items}_{args.dim}"
        if not embeddings.exists():
            write_mixture(embeddings, items, args.dim, args.centres, args.rows_per_group)
        out = args.work / f"clusters_{items}_{'_'.join(args.methods)}"
        cpu, peak = run_cluster(embeddings, config, out)
        metrics = json.loads((out / "metrics.json").read_text())
        found = " / ".join(f"{metrics[m]['n_clusters']}" for m in args.methods)
        ari = " / ".join(f"{metrics[m]['ari']:.3f}" for m in args.methods)
        print(f"| {items:,} | {cpu:.1f} | {peak:,.0f} | {found} | {ari} |", flush=True)


if __name__ == "__main__":
    main()
