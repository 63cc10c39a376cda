"""Boundary precision, recall and F-score of a segmentation against hand-drawn boundaries.

Both boundary maps are first made one pixel wide: a label image's boundary is the set of
pixels whose right or lower neighbour has another label
(:func:`~scicontrast.data_adapters.grains.boundary_mask`); a drawn boundary mask (lines
several pixels wide, as annotators draw them) is thinned to its skeleton
(``skimage.morphology.skeletonize``, on the mask extended beyond the image edges so that
lines keep their ends). With ``d_T`` and ``d_P`` the Euclidean distance to the
nearest true and predicted boundary pixel (``scipy.ndimage.distance_transform_edt``) and a
tolerance ``t`` pixels,

.. math::

    P = \\frac{|\\{p \\in \\hat B: d_T(p) \\le t\\}|}{|\\hat B|}, \\qquad
    R = \\frac{|\\{q \\in B: d_P(q) \\le t\\}|}{|B|}, \\qquad
    F = \\frac{2PR}{P + R}.

This is the boundary F-measure of the Berkeley segmentation benchmark (Martin, Fowlkes &
Malik 2004) with the one-to-one pixel matching replaced by a distance threshold, so several
predicted pixels may match one true pixel (it can only raise ``P`` slightly where a
prediction runs along a boundary twice). A whole set is scored by pooling the counts over its
images (``pooled``), and also by averaging the per-image scores (``mean_per_image``).

Folder scoring (:func:`score_folder`): predicted label images (16-bit PNG or ``.npy``, as
written by ``scicontrast segment`` under ``labels/``) or boundary masks (any PNG that is not
a label image is read as ``boundary = value > threshold``) matched by file stem to the true
masks (``value > threshold``, 127 for the 8-bit TBM masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.morphology import skeletonize

from scicontrast.data_adapters.grains.segmentation import boundary_mask
from scicontrast.data_adapters.images.reading import read_image_pages
from scicontrast.errors import InputDataError

COUNT_COLUMNS = ("matched_predicted", "predicted", "matched_true", "true")


def thin_boundaries(mask: np.ndarray, border: int = 10) -> np.ndarray:
    """One-pixel-wide skeleton of a boolean boundary mask.

    The mask is first extended by ``border`` pixels (edge values repeated), so that lines
    running off the image keep their ends: a skeleton otherwise shortens every line end.
    """
    padded = np.pad(np.asarray(mask, dtype=bool), border, mode="edge")
    return skeletonize(padded)[border:-border, border:-border]


def boundary_counts(predicted: np.ndarray, true: np.ndarray, tolerance: float) -> dict[str, int]:
    """Matched and total boundary pixels of two thin ``bool [H, W]`` boundary maps."""
    if predicted.shape != true.shape:
        raise ValueError(f"boundary maps differ in shape: {predicted.shape} vs {true.shape}")
    predicted, true = predicted.astype(bool), true.astype(bool)

    def near(target: np.ndarray) -> np.ndarray:
        if not target.any():
            return np.zeros(target.shape, dtype=bool)
        return ndimage.distance_transform_edt(~target) <= tolerance

    return {
        "matched_predicted": int((near(true) & predicted).sum()),
        "predicted": int(predicted.sum()),
        "matched_true": int((near(predicted) & true).sum()),
        "true": int(true.sum()),
    }


def scores_from_counts(counts: dict[str, int]) -> dict[str, float]:
    """``precision``, ``recall``, ``f_score`` from counts; an empty map scores 0 (not NaN)."""
    precision = counts["matched_predicted"] / counts["predicted"] if counts["predicted"] else 0.0
    recall = counts["matched_true"] / counts["true"] if counts["true"] else 0.0
    total = precision + recall
    return {
        "precision": precision,
        "recall": recall,
        "f_score": 2 * precision * recall / total if total else 0.0,
    }


def boundary_scores(
    predicted_labels: np.ndarray, true_boundaries: np.ndarray, tolerance: float = 2.0
) -> dict[str, float]:
    """P, R, F of a label image against a (thick) true boundary mask, plus the counts."""
    counts = boundary_counts(
        boundary_mask(predicted_labels), thin_boundaries(true_boundaries), tolerance
    )
    return {**scores_from_counts(counts), **counts}


def summarise(per_image: pd.DataFrame) -> dict[str, Any]:
    """Pooled and mean-per-image scores of a table with one row per image and the counts."""
    pooled = scores_from_counts({c: int(per_image[c].sum()) for c in COUNT_COLUMNS})
    mean = {k: float(per_image[k].mean()) for k in ("precision", "recall", "f_score")}
    return {"pooled": pooled, "mean_per_image": mean, "images": len(per_image)}


def _read_prediction(path: Path, threshold: int) -> np.ndarray:
    """Boundary map of a predicted label image (``.npy``/16-bit PNG) or boundary mask."""
    if path.suffix == ".npy":
        return boundary_mask(np.load(path))
    raw = read_image_pages(path)[0]
    if raw.ndim == 3:
        raw = raw[:, :, 0]
    if raw.dtype == np.uint16:
        return boundary_mask(raw)
    return thin_boundaries(raw > threshold)


def score_folder(
    predicted_dir: str | Path,
    true_dir: str | Path,
    tolerances: Sequence[float] = (1, 2, 3),
    threshold: int = 127,
) -> tuple[pd.DataFrame, dict[float, dict[str, Any]]]:
    """Score every predicted map in ``predicted_dir`` against the mask of the same stem.

    Returns ``(per-image table, {tolerance: summary})``; the table has ``image``,
    ``tolerance``, the counts and the three scores. A predicted file without a true mask,
    or a size mismatch, raises ``InputDataError`` naming the file.
    """
    predicted_dir, true_dir = Path(predicted_dir), Path(true_dir)
    predictions = sorted(p for p in predicted_dir.iterdir() if p.suffix.lower() in (".png", ".npy"))
    if not predictions:
        raise InputDataError(f"{predicted_dir}: no predicted label images (.png or .npy)")
    rows = []
    for path in predictions:
        true_path = true_dir / f"{path.stem}.png"
        if not true_path.is_file():
            raise InputDataError(f"{path}: no true mask {true_path}")
        true_raw = read_image_pages(true_path)[0]
        true = thin_boundaries((true_raw[..., 0] if true_raw.ndim == 3 else true_raw) > threshold)
        predicted = _read_prediction(path, threshold)
        if predicted.shape != true.shape:
            raise InputDataError(f"{path}: {predicted.shape} pixels, true mask {true.shape}")
        for tolerance in tolerances:
            counts = boundary_counts(predicted, true, tolerance)
            rows.append(
                {"image": path.stem, "tolerance": tolerance, **counts, **scores_from_counts(counts)}
            )
    table = pd.DataFrame(rows)
    summaries = {t: summarise(table[table["tolerance"] == t]) for t in tolerances}
    return table, summaries
