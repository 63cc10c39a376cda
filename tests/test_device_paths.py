"""The code paths a GPU takes, checked where a CPU can check them (docs/experiments/cudaaudit.md).

The loop runs the network under bf16 autocast on CUDA only; the same autocast on the CPU
raises on the same dtype mixes (a bf16 sparse product), so the CPU tests below run it there.
The tests marked ``cuda`` run only where torch sees a GPU: a lent GPU machine runs them in
seconds (``pytest tests/test_device_paths.py``) before ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import load_benchmark, small_dna_experiment
from test_graph_views import graph_experiment, random_graph_items
from torch import nn

from scicontrast.analysis.diagnostics import untrained_model
from scicontrast.analysis.embed import EmbeddingRun
from scicontrast.config import experiment_as_config
from scicontrast.data_adapters.audio_image.pairs import AudioImageBatch
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.graphs.views import GraphViews, graph_data
from scicontrast.data_adapters.images.patches import PatchBag
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.errors import InputDataError
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import load_model
from scicontrast.models.gnn import PropagatedMLPEncoder
from scicontrast.models.train import train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def test_precision_benchmark_steps_every_loss_form_under_bf16():
    """precision.py's step is the loop's: the batch's declared loss (loss rows and graph
    positives here), the network under bf16 autocast; on the GPU too where there is one."""
    precision = load_benchmark("precision")
    items = random_graph_items(n_nodes=40, n_features=12, p=0.15)
    builder = GraphViews(neighbours_as_positives=True)
    pairs = builder.build(items)
    pairs = pairs[pairs["group_id"] >= 4]  # 4 nodes out of the loss: loss_rows
    batches = builder.training_batches(items, pairs, 0, 8)
    batches.set_epoch(0)
    batch = next(iter(batches))
    assert batch.loss_rows is not None and batch.positive_pairs is not None
    for device in DEVICES:
        model = untrained_model(graph_experiment(), builder, items).train().to(device)
        for bf16 in (False, True):
            assert precision.views_per_second(model, batch, device, bf16, 1) > 0


def test_precision_benchmark_runs_on_a_prepared_experiment(tmp_path, monkeypatch, capsys):
    """The CPU part of gpu_check.sh runs precision.py on the prepared demos."""
    precision = load_benchmark("precision")
    folder = tmp_path / "small"
    experiment, _ = small_dna_experiment(folder, sequences_per_source=3)
    (folder / "config.json").write_text(json.dumps(experiment_as_config(experiment)))
    argv = ["precision.py", "--device", "cpu", "--steps", "1", "--results", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [*argv, "--experiments", "small"])
    precision.main()
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["experiment", "fp32", "views/s"]
    assert rows[1].split()[0] == "small" and float(rows[1].split()[1]) > 0


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("order", ["before", "after"])
def test_propagated_mlp_steps_under_bf16_autocast(order, device):
    """The propagation (a sparse product) stays float32 under autocast: bf16 sparse kernels
    are missing on the CPU, and K repeated sums in bf16 would round away the features."""
    data = graph_data(random_graph_items(n_nodes=30, n_features=6, p=0.2)).to(device)
    torch.manual_seed(0)
    encoder = PropagatedMLPEncoder(8, hops=3, teleport=0.1, order=order, in_channels=6)
    encoder = encoder.to(device)
    exact = encoder(data)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        mixed = encoder(data)
    mixed.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in encoder.parameters())
    # bf16 rounds the MLP's inputs and weights to 8 significant bits.
    assert torch.allclose(mixed.float(), exact, atol=0.05, rtol=0.05)


class _OutOfMemoryModel(nn.Module):
    """A model whose forward pass runs out of device memory."""

    encoder = SimpleNamespace(embedding_dim=2)

    def __init__(self, error: RuntimeError) -> None:
        super().__init__()
        self.error = error

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


class _OneBatch:
    def embedding_batches(self, items, batch_size):
        yield torch.zeros(1, 2)


def test_embedding_out_of_memory_is_not_reported_as_misfit_data():
    """A CUDA out-of-memory error says what it is (lower the batch size), not that the
    data misfits the model; a shape error still names the data."""
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
    run = EmbeddingRun(_OutOfMemoryModel(oom), _OneBatch(), "model.pt", 4, "cpu", 0)
    with pytest.raises(torch.OutOfMemoryError):
        run.embed([0], "items")
    with pytest.raises(torch.OutOfMemoryError):
        list(run.chunks([0], "items"))
    misfit = RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x2 and 3x4)")
    run = EmbeddingRun(_OutOfMemoryModel(misfit), _OneBatch(), "model.pt", 4, "cpu", 0)
    with pytest.raises(InputDataError, match=r"does not fit the model model\.pt"):
        run.embed([0], "items")


class _OutOfMemoryPlan:
    """A batch plan whose views run out of device memory (``augment_on_device``)."""

    n_groups = 2

    def __len__(self) -> int:
        return 1

    def batch_keys(self, epoch: int) -> list[int]:
        return [0]

    def make_batch(self, epoch: int, key: int):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_training_batches_pass_out_of_memory_through():
    """Views made on a GPU that run out of its memory: the error says so, rather than being
    an input data error about the batch or a failed loader worker."""
    with pytest.raises(torch.OutOfMemoryError):
        list(EpochLoader(_OutOfMemoryPlan()))


@cuda
def test_graph_views_with_a_diffusion_view_on_cuda():
    """augment_on_device with MVGRL's diffusion view: both views' graphs on the GPU."""
    data = graph_data(random_graph_items(n_nodes=30, n_features=6, p=0.2)).to("cuda")
    batch, group_ids = GraphViews(diffusion_view="ppr").views(data, seed=0, epoch=0)
    for key, value in batch.to_dict().items():
        if isinstance(value, torch.Tensor):
            assert value.is_cuda, key
    assert group_ids.is_cuda


def epoch_lines(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    return [record for record in records if record["kind"] == "epoch"]


@cuda
@pytest.mark.parametrize("settings", [{"loader_workers": 1}, {"augment_on_device": True}])
def test_cuda_training_resumes_on_the_cpu_and_its_model_embeds_there(
    tmp_path, monkeypatch, settings
):
    """An epoch on the GPU (workers forked after CUDA is up and pinned batches, or the views
    made on the GPU), its checkpoint resumed on the CPU (``device: auto`` without a GPU),
    and the model read back to the CPU."""
    training = {"epochs": 2, "device": "auto", "batch_size": 4, **settings}
    experiment, _ = small_dna_experiment(tmp_path, sequences_per_source=3, training=training)
    typed = Experiment.from_dict(experiment)
    inputs = (tmp_path / "items", tmp_path / "pairs.parquet")
    train(typed, *inputs, tmp_path / "run", progress=False, stop_after_epochs=1)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert next(iter(checkpoint["model"].values())).is_cuda
    first = epoch_lines(tmp_path / "run")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model_path = train(typed, *inputs, tmp_path / "run", progress=False)
    # Resumed, not started afresh: the GPU epoch's line (its seconds) is kept.
    lines = epoch_lines(tmp_path / "run")
    assert lines[0] == first[0] and [line["epoch"] for line in lines] == [0, 1]
    model, _ = load_model(model_path, map_location=torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in model.parameters())


@cuda
def test_pinned_batches_pin_every_input_tensor():
    """``DataLoader(pin_memory=True)`` pins what a batch's ``pin_memory`` pins: an audio-image
    batch and a bag of patches were left pageable."""
    audio_image = AudioImageBatch(
        torch.zeros(2, 80), torch.zeros(1, 1, 8, 8), torch.tensor([True, False, True]), 8000
    )
    pinned = ContrastiveBatch(audio_image, torch.tensor([0, 0, 1])).pin_memory()
    assert pinned.inputs.audio.is_pinned() and pinned.inputs.images.is_pinned()
    assert pinned.inputs.is_audio.is_pinned() and pinned.group_ids.is_pinned()
    bag = PatchBag(torch.zeros(3, 1, 4, 4), torch.tensor([0, 0, 1]), 2).pin_memory()
    assert bag.patches.is_pinned() and bag.owner.is_pinned() and bag.images == 2
