"""Micrographs at their own scale: the patch layout, its views, patch pooling, scale checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from skimage import io as skio
from skimage.filters import gaussian
from skimage.transform import resize
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.images.folder import ImageFolderAdapter
from scicontrast.data_adapters.images.patches import MAX_UPSAMPLE, PatchBag, tile_grid
from scicontrast.data_adapters.images.rotations import RotationViews
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.models.image_cnn import ImageCNN


def texture(height: int, width: int, grain: float, rng: np.random.Generator) -> np.ndarray:
    """A random field with correlation length ``grain`` pixels (Gaussian-filtered noise,
    contrast-normalised) in [0, 1]: band-limited, so a resampling round trip keeps it."""
    field = gaussian(rng.standard_normal((height, width)), sigma=grain)
    return np.clip(0.5 + 0.15 * (field - field.mean()) / field.std(), 0, 1)


def save(path: Path, image: np.ndarray) -> None:
    skio.imsave(path, np.rint(image * 255).astype(np.uint8), check_contrast=False)


def write_rescaled_set(
    folder: Path, images: dict[str, np.ndarray], factors: tuple[int, ...]
) -> pd.DataFrame:
    """Each image as given and upsampled ``f`` times (bilinear), with its pixel size."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, image in images.items():
        for factor in factors:
            file = f"{name}_x{factor}.png"
            shape = (image.shape[0] * factor, image.shape[1] * factor)
            save(folder / file, resize(image, shape, order=1) if factor > 1 else image)
            rows.append(
                {"file": file, "image": name, "factor": factor, "pixel_size_um": 1 / factor}
            )
    table = pd.DataFrame(rows)
    table[["file", "pixel_size_um"]].to_csv(folder / "labels.csv", index=False)
    return table


def embed(items: Items, builder: RotationViews, encoder: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        bags = builder.embedding_batches(items, 64)
        return torch.cat([encoder(bag) for bag in bags]).numpy()


def untrained_encoder() -> ImageCNN:
    torch.manual_seed(0)
    return ImageCNN(in_channels=1, channels=[8, 16, 32], embedding_dim=None).eval()


def patch_items(folder: Path, target: float | None, patch_size: int = 48) -> Items:
    adapter = ImageFolderAdapter(
        paths=str(folder),
        patch_size=patch_size,
        target_pixel_size_um=target,
        labels=str(folder / "labels.csv"),
    )
    return adapter.read()


def scale_check(folder: Path, classes: dict[str, int]) -> dict[str, float]:
    """How the 2x and 3x copies of ``folder`` (:func:`write_rescaled_set`) embed, with the
    pixel size given (``scale``) and without (``native``, the control).

    ``<key>_distance``: mean distance of a copy to its original over the mean distance
    between two originals (standardised embeddings of an untrained encoder);
    ``<key>_accuracy_x<f>``: cross-validated probe accuracy on the ``f``-times copies alone
    (same folds for every ``f``), ``_x1`` being the originals'; ``<key>_transfer_x<f>``: the
    accuracy on them of a probe fitted on all originals.
    """
    scores = {}
    for key, target in (("scale", 1.0), ("native", None)):
        items = patch_items(folder, target)
        vectors = embed(items, RotationViews(out_size=32), untrained_encoder())
        vectors = (vectors - vectors.mean(0)) / (vectors.std(0) + 1e-6)
        parts = items.table["item_id"].str.rsplit("_x", n=1)
        name = parts.str[0].to_numpy()
        factor = parts.str[1].astype(int).to_numpy()
        originals = {n: i for i, n in enumerate(name) if factor[i] == 1}
        own = np.array([originals[n] for n in name])
        copies = factor > 1
        to_own = np.linalg.norm(vectors[copies] - vectors[own[copies]], axis=1).mean()
        first = vectors[factor == 1]
        between = np.linalg.norm(first[:, None] - first[None], axis=-1)
        scores[f"{key}_distance"] = to_own / between[~np.eye(len(first), dtype=bool)].mean()
        labels = np.array([classes[n] for n in name])
        folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
        on_originals = LogisticRegression(max_iter=5000).fit(first, labels[factor == 1])
        for f in (1, 2, 3):
            rows = factor == f
            predicted = cross_val_predict(
                LogisticRegression(max_iter=5000), vectors[rows], labels[rows], cv=folds
            )
            scores[f"{key}_accuracy_x{f}"] = (predicted == labels[rows]).mean()
            transfer = on_originals.predict(vectors[rows]) == labels[rows]
            scores[f"{key}_transfer_x{f}"] = transfer.mean()
    return scores


def test_rescaled_textures_embed_alike_when_the_pixel_size_is_given(tmp_path):
    rng = np.random.default_rng(0)
    images, classes = {}, {}
    for label, grain in enumerate((1.0, 2.0, 4.0)):
        for k in range(6):
            images[f"c{label}n{k}"] = texture(96, 128, grain, rng)
            classes[f"c{label}n{k}"] = label
    write_rescaled_set(tmp_path, images, (1, 2, 3))
    scores = scale_check(tmp_path, classes)
    # With the pixel size, a 2x or 3x copy embeds close to its original (measured 0.21 of
    # the distance between two originals); without it, the control, as far as another
    # image (0.94). A probe fitted on the originals then classifies every copy, while the
    # control's copies look like the coarser-grained classes.
    assert scores["scale_distance"] < 0.3
    assert scores["native_distance"] > 3 * scores["scale_distance"]
    for f in (2, 3):
        assert scores[f"scale_transfer_x{f}"] == 1.0
        assert scores[f"scale_accuracy_x{f}"] == scores["scale_accuracy_x1"]
        assert scores[f"native_transfer_x{f}"] < 0.7


@pytest.mark.real_data
@pytest.mark.slow
def test_rescaled_neu_images_embed_alike_when_the_pixel_size_is_given(tmp_path, shared_data):
    folder = shared_data / "neu_surface_defects"
    chosen = pd.read_csv(folder / "labels.csv").groupby("label").head(10)
    names = sorted(chosen["label"].unique())
    images, classes = {}, {}
    for file, label in zip(chosen["file"], chosen["label"], strict=True):
        pixels = skio.imread(folder / file)
        grey = pixels[..., 0] if pixels.ndim == 3 else pixels
        images[Path(file).stem] = grey / 255.0
        classes[Path(file).stem] = names.index(label)
    write_rescaled_set(tmp_path, images, (1, 2, 3))
    scores = scale_check(tmp_path, classes)
    # Measured: 0.044 with the pixel size, 0.174 without; probe accuracy 73.3 % at 1x, 2x
    # and 3x with it, 75.0, 61.7 and 58.3 % without (60 images, untrained encoder).
    assert scores["scale_distance"] < 0.1
    assert scores["native_distance"] > 2 * scores["scale_distance"]
    for f in (2, 3):
        assert abs(scores[f"scale_accuracy_x{f}"] - scores["scale_accuracy_x1"]) <= 0.05
        assert scores[f"scale_transfer_x{f}"] >= scores[f"native_transfer_x{f}"]


def test_patch_layout_keeps_images_whole_at_native_scale(tmp_path):
    rng = np.random.default_rng(1)
    image = texture(50, 70, 6.0, rng)
    save(tmp_path / "a.png", image)
    save(tmp_path / "b.png", texture(40, 90, 6.0, rng))
    items = ImageFolderAdapter(paths=str(tmp_path), patch_size=32).read()
    assert items.meta["layout"] == "patches" and items.meta["size"] == 32
    assert "images" not in items.arrays
    assert items.arrays["extent"].tolist() == [[0, 50, 70], [3500, 40, 90]]
    pixels = items.extras["pixels"]
    assert pixels.dtype == np.uint8 and len(pixels) == 50 * 70 + 40 * 90
    expected = np.rint(image * 255).astype(np.uint8)
    assert np.array_equal(pixels[:3500].reshape(50, 70), expected)
    assert items.table["scale"].tolist() == [1.0, 1.0]


def test_patch_store_survives_save_and_load(tmp_path):
    save(tmp_path / "a.png", texture(40, 40, 6.0, np.random.default_rng(2)))
    items = ImageFolderAdapter(paths=str(tmp_path / "a.png"), patch_size=32).read()
    items.save(tmp_path / "items")
    loaded = Items.load(tmp_path / "items")
    assert np.array_equal(loaded.extras["pixels"], items.extras["pixels"])
    assert np.array_equal(loaded.arrays["extent"], items.arrays["extent"])


def test_training_views_are_windows_of_the_image_at_random_places(tmp_path):
    rng = np.random.default_rng(3)
    image = texture(60, 80, 7.0, rng)
    save(tmp_path / "a.png", image)
    items = ImageFolderAdapter(paths=str(tmp_path / "a.png"), patch_size=24).read()
    builder = RotationViews(angles="c4", jitter=False)
    builder.bind(items)
    stored = torch.from_numpy(np.rint(image * 255) / 255).float()
    disc = builder._disc
    seen = set()
    for seed in range(20):
        view = builder.make_view(0, "rotated", np.random.default_rng(seed))
        # undo the quarter turn and find the window the view was cut from
        matches = [
            (top, left, k)
            for k in range(4)
            for top in range(60 - 24 + 1)
            for left in range(80 - 24 + 1)
            if torch.allclose(
                torch.rot90(view[0], -k), stored[top : top + 24, left : left + 24] * disc, atol=1e-5
            )
        ]
        assert matches, f"view {seed} is no window of the image"
        seen.add(matches[0][:2])
    assert len(seen) > 10  # the views come from many places
    centred = builder.canonical(0)[0]
    assert torch.allclose(centred, stored[18:42, 28:52] * disc, atol=1e-6)


def test_symmetry_views_keep_the_centred_window(tmp_path):
    save(tmp_path / "a.png", texture(60, 80, 7.0, np.random.default_rng(4)))
    items = ImageFolderAdapter(paths=str(tmp_path / "a.png"), patch_size=24).read()
    builder = RotationViews(angles="c4", jitter=False)
    assert builder.symmetry_only() is None  # unbound: nothing but rotations
    builder.bind(items)
    name, symmetry = builder.symmetry_only()
    symmetry.bind(items)
    canonical = symmetry.canonical(0)
    for seed in range(8):
        view = symmetry.make_view(0, "rotated", np.random.default_rng(seed))
        assert any(
            torch.allclose(torch.rot90(view, -k, dims=(-2, -1)), canonical) for k in range(4)
        )
    assert name == "rotation"


def test_embedding_pools_the_patch_grid_per_image(tmp_path):
    rng = np.random.default_rng(5)
    save(tmp_path / "a.png", texture(64, 96, 6.0, rng))
    save(tmp_path / "b.png", texture(100, 64, 9.0, rng))
    items = ImageFolderAdapter(paths=str(tmp_path), patch_size=32).read()
    builder = RotationViews(out_size=32, max_patches=4)
    bags = list(builder.embedding_batches(items, batch_size=5))
    # 2 x 3 grid for a (4 kept), 3 x 2 for b (4 kept); a bag closes after 5 or more patches
    assert [bag.images for bag in bags] == [2]
    assert bags[0].owner.tolist() == [0] * 4 + [1] * 4
    kept = [(r, c) for r, c, _, _ in tile_grid(64, 96, 32, 4)]
    assert kept == [(0, 0), (0, 2), (1, 0), (1, 2)]
    encoder = untrained_encoder()
    with torch.no_grad():
        pooled = encoder(bags[0])
        each = encoder(bags[0].patches)
    assert pooled.shape == (2, encoder.embedding_dim)
    assert torch.allclose(pooled[0], each[:4].mean(0), atol=1e-6)
    assert torch.allclose(pooled[1], each[4:].mean(0), atol=1e-6)
    assert len(list(builder.embedding_batches(items, batch_size=1))) == 2


def test_patch_bag_pool_is_the_mean_per_owner():
    embeddings = torch.arange(12.0).reshape(6, 2)
    bag = PatchBag(torch.zeros(6, 1, 4, 4), torch.tensor([0, 0, 1, 2, 2, 2]), 3)
    expected = torch.tensor([[1.0, 2.0], [4.0, 5.0], [8.0, 9.0]])
    assert torch.equal(bag.pool(embeddings), expected)


def test_a_scale_that_contradicts_the_image_names_the_file(tmp_path):
    save(tmp_path / "small.png", texture(60, 60, 6.0, np.random.default_rng(6)))
    pd.DataFrame({"file": ["small.png"], "pixel_size_um": [0.25]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    # 60 pixels of 0.25 um at 1 um per pixel: 15 x 15, smaller than a 32-pixel patch
    with pytest.raises(InputDataError, match=r"small\.png.*15 x 15.*32 x 32 patch"):
        patch_items(tmp_path, 1.0, patch_size=32)
    # a pixel size in nanometres read as micrometres: a 250x upsampling
    with pytest.raises(InputDataError, match=rf"small\.png.*250x \(at most {MAX_UPSAMPLE:g}x\)"):
        ImageFolderAdapter(
            paths=str(tmp_path / "small.png"),
            patch_size=32,
            pixel_size_um=250.0,
            target_pixel_size_um=1.0,
        ).read()
    with pytest.raises(InputDataError, match=r"small\.png.*pixel size is unknown"):
        ImageFolderAdapter(
            paths=str(tmp_path / "small.png"), patch_size=32, target_pixel_size_um=1.0
        ).read()
    with pytest.raises(InputDataError, match=r"small\.png.*60 x 60 pixels, smaller than one 64"):
        ImageFolderAdapter(paths=str(tmp_path / "small.png"), patch_size=64).read()


def test_a_bad_pixel_size_in_the_labels_table_names_row_and_file(tmp_path):
    save(tmp_path / "a.png", texture(60, 60, 6.0, np.random.default_rng(7)))
    pd.DataFrame({"file": ["a.png"], "pixel_size_um": ["-1"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with pytest.raises(InputDataError, match=r"labels\.csv: row 1 \(.*a\.png\): pixel_size_um"):
        patch_items(tmp_path, 1.0)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"patch_size": 0}, "patch_size"),
        ({"patch_size": 32, "tiles": 2}, "tiles"),
        ({"target_pixel_size_um": 1.0}, "target_pixel_size_um"),
        ({"patch_size": 32, "target_pixel_size_um": -1.0}, "target_pixel_size_um"),
    ],
)
def test_bad_patch_params_are_config_errors(params, key):
    with pytest.raises(ConfigError, match=key):
        ImageFolderAdapter(paths=["x.png"], **params)


def test_bad_max_patches_is_a_config_error():
    with pytest.raises(ConfigError, match="max_patches"):
        RotationViews(max_patches=0)
