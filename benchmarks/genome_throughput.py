"""Embedding speed of the genomes encoder: reads of 500 nt per second, wall and CPU.

::

    python benchmarks/genome_throughput.py --threads 1 --batch-sizes 32 64 512
    python benchmarks/genome_throughput.py --threads 2 --batch-sizes 64

Embeds ``--reads`` random reads of ``--length`` nt (speed does not depend on the bases or the
weights) with the encoder of ``benchmarks/genomes.yaml`` (experiment ``genomes``) through
:func:`~scicontrast.analysis.genome_eval.embed_reads`, ``--repeats`` times per batch size,
and prints per run the reads per wall-clock second and per CPU-second of this process
(``time.process_time``). On a shared machine the wall-clock rate is what the other jobs leave;
the CPU-second rate is what the cores this process got delivered (issue 25's target: 1,000
reads/s of 500 nt on 2 cores). Needs no data.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from scicontrast.analysis.genome_eval import embed_reads
from scicontrast.config import load_experiment
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/genomes.yaml")
    parser.add_argument("--experiment", default="genomes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = build_model(
        Experiment.from_dict(load_experiment(args.config, args.experiment))
    ).encoder.eval()
    codes = np.random.default_rng(0).integers(1, 5, size=(args.reads, args.length), dtype=np.uint8)
    embed_reads(encoder, codes[:128])  # warm-up
    for batch_size in args.batch_sizes:
        for _ in range(args.repeats):
            cpu, wall = time.process_time(), time.perf_counter()
            embed_reads(encoder, codes, batch_size)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(
                f"threads {args.threads}, {batch_size} reads per pass: "
                f"{args.reads / wall:.0f} reads/s wall ({codes.size / wall:,.0f} nt/s), "
                f"{args.reads / cpu:.0f} reads per CPU-second ({codes.size / cpu:,.0f} nt)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
