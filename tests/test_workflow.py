"""The Snakemake workflow: the shipped DNA demo, run for real in a temporary folder (the run
the README's figures are checked on, ``dna_demo_run`` in conftest.py), and a tiny config
planned, linted and refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DNA_DEMO_TARGETS, REPO, workflow_env

# Every test here runs Snakemake, whose jobs each start the CLI (seconds of imports).
pytestmark = pytest.mark.slow

RULES_PER_EXPERIMENT = [
    "resolve_config",
    "prepare",
    "pairs",
    "train",
    "embed",
    "cluster",
    "diagnostics",
    "evaluate",
    "export",
    "plots",
]


def tiny_config(workdir: Path) -> dict:
    demo = workdir / "results" / "demo_data" / "dna"
    return {
        "demo_data": {
            "dna": {"out_dir": str(demo), "sources": 2, "sequences_per_source": 20, "length": 120}
        },
        "experiments": {
            "tiny": {
                "adapter": {
                    "name": "dna_fasta",
                    "params": {
                        "paths": [str(demo / "source_0.fa"), str(demo / "source_1.fa")],
                        "window": 60,
                        "stride": 30,
                        "flank": 2,
                        "label_from_filename": r"(?P<source>source_\d+)\.fa$",
                    },
                },
                "pairs": {"name": "dna_views", "params": {"max_shift": 2}},
                "encoder": {"name": "dna_cnn", "params": {"channels": 16, "embedding_dim": 16}},
                "head": {"hidden_dim": 16, "output_dim": 8},
                "training": {"epochs": 2, "batch_size": 32, "device": "cpu"},
                "analysis": {"label_column": "source", "probe_seeds": [0, 1]},
            }
        },
    }


def run_snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(config_path),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        env=workflow_env(),
    )


# The checks that need no run come first: under pytest-xdist the demo run they would
# otherwise wait for may still be running on the other worker.


def test_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, tiny_config(tmp_path), "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"adapter": {"name": "fastaa", "params": {}}},
            "experiments.tiny.adapter: unknown adapter 'fastaa'",
        ),
        ({"training": {"epochs": "many"}}, "'many' is not of type 'integer'"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, patch, expected):
    """The schema's check and the components' check (its other messages:
    ``tests/test_workflow_helpers.py``) both run when the Snakefile is parsed."""
    config = tiny_config(tmp_path)
    config["experiments"]["tiny"].update(patch)
    result = run_snakemake(tmp_path, config, "--cores", "1")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_slurm_profile_dry_run_launches_torchrun_for_several_gpus(tmp_path):
    config = tiny_config(tmp_path)
    config["experiments"]["tiny"]["training"].update({"gpus": 2, "gpu_model": "a100"})
    result = run_snakemake(
        tmp_path, config, "--workflow-profile", str(REPO / "profiles" / "slurm"), "-n", "-p"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "torchrun --standalone --nproc_per_node=2 -m scicontrast.cli train" in output
    train_job = output[output.index("rule train:") :]
    assert "gpu=2" in train_job and "gpu_model=a100" in train_job
    assert "cpus_per_gpu=8" in train_job


@pytest.fixture(scope="module")
def finished_run(dna_demo_run) -> tuple[Path, str, dict]:
    """The DNA demo's run folder, what Snakemake printed, and its experiment's config."""
    workdir, printed = dna_demo_run
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    return workdir, printed, config


def test_outputs_of_every_step(finished_run):
    workdir, _, config = finished_run
    results = workdir / "results" / "dna_demo"
    demo, experiment = config["demo_data"]["dna"], config["experiments"]["dna_demo"]
    window, stride = (experiment["adapter"]["params"][key] for key in ("window", "stride"))
    items = pd.read_parquet(results / "items" / "items.parquet")
    windows = (demo["length"] - window) // stride + 1
    assert len(items) == demo["sources"] * demo["sequences_per_source"] * windows
    pairs = pd.read_parquet(results / "pairs.parquet")
    # group_by record_id: a group is one record's windows, each on both strands
    assert pairs.groupby("group_id").size().eq(2 * windows).all()
    assert pairs["group_id"].nunique() == demo["sources"] * demo["sequences_per_source"]
    embeddings = pd.read_parquet(results / "embeddings" / "embeddings.parquet")
    assert list(embeddings["item_id"]) == list(items["item_id"])
    assert len(embeddings["embedding"].iloc[0]) == experiment["encoder"]["params"]["embedding_dim"]
    clusters = json.loads((results / "clusters" / "metrics.json").read_text())
    assert -1 <= clusters["kmeans"]["ari"] <= 1
    evaluation = json.loads((results / "metrics" / "evaluation.json").read_text())
    assert 0 <= evaluation["probe"]["balanced_accuracy"]["mean"] <= 1
    assert "score" in evaluation["invariance"]
    assert (results / "model" / "checkpoint.pt").exists()
    epochs = [
        json.loads(line)
        for line in (results / "model" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "epoch"
    ]
    assert [e["epoch"] for e in epochs] == list(range(experiment["training"]["epochs"]))


def test_takeaway_outputs(finished_run):
    """Diagnostics, exports and figures are written for every experiment."""
    workdir, _, _ = finished_run
    results = workdir / "results" / "dna_demo"
    diagnostics = json.loads((results / "diagnostics" / "diagnostics.json").read_text())
    assert diagnostics["trained"]["gaussianity"]["projections"] > 0
    assert (results / "export" / "embeddings.h5ad").is_file()
    assert (results / "export" / "encoder.torchscript.pt").is_file()
    card = json.loads((results / "export" / "model_card.json").read_text())
    assert card["torchscript"]["max_abs_difference_to_eager"] <= 1e-4
    pngs = {p.name for p in (results / "plots").glob("*.png")}
    assert {"training_curves.png", "map_label.png", "map_leiden.png", "diagnostics.png"} <= pngs
    summary = (results / "metrics" / "summary.txt").read_text()
    assert "Diagnostics" in summary and "leiden" in summary


def test_summary_ends_with_a_verdict_against_classical_features(finished_run):
    """The DNA run's summary compares the embedding with 4-mer frequencies and its
    untrained encoder, and its last lines say per metric whether it beats them."""
    workdir, _, _ = finished_run
    results = workdir / "results" / "dna_demo"
    evaluation = json.loads((results / "metrics" / "evaluation.json").read_text())
    rows = {row["name"]: row["kind"] for row in evaluation["comparison"]["rows"]}
    assert rows == {
        "trained embedding": "trained",
        "untrained encoder": "untrained",
        "4-mer frequencies (canonical)": "classical",
        "4-mer frequencies (strand-specific)": "classical",
    }
    verdict = (results / "metrics" / "summary.txt").read_text().strip().split("Verdict:")[-1]
    lines = verdict.splitlines()[1:]
    assert [line.split(" ")[2] for line in lines] == [
        "probe", "probe", "kNN", "k-means"
    ]  # fmt: skip
    assert all("the best classical features, 4-mer frequencies" in line for line in lines)
    assert all("its untrained encoder" in line for line in lines)


def test_report_is_self_contained_html(finished_run):
    workdir, _, config = finished_run
    report = workdir / "report.html"
    result = run_snakemake(workdir, config, "--report", str(report), *DNA_DEMO_TARGETS)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    html = report.read_text()
    assert "training_curves.png" in html and "map_label.png" in html
    assert "summary.txt" in html  # the summary, verdict included, is in the report


def test_every_rule_logs_and_benchmarks(finished_run):
    workdir, _, _ = finished_run
    results = workdir / "results" / "dna_demo"
    for rule in RULES_PER_EXPERIMENT:
        assert (results / "logs" / f"{rule}.log").exists(), rule
        assert (results / "benchmarks" / f"{rule}.tsv").exists(), rule


def test_summary_is_printed(finished_run):
    workdir, printed, _ = finished_run
    summary = (workdir / "results" / "dna_demo" / "metrics" / "summary.txt").read_text()
    assert "ARI" in summary
    assert summary.strip() in printed


def test_rerun_has_nothing_to_do(finished_run):
    workdir, _, config = finished_run
    result = run_snakemake(workdir, config, "--cores", "1", "-n", *DNA_DEMO_TARGETS)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr
