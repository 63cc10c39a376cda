"""The ``scicontrast`` command line: one parser builder per subcommand.

Each ``add_<subcommand>`` declares its subcommand's arguments; :func:`build_parser` puts them
together. The handlers that run them are :data:`scicontrast.cli.commands.COMMANDS`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

Subparsers = Any  # argparse's _SubParsersAction, private to argparse


def _with_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="config YAML/JSON")
    p.add_argument("--experiment", help="experiment name (optional when the config declares one)")


def add_resolve_config(sub: Subparsers) -> None:
    """The ``resolve-config`` subcommand."""
    p = sub.add_parser("resolve-config", help="validate, fill defaults, write one experiment")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="config YAML/JSON")
    source.add_argument("--json", help="the config as a JSON string (used by the workflow)")
    p.add_argument("--experiment")
    p.add_argument("--out", required=True, type=Path)


# The demo generators' parameters: (option, type, the domains that use it: what it is).
DEMO_OPTIONS: list[tuple[str, type, str]] = [
    ("--sources", int, "dna: sources of distinct composition"),
    ("--sequences-per-source", int, "dna"),
    ("--length", int, "dna: sequence length; genomes: genome length"),
    ("--blocks", int, "graph: stochastic-block-model blocks"),
    ("--nodes-per-block", int, "graph"),
    ("--p-in", float, "graph: edge probability in a block"),
    ("--p-out", float, "graph: ... between blocks"),
    ("--features", int, "graph: bag-of-words size"),
    ("--images", int, "grains: micrographs"),
    ("--size", int, "grains: micrograph side (pixels)"),
    ("--grains-per-image", int, "grains: Voronoi seeds"),
    ("--classes", int, "grains: orientation classes; audio-image: tone and shape classes"),
    ("--noise", float, "grains: noise std (0..1 scale)"),
    ("--blur", float, "grains: Gaussian blur (pixels)"),
    ("--events", int, "audio-image: events on the timeline"),
    ("--clock-offset-s", float, "audio-image: camera clock offset (s)"),
    ("--jitter-s", float, "audio-image: clock jitter (s)"),
    ("--dropout", float, "audio-image: events missing one side"),
    ("--image-size", int, "audio-image: image side (pixels)"),
    ("--clip-seconds", float, "audio-image: clip length (s)"),
    ("--species", int, "genomes: species"),
    ("--strains", int, "genomes: strains per species"),
    ("--divergence", float, "genomes: strain substitution rate"),
    ("--seed", int, "every domain"),
]


def add_demo_data(sub: Subparsers) -> None:
    """The ``demo-data`` subcommand. An option left out takes its default from the config
    schema (``demo_data.<domain>``), the one place the demo parameters are declared."""
    p = sub.add_parser("demo-data", help="generate an embedded demo data set")
    p.add_argument("domain", choices=["dna", "graph", "grains", "audio-image", "genomes"])
    p.add_argument("--out", required=True, type=Path)
    for option, kind, about in DEMO_OPTIONS:
        p.add_argument(option, type=kind, help=f"{about} (default: the config schema's)")


def add_segment(sub: Subparsers) -> None:
    """The ``segment`` subcommand."""
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


def add_synchronize(sub: Subparsers) -> None:
    """The ``synchronize`` subcommand."""
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


def add_cut_reads(sub: Subparsers) -> None:
    """The ``cut-reads`` subcommand."""
    p = sub.add_parser("cut-reads", help="cut reads from the genomes training held out")
    _with_config(p)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--length", required=True, type=int)
    p.add_argument("--out", required=True, type=Path)


def add_genome_eval(sub: Subparsers) -> None:
    """The ``genome-eval`` subcommand."""
    p = sub.add_parser("genome-eval", help="genome of origin of reads: encoder vs TNF, 5-mers")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--reads", required=True, type=Path, nargs="+", help="cut-reads folders")
    p.add_argument("--out", required=True, type=Path, help="JSON file")


def add_prepare(sub: Subparsers) -> None:
    """The ``prepare`` subcommand."""
    p = sub.add_parser("prepare", help="read raw data with the adapter into an items folder")
    _with_config(p)
    p.add_argument("--out", required=True, type=Path, help="items folder to write")


def add_pairs(sub: Subparsers) -> None:
    """The ``pairs`` subcommand."""
    p = sub.add_parser("pairs", help="build the positive-pairs table")
    _with_config(p)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="pairs Parquet file to write")


def add_train(sub: Subparsers) -> None:
    """The ``train`` subcommand."""
    p = sub.add_parser("train", help="train encoder + head with InfoNCE; resumes by default")
    _with_config(p)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="model folder")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")


def add_federate(sub: Subparsers) -> None:
    """The ``federate`` subcommand (instead of ``train`` for a ``federated`` experiment)."""
    p = sub.add_parser(
        "federate", help="train across the experiment's sites with Flower; resumes by default"
    )
    _with_config(p)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="model folder")
    p.add_argument("--stop-after-rounds", type=int, default=None, help="stop early (resumable)")


def add_embed(sub: Subparsers) -> None:
    """The ``embed`` subcommand."""
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
        "--workers", type=int, default=0, help="a loader process makes batches ahead (0: none)"
    )
    p.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="K/N",
        help="embed only shard K (from 0) of N of the items folder; join with gather-embeddings",
    )


def _shard(text: str) -> tuple[int, int]:
    """``K/N`` -> ``(K, N)`` with ``0 <= K < N``."""
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N, e.g. 0/4") from None
    if not 0 <= shard < shards:
        raise argparse.ArgumentTypeError(f"shard {shard} is not one of 0..{shards - 1}")
    return shard, shards


def add_gather_embeddings(sub: Subparsers) -> None:
    """The ``gather-embeddings`` subcommand."""
    p = sub.add_parser(
        "gather-embeddings", help="join embedding shards into one partitioned embeddings folder"
    )
    p.add_argument("shards", nargs="+", type=Path, help="shard folders, in shard order")
    p.add_argument("--out", required=True, type=Path, help="embeddings folder to write")


def add_cluster(sub: Subparsers) -> None:
    """The ``cluster`` subcommand."""
    p = sub.add_parser("cluster", help="k-means, HDBSCAN and Leiden on the embeddings")
    _with_config(p)
    p.add_argument("--embeddings", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)


def add_evaluate(sub: Subparsers) -> None:
    """The ``evaluate`` subcommand."""
    p = sub.add_parser("evaluate", help="linear probe, kNN and invariance score")
    _with_config(p)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--embeddings", required=True, type=Path)
    p.add_argument("--clusters", type=Path, help="clusters folder, to include in the summary")
    p.add_argument("--diagnostics", type=Path, help="diagnostics folder, to include in the summary")
    p.add_argument("--out", required=True, type=Path, help="metrics folder to write")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def add_diagnostics(sub: Subparsers) -> None:
    """The ``diagnostics`` subcommand."""
    p = sub.add_parser(
        "diagnostics", help="InfoNCE diagnostics on held-out data, against the untrained model"
    )
    _with_config(p)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--pairs", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="diagnostics folder to write")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def add_export(sub: Subparsers) -> None:
    """The ``export`` subcommand."""
    p = sub.add_parser("export", help="AnnData (.h5ad), TorchScript encoder and model card")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--items", required=True, type=Path)
    p.add_argument("--embeddings", required=True, type=Path)
    p.add_argument("--clusters", type=Path, help="clusters folder: categorical obs columns")
    p.add_argument("--out", required=True, type=Path, help="export folder to write")


def add_plots(sub: Subparsers) -> None:
    """The ``plots`` subcommand."""
    p = sub.add_parser("plots", help="t-SNE maps, training curves and diagnostics as PNG")
    _with_config(p)
    p.add_argument("--embeddings", required=True, type=Path)
    p.add_argument("--clusters", required=True, type=Path)
    p.add_argument("--training-metrics", required=True, type=Path, help="model/metrics.jsonl")
    p.add_argument("--diagnostics", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="plots folder to write")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for t-SNE")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``scicontrast``: its options and one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="scicontrast",
        description="Contrastive learning from scientific domain knowledge, one step at a time.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_resolve_config(sub)
    add_demo_data(sub)
    add_segment(sub)
    add_synchronize(sub)
    add_cut_reads(sub)
    add_genome_eval(sub)
    add_prepare(sub)
    add_pairs(sub)
    add_train(sub)
    add_federate(sub)
    add_embed(sub)
    add_gather_embeddings(sub)
    add_cluster(sub)
    add_evaluate(sub)
    add_diagnostics(sub)
    add_export(sub)
    add_plots(sub)
    return parser
