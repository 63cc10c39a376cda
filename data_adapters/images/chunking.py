"""How the ``image_folder`` adapter's pieces become chunks: cut by rows and bytes, the
facts that fix the array's dtype and channels, and what the meta gathers over the chunks.

A *piece* is one item as read: ``(table row, [S, S, C] float crop or working image, valid
pixel mask or None, colour source?, bit depth)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from scicontrast.data_adapters.images.cropping import MAX_SILENT_UPSCALE

# (table row, [S, S, C] crop, valid-pixel mask or None, colour source?, bit depth)
Piece = tuple[dict[str, Any], np.ndarray, "np.ndarray | None", bool, int]


def array_facts(facts: Iterable[tuple[bool, int]], grayscale: bool | None) -> tuple[int, bool]:
    """``(channels, every source 8-bit?)`` of the images array from each image's
    ``(colour?, bit depth)``.

    ``grayscale=False`` asks for 3 channels, ``True`` for 1; otherwise 3 only when some
    image is in colour.
    """
    any_colour, depths = False, set()
    for colour, depth in facts:
        any_colour |= colour
        depths.add(depth)
    return (3 if grayscale is False or (any_colour and not grayscale) else 1), depths == {8}


def batched_pieces(pieces: Iterator[Piece], rows: int, max_bytes: int) -> Iterator[list[Piece]]:
    """``pieces`` in lists of ``rows``, cut earlier where their pixels pass ``max_bytes``."""
    batch: list[Piece] = []
    held = 0
    for piece in pieces:
        batch.append(piece)
        held += piece[1].nbytes
        if len(batch) == rows or held >= max_bytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


class ChunkSummary:
    """What the meta needs from every chunk: the image count, pixel sizes, upscaled rows."""

    def __init__(self) -> None:
        self.images = 0
        self._last_image: str | None = None
        self.upscaled: list[pd.DataFrame] = []
        self._pixel_sizes: list[pd.Series] = []

    def add(self, table: pd.DataFrame) -> None:
        # An image's items (its tiles) are consecutive rows: count where the image changes.
        images = table["image"].to_numpy()
        self.images += int((images[1:] != images[:-1]).sum()) + (images[0] != self._last_image)
        self._last_image = images[-1]
        self.upscaled.append(table[table["scale"] > MAX_SILENT_UPSCALE])
        if "pixel_size_um" in table.columns:
            self._pixel_sizes.append(table["pixel_size_um"])

    def pixel_sizes(self) -> dict[str, pd.Series]:
        if not self._pixel_sizes:
            return {}
        return {"pixel_size_um": pd.concat(self._pixel_sizes, ignore_index=True)}
