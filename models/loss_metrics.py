r"""Metrics of a contrastive batch: alignment, uniformity and the loss's detached metrics.

Every form of :class:`~scicontrast.models.losses.InfoNCELoss` reports, beside the scalar loss,
detached metrics computed from the similarity matrix the loss already holds:

* ``loss``, ``temperature``;
* ``num_negatives``: mean number of negatives ``K`` per anchor in the mean;
* ``mi_lower_bound``: ``log(K + 1) - loss``, the InfoNCE bound on mutual information
  (Oord et al. 2018) at the mean ``K`` (exact for one positive per anchor);
* ``pos_sim`` / ``neg_sim``: mean cosine over (anchor, positive) / (anchor, negative) pairs of
  the anchors in the mean;
* ``alignment`` (``alpha = 2``) over the positive pairs and ``uniformity`` (``t = 2``) over
  all views in the batch, both from Wang & Isola (2020); the two-tower forms use both sides
  concatenated, the key bank is not part of the batch;
* ``anchors_without_positive``: count of anchors left out of the mean (both directions for
  ``InfoNCELoss.symmetric``).

A mean over an empty set (no anchor has a positive, fewer than two views) is reported as
``nan``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """Alignment of Wang & Isola (2020): ``E_i ||x_i - y_i||^alpha``.

    Args:
        x: ``[N, D]`` L2-normalised embeddings.
        y: ``[N, D]`` L2-normalised embeddings, row ``i`` a positive of ``x[i]``.
        alpha: Exponent.

    Returns:
        Scalar (0 when every pair coincides).
    """
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """Uniformity of Wang & Isola (2020): ``log E_{i != j} exp(-t ||x_i - x_j||^2)``.

    Args:
        x: ``[M, D]`` L2-normalised embeddings, ``M >= 2``.
        t: Scale of the Gaussian potential.

    Returns:
        Scalar, at most 0 (reached when all points coincide); lower is more uniform.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"uniformity needs x of shape [M >= 2, D], got {tuple(x.shape)}")
    squared_distances = torch.pdist(x).pow(2)
    return torch.logsumexp(-t * squared_distances, dim=0) - math.log(squared_distances.numel())


def uniformity_or_nan(x: Tensor) -> Tensor:
    return uniformity(x) if x.shape[0] >= 2 else x.new_tensor(math.nan)


def uniformity_from_cosine(cosine: Tensor, off_diagonal: Tensor | None, t: float = 2.0) -> Tensor:
    """:func:`uniformity` from the Gram matrix of normalised views: ``||x-y||^2 = 2 - 2 cos``.

    ``off_diagonal`` marks the pairs to average over; ``None``: all but the diagonal. As
    ``cos <= 1``, ``exp(2 t cos) <= exp(2 t)`` cannot overflow: the mean is summed directly,
    ``log sum exp(2 t cos) - 2 t - log(pairs)``, two passes over the matrix fewer than a
    ``logsumexp``.
    """
    if cosine.shape[0] < 2:
        return cosine.new_tensor(math.nan)
    potentials = cosine.mul(2 * t).exp_()
    if off_diagonal is None:
        pairs = cosine.shape[0] * (cosine.shape[0] - 1)
        total = potentials.fill_diagonal_(0.0).sum()
    else:
        pairs = int(off_diagonal.sum())
        total = potentials.masked_fill_(~off_diagonal, 0.0).sum()
    return torch.log(total) - 2 * t - math.log(pairs)


def loss_metrics(
    loss: Tensor,
    tau: Tensor,
    directions: list[tuple[Tensor, Tensor, Tensor, Tensor]],
    uniformity_value: Tensor,
) -> dict[str, float]:
    """Detached metrics from each direction's ``(similarity, positive, valid, has_positive)``.

    ``positive`` must already be a subset of ``valid``. Pairs are ordered (anchor, candidate)
    pairs of anchors with a positive; both directions of the symmetric form are pooled.
    """
    positive_cosines = torch.cat([s[p] for s, p, _, _ in directions])
    negative_count = torch.zeros((), dtype=torch.long, device=loss.device)
    negative_cosine_sum = torch.zeros((), dtype=positive_cosines.dtype, device=loss.device)
    for similarity, positive, valid, has_positive in directions:
        negative = valid & ~positive & has_positive[:, None]
        negative_count = negative_count + negative.sum()
        negative_cosine_sum = negative_cosine_sum + similarity.masked_fill(~negative, 0).sum()
    return _metrics(
        loss,
        tau,
        positive_cosines,
        negative_count,
        negative_cosine_sum,
        sum(has_positive.sum() for *_, has_positive in directions),
        sum((~has).sum() for *_, has in directions),
        uniformity_value,
    )


def _metrics(
    loss: Tensor,
    tau: Tensor,
    positive_cosines: Tensor,
    negative_count: Tensor,
    negative_cosine_sum: Tensor,
    counted_anchors: Tensor | int,
    anchors_without_positive: Tensor | int,
    uniformity_value: Tensor,
) -> dict[str, float]:
    """The metrics dict (module docstring) from the pooled (anchor, positive) cosines and the
    negatives' count and cosine sum over the anchors in the mean."""
    num_negatives = negative_count.to(torch.float64) / counted_anchors
    values = {
        "loss": loss.detach(),
        "temperature": tau.detach(),
        "num_negatives": num_negatives,
        "mi_lower_bound": torch.log1p(num_negatives) - loss.detach(),
        "pos_sim": positive_cosines.mean(),
        "neg_sim": negative_cosine_sum / negative_count,
        "alignment": (2 - 2 * positive_cosines).clamp(min=0).mean(),
        "uniformity": uniformity_value,
        "anchors_without_positive": anchors_without_positive,
    }
    # One device-to-host transfer for all of them.
    floats = torch.stack(
        [torch.as_tensor(v).to(loss.device, torch.float64) for v in values.values()]
    )
    return dict(zip(values, floats.tolist(), strict=True))


def in_batch_metrics(
    loss: Tensor,
    tau: Tensor,
    similarity: Tensor,
    anchors: Tensor,
    partners: Tensor,
    counts: Tensor,
) -> dict[str, float]:
    """:func:`loss_metrics` of the in-batch form (``InfoNCELoss.forward``) from sums,
    without ``[M, M]`` masks."""
    rows = similarity.shape[0]
    has_positive = counts > 0
    positive_cosines = similarity[anchors, partners]
    # Negatives of an anchor: every other view but its positives.
    row_sums = (similarity.sum(dim=1) - similarity.diagonal()).double()
    positive_sums = torch.zeros_like(row_sums).index_add_(0, anchors, positive_cosines.double())
    negative_counts = torch.where(has_positive, rows - 1 - counts, 0)
    return _metrics(
        loss,
        tau,
        positive_cosines,
        negative_counts.sum(),
        torch.where(has_positive, row_sums - positive_sums, 0.0).sum(),
        has_positive.sum(),
        (~has_positive).sum(),
        uniformity_from_cosine(similarity, None),
    )
