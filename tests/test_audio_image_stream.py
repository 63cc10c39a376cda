"""Audio-image at 10^6 events: synchronisation from numpy columns and spilled blocks, the
offset search by slices of lags, the pairs table streamed from the items' row groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scicontrast.data_adapters.audio_image import (
    demo,
    events,
    pair_stream,
    sync_output,
    synchronization,
)
from scicontrast.data_adapters.audio_image.pairs import SynchronizedPairs
from scicontrast.data_adapters.audio_image.reading import AudioImageAdapter
from scicontrast.data_adapters.base import Items, load_items
from scicontrast.data_adapters.chunks import write_chunks
from scicontrast.data_adapters.items_store import ItemsWriter
from scicontrast.data_adapters.pairs_table import frame_parts, write_pairs
from scicontrast.errors import InputDataError

OUTPUTS = ("pairs.parquet", "unmatched.parquet", "offsets.json", "time_differences.png")


@pytest.fixture(scope="module")
def station(tmp_path_factory) -> tuple[Path, Path]:
    """The demo's events in two manifests: the microphone's (CSV, with a column ``site``)
    and the camera's (Parquet, with a column ``note`` null in its first 20 rows)."""
    folder = tmp_path_factory.mktemp("station")
    table = pd.read_csv(demo.generate_demo_audio_image(folder, events=40, image_size=12))
    mic, cam = table[table.device == "microphone"].copy(), table[table.device == "camera"].copy()
    mic["site"] = "north"
    cam["note"] = np.where(np.arange(len(cam)) < 20, None, "windy")
    mic.to_csv(folder / "mic.csv", index=False)
    cam.drop(columns=["label"]).to_parquet(folder / "cam.parquet", index=False)
    return folder / "mic.csv", folder / "cam.parquet"


def test_blocks_and_pieces_of_any_size_write_the_same_files(station, tmp_path, monkeypatch):
    folders = []
    for block, piece, group in ((events.BLOCK_ROWS, sync_output.PIECE_ROWS, 11), (7, 5, 11)):
        monkeypatch.setattr(synchronization, "PAIRS_ROW_GROUP", group)
        monkeypatch.setattr(events, "BLOCK_ROWS", block)
        monkeypatch.setattr(sync_output, "PIECE_ROWS", piece)
        folders.append(tmp_path / f"sync{block}")
        summary = synchronization.synchronize(list(station), folders[-1], truth_column="true_event")
    for name in OUTPUTS:
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    pairs = pd.read_parquet(folders[1] / "pairs.parquet")
    assert pq.ParquetFile(folders[1] / "pairs.parquet").num_row_groups == -(-len(pairs) // 11)
    assert (pairs["audio_true_event"] == pairs["image_true_event"]).all()
    assert summary["pairing"]["precision"] == 1.0 and summary["pairing"]["correct"] == len(pairs)
    # A column null in the first row group is still typed from its values, as pandas
    # writes the whole table.
    assert pairs["image_note"].iloc[-1] == "windy" and (pairs["audio_site"] == "north").all()
    _assert_written_by_pandas(folders[1], tmp_path, 11)


def test_a_column_null_in_the_first_row_only_is_typed_as_pandas_types_it(station, tmp_path):
    synchronization.synchronize(list(station), tmp_path / "sync")
    _assert_written_by_pandas(tmp_path / "sync", tmp_path, synchronization.PAIRS_ROW_GROUP)


def _assert_written_by_pandas(folder: Path, tmp_path: Path, row_group: int) -> None:
    """Each table of ``folder`` is the file ``to_parquet`` writes of it."""
    for name, rows in (("pairs.parquet", row_group), ("unmatched.parquet", None)):
        pd.read_parquet(folder / name).to_parquet(tmp_path / name, index=False, row_group_size=rows)
        assert (folder / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_a_file_listed_twice_in_different_blocks_names_both_rows(station, tmp_path, monkeypatch):
    mic = pd.read_csv(station[0])
    mic.loc[9, "file"] = mic.loc[1, "file"]
    manifest = station[0].parent / "mic_twice.csv"
    mic.to_csv(manifest, index=False)
    monkeypatch.setattr(events, "BLOCK_ROWS", 4)
    out = tmp_path / "sync"
    with pytest.raises(
        InputDataError, match=r"mic_twice\.csv: row 2 and .*mic_twice\.csv: row 10: device"
    ):
        synchronization.synchronize([manifest, station[1]], out)
    assert not out.exists() and not list(tmp_path.glob(".sync*"))  # nor the spilled blocks


def test_the_offset_search_does_not_depend_on_its_slices(monkeypatch):
    rng = np.random.default_rng(3)
    truth = np.sort(rng.uniform(0, 900, 400))
    # Rounded to 10 ms: ties among the differences, and at the slices' edges.
    heard, seen = rng.random(400) < 0.9, rng.random(400) < 0.9
    reference = np.round(truth[heard] + rng.normal(0, 0.05, heard.sum()), 2)
    camera = np.round(truth[seen] - 4.3 + rng.normal(0, 0.05, seen.sum()), 2)
    whole = synchronization.estimate_offset(reference, camera, 0.25, 10.0)
    for slice_size in (5, 97):
        monkeypatch.setattr(synchronization, "DIFFERENCES_PER_SLICE", slice_size)
        assert synchronization.estimate_offset(reference, camera, 0.25, 10.0) == whole
    assert whole.offset_s == pytest.approx(4.3, abs=0.1) and whole.matches > 300


@pytest.fixture(scope="module")
def items_folder(tmp_path_factory) -> Path:
    """A synchronised demo's items, written in row groups of 5 rows."""
    tmp = tmp_path_factory.mktemp("stream")
    manifest = demo.generate_demo_audio_image(tmp / "demo", events=30, image_size=12)
    synchronization.synchronize([manifest], tmp / "sync")
    adapter = AudioImageAdapter(str(tmp / "sync"), clip_seconds=0.2, image_size=12)
    write_chunks(adapter.read_chunks(5), tmp / "items")
    return tmp / "items"


def _shuffled_copy(folder: Path, out: Path, rows: np.ndarray) -> Path:
    """The items folder ``folder`` with its table's ``rows`` only, in that order, written
    in row groups of 4 rows."""
    items = Items.load(folder)
    with ItemsWriter(out, items.meta) as writer:
        for start in range(0, len(rows), 4):
            writer.append(items.table.iloc[rows[start : start + 4]])
        for name, array in items.extras.items():
            writer.add_extra(name, array)
    return out


def test_the_streamed_pairs_file_is_the_built_one_in_any_row_order(
    items_folder, tmp_path, monkeypatch
):
    monkeypatch.setattr(pair_stream, "PART_ROWS", 6)
    monkeypatch.setattr(pair_stream.RowGroupIds, "CACHED", 1)
    builder = SynchronizedPairs()
    n = pq.ParquetFile(items_folder / "items.parquet").metadata.num_rows
    order = np.random.default_rng(0).permutation(n)
    for name, folder in (
        ("adapter", items_folder),
        ("shuffled", _shuffled_copy(items_folder, tmp_path / "shuffled", order)),
    ):
        built = write_pairs(
            tmp_path / f"{name}_built.parquet",
            frame_parts(builder.build(load_items(folder, builder))),
        )
        streamed = write_pairs(tmp_path / f"{name}.parquet", builder.build_parts(folder))
        assert streamed == built == (n, n // 2)
        assert (tmp_path / f"{name}.parquet").read_bytes() == (
            tmp_path / f"{name}_built.parquet"
        ).read_bytes()
    broken = _shuffled_copy(items_folder, tmp_path / "broken", order[1:])
    with pytest.raises(InputDataError, match="exactly one audio and one image item"):
        write_pairs(tmp_path / "broken.parquet", builder.build_parts(broken))
    assert not (tmp_path / "broken.parquet").exists()
