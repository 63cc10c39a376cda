"""Segmenting a micrograph into grains.

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
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage import color, filters, graph, measure, morphology, segmentation
from skimage.restoration import denoise_tv_chambolle

from scicontrast.data_adapters.images.folder import check_positive_int
from scicontrast.data_adapters.images.reading import normalise_pixels
from scicontrast.errors import ConfigError

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
