"""Grains: segmenting micrographs into grains, grain statistics, and the ``grains`` adapter.

Segmentation (:func:`segment_micrograph`)
-----------------------------------------
A marker-controlled watershed on a colour-difference gradient (Beucher & Meyer 1993),
followed by region merging on a boundary graph, all in scikit-image:

1. **Denoise** (optional): total-variation denoising (Chambolle 2004) of the RGB image with
   weight ``tv_weight``, which flattens the etch texture inside grains but keeps the steps
   between them.
2. **Gradient**: the image in ``colour_space`` (``"lab"``: CIE L*a*b*, where Euclidean
   distance approximates perceived colour difference, ΔE; ``"rgb"`` and ``"grey"`` scaled
   to 0..100 like L*), each channel smoothed by a Gaussian of ``sigma`` pixels, and
   ``g = sqrt(sum_c sobel(channel_c)^2)``: large where the colour changes. Etched
   boundaries that show as thin dark grooves have a low gradient at their centre; with
   ``dark_lines`` > 0 the black top-hat of the first channel (lightness; a disc of radius
   ``dark_line_width``), which is large on thin dark lines, is added with that weight. With
   ``normalise_gradient`` the result is divided by the median of ``g``, so that ``h`` and
   ``merge_threshold`` are multiples of the image's typical texture gradient and one setting
   suits faint and strong etches alike.
3. **Markers**: the regional minima of ``g`` deeper than ``h`` (``skimage.morphology.
   h_minima``): one marker per basin that is clearly lower than its surroundings, which
   suppresses the many shallow minima of noise.
4. **Watershed** of ``g`` from the markers (``compactness`` > 0 gives the compact watershed
   of Neubert & Protzel 2014). Every pixel gets a region: the labels tile the image.
5. **Merge** (``merge_threshold`` > 0): on the region adjacency graph weighted by the mean
   gradient along each shared boundary (``skimage.graph.rag_boundary``), repeatedly merge
   the two regions with the weakest boundary while it is below ``merge_threshold``.
6. **Minimum area**: regions smaller than ``min_area`` pixels are removed and the watershed
   of ``g`` refills their pixels from the neighbouring regions, so small fragments join a
   neighbour instead of leaving holes.

The result is ``int32 [H, W]`` labels ``1..K`` (no background). An image whose segmentation
is a single region (no boundary found, e.g. a blank field) has **no grains**.

Grain table (:func:`grain_table`)
---------------------------------
One row per grain (``skimage.measure.regionprops``): ``grain`` (label), ``area_px``,
``equivalent_diameter_px`` (diameter of the disc of equal area), ``perimeter_px``,
``major_axis_px``, ``minor_axis_px`` and ``eccentricity`` of the ellipse with the same
second moments, ``orientation_deg`` (angle of its major axis from the image's horizontal,
counter-clockwise as displayed, in ``[-90, 90)``), ``centroid_row``, ``centroid_col``,
``touches_border``, the mean colour ``mean_red``, ``mean_green``, ``mean_blue`` (RGB) or
``mean_grey`` in ``[0, 1]``, and ``area_um2``, ``equivalent_diameter_um`` (``NaN`` without a
pixel size).

Grain size (:func:`grain_size_summary`)
---------------------------------------
In the manner of ASTM E112 (Standard Test Methods for Determining Average Grain Size):

* **Planimetric** (Jeffries) mean grain area ``A / (N_inside + N_border / 2)``: grains cut by
  the image border count half. ``mean_area_px``; also the plain mean area of the grains that
  do not touch the border, ``mean_interior_area_px``.
* **Mean lineal intercept** (Heyn): test lines are every ``line_spacing``-th pixel row
  (horizontal) and column (vertical); a line crosses a boundary wherever two neighbouring
  pixels on it carry different labels. The grains intercepted by a line are its crossings
  plus one (its two ends lie inside grains and count half each), and
  ``L = total line length / grains intercepted``, per direction and over both
  (``mean_intercept_px``); a grid of ``d x d`` squares gives ``L = d``.
  ``intercept_anisotropy`` is ``L_horizontal / L_vertical`` (1 for equiaxed grains).
* With a pixel size, the same in micrometres and the ASTM E112-13 grain size numbers
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
    labels/<image>.png        16-bit label image (0 never occurs; ``.npy`` above 65535 grains)
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
images` (``images`` ``[N, C, S, S]``, uint8 for 8-bit micrographs, else float32).
"""

from __future__ import annotations

import json
import math
import shlex
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage
from skimage import color, filters, graph, measure, morphology, segmentation
from skimage import io as skio
from skimage.restoration import denoise_tv_chambolle

from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.data_adapters.images import (
    Micrograph,
    check_pixel_size,
    check_positive_int,
    expand_image_paths,
    file_ids,
    normalise_pixels,
    read_image_pages,
    read_micrographs,
    stack_images,
    to_rgb,
    to_uint8,
)
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.io import atomic_path
from scicontrast.registry import ADAPTERS

#: Segmentation parameters and their defaults (tuned on the TBM training crops, BENCHMARKS.md).
DEFAULT_PARAMS: dict[str, Any] = {
    "tv_weight": 0.1,
    "colour_space": "lab",
    "sigma": 1.0,
    "normalise_gradient": True,
    "h": 0.55,
    "dark_lines": 0.0,
    "dark_line_width": 3,
    "compactness": 0.0,
    "merge_threshold": 1.4,
    "min_area": 50,
    "line_spacing": 1,
}
COLOUR_SPACES = ("lab", "rgb", "grey")
BOUNDARY_COLOUR = (1.0, 0.0, 1.0)  # magenta: rare in etched metals, so boundaries stand out
LABELS_PNG_MAX = np.iinfo(np.uint16).max


# --- segmentation ------------------------------------------------------------------------


def segmentation_params(params: dict[str, Any] | None, where: str = "segmentation") -> dict:
    """``params`` over :data:`DEFAULT_PARAMS`, checked; unknown keys are a ``ConfigError``."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown parameters {unknown}; known: {', '.join(DEFAULT_PARAMS)}"
        )
    merged = {**DEFAULT_PARAMS, **params}
    for key in ("tv_weight", "sigma", "h", "dark_lines", "compactness", "merge_threshold"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}: {key} must be a number >= 0, got {value!r}")
    for key in ("min_area", "line_spacing", "dark_line_width"):
        check_positive_int(merged[key], where, key)
    if not isinstance(merged["normalise_gradient"], bool):
        raise ConfigError(
            f"{where}: normalise_gradient must be true or false, "
            f"got {merged['normalise_gradient']!r}"
        )
    if merged["colour_space"] not in COLOUR_SPACES:
        raise ConfigError(
            f"{where}: colour_space must be one of {list(COLOUR_SPACES)}, "
            f"got {merged['colour_space']!r}"
        )
    return merged


def as_pixels(image: np.ndarray) -> np.ndarray:
    """Any accepted image array (``[H, W]``, ``[H, W, C]``, uint8/uint16/float) -> float
    ``[H, W, C]`` in ``[0, 1]``."""
    if image.dtype == np.float32 and image.ndim == 3 and image.shape[2] in (1, 3):
        return image
    return normalise_pixels(np.asarray(image), "image")[0]


def colour_gradient(pixels: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Steps 1-2 of the module docstring: ``float64 [H, W]`` colour-difference gradient."""
    if params["tv_weight"] > 0:
        pixels = denoise_tv_chambolle(pixels, weight=params["tv_weight"], channel_axis=-1)
    space = params["colour_space"]
    if pixels.shape[2] == 1 or space == "grey":
        grey = pixels[:, :, 0] if pixels.shape[2] == 1 else color.rgb2gray(pixels)
        channels = 100.0 * grey[:, :, None]
    elif space == "lab":
        channels = color.rgb2lab(pixels)
    else:
        channels = 100.0 * pixels
    squared = np.zeros(pixels.shape[:2])
    smoothed = []
    for c in range(channels.shape[2]):
        channel = channels[:, :, c]
        if params["sigma"] > 0:
            channel = filters.gaussian(channel, sigma=params["sigma"])
        smoothed.append(channel)
        squared += filters.sobel(channel) ** 2
    gradient = np.sqrt(squared)
    scale = float(np.median(gradient)) if params["normalise_gradient"] else 1.0
    if params["dark_lines"] > 0:
        # Channel 0 is lightness in every colour space but RGB, where it is red; a groove
        # is dark in all three channels, so red serves as well.
        footprint = morphology.disk(params["dark_line_width"])
        gradient += params["dark_lines"] * morphology.black_tophat(smoothed[0], footprint)
    # A flat image has a zero median; its maximum (or 1) keeps the scale finite.
    return gradient / (scale or float(gradient.max()) or 1.0)


def _merge_weak_boundaries(labels: np.ndarray, gradient: np.ndarray, threshold: float):
    """Step 5: hierarchical merging on the boundary RAG (mean gradient along each boundary)."""
    rag = graph.rag_boundary(labels, gradient)

    def merged_weight(rag_, src, dst, neighbour):
        # the merged boundary's mean is the length-weighted mean of the two boundaries
        empty = {"weight": 0.0, "count": 0}
        a, b = rag_[src].get(neighbour, empty), rag_[dst].get(neighbour, empty)
        count = a["count"] + b["count"]
        return {
            "count": count,
            "weight": (a["count"] * a["weight"] + b["count"] * b["weight"]) / count,
        }

    merged = graph.merge_hierarchical(
        labels,
        rag,
        thresh=threshold,
        rag_copy=False,
        in_place_merge=True,
        merge_func=lambda *_: None,
        weight_func=merged_weight,
    )
    return merged + 1


def segment_micrograph(image: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
    """Segment one micrograph into grains (method in the module docstring).

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` (C = 1 or 3), uint8, uint16 or float in [0, 1].
        params: overrides of :data:`DEFAULT_PARAMS`.

    Returns:
        ``int32 [H, W]`` labels ``1..K`` tiling the image (``K = 1``: no grain found).
    """
    params = segmentation_params(params)
    pixels = as_pixels(image)
    gradient = colour_gradient(pixels, params)
    markers = measure.label(morphology.h_minima(gradient, params["h"]))
    if markers.max() == 0:
        return np.ones(gradient.shape, dtype=np.int32)
    labels = segmentation.watershed(gradient, markers, compactness=params["compactness"])
    if params["merge_threshold"] > 0 and labels.max() > 1:
        labels = _merge_weak_boundaries(labels, gradient, params["merge_threshold"])
    areas = np.bincount(labels.ravel())
    small = areas < params["min_area"]
    small[0] = False
    if small.any():
        if small[1:].all():  # keep the largest fragment rather than nothing
            small[int(np.argmax(areas))] = False
        seeds = np.where(small[labels], 0, labels)
        labels = segmentation.watershed(gradient, seeds)
    relabelled, _, _ = segmentation.relabel_sequential(labels)
    return relabelled.astype(np.int32)


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """``bool [H, W]``: pixels whose right or lower neighbour has another label (1 px lines)."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


# --- grain statistics --------------------------------------------------------------------


def grain_table(
    labels: np.ndarray, image: np.ndarray, pixel_size_um: float | None = None
) -> pd.DataFrame:
    """One row per grain (columns in the module docstring)."""
    pixels = as_pixels(image)
    if pixels.shape[:2] != labels.shape:
        raise ValueError(f"labels {labels.shape} and image {pixels.shape[:2]} differ in size")
    height, width = labels.shape
    colour_names = (
        ["mean_grey"] if pixels.shape[2] == 1 else ["mean_red", "mean_green", "mean_blue"]
    )
    rows = []
    for region in measure.regionprops(labels, intensity_image=pixels):
        min_row, min_col, max_row, max_col = region.bbox
        row = {
            "grain": int(region.label),
            "area_px": int(region.area),
            "equivalent_diameter_px": float(region.equivalent_diameter_area),
            "perimeter_px": float(region.perimeter),
            "major_axis_px": float(region.axis_major_length),
            "minor_axis_px": float(region.axis_minor_length),
            "eccentricity": float(region.eccentricity),
            "orientation_deg": float((math.degrees(region.orientation) + 180.0) % 180.0 - 90.0),
            "centroid_row": float(region.centroid[0]),
            "centroid_col": float(region.centroid[1]),
            "touches_border": bool(
                min_row == 0 or min_col == 0 or max_row == height or max_col == width
            ),
        }
        row.update(zip(colour_names, map(float, np.atleast_1d(region.intensity_mean)), strict=True))
        rows.append(row)
    table = pd.DataFrame(rows)
    size = np.nan if pixel_size_um is None else float(pixel_size_um)
    table["area_um2"] = table["area_px"] * size**2
    table["equivalent_diameter_um"] = table["equivalent_diameter_px"] * size
    return table


def _intercepts(labels: np.ndarray, axis: int, spacing: int) -> tuple[int, int]:
    """``(total line length, grains intercepted)`` of the test lines along ``axis``."""
    lines = labels[::spacing, :] if axis == 1 else labels[:, ::spacing].T
    crossings = int((lines[:, 1:] != lines[:, :-1]).sum())
    # Each line's two ends lie inside grains and count half an intercept each (ASTM E112).
    return lines.shape[0] * lines.shape[1], crossings + lines.shape[0]


def grain_size_summary(
    labels: np.ndarray, pixel_size_um: float | None = None, line_spacing: int = 1
) -> dict[str, Any]:
    """Whole-image grain size in the manner of ASTM E112 (module docstring)."""
    height, width = labels.shape
    grains = np.unique(labels)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    n_border = len(border)
    n_inside = len(grains) - n_border
    areas = np.bincount(labels.ravel())
    inside = np.setdiff1d(grains, border)
    summary: dict[str, Any] = {
        "grains": len(grains),
        "grains_inside": n_inside,
        "grains_on_border": n_border,
        "image_area_px": height * width,
        "mean_area_px": height * width / (n_inside + 0.5 * n_border),
        "mean_interior_area_px": float(areas[inside].mean()) if n_inside else None,
    }
    length_h, intercepts_h = _intercepts(labels, 1, line_spacing)
    length_v, intercepts_v = _intercepts(labels, 0, line_spacing)
    summary["intercepts"] = intercepts_h + intercepts_v
    summary["mean_intercept_horizontal_px"] = length_h / intercepts_h
    summary["mean_intercept_vertical_px"] = length_v / intercepts_v
    summary["mean_intercept_px"] = (length_h + length_v) / (intercepts_h + intercepts_v)
    summary["intercept_anisotropy"] = (
        summary["mean_intercept_horizontal_px"] / summary["mean_intercept_vertical_px"]
    )
    summary["pixel_size_um"] = pixel_size_um
    if pixel_size_um is not None:
        size = float(pixel_size_um)
        summary["mean_area_um2"] = summary["mean_area_px"] * size**2
        summary["mean_intercept_um"] = summary["mean_intercept_px"] * size
        grains_per_mm2 = 1e6 / summary["mean_area_um2"]
        summary["astm_g_planimetric"] = 3.321928 * math.log10(grains_per_mm2) - 2.954
        intercept_mm = summary["mean_intercept_um"] / 1000.0
        summary["astm_g_intercept"] = -6.643856 * math.log10(intercept_mm) - 3.288
    return summary


# --- pictures ----------------------------------------------------------------------------


def overlay_boundaries(
    image: np.ndarray, labels: np.ndarray, colour: tuple[float, float, float] = BOUNDARY_COLOUR
) -> np.ndarray:
    """``uint8 [H, W, 3]``: the micrograph with 2-pixel grain boundaries in ``colour``."""
    rgb = to_rgb(as_pixels(image)).copy()
    rgb[segmentation.find_boundaries(labels, mode="inner")] = colour
    return to_uint8(rgb)


def overlay_grain_values(
    image: np.ndarray,
    labels: np.ndarray,
    grains: np.ndarray,
    values: np.ndarray,
    alpha: float = 0.5,
) -> np.ndarray:
    """``uint8 [H, W, 3]``: each listed grain tinted by the colour of its integer value.

    Values ``>= 0`` take the colours of matplotlib's ``tab10``/``tab20``; grains not listed
    (or with a negative value, e.g. clustering noise) keep the micrograph's colour.
    Boundaries are drawn in black.
    """
    from matplotlib import colormaps

    rgb = to_rgb(as_pixels(image)).copy()
    values = np.asarray(values, dtype=np.int64)
    palette = colormaps["tab10" if values.max(initial=0) < 10 else "tab20"].colors
    lookup = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    lookup[np.asarray(grains, dtype=np.int64)] = values
    value_of_pixel = lookup[labels]
    tinted = value_of_pixel >= 0
    colours = np.asarray(palette)[value_of_pixel[tinted] % len(palette)]
    rgb[tinted] = (1 - alpha) * rgb[tinted] + alpha * colours
    rgb[segmentation.find_boundaries(labels, mode="inner")] = 0.0
    return to_uint8(rgb)


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
