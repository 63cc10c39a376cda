"""Genome of origin: the supervised ceiling of the genomes encoder on genomes never trained on.

::

    python benchmarks/genomes_ceiling.py --split genome --seeds 0 --steps 600 --markdown

How far could any pre-training of this encoder go? The same encoder (``benchmarks/genomes.yaml``,
experiment ``genomes``) and the same reads (the ``genome_reads`` batches of the training
genomes: ``batch_size`` genomes x ``reads_per_group`` reads of 150-1,000 nt, either strand,
the same steps and learning-rate schedule) trained with the labels instead of InfoNCE: a
linear layer ``W [G, D]`` on the embedding ``h(x) [B, D]`` and cross-entropy over the ``G``
training genomes,

.. math::  L = -\\frac1B \\sum_i \\log \\operatorname{softmax}(W h(x_i))_{g_i}.

The classifier is then dropped and the encoder embeds reads of the held-out genomes, scored
exactly as ``benchmarks/genomes.py`` scores the contrastive encoder (k-means ARI / NMI and kNN
at genome and species level, beside TNF and 5-mers; the untrained control has the same seed).
A genome classifier learns what tells the training genomes apart; whether that transfers to
unseen genomes is the question the ceiling answers. Results go to
``<out>/by_<split>/ceiling_seed<k>/`` and ``<out>/by_<split>/ceiling.json``.

When the data folder is absent the script says so and exits with status 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from genomes import benchmark_parser, prepare_run, render, score_part, untrained_encoder
from torch import nn

from scicontrast.data_adapters.base import Items
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model
from scicontrast.models.train import learning_rate
from scicontrast.registry import PAIR_BUILDERS


def train_classifier(
    experiment: dict, items: Items, train_genomes: list[str], seed: int, path: Path
) -> nn.Module:
    """The experiment's encoder trained as a genome classifier on ``train_genomes``; saved
    to (and, when present, read from) ``path``. Returns the encoder alone."""
    torch.manual_seed(seed)  # the initial weights of the contrastive run with this seed
    encoder = build_model(Experiment.from_dict(experiment)).encoder
    if path.is_file():
        encoder.load_state_dict(torch.load(path, weights_only=True))
        return encoder
    builder = PAIR_BUILDERS.create(experiment["pairs"])
    pairs = builder.build(items)
    pairs = pairs[items.table["genome"].astype(str).isin(train_genomes).to_numpy()]
    settings = experiment["training"]
    batches = builder.training_batches(items, pairs, seed, settings["batch_size"])
    classes = {int(g): k for k, g in enumerate(np.unique(pairs["group_id"]))}
    classifier = nn.Linear(encoder.embedding_dim, len(classes))
    parameters = [*encoder.parameters(), *classifier.parameters()]
    optimizer = torch.optim.AdamW(
        parameters, lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    total = settings["epochs"] * len(batches)
    warmup = round(settings.get("warmup_epochs", 0) * len(batches))
    step = 0
    encoder.train()
    for epoch in range(settings["epochs"]):
        batches.set_epoch(epoch)
        for batch in batches:
            lr = learning_rate(settings["lr"], step, total, warmup, settings["lr_schedule"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            target = torch.tensor([classes[int(g)] for g in batch.group_ids])
            loss = nn.functional.cross_entropy(classifier(encoder(batch.inputs)), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        print(f"epoch {epoch + 1}: cross-entropy {loss.item():.3f}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), path)
    return encoder.eval()


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    prepared = prepare_run(args)
    if prepared is None:
        return 0
    experiment, items, parts, folder = prepared
    encoders, seconds = {}, {}
    for seed in args.seeds:
        start = time.perf_counter()
        path = folder / f"ceiling_seed{seed}" / "encoder.pt"
        encoders[seed] = train_classifier(experiment, items, parts["train"], seed, path)
        seconds[seed] = time.perf_counter() - start
    untrained = {s: untrained_encoder(experiment, s) for s in args.seeds}
    results = {"parts": parts, "train_seconds": seconds, "steps": args.steps}
    for part in ("val", "test"):
        scored = score_part(items, parts[part], args.lengths, args.reads, encoders, untrained)
        results[part] = {
            length: {
                name.replace("trained encoder", "supervised encoder (ceiling)")
                if name.startswith("trained")
                else name: row
                for name, row in table.items()
            }
            for length, table in scored.items()
        }
    (folder / "ceiling.json").write_text(json.dumps(results, indent=1, default=str))
    print(render(results, args.markdown))
    print(json.dumps({"train_seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
