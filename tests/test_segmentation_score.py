"""Boundary precision, recall and F-score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage import io as skio

from scicontrast.analysis.segmentation import (
    boundary_counts,
    boundary_scores,
    score_folder,
    scores_from_counts,
    summarise,
    thin_boundaries,
)
from scicontrast.data_adapters.grains.segmentation import boundary_mask, segment_micrograph
from scicontrast.errors import InputDataError


def halves(size: int = 40, split: int = 20) -> np.ndarray:
    labels = np.ones((size, size), dtype=np.int32)
    labels[:, split:] = 2
    return labels


def thick_line_mask(size: int = 40, column: int = 20, width: int = 5) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, column - width // 2 : column + width // 2 + 1] = 255
    return mask


def test_perfect_prediction_scores_one():
    labels = halves()
    scores = boundary_scores(labels, boundary_mask(labels), tolerance=0)
    assert scores["precision"] == scores["recall"] == scores["f_score"] == 1.0


def test_thinning_a_drawn_line_leaves_one_pixel_per_row():
    thin = thin_boundaries(thick_line_mask() > 127)
    assert (thin.sum(axis=1) == 1).all()
    assert np.flatnonzero(thin[20]) == [20]


@pytest.mark.parametrize(
    ("shift", "tolerance", "expected"), [(2, 2, 1.0), (3, 2, 0.0), (3, 3, 1.0)]
)
def test_tolerance_decides_whether_a_shifted_boundary_matches(shift, tolerance, expected):
    # the predicted boundary is column 19 + shift (pixels left of the label change)
    predicted = halves(split=20 + shift)
    scores = boundary_scores(predicted, thick_line_mask(column=19), tolerance=tolerance)
    assert scores["precision"] == expected and scores["recall"] == expected


def test_spurious_boundary_lowers_precision_only():
    predicted = halves()
    predicted[:, 30:] = 3  # an extra boundary far from the true one
    scores = boundary_scores(predicted, thick_line_mask(column=19), tolerance=1)
    assert scores["recall"] == 1.0
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["f_score"] == pytest.approx(2 * 0.5 / 1.5)


def test_missed_boundary_lowers_recall_only():
    true = np.zeros((40, 40), dtype=bool)
    true[:, 19] = true[:, 29] = True
    counts = boundary_counts(boundary_mask(halves()), true, tolerance=1)
    scores = scores_from_counts(counts)
    assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(0.5)


def test_empty_maps_score_zero_not_nan():
    empty = np.zeros((10, 10), dtype=bool)
    scores = scores_from_counts(boundary_counts(empty, empty, 2))
    assert scores == {"precision": 0.0, "recall": 0.0, "f_score": 0.0}


def test_pooled_and_mean_differ_when_images_differ_in_size():
    table = pd.DataFrame(
        {
            "matched_predicted": [10, 0],
            "predicted": [10, 10],
            "matched_true": [90, 0],
            "true": [90, 10],
            "precision": [1.0, 0.0],
            "recall": [1.0, 0.0],
            "f_score": [1.0, 0.0],
        }
    )
    summary = summarise(table)
    assert summary["mean_per_image"]["f_score"] == 0.5
    assert summary["pooled"]["recall"] == pytest.approx(0.9)
    assert summary["pooled"]["precision"] == pytest.approx(0.5)


def test_score_folder_reads_label_images_and_masks(tmp_path):
    predicted_dir, true_dir = tmp_path / "pred", tmp_path / "true"
    predicted_dir.mkdir()
    true_dir.mkdir()
    skio.imsave(predicted_dir / "a.png", halves().astype(np.uint16), check_contrast=False)
    skio.imsave(true_dir / "a.png", thick_line_mask(column=19), check_contrast=False)
    np.save(predicted_dir / "b.npy", halves(split=30))
    skio.imsave(true_dir / "b.png", thick_line_mask(column=19), check_contrast=False)
    table, summaries = score_folder(predicted_dir, true_dir, tolerances=(2,))
    assert list(table["image"]) == ["a", "b"]
    assert table.set_index("image").loc["a", "f_score"] == 1.0
    assert table.set_index("image").loc["b", "f_score"] == 0.0
    assert summaries[2]["mean_per_image"]["f_score"] == 0.5
    (predicted_dir / "c.npy").write_bytes(b"")
    np.save(predicted_dir / "c.npy", halves())
    with pytest.raises(InputDataError, match=r"c\.npy: no true mask"):
        score_folder(predicted_dir, true_dir)


@pytest.mark.real_data
def test_default_segmentation_finds_real_grain_boundaries(shared_data):
    crops = shared_data / "grains_tbm" / "crops256_with_boundary_masks" / "TestDataset"
    name = sorted((crops / "images").iterdir())[0].name
    image = skio.imread(crops / "images" / name)[:, :, :3]
    true = skio.imread(crops / "masks" / name) > 127
    scores = boundary_scores(segment_micrograph(image), true, tolerance=2)
    # well above what boundaries placed at random reach (about the boundary density)
    assert scores["f_score"] > 0.45
