"""The segmentation stage: micrographs segmented into a folder of grains, and its readers.

  ``G = -6.643856 log10(L_mm) - 3.288`` (intercept) and
  ``G = 3.321928 log10(N_A) - 2.954`` (planimetric, ``N_A`` grains per mm^2).

Segmentation folder (:func:`segment`)
-------------------------------------
Written atomically (all of it or nothing)::

    summary.json              parameters, pixel size, per-image grain-size summaries,
                              images skipped for having no grains
    grains.parquet            one row per grain of every image: ``image`` plus the grain table,
                              plus one column per annotation (majority value) and
                              ``<annotation>_purity`` (its share of the grain's pixels)
    micrographs/<image>.png   the micrograph as read (8-bit PNG; 16-bit TIFF ``.tif`` for
                              16-bit and float sources)
"""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from skimage import io as skio

from scicontrast.data_adapters.grains.segmentation import (
    LABELS_PNG_MAX,
    segment_micrograph,
    segmentation_params,
)
from scicontrast.data_adapters.grains.statistics import (
    grain_size_summary,
    grain_table,
    overlay_boundaries,
)
from scicontrast.data_adapters.images.folder import check_pixel_size
from scicontrast.data_adapters.images.listing import expand_image_paths
from scicontrast.data_adapters.images.reading import (
    Micrograph,
    file_ids,
    normalise_pixels,
    read_image_pages,
    read_micrographs,
    to_uint8,
)
from scicontrast.errors import InputDataError
from scicontrast.io import atomic_path

# --- whole folders -----------------------------------------------------------------------


def _annotation(template: str, image_id: str, shape: tuple[int, int]) -> np.ndarray:
    path = Path(template.format(image=image_id)) if "{image}" in template else None
    if path is None:
        path = Path(template) / f"{image_id}.png"
    raw = read_image_pages(path)[0]
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise InputDataError(
            f"{path}: an annotation image must be one integer channel, got shape {raw.shape} "
            f"and type {raw.dtype}"
        )
    if raw.shape != shape:
        raise InputDataError(f"{path}: annotation is {raw.shape}, its micrograph {shape}")
    return raw


def _majority(labels: np.ndarray, annotation: np.ndarray, grains: np.ndarray):
    """Per grain: the most frequent non-zero annotation value and its share of the grain."""
    values, codes = np.unique(annotation.ravel(), return_inverse=True)
    counts = np.zeros((int(labels.max()) + 1, len(values)), dtype=np.int64)
    np.add.at(counts, (labels.ravel(), codes), 1)
    counts[:, values == 0] = 0  # 0 means "not annotated"
    best = counts.argmax(axis=1)[grains]
    annotated = counts[grains].sum(axis=1)
    share = counts[grains, best] / np.maximum(np.bincount(labels.ravel())[grains], 1)
    majority = pd.array(values[best], dtype="Int64")
    majority[annotated == 0] = pd.NA
    return majority, share


def _save_micrograph(folder: Path, image_id: str, micrograph: Micrograph) -> None:
    """8-bit sources as PNG; 16-bit and float ones as 16-bit TIFF (PNG has no 16-bit RGB
    in scikit-image's writer)."""
    pixels = micrograph.pixels if micrograph.pixels.shape[2] == 3 else micrograph.pixels[:, :, 0]
    folder.mkdir(parents=True, exist_ok=True)
    if micrograph.bit_depth == 8:
        skio.imsave(folder / f"{image_id}.png", to_uint8(pixels), check_contrast=False)
    else:
        tifffile.imwrite(folder / f"{image_id}.tif", np.rint(pixels * 65535).astype(np.uint16))


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(path, array, check_contrast=False)


def segment(
    paths: list[str] | str,
    out_dir: str | Path,
    params: dict[str, Any] | None = None,
    pixel_size_um: float | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Segment every micrograph in ``paths`` and write a segmentation folder (module docstring).

    Args:
        paths: image files, glob patterns or folders (as for the ``image_folder`` adapter).
        out_dir: the folder to write (replaced atomically).
        params: segmentation parameters over :data:`DEFAULT_PARAMS`.
        pixel_size_um: micrometres per pixel, for the micrometre columns and ASTM numbers.
        annotations: ``{column: location}`` of per-pixel integer annotations (e.g. a
            ground-truth class map; 0 = not annotated): a template with ``{image}`` (the
            image id) or a folder holding ``<image>.png``. Each grain gets the majority
            value in ``column`` and its share in ``<column>_purity``.

    Returns:
        The summary written to ``summary.json``.

    An image without grains is skipped with a warning naming its file; when no image has
    grains, ``InputDataError`` is raised and nothing is written.
    """
    params = segmentation_params(params)
    pixel_size_um = check_pixel_size(pixel_size_um, "segment")
    files = expand_image_paths(paths)
    out_dir = Path(out_dir)
    tables, images, skipped = [], {}, []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for micrograph in read_micrographs(files):
            labels = segment_micrograph(micrograph.pixels, params)
            if labels.max() < 2:
                where = micrograph.where
                warnings.warn(f"{where}: no grains found (no boundary); skipped", stacklevel=2)
                skipped.append({"file": where, "reason": "no grains found"})
                continue
            image_id = micrograph.image_id
            table = grain_table(labels, micrograph.pixels, pixel_size_um)
            for column, location in (annotations or {}).items():
                annotation = _annotation(location, image_id, labels.shape)
                table[column], table[f"{column}_purity"] = _majority(
                    labels, annotation, table["grain"].to_numpy()
                )
            tables.append(table.assign(image=image_id))
            summary = grain_size_summary(labels, pixel_size_um, params["line_spacing"])
            images[image_id] = {
                "file": str(micrograph.path),
                "page": micrograph.page,
                "height": labels.shape[0],
                "width": labels.shape[1],
                "bit_depth": micrograph.bit_depth,
                **summary,
            }
            _save_micrograph(tmp / "micrographs", image_id, micrograph)
            if labels.max() <= LABELS_PNG_MAX:
                _save_png(tmp / "labels" / f"{image_id}.png", labels.astype(np.uint16))
            else:
                (tmp / "labels").mkdir(exist_ok=True)
                np.save(tmp / "labels" / f"{image_id}.npy", labels)
            _save_png(
                tmp / "overlays" / f"{image_id}.png", overlay_boundaries(micrograph.pixels, labels)
            )
        if not tables:
            raise InputDataError(
                f"{', '.join(map(str, files))}: no grains found in any image; check the "
                "segmentation parameters (h, merge_threshold, min_area)"
            )
        grains = pd.concat(tables, ignore_index=True)
        grains = grains[["image", *[c for c in grains.columns if c != "image"]]]
        grains.to_parquet(tmp / "grains.parquet", index=False)
        result = {
            "params": params,
            "pixel_size_um": pixel_size_um,
            "annotations": sorted(annotations or {}),
            "images": images,
            "skipped": skipped,
            "grains": len(grains),
        }
        (tmp / "summary.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def segmentation_inputs(entry: dict[str, Any]) -> list[str]:
    """The files ``segment`` reads for one ``segmentations`` entry of the config.

    The images (patterns and folders expanded now) and, for each annotation template, the
    file of every image id (one-page files; a multi-page TIFF's pages are not listed).
    """
    files = expand_image_paths(entry["paths"])
    ids = file_ids(files)
    annotation_files = [
        template.format(image=ids[path])
        for template in entry.get("annotations", {}).values()
        if "{image}" in template
        for path in files
    ]
    return [str(p) for p in files] + annotation_files


def segmentation_options(entry: dict[str, Any]) -> str:
    """The ``scicontrast segment`` options (shell-quoted) for one ``segmentations`` entry."""
    options = ["--params", json.dumps(entry.get("params", {}), sort_keys=True)]
    if entry.get("pixel_size_um") is not None:
        options += ["--pixel-size-um", str(entry["pixel_size_um"])]
    for column, location in sorted(entry.get("annotations", {}).items()):
        options += ["--annotation", f"{column}={location}"]
    return shlex.join(options)


def load_segmentation(folder: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``(summary, grains table)`` of a segmentation folder written by :func:`segment`."""
    folder = Path(folder)
    summary_path, grains_path = folder / "summary.json", folder / "grains.parquet"
    if not summary_path.is_file() or not grains_path.is_file():
        raise InputDataError(
            f"{folder}: not a segmentation folder (needs summary.json and grains.parquet; "
            "write one with 'scicontrast segment')"
        )
    return json.loads(summary_path.read_text()), pd.read_parquet(grains_path)


def load_labels(folder: str | Path, image_id: str) -> np.ndarray:
    """The label image of ``image_id`` in a segmentation folder, ``int32 [H, W]``."""
    folder = Path(folder) / "labels"
    npy = folder / f"{image_id}.npy"
    if npy.is_file():
        return np.load(npy).astype(np.int32)
    return read_image_pages(folder / f"{image_id}.png")[0].astype(np.int32)


def load_micrograph(folder: str | Path, image_id: str) -> np.ndarray:
    """The stored micrograph of ``image_id``, ``float32 [H, W, C]`` in ``[0, 1]``."""
    path = Path(folder) / "micrographs" / f"{image_id}.png"
    if not path.is_file():
        path = path.with_suffix(".tif")
    return normalise_pixels(read_image_pages(path)[0], str(path))[0]
