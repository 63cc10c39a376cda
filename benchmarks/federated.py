"""Federated InfoNCE on NEU split by defect class: central vs FedAvg vs FedAvg + global bank.

::

    python benchmarks/federated.py --config benchmarks/federated.yaml --markdown

Reads the experiment's items with its adapter, holds out a stratified ``--test-fraction``
of them (seed 0) as the union's test items, and trains on the rest:

* ``central``: :func:`scicontrast.models.train.train` on the union of the training items;
* ``fedavg``: :func:`scicontrast.models.federated.federate` with the bank off: each site
  contrasts its views with its own items only;
* ``fedavg_bank``: the same with the experiment's global negative bank;
* ``untrained``: the seeded initial encoder (the control), and the classical features of the
  pair builder (LBP, raw pixels) as baselines.

``training.epochs`` central epochs and ``federated.rounds x local_epochs`` federated epochs
take the same number of optimiser steps when the sites' batches add up to the union's
(benchmarks/federated.yaml). Each encoder embeds every item's canonical view; a
``StandardScaler`` + logistic-regression probe is fitted on the training items, its ``C``
chosen on a stratified validation fifth of them (the test items choose nothing), and scored
on the test items, as is a cosine 10-nearest-neighbour classifier. The last line gives the
part of the gap between ``fedavg`` and ``central`` that the bank recovers,
``(c - b) / (a - b)`` (target >= 0.7), and the bytes each site sent and received per round.
Outputs go to ``--out`` (default ``results/federated_bench``); a rerun resumes every arm.
When the data folder is absent the script says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from scicontrast.analysis.probes import best_C, probe_model
from scicontrast.config import experiment_as_config, load_experiment, validate_config
from scicontrast.data_adapters.base import Items
from scicontrast.experiment import Experiment
from scicontrast.io import write_parquet
from scicontrast.models.contrastive import build_model, load_model
from scicontrast.models.federated import federate
from scicontrast.models.federated_sites import subset
from scicontrast.models.train import train
from scicontrast.registry import ADAPTERS, PAIR_BUILDERS

ARMS = ("central", "fedavg", "fedavg_bank")


def override(experiment: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """The experiment with each ``section.key=value`` (value read as YAML) set, validated
    again (so a misspelt key or a bad value is an error naming it)."""
    body = copy.deepcopy(experiment)
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            raise SystemExit(f"--set {setting!r}: expected section.key=value")
        *path, last = key.split(".")
        node = body
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    config = validate_config(experiment_as_config(body), source="--set")
    return {"name": body["name"], **config["experiments"][body["name"]]}


def iid_sites(labels: np.ndarray, n: int) -> np.ndarray:
    """Site names ``site0`` .. ``site{n-1}`` dealt in turn within each class after a seeded
    shuffle: ``n`` sites with the union's class mix (the control for one-class sites)."""
    rng = np.random.default_rng(0)
    sites = np.empty(len(labels), dtype=object)
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        rng.shuffle(rows)
        sites[rows] = [f"site{i % n}" for i in range(len(rows))]
    return sites


def prepare(
    experiment: dict[str, Any], out: Path, test_fraction: float, iid: int = 0
) -> tuple[Items, np.ndarray]:
    """All items (cached in ``out/items``) and the boolean test mask; writes the training
    items and pairs to ``out/train``, with ``iid > 0`` a ``shard`` column of
    :func:`iid_sites` for ``federated.split_by``."""
    if not (out / "items").exists():
        ADAPTERS.create(experiment["adapter"], where="adapter").read().save(out / "items")
    items = Items.load(out / "items")
    labels = items.table[experiment["analysis"]["label_column"]].to_numpy()
    rows = np.arange(len(items))
    _, test = train_test_split(rows, test_size=test_fraction, stratify=labels, random_state=0)
    is_test = np.isin(rows, test)
    if not (out / "train" / "items").exists():
        train_items = subset(items, np.flatnonzero(~is_test))
        if iid:
            label_column = experiment["analysis"]["label_column"]
            train_items.table["shard"] = iid_sites(train_items.table[label_column].to_numpy(), iid)
        builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
        write_parquet(out / "train" / "pairs.parquet", builder.build(train_items))
        train_items.save(out / "train" / "items")
    return items, is_test


def run_arm(arm: str, experiment: dict[str, Any], out: Path) -> tuple[Path, float]:
    """Train one arm (module docstring); its ``model.pt`` and the wall-clock seconds its
    training took (kept in ``seconds.json``, so a rerun that finds it trained reports them)."""
    items, pairs = out / "train" / "items", out / "train" / "pairs.parquet"
    record = out / arm / "seconds.json"
    started = time.perf_counter()
    if arm == "central":
        central = copy.deepcopy(experiment)
        central.pop("federated")
        path = train(
            Experiment.from_dict(central), items, pairs, out / arm / "model", progress=False
        )
    else:
        federated = copy.deepcopy(experiment)
        federated["federated"]["bank"]["enabled"] = arm == "fedavg_bank"
        path = federate(Experiment.from_dict(federated), items, pairs, out / arm / "model")
    if not record.exists():
        record.write_text(json.dumps(time.perf_counter() - started))
    return path, json.loads(record.read_text())


def embed(model: torch.nn.Module, experiment: dict[str, Any], items: Items) -> np.ndarray:
    """``[N, D]`` encoder embeddings of every item's canonical view."""
    builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
    model.eval()
    with torch.no_grad():
        return torch.cat([model.embed(b) for b in builder.embedding_batches(items, 256)]).numpy()


def score(features: np.ndarray, labels: np.ndarray, is_test: np.ndarray) -> dict[str, float]:
    """Probe and kNN accuracy on a validation fifth of the training items (fitted on the
    rest; chooses the probe's ``C`` and settings) and on the test items (fitted on all
    training items)."""
    codes = np.unique(labels, return_inverse=True)[1]
    train_rows, test_rows = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    fit, val = train_test_split(
        train_rows, test_size=0.2, stratify=codes[train_rows], random_state=0
    )
    _, c, val_probe = best_C(features, codes, fit, val)
    probe = probe_model("standard", c).fit(features[train_rows], codes[train_rows])
    unit = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)

    def knn(fit_rows: np.ndarray, score_rows: np.ndarray) -> float:
        model = KNeighborsClassifier(10, metric="cosine").fit(unit[fit_rows], codes[fit_rows])
        return float(model.score(unit[score_rows], codes[score_rows]))

    return {
        "val_probe": val_probe,
        "val_knn": knn(fit, val),
        "probe": float((probe.predict(features[test_rows]) == codes[test_rows]).mean()),
        "knn": knn(train_rows, test_rows),
        "C": c,
    }


def bytes_per_round(model_dir: Path) -> dict[str, float]:
    """Mean bytes a site sent and received per round (``rounds.jsonl``)."""
    rounds = [json.loads(line) for line in (model_dir / "rounds.jsonl").read_text().splitlines()]
    up = [np.mean(list(r["bytes_up_per_site"].values())) for r in rounds]
    return {
        "up": float(np.mean(up)),
        "down": float(np.mean([r["bytes_down_per_site"] for r in rounds])),
    }


def render(rows: dict[str, dict[str, Any]], markdown: bool) -> str:
    header = [
        "arm",
        "val probe / kNN %",
        "test probe %",
        "test kNN %",
        "train s",
        "KiB up / down per site and round",
    ]
    lines = []
    for name, row in rows.items():
        traffic = row.get("bytes")
        lines.append(
            [
                name,
                f"{100 * row['val_probe']:.2f} / {100 * row['val_knn']:.2f}",
                f"{100 * row['probe']:.2f}",
                f"{100 * row['knn']:.2f}",
                "-" if row.get("seconds") is None else f"{row['seconds']:.0f}",
                "-"
                if traffic is None
                else f"{traffic['up'] / 1024:.0f} / {traffic['down'] / 1024:.0f}",
            ]
        )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
    else:
        out = ["  ".join(header)] + ["  ".join(cells) for cells in lines]
    if all(arm in rows for arm in ARMS):
        out.append("")
        for metric in ("probe", "knn"):
            a, b, c = (rows[arm][metric] for arm in ARMS)
            recovered = (c - b) / (a - b) if a != b else float("nan")
            out.append(
                f"{metric}: gap central - fedavg {100 * (a - b):.2f} points; the bank recovers "
                f"{100 * recovered:.0f} % of it (target >= 70 %)"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("benchmarks/federated.yaml"))
    parser.add_argument("--experiment", default="neu_federated")
    parser.add_argument("--out", type=Path, default=Path("results/federated_bench"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="override training.seed")
    parser.add_argument(
        "--iid-sites",
        type=int,
        default=0,
        help="split the training items into this many sites of the union's class mix instead "
        "of federated.split_by (the control: FedAvg's own cost without one-class sites)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change experiment keys, e.g. training.lr=0.004 federated.aggregation=fedavgm",
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    experiment = override(load_experiment(args.config, args.experiment), args.set)
    if args.seed is not None:
        experiment["training"]["seed"] = args.seed
    data = Path(experiment["adapter"]["params"]["paths"])
    if not data.exists():
        print(f"{data} is absent (see ../shared/data/DATA.md); nothing to score")
        return 0
    if args.iid_sites:
        experiment["federated"]["split_by"] = "shard"
    items, is_test = prepare(experiment, args.out, args.test_fraction, args.iid_sites)
    labels = items.table[experiment["analysis"]["label_column"]].to_numpy()
    rows: dict[str, dict[str, Any]] = {}
    for arm in args.arms:
        path, seconds = run_arm(arm, experiment, args.out)
        rows[arm] = score(embed(load_model(path)[0], experiment, items), labels, is_test)
        rows[arm]["seconds"] = seconds
        if arm != "central":
            rows[arm]["bytes"] = bytes_per_round(path.parent)
    torch.manual_seed(experiment["training"]["seed"])
    rows["untrained"] = score(
        embed(build_model(Experiment.from_dict(experiment)), experiment, items), labels, is_test
    )
    builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
    for features in builder.classical_features(items):
        if features.features is not None:
            rows[features.name] = score(features.features, labels, is_test)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(render(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
