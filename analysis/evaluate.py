"""The ``evaluate`` step: label probes, kNN, the invariance score and the baselines, in one file.

The probes are :mod:`~scicontrast.analysis.probes`' (their protocol is described there), the
invariance score :mod:`~scicontrast.analysis.invariance`'s, the summary text
:mod:`~scicontrast.analysis.summary`'s.

``evaluate`` writes one JSON file with ``n_items``, ``embedding_dim``, ``invariance`` (and
``invariance_symmetry`` where the pair builder has one), and,
when a label column is given, ``labels`` (how many items were usable), ``probe`` and
``knn``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scicontrast.analysis.baselines import (
    Scores,
    compare_with_controls,
    metric_summary,
)
from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.analysis.invariance import invariance_score
from scicontrast.analysis.probes import knn_accuracy, linear_probe, usable_labels
from scicontrast.analysis.trained import TrainedModel, check_same_items, load_trained, read_pairs
from scicontrast.data_adapters.base import Items
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Analysis
from scicontrast.io import write_json


def _probe_groups(
    metadata: pd.DataFrame, column: str, rows: np.ndarray, source: Path
) -> np.ndarray:
    """The group id of each probed row (``rows`` of the embeddings table)."""
    if column not in metadata.columns:
        raise ConfigError(
            f"{source}: probe group column {column!r} is not in the table; "
            f"available columns: {', '.join(map(str, metadata.columns))}"
        )
    groups = metadata[column].iloc[rows]
    missing = np.flatnonzero(groups.isna().to_numpy())
    if missing.size:
        raise InputDataError(
            f"{source}: probe group column {column!r} is empty in row {int(rows[missing[0]])} "
            f"(item {metadata['item_id'].iloc[rows[missing[0]]]!r}); every probed item needs "
            "a group"
        )
    return groups.astype(str).to_numpy()


@dataclasses.dataclass(frozen=True)
class Labelled:
    """The probed rows of the embeddings table, their labels and (grouped splits) groups."""

    rows: np.ndarray
    labels: pd.Series
    groups: np.ndarray | None


def evaluate(
    model_path: str | Path,
    items_dir: str | Path,
    pairs_path: str | Path,
    embeddings_dir: str | Path,
    out_path: str | Path,
    analysis: Analysis,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """The ``evaluate`` step for the items' modality; writes ``out_path`` and returns its JSON.

    ``seed`` (the experiment's training seed) draws the invariance score's negatives.
    Graph items (``meta["modality"] == "graph"``) are evaluated node-wise, by
    :func:`scicontrast.analysis.graph_eval.evaluate_graph` (random 10/10/80 splits over
    ``probe_seeds``, the public split, training cost; ``probe_test_fraction`` is unused).
    Audio-image items (``"audio_image"``) are evaluated by cross-modal retrieval and
    zero-shot classification, by :func:`scicontrast.analysis.retrieval.evaluate_audio_image`.
    Other items are probed one by one, by :func:`evaluate_items`.
    """
    modality = _modality(items_dir)
    if analysis.probe_group_column is not None and modality in ("graph", "audio_image"):
        raise ConfigError(
            f"analysis.probe_group_column applies to items probed one by one, not to "
            f"{modality} items ({items_dir})"
        )
    if modality == "audio_image":
        from scicontrast.analysis.retrieval import evaluate_audio_image

        return evaluate_audio_image(
            model_path, items_dir, pairs_path, embeddings_dir, out_path, analysis, seed
        )
    if modality == "graph":
        from scicontrast.analysis.graph_eval import evaluate_graph

        return evaluate_graph(
            model_path, items_dir, embeddings_dir, out_path, analysis, seed, device
        )
    return evaluate_items(
        model_path, items_dir, pairs_path, embeddings_dir, out_path, analysis, seed, device
    )


def evaluate_items(
    model_path: str | Path,
    items_dir: str | Path,
    pairs_path: str | Path,
    embeddings_dir: str | Path,
    out_path: str | Path,
    analysis: Analysis,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """Probe the embeddings for ``analysis.label_column``, score the model's invariance, write
    JSON.

    With a label column and ``analysis.baselines``, the pair builder's classical features
    and (with ``analysis.untrained_control``) the encoder as initialised before training are
    scored the same way and compared with the embedding (``scicontrast.analysis.baselines``;
    key ``comparison``). With ``analysis.probe_group_column`` (a column of the embeddings
    table, such as ``record_id`` for the windows of one DNA record) the probe and kNN splits
    keep each group on one side (:mod:`~scicontrast.analysis.probes`, "Grouped splits").
    """
    metadata, embeddings = load_embeddings(embeddings_dir)
    result: dict[str, Any] = {
        "n_items": len(embeddings),
        "embedding_dim": int(embeddings.shape[1]),
        "label_column": analysis.label_column,
    }
    labelled = None
    if analysis.label_column is not None:
        probes, labelled = _probe_labels(metadata, embeddings, analysis, embeddings_dir)
        result.update(probes)
    items = Items.load(items_dir)
    pairs = read_pairs(pairs_path, items)
    trained = load_trained(model_path, device)
    result.update(_invariance(trained, items, pairs, analysis.invariance_negatives, seed))
    if labelled is not None and analysis.baselines:
        check_same_items(metadata, embeddings_dir, items, items_dir)
        trained_scores = _item_scores(
            result["probe"], result["knn"], embeddings[labelled.rows], labelled.labels
        )
        scorer = _item_scorer(labelled, analysis)
        result["comparison"] = compare_with_controls(
            trained_scores, trained, items, scorer, analysis.untrained_control
        )
    write_json(out_path, result)
    return result


def _probe_labels(
    metadata: pd.DataFrame, embeddings: np.ndarray, analysis: Analysis, embeddings_dir: str | Path
) -> tuple[dict[str, Any], Labelled]:
    """The ``labels``, ``probe`` and ``knn`` entries of the result, and the probed rows."""
    column = analysis.label_column
    assert column is not None  # the caller probes only with a label column
    source = Path(embeddings_dir) / EMBEDDINGS_TABLE
    rows, labels, used = usable_labels(metadata, column, source)
    entries: dict[str, Any] = {"labels": used}
    groups = None
    if analysis.probe_group_column is not None:
        groups = _probe_groups(metadata, analysis.probe_group_column, rows, source)
        entries["probe_group_column"] = analysis.probe_group_column
    labelled = Labelled(rows, labels, groups)
    try:
        entries["probe"] = _linear_probe(embeddings[rows], labelled, analysis)
        entries["knn"] = _knn(embeddings[rows], labelled, analysis)
    except ValueError as exc:
        raise InputDataError(f"{source}: label column {column!r}: {exc}") from None
    return entries, labelled


def _invariance(
    trained: TrainedModel, items: Items, pairs: pd.DataFrame, negatives: int, seed: int
) -> dict[str, Any]:
    """The ``invariance`` entry (the training views) and, where the pair builder has a
    symmetry of its own, ``invariance_symmetry`` (that symmetry's views alone)."""
    builder = trained.builder
    found = {
        "invariance": invariance_score(
            trained.embed, items, pairs, builder, negatives=negatives, seed=seed
        )
    }
    symmetry = builder.symmetry_only()
    if symmetry is not None:
        name, symmetry_builder = symmetry
        symmetry_pairs = symmetry_builder.build(items)
        found["invariance_symmetry"] = {
            "symmetry": name,
            **invariance_score(
                trained.embed, items, symmetry_pairs, symmetry_builder, negatives, seed=seed
            ),
        }
    return found


def _item_scores(
    probe: dict[str, Any], knn: dict[str, Any], features: np.ndarray, labels: pd.Series
) -> Scores:
    """The compared metrics of one feature set, from its probe and kNN results and k-means
    with as many clusters as classes."""
    from scicontrast.analysis.cluster import cluster_embeddings

    _, clusters = cluster_embeddings(features, labels.to_numpy(), methods=("kmeans",))
    return {
        "probe accuracy": metric_summary([run["accuracy"] for run in probe["per_seed"]]),
        "probe balanced accuracy": metric_summary(
            [run["balanced_accuracy"] for run in probe["per_seed"]]
        ),
        "kNN accuracy": metric_summary([run["accuracy"] for run in knn["per_seed"]]),
        "k-means ARI": metric_summary(clusters["kmeans"]["ari"]),
    }


def _linear_probe(features: np.ndarray, labelled: Labelled, analysis: Analysis) -> dict[str, Any]:
    """The linear probe of ``features`` (the probed rows) with the analysis' settings."""
    return linear_probe(
        features,
        labelled.labels,
        analysis.probe_test_fraction,
        analysis.probe_seeds,
        analysis.probe_scaling,
        analysis.probe_class_weight,
        labelled.groups,
    )


def _knn(features: np.ndarray, labelled: Labelled, analysis: Analysis) -> dict[str, Any]:
    """kNN accuracy of ``features`` (the probed rows) with the analysis' settings."""
    return knn_accuracy(
        features,
        labelled.labels,
        analysis.knn_k,
        analysis.probe_test_fraction,
        analysis.probe_seeds,
        labelled.groups,
    )


def _item_scorer(labelled: Labelled, analysis: Analysis) -> Callable[[np.ndarray], Scores]:
    """Scores of any ``[N_items, F]`` feature set on the labelled rows, with the trained
    embedding's probe, splits, kNN and k-means."""

    def score(features: np.ndarray) -> Scores:
        features = np.asarray(features, dtype=np.float64)[labelled.rows]
        probe = _linear_probe(features, labelled, analysis)
        knn = _knn(features, labelled, analysis)
        return _item_scores(probe, knn, features, labelled.labels)

    return score


def _modality(items_dir: str | Path) -> str | None:
    meta_path = Path(items_dir) / "meta.json"
    return json.loads(meta_path.read_text()).get("modality") if meta_path.is_file() else None
