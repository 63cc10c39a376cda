"""rotations' views rendered for a whole batch on the device equal the item-by-item CPU
views (``training.augment_on_device``, issue 26 item 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_rotations import image_items

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.images.patches import EXTENT, PIXELS, pack_images
from scicontrast.data_adapters.images.rotations import RotationViews

# Quarter turns and mirrors sample pixel centres; any other angle interpolates, jitter
# reduces per view. On a CPU device every one is the item-by-item view bit for bit.
PARAMS = [
    {"angles": "c4", "jitter": False},
    {"angles": "c4", "flips": True, "jitter": False, "out_size": 12},
    {"angles": "continuous", "flips": True},
    {"angles": "c8", "jitter": {"brightness": 0.2, "contrast": 0.3, "colour": 0.1}},
    {"angles": "continuous", "max_shift": 2, "out_size": 10, "interpolation": "bicubic"},
]


def patch_items(n: int = 5, size: int = 8) -> Items:
    """Patch-layout items: grey images of several sizes in one flat store."""
    rng = np.random.default_rng(2)
    images = [
        rng.integers(0, 255, (1, int(rng.integers(size, 20)), int(rng.integers(size, 20)))).astype(
            np.uint8
        )
        for _ in range(n)
    ]
    pixels, extent = pack_images(images, np.uint8)
    table = pd.DataFrame({"item_id": [f"p{i}" for i in range(n)]})
    meta = {"modality": "image", "channels": 1, "size": size, "layout": "patches"}
    return Items(table=table, meta=meta, arrays={EXTENT: extent}, extras={PIXELS: pixels})


def cpu_and_device(items: Items, params: dict, seed: int = 3, batch_size: int = 3):
    pairs = RotationViews(**params).build(items)
    cpu = RotationViews(**params).training_batches(items, pairs, seed, batch_size)
    device = RotationViews(**params).training_batches(items, pairs, seed, batch_size)
    device.augment_on(torch.device("cpu"))
    assert device.plan._device is not None  # the batched path, not the item-by-item one
    return cpu, device


def compare(cpu, device) -> int:
    """Views compared, after asserting that both paths give the same batches."""
    compared = 0
    for epoch in (0, 2):
        cpu.set_epoch(epoch)
        device.set_epoch(epoch)
        for a, b in zip(list(cpu), list(device), strict=True):
            assert a.inputs.shape == b.inputs.shape and a.inputs.dtype == b.inputs.dtype
            assert torch.equal(a.group_ids, b.group_ids)
            assert torch.equal(a.inputs, b.inputs)
            compared += len(a.group_ids)
    return compared


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("channels", [1, 3])
def test_device_views_are_the_cpu_views_for_the_same_seed(params, channels):
    items = image_items(n=7, channels=channels, dtype=np.float32 if channels == 3 else np.uint8)
    assert compare(*cpu_and_device(items, params)) == 2 * 2 * 6  # 2 epochs, 2 batches of 3 x 2


def test_grains_rotate_their_masks_on_the_device_too():
    items = image_items(n=6, masks=True)
    params = {"angles": "continuous", "flips": True, "out_size": 11}
    assert compare(*cpu_and_device(items, params)) > 0
    assert compare(*cpu_and_device(items, params | {"angles": "c4"})) > 0


def test_patch_windows_are_drawn_and_cut_as_on_the_cpu():
    items = patch_items()
    assert compare(*cpu_and_device(items, {"angles": "c4", "flips": True})) > 0
    assert compare(*cpu_and_device(items, {"max_shift": 1, "out_size": 6})) > 0


def test_device_views_are_fresh_per_epoch_and_per_view():
    items = image_items(n=4)
    _, device = cpu_and_device(items, {"jitter": False}, batch_size=4)
    device.set_epoch(0)
    first = next(iter(device)).inputs
    assert not torch.equal(first[0], first[1])  # two views of one group differ
    device.set_epoch(1)
    assert not torch.equal(first, next(iter(device)).inputs)


def test_angles_are_uniform_on_the_circle():
    """Equal in distribution: the device path's angles come from make_view's draws, so the
    mean resultant length of many angles is that of U[0, 360): about 1 / sqrt(n)."""
    items = image_items(n=2)
    builder = RotationViews()
    builder.bind(items)
    rng = np.random.default_rng(0)
    angles = np.deg2rad([builder.draw_view(0, "rotated", rng).angle for _ in range(4000)])
    assert abs(np.exp(1j * angles).mean()) < 4 / np.sqrt(len(angles))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_views_made_on_a_gpu_match_the_cpu_views():
    items = image_items(n=7, channels=3)
    params = {"angles": "continuous", "flips": True, "max_shift": 1, "out_size": 12}
    pairs = RotationViews(**params).build(items)
    cpu = RotationViews(**params).training_batches(items, pairs, 0, 4)
    gpu = RotationViews(**params).training_batches(items, pairs, 0, 4)
    gpu.augment_on(torch.device("cuda"))
    for a, b in zip(list(cpu), list(gpu), strict=True):
        assert b.inputs.device.type == "cuda"
        torch.testing.assert_close(a.inputs, b.inputs.cpu(), rtol=0, atol=1e-5)


def test_a_training_run_through_device_views_equals_the_cpu_run(tmp_path):
    from test_train import assert_same_weights

    from scicontrast.config import select_experiment, validate_config
    from scicontrast.experiment import Experiment
    from scicontrast.models.train import train

    items = image_items(n=12, channels=1, masks=True)
    items.save(tmp_path / "items")
    params = {"angles": "continuous", "flips": True, "out_size": 12}
    RotationViews(**params).build(items).to_parquet(tmp_path / "pairs.parquet")
    runs = {}
    for on_device in (False, True):
        training = {"epochs": 2, "batch_size": 4, "device": "cpu", "lr": 0.01}
        experiment = {
            "adapter": {"name": "image_folder", "params": {"paths": ["unused"]}},
            "pairs": {"name": "rotations", "params": params},
            "encoder": {"name": "image_cnn", "params": {"channels": [4, 8], "embedding_dim": 6}},
            "head": {"hidden_dim": 8, "output_dim": 6},
            "training": training | {"augment_on_device": on_device},
        }
        config = validate_config({"experiments": {"img": experiment}})
        runs[on_device] = train(
            Experiment.from_dict(select_experiment(config, "img", "test")),
            tmp_path / "items",
            tmp_path / "pairs.parquet",
            tmp_path / str(on_device),
            progress=False,
        )
    # On a CPU device the views are the same bits, so are the weights.
    assert_same_weights(runs[False], runs[True])
