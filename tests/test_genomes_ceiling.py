"""benchmarks/genomes_ceiling.py: the genome classifier trains the experiment's encoder on the
pair builder's batches of the training genomes only, saves it and reads it back."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from conftest import REPO, load_benchmark

from scicontrast.config import load_experiment
from scicontrast.data_adapters.dna.genome_store import GenomeAdapter
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model

sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports genomes.py beside it
ceiling = load_benchmark("genomes_ceiling")


def tiny_experiment() -> dict:
    experiment = load_experiment(REPO / "benchmarks/genomes.yaml", "genomes")
    experiment["pairs"]["params"].update(read_length=[40, 60], reads_per_group=2, steps_per_epoch=3)
    experiment["encoder"]["params"].update(channels=4, embedding_dim=4)
    experiment["training"].update(epochs=1, batch_size=2)
    return experiment


def test_the_classifier_trains_the_encoder_and_a_saved_one_is_reused(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name, gc in (("g_low", 0.25), ("g_high", 0.75), ("g_held_out", 0.5)):
        p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
        bases = "".join(rng.choice(list("ACGT"), size=600, p=p))
        (tmp_path / f"{name}.fa").write_text(f">{name}_chr\n{bases}\n")
    items = GenomeAdapter(sorted(str(p) for p in tmp_path.glob("*.fa"))).read()
    experiment = tiny_experiment()
    path = tmp_path / "ceiling_seed0" / "encoder.pt"
    torch.manual_seed(0)
    initial = build_model(Experiment.from_dict(experiment)).encoder.state_dict()
    trained = ceiling.train_classifier(experiment, items, ["g_low", "g_high"], 0, path)
    assert path.is_file()
    moved = [k for k, v in trained.state_dict().items() if not torch.equal(v, initial[k])]
    assert "stem.0.weight" in moved and "output.weight" in moved
    reused = ceiling.train_classifier(experiment, items, ["g_low", "g_high"], 0, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(reused.state_dict()[key], value), key
