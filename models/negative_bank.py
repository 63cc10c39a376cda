r"""A global bank of negatives for federated InfoNCE, and the loss that uses it.

Federated averaging alone lets each site contrast its views only with its own items: the
model learns to tell a site's items apart, never to tell them from another site's. The bank
fixes that with projections the sites share (Wu et al., "Federated contrastive learning",
2021; the MoCo queue idea across sites):

* each site sends the server projections ``z = head(encoder(x)) [n, d]`` of a sample of its
  items' canonical views, computed with the current global weights, optionally with
  Gaussian noise ``z + N(0, sigma^2 I)`` (:func:`noisy`);
* the server keeps the newest ``size`` of them, oldest out (:class:`BankStore`), and sends
  them with the weights;
* a site's in-batch loss takes them as extra candidates that are never positives
  (:class:`BankedInfoNCELoss`):

.. math::

    \ell_a = -\frac{1}{|P(a)|} \sum_{p \in P(a)} \log \frac{e^{s_{ap}/\tau}}
        {\sum_{k \ne a} e^{s_{ak}/\tau} + \sum_{j \in B(a)} e^{a \cdot b_j/\tau}}

with ``B(a)`` the bank entries minus those the site itself sent for a group of the current
batch (the same object seen under an older model would be a false negative).

**What a shared projection can reveal.** A projection is a deterministic function of one
item; whoever holds the encoder (every site and the server do) can compare it with the
projection of a candidate item and learn whether that item was in a site's data (membership),
cluster a site's items into its classes or sources (attributes, the site's label mix), and
with enough pairs train a decoder that approximates the item (inversion). Noise of standard
deviation ``sigma`` on unit-length projections blurs nearest-neighbour matches at roughly
``sigma >~ 0.5 / sqrt(d)`` per coordinate, but it is not differential privacy: no clipping or
accounting bounds what many rounds leak together. Sites that need a formal guarantee should
turn the bank off.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment
from scicontrast.models.loss_metrics import loss_metrics, uniformity_from_cosine
from scicontrast.models.losses import (
    InfoNCELoss,
    InfoNCEOutput,
    check_ids,
    check_pairs,
    cross_entropy_from_similarity,
)

# Bank rows that came from another site: their ids never match a group of the batch.
OTHER_SITE = -1


class BankStore:
    """The server's bank: at most ``size`` projections ``[n, d]``, oldest first.

    Each row carries the index of the site that sent it and that site's group id, so that a
    site can recognise its own rows (:meth:`for_site`).
    """

    def __init__(self, size: int, dim: int) -> None:
        if size < 1:
            raise ConfigError(f"federated.bank.size: {size}; the bank needs at least 1 entry")
        self.size = size
        self.embeddings = np.zeros((0, dim), dtype=np.float32)
        self.sites = np.zeros(0, dtype=np.int64)
        self.groups = np.zeros(0, dtype=np.int64)

    def add(self, embeddings: np.ndarray, site: int, groups: np.ndarray) -> None:
        """Append one site's ``[n, d]`` projections and ``[n]`` group ids; drop the oldest."""
        self.embeddings = np.concatenate([self.embeddings, embeddings.astype(np.float32)])
        self.sites = np.concatenate([self.sites, np.full(len(groups), site, dtype=np.int64)])
        self.groups = np.concatenate([self.groups, groups.astype(np.int64)])
        self.embeddings = self.embeddings[-self.size :]
        self.sites, self.groups = self.sites[-self.size :], self.groups[-self.size :]

    def for_site(self, site: int) -> tuple[np.ndarray, np.ndarray]:
        """The bank as site ``site`` uses it: ``(embeddings [n, d], ids [n])``, where ids
        are the site's own group ids on its own rows and :data:`OTHER_SITE` elsewhere."""
        ids = np.where(self.sites == site, self.groups, OTHER_SITE)
        return self.embeddings, ids

    def state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings, "sites": self.sites, "groups": self.groups}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.embeddings, self.sites, self.groups = (
            state["embeddings"],
            state["sites"],
            state["groups"],
        )


def noisy(z: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """``normalize(z) + N(0, std^2 I)``: the projections ``[n, d]`` a site shares."""
    z = F.normalize(z, dim=1)
    if std == 0:
        return z
    return z + std * torch.randn(z.shape, generator=generator, dtype=z.dtype)


class BankedInfoNCELoss(InfoNCELoss):
    """In-batch InfoNCE with the bank's rows as extra negatives (module docstring).

    The bank is a buffer ``[size, d]`` with ids ``[size]`` and a count, so that it travels
    in the model's state dict (a site's checkpoint) and a resumed site sees the same bank.
    With an empty bank the loss is :meth:`InfoNCELoss.forward` exactly.
    """

    bank: Tensor
    bank_ids: Tensor
    bank_count: Tensor

    def __init__(self, size: int, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_buffer("bank", torch.zeros(size, dim))
        self.register_buffer("bank_ids", torch.full((size,), OTHER_SITE, dtype=torch.long))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def set_bank(self, embeddings: Tensor, ids: Tensor) -> None:
        """Replace the bank by ``embeddings [n, d]`` (n <= size) with ``ids [n]``."""
        n = embeddings.shape[0]
        if n > self.bank.shape[0] or embeddings.shape[1:] != self.bank.shape[1:]:
            raise ValueError(
                f"bank of shape {tuple(embeddings.shape)} does not fit {tuple(self.bank.shape)}"
            )
        self.bank.zero_()
        self.bank_ids.fill_(OTHER_SITE)
        self.bank[:n] = embeddings
        self.bank_ids[:n] = ids
        self.bank_count.fill_(n)

    def forward(
        self, z: Tensor, group_ids: Tensor, positive_pairs: Tensor | None = None
    ) -> InfoNCEOutput:
        """Loss of ``z [M, D]`` with ``group_ids [M]`` against the batch and the bank."""
        count = int(self.bank_count)
        if count == 0:
            return super().forward(z, group_ids, positive_pairs)
        check_ids("group_ids", group_ids, z.shape[0])
        z = F.normalize(z, dim=1)
        not_self = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
        positive = group_ids[:, None] == group_ids[None, :]
        if positive_pairs is not None:
            check_pairs("positive_pairs", positive_pairs, z.shape[0])
            positive[positive_pairs[0], positive_pairs[1]] = True
        positive &= not_self
        bank = F.normalize(self.bank[:count], dim=1)
        # The site's own rows for groups of this batch leave the denominator.
        usable = ~torch.isin(self.bank_ids[:count], group_ids)
        in_batch = z @ z.T
        similarity = torch.cat([in_batch, z @ bank.T], dim=1)
        positive = torch.cat([positive, positive.new_zeros(z.shape[0], count)], dim=1)
        valid = torch.cat([not_self, usable.expand(z.shape[0], count)], dim=1)
        tau = self.temperature()
        per_anchor, has_positive = cross_entropy_from_similarity(similarity, positive, valid, tau)
        loss = per_anchor.sum() / has_positive.sum().clamp(min=1)
        with torch.no_grad():
            metrics = loss_metrics(
                loss,
                tau,
                [(similarity, positive & valid, valid, has_positive)],
                uniformity_from_cosine(in_batch, not_self),
            )
        return InfoNCEOutput(loss, metrics)


def banked_loss(experiment: Experiment) -> BankedInfoNCELoss | None:
    """The loss of a federated experiment with the bank on, else ``None``.

    Raises:
        ConfigError: the bank is on with size 0, or with a loss form it does not extend
            (the chunked loss, a MoCo queue).
    """
    if experiment.federated is None or not experiment.federated.bank.enabled:
        return None
    bank, loss = experiment.federated.bank, experiment.loss
    where = f"experiments.{experiment.name}"
    if bank.size < 1:
        raise ConfigError(f"{where}.federated.bank.size is 0 with the bank enabled; set it >= 1")
    if loss.implementation != "dense" or loss.queue_size:
        raise ConfigError(
            f"{where}.federated.bank extends the dense in-batch loss; set loss.implementation "
            "to dense and loss.queue_size to 0"
        )
    return BankedInfoNCELoss(
        bank.size,
        experiment.head.output_dim,
        temperature=loss.temperature,
        learnable_temperature=loss.learnable_temperature,
    )
