"""The rotation pair builder: angles, masks, determinism and bad parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from scicontrast.data_adapters.base import Items, ViewDataset
from scicontrast.data_adapters.images.rotations import RotationViews
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.geometry import disc_mask, rotate
from scicontrast.registry import PAIR_BUILDERS


def image_items(
    n: int = 4, channels: int = 1, size: int = 16, masks: bool = False, dtype=np.uint8
) -> Items:
    rng = np.random.default_rng(0)
    images = rng.random((n, channels, size, size), dtype=np.float32)
    if dtype == np.uint8:
        images = (images * 255).round().astype(np.uint8)
    arrays = {"images": images}
    if masks:
        # An off-centre square "grain": not symmetric under 90-degree rotation about the
        # centre, so a mask that is not rotated along would show.
        grain = np.zeros((n, size, size), dtype=bool)
        grain[:, 2 : size // 2 + 2, 3 : size // 2 + 4] = True
        arrays["masks"] = grain
    table = pd.DataFrame({"item_id": [f"img{i}" for i in range(n)]})
    meta = {
        "modality": "image",
        "channels": channels,
        "size": size,
        "pixel_size_um": None,
        "payload_columns": [],
    }
    return Items(table=table, meta=meta, arrays=arrays)


def bound(items: Items, **params) -> RotationViews:
    builder = RotationViews(**params)
    builder.bind(items)
    return builder


def as_float(items: Items, index: int) -> torch.Tensor:
    images = torch.from_numpy(items.arrays["images"][index]).float()
    return images / 255 if items.arrays["images"].dtype == np.uint8 else images


def test_registered_under_its_name():
    assert PAIR_BUILDERS.get("rotations") is RotationViews


def test_pairs_table_has_one_group_per_item_with_all_views():
    items = image_items(n=3)
    pairs = RotationViews(views=3).build(items)
    assert list(pairs.columns) == ["group_id", "item_id", "view"]
    assert pairs["group_id"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert pairs["item_id"].tolist() == ["img0"] * 3 + ["img1"] * 3 + ["img2"] * 3
    assert set(pairs["view"]) == {"rotated"}


def test_canonical_view_is_the_image_inside_the_disc():
    items = image_items(channels=3, dtype=np.float32)
    builder = bound(items)
    view = builder.canonical(1)
    disc = disc_mask(16)
    assert view.shape == (3, 16, 16) and view.dtype == torch.float32
    assert torch.equal(view[:, disc], as_float(items, 1)[:, disc])
    assert (view[:, ~disc] == 0).all()


def test_rotation_by_zero_gives_the_canonical_view():
    items = image_items()
    builder = bound(items, out_size=10)
    assert torch.allclose(builder.render(2, angle=0.0), builder.canonical(2), atol=1e-6)
    assert torch.allclose(builder.render(2, angle=360.0), builder.canonical(2), atol=1e-5)


@pytest.mark.parametrize("angles", ["continuous", "c4", "c8"])
def test_every_view_is_zero_outside_the_disc(angles):
    items = image_items(n=2, size=20)
    builder = bound(items, angles=angles, flips=True, out_size=14)
    rng = np.random.default_rng(3)
    outside = ~disc_mask(14)
    for _ in range(10):
        view = builder.make_view(0, "rotated", rng)
        assert view.shape == (1, 14, 14)
        assert (view[:, outside] == 0).all()
        assert view.min() >= 0 and view.max() <= 1


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_by_multiples_of_90_degrees_matches_rot90(k):
    items = image_items(channels=3)
    builder = bound(items, jitter=False)
    disc = disc_mask(16)
    expected = torch.rot90(as_float(items, 0), k, dims=(-2, -1))
    view = builder.render(0, angle=90.0 * k)
    assert torch.allclose(view[:, disc], expected[:, disc], atol=1e-5)


def test_rotation_by_45_degrees_is_close_to_skimage():
    # An independent reference: scikit-image rotates counter-clockwise about the same
    # centre; bilinear (order 1) should agree up to interpolation error on a smooth image.
    from skimage.transform import rotate as sk_rotate

    size = 32
    y, x = np.mgrid[0:size, 0:size] / size
    smooth = (0.5 + 0.4 * np.sin(4 * x + 1) * np.cos(3 * y)).astype(np.float32)
    items = image_items(n=1, size=size, dtype=np.float32)
    items.arrays["images"][0, 0] = smooth
    builder = bound(items, jitter=False)
    ours = builder.render(0, angle=45.0)[0].numpy()
    reference = sk_rotate(smooth, 45.0, order=1, mode="edge")
    inside = disc_mask(size).numpy()
    assert np.abs(ours - reference)[inside].max() < 0.02


def test_flip_mirrors_before_rotating():
    items = image_items(channels=1)
    builder = bound(items, jitter=False)
    disc = disc_mask(16)
    expected = torch.rot90(as_float(items, 0).flip(-1), 1, dims=(-2, -1))
    flipped = builder.render(0, angle=90.0, flip=True)
    assert torch.allclose(flipped[:, disc], expected[:, disc], atol=1e-5)


def test_rotate_batches_views_and_crops_the_centre():
    images = torch.rand(3, 2, 12, 12)
    rotated = rotate(images, torch.tensor([0.0, 90.0, 180.0]), out_size=8)
    assert rotated.shape == (3, 2, 8, 8)
    assert torch.allclose(rotated[0], images[0, :, 2:10, 2:10], atol=1e-6)
    assert torch.allclose(rotated[2], images[2].flip(-1).flip(-2)[:, 2:10, 2:10], atol=1e-5)


def test_shift_moves_the_crop_and_the_rotation_centre():
    items = image_items(size=20)
    builder = bound(items, out_size=12, max_shift=3, jitter=False)
    disc = disc_mask(12)
    crop = as_float(items, 0)[:, 4 - 1 : 16 - 1, 4 + 2 : 16 + 2]
    moved = builder.render(0, shift=(2, -1))
    assert torch.allclose(moved[:, disc], crop[:, disc], atol=1e-6)
    turned = builder.render(0, angle=90.0, shift=(2, -1))
    expected = torch.rot90(crop, 1, dims=(-2, -1))
    assert torch.allclose(turned[:, disc], expected[:, disc], atol=1e-5)


def test_random_shifts_stay_within_max_shift():
    items = image_items(n=1, size=20)
    items.arrays["images"][:] = 0
    items.arrays["images"][0, 0, 10, 10] = 255  # one bright pixel just off the centre
    builder = bound(items, angles="c4", out_size=12, max_shift=2, jitter=False)
    rng = np.random.default_rng(0)
    positions = set()
    for _ in range(60):
        view = builder.make_view(0, "rotated", rng)[0]
        row, col = divmod(int(view.argmax()), 12)
        positions.add((row, col))
    # The pixel sits at (6, 6) of the unshifted crop, offset (0.5, 0.5) from its centre;
    # quarter turns and shifts of up to 2 pixels keep it within 2.5 + 2 of the centre.
    assert all(abs(r - 5.5) <= 2.5 and abs(c - 5.5) <= 2.5 for r, c in positions)
    assert len(positions) > 8


def test_same_generator_state_gives_the_same_view():
    items = image_items(channels=3)
    builder = bound(items, flips=True, jitter={"brightness": 0.1, "contrast": 0.1, "colour": 0.1})
    first = builder.make_view(1, "rotated", np.random.default_rng([7, 0, 1]))
    again = builder.make_view(1, "rotated", np.random.default_rng([7, 0, 1]))
    assert torch.equal(first, again)


def test_views_change_with_the_epoch_and_differ_within_a_group():
    items = image_items()
    builder = RotationViews(jitter=False)
    dataset = ViewDataset(items, builder.build(items), builder, seed=0)
    dataset.set_epoch(0)
    epoch0, _ = dataset[0]
    dataset.set_epoch(1)
    epoch1, _ = dataset[0]
    assert epoch0.shape == (2, 1, 16, 16)
    assert not torch.allclose(epoch0[0], epoch1[0])
    assert not torch.allclose(epoch0[0], epoch0[1])


def test_c4_angles_are_exact_quarter_turns():
    items = image_items()
    builder = bound(items, angles="c4", jitter=False)
    disc = disc_mask(16)
    turns = [torch.rot90(as_float(items, 0), k, dims=(-2, -1))[:, disc] for k in range(4)]
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        view = builder.make_view(0, "rotated", rng)[:, disc]
        matches = [k for k, t in enumerate(turns) if torch.allclose(view, t, atol=1e-5)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}


def test_grain_mask_is_rotated_with_the_image_and_applied():
    items = image_items(masks=True)
    builder = bound(items, jitter=False)
    grain = torch.from_numpy(items.arrays["masks"][0])
    canonical = builder.canonical(0)
    assert (canonical[:, ~grain] == 0).all()
    assert torch.allclose(canonical[:, grain & disc_mask(16)], as_float(items, 0)[:, grain])
    turned = builder.render(0, angle=90.0)
    turned_grain = torch.rot90(grain, 1)
    assert (turned[:, ~turned_grain] == 0).all()
    expected = torch.rot90(as_float(items, 0), 1, dims=(-2, -1))
    assert torch.allclose(turned[:, turned_grain], expected[:, turned_grain], atol=1e-5)


def test_jitter_stays_mild_and_leaves_the_outside_black():
    items = image_items(channels=3)
    builder = bound(
        items, angles="c4", jitter={"brightness": 0.05, "contrast": 0.05, "colour": 0.02}
    )
    plain = bound(items, angles="c4", jitter=False)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    jittered = builder.make_view(0, "rotated", rng_a)
    # Same angle (drawn first from the same state), no jitter.
    reference = plain.make_view(0, "rotated", rng_b)
    difference = (jittered - reference).abs()
    assert 0 < difference.max() < 0.2
    assert (jittered[:, ~disc_mask(16)] == 0).all()


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"views": 1}, "params.views"),
        ({"views": "2"}, "params.views"),
        ({"angles": "c6"}, "params.angles"),
        ({"flips": "yes"}, "params.flips"),
        ({"out_size": 0}, "params.out_size"),
        ({"max_shift": -1}, "params.max_shift"),
        ({"max_shift": 1.5}, "params.max_shift"),
        ({"interpolation": "lanczos"}, "params.interpolation"),
        ({"jitter": {"hue": 0.1}}, "params.jitter.hue"),
        ({"jitter": {"brightness": 2}}, "params.jitter.brightness"),
        ({"jitter": 0.1}, "params.jitter"),
    ],
)
def test_bad_params_raise_config_error_naming_the_key(params, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RotationViews(**params)


def test_out_size_larger_than_the_images_is_a_config_error():
    with pytest.raises(ConfigError, match=r"params\.out_size=20 exceeds"):
        RotationViews(out_size=20).build(image_items(size=16))


def test_shift_that_leaves_the_image_is_a_config_error():
    with pytest.raises(ConfigError, match=r"params\.max_shift=3 moves the disc"):
        RotationViews(out_size=12, max_shift=3).build(image_items(size=16))


def test_items_of_another_modality_are_refused():
    items = image_items()
    items.meta["modality"] = "dna"
    with pytest.raises(ConfigError, match="modality"):
        RotationViews().build(items)


def test_images_that_do_not_match_the_meta_are_refused():
    items = image_items()
    items.meta["size"] = 12
    with pytest.raises(InputDataError, match=r"'images' has shape \[4, 1, 16, 16\]"):
        RotationViews().bind(items)
    items = image_items(masks=True)
    items.arrays["masks"] = items.arrays["masks"].astype(np.uint8)
    with pytest.raises(InputDataError, match="'masks' must be bool"):
        RotationViews().bind(items)


def test_registry_create_passes_params():
    builder = PAIR_BUILDERS.create({"name": "rotations", "params": {"views": 4, "angles": "c8"}})
    assert builder.views == 4 and builder.angles == "c8"


def test_symmetry_only_drops_jitter_and_shift_but_keeps_the_angles():
    items = image_items(n=3, size=20, dtype=np.float32)
    builder = RotationViews(angles="c4", jitter={"contrast": 0.3}, max_shift=2, out_size=14)
    name, symmetry = builder.symmetry_only()
    assert name == "rotation"
    # The training builder is left as configured.
    assert builder.jitter["contrast"] == 0.3 and builder.max_shift == 2
    symmetry.bind(items)
    canonical = symmetry.canonical(1)
    turns = [torch.rot90(canonical, k, dims=(-2, -1)) for k in range(4)]
    for seed in range(8):
        view = symmetry.make_view(1, "rotated", np.random.default_rng(seed))
        assert any(torch.allclose(view, turn, atol=1e-5) for turn in turns)


def test_symmetry_only_names_mirrors_and_is_none_without_nuisances():
    assert RotationViews(jitter=False).symmetry_only() is None
    assert RotationViews(flips=True).symmetry_only()[0] == "rotation and mirror"
