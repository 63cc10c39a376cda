"""Promoter ceiling: what a frozen embedding of the promoter encoder reaches when its filters
are trained on the labels instead of a contrastive task.

::

    python benchmarks/promoters_ceiling.py --markdown  # benchmarks/searches/promoters_swa.yaml

For every experiment of the config (the runs chosen in docs/experiments/promoters.md) and
every probe seed, the experiment's encoder is built with the experiment's training seed and
scored three ways on that seed's test items, each with the workflow's linear probe
(:func:`~scicontrast.analysis.probes.linear_probe`, ``C`` chosen inside the training part):

* **untrained**: the encoder at its initial weights (``promoters.py --untrained``);
* **supervised**: the same encoder trained with a linear classifier on its pooled features,

  .. math::

      \\min_{\\theta, W, b} \\frac{1}{|T|} \\sum_{i \\in T}
          -\\log \\operatorname{softmax}(W h_\\theta(x_i) + b)_{y_i},

  with cross-entropy over the *training items of that seed only* (``T``; forward-strand
  windows as read, no augmentation), for the experiment's epochs (or ``--epochs``), batch
  size and learning rate (AdamW), then frozen; the classifier is dropped and the probe is
  refit on ``h``;
* plain 5-mer frequencies, forward strand (the best k-mer row of ``promoters.py`` on both
  organisms), for reference.

The supervised row is a ceiling for the architecture, not a method: its filters have seen
the labels of the items the probe trains on, which a label-free signal can at best make up
for. When it lies near or below the target (3 points of balanced accuracy above the best
k-mer row), pre-training this encoder cannot be expected to meet the target; when it lies
well above, the encoder can express what the target asks and the pre-training signal is
what is missing. It is a bound of this training recipe (one supervised run per split, no
tuning), so a better-tuned supervised run may reach somewhat more. It has no validation
column (its filters have seen the validation items' labels) and chooses nothing.

When the data set folder is absent (a fresh clone has no ``../shared/data``) the script
says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from promoters import kmer_frequencies, untrained_embeddings, window_sequences
from torch import nn
from tqdm import tqdm

from scicontrast.analysis.probes import linear_probe, stratified_splits
from scicontrast.config import read_config_file
from scicontrast.data_adapters.base import Items
from scicontrast.registry import ADAPTERS, ENCODERS, PAIR_BUILDERS

REPO = Path(__file__).resolve().parents[1]
METRICS = ("accuracy", "balanced_accuracy", "auroc")
KMER_K = 5


def labelled_items(experiment: dict[str, Any], repo: Path = REPO) -> Items:
    """The experiment's items (its adapter, paths read from ``repo``) that carry a label."""
    adapter = copy.deepcopy(experiment["adapter"])
    adapter["params"]["paths"] = [str(repo / p) for p in adapter["params"]["paths"]]
    items = ADAPTERS.create(adapter, where=f"{experiment['name']}.adapter").read()
    label_column = experiment["analysis"]["label_column"]
    labelled = items.table[items.table[label_column].notna()].reset_index(drop=True)
    return Items(table=labelled, meta=items.meta)


def one_hot_windows(experiment: dict[str, Any], items: Items) -> torch.Tensor:
    """``float32 [N, 4, window]``: every item's canonical view (the window as read)."""
    builder = PAIR_BUILDERS.create(experiment["pairs"], where=experiment["name"])
    builder.bind(items)
    return torch.stack([builder.canonical(i) for i in range(len(items))])


def embed(encoder: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """``float32 [N, D]``: the encoder's embedding of ``inputs`` in evaluation mode."""
    encoder.eval()
    with torch.no_grad():
        return torch.cat([encoder(batch) for batch in inputs.split(batch_size)]).numpy()


def supervised_encoder(
    experiment: dict[str, Any], inputs: torch.Tensor, codes: np.ndarray, progress: bool = True
) -> nn.Module:
    """The experiment's encoder trained on ``(inputs, codes)`` with a linear classifier
    (module docstring), seeded by the experiment's training seed."""
    training = experiment["training"]
    torch.manual_seed(training["seed"])
    encoder = ENCODERS.create(experiment["encoder"], where=experiment["name"])
    classifier = nn.Linear(encoder.embedding_dim, int(codes.max()) + 1)
    model = nn.Sequential(encoder, classifier)
    optimiser = torch.optim.AdamW(model.parameters(), lr=training["lr"])
    targets = torch.from_numpy(codes).long()
    order = torch.Generator().manual_seed(training["seed"])
    model.train()
    for _ in tqdm(range(training["epochs"]), desc="supervised", unit="epoch", disable=not progress):
        for batch in torch.randperm(len(inputs), generator=order).split(training["batch_size"]):
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return encoder


def _summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        m: {
            "mean": float(np.mean([r[m] for r in runs])),
            "std": float(np.std([r[m] for r in runs])),
        }
        for m in METRICS
    }


def ceiling_rows(
    experiment: dict[str, Any], items: Items, progress: bool = True
) -> dict[str, dict[str, dict[str, float]]]:
    """Probe summaries (mean and population std over the probe seeds) of the k-mer, untrained
    and supervised rows of one experiment (module docstring)."""
    analysis = experiment["analysis"]
    labels = items.table[analysis["label_column"]]
    codes = pd.factorize(labels, sort=True)[0]
    fraction, seeds = analysis["probe_test_fraction"], analysis["probe_seeds"]
    inputs = one_hot_windows(experiment, items)
    kmers = kmer_frequencies(window_sequences(items), KMER_K)
    untrained = untrained_embeddings(experiment, items)
    runs: dict[str, list[dict[str, float]]] = {"kmer": [], "untrained": [], "supervised": []}
    for seed, (train, _test) in zip(seeds, stratified_splits(codes, fraction, seeds), strict=True):
        encoder = supervised_encoder(experiment, inputs[train], codes[train], progress)
        for row, features in (
            ("kmer", kmers),
            ("untrained", untrained),
            ("supervised", embed(encoder, inputs)),
        ):
            # One seed: the same split as seed `seed` of the full probe.
            probe = linear_probe(features, labels, fraction, [seed])
            runs[row].append({m: probe[m]["mean"] for m in METRICS})
    return {row: _summary(per_seed) for row, per_seed in runs.items()}


def render(tables: dict[str, dict[str, dict[str, dict[str, float]]]], markdown: bool) -> str:
    names = {
        "kmer": f"{KMER_K}-mer frequencies, forward strand",
        "untrained": "encoder at its initial weights",
        "supervised": "encoder trained on the training items' labels (ceiling)",
    }
    header = ["experiment", "row", "accuracy", "balanced acc.", "AUROC", "vs 5-mers"]
    lines = []
    for name, rows in tables.items():
        reference = rows["kmer"]["balanced_accuracy"]["mean"]
        for row, summary in rows.items():
            gain = summary["balanced_accuracy"]["mean"] - reference
            lines.append(
                [
                    name,
                    names[row],
                    *(f"{summary[m]['mean']:.3f} ± {summary[m]['std']:.3f}" for m in METRICS),
                    "" if row == "kmer" else f"{100 * gain:+.1f} pt",
                ]
            )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])
    widths = [max(len(c) for c in column) for column in zip(header, *lines, strict=True)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, *lines]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, default=REPO / "benchmarks" / "searches" / "promoters_swa.yaml"
    )
    parser.add_argument("--experiment", action="append", help="only these (repeatable)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--epochs", type=int, help="supervised epochs (default: the experiment's training epochs)"
    )
    args = parser.parse_args(argv)

    config = read_config_file(args.config)
    tables = {}
    for name, experiment in config["experiments"].items():
        if args.experiment and name not in args.experiment:
            continue
        missing = [p for p in experiment["adapter"]["params"]["paths"] if not (REPO / p).is_file()]
        if missing:
            print(f"skipping the promoter ceiling: {missing[0]} not found (no ../shared/data)")
            return 0
        experiment = {"name": name, **experiment}
        if args.epochs is not None:
            experiment["training"] = {**experiment["training"], "epochs": args.epochs}
        tables[name] = ceiling_rows(experiment, labelled_items(experiment))
    print(render(tables, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
