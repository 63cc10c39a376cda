"""The AV-MNIST field simulation on the real data (FSDD x MNIST): timelines and pairing.

The IDX reader, the pooling of validation speakers and the scoring of ensemble members are
tested without data. The ``slow`` tests read ``../shared/data/fsdd`` and
``../shared/data/mnist_test`` and skip when they are absent; counts are those of DATA.md.
"""

from __future__ import annotations

import gzip
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import load_benchmark

from scicontrast.data_adapters.audio_image.reading import AudioImageAdapter
from scicontrast.data_adapters.audio_image.synchronization import synchronize
from scicontrast.models.ensemble import EnsembleHead

benchmark = load_benchmark("av_mnist")


def test_idx_reader(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())
    assert np.array_equal(benchmark.read_idx(path), array)


def scores(events: int, a2i: float, i2a: float, zero: float) -> dict:
    retrieval = {"audio_to_image": {"class_r1": a2i}, "image_to_audio": {"class_r1": i2a}}
    return {"events": events, "retrieval": retrieval, "zero_shot": {"accuracy": zero}}


def report(metrics: dict, members: list[dict] = ()) -> dict:
    return {"metrics": metrics, "members": list(members), "experiment": {"training": {"seed": 3}}}


def test_cross_validation_pools_the_speakers_by_their_events():
    table = benchmark.format_cross_validation(
        {"a": report(scores(300, 0.5, 0.6, 0.7)), "b": report(scores(100, 0.9, 1.0, 0.3))},
        markdown=True,
    )
    *_, pooled = table.splitlines()
    assert pooled == "| all (pooled) | 400 | 60.00 % | 70.00 % | 60.00 % |"


def test_cross_validation_pools_each_ensemble_member_on_its_own():
    reports = {
        "a": report(
            scores(300, 0.5, 0.5, 0.5), [scores(300, 0.1, 0.2, 0.3), scores(300, 0.4, 0.4, 0.4)]
        ),
        "b": report(
            scores(100, 0.9, 0.9, 0.9), [scores(100, 0.5, 0.6, 0.7), scores(100, 0.8, 0.8, 0.8)]
        ),
    }
    *_, ensemble, first, second = benchmark.format_cross_validation(
        reports, markdown=True
    ).splitlines()
    assert ensemble == "| all (pooled) | 400 | 60.00 % | 60.00 % | 60.00 % |"
    assert first == "| all (pooled), member 0 (seed 3) | 400 | 20.00 % | 30.00 % | 40.00 % |"
    assert second == "| all (pooled), member 1 (seed 4) | 400 | 50.00 % | 50.00 % | 50.00 % |"


def test_an_ensemble_is_scored_in_its_joint_space_and_in_each_member_s():
    torch.manual_seed(0)
    heads = [torch.nn.Linear(3, 2), torch.nn.Linear(5, 4)]
    model = SimpleNamespace(head=EnsembleHead(heads, [3, 5]))
    h = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    joint, first, second = benchmark.joint_spaces(model, h)
    with torch.no_grad():
        np.testing.assert_allclose(first, heads[0](torch.from_numpy(h[:, :3])).numpy())
        np.testing.assert_allclose(second, heads[1](torch.from_numpy(h[:, 3:])).numpy())
        np.testing.assert_allclose(joint, model.head(torch.from_numpy(h)).numpy())
    (single,) = benchmark.joint_spaces(SimpleNamespace(head=heads[0]), h[:, :3])
    np.testing.assert_allclose(single, first)


@pytest.mark.real_data
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
