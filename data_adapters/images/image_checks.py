"""Checks that an image items set holds what the rotation views read, from its meta and arrays.

The checks see the set as ``meta``, its row count ``n`` and its (memory-mapped) ``arrays``
and ``extras``, not its table, so that :meth:`RotationViews.build_parts
<scicontrast.data_adapters.images.rotations.RotationViews.build_parts>` can check a set of
10^6 images without loading its ``item_id`` column; ``item_id_at(row)`` names an item in an
error only. The layouts are those of :mod:`scicontrast.data_adapters.images.rotations`: whole
images ``images [N, C, S, S]`` (``uint8`` or ``float32``) with optional ``masks
bool [N, S, S]``, or the patch layout's ``pixels`` extra and ``extent [N, 3]``
(:mod:`scicontrast.data_adapters.images.patches`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from scicontrast.data_adapters.images.patches import EXTENT, PIXELS
from scicontrast.errors import ConfigError, InputDataError


def check_image_set(
    meta: Mapping[str, Any],
    n: int,
    arrays: Mapping[str, np.ndarray],
    extras: Mapping[str, np.ndarray],
    item_id_at: Callable[[int], Any],
) -> int:
    """Raise unless the set holds ``n`` images that rotation views can be made of; return
    the image (patch layout: window) side ``S``."""
    modality = meta.get("modality")
    if modality != "image":
        raise ConfigError(
            f"pairs rotations: needs image items (meta modality 'image'), got {modality!r}"
        )
    if meta.get("layout") == "patches":
        return _check_patches(meta, arrays, extras, item_id_at)
    images = arrays.get("images")
    if images is None:
        raise InputDataError("image items: no 'images' array (images.npy)")
    channels, size = meta.get("channels"), meta.get("size")
    expected = [n, channels, size, size]
    if list(images.shape) != expected:
        raise InputDataError(
            f"image items: 'images' has shape {list(images.shape)}, expected [N, C, S, S] = "
            f"{expected} from meta channels and size"
        )
    if images.dtype not in (np.uint8, np.float32):
        raise InputDataError(f"image items: 'images' must be uint8 or float32, got {images.dtype}")
    masks = arrays.get("masks")
    if masks is not None and (masks.dtype != np.bool_ or masks.shape != (n, size, size)):
        raise InputDataError(
            f"image items: 'masks' must be bool [N, S, S] = {[n, size, size]}, "
            f"got {masks.dtype} {list(masks.shape)}"
        )
    return int(images.shape[-1])  # S: the shape matched


def _check_patches(
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    extras: Mapping[str, np.ndarray],
    item_id_at: Callable[[int], Any],
) -> int:
    """Check a patch store: every image inside ``pixels`` and at least ``S x S``."""
    pixels, extent = extras.get(PIXELS), arrays.get(EXTENT)
    if pixels is None or extent is None:
        raise InputDataError(
            "image items (patch layout): need the 'pixels' extra and the 'extent' array"
        )
    channels, size = meta["channels"], meta["size"]
    heights, widths = extent[:, 1], extent[:, 2]
    ends = extent[:, 0] + channels * heights * widths
    if pixels.dtype not in (np.uint8, np.float32) or (len(ends) and ends.max() > len(pixels)):
        raise InputDataError(
            f"image items (patch layout): 'pixels' ({pixels.dtype}, {len(pixels)} values) "
            "does not hold the images that 'extent' describes"
        )
    small = np.flatnonzero(np.minimum(heights, widths) < size)
    if len(small):
        row = int(small[0])
        raise InputDataError(
            f"image items: {item_id_at(row)!r} is {heights[row]} x "
            f"{widths[row]}, smaller than one {size} x {size} patch"
        )
    return int(size)
