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
    scicontrast federate --config R/config.json --items R/items --pairs R/pairs.parquet \
                         --out R/model      (instead of train, for a `federated` experiment)
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

import logging
import os
import signal
import sys

from scicontrast.cli.commands import COMMANDS
from scicontrast.cli.parsers import build_parser
from scicontrast.errors import Preempted, ScicontrastError


def main(argv: list[str] | None = None) -> int:
    # Arrow's default pool (mimalloc) keeps what it frees: reading the 4 columns of 10^5
    # items rows left 56 MiB resident, the C allocator 20 (docs/experiments/
    # audio_image_scale.md). Before pyarrow is imported; a user's own setting wins.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)
    try:
        COMMANDS[args.command](args)
    except Preempted as exc:
        print(f"scicontrast {args.command}: {exc}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ScicontrastError as exc:
        print(f"scicontrast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
