"""InfoNCE diagnostics: each statistic on data whose answer is known, and the whole step."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import small_dna_experiment

from scicontrast.analysis.diagnostics import (
    diagnose,
    knn_label_purity,
    norm_specificity,
    projection_statistics,
    summarise_gaussianity,
)
from scicontrast.analysis.diagnostics_report import diagnostics_table, format_diagnostics
from scicontrast.data_adapters.base import Items, held_out_groups
from scicontrast.data_adapters.dna.views import DNAViews
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model, save_model
from scicontrast.models.contrastive_metrics import similarity_gap


def test_similarity_gap_against_the_effective_margin():
    result = similarity_gap(pos_sim=0.9, neg_sim=0.1, temperature=0.1, num_negatives=math.e**4)
    assert result["similarity_gap"] == pytest.approx(0.8)
    assert result["effective_margin"] == pytest.approx(0.4)
    assert result["gap_over_margin"] == pytest.approx(2.0)
    assert similarity_gap(0.5, 0.0, 0.1, 1.0)["gap_over_margin"] is None


def test_gaussian_points_sit_at_the_noise_floor_and_clusters_do_not():
    rng = np.random.default_rng(0)
    gaussian = summarise_gaussianity(
        projection_statistics(rng.standard_normal((2000, 32)), 200, normalise=False)
    )
    assert gaussian["normality_rejected_fraction"] < 0.12  # 5 % expected
    assert gaussian["mean_abs_excess_kurtosis"] < 0.15
    # Two tight, far-apart clusters: every projection is bimodal (kurtosis near -2).
    centres = rng.standard_normal((2, 32)) * 10
    bimodal = centres[rng.integers(0, 2, size=2000)] + 0.1 * rng.standard_normal((2000, 32))
    clustered = summarise_gaussianity(projection_statistics(bimodal, 200, normalise=False))
    assert clustered["normality_rejected_fraction"] > 0.9
    assert clustered["mean_abs_excess_kurtosis"] > 1.0
    assert clustered["mean_ks_distance"] > 3 * gaussian["mean_ks_distance"]


def test_projection_statistics_skip_degenerate_directions():
    points = np.zeros((50, 4))
    points[:, 0] = np.random.default_rng(1).standard_normal(50)  # rank one
    stats = projection_statistics(points, 10, normalise=False)
    assert np.isfinite(stats["kurtosis"]).all() and len(stats["skew"]) == 10
    assert projection_statistics(points[:10], 5, normalise=False)["normaltest_p"].size == 5


def test_knn_label_purity_is_one_inside_classes_and_low_where_they_mix():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 50)
    separated = np.repeat(np.eye(3) * 20, 50, axis=0) + rng.standard_normal((150, 3))
    assert knn_label_purity(separated, labels, k=10) == pytest.approx(np.ones(150))
    mixed = knn_label_purity(rng.standard_normal((150, 3)), labels, k=10)
    assert mixed.mean() < 0.5
    with pytest.raises(ValueError, match="at least 2 classes"):
        knn_label_purity(separated, np.full(150, "a"))


def test_norm_specificity_is_a_rank_correlation():
    proxy = np.linspace(0, 1, 20)
    assert norm_specificity(np.exp(5 * proxy), proxy)["spearman"] == pytest.approx(1.0)
    assert norm_specificity(-proxy, proxy)["spearman"] == pytest.approx(-1.0)
    with_nan = proxy.copy()
    with_nan[3] = np.nan
    assert norm_specificity(proxy, with_nan)["n"] == 19
    assert norm_specificity(np.ones(20), proxy)["spearman"] is None


def test_held_out_groups_are_seeded_and_sized():
    pairs = pd.DataFrame({"group_id": np.repeat(np.arange(50), 2)})
    chosen = held_out_groups(pairs, 0.2, seed=3)
    assert len(chosen) == 10 and np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(chosen, held_out_groups(pairs, 0.2, seed=3))
    assert not np.array_equal(chosen, held_out_groups(pairs, 0.2, seed=4))
    assert len(held_out_groups(pairs, 0.0, seed=3)) == 0


def test_kmer_surprisal_is_strand_symmetric_and_ranks_rare_content_high():
    # Twenty copies of one window (common content), one unrelated window (rare content) and
    # the reverse complement of the common window.
    rng = np.random.default_rng(0)
    common, rare = ("".join(rng.choice(list("ACGT"), size=40)) for _ in range(2))
    complement = str.maketrans("ACGT", "TGCA")
    sequences = [common] * 20 + [rare, common.translate(complement)[::-1]]
    table = pd.DataFrame(
        {
            "item_id": [f"w{i}" for i in range(len(sequences))],
            "sequence": sequences,
            "window_start": 0,
            "left_pad": 0,
            "right_pad": 0,
        }
    )
    items = Items(table, {"modality": "dna", "window": 40, "flank": 0})
    name, values = DNAViews(max_shift=0).specificity(items)
    assert name == "4-mer surprisal"
    assert values[-1] == pytest.approx(values[0])  # both strands score alike
    assert values[20] > values[0] + 1.0


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diagnostics")
    training = {"batch_size": 8, "holdout_fraction": 0.25, "epochs": 1}
    experiment, _ = small_dna_experiment(folder, sequences_per_source=10, training=training)
    return folder, experiment, pd.read_parquet(folder / "pairs.parquet")


def test_untrained_model_file_gives_identical_trained_and_untrained_columns(small_run):
    """The baseline is the model as training starts it: same seed, same weights."""
    folder, experiment, pairs = small_run
    torch.manual_seed(experiment["training"]["seed"])
    typed = Experiment.from_dict(experiment)
    save_model(folder / "initial.pt", build_model(typed), typed)
    result = diagnose(
        folder / "initial.pt",
        folder / "items",
        folder / "pairs.parquet",
        folder / "diag",
        label_column="source",
        projections=32,
    )
    table = diagnostics_table(result)
    both = table[table["untrained"].notna()]
    assert len(both) >= len(table) - 2  # the loss on training groups; normality below 20 items
    assert both["trained"].tolist() == pytest.approx(both["untrained"].tolist())

    held_out = held_out_groups(pairs, 0.25, experiment["training"]["seed"])
    assert result["subset"]["held_out_from_training"] is True
    assert result["subset"]["groups"] == len(held_out) == round(0.25 * pairs["group_id"].nunique())
    assert result["subset"]["items"] == len(held_out)  # one window per group
    on_training = result["trained"]["projection_on_training_groups"]
    assert on_training["num_negatives"] == pytest.approx(
        result["trained"]["projection"]["num_negatives"]
    )
    proxies = [e["proxy"] for e in result["trained"]["norm_specificity"]]
    assert proxies == ["4-mer surprisal", "knn_label_purity"]

    stored = json.loads((folder / "diag" / "diagnostics.json").read_text())
    assert stored["subset"] == result["subset"]
    per_item = pd.read_parquet(folder / "diag" / "per_item.parquet")
    assert len(per_item) == result["subset"]["items"]
    np.testing.assert_allclose(per_item["norm_trained"], per_item["norm_untrained"])
    lines = format_diagnostics(result)
    assert lines[0].startswith(f"Diagnostics ({len(held_out)} held-out groups of ")
    assert any(line.strip().startswith("gap / margin (z)") for line in lines)


def test_training_never_sees_the_held_out_groups(small_run, caplog):
    from scicontrast.models.train import train

    folder, experiment, pairs = small_run
    training_groups = pairs["group_id"].nunique() - len(held_out_groups(pairs, 0.25, 0))
    with caplog.at_level(logging.INFO, logger="scicontrast.train"):
        train(
            Experiment.from_dict(experiment),
            folder / "items",
            folder / "pairs.parquet",
            folder / "model",
            progress=False,
        )
    assert f"training on cpu: {training_groups} groups" in caplog.text
