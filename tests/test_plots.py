"""Figures: every file is written, readable as an image, and labelled (titles, axes, legends)."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import small_dna_experiment

from scicontrast.analysis.cluster import cluster, cluster_embeddings
from scicontrast.analysis.diagnostics import diagnose
from scicontrast.analysis.diagnostics_report import diagnostics_table
from scicontrast.analysis.embed import embed
from scicontrast.analysis.plots import (
    diagnostics_html,
    make_plots,
    plot_cluster_comparison,
    plot_map,
    plot_training_curves,
    read_epochs,
    tsne_map,
)
from scicontrast.experiment import Experiment
from scicontrast.models.train import train


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2-epoch DNA run with every input the plots step reads."""
    folder = tmp_path_factory.mktemp("plots")
    training = {"batch_size": 8, "epochs": 2, "holdout_fraction": 0.25, "device": "cpu"}
    experiment, _ = small_dna_experiment(folder, sequences_per_source=8, training=training)
    model = train(
        Experiment.from_dict(experiment),
        folder / "items",
        folder / "pairs.parquet",
        folder / "model",
        progress=False,
    )
    embed(model, folder / "items", folder / "embeddings")
    cluster(folder / "embeddings", folder / "clusters", label_column="source")
    diagnose(model, folder / "items", folder / "pairs.parquet", folder / "diag", "source", 100, 32)
    return folder


def test_make_plots_writes_every_figure(finished, tmp_path):
    written = make_plots(
        finished / "embeddings",
        finished / "clusters",
        finished / "model" / "metrics.jsonl",
        finished / "diag",
        tmp_path / "plots",
        "small",
        label_column="source",
    )
    expected = {
        "map_label.png",
        "map_kmeans.png",
        "map_hdbscan.png",
        "map_leiden.png",
        "training_curves.png",
        "diagnostics.png",
        "diagnostics.html",
        "gaussianity.png",
        "norm_specificity.png",
        "clusters.png",
        "map.parquet",
    }
    assert set(written) == expected
    for name in expected - {"diagnostics.html", "map.parquet"}:
        image = matplotlib.image.imread(tmp_path / "plots" / name)
        assert image.shape[0] > 300 and image.shape[1] > 500, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"
    html = (tmp_path / "plots" / "diagnostics.html").read_text()
    assert "<table" in html and "gap / margin (z)" in html
    coordinates = pd.read_parquet(tmp_path / "plots" / "map.parquet")
    assert list(coordinates.columns) == ["item_id", "tsne_1", "tsne_2"]


def test_training_curves_are_labelled_and_show_held_out_markers(finished, tmp_path):
    epochs = read_epochs(finished / "model" / "metrics.jsonl")
    assert epochs["epoch"].tolist() == [0, 1]
    diagnostics = json.loads((finished / "diag" / "diagnostics.json").read_text())
    figure = plot_training_curves(epochs, diagnostics, "run", tmp_path / "curves.png")
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[:2] == ["InfoNCE loss", "MI lower bound log(K+1) - L"]
    for axes in figure.axes:
        assert axes.get_xlabel() == "epochs completed"
        assert axes.get_legend() is not None
    loss_legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    training_negatives = epochs["num_negatives"].iloc[-1]
    held_out_negatives = diagnostics["trained"]["projection"]["num_negatives"]
    assert loss_legend == [
        f"training batches (K = {training_negatives:.0f})",
        f"held-out groups (K = {held_out_negatives:.0f})",
        "held-out, untrained",
        "held-out, trained",
    ]
    held_out_curve, trained_marker = figure.axes[0].get_lines()[1], figure.axes[0].get_lines()[-1]
    assert trained_marker.get_xdata()[0] == 2
    trained_loss = diagnostics["trained"]["projection"]["loss"]
    assert trained_marker.get_ydata()[0] == pytest.approx(trained_loss)
    # The curve tracked during training ends where the diagnostics of the final model are.
    assert held_out_curve.get_ydata()[-1] == pytest.approx(trained_loss, abs=1e-6)


def test_map_legend_lists_categories_and_noise(tmp_path):
    coordinates = np.random.default_rng(0).standard_normal((30, 2))
    values = np.array([0] * 10 + [1] * 10 + [-1] * 10)
    figure = plot_map(coordinates, values, "clusters", "hdbscan", tmp_path / "m.png")
    (axes,) = figure.axes
    assert axes.get_xlabel() == "t-SNE 1" and axes.get_ylabel() == "t-SNE 2"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["none / noise", "0", "1"]
    many = np.arange(30) % 25
    figure = plot_map(coordinates, many, "many", "label", tmp_path / "many.png")
    legend = figure.axes[0].get_legend()
    assert len(legend.get_texts()) == 20 and "5 more" in legend.get_title().get_text()


def test_cluster_comparison_bars_carry_the_scores(tmp_path):
    rng = np.random.default_rng(0)
    x = np.repeat(np.eye(3) * 10, 40, axis=0) + rng.standard_normal((120, 3))
    _, metrics = cluster_embeddings(x, np.repeat([0, 1, 2], 40), hdbscan_min_cluster_size=5)
    figure = plot_cluster_comparison(metrics, "compare", tmp_path / "c.png")
    (axes,) = figure.axes
    assert axes.get_xticklabels()[0].get_text() == "kmeans\n(3 clusters)"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == [
        "ARI",
        "NMI",
        "silhouette (cosine)",
    ]
    heights = [bar.get_height() for bar in axes.containers[0]]
    assert heights == pytest.approx([metrics[m]["ari"] for m in metrics["methods"]])


def test_tsne_subsamples_and_keeps_clusters_apart():
    rng = np.random.default_rng(0)
    x = np.repeat(np.eye(2) * 20, 100, axis=0) + rng.standard_normal((200, 2))
    x = np.hstack([x, rng.standard_normal((200, 6))])
    rows, coordinates = tsne_map(x, max_points=120, seed=0)
    assert len(rows) == 120 == len(np.unique(rows)) and coordinates.shape == (120, 2)
    group = rows < 100
    distance_between = np.linalg.norm(
        coordinates[group].mean(axis=0) - coordinates[~group].mean(axis=0)
    )
    assert distance_between > 3 * coordinates[group].std(axis=0).mean()


def test_diagnostics_html_escapes_and_formats(finished):
    diagnostics = json.loads((finished / "diag" / "diagnostics.json").read_text())
    table = diagnostics_table(diagnostics)
    html = diagnostics_html(table, "a <b> title")
    assert "<title>a &lt;b&gt; title</title>" in html
    assert "&lt;= log(K+1)" in html


def test_temperature_study_tabulates_and_plots_every_finished_run(finished, tmp_path):
    import shutil

    import yaml
    from conftest import load_benchmark

    study = load_benchmark("temperature")
    experiment = {
        "adapter": {"name": "dna_fasta", "params": {"paths": ["x.fa"], "window": 40}},
        "pairs": {"name": "dna_views"},
        "encoder": {"name": "dna_cnn"},
    }
    config = {
        "experiments": {
            f"t{tau}": {**experiment, "loss": {"temperature": tau}} for tau in (0.5, 0.1, 0.2)
        }
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    evaluation = {"probe": {"balanced_accuracy": {"mean": 0.8, "std": 0.01}}}
    for name in ("t0.5", "t0.1"):  # t0.2 has not run
        shutil.copytree(finished / "diag", tmp_path / "results" / name / "diagnostics")
        (tmp_path / "results" / name / "metrics").mkdir()
        (tmp_path / "results" / name / "metrics" / "evaluation.json").write_text(
            json.dumps(evaluation)
        )
    table, missing = study.collect(tmp_path / "study.yaml", tmp_path / "results")
    assert missing == ["t0.2"]
    assert table["tau"].tolist() == [0.1, 0.5]
    assert table["probe_balanced_accuracy"].tolist() == [0.8, 0.8]
    markdown = study.format_table(table, markdown=True).splitlines()
    assert markdown[0].startswith("| tau | probe bal. acc.") and markdown[2].startswith("| 0.1 |")
    study.plot(table, tmp_path / "study.png", "study")
    assert matplotlib.image.imread(tmp_path / "study.png").shape[1] > 1000


def test_a_held_out_curve_with_skipped_epochs_joins_the_passes_run(finished, tmp_path):
    epochs = read_epochs(finished / "model" / "metrics.jsonl")
    epochs.loc[0, "heldout_loss"] = float("nan")  # no pass after epoch 1 (heldout_min_steps)
    figure = plot_training_curves(epochs, None, "run", tmp_path / "curves.png")
    held_out_curve = figure.axes[0].get_lines()[1]
    assert held_out_curve.get_xdata().tolist() == [2]
    assert held_out_curve.get_ydata().tolist() == [epochs["heldout_loss"].iloc[1]]
