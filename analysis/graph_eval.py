"""Node-level evaluation of frozen graph embeddings: the GRACE / DGI protocol.

**Random splits.** Per seed, the labelled nodes are split 10 % train / 10 % validation /
80 % test, stratified by class (``sklearn.model_selection.train_test_split`` seeded with the
seed, once for train vs rest and once for validation vs test). A logistic-regression probe
(:func:`scicontrast.analysis.probes.probe_model`: ``scaling`` of the embeddings, then
``LogisticRegression``) is fitted on the train nodes for each inverse
regularisation strength ``C`` in :data:`C_GRID`; the ``C`` with the best validation
accuracy (the smallest on ties) is scored on the test nodes. The test nodes never choose
anything. Reported: mean and (population) std over seeds of test accuracy, balanced
accuracy and macro one-vs-rest AUROC (see :func:`scicontrast.analysis.probes.auroc`).

**Public split.** When the items table has ``train_mask``, ``val_mask`` and ``test_mask``
(Planetoid's 20 nodes per class / 500 / 1000), the same probe on that split.

**kNN.** Cosine ``k``-nearest-neighbour accuracy with the train nodes of each random split
as the reference set.

**Invariance.** The two training views of epoch 0 (:meth:`GraphViews.views` with the
evaluation seed) are embedded; with unit vectors ``h1_i`` and ``h2_i`` of node ``i``,
``cos_positive`` is the mean of ``cos(h1_i, h2_i)``, ``cos_random`` the mean cosine of
``h1_i`` to ``h1_j`` for random other nodes ``j``, and
``score = (cos_positive - cos_random) / (1 - cos_random)`` as for every domain.

**Training cost.** From ``metrics.jsonl`` beside the model: epochs, mean and total seconds
per epoch, and the peak memory the training process reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split

from scicontrast.analysis.baselines import Scores, compare_with_controls, metric_summary
from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.analysis.probes import (
    C_GRID,
    auroc,
    best_C,
    knn_on_splits,
    seed_summary,
    usable_labels,
)
from scicontrast.analysis.trained import load_trained
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs.cleaning import SPLIT_MASKS
from scicontrast.data_adapters.graphs.views import GraphViews, graph_data
from scicontrast.errors import InputDataError
from scicontrast.experiment import Analysis
from scicontrast.io import write_json

if TYPE_CHECKING:
    from scicontrast.models.contrastive import ContrastiveModel

TRAIN_FRACTION = 0.1
VAL_FRACTION = 0.1
NodeSplit = tuple[np.ndarray, np.ndarray, np.ndarray]


def random_node_splits(
    codes: np.ndarray,
    seeds: Sequence[int],
    train_fraction: float = TRAIN_FRACTION,
    val_fraction: float = VAL_FRACTION,
) -> list[NodeSplit]:
    """One stratified ``(train, val, test)`` index split of ``range(len(codes))`` per seed."""
    indices = np.arange(len(codes))
    splits = []
    for seed in seeds:
        train, rest = train_test_split(
            indices, train_size=train_fraction, stratify=codes, random_state=seed
        )
        val, test = train_test_split(
            rest,
            train_size=val_fraction / (1 - train_fraction),
            stratify=codes[rest],
            random_state=seed,
        )
        splits.append((train, val, test))
    return splits


def validated_probe(
    embeddings: np.ndarray,
    codes: np.ndarray,
    split: NodeSplit,
    scaling: str = "standard",
    c_grid: Sequence[float] = C_GRID,
    class_weight: str | None = None,
) -> dict[str, Any]:
    """Fit the probe per ``C`` on ``train``, choose ``C`` on ``val``, score on ``test``."""
    train, val, test = split
    best_model, best_c, best_val = best_C(
        embeddings, codes, train, val, scaling, c_grid, class_weight
    )
    scores = best_model.predict_proba(embeddings[test])
    predicted = best_model.classes_[scores.argmax(axis=1)]
    return {
        "accuracy": float(accuracy_score(codes[test], predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(codes[test], predicted)),
        "auroc": auroc(codes[test], scores, best_model.classes_),
        "C": best_c,
        "scaling": scaling,
        "class_weight": class_weight,
        "val_accuracy": best_val,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
    }


def node_probe(
    embeddings: np.ndarray,
    labels: Sequence | pd.Series,
    seeds: Sequence[int],
    scaling: str = "standard",
    class_weight: str | None = None,
) -> dict[str, Any]:
    """The validated probe on random 10/10/80 splits; shaped like ``linear_probe``'s result."""
    codes, classes = pd.factorize(pd.Series(np.asarray(labels, dtype=object)), sort=True)
    per_seed = [
        {
            "seed": int(seed),
            **validated_probe(embeddings, codes, split, scaling, class_weight=class_weight),
        }
        for seed, split in zip(seeds, random_node_splits(codes, seeds), strict=True)
    ]
    result: dict[str, Any] = {
        "split": "random stratified 10% train / 10% val / 80% test; C chosen on val",
        "n_items": len(codes),
        "n_classes": len(classes),
        "test_fraction": 1 - TRAIN_FRACTION - VAL_FRACTION,
        "scaling": scaling,
        "class_weight": class_weight,
        "majority_class_fraction": float(np.bincount(codes).max() / len(codes)),
        "auroc_kind": "binary" if len(classes) == 2 else "macro_one_vs_rest",
    }
    for metric in ("accuracy", "balanced_accuracy", "auroc"):
        result[metric] = seed_summary([run[metric] for run in per_seed])
    result["per_seed"] = per_seed
    return result


def node_knn(
    embeddings: np.ndarray, labels: Sequence | pd.Series, seeds: Sequence[int], k: int = 10
) -> dict[str, Any]:
    """Cosine kNN accuracy on the test nodes of the random splits (train nodes as reference)."""
    codes, _ = pd.factorize(pd.Series(np.asarray(labels, dtype=object)), sort=True)
    splits = random_node_splits(codes, seeds)
    return knn_on_splits(embeddings, codes, seeds, splits, k, 1 - TRAIN_FRACTION - VAL_FRACTION)


def public_split_probe(
    embeddings: np.ndarray,
    table: pd.DataFrame,
    label_column: str,
    scaling: str = "standard",
    class_weight: str | None = None,
) -> dict[str, Any] | None:
    """The validated probe on the table's ``train/val/test_mask``; ``None`` without them."""
    masks = list(SPLIT_MASKS.values())
    if not all(mask in table.columns for mask in masks):
        return None
    labelled = table[label_column].notna().to_numpy()
    codes, _ = pd.factorize(table[label_column].astype(object), sort=True)
    train, val, test = (np.flatnonzero(table[m].to_numpy(dtype=bool) & labelled) for m in masks)
    split = (train, val, test)
    if any(len(part) == 0 for part in split):
        return None
    return validated_probe(embeddings, codes, split, scaling, class_weight=class_weight)


def graph_invariance(
    model: ContrastiveModel,
    items: Items,
    builder: GraphViews,
    negatives: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """How much closer a node's two views embed than random other nodes (module docstring)."""
    data = graph_data(items)
    batch, _ = builder.views(data, seed, epoch=0)
    with torch.no_grad():
        h = F.normalize(model.embed(batch.to(device)).float().cpu(), dim=1)
    n_nodes = data.num_nodes
    first, second = h[:n_nodes], h[n_nodes:]
    cos_positive = float((first * second).sum(dim=1).mean())
    rng = np.random.default_rng(seed)
    n_negatives = min(negatives, n_nodes - 1)
    others = (
        np.arange(n_nodes)[:, None] + 1 + rng.integers(0, n_nodes - 1, (n_nodes, n_negatives))
    ) % n_nodes
    cos_random = float((first[:, None, :] * first[torch.from_numpy(others)]).sum(-1).mean())
    spread = 1.0 - cos_random
    return {
        "cos_positive": cos_positive,
        "cos_random": cos_random,
        "score": (cos_positive - cos_random) / spread if spread > 1e-8 else None,
        "groups": n_nodes,
        "groups_total": n_nodes,
        "negatives": n_negatives,
    }


def training_cost(metrics_path: str | Path) -> dict[str, Any] | None:
    """Epochs, seconds per epoch and peak memory from a training ``metrics.jsonl``.

    For an ensemble (records tagged ``"member"``), ``epochs`` counts one member's epochs,
    ``members`` how many trained, and the seconds cover every member's epochs.
    """
    metrics_path = Path(metrics_path)
    if not metrics_path.is_file():
        return None
    epochs = [
        record
        for record in map(json.loads, metrics_path.read_text().splitlines())
        if record.get("kind") == "epoch"
    ]
    if not epochs:
        return None
    seconds = [record["seconds"] for record in epochs]
    peaks = [record["peak_memory_mb"] for record in epochs if "peak_memory_mb" in record]
    members = len({record.get("member", 0) for record in epochs})
    return {
        "epochs": len(epochs) // members,
        "members": members,
        "seconds_per_epoch": float(np.mean(seconds)),
        "seconds_total": float(np.sum(seconds)),
        "peak_memory_mb": max(peaks) if peaks else None,
    }


def evaluate_graph(
    model_path: str | Path,
    items_dir: str | Path,
    embeddings_dir: str | Path,
    out_path: str | Path,
    analysis: Analysis,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """Probe, kNN, public split, invariance and training cost of a graph model, and with
    ``analysis.baselines`` the comparison with classical node features and (with
    ``analysis.untrained_control``) the untrained encoder (``scicontrast.analysis.baselines``);
    write JSON. ``seed`` (the experiment's training seed) draws the invariance views and
    negatives."""
    metadata, embeddings = load_embeddings(embeddings_dir)
    result: dict[str, Any] = {
        "n_items": len(embeddings),
        "embedding_dim": int(embeddings.shape[1]),
        "label_column": analysis.label_column,
    }
    if analysis.label_column is not None:
        source = Path(embeddings_dir) / EMBEDDINGS_TABLE
        rows, labels, result["labels"] = usable_labels(metadata, analysis.label_column, source)
        try:
            result.update(_node_probes(embeddings, metadata, rows, labels, analysis))
        except ValueError as exc:
            raise InputDataError(
                f"{source}: label column {analysis.label_column!r}: {exc}"
            ) from None
    trained = load_trained(model_path, device)
    items = Items.load(items_dir)
    result["invariance"] = graph_invariance(
        trained.model,
        items,
        cast(GraphViews, trained.builder),
        analysis.invariance_negatives,
        seed,
        trained.device,
    )
    result["training"] = training_cost(Path(model_path).parent / "metrics.jsonl")
    if analysis.label_column is not None and analysis.baselines:
        trained_scores = _node_scores(
            result["probe"], result["knn"], result["public_split"], embeddings[rows], labels
        )
        result["comparison"] = compare_with_controls(
            trained_scores,
            trained,
            items,
            _node_scorer(metadata, rows, analysis),
            analysis.untrained_control,
        )
    write_json(out_path, result)
    return result


def _node_probes(
    embeddings: np.ndarray,
    table: pd.DataFrame,
    rows: np.ndarray,
    labels: pd.Series,
    analysis: Analysis,
) -> dict[str, Any]:
    """The ``probe``, ``knn`` and ``public_split`` entries for ``[N_nodes, F]`` features
    (``rows`` the labelled nodes, ``labels`` theirs)."""
    column = analysis.label_column
    assert column is not None  # probed only with a label column
    seeds, scaling, class_weight = (
        analysis.probe_seeds,
        analysis.probe_scaling,
        analysis.probe_class_weight,
    )
    return {
        "probe": node_probe(embeddings[rows], labels, seeds, scaling, class_weight),
        "knn": node_knn(embeddings[rows], labels, seeds, analysis.knn_k),
        "public_split": public_split_probe(embeddings, table, column, scaling, class_weight),
    }


def _node_scores(
    probe: dict[str, Any],
    knn: dict[str, Any],
    public: dict[str, Any] | None,
    features: np.ndarray,
    labels: pd.Series,
) -> Scores:
    """The compared metrics of one node feature set: random-split and public-split probe,
    kNN, and k-means with as many clusters as classes."""
    from scicontrast.analysis.cluster import cluster_embeddings

    _, clusters = cluster_embeddings(features, labels.to_numpy(), methods=("kmeans",))
    scores = {
        "probe accuracy, random splits": metric_summary(
            [run["accuracy"] for run in probe["per_seed"]]
        ),
        "kNN accuracy": metric_summary([run["accuracy"] for run in knn["per_seed"]]),
        "k-means ARI": metric_summary(clusters["kmeans"]["ari"]),
    }
    if public is not None:
        scores["probe accuracy, public split"] = metric_summary(public["accuracy"])
    return scores


def _node_scorer(
    table: pd.DataFrame, rows: np.ndarray, analysis: Analysis
) -> Callable[[np.ndarray], Scores]:
    """Scores of any ``[N_nodes, F]`` feature set with the embedding's splits and probes."""
    labels = table[analysis.label_column].iloc[rows]

    def score(features: np.ndarray) -> Scores:
        features = np.asarray(features, dtype=np.float64)
        found = _node_probes(features, table, rows, labels, analysis)
        return _node_scores(
            found["probe"], found["knn"], found["public_split"], features[rows], labels
        )

    return score
