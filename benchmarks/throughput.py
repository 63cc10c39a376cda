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

* runs a **plain** hand-written PyTorch loop over the same epochs: the same model (same seed),
  the same batches, AdamW, and the textbook InfoNCE written in a few lines
  (:func:`plain_info_nce`), with no metrics, checkpoints or progress bar; and reports the
  wall and CPU seconds per epoch of both, and their ratios ``train / plain`` (issue 26: at
  most 1.2). Both include the run's setup (reading the items, building the model), as the
  workflow's step pays it. CPU seconds are the process's (``time.process_time``; loader
  workers, if any, are not counted): on a shared machine the wall clock swings with the
  load, the CPU time hardly. With ``--epochs`` E > 1 the row also gives the CPU seconds of
  **one more epoch** of each loop (the slope between a 1-epoch and an E-epoch run: what an
  epoch costs without the run's setup and final writes) and the **setup** that remains.

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
import torch.nn.functional as F

from scicontrast.analysis.diagnostics import untrained_model
from scicontrast.config import load_experiment
from scicontrast.data_adapters.base import Items, held_out_groups
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.device import resolve_device, seconds_since
from scicontrast.experiment import Experiment
from scicontrast.models.train import train
from scicontrast.registry import PAIR_BUILDERS

DEFAULT_EXPERIMENTS = ("dna_demo", "grains_demo", "graph_demo", "audio_image_demo")


def loader_views_per_second(
    experiment: dict[str, Any],
    items_dir: Path,
    pairs_path: Path,
    workers: int = 0,
    max_batches: int | None = None,
) -> tuple[float, float]:
    """Views per wall second and per CPU second of this process, of one epoch of training
    batches (its first ``max_batches``) materialised without a model by ``workers`` loader
    processes (0: this one; the CPU seconds then count the views' making)."""
    settings = experiment["training"]
    items = Items.load(items_dir)
    pairs = pd.read_parquet(pairs_path)
    held_out = held_out_groups(pairs, settings["holdout_fraction"], settings["seed"])
    pairs = pairs[~pairs["group_id"].isin(held_out)]
    builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
    batches = builder.training_batches(items, pairs, settings["seed"], settings["batch_size"])
    batches.use_workers(workers)
    if max_batches is not None:
        batches.limit_steps(max_batches)
    batches.set_epoch(0)
    views = 0
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        views += batch.n_views
    return views / (time.perf_counter() - started), views / (time.process_time() - cpu)


def training_run(
    experiment: dict[str, Any], items_dir: Path, pairs_path: Path, epochs: int, threads: int
) -> tuple[dict[str, float], tuple[float, float]]:
    """Train ``epochs`` epochs in a temporary folder: the last epoch's line of metrics.jsonl
    and the wall and CPU seconds of the whole run."""
    experiment = copy.deepcopy(experiment)
    experiment["training"]["epochs"] = epochs
    with tempfile.TemporaryDirectory() as out:
        started, cpu = time.perf_counter(), time.process_time()
        train(
            Experiment.from_dict(experiment),
            items_dir,
            pairs_path,
            out,
            progress=False,
            num_threads=threads,
        )
        seconds = (time.perf_counter() - started, time.process_time() - cpu)
        lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
    return [line for line in lines if line["kind"] == "epoch"][-1], seconds


def plain_info_nce(z: torch.Tensor, batch: ContrastiveBatch, tau: float) -> torch.Tensor:
    """InfoNCE as one writes it by hand: cross-entropy over cosine similarities / tau.

    In-batch: each row against all other rows, the mean log-probability of its positives
    (rows with its group id); two towers: CLIP's symmetric cross-entropy.
    """
    if batch.loss_rows is not None:
        z = z[batch.loss_rows]
    z = F.normalize(z, dim=1)
    if batch.towers is not None:
        a, b = batch.towers
        logits = z[a] @ z[b].T / tau
        target = torch.arange(len(a), device=z.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    positive = batch.group_ids[:, None] == batch.group_ids[None, :]
    positive.fill_diagonal_(False)
    log_prob = logits.log_softmax(dim=1).masked_fill(~positive, 0.0)
    return -(log_prob.sum(dim=1) / positive.sum(dim=1).clamp(min=1)).mean()


def plain_setup(
    experiment: dict[str, Any], items_dir: Path, pairs_path: Path, device: str
) -> tuple[Any, torch.nn.Module, torch.optim.Optimizer]:
    """The plain loop's training batches, model (seeded as training seeds it) and AdamW."""
    settings = experiment["training"]
    items = Items.load(items_dir)
    pairs = pd.read_parquet(pairs_path)
    held_out = held_out_groups(pairs, settings["holdout_fraction"], settings["seed"])
    pairs = pairs[~pairs["group_id"].isin(held_out)]
    builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
    batches = builder.training_batches(items, pairs, settings["seed"], settings["batch_size"])
    model = untrained_model(Experiment.from_dict(experiment), builder, items)
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    return batches, model, optimizer


def plain_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: ContrastiveBatch, tau: float
) -> None:
    """One step as the training loop takes it: on a GPU the network under bf16 autocast,
    the loss in float32, so that the two loops compare the same arithmetic."""
    device = next(model.parameters()).device
    optimizer.zero_grad()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        z = model(batch.inputs).float()
    plain_info_nce(z, batch, tau).backward()
    optimizer.step()


def plain_run(
    experiment: dict[str, Any], items_dir: Path, pairs_path: Path, epochs: int, device: str
) -> tuple[float, float]:
    """Wall and CPU seconds of ``epochs`` epochs of a hand-written loop (module docstring)."""
    started, cpu = time.perf_counter(), time.process_time()
    batches, model, optimizer = plain_setup(experiment, items_dir, pairs_path, device)
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for batch in batches:
            plain_step(model, optimizer, batch.to(device), experiment["loss"]["temperature"])
    return seconds_since(started, torch.device(device)), time.process_time() - cpu


def model_views_per_cpu_second(
    experiment: dict[str, Any], items_dir: Path, pairs_path: Path, max_batches: int
) -> float:
    """Views per CPU second of the plain loop's steps alone (forward, InfoNCE, backward,
    AdamW) on training batches 2 to ``max_batches``, made beforehand: the rate that the
    loader has to keep up with."""
    batches, model, optimizer = plain_setup(experiment, items_dir, pairs_path, "cpu")
    batches.limit_steps(max_batches)
    first, *made = list(batches)
    tau = experiment["loss"]["temperature"]
    plain_step(model, optimizer, first, tau)  # untimed: the first step pays lazy set-up
    cpu = time.process_time()
    for batch in made:
        plain_step(model, optimizer, batch, tau)
    return sum(batch.n_views for batch in made) / (time.process_time() - cpu)


def measure_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One experiment's row; run in a fresh process so that its peak memory is its own."""
    folder = args.results / name
    experiment = load_experiment(folder / "config.json")
    experiment["training"]["device"] = args.device
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    items, pairs = folder / "items", folder / "pairs.parquet"
    loader, _ = loader_views_per_second(experiment, items, pairs)

    def trainer(epochs: int) -> tuple[float, float]:
        return training_run(experiment, items, pairs, epochs, args.threads)[1]

    def plain(epochs: int) -> tuple[float, float]:
        return plain_run(experiment, items, pairs, epochs, str(device))

    # Alternating, so that a change in the machine's load hits both alike; each figure is
    # the least of --repeats runs.
    runs = [plain(args.epochs)]
    epoch, last_run = training_run(experiment, items, pairs, args.epochs, args.threads)
    runs.append(last_run)
    for _ in range(args.repeats - 1):
        runs += [plain(args.epochs), trainer(args.epochs)]
    plain_wall, plain_cpu = map(min, zip(*runs[0::2], strict=True))
    wall, cpu = map(min, zip(*runs[1::2], strict=True))
    row = {
        "experiment": name,
        "device": str(device),
        "encoder": experiment["encoder"]["name"],
        "batch (groups)": experiment["training"]["batch_size"],
        "loader views/s": loader,
        "train views/s": epoch["samples_per_second"],
        "loader / train": loader / epoch["samples_per_second"],
        "peak memory (MiB)": epoch["peak_memory_mb"],
        "train s/epoch": wall / args.epochs,
        "plain s/epoch": plain_wall / args.epochs,
        "train / plain": wall / plain_wall,
        "train CPU s/epoch": cpu / args.epochs,
        "plain CPU s/epoch": plain_cpu / args.epochs,
        "CPU train / plain": cpu / plain_cpu,
    }
    if args.epochs > 1:
        # One more epoch without the run's setup and last writes: the slope between a
        # 1-epoch and an E-epoch run, in CPU seconds.
        ones = [(trainer(1)[1], plain(1)[1]) for _ in range(args.repeats)]
        one, plain_one = (min(column) for column in zip(*ones, strict=True))
        train_epoch = (cpu - one) / (args.epochs - 1)
        plain_epoch = (plain_cpu - plain_one) / (args.epochs - 1)
        row["train CPU s/extra epoch"] = train_epoch
        row["plain CPU s/extra epoch"] = plain_epoch
        row["CPU extra epoch train / plain"] = train_epoch / plain_epoch
        row["train setup CPU s"] = one - train_epoch
        row["plain setup CPU s"] = plain_one - plain_epoch
    return row


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
        command += ["--repeats", str(args.repeats)]
        command += ["--device", args.device]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            # The child's traceback is the only account of what failed: show it.
            sys.stderr.write(result.stderr)
            raise SystemExit(f"throughput.py --one {name} failed (exit {result.returncode})")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def format_table(rows: list[dict[str, Any]], markdown: bool) -> str:
    if not rows:
        return "no prepared experiments"
    header = list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value >= 100:
                return f"{value:,.0f}"
            return f"{value:.1f}" if value >= 10 else f"{value:.3g}"
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
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each loop per figure (the least counts)"
    )
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
