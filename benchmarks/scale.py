"""The workflow at 10^4, 10^5 (and 10^6) items per domain: wall time and peak memory per step.

::

    python benchmarks/scale.py --sizes 10000 100000 --out /tmp/scale --cores 2
    python benchmarks/scale.py --sizes 100000 --device cuda --out /tmp/scale_gpu   # a GPU node
    python benchmarks/scale.py --sizes 100000 --device cuda --runner cli --budget-s 240 \
        --genomes DIR --out /tmp/scale_gpu     # no Snakemake there (benchmarks/scale_runner.py)

For each size ``n`` this writes a run folder ``<out>/<n>`` with generated inputs and a
``config.yaml`` of four experiments, runs the real workflow (Snakemake, the repository's
``Snakefile``) up to each experiment's ``clusters`` with ``training.epochs: 1``, and prints
the ``s`` (wall seconds), ``cpu_time`` (CPU seconds, the measure that a shared machine's
load does not inflate) and ``max_rss`` (peak resident MiB) of the steps ``prepare``,
``pairs``, ``train`` (one epoch), ``embed`` and ``cluster`` from the rules' Snakemake
``benchmark:`` files. The experiments:

``dna``
    ``n`` reads of 150 nt (plus 8 nt flanks for the shifts) cut at seeded random positions
    from four genomes of ``../shared/data/genomes`` (one FASTA per genome; skipped when the
    folder is absent),
    ``dna_fasta`` + ``dna_views`` (reverse complement, shifts) + ``dna_cnn``.
``images``
    ``n`` generated 64 px grey PNGs (four classes of oriented gratings with noise),
    ``image_folder`` + ``rotations`` + ``image_cnn``.
``graph``
    a stochastic block model of ``n`` nodes and about ``10 n`` directed edges (20 blocks),
    ``graph_table`` + ``graph_neighbor_views`` (mini-batches) + ``gcn``.
``audio_image``
    the synchronized audio-image demo with ``n / 2`` events (``n`` items: a clip and an
    image per event), ``audio_image`` + ``synchronized_pairs`` + ``two_tower``, with clips
    of ``AV_CLIP_SECONDS`` (0.125 s, recorded and read; the demo's are 0.6 s) at every size:
    a 16 kHz stereo WAV of 0.125 s fills two 4 KiB disk blocks, so 10^6 items (inputs,
    items set) take about 9 GB instead of 30. No held-out events (the demo holds out a
    quarter), as in the other experiments: a held-out pass is a forward pass over a quarter
    of the set, which ``embed`` measures, not part of the capped epoch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
GENOMES = REPO.parent / "shared" / "data" / "genomes"
GENOME_FILES = (
    "Escherichia_coli_K_12_MG1655",
    "Helicobacter_pylori_G27",
    "Bradyrhizobium_japonicum_USDA_110",
    "Arabidopsis_thaliana_mitochondrion",
)
STEPS = ("prepare", "pairs", "train", "embed", "cluster")
# Views a pair builder makes per object: two per read, image or node, one clip + one image
# per event (an event is two items).
VIEWS_PER_ITEM = {"scale_audio_image": 1}
READ_LENGTH = 150
FLANK = 8  # bases either side of the read: room for dna_views' shifts
AV_CLIP_SECONDS = 0.125  # audio-image clips at every size (module docstring)


def dna_reads(folder: Path, n: int, seed: int, genomes: Path = GENOMES) -> list[str] | None:
    """Write ``n`` reads cut from four genomes, one FASTA each; ``None`` without genomes."""
    if not genomes.is_dir():
        return None
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(GENOME_FILES):
        with gzip.open(genomes / f"{name}.fa.gz", "rt") as handle:
            genome = "".join(line.strip() for line in handle if not line.startswith(">"))
        cut = READ_LENGTH + 2 * FLANK
        starts = rng.integers(0, len(genome) - cut, size=n // 4 + (k < n % 4))
        path = folder / f"{name}.fa"
        path.write_text("".join(f">r{i}\n{genome[s : s + cut]}\n" for i, s in enumerate(starts)))
        paths.append(str(path))
    return paths


def grating_images(folder: Path, n: int, seed: int) -> Path:
    """Write ``n`` 64 px grey PNG gratings of four orientations; return the labels CSV."""
    from skimage.io import imsave

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    classes = rng.integers(0, 4, size=n)
    rows = []
    for i, label in enumerate(classes):
        angle = label * np.pi / 4 + rng.normal(0, 0.05)
        wave = np.sin(2 * np.pi * 6 * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.random() * 6)
        image = np.clip(0.5 + 0.3 * wave + rng.normal(0, 0.1, wave.shape), 0, 1)
        name = f"img_{i:07d}.png"
        imsave(folder / name, (image * 255).astype(np.uint8), check_contrast=False)
        rows.append((name, int(label)))
    labels = folder.parent / "image_labels.csv"
    pd.DataFrame(rows, columns=["file", "orientation"]).to_csv(labels, index=False)
    return labels


def sbm_tables(folder: Path, n: int, seed: int) -> None:
    """Write ``nodes.csv`` (id, block, 16 features) and ``edges.csv`` of a block model."""
    sys.path.insert(0, str(Path(__file__).parent))
    from graph_scale import sbm_items

    items = sbm_items(n, 5 * n, blocks=20, p_in=0.8, features=16, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    nodes = pd.DataFrame(items.arrays["features"], columns=[f"f{i}" for i in range(16)])
    nodes.insert(0, "block", items.table["block"].to_numpy())
    nodes.insert(0, "node_id", items.table["item_id"].to_numpy())
    nodes.to_csv(folder / "nodes.csv", index=False)
    edges = items.extras["edge_index"]
    pd.DataFrame({"source": edges[0], "target": edges[1]}).to_csv(folder / "edges.csv", index=False)


def generated(folder: Path, make: Callable[[], Any]) -> Any:
    """``make()``'s result, generated once: a rerun of the same size reuses the inputs (and
    Snakemake its finished steps); ``folder/result.json`` marks a finished generation."""
    marker = folder / "result.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    result = make()
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(result))
    return result


def experiments(run: Path, n: int, args: argparse.Namespace) -> dict:
    """The experiments of one run folder (``only`` these; inputs generated as a side effect)."""
    training = {"epochs": 1, "seed": 0, "device": args.device}
    training["max_steps_per_epoch"] = args.max_steps
    wanted = set(args.only or ("scale_dna", "scale_images", "scale_graph", "scale_audio_image"))
    inputs = run / "inputs"
    found: dict = {}
    reads = None
    if "scale_dna" in wanted:
        reads = generated(inputs / "dna", lambda: dna_reads(inputs / "dna", n, 0, args.genomes))
    if reads is not None:
        found["scale_dna"] = {
            "adapter": {
                "name": "dna_fasta",
                "params": {
                    "paths": reads,
                    "window": READ_LENGTH,
                    "stride": READ_LENGTH,
                    "flank": FLANK,
                    "label_from_filename": r"(?P<genome>[^/]+)\.fa$",
                },
            },
            "pairs": {"name": "dna_views", "params": {"reverse_complement": True, "max_shift": 8}},
            "encoder": {"name": "dna_cnn", "params": {"rc_invariant": True, "embedding_dim": 64}},
            "loss": {"temperature": 0.1},
            "training": {**training, "batch_size": 256},
            "analysis": {"label_column": "genome"},
        }
    if "scale_images" in wanted:
        images = inputs / "images"
        labels = generated(images, lambda: str(grating_images(images, n, 0)))
        found["scale_images"] = {
            "adapter": {
                "name": "image_folder",
                "params": {"paths": str(images), "size": 64, "grayscale": True, "labels": labels},
            },
            "pairs": {"name": "rotations", "params": {"angles": "continuous"}},
            "encoder": {
                "name": "image_cnn",
                "params": {"in_channels": 1, "channels": [16, 32, 64]},
            },
            "training": {**training, "batch_size": 256},
            "analysis": {},
        }
    if "scale_graph" in wanted:
        graph = inputs / "graph"
        generated(graph, lambda: sbm_tables(graph, n, 0))
        found["scale_graph"] = {
            "adapter": {
                "name": "graph_table",
                "params": {
                    "nodes": str(graph / "nodes.csv"),
                    "edges": str(graph / "edges.csv"),
                    "label_column": "block",
                },
            },
            "pairs": {"name": "graph_neighbor_views", "params": {"batch_nodes": 1024}},
            "encoder": {"name": "gcn", "params": {"embedding_dim": 64}},
            "training": training,
            "analysis": {"label_column": "block"},
        }
    if "scale_audio_image" in wanted:
        demo = yaml.safe_load((REPO / "config.yaml").read_text())
        av = demo["experiments"]["audio_image_demo"]
        av["training"] = {**av["training"], **training, "holdout_fraction": 0.0}
        av["adapter"]["params"]["clip_seconds"] = AV_CLIP_SECONDS
        found["scale_audio_image"] = av
    return found


def write_config(run: Path, n: int, args: argparse.Namespace) -> list[str]:
    """Write ``run/config.yaml``; return the experiment names."""
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    demo_data = demo["demo_data"]
    demo_data["audio_image"].update(events=n // 2, clip_seconds=AV_CLIP_SECONDS)
    config = {
        "demo_data": demo_data,
        "segmentations": {},
        "synchronizations": {"audio_image_demo": demo["synchronizations"]["audio_image_demo"]},
        "experiments": experiments(run, n, args),
    }
    if args.cluster_methods:
        for experiment in config["experiments"].values():
            experiment.setdefault("analysis", {})["cluster_methods"] = args.cluster_methods
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return list(config["experiments"])


def step_table(run: Path, names: list[str], n: int) -> list[dict]:
    """One row per experiment and step from the rules' benchmark files; the train row's
    per-item CPU time counts the items that trained (all but the held-out, or the capped
    epoch's ``steps x batch`` groups: the run's setup is then spread over fewer items)."""
    rows = []
    for name in names:
        for step in STEPS:
            tsv = run / "results" / name / "benchmarks" / f"{step}.tsv"
            if not tsv.is_file():
                continue
            record = pd.read_csv(tsv, sep="\t").iloc[0]
            seconds, cpu = float(record["s"]), float(record["cpu_time"])
            items = trained_items(run, name) if step == "train" else n
            rows.append({"items": n, "experiment": name, "step": step, "s": seconds})
            rows[-1].update(
                {"cpu s": cpu, "step items": items, "cpu s/1e4 items": cpu / items * 1e4}
            )
            rows[-1]["peak MiB"] = float(record["max_rss"])
    return rows


def trained_items(run: Path, name: str) -> float:
    """Objects (groups) of the epoch's steps, from the step lines of metrics.jsonl and the
    epoch line's views per second (views / groups is the builder's views per object)."""
    folder = run / "results" / name
    lines = [json.loads(line) for line in (folder / "model" / "metrics.jsonl").open()]
    epoch = next(line for line in lines if line["kind"] == "epoch")
    views = epoch["samples_per_second"] * epoch["seconds"]
    return views / VIEWS_PER_ITEM.get(name, 2)


def loader_rates(run: Path, name: str, batches: int, workers: int) -> dict:
    """Loader against model on the experiment's first ``batches`` training batches: views
    per wall second with ``workers`` loader processes and per CPU second in this process,
    the plain loop's model steps per CPU second (throughput.py), and the trainer's views
    per wall second from metrics.jsonl (whole capped or full epoch)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from throughput import loader_views_per_second, model_views_per_cpu_second

    from scicontrast.config import load_experiment

    folder = run / "results" / name
    experiment = load_experiment(folder / "config.json")
    inputs = (folder / "items", folder / "pairs.parquet")
    wall, _ = loader_views_per_second(experiment, *inputs, workers, batches)
    _, per_cpu = loader_views_per_second(experiment, *inputs, 0, batches)
    model = model_views_per_cpu_second(experiment, *inputs, batches)
    lines = [json.loads(line) for line in (folder / "model" / "metrics.jsonl").open()]
    train = next(line for line in lines if line["kind"] == "epoch")["samples_per_second"]
    return {
        "experiment": name,
        f"loader views/s ({workers} workers)": wall,
        "train views/s": train,
        "loader / train (wall)": wall / train,
        "loader views/CPU s": per_cpu,
        "model views/CPU s": model,
        "loader / model (CPU)": per_cpu / model,
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--only", nargs="+", help="experiment names to run, in rank (default: all)")
    parser.add_argument(
        "--max-steps",
        type=int,
        help="cap the training epoch at this many steps (training.max_steps_per_epoch)",
    )
    parser.add_argument(
        "--loader-batches", type=int, default=20, help="batches timed for the loader rates"
    )
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument(
        "--cluster-methods",
        nargs="+",
        choices=["kmeans", "hdbscan", "leiden"],
        help="analysis.cluster_methods of every experiment (default: the schema's, all three)",
    )
    parser.add_argument("--genomes", type=Path, default=GENOMES, help="the four genomes' folder")
    parser.add_argument(
        "--runner",
        choices=["snakemake", "cli"],
        default="snakemake",
        help="cli: the rules' commands without Snakemake (benchmarks/scale_runner.py)",
    )
    parser.add_argument(
        "--budget-s", type=float, help="cli runner: stop every step at this many seconds"
    )
    parser.add_argument(
        "--device-lock", type=Path, help="cli runner: flock this file around train and embed"
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    deadline = time.time() + (args.budget_s or float("inf"))
    if args.runner == "cli":
        sys.path.insert(0, str(Path(__file__).parent))
        from scale_runner import run_experiments
    rows, rates = [], []
    for n in args.sizes:
        run = args.out / str(n)
        run.mkdir(parents=True, exist_ok=True)
        names = write_config(run, n, args)
        if args.runner == "cli":
            ranked = [name for name in args.only or names if name in names]  # --only's order
            for line in run_experiments(run, ranked, args.cores, deadline, args.device_lock):
                print("not finished:", line, flush=True)
        else:
            targets = [f"results/{name}/clusters" for name in names]
            command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
            command += ["--directory", str(run), "--cores", str(args.cores), *targets]
            subprocess.run(command, check=True, cwd=run)
        rows += step_table(run, names, n)
        print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"), flush=True)
        for name in names:
            trained = (run / "results" / name / "benchmarks" / "train.tsv").is_file()
            if trained and args.loader_batches and time.time() < deadline:
                rates.append(
                    {
                        "items": n,
                        **loader_rates(run, name, args.loader_batches, args.loader_workers),
                    }
                )
        print(pd.DataFrame(rates).to_markdown(index=False, floatfmt=".3g"), flush=True)


if __name__ == "__main__":
    main()
