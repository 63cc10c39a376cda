"""Image geometry shared by the rotation views (data) and the rotation-invariant encoder
(model): the inscribed disc and rotation about the image centre. Neither layer owns it, so
it sits below both."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def disc_mask(size: int) -> Tensor:
    """``bool [size, size]``: pixel centres within ``size / 2`` of the image centre.

    The grid of pixel centres is symmetric about the centre, so the disc is invariant to
    exact 90-degree rotations and to mirrors.
    """
    centres = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    return centres[:, None] ** 2 + centres[None, :] ** 2 <= (size / 2) ** 2


def rotate(
    images: Tensor,
    angles: Tensor,
    out_size: int | None = None,
    flips: Tensor | None = None,
    interpolation: str = "bilinear",
    shifts: Tensor | None = None,
) -> Tensor:
    """Rotate a batch about the image centre and keep the central ``out_size`` square.

    Args:
        images: ``float [B, C, S, S]``.
        angles: ``[B]`` degrees, counter-clockwise as displayed (``torch.rot90``'s sense).
        out_size: Side of the central crop of the rotated image; ``None`` keeps ``S``.
        flips: ``bool [B]``: mirror left-right before rotating; ``None`` mirrors nothing.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        shifts: ``[B, 2]`` pixels ``(right, down)`` by which the rotation centre (and so the
            crop) moves away from the image centre; ``None`` moves nothing.

    Returns:
        ``[B, C, out_size, out_size]``, same dtype. No mask is applied.
    """
    batch, channels, size = images.shape[0], images.shape[1], images.shape[-1]
    out_size = size if out_size is None else out_size
    # The [B, 2, 3] matrices are built in float64 on the CPU (any device has them then,
    # float64 or not) and moved to the images' device.
    radians = torch.deg2rad(angles.detach().to("cpu", torch.float64))
    cos, sin = torch.cos(radians), torch.sin(radians)
    mirror = torch.ones(batch, dtype=torch.float64)
    if flips is not None:
        mirror = torch.where(flips.cpu(), -1.0, 1.0).to(torch.float64)
    # affine_grid maps output (x right, y down) to input coordinates. Showing the image
    # turned counter-clockwise by theta means sampling at R(-theta) in these y-down axes,
    # [[cos, -sin], [sin, cos]]; the mirror negates the input's x, and out_size / S scales
    # normalised output coordinates to the central crop.
    scale = out_size / size
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = mirror * cos * scale
    theta[:, 0, 1] = -mirror * sin * scale
    theta[:, 1, 0] = sin * scale
    theta[:, 1, 1] = cos * scale
    if shifts is not None:
        theta[:, :, 2] = shifts.to("cpu", torch.float64) * (2 / size)
    grid = F.affine_grid(
        theta.to(images.device, images.dtype),
        [batch, channels, out_size, out_size],
        align_corners=False,
    )
    return F.grid_sample(
        images, grid, mode=interpolation, padding_mode="border", align_corners=False
    )
