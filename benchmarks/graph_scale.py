"""One epoch of neighbour-sampled graph training and a layer-wise embedding of a large graph.

::

    OMP_NUM_THREADS=2 python benchmarks/graph_scale.py --nodes 1000000 --edges 10000000 \\
        --out /tmp/graph_scale

Generates a stochastic block model (``--blocks`` equal blocks; each edge stays inside its
source's block with probability ``--p-in``, else goes anywhere; stored undirected, so the
graph has about ``2 * --edges`` directed edges) with noisy block-dependent features, saves
it as a graph items set, and runs the workflow's own steps on it: ``pairs``
(``graph_neighbor_views``), :func:`scicontrast.models.train.train` for one epoch and
:func:`scicontrast.analysis.embed.embed` (layer-wise). Each step runs in a fresh process,
so each printed peak resident memory (``ru_maxrss`` of that process) is the step's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs.cleaning import EDGE_INDEX, FEATURES, MODALITY
from scicontrast.experiment import Experiment


def sbm_items(nodes: int, edges: int, blocks: int, p_in: float, features: int, seed: int):
    """A graph items set: ``block`` labels, ``[nodes, features]`` features, undirected edges."""
    rng = np.random.default_rng(seed)
    block = rng.integers(0, blocks, size=nodes)
    members = np.argsort(block, kind="stable")
    starts = np.searchsorted(block[members], np.arange(blocks + 1))
    source = rng.integers(0, nodes, size=edges)
    inside = rng.random(edges) < p_in
    b = block[source[inside]]
    offset = (rng.random(inside.sum()) * (starts[b + 1] - starts[b])).astype(np.int64)
    target = rng.integers(0, nodes, size=edges)
    target[inside] = members[starts[b] + offset]
    keep = source != target
    edge_index = np.concatenate(
        [np.stack([source[keep], target[keep]]), np.stack([target[keep], source[keep]])], axis=1
    )
    means = rng.standard_normal((blocks, features)).astype(np.float32)
    x = means[block] + 2 * rng.standard_normal((nodes, features), dtype=np.float32)
    table = pd.DataFrame({"item_id": np.arange(nodes).astype(str), "block": block})
    return Items(
        table=table,
        meta={"modality": MODALITY},
        arrays={FEATURES: x},
        extras={EDGE_INDEX: edge_index.astype(np.int64)},
    )


def experiment(batch_nodes: int, fanouts: list[int]) -> dict:
    """The benchmark's experiment, validated with defaults filled."""
    from scicontrast.config import select_experiment, validate_config

    body = {
        "adapter": {"name": "graph_table", "params": {"nodes": "n.csv", "edges": "e.csv"}},
        "pairs": {
            "name": "graph_neighbor_views",
            "params": {"batch_nodes": batch_nodes, "num_neighbors": fanouts},
        },
        "encoder": {"name": "gcn", "params": {"embedding_dim": 64}},
        "head": {"hidden_dim": 64, "output_dim": 64},
        "loss": {"temperature": 0.5},
        "training": {"epochs": 1, "lr": 0.002, "seed": 0, "device": "cpu"},
    }
    config = validate_config({"experiments": {"graph_scale": body}}, source="graph_scale")
    return select_experiment(config, "graph_scale", "graph_scale")


def run_step(step: str, out: Path, batch_nodes: int, fanouts: list[int]) -> None:
    """One step in this process (called through ``--step``); prints its wall seconds, the
    process's CPU seconds and its peak GiB."""
    import torch

    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    if step == "pairs":
        from scicontrast.registry import PAIR_BUILDERS

        builder = PAIR_BUILDERS.create(experiment(batch_nodes, fanouts)["pairs"], where="pairs")
        builder.build(Items.load(out / "items")).to_parquet(out / "pairs.parquet", index=False)
    elif step == "train":
        from scicontrast.models.train import train

        exp = Experiment.from_dict(experiment(batch_nodes, fanouts))
        train(exp, out / "items", out / "pairs.parquet", out / "model", progress=False)
    elif step == "untrained":
        # Layer-wise embedding costs the same whatever the weights: this times it without
        # the training epoch (at 10^6 nodes about 390 CPU s, docs/experiments/graphscale.md).
        from torch_geometric.data import Data

        from scicontrast.models.contrastive import build_model, save_model

        exp = Experiment.from_dict(experiment(batch_nodes, fanouts))
        model = build_model(exp)
        x = torch.from_numpy(np.load(out / "items" / f"{FEATURES}.npy", mmap_mode="r")[:2].copy())
        model.embed(Data(x=x, edge_index=torch.zeros(2, 0, dtype=torch.long)))
        save_model(out / "model" / "model.pt", model, exp)
    else:
        from scicontrast.analysis.embed import embed

        embed(out / "model" / "model.pt", out / "items", out / "embeddings", device="cpu")
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of the whole process (imports included): on a shared machine the wall
    # seconds also count the waits for a core.
    cpu = usage.ru_utime + usage.ru_stime
    peak = usage.ru_maxrss / 2**20
    record = {"step": step, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1)}
    print(json.dumps({**record, "peak_gib": round(peak, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=5_000_000, help="undirected edges drawn")
    parser.add_argument("--blocks", type=int, default=50)
    parser.add_argument("--p-in", type=float, default=0.8)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--batch-nodes", type=int, default=2048)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 5])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="embed with an untrained model instead of training one epoch first",
    )
    parser.add_argument(
        "--step", choices=["pairs", "train", "untrained", "embed"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.step:
        run_step(args.step, args.out, args.batch_nodes, args.fanouts)
        return
    start = time.perf_counter()
    if (args.out / "items").is_dir():
        # Reuse the generated graph of an earlier run (the generator is seeded).
        items = Items.load(args.out / "items")
    else:
        items = sbm_items(args.nodes, args.edges, args.blocks, args.p_in, args.features, 0)
        items.save(args.out / "items")
    edges = items.extras[EDGE_INDEX].shape[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    del items
    print(
        f"{args.nodes} nodes, {edges} directed edges; generate and save "
        f"{time.perf_counter() - start:.1f} s, peak {peak:.2f} GiB",
        flush=True,
    )
    for step in ("pairs", "untrained" if args.untrained else "train", "embed"):
        command = [sys.executable, __file__, "--step", step, "--out", str(args.out)]
        command += ["--batch-nodes", str(args.batch_nodes), "--fanouts", *map(str, args.fanouts)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
