"""GroupBatches: the epoch order as int64 slices (the same batches the list-of-ints order
gave) and the memory-mapped item arrays handed back after each batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import resident_kib

from scicontrast.data_adapters.base import GroupBatches, Items, epoch_seed
from scicontrast.data_adapters.dna.views import DNAViews


class _Groups:
    """What ``GroupBatches.batch_keys`` reads of a ``ViewDataset``: its length and seed."""

    def __init__(self, n_groups: int, seed: int) -> None:
        self.n_groups, self.seed = n_groups, seed

    def __len__(self) -> int:
        return self.n_groups


def _list_keys(n_groups: int, seed: int, epoch: int, size: int, rank: int, world: int):
    """The order as the earlier implementation built it: Python lists of ints."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    order = torch.randperm(n_groups, generator=generator).tolist()
    batches = [order[i : i + size * world] for i in range(0, n_groups, size * world)]
    if batches and len(batches[-1]) < 2 * world:
        batches.pop()  # a last batch that cannot give every process two groups
    shares = [-(-len(b) // world) for b in batches]
    return [b[rank * s : (rank + 1) * s] for b, s in zip(batches, shares, strict=True)]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n_groups", [0, 1, 5, 24, 25, 29, 30, 101])
def test_keys_are_the_list_order_for_any_seed_epoch_rank_and_last_batch(n_groups, world):
    # batch 4 x world: 24 divides for world 1 and 2, 25 leaves 1 (dropped), 29 leaves 5
    # (kept for world <= 2, dropped for world 3), 30 leaves 6 (kept, 2 each for world 3)
    for seed in (0, 7):
        for epoch in (0, 1, 5):
            for rank in range(world):
                plan = GroupBatches(_Groups(n_groups, seed), 4, rank=rank, world_size=world)
                keys = plan.batch_keys(epoch)
                expected = _list_keys(n_groups, seed, epoch, 4, rank, world)
                assert [k.tolist() for k in keys] == expected
                assert len(keys) == len(plan)
                assert all(k.dtype == np.int64 for k in keys)


def test_keys_are_views_of_one_permutation_not_python_ints():
    plan = GroupBatches(_Groups(10_000, 3), 256, rank=1, world_size=2)
    keys = plan.batch_keys(2)
    bases = {id(k.base) for k in keys}
    assert len(bases) == 1 and keys[0].base is not None
    mine = np.concatenate(keys)
    other = np.concatenate(GroupBatches(_Groups(10_000, 3), 256, 0, 2).batch_keys(2))
    # the two ranks split every batch, together a permutation of all groups but the dropped
    assert len(np.unique(np.concatenate([mine, other]))) == len(mine) + len(other) == 10_000


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_training_batches_hand_back_the_mapped_codes(tmp_path):
    """Each batch reads random windows of the memory-mapped codes; after it none of the
    array stays resident, and the batches equal those of the same codes held in memory."""
    codes = np.random.default_rng(0).integers(1, 5, (4096, 108), dtype=np.uint8)
    table = pd.DataFrame({"item_id": [f"w{k}" for k in range(len(codes))]})
    meta = {"modality": "dna", "window": 100, "flank": 4, "codes_array": "codes"}
    Items(table, meta, arrays={"codes": codes}).save(tmp_path / "items")
    mapped = (tmp_path / "items" / "codes.npy").resolve()
    made = []
    for items in (Items.load(tmp_path / "items"), Items(table, meta, {"codes": codes})):
        builder = DNAViews(max_shift=2)
        batches = builder.training_batches(items, builder.build(items), 0, 64)
        batches.limit_steps(3)
        made.append([b.inputs for b in batches])
        if len(made) == 1:
            assert resident_kib(mapped) == 0
            np.asarray(items.arrays["codes"]).sum()  # the measure sees a mapping's pages
            assert resident_kib(mapped) >= codes.nbytes // 1024 - 8
    assert all(torch.equal(a, b) for a, b in zip(*made, strict=True)) and len(made[0]) == 3
