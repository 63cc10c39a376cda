"""Audio-image at scale: the demo's manifest in blocks and shorter clips, the pairs table read
by row group, training rows from row codes, embedding that leaves the clips on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import resident_kib

from scicontrast.data_adapters.audio_image import demo, synchronization
from scicontrast.data_adapters.audio_image.pairs import SynchronizedPairs, _event_rows
from scicontrast.data_adapters.audio_image.reading import AudioImageAdapter
from scicontrast.data_adapters.base import Items, load_items
from scicontrast.data_adapters.chunks import write_chunks
from scicontrast.data_adapters.pairs_table import frame_parts, read_pairs, write_pairs
from scicontrast.errors import InputDataError


def test_the_manifest_written_in_blocks_is_the_same_file(tmp_path, monkeypatch):
    whole = demo.generate_demo_audio_image(tmp_path / "whole", events=30, dropout=0.1)
    monkeypatch.setattr(demo, "MANIFEST_BLOCK", 4)
    blocks = demo.generate_demo_audio_image(tmp_path / "blocks", events=30, dropout=0.1)
    assert blocks.read_bytes() == whole.read_bytes()
    table = pd.read_csv(whole)
    assert table.groupby("device").size().to_dict() == {"camera": 27, "microphone": 27}


@pytest.mark.parametrize("clip_seconds", [0.6, 0.15])
def test_a_shorter_clip_holds_the_whole_tone_in_its_centre(clip_seconds):
    clip = demo.tone(2, 4, np.random.default_rng(1), clip_seconds)
    n = round(demo.RECORDING_RATE * clip_seconds)
    assert clip.shape == (n, 2)
    # The tone lasts 0.25-0.45 s of 0.6 s, scaled with the clip: at most its middle 3/4.
    edge = n // 8
    assert np.concatenate([clip[:edge, 0], clip[-edge:, 0]]).std() < 0.03  # noise: 0.02
    assert clip[n // 2 - edge : n // 2 + edge, 0].std() > 0.1


def _station(tmp_path: Path) -> Path:
    """A demo manifest whose microphone rows alone carry a metadata column ``site``."""
    manifest = demo.generate_demo_audio_image(tmp_path / "demo", events=30, image_size=12)
    table = pd.read_csv(manifest)
    table["site"] = np.where(table["device"] == "microphone", "north", None)
    table.to_csv(manifest, index=False)
    return manifest


def test_the_adapter_reads_the_pairs_table_by_row_group(tmp_path, monkeypatch):
    manifest = _station(tmp_path)
    sets = []
    for rows in (4, 65_536):
        monkeypatch.setattr(synchronization, "PAIRS_ROW_GROUP", rows)
        summary = synchronization.synchronize([manifest], tmp_path / f"sync{rows}")
        groups = pq.ParquetFile(tmp_path / f"sync{rows}" / "pairs.parquet").num_row_groups
        assert groups == -(-summary["pairs"] // rows)
        adapter = AudioImageAdapter(str(tmp_path / f"sync{rows}"), clip_seconds=0.2, image_size=12)
        assert (
            write_chunks(adapter.read_chunks(3), tmp_path / f"items{rows}") == 2 * summary["pairs"]
        )
        sets.append(Items.load(tmp_path / f"items{rows}"))
    (small, large), pairs = sets, pd.read_parquet(tmp_path / "sync4" / "pairs.parquet")
    pd.testing.assert_frame_equal(small.table, large.table)
    for name in ("audio", "images"):
        assert np.array_equal(small.extras[name], large.extras[name])
    table, count = small.table, len(pairs)
    assert table["modality"].tolist() == ["audio"] * count + ["image"] * count
    assert table["modality_row"].tolist() == [*range(count), *range(count)]
    listed = "audio/microphone/" + pairs["audio_file_as_listed"]
    assert table["item_id"].iloc[:count].tolist() == listed.tolist()
    # The microphone's column: its value on audio rows, null on image rows.
    assert (table["site"].iloc[:count] == "north").all() and table["site"].iloc[count:].isna().all()
    assert small.meta["metadata_columns"] == large.meta["metadata_columns"]


@pytest.fixture(scope="module")
def paired(tmp_path_factory) -> tuple[Items, pd.DataFrame, Path]:
    """A small synchronised demo as an items folder and its pairs table on disk."""
    tmp = tmp_path_factory.mktemp("paired")
    manifest = demo.generate_demo_audio_image(tmp / "demo", events=40, image_size=12)
    synchronization.synchronize([manifest], tmp / "sync")
    adapter = AudioImageAdapter(str(tmp / "sync"), clip_seconds=0.2, image_size=12)
    write_chunks(adapter.read_chunks(1000), tmp / "items")
    builder = SynchronizedPairs()
    items = load_items(tmp / "items", builder)
    write_pairs(tmp / "pairs.parquet", frame_parts(builder.build(items)))
    return items, read_pairs(tmp / "pairs.parquet", items.table["item_id"]), tmp


def test_training_rows_come_from_the_row_codes_in_any_order(paired):
    items, pairs, _ = paired
    sides = pairs.astype({"item_id": str}).pivot(index="group_id", columns="view", values="item_id")
    row_of = pd.Series(np.arange(len(items)), index=items.table["item_id"].to_numpy())
    expected = (sides.index, row_of[sides["audio"]], row_of[sides["image"]])
    shuffled = pairs.sample(frac=1.0, random_state=0)
    for table in (pairs, shuffled, shuffled.astype({"item_id": str})):  # codes, and id lookup
        for got, want in zip(_event_rows(table, items), expected, strict=True):
            assert np.array_equal(got, np.asarray(want))
    for broken in (pairs.iloc[1:], pd.concat([pairs, pairs.iloc[:1]])):
        with pytest.raises(InputDataError, match="one 'audio' and one 'image' view"):
            _event_rows(broken, items)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_embedding_and_training_batches_leave_the_mapped_clips_and_images_on_disk(paired):
    items, _, tmp = paired
    builder = SynchronizedPairs()
    batches = list(builder.embedding_batches(items, 8))
    mapped = {name: (tmp / "items" / f"{name}.extra.npy").resolve() for name in items.extras}
    for path in mapped.values():
        assert resident_kib(path) <= 8  # the batches hold copies; no page stays
    extras = {name: np.array(array) for name, array in items.extras.items()}
    for got, want in zip(
        batches,
        builder.embedding_batches(Items(items.table, items.meta, extras=extras), 8),
        strict=True,
    ):
        assert torch.equal(got.audio, want.audio) and torch.equal(got.images, want.images)
    for name, path in mapped.items():
        np.asarray(items.extras[name]).sum()  # touching every page makes it all resident
        assert resident_kib(path) >= items.extras[name].nbytes // 1024 - 8
    # An epoch of training batches (the held-out pass too) hands its pages back as well.
    pairs = builder.build(items)
    assert len(list(builder.training_batches(items, pairs, seed=0, batch_size=4))) == 9
    for path in mapped.values():
        assert resident_kib(path) <= 8
