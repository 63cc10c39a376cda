"""Grain statistics and grain-size numbers of a segmentation, and its overlays.

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
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from skimage import measure, segmentation

from scicontrast.data_adapters.grains.segmentation import BOUNDARY_COLOUR, as_pixels
from scicontrast.data_adapters.images.reading import to_rgb, to_uint8

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
    # tab10 and tab20 are ListedColormaps, which the stub's Colormap does not say.
    palette = colormaps["tab10" if values.max(initial=0) < 10 else "tab20"].colors  # type: ignore[attr-defined]
    lookup = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    lookup[np.asarray(grains, dtype=np.int64)] = values
    value_of_pixel = lookup[labels]
    tinted = value_of_pixel >= 0
    colours = np.asarray(palette)[value_of_pixel[tinted] % len(palette)]
    rgb[tinted] = (1 - alpha) * rgb[tinted] + alpha * colours
    rgb[segmentation.find_boundaries(labels, mode="inner")] = 0.0
    return to_uint8(rgb)
