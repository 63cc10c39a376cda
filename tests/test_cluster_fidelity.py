"""benchmarks/cluster_fidelity.py: splits, run names, agreements, and one tiny comparison."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

# Imported by its own name from benchmarks/, so that the script's spawned children find it.
sys.path.insert(0, str(REPO / "benchmarks"))
import cluster_fidelity as fidelity


def test_split_halves_partition_the_rows_and_follow_the_seed():
    validation = fidelity.split_rows(1001, "validation", seed=0)
    report = fidelity.split_rows(1001, "report", seed=0)
    assert len(validation) == 500 and len(report) == 501
    assert np.intersect1d(validation, report).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([validation, report])), np.arange(1001))
    assert np.all(np.diff(report) > 0)
    np.testing.assert_array_equal(report, fidelity.split_rows(1001, "report", seed=0))
    assert not np.array_equal(report, fidelity.split_rows(1001, "report", seed=1))
    np.testing.assert_array_equal(fidelity.split_rows(7, "all", seed=3), np.arange(7))


def test_draw_is_a_sorted_subset_of_the_split():
    rows = fidelity.split_rows(1000, "report", seed=0)
    drawn = fidelity.draw_rows(rows, 100, seed=0)
    assert len(drawn) == 100 and np.all(np.diff(drawn) > 0)
    assert np.isin(drawn, rows).all()
    assert fidelity.draw_rows(rows, None, seed=0) is rows
    with pytest.raises(ValueError, match="1000 items asked of a split of 500"):
        fidelity.draw_rows(rows, 1000, seed=0)


@pytest.mark.parametrize(
    ("text", "settings"),
    [
        ("kmeans:exact", {"exact_max_items": 400}),
        ("hdbscan:sampled", {"exact_max_items": 50}),
        ("leiden:whole@2", {"exact_max_items": 50, "leiden_sample_items": None}),
        ("leiden:300", {"exact_max_items": 50, "leiden_sample_items": 300}),
    ],
)
def test_a_run_names_the_path_cluster_unit_takes(text, settings):
    run = fidelity.parse_run(text)
    assert run.name == text
    assert run.settings(400, 50) == settings


@pytest.mark.parametrize("text", ["kmeans:whole", "leiden:sampled", "pca:exact", "leiden:0"])
def test_an_unknown_run_is_refused_by_name(text):
    with pytest.raises(ValueError, match=text):
        fidelity.parse_run(text)


def test_agreement_is_with_the_first_exact_run_of_the_unchanged_seed():
    truth = np.repeat([0, 1, 2], 10)
    other = truth.copy()
    other[:5] = 1
    runs = ["leiden:whole@1", "leiden:whole", "leiden:500", "kmeans:sampled"]
    found = [other, truth, 2 - truth, truth]  # the sample's labels renamed: same partition
    results = [
        fidelity.Result(fidelity.parse_run(r), a, {}, 0.0, 0.0)
        for r, a in zip(runs, found, strict=True)
    ]
    fidelity.agreements(results)
    expected_reseeded = pytest.approx(fidelity.adjusted_rand_score(truth, other))
    assert [r.agreement for r in results] == [expected_reseeded, 1.0, 1.0, None]


def test_separated_blobs_agree_on_every_path(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 100)
    centres = np.eye(8, dtype=np.float32)[:3] * 10
    points = centres[labels] + rng.standard_normal((300, 8), dtype=np.float32)
    np.save(tmp_path / "embeddings.npy", points)
    ids = [f"i{i}" for i in range(300)]
    pd.DataFrame({"item_id": ids, "kind": labels}).to_parquet(tmp_path / "embeddings.parquet")
    runs = ["kmeans:exact", "kmeans:sampled", "leiden:exact", "leiden:60"]
    args = ["--label-column", "kind", "--split", "all", "--exact-max-items", "50"]
    fidelity.main([str(tmp_path), *args, "--runs", *runs])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if "|" in line]
    scored = {cells[1].strip(): cells[4:7] for cells in rows[2:]}
    assert sorted(scored) == sorted(runs)
    for ari, nmi, agreement in scored.values():
        assert (ari.strip(), nmi.strip(), agreement.strip()) == ("1.000", "1.000", "1.000")
