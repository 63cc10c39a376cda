"""The genome-pretrained promoter benchmark (benchmarks/promoters_genome.py) end to end on a
hand-made GenBank and a small promoter set: it trains on the upstream windows, probes the
promoter items with the promoter benchmark's probe on its splits, and reuses a trained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import FeatureLocation, SeqFeature
from Bio.SeqRecord import SeqRecord
from conftest import REPO, load_benchmark

from scicontrast.analysis.probes import linear_probe

sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports promoters.py beside it
promoters_genome = load_benchmark("promoters_genome")
promoters = load_benchmark("promoters")


def bases(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list("ACGT"), size=length))


def write_configs(tmp_path: Path) -> tuple[Path, Path]:
    """A circular 3 kb GenBank record with 8 genes on both strands, promoter FASTA files of
    81-nt windows (the 'prom' ones with TATAAT at 50), and the two configs."""
    rng = np.random.default_rng(0)
    record = SeqRecord(
        Seq(bases(rng, 3000)),
        id="TOY",
        annotations={"molecule_type": "DNA", "topology": "circular"},
    )
    record.features = [
        SeqFeature(
            FeatureLocation(100 + 350 * i, 250 + 350 * i, strand=1 if i % 2 else -1),
            type="gene",
            qualifiers={"locus_tag": [f"t{i}"]},
        )
        for i in range(8)
    ]
    genbank = tmp_path / "toy.gbk"
    SeqIO.write(record, genbank, "genbank")
    files = []
    for name, count in (("prom", 40), ("non_prom", 60)):
        windows = [bases(rng, 81) for _ in range(count)]
        if name == "prom":
            windows = [w[:50] + "TATAAT" + w[56:] for w in windows]
        path = tmp_path / f"Ecoli_{name}.fa"
        path.write_text("".join(f">{name}{i}\n{w}\n" for i, w in enumerate(windows)))
        files.append(str(path))
    encoder = {
        "channels": 8,
        "kernel_size": 9,
        "layers": 1,
        "position_bins": 4,
        "pooling": "mean",
        "embedding_dim": None,
        "rc_invariant": False,
    }
    training = {"epochs": 1, "batch_size": 4, "seed": 0, "device": "cpu", "holdout_fraction": 0.0}
    analysis = {
        "label_column": "sequence_class",
        "probe_test_fraction": 0.25,
        "probe_seeds": [0, 1],
    }
    pretrain = {
        "adapter": {
            "name": "genbank_upstream",
            "params": {
                "paths": [str(genbank)],
                "upstream": 100,
                "downstream": 20,
                "window": 81,
                "stride": 20,
                "flank": 8,
            },
        },
        "pairs": {"name": "dna_views", "params": {"max_shift": 8, "group_by": "locus"}},
        "encoder": {"name": "dna_cnn", "params": encoder},
        "training": training,
        "analysis": analysis,
    }
    probe = {
        "adapter": {
            "name": "dna_fasta",
            "params": {
                "paths": files,
                "window": 81,
                "flank": 8,
                "label_from_filename": r"Ecoli_(?P<sequence_class>prom|non_prom)\.fa$",
            },
        },
        "pairs": {"name": "dna_views", "params": {"max_shift": 8}},
        "encoder": {"name": "dna_cnn", "params": encoder},
        "analysis": analysis,
    }
    paths = tmp_path / "pretrain.yaml", tmp_path / "probe.yaml"
    paths[0].write_text(yaml.safe_dump({"experiments": {"toy_genome": pretrain}}))
    paths[1].write_text(yaml.safe_dump({"experiments": {"toy_probe": probe}}))
    return paths


def test_pretrains_on_upstream_windows_and_probes_the_promoter_splits(tmp_path, capsys):
    pretrain, probe = write_configs(tmp_path)
    out = tmp_path / "out"
    args = ["--config", str(pretrain), "--probe-config", str(probe)]
    args += ["--probe-experiment", "toy_probe", "--out", str(out)]
    assert promoters_genome.main(args) == 0
    assert (out / "toy_genome" / "model" / "model.pt").is_file()
    # 8 genes x 3 windows ((100 + 20 - 81) // 20 + 1 = 2, plus one ending at the region's end)
    assert '"windows": 24' in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert {"toy_genome", "toy_genome, untrained control"} <= set(results)
    # The k-mer rows are the promoter probe of the k-mer features, on the same splits.
    items = promoters_genome.labelled_items(promoters_genome.load_experiment(probe, "toy_probe"))
    labels = items.table["sequence_class"]
    features = promoters.kmer_frequencies(promoters.window_sequences(items), 5)
    expected = linear_probe(features, labels, 0.25, [0, 1])
    row = results["5-mer frequencies, forward strand"]["test"]
    assert np.isclose(row["balanced_accuracy"]["mean"], expected["balanced_accuracy"]["mean"])
    trained, untrained = results["toy_genome"], results["toy_genome, untrained control"]
    assert trained["test"]["auroc"] != untrained["test"]["auroc"]  # the weights moved
    # A second run reuses the trained model.
    mtime = (out / "toy_genome" / "model" / "model.pt").stat().st_mtime
    assert promoters_genome.main([*args, "--train-only"]) == 0
    assert (out / "toy_genome" / "model" / "model.pt").stat().st_mtime == mtime
