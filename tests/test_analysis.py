"""Tests for embedding export, clustering and evaluation, on synthetic data.

The model and pair builder are small stand-ins defined here, so these tests do not depend
on the encoder or training code.
"""

from __future__ import annotations

import json
import re
import sys
import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import minimal_experiment
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn

from scicontrast.analysis import embed as embed_module
from scicontrast.analysis import embed_stream
from scicontrast.analysis.cluster import cluster, cluster_embeddings
from scicontrast.analysis.embed import embed, embed_items, load_embeddings
from scicontrast.analysis.evaluate import evaluate
from scicontrast.analysis.invariance import invariance_score
from scicontrast.analysis.probes import (
    C_GRID,
    DEFAULT_SEEDS,
    auroc,
    knn_accuracy,
    linear_probe,
    probe_model,
    stratified_splits,
    validation_probe,
)
from scicontrast.analysis.summary import format_report
from scicontrast.config import select_experiment, validate_config
from scicontrast.data_adapters.base import Items, PairBuilder
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Analysis, Experiment

FEATURES = 8


class OffsetPairs(PairBuilder):
    """Two views per item: its features plus a random value on one extra nuisance input.

    Canonical view (``rng=None``): the nuisance input is 0.
    """

    def build(self, items: Items) -> pd.DataFrame:
        ids = items.table["item_id"].tolist()
        return pd.DataFrame(
            {
                "group_id": [i for i in range(len(ids)) for _ in range(2)],
                "item_id": [item for item in ids for _ in range(2)],
                "view": ["identity", "offset"] * len(ids),
            }
        )

    def bind(self, items: Items) -> None:
        self.features = torch.from_numpy(items.arrays["features"]).float()

    def make_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> torch.Tensor:
        nuisance = 0.0 if rng is None else 5.0 * rng.normal()
        return torch.cat([self.features[item_index], torch.tensor([nuisance])])


class JitteredOffsetPairs(OffsetPairs):
    """OffsetPairs whose views also get noise on the features: a nuisance beside the offset,
    which ``symmetry_only`` leaves out."""

    def make_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> torch.Tensor:
        x = super().make_view(item_index, view, rng)
        if rng is not None:
            x[:FEATURES] += torch.from_numpy(rng.normal(scale=0.5, size=FEATURES)).float()
        return x

    def symmetry_only(self) -> tuple[str, PairBuilder]:
        return "offset", OffsetPairs()


class LinearModel(nn.Module):
    """``embed(x) = x @ W.T``: the features, plus ``nuisance_weight`` times the nuisance input
    in every output dimension."""

    def __init__(self, nuisance_weight: float) -> None:
        super().__init__()
        self.encoder = nn.Linear(FEATURES + 1, FEATURES, bias=False)
        self.encoder.embedding_dim = FEATURES
        with torch.no_grad():
            self.encoder.weight.copy_(torch.eye(FEATURES, FEATURES + 1))
            self.encoder.weight[:, -1] = nuisance_weight

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def make_items(n: int = 60, seed: int = 0) -> Items:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "item_id": [f"item{i}" for i in range(n)],
            "source": [f"s{i % 3}" for i in range(n)],
            "gc": rng.uniform(0.3, 0.7, size=n),
            "sequence": ["ACGT" * 3] * n,
        }
    )
    features = rng.normal(size=(n, FEATURES)).astype(np.float32)
    return Items(table=table, meta={"payload_columns": ["sequence"]}, arrays={"features": features})


def stored_experiment(name: str, pairs: dict) -> Experiment:
    """An experiment as ``load_model`` returns it: validated, every default filled."""
    config = validate_config({"experiments": {name: minimal_experiment(pairs=pairs)}})
    return Experiment.from_dict(select_experiment(config, name, "test"))


@pytest.fixture
def stand_in_model_stack(monkeypatch):
    """Make ``load_model`` return the invariant stand-in model with the OffsetPairs builder."""
    experiment = stored_experiment("stand_in", {"name": f"{__name__}:OffsetPairs"})
    contrastive = types.ModuleType("scicontrast.models.contrastive")
    contrastive.load_model = lambda path, map_location="cpu": (LinearModel(0.0).eval(), experiment)
    # The untrained control: an encoder that sees the nuisance as much as the features.
    contrastive.build_model = lambda experiment: LinearModel(1.0)
    monkeypatch.setitem(sys.modules, "scicontrast.models.contrastive", contrastive)


def blobs(n_per_blob: int = 50, n_blobs: int = 4, dim: int = 16, seed: int = 0):
    """Tight Gaussian blobs around random orthogonal directions, and their labels."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:n_blobs] * 10
    labels = np.repeat(np.arange(n_blobs), n_per_blob)
    return centres[labels] + rng.normal(scale=0.5, size=(len(labels), dim)), labels


# ---------------------------------------------------------------- embed


def test_embed_items_embeds_canonical_views_in_any_batching():
    items = make_items(n=23)
    model = LinearModel(nuisance_weight=1.0)
    small = embed_items(model, OffsetPairs(), items, batch_size=5, progress=False)
    large = embed_items(model, OffsetPairs(), items, batch_size=512, progress=False)
    assert small.shape == (23, FEATURES) and small.dtype == np.float32
    # Canonical views carry no nuisance, so the embedding is exactly the features.
    np.testing.assert_allclose(small, items.arrays["features"], atol=1e-6)
    np.testing.assert_array_equal(small, large)


def test_embedding_progress_reaches_stderr_that_is_not_a_terminal(capsys):
    """A workflow step writes to a pipe or a log file, where progress must still show."""
    embed_items(LinearModel(1.0), OffsetPairs(), make_items(n=23), batch_size=5, progress=True)
    console = capsys.readouterr().err
    assert re.search(r"embed: 5batch \[\d\d:\d\d", console), console


def test_embed_writes_parquet_and_npy_that_agree(tmp_path, stand_in_model_stack):
    items = make_items()
    items.save(tmp_path / "items")
    embed("model.pt", tmp_path / "items", tmp_path / "embeddings")

    array = np.load(tmp_path / "embeddings" / "embeddings.npy")
    assert array.shape == (len(items), FEATURES) and array.dtype == np.float32

    schema = pq.read_schema(tmp_path / "embeddings" / "embeddings.parquet")
    assert schema.field("embedding").type == pa.list_(pa.float32(), FEATURES)

    frame = pd.read_parquet(tmp_path / "embeddings" / "embeddings.parquet")
    assert list(frame.columns) == ["item_id", "source", "gc", "embedding"]
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_numpy()), array)
    pd.testing.assert_frame_equal(
        frame.drop(columns="embedding"), items.table.drop(columns="sequence")
    )

    metadata, loaded = load_embeddings(tmp_path / "embeddings")
    assert "embedding" not in metadata.columns and "sequence" not in metadata.columns
    np.testing.assert_array_equal(loaded, array)


def test_failed_embedding_write_leaves_nothing(tmp_path, stand_in_model_stack, monkeypatch):
    items = make_items()
    items.save(tmp_path / "items")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # The parquet row group is already written when the array write fails.
    monkeypatch.setattr(embed_stream.GrowingArray, "append", fail)
    out = tmp_path / "results"
    with pytest.raises(OSError, match="disk full"):
        embed("model.pt", tmp_path / "items", out / "embeddings")
    assert list(out.iterdir()) == []


def test_load_embeddings_rejects_a_folder_without_them(tmp_path):
    with pytest.raises(InputDataError, match=r"embeddings\.parquet"):
        load_embeddings(tmp_path)


# ---------------------------------------------------------------- cluster


def test_clustering_recovers_separated_blobs():
    X, labels = blobs()
    assignments, metrics = cluster_embeddings(X, labels, hdbscan_min_cluster_size=10)
    assert list(assignments.columns) == ["kmeans", "hdbscan", "leiden"]
    assert len(assignments) == len(X)
    assert metrics["kmeans"]["n_clusters"] == 4  # k from the number of labels
    assert metrics["kmeans"]["ari"] > 0.95 and metrics["kmeans"]["nmi"] > 0.95
    assert metrics["hdbscan"]["ari"] > 0.95
    assert metrics["hdbscan"]["noise_fraction"] < 0.05
    assert metrics["kmeans"]["silhouette"] > 0.5


def test_clustering_sees_past_a_shared_offset():
    """Encoder outputs often share a large offset (random items at cosine ~0.98)."""
    X, labels = blobs(dim=64)
    offset = np.full(64, 60.0)
    unit = (X + offset) / np.linalg.norm(X + offset, axis=1, keepdims=True)
    assert (unit @ unit.T).mean() > 0.9
    _, metrics = cluster_embeddings(X + offset, labels, hdbscan_min_cluster_size=10)
    assert metrics["kmeans"]["ari"] > 0.95
    assert metrics["hdbscan"]["ari"] > 0.95
    assert metrics["hdbscan"]["pca_components"] == 5


def test_clustering_against_random_labels_scores_near_zero():
    X, _ = blobs()
    random_labels = np.random.default_rng(1).integers(0, 4, size=len(X))
    _, metrics = cluster_embeddings(X, random_labels)
    assert abs(metrics["kmeans"]["ari"]) < 0.05
    assert abs(metrics["hdbscan"]["ari"]) < 0.05


def test_silhouette_without_labels_and_default_k():
    X, _ = blobs()
    _, metrics = cluster_embeddings(X)
    assert metrics["kmeans"]["n_clusters"] == 8
    assert isinstance(metrics["kmeans"]["silhouette"], float)
    assert metrics["hdbscan"]["silhouette"] > 0.5
    assert "ari" not in metrics["kmeans"] and "n_missing_labels" not in metrics


def test_missing_labels_are_skipped_and_counted():
    X, labels = blobs()
    labels = labels.astype(object)
    labels[::10] = None
    _, metrics = cluster_embeddings(X, labels)
    assert metrics["n_missing_labels"] == 20 and metrics["n_labelled"] == 180
    assert metrics["kmeans"]["ari"] > 0.95


def test_cluster_writes_assignments_and_metrics(tmp_path):
    X, labels = blobs()
    metadata = pd.DataFrame({"item_id": [f"i{i}" for i in range(len(X))], "kind": labels})
    embed_module.write_embeddings(tmp_path / "emb", metadata, X)
    metrics = cluster(tmp_path / "emb", tmp_path / "clusters", label_column="kind")
    assignments = pd.read_parquet(tmp_path / "clusters" / "assignments.parquet")
    assert list(assignments.columns) == ["item_id", "kmeans", "hdbscan", "leiden", "kind"]
    assert json.loads((tmp_path / "clusters" / "metrics.json").read_text()) == metrics
    assert metrics["label_column"] == "kind"


def test_cluster_wrong_label_column_names_it(tmp_path):
    X, _ = blobs()
    metadata = pd.DataFrame({"item_id": [f"i{i}" for i in range(len(X))], "kind": 0})
    embed_module.write_embeddings(tmp_path / "emb", metadata, X)
    with pytest.raises(ConfigError, match=r"'species'.*available columns: item_id, kind"):
        cluster(tmp_path / "emb", tmp_path / "clusters", label_column="species")
    assert not (tmp_path / "clusters").exists()


# ---------------------------------------------------------------- probes


def test_linear_probe_separable_data_scores_one():
    X, labels = blobs(n_per_blob=30, n_blobs=2)
    result = linear_probe(X, labels)
    assert result["accuracy"]["mean"] == 1.0 and result["auroc"]["mean"] == 1.0
    assert len(result["per_seed"]) == 5 and result["auroc_kind"] == "binary"
    assert result["positive_class"] == "1"


def test_linear_probe_on_noise_is_near_chance():
    rng = np.random.default_rng(0)
    # Large enough that the split-to-split spread of the scores stays well inside 0.06.
    X, labels = rng.normal(size=(2000, 8)), rng.integers(0, 2, size=2000)
    result = linear_probe(X, labels)
    assert abs(result["accuracy"]["mean"] - 0.5) < 0.06
    assert abs(result["auroc"]["mean"] - 0.5) < 0.06
    assert result["accuracy"]["std"] > 0  # different splits, different scores


def test_l2_probe_sees_only_directions():
    """Rescaling each embedding changes nothing under the l2 probe, and does so under the
    per-dimension one: the information it keeps is the cosine geometry alone."""
    X, labels = blobs(n_per_blob=40, n_blobs=3)
    lengths = np.exp(np.random.default_rng(1).uniform(-4, 4, size=len(X)))
    unit = linear_probe(X, labels, seeds=(0, 1), scaling="l2")
    rescaled = linear_probe(X * lengths[:, None], labels, seeds=(0, 1), scaling="l2")
    assert unit["scaling"] == "l2" and unit["accuracy"]["mean"] > 0.9
    for before, after in zip(unit["per_seed"], rescaled["per_seed"], strict=True):
        assert before["accuracy"] == after["accuracy"]
        assert before["auroc"] == pytest.approx(after["auroc"], abs=1e-12)
    standard = linear_probe(X, labels, seeds=(0, 1))
    standard_rescaled = linear_probe(X * lengths[:, None], labels, seeds=(0, 1))
    assert standard["per_seed"] != standard_rescaled["per_seed"]


def test_probe_chooses_C_on_a_split_inside_the_training_part():
    """Each seed's ``C`` is the grid value whose probe, fitted on the inner split's rest,
    scores best on its held-out part (first, i.e. smallest, on ties); the reported scores are
    the probe with that ``C`` refitted on the whole training part."""
    rng = np.random.default_rng(3)
    labels = np.repeat(["a", "b"], 50)
    embeddings = rng.normal(size=(100, 6)) + 0.8 * (labels == "b")[:, None]
    codes = pd.factorize(labels, sort=True)[0]
    result = linear_probe(embeddings, labels, 0.2, [0, 1])
    assert result["C_grid"] == list(C_GRID)
    for run, (train, test) in zip(
        result["per_seed"], stratified_splits(codes, 0.2, [0, 1]), strict=True
    ):
        fit_rows, val_rows = train_test_split(
            train, test_size=0.2, stratify=codes[train], random_state=run["seed"]
        )
        accuracies = [
            probe_model("standard", c)
            .fit(embeddings[fit_rows], codes[fit_rows])
            .score(embeddings[val_rows], codes[val_rows])
            for c in C_GRID
        ]
        assert run["C"] == C_GRID[int(np.argmax(accuracies))]
        assert run["C_chosen_on"] == "validation"
        refit = probe_model("standard", run["C"]).fit(embeddings[train], codes[train])
        assert run["accuracy"] == refit.score(embeddings[test], codes[test])


def test_probe_loosens_regularisation_when_the_signal_needs_it():
    """The labels sit along the difference of two strongly correlated dimensions, the
    direction of least variance: a strongly regularised probe (small ``C``) shrinks towards
    the shared, uninformative direction and scores near chance, so the choice must land on a
    weak regularisation, as no fixed small ``C`` would."""
    rng = np.random.default_rng(0)
    shared, own = 10 * rng.normal(size=400), rng.normal(size=(400, 2))
    labels = (own[:, 0] > own[:, 1]).astype(int)
    embeddings = shared[:, None] + own
    chosen = linear_probe(embeddings, labels)
    assert all(run["C"] >= 1.0 for run in chosen["per_seed"])
    assert chosen["accuracy"]["mean"] > 0.95
    strong = [
        probe_model("standard", C_GRID[0])
        .fit(embeddings[train], labels[train])
        .score(embeddings[test], labels[test])
        for train, test in stratified_splits(labels, 0.2, DEFAULT_SEEDS)
    ]
    assert np.mean(strong) < 0.7


def test_probe_on_a_training_part_too_small_to_split_keeps_the_default_C():
    embeddings = np.random.default_rng(0).normal(size=(6, 3))
    result = linear_probe(embeddings, np.array([0, 0, 0, 1, 1, 1]), 0.34, [0])
    assert result["per_seed"][0]["C"] == 1.0
    assert result["per_seed"][0]["C_chosen_on"] == "default"


def test_validation_probe_is_the_probe_refit_inside_each_training_part():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 60)
    embeddings = rng.normal(size=(180, 5)) + (labels == "b")[:, None] - (labels == "c")[:, None]
    seeds = [0, 1]
    codes = pd.factorize(labels, sort=True)[0]
    splits = stratified_splits(codes, 0.25, seeds)
    expected = np.mean(
        [
            linear_probe(embeddings[train], labels[train], 0.25, [seed])["accuracy"]["mean"]
            for seed, (train, _test) in zip(seeds, splits, strict=True)
        ]
    )
    before = validation_probe(embeddings, labels, 0.25, seeds)
    assert before["accuracy"] == pytest.approx(expected)
    # A seed's test part chooses nothing: replacing it leaves that seed's validation unchanged
    # (one seed, since one seed's test items are another's training items).
    single = validation_probe(embeddings, labels, 0.25, [0])
    scrambled = embeddings.copy()
    scrambled[splits[0][1]] = rng.normal(size=(len(splits[0][1]), 5))
    assert validation_probe(scrambled, labels, 0.25, [0]) == single
    assert linear_probe(scrambled, labels, 0.25, [0]) != linear_probe(embeddings, labels, 0.25, [0])


def test_balanced_probe_weighs_the_classes_equally():
    """With one class five times the other and overlapping classes, the default probe leans
    towards the larger one, so its balanced accuracy falls below what the embedding
    separates; the balanced probe recovers it at the same AUROC, and with equal classes its
    weights are all 1, so it is the default probe."""
    rng = np.random.default_rng(0)
    labels = np.repeat(["common", "rare"], [500, 100])
    embeddings = rng.normal(size=(600, 4)) + 1.2 * (labels == "rare")[:, None]
    plain = linear_probe(embeddings, labels, 0.2, [0, 1, 2])
    balanced = linear_probe(embeddings, labels, 0.2, [0, 1, 2], class_weight="balanced")
    assert plain["class_weight"] is None and balanced["class_weight"] == "balanced"
    assert balanced["balanced_accuracy"]["mean"] > plain["balanced_accuracy"]["mean"] + 0.03
    assert balanced["auroc"]["mean"] == pytest.approx(plain["auroc"]["mean"], abs=0.01)
    validation = validation_probe(embeddings, labels, 0.2, [0], class_weight="balanced")
    assert (
        validation["balanced_accuracy"]
        > validation_probe(embeddings, labels, 0.2, [0])["balanced_accuracy"]
    )
    even = np.repeat(["a", "b"], 100)
    X = rng.normal(size=(200, 3)) + 0.5 * (even == "b")[:, None]
    even_plain = linear_probe(X, even, 0.2, [0, 1])["per_seed"]
    even_balanced = linear_probe(X, even, 0.2, [0, 1], class_weight="balanced")["per_seed"]
    assert [run["balanced_accuracy"] for run in even_balanced] == pytest.approx(
        [run["balanced_accuracy"] for run in even_plain]
    )
    with pytest.raises(ConfigError, match="probe class_weight must be one of"):
        linear_probe(X, even, class_weight="inverse")


def test_grouped_splits_keep_each_group_on_one_side():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(120), rng.integers(1, 6, 120))
    codes = (groups % 4 == 0).astype(int)  # a class per group, a quarter of the groups
    splits = stratified_splits(codes, 0.2, [0, 1, 2], groups)
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == len(codes)
        assert abs(len(test) / len(codes) - 0.2) < 0.05
        assert abs(codes[test].mean() - codes.mean()) < 0.05
    assert not np.array_equal(splits[0][1], splits[1][1])  # the seed shuffles the groups
    with pytest.raises(ValueError, match="groups has 3 entries"):
        stratified_splits(codes, 0.2, [0], groups[:3])
    with pytest.raises(ValueError, match="4 groups cannot fill 5 folds"):
        stratified_splits(codes[:8], 0.2, [0], np.repeat(np.arange(4), 2))


def test_grouped_probe_scores_the_label_not_the_group():
    """Each group's items are near-copies whose label is random per group: a random split
    puts copies of every test item in the training part, so the probe reads the label off
    the group; grouped splits leave it nothing to recognise, and it falls to chance. Where
    the label lives in a feature shared across groups, grouping costs nothing."""
    rng = np.random.default_rng(0)
    n_groups, copies = 150, 4
    groups = np.repeat(np.arange(n_groups), copies)
    group_label = rng.integers(0, 2, n_groups)
    labels = np.array(["no", "yes"])[group_label[groups]]
    # More dimensions than groups, so a linear probe can tell every group apart.
    centres = rng.normal(size=(n_groups, 200))
    memorised = centres[groups] + 0.05 * rng.normal(size=(len(groups), 200))
    seeds = [0, 1, 2]
    random_split = linear_probe(memorised, labels, 0.2, seeds)
    grouped = linear_probe(memorised, labels, 0.2, seeds, groups=groups)
    assert random_split["grouped"] is False and grouped["grouped"] is True
    assert random_split["balanced_accuracy"]["mean"] > 0.9
    assert grouped["balanced_accuracy"]["mean"] < 0.65
    assert knn_accuracy(memorised, labels, 1, 0.2, seeds)["accuracy"]["mean"] > 0.9
    assert knn_accuracy(memorised, labels, 1, 0.2, seeds, groups)["accuracy"]["mean"] < 0.65
    assert (
        validation_probe(memorised, labels, 0.2, seeds, groups=groups)["balanced_accuracy"] < 0.65
    )
    shared_signal = np.column_stack(
        [3.0 * group_label[groups] + 0.5 * rng.normal(size=len(groups)), memorised[:, :5]]
    )
    assert (
        linear_probe(shared_signal, labels, 0.2, seeds, groups=groups)["balanced_accuracy"]["mean"]
        > 0.85
    )


def test_node_probe_passes_the_class_weight_on():
    from scicontrast.analysis.graph_eval import node_probe

    rng = np.random.default_rng(1)
    labels = np.repeat(["common", "rare"], [1000, 200])
    embeddings = rng.normal(size=(1200, 4)) + 1.2 * (labels == "rare")[:, None]
    plain = node_probe(embeddings, labels, [0, 1])
    balanced = node_probe(embeddings, labels, [0, 1], class_weight="balanced")
    assert {run["class_weight"] for run in balanced["per_seed"]} == {"balanced"}
    assert balanced["balanced_accuracy"]["mean"] > plain["balanced_accuracy"]["mean"] + 0.03


def test_unknown_probe_scaling_is_a_config_error():
    X, labels = blobs(n_per_blob=10, n_blobs=2)
    with pytest.raises(ConfigError, match=r"probe scaling must be one of \('standard', 'l2'\)"):
        linear_probe(X, labels, scaling="minmax")


def test_auroc_binary_and_multiclass_match_sklearn():
    rng = np.random.default_rng(0)
    y_binary = rng.integers(0, 2, size=50)
    scores = rng.dirichlet(np.ones(2), size=50)
    assert auroc(y_binary, scores, np.array([0, 1])) == pytest.approx(
        roc_auc_score(y_binary, scores[:, 1])
    )
    y_multi = rng.integers(0, 3, size=60)
    scores = rng.dirichlet(np.ones(3), size=60)
    assert auroc(y_multi, scores, np.array([0, 1, 2])) == pytest.approx(
        roc_auc_score(y_multi, scores, multi_class="ovr", average="macro")
    )


def test_linear_probe_multiclass_uses_macro_one_vs_rest():
    X, labels = blobs(n_per_blob=20, n_blobs=3)
    result = linear_probe(X, np.array(["a", "b", "c"])[labels], seeds=(0, 1))
    assert result["auroc_kind"] == "macro_one_vs_rest" and "positive_class" not in result
    assert result["auroc"]["mean"] == pytest.approx(1.0)


def test_knn_accuracy_on_separable_and_noise():
    X, labels = blobs(n_per_blob=30, n_blobs=3)
    assert knn_accuracy(X, labels, k=5)["accuracy"]["mean"] == 1.0
    rng = np.random.default_rng(0)
    noise = knn_accuracy(rng.normal(size=(300, 16)), rng.integers(0, 2, size=300))
    assert abs(noise["balanced_accuracy"]["mean"] - 0.5) < 0.1


def test_probes_fit_on_one_blas_thread_whatever_the_caller_allows(monkeypatch):
    # The solver's path depends on how BLAS splits its sums, so a probe run under two threads
    # may choose another C than under one; the probes pin one thread to score the same anywhere.
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_info, threadpool_limits

    blas_threads_seen = []

    def recording(method):
        def wrapper(self, *args, **kwargs):
            pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
            blas_threads_seen.extend(pool["num_threads"] for pool in pools)
            return method(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(LogisticRegression, "fit", recording(LogisticRegression.fit))
    monkeypatch.setattr(KNeighborsClassifier, "predict", recording(KNeighborsClassifier.predict))
    X, labels = blobs(n_per_blob=20, n_blobs=3)
    with threadpool_limits(limits=2, user_api="blas"):
        if not any(pool["num_threads"] == 2 for pool in threadpool_info()):
            pytest.skip("this BLAS cannot run two threads here")
        linear_probe(X, labels, seeds=(0,))
        validation_probe(X, labels, seeds=(0,))
        knn_accuracy(X, labels, k=5, seeds=(0,))
    assert blas_threads_seen and set(blas_threads_seen) == {1}


# ---------------------------------------------------------------- invariance


def _invariance(nuisance_weight: float, seed: int = 0) -> dict:
    items = make_items(n=40)
    builder = OffsetPairs()
    model = LinearModel(nuisance_weight)
    return invariance_score(
        model.embed, items, builder.build(items), builder, negatives=5, seed=seed, batch_size=16
    )


def test_invariance_is_one_for_an_encoder_that_ignores_the_augmentation():
    result = _invariance(nuisance_weight=0.0)
    assert result["cos_positive"] == pytest.approx(1.0, abs=1e-6)
    assert result["score"] == pytest.approx(1.0, abs=1e-5)
    assert abs(result["cos_random"]) < 0.3
    assert result["groups"] == 40 and result["negatives"] == 5


def test_invariance_is_below_one_for_an_encoder_that_sees_the_augmentation():
    result = _invariance(nuisance_weight=1.0)
    assert result["score"] < 0.8
    assert result == _invariance(nuisance_weight=1.0)  # seeded: reproducible
    assert result != _invariance(nuisance_weight=1.0, seed=1)


# ---------------------------------------------------------------- evaluate


def _prepare(tmp_path, items: Items) -> None:
    items.save(tmp_path / "items")
    OffsetPairs().build(items).to_parquet(tmp_path / "pairs.parquet")
    embed("model.pt", tmp_path / "items", tmp_path / "embeddings")


def analysis_settings(**overrides) -> Analysis:
    """The schema's ``analysis`` section with ``overrides``, validated as a config is."""
    config = validate_config({"experiments": {"a": minimal_experiment(analysis=overrides)}})
    return Experiment.from_dict(select_experiment(config, "a", "test")).analysis


def _evaluate(tmp_path, **options) -> dict:
    """``evaluate`` on the files ``_prepare`` wrote, into ``evaluation.json``, with the
    schema's analysis settings but ``options``."""
    return evaluate(
        "model.pt",
        tmp_path / "items",
        tmp_path / "pairs.parquet",
        tmp_path / "embeddings",
        tmp_path / "evaluation.json",
        analysis_settings(**options),
    )


def test_evaluate_writes_all_sections(tmp_path, stand_in_model_stack):
    items = make_items(n=60)
    items.table.loc[0, "source"] = "singleton"
    _prepare(tmp_path, items)
    with pytest.warns(UserWarning, match="singleton"):
        result = _evaluate(tmp_path, label_column="source", probe_seeds=[0, 1], knn_k=3)
    assert json.loads((tmp_path / "evaluation.json").read_text()) == json.loads(json.dumps(result))
    assert result["n_items"] == 60 and result["embedding_dim"] == FEATURES
    assert result["labels"]["n_used"] == 59 and result["labels"]["dropped_classes"] == ["singleton"]
    assert result["probe"]["n_classes"] == 3 and len(result["knn"]["per_seed"]) == 2
    assert result["invariance"]["score"] == pytest.approx(1.0, abs=1e-5)

    X, labels = blobs()
    _, clusters = cluster_embeddings(X, labels)
    report = format_report(result, clusters)
    for expected in ("60 items", "linear probe", "kNN (k=3", "AUROC (macro OvR)", "hdbscan"):
        assert expected in report


def test_evaluate_scores_the_symmetry_alone_beside_the_training_views(
    tmp_path, stand_in_model_stack
):
    experiment = stored_experiment("stand_in", {"name": f"{__name__}:JitteredOffsetPairs"})
    sys.modules["scicontrast.models.contrastive"].load_model = lambda path, map_location: (
        LinearModel(0.0).eval(),
        experiment,
    )
    _prepare(tmp_path, make_items(n=40))
    result = _evaluate(tmp_path)
    # The model ignores the offset input but not the feature noise.
    assert result["invariance"]["score"] < 0.99
    symmetry = result["invariance_symmetry"]
    assert symmetry["symmetry"] == "offset"
    assert symmetry["score"] == pytest.approx(1.0, abs=1e-5)
    report = format_report(result)
    assert "training views" in report and "offset alone" in report


class StrandSymmetricModel(nn.Module):
    """``embed(x) = flatten(x + rc(x))`` over DNA one-hot views ``[B, 4, W]``: exactly
    reverse-complement invariant, and blind to nothing else."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.encoder = nn.Identity()
        self.encoder.embedding_dim = 4 * window

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return (x + x.flip(-2).flip(-1)).flatten(1)


def test_evaluate_scores_dna_symmetry_without_neighbour_views(tmp_path, stand_in_model_stack):
    from scicontrast.data_adapters.dna.reading import FastaAdapter
    from scicontrast.data_adapters.dna.views import DNAViews

    rng = np.random.default_rng(0)
    fasta = tmp_path / "x.fa"
    fasta.write_text(
        "".join(f">r{i}\n{''.join(rng.choice(list('ACGT'), 40))}\n" for i in range(30))
    )
    items = FastaAdapter(paths=[str(fasta)], window=40, flank=2).read()
    pairs_params = {"max_shift": 2, "neighbours": 2}
    experiment = stored_experiment("dna", {"name": "dna_views", "params": pairs_params})
    sys.modules["scicontrast.models.contrastive"].load_model = lambda path, map_location: (
        StrandSymmetricModel(window=40).eval(),
        experiment,
    )
    items.save(tmp_path / "items")
    DNAViews(**pairs_params).build(items).to_parquet(tmp_path / "pairs.parquet")
    embed("model.pt", tmp_path / "items", tmp_path / "embeddings")
    result = _evaluate(tmp_path)
    # Neighbours are other windows and shifts move the window: the training views differ.
    assert result["invariance"]["score"] < 0.9
    symmetry = result["invariance_symmetry"]
    assert symmetry["symmetry"] == "reverse complement"
    assert symmetry["score"] == pytest.approx(1.0, abs=1e-5)


def test_evaluate_probes_with_the_class_weight_it_is_given(tmp_path, stand_in_model_stack):
    items = make_items(n=60)
    items.table["rare"] = np.where(np.arange(60) % 6 == 0, "rare", "common")
    _prepare(tmp_path, items)
    plain = _evaluate(tmp_path, label_column="rare", probe_seeds=[0, 1])["probe"]
    balanced = _evaluate(
        tmp_path, label_column="rare", probe_seeds=[0, 1], probe_class_weight="balanced"
    )["probe"]
    assert plain["class_weight"] is None and balanced["class_weight"] == "balanced"
    assert balanced["per_seed"] != plain["per_seed"]
    assert "linear probe (classes weighed alike)" in format_report(
        json.loads((tmp_path / "evaluation.json").read_text())
    )


def test_evaluate_groups_the_probe_splits_by_the_column_it_is_given(tmp_path, stand_in_model_stack):
    """Twelve sources of five near-copies each, the label random per source: split item by
    item the probes find a copy of each test item in the training part; grouped by source
    they cannot, and the report says how the splits were made."""
    rng = np.random.default_rng(0)
    items = make_items(n=60)
    source = np.arange(60) // 5
    items.table["source"] = [f"s{s}" for s in source]
    items.table["label"] = np.array(["x", "y"])[rng.permutation(np.repeat([0, 1], 6))[source]]
    centres = rng.normal(size=(12, FEATURES)).astype(np.float32)
    items.arrays["features"] = centres[source] + 0.01 * rng.normal(size=(60, FEATURES))
    _prepare(tmp_path, items)
    options = {"label_column": "label", "probe_seeds": [0, 1, 2], "knn_k": 3}
    split_by_item = _evaluate(tmp_path, **options)
    grouped = _evaluate(tmp_path, **options, probe_group_column="source")
    assert split_by_item["knn"]["accuracy"]["mean"] > 0.9
    assert grouped["knn"]["accuracy"]["mean"] < 0.75
    assert grouped["probe"]["grouped"] and not split_by_item["probe"]["grouped"]
    assert "splits grouped by 'source'" in format_report(grouped)
    with pytest.raises(ConfigError, match="probe group column 'batch' is not in the table"):
        _evaluate(tmp_path, label_column="label", probe_group_column="batch")


def test_probe_group_column_on_graph_items_is_a_config_error(tmp_path):
    (tmp_path / "items").mkdir()
    (tmp_path / "items" / "meta.json").write_text(json.dumps({"modality": "graph"}))
    with pytest.raises(ConfigError, match="probe_group_column applies to items probed one"):
        _evaluate(tmp_path, label_column="label", probe_group_column="record_id")


def test_evaluate_without_labels_has_no_probe(tmp_path, stand_in_model_stack):
    _prepare(tmp_path, make_items(n=30))
    result = _evaluate(tmp_path)
    assert "probe" not in result and "knn" not in result and "invariance" in result
    assert "Invariance" in format_report(result)


def test_evaluate_with_one_usable_class_fails_without_output(tmp_path, stand_in_model_stack):
    items = make_items(n=30)
    items.table["source"] = ["common"] * 29 + ["rare"]
    _prepare(tmp_path, items)
    with pytest.warns(UserWarning), pytest.raises(InputDataError, match="'source'"):
        _evaluate(tmp_path, label_column="source")
    assert not (tmp_path / "evaluation.json").exists()
