"""Gradient caching against the plain full-batch forward and backward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scicontrast.models.chunked_loss import ChunkedInfoNCELoss
from scicontrast.models.grad_cache import grad_cache_step
from scicontrast.models.losses import InfoNCELoss

TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}


def _encoder(dropout: float) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 8)
    ).double()


def _batch(rows: int = 24):
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(rows, 12, generator=generator, dtype=torch.float64)
    return inputs, torch.arange(rows) // 2


def _parameter_grads(*modules: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for m in modules for p in m.parameters()]


def test_matches_the_full_batch_without_randomness():
    inputs, ids = _batch()
    encoder, loss_fn = _encoder(0.0), InfoNCELoss(0.2, learnable_temperature=True)
    full = loss_fn(encoder(inputs), ids)
    full.loss.backward()
    expected = _parameter_grads(encoder, loss_fn)

    encoder, loss_fn = _encoder(0.0), InfoNCELoss(0.2, learnable_temperature=True)
    cached = grad_cache_step(encoder, inputs, ids, loss_fn, chunk_size=5)
    torch.testing.assert_close(cached.loss.detach(), full.loss.detach(), **TOLERANCE)
    for got, want in zip(_parameter_grads(encoder, loss_fn), expected, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)


def test_dropout_is_replayed_with_the_same_random_numbers():
    inputs, ids = _batch()
    # Reference: one graph over the chunks in order from the same random state (the chunks
    # draw their dropout masks one after another, as grad caching does).
    encoder = _encoder(0.5)
    torch.manual_seed(7)
    z = torch.cat([encoder(chunk) for chunk in inputs.split(5)])
    InfoNCELoss(0.2)(z, ids).loss.backward()
    expected = _parameter_grads(encoder)
    state_after_reference = torch.get_rng_state()

    encoder = _encoder(0.5)
    torch.manual_seed(7)
    grad_cache_step(encoder, inputs, ids, InfoNCELoss(0.2), chunk_size=5)
    for got, want in zip(_parameter_grads(encoder), expected, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)
    # The replay draws no new numbers: the generator is where one forward pass leaves it.
    assert torch.equal(torch.get_rng_state(), state_after_reference)


def test_without_replayed_state_dropout_would_differ():
    # Guards the test above: dropout at 0.5 really changes the gradients between draws.
    inputs, ids = _batch()
    grads = []
    for seed in (7, 8):
        encoder = _encoder(0.5)
        torch.manual_seed(seed)
        grad_cache_step(encoder, inputs, ids, InfoNCELoss(0.2), chunk_size=5)
        grads.append(_parameter_grads(encoder))
    assert not torch.allclose(grads[0][0], grads[1][0])


def test_works_with_the_chunked_loss_and_a_custom_split():
    inputs, ids = _batch(16)
    encoder = _encoder(0.0)
    full = InfoNCELoss(0.1)(encoder(inputs), ids)
    full.loss.backward()
    expected = _parameter_grads(encoder)

    encoder = _encoder(0.0)
    pieces = [inputs[:3], inputs[3:11], inputs[11:]]  # uneven chunks, e.g. graph batches
    cached = grad_cache_step(
        encoder, pieces, ids, ChunkedInfoNCELoss(0.1), chunk_size=1, split_fn=lambda x, _: x
    )
    torch.testing.assert_close(cached.loss.detach(), full.loss.detach(), **TOLERANCE)
    for got, want in zip(_parameter_grads(encoder), expected, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)


def test_a_plain_tensor_loss_is_accepted():
    inputs, ids = _batch(8)
    encoder = _encoder(0.0)
    loss = grad_cache_step(encoder, inputs, ids, lambda z, g: z.pow(2).sum(), chunk_size=3)
    assert loss.ndim == 0 and all(p.grad is not None for p in encoder.parameters())


def test_bad_arguments_are_rejected():
    inputs, ids = _batch(8)
    with pytest.raises(ValueError, match="chunk_size"):
        grad_cache_step(_encoder(0.0), inputs, ids, InfoNCELoss(), chunk_size=0)
    with pytest.raises(ValueError, match="group ids"):
        grad_cache_step(_encoder(0.0), inputs, ids[:6], InfoNCELoss(), chunk_size=3)
