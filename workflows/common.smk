import os
import re
from pathlib import Path

from scicontrast.workflow import adapter_inputs, check_components, experiment_json

# Resolve every named component now, so a typo fails before any job runs.
check_components(config)

EXPERIMENTS = list(config["experiments"])


wildcard_constraints:
    experiment="|".join(re.escape(name) for name in EXPERIMENTS),


def experiment_config(wildcards):
    return experiment_json(config, wildcards.experiment)


def prepare_inputs(wildcards):
    return adapter_inputs(config, wildcards.experiment)


def training_gpus(wildcards):
    return config["experiments"][wildcards.experiment]["training"]["gpus"]


def training_gpu_model(wildcards):
    return config["experiments"][wildcards.experiment]["training"]["gpu_model"] or ""


def training_launcher(wildcards, resources):
    """One process per GPU under torchrun when training asks for several GPUs."""
    if resources.gpu > 1:
        return (
            f"torchrun --standalone --nproc_per_node={resources.gpu} -m scicontrast.cli"
        )
    return "scicontrast"


def embed_shard_count(wildcards):
    return config["experiments"][wildcards.experiment]["analysis"]["embed_shards"]


def embedding_shards(wildcards):
    """The shard folders the embed rule gathers; none when it embeds in one job."""
    shards = embed_shard_count(wildcards)
    if shards == 1:
        return []
    return [
        f"results/{wildcards.experiment}/embedding_shards/{k}" for k in range(shards)
    ]


def embed_command(wildcards, input):
    if input.shards:
        return "scicontrast gather-embeddings " + " ".join(input.shards)
    return f"scicontrast embed {input.items_dir} --model {input.model}"


def genome_read_sets(wildcards, folder="reads"):
    """The read sets (one per read length) a genome experiment is scored on."""
    analysis = config["experiments"][wildcards.experiment].get("analysis", {})
    return expand(
        "results/{experiment}/{folder}/{length}",
        experiment=wildcards.experiment,
        folder=folder,
        length=analysis.get("genome_read_lengths", [150, 500, 1000]),
    )


def genome_read_embeddings(wildcards):
    return genome_read_sets(wildcards, folder="reads_embeddings")


def print_summaries(experiments):
    for name in experiments:
        summary = Path(f"results/{name}/metrics/summary.txt")
        if summary.exists():
            print(summary.read_text())
