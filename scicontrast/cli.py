"""The ``scicontrast`` command: one subcommand per workflow step.

Each subcommand is a thin shell around a plain Python function, so every step runs (and is
tested) without Snakemake; the Snakemake rules call these same commands.

    scicontrast demo-data dna --out results/demo_data/dna
    scicontrast resolve-config --config config.yaml --experiment dna_demo --out R/config.json
    scicontrast prepare  --config R/config.json --out R/items
    scicontrast pairs    --config R/config.json --items R/items --out R/pairs.parquet
    scicontrast train    --config R/config.json --items R/items --pairs R/pairs.parquet \
                         --out R/model
    scicontrast embed R/items --model R/model/model.pt --out R/embeddings
    scicontrast cluster  --config R/config.json --embeddings R/embeddings --out R/clusters
    scicontrast evaluate --config R/config.json --model R/model/model.pt --items R/items \
                         --pairs R/pairs.parquet --embeddings R/embeddings \
                         --clusters R/clusters --out R/metrics

with R = results/dna_demo.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from scicontrast.errors import Preempted, ScicontrastError

log = logging.getLogger("scicontrast")


def _experiment(args: argparse.Namespace) -> dict:
    from scicontrast.config import load_experiment

    return load_experiment(args.config, args.experiment)


def cmd_resolve_config(args: argparse.Namespace) -> None:
    from scicontrast.config import (
        experiment_as_config,
        select_experiment,
        validate_config,
    )
    from scicontrast.io import write_json
    from scicontrast.workflow import check_components

    if args.json is not None:
        config = validate_config(json.loads(args.json), source="--json")
        source = "--json"
    else:
        from scicontrast.config import read_config_file

        config = read_config_file(args.config)
        source = str(args.config)
    experiment = select_experiment(config, args.experiment, source)
    resolved = experiment_as_config(experiment)
    check_components(resolved)
    write_json(args.out, resolved)


def cmd_demo_data(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.demo_dna import generate_demo_dna

    paths = generate_demo_dna(
        args.out,
        sources=args.sources,
        sequences_per_source=args.sequences_per_source,
        length=args.length,
        seed=args.seed,
    )
    log.info("wrote %d demo FASTA files to %s", len(paths), args.out)


def cmd_prepare(args: argparse.Namespace) -> None:
    from scicontrast.registry import ADAPTERS

    experiment = _experiment(args)
    adapter = ADAPTERS.create(
        experiment["adapter"], where=f"experiments.{experiment['name']}.adapter"
    )
    items = adapter.read()
    items.save(args.out)
    log.info("wrote %d items to %s", len(items), args.out)


def cmd_pairs(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.base import Items
    from scicontrast.io import write_parquet
    from scicontrast.registry import PAIR_BUILDERS

    experiment = _experiment(args)
    builder = PAIR_BUILDERS.create(
        experiment["pairs"], where=f"experiments.{experiment['name']}.pairs"
    )
    items = Items.load(args.items)
    pairs = builder.build(items)
    write_parquet(args.out, pairs)
    log.info("wrote %d views in %d groups to %s", len(pairs), pairs["group_id"].nunique(), args.out)


def cmd_train(args: argparse.Namespace) -> None:
    from scicontrast.models.train import train

    experiment = _experiment(args)
    train(
        experiment,
        items_dir=args.items,
        pairs_path=args.pairs,
        out_dir=args.out,
        resume=not args.no_resume,
        progress=not args.no_progress,
        num_threads=args.threads,
    )


def cmd_embed(args: argparse.Namespace) -> None:
    from scicontrast.analysis.embed import embed

    embed(args.model, args.items, args.out, batch_size=args.batch_size, device=args.device)
    log.info("wrote embeddings to %s", args.out)


def cmd_cluster(args: argparse.Namespace) -> None:
    from scicontrast.analysis.cluster import cluster

    experiment = _experiment(args)
    analysis = experiment["analysis"]
    metrics = cluster(
        args.embeddings,
        args.out,
        label_column=analysis["label_column"],
        kmeans_clusters=analysis["kmeans_clusters"],
        hdbscan_min_cluster_size=analysis["hdbscan_min_cluster_size"],
        hdbscan_pca_components=analysis["hdbscan_pca_components"],
        seed=experiment["training"]["seed"],
    )
    print(json.dumps(metrics, indent=2))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from scicontrast.analysis.evaluate import evaluate, format_report
    from scicontrast.io import atomic_path

    experiment = _experiment(args)
    analysis = experiment["analysis"]
    out = Path(args.out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        evaluation = evaluate(
            args.model,
            args.items,
            args.pairs,
            args.embeddings,
            tmp / "evaluation.json",
            label_column=analysis["label_column"],
            probe_test_fraction=analysis["probe_test_fraction"],
            probe_seeds=analysis["probe_seeds"],
            knn_k=analysis["knn_k"],
            invariance_negatives=analysis["invariance_negatives"],
            seed=experiment["training"]["seed"],
            device=args.device,
        )
        clusters = None
        if args.clusters:
            clusters = json.loads((Path(args.clusters) / "metrics.json").read_text())
        report = format_report(evaluation, clusters)
        header = f"experiment {experiment['name']}"
        (tmp / "summary.txt").write_text(f"{header}\n{report}\n")
    print(f"{header}\n{report}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scicontrast",
        description="Contrastive learning from scientific domain knowledge, one step at a time.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, type=Path, help="config YAML/JSON")
        p.add_argument(
            "--experiment", help="experiment name (optional when the config declares one)"
        )

    p = sub.add_parser("resolve-config", help="validate, fill defaults, write one experiment")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="config YAML/JSON")
    source.add_argument("--json", help="the config as a JSON string (used by the workflow)")
    p.add_argument("--experiment")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_resolve_config)

    p = sub.add_parser("demo-data", help="generate an embedded demo data set")
    p.add_argument("domain", choices=["dna"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--sequences-per-source", type=int, default=150)
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("prepare", help="read raw data with the adapter into an items folder")
    with_config(p)
    p.add_argument("--out", required=True, type=Path, help="items folder to write")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pairs", help="build the positive-pairs table")
    with_config(p)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="pairs Parquet file to write")
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("train", help="train encoder + head with InfoNCE; resumes by default")
    with_config(p)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="model folder")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="embed an items folder with a trained model")
    p.add_argument("items", type=Path, help="items folder (from 'prepare')")
    p.add_argument("--model", required=True, type=Path, help="model.pt from 'train'")
    p.add_argument("--out", required=True, type=Path, help="embeddings folder to write")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("cluster", help="k-means and HDBSCAN on the embeddings")
    with_config(p)
    p.add_argument("--embeddings", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("evaluate", help="linear probe, kNN and invariance score")
    with_config(p)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--embeddings", required=True, type=Path)
    p.add_argument("--clusters", type=Path, help="clusters folder, to include in the summary")
    p.add_argument("--out", required=True, type=Path, help="metrics folder to write")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)
    try:
        args.func(args)
    except Preempted as exc:
        print(f"scicontrast {args.command}: {exc}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ScicontrastError as exc:
        print(f"scicontrast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
