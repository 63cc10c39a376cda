"""The image reader and the ``image_folder`` adapter."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage import io as skio

from scicontrast.cli import main
from scicontrast.data_adapters.images.folder import ImageFolderAdapter
from scicontrast.data_adapters.images.listing import expand_image_paths
from scicontrast.data_adapters.images.patches import tile_grid
from scicontrast.data_adapters.images.reading import file_ids, read_image_pages
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS


def gradient_image(height: int, width: int, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """A deterministic image whose pixels differ (so crops can be located)."""
    top = np.iinfo(dtype).max
    rows, cols = np.mgrid[0:height, 0:width]
    base = (rows * 7 + cols * 13) % 251 / 250.0
    planes = [base, base[::-1], 1 - base][:channels]
    image = np.rint(np.stack(planes, axis=-1) * top).astype(dtype)
    return image[:, :, 0] if channels == 1 else image


def save(path, array) -> str:
    skio.imsave(path, array, check_contrast=False)
    return str(path)


def test_registered():
    assert ADAPTERS.get("image_folder") is ImageFolderAdapter


def test_png_grey_and_rgb_read_as_uint8_crops(tmp_path):
    grey = gradient_image(32, 32, channels=1)
    rgb = gradient_image(32, 32)
    save(tmp_path / "a.png", grey)
    save(tmp_path / "b.png", rgb)
    items = ImageFolderAdapter(paths=[str(tmp_path)], size=32).read()
    images = items.arrays["images"]
    assert images.dtype == np.uint8 and images.shape == (2, 3, 32, 32)
    # grey repeated over three channels when the set mixes grey and RGB
    assert np.array_equal(images[0], np.repeat(grey[None], 3, axis=0))
    assert np.array_equal(images[1], rgb.transpose(2, 0, 1))
    assert list(items.table["item_id"]) == ["a", "b"]
    assert items.meta["modality"] == "image"
    assert items.meta["channels"] == 3 and items.meta["size"] == 32
    assert items.meta["payload_columns"] == []
    assert "masks" not in items.arrays


def test_all_grey_gives_one_channel_and_grayscale_converts(tmp_path):
    save(tmp_path / "a.png", gradient_image(16, 16, channels=1))
    items = ImageFolderAdapter(paths=[str(tmp_path / "a.png")], size=16).read()
    assert items.arrays["images"].shape == (1, 1, 16, 16)
    save(tmp_path / "b.png", gradient_image(16, 16))
    grey = ImageFolderAdapter(paths=[str(tmp_path / "b.png")], size=16, grayscale=True).read()
    assert grey.meta["channels"] == 1 and grey.arrays["images"].shape == (1, 1, 16, 16)
    forced = ImageFolderAdapter(paths=[str(tmp_path / "a.png")], size=16, grayscale=False).read()
    assert forced.meta["channels"] == 3


def test_jpeg(tmp_path):
    save(tmp_path / "a.jpg", gradient_image(24, 24))
    items = ImageFolderAdapter(paths=[str(tmp_path / "*.jpg")], size=24).read()
    assert items.arrays["images"].shape == (1, 3, 24, 24)
    # lossy, but close to the original
    original = gradient_image(24, 24).transpose(2, 0, 1).astype(float)
    assert np.abs(items.arrays["images"][0] - original).mean() < 20


def test_16bit_tiff_scaled_to_float(tmp_path):
    image = gradient_image(20, 20, channels=1, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", image)
    items = ImageFolderAdapter(paths=[str(tmp_path / "a.tif")], size=20, resize="none").read()
    images = items.arrays["images"]
    assert images.dtype == np.float32 and images.shape == (1, 1, 20, 20)
    np.testing.assert_allclose(images[0, 0], image / 65535.0, atol=1e-6)


def test_multipage_tiff_gives_one_item_per_page(tmp_path):
    stack = np.stack([np.full((10, 10), 10 * k, dtype=np.uint8) for k in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    items = ImageFolderAdapter(paths=[str(tmp_path / "stack.tif")], size=10).read()
    assert list(items.table["item_id"]) == ["stack_page0", "stack_page1", "stack_page2"]
    assert list(items.table["page"]) == [0, 1, 2]
    assert [int(im.max()) for im in items.arrays["images"]] == [0, 10, 20]


def test_rgb_tiff_planar_and_interleaved_agree(tmp_path):
    rgb = gradient_image(12, 12)
    tifffile.imwrite(tmp_path / "a.tif", rgb, photometric="rgb")
    tifffile.imwrite(
        tmp_path / "b.tif", rgb.transpose(2, 0, 1), photometric="rgb", planarconfig="separate"
    )
    pages_a = read_image_pages(tmp_path / "a.tif")
    pages_b = read_image_pages(tmp_path / "b.tif")
    assert np.array_equal(pages_a[0], rgb) and np.array_equal(pages_b[0], rgb)


def test_resize_policies(tmp_path):
    image = gradient_image(40, 80)
    path = save(tmp_path / "wide.png", image)
    none = ImageFolderAdapter(paths=[path], size=20, resize="none").read()
    # unscaled centre crop: rows 10..30, cols 30..50
    assert np.array_equal(none.arrays["images"][0], image[10:30, 30:50].transpose(2, 0, 1))
    crop = ImageFolderAdapter(paths=[path], size=20, resize="crop").read()
    assert crop.arrays["images"].shape == (1, 3, 20, 20)
    assert crop.table["scale"].iloc[0] == pytest.approx(0.5)
    fit = ImageFolderAdapter(paths=[path], size=20, resize="fit").read()
    mask = fit.arrays["masks"][0]
    # the 80 x 40 image fits as 20 x 10, centred: rows 5..15 are image, the rest padding
    assert mask[5:15].all() and not mask[:5].any() and not mask[15:].any()
    assert (fit.arrays["images"][0][:, ~mask] == 0).all()


def test_resize_none_smaller_than_size_names_file(tmp_path):
    path = save(tmp_path / "small.png", gradient_image(10, 10))
    with pytest.raises(InputDataError, match=r"small\.png"):
        ImageFolderAdapter(paths=[path], size=20, resize="none").read()


def test_tiles_are_unscaled_and_non_overlapping(tmp_path):
    image = gradient_image(50, 70)
    path = save(tmp_path / "t.png", image)
    items = ImageFolderAdapter(paths=[path], size=20, tiles=100).read()
    # grid of 2 x 3 tiles, centred: top margin 5, left margin 5
    assert len(items) == 6
    assert list(items.table["item_id"][:2]) == ["t:r0c0", "t:r0c1"]
    for array, row, col in zip(
        items.arrays["images"], items.table["tile_row"], items.table["tile_col"], strict=True
    ):
        top, left = 5 + 20 * row, 5 + 20 * col
        assert np.array_equal(array, image[top : top + 20, left : left + 20].transpose(2, 0, 1))
    kept = ImageFolderAdapter(paths=[path], size=20, tiles=2).read()
    assert list(kept.table["item_id"]) == ["t:r0c0", "t:r1c2"]


def test_tile_grid_spreads_kept_tiles():
    grid = tile_grid(100, 100, 10, keep=3)
    # tiles 0, 50 and 99 of the 100 in raster order
    assert [(r, c) for r, c, _, _ in grid] == [(0, 0), (5, 0), (9, 9)]


def test_labels_table_matches_relative_paths_names_and_stems(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("x1", "x2", "x3"):
        save(tmp_path / "images" / f"{name}.png", gradient_image(8, 8))
    pd.DataFrame({"file": ["images/x1.png", "x2.png", "x3"], "label": ["a", "b", "c"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    adapter = ImageFolderAdapter(
        paths=[str(tmp_path / "images")], size=8, labels=str(tmp_path / "labels.csv")
    )
    items = adapter.read()
    assert list(items.table["label"]) == ["a", "b", "c"]
    assert "label" in items.meta["metadata_columns"]
    assert tmp_path / "labels.csv" in adapter.input_files()


def test_labels_rows_without_file_warn_and_files_without_row_fail(tmp_path):
    save(tmp_path / "x1.png", gradient_image(8, 8))
    save(tmp_path / "x2.png", gradient_image(8, 8))
    table = tmp_path / "labels.tsv"
    pd.DataFrame({"file": ["x1.png", "ghost.png"], "label": ["a", "z"]}).to_csv(
        table, sep="\t", index=False
    )
    with pytest.raises(InputDataError, match=r"labels.tsv: no row for image file .*x2.png"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ImageFolderAdapter(paths=[str(tmp_path)], size=8, labels=str(table)).read()
    with pytest.warns(UserWarning, match=r"labels.tsv: 1 rows name no input file .*ghost.png"):
        items = ImageFolderAdapter(
            paths=[str(tmp_path)], size=8, labels=str(table), labels_missing="allow"
        ).read()
    assert items.table["label"].tolist()[0] == "a" and pd.isna(items.table["label"].iloc[1])


def test_labels_table_two_rows_for_one_file(tmp_path):
    save(tmp_path / "x1.png", gradient_image(8, 8))
    table = tmp_path / "labels.csv"
    pd.DataFrame({"file": ["x1.png", "x1"], "label": ["a", "b"]}).to_csv(table, index=False)
    with pytest.raises(InputDataError, match="rows 1 and 2 both name file"):
        ImageFolderAdapter(paths=[str(tmp_path)], size=8, labels=str(table)).read()


def test_label_from_filename_and_pixel_size(tmp_path):
    save(tmp_path / "crazing_1.png", gradient_image(8, 8))
    save(tmp_path / "scratches_2.png", gradient_image(8, 8))
    items = ImageFolderAdapter(
        paths=[str(tmp_path / "*.png")],
        size=8,
        label_from_filename=r"(?P<defect>[a-z]+)_\d+\.png$",
        pixel_size_um=0.25,
    ).read()
    assert list(items.table["defect"]) == ["crazing", "scratches"]
    assert items.meta["pixel_size_um"] == 0.25
    with pytest.raises(InputDataError, match="does not match label_from_filename"):
        ImageFolderAdapter(
            paths=[str(tmp_path / "*.png")], size=8, label_from_filename=r"(?P<x>zzz)"
        ).read()


def test_pixel_size_from_labels_table(tmp_path):
    save(tmp_path / "a.png", gradient_image(8, 8))
    table = tmp_path / "meta.csv"
    pd.DataFrame({"file": ["a.png"], "pixel_size_um": [0.4]}).to_csv(table, index=False)
    items = ImageFolderAdapter(paths=[str(tmp_path)], size=8, labels=str(table)).read()
    assert items.meta["pixel_size_um"] == pytest.approx(0.4)


def test_file_ids_disambiguate_equal_stems(tmp_path):
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "y.png"]
    ids = file_ids(paths)
    assert ids[paths[0]] == "a__x" and ids[paths[1]] == "b__x" and ids[paths[2]] == "y"


def test_expand_paths_errors(tmp_path):
    with pytest.raises(InputDataError, match="matches no image file"):
        expand_image_paths([str(tmp_path / "*.png")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputDataError, match="folder holds no image file"):
        expand_image_paths([str(tmp_path)])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty file"),
        ("garbage.png", b"this is not a PNG file at all", "cannot read image"),
        ("garbage.tif", b"II*\x00garbage", "garbage.tif"),
    ],
)
def test_bad_files_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=message) as error:
        ImageFolderAdapter(paths=[str(path)], size=8).read()
    assert name in str(error.value)


@pytest.mark.parametrize("suffix", ["png", "jpg", "tif"])
def test_truncated_files_name_the_file(tmp_path, suffix):
    full = tmp_path / f"full.{suffix}"
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, size=(3, 64, 64), dtype=np.uint8)
    if suffix == "tif":
        tifffile.imwrite(full, noisy, photometric="minisblack")
    else:
        save(full, noisy[0])
    data = full.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match=f"cut.{suffix}"):
        ImageFolderAdapter(paths=[str(cut)], size=8).read()


def test_image_without_pixels(tmp_path):
    path = tmp_path / "zero.tif"
    tifffile.imwrite(path, np.zeros((0, 5), dtype=np.uint8))
    with pytest.raises(InputDataError, match=r"zero\.tif"):
        ImageFolderAdapter(paths=[str(path)], size=8).read()


def test_a_one_pixel_image_is_refused_not_upscaled(tmp_path):
    path = save(tmp_path / "dot.png", np.full((1, 1), 7, dtype=np.uint8))
    with pytest.raises(InputDataError, match=r"dot\.png: image is 1 x 1 pixels, under 8"):
        ImageFolderAdapter(paths=[path], size=64).read()


def test_a_five_channel_tiff_is_refused_naming_the_file(tmp_path):
    five = np.random.default_rng(0).integers(0, 255, (32, 32, 5), dtype=np.uint8)
    # Without a photometric tag tifffile writes the channel axis as 32 pages of 32 x 5.
    tifffile.imwrite(tmp_path / "rows.tif", five)
    # As samples per pixel, planar or interleaved.
    tifffile.imwrite(tmp_path / "planar.tif", five.transpose(2, 0, 1), planarconfig="separate")
    tifffile.imwrite(tmp_path / "contig.tif", five, photometric="minisblack", planarconfig="contig")
    # As an ImageJ hyperstack: one channel per page.
    tifffile.imwrite(
        tmp_path / "imagej.tif", five.transpose(2, 0, 1), imagej=True, metadata={"axes": "CYX"}
    )
    for name, message in (
        ("rows.tif", r"rows\.tif \(page 0\): image is 32 x 5 pixels"),
        ("planar.tif", r"planar\.tif: unsupported image shape \(32, 32, 5\)"),
        ("contig.tif", r"contig\.tif: unsupported image shape \(32, 32, 5\)"),
        ("imagej.tif", r"imagej\.tif: TIFF holds a 5-channel image \(axes CYX"),
    ):
        with pytest.raises(InputDataError, match=message):
            ImageFolderAdapter(paths=[str(tmp_path / name)], size=16).read()


def test_a_grey_stack_of_pages_is_still_read_page_by_page(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (5, 32, 32), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    assert len(ImageFolderAdapter(paths=[str(tmp_path / "stack.tif")], size=16).read()) == 5


def test_upscaling_a_small_image_warns_once_naming_the_first_file(tmp_path):
    save(tmp_path / "a.png", gradient_image(10, 12))
    save(tmp_path / "b.png", gradient_image(10, 10))
    save(tmp_path / "c.png", gradient_image(30, 30))
    with pytest.warns(UserWarning, match=r"a\.png: a 10 x 12 image scaled up 3x .*and 1 more"):
        ImageFolderAdapter(paths=[str(tmp_path)], size=30).read()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageFolderAdapter(paths=[str(tmp_path)], size=20).read()


def test_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match=r"params\.resize"):
        ImageFolderAdapter(paths=["a.png"], resize="stretch")
    with pytest.raises(ConfigError, match=r"params\.size"):
        ImageFolderAdapter(paths=["a.png"], size=0)
    with pytest.raises(ConfigError, match=r"params\.pixel_size_um"):
        ImageFolderAdapter(paths=["a.png"], pixel_size_um=-1)


def test_prepare_leaves_no_output_on_bad_input(tmp_path):
    good = save(tmp_path / "good.png", gradient_image(8, 8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text(
        "experiments:\n  e:\n    adapter:\n      name: image_folder\n      params:\n"
        f"        paths: [{good}, {bad}]\n        size: 8\n"
        "    pairs: {name: dna_views}\n    encoder: {name: dna_cnn}\n"
    )
    out = tmp_path / "items"
    assert main(["-q", "prepare", "--config", str(config), "--out", str(out)]) == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".items")] == []
