"""Bad input to the audio-image domain: a clear error naming the file, and no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from skimage import io as skio

from scicontrast.data_adapters.audio_image.reading import AudioImageAdapter
from scicontrast.data_adapters.audio_image.synchronization import synchronize
from scicontrast.errors import InputDataError

TIMES = [10.0, 13.5, 17.25, 22.0, 24.5]
OFFSET = 2.0


def write_station(folder: Path) -> Path:
    """Five events on a microphone and a camera (camera clock OFFSET s behind)."""
    rng = np.random.default_rng(0)
    (folder / "audio").mkdir(parents=True)
    (folder / "images").mkdir()
    rows = []
    for k, time in enumerate(TIMES):
        soundfile.write(folder / "audio" / f"a{k}.wav", rng.normal(0, 0.1, 800), 8000)
        skio.imsave(folder / "images" / f"i{k}.png", rng.integers(0, 255, (12, 12), np.uint8))
        rows.append(("mic", f"audio/a{k}.wav", time))
        rows.append(("cam", f"images/i{k}.png", time - OFFSET))
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows, columns=["device", "file", "time"]).to_csv(manifest, index=False)
    return manifest


def edit_manifest(manifest: Path, row: int, column: str, value) -> None:
    table = pd.read_csv(manifest, dtype={"time": object})
    table.loc[row, column] = value
    table.to_csv(manifest, index=False)


def expect_error(manifest: Path, out: Path, *patterns: str) -> str:
    with pytest.raises(InputDataError) as info:
        synchronize([manifest], out)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, message
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no temporary leftovers
    return message


def test_a_clean_station_synchronises(tmp_path):
    summary = synchronize([write_station(tmp_path / "s")], tmp_path / "out")
    assert summary["pairs"] == len(TIMES)
    assert summary["devices"]["cam"]["offset_s"] == pytest.approx(OFFSET)


def test_unreadable_audio(tmp_path):
    manifest = write_station(tmp_path / "s")
    (tmp_path / "s" / "audio" / "a2.wav").write_bytes(b"RIFF not really a wave file" * 10)
    expect_error(manifest, tmp_path / "out", "row 5", "a2.wav", "cannot read audio")


def test_empty_audio(tmp_path):
    manifest = write_station(tmp_path / "s")
    soundfile.write(tmp_path / "s" / "audio" / "a1.wav", np.zeros(0), 8000)
    expect_error(manifest, tmp_path / "out", "a1.wav", "no samples")


def test_zero_byte_file(tmp_path):
    manifest = write_station(tmp_path / "s")
    (tmp_path / "s" / "images" / "i3.png").write_bytes(b"")
    expect_error(manifest, tmp_path / "out", "row 8", "i3.png", "empty file")


def test_unsupported_format(tmp_path):
    manifest = write_station(tmp_path / "s")
    edit_manifest(manifest, 4, "file", "audio/a2.mp3")
    expect_error(manifest, tmp_path / "out", "row 5", "a2.mp3", "unsupported format '.mp3'")


def test_missing_timestamp(tmp_path):
    manifest = write_station(tmp_path / "s")
    edit_manifest(manifest, 6, "time", None)
    expect_error(manifest, tmp_path / "out", f"{manifest}: row 7", "time is missing")


def test_unparseable_timestamp(tmp_path):
    manifest = write_station(tmp_path / "s")
    edit_manifest(manifest, 2, "time", "half past nine")
    expect_error(manifest, tmp_path / "out", "row 3", "unparseable ('half past nine')")


def test_iso_timestamps_are_read_as_seconds(tmp_path):
    manifest = write_station(tmp_path / "s")
    table = pd.read_csv(manifest)
    stamps = pd.Timestamp("2024-05-01T06:00:00Z") + pd.to_timedelta(table["time"], unit="s")
    table["time"] = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    table.to_csv(manifest, index=False)
    summary = synchronize([manifest], tmp_path / "out")
    assert summary["devices"]["cam"]["offset_s"] == pytest.approx(OFFSET, abs=1e-6)


def test_missing_file(tmp_path):
    manifest = write_station(tmp_path / "s")
    (tmp_path / "s" / "images" / "i4.png").unlink()
    expect_error(manifest, tmp_path / "out", "row 10", "i4.png", "file not found")


def test_device_without_matches(tmp_path):
    manifest = write_station(tmp_path / "s")
    table = pd.read_csv(manifest)
    extra = pd.DataFrame(
        {
            "device": "cam2",
            "file": ["images/i0.png", "images/i1.png"],
            "time": [1000.0, 1040.0],
        }
    )
    pd.concat([table, extra]).to_csv(manifest, index=False)
    expect_error(manifest, tmp_path / "out", str(manifest), "device 'cam2'", "none of its 2")


def test_a_file_that_breaks_after_synchronisation_fails_prepare(tmp_path):
    manifest = write_station(tmp_path / "s")
    synchronize([manifest], tmp_path / "sync")
    (tmp_path / "s" / "audio" / "a3.wav").write_bytes(b"garbage" * 20)
    with pytest.raises(InputDataError, match=r"row 7: .*a3\.wav: cannot read audio"):
        AudioImageAdapter(str(tmp_path / "sync")).read()


def test_single_files_name_a_bad_file_by_its_position(tmp_path):
    manifest = write_station(tmp_path / "s")
    clip, picture = manifest.parent / "audio/a0.wav", manifest.parent / "images/i0.png"
    (tmp_path / "notes.txt").write_text("not a recording")
    with pytest.raises(InputDataError, match=r"params.files\[2\]: .*notes.txt: unsupported format"):
        AudioImageAdapter(files=[str(clip), str(picture), str(tmp_path / "notes.txt")]).read()
    with pytest.raises(
        InputDataError, match=r"params.files\[1\]: .*gone.wav: audio file not found"
    ):
        AudioImageAdapter(files=[str(picture), str(tmp_path / "gone.wav")]).read()


def test_single_files_embed_but_do_not_train(tmp_path):
    from scicontrast.data_adapters.audio_image.pairs import SynchronizedPairs
    from scicontrast.data_adapters.base import load_items

    manifest = write_station(tmp_path / "s")
    items = AudioImageAdapter(
        files=[str(manifest.parent / "images/i1.png"), str(manifest.parent / "audio/a1.wav")],
        clip_seconds=0.5,
        image_size=12,
    ).read()
    assert items.table["modality"].tolist() == ["image", "audio"]
    assert items.extras["audio"].shape == (1, 4000)
    assert items.extras["images"].shape == (1, 1, 12, 12)
    assert items.table["duration_s"].iloc[1] == pytest.approx(0.1)
    with pytest.raises(InputDataError, match="no events to pair"):
        SynchronizedPairs().build(items)
    items.save(tmp_path / "items")  # loaded with the builder's columns, it still embeds
    loaded = load_items(tmp_path / "items", SynchronizedPairs())
    batch = next(iter(SynchronizedPairs().embedding_batches(loaded, 4)))
    assert batch.is_audio.tolist() == [False, True] and batch.audio.shape == (1, 4000)


@pytest.mark.parametrize("sources", [{}, {"synchronization": "s", "files": ["a.wav"]}])
def test_the_adapter_reads_a_synchronisation_or_files(sources):
    from scicontrast.errors import ConfigError

    with pytest.raises(ConfigError, match=r"params\.synchronization .* or params\.files"):
        AudioImageAdapter(**sources)
