"""Items sets on disk: chunked writing, row-group reading, memory-mapped arrays, bad files."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.items_store import ItemsWriter, table_row_groups
from scicontrast.errors import InputDataError


def make_items(n: int = 30, seed: int = 0) -> Items:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {"item_id": [f"r{i}" for i in range(n)], "label": rng.integers(0, 3, n), "x": rng.random(n)}
    )
    arrays = {
        "bases": rng.integers(0, 4, (n, 12), dtype=np.uint8),
        "images": rng.random((n, 2, 5, 5), dtype=np.float32),
    }
    extras = {"edge_index": rng.integers(0, n, (2, 40))}
    return Items(table, meta={"modality": "test", "k": [1, 2]}, arrays=arrays, extras=extras)


def assert_same_items(a: Items, b: Items) -> None:
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.meta == b.meta
    assert a.arrays.keys() == b.arrays.keys() and a.extras.keys() == b.extras.keys()
    for name in a.arrays:
        assert a.arrays[name].dtype == b.arrays[name].dtype
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
    for name in a.extras:
        np.testing.assert_array_equal(a.extras[name], b.extras[name])


def test_saved_items_load_back_memory_mapped(tmp_path):
    items = make_items()
    items.save(tmp_path / "items")
    loaded = Items.load(tmp_path / "items")
    assert_same_items(items, loaded)
    assert all(isinstance(a, np.memmap) for a in (*loaded.arrays.values(), *loaded.extras.values()))
    # Copy-on-write: a step may write into its arrays without touching the file.
    loaded.arrays["bases"][0] = 9
    assert (Items.load(tmp_path / "items").arrays["bases"][0] != 9).all()


def test_chunked_writing_equals_saving_at_once_with_one_row_group_per_chunk(tmp_path):
    items = make_items(n=30)
    items.save(tmp_path / "whole")
    with ItemsWriter(tmp_path / "chunked", items.meta) as writer:
        for start in range(0, 30, 11):
            rows = slice(start, start + 11)
            table = items.table.iloc[rows].reset_index(drop=True)
            writer.append(table, {name: a[rows] for name, a in items.arrays.items()})
        writer.add_extra("edge_index", items.extras["edge_index"])
    assert pq.ParquetFile(tmp_path / "chunked" / "items.parquet").num_row_groups == 3
    assert [len(t) for t in table_row_groups(tmp_path / "chunked" / "items.parquet")] == [11, 11, 8]
    assert_same_items(Items.load(tmp_path / "whole"), Items.load(tmp_path / "chunked"))


def test_the_format_written_before_chunked_writing_still_loads(tmp_path):
    items = make_items()
    folder = tmp_path / "old"
    folder.mkdir()
    items.table.to_parquet(folder / "items.parquet", index=False)
    (folder / "meta.json").write_text(json.dumps(items.meta))
    for name, array in items.arrays.items():
        np.save(folder / f"{name}.npy", array)
    np.save(folder / "edge_index.extra.npy", items.extras["edge_index"])
    assert_same_items(items, Items.load(folder))


def test_a_folder_of_parquet_files_is_one_table_in_path_order(tmp_path):
    items = make_items(n=12)
    items.save(tmp_path / "items")
    table_dir = tmp_path / "items" / "items.parquet"
    table_dir.unlink()
    table_dir.mkdir()
    for part, rows in (("part-1", slice(4, 12)), ("part-0", slice(0, 4))):
        items.table.iloc[rows].to_parquet(table_dir / f"{part}.parquet", index=False)
    assert_same_items(items, Items.load(tmp_path / "items"))


def test_a_writer_that_fails_leaves_nothing(tmp_path):
    items = make_items(n=10)
    with pytest.raises(ValueError, match="duplicate item_id 'r3'"):
        with ItemsWriter(tmp_path / "items") as writer:
            writer.append(items.table, items.arrays)
            writer.append(items.table.iloc[3:5], {k: a[3:5] for k, a in items.arrays.items()})
    with pytest.raises(ValueError, match="array 'bases': chunk of int64"):
        with ItemsWriter(tmp_path / "items") as writer:
            writer.append(items.table.iloc[:5], {"bases": items.arrays["bases"][:5]})
            writer.append(items.table.iloc[5:], {"bases": items.arrays["bases"][5:].astype(int)})
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_array_is_an_error_naming_the_file(tmp_path):
    make_items().save(tmp_path / "items")
    path = tmp_path / "items" / "images.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputDataError, match=r"images\.npy: truncated or not a \.npy array"):
        Items.load(tmp_path / "items")


def test_a_damaged_row_group_is_an_error_naming_the_file_and_row_group(tmp_path):
    items = make_items(n=40)
    with ItemsWriter(tmp_path / "items") as writer:
        for start in (0, 20):
            writer.append(items.table.iloc[start : start + 20].reset_index(drop=True))
    path = tmp_path / "items" / "items.parquet"
    metadata = pq.ParquetFile(path).metadata
    column = metadata.row_group(1).column(2)  # "x", row group 1
    data = bytearray(path.read_bytes())
    first = column.dictionary_page_offset if column.has_dictionary_page else None
    end = (first or column.data_page_offset) + column.total_compressed_size
    data[column.data_page_offset : end] = b"\xff" * (end - column.data_page_offset)
    path.write_bytes(bytes(data))
    rows = table_row_groups(path)
    assert len(next(rows)) == 20  # row group 0 is intact
    with pytest.raises(InputDataError, match=r"items\.parquet: row group 1 is damaged"):
        next(rows)
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated: the footer is gone
    with pytest.raises(InputDataError, match=r"items\.parquet: .*(truncated|not a readable)"):
        Items.load(tmp_path / "items")


def test_an_extra_appended_in_chunks_is_their_rows_in_order(tmp_path):
    items = make_items(n=6)
    parts = [np.arange(5, dtype=np.uint8), np.arange(7, dtype=np.uint8) + 5]
    with ItemsWriter(tmp_path / "items") as writer:
        for rows, part in zip((slice(0, 2), slice(2, 6)), parts, strict=True):
            writer.append(items.table.iloc[rows], {k: a[rows] for k, a in items.arrays.items()})
            writer.append_extra("pixels", part)
    assert np.array_equal(Items.load(tmp_path / "items").extras["pixels"], np.arange(12))
    with pytest.raises(ValueError, match="extra 'pixels': chunk of float32"):
        with ItemsWriter(tmp_path / "bad") as writer:
            writer.append(items.table, items.arrays)
            writer.append_extra("pixels", parts[0])
            writer.append_extra("pixels", parts[1].astype(np.float32))
    assert not (tmp_path / "bad").exists()
