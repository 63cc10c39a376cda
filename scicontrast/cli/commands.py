"""The handlers of the ``scicontrast`` subcommands: thin shells around plain functions.

Each handler takes the parsed arguments (:mod:`scicontrast.cli.parsers`), imports what its
step needs when it runs (a DNA step never imports the graph stack) and returns nothing:
errors a user can act on are :class:`~scicontrast.errors.ScicontrastError`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scicontrast.errors import ScicontrastError
from scicontrast.experiment import Experiment

log = logging.getLogger("scicontrast")


def _experiment(args: argparse.Namespace) -> Experiment:
    from scicontrast.config import load_experiment

    return Experiment.from_dict(load_experiment(args.config, args.experiment))


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


def demo_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The demo generator's keyword arguments: the schema's defaults for the domain
    (``demo_data.<domain>``, ``out_dir`` aside), overridden by the options given."""
    from scicontrast.config import load_schema

    domain = args.domain.replace("-", "_")
    section = load_schema()["properties"]["demo_data"]["properties"][domain]["properties"]
    settings = {key: spec["default"] for key, spec in section.items() if key != "out_dir"}
    given = {key: getattr(args, key) for key in settings if getattr(args, key) is not None}
    return {**settings, **given}


def cmd_demo_data(args: argparse.Namespace) -> None:
    settings = demo_settings(args)
    if args.domain == "dna":
        from scicontrast.data_adapters.dna.demo import generate_demo_dna

        paths = generate_demo_dna(args.out, **settings)
        log.info("wrote %d demo FASTA files to %s", len(paths), args.out)
    elif args.domain == "genomes":
        from scicontrast.data_adapters.dna.demo_genomes import generate_demo_genomes

        paths = generate_demo_genomes(args.out, **settings)
        log.info("wrote %d demo genomes and genomes.tsv to %s", len(paths), args.out)
    elif args.domain == "graph":
        from scicontrast.data_adapters.graphs.demo import generate_demo_graph

        paths = generate_demo_graph(args.out, **settings)
        log.info("wrote the demo graph (%s) to %s", ", ".join(p.name for p in paths), args.out)
    elif args.domain == "grains":
        from scicontrast.data_adapters.grains.demo import generate_demo_grains

        paths = generate_demo_grains(args.out, **settings)
        log.info("wrote %d demo micrographs and their ground truth to %s", len(paths), args.out)
    else:
        from scicontrast.data_adapters.audio_image.demo import generate_demo_audio_image

        manifest = generate_demo_audio_image(args.out, **settings)
        log.info("wrote the demo recordings and %s", manifest)


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
    from scicontrast.data_adapters.audio_image.synchronization import synchronize

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
    from scicontrast.data_adapters.grains.folders import segment
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
    from scicontrast.data_adapters.chunks import CHUNK_ROWS, write_chunks
    from scicontrast.registry import ADAPTERS

    experiment = _experiment(args)
    adapter = ADAPTERS.create(experiment.adapter, where=f"experiments.{experiment.name}.adapter")
    # Chunk by chunk as the adapter reads, so an input larger than memory can be prepared.
    rows = write_chunks(adapter.read_chunks(CHUNK_ROWS), args.out)
    log.info("wrote %d items to %s", rows, args.out)


def cmd_pairs(args: argparse.Namespace) -> None:
    from scicontrast.data_adapters.pairs_table import write_pairs
    from scicontrast.registry import PAIR_BUILDERS

    experiment = _experiment(args)
    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"experiments.{experiment.name}.pairs")
    # Part by part as the builder yields them (an items row group at a time where it can).
    views, groups = write_pairs(args.out, builder.build_parts(Path(args.items)))
    log.info("wrote %d views in %d groups to %s", views, groups, args.out)


def cmd_train(args: argparse.Namespace) -> None:
    from scicontrast.models.train import train

    train(
        _experiment(args),
        items_dir=args.items,
        pairs_path=args.pairs,
        out_dir=args.out,
        resume=not args.no_resume,
        progress=not args.no_progress,
        num_threads=args.threads,
    )


def cmd_federate(args: argparse.Namespace) -> None:
    from scicontrast.models.federated import federate

    federate(_experiment(args), args.items, args.pairs, args.out, args.stop_after_rounds)


def cmd_embed(args: argparse.Namespace) -> None:
    from scicontrast.analysis.embed import embed
    from scicontrast.analysis.embed_files import embed_files

    items_folders = [p for p in args.inputs if (p / "items.parquet").exists()]
    if items_folders and len(args.inputs) > 1:
        raise ScicontrastError(
            f"{items_folders[0]} is an items folder: embed one items folder, or raw files"
        )
    if items_folders:
        embed(
            args.model,
            args.inputs[0],
            args.out,
            args.batch_size,
            args.device,
            args.workers,
            *args.shard,
        )
    elif args.shard != (0, 1):
        raise ScicontrastError("--shard splits an items folder; raw files are embedded whole")
    else:
        embed_files(args.model, args.inputs, args.out, args.batch_size, args.device, args.workers)
    log.info("wrote embeddings to %s", args.out)


def cmd_gather_embeddings(args: argparse.Namespace) -> None:
    from scicontrast.analysis.embed_shards import gather_shards

    rows = gather_shards(args.shards, args.out)
    log.info("gathered %d rows from %d shards into %s", rows, len(args.shards), args.out)


def cmd_cluster(args: argparse.Namespace) -> None:
    from scicontrast.analysis.cluster import cluster

    experiment = _experiment(args)
    analysis = experiment.analysis
    metrics = cluster(
        args.embeddings,
        args.out,
        label_column=analysis.label_column,
        kmeans_clusters=analysis.kmeans_clusters,
        hdbscan_min_cluster_size=analysis.hdbscan_min_cluster_size,
        hdbscan_pca_components=analysis.hdbscan_pca_components,
        seed=experiment.training.seed,
        methods=analysis.cluster_methods,
        leiden_resolution=analysis.leiden_resolution,
        leiden_neighbors=analysis.leiden_neighbors,
        exact_max_items=analysis.cluster_exact_max_items,
        leiden_sample_items=analysis.leiden_sample_items,
    )
    print(json.dumps(metrics, indent=2))


def cmd_diagnostics(args: argparse.Namespace) -> None:
    from scicontrast.analysis.diagnostics import diagnose
    from scicontrast.analysis.diagnostics_report import format_diagnostics

    analysis = _experiment(args).analysis
    result = diagnose(
        args.model,
        args.items,
        args.pairs,
        args.out,
        label_column=analysis.label_column,
        max_groups=analysis.diagnostics_max_groups,
        projections=analysis.gaussianity_projections,
        knn_k=analysis.knn_k,
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
        experiment_name=experiment.name,
        label_column=experiment.analysis.label_column,
        max_points=experiment.analysis.map_max_points,
        seed=experiment.training.seed,
        threads=args.threads,
    )
    log.info("wrote %s to %s", ", ".join(written), args.out)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from scicontrast.analysis.baselines import format_verdict
    from scicontrast.analysis.evaluate import evaluate
    from scicontrast.analysis.summary import format_report
    from scicontrast.io import atomic_path

    experiment = _experiment(args)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        evaluation = evaluate(
            args.model,
            args.items,
            args.pairs,
            args.embeddings,
            tmp / "evaluation.json",
            experiment.analysis,
            seed=experiment.training.seed,
            device=args.device,
        )
        clusters = None
        if args.clusters:
            clusters = json.loads((Path(args.clusters) / "metrics.json").read_text())
        report = format_report(evaluation, clusters)
        if args.diagnostics:
            from scicontrast.analysis.diagnostics_report import format_diagnostics

            diagnostics = json.loads((Path(args.diagnostics) / "diagnostics.json").read_text())
            report += "\n" + "\n".join(format_diagnostics(diagnostics)) + "\n"
        if "comparison" in evaluation:
            report += "\n".join(format_verdict(evaluation["comparison"])) + "\n"
        header = f"experiment {experiment.name}"
        (tmp / "summary.txt").write_text(f"{header}\n{report}\n")
    print(f"{header}\n{report}")


#: The handler of each subcommand, by its name on the command line.
COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "resolve-config": cmd_resolve_config,
    "demo-data": cmd_demo_data,
    "cut-reads": cmd_cut_reads,
    "genome-eval": cmd_genome_eval,
    "synchronize": cmd_synchronize,
    "segment": cmd_segment,
    "prepare": cmd_prepare,
    "pairs": cmd_pairs,
    "train": cmd_train,
    "federate": cmd_federate,
    "embed": cmd_embed,
    "gather-embeddings": cmd_gather_embeddings,
    "cluster": cmd_cluster,
    "diagnostics": cmd_diagnostics,
    "export": cmd_export,
    "plots": cmd_plots,
    "evaluate": cmd_evaluate,
}
