"""The synthetic polycrystal generator."""

from __future__ import annotations

import colorsys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from skimage import io as skio

from scicontrast.analysis.segmentation import boundary_counts, scores_from_counts
from scicontrast.cli import main
from scicontrast.data_adapters.grains.demo import (
    LAMELLA_PERIODS,
    class_hue,
    class_period,
    generate_demo_grains,
    image_ids,
    voronoi_labels,
)
from scicontrast.data_adapters.grains.segmentation import boundary_mask, segment_micrograph
from scicontrast.errors import ConfigError

SMALL = {"images": 2, "size": 96, "grains_per_image": 12}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    paths = generate_demo_grains(out, seed=3, **SMALL)
    return out, paths


def test_writes_every_file(demo):
    out, paths = demo
    assert paths == [out / "micrographs" / f"{i}.png" for i in image_ids(2)]
    for kind in ("micrographs", "truth", "classes"):
        assert sorted(p.name for p in (out / kind).iterdir()) == [
            "micrograph_00.png",
            "micrograph_01.png",
        ]
    micrograph = skio.imread(paths[0])
    assert micrograph.shape == (96, 96, 3) and micrograph.dtype == np.uint8
    assert skio.imread(out / "truth" / "micrograph_00.png").dtype == np.uint16


def test_class_map_agrees_with_truth_and_table(demo):
    out, _ = demo
    table = pd.read_csv(out / "grains.csv")
    for image_id in image_ids(2):
        truth = skio.imread(out / "truth" / f"{image_id}.png").astype(int)
        classes = skio.imread(out / "classes" / f"{image_id}.png")
        rows = table[table["image"] == image_id].set_index("grain")
        assert set(np.unique(truth)) == set(rows.index)
        lookup = np.zeros(truth.max() + 1, dtype=np.uint8)
        lookup[rows.index] = rows["orientation_class"]
        assert np.array_equal(classes, lookup[truth])
    assert table["orientation_class"].between(1, 4).all()
    assert (table["period_px"] == table["orientation_class"].map(class_period)).all()
    assert table["angle_deg"].between(0, 180).all()


def test_classes_differ_in_hue_and_neighbours_in_period():
    hues = [class_hue(k, 4) for k in range(1, 5)]
    assert hues == sorted(hues) and len(set(hues)) == 4
    assert all(0 <= h < 0.7 for h in hues)  # magenta is left for drawn boundaries
    assert class_period(1) == class_period(3) == LAMELLA_PERIODS[0]
    assert class_period(2) == class_period(4) == LAMELLA_PERIODS[1]


def test_grain_colour_follows_its_class(demo):
    out, paths = demo
    table = pd.read_csv(out / "grains.csv")
    truth = skio.imread(out / "truth" / "micrograph_00.png").astype(int)
    micrograph = skio.imread(paths[0]) / 255.0
    rows = table[table["image"] == "micrograph_00"]
    for grain, orientation_class in zip(rows["grain"], rows["orientation_class"], strict=True):
        mean = micrograph[truth == grain].mean(axis=0)
        hue = colorsys.rgb_to_hsv(*mean)[0]
        distance = abs(hue - class_hue(orientation_class, 4))
        assert min(distance, 1 - distance) < 0.05


def test_deterministic_given_seed(tmp_path, demo):
    _, paths = demo
    again = generate_demo_grains(tmp_path / "again", seed=3, **SMALL)
    assert again[0].read_bytes() == paths[0].read_bytes()
    other = generate_demo_grains(tmp_path / "other", seed=4, **SMALL)
    assert other[0].read_bytes() != paths[0].read_bytes()


def test_voronoi_labels_are_nearest_seeds():
    seeds = np.array([[2.0, 2.0], [2.0, 17.0], [17.0, 9.0]])
    labels = voronoi_labels(20, seeds)
    rows, cols = np.mgrid[0:20, 0:20]
    distances = np.stack([np.hypot(rows - r, cols - c) for r, c in seeds])
    nearest = distances.argmin(axis=0) + 1
    ties = np.sort(distances, axis=0)[1] - np.sort(distances, axis=0)[0] < 1e-9
    assert np.array_equal(labels[~ties], nearest[~ties])


def test_demo_segmentation_parameters_recover_the_boundaries(demo):
    """The parameters config.yaml gives the demo find the true grain boundaries."""
    out, paths = demo
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    params = config["segmentations"]["grains_demo"]["params"]
    truth = skio.imread(out / "truth" / "micrograph_00.png").astype(int)
    labels = segment_micrograph(skio.imread(paths[0]), params)
    scores = scores_from_counts(boundary_counts(boundary_mask(labels), boundary_mask(truth), 2))
    assert scores["f_score"] > 0.9


def test_bad_sizes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="grains_per_image"):
        generate_demo_grains(tmp_path, grains_per_image=1)
    with pytest.raises(ConfigError, match="classes"):
        generate_demo_grains(tmp_path, classes=300)


def test_cli(tmp_path):
    out = tmp_path / "d"
    assert (
        main(["-q", "demo-data", "grains", "--out", str(out), "--images", "1", "--size", "48"]) == 0
    )
    assert (out / "micrographs" / "micrograph_00.png").exists()
