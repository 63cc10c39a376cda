"""bf16 autocast against fp32: training steps per second of each prepared experiment's model.

::

    python benchmarks/precision.py --device cuda            # after the workflow prepared results/
    python benchmarks/precision.py --device cpu --steps 3   # the CPU check

For every experiment with ``results/<name>/{config.json,items,pairs.parquet}`` this draws the
first training batch (the views as in training), builds the experiment's model and times
``--steps`` optimiser steps (forward, loss, backward, Adam) after two warm-up steps, once in
fp32 and once with the network under ``torch.autocast(bfloat16)``, the training loop's GPU
setting (the loss stays fp32, as there). It prints views per second for both and the
speed-up ``bf16 / fp32``. On CPU the bf16 column is left out: the loop autocasts on GPU only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from scicontrast.analysis.diagnostics import untrained_model
from scicontrast.config import load_experiment
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.device import seconds_since
from scicontrast.experiment import Experiment
from scicontrast.models.batch_loss import batch_loss
from scicontrast.models.contrastive import ContrastiveModel
from scicontrast.registry import PAIR_BUILDERS

DEFAULT_EXPERIMENTS = ("dna_demo", "grains_demo", "graph_demo", "audio_image_demo")


def views_per_second(
    model: ContrastiveModel,
    batch: ContrastiveBatch,
    device: torch.device,
    bf16: bool,
    steps: int,
) -> float:
    """Views per second of ``steps`` timed training steps on one batch (2 warm-up steps).

    A step is the training loop's: the network under ``torch.autocast(bfloat16)`` when
    ``bf16``, its output cast to float32, the batch's declared loss
    (:func:`~scicontrast.models.batch_loss.batch_loss`), backward and an Adam step. The
    model's lazy layers (``in_channels=-1``) must be sized before
    (:func:`~scicontrast.analysis.diagnostics.untrained_model`).
    """
    batch = batch.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    for step in range(steps + 2):
        if step == 2:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        optimiser.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z = model(batch.inputs).float()
        batch_loss(model.loss, z, batch).loss.backward()
        optimiser.step()
    return steps * batch.n_views / seconds_since(started, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--experiments", nargs="+", default=list(DEFAULT_EXPERIMENTS))
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.experiments:
        folder = args.results / name
        if not (folder / "pairs.parquet").is_file():
            print(f"{name}: not prepared under {folder}, skipped")
            continue
        experiment = load_experiment(folder / "config.json")
        builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
        items = Items.load(folder / "items")
        pairs = pd.read_parquet(folder / "pairs.parquet")
        typed = Experiment.from_dict(experiment)
        settings = typed.training
        batches = builder.training_batches(items, pairs, settings.seed, settings.batch_size)
        batches.limit_steps(1)
        batches.set_epoch(0)
        batch = next(iter(batches))
        row = {"experiment": name}
        for label, bf16 in (("fp32", False), ("bf16", True)):
            if bf16 and device.type != "cuda":
                continue
            model = untrained_model(typed, builder, items).train().to(device)
            row[f"{label} views/s"] = views_per_second(model, batch, device, bf16, args.steps)
        if "bf16 views/s" in row:
            row["bf16 / fp32"] = row["bf16 views/s"] / row["fp32 views/s"]
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False, float_format="{:.3g}".format))


if __name__ == "__main__":
    main()
