"""Cora: the supervised ceiling of the reference graph encoder, on the probe's own splits.

::

    python benchmarks/cora_ceiling.py --markdown

How far could any pre-training of ``benchmarks/cora_propagated.yaml``'s encoder go? The same
encoder (its experiment's ``propagated_mlp``: ``P^(K) PReLU(X W)``, hops and teleport by the
rule) with a linear layer on top, trained on the labels of each split's train nodes with
cross-entropy (Adam, lr 0.01, weight decay 5e-4, dropout 0.5 on the features, as APPNP
trains), ``--epochs`` full-graph epochs; the epoch with the best validation accuracy is kept
and scored on the test nodes. Splits: the ten random 10/10/80 splits of the probe
(:func:`~scicontrast.analysis.graph_eval.random_node_splits`, the experiment's probe seeds)
and Planetoid's public split, as ``benchmarks/cora.py`` uses them. Reads the items of
``results/<experiment>/items`` or ``--items`` (run the workflow's prepare step first); when
they are absent the script says so and exits with status 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from scicontrast.analysis.graph_eval import random_node_splits
from scicontrast.config import load_experiment
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs import SPLIT_MASKS, graph_data
from scicontrast.registry import ENCODERS


def supervised_accuracy(
    experiment: dict, data, codes: np.ndarray, split, epochs: int, seed: int
) -> tuple[float, float]:
    """``(val accuracy, test accuracy)`` at the epoch of best validation accuracy."""
    torch.manual_seed(seed)
    encoder = ENCODERS.create(experiment["encoder"])
    n_classes = int(codes.max()) + 1
    model = nn.ModuleDict({"encoder": encoder, "head": nn.LazyLinear(n_classes)})
    target = torch.as_tensor(codes)
    train, val, test = (torch.as_tensor(part) for part in split)

    def logits(training: bool):
        model.train(training)
        x = nn.functional.dropout(data.x, p=0.5, training=training)
        graph = data.clone()
        graph.x = x
        return model["head"](model["encoder"](graph))

    with torch.no_grad():
        logits(False)  # sizes the lazy layers and fixes the propagation rule
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    best = (-1.0, 0.0)
    for _ in range(epochs):
        optimizer.zero_grad()
        nn.functional.cross_entropy(logits(True)[train], target[train]).backward()
        optimizer.step()
        with torch.no_grad():
            predicted = logits(False).argmax(dim=1)
        val_acc = float((predicted[val] == target[val]).float().mean())
        if val_acc > best[0]:
            best = (val_acc, float((predicted[test] == target[test]).float().mean()))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/cora_propagated.yaml")
    parser.add_argument("--experiment", default="cora_propagated")
    parser.add_argument(
        "--items", type=Path, default=None, help="default: results/<experiment>/items"
    )
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="default: the probe seeds"
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    experiment = load_experiment(args.config, args.experiment)
    folder = args.items or Path("results") / args.experiment / "items"
    if not folder.is_dir():
        print(f"{folder} is absent: run the prepare step first")
        return 0
    items = Items.load(folder)
    data = graph_data(items)
    label_column = experiment["analysis"]["label_column"]
    codes, _ = pd.factorize(items.table[label_column].astype(object), sort=True)
    seeds = args.seeds or experiment["analysis"]["probe_seeds"]
    random = [
        supervised_accuracy(experiment, data, codes, split, args.epochs, seed)
        for seed, split in zip(seeds, random_node_splits(codes, seeds), strict=True)
    ]
    public_split = tuple(
        np.flatnonzero(items.table[mask].to_numpy(dtype=bool)) for mask in SPLIT_MASKS.values()
    )
    public = supervised_accuracy(experiment, data, codes, public_split, args.epochs, 0)
    val, test = (100 * np.array(column) for column in zip(*random, strict=True))
    row = [
        f"{args.experiment}'s encoder trained on the labels (ceiling)",
        f"{test.mean():.2f} ± {test.std():.2f}",
        f"{100 * public[1]:.1f}",
        f"{val.mean():.2f} / {100 * public[0]:.1f}",
    ]
    header = ["method", "random splits (10/10/80)", "public split", "val: random / public"]
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        print("| " + " | ".join(row) + " |")
    else:
        print("\n".join(f"{h}: {v}" for h, v in zip(header, row, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
