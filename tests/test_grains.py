"""Grain segmentation, grain statistics, segmentation folders and the ``grains`` adapter."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO
from scipy import ndimage
from skimage import io as skio
from skimage.draw import ellipse

from scicontrast.cli import main
from scicontrast.data_adapters.grains.folders import (
    load_labels,
    segment,
    segmentation_inputs,
    segmentation_options,
)
from scicontrast.data_adapters.grains.reading import GrainsAdapter
from scicontrast.data_adapters.grains.segmentation import (
    DEFAULT_PARAMS,
    segment_micrograph,
    segmentation_params,
)
from scicontrast.data_adapters.grains.statistics import grain_size_summary, grain_table
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS

COLOURS = np.array(
    [[0.8, 0.3, 0.2], [0.2, 0.4, 0.8], [0.9, 0.8, 0.3], [0.3, 0.7, 0.3]], dtype=np.float32
)


def quadrants(size: int = 64, noise: float = 0.02, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four flat-coloured quadrants plus noise: ``(uint8 image, true labels 1..4)``."""
    half = size // 2
    truth = np.ones((size, size), dtype=np.int32)
    truth[:half, half:] = 2
    truth[half:, :half] = 3
    truth[half:, half:] = 4
    rng = np.random.default_rng(seed)
    image = COLOURS[truth - 1] + rng.normal(0, noise, size=(size, size, 3))
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), truth


def blobs(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A grey background with three coloured discs: interior grains for the adapter."""
    truth = np.ones((size, size), dtype=np.int32)
    for label, (row, col, radius) in enumerate([(25, 25, 12), (25, 70, 9), (70, 48, 15)], 2):
        rr, cc = ellipse(row, col, radius, radius, shape=truth.shape)
        truth[rr, cc] = label
    palette = np.vstack([[0.5, 0.5, 0.5], COLOURS[:3]])
    return np.rint(palette[truth - 1] * 255).astype(np.uint8), truth


def test_registered():
    assert ADAPTERS.get("grains") is GrainsAdapter


def test_segments_flat_regions_exactly_enough():
    image, truth = quadrants()
    labels = segment_micrograph(image)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    assert labels.min() == 1 and labels.max() == 4
    # each true region is mostly one predicted grain
    for region in range(1, 5):
        _, counts = np.unique(labels[truth == region], return_counts=True)
        assert counts.max() / counts.sum() > 0.95


def test_min_area_leaves_no_small_grain():
    rng = np.random.default_rng(1)
    field = ndimage.gaussian_filter(rng.normal(size=(64, 64, 3)), sigma=(2, 2, 0))
    noisy = np.clip(0.5 + 2 * field, 0, 1)
    labels = segment_micrograph(noisy, {"tv_weight": 0, "sigma": 0, "h": 0.5, "min_area": 40})
    areas = np.bincount(labels.ravel())[1:]
    assert labels.max() >= 2 and areas.min() >= 40
    assert set(np.unique(labels)) == set(range(1, labels.max() + 1))


def test_blank_image_has_no_grains():
    assert segment_micrograph(np.full((32, 32), 128, dtype=np.uint8)).max() == 1


def test_grey_and_16bit_input():
    _, truth = quadrants()
    grey16 = (truth * 13000).astype(np.uint16)
    labels = segment_micrograph(grey16)
    assert labels.max() == 4
    assert len(np.unique(labels[truth == 2])) == 1


def test_normalised_gradient_makes_segmentation_independent_of_contrast():
    _, truth = quadrants()
    rng = np.random.default_rng(2)
    grey = truth / 5.0 + rng.normal(0, 0.02, size=truth.shape)
    faint = 0.4 + 0.25 * grey  # the same micrograph, etched four times more weakly
    params = {"tv_weight": 0.0, "colour_space": "grey", "h": 1.0}
    strong_labels = segment_micrograph(np.clip(grey, 0, 1).astype(np.float32), params)
    faint_labels = segment_micrograph(np.clip(faint, 0, 1).astype(np.float32), params)
    assert strong_labels.max() == 4 and np.array_equal(strong_labels, faint_labels)
    absolute = {**params, "normalise_gradient": False}
    assert not np.array_equal(
        segment_micrograph(np.clip(grey, 0, 1).astype(np.float32), absolute),
        segment_micrograph(np.clip(faint, 0, 1).astype(np.float32), absolute),
    )


def test_unknown_or_bad_params():
    with pytest.raises(ConfigError, match="unknown parameters"):
        segmentation_params({"hh": 1})
    with pytest.raises(ConfigError, match="min_area"):
        segmentation_params({"min_area": 0})
    with pytest.raises(ConfigError, match="colour_space"):
        segmentation_params({"colour_space": "hsv"})


def test_schema_defaults_match_code():
    schema = yaml.safe_load((REPO / "scicontrast/schemas/config.schema.yaml").read_text())
    properties = schema["$defs"]["segmentation"]["properties"]["params"]["properties"]
    assert {key: spec["default"] for key, spec in properties.items()} == DEFAULT_PARAMS


def test_grain_table_geometry_and_colour():
    labels = np.ones((60, 80), dtype=np.int32)
    rr, cc = ellipse(30, 40, 6, 20, shape=labels.shape)  # horizontal ellipse
    labels[rr, cc] = 2
    image = np.zeros((60, 80, 3), dtype=np.float32)
    image[labels == 2] = [0.2, 0.4, 0.6]
    table = grain_table(labels, image, pixel_size_um=0.5).set_index("grain")
    assert table["area_px"].sum() == 60 * 80
    ellipse_row = table.loc[2]
    assert ellipse_row["area_px"] == len(rr)
    assert ellipse_row["equivalent_diameter_px"] == pytest.approx(
        2 * np.sqrt(len(rr) / np.pi), rel=1e-6
    )
    assert ellipse_row["equivalent_diameter_um"] == pytest.approx(
        ellipse_row["equivalent_diameter_px"] * 0.5
    )
    assert ellipse_row["area_um2"] == pytest.approx(len(rr) * 0.25)
    assert abs(ellipse_row["orientation_deg"]) < 1  # horizontal major axis
    assert ellipse_row["eccentricity"] > 0.9
    assert ellipse_row[["mean_red", "mean_green", "mean_blue"]].tolist() == pytest.approx(
        [0.2, 0.4, 0.6], abs=1e-5
    )
    assert not ellipse_row["touches_border"] and table.loc[1, "touches_border"]
    unknown = grain_table(labels, image)
    assert unknown["area_um2"].isna().all()


def test_orientation_sign_follows_the_screen():
    labels = np.ones((80, 80), dtype=np.int32)
    # rising to the right on screen (rows decrease as columns increase): +45 degrees
    rr, cc = ellipse(40, 40, 5, 25, rotation=np.pi / 4, shape=labels.shape)
    labels[rr, cc] = 2
    table = grain_table(labels, np.zeros((80, 80), dtype=np.uint8)).set_index("grain")
    assert table.loc[2, "orientation_deg"] == pytest.approx(45, abs=2)
    assert "mean_grey" in table.columns


def test_grain_size_of_a_square_grid():
    side, count = 10, 8
    labels = np.arange(count * count, dtype=np.int32).reshape(count, count) + 1
    labels = np.kron(labels, np.ones((side, side), dtype=np.int32))
    summary = grain_size_summary(labels, pixel_size_um=2.0)
    assert summary["mean_intercept_px"] == pytest.approx(side)
    assert summary["intercept_anisotropy"] == pytest.approx(1.0)
    assert summary["mean_interior_area_px"] == pytest.approx(side * side)
    assert summary["grains_inside"] == 36 and summary["grains_on_border"] == 28
    assert summary["mean_area_px"] == pytest.approx(80 * 80 / (36 + 14))
    assert summary["mean_intercept_um"] == pytest.approx(20.0)
    # ASTM E112: G = -6.643856 log10(0.020 mm) - 3.288
    assert summary["astm_g_intercept"] == pytest.approx(-6.643856 * np.log10(0.02) - 3.288)


def test_intercept_anisotropy_of_elongated_grains():
    labels = np.kron(np.arange(1, 5)[:, None], np.ones((10, 40), dtype=np.int32))  # 4 strips
    summary = grain_size_summary(labels)
    assert summary["mean_intercept_horizontal_px"] == pytest.approx(40)
    assert summary["mean_intercept_vertical_px"] == pytest.approx(10)
    assert summary["intercept_anisotropy"] == pytest.approx(4.0)


def write_micrographs(folder, images: dict[str, np.ndarray]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in images.items():
        skio.imsave(folder / f"{name}.png", image, check_contrast=False)
        paths.append(str(folder / f"{name}.png"))
    return paths


def test_segment_writes_every_output(tmp_path):
    image, truth = quadrants()
    paths = write_micrographs(tmp_path / "in", {"q1": image, "q2": quadrants(seed=3)[0]})
    annotations = tmp_path / "ann"
    annotations.mkdir()
    for name in ("q1", "q2"):
        skio.imsave(
            annotations / f"{name}.png", (truth * 10).astype(np.uint8), check_contrast=False
        )
    out = tmp_path / "seg"
    summary = segment(
        paths,
        out,
        pixel_size_um=0.5,
        annotations={"phase": str(annotations / "{image}.png")},
    )
    assert sorted(summary["images"]) == ["q1", "q2"]
    for kind in ("labels", "overlays", "micrographs"):
        assert sorted(p.name for p in (out / kind).iterdir()) == ["q1.png", "q2.png"]
    labels = load_labels(out, "q1")
    assert labels.shape == truth.shape and labels.max() == 4
    overlay = skio.imread(out / "overlays" / "q1.png")
    assert overlay.shape == (64, 64, 3) and overlay.dtype == np.uint8
    assert (overlay == [255, 0, 255]).all(axis=2).sum() > 64  # magenta boundaries drawn
    assert np.array_equal(skio.imread(out / "micrographs" / "q1.png"), image)
    grains = pd.read_parquet(out / "grains.parquet")
    assert len(grains) == summary["grains"] == 8
    assert sorted(grains["phase"].unique()) == [10, 20, 30, 40]
    assert (grains["phase_purity"] > 0.9).all()
    assert grains["area_um2"].notna().all()
    stored = json.loads((out / "summary.json").read_text())
    assert stored["images"]["q1"]["mean_area_um2"] == pytest.approx(
        stored["images"]["q1"]["mean_area_px"] * 0.25
    )
    assert stored["params"] == DEFAULT_PARAMS


def test_image_without_grains_is_skipped_with_warning(tmp_path):
    paths = write_micrographs(
        tmp_path / "in", {"good": quadrants()[0], "blank": np.full((64, 64, 3), 90, np.uint8)}
    )
    with pytest.warns(UserWarning, match=r"blank.png: no grains found"):
        summary = segment(paths, tmp_path / "seg")
    assert list(summary["images"]) == ["good"]
    assert summary["skipped"][0]["file"].endswith("blank.png")
    assert not (tmp_path / "seg" / "labels" / "blank.png").exists()


def test_no_grains_anywhere_is_an_error_and_writes_nothing(tmp_path):
    paths = write_micrographs(tmp_path / "in", {"blank": np.full((32, 32, 3), 90, np.uint8)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputDataError, match="no grains found in any image"):
            segment(paths, tmp_path / "seg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_corrupt_image_writes_nothing(tmp_path):
    paths = write_micrographs(tmp_path / "in", {"good": quadrants()[0]})
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(InputDataError, match=r"bad\.png"):
        segment([*paths, str(tmp_path / "in" / "bad.png")], tmp_path / "seg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_annotation_of_other_size_is_an_error(tmp_path):
    paths = write_micrographs(tmp_path / "in", {"q": quadrants()[0]})
    skio.imsave(tmp_path / "q_ann.png", np.ones((10, 10), np.uint8), check_contrast=False)
    with pytest.raises(InputDataError, match=r"q_ann\.png: annotation is"):
        segment(paths, tmp_path / "seg", annotations={"a": str(tmp_path / "{image}_ann.png")})
    assert not (tmp_path / "seg").exists()


def test_cli_segment(tmp_path, capsys):
    paths = write_micrographs(tmp_path / "in", {"q": quadrants()[0]})
    out = tmp_path / "seg"
    assert main(["-q", "segment", *paths, "--out", str(out), "--params", '{"h": 2}']) == 0
    assert json.loads((out / "summary.json").read_text())["params"]["h"] == 2
    assert main(["-q", "segment", *paths, "--out", str(out), "--params", '{"hh": 2}']) == 2
    assert "unknown parameters" in capsys.readouterr().err


@pytest.fixture
def blob_segmentation(tmp_path):
    image, truth = blobs()
    paths = write_micrographs(tmp_path / "in", {"b": image})
    annotations = tmp_path / "ann"
    annotations.mkdir()
    skio.imsave(annotations / "b.png", truth.astype(np.uint8), check_contrast=False)
    out = tmp_path / "seg"
    # Noise-free flat discs have a zero median gradient: absolute units suit them.
    segment(paths, out, {"normalise_gradient": False}, annotations={"truth": str(annotations)})
    return out


def test_grains_adapter_items_follow_the_image_contract(blob_segmentation):
    items = GrainsAdapter(segmentation=str(blob_segmentation), size=32, margin=0.1).read()
    assert len(items) == 3  # the background touches the border and is left out
    images, masks = items.arrays["images"], items.arrays["masks"]
    assert images.dtype == np.uint8 and images.shape == (3, 3, 32, 32)
    assert masks.dtype == bool and masks.shape == (3, 32, 32)
    assert items.meta["modality"] == "image" and items.meta["channels"] == 3
    assert items.meta["size"] == 32 and items.meta["payload_columns"] == []
    assert sorted(items.table["truth"]) == [2, 3, 4]
    assert list(items.table["item_id"]) == [f"b:{g}" for g in items.table["grain"]]
    centre = (32 - 1) / 2
    rows, cols = np.mgrid[0:32, 0:32]
    for mask, image in zip(masks, images, strict=True):
        # centred on the grain, fitted inside the disc of radius (1 - margin) * S / 2
        assert rows[mask].mean() == pytest.approx(centre, abs=0.6)
        assert cols[mask].mean() == pytest.approx(centre, abs=0.6)
        radius = np.hypot(rows[mask] - centre, cols[mask] - centre).max()
        assert 0.8 * 14.4 < radius <= 0.9 * 16 + 0.5
        # the grain is one flat colour in the crop (a disc in the blob image)
        # (away from its edge, where bilinear sampling blends in the neighbour)
        inside = image[:, ndimage.binary_erosion(mask, iterations=2)].astype(int)
        assert (inside.max(axis=1) - inside.min(axis=1)).max() <= 2


def test_grains_adapter_fixed_scale_keeps_texture_scale(blob_segmentation):
    items = GrainsAdapter(segmentation=str(blob_segmentation), size=40, scale=1.0).read()
    areas = items.table["area_px"].to_numpy()
    assert np.abs(items.arrays["masks"].sum(axis=(1, 2)) - areas).max() <= 0.05 * areas.max()
    assert (items.table["crop_scale"] == 1.0).all()


def test_grains_adapter_filters(blob_segmentation):
    everything = GrainsAdapter(segmentation=str(blob_segmentation), keep_border_grains=True)
    assert len(everything.read()) == 4
    large = GrainsAdapter(segmentation=str(blob_segmentation), min_area=400).read()
    assert (large.table["area_px"] >= 400).all() and len(large) == 2
    with pytest.raises(InputDataError, match="no grain left"):
        GrainsAdapter(segmentation=str(blob_segmentation), min_area=10**6).read()
    grey = GrainsAdapter(segmentation=str(blob_segmentation), grayscale=True).read()
    assert grey.meta["channels"] == 1 and grey.arrays["images"].shape[1] == 1


def test_grains_adapter_16bit_gives_float(tmp_path):
    image, _ = blobs()
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "b.tif", image.astype(np.uint16) * 257, photometric="rgb")
    segment([str(tmp_path / "in" / "b.tif")], tmp_path / "seg", {"normalise_gradient": False})
    assert (tmp_path / "seg" / "micrographs" / "b.tif").is_file()
    items = GrainsAdapter(segmentation=str(tmp_path / "seg"), size=16).read()
    assert items.arrays["images"].dtype == np.float32
    assert 0 <= items.arrays["images"].min() and items.arrays["images"].max() <= 1


def test_grains_adapter_needs_a_segmentation_folder(tmp_path):
    adapter = GrainsAdapter(segmentation=str(tmp_path))
    assert adapter.input_files() == [tmp_path]
    with pytest.raises(InputDataError, match="not a segmentation folder"):
        adapter.read()
    with pytest.raises(ConfigError, match=r"params\.scale"):
        GrainsAdapter(segmentation="x", scale="big")


def test_workflow_helpers():
    entry = {
        "paths": ["a/x.png", "b/y.png"],
        "pixel_size_um": 0.5,
        "annotations": {"phase": "ann/{image}.png"},
        "params": {"h": 2},
    }
    assert segmentation_inputs(entry) == ["a/x.png", "b/y.png", "ann/x.png", "ann/y.png"]
    assert segmentation_options(entry) == (
        "--params '{\"h\": 2}' --pixel-size-um 0.5 --annotation 'phase=ann/{image}.png'"
    )


@pytest.mark.slow
def test_workflow_wires_demo_segment_and_prepare(tmp_path):
    """Dry run: the grains experiment's prepare step needs the segment and demo steps."""
    config = {
        "demo_data": {"grains": {"out_dir": "results/demo_data/grains", "images": 2}},
        "segmentations": {
            "demo": {
                "paths": [
                    f"results/demo_data/grains/micrographs/micrograph_0{i}.png" for i in (0, 1)
                ],
                "annotations": {
                    "orientation_class": "results/demo_data/grains/classes/{image}.png"
                },
            }
        },
        "experiments": {
            "g": {
                "adapter": {
                    "name": "grains",
                    "params": {"segmentation": "results/segmentations/demo"},
                },
                "pairs": {"name": "dna_views"},
                "encoder": {"name": "dna_cnn"},
            }
        },
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(config_path),
            "-n",
            "results/g/items",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for rule in ("demo_grains", "segment", "prepare"):
        assert f"rule {rule}:" in output or f"\n{rule} " in output, rule
