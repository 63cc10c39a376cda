"""Promoters revisited with a genome: pre-train on E. coli K-12 upstream regions, probe promoters.

::

    python benchmarks/promoters_genome.py --markdown                    # every experiment
    python benchmarks/promoters_genome.py --experiment promoters_genome_shift_only --train-only

For every experiment of ``benchmarks/promoters_genome.yaml`` (issue 25 item 6) this reads the
upstream regions of the K-12 GenBank (adapter ``genbank_upstream``) into
``<out>/<experiment>/items``, builds its pairs (windows of one locus are positives) and
trains the model with the workflow's :func:`~scicontrast.models.train.train` (an existing
``model.pt`` is reused). It then embeds the **promoter set** with the frozen encoder: the
items of ``--probe-experiment`` of ``--probe-config`` (by default the E. coli sigma70 set of
``benchmarks/promoters.yaml``, 3,839 windows of 81 nt), and probes them with the promoter
benchmark's own probe and splits (:func:`promoters.scored_row`: ``StandardScaler`` +
``LogisticRegression``, ``C`` chosen inside each training part, stratified 80/20 splits with
the probe experiment's seeds), beside

* the same encoder at its initial weights (the untrained control, the experiment's seed);
* forward-strand (strand-specific) and canonical (both-strand) k-mer frequencies, k = 3-5.

Settings are chosen on the "val" column alone (:func:`promoters.validation_scores`); the
supervised ceiling of this encoder on the same splits is ``benchmarks/promoters_ceiling.py``
(docs/experiments/promoters.md). Results also go to ``<out>/results.json``.

When the GenBank or the promoter files are absent (a fresh clone has no ``../shared/data``)
the script says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from promoters import REPO, Row, kmer_frequencies, scored_row, window_sequences
from promoters_ceiling import labelled_items

from scicontrast.analysis.embed import embed_items
from scicontrast.config import load_experiment, read_config_file
from scicontrast.data_adapters.base import Items
from scicontrast.experiment import Experiment
from scicontrast.io import write_parquet
from scicontrast.models.contrastive import build_model, load_model
from scicontrast.models.train import train
from scicontrast.registry import ADAPTERS, PAIR_BUILDERS

DEFAULT_CONFIG = REPO / "benchmarks" / "promoters_genome.yaml"
METRICS = ("accuracy", "balanced_accuracy", "auroc")


def pretrain(experiment: dict[str, Any], out: Path, threads: int) -> tuple[Path, float, int]:
    """Train ``experiment`` on its upstream windows; ``(model.pt, training CPU seconds,
    windows)``, the seconds of the run that trained it when the model is reused."""
    folder = out / experiment["name"]
    items_dir = folder / "items"
    if not (items_dir / "items.parquet").is_file():
        adapter = dict(experiment["adapter"])
        adapter["params"] = {
            **adapter["params"],
            "paths": [str(REPO / p) for p in adapter["params"]["paths"]],
        }
        ADAPTERS.create(adapter, where=experiment["name"]).read().save(items_dir)
    items = Items.load(items_dir)
    pairs_path = folder / "pairs.parquet"
    write_parquet(pairs_path, PAIR_BUILDERS.create(experiment["pairs"]).build(items))
    model_path = folder / "model" / "model.pt"
    record = folder / "model" / "train_cpu_seconds.txt"  # kept for later runs to report
    if not model_path.is_file():
        cpu = time.process_time()
        train(
            Experiment.from_dict(experiment),
            items_dir,
            pairs_path,
            model_path.parent,
            progress=False,
            num_threads=threads,
        )
        record.write_text(f"{time.process_time() - cpu:.1f}\n")
    seconds = float(record.read_text()) if record.is_file() else float("nan")
    return model_path, seconds, len(items)


def encoder_rows(
    experiment: dict[str, Any], model_path: Path, probed: Items, analysis: dict[str, Any]
) -> list[Row]:
    """The trained and the untrained encoder of ``experiment``, probed on ``probed``."""
    labels = probed.table[analysis["label_column"]]
    builder = PAIR_BUILDERS.create(experiment["pairs"])
    trained = embed_items(load_model(model_path)[0], builder, probed, progress=False)
    torch.manual_seed(experiment["training"]["seed"])  # as models.train.train does
    untrained = embed_items(
        build_model(Experiment.from_dict(experiment)), builder, probed, progress=False
    )
    name = experiment["name"]
    return [
        scored_row(trained, labels, analysis, method=name, kind="contrastive", experiment=name),
        scored_row(
            untrained, labels, analysis, method=f"{name}, untrained control", kind="untrained"
        ),
    ]


def kmer_rows(probed: Items, analysis: dict[str, Any]) -> list[Row]:
    """Forward-strand and canonical k-mer frequencies, k = 3, 4, 5, probed the same way."""
    sequences = window_sequences(probed)
    labels = probed.table[analysis["label_column"]]
    return [
        scored_row(
            kmer_frequencies(sequences, k, canonical),
            labels,
            analysis,
            method=f"{k}-mer frequencies, {'canonical' if canonical else 'forward strand'}",
            kind="kmer",
        )
        for k, canonical in itertools.product((3, 4, 5), (False, True))
    ]


def render(rows: list[Row], seconds: dict[str, float], markdown: bool) -> str:
    """One line per row: test metrics (mean ± std over the probe seeds), validation, CPU s."""
    header = ["method", "accuracy", "balanced acc.", "AUROC", "val: bal. acc. / AUROC", "CPU s"]
    lines = [
        [
            row.method,
            *(f"{row.probe[m]['mean']:.3f} ± {row.probe[m]['std']:.3f}" for m in METRICS),
            f"{row.validation['balanced_accuracy']:.3f} / {row.validation['auroc']:.3f}",
            f"{seconds[row.experiment]:.0f}" if row.experiment in seconds else "",
        ]
        for row in rows
    ]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])
    return "\n".join("\t".join(cells) for cells in [header, *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--experiment", action="append", help="only these (repeatable)")
    parser.add_argument("--probe-config", type=Path, default=REPO / "benchmarks/promoters.yaml")
    parser.add_argument("--probe-experiment", default="promoters_ecoli_rc_positives")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "promoters_genome")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, help="training seed of every experiment (its own)")
    parser.add_argument("--train-only", action="store_true", help="train, probe nothing")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.experiment or list(read_config_file(args.config)["experiments"])
    experiments = [load_experiment(args.config, name) for name in names]
    if args.seed is not None:
        for experiment in experiments:
            experiment["training"]["seed"] = args.seed
    probe = load_experiment(args.probe_config, args.probe_experiment)
    needed = [p for e in [*experiments, probe] for p in e["adapter"]["params"]["paths"]]
    missing = [p for p in needed if not (REPO / p).is_file()]
    if missing:
        print(f"skipping the genome-pretrained promoter benchmark: {missing[0]} not found")
        return 0
    trained = {e["name"]: pretrain(e, args.out, args.threads) for e in experiments}
    seconds = {name: cpu for name, (_, cpu, _) in trained.items()}
    print(json.dumps({name: {"cpu_s": cpu, "windows": n} for name, (_, cpu, n) in trained.items()}))
    if args.train_only:
        return 0
    probed, analysis = labelled_items(probe), probe["analysis"]
    rows = kmer_rows(probed, analysis)
    for experiment in experiments:
        rows += encoder_rows(experiment, trained[experiment["name"]][0], probed, analysis)
    summary = {r.method: {"test": r.probe, "val": r.validation} for r in rows}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1, default=float))
    print(render(rows, seconds, args.markdown))
    best = max(np.array([r.probe["balanced_accuracy"]["mean"] for r in rows if r.kind == "kmer"]))
    print(f"best k-mer balanced accuracy {best:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
