"""The AV-MNIST field simulation on the real data (FSDD x MNIST): timelines and pairing.

The IDX reader is tested without data. The ``slow`` tests read ``../shared/data/fsdd`` and
``../shared/data/mnist_test`` and skip when they are absent; counts are those of DATA.md.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import load_benchmark

from scicontrast.data_adapters.audio_image import AudioImageAdapter, synchronize

benchmark = load_benchmark("av_mnist")


def test_idx_reader(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())
    assert np.array_equal(benchmark.read_idx(path), array)


def test_cross_validation_pools_the_speakers_by_their_events():
    def report(events, a2i, i2a, zero):
        retrieval = {"audio_to_image": {"class_r1": a2i}, "image_to_audio": {"class_r1": i2a}}
        return {
            "metrics": {"events": events, "retrieval": retrieval, "zero_shot": {"accuracy": zero}}
        }

    table = benchmark.format_cross_validation(
        {"a": report(300, 0.5, 0.6, 0.7), "b": report(100, 0.9, 1.0, 0.3)}, markdown=True
    )
    *_, pooled = table.splitlines()
    assert pooled == "| all (pooled) | 400 | 60.00 % | 70.00 % | 60.00 % |"


@pytest.mark.slow
def test_simulated_field_session_pairs_by_timestamp(shared_data, tmp_path):
    mnist = shared_data / "mnist_test"
    images = benchmark.read_idx(mnist / "t10k-images-idx3-ubyte.gz")
    labels = benchmark.read_idx(mnist / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    recordings = sorted((shared_data / "fsdd" / "recordings").glob("*_theo_*.wav"))
    assert len(recordings) == 500
    indices = np.arange(5000, 10000)
    microphone, camera = benchmark.field_timeline(
        recordings[::5], images, labels[indices], indices, tmp_path, 3.7, 0.05, seed=0
    )
    # the image shown at an event has the spoken digit
    shown = camera["file"].str.extract(r"mnist_(\d+)\.png")[0].astype(int)
    assert (labels[shown] == camera["label"]).all()
    paths = benchmark.write_manifests((microphone, camera), tmp_path)
    summary = synchronize(paths, tmp_path / "sync", truth_column="true_event")
    assert summary["devices"]["camera"]["offset_s"] == pytest.approx(3.7, abs=0.02)
    assert summary["pairing"]["precision"] >= 0.99
    items = AudioImageAdapter(str(tmp_path / "sync"), sample_rate=8000, clip_seconds=1.0).read()
    assert items.extras["audio"].shape == (summary["pairs"], 8000)
    assert items.extras["images"].shape == (summary["pairs"], 1, 28, 28)
    audio = items.table[items.table["modality"] == "audio"]
    assert set(audio["speaker"]) == {"theo"}
    assert audio["duration_s"].between(0.1, 2.5).all()
