"""Batched tensor views: equal to the item-by-item CPU views for the same parameters."""

import numpy as np
import pytest
import torch
from test_dna_pairs import FLANK, WINDOW, items, records  # noqa: F401 (fixtures)
from torch_geometric.utils import dropout_edge, mask_feature

from scicontrast.data_adapters.dna.views import DNAViews
from scicontrast.data_adapters.tensor_views import (
    drop_edges,
    flip_left_right,
    mask_blocks,
    mask_features,
    reverse_complement,
    windows,
)
from scicontrast.geometry import rotate


def flanked_one_hot(builder: DNAViews) -> torch.Tensor:
    """``[N, 4, W + 2F]``: every bound window with its flanks, as the builder encodes it."""
    return torch.from_numpy(builder._encoding[builder._codes]).permute(0, 2, 1).contiguous()


def test_shifted_and_reverse_complemented_windows_equal_the_cpu_views(items):  # noqa: F811
    builder = DNAViews(max_shift=FLANK)
    builder.bind(items)
    flanked = flanked_one_hot(builder)
    n = len(items)
    for seed in range(5):
        rngs = [np.random.default_rng([seed, i]) for i in range(n)]
        reverse = torch.tensor([i % 2 == 1 for i in range(n)])
        names = ["reverse_complement" if r else "forward" for r in reverse.tolist()]
        cpu = torch.stack([builder.make_view(i, names[i], rngs[i]) for i in range(n)])
        # The same draws, in the same order: the shift is the first one.
        shifts = torch.tensor(
            [int(np.random.default_rng([seed, i]).integers(-FLANK, FLANK + 1)) for i in range(n)]
        )
        batched = reverse_complement(windows(flanked, FLANK + shifts, WINDOW), reverse)
        assert torch.equal(batched, cpu)


def test_reverse_complement_is_an_involution_and_a_hand_written_example():
    x = torch.nn.functional.one_hot(torch.tensor([[0, 0, 1, 3]]), 4).float().transpose(1, 2)
    # AACT -> AGTT
    expected = torch.nn.functional.one_hot(torch.tensor([[0, 2, 3, 3]]), 4).float().transpose(1, 2)
    assert torch.equal(reverse_complement(x), expected)
    batch = torch.rand(5, 4, 9)
    assert torch.equal(reverse_complement(reverse_complement(batch)), batch)
    rows = torch.tensor([True, False, True, False, False])
    partly = reverse_complement(batch, rows)
    assert torch.equal(partly[~rows], batch[~rows]) and not torch.equal(partly[rows], batch[rows])


def test_masked_blocks_are_the_given_columns_only():
    x = torch.ones(3, 4, 10)
    out = mask_blocks(x, torch.tensor([0, 4, 7]), 3)
    zero = [(0, {0, 1, 2}), (1, {4, 5, 6}), (2, {7, 8, 9})]
    for row, columns in zero:
        for j in range(10):
            assert bool((out[row, :, j] == 0).all()) == (j in columns)


def test_windows_outside_the_sequence_are_refused():
    with pytest.raises(ValueError, match="leave"):
        windows(torch.zeros(2, 4, 10), torch.tensor([0, 5]), 6)


def test_a_batch_rotated_at_once_equals_each_image_rotated_alone():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 17, 17, generator=generator)
    angles = torch.rand(6, generator=generator) * 360
    flips = torch.tensor([True, False, True, True, False, False])
    batched = rotate(images, angles, flips=flips)
    for b in range(6):
        alone = rotate(images[b : b + 1], angles[b : b + 1], flips=flips[b : b + 1])
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=0, atol=1e-6)
    quarter = rotate(images, torch.full((6,), 90.0))
    torch.testing.assert_close(quarter, torch.rot90(images, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    mirrored = rotate(images, torch.zeros(6), flips=flips)
    torch.testing.assert_close(flip_left_right(images, flips), mirrored, atol=1e-5, rtol=0)


def test_edge_and_feature_dropping_equal_pyg_for_the_same_draws_and_keep_node_ids():
    generator = torch.Generator().manual_seed(1)
    edge_index = torch.randint(0, 50, (2, 4000), generator=generator)
    x = torch.rand(50, 300, generator=generator)
    torch.manual_seed(7)
    expected_edges, _ = dropout_edge(edge_index, p=0.3)
    expected_x, _ = mask_feature(x, p=0.4, mode="col")
    seeded = torch.Generator().manual_seed(7)
    kept, keep = drop_edges(edge_index, 0.3, seeded)
    assert torch.equal(kept, expected_edges)
    assert torch.equal(mask_features(x, 0.4, seeded), expected_x)
    # In distribution: the kept fraction is 1 - p within 4 binomial standard deviations.
    assert abs(keep.float().mean().item() - 0.7) < 4 * (0.3 * 0.7 / 4000) ** 0.5
    assert torch.equal(kept, edge_index[:, keep])  # node ids untouched
