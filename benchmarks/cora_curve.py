"""How a graph experiment's probe accuracy moves with training seed and epoch.

For each training seed, trains the experiment of a config through the library's ``train``
in pieces (``stop_after_epochs``: a resumed CPU run ends with the same weights, bit for bit,
as an uninterrupted one, so the piece ending at epoch ``e`` is the model a run of ``e``
epochs exports when no setting depends on the total, e.g. a constant learning rate and no
weight averaging), and after every ``--every`` epochs scores the checkpoint's clean-graph
embedding with ``benchmarks/cora.py``'s probes (random 10/10/80 splits with the
experiment's probe seeds, Planetoid's public split, C chosen on validation nodes). One JSON
line per (seed, epoch) goes to ``--out``/curve.jsonl, and the embeddings to
``--out``/<experiment>_seed<seed>/embeddings_epoch<epoch>.npy; a rerun skips the lines
already there and resumes training from the last checkpoint.

    python benchmarks/cora_curve.py --config benchmarks/cora_propagated.yaml \\
        --seeds 0 1 2 3 4 --epochs 200 --every 10 --out results/cora_curve

Run the workflow's ``prepare`` and ``pairs`` steps first (``snakemake --cores 1
results/<experiment>/pairs.parquet --configfile <config>``): the items and pairs are read from
``--results``/<experiment>.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cora import score

from scicontrast.analysis.diagnostics import untrained_model
from scicontrast.config import load_experiment
from scicontrast.data_adapters.base import Items
from scicontrast.experiment import Experiment
from scicontrast.models.train import train
from scicontrast.registry import PAIR_BUILDERS

REPO = Path(__file__).resolve().parents[1]


def checkpoint_embeddings(experiment: dict[str, Any], items: Items, checkpoint: Path) -> np.ndarray:
    """``[N, D]`` clean-graph embeddings of the model in ``checkpoint`` (float64)."""
    builder = PAIR_BUILDERS.create(experiment["pairs"])
    model = untrained_model(Experiment.from_dict(experiment), builder, items)
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
    model.eval()
    with torch.no_grad():
        return model.embed(next(iter(builder.embedding_batches(items, 1)))).double().numpy()


def summary(name: str, seed: int, epoch: int, scores: dict[str, Any]) -> dict[str, Any]:
    """The JSON line of one (seed, epoch): validation and test accuracies, per probe seed too."""
    probe = scores["probe"]
    return {
        "experiment": name,
        "seed": seed,
        "epoch": epoch,
        "random": scores["random"]["mean"],
        "random_val": scores["random_val"],
        "random_per_seed": [run["accuracy"] for run in probe["per_seed"]],
        "random_val_per_seed": [run["val_accuracy"] for run in probe["per_seed"]],
        "public": scores["public"],
        "public_val": scores["public_val"],
        "nmi": scores["nmi"],
    }


def curve(args: argparse.Namespace) -> None:
    """Train every seed to ``args.epochs`` in pieces of ``args.every``, scoring each piece."""
    base = load_experiment(args.config, args.experiment)
    name = base["name"]
    folder = args.results / name
    items = Items.load(folder / "items")
    label_column = base["analysis"]["label_column"]
    probe_seeds, scaling = base["analysis"]["probe_seeds"], base["analysis"]["probe_scaling"]
    args.out.mkdir(parents=True, exist_ok=True)
    lines = args.out / "curve.jsonl"
    done = {(r["experiment"], r["seed"], r["epoch"]) for r in read_lines(lines)}
    for seed in args.seeds:
        experiment = copy.deepcopy(base)
        experiment["training"].update(seed=seed, epochs=args.epochs)
        run_dir = args.out / f"{name}_seed{seed}"
        for epoch in range(args.every, (args.stop or args.epochs) + 1, args.every):
            if (name, seed, epoch) in done:
                continue
            train(
                experiment,
                folder / "items",
                folder / "pairs.parquet",
                run_dir,
                progress=False,
                stop_after_epochs=epoch,
                num_threads=1,
            )
            embeddings = checkpoint_embeddings(experiment, items, run_dir / "checkpoint.pt")
            np.save(run_dir / f"embeddings_epoch{epoch}.npy", embeddings.astype(np.float32))
            scores = score(name, embeddings, items, label_column, probe_seeds, scaling)
            with open(lines, "a") as out:
                out.write(json.dumps(summary(name, seed, epoch, scores)) + "\n")
            print(
                f"{name} seed {seed} epoch {epoch}: random {scores['random']['mean']:.4f} "
                f"(val {scores['random_val']:.4f}), public {scores['public']:.3f} "
                f"(val {scores['public_val']:.3f})",
                flush=True,
            )


def choices(runs: list[dict[str, Any]], last: int) -> dict[str, tuple[float, float]]:
    """One seed's ``(random, public)`` test accuracy under three epoch rules, from its lines
    up to epoch ``last``: that epoch; the epoch with the best mean validation accuracy over the
    random splits (the earliest on ties), for both; and each split's own validation nodes
    choosing its epoch (the random splits one by one, the public split by its 500)."""
    runs = sorted((r for r in runs if r["epoch"] <= last), key=lambda r: r["epoch"])
    fixed = next(r for r in runs if r["epoch"] == last)
    by_mean = max(runs, key=lambda r: r["random_val"])
    per_split = [
        max(runs, key=lambda r: r["random_val_per_seed"][k])["random_per_seed"][k]
        for k in range(len(fixed["random_per_seed"]))
    ]
    by_public = max(runs, key=lambda r: r["public_val"])
    return {
        f"epoch {last}": (fixed["random"], fixed["public"]),
        "epoch by mean random-split validation": (by_mean["random"], by_mean["public"]),
        "epoch by each split's validation": (float(np.mean(per_split)), by_public["public"]),
    }


def report(lines: list[dict[str, Any]], last: int) -> str:
    """Markdown: per experiment and epoch rule, each seed's accuracies and their mean, min and
    (population) sd over seeds."""
    out = [
        "| experiment | epoch rule | random splits, per seed | mean / min / sd |"
        " public split, per seed | mean / min / sd |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["experiment"] for r in lines):
        # Seeds that reached the last epoch.
        seeds = sorted({r["seed"] for r in lines if r["experiment"] == name and r["epoch"] == last})
        per_seed = [
            choices([r for r in lines if r["experiment"] == name and r["seed"] == s], last)
            for s in seeds
        ]
        for rule in per_seed[0] if per_seed else []:
            cells = [name, rule]
            for part in (0, 1):
                values = 100 * np.array([c[rule][part] for c in per_seed])
                cells.append(", ".join(f"{v:.1f}" for v in values))
                cells.append(f"{values.mean():.2f} / {values.min():.1f} / {values.std():.2f}")
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def best_of(lines: list[dict[str, Any]], last: int, k: int) -> str:
    """Markdown: "train ``k`` seeds, keep the one best on the validation nodes" (mean random-
    split validation accuracy, then the public split's) at epoch ``last``, over every ``k``
    of the experiment's seeds: the kept model's margins' mean and min over the subsets."""
    out = [
        f"| experiment | best of {k} seeds: subsets | random split, kept model: mean / min |"
        " public split, kept model: mean / min |",
        "|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["experiment"] for r in lines):
        runs = [r for r in lines if r["experiment"] == name and r["epoch"] == last]
        kept = [
            max(subset, key=lambda r: (r["random_val"], r["public_val"]))
            for subset in itertools.combinations(runs, k)
        ]
        cells = [name, str(len(kept))]
        for key in ("random", "public"):
            values = 100 * np.array([r[key] for r in kept])
            cells.append(f"{values.mean():.2f} / {values.min():.1f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none when it is absent)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--experiment", help="experiment of the config (default: the first)")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument(
        "--stop", type=int, help="train every seed to this epoch only (a rerun goes on from it)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--report",
        action="store_true",
        help="train nothing: print the epoch rules' table from --out/curve.jsonl up to --stop",
    )
    parser.add_argument(
        "--best-of", type=int, help="with --report: also keep the best of this many seeds"
    )
    args = parser.parse_args(argv)
    if args.report:
        lines, last = read_lines(args.out / "curve.jsonl"), args.stop or args.epochs
        print(report(lines, last))
        if args.best_of:
            print("\n" + best_of(lines, last, args.best_of))
        return 0
    torch.set_num_threads(1)
    curve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
