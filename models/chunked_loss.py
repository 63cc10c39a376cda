r"""In-batch InfoNCE on group ids without the ``M x M`` similarity matrix.

The loss is the one of :class:`scicontrast.models.losses.InfoNCELoss` (SupCon ``L_out``, self
excluded, mean over the anchors that have a positive). With ``u_a`` the L2-normalised views,
``s_ab = u_a . u_b``, ``P(a)`` the other views of ``a``'s group, ``w_a = 1 / |A|`` for the
anchors ``A`` with a positive and ``w_a = 0`` otherwise:

.. math::

    L = \sum_a w_a \log \sum_{b \ne a} e^{s_{ab} / \tau}
        - \sum_a \frac{w_a}{\tau |P(a)|} \, u_a \cdot (S_{g(a)} - u_a)

where ``S_g`` is the sum of the views of group ``g``. The second (positive) term costs
``O(M D)`` through the group sums and is left to autograd. The first term is a
:class:`torch.autograd.Function` that walks the matrix in strips of ``b`` rows and keeps only
``O(M)`` numbers between strips:

* **Symmetric path** (``1 / tau`` within the exponent range of the dtype; in float32
  ``1 / tau <= 82`` and ``1 / tau + ln M <= 83``, e.g. ``tau >= 0.015`` up to a million
  views): ``E_ab = exp(s_ab / tau)`` lies in ``[exp(-1 / tau), exp(1 / tau)]``, normal
  numbers whose row sums cannot overflow, so no per-row shift is needed and ``E`` is
  symmetric. Strip ``i`` holds the rows of block ``i``
  against the columns from block ``i`` on (the upper block triangle), so every entry is
  computed once: its row sums go to the strip's rows, the column sums of the part right of
  the diagonal block go to the later rows. The backward pass recomputes each strip and, with
  ``alpha_a = w_a / (tau r_a)`` (``r_a`` the row sums of ``E``), forms
  ``H = E * (alpha_i[:, None] + alpha_j[None, :])``, the strip of ``G + G^T`` where
  ``G_ab = (w_a / tau) softmax_a(b)``; then ``dL/du_i += H u_j`` and ``dL/du_j += H^T u_i``.
  Per entry of the upper triangle: four dot products of length ``D`` (one forward, three
  backward; ``4 M^2 D`` flops in all, where the dense loss with autograd needs ``6 M^2 D``),
  two exponentials and a few passes over the strip. Each strip is one large matrix product
  (``torch.mm`` / ``addmm_`` into preallocated buffers) and the exponential is taken as
  ``exp2`` of prescaled views, its cheapest kernel.
* **Row path** (smaller ``tau``): strips of whole rows with an exact per-row ``logsumexp``
  in the forward pass; the backward pass recomputes ``P = exp(s / tau - lse)`` per strip.
  Twice the products of the symmetric path, exact for any ``tau``.

The temperature gradient is free: the first term is a function of ``u / sqrt(tau)``, so
``dL/dtau = -(1 / (2 tau)) sum_a u_a . dL/du_a``.

Memory: two strip buffers of ``b x M`` entries (``b`` from ``block_bytes``, 256 MiB by
default, and at most ``max(M / 4, 512)`` rows) plus ``O(M D)``: 65,536 float32 views of
dimension 128 train in about 450 MiB (measured), where the dense matrix alone takes 16 GiB.

:func:`nt_xent` is the two-view special case (SimCLR), equal to
:func:`scicontrast.models.losses.dense_nt_xent`; ``scicontrast.models.nt_xent`` points here.

References:
    - SimCLR / NT-Xent: Chen et al. 2020, https://arxiv.org/abs/2002.05709
    - SupCon: Khosla et al. 2020, https://arxiv.org/abs/2004.11362
    - Memory-efficient attention / online softmax by blocks: Rabe & Staats 2021,
      https://arxiv.org/abs/2112.05682
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from scicontrast.models.losses import (
    NO_POSITIVE_WARNING,
    InfoNCELoss,
    InfoNCEOutput,
    check_ids,
    check_pairs,
    check_positive,
)

__all__ = ["DEFAULT_BLOCK_BYTES", "ChunkedInfoNCELoss", "chunked_info_nce", "nt_xent"]

DEFAULT_BLOCK_BYTES = 256 * 2**20
# Strips are at most M / _MIN_STRIPS rows: the diagonal block of each strip is computed in
# full, so a strip of b rows wastes b^2 / 2 entries and the waste is b / M of the triangle;
# taller strips make faster matrix products (measured: per entry, b = 2048 costs 0.7x of
# b = 512 at D = 128), which more than pays for 25% waste at M = 8192.
_MIN_STRIPS = 4
# Below this many rows a strip's products lose speed faster than the waste shrinks; only a
# memory budget too small for it goes lower, down to _MIN_BLOCK_ROWS.
_EFFICIENT_BLOCK_ROWS = 512
_MIN_BLOCK_ROWS = 64
# Keep exp(-1 / tau) this far (in log units) above the dtype's smallest normal number and
# M exp(1 / tau) this far below its largest, so no entry is subnormal and no row sum overflows.
_EXPONENT_MARGIN = 5.0
_LOG2_E = 1.0 / math.log(2.0)


def chunked_info_nce(
    z: Tensor,
    group_ids: Tensor,
    temperature: float | Tensor,
    block_size: int | None = None,
    uniformity: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    positive_pairs: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """In-batch InfoNCE on group ids, computed in row strips (see the module docstring).

    Equal to ``InfoNCELoss(temperature)(z, group_ids, positive_pairs)`` in value and
    gradients (to float rounding) without ever holding the ``M x M`` similarity matrix.

    Args:
        z: ``[M, D]`` views (L2-normalised here); float16/bfloat16 are computed in float32.
        group_ids: ``[M]`` id of the object each view came from.
        temperature: ``tau > 0``, a float or a scalar tensor (may require grad).
        block_size: Rows per strip; by default the largest that keeps the two strip buffers
            within ``block_bytes``, at most ``max(M / 4, 512)`` rows.
        uniformity: Also compute the Wang & Isola uniformity (one more pass over the
            strips in the forward pass); ``nan`` otherwise.
        block_bytes: Memory budget of the strip buffers when ``block_size`` is not given.
        positive_pairs: ``[2, P]`` long ``(anchor, candidate)`` rows: extra one-directional
            positives besides the views sharing an id (as in ``InfoNCELoss.forward``);
            they cost ``O(P D)``.

    Returns:
        ``(loss, stats)``: the scalar loss and the metrics of
        :class:`~scicontrast.models.losses.InfoNCEOutput` as floats.
    """
    if z.ndim != 2:
        raise ValueError(f"z must have shape [rows, dim], got {tuple(z.shape)}")
    rows = z.shape[0]
    check_ids("group_ids", group_ids, rows)
    z = _compute_dtype(z)
    tau = _temperature_tensor(temperature, z)
    u = F.normalize(z, dim=1)
    codes = torch.unique(group_ids, return_inverse=True)[1]
    group_sizes = torch.bincount(codes)
    group_sums = u.new_zeros(int(group_sizes.numel()), u.shape[1]).index_add(0, codes, u)
    positives = group_sizes[codes] - 1
    # sum over the positives p of anchor a of u_a . u_p
    positive_dot = (u * (group_sums[codes] - u)).sum(dim=1)
    if positive_pairs is not None:
        check_pairs("positive_pairs", positive_pairs, rows)
        anchor, candidate = positive_pairs
        # A pair counts once, and not at all when it is a self pair or already shares the id.
        extra = torch.unique(anchor * rows + candidate)
        anchor, candidate = extra // rows, extra % rows
        new = codes[anchor] != codes[candidate]
        anchor, candidate = anchor[new], candidate[new]
        positives = positives + torch.bincount(anchor, minlength=rows)
        pair_dot = (u[anchor] * u[candidate]).sum(dim=1)
        positive_dot = positive_dot.index_add(0, anchor, pair_dot)
    has_positive = positives > 0
    counted = int(has_positive.sum())
    if counted == 0:
        warnings.warn(NO_POSITIVE_WARNING, stacklevel=2)
    weights = has_positive.to(u.dtype) / max(counted, 1)

    positive_term = (weights / positives.clamp(min=1) * positive_dot).sum() / tau
    log_partition, uniformity_value = _weighted_logsumexp(
        u, tau, weights, block_size, uniformity, block_bytes
    )
    loss = log_partition - positive_term

    with torch.no_grad():
        stats = _stats(loss, tau, u, positive_dot, positives, has_positive, uniformity_value)
    return loss, stats


def nt_xent(
    z1: Tensor, z2: Tensor, temperature: float = 0.1, block_size: int | None = None
) -> Tensor:
    """SimCLR's NT-Xent for two views per object, mean over the ``2N`` anchors.

    The fastest exact form in this package: equal to
    :func:`scicontrast.models.losses.dense_nt_xent` (values and gradients) in ``O(N D)`` memory
    beyond the strip buffers.

    Args:
        z1: ``[N, D]`` first views (L2-normalised here).
        z2: ``[N, D]`` second views, row ``i`` from the same object as ``z1[i]``.
        temperature: ``tau > 0``.
        block_size: Rows per strip (see :func:`chunked_info_nce`).

    Returns:
        Scalar loss.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    check_positive("temperature", temperature)
    u1 = F.normalize(_compute_dtype(z1), dim=1)
    u2 = F.normalize(_compute_dtype(z2), dim=1)
    u = torch.cat([u1, u2])
    tau = _temperature_tensor(temperature, u)
    weights = u.new_full((u.shape[0],), 1.0 / u.shape[0])
    log_partition, _ = _weighted_logsumexp(u, tau, weights, block_size, False, DEFAULT_BLOCK_BYTES)
    # Each pair (i, N + i) is counted from both of its anchors.
    positive_term = 2.0 * (u1 * u2).sum() / (u.shape[0] * tau)
    return log_partition - positive_term


class ChunkedInfoNCELoss(InfoNCELoss):
    """:class:`~scicontrast.models.losses.InfoNCELoss` whose in-batch form runs in strips.

    Same parameters, state dict and metrics (uniformity included); :meth:`forward` calls
    :func:`chunked_info_nce`, the key-bank and two-tower forms are inherited unchanged.

    Args:
        temperature: ``tau`` (or its starting value when learnable).
        learnable_temperature: Learn ``log(1 / tau)`` (CLIP).
        max_inverse_temperature: Upper bound on ``1 / tau`` for the learnable form.
        block_bytes: Memory budget of the strip buffers.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        max_inverse_temperature: float = 100.0,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        super().__init__(temperature, learnable_temperature, max_inverse_temperature)
        self.block_bytes = block_bytes

    def forward(
        self, z: Tensor, group_ids: Tensor, positive_pairs: Tensor | None = None
    ) -> InfoNCEOutput:
        """In-batch loss over ``z [M, D]`` with ``group_ids [M]``; see :func:`chunked_info_nce`."""
        loss, stats = chunked_info_nce(
            z,
            group_ids,
            self.temperature(),
            uniformity=True,
            block_bytes=self.block_bytes,
            positive_pairs=positive_pairs,
        )
        return InfoNCEOutput(loss, stats)


class _WeightedLogSumExp(torch.autograd.Function):
    """``sum_a w_a log sum_{b != a} exp(u_a . u_b / tau)`` in strips, with its gradients."""

    @staticmethod
    def forward(
        ctx: Any,  # FunctionCtx, plus the attributes forward stores on it
        u: Tensor,
        tau: Tensor,
        weights: Tensor,
        block_rows: int,
        symmetric: bool,
        uniformity: bool,
    ) -> tuple[Tensor, Tensor]:
        inverse_tau = 1.0 / float(tau)
        if symmetric:
            log_row_sums, uniformity_sum = _symmetric_forward(
                u, inverse_tau, block_rows, uniformity
            )
        else:
            log_row_sums, uniformity_sum = _row_forward(u, inverse_tau, block_rows, uniformity)
        ctx.save_for_backward(u, weights, log_row_sums)
        ctx.inverse_tau = inverse_tau
        ctx.block_rows = block_rows
        ctx.symmetric = symmetric
        ctx.mark_non_differentiable(uniformity_sum)
        return (weights * log_row_sums).sum(), uniformity_sum

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_loss: Tensor, _grad_uniformity: Tensor
    ) -> tuple[Tensor | None, ...]:
        u, weights, log_row_sums = ctx.saved_tensors
        inverse_tau = ctx.inverse_tau
        # d/ds_ab of w_a * logsumexp_a is (w_a / tau) * softmax_a(b).
        row_scale = weights * inverse_tau
        if ctx.symmetric:
            grad_u = _symmetric_backward(u, inverse_tau, row_scale, log_row_sums, ctx.block_rows)
        else:
            grad_u = _row_backward(u, inverse_tau, row_scale, log_row_sums, ctx.block_rows)
        grad_tau = None
        if ctx.needs_input_grad[1]:
            # The loss depends on (u, tau) only through u / sqrt(tau).
            grad_tau = -0.5 * inverse_tau * (u * grad_u).sum() * grad_loss
        return grad_u * grad_loss, grad_tau, None, None, None, None


def _weighted_logsumexp(
    u: Tensor,
    tau: Tensor,
    weights: Tensor,
    block_size: int | None,
    uniformity: bool,
    block_bytes: int,
) -> tuple[Tensor, float]:
    """Run :class:`_WeightedLogSumExp`; return the sum and the uniformity (``nan`` if off)."""
    rows = u.shape[0]
    if rows < 2:
        # No pair at all: every weight is 0; keep the graph for a harmless backward.
        return (u.sum() + tau) * 0.0, math.nan
    inverse_tau = 1.0 / float(tau.detach())
    symmetric = _fits_exponent_range(inverse_tau, rows, u.dtype)
    if block_size is None:
        block_size = _default_block_rows(rows, u.element_size(), block_bytes, symmetric)
    elif block_size < 1:
        raise ValueError(f"block_size must be a positive number of rows, got {block_size}")
    value, uniformity_sum = _WeightedLogSumExp.apply(
        u, tau, weights, min(block_size, rows), symmetric, uniformity
    )
    if uniformity:
        return value, math.log(float(uniformity_sum) / (rows * (rows - 1)))
    return value, math.nan


def _fits_exponent_range(inverse_tau: float, rows: int, dtype: torch.dtype) -> bool:
    """Whether ``exp(s / tau)`` for ``s`` in ``[-1, 1]`` and its row sums stay normal numbers."""
    info = torch.finfo(dtype)
    smallest_ok = -math.log(info.tiny) - _EXPONENT_MARGIN
    largest_ok = math.log(info.max) - _EXPONENT_MARGIN
    return inverse_tau <= smallest_ok and inverse_tau + math.log(rows) <= largest_ok


def _default_block_rows(rows: int, element_size: int, block_bytes: int, symmetric: bool) -> int:
    # The symmetric path holds E and H; the row path's logsumexp needs about four strips.
    buffers = 2 if symmetric else 4
    by_memory = block_bytes // (buffers * element_size * rows)
    by_waste = max(-(-rows // _MIN_STRIPS), min(rows, _EFFICIENT_BLOCK_ROWS)) if symmetric else rows
    return max(_MIN_BLOCK_ROWS, min(by_memory, by_waste))


def _strips(rows: int, block_rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, rows, block_rows):
        yield start, min(start + block_rows, rows)


def _exp_strip(scaled: Tensor, start: int, end: int, out: Tensor) -> Tensor:
    """``E = 2^(v[start:end] v[start:]^T)`` into ``out``, 0 on the self pairs.

    With ``v = u sqrt(log2(e) / tau)`` this is ``exp(s / tau)``; ``exp2`` is the cheaper kernel.
    """
    rows = scaled.shape[0]
    strip = out[: (end - start) * (rows - start)].view(end - start, rows - start)
    torch.mm(scaled[start:end], scaled[start:].T, out=strip)
    strip.exp2_()
    strip[:, : end - start].diagonal().zero_()
    return strip


def _symmetric_forward(
    u: Tensor, inverse_tau: float, block_rows: int, uniformity: bool
) -> tuple[Tensor, Tensor]:
    rows = u.shape[0]
    scaled = u * math.sqrt(inverse_tau * _LOG2_E)
    row_sums = u.new_zeros(rows)
    uniformity_sum = u.new_zeros((), dtype=torch.float64)
    buffer = u.new_empty(block_rows * rows)
    ones = u.new_ones(rows)
    for start, end in _strips(rows, block_rows):
        strip = _exp_strip(scaled, start, end, buffer)
        beyond_diagonal = strip[:, end - start :]
        row_sums[start:end] += torch.mv(strip, ones[start:])
        row_sums[end:] += torch.mv(beyond_diagonal.T, ones[start:end])
        if uniformity:
            # exp(-2 ||u_a - u_b||^2) = exp(4 s_ab - 4) = E_ab^(4 tau) e^-4 (0 on self pairs);
            # the pairs beyond the diagonal block stand for both orders.
            exponent = 4.0 / inverse_tau
            diagonal_block = strip[:, : end - start].pow(exponent).sum(dtype=torch.float64)
            beyond = beyond_diagonal.pow(exponent).sum(dtype=torch.float64)
            uniformity_sum += math.exp(-4.0) * (diagonal_block + 2 * beyond)
    return row_sums.log_(), uniformity_sum


def _symmetric_backward(
    u: Tensor, inverse_tau: float, row_scale: Tensor, log_row_sums: Tensor, block_rows: int
) -> Tensor:
    rows = u.shape[0]
    scaled = u * math.sqrt(inverse_tau * _LOG2_E)
    # softmax_a(b) = E_ab / r_a. alpha_a = (w_a / tau) / r_a is kept times M so that it stays
    # a normal number over the whole range of r_a allowed by _fits_exponent_range.
    alpha = torch.exp(torch.log(row_scale * rows) - log_row_sums)
    grad = torch.zeros_like(u)
    buffers = u.new_empty(2, block_rows * rows)
    for start, end in _strips(rows, block_rows):
        strip = _exp_strip(scaled, start, end, buffers[0])
        # H = E * (alpha_i + alpha_j): the strip of G + G^T, G_ab = (w_a / tau) softmax_a(b).
        combined = buffers[1, : strip.numel()].view_as(strip)
        torch.mul(strip, alpha[None, start:], out=combined)
        combined.addcmul_(strip, alpha[start:end, None])
        grad[start:end].addmm_(combined, u[start:])
        grad[end:].addmm_(combined[:, end - start :].T, u[start:end])
    return grad.div_(rows)


def _row_forward(
    u: Tensor, inverse_tau: float, block_rows: int, uniformity: bool
) -> tuple[Tensor, Tensor]:
    rows = u.shape[0]
    log_row_sums = u.new_empty(rows)
    uniformity_sum = u.new_zeros((), dtype=torch.float64)
    for start, end in _strips(rows, block_rows):
        logits = u[start:end] @ u.T
        logits[:, start:end].diagonal().fill_(-math.inf)
        if uniformity:
            uniformity_sum += torch.exp(4 * (logits - 1)).sum(dtype=torch.float64)
        log_row_sums[start:end] = torch.logsumexp(logits.mul_(inverse_tau), dim=1)
    return log_row_sums, uniformity_sum


def _row_backward(
    u: Tensor, inverse_tau: float, row_scale: Tensor, log_row_sums: Tensor, block_rows: int
) -> Tensor:
    rows = u.shape[0]
    grad = torch.zeros_like(u)
    for start, end in _strips(rows, block_rows):
        # softmax_a(b) = exp(s_ab / tau - lse_a), scaled by w_a / tau.
        weighted_softmax = torch.addmm(
            -log_row_sums[start:end, None], u[start:end], u.T, alpha=inverse_tau
        ).exp_()
        weighted_softmax[:, start:end].diagonal().zero_()
        weighted_softmax.mul_(row_scale[start:end, None])
        grad[start:end].addmm_(weighted_softmax, u)
        grad.addmm_(weighted_softmax.T, u[start:end])
    return grad


def _stats(
    loss: Tensor,
    tau: Tensor,
    u: Tensor,
    positive_dot: Tensor,
    positives: Tensor,
    has_positive: Tensor,
    uniformity_value: float,
) -> dict[str, float]:
    """The metrics of ``InfoNCELoss`` from ``O(M D)`` sums (pairs of anchors with a positive)."""
    u = u.double()
    positive_dot = positive_dot.double()
    rows = u.shape[0]
    counted = has_positive.sum()
    # Sum over the negatives b of anchor a: u_a . (sum of the others) - its positives' sum.
    negative_dot = (u * (u.sum(dim=0) - u)).sum(dim=1) - positive_dot
    negative_pairs = (rows - 1 - positives)[has_positive].sum().double()
    pos_sim = positive_dot.sum() / positives.sum().double()
    num_negatives = negative_pairs / counted
    values = {
        "loss": loss.detach().double(),
        "temperature": tau.detach().double(),
        "num_negatives": num_negatives,
        "mi_lower_bound": torch.log1p(num_negatives) - loss.detach().double(),
        "pos_sim": pos_sim,
        "neg_sim": negative_dot[has_positive].sum() / negative_pairs,
        "alignment": 2 - 2 * pos_sim,
        "uniformity": torch.tensor(uniformity_value, dtype=torch.float64),
        "anchors_without_positive": (rows - counted).double(),
    }
    floats = torch.stack([v.to("cpu", torch.float64) for v in values.values()])
    return dict(zip(values, floats.tolist(), strict=True))


def _compute_dtype(z: Tensor) -> Tensor:
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def _temperature_tensor(temperature: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1 or not float(temperature.detach()) > 0:
            raise ValueError(f"temperature must be a positive scalar, got {temperature}")
        return temperature.reshape(()).to(like.dtype)
    check_positive("temperature", temperature)
    return like.new_tensor(float(temperature))
