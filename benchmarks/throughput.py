"""Training throughput per domain: views per second of training and of the data loader alone.

::

    snakemake --cores 2                      # the default workflow: prepares every demo
    python benchmarks/throughput.py          # plain-text table
    python benchmarks/throughput.py --markdown --device cuda   # on a GPU machine

For every experiment with prepared inputs under ``results/<experiment>/`` (``config.json``,
``items``, ``pairs.parquet``, as the workflow writes them) this

* iterates one epoch of the pair builder's training batches without a model (the views are
  materialised exactly as in training: random shifts, rotations, edge drops) and reports
  **loader** views per second;
* trains the experiment's model for ``--epochs`` epochs with :func:`scicontrast.models.train.train`
  in a temporary folder and reports the **training** views per second of the last epoch (the
  first pays for warm-up) and the peak memory, both from ``metrics.jsonl``: CPU resident set,
  or CUDA memory allocated by torch on a GPU. Each experiment runs in a fresh process, so
  the peak is its own.

``loader / train`` well above 1 means the data loader is not the bottleneck: the loop spends
most of each step in the model. A sample is one view (an object contributes all its views).
Graph experiments train on the whole graph per step, so a view is a node in one of the two
views.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from scicontrast.config import load_experiment
from scicontrast.data_adapters.base import Items, held_out_groups
from scicontrast.device import resolve_device
from scicontrast.models.train import train
from scicontrast.registry import PAIR_BUILDERS

DEFAULT_EXPERIMENTS = ("dna_demo", "grains_demo", "graph_demo", "audio_image_demo")


def loader_views_per_second(experiment: dict[str, Any], items_dir: Path, pairs_path: Path) -> float:
    """Views per second of one epoch of training batches, materialised without a model."""
    settings = experiment["training"]
    items = Items.load(items_dir)
    pairs = pd.read_parquet(pairs_path)
    held_out = held_out_groups(pairs, settings["holdout_fraction"], settings["seed"])
    pairs = pairs[~pairs["group_id"].isin(held_out)]
    builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
    batches = builder.training_batches(items, pairs, settings["seed"], settings["batch_size"])
    batches.set_epoch(0)
    views = 0
    started = time.perf_counter()
    for batch in batches:
        views += batch.n_views
    return views / (time.perf_counter() - started)


def training_run(
    experiment: dict[str, Any], items_dir: Path, pairs_path: Path, epochs: int, threads: int
) -> dict[str, float]:
    """Train ``epochs`` epochs in a temporary folder; the last epoch's line of metrics.jsonl."""
    experiment = copy.deepcopy(experiment)
    experiment["training"]["epochs"] = epochs
    with tempfile.TemporaryDirectory() as out:
        train(experiment, items_dir, pairs_path, out, progress=False, num_threads=threads)
        lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
    return [line for line in lines if line["kind"] == "epoch"][-1]


def measure_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One experiment's row; run in a fresh process so that its peak memory is its own."""
    folder = args.results / name
    experiment = load_experiment(folder / "config.json")
    experiment["training"]["device"] = args.device
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    loader = loader_views_per_second(experiment, folder / "items", folder / "pairs.parquet")
    epoch = training_run(
        experiment, folder / "items", folder / "pairs.parquet", args.epochs, args.threads
    )
    return {
        "experiment": name,
        "device": str(device),
        "encoder": experiment["encoder"]["name"],
        "batch (groups)": experiment["training"]["batch_size"],
        "loader views/s": loader,
        "train views/s": epoch["samples_per_second"],
        "loader / train": loader / epoch["samples_per_second"],
        "peak memory (MiB)": epoch["peak_memory_mb"],
    }


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.experiments:
        folder = args.results / name
        inputs = [folder / "config.json", folder / "items", folder / "pairs.parquet"]
        if not all(path.exists() for path in inputs):
            print(f"{folder}: not prepared (run `snakemake --cores 2` first); skipped")
            continue
        command = [sys.executable, __file__, "--one", name, "--results", str(args.results)]
        command += ["--epochs", str(args.epochs), "--threads", str(args.threads)]
        command += ["--device", args.device]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def format_table(rows: list[dict[str, Any]], markdown: bool) -> str:
    if not rows:
        return "no prepared experiments"
    header = list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
        return str(value)

    table = [[cell(row[key]) for key in header] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table])
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True))
        for line in [header, *table]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--experiments", nargs="+", default=list(DEFAULT_EXPERIMENTS))
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per experiment")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args)))
        return
    print(format_table(measure(args), args.markdown))


if __name__ == "__main__":
    main()
