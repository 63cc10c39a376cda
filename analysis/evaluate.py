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

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from scicontrast.analysis.baselines import (
    Scores,
    compare,
    metric_summary,
    untrained_embeddings,
)
from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.analysis.invariance import invariance_score
from scicontrast.analysis.probes import (
    DEFAULT_SEEDS,
    knn_accuracy,
    linear_probe,
    usable_labels,
)
from scicontrast.data_adapters.base import (
    Items,
    check_pairs_table,
)
from scicontrast.device import resolve_device
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Experiment
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


def evaluate(
    model_path: str | Path,
    items_dir: str | Path,
    pairs_path: str | Path,
    embeddings_dir: str | Path,
    out_path: str | Path,
    label_column: str | None = None,
    probe_test_fraction: float = 0.2,
    probe_seeds: Sequence[int] = DEFAULT_SEEDS,
    knn_k: int = 10,
    invariance_negatives: int = 10,
    seed: int = 0,
    device: str = "auto",
    probe_scaling: str = "standard",
    probe_class_weight: str | None = None,
    probe_group_column: str | None = None,
    baselines: bool = True,
    untrained_control: bool = True,
) -> dict[str, Any]:
    """Probe the embeddings for ``label_column``, score the model's invariance, write JSON.

    With a label column and ``baselines``, the pair builder's classical features and (with
    ``untrained_control``) the encoder as initialised before training are scored the same
    way and compared with the embedding (``scicontrast.analysis.baselines``; key
    ``comparison``).

    With ``probe_group_column`` (a column of the embeddings table, such as ``record_id`` for
    the windows of one DNA record) the probe and kNN splits keep each group on one side
    (module doc, "Grouped splits"); graph and audio-image items have no such column.

    Graph items (``meta["modality"] == "graph"``) are evaluated node-wise instead, by
    :func:`scicontrast.analysis.graph_eval.evaluate_graph` (random 10/10/80 splits over
    ``probe_seeds``, the public split, training cost; ``probe_test_fraction`` is unused).
    Audio-image items (``"audio_image"``) are evaluated by cross-modal retrieval and
    zero-shot classification instead, by
    :func:`scicontrast.analysis.retrieval.evaluate_audio_image`.
    """
    modality = _modality(items_dir)
    if probe_group_column is not None and modality in ("graph", "audio_image"):
        raise ConfigError(
            f"analysis.probe_group_column applies to items probed one by one, not to "
            f"{modality} items ({items_dir})"
        )
    if modality == "audio_image":
        from scicontrast.analysis.retrieval import evaluate_audio_image

        return evaluate_audio_image(
            model_path,
            items_dir,
            pairs_path,
            embeddings_dir,
            out_path,
            label_column=label_column,
            invariance_negatives=invariance_negatives,
            seed=seed,
            baselines=baselines,
            untrained_control=untrained_control,
        )
    if modality == "graph":
        from scicontrast.analysis.graph_eval import evaluate_graph

        return evaluate_graph(
            model_path,
            items_dir,
            embeddings_dir,
            out_path,
            label_column=label_column,
            probe_seeds=probe_seeds,
            knn_k=knn_k,
            invariance_negatives=invariance_negatives,
            seed=seed,
            device=device,
            probe_scaling=probe_scaling,
            probe_class_weight=probe_class_weight,
            baselines=baselines,
            untrained_control=untrained_control,
        )
    metadata, embeddings = load_embeddings(embeddings_dir)
    result: dict[str, Any] = {
        "n_items": len(embeddings),
        "embedding_dim": int(embeddings.shape[1]),
        "label_column": label_column,
    }
    rows, labels, groups = np.arange(len(embeddings)), None, None
    if label_column is not None:
        source = Path(embeddings_dir) / EMBEDDINGS_TABLE
        rows, labels, result["labels"] = usable_labels(metadata, label_column, source)
        if probe_group_column is not None:
            groups = _probe_groups(metadata, probe_group_column, rows, source)
            result["probe_group_column"] = probe_group_column
        try:
            result["probe"] = linear_probe(
                embeddings[rows],
                labels,
                probe_test_fraction,
                probe_seeds,
                probe_scaling,
                probe_class_weight,
                groups,
            )
            result["knn"] = knn_accuracy(
                embeddings[rows], labels, knn_k, probe_test_fraction, probe_seeds, groups
            )
        except ValueError as exc:
            raise InputDataError(f"{source}: label column {label_column!r}: {exc}") from None

    # Imported here: the array-level functions above must work without the model stack.
    from scicontrast.models.contrastive import load_model
    from scicontrast.registry import PAIR_BUILDERS

    pairs_path = Path(pairs_path)
    if not pairs_path.exists():
        raise InputDataError(f"{pairs_path}: pairs table not found")
    model, settings = load_model(model_path, map_location="cpu")
    experiment = Experiment.from_dict(settings)
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"{model_path}: pairs")
    items = Items.load(items_dir)
    pairs = pd.read_parquet(pairs_path)
    check_pairs_table(pairs, items, str(pairs_path))

    def embed_views(views: torch.Tensor) -> torch.Tensor:
        return model.embed(views.to(torch_device)).cpu()

    result["invariance"] = invariance_score(
        embed_views, items, pairs, builder, negatives=invariance_negatives, seed=seed
    )
    symmetry = builder.symmetry_only()
    if symmetry is not None:
        name, symmetry_builder = symmetry
        result["invariance_symmetry"] = {
            "symmetry": name,
            **invariance_score(
                embed_views,
                items,
                symmetry_builder.build(items),
                symmetry_builder,
                negatives=invariance_negatives,
                seed=seed,
            ),
        }
    if label_column is not None and baselines:
        if list(metadata["item_id"]) != list(items.table["item_id"]):
            raise InputDataError(
                f"{embeddings_dir}: embeddings are not those of the items {items_dir}"
            )
        score = _item_scorer(
            labels,
            groups,
            probe_test_fraction,
            probe_seeds,
            probe_scaling,
            probe_class_weight,
            knn_k,
            rows,
        )
        untrained = (
            untrained_embeddings(settings, builder, items, torch_device)
            if untrained_control
            else None
        )
        result["comparison"] = compare(
            _item_scores(result["probe"], result["knn"], embeddings[rows], labels),
            score,
            builder.classical_features(items),
            untrained,
        )
    write_json(out_path, result)
    return result


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


def _item_scorer(
    labels: pd.Series,
    groups: np.ndarray | None,
    test_fraction: float,
    seeds: Sequence[int],
    scaling: str,
    class_weight: str | None,
    knn_k: int,
    rows: np.ndarray,
) -> Callable[[np.ndarray], Scores]:
    """Scores of any ``[N_items, F]`` feature set on the labelled ``rows``, with the trained
    embedding's probe, splits, kNN and k-means."""

    def score(features: np.ndarray) -> Scores:
        features = np.asarray(features, dtype=np.float64)[rows]
        probe = linear_probe(features, labels, test_fraction, seeds, scaling, class_weight, groups)
        knn = knn_accuracy(features, labels, knn_k, test_fraction, seeds, groups)
        return _item_scores(probe, knn, features, labels)

    return score


def _modality(items_dir: str | Path) -> str | None:
    meta_path = Path(items_dir) / "meta.json"
    return json.loads(meta_path.read_text()).get("modality") if meta_path.is_file() else None
