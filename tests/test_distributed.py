"""Several processes train like one: global negatives, synced BatchNorm, sharded batches.

Run on CPU with the gloo backend and 2 processes, as ``torchrun`` starts them on a cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from scicontrast.config import experiment_as_config, select_experiment, validate_config
from scicontrast.data_adapters.dna.demo import generate_demo_dna
from scicontrast.data_adapters.dna.reading import FastaAdapter
from scicontrast.data_adapters.dna.views import DNAViews
from scicontrast.experiment import Experiment
from scicontrast.io import write_parquet
from scicontrast.models.contrastive import build_model
from scicontrast.models.train import train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def experiment(**training) -> dict:
    config = {
        "experiments": {
            "dist": {
                "adapter": {"name": "dna_fasta", "params": {"paths": ["unused.fa"], "window": 40}},
                "pairs": {"name": "dna_views", "params": {"max_shift": 2}},
                "encoder": {"name": "dna_cnn", "params": {"channels": 8, "embedding_dim": 8}},
                "head": {"hidden_dim": 8, "output_dim": 8},
                "training": {"device": "cpu", "seed": 3, **training},
            }
        }
    }
    return select_experiment(validate_config(config), "dist", "test")


def cli_train_arguments(config: Path, items: Path, pairs: Path, out: Path) -> list[str]:
    """``-m scicontrast.cli train ...`` without a progress bar."""
    return [
        "-m",
        "scicontrast.cli",
        "train",
        "--config",
        str(config),
        "--items",
        str(items),
        "--pairs",
        str(pairs),
        "--out",
        str(out),
        "--no-progress",
    ]


def torchrun_train(
    config: Path, items: Path, pairs: Path, out: Path
) -> subprocess.CompletedProcess:
    """Run ``scicontrast train`` in 2 processes under torchrun and capture its output."""
    return subprocess.run(
        [*TORCHRUN, *cli_train_arguments(config, items, pairs, out)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def dna_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dist-data")
    paths = generate_demo_dna(folder / "raw", sources=2, sequences_per_source=12, length=88)
    items = FastaAdapter(paths=[str(p) for p in paths], window=40, stride=24, flank=2).read()
    items.save(folder / "items")
    write_parquet(folder / "pairs.parquet", DNAViews(max_shift=2).build(items))
    return folder / "items", folder / "pairs.parquet"


GRADIENT_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from scicontrast.experiment import Experiment
    from scicontrast.models.contrastive import build_model
    from scicontrast.models.distributed import (
        gathered_info_nce, start_process_group, stop_process_group, sync_batchnorm
    )

    torch.set_default_dtype(torch.float64)
    experiment, views, ids, out = torch.load(sys.argv[1], weights_only=False)
    group = start_process_group(torch.device("cpu"))
    # Unequal shares: rank 0 holds 7 views, rank 1 the rest (groups of 2 and 3 views).
    share = slice(0, 7) if group.rank == 0 else slice(7, None)
    torch.manual_seed(0)
    model = sync_batchnorm(build_model(Experiment.from_dict(experiment)), torch.device("cpu"))
    network = DistributedDataParallel(model)
    output = gathered_info_nce(model.loss, network(views[share]), ids[share])
    output.loss.backward()
    if group.rank == 0:
        grads = {n: p.grad for n, p in model.named_parameters()}
        torch.save({"loss": output.metrics["loss"], "grads": grads}, out)
    del network
    stop_process_group(group)
    """
)


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradients_of_one(tmp_path):
    """float64: loss and every parameter gradient equal the single-process global batch."""
    torch.set_default_dtype(torch.float64)
    try:
        exp = experiment()
        generator = torch.Generator().manual_seed(1)
        views = torch.rand(16, 4, 40, generator=generator)
        # Groups of unequal size, split unevenly across the processes.
        ids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6])
        torch.manual_seed(0)
        model = build_model(Experiment.from_dict(exp))
        output = model.loss(model(views), ids)
        output.loss.backward()
        expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    finally:
        torch.set_default_dtype(torch.float32)

    worker = tmp_path / "worker.py"
    worker.write_text(GRADIENT_WORKER)
    torch.save((exp, views, ids, tmp_path / "out.pt"), tmp_path / "inputs.pt")
    result = subprocess.run(
        [*TORCHRUN, str(worker), str(tmp_path / "inputs.pt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=False)
    assert got["loss"] == pytest.approx(output.metrics["loss"], abs=1e-10)
    for name, grad in expected.items():
        torch.testing.assert_close(got["grads"][name], grad, atol=1e-9, rtol=1e-7, msg=name)


@pytest.mark.slow
def test_torchrun_training_equals_one_process_with_the_global_batch(tmp_path, dna_data):
    """2 processes x 6 groups train to the parameters of 1 process x 12 groups (float32)."""
    items_dir, pairs_path = dna_data
    single = train(
        Experiment.from_dict(experiment(epochs=2, batch_size=12)),
        items_dir,
        pairs_path,
        tmp_path / "one",
        progress=False,
    )
    config_path = tmp_path / "two.json"
    exp = experiment(epochs=2, batch_size=6)
    config_path.write_text(json.dumps(experiment_as_config(exp)))
    result = torchrun_train(config_path, items_dir, pairs_path, tmp_path / "two")
    assert result.returncode == 0, result.stderr[-3000:]
    one = torch.load(single, weights_only=True)["state_dict"]
    two = torch.load(tmp_path / "two" / "model.pt", weights_only=True)["state_dict"]
    assert one.keys() == two.keys()
    # The encoder's output bias feeds a bias-free Linear and then BatchNorm, which removes
    # any constant shift: the loss does not depend on it, its gradient is rounding noise,
    # and Adam scales noise to lr-sized steps. It and the running mean that follows it are
    # the only tensors allowed to differ.
    loss_blind = {"encoder.output.bias", "head.layers.1.running_mean"}
    for name in one.keys() - loss_blind:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=1e-4, msg=name)
    # Only the main process wrote: one epoch line per epoch.
    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["kind"] == "epoch"] == [0, 1]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_rerun_ends_bitwise_equal(tmp_path, dna_data):
    items_dir, pairs_path = dna_data
    exp = experiment(epochs=2, batch_size=2)
    # One torch thread on both sides, said rather than inherited: sums split over other thread
    # counts round differently, and this process's count is whatever earlier code left in its
    # OpenMP runtime (numba's first parallel loop once set it to 2: docs/experiments/sigterm.md).
    uninterrupted = train(
        Experiment.from_dict(exp),
        items_dir,
        pairs_path,
        tmp_path / "whole",
        progress=False,
        num_threads=1,
    )

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(experiment_as_config(exp)))
    out = tmp_path / "preempted"
    command = [
        sys.executable,
        *cli_train_arguments(config_path, items_dir, pairs_path, out),
        "--threads",
        "1",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    for _ in range(600):
        if metrics.exists() and metrics.read_text().count('"kind": "step"') >= 2:
            break
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.terminate()  # SIGTERM, as SLURM sends before killing a job
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "checkpoint saved" in stderr
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["epochs_done"] * 100 + checkpoint["batches_done"] > 0
    assert not (out / "model.pt").exists()

    rerun = subprocess.run(command, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stderr
    whole = torch.load(uninterrupted, weights_only=True)["state_dict"]
    resumed = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    step_lines = [
        r for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "step"
    ]
    assert [r["step"] for r in step_lines] == list(range(1, len(step_lines) + 1))
    shutil.rmtree(out)


@pytest.mark.parametrize("setting", [{"swa_epochs": 1}, {"ensemble": 2}])
@pytest.mark.slow
def test_single_process_settings_are_refused_with_several_before_any_output(
    tmp_path, dna_data, setting
):
    items_dir, pairs_path = dna_data
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(experiment_as_config(experiment(epochs=2, **setting))))
    out = tmp_path / "two"
    result = torchrun_train(config_path, items_dir, pairs_path, out)
    assert result.returncode != 0
    (key,) = setting
    assert f"dist.training.{key} needs one process" in result.stderr
    assert not out.exists()
