"""The ``scicontrast`` command: one subcommand per workflow step.

Each subcommand is a thin shell around a plain Python function, so every step runs (and is
tested) without Snakemake; the Snakemake rules call these same commands.

    scicontrast demo-data dna --out results/demo_data/dna
    scicontrast demo-data graph --out results/demo_data/graph
    scicontrast demo-data grains --out results/demo_data/grains
    scicontrast segment results/demo_data/grains/micrographs --out results/segmentations/S
    scicontrast demo-data audio-image --out results/demo_data/audio_image
    scicontrast synchronize results/demo_data/audio_image/manifest.csv \
                         --out results/synchronizations/S --truth-column true_event
    scicontrast resolve-config --config config.yaml --experiment dna_demo --out R/config.json
    scicontrast prepare  --config R/config.json --out R/items
    scicontrast pairs    --config R/config.json --items R/items --out R/pairs.parquet
    scicontrast train    --config R/config.json --items R/items --pairs R/pairs.parquet \
                         --out R/model
    scicontrast embed R/items --model R/model/model.pt --out R/embeddings
    scicontrast embed R/items --model R/model/model.pt --shard 0/4 --out R/embedding_shards/0
    scicontrast gather-embeddings R/embedding_shards/{0,1,2,3} --out R/embeddings
    scicontrast cluster  --config R/config.json --embeddings R/embeddings --out R/clusters
    scicontrast diagnostics --config R/config.json --model R/model/model.pt --items R/items \
                         --pairs R/pairs.parquet --out R/diagnostics
    scicontrast evaluate --config R/config.json --model R/model/model.pt --items R/items \
                         --pairs R/pairs.parquet --embeddings R/embeddings \
                         --clusters R/clusters --diagnostics R/diagnostics --out R/metrics
    scicontrast export   --model R/model/model.pt --items R/items --embeddings R/embeddings \
                         --clusters R/clusters --out R/export
    scicontrast plots    --config R/config.json --embeddings R/embeddings \
                         --clusters R/clusters --training-metrics R/model/metrics.jsonl \
                         --diagnostics R/diagnostics --out R/plots

with R = results/dna_demo. New raw files go through the adapter a model was trained with:

    scicontrast embed new.fa more.fa --model R/model/model.pt --out new_embeddings
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


def _shard(text: str) -> tuple[int, int]:
    """``K/N`` -> ``(K, N)`` with ``0 <= K < N``."""
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N, e.g. 0/4") from None
    if not 0 <= shard < shards:
        raise argparse.ArgumentTypeError(f"shard {shard} is not one of 0..{shards - 1}")
    return shard, shards


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
    if args.domain == "graph":
        return _demo_graph(args)
    if args.domain == "grains":
        return _demo_grains(args)
    if args.domain == "audio-image":
        return _demo_audio_image(args)
    if args.domain == "genomes":
        return _demo_genomes(args)
    from scicontrast.data_adapters.demo_dna import generate_demo_dna

    paths = generate_demo_dna(
        args.out,
        sources=args.sources,
        sequences_per_source=args.sequences_per_source,
        length=300 if args.length is None else args.length,
        seed=args.seed,
    )
    log.info("wrote %d demo FASTA files to %s", len(paths), args.out)


def _demo_graph(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.demo_graph import generate_demo_graph

    paths = generate_demo_graph(
        args.out,
        blocks=args.blocks,
        nodes_per_block=args.nodes_per_block,
        p_in=args.p_in,
        p_out=args.p_out,
        features=args.features,
        seed=args.seed,
    )
    log.info("wrote the demo graph (%s) to %s", ", ".join(p.name for p in paths), args.out)


def _demo_grains(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.demo_grains import generate_demo_grains

    paths = generate_demo_grains(
        args.out,
        images=args.images,
        size=args.size,
        grains_per_image=args.grains_per_image,
        classes=args.classes,
        noise=args.noise,
        blur=args.blur,
        seed=args.seed,
    )
    log.info("wrote %d demo micrographs and their ground truth to %s", len(paths), args.out)


def _demo_audio_image(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.demo_audio_image import generate_demo_audio_image

    manifest = generate_demo_audio_image(
        args.out,
        events=args.events,
        classes=args.classes,
        clock_offset_s=args.clock_offset_s,
        jitter_s=args.jitter_s,
        dropout=args.dropout,
        image_size=args.image_size,
        seed=args.seed,
    )
    log.info("wrote the demo recordings and %s", manifest)


def _demo_genomes(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.demo_genomes import generate_demo_genomes

    paths = generate_demo_genomes(
        args.out,
        species=args.species,
        strains=args.strains,
        length=40_000 if args.length is None else args.length,
        divergence=args.divergence,
        seed=args.seed,
    )
    log.info("wrote %d demo genomes and genomes.tsv to %s", len(paths), args.out)


def cmd_cut_reads(args: argparse.Namespace) -> None:
    from scicontrast.analysis.genome_eval import held_out_reads

    reads = held_out_reads(_experiment(args), args.items, args.pairs, args.length)
    reads.save(args.out)
    log.info("wrote %d reads of %d nt to %s", len(reads), args.length, args.out)


def cmd_genome_eval(args: argparse.Namespace) -> None:
    from scicontrast.analysis.genome_eval import evaluate_genome_reads

    results = evaluate_genome_reads(args.model, args.reads, args.out)
    for reads, rows in results.items():
        for name, scores in rows.items():
            print(reads, name, " ".join(f"{k}={v:.3f}" for k, v in scores.items()))


def cmd_synchronize(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.audio_image import synchronize

    summary = synchronize(
        args.manifests,
        args.out,
        reference_device=args.reference_device,
        tolerance_s=args.tolerance_s,
        max_offset_s=args.max_offset_s,
        truth_column=args.truth_column,
        device_column=args.device_column,
        file_column=args.file_column,
        time_column=args.time_column,
        modality_column=args.modality_column,
    )
    offsets = ", ".join(
        f"{device} {info['offset_s']:+.3f} s" for device, info in summary["devices"].items()
    )
    log.info(
        "%d pairs (unmatched: %d audio, %d image); offsets vs %s: %s; wrote %s",
        summary["pairs"],
        summary["unmatched"]["audio"],
        summary["unmatched"]["image"],
        summary["reference_device"],
        offsets,
        args.out,
    )
    if "pairing" in summary:
        precision = summary["pairing"]["precision"]
        log.info("pairing precision against %s: %.4f", args.truth_column, precision)


def cmd_segment(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.grains import segment
    from scicontrast.errors import ConfigError

    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"segment --params: not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ConfigError("segment --params: expected a JSON object of parameters")
    annotations = {}
    for entry in args.annotation:
        column, sep, location = entry.partition("=")
        if not sep or not column or not location:
            raise ConfigError(f"segment --annotation {entry!r}: write COLUMN=LOCATION")
        annotations[column] = location
    summary = segment(
        args.paths,
        args.out,
        params=params,
        pixel_size_um=args.pixel_size_um,
        annotations=annotations,
    )
    log.info(
        "segmented %d images into %d grains (%d skipped) in %s",
        len(summary["images"]),
        summary["grains"],
        len(summary["skipped"]),
        args.out,
    )


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
    from scicontrast.analysis.embed import embed, embed_files

    items_folders = [p for p in args.inputs if (p / "items.parquet").is_file()]
    if items_folders and len(args.inputs) > 1:
        raise ScicontrastError(
            f"{items_folders[0]} is an items folder: embed one items folder, or raw files"
        )
    if items_folders:
        embed(args.model, args.inputs[0], args.out, args.batch_size, args.device, *args.shard)
    elif args.shard != (0, 1):
        raise ScicontrastError("--shard splits an items folder; raw files are embedded whole")
    else:
        embed_files(args.model, args.inputs, args.out, args.batch_size, args.device)
    log.info("wrote embeddings to %s", args.out)


def cmd_gather_embeddings(args: argparse.Namespace) -> None:
    from scicontrast.analysis.embed_shards import gather_shards

    rows = gather_shards(args.shards, args.out)
    log.info("gathered %d rows from %d shards into %s", rows, len(args.shards), args.out)


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
        methods=analysis["cluster_methods"],
        leiden_resolution=analysis["leiden_resolution"],
        leiden_neighbors=analysis["leiden_neighbors"],
        exact_max_items=analysis["cluster_exact_max_items"],
    )
    print(json.dumps(metrics, indent=2))


def cmd_diagnostics(args: argparse.Namespace) -> None:
    from scicontrast.analysis.diagnostics import diagnose, format_diagnostics

    analysis = _experiment(args)["analysis"]
    result = diagnose(
        args.model,
        args.items,
        args.pairs,
        args.out,
        label_column=analysis["label_column"],
        max_groups=analysis["diagnostics_max_groups"],
        projections=analysis["gaussianity_projections"],
        knn_k=analysis["knn_k"],
        device=args.device,
    )
    print("\n".join(format_diagnostics(result)))


def cmd_export(args: argparse.Namespace) -> None:
    from scicontrast.analysis.export import export

    card = export(args.model, args.items, args.embeddings, args.out, args.clusters)
    log.info("wrote %s to %s", ", ".join(card["files"].values()), args.out)


def cmd_plots(args: argparse.Namespace) -> None:
    from scicontrast.analysis.plots import make_plots

    experiment = _experiment(args)
    written = make_plots(
        args.embeddings,
        args.clusters,
        args.training_metrics,
        args.diagnostics,
        args.out,
        experiment_name=experiment["name"],
        label_column=experiment["analysis"]["label_column"],
        max_points=experiment["analysis"]["map_max_points"],
        seed=experiment["training"]["seed"],
        threads=args.threads,
    )
    log.info("wrote %s to %s", ", ".join(written), args.out)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from scicontrast.analysis.baselines import format_verdict
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
            probe_scaling=analysis["probe_scaling"],
            probe_class_weight=analysis["probe_class_weight"],
            probe_group_column=analysis["probe_group_column"],
            knn_k=analysis["knn_k"],
            invariance_negatives=analysis["invariance_negatives"],
            seed=experiment["training"]["seed"],
            device=args.device,
            baselines=analysis["baselines"],
            untrained_control=analysis["untrained_control"],
        )
        clusters = None
        if args.clusters:
            clusters = json.loads((Path(args.clusters) / "metrics.json").read_text())
        report = format_report(evaluation, clusters)
        if args.diagnostics:
            from scicontrast.analysis.diagnostics import format_diagnostics

            diagnostics = json.loads((Path(args.diagnostics) / "diagnostics.json").read_text())
            report += "\n" + "\n".join(format_diagnostics(diagnostics)) + "\n"
        if "comparison" in evaluation:
            report += "\n".join(format_verdict(evaluation["comparison"])) + "\n"
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
    p.add_argument("domain", choices=["dna", "graph", "grains", "audio-image", "genomes"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--sequences-per-source", type=int, default=150)
    p.add_argument(
        "--length", type=int, default=None, help="dna: sequence length (300); genomes (40000)"
    )
    p.add_argument("--blocks", type=int, default=4, help="graph: stochastic-block-model blocks")
    p.add_argument("--nodes-per-block", type=int, default=100, help="graph")
    p.add_argument("--p-in", type=float, default=0.06, help="graph: edge probability in a block")
    p.add_argument("--p-out", type=float, default=0.0075, help="graph: ... between blocks")
    p.add_argument("--features", type=int, default=64, help="graph: bag-of-words size")
    p.add_argument("--images", type=int, default=8, help="grains: micrographs")
    p.add_argument("--size", type=int, default=320, help="grains: micrograph side (pixels)")
    p.add_argument("--grains-per-image", type=int, default=60, help="grains: Voronoi seeds")
    p.add_argument("--classes", type=int, default=4, help="grains: orientation classes")
    p.add_argument("--noise", type=float, default=0.04, help="grains: noise std (0..1 scale)")
    p.add_argument("--blur", type=float, default=0.8, help="grains: Gaussian blur (pixels)")
    p.add_argument("--events", type=int, default=240, help="audio-image: events on the timeline")
    p.add_argument(
        "--clock-offset-s", type=float, default=3.7, help="audio-image: camera clock offset (s)"
    )
    p.add_argument("--jitter-s", type=float, default=0.05, help="audio-image: clock jitter (s)")
    p.add_argument(
        "--dropout", type=float, default=0.05, help="audio-image: events missing one side"
    )
    p.add_argument("--image-size", type=int, default=24, help="audio-image: image side (pixels)")
    p.add_argument("--species", type=int, default=3, help="genomes: species")
    p.add_argument("--strains", type=int, default=2, help="genomes: strains per species")
    p.add_argument(
        "--divergence", type=float, default=0.03, help="genomes: strain substitution rate"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("segment", help="segment micrographs into grains (labels, tables, overlays)")
    p.add_argument("paths", nargs="+", help="image files, glob patterns or folders")
    p.add_argument("--out", required=True, type=Path, help="segmentation folder to write")
    p.add_argument(
        "--params", default="{}", help="segmentation parameters as JSON, e.g. '{\"h\": 2}'"
    )
    p.add_argument("--pixel-size-um", type=float, help="micrometres per pixel")
    p.add_argument(
        "--annotation",
        action="append",
        default=[],
        metavar="COLUMN=LOCATION",
        help="per-pixel integer annotation: a template with {image} or a folder of <image>.png",
    )
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "synchronize", help="estimate device clock offsets and pair audio with image events"
    )
    p.add_argument("manifests", nargs="+", type=Path, help="manifests (CSV, TSV or Parquet)")
    p.add_argument("--out", required=True, type=Path, help="synchronisation folder to write")
    p.add_argument("--reference-device", help="default: the audio device with most events")
    p.add_argument("--tolerance-s", type=float, default=0.25, help="pairing tolerance (s)")
    p.add_argument("--max-offset-s", type=float, default=10.0, help="offset search range (s)")
    p.add_argument("--truth-column", help="ground-truth event id column: scores the pairing")
    p.add_argument("--device-column", default="device")
    p.add_argument("--file-column", default="file")
    p.add_argument("--time-column", default="time")
    p.add_argument("--modality-column", default="modality")
    p.set_defaults(func=cmd_synchronize)

    p = sub.add_parser("cut-reads", help="cut reads from the genomes training held out")
    with_config(p)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--length", required=True, type=int)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_cut_reads)

    p = sub.add_parser("genome-eval", help="genome of origin of reads: encoder vs TNF, 5-mers")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--reads", required=True, type=Path, nargs="+", help="cut-reads folders")
    p.add_argument("--out", required=True, type=Path, help="JSON file")
    p.set_defaults(func=cmd_genome_eval)

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

    p = sub.add_parser(
        "embed", help="embed an items folder, or new raw files, with a trained model"
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="ITEMS_OR_FILE",
        help="an items folder (from 'prepare'), or raw files read with the model's adapter",
    )
    p.add_argument("--model", required=True, type=Path, help="model.pt from 'train'")
    p.add_argument("--out", required=True, type=Path, help="embeddings folder to write")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="K/N",
        help="embed only shard K (from 0) of N of the items folder; join with gather-embeddings",
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "gather-embeddings", help="join embedding shards into one partitioned embeddings folder"
    )
    p.add_argument("shards", nargs="+", type=Path, help="shard folders, in shard order")
    p.add_argument("--out", required=True, type=Path, help="embeddings folder to write")
    p.set_defaults(func=cmd_gather_embeddings)

    p = sub.add_parser("cluster", help="k-means, HDBSCAN and Leiden on the embeddings")
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
    p.add_argument("--diagnostics", type=Path, help="diagnostics folder, to include in the summary")
    p.add_argument("--out", required=True, type=Path, help="metrics folder to write")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "diagnostics", help="InfoNCE diagnostics on held-out data, against the untrained model"
    )
    with_config(p)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="diagnostics folder to write")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_diagnostics)

    p = sub.add_parser("export", help="AnnData (.h5ad), TorchScript encoder and model card")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--embeddings", required=True, type=Path)
    p.add_argument("--clusters", type=Path, help="clusters folder: categorical obs columns")
    p.add_argument("--out", required=True, type=Path, help="export folder to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plots", help="t-SNE maps, training curves and diagnostics as PNG")
    with_config(p)
    p.add_argument("--embeddings", required=True, type=Path)
    p.add_argument("--clusters", required=True, type=Path)
    p.add_argument("--training-metrics", required=True, type=Path, help="model/metrics.jsonl")
    p.add_argument("--diagnostics", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="plots folder to write")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for t-SNE")
    p.set_defaults(func=cmd_plots)
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
