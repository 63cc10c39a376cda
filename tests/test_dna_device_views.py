"""dna_views' views made in the batch on the device equal the item-by-item CPU views
(``training.augment_on_device``, issue 26 item 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.dna.views import DNAViews


def _items(n: int = 24, window: int = 30, flank: int = 4) -> Items:
    rng = np.random.default_rng(1)
    width = window + 2 * flank
    sequences = ["".join(rng.choice(list("ACGTN"), width, p=[0.24] * 4 + [0.04])) for _ in range(n)]
    sequences[0] = sequences[0][:-3]  # a window at a record's end: padded on the right
    table = pd.DataFrame(
        {
            "item_id": [f"w{i}" for i in range(n)],
            "sequence": sequences,
            "window_start": flank,
            "left_pad": 0,
            "right_pad": [3] + [0] * (n - 1),
        }
    )
    meta = {"modality": "dna", "window": window, "flank": flank, "ambiguous": "uniform"}
    return Items(table=table, meta=meta)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"max_shift": 4},
        {"max_shift": 3, "mutation_rate": 0.2, "mask_fraction": 0.3},
        {"reverse_complement": False, "max_shift": 2, "neighbours": 3},
        {"max_shift": 4, "mask_fraction": 0.5, "neighbours": 2},
    ],
)
def test_device_views_equal_the_cpu_views_for_the_same_seed(params):
    items = _items()
    builder = DNAViews(**params)
    pairs = builder.build(items)
    cpu = builder.training_batches(items, pairs, seed=7, batch_size=5)
    device = DNAViews(**params).training_batches(items, pairs, seed=7, batch_size=5)
    device.augment_on(torch.device("cpu"))
    assert device.plan._codes is not None  # the batched path, not the item-by-item one
    for epoch in (0, 3):
        cpu.set_epoch(epoch)
        device.set_epoch(epoch)
        cpu_batches, device_batches = list(cpu), list(device)
        assert len(cpu_batches) == len(device_batches) == len(cpu)
        for a, b in zip(cpu_batches, device_batches, strict=True):
            assert a.inputs.dtype == b.inputs.dtype and a.inputs.shape == b.inputs.shape
            assert torch.equal(a.inputs, b.inputs)
            assert torch.equal(a.group_ids, b.group_ids)


def test_device_views_are_fresh_per_epoch():
    items = _items()
    builder = DNAViews(max_shift=4, mask_fraction=0.2)
    batches = builder.training_batches(items, builder.build(items), seed=0, batch_size=24)
    batches.augment_on(torch.device("cpu"))
    batches.set_epoch(0)
    first = next(iter(batches)).inputs
    batches.set_epoch(1)
    assert not torch.equal(first, next(iter(batches)).inputs)
