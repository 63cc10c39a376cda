"""Image sets larger than memory: chunks bounded in bytes, facts from file headers, views
from the memory-mapped array (issue 26, images at 10^5 / 10^6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from conftest import resident_kib
from PIL import Image
from skimage import io as skio

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.chunks import write_chunks
from scicontrast.data_adapters.images import folder as image_folder
from scicontrast.data_adapters.images.folder import ImageFolderAdapter
from scicontrast.data_adapters.images.reading import (
    image_facts,
    read_image_pages,
    read_micrographs,
)
from scicontrast.data_adapters.images.rotations import RotationViews


def _pattern(height: int, width: int, top: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return ((rows * 7 + cols * 13) % 251 * top // 250).astype(np.uint16 if top > 255 else np.uint8)


def _files(folder):
    """One image of every Pillow mode a folder may hold, a JPEG and a 16-bit TIFF."""
    grey = _pattern(24, 20, 255)
    rgb = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    images = {
        "a_bilevel.png": Image.fromarray(grey > 100),
        "b_grey.png": Image.fromarray(grey),
        "c_grey_alpha.png": Image.fromarray(grey).convert("LA"),
        "d_grey16.png": Image.fromarray(_pattern(24, 20, 65535)),
        "e_rgb.png": Image.fromarray(rgb),
        "f_rgba.png": Image.fromarray(rgb).convert("RGBA"),
        "g_palette.png": Image.fromarray(rgb).convert("P"),
        "h_grey.jpg": Image.fromarray(grey),
        "i_rgb.jpg": Image.fromarray(rgb),
    }
    for name, image in images.items():
        image.save(folder / name)
    tifffile.imwrite(folder / "j_grey16.tif", _pattern(24, 20, 65535))
    return sorted(folder.iterdir())


def test_png_and_jpeg_pixels_are_those_of_skimage_imread(tmp_path):
    for path in _files(tmp_path):
        if path.suffix != ".tif":
            ours, theirs = read_image_pages(path)[0], skio.imread(path)
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), path.name


def test_header_facts_equal_the_facts_of_the_decoded_pixels(tmp_path):
    for path in _files(tmp_path):
        decoded = [(m.pixels.shape[2] == 3, m.bit_depth) for m in read_micrographs([path])]
        assert list(image_facts(path)) == decoded, path.name


@pytest.mark.parametrize(
    "params",
    [
        {"size": 16},
        {"size": 16, "grayscale": True},
        {"size": 8, "tiles": 3},
        {"patch_size": 12},
    ],
)
def test_chunks_cut_at_the_byte_budget_give_the_set_of_one_chunk(tmp_path, monkeypatch, params):
    """Chunks cut by bytes (here one image each) read the array's dtype and channels from
    the file headers, and the set equals the one read in a single chunk."""
    files = tmp_path / "img"
    files.mkdir()
    _files(files)
    adapter = ImageFolderAdapter(paths=[str(files)], **params)
    whole = adapter.read()
    monkeypatch.setattr(image_folder, "CHUNK_BYTES", 1)
    chunks = list(adapter.read_chunks(1000))
    assert len(chunks) == len(whole)  # every piece is over one byte: one a chunk
    write_chunks(chunks, tmp_path / "items")
    chunked = Items.load(tmp_path / "items")
    pd.testing.assert_frame_equal(chunked.table, whole.table)
    assert chunked.meta == whole.meta
    assert whole.meta["images"] == 10 and whole.meta["files"] == 10
    for kind in ("arrays", "extras"):
        ours, theirs = getattr(chunked, kind), getattr(whole, kind)
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert ours[name].dtype == theirs[name].dtype
            assert np.array_equal(ours[name], theirs[name])


def test_views_read_the_memory_mapped_images_without_a_copy(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 1, 16, 16), dtype=np.uint8)
    masks = rng.random((6, 16, 16)) < 0.7
    table = pd.DataFrame({"item_id": [f"i{k}" for k in range(6)]})
    meta = {"modality": "image", "channels": 1, "size": 16}
    Items(table, meta, arrays={"images": images, "masks": masks}).save(tmp_path / "items")
    items = Items.load(tmp_path / "items")
    builder = RotationViews()
    builder.bind(items)
    assert builder._images is not None and builder._masks is not None
    assert builder._images.data_ptr() == items.arrays["images"].ctypes.data
    assert builder._masks.data_ptr() == items.arrays["masks"].ctypes.data
    # the mask is the item's last channel, at the image's scale
    source = builder.source(4, None).numpy()
    assert np.array_equal(source[0], images[4, 0])
    assert np.array_equal(source[1], masks[4] * np.uint8(255))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_a_pass_of_embedding_batches_leaves_the_mapped_images_on_disk(tmp_path):
    """Embedding reads every image once; afterwards at most one batch of the memory-mapped
    array is resident, not the set (a set larger than memory would otherwise fill it)."""
    images = np.random.default_rng(0).integers(0, 255, (512, 1, 64, 64), dtype=np.uint8)
    table = pd.DataFrame({"item_id": [f"i{k}" for k in range(512)]})
    meta = {"modality": "image", "channels": 1, "size": 64}
    Items(table, meta, arrays={"images": images}).save(tmp_path / "items")
    items = Items.load(tmp_path / "items")
    mapped = (tmp_path / "items" / "images.npy").resolve()
    batches = list(RotationViews().embedding_batches(items, 32))
    in_memory = RotationViews().embedding_batches(Items(table, meta, {"images": images}), 32)
    assert torch.equal(torch.cat(batches), torch.cat(list(in_memory)))
    assert resident_kib(mapped) <= 32 * 64 * 64 // 1024 + 8  # one batch and a page
    np.asarray(items.arrays["images"]).sum()  # touching every page makes it all resident
    assert resident_kib(mapped) >= images.nbytes // 1024 - 8


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("on_device", [False, True])
def test_training_batches_hand_back_the_mapped_images(tmp_path, on_device):
    """Each training batch reads random items; after it, none of the memory-mapped images
    stays resident, and the batches equal those of the same set held in memory."""
    images = np.random.default_rng(0).integers(0, 255, (512, 1, 32, 32), dtype=np.uint8)
    table = pd.DataFrame({"item_id": [f"i{k}" for k in range(512)]})
    meta = {"modality": "image", "channels": 1, "size": 32}
    Items(table, meta, arrays={"images": images}).save(tmp_path / "items")
    mapped = (tmp_path / "items" / "images.npy").resolve()
    made = []
    for items in (Items.load(tmp_path / "items"), Items(table, meta, {"images": images})):
        builder = RotationViews()
        batches = builder.training_batches(items, builder.build(items), 0, 64)
        if on_device:
            batches.augment_on(torch.device("cpu"))
        batches.limit_steps(3)
        made.append([b.inputs for b in batches])
        if len(made) == 1:
            assert resident_kib(mapped) == 0
    assert all(torch.equal(a, b) for a, b in zip(*made, strict=True)) and len(made[0]) == 3


def test_audio_image_chunks_end_at_the_byte_budget(tmp_path, monkeypatch):
    """One clip or image a chunk when each is over the budget; the same set as one chunk."""
    from test_chunked_prepare import _assert_same, _audio_image

    from scicontrast.data_adapters.audio_image import reading
    from scicontrast.registry import ADAPTERS

    for k, spec in enumerate(_audio_image(tmp_path)):
        adapter = ADAPTERS.create(spec, where="audio_image")
        whole = adapter.read()
        monkeypatch.setattr(reading, "CHUNK_BYTES", 1)
        chunks = list(adapter.read_chunks(1000))
        # (A synchronisation's meta comes in a last chunk without rows.)
        assert [len(chunk) for chunk in chunks if len(chunk)] == [1] * len(whole)
        write_chunks(chunks, tmp_path / f"items{k}")
        _assert_same(whole, Items.load(tmp_path / f"items{k}"))
        monkeypatch.undo()
