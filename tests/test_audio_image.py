"""Audio-image domain: synchronisation, audio reading, log-mel, two towers, CLIP loss, metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
import torch.nn.functional as F

from scicontrast.analysis.retrieval import retrieval_metrics, zero_shot_accuracy
from scicontrast.data_adapters.audio_image.demo import generate_demo_audio_image
from scicontrast.data_adapters.audio_image.pairs import SynchronizedPairs
from scicontrast.data_adapters.audio_image.reading import (
    AudioImageAdapter,
    fit_length,
    read_audio,
    resample,
)
from scicontrast.data_adapters.audio_image.synchronization import (
    estimate_offset,
    match_events,
    synchronize,
)
from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment
from scicontrast.models.audio_image import (
    LogMelSpectrogram,
    TwoTowerEncoder,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    vtlp_warp,
)
from scicontrast.models.losses import InfoNCELoss

# --- offsets and matching ------------------------------------------------------------------


def event_times(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(1.0 + rng.exponential(1.5, n))


@pytest.mark.parametrize("offset", [3.3, -7.25, 0.0])
def test_offset_estimate_recovers_a_known_offset(offset):
    rng = np.random.default_rng(1)
    truth = event_times(300, 0)
    reference = truth + rng.normal(0, 0.03, len(truth))
    device = truth - offset + rng.normal(0, 0.03, len(truth))
    estimate = estimate_offset(reference, device, tolerance_s=0.2, max_offset_s=10.0)
    assert estimate.offset_s == pytest.approx(offset, abs=0.01)
    assert estimate.matches == 300
    # a random lag lines up far fewer events than the true one
    assert estimate.runner_up_matches < 0.4 * estimate.matches


def test_offset_outside_the_search_range_is_not_found():
    truth = event_times(200, 2)
    estimate = estimate_offset(truth, truth - 30.0, tolerance_s=0.2, max_offset_s=10.0)
    assert abs(estimate.offset_s) <= 10.0
    assert estimate.matches < 0.5 * len(truth)


def test_matching_is_one_to_one_and_nearest_first():
    audio = np.array([0.0, 0.1, 5.0, 9.0])
    images = np.array([0.08, 5.3, 20.0])
    a, i = match_events(audio, images, tolerance_s=0.25)
    # image 0 is nearer to audio 1 (0.02) than to audio 0 (0.08); 5.3 is beyond the tolerance
    assert a.tolist() == [1] and i.tolist() == [0]
    a, i = match_events(audio, images, tolerance_s=0.5)
    assert a.tolist() == [1, 2] and i.tolist() == [0, 1]


# --- synchronisation on a simulated timeline ------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    manifest = generate_demo_audio_image(out, events=48, classes=3, clock_offset_s=-4.2, seed=3)
    return manifest


@pytest.fixture(scope="module")
def synced(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("sync") / "sync"
    summary = synchronize([demo], out, truth_column="true_event", max_offset_s=8.0)
    return out, summary


def test_synchronisation_pairs_the_simulated_events(demo, synced):
    out, summary = synced
    manifest = pd.read_csv(demo)
    assert summary["reference_device"] == "microphone"
    assert summary["devices"]["camera"]["offset_s"] == pytest.approx(-4.2, abs=0.05)
    assert summary["pairing"]["precision"] == 1.0
    assert summary["pairing"]["recall"] == 1.0
    both = set(manifest.loc[manifest.device == "camera", "true_event"]) & set(
        manifest.loc[manifest.device == "microphone", "true_event"]
    )
    assert summary["pairs"] == len(both)
    unmatched = pd.read_parquet(out / "unmatched.parquet")
    assert len(unmatched) == len(manifest) - 2 * len(both) > 0
    assert summary["unmatched"]["audio"] + summary["unmatched"]["image"] == len(unmatched)
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert (pairs["time_difference_s"].abs() <= 0.25).all()
    assert (pairs["audio_label"] == pairs["image_label"]).all()
    assert (out / "time_differences.png").stat().st_size > 1000
    assert json.loads((out / "offsets.json").read_text()) == summary


def test_pairing_precision_degrades_with_jitter_beyond_the_tolerance(tmp_path):
    manifest = generate_demo_audio_image(tmp_path / "d", events=60, jitter_s=0.3, seed=5)
    summary = synchronize([manifest], tmp_path / "s", truth_column="true_event")
    assert summary["pairing"]["recall"] < 0.9


def test_adapter_reads_paired_items(synced):
    out, summary = synced
    items = AudioImageAdapter(str(out), sample_rate=8000, clip_seconds=0.5, image_size=20).read()
    table = items.table
    assert (table["modality"] == "audio").sum() == (table["modality"] == "image").sum()
    assert items.extras["audio"].shape == (summary["pairs"], 4000)
    assert items.extras["images"].shape == (summary["pairs"], 1, 20, 20)
    assert items.meta["synchronization"]["pairs"] == summary["pairs"]
    # the demo records 0.6 s at 16 kHz: read back at 8 kHz
    audio = table[table["modality"] == "audio"]
    assert np.allclose(audio["duration_s"], 0.6)


# --- audio reading -----------------------------------------------------------------------


def test_stereo_is_down_mixed_and_resampled(tmp_path):
    rate, seconds, pitch = 16000, 0.5, 440.0
    t = np.arange(int(rate * seconds)) / rate
    left = np.sin(2 * np.pi * pitch * t)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, 0.5 * left], axis=1), rate, subtype="FLOAT")
    mono = read_audio(path, 8000)
    assert mono.shape == (4000,)
    spectrum = np.abs(np.fft.rfft(mono))
    assert np.fft.rfftfreq(len(mono), 1 / 8000)[np.argmax(spectrum)] == pytest.approx(pitch, abs=2)
    # mean of the channels: amplitude 0.75, kept by the low-pass (440 Hz << 4 kHz)
    assert np.abs(mono[500:-500]).max() == pytest.approx(0.75, abs=0.01)


def test_resampling_keeps_a_tone_and_removes_what_the_new_rate_cannot_hold():
    t = np.arange(48000) / 48000
    low, high = np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 10000 * t)
    down = resample(low + high, 48000, 8000)
    expected = resample(low, 48000, 8000)
    assert len(down) == 8000
    assert np.abs(down - expected)[200:-200].max() < 0.01
    assert np.abs(expected[200:-200] - np.sin(2 * np.pi * 300 * t[::6][200:-200])).max() < 0.01


def test_fit_length_keeps_the_centre():
    signal = np.arange(10, dtype=np.float32)
    assert fit_length(signal, 4).tolist() == [3, 4, 5, 6]
    assert fit_length(signal[:2], 6).tolist() == [0, 0, 0, 1, 0, 0]


# --- log-mel -----------------------------------------------------------------------------


def test_mel_scale_round_trips_and_filters_are_htk_triangles():
    frequencies = torch.tensor([0.0, 700.0, 3999.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(frequencies)), frequencies)
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    filters = mel_filterbank(129, 20, 8000)
    assert filters.shape == (129, 20)
    assert (filters >= 0).all() and filters.max() <= 1.0 + 1e-6
    points = mel_to_hz(torch.linspace(0, float(hz_to_mel(4000.0)), 22)).float()
    # filter j peaks at 1 on the (j + 1)-th point
    bins = torch.linspace(0, 4000, 129)
    assert torch.allclose(bins[filters.argmax(dim=0)], points[1:-1], atol=4000 / 128 / 2 + 1e-3)
    # neighbouring triangles sum to 1 between the first and the last centre
    inner = (bins >= points[1]) & (bins <= points[-2])
    assert torch.allclose(filters[inner].sum(dim=1), torch.ones(int(inner.sum())), atol=1e-5)
    slaney = mel_filterbank(129, 20, 8000, norm="slaney")
    assert torch.allclose(slaney, filters * 2 / (points[2:] - points[:-2]), rtol=1e-5, atol=1e-9)


def test_log_mel_matches_a_numpy_computation():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(2, 1000)).astype(np.float32)
    n_fft, hop = 128, 40
    module = LogMelSpectrogram(8000, n_fft, hop, n_mels=16, eps=1e-6)
    got = module(torch.from_numpy(signal)).numpy()
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    padded = np.pad(signal, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    frames = 1 + (padded.shape[1] - n_fft) // hop
    expected = np.empty((2, 16, frames))
    filters = mel_filterbank(n_fft // 2 + 1, 16, 8000).numpy().astype(np.float64)
    for f in range(frames):
        chunk = padded[:, f * hop : f * hop + n_fft] * window
        power = np.abs(np.fft.rfft(chunk, axis=1)) ** 2
        expected[:, :, f] = np.log(power @ filters + 1e-6)
    assert got.shape == (2, 16, 1 + 1000 // hop)
    assert np.allclose(got, expected, atol=1e-3)


def test_a_pure_tone_peaks_in_its_mel_band():
    rate, pitch = 8000, 1000.0
    t = torch.arange(rate) / rate
    module = LogMelSpectrogram(rate, 256, 80, n_mels=32)
    spectrogram = module(torch.sin(2 * np.pi * pitch * t)[None])[0]
    band = int(spectrogram.mean(dim=1).argmax())
    centres = mel_to_hz(torch.linspace(0, hz_to_mel(rate / 2), 34))[1:-1]
    assert band == int(torch.argmin((centres - pitch).abs()))


def test_vtlp_warp_is_the_piecewise_linear_map():
    nyquist = 4000.0
    frequencies = torch.linspace(0, nyquist, 129)
    alpha = torch.tensor([0.9, 1.0, 1.1])
    warped = vtlp_warp(frequencies, alpha, nyquist)
    assert torch.allclose(warped[1], frequencies.double())
    assert torch.allclose(warped[:, 0], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(warped[:, -1], torch.full((3,), nyquist, dtype=torch.float64))
    assert (warped.diff(dim=1) > 0).all()  # monotone: no two bins swap
    # Below the boundary 0.8 N min(alpha, 1) / alpha the warp is a pure scaling.
    for row, a in enumerate(alpha.tolist()):
        below = frequencies <= 0.8 * nyquist * min(a, 1.0) / a
        assert torch.allclose(warped[row, below], a * frequencies[below].double())
    # Continuous at the boundary: the two pieces meet.
    a, boundary = 1.1, 0.8 * nyquist / 1.1
    just_above = vtlp_warp(torch.tensor([boundary + 1e-6]), torch.tensor([a]), nyquist)
    assert float(just_above) == pytest.approx(a * boundary, abs=1e-3)


def test_a_vtlp_warp_moves_a_tone_to_the_band_of_the_scaled_pitch():
    rate = 8000
    t = torch.arange(rate) / rate
    module = LogMelSpectrogram(rate, 256, 80, n_mels=32)
    tone = torch.sin(2 * np.pi * 1000.0 * t)[None]
    higher = torch.sin(2 * np.pi * 1200.0 * t)[None]
    warped = module(tone, warp=torch.tensor([1.2]))
    assert int(warped[0].mean(dim=1).argmax()) == int(module(higher)[0].mean(dim=1).argmax())
    assert int(warped[0].mean(dim=1).argmax()) != int(module(tone)[0].mean(dim=1).argmax())
    # alpha = 1 is no warp at all
    assert torch.allclose(module(tone, warp=torch.ones(1)), module(tone), atol=1e-5)


def test_vtlp_warps_training_clips_only_and_each_clip_on_its_own():
    torch.manual_seed(0)
    warping = TwoTowerEncoder(n_mels=20, vtlp=0.2)
    waveforms = torch.randn(2, 4000).repeat(2, 1)  # clips 0, 2 and 1, 3 are the same sound
    with torch.no_grad():
        trained = warping.train().embed_audio(waveforms)
    assert (trained[0] - trained[2]).abs().max() > 1e-4  # two draws of alpha
    plain = TwoTowerEncoder(n_mels=20)
    plain.load_state_dict(warping.state_dict())
    warping.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(warping.embed_audio(waveforms), plain.embed_audio(waveforms))


@pytest.mark.parametrize("vtlp", [-0.1, 0.5, True, "0.1"])
def test_an_out_of_range_vtlp_is_refused(vtlp):
    with pytest.raises(ConfigError, match="vtlp"):
        TwoTowerEncoder(vtlp=vtlp)


# --- two towers and the CLIP loss ----------------------------------------------------------


def test_symmetric_loss_is_the_mean_of_both_cross_entropies():
    torch.manual_seed(0)
    a, b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    loss = InfoNCELoss(temperature=0.07).symmetric(a, b).loss
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.07
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert torch.allclose(loss, expected, atol=1e-12, rtol=0)


def test_encoder_returns_rows_in_batch_order(synced):
    out, _ = synced
    items = AudioImageAdapter(str(out), clip_seconds=0.5, image_size=20).read()
    encoder = TwoTowerEncoder(embedding_dim=8, n_mels=16, image_pool=[2, 2]).eval()
    builder = SynchronizedPairs()
    with torch.no_grad():
        mixed = torch.cat([encoder(b) for b in builder.embedding_batches(items, 7)])
        audio = encoder.embed_audio(torch.from_numpy(items.extras["audio"]))
        images = encoder.embed_images(torch.from_numpy(items.extras["images"]))
    table = items.table
    for modality, expected in (("audio", audio), ("image", images)):
        rows = np.flatnonzero(table["modality"] == modality)
        order = table["modality_row"].to_numpy()[rows]
        assert torch.allclose(mixed[rows], expected[order], atol=1e-5)
    batch = next(builder.embedding_batches(items, 4))
    batch.sample_rate = 16000
    with pytest.raises(ValueError, match="16000 Hz"):
        encoder(batch)


def test_training_batches_pair_the_towers_and_replay_exactly(synced):
    out, _ = synced
    items = AudioImageAdapter(str(out), clip_seconds=0.5, image_size=20).read()
    builder = SynchronizedPairs(audio_shift_s=0.05, audio_gain_db=6, image_shift=2)
    pairs = builder.build(items)
    views = pairs.groupby("group_id")["view"].apply(lambda v: tuple(sorted(v)))
    assert set(views) == {("audio", "image")}
    batches = builder.training_batches(items, pairs, seed=4, batch_size=8)
    batches.set_epoch(2)
    first = list(batches)
    assert len(first) == len(batches) == pairs["group_id"].nunique() // 8
    batch, group_ids = first[1].inputs, first[1].group_ids
    audio_rows, image_rows = first[1].towers
    assert torch.equal(group_ids[audio_rows], group_ids[image_rows])
    assert batch.is_audio[audio_rows].all() and not batch.is_audio[image_rows].any()
    batches.set_epoch(2, start_batch=1)
    again = next(iter(batches)).inputs
    assert torch.equal(again.audio, batch.audio) and torch.equal(again.images, batch.images)
    batches.set_epoch(3)
    assert not torch.equal(next(iter(batches)).inputs.audio, first[0].inputs.audio)


def test_training_uses_the_symmetric_loss(synced, tmp_path):
    """Two towers: each anchor is contrasted with the other tower's B - 1 non-partners."""
    from scicontrast.config import validate_config
    from scicontrast.models.train import train

    out, _ = synced
    items = AudioImageAdapter(str(out), clip_seconds=0.5, image_size=20).read()
    items.save(tmp_path / "items")
    pairs = SynchronizedPairs().build(items)
    pairs.to_parquet(tmp_path / "pairs.parquet")
    config = validate_config(
        {
            "experiments": {
                "t": {
                    "adapter": {"name": "audio_image", "params": {"synchronization": str(out)}},
                    "pairs": {"name": "synchronized_pairs"},
                    "encoder": {
                        "name": "two_tower",
                        "params": {"embedding_dim": 8, "n_mels": 16, "image_pool": [2, 2]},
                    },
                    "head": {"hidden_dim": 8, "output_dim": 8},
                    "loss": {"learnable_temperature": True},
                    "training": {"epochs": 2, "batch_size": 8, "device": "cpu"},
                }
            }
        }
    )
    experiment = {"name": "t", **config["experiments"]["t"]}
    train(
        Experiment.from_dict(experiment),
        tmp_path / "items",
        tmp_path / "pairs.parquet",
        tmp_path / "m",
        progress=False,
    )
    steps = [
        json.loads(line)
        for line in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "step"
    ]
    assert {s["num_negatives"] for s in steps} == {7.0}
    assert steps[-1]["temperature"] != pytest.approx(0.1, abs=1e-9)  # learnable, and learned


# --- retrieval metrics -------------------------------------------------------------------


def test_retrieval_metrics_on_known_geometry():
    audio = np.eye(4)
    images = np.eye(4)[[1, 0, 2, 3]]  # images of events 0 and 1 swapped
    labels = np.array(["a", "a", "b", "c"])
    result = retrieval_metrics(audio, images, np.arange(4), labels, labels)
    assert result["exact_r1"] == 0.5
    assert result["class_r1"] == 1.0
    assert result["exact_r5"] == 1.0
    assert result["class_r1_chance"] == pytest.approx((2 / 4 * 2 + 1 / 4 * 2) / 4)


def test_zero_shot_uses_class_prototypes():
    images = np.array([[1.0, 0.1], [1.0, -0.1], [0.0, 1.0]])
    audio = np.array([[0.9, 0.2], [0.1, 1.0], [0.2, 1.0]])
    result = zero_shot_accuracy(audio, ["x", "y", "x"], images, ["x", "x", "y"])
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["balanced_accuracy"] == pytest.approx(0.75)


def test_spec_augment_masks_one_band_and_stretch_in_training_only():
    torch.manual_seed(0)
    encoder = TwoTowerEncoder(n_mels=20, freq_mask=5, time_mask=7)
    keep = encoder._keep_mask(torch.zeros(64, 20, 30))
    hidden_bands = (keep == 0).all(dim=2).sum(dim=1)
    hidden_frames = (keep == 0).all(dim=1).sum(dim=1)
    assert hidden_bands.max() == 5 and hidden_frames.max() == 7 and hidden_bands.min() == 0
    # the hidden bands of a clip are contiguous
    rows = (keep[0] == 0).all(dim=1).nonzero().flatten()
    assert rows.numel() == 0 or (rows.max() - rows.min() + 1) == rows.numel()
    waveforms = torch.randn(2, 4000)
    encoder.eval()
    assert torch.equal(encoder.embed_audio(waveforms), encoder.embed_audio(waveforms))


class _LogMelPassThrough(torch.nn.Module):
    """Stands in for the log-mel front end when a test feeds log-mel images directly."""

    def forward(self, spectrogram: torch.Tensor, warp: torch.Tensor | None = None):
        return spectrogram


@pytest.mark.parametrize("spectrogram_norm", ["clip", "band"])
def test_band_norm_removes_a_fixed_coloration_of_the_spectrum(spectrogram_norm):
    torch.manual_seed(0)
    encoder = TwoTowerEncoder(n_mels=20, spectrogram_norm=spectrogram_norm).eval()
    # Fed log-mel images directly: a microphone's response adds log(gain) to each band.
    encoder.log_mel = _LogMelPassThrough()
    spectrogram = torch.randn(3, 20, 40)
    gain_db = torch.linspace(-12.0, 6.0, 20)[None, :, None]
    coloured = spectrogram + gain_db / 10 * math.log(10)
    with torch.no_grad():
        plain, filtered = encoder.embed_audio(spectrogram), encoder.embed_audio(coloured)
    if spectrogram_norm == "band":
        assert torch.allclose(plain, filtered, atol=1e-5)
    else:
        assert (plain - filtered).abs().max() > 1e-2


def test_an_unknown_spectrogram_norm_is_refused():
    with pytest.raises(ConfigError, match="spectrogram_norm"):
        TwoTowerEncoder(spectrogram_norm="frame")
