"""The held-out pass's views, made once and kept (``data_adapters.fixed_batches``): every
pass yields the batches a fresh pass makes, and training's held-out numbers do not change."""

from __future__ import annotations

import torch
from test_train import (
    NoisyCopies,
    make_experiment,
    read_metrics,
    toy_data,  # noqa: F401 (a fixture)
)
from torch_geometric.data import Data

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.fixed_batches import FixedBatches, tensor_bytes
from scicontrast.models import train_setup
from scicontrast.models.train import train


def assert_equal_batches(a: list[ContrastiveBatch], b: list[ContrastiveBatch]) -> None:
    assert len(a) == len(b) > 1
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.group_ids, y.group_ids)


def test_every_pass_yields_the_fixed_epochs_fresh_batches(toy_data):  # noqa: F811
    items = Items.load(toy_data[0])

    def batches():
        return NoisyCopies().training_batches(items, NoisyCopies().build(items), 0, 3)

    fresh = batches()
    fresh.set_epoch(7)
    expected = list(fresh)
    # Judged from the first batch: all 3 batches of the toy set are the same size.
    just_too_large = tensor_bytes(expected[0]) * len(expected) - 1
    kept, remade = FixedBatches(batches(), 7), FixedBatches(batches(), 7, max_bytes=0)
    too_large = FixedBatches(batches(), 7, max_bytes=just_too_large)
    for fixed in (kept, remade, too_large, kept, remade, too_large):
        assert_equal_batches(list(fixed), expected)
    assert kept.kept is not None and remade.kept is None and too_large.kept is None
    assert all(a is b for a, b in zip(list(kept), list(kept), strict=True))  # not made again


def test_tensor_bytes_counts_tensors_in_batches_graphs_and_containers():
    graph = Data(x=torch.zeros(5, 3), edge_index=torch.zeros(2, 4, dtype=torch.long))
    batch = ContrastiveBatch(graph, torch.zeros(5, dtype=torch.long), loss_rows=None)
    assert tensor_bytes(batch) == 5 * 3 * 4 + 2 * 4 * 8 + 5 * 8
    assert tensor_bytes({"a": [torch.zeros(2, dtype=torch.float64)], "b": 1}) == 16


def test_kept_held_out_views_leave_the_held_out_numbers_unchanged(
    tmp_path,
    toy_data,  # noqa: F811
    monkeypatch,
):
    experiment = make_experiment(epochs=3, holdout_fraction=0.25, heldout_min_steps=1)
    kept = read_metrics(train(experiment, *toy_data, tmp_path / "kept").parent)

    def never_kept(batches, epoch, max_bytes):
        return FixedBatches(batches, epoch, max_bytes=0)

    monkeypatch.setattr(train_setup, "FixedBatches", never_kept)
    remade = read_metrics(train(experiment, *toy_data, tmp_path / "remade").parent)

    def held_out(records):
        return [r for r in records if r["kind"] == "heldout"]

    assert len(held_out(kept)) == 3
    assert held_out(kept) == held_out(remade)
