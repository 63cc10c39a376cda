"""The data loader: batches through DataLoader workers, the same whatever their number."""

import dataclasses
import os
import signal

import numpy as np
import pytest
import torch
from test_train import (
    NoisyCopies,
    assert_same_weights,
    make_experiment,
    read_metrics,
    without_timings,
    write_toy_data,
)
from torch.utils.data import get_worker_info

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.errors import InputDataError
from scicontrast.experiment import Component
from scicontrast.models.batch_loss import batch_loss
from scicontrast.models.losses import InfoNCELoss


@pytest.fixture
def toy_data(tmp_path):
    return write_toy_data(tmp_path, groups=12)


class CrashingCopies(NoisyCopies):
    """Fails on the item in row 5."""

    def make_view(self, item_index, view, rng):
        if item_index == 5:
            raise ValueError("unreadable bases")
        return super().make_view(item_index, view, rng)


class DyingCopies(NoisyCopies):
    """Kills the worker process that materialises the item in row 5."""

    def make_view(self, item_index, view, rng):
        if item_index == 5 and get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().make_view(item_index, view, rng)


def epoch_batches(toy_data, workers: int, epoch: int, builder=None, start: int = 0):
    items = Items.load(toy_data[0])
    pairs = (builder or NoisyCopies()).build(items)
    batches = (builder or NoisyCopies()).training_batches(items, pairs, seed=7, batch_size=3)
    batches.use_workers(workers)
    batches.set_epoch(epoch, start_batch=start)
    return list(batches)


def test_batches_do_not_depend_on_the_number_of_workers(toy_data):
    for epoch, start in ((0, 0), (3, 0), (3, 2)):
        alone, with_workers = (epoch_batches(toy_data, w, epoch, start=start) for w in (0, 2))
        assert len(alone) == len(with_workers) == 4 - start
        for a, b in zip(alone, with_workers, strict=True):
            assert isinstance(b, ContrastiveBatch)
            assert torch.equal(a.inputs, b.inputs) and torch.equal(a.group_ids, b.group_ids)
    first, later = epoch_batches(toy_data, 2, 0), epoch_batches(toy_data, 2, 1)
    assert not torch.equal(first[0].inputs, later[0].inputs)  # fresh views each epoch


def test_training_with_two_workers_equals_training_in_process(tmp_path, toy_data):
    runs = {}
    for workers in (0, 2):
        experiment = make_experiment(epochs=3, loader_workers=workers, holdout_fraction=0.25)
        runs[workers] = train_run(experiment, toy_data, tmp_path / f"w{workers}")
    assert_same_weights(runs[0], runs[2])
    assert without_timings(read_metrics(runs[0].parent)) == without_timings(
        read_metrics(runs[2].parent)
    )


def test_resumed_run_with_workers_equals_an_uninterrupted_one(tmp_path, toy_data):
    from scicontrast.models.train import train

    full = train_run(make_experiment(epochs=3, loader_workers=0), toy_data, tmp_path / "full")
    pieces = tmp_path / "pieces"
    with_workers = make_experiment(epochs=3, loader_workers=2)
    train(with_workers, *toy_data, pieces, progress=False, stop_after_epochs=2)
    resumed = train(with_workers, *toy_data, pieces, progress=False)
    assert_same_weights(full, resumed)
    assert without_timings(read_metrics(pieces)) == without_timings(read_metrics(full.parent))


def train_run(experiment, toy_data, out):
    from scicontrast.models.train import train

    return train(experiment, *toy_data, out, progress=False)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_item_that_fails_in_a_worker_is_named(tmp_path, toy_data, workers):
    crashing = Component(f"{__name__}:CrashingCopies", {})
    experiment = dataclasses.replace(
        make_experiment(epochs=1, loader_workers=workers), pairs=crashing
    )
    with pytest.raises(InputDataError, match=r"item_id 'proto5' .*unreadable bases"):
        train_run(experiment, toy_data, tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_killed_worker_is_an_error_naming_the_batch(toy_data):
    with pytest.raises(InputDataError, match=r"worker failed while loading batch \d+ of epoch 0"):
        epoch_batches(toy_data, 2, 0, builder=DyingCopies())


def test_loss_forms_are_read_from_the_declared_fields():
    torch.manual_seed(0)
    loss = InfoNCELoss(temperature=0.5)
    z, ids = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = batch_loss(loss, z, ContrastiveBatch(torch.zeros(6), ids))
    assert plain.loss.item() == pytest.approx(loss(z, ids).loss.item())
    towers = (torch.arange(3), torch.arange(3, 6))
    two = batch_loss(loss, z, ContrastiveBatch(torch.zeros(6), ids, towers=towers))
    assert two.loss.item() == pytest.approx(loss.symmetric(z[:3], z[3:], ids[:3]).loss.item())
    rows = torch.tensor([0, 1, 3, 4])
    held = batch_loss(loss, z, ContrastiveBatch(torch.zeros(6), ids[rows], loss_rows=rows))
    assert held.loss.item() == pytest.approx(loss(z[rows], ids[rows]).loss.item())
    pairs = torch.tensor([[0], [1]])
    extra = batch_loss(loss, z, ContrastiveBatch(torch.zeros(6), ids, positive_pairs=pairs))
    assert extra.loss.item() == pytest.approx(loss(z, ids, positive_pairs=pairs).loss.item())
    assert extra.loss.item() != pytest.approx(plain.loss.item())


def test_epoch_loader_rejects_negative_workers():
    with pytest.raises(ValueError, match="workers must be >= 0"):
        EpochLoader(plan=None, workers=-1)


def test_embedding_through_a_worker_equals_embedding_in_process():
    from test_analysis import LinearModel, OffsetPairs, make_items

    from scicontrast.analysis.embed import embed_items

    items, model = make_items(n=23), LinearModel(nuisance_weight=1.0)
    alone = embed_items(model, OffsetPairs(), items, batch_size=5, progress=False)
    ahead = embed_items(model, OffsetPairs(), items, batch_size=5, progress=False, workers=2)
    np.testing.assert_array_equal(alone, ahead)


def test_graph_views_made_on_the_device_train_as_in_the_loader(tmp_path):
    from test_graph_views import graph_experiment, random_graph_items

    from scicontrast.data_adapters.graphs.views import GraphViews

    items = random_graph_items(n_nodes=40, n_features=12, p=0.15)
    items.save(tmp_path / "items")
    GraphViews().build(items).to_parquet(tmp_path / "pairs.parquet")
    data = (tmp_path / "items", tmp_path / "pairs.parquet")
    runs = {}
    for on_device in (False, True):
        experiment = graph_experiment(neighbours_as_positives=True).replace(
            training={"augment_on_device": on_device, "holdout_fraction": 0.25}
        )
        runs[on_device] = train_run(experiment, data, tmp_path / str(on_device))
    # On a CPU the device's generator is the loader's: the same views, the same weights.
    assert_same_weights(runs[False], runs[True])


def test_views_on_the_device_are_refused_where_a_domain_has_none(tmp_path, toy_data):
    from scicontrast.errors import ConfigError

    with pytest.raises(ConfigError, match="augment_on_device: the views of GroupBatches"):
        train_run(make_experiment(augment_on_device=True), toy_data, tmp_path / "run")
    assert not (tmp_path / "run").exists()
