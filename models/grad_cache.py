r"""Gradient caching: a contrastive batch as large as the loss allows, whatever the encoder needs.

The InfoNCE loss couples every view of a batch, so the batch normally has to pass through
the encoder with all activations kept for the backward pass. Gradient caching (Gao et al.
2021) splits that pass in three, so that only one chunk's activations are alive at a time:

1. **Embed without a graph**: each chunk of inputs goes through the encoder under
   ``torch.no_grad()``; the random state (CPU and CUDA generators) before each chunk is kept.
2. **Loss and embedding gradients**: the chunks' embeddings ``z [M, D]`` are concatenated and
   detached, the loss is computed on them (any loss: the chunked one of
   :mod:`scicontrast.models.chunked_loss` keeps this step ``O(M D)`` as well) and
   ``backward`` gives ``g = dL/dz`` and the gradients of the loss's own parameters (a learnable
   temperature).
3. **Replay with a graph**: each chunk is embedded again with the random state it had in
   step 1, so dropout and random augmentations inside the encoder draw the same numbers, and
   ``z_chunk.backward(g_chunk)`` adds that chunk's share of ``dL/dtheta`` (the chain rule
   ``dL/dtheta = sum_i g_i dz_i/dtheta``) to the parameters' ``.grad``.

The parameter gradients equal those of one forward and backward pass of the whole batch in
which the encoder sees the same chunks with the same random numbers. Memory: one chunk's
activations plus ``O(M D)``. Cost: one extra forward pass without a graph.

Conventions: gradients accumulate into ``.grad`` as ``loss.backward()`` would (zero them
before the call). The random state after the call is the state after step 1, as if the
encoder had run once. Batch normalisation sees per-chunk statistics in both passes (as in
any chunked forward) and, in training mode, updates its running statistics twice per chunk.

References:
    - Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning Batch Size under
      Memory Limited Setup", https://arxiv.org/abs/2101.06983
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["grad_cache_step", "split_rows"]


def split_rows(inputs: Tensor, chunk_size: int) -> list[Tensor]:
    """Default splitter: chunks of ``chunk_size`` rows (views) along the first dimension."""
    return list(inputs.split(chunk_size))


def grad_cache_step(
    encoder_fn: Callable[[Any], Tensor],
    inputs: Any,
    group_ids: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Any],
    chunk_size: int,
    split_fn: Callable[[Any, int], Sequence[Any]] = split_rows,
) -> Any:
    """One gradient-cached forward and backward pass (see the module docstring).

    Args:
        encoder_fn: Maps one chunk of inputs to its embeddings ``[m, D]``, one row per view
            (e.g. a ``ContrastiveModel``); its parameters receive the gradients.
        inputs: The whole batch, split by ``split_fn``.
        group_ids: ``[M]`` group id of every view, in the order of the chunks.
        loss_fn: ``loss_fn(z, group_ids)`` returning a scalar tensor or an object with a
            scalar ``.loss`` (such as :class:`~scicontrast.models.losses.InfoNCEOutput`).
        chunk_size: Views per chunk (``>= 1``).
        split_fn: ``split_fn(inputs, chunk_size)`` -> the chunks, in row order; the default
            splits a tensor along its first dimension.

    Returns:
        Whatever ``loss_fn`` returned; its loss has already been backpropagated.

    Raises:
        ValueError: ``chunk_size < 1``, or the chunks' embeddings do not have one row per
            group id.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    chunks = split_fn(inputs, chunk_size)
    states = []
    embeddings = []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_RandomState.capture())
            embeddings.append(encoder_fn(chunk))
    z = torch.cat(embeddings).requires_grad_()
    if z.shape[0] != group_ids.shape[0]:
        raise ValueError(
            f"the chunks gave {z.shape[0]} embeddings for {group_ids.shape[0]} group ids"
        )
    output = loss_fn(z, group_ids)
    loss = output.loss if hasattr(output, "loss") else output
    loss.backward()
    assert z.grad is not None  # z is a leaf that requires grad
    embedding_grads = z.grad.split([e.shape[0] for e in embeddings])
    # fork_rng puts the generators back afterwards: the replay consumes no random numbers.
    with torch.random.fork_rng(devices=_RandomState.cuda_devices()):
        for chunk, state, grad in zip(chunks, states, embedding_grads, strict=True):
            state.restore()
            encoder_fn(chunk).backward(grad)
    return output


@dataclass
class _RandomState:
    """The CPU generator's state and, once CUDA is in use, every CUDA generator's."""

    cpu: Tensor
    cuda: list[Tensor]

    @staticmethod
    def cuda_devices() -> list[int]:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return list(range(torch.cuda.device_count()))
        return []

    @classmethod
    def capture(cls) -> _RandomState:
        cuda = [torch.cuda.get_rng_state(d) for d in cls.cuda_devices()]
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for device, state in enumerate(self.cuda):
            torch.cuda.set_rng_state(state, device)
