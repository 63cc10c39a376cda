r"""MoCo: negatives from a queue of past keys, embedded by a momentum encoder.

Momentum Contrast (He et al. 2020) decouples the number of negatives from the batch: keys
come from a slowly moving copy of the encoder and are kept in a first-in first-out queue
across steps; each query is contrasted with its positive key(s) in the batch and with every
key in the queue. The loss is :meth:`scicontrast.models.losses.InfoNCELoss.against_keys`
with the queue as its ``bank`` (always negatives):

.. math::

    \ell_q = -\frac{1}{|P(q)|} \sum_{p \in P(q)} \log
        \frac{e^{q \cdot k_p / \tau}}{\sum_{k \in K} e^{q \cdot k / \tau}
              + \sum_{j \in Q} e^{q \cdot m_j / \tau}}

with ``K`` the batch's keys, ``P(q)`` those with the query's group id and ``Q`` the queued
keys ``m_j``. With an empty queue this is exactly ``against_keys`` without a bank.

* :class:`MomentumEncoder` keeps ``theta_k <- m theta_k + (1 - m) theta_q`` after each
  optimiser step (:meth:`MomentumEncoder.update`); buffers (batch-norm statistics) are
  copied. It never receives gradients.
* :class:`KeyQueue` is a ring buffer of ``size`` keys ``[size, D]`` with the group id of each,
  oldest first. Keys of the current batch's groups would be false negatives (the same
  object seen a few steps ago), so :meth:`KeyQueue.negatives` can leave them out.
* :func:`moco_info_nce` is one MoCo loss step: loss against the queue, then enqueue the
  batch's keys.

The queue and the momentum encoder are modules with buffers, so a checkpoint of the model
that owns them restores them exactly.

References:
    - MoCo: He, Fan, Wu, Xie, Girshick 2020, https://arxiv.org/abs/1911.05722
    - MoCo v2: Chen, Fan, Girshick, He 2020, https://arxiv.org/abs/2003.04297
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from scicontrast.errors import ConfigError
from scicontrast.models.losses import InfoNCELoss, InfoNCEOutput

__all__ = ["KeyQueue", "MomentumEncoder", "moco_info_nce"]


class MomentumEncoder(nn.Module):
    """An exponential moving average of a model's weights, used to embed keys.

    Args:
        model: The online (query) model; it is deep-copied, and the copy gets no gradients.
        momentum: ``m`` in ``[0, 1]``: ``theta_k <- m theta_k + (1 - m) theta_q``
            (MoCo uses 0.999; 0 copies the online weights).

    Raises:
        ConfigError: ``momentum`` is outside ``[0, 1]``, or ``model`` still has lazy
            (uninitialised) parameters: run one forward pass first, so that both encoders
            start from the same weights.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"momentum must be in [0, 1], got {momentum!r}")
        if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
            raise ConfigError(
                "the model has lazy parameters that are not initialised yet; run one forward "
                "pass before building its MomentumEncoder"
            )
        self.momentum = float(momentum)
        self.encoder = copy.deepcopy(model)
        self.encoder.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the weights towards ``model``'s and copy its buffers."""
        for key, online in zip(self.encoder.parameters(), model.parameters(), strict=True):
            key.lerp_(online.detach(), 1.0 - self.momentum)
        for key_buffer, online_buffer in zip(self.encoder.buffers(), model.buffers(), strict=True):
            key_buffer.copy_(online_buffer)

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """Keys: the moving-average encoder's output, without a graph."""
        return self.encoder(*args, **kwargs)


class KeyQueue(nn.Module):
    """First-in first-out queue of at most ``size`` keys ``[D]`` with their group ids.

    Args:
        size: Capacity (``>= 1``); the oldest keys are dropped beyond it.
        dim: Key dimension ``D``.

    Raises:
        ConfigError: ``size`` or ``dim`` is not a positive integer.
    """

    _keys: Tensor
    _ids: Tensor
    _head: Tensor
    _count: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        for name, value in (("queue size", size), ("key dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.size = size
        self.register_buffer("_keys", torch.zeros(size, dim))
        self.register_buffer("_ids", torch.zeros(size, dtype=torch.long))
        # Slot of the oldest key and the number of stored keys.
        self.register_buffer("_head", torch.zeros((), dtype=torch.long))
        self.register_buffer("_count", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self._count)

    @property
    def keys(self) -> Tensor:
        """``[len, D]`` stored keys, oldest first (a copy)."""
        return self._keys[self._order()]

    @property
    def ids(self) -> Tensor:
        """``[len]`` group ids of the stored keys, oldest first."""
        return self._ids[self._order()]

    @torch.no_grad()
    def enqueue(self, keys: Tensor, ids: Tensor) -> None:
        """Append ``keys [n, D]`` (detached) with ``ids [n]``, dropping the oldest beyond size."""
        if keys.ndim != 2 or keys.shape[1] != self._keys.shape[1]:
            raise ValueError(
                f"keys must have shape [n, {self._keys.shape[1]}], got {tuple(keys.shape)}"
            )
        if ids.shape != (keys.shape[0],):
            raise ValueError(f"ids must have shape [{keys.shape[0]}], got {tuple(ids.shape)}")
        keys, ids = keys[-self.size :], ids[-self.size :]
        count = len(self)
        slots = (self._head + count + torch.arange(keys.shape[0], device=keys.device)) % self.size
        self._keys[slots] = keys.detach().to(self._keys.dtype)
        self._ids[slots] = ids
        overflow = max(0, count + keys.shape[0] - self.size)
        self._head.copy_((self._head + overflow) % self.size)
        self._count.fill_(count + keys.shape[0] - overflow)

    @torch.no_grad()
    def dequeue(self, n: int) -> tuple[Tensor, Tensor]:
        """Remove and return the ``n`` oldest keys and their ids (fewer if fewer are stored)."""
        n = min(max(n, 0), len(self))
        order = self._order()[:n]
        removed = self._keys[order], self._ids[order]
        self._head.copy_((self._head + n) % self.size)
        self._count.sub_(n)
        return removed

    def negatives(self, exclude_ids: Tensor | None = None) -> Tensor:
        """Stored keys to use as negatives, without those whose id is in ``exclude_ids``."""
        order = self._order()
        if exclude_ids is not None:
            order = order[~torch.isin(self._ids[order], exclude_ids)]
        return self._keys[order]

    def _order(self) -> Tensor:
        return (self._head + torch.arange(len(self), device=self._keys.device)) % self.size

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self._keys.shape[1]}, stored={len(self)}"


def moco_info_nce(
    loss_fn: InfoNCELoss,
    queries: Tensor,
    keys: Tensor,
    ids: Tensor,
    queue: KeyQueue,
    exclude_same_ids: bool = True,
    exclude_diagonal: bool = False,
) -> InfoNCEOutput:
    """One MoCo loss step: queries against the batch's keys and the queue, then enqueue.

    Args:
        loss_fn: The InfoNCE loss (its temperature is used).
        queries: ``[N, D]`` from the online encoder.
        keys: ``[N, D]`` from the momentum encoder (no gradient flows into them).
        ids: ``[N]`` group ids shared by ``queries[i]`` and ``keys[i]``; a query's positives
            are the batch keys with its id.
        queue: Past keys, used as negatives and then extended with ``keys``.
        exclude_same_ids: Leave queued keys whose id occurs in the batch out of the negatives.
        exclude_diagonal: ``queries[i]`` and ``keys[i]`` encode the same view, so key ``i`` is
            left out of query ``i``'s candidates (see ``InfoNCELoss.against_keys``).

    Returns:
        The loss output of ``against_keys``.
    """
    bank = queue.negatives(ids if exclude_same_ids else None)
    output = loss_fn.against_keys(
        queries, keys.detach(), ids, ids, bank=bank, exclude_diagonal=exclude_diagonal
    )
    queue.enqueue(keys, ids)
    return output
