r"""Micrographs at their own scale: working-scale resampling, the patch store, patch bags.

Texture lives at a physical scale, so the ``patch`` layout of the ``image_folder`` adapter
keeps each image whole at a *working scale* instead of shrinking it to a thumbnail, and the
encoder sees it through patches (``scicontrast.data_adapters.images.rotations`` draws training
views as random patches; an image's embedding pools its patches, :class:`PatchBag`).

Working scale
-------------
An image with pixel size ``a`` micrometres (from the labels table's ``pixel_size_um``
column or the adapter's ``pixel_size_um``) and a target pixel size ``t``
(``target_pixel_size_um``) is resampled by the factor ``f = a / t`` (working pixels per
source pixel): ``[H, W] -> [round(f H), round(f W)]``, shrinking by the area mean
(``skimage.transform.resize_local_mean``: each working pixel is the mean of the source area
it covers) and enlarging bilinearly (``skimage.transform.resize``, ``order=1``). Without a
target, ``f = 1``: native resolution. A copy of an image upsampled ``k`` times (bilinear),
with ``1/k`` of its pixel size, thus maps back to the original's pixels up to a blur by
about ``[1, 6, 1] / 8`` per axis (``k = 2``; ``[1, 7, 1] / 9`` for ``k = 3``), where a
Gaussian anti-aliasing filter (``resize``'s) would blur twice as wide.

A physical scale that contradicts the image is an error naming the file: ``f`` larger than
:data:`MAX_UPSAMPLE` (the pixel size is then almost surely in the wrong unit, nanometres for
micrometres, and upsampling would invent detail), or a working image smaller than one patch.

Patch store
-----------
The working-scale images of an items set live in one flat array (an ``Items`` extra,
``pixels.extra.npy``; ``uint8`` when every source is 8-bit, else ``float32`` in ``[0, 1]``),
image ``i`` being ``pixels[o_i : o_i + C h_i w_i]`` reshaped to ``[C, h_i, w_i]``, with
``extent[i] = (o_i, h_i, w_i)`` (``int64 [N, 3]``, an array aligned with the items table).
One flat ``.npy`` is memory-mappable, and images of any mix of sizes fit in it.

Patch grid
----------
:func:`tile_grid` cuts an ``H x W`` image into the centred grid of non-overlapping ``S x S``
tiles and keeps ``k`` of them spread evenly in raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.transform import resize, resize_local_mean

from scicontrast.errors import InputDataError

MAX_UPSAMPLE = 4.0
PIXELS = "pixels"
EXTENT = "extent"


def working_factor(pixel_size_um: float | None, target_um: float | None, where: str) -> float:
    """Working pixels per source pixel, ``pixel_size_um / target_um`` (1 without a target).

    Raises ``InputDataError`` naming ``where`` when a target is set but the file's pixel size
    is unknown, or when the factor exceeds :data:`MAX_UPSAMPLE`.
    """
    if target_um is None:
        return 1.0
    if pixel_size_um is None:
        raise InputDataError(
            f"{where}: target_pixel_size_um={target_um} is set but this file's pixel size is "
            "unknown; give adapter params.pixel_size_um or a pixel_size_um column in the "
            "labels table"
        )
    factor = pixel_size_um / target_um
    if factor > MAX_UPSAMPLE:
        raise InputDataError(
            f"{where}: pixel size {pixel_size_um} um at target {target_um} um would upsample "
            f"the image {factor:.3g}x (at most {MAX_UPSAMPLE:g}x); check the unit of "
            "pixel_size_um (micrometres per pixel)"
        )
    return factor


def to_working_scale(pixels: np.ndarray, factor: float, patch: int, where: str) -> np.ndarray:
    """``float32 [H, W, C]`` resampled by ``factor``; an error if smaller than one patch."""
    height, width = pixels.shape[:2]
    shape = (round(height * factor), round(width * factor))
    if min(shape) < patch:
        scale = "" if factor == 1.0 else f" at working scale ({factor:.3g} x {height} x {width})"
        raise InputDataError(
            f"{where}: image is {shape[0]} x {shape[1]} pixels{scale}, smaller than one "
            f"{patch} x {patch} patch; lower patch_size or check pixel_size_um"
        )
    if factor == 1.0:
        return pixels
    if factor < 1.0:
        # Each working pixel is the mean of the source area it covers: the anti-aliasing
        # filter that blurs a 2x bilinear upsampling least on its way back (module docstring).
        resized = resize_local_mean(pixels, shape, channel_axis=2, preserve_range=True)
    else:
        resized = resize(pixels, (*shape, pixels.shape[2]), order=1, preserve_range=True)
    return resized.astype(np.float32)


def pack_images(images: list[np.ndarray], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``[C, h_i, w_i]`` images -> ``(flat pixels, extent int64 [N, 3])`` (module docstring)."""
    sizes = np.array([image.size for image in images], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    flat = np.empty(int(sizes.sum()), dtype=dtype)
    for image, offset, size in zip(images, offsets, sizes, strict=True):
        flat[offset : offset + size] = image.ravel()
    extent = np.array(
        [(o, image.shape[1], image.shape[2]) for o, image in zip(offsets, images, strict=True)],
        dtype=np.int64,
    ).reshape(-1, 3)
    return flat, extent


def unpack_image(pixels: np.ndarray, extent: np.ndarray, index: int, channels: int) -> np.ndarray:
    """Image ``index`` of a patch store as ``[C, h, w]`` (a view, no copy)."""
    offset, height, width = (int(v) for v in extent[index])
    return pixels[offset : offset + channels * height * width].reshape(channels, height, width)


def tile_grid(height: int, width: int, size: int, keep: int) -> list[tuple[int, int, int, int]]:
    """``(row, col, top, left)`` of ``keep`` tiles spread over the centred ``size`` grid."""
    rows, cols = height // size, width // size
    top0, left0 = (height - rows * size) // 2, (width - cols * size) // 2
    grid = [(r, c) for r in range(rows) for c in range(cols)]
    if len(grid) > keep:
        chosen = np.unique(np.rint(np.linspace(0, len(grid) - 1, keep)).astype(int))
        grid = [grid[i] for i in chosen]
    return [(r, c, top0 + r * size, left0 + c * size) for r, c in grid]


@dataclass
class PatchBag:
    """The patches of ``images`` images, embedded as one row per image.

    Attributes:
        patches: ``float32 [M, C, S, S]``, the patches of all images in image order.
        owner: ``int64 [M]``, the image (``0 .. images - 1``) each patch belongs to.
        images: ``B``, the number of images (rows of the embedding).

    An encoder maps a bag to ``[B, D]``, row ``b`` the mean of the embeddings of image
    ``b``'s patches (``ImageCNN.forward``).
    """

    patches: torch.Tensor
    owner: torch.Tensor
    images: int

    def to(self, device: str | torch.device, non_blocking: bool = False) -> PatchBag:
        return PatchBag(
            self.patches.to(device, non_blocking=non_blocking),
            self.owner.to(device, non_blocking=non_blocking),
            self.images,
        )

    def pin_memory(self) -> PatchBag:
        """The bag in page-locked memory (the embedding loader's, for a GPU)."""
        return PatchBag(self.patches.pin_memory(), self.owner.pin_memory(), self.images)

    def __len__(self) -> int:
        return self.images

    def pool(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``[M, D]`` -> ``[B, D]``, each image's mean over its patches."""
        sums = embeddings.new_zeros(self.images, embeddings.shape[1])
        sums.index_add_(0, self.owner, embeddings)
        counts = torch.bincount(self.owner, minlength=self.images).clamp_min(1)
        return sums / counts[:, None].to(embeddings.dtype)
