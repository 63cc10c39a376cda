"""Bringing an image to the square size of the items.


``"crop"`` (default)
    scale so that the shorter side is ``S``, then cut the centred ``S x S`` square;
``"fit"``
    scale so that the longer side is ``S`` and pad the rest with zeros, centred;
    ``items.arrays["masks"]`` (``bool [N, S, S]``) then marks the image's pixels;
``"none"``
    no scaling: cut the centred ``S x S`` square (an image smaller than ``S`` is an error).

With ``tiles = k`` an image is cut, unscaled, into the grid of non-overlapping ``S x S``
tiles (the grid centred in the image, the leftover margin split evenly) and ``k`` tiles
spread evenly over the grid in raster order are kept (all of them when the grid has at most
``k``). Scaling uses ``skimage.transform.resize`` with anti-aliasing.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

from scicontrast.errors import InputDataError

RESIZE_POLICIES = ("crop", "fit", "none")


# Scaling a whole image up by more than this invents most of its pixels: allowed, with a warning.
MAX_SILENT_UPSCALE = 2.0


# --- cropping ----------------------------------------------------------------------------


def _scaled(pixels: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return pixels
    height, width = pixels.shape[:2]
    shape = (max(1, round(height * scale)), max(1, round(width * scale)), pixels.shape[2])
    return resize(pixels, shape, order=1, anti_aliasing=scale < 1.0, preserve_range=True).astype(
        np.float32
    )


def _centre_square(pixels: np.ndarray, size: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[top : top + size, left : left + size]


def square_image(
    pixels: np.ndarray, size: int, policy: str, where: str
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """One ``[S, S, C]`` crop of a whole image, its valid-pixel mask (``fit`` only), scale."""
    height, width = pixels.shape[:2]
    if policy == "none":
        if min(height, width) < size:
            raise InputDataError(
                f"{where}: image is {height} x {width}, smaller than size={size} "
                "(resize: none does not scale; use resize: crop or fit)"
            )
        return _centre_square(pixels, size), None, 1.0
    if policy == "crop":
        scale = size / min(height, width)
        return _centre_square(_scaled(pixels, scale), size), None, scale
    scale = size / max(height, width)
    scaled = _scaled(pixels, scale)
    out = np.zeros((size, size, pixels.shape[2]), dtype=np.float32)
    mask = np.zeros((size, size), dtype=bool)
    top, left = (size - scaled.shape[0]) // 2, (size - scaled.shape[1]) // 2
    out[top : top + scaled.shape[0], left : left + scaled.shape[1]] = scaled
    mask[top : top + scaled.shape[0], left : left + scaled.shape[1]] = True
    return out, mask, scale
