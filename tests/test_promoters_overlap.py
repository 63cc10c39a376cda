"""The promoter overlap table: what recognising a stretch of genome alone predicts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, load_benchmark

from scicontrast.analysis.probes import stratified_splits
from scicontrast.config import read_config_file
from scicontrast.data_adapters.dna.encoding import shared_stretches

overlap = load_benchmark("promoters_overlap")


def test_overlap_classifier_reads_the_class_off_shared_stretches():
    """Class 0 is windows tiled along a few genomes (every window overlaps its neighbours),
    class 1 unrelated random windows: the classifier labels a test window by the training
    windows it overlaps, and one that overlaps none by the class of the training windows
    that overlap nothing, so it is near perfect here without reading any sequence content."""
    rng = np.random.default_rng(0)
    genomes = ["".join(rng.choice(list("ACGT"), 1000)) for _ in range(4)]
    tiled = [g[s : s + 60] for g in genomes for s in range(0, 940, 20)]
    unrelated = ["".join(rng.choice(list("ACGT"), 60)) for _ in range(60)]
    codes = np.repeat([0, 1], [len(tiled), len(unrelated)])
    linked = shared_stretches(tiled + unrelated, 20)
    for train, test in stratified_splits(codes, 0.2, [0, 1]):
        predicted = overlap.overlap_classifier(linked, codes, train, test)
        assert (predicted == codes[test]).mean() > 0.95
    # With nothing overlapping, every window takes the majority class of the training part.
    alone = shared_stretches(unrelated[:40], 20)
    few = np.repeat([0, 1], [30, 10])
    train, test = np.arange(0, 40, 2), np.arange(1, 40, 2)
    assert (overlap.overlap_classifier(alone, few, train, test) == 0).all()


@pytest.mark.real_data
def test_ecoli_non_promoters_are_tiled_and_overlap_alone_beats_the_kmers(shared_data):
    """The data fact BENCHMARKS.md ("Windows that overlap") rests on."""
    experiments = read_config_file(REPO / "benchmarks" / "promoters.yaml")["experiments"]
    experiment = {"name": "ecoli", **experiments["promoters_ecoli_rc_positives"]}
    params = experiment["adapter"]["params"]
    params["paths"] = [str(REPO / p) for p in params["paths"]]
    title, rows = overlap.data_set_table(experiment, 20)
    assert title == "Ecoli_prom vs Ecoli_non_prom"
    by_class = {row["class"]: row for row in rows}
    assert float(by_class["non_prom"]["overlap another window"]) > 0.85
    assert float(by_class["prom"]["overlap another window"]) < 0.3
    score = by_class["overlap classifier, balanced accuracy"]
    assert float(score["test windows overlapping a training window"].split(" ")[0]) > 0.88
