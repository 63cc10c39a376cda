"""How good are the embeddings: label probes and the invariance the pairs were meant to teach.

**Linear probe.** Per seed, a stratified split (``test_fraction`` held out), then
``LogisticRegression`` on the training part after the embedding's ``scaling``
(:func:`probe_model`: ``"standard"`` standardises each dimension, ``StandardScaler``;
``"l2"`` scales each embedding to unit length, ``Normalizer``, the protocol of GRACE's and
DGI's linear evaluation, which suits a cosine-trained embedding); test accuracy, balanced
accuracy (mean per-class recall) and AUROC. Binary labels: AUROC of the positive class's
probability, the positive class being the second in sorted order. More classes: macro
one-vs-rest AUROC, the mean over classes of the AUROC of "this class vs the rest", taken
over the classes present in the test part. Reported as mean and (population) std over
seeds, plus per-seed values.

The inverse regularisation strength ``C`` is chosen inside the training part, as linear
evaluations tune their weight decay (Kolesnikov et al., "Revisiting self-supervised visual
representation learning", CVPR 2019): a second stratified split of it (same
``test_fraction`` and seed) fits the probe for each ``C`` of :data:`C_GRID` on the rest and
keeps the ``C`` with the best accuracy on that part (the smallest on ties); the probe is then
refitted on the whole training part. No single ``C`` suits every embedding: k-mer
frequencies want strong regularisation (``C`` near 0.001), a 128-dimensional image
embedding hardly any (``C`` near 100). A training part too small to split for every class
keeps ``C = 1`` and says so (``C_chosen_on: "default"``).

``class_weight="balanced"`` weighs each class by the inverse of its frequency in the fit
(scikit-learn's ``class_weight``), so the probe minimises the mean of the per-class losses,
and ``C`` is chosen by balanced accuracy. With unequal classes the default probe leans
towards the larger one, and its balanced accuracy then reads partly as where its threshold
sits; the balanced probe asks what the embedding separates.

**Grouped splits.** Items that are not independent (overlapping windows of one genome
stretch, crops of one image) let a random split score recognising the source instead of
the label: the test part holds near-copies of training items. With ``groups`` (one id per
item) every split keeps each group on one side: scikit-learn's ``StratifiedGroupKFold`` with
``round(1 / test_fraction)`` folds, shuffled by the seed, holds out its first fold, so the
test part is about ``test_fraction`` of the items and the class shares stay close to the
whole set's. The inner splits that choose ``C`` and the validation probe's are grouped
alike.

Probe and kNN fits run on one BLAS thread, so their figures are the same on any number of
cores.

**Validation probe.** Settings are chosen without the test items: within each seed's training
part, a second stratified split (same ``test_fraction`` and seed) fits the probe on the rest,
which chooses its own ``C`` on a third split inside it, and scores it on that part
(:func:`validation_probe`); the test part takes no part.

**kNN.** Cosine k-nearest-neighbour majority vote on the same splits: accuracy and balanced
accuracy. Unlike the probe it needs no training, so it shows how labels sit in the
embedding's own geometry.

**Invariance.** For each group of the pairs table (the views of one object), its views are
materialised as in training epoch 0 (``ViewDataset``, generator seeded by
``(seed, 0, group)``) and embedded. With unit-normalised embeddings ``z``::

    cos_positive = mean over groups g of mean_{v > 0} cos(z_g0, z_gv)
    cos_random   = mean over groups g and random other groups h of cos(z_g0, z_h0)
    score        = (cos_positive - cos_random) / (1 - cos_random)

``score`` is 1 when every view of an object embeds exactly like its first view, and 0 when
a positive is no closer than a random other object (``None`` when ``cos_random`` is 1: a
collapsed embedding, where the score is undefined).

The training views may add nuisance augmentations to the symmetry the domain names (a
rotated grain also gets intensity jitter). When the pair builder can draw views with the
symmetry alone (:meth:`PairBuilder.symmetry_only`), the score is computed once more over
those views (``invariance_symmetry``, with the symmetry's name): that is the rotation- or
strand-invariance score proper, while ``invariance`` measures the views the loss saw.

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
import torch.nn.functional as F

from scicontrast.analysis.baselines import (
    Scores,
    compare,
    format_comparison,
    metric_summary,
    untrained_embeddings,
)
from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.analysis.probes import (
    C_GRID,
    DEFAULT_C,
    DEFAULT_SEEDS,
    PROBE_CLASS_WEIGHTS,
    PROBE_SCALINGS,
    Split,
    auroc,
    best_C,
    knn_accuracy,
    knn_on_splits,
    linear_probe,
    probe_model,
    stratified_splits,
    usable_labels,
    validation_probe,
)
from scicontrast.data_adapters.base import (
    Items,
    PairBuilder,
    ViewDataset,
    check_pairs_table,
    collate_views,
)
from scicontrast.device import resolve_device
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.io import write_json

# The probes live in scicontrast.analysis.probes (graph_eval builds on them too); they stay
# importable from here, where the evaluation step and its users look for them.
__all__ = [
    "C_GRID",
    "DEFAULT_C",
    "DEFAULT_SEEDS",
    "PROBE_CLASS_WEIGHTS",
    "PROBE_SCALINGS",
    "Split",
    "auroc",
    "best_C",
    "evaluate",
    "format_report",
    "invariance_score",
    "knn_accuracy",
    "knn_on_splits",
    "linear_probe",
    "probe_model",
    "stratified_splits",
    "validation_probe",
]


def invariance_score(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    items: Items,
    pairs: pd.DataFrame,
    builder: PairBuilder,
    negatives: int = 10,
    seed: int = 0,
    max_groups: int = 2000,
    batch_size: int = 256,
) -> dict[str, Any]:
    """How much closer an object's views embed to each other than to other objects.

    Args:
        embed_fn: ``[M, ...]`` views to ``[M, D]`` embeddings (called without gradients).
        items, pairs, builder: as for training; views come from ``ViewDataset`` epoch 0.
        negatives: random other groups each group's first view is compared with.
        seed: seeds the views, the group subsample and the choice of negatives.
        max_groups: use a seeded random subsample of at most this many groups.
        batch_size: groups per ``embed_fn`` call.

    Returns:
        ``cos_positive``, ``cos_random``, ``score`` (see module doc), ``groups`` (used),
        ``groups_total`` and ``negatives`` (per group, capped at ``groups - 1``).
    """
    dataset = ViewDataset(items, pairs, builder, seed)
    dataset.set_epoch(0)
    rng = np.random.default_rng(seed)
    n_used = min(max_groups, len(dataset))
    if n_used < 2:
        raise ValueError(f"the invariance score needs at least 2 groups, got {n_used}")
    chosen = np.sort(rng.choice(len(dataset), size=n_used, replace=False))

    first_views, positive_sums, positive_counts = [], [], []
    with torch.no_grad():
        for start in range(0, n_used, batch_size):
            batch = collate_views([dataset[int(g)] for g in chosen[start : start + batch_size]])
            z = F.normalize(embed_fn(batch.inputs).float(), dim=1)
            _, counts = torch.unique_consecutive(batch.group_ids, return_counts=True)
            first_rows = torch.cumsum(counts, 0) - counts
            group_of_row = torch.repeat_interleave(torch.arange(len(counts)), counts)
            cos_to_first = (z * z[first_rows][group_of_row]).sum(dim=1)
            is_other = torch.ones(len(z), dtype=torch.bool)
            is_other[first_rows] = False
            sums = torch.zeros(len(counts)).index_add_(
                0, group_of_row[is_other], cos_to_first[is_other]
            )
            first_views.append(z[first_rows])
            positive_sums.append(sums)
            positive_counts.append(counts - 1)

    sums, counts = torch.cat(positive_sums), torch.cat(positive_counts)
    if not (counts > 0).any():
        raise ValueError("no group has more than one view, so there are no positives")
    with_positives = counts > 0
    cos_positive = float((sums[with_positives] / counts[with_positives]).mean())

    firsts = torch.cat(first_views)
    n_negatives = min(negatives, n_used - 1)
    others = np.stack(
        [
            (g + 1 + rng.choice(n_used - 1, size=n_negatives, replace=False)) % n_used
            for g in range(n_used)
        ]
    )
    cos_random = float((firsts[:, None, :] * firsts[torch.from_numpy(others)]).sum(-1).mean())
    spread = 1.0 - cos_random
    return {
        "cos_positive": cos_positive,
        "cos_random": cos_random,
        "score": (cos_positive - cos_random) / spread if spread > 1e-8 else None,
        "groups": n_used,
        "groups_total": len(dataset),
        "negatives": n_negatives,
    }


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
    model, experiment = load_model(model_path, map_location="cpu")
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    builder = PAIR_BUILDERS.create(experiment["pairs"], where=f"{model_path}: pairs")
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
            untrained_embeddings(experiment, builder, items, torch_device)
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


def _number(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def _mean_std(summary: dict[str, float | None]) -> str:
    if summary["mean"] is None:
        return "-"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_report(evaluation: dict[str, Any], clusters: dict[str, Any] | None = None) -> str:
    """A plain-text summary of ``evaluate``'s result and, optionally, ``cluster``'s metrics."""
    lines = [f"Embeddings: {evaluation['n_items']} items, {evaluation['embedding_dim']} dimensions"]
    invariance = evaluation.get("invariance")
    if invariance is not None:
        lines += ["", "Invariance (1 = views embed alike, 0 = no closer than random items)"]
        symmetry = evaluation.get("invariance_symmetry")
        scores = [invariance] if symmetry is None else [invariance, symmetry]
        rows = [
            ["score", *(_number(score["score"]) for score in scores)],
            ["cos positive", *(_number(score["cos_positive"]) for score in scores)],
            ["cos random", *(_number(score["cos_random"]) for score in scores)],
            ["groups", *(f"{score['groups']} of {score['groups_total']}" for score in scores)],
        ]
        if symmetry is not None:
            rows.insert(0, ["", "training views", f"{symmetry['symmetry']} alone"])
        lines += _table(rows)
    probe, knn = evaluation.get("probe"), evaluation.get("knn")
    if probe is not None and knn is not None:
        auroc_name = "AUROC" if probe["auroc_kind"] == "binary" else "AUROC (macro OvR)"
        lines += [
            "",
            f"Label {evaluation['label_column']!r}: {probe['n_classes']} classes, "
            f"{probe['n_items']} items, {len(probe['per_seed'])} splits, "
            f"{_number(probe['test_fraction'], percent=True)} test"
            + (
                f", splits grouped by {evaluation['probe_group_column']!r}"
                if "probe_group_column" in evaluation
                else ""
            )
            + ", mean ± std",
        ]
        lines += _table(
            [
                ["", "accuracy", "balanced accuracy", auroc_name],
                [
                    "linear probe"
                    + (" (classes weighed alike)" if probe.get("class_weight") else ""),
                    _mean_std(probe["accuracy"]),
                    _mean_std(probe["balanced_accuracy"]),
                    _mean_std(probe["auroc"]),
                ],
                [
                    f"kNN (k={knn['k']}, cosine)",
                    _mean_std(knn["accuracy"]),
                    _mean_std(knn["balanced_accuracy"]),
                    "",
                ],
                [
                    "chance",
                    _number(probe["majority_class_fraction"]),
                    _number(1 / probe["n_classes"]),
                    _number(0.5),
                ],
            ]
        )
        chosen = ", ".join(f"{run['C']:g}" for run in probe["per_seed"])
        lines.append(f"  probe C per split (chosen without the test items): {chosen}")
    if evaluation.get("comparison") is not None:
        lines += format_comparison(evaluation["comparison"])
    public = evaluation.get("public_split")
    if public is not None:
        lines += [
            "",
            f"Public split ({public['n_train']} train / {public['n_val']} val / "
            f"{public['n_test']} test; C = {public['C']:g} chosen on val)",
        ]
        lines += _table(
            [
                ["accuracy", _number(public["accuracy"])],
                ["balanced accuracy", _number(public["balanced_accuracy"])],
            ]
        )
    if evaluation.get("retrieval") is not None:
        from scicontrast.analysis.retrieval import format_audio_image

        lines += format_audio_image(evaluation)
    training = evaluation.get("training")
    if training is not None:
        peak = training["peak_memory_mb"]
        lines += ["", f"Training ({training['epochs']} epochs)"]
        lines += _table(
            [
                ["seconds per epoch", f"{training['seconds_per_epoch']:.3f}"],
                ["peak memory", "-" if peak is None else f"{peak:.0f} MiB"],
            ]
        )
    if clusters is not None:
        lines += ["", f"Clusters ({clusters['n_items']} items)"]
        rows = [["method", "clusters", "silhouette", "ARI", "NMI", "noise"]]
        for method in clusters.get("methods", ["kmeans", "hdbscan"]):
            found = clusters[method]
            rows.append(
                [
                    method,
                    str(found["n_clusters"]),
                    _number(found["silhouette"]),
                    _number(found.get("ari")),
                    _number(found.get("nmi")),
                    _number(found["noise_fraction"], percent=True)
                    if "noise_fraction" in found
                    else "-",
                ]
            )
        lines += _table(rows)
    return "\n".join(lines) + "\n"
