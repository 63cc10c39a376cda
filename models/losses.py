r"""InfoNCE on group ids: one loss for two views, many views and several positives per anchor.

Every view carries the id of the object (group) it came from. For an anchor ``a`` the
candidates are the other views; its positives ``P(a)`` are the candidates with the same id,
every other valid candidate is a negative. With cosine similarities ``s_ak`` between
L2-normalised embeddings and a temperature ``tau``, the per-anchor loss is the supervised
contrastive ``L_out`` form of Khosla et al. (2020), positives included in the denominator:

.. math::

    \ell_a = -\frac{1}{|P(a)|} \sum_{p \in P(a)}
        \log \frac{\exp(s_{ap} / \tau)}{\sum_{k \in V(a)} \exp(s_{ak} / \tau)}

where ``V(a)`` holds the valid candidates of ``a`` (in-batch: every view but ``a`` itself).
The batch loss is the mean of ``l_a`` over the anchors that have at least one positive; an
anchor without one (a group with a single view in the batch) is left out of the mean but
still serves as a negative for the others. With ``2N`` views in ``N`` groups of two this is
exactly SimCLR's NT-Xent (each anchor against ``2N - 2`` negatives, mean over ``2N``
anchors); with ``|P(a)| = 1`` everywhere it is CPC's InfoNCE. Groups of any size and a group
id that occurs several times in a batch (accidental duplicates) are the same code path: all
views sharing an id are positives of each other.

Three forms share that core (:func:`contrastive_cross_entropy`):

* :meth:`InfoNCELoss.forward` (SimCLR, generalised): ``z [M, D]`` with ``group_ids [M]``;
  every view is an anchor against the other ``M - 1`` views. Optional ``positive_pairs
  [2, P]`` (anchor row, candidate row) add positives that shared ids cannot express, because
  they are not an equivalence (a node's graph neighbours, GRACE-style multi-positive).
* :meth:`InfoNCELoss.against_keys` (MoCo / CPC): queries ``[N, D]`` against keys ``[M, D]``
  and an optional key bank ``[K, D]`` whose entries are always negatives.
* :meth:`InfoNCELoss.symmetric` (CLIP): ``0.5 * (L(a -> b) + L(b -> a))`` for two towers.

Every form L2-normalises its inputs and returns an :class:`InfoNCEOutput`: the scalar loss
and the detached metrics of :mod:`~scicontrast.models.loss_metrics`.

A mean over an empty set (no anchor has a positive, fewer than two views) is reported as
``nan``. If no anchor has a positive the loss is zero with an intact graph and a warning is
issued, so that a training loop sees the problem without crashing on ``backward``.

The temperature is fixed or learnable (:class:`Temperature`); the learnable form stores
``log(1 / tau)`` and keeps ``1 / tau <= max_inverse`` (CLIP's ``logit_scale``, clamped at 100).

References:
    - CPC / InfoNCE: Oord, Li, Vinyals 2018, https://arxiv.org/abs/1807.03748
    - SimCLR / NT-Xent: Chen et al. 2020, https://arxiv.org/abs/2002.05709
    - MoCo: He et al. 2020, https://arxiv.org/abs/1911.05722
    - SupCon: Khosla et al. 2020, https://arxiv.org/abs/2004.11362
    - CLIP: Radford et al. 2021, https://arxiv.org/abs/2103.00020
    - Alignment and uniformity: Wang & Isola 2020, https://arxiv.org/abs/2005.10242
    - lightly's ``NTXentLoss`` (lightly/loss/ntx_ent_loss.py) for the in-batch conventions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scicontrast.errors import ConfigError
from scicontrast.models.loss_metrics import (
    in_batch_metrics,
    loss_metrics,
    uniformity_or_nan,
)

# The core that the chunked (chunked_loss), queue (moco) and gathered (distributed) forms
# share is public too: those modules build on it.
__all__ = [
    "NO_POSITIVE_WARNING",
    "InfoNCELoss",
    "InfoNCEOutput",
    "Temperature",
    "check_ids",
    "check_pairs",
    "check_positive",
    "contrastive_cross_entropy",
    "cross_entropy_from_similarity",
    "dense_nt_xent",
]

NO_POSITIVE_WARNING = (
    "InfoNCE: no anchor in this batch has a positive (every group id occurs once), so the "
    "loss is 0 and gives no training signal. Each group needs at least two views in a batch; "
    "check the pair builder and the batch composition."
)


class Temperature(nn.Module):
    """Fixed or learnable temperature ``tau``.

    The learnable form stores ``log(1 / tau)`` (CLIP's ``logit_scale``), so the optimiser
    works on a scale where ``tau`` stays positive, and keeps ``1 / tau <= max_inverse``: the
    stored value is clamped in place on every call, as CLIP clamps ``logit_scale`` after each
    step, so a step that pushes past the bound neither leaks through nor leaves the parameter
    stuck where it gets no gradient. ``max_inverse`` applies to the learnable form only; a
    fixed temperature is used as given.

    Args:
        initial: Starting (or fixed) temperature, ``> 0``. A learnable ``initial`` below
            ``1 / max_inverse`` starts at ``1 / max_inverse``, with a warning.
        learnable: Whether ``tau`` is a trainable parameter.
        max_inverse: Upper bound on ``1 / tau`` for the learnable form.

    Raises:
        ConfigError: ``initial`` or ``max_inverse`` is not a positive finite number.
    """

    fixed: Tensor  # the buffer of a fixed temperature

    def __init__(
        self, initial: float = 0.1, learnable: bool = False, max_inverse: float = 100.0
    ) -> None:
        super().__init__()
        check_positive("loss.temperature", initial)
        check_positive("max_inverse_temperature", max_inverse)
        self.learnable = learnable
        self.max_inverse = float(max_inverse)
        if learnable:
            if 1.0 / initial > max_inverse:
                warnings.warn(
                    f"learnable temperature {initial} is below 1/max_inverse = "
                    f"{1.0 / max_inverse}; starting at {1.0 / max_inverse}",
                    stacklevel=2,
                )
            log_inverse = min(math.log(1.0 / initial), math.log(max_inverse))
            self.log_inverse = nn.Parameter(torch.tensor(log_inverse))
        else:
            # float64 so that a float64 computation sees tau exactly as given; dividing a
            # float32 tensor by this 0-dim tensor still gives float32.
            self.register_buffer(
                "fixed", torch.tensor(float(initial), dtype=torch.float64), persistent=False
            )

    def forward(self) -> Tensor:
        """Return the scalar temperature (differentiable when learnable)."""
        if not self.learnable:
            return self.fixed
        with torch.no_grad():
            self.log_inverse.clamp_(max=math.log(self.max_inverse))
        return torch.exp(-self.log_inverse)

    def extra_repr(self) -> str:
        if not self.learnable:
            return f"tau={float(self.fixed):.4g}, learnable=False"
        inverse = min(math.exp(self.log_inverse.detach().item()), self.max_inverse)
        return f"tau={1.0 / inverse:.4g}, learnable=True, max_inverse={self.max_inverse:g}"


@dataclass
class InfoNCEOutput:
    """Result of an InfoNCE call.

    Attributes:
        loss: Scalar, differentiable.
        metrics: Detached Python floats (see the module docstring for the keys).
    """

    loss: Tensor
    metrics: dict[str, float]


def contrastive_cross_entropy(
    anchors: Tensor,
    candidates: Tensor,
    positive_mask: Tensor,
    valid_mask: Tensor,
    temperature: float | Tensor,
) -> tuple[Tensor, Tensor]:
    r"""Per-anchor multi-positive InfoNCE (SupCon ``L_out``), the core of every form.

    .. math::

        \ell_a = -\frac{1}{|P(a)|} \sum_{p \in P(a)}
            \log \frac{\exp(s_{ap} / \tau)}{\sum_{k \in V(a)} \exp(s_{ak} / \tau)}

    with ``s = anchors @ candidates.T``, ``P(a)`` the positives and ``V(a)`` the valid
    candidates of anchor ``a``; positives count in the denominator. Only positives that are
    also valid count. Computed with ``logsumexp``.

    Args:
        anchors: ``[N, D]``, already L2-normalised.
        candidates: ``[M, D]``, already L2-normalised.
        positive_mask: ``[N, M]`` bool, ``True`` where the candidate is a positive.
        valid_mask: ``[N, M]`` bool, ``True`` where the candidate is in the denominator.
        temperature: ``tau > 0``, a float or a scalar tensor (may require grad).

    Returns:
        ``(loss [N], has_positive [N] bool)``; the loss is 0 for anchors without a positive.
    """
    if anchors.ndim != 2 or candidates.ndim != 2 or anchors.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"anchors and candidates must be [N, D] and [M, D], got "
            f"{tuple(anchors.shape)} and {tuple(candidates.shape)}"
        )
    expected = (anchors.shape[0], candidates.shape[0])
    if positive_mask.shape != expected or valid_mask.shape != expected:
        raise ValueError(
            f"positive_mask and valid_mask must be {expected}, got "
            f"{tuple(positive_mask.shape)} and {tuple(valid_mask.shape)}"
        )
    return cross_entropy_from_similarity(
        anchors @ candidates.T, positive_mask, valid_mask, temperature
    )


def cross_entropy_from_similarity(
    similarity: Tensor, positive_mask: Tensor, valid_mask: Tensor, temperature: float | Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`contrastive_cross_entropy` on a precomputed cosine matrix ``[N, M]``."""
    positive_mask = positive_mask & valid_mask
    # An anchor with no valid candidate gets log_denominator = -inf; the where() below drops
    # it, and masked_fill's backward zeroes the NaN that logsumexp's backward puts in its row.
    logits = (similarity / temperature).masked_fill_(~valid_mask, -math.inf)
    log_denominator = torch.logsumexp(logits, dim=1)
    positives_per_anchor = positive_mask.sum(dim=1)
    has_positive = positives_per_anchor > 0
    # -(1/|P|) sum_p (logit_ap - log_denominator_a) = log_denominator_a - mean_p logit_ap
    mean_positive_logit = torch.where(positive_mask, logits, 0.0).sum(dim=1) / (
        positives_per_anchor.clamp(min=1)
    )
    loss = torch.where(has_positive, log_denominator - mean_positive_logit, 0.0)
    return loss, has_positive


def _in_batch_cross_entropy(
    similarity: Tensor,
    anchors: Tensor,
    partners: Tensor,
    counts: Tensor,
    temperature: float | Tensor,
) -> tuple[Tensor, Tensor]:
    r""":func:`cross_entropy_from_similarity` with every view but the anchor valid.

    Equal in value, but the sparse positives are never a dense ``[M, M]`` operand: their
    logits are gathered at the ``(anchors, partners)`` pairs, and the diagonal is excluded in
    place. This halves the loss's time on a large batch (a graph's nodes) against the masked
    form.

    Args:
        similarity: ``[M, M]`` cosines of L2-normalised views.
        anchors, partners: ``[P]`` each, the (anchor, positive) pairs, no ``(a, a)``.
        counts: ``[M]`` positives per anchor (``bincount(anchors)``).
        temperature: ``tau``.
    """
    # The diagonal's -inf drops the anchor from its denominator; fill's backward zeroes the
    # NaN that logsumexp's backward puts there when an anchor has no other candidate.
    logits = (similarity / temperature).fill_diagonal_(-math.inf)
    log_denominator = torch.logsumexp(logits, dim=1)
    positive_sums = torch.zeros_like(log_denominator).index_add_(
        0, anchors, logits[anchors, partners]
    )
    mean_positive_logit = positive_sums / counts.clamp(min=1)
    has_positive = counts > 0
    loss = torch.where(has_positive, log_denominator - mean_positive_logit, 0.0)
    return loss, has_positive


class InfoNCELoss(nn.Module):
    """InfoNCE over group ids, in-batch (SimCLR), against keys (MoCo) or symmetric (CLIP).

    See the module docstring for the formula, conventions and metrics.

    Args:
        temperature: ``tau`` (or its starting value when learnable).
        learnable_temperature: Learn ``log(1 / tau)`` (CLIP).
        max_inverse_temperature: Upper bound on ``1 / tau`` for the learnable form.

    Examples:
        >>> loss_fn = InfoNCELoss(temperature=0.1)
        >>> views, group_ids = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
        >>> out = loss_fn(views, group_ids)  # group 3 has one view: a negative only
        >>> out.loss.backward()
    """

    def __init__(
        self,
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        max_inverse_temperature: float = 100.0,
    ) -> None:
        super().__init__()
        self.temperature = Temperature(
            temperature, learnable=learnable_temperature, max_inverse=max_inverse_temperature
        )

    def forward(
        self, z: Tensor, group_ids: Tensor, positive_pairs: Tensor | None = None
    ) -> InfoNCEOutput:
        """In-batch loss: every view against all other views (NT-Xent, generalised).

        Args:
            z: ``[M, D]`` views (L2-normalised here).
            group_ids: ``[M]`` id of the object each view came from.
            positive_pairs: ``[2, P]`` long, row indices ``(anchor, candidate)``: candidate
                is a positive of anchor, besides the views sharing its id. One-directional:
                list both orders for a symmetric relation. Pairs ``(a, a)`` are ignored.

        Returns:
            Mean of the per-anchor loss over anchors that have a positive, and metrics.
        """
        _check_embeddings("z", z)
        check_ids("group_ids", group_ids, z.shape[0])
        z = F.normalize(z, dim=1)
        positive = group_ids[:, None] == group_ids[None, :]
        if positive_pairs is not None:
            check_pairs("positive_pairs", positive_pairs, z.shape[0])
            positive[positive_pairs[0], positive_pairs[1]] = True
        positive.fill_diagonal_(False)
        # (anchor, positive) pairs: O(M) of them against the M^2 entries of the masks.
        anchors, partners = positive.nonzero(as_tuple=True)
        counts = torch.bincount(anchors, minlength=z.shape[0])
        similarity = z @ z.T
        tau = self.temperature()
        per_anchor, has_positive = _in_batch_cross_entropy(
            similarity, anchors, partners, counts, tau
        )
        loss = _mean_over_anchors_with_positive([(per_anchor, has_positive)])
        with torch.no_grad():
            metrics = in_batch_metrics(loss, tau, similarity, anchors, partners, counts)
        return InfoNCEOutput(loss, metrics)

    def against_keys(
        self,
        queries: Tensor,
        keys: Tensor,
        query_ids: Tensor | None = None,
        key_ids: Tensor | None = None,
        bank: Tensor | None = None,
        exclude_diagonal: bool = False,
    ) -> InfoNCEOutput:
        """One-directional loss (MoCo / CPC): each query against the keys and the bank.

        Args:
            queries: ``[N, D]`` (L2-normalised here).
            keys: ``[M, D]`` (L2-normalised here).
            query_ids: ``[N]``; with ``key_ids``, positives are keys with the query's id.
                Both default to ``arange``: query ``i``'s positive is key ``i`` (``N == M``).
            key_ids: ``[M]``, given together with ``query_ids``.
            bank: ``[K, D]`` extra keys (e.g. a MoCo queue), always negatives; detach it
                yourself if it should get no gradient.
            exclude_diagonal: Query ``i`` and key ``i`` are two encodings of the same view
                (MoCo over all views of a batch): key ``i`` is neither a positive nor a
                negative of query ``i``, as the anchor itself is in the in-batch form.

        Returns:
            Mean over queries that have a positive, and metrics.
        """
        _check_embeddings("queries", queries)
        _check_embeddings("keys", keys, queries.shape[1])
        if (query_ids is None) != (key_ids is None):
            raise ValueError("pass both query_ids and key_ids, or neither")
        if query_ids is None or key_ids is None:
            if queries.shape[0] != keys.shape[0]:
                raise ValueError(
                    f"without ids, queries and keys pair up by row and need the same count, "
                    f"got {queries.shape[0]} and {keys.shape[0]}"
                )
            query_ids = key_ids = torch.arange(queries.shape[0], device=queries.device)
        check_ids("query_ids", query_ids, queries.shape[0])
        check_ids("key_ids", key_ids, keys.shape[0])
        queries = F.normalize(queries, dim=1)
        keys = F.normalize(keys, dim=1)
        candidates = keys
        positive = query_ids[:, None] == key_ids[None, :]
        if bank is not None:
            _check_embeddings("bank", bank, queries.shape[1])
            candidates = torch.cat([keys, F.normalize(bank, dim=1)])
            positive = torch.cat(
                [positive, positive.new_zeros(positive.shape[0], bank.shape[0])], dim=1
            )
        valid = torch.ones_like(positive)
        if exclude_diagonal:
            if queries.shape[0] != keys.shape[0]:
                raise ValueError(
                    f"exclude_diagonal pairs queries and keys by row and needs the same count, "
                    f"got {queries.shape[0]} and {keys.shape[0]}"
                )
            valid[:, : keys.shape[0]].fill_diagonal_(False)
        similarity = queries @ candidates.T
        tau = self.temperature()
        per_anchor, has_positive = cross_entropy_from_similarity(similarity, positive, valid, tau)
        loss = _mean_over_anchors_with_positive([(per_anchor, has_positive)])
        with torch.no_grad():
            metrics = loss_metrics(
                loss,
                tau,
                [(similarity, positive, valid, has_positive)],
                uniformity_or_nan(torch.cat([queries, keys])),
            )
        return InfoNCEOutput(loss, metrics)

    def symmetric(self, a: Tensor, b: Tensor, ids: Tensor | None = None) -> InfoNCEOutput:
        """Symmetric two-tower loss (CLIP): ``0.5 * (L(a -> b) + L(b -> a))``.

        Args:
            a: ``[N, D]`` first tower (L2-normalised here).
            b: ``[N, D]`` second tower (L2-normalised here).
            ids: ``[N]`` ids shared by row ``i`` of ``a`` and of ``b``; ``a_i`` and ``b_j`` are
                positives where ``ids[i] == ids[j]``. Defaults to ``arange(N)``.

        Returns:
            The symmetric loss and metrics over both directions.
        """
        _check_embeddings("a", a)
        _check_embeddings("b", b, a.shape[1])
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"a and b need the same number of rows, got {len(a)} and {len(b)}")
        if ids is None:
            ids = torch.arange(a.shape[0], device=a.device)
        check_ids("ids", ids, a.shape[0])
        a = F.normalize(a, dim=1)
        b = F.normalize(b, dim=1)
        positive = ids[:, None] == ids[None, :]
        valid = torch.ones_like(positive)
        # One similarity matrix for both directions: b -> a reads its transpose.
        similarity = a @ b.T
        tau = self.temperature()
        directions = [(similarity, positive, valid), (similarity.T, positive.T, valid.T)]
        terms = [cross_entropy_from_similarity(s, p, v, tau) for s, p, v in directions]
        loss = _mean_over_anchors_with_positive(terms)
        with torch.no_grad():
            metrics = loss_metrics(
                loss,
                tau,
                [(*direction, has) for direction, (_, has) in zip(directions, terms, strict=True)],
                uniformity_or_nan(torch.cat([a, b])),
            )
        return InfoNCEOutput(loss, metrics)


def dense_nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR's NT-Xent for two views per object, mean over the ``2N`` anchors, in dense form.

    Equal to ``InfoNCELoss(temperature)(cat([z1, z2]), cat([arange(N), arange(N)])).loss``,
    without module state or metrics. It holds the ``[2N, 2N]`` similarity matrix: the
    reference that :func:`scicontrast.models.nt_xent` (chunked, ``O(N D)`` memory) is
    tested and benchmarked against.

    Args:
        z1: ``[N, D]`` first views (L2-normalised here).
        z2: ``[N, D]`` second views, row ``i`` from the same object as ``z1[i]``.
        temperature: ``tau > 0``.

    Returns:
        Scalar loss.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    check_positive("temperature", temperature)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    ids = torch.arange(z1.shape[0], device=z.device).repeat(2)
    not_self = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    positive = (ids[:, None] == ids[None, :]) & not_self
    per_anchor, _ = cross_entropy_from_similarity(z @ z.T, positive, not_self, temperature)
    return per_anchor.mean()


def _mean_over_anchors_with_positive(terms: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Average of the per-direction means over anchors with a positive; warns if none has one.

    Anchors without a positive hold a loss of exactly 0 that is still connected to the
    inputs and the temperature, so the all-empty case returns 0 with a usable graph.
    """
    means = [loss.sum() / has_positive.sum().clamp(min=1) for loss, has_positive in terms]
    if not any(bool(has_positive.any()) for _, has_positive in terms):
        warnings.warn(NO_POSITIVE_WARNING, stacklevel=2)
    return torch.stack(means).mean()


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def _check_embeddings(name: str, x: Tensor, dim: int | None = None) -> None:
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        expected = f"[rows, {dim}]" if dim is not None else "[rows, dim]"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")


def check_pairs(name: str, pairs: Tensor, rows: int) -> None:
    if pairs.ndim != 2 or pairs.shape[0] != 2 or pairs.dtype != torch.long:
        raise ValueError(
            f"{name} must be a long tensor of shape [2, P], got {pairs.dtype} {tuple(pairs.shape)}"
        )
    if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= rows):
        raise ValueError(f"{name} must index rows 0..{rows - 1}")


def check_ids(name: str, ids: Tensor, rows: int) -> None:
    if ids.shape != (rows,):
        raise ValueError(
            f"{name} must have shape [{rows}] (one id per row), got {tuple(ids.shape)}"
        )
