"""Classical features and the verdict that sets the embedding beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from scicontrast.analysis.baselines import (
    CLASSICAL,
    TRAINED,
    UNTRAINED,
    compare,
    format_verdict,
    metric_summary,
    verdicts,
)
from scicontrast.data_adapters.classical import (
    ClassicalFeatures,
    kmer_features,
    lbp_histograms,
    mfcc_statistics,
    propagated_features,
    raw_pixels,
    zscore,
)
from scicontrast.data_adapters.dna.encoding import encode_codes, reverse_complement
from scicontrast.data_adapters.dna.kmers import kmer_frequencies


def _codes(sequences: list[str]) -> np.ndarray:
    return np.stack([encode_codes(s) for s in sequences])


# ---------------------------------------------------------------- classical features


def test_canonical_kmer_frequencies_are_the_same_on_both_strands():
    rng = np.random.default_rng(0)
    forward = ["".join(rng.choice(list("ACGT"), 60)) for _ in range(5)]
    backward = [reverse_complement(s) for s in forward]
    canonical = kmer_frequencies(_codes(forward), 4, canonical=True)
    assert canonical.shape == (5, 136)  # (4^4 + 4^2) / 2 words up to reverse complement
    np.testing.assert_allclose(canonical, kmer_frequencies(_codes(backward), 4, canonical=True))
    assert not np.allclose(
        kmer_frequencies(_codes(forward), 4), kmer_frequencies(_codes(backward), 4)
    )
    np.testing.assert_allclose(canonical.sum(axis=1), 1.0)


def test_kmer_frequencies_by_hand():
    # ACGTT: words AC CG GT TT; canonical AC~GT, CG palindrome, TT~AA.
    plain = kmer_frequencies(_codes(["ACGTT"]), 2)[0]
    words = [a + b for a in "ACGT" for b in "ACGT"]  # the numbering: first base most significant
    assert {w: f for w, f in zip(words, plain, strict=True) if f} == {
        "AC": 0.25, "CG": 0.25, "GT": 0.25, "TT": 0.25
    }  # fmt: skip
    canonical = kmer_frequencies(_codes(["ACGTT"]), 2, canonical=True)[0]
    assert sorted(canonical[canonical > 0]) == [0.25, 0.25, 0.5]


def test_kmer_features_are_zscored_and_skip_windows_shorter_than_k():
    rng = np.random.default_rng(1)
    codes = _codes(["".join(rng.choice(list("ACGT"), 40)) for _ in range(30)])
    features = kmer_features(codes, 3, canonical=False).features
    varying = features.std(axis=0) > 0
    np.testing.assert_allclose(features[:, varying].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(features[:, varying].std(axis=0), 1)
    short = kmer_features(codes[:, :3], 4, canonical=True)
    assert short.features is None and "shorter than k = 4" in short.skipped


def test_zscore_leaves_constant_columns_at_zero():
    out = zscore(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(out, [[-1.0, 0.0], [1.0, 0.0]])


def test_lbp_is_invariant_to_quarter_turns_and_sees_texture():
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, size=(1, 1, 48, 48), dtype=np.uint8)
    stripes = np.tile((np.arange(48) % 6 < 3).astype(np.uint8) * 200, (48, 1))[None, None]
    images = np.concatenate([noise, np.rot90(noise, axes=(2, 3)), stripes])
    lbp = lbp_histograms(images).features
    assert lbp.shape == (3, 10 + 18 + 26)
    np.testing.assert_allclose(lbp[0], lbp[1], atol=1e-12)
    assert np.abs(lbp[0] - lbp[2]).sum() > 0.5
    np.testing.assert_allclose(lbp.reshape(3, -1).sum(axis=1), 3.0)  # three histograms


def test_images_too_small_for_lbp_are_skipped_with_the_reason():
    skipped = lbp_histograms(np.zeros((4, 1, 5, 5), np.uint8))
    assert skipped.features is None and "5 x 5 px" in skipped.skipped and "3 px" in skipped.skipped
    assert raw_pixels(np.zeros((4, 1, 5, 5), np.uint8)).features.shape == (4, 32 * 32)


def test_sgc_features_equal_the_dense_normalised_adjacency_power():
    edges = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    adjacency = torch.zeros(4, 4, dtype=torch.float64)
    adjacency[edges[0], edges[1]] = 1
    a_hat = adjacency + torch.eye(4, dtype=torch.float64)
    d = a_hat.sum(1).rsqrt()
    s = d[:, None] * a_hat * d[None, :]
    expected = (s @ s @ x.double()).numpy()
    np.testing.assert_allclose(propagated_features(x, edges, hops=2).features, expected, atol=1e-12)
    # teleport a: P <- (1 - a) S P + a X, ten times
    ppr = x.double()
    for _ in range(10):
        ppr = 0.9 * s @ ppr + 0.1 * x.double()
    np.testing.assert_allclose(
        propagated_features(x, edges, hops=10, teleport=0.1).features, ppr.numpy(), atol=1e-12
    )
    constant = propagated_features(torch.ones(4, 3), edges)
    assert constant.features is None and "no informative node features" in constant.skipped


def test_mfcc_of_a_louder_clip_differs_only_in_the_energy_coefficient():
    t = np.arange(4000) / 8000
    noise = np.random.default_rng(3).normal(scale=0.1, size=t.size)  # energy in every band
    tone = np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1300 * t) + noise
    features = mfcc_statistics(np.stack([tone, 4.0 * tone]), 8000).features
    assert features.shape == (2, 26)
    # A gain g adds 2 log g to every log-mel bin: only the DCT's constant term c0 moves.
    assert features[1, 0] - features[0, 0] == pytest.approx(2 * np.log(4.0) * np.sqrt(40), 1e-4)
    np.testing.assert_allclose(features[1, 1:13], features[0, 1:13], atol=1e-4)
    np.testing.assert_allclose(features[1, 13:], features[0, 13:], atol=1e-4)
    assert mfcc_statistics(np.zeros((2, 100)), 8000).skipped is not None


def test_classical_features_hold_features_or_a_reason():
    with pytest.raises(ValueError):
        ClassicalFeatures("x")
    with pytest.raises(ValueError):
        ClassicalFeatures("x", np.zeros((1, 1)), "and a reason")


# ---------------------------------------------------------------- verdicts


def _row(name, kind, probe, ari):
    return {
        "name": name,
        "kind": kind,
        "scores": {"probe": metric_summary(probe), "ARI": metric_summary(ari)},
    }


def test_verdict_uses_the_best_classical_row_and_paired_split_differences():
    rows = [
        _row("trained", TRAINED, [0.90, 0.92, 0.94], 0.50),
        _row("untrained", UNTRAINED, [0.80, 0.82, 0.84], 0.60),
        _row("weak", CLASSICAL, [0.50, 0.50, 0.50], 0.70),
        _row("strong", CLASSICAL, [0.91, 0.91, 0.97], 0.10),
    ]
    found = {v["metric"]: v for v in verdicts(rows)}
    probe, ari = found["probe"], found["ARI"]
    assert probe["classical"]["name"] == "strong"  # best mean on the probe
    assert probe["classical"]["difference"] == pytest.approx((-0.01 + 0.01 - 0.03) / 3)
    assert probe["classical"]["spread"] == pytest.approx(np.std([-0.01, 0.01, -0.03]))
    assert not probe["classical"]["beats"]
    assert probe["untrained"]["difference"] == pytest.approx(0.10) and probe["untrained"]["beats"]
    assert probe["untrained"]["spread"] == pytest.approx(0.0, abs=1e-12)
    assert ari["classical"]["name"] == "weak"  # best mean on ARI, another row
    assert (
        ari["classical"]["difference"] == pytest.approx(-0.20)
        and ari["classical"]["spread"] is None
    )


def test_verdict_lines_say_beats_or_not_with_points():
    rows = [
        _row("trained", TRAINED, [0.90, 0.92], 0.50),
        _row("TNF", CLASSICAL, [0.91, 0.90], 0.40),
    ]
    comparison = {"rows": rows, "skipped": [], "verdicts": verdicts(rows)}
    lines = format_verdict(comparison)
    probe = next(line for line in lines if line.strip().startswith("probe"))
    ari = next(line for line in lines if line.strip().startswith("ARI"))
    assert "beats the best classical features, TNF by +0.5 points" in probe
    assert "within the split-to-split spread of ±1.5" in probe
    assert "beats the best classical features, TNF by +10.0 points" in ari
    rows[1]["scores"]["ARI"] = metric_summary(0.55)
    lines = format_verdict({"rows": rows, "skipped": [], "verdicts": verdicts(rows)})
    assert any("ARI 0.500: does NOT beat" in line and "-5.0 points" in line for line in lines)
    rows[1]["scores"]["ARI"] = metric_summary(0.5)
    lines = format_verdict({"rows": rows, "skipped": [], "verdicts": verdicts(rows)})
    assert any("ARI 0.500: ties with the best classical features, TNF" in line for line in lines)


def test_compare_scores_every_row_alike_and_lists_skipped_features():
    def score(features):
        return {"probe": metric_summary([float(features.mean())]), "ARI": metric_summary(0.0)}

    comparison = compare(
        {"probe": metric_summary([0.5]), "ARI": metric_summary(0.1)},
        score,
        [ClassicalFeatures("ones", np.ones((3, 2))), ClassicalFeatures("none", skipped="why")],
        untrained=np.zeros((3, 2)),
    )
    assert [r["kind"] for r in comparison["rows"]] == [TRAINED, UNTRAINED, CLASSICAL]
    assert comparison["rows"][2]["scores"]["probe"]["mean"] == 1.0
    assert comparison["skipped"] == [{"name": "none", "reason": "why"}]


# ---------------------------------------------------------------- audio-image CCA


def _audio_image_items(events: int = 40, seed: int = 0):
    """Events whose clip is a tone and whose image a bright band, both set by the class."""
    from scicontrast.data_adapters.base import Items

    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, size=events)
    t = np.arange(1600) / 8000
    audio = np.stack(
        [np.sin(2 * np.pi * (300 + 500 * c) * t) + rng.normal(0, 0.05, t.size) for c in classes]
    )
    images = rng.uniform(0, 0.1, size=(events, 1, 16, 16)).astype(np.float32)
    for row, c in enumerate(classes):
        images[row, 0, 4 * c : 4 * c + 4] = 1.0
    table = pd.DataFrame(
        {
            "item_id": [f"{side}{e}" for side in ("a", "i") for e in range(events)],
            "modality": ["audio"] * events + ["image"] * events,
            "event": np.tile(np.arange(events), 2),
            "modality_row": np.tile(np.arange(events), 2),
            "label": np.tile(classes, 2).astype(str),
        }
    )
    meta = {"modality": "audio_image", "sample_rate": 8000}
    return Items(table, meta, extras={"audio": audio.astype(np.float32), "images": images})


def test_cca_joins_mfccs_and_pixels_so_that_classes_retrieve_each_other():
    from scicontrast.analysis.cca_baseline import cca_features
    from scicontrast.analysis.retrieval import audio_image_metrics

    items = _audio_image_items()
    fit_events, test_events = np.arange(30), np.arange(30, 40)
    joint = cca_features(items, fit_events).features
    assert joint.shape[0] == 80
    metrics = audio_image_metrics(items.table, joint, test_events, "label")
    assert metrics["retrieval"]["audio_to_image"]["class_r1"] >= 0.9
    assert metrics["retrieval"]["image_to_audio"]["class_r1"] >= 0.9


def test_cca_with_too_few_events_is_skipped_with_the_reason():
    from scicontrast.analysis.cca_baseline import cca_features

    skipped = cca_features(_audio_image_items(), np.arange(3))
    assert skipped.features is None and "3 complete events" in skipped.skipped


def test_image_features_take_whole_images_of_any_size():
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, size=(1, h, w), dtype=np.uint8) for h, w in ((40, 60), (64, 32))]
    lbp = lbp_histograms(images).features
    assert lbp.shape == (2, 54)
    np.testing.assert_allclose(lbp[1], lbp_histograms(images[1][None]).features[0])
    assert raw_pixels(iter(images)).features.shape == (2, 32 * 32)
