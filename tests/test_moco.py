"""MoCo queue and momentum encoder against the plain against_keys form and a closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scicontrast.errors import ConfigError
from scicontrast.models.losses import InfoNCELoss
from scicontrast.models.moco import KeyQueue, MomentumEncoder, moco_info_nce

EXACT = {"rtol": 1e-12, "atol": 1e-12}


def _randn(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _queue(size: int, dim: int) -> KeyQueue:
    return KeyQueue(size, dim).double()


def test_empty_queue_equals_against_keys_without_bank():
    queries = _randn(6, 4, seed=0).requires_grad_()
    keys, ids = _randn(6, 4, seed=1), torch.tensor([0, 0, 1, 2, 3, 3])
    loss_fn = InfoNCELoss(0.2)
    plain = loss_fn.against_keys(queries, keys, ids, ids)
    (plain_grad,) = torch.autograd.grad(plain.loss, queries)
    queue = _queue(10, 4)
    moco = moco_info_nce(loss_fn, queries, keys, ids, queue)
    (moco_grad,) = torch.autograd.grad(moco.loss, queries)
    torch.testing.assert_close(moco.loss, plain.loss, **EXACT)
    torch.testing.assert_close(moco_grad, plain_grad, **EXACT)
    assert moco.metrics == pytest.approx(plain.metrics, nan_ok=True)
    assert len(queue) == 6  # the batch's keys are queued after the loss


def _closed_form(queries, keys, ids, bank, tau):
    """Mean over queries of -(1/|P|) sum_p log(e^(q.k_p/t) / (sum_k e^(q.k/t) + sum_m e^(q.m/t)))
    in plain Python floats (float64), with every vector L2-normalised by hand."""

    def normalised(rows):
        return [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in rows.tolist()]

    unit, key_unit, bank_unit = normalised(queries), normalised(keys), normalised(bank)
    total = 0.0
    for q, q_id in zip(unit, ids.tolist(), strict=True):

        def score(k, q=q):
            return math.exp(sum(a * b for a, b in zip(q, k, strict=True)) / tau)

        denominator = sum(score(k) for k in key_unit) + sum(score(m) for m in bank_unit)
        positives = [
            score(k) for k, k_id in zip(key_unit, ids.tolist(), strict=True) if k_id == q_id
        ]
        total += -sum(math.log(p / denominator) for p in positives) / len(positives)
    return total / len(unit)


def test_loss_with_a_queue_equals_the_closed_form():
    queue = _queue(7, 5)
    queue.enqueue(_randn(4, 5, seed=2), torch.tensor([10, 11, 12, 13]))
    queue.enqueue(_randn(5, 5, seed=3), torch.tensor([14, 15, 16, 17, 1]))  # wraps around
    queries, keys = _randn(4, 5, seed=4), _randn(4, 5, seed=5)
    ids = torch.tensor([0, 1, 1, 2])
    # The queued key with id 1 is the same object as two queries: left out of the negatives.
    bank = queue.keys[queue.ids != 1]
    expected = _closed_form(queries, keys, ids, bank, tau=0.3)
    without_queue = _closed_form(queries, keys, ids, bank[:0], tau=0.3)
    assert without_queue != pytest.approx(expected)  # the queue really changes the loss
    output = moco_info_nce(InfoNCELoss(0.3), queries, keys, ids, queue)
    assert float(output.loss) == pytest.approx(expected, rel=1e-12)
    assert queue.ids.tolist() == [16, 17, 1, 0, 1, 1, 2]


def test_queue_can_keep_same_id_keys_as_negatives():
    queue = _queue(4, 3)
    queue.enqueue(_randn(2, 3, seed=6), torch.tensor([0, 5]))
    queries, keys, ids = _randn(2, 3, seed=7), _randn(2, 3, seed=8), torch.tensor([0, 1])
    loss_fn = InfoNCELoss(0.5)
    with_all = moco_info_nce(loss_fn, queries, keys, ids, _copy(queue), exclude_same_ids=False)
    bank = _copy(queue).keys
    expected = _closed_form(queries, keys, ids, bank, tau=0.5)
    assert float(with_all.loss) == pytest.approx(expected, rel=1e-12)


def _copy(queue: KeyQueue) -> KeyQueue:
    clone = _queue(queue.size, queue.keys.shape[1])
    clone.load_state_dict(queue.state_dict())
    return clone


def test_queue_is_first_in_first_out_with_ids():
    queue = KeyQueue(5, 2)
    queue.enqueue(torch.arange(6.0).view(3, 2), torch.tensor([0, 1, 2]))
    queue.enqueue(torch.arange(8.0).view(4, 2) + 100, torch.tensor([3, 4, 5, 6]))
    assert len(queue) == 5
    assert queue.ids.tolist() == [2, 3, 4, 5, 6]
    assert queue.keys[0].tolist() == [4.0, 5.0]
    keys, ids = queue.dequeue(2)
    assert ids.tolist() == [2, 3] and keys[1].tolist() == [100.0, 101.0]
    assert queue.ids.tolist() == [4, 5, 6]
    queue.enqueue(torch.zeros(7, 2), torch.arange(10, 17))  # more than the capacity
    assert queue.ids.tolist() == [12, 13, 14, 15, 16]
    assert queue.negatives(torch.tensor([12, 16])).shape == (3, 2)
    assert queue.dequeue(99)[1].tolist() == [12, 13, 14, 15, 16] and len(queue) == 0


def test_queue_state_round_trips_and_stores_no_graph():
    queue = KeyQueue(4, 3)
    keys = torch.randn(3, 3, requires_grad=True)
    queue.enqueue(keys * 2, torch.tensor([1, 2, 3]))
    assert not queue.keys.requires_grad
    restored = KeyQueue(4, 3)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.keys, queue.keys) and torch.equal(restored.ids, queue.ids)


def test_momentum_update_formula():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    momentum = MomentumEncoder(online, momentum=0.9)
    before = [p.clone() for p in momentum.encoder.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(8, 3))  # moves the batch-norm running statistics
    momentum.update(online)
    for key, old, new in zip(
        momentum.encoder.parameters(), before, online.parameters(), strict=True
    ):
        torch.testing.assert_close(key, 0.9 * old + 0.1 * new)
        assert not key.requires_grad
    for key, new in zip(momentum.encoder.buffers(), online.buffers(), strict=True):
        assert torch.equal(key, new)
    keys = momentum(torch.randn(5, 3))
    assert keys.shape == (5, 4) and not keys.requires_grad


@pytest.mark.parametrize(("m", "expect_online"), [(0.0, True), (1.0, False)])
def test_momentum_bounds(m, expect_online):
    online = nn.Linear(2, 2)
    momentum = MomentumEncoder(online, momentum=m)
    start = momentum.encoder.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    momentum.update(online)
    expected = online.weight if expect_online else start
    torch.testing.assert_close(momentum.encoder.weight, expected)


def test_bad_arguments_are_rejected():
    with pytest.raises(ConfigError, match="momentum"):
        MomentumEncoder(nn.Linear(2, 2), momentum=1.5)
    with pytest.raises(ConfigError, match="lazy parameters"):
        MomentumEncoder(nn.LazyLinear(2))
    with pytest.raises(ConfigError, match="queue size"):
        KeyQueue(0, 4)
    queue = KeyQueue(3, 4)
    with pytest.raises(ValueError, match="keys must have shape"):
        queue.enqueue(torch.randn(2, 5), torch.arange(2))
    with pytest.raises(ValueError, match="ids must have shape"):
        queue.enqueue(torch.randn(2, 4), torch.arange(3))


def test_excluding_the_diagonal_with_keys_equal_to_queries_is_the_in_batch_loss():
    # Keys that are the queries themselves, with key i left out of query i's candidates:
    # every view against all other views, which is the in-batch (SimCLR) form.
    z = _randn(8, 5, seed=3).requires_grad_()
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    loss_fn = InfoNCELoss(0.3)
    in_batch = loss_fn(z, ids)
    against = loss_fn.against_keys(z, z, ids, ids, exclude_diagonal=True)
    torch.testing.assert_close(against.loss, in_batch.loss, **EXACT)
    included = loss_fn.against_keys(z, z, ids, ids)
    assert included.loss < in_batch.loss  # each view's own copy is an easy positive
