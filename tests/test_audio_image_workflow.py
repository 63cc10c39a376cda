"""The audio-image demo through the CLI steps, and its Snakemake rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, workflow_env

from scicontrast.analysis.embed import load_embeddings
from scicontrast.cli import main
from scicontrast.data_adapters.base import Items


def tiny_config(workdir: Path | None = None) -> dict:
    """The tiny experiment; paths under ``workdir``, or relative (as Snakemake needs them)."""
    root = Path(".") if workdir is None else workdir
    demo = root / "results" / "demo_data" / "audio_image"
    return {
        "demo_data": {"audio_image": {"out_dir": str(demo), "events": 40, "classes": 3}},
        "synchronizations": {
            "tiny_sync": {"manifests": [str(demo / "manifest.csv")], "truth_column": "true_event"}
        },
        "experiments": {
            "tiny_av": {
                "adapter": {
                    "name": "audio_image",
                    "params": {
                        "synchronization": str(root / "results/synchronizations/tiny_sync"),
                        "clip_seconds": 0.5,
                        "image_size": 16,
                    },
                },
                "pairs": {"name": "synchronized_pairs", "params": {"image_shift": 1}},
                "encoder": {
                    "name": "two_tower",
                    "params": {
                        "embedding_dim": 8,
                        "n_mels": 16,
                        "audio_channels": [4, 8],
                        "image_channels": [4, 8],
                        "image_pool": [2, 2],
                    },
                },
                "head": {"hidden_dim": 8, "output_dim": 8},
                "loss": {"learnable_temperature": True},
                "training": {
                    "epochs": 2,
                    "batch_size": 8,
                    "holdout_fraction": 0.25,
                    "device": "cpu",
                },
                "analysis": {
                    "label_column": "label",
                    "probe_seeds": [0],
                    "gaussianity_projections": 8,
                    "cluster_methods": ["kmeans"],
                },
            }
        },
    }


def test_every_step_through_the_cli(tmp_path, capsys):
    config = tiny_config(tmp_path)
    demo = Path(config["demo_data"]["audio_image"]["out_dir"])
    sync = tmp_path / "results/synchronizations/tiny_sync"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    r = tmp_path / "results/tiny_av"

    def run(*args: str) -> None:
        assert main(["-q", *args]) == 0, capsys.readouterr().err

    run("demo-data", "audio-image", "--out", str(demo), "--events", "40", "--classes", "3")
    run(
        "synchronize",
        str(demo / "manifest.csv"),
        "--out",
        str(sync),
        "--truth-column",
        "true_event",
    )
    run("resolve-config", "--config", str(config_path), "--out", str(r / "config.json"))
    c = str(r / "config.json")
    run("prepare", "--config", c, "--out", str(r / "items"))
    run("pairs", "--config", c, "--items", str(r / "items"), "--out", str(r / "pairs.parquet"))
    common = ["--items", str(r / "items"), "--pairs", str(r / "pairs.parquet")]
    run("train", "--config", c, *common, "--out", str(r / "model"), "--no-progress")
    model = str(r / "model/model.pt")
    run("embed", str(r / "items"), "--model", model, "--out", str(r / "embeddings"))
    run(
        "cluster",
        "--config",
        c,
        "--embeddings",
        str(r / "embeddings"),
        "--out",
        str(r / "clusters"),
    )
    run("diagnostics", "--config", c, "--model", model, *common, "--out", str(r / "diagnostics"))
    run(
        "evaluate", "--config", c, "--model", model, *common,
        "--embeddings", str(r / "embeddings"), "--clusters", str(r / "clusters"),
        "--diagnostics", str(r / "diagnostics"), "--out", str(r / "metrics"),
    )  # fmt: skip
    # export and plots as the workflow's rules call them (its Snakemake run below stops at
    # the summary: these two rules are the same shell command for every experiment).
    clusters = ["--embeddings", str(r / "embeddings"), "--clusters", str(r / "clusters")]
    items_dir = str(r / "items")
    run("export", "--model", model, "--items", items_dir, *clusters, "--out", str(r / "export"))
    run(
        "plots", "--config", c, *clusters, "--training-metrics", str(r / "model/metrics.jsonl"),
        "--diagnostics", str(r / "diagnostics"), "--out", str(r / "plots"), "--threads", "1",
    )  # fmt: skip
    assert {p.name for p in (r / "plots").glob("*.png")} >= {"training_curves.png", "map_label.png"}

    evaluation = json.loads((r / "metrics/evaluation.json").read_text())
    assert evaluation["evaluation_events"] == "held out from training"
    assert evaluation["events"] == round(0.25 * evaluation["synchronization"]["pairs"])
    for direction in ("audio_to_image", "image_to_audio"):
        found = evaluation["retrieval"][direction]
        assert 0 <= found["class_r1"] <= found["class_r5"] <= 1
        assert found["queries"] == found["candidates"] == evaluation["events"]
    assert evaluation["zero_shot"]["classes"] == 3
    assert evaluation["synchronization"]["pairing"]["precision"] == 1.0
    summary = (r / "metrics/summary.txt").read_text()
    assert "Cross-modal retrieval" in summary and "pairing vs ground truth" in summary
    # The exported TorchScript towers, loaded without this package, embed like the workflow.
    card = json.loads((r / "export/model_card.json").read_text())
    assert card["torchscript"]["methods"] == {"embed_audio": "audio", "embed_images": "images"}
    metadata, embeddings = load_embeddings(r / "embeddings")
    items = Items.load(r / "items")
    towers = torch.jit.load(str(r / "export/encoder.torchscript.pt"))
    with torch.no_grad():
        audio = towers.embed_audio(torch.from_numpy(items.extras["audio"])).numpy()
        images = towers.embed_images(torch.from_numpy(items.extras["images"])).numpy()
    is_audio = (metadata["modality"] == "audio").to_numpy()
    np.testing.assert_allclose(audio, embeddings[is_audio], atol=1e-5)
    np.testing.assert_allclose(images, embeddings[~is_audio], atol=1e-5)
    # So do the towers as torch.export programs and as ONNX files run by onnxruntime.
    import onnxruntime

    inputs = {"audio_encoder": ("audio", is_audio), "image_encoder": ("images", ~is_audio)}
    assert set(card["onnx"]["files"]) == set(card["torch_export"]["files"]) == set(inputs)
    for stem, (side, rows) in inputs.items():
        x = items.extras[side]
        program = torch.export.load(r / "export" / card["torch_export"]["files"][stem]).module()
        with torch.no_grad():
            np.testing.assert_allclose(program(torch.from_numpy(x)), embeddings[rows], atol=1e-5)
        session = onnxruntime.InferenceSession(str(r / "export" / card["onnx"]["files"][stem]))
        np.testing.assert_allclose(session.run(None, {side: x})[0], embeddings[rows], atol=1e-4)

    # New recordings, unpaired, embed through the model's adapter like the same prepared items.
    chosen = metadata.iloc[[0, len(metadata) - 1, 1]]
    files = chosen["file"].tolist()
    run("embed", *files, "--model", model, "--out", str(tmp_path / "new"))
    new_metadata, new_embeddings = load_embeddings(tmp_path / "new")
    assert new_metadata["modality"].tolist() == chosen["modality"].tolist()
    expected_ids = [f"{m}/{f}" for m, f in zip(chosen["modality"], files, strict=True)]
    assert new_metadata["item_id"].tolist() == expected_ids
    np.testing.assert_allclose(new_embeddings, embeddings[chosen.index], atol=1e-5)


def run_snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    command += ["--directory", str(workdir), "--configfile", str(config_path), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, env=workflow_env())


@pytest.mark.slow
def test_snakemake_runs_the_audio_image_demo(tmp_path):
    # Up to the summary: the default target's other outputs, export and plots, are the same
    # rules for every experiment; the DNA demo's run (test_workflow.py) runs them through
    # Snakemake, and test_every_step_through_the_cli runs their commands on this experiment.
    target = "results/tiny_av/metrics/summary.txt"
    result = run_snakemake(tmp_path, tiny_config(), "--cores", "2", target)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # The demo data, synchronization and training rules chain from the summary.
    for rule in ("demo_audio_image", "synchronize", "prepare", "pairs", "train"):
        assert f"rule {rule}:" in output or f"\n{rule}" in output, rule
    summary = (tmp_path / target).read_text()
    assert "Cross-modal retrieval" in summary
    assert (tmp_path / "results/synchronizations/tiny_sync/time_differences.png").is_file()
    assert (tmp_path / "results/logs/synchronizations/tiny_sync.log").is_file()
    assert (tmp_path / "results/benchmarks/demo_data/audio_image.tsv").is_file()
