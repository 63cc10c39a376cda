"""The ``image_folder`` adapter: one item per image or tile.

Items (``image_folder``)
------------------------
One item per image, or per tile with ``tiles``. ``items.arrays["images"]`` holds
``[N, C, S, S]``: ``uint8`` when every source image is 8-bit, else ``float32`` in
``[0, 1]``. Size policy for a whole image (``resize``):

Patch layout (``patch_size``)
-----------------------------
Micrographs are not thumbnails: texture lives at a physical scale. With ``patch_size = P``
each image stays whole at its working scale (native resolution, or resampled to
``target_pixel_size_um`` from its pixel size; ``scicontrast.data_adapters.patches``), one
item per image, in the patch store: ``items.extras["pixels"]`` (flat) and
``items.arrays["extent"]`` (``int64 [N, 3]``), ``meta["layout"] = "patches"`` and
``meta["size"] = P``. The ``rotations`` pair builder draws training views as random ``P x P``
patches and embeds an image as the mean of its patches' embeddings. An image smaller than
one patch at its working scale, or a pixel size that would upsample it more than 4x, is an
error naming the file.

Items table columns: ``item_id`` (the image id, ``<id>:r<i>c<j>`` for tile ``(i, j)``),
``file``, ``image``, ``page``, ``height``, ``width`` (of the source image), ``scale`` (crop
or working pixels per source pixel), ``tile_row``, ``tile_col`` (``-1`` without tiles), then
metadata columns from ``label_from_filename`` and the labels table. ``meta`` follows the image
contract: ``modality = "image"``, ``channels``, ``size``, ``pixel_size_um`` (of the source
images, or ``None``) and ``payload_columns = []`` (pixels live in the arrays); it also
counts the ``files`` and ``images`` read and keeps the configured ``source_paths``.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skimage.color import rgb2gray

from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.data_adapters.chunks import CHUNK_BYTES, CHUNK_ROWS, concat_chunks
from scicontrast.data_adapters.images.chunking import (
    ChunkSummary,
    Piece,
    array_facts,
    batched_pieces,
)
from scicontrast.data_adapters.images.cropping import (
    MAX_SILENT_UPSCALE,
    RESIZE_POLICIES,
    square_image,
)
from scicontrast.data_adapters.images.listing import ImageFiles, expand_image_paths
from scicontrast.data_adapters.images.patches import (
    EXTENT,
    PIXELS,
    pack_images,
    tile_grid,
    to_working_scale,
    working_factor,
)
from scicontrast.data_adapters.images.reading import (
    Micrograph,
    image_facts,
    read_micrographs,
    to_rgb,
    to_uint8,
)
from scicontrast.data_adapters.items_store import release_arrow_memory
from scicontrast.data_adapters.labels import (
    compile_filename_pattern,
    filename_groups,
    match_table_to_files,
    read_table,
)
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS

# The labels-table row of a piece's file, carried in its table row until the join.
_LABEL_ROW = "__label_row"

_TABLE_COLUMNS = (
    "item_id",
    "file",
    "image",
    "page",
    "height",
    "width",
    "scale",
    "tile_row",
    "tile_col",
)


# --- adapter -----------------------------------------------------------------------------


def stack_images(crops: list[np.ndarray], all_8bit: bool, channels: int) -> np.ndarray:
    """``[S, S, C]`` float crops -> ``[N, channels, S, S]``, uint8 when every source is 8-bit."""
    arrays = [to_rgb(c) if channels == 3 else c for c in crops]
    stacked = np.stack(arrays).transpose(0, 3, 1, 2)
    return to_uint8(stacked) if all_8bit else np.ascontiguousarray(stacked, dtype=np.float32)


def check_positive_int(value: Any, adapter: str, key: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"adapter {adapter}: params.{key} must be an integer >= {minimum}, got {value!r}"
        )


def check_pixel_size(value: Any, adapter: str, key: str = "pixel_size_um") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(
            f"adapter {adapter}: params.{key} must be a number > 0 (micrometres per "
            f"pixel) or null, got {value!r}"
        )
    return float(value)


def _patch_store(
    images: list[np.ndarray], all_8bit: bool, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[h_i, w_i, C]`` float working images -> the patch store (``patches`` module)."""
    planes = [(to_rgb(i) if channels == 3 else i).transpose(2, 0, 1) for i in images]
    if all_8bit:
        return pack_images([to_uint8(p) for p in planes], np.dtype(np.uint8))
    return pack_images(planes, np.dtype(np.float32))


def _warn_upscaled(table: pd.DataFrame) -> None:
    """One warning for the images a crop or fit scaled up more than ``MAX_SILENT_UPSCALE``."""
    upscaled = table[table["scale"] > MAX_SILENT_UPSCALE]
    if len(upscaled):
        first = upscaled.iloc[0]
        warnings.warn(
            f"{first['file']}: a {first['height']} x {first['width']} image scaled up "
            f"{first['scale']:.3g}x to fill size (and {len(upscaled) - 1} more images scaled "
            f"up over {MAX_SILENT_UPSCALE:g}x); most of their pixels are interpolated",
            stacklevel=3,
        )


@ADAPTERS.register("image_folder")
class ImageFolderAdapter(Adapter):
    """Folders of PNG, JPEG and TIFF images as ``S x S`` crops, or whole at their own scale.

    Args:
        paths: Files, glob patterns (``**`` allowed) or folders (their image files). A
            single string is read as one entry.
        size: Side ``S`` of the square crops, in pixels.
        resize: Whole-image policy, ``"crop"``, ``"fit"`` or ``"none"`` (module docstring);
            ignored with ``tiles``.
        tiles: ``None``: one item per image. ``k >= 1``: cut each image, unscaled, into
            non-overlapping ``S x S`` tiles and keep ``k`` of them spread over the image.
        grayscale: ``True`` converts RGB to grey (luminance, ``skimage.color.rgb2gray``):
            ``C = 1``. ``False`` gives ``C = 3`` (grey repeated). ``None``: ``C = 1`` when
            every image is grey, else 3.
        labels: A CSV (``.csv``), TSV (``.tsv``, ``.tab``, ``.txt``) or Parquet table with
            one row per file; its other columns become metadata columns of the file's items.
            A column ``pixel_size_um`` sets the pixel size per file.
        labels_key: The labels table's column naming files: a path relative to the table's
            folder, a path as listed, a file name or a stem.
        labels_missing: A file with no row: ``"error"`` stops, ``"allow"`` leaves its
            metadata missing. Rows naming no file are reported in a warning.
        label_from_filename: A regular expression with named groups, searched in each
            file's path; each group becomes a metadata column. Example:
            ``"(?P<label>[a-z_-]+)_\\d+\\.jpg$"``.
        pixel_size_um: Micrometres per source pixel, for every file (a labels-table column
            ``pixel_size_um`` overrides it per file).
        patch_size: ``None``: the crop layout above. ``P``: the patch layout (module
            docstring): one item per image, kept whole at its working scale, seen by the
            encoder through ``P x P`` patches; ``size``, ``resize`` and ``tiles`` do not apply.
        target_pixel_size_um: Patch layout only: resample every image to this many
            micrometres per pixel (``scicontrast.data_adapters.images.patches``); ``None`` keeps the
            native resolution.

    New files embedded through a trained model (``scicontrast embed --model``) replace
    ``paths`` and are read without the label parameters, which describe the training files
    (a per-file ``pixel_size_um`` column included: give ``pixel_size_um`` for new files).
    """

    input_param = "paths"
    training_only_params = ("labels", "labels_key", "labels_missing", "label_from_filename")

    def __init__(
        self,
        paths: list[str] | str,
        size: int = 128,
        resize: str = "crop",
        tiles: int | None = None,
        grayscale: bool | None = None,
        labels: str | None = None,
        labels_key: str = "file",
        labels_missing: str = "error",
        label_from_filename: str | None = None,
        pixel_size_um: float | None = None,
        patch_size: int | None = None,
        target_pixel_size_um: float | None = None,
    ) -> None:
        name = "image_folder"
        self.paths = [paths] if isinstance(paths, str) else [str(p) for p in paths]
        if not self.paths:
            raise ConfigError(f"adapter {name}: params.paths: give at least one file or folder")
        check_positive_int(size, name, "size")
        for key, value in (("tiles", tiles), ("patch_size", patch_size)):
            if value is not None:
                check_positive_int(value, name, key)
        if patch_size is not None and tiles is not None:
            raise ConfigError(
                f"adapter {name}: params.tiles and params.patch_size exclude each other "
                "(tiles cuts fixed crops; patch_size keeps images whole and draws patches)"
            )
        if patch_size is None and target_pixel_size_um is not None:
            raise ConfigError(
                f"adapter {name}: params.target_pixel_size_um needs params.patch_size"
            )
        for key, choice, allowed in (
            ("resize", resize, RESIZE_POLICIES),
            ("labels_missing", labels_missing, ("error", "allow")),
            ("grayscale", grayscale, (None, True, False)),
        ):
            if choice not in allowed:
                raise ConfigError(
                    f"adapter {name}: params.{key} must be one of {list(allowed)}, got {choice!r}"
                )
        self.size = size
        self.resize = resize
        self.tiles = tiles
        self.grayscale = grayscale
        self.labels = labels
        self.labels_key = labels_key
        self.labels_missing = labels_missing
        self.pixel_size_um = check_pixel_size(pixel_size_um, name)
        self.patch_size = patch_size
        self.target_pixel_size_um = check_pixel_size(
            target_pixel_size_um, name, "target_pixel_size_um"
        )
        self.filename_pattern = compile_filename_pattern(label_from_filename, name, _TABLE_COLUMNS)

    def input_files(self) -> list[Path]:
        files = list(expand_image_paths(self.paths))
        return [*files, Path(self.labels)] if self.labels is not None else files

    def read(self) -> Items:
        return concat_chunks(self.read_chunks(CHUNK_ROWS))

    def read_chunks(self, chunk_rows: int) -> Iterator[Items]:
        """Items in chunks of ``chunk_rows`` rows (the last may be shorter), read as they come.

        A chunk also ends where its images' float pixels pass ``CHUNK_BYTES`` (a chunk of
        micrographs at their working scale, or of 65,536 crops, would not fit in memory).
        The array's channels and dtype depend on every image (any colour, any deeper than
        8 bits): when the images fill more than one chunk, a first pass reads those two facts
        from every file's header (:func:`image_facts`; files it cannot answer are decoded).
        In the patch layout each chunk holds its images' pixels (rows of the ``pixels``
        extra, in order) and their ``extent`` counted from the set's start.
        """
        files = expand_image_paths(self.paths)
        labels, rows = self._labels(files)
        release_arrow_memory()  # what matching freed: about 170 MiB at 10^6 files
        pixel_sizes = self._file_pixel_sizes(labels, rows, files)
        batches = batched_pieces(self._pieces(files, pixel_sizes, rows), chunk_rows, CHUNK_BYTES)
        head = list(itertools.islice(batches, 2))
        if not head:
            raise InputDataError(f"{', '.join(self.paths)}: no image gave a crop")
        if len(head) == 1:
            facts = array_facts(((p[3], p[4]) for p in head[0]), self.grayscale)
        else:
            pages = itertools.chain.from_iterable(map(image_facts, files))
            facts = array_facts(pages, self.grayscale)
        summary = ChunkSummary()
        chunk: Items | None = None
        pixels_before = 0  # patch layout: pixel values of the earlier chunks
        for batch in itertools.chain(head, batches):
            if chunk is not None:
                yield chunk
            chunk = self._chunk(batch, facts, labels, pixels_before)
            pixels_before += len(chunk.extras.get(PIXELS, ()))
            summary.add(chunk.table)
        assert chunk is not None  # first holds a piece
        _warn_upscaled(pd.concat(summary.upscaled, ignore_index=True))
        chunk.meta = self._meta(chunk.table, facts[0], files, summary)
        yield chunk

    def _pieces(
        self, files: ImageFiles, pixel_sizes: np.ndarray | None, rows: np.ndarray | None
    ) -> Iterator[Piece]:
        """One ``(table row, [S, S, C] crop, mask or None, colour?, bit depth)`` per item;
        the table row holds the file's labels-table row (``_LABEL_ROW``, -1 for none).
        ``pixel_sizes`` and ``rows`` are per file (NaN, -1: none), or ``None`` for all."""
        for path in files:  # a file name that does not match names the file before any read
            filename_groups(self.filename_pattern, path)
        for micrograph in read_micrographs(files):
            pixels = micrograph.pixels
            if self.grayscale and pixels.shape[2] == 3:
                pixels = rgb2gray(pixels)[:, :, None].astype(np.float32)
            base = {
                "file": str(micrograph.path),
                "image": micrograph.image_id,
                "page": micrograph.page,
                "height": pixels.shape[0],
                "width": pixels.shape[1],
            }
            if self.patch_size is None:
                made = self._crops(micrograph, pixels)
            else:
                pixel_size = self.pixel_size_um
                if pixel_sizes is not None and not np.isnan(pixel_sizes[micrograph.file_index]):
                    pixel_size = float(pixel_sizes[micrograph.file_index])
                made = self._working_image(micrograph, pixels, pixel_size)
            groups = filename_groups(self.filename_pattern, micrograph.path)
            label_row = -1 if rows is None else int(rows[micrograph.file_index])
            for record, crop, mask in made:
                row = {**base, **record, **groups, _LABEL_ROW: label_row}
                yield row, crop, mask, pixels.shape[2] == 3, micrograph.bit_depth

    def _table(self, records: list[dict[str, Any]], labels: pd.DataFrame | None) -> pd.DataFrame:
        table = pd.DataFrame.from_records(records)
        positions = table.pop(_LABEL_ROW).to_numpy()
        if labels is None:
            return table
        # -1 (a file without a row) is not in the index: its labels are missing.
        joined = labels.reindex(positions).reset_index(drop=True)
        return pd.concat([table, joined], axis=1)

    def _chunk(
        self,
        pieces: list[Piece],
        facts: tuple[int, bool],
        labels: pd.DataFrame | None,
        pixels_before: int,
    ) -> Items:
        """The items of ``pieces``; patch layout: ``extent`` offsets past ``pixels_before``."""
        channels, all_8bit = facts
        table = self._table([p[0] for p in pieces], labels)
        if self.patch_size is not None:
            pixels, extent = _patch_store([p[1] for p in pieces], all_8bit, channels)
            extent[:, 0] += pixels_before
            return Items(table=table, arrays={EXTENT: extent}, extras={PIXELS: pixels})
        arrays = {"images": stack_images([p[1] for p in pieces], all_8bit, channels)}
        if any(p[2] is not None for p in pieces):
            full = np.ones((self.size, self.size), dtype=bool)
            arrays["masks"] = np.stack([full if p[2] is None else p[2] for p in pieces])
        return Items(table=table, arrays=arrays)

    def _meta(
        self, last: pd.DataFrame, channels: int, files: ImageFiles, summary: ChunkSummary
    ) -> dict[str, Any]:
        patches = {"layout": "patches", "target_pixel_size_um": self.target_pixel_size_um}
        return {
            **(patches if self.patch_size is not None else {}),
            "modality": "image",
            "channels": channels,
            "size": self.size if self.patch_size is None else self.patch_size,
            "pixel_size_um": self._pixel_size(pd.DataFrame(summary.pixel_sizes())),
            "payload_columns": [],
            "metadata_columns": [c for c in last.columns if c not in _TABLE_COLUMNS],
            "resize": None if self.tiles or self.patch_size else self.resize,
            "tiles": self.tiles,
            # The paths as configured, not every file: a million file names would make
            # meta.json, which every later step reads, tens of megabytes.
            "source_paths": list(self.paths),
            "files": len(files),
            "images": summary.images,
        }

    def _working_image(
        self, micrograph: Micrograph, pixels: np.ndarray, pixel_size: float | None
    ) -> Iterator[tuple[dict[str, Any], np.ndarray, None]]:
        """The patch layout's one item per image: the image at its working scale."""
        assert self.patch_size is not None  # the patch layout is the one with a patch size
        factor = working_factor(pixel_size, self.target_pixel_size_um, micrograph.where)
        working = to_working_scale(pixels, factor, self.patch_size, micrograph.where)
        record = {"item_id": micrograph.image_id, "scale": factor, "tile_row": -1}
        yield {**record, "tile_col": -1}, working, None

    def _crops(
        self, micrograph: Micrograph, pixels: np.ndarray
    ) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray | None]]:
        """``(table columns, [S, S, C] crop, valid-pixel mask or None)`` per item."""
        where = micrograph.where
        if self.tiles is None:
            crop, mask, scale = square_image(pixels, self.size, self.resize, where)
            record = {"item_id": micrograph.image_id, "scale": scale, "tile_row": -1}
            yield {**record, "tile_col": -1}, crop, mask
            return
        height, width = pixels.shape[:2]
        grid = tile_grid(height, width, self.size, self.tiles)
        if not grid:
            raise InputDataError(
                f"{where}: image is {height} x {width}, smaller than one {self.size} x "
                f"{self.size} tile"
            )
        for row, col, top, left in grid:
            record = {
                "item_id": f"{micrograph.image_id}:r{row}c{col}",
                "scale": 1.0,
                "tile_row": row,
                "tile_col": col,
            }
            yield record, pixels[top : top + self.size, left : left + self.size], None

    def _labels(self, files: ImageFiles) -> tuple[pd.DataFrame | None, np.ndarray | None]:
        """The labels table's columns less its key (rows in table order) and the table row
        of each file (-1: none), or ``(None, None)`` without a table."""
        if self.labels is None:
            return None, None
        path = Path(self.labels)
        table = read_table(path, self.labels_key)
        taken = set(_TABLE_COLUMNS) | set(
            self.filename_pattern.groupindex if self.filename_pattern else ()
        )
        clashes = sorted((set(map(str, table.columns)) - {self.labels_key}) & taken)
        if clashes:
            raise InputDataError(
                f"{path}: columns {clashes} clash with item-table or label_from_filename "
                "columns; rename them"
            )
        rows, unmatched = match_table_to_files(table, self.labels_key, files, path)
        if unmatched:
            warnings.warn(
                f"{path}: {len(unmatched)} rows name no input file (first: {unmatched[0]!r})",
                stacklevel=3,
            )
        missing = np.flatnonzero(rows < 0)
        if len(missing) and self.labels_missing == "error":
            raise InputDataError(
                f"{path}: no row for image file {files[int(missing[0])]} ({len(missing)} files "
                "in all); set adapter params.labels_missing to 'allow' to keep them unlabelled"
            )
        return table.drop(columns=[self.labels_key]).reset_index(drop=True), rows

    def _file_pixel_sizes(
        self, labels: pd.DataFrame | None, rows: np.ndarray | None, files: ImageFiles
    ) -> np.ndarray | None:
        """``float64 [n_files]`` micrometres per pixel from the labels table (NaN: the file
        has ``pixel_size_um``), or ``None`` without such a column.

        A table value that is not a number > 0 is an error naming the table, row and file.
        """
        if labels is None or rows is None or "pixel_size_um" not in labels.columns:
            return None
        raw = labels["pixel_size_um"]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = raw.notna().to_numpy() & ~(values > 0)
        described = np.zeros(len(labels), dtype=bool)
        described[rows[rows >= 0]] = True
        if (bad & described).any():
            row = int(np.argmax(bad & described))
            file = files[int(np.argmax(rows == row))]
            raise InputDataError(
                f"{self.labels}: row {row + 1} ({file}): pixel_size_um {raw.iloc[row]!r} is "
                "not a number > 0 (micrometres per pixel)"
            )
        return np.append(values, np.nan)[rows]  # row -1 (no row) takes the NaN

    def _pixel_size(self, table: pd.DataFrame) -> float | None:
        """The source pixel size; a per-file column wins, and must then be one value."""
        if "pixel_size_um" not in table.columns:
            return self.pixel_size_um
        values = pd.to_numeric(table["pixel_size_um"], errors="coerce")
        if values.isna().all():
            return self.pixel_size_um
        distinct = values.dropna().unique()
        return float(distinct[0]) if len(distinct) == 1 and not values.isna().any() else None
