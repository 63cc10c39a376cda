"""Rotation pairs streamed an items row group at a time (``RotationViews.build_parts``): the
file of the table built whole, and the set checked as ``build`` checks it, from the meta and
the mapped arrays without loading the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scicontrast.data_adapters import pairs_table
from scicontrast.data_adapters.base import Items, load_items
from scicontrast.data_adapters.images.patches import EXTENT, PIXELS, pack_images
from scicontrast.data_adapters.images.rotations import RotationViews
from scicontrast.data_adapters.pairs_table import frame_parts, write_pairs
from scicontrast.errors import ConfigError, InputDataError

N = 11


def save_in_row_groups(items: Items, folder: Path) -> Path:
    """``items`` saved to ``folder`` with an items table of row groups of 3 rows."""
    items.save(folder)
    path = folder / "items.parquet"
    pq.write_table(pq.read_table(path), path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 4
    return folder


def whole_items(n: int = N, size: int = 8) -> Items:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)
    masks = rng.random((n, size, size)) < 0.5
    meta = {"modality": "image", "channels": 1, "size": size, "payload_columns": []}
    table = pd.DataFrame({"item_id": [f"img{i}" for i in range(n)], "label": ["a"] * n})
    return Items(table=table, meta=meta, arrays={"images": images, "masks": masks})


def patch_items(n: int = N, size: int = 8, small: int | None = None) -> Items:
    """Patch-layout items of several sizes; item ``small`` (if given) smaller than a patch."""
    rng = np.random.default_rng(2)
    shapes = [(int(rng.integers(size, 20)), int(rng.integers(size, 20))) for _ in range(n)]
    if small is not None:
        shapes[small] = (size - 1, size + 3)
    images = [rng.integers(0, 255, (1, *shape)).astype(np.uint8) for shape in shapes]
    pixels, extent = pack_images(images, np.uint8)
    table = pd.DataFrame({"item_id": [f"p{i}" for i in range(n)]})
    meta = {"modality": "image", "channels": 1, "size": size, "layout": "patches"}
    return Items(table=table, meta=meta, arrays={EXTENT: extent}, extras={PIXELS: pixels})


@pytest.mark.parametrize("layout", ["whole", "patches"])
@pytest.mark.parametrize("views", [2, 3])
def test_parts_are_the_file_of_the_table_built_whole(tmp_path, monkeypatch, layout, views):
    monkeypatch.setattr(pairs_table, "ROW_GROUP_ROWS", 5)  # row groups across the parts
    items = whole_items() if layout == "whole" else patch_items()
    folder = save_in_row_groups(items, tmp_path / "items")
    builder = RotationViews(views=views, out_size=6)
    table = builder.build(load_items(folder, builder))
    write_pairs(tmp_path / "whole.parquet", frame_parts(table))

    def refuse(*args, **kwargs):
        raise AssertionError("the items were loaded whole")

    monkeypatch.setattr(Items, "load", refuse)
    counts = write_pairs(tmp_path / "parts.parquet", builder.build_parts(folder))
    assert counts == (views * N, N)
    written = (tmp_path / "parts.parquet").read_bytes()
    assert written == (tmp_path / "whole.parquet").read_bytes()
    read = pq.read_table(tmp_path / "parts.parquet")
    assert read.schema.types == [pa.int64(), pa.string(), pa.string()]
    pd.testing.assert_frame_equal(read.to_pandas(), table.astype({"view": object}))


def refused(folder: Path, out: Path, error: type, match: str, **params) -> None:
    """``build`` and ``build_parts`` both raise ``error`` matching ``match``; no file left."""
    builder = RotationViews(**params)
    with pytest.raises(error, match=match):
        builder.build(Items.load(folder))
    with pytest.raises(error, match=match):
        write_pairs(out, builder.build_parts(folder))
    assert list(out.parent.glob("*pairs*")) == []


def test_sets_that_build_refuses_are_refused_before_any_row(tmp_path):
    out = tmp_path / "pairs.parquet"
    items = whole_items()
    items.meta["modality"] = "dna"
    refused(save_in_row_groups(items, tmp_path / "dna"), out, ConfigError, "modality 'image'")
    items = whole_items()
    items.meta["size"] = 12
    folder = save_in_row_groups(items, tmp_path / "shape")
    refused(folder, out, InputDataError, r"'images' has shape \[11, 1, 8, 8\]")
    (folder / "images.npy").unlink()
    refused(folder, out, InputDataError, "no 'images' array")
    folder = save_in_row_groups(whole_items(), tmp_path / "crop")
    refused(folder, out, ConfigError, "out_size=9 exceeds", out_size=9)
    folder = save_in_row_groups(patch_items(small=7), tmp_path / "small")
    refused(folder, out, InputDataError, "'p7' is 7 x 11, smaller than one 8 x 8 patch")


def test_an_array_of_another_length_names_its_file(tmp_path):
    folder = save_in_row_groups(whole_items(), tmp_path / "items")
    np.save(folder / "masks.npy", np.zeros((N - 1, 8, 8), dtype=bool))
    with pytest.raises(InputDataError, match=r"masks\.npy: 10 rows, the items table 11"):
        write_pairs(tmp_path / "pairs.parquet", RotationViews().build_parts(folder))
    assert not (tmp_path / "pairs.parquet").exists()
