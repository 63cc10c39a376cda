"""Views that are tensor operations, on a whole batch, on whatever device the batch is on.

The loader's pair builders make views item by item on the CPU (``PairBuilder.make_view``).
Where a view is a tensor operation, the same view can be made for a whole batch at once on
the training device, so that a GPU is not starved by the CPU. Each function takes the
batch and per-row parameters (a shift, an angle, whether to reverse-complement), so that
with the parameters the CPU path drew from ``(seed, epoch, group)`` it gives the CPU
path's view exactly; the random views (edge and feature dropping) take a
``torch.Generator`` on the batch's device and are equal to the CPU path in distribution.

=====================  ================================================================
view                   operation on ``x``
=====================  ================================================================
reverse complement     one-hot ``[B, 4, L]`` in A, C, G, T order: ``x.flip(-2).flip(-1)``
shift (window)         ``x[b, :, s_b : s_b + L]`` of a flanked ``[B, C, L + 2F]``
mask (block)           ``x[b, :, m_b : m_b + K] = fill``
flip                   ``x.flip(-1)`` (mirror left-right)
rotation               :func:`scicontrast.geometry.rotate` (``affine_grid`` + ``grid_sample``)
edge dropping          keep each edge with probability ``1 - p``
feature masking        zero each feature column with probability ``p``
=====================  ================================================================
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rows(mask: Tensor | None, batch: int, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    return mask.to(device=device, dtype=torch.bool)


def reverse_complement(x: Tensor, rows: Tensor | None = None) -> Tensor:
    """One-hot DNA ``[B, 4, L]`` (channels A, C, G, T) reverse-complemented where ``rows``.

    Complementing swaps A<->T and C<->G, the channel order reversed; reversing flips the
    length. An ambiguous base (0.25 in each channel) or padding (zeros) stays as it is.
    """
    flipped = x.flip(-2).flip(-1)
    keep = _rows(rows, x.shape[0], x.device).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(keep, flipped, x)


def windows(x: Tensor, starts: Tensor, length: int) -> Tensor:
    """``out[b] = x[b, ..., starts[b] : starts[b] + length]``: a shifted window per row.

    Args:
        x: ``[B, C, L']`` with ``L' >= starts.max() + length``.
        starts: ``[B]`` long, first column of each row's window.
        length: Window length ``L``.
    """
    if int(starts.min()) < 0 or int(starts.max()) + length > x.shape[-1]:
        raise ValueError(
            f"windows of {length} at starts {starts.tolist()} leave [0, {x.shape[-1]})"
        )
    index = starts.to(x.device).view(-1, 1) + torch.arange(length, device=x.device)
    return x.gather(-1, index.unsqueeze(1).expand(-1, x.shape[1], -1))


def mask_blocks(x: Tensor, starts: Tensor, length: int, fill: float = 0.0) -> Tensor:
    """``x`` with columns ``starts[b] .. starts[b] + length - 1`` of row ``b`` set to ``fill``."""
    columns = torch.arange(x.shape[-1], device=x.device)
    starts = starts.to(x.device).view(-1, 1)
    inside = (columns >= starts) & (columns < starts + length)
    return x.masked_fill(inside.unsqueeze(1), fill)


def flip_left_right(images: Tensor, rows: Tensor | None = None) -> Tensor:
    """``[B, C, H, W]`` images mirrored left-right where ``rows``."""
    keep = _rows(rows, images.shape[0], images.device).view(-1, 1, 1, 1)
    return torch.where(keep, images.flip(-1), images)


def drop_edges(
    edge_index: Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Keep each edge of ``[2, E]`` with probability ``1 - p``: ``(kept [2, E'], mask [E])``.

    PyG's ``dropout_edge`` (GRACE's view) with an explicit generator on the edges' device;
    node ids are kept.
    """
    keep = torch.rand(edge_index.shape[1], generator=generator, device=edge_index.device) >= p
    return edge_index[:, keep], keep


def mask_features(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``[N, F]`` features with each column zeroed with probability ``p`` (PyG
    ``mask_feature(mode="col")``, GRACE's feature masking)."""
    masked = torch.rand(x.shape[1], generator=generator, device=x.device) < p
    return x.masked_fill(masked, 0.0)
