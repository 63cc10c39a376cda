"""Reading micrographs: PNG, JPEG and TIFF files to float pixels, and their ids.

Reading
-------
PNG, JPEG and TIFF files (``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff``). PNG and JPEG
are read as ``skimage.io.imread`` reads them (with Pillow itself for the common modes, the
same arrays at a fraction of the cost); TIFF with ``tifffile`` (the reader scikit-image uses),
page by page, so a multi-page TIFF gives one image per page (reduced-resolution thumbnail
pages are skipped). Every image becomes ``float32 [H, W, C]`` in ``[0, 1]`` with
``C = 1`` (grey) or ``3`` (RGB):

* ``uint8`` is divided by 255, ``uint16`` by 65535, ``bool`` is 0/1; a float image must
  already lie in ``[0, 1]``; any other pixel type is an error;
* an alpha channel (grey + alpha, RGBA) is dropped.

A file that is empty, truncated or not an image, or an image with no pixels, raises
:class:`~scicontrast.errors.InputDataError` naming the file (and the page).

Image ids
---------
An image's id is its file's stem (``grain_07.png -> grain_07``); page ``k`` of a multi-page
TIFF (counted from 0) is ``<stem>_page<k>``. When two files share a stem, their ids are
their paths relative to the files' common folder, without suffix, with ``/`` replaced by
``__``. Ids name output files, so they stay file-system safe.

Degenerate images
-----------------
An image under 8 pixels on a side (a 1 x 1 PNG; a ``64 x 64 x 5`` array written to TIFF
without a photometric tag, which becomes 64 pages of ``64 x 5``) and a TIFF with a channel
axis (ImageJ ``C``: one channel per page) are errors naming the file; an image that a crop or
fit scales up more than 2x is read, with one warning naming the first such file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage import io as skio

from scicontrast.data_adapters.images.listing import IMAGE_SUFFIXES, ImageFiles, shared
from scicontrast.errors import InputDataError

TIFF_SUFFIXES = (".tif", ".tiff")


# Below this side a 3 x 3 convolution stack sees edges, not texture; a TIFF whose channel
# axis was written as rows gives such slivers (a 64 x 64 x 5 array becomes 64 pages of 64 x 5).
MIN_IMAGE_SIDE = 8


@dataclass
class Micrograph:
    """One image as read: ``pixels`` is ``float32 [H, W, C]`` in ``[0, 1]``, ``C`` 1 or 3."""

    image_id: str
    path: Path
    page: int
    pixels: np.ndarray
    bit_depth: int
    pages: int = 1
    file_index: int = 0  # the file's place in the list read

    @property
    def where(self) -> str:
        """The file, and the page when the file has several, for messages."""
        return f"{self.path} (page {self.page})" if self.pages > 1 else str(self.path)


# --- file ids ----------------------------------------------------------------------------


def file_ids(files: Sequence[Path]) -> dict[Path, str]:
    """The id of each file (see module docstring): its stem, or its path when stems clash."""
    clashing = clashing_file_ids(files)
    return {p: clashing.get(p, p.stem) for p in files}


def clashing_file_ids(files: Sequence[Path]) -> dict[Path, str]:
    """The ids of the files whose stem another file shares (the others' id is their stem);
    a dict of those only, so a folder of a million distinct names costs no dict entry each."""
    listing = files if isinstance(files, ImageFiles) else ImageFiles.of(files)
    clashing = [listing[int(i)] for i in np.flatnonzero(shared(listing.stems()))]
    if not clashing:
        return {}
    resolved = [p.resolve() for p in clashing]
    common = Path(*_common_parts([r.parent.parts for r in resolved]))
    return {
        path: full.relative_to(common).with_suffix("").as_posix().replace("/", "__")
        for path, full in zip(clashing, resolved, strict=True)
    }


def _common_parts(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    common = parts[0]
    for other in parts[1:]:
        n = 0
        while n < min(len(common), len(other)) and common[n] == other[n]:
            n += 1
        common = common[:n]
    return common


# --- reading -----------------------------------------------------------------------------


class _TiffWarnings(logging.Handler):
    """Collects tifffile's logged warnings: it logs, instead of raising, on a truncated file."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _check_no_channel_axis(path: Path, tif: tifffile.TiffFile) -> None:
    """A multi-channel stack (ImageJ's ``C`` axis) stores one channel per page; reading its
    pages as images would turn each channel into a micrograph of its own."""
    for series in tif.series:
        axes, shape = series.axes, series.shape
        if "C" in axes and shape[axes.index("C")] > 1:
            raise InputDataError(
                f"{path}: TIFF holds a {shape[axes.index('C')]}-channel image (axes {axes}, "
                f"shape {tuple(shape)}); only grey or RGB images are read: save the channel "
                "to embed as a grey image of its own"
            )


def _read_tiff_pages(path: Path) -> list[np.ndarray]:
    handler = _TiffWarnings()
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        with tifffile.TiffFile(path) as tif:
            _check_no_channel_axis(path, tif)
            pages = []
            for page in tif.pages:
                if getattr(page, "is_reduced", False):
                    continue
                array = page.asarray()
                if page.axes.startswith("S") and array.ndim == 3:
                    array = np.moveaxis(array, 0, -1)  # planar RGB -> interleaved
                pages.append(array)
    finally:
        logger.removeHandler(handler)
    if handler.messages:
        raise InputDataError(f"{path}: corrupt or truncated TIFF ({handler.messages[0]})")
    return pages


def read_image_pages(path: str | Path) -> list[np.ndarray]:
    """The raw arrays of an image file, one per page (PNG and JPEG have one page).

    Raises ``InputDataError`` naming the file when it is missing, empty, truncated or not an
    image of a known format.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise InputDataError(f"{path}: empty file (0 bytes), not an image")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputDataError(
            f"{path}: unknown image format {suffix!r}; known: {', '.join(IMAGE_SUFFIXES)}"
        )
    try:
        pages = _read_tiff_pages(path) if suffix in TIFF_SUFFIXES else [_read_png_or_jpeg(path)]
    except InputDataError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputDataError(
            f"{path}: cannot read image (corrupt, truncated or not a "
            f"{suffix.lstrip('.').upper()} file): {type(exc).__name__}: {detail}"
        ) from None
    if not pages:
        raise InputDataError(f"{path}: TIFF file holds no image page")
    return pages


# What ``skimage.io.imread`` makes of a PNG or JPEG of each Pillow mode, once through
# :func:`normalise_pixels`: (colour?, bit depth). Other modes (palette, CMYK, 32-bit) and
# other formats are decoded to know.
_MODE_FACTS = {
    "1": (False, 8),
    "L": (False, 8),
    "LA": (False, 8),
    "I;16": (False, 16),
    "I;16B": (False, 16),
    "RGB": (True, 8),
    "RGBA": (True, 8),
}


def _read_png_or_jpeg(path: Path) -> np.ndarray:
    """The pixels ``skimage.io.imread`` gives (through imageio's Pillow plugin), read with
    Pillow itself where that is the same array: a single frame of a mode in ``_MODE_FACTS``.
    imageio costs about 0.3 ms more an image (its plugin lookup), the whole decode of a
    64 px PNG being 0.1 ms."""
    with Image.open(path) as image:
        if image.mode in _MODE_FACTS and getattr(image, "n_frames", 1) == 1:
            return np.array(image)
    return np.asarray(skio.imread(path))


def image_facts(path: Path) -> Iterator[tuple[bool, int]]:
    """``(colour?, bit depth)`` of each page of ``path`` as :func:`read_micrographs` reads it.

    A single-frame PNG or JPEG of a mode in ``_MODE_FACTS`` is answered from its header
    (tens of microseconds, no pixels decoded); any other file is read. Errors as in
    :func:`read_image_pages`.
    """
    if path.suffix.lower() not in TIFF_SUFFIXES and path.is_file():
        try:
            with Image.open(path) as image:
                facts = _MODE_FACTS.get(image.mode)
                if facts is not None and getattr(image, "n_frames", 1) == 1:
                    yield facts
                    return
        except (OSError, ValueError):
            pass  # reading the file names the problem
    pages = read_image_pages(path)
    for page, raw in enumerate(pages):
        where = f"{path} (page {page})" if len(pages) > 1 else str(path)
        pixels, depth = normalise_pixels(raw, where)
        yield pixels.shape[2] == 3, depth


def normalise_pixels(array: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """Raw image array -> ``(float32 [H, W, C] in [0, 1] with C in {1, 3}, bit depth)``.

    ``where`` (file and page) names the image in error messages.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputDataError(
            f"{where}: unsupported image shape {array.shape}; expected H x W grey or "
            "H x W x 3 RGB (an alpha channel is dropped)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputDataError(f"{where}: image has no pixels (shape {array.shape})")
    if min(array.shape[:2]) < MIN_IMAGE_SIDE:
        raise InputDataError(
            f"{where}: image is {array.shape[0]} x {array.shape[1]} pixels, under "
            f"{MIN_IMAGE_SIDE} on a side: too small to hold a texture (a channel axis written "
            "as rows or pages?)"
        )
    if array.shape[2] in (2, 4):
        array = array[:, :, :-1]
    if array.dtype == np.uint8:
        pixels, depth = array.astype(np.float32) / 255.0, 8
    elif array.dtype == np.uint16:
        pixels, depth = array.astype(np.float32) / 65535.0, 16
    elif array.dtype == bool:
        pixels, depth = array.astype(np.float32), 8
    elif np.issubdtype(array.dtype, np.floating):
        pixels, depth = array.astype(np.float32), 32
        if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
            raise InputDataError(
                f"{where}: floating-point pixels must lie in [0, 1] (found "
                f"{np.nanmin(pixels):.4g} .. {np.nanmax(pixels):.4g})"
            )
    else:
        raise InputDataError(
            f"{where}: unsupported pixel type {array.dtype}; expected 8- or 16-bit unsigned "
            "integers or floats in [0, 1]"
        )
    return np.ascontiguousarray(pixels), depth


def read_micrographs(files: Sequence[Path]) -> Iterator[Micrograph]:
    """Read every page of every file, one file at a time (ids as in the module docstring)."""
    clashing = clashing_file_ids(files)
    for index, path in enumerate(files):
        pages = read_image_pages(path)
        file_id = clashing.get(path, path.stem)
        for page, raw in enumerate(pages):
            where = f"{path} (page {page})" if len(pages) > 1 else str(path)
            pixels, depth = normalise_pixels(raw, where)
            image_id = file_id if len(pages) == 1 else f"{file_id}_page{page}"
            yield Micrograph(image_id, path, page, pixels, depth, len(pages), index)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats -> ``uint8``, rounding to nearest (exact for 8-bit sources)."""
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` -> ``[H, W, 3]`` (a grey image is repeated)."""
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels
