"""The ``grains`` adapter: one item per grain of one or more segmentation folders.

    overlays/<image>.png      boundaries drawn over the micrograph, for a person to look at

Grains adapter (``grains``)
---------------------------
One item per grain of one or more segmentation folders: the ``S x S`` crop centred on the
grain's centroid (a rotation about the centroid maps the grain onto itself), scaled so that
the grain's farthest pixel lies at ``(1 - margin) * S / 2`` from the centre (``scale="fit"``)
or by a fixed factor, and the grain's mask (``masks``, ``True`` on the grain). Pixels of the
neighbouring grains stay in the crop; the mask says which pixels belong to the grain.
Downscaling is preceded by a Gaussian of ``sigma = (1 / scale - 1) / 2`` source pixels
against aliasing. The crop follows the image contract of :mod:`~scicontrast.data_adapters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import color

from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.data_adapters.grains.folders import load_labels, load_micrograph, load_segmentation
from scicontrast.data_adapters.images.folder import check_positive_int, stack_images
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS

# --- grain crops -------------------------------------------------------------------------


def grain_crop(
    pixels: np.ndarray,
    labels: np.ndarray,
    grain: int,
    centre: tuple[float, float],
    size: int,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``[S, S, C]`` crop centred on ``centre`` (row, col) at ``scale`` crop pixels per
    source pixel, and the ``bool [S, S]`` mask of label ``grain`` in it; outside the image
    is 0."""
    half = (size - 1) / 2.0
    offsets = (np.arange(size) - half) / scale
    rows = centre[0] + offsets
    cols = centre[1] + offsets
    # Work on the source window the crop covers, so that blurring costs O(window), not O(image).
    pad = 2 + math.ceil(3 * max(0.0, (1 / scale - 1) / 2))
    top = max(0, math.floor(rows[0]) - pad)
    left = max(0, math.floor(cols[0]) - pad)
    bottom = min(pixels.shape[0], math.ceil(rows[-1]) + pad + 1)
    right = min(pixels.shape[1], math.ceil(cols[-1]) + pad + 1)
    window = pixels[top:bottom, left:right]
    sigma = max(0.0, (1 / scale - 1) / 2)
    if sigma > 0:
        window = ndimage.gaussian_filter(window, sigma=(sigma, sigma, 0))
    grid_rows, grid_cols = np.meshgrid(rows - top, cols - left, indexing="ij")
    crop = np.stack(
        [
            ndimage.map_coordinates(window[:, :, c], [grid_rows, grid_cols], order=1, cval=0.0)
            for c in range(window.shape[2])
        ],
        axis=-1,
    )
    mask = ndimage.map_coordinates(
        (labels[top:bottom, left:right] == grain).astype(np.uint8),
        [grid_rows, grid_cols],
        order=0,
        cval=0,
    ).astype(bool)
    return np.clip(crop, 0.0, 1.0).astype(np.float32), mask


@ADAPTERS.register("grains")
class GrainsAdapter(Adapter):
    """One item per segmented grain: a centred, scaled crop and the grain's mask.

    Args:
        segmentation: One segmentation folder (written by ``scicontrast segment``) or a
            list of them.
        size: Side ``S`` of the crops in pixels.
        scale: ``"fit"``: each grain scaled to fit the inscribed circle with ``margin``
            (module docstring); a number: crop pixels per source pixel for every grain (a
            grain larger than the crop is cut; use it when the texture's scale matters).
        margin: Fraction of the crop's radius kept free around a fitted grain.
        min_area: Grains smaller than this (pixels) are left out; ``None`` keeps all.
        keep_border_grains: Grains cut by the image border are left out unless ``True``
            (their shape, size and texture are incomplete).
        grayscale: ``True``: crops in grey (``C = 1``); otherwise the micrographs' channels.

    ``scicontrast embed --model`` reads new segmentation folders in place of
    ``segmentation`` (segment new micrographs with ``scicontrast segment`` first).
    """

    input_param = "segmentation"

    def __init__(
        self,
        segmentation: str | list[str],
        size: int = 64,
        scale: str | float = "fit",
        margin: float = 0.1,
        min_area: int | None = None,
        keep_border_grains: bool = False,
        grayscale: bool = False,
    ) -> None:
        name = "grains"
        folders = [segmentation] if isinstance(segmentation, str) else list(segmentation)
        if not folders:
            raise ConfigError(f"adapter {name}: params.segmentation: name at least one folder")
        self.folders = [Path(f) for f in folders]
        check_positive_int(size, name, "size")
        if min_area is not None:
            check_positive_int(min_area, name, "min_area")
        if scale != "fit" and (
            isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0
        ):
            raise ConfigError(f"adapter {name}: params.scale must be 'fit' or a number > 0")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise ConfigError(f"adapter {name}: params.margin must be in [0, 1), got {margin!r}")
        self.size = size
        self.scale = scale
        self.margin = float(margin)
        self.min_area = min_area
        self.keep_border_grains = bool(keep_border_grains)
        self.grayscale = bool(grayscale)

    def input_files(self) -> list[Path]:
        return list(self.folders)

    def read(self) -> Items:
        tables, crops, masks, scales = [], [], [], []
        depths, pixel_sizes, any_colour = set(), set(), False
        for folder in self.folders:
            summary, grains = load_segmentation(folder)
            pixel_sizes.add(summary.get("pixel_size_um"))
            kept = self._select(grains)
            for image_id, rows in kept.groupby("image", sort=False):
                info = summary["images"].get(image_id)
                if info is None:
                    raise InputDataError(f"{folder}/summary.json: no entry for image {image_id!r}")
                depths.add(info["bit_depth"])
                pixels = load_micrograph(folder, image_id)
                if self.grayscale and pixels.shape[2] == 3:
                    pixels = color.rgb2gray(pixels)[:, :, None].astype(np.float32)
                any_colour |= pixels.shape[2] == 3
                labels = load_labels(folder, image_id)
                for crop, mask, scale in self._crops(pixels, labels, rows):
                    crops.append(crop)
                    masks.append(mask)
                    scales.append(scale)
                tables.append(rows.assign(segmentation=str(folder)))
        if not crops:
            raise InputDataError(
                f"{', '.join(map(str, self.folders))}: no grain left (min_area="
                f"{self.min_area}, keep_border_grains={self.keep_border_grains})"
            )
        table = pd.concat(tables, ignore_index=True)
        table.insert(0, "item_id", self._item_ids(table))
        table["crop_scale"] = scales
        channels = 3 if any_colour else 1
        pixel_size = pixel_sizes.pop() if len(pixel_sizes) == 1 else None
        meta = {
            "modality": "image",
            "channels": channels,
            "size": self.size,
            "pixel_size_um": pixel_size,
            "payload_columns": [],
            "metadata_columns": [c for c in table.columns if c != "item_id"],
            "segmentations": [str(f) for f in self.folders],
            "scale": self.scale,
            "margin": self.margin,
        }
        arrays = {
            "images": stack_images(crops, depths == {8}, channels),
            "masks": np.stack(masks),
        }
        return Items(table=table, meta=meta, arrays=arrays)

    def _select(self, grains: pd.DataFrame) -> pd.DataFrame:
        keep = np.ones(len(grains), dtype=bool)
        if not self.keep_border_grains:
            keep &= ~grains["touches_border"].to_numpy(dtype=bool)
        if self.min_area is not None:
            keep &= grains["area_px"].to_numpy() >= self.min_area
        return grains[keep]

    def _crops(
        self, pixels: np.ndarray, labels: np.ndarray, rows: pd.DataFrame
    ) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        """``(crop, mask, scale)`` of each grain in ``rows``."""
        boxes = ndimage.find_objects(labels)
        for grain, row, col in zip(
            rows["grain"].tolist(),
            rows["centroid_row"].tolist(),
            rows["centroid_col"].tolist(),
            strict=True,
        ):
            if self.scale == "fit":
                box = boxes[grain - 1]
                r, c = np.nonzero(labels[box] == grain)
                distance = np.hypot(r + box[0].start - row, c + box[1].start - col)
                # +0.5: the farthest pixel's far edge, so the whole pixel fits
                scale = (1 - self.margin) * (self.size / 2) / (distance.max() + 0.5)
            else:
                scale = float(self.scale)
            crop, mask = grain_crop(pixels, labels, grain, (row, col), self.size, scale)
            yield crop, mask, scale

    def _item_ids(self, table: pd.DataFrame) -> list[str]:
        ids = (table["image"] + ":" + table["grain"].astype(str)).tolist()
        if len(self.folders) > 1:  # image ids of two folders may coincide
            names = [Path(s).name for s in table["segmentation"]]
            ids = [f"{n}/{i}" for n, i in zip(names, ids, strict=True)]
        return ids
