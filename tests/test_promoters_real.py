"""The promoter benchmark: its k-mer baselines, and its config on the real data.

The k-mer tests are fast and need no data. The ``slow`` tests read
``../shared/data/promoters`` with the adapter settings of ``benchmarks/promoters.yaml`` and
skip when that folder is absent; the counts they check are those of ``DATA.md``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, load_benchmark

from scicontrast.analysis.probes import stratified_splits
from scicontrast.config import read_config_file
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.dna.encoding import reverse_complement
from scicontrast.experiment import Experiment
from scicontrast.registry import ADAPTERS

CONFIG = REPO / "benchmarks" / "promoters.yaml"


benchmark = load_benchmark("promoters")


def random_sequences(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGT"), size=length)) for _ in range(n)]


def test_kmer_frequencies_count_every_overlapping_word():
    features = benchmark.kmer_frequencies(["ACGTA", "AAAA"], k=2)
    words = ["".join(w) for w in itertools.product("ACGT", repeat=2)]
    first = dict(zip(words, features[0], strict=True))
    assert first == {w: (0.25 if w in ("AC", "CG", "GT", "TA") else 0.0) for w in words}
    assert features[1, words.index("AA")] == 1.0
    np.testing.assert_allclose(features.sum(axis=1), 1.0)


def test_words_with_an_ambiguity_code_are_skipped():
    features = benchmark.kmer_frequencies(["ACNGT", "NNN"], k=2)
    words = ["".join(w) for w in itertools.product("ACGT", repeat=2)]
    assert features[0, words.index("AC")] == features[0, words.index("GT")] == 0.5
    assert not features[1].any()


@pytest.mark.parametrize(("k", "width"), [(3, 32), (4, 136), (5, 512)])
def test_canonical_kmers_are_strand_invariant_and_forward_ones_are_not(k, width):
    sequences = random_sequences(20, 81, seed=k)
    reverse = [reverse_complement(s) for s in sequences]
    canonical = benchmark.kmer_frequencies(sequences, k, canonical=True)
    assert canonical.shape == (20, width)
    np.testing.assert_allclose(
        benchmark.kmer_frequencies(reverse, k, canonical=True), canonical, atol=1e-12
    )
    forward = benchmark.kmer_frequencies(sequences, k)
    assert np.abs(benchmark.kmer_frequencies(reverse, k) - forward).max() > 0.01


def test_script_skips_cleanly_without_the_data(tmp_path, capsys):
    config = yaml.safe_load(CONFIG.read_text())
    for experiment in config["experiments"].values():
        experiment["adapter"]["params"]["paths"] = [str(tmp_path / "absent" / "x.fa")]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert benchmark.main(["--config", str(path), "--results", str(tmp_path)]) == 0
    assert "skipping the promoter benchmark" in capsys.readouterr().out


def test_only_labelled_items_are_probed_and_they_group_the_runs(tmp_path):
    def saved_items(name: str, labels: list) -> dict:
        table = pd.DataFrame({"item_id": [f"i{k}" for k in range(len(labels))], "y": labels})
        Items(table=table, meta={"window": 3}).save(tmp_path / name / "items")
        return {"name": name, "analysis": {"label_column": "y"}}

    labelled_only = saved_items("ecoli", ["a", "b", "a"])
    pretrained_on_more = saved_items("ecoli_bacillus", ["a", "b", "a", None, None])
    first, rows, unlabelled = benchmark.probed_items(tmp_path, labelled_only)
    again, more_rows, more_unlabelled = benchmark.probed_items(tmp_path, pretrained_on_more)
    assert first.table.equals(again.table)  # same probe items, so one data set, same splits
    assert rows.tolist() == more_rows.tolist() == [0, 1, 2]
    assert (unlabelled, more_unlabelled) == (0, 2)


def benchmark_adapters() -> dict[tuple[str, ...], dict]:
    """The distinct adapter specs of the benchmark, paths made absolute."""
    specs = {}
    for experiment in read_config_file(CONFIG)["experiments"].values():
        params = dict(experiment["adapter"]["params"])
        paths = tuple(Path(p).name for p in params["paths"])
        params["paths"] = [str(REPO / p) for p in params["paths"]]
        specs[paths] = {"name": experiment["adapter"]["name"], "params": params}
    return specs


# label counts and sequence lengths from ../shared/data/DATA.md
EXPECTED = {
    ("Ecoli_prom.fa", "Ecoli_non_prom.fa"): ({"prom": 839, "non_prom": 3000}, 81),
    ("Arabidopsis_non_tata.fa", "Arabidopsis_non_prom.fa"): (
        {"non_tata": 5905, "non_prom": 2879},
        251,
    ),
}


def test_every_benchmark_experiment_uses_a_known_data_set_and_the_issue_probe():
    config = read_config_file(CONFIG)
    assert set(benchmark_adapters()) == set(EXPECTED)
    for experiment in config["experiments"].values():
        analysis = experiment["analysis"]
        assert analysis["probe_seeds"] == [0, 1, 2, 3, 4]
        assert analysis["probe_test_fraction"] == 0.2
        assert analysis["label_column"] == "sequence_class"


def test_rows_name_every_kind_of_positive_of_the_benchmark_configs():
    def experiment(rc_invariant: bool = False, **pairs) -> dict:
        return {"encoder": {"params": {"rc_invariant": rc_invariant}}, "pairs": {"params": pairs}}

    assert benchmark.describe(experiment(True)) == (
        "contrastive: RC-invariant encoder, RC + shift positives"
    )
    assert benchmark.describe(experiment(reverse_complement=False)) == (
        "contrastive: plain encoder, shift-only positives"
    )
    assert benchmark.describe(experiment(mask_fraction=0.25, neighbours=5)) == (
        "contrastive: plain encoder, RC + shift positives, 25% of each view masked "
        "and 5 composition neighbours"
    )
    masked = read_config_file(REPO / "benchmarks" / "searches" / "promoters_mask.yaml")[
        "experiments"
    ]
    assert [benchmark.describe(e).split(", ")[-1] for e in masked.values()] == [
        "25% of each view masked",
        "50% of each view masked",
    ]


@pytest.mark.real_data
@pytest.mark.parametrize("files", list(EXPECTED), ids=lambda files: files[0].split("_")[0])
def test_adapter_reads_each_promoter_set_whole_with_the_benchmark_settings(shared_data, files):
    spec = benchmark_adapters()[files]
    counts, length = EXPECTED[files]
    items = ADAPTERS.create(spec).read()
    table = items.table
    assert table["sequence_class"].value_counts().to_dict() == counts
    # one item per record, the whole record: the probe classifies sequences, not windows
    assert len(table) == items.meta["records"] == sum(counts.values())
    assert (table["start"] == 0).all() and (table["end"] == length).all()
    assert items.meta["window"] == length
    windows = benchmark.window_sequences(items)
    assert {len(w) for w in windows} == {length}
    assert table["item_id"].is_unique


@pytest.mark.real_data
@pytest.mark.slow
def test_one_epoch_of_the_ecoli_benchmark_beats_plain_5mers(shared_data, tmp_path):
    """A shortened E. coli benchmark (shift-only positives, one epoch instead of five) still
    beats forward-strand 5-mer frequencies in balanced accuracy on the same splits."""
    from scicontrast.analysis.embed import embed_items
    from scicontrast.analysis.probes import linear_probe
    from scicontrast.config import select_experiment
    from scicontrast.io import write_parquet
    from scicontrast.models.contrastive import load_model
    from scicontrast.models.train import train
    from scicontrast.registry import PAIR_BUILDERS

    config = read_config_file(CONFIG)
    experiment = select_experiment(config, "promoters_ecoli_shift_only", str(CONFIG))
    experiment["adapter"] = benchmark_adapters()[("Ecoli_prom.fa", "Ecoli_non_prom.fa")]
    experiment["training"] = {**experiment["training"], "epochs": 1, "device": "cpu"}
    items = ADAPTERS.create(experiment["adapter"]).read()
    items.save(tmp_path / "items")
    write_parquet(
        tmp_path / "pairs.parquet", PAIR_BUILDERS.create(experiment["pairs"]).build(items)
    )
    model_path = train(
        Experiment.from_dict(experiment),
        tmp_path / "items",
        tmp_path / "pairs.parquet",
        tmp_path / "model",
        progress=False,
    )
    model, _ = load_model(model_path)
    embeddings = embed_items(
        model, PAIR_BUILDERS.create(experiment["pairs"]), items, progress=False
    )

    labels = items.table["sequence_class"]
    contrastive = linear_probe(embeddings, labels)
    five_mers = linear_probe(
        benchmark.kmer_frequencies(benchmark.window_sequences(items), 5), labels
    )
    assert [s["seed"] for s in contrastive["per_seed"]] == [0, 1, 2, 3, 4]
    assert contrastive["balanced_accuracy"]["mean"] > five_mers["balanced_accuracy"]["mean"] + 0.01
    assert contrastive["auroc"]["mean"] > five_mers["auroc"]["mean"]


def test_validation_scores_never_see_the_outer_test_items():
    rng = np.random.default_rng(0)
    labels = pd.Series(np.repeat(["non_prom", "prom"], [150, 50]))
    features = rng.normal(size=(200, 6)) + (labels == "prom").to_numpy()[:, None]
    analysis = {"probe_test_fraction": 0.2, "probe_seeds": [0]}
    codes = (labels == "prom").to_numpy().astype(int)
    ((_train, test),) = stratified_splits(codes, 0.2, [0])
    scrambled = features.copy()
    scrambled[test] = rng.normal(size=(len(test), 6))

    before = benchmark.scored_row(features, labels, analysis, method="m", kind="kmer")
    after = benchmark.scored_row(scrambled, labels, analysis, method="m", kind="kmer")
    assert after.validation == before.validation
    assert 0.6 < before.validation["balanced_accuracy"] < 1.0
    assert after.probe["auroc"]["mean"] != before.probe["auroc"]["mean"]


@pytest.mark.slow
def test_grouped_splits_take_away_what_recognising_a_stretch_scores(monkeypatch):
    """Windows tiled along 40 genomes, the class random per genome, and an embedding that
    knows nothing but which stretch of genome a window came from (a one-hot of its overlap
    group). On random splits every test window has training windows of its stretch and the
    probe reads the class off them; on ``grouped`` splits none has, and it falls to chance."""
    rng = np.random.default_rng(0)
    genomes = random_sequences(40, 330, seed=1)
    sequences = [g[s : s + 60] for g in genomes for s in range(0, 271, 30)]
    genome_class = rng.permutation(np.repeat(["a", "b"], 20))
    table = pd.DataFrame(
        {
            "item_id": [f"w{i}" for i in range(len(sequences))],
            "y": np.repeat(genome_class, 10),
            "sequence": sequences,
            "window_start": 0,
            "source_file": "x.fa",
        }
    )
    items = Items(table=table, meta={"window": 60})
    groups = benchmark.overlap_groups(sequences)
    assert len(set(groups)) == 40
    stretch_identity = np.eye(40)[groups]
    monkeypatch.setattr(benchmark, "trained_embeddings", lambda *_: stretch_identity)
    experiment = {
        "name": "memoriser",
        "encoder": {"params": {"rc_invariant": False}},
        "pairs": {"params": {}},
        "analysis": {"label_column": "y", "probe_test_fraction": 0.2, "probe_seeds": [0, 1]},
    }
    probed = {"memoriser": (items, np.arange(len(sequences)), 0)}

    def memoriser_score(grouped: bool) -> float:
        title, *_, rows = benchmark.data_set_rows([experiment], probed, Path("."), grouped=grouped)
        assert ("grouped by shared 20-nt stretches (40 groups)" in title) == grouped
        (row,) = [r for r in rows if r.kind == "contrastive"]
        return row.probe["balanced_accuracy"]["mean"]

    assert memoriser_score(grouped=False) > 0.95
    assert memoriser_score(grouped=True) < 0.65
