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
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from threadpoolctl import threadpool_limits

from scicontrast.analysis.baselines import (
    Scores,
    compare,
    format_comparison,
    metric_summary,
    untrained_embeddings,
)
from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.data_adapters.base import (
    Items,
    PairBuilder,
    ViewDataset,
    check_pairs_table,
    collate_views,
)
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.io import write_json

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
Split = tuple[np.ndarray, np.ndarray]


# The probes' small BLAS products run on one thread: the solver's path, and so the chosen
# ``C`` and the scores, then do not depend on the machine's core count (two OpenBLAS threads
# moved a NEU validation score by 0.35 pt, BENCHMARKS.md), and for products this small more
# threads cost more in synchronisation than they save.
_one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")

PROBE_SCALINGS = ("standard", "l2")
PROBE_CLASS_WEIGHTS = (None, "balanced")
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_C = 1.0


def probe_model(
    scaling: str = "standard", C: float = DEFAULT_C, class_weight: str | None = None
) -> Pipeline:
    """The probe: ``scaling`` of the embeddings, then ``LogisticRegression(C, class_weight)``
    (module doc)."""
    if scaling not in PROBE_SCALINGS:
        raise ConfigError(f"probe scaling must be one of {PROBE_SCALINGS}, not {scaling!r}")
    if class_weight not in PROBE_CLASS_WEIGHTS:
        raise ConfigError(
            f"probe class_weight must be one of {PROBE_CLASS_WEIGHTS}, not {class_weight!r}"
        )
    scaler = StandardScaler() if scaling == "standard" else Normalizer()
    return make_pipeline(scaler, LogisticRegression(C=C, max_iter=2000, class_weight=class_weight))


def stratified_splits(
    codes: np.ndarray,
    test_fraction: float,
    seeds: Sequence[int],
    groups: np.ndarray | None = None,
) -> list[Split]:
    """One stratified ``(train_indices, test_indices)`` split per seed; with ``groups`` (one
    id per item) no group has items on both sides (module doc, "Grouped splits")."""
    indices = np.arange(len(codes))
    if groups is None:
        return [
            tuple(
                train_test_split(indices, test_size=test_fraction, stratify=codes, random_state=s)
            )
            for s in seeds
        ]
    groups = np.asarray(groups)
    if len(groups) != len(codes):
        raise ValueError(f"groups has {len(groups)} entries for {len(codes)} items")
    folds = max(2, round(1 / test_fraction))
    if len(np.unique(groups)) < folds:
        raise ValueError(
            f"{len(np.unique(groups))} groups cannot fill {folds} folds "
            f"(test_fraction {test_fraction})"
        )
    return [
        next(
            StratifiedGroupKFold(folds, shuffle=True, random_state=s).split(indices, codes, groups)
        )
        for s in seeds
    ]


@_one_blas_thread
def best_C(
    embeddings: np.ndarray,
    codes: np.ndarray,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    scaling: str = "standard",
    c_grid: Sequence[float] = C_GRID,
    class_weight: str | None = None,
) -> tuple[Pipeline, float, float]:
    """The probe of each ``C`` in ``c_grid`` fitted on ``fit_rows``; the one with the best
    accuracy on ``val_rows`` (balanced accuracy for ``class_weight="balanced"``; the
    smallest ``C`` on ties), as ``(model, C, accuracy)``."""
    fit_x, fit_y = embeddings[fit_rows], codes[fit_rows]
    val_x, val_y = embeddings[val_rows], codes[val_rows]
    score = accuracy_score if class_weight is None else balanced_accuracy_score
    best_model, best_c, best_accuracy = None, None, -1.0
    for c in c_grid:
        model = probe_model(scaling, c, class_weight).fit(fit_x, fit_y)
        accuracy = float(score(val_y, model.predict(val_x)))
        if accuracy > best_accuracy:
            best_model, best_c, best_accuracy = model, c, accuracy
    return best_model, best_c, best_accuracy


def _choose_C(
    embeddings: np.ndarray,
    codes: np.ndarray,
    train: np.ndarray,
    test_fraction: float,
    seed: int,
    scaling: str,
    class_weight: str | None,
    groups: np.ndarray | None = None,
) -> tuple[float, str]:
    """``C`` for the probe of one seed, chosen inside its training part (module doc), and
    where it was chosen: ``"validation"`` or ``"default"``."""
    inner_groups = None if groups is None else groups[train]
    try:
        ((fit_rows, val_rows),) = stratified_splits(
            codes[train], test_fraction, [seed], inner_groups
        )
    except ValueError:  # a class too small to appear on both sides of the inner split
        return DEFAULT_C, "default"
    _, c, _ = best_C(
        embeddings[train], codes[train], fit_rows, val_rows, scaling, class_weight=class_weight
    )
    return c, "validation"


def _encode_labels(labels: Sequence | np.ndarray | pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes in sorted class order, and the class names."""
    codes, classes = pd.factorize(pd.Series(np.asarray(labels, dtype=object)), sort=True)
    if (codes < 0).any():
        raise ValueError("labels must not be missing")
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes, got {len(classes)}")
    return codes, classes


def auroc(y_true: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> float | None:
    """AUROC of class scores ``[n, C]`` (column ``j`` scores ``classes[j]``).

    Two classes: AUROC of ``scores[:, 1]`` for ``classes[1]``. More: macro one-vs-rest over
    the classes that occur in ``y_true`` but not alone. ``None`` where no class qualifies.
    """
    present = [j for j, c in enumerate(classes) if 0 < np.sum(y_true == c) < len(y_true)]
    if not present:
        return None
    if len(classes) == 2:
        return float(roc_auc_score(y_true == classes[1], scores[:, 1]))
    return float(np.mean([roc_auc_score(y_true == classes[j], scores[:, j]) for j in present]))


def _summary(values: list[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(known)), "std": float(np.std(known))}


@_one_blas_thread
def linear_probe(
    embeddings: np.ndarray,
    labels: Sequence | np.ndarray | pd.Series,
    test_fraction: float = 0.2,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    scaling: str = "standard",
    class_weight: str | None = None,
    groups: Sequence | np.ndarray | None = None,
) -> dict[str, Any]:
    """Logistic-regression probe of ``labels`` from ``[N, D]`` embeddings (see module doc);
    with ``groups`` (one id per item) on grouped splits.

    Every class needs at least 2 members, and each split part room for every class;
    otherwise scikit-learn's ``ValueError`` says which condition failed.
    """
    codes, classes = _encode_labels(labels)
    groups = None if groups is None else np.asarray(groups)
    binary = len(classes) == 2
    per_seed = []
    for seed, (train, test) in zip(
        seeds, stratified_splits(codes, test_fraction, seeds, groups), strict=True
    ):
        c, chosen_on = _choose_C(
            embeddings, codes, train, test_fraction, seed, scaling, class_weight, groups
        )
        model = probe_model(scaling, c, class_weight).fit(embeddings[train], codes[train])
        scores = model.predict_proba(embeddings[test])
        predicted = model.classes_[scores.argmax(axis=1)]
        per_seed.append(
            {
                "seed": int(seed),
                "accuracy": float(accuracy_score(codes[test], predicted)),
                "balanced_accuracy": float(balanced_accuracy_score(codes[test], predicted)),
                "auroc": auroc(codes[test], scores, model.classes_),
                "C": c,
                "C_chosen_on": chosen_on,
            }
        )
    result: dict[str, Any] = {
        "n_items": len(codes),
        "n_classes": len(classes),
        "test_fraction": test_fraction,
        "scaling": scaling,
        "class_weight": class_weight,
        "grouped": groups is not None,
        "C_grid": list(C_GRID),
        "majority_class_fraction": float(np.bincount(codes).max() / len(codes)),
        "auroc_kind": "binary" if binary else "macro_one_vs_rest",
    }
    if binary:
        result["positive_class"] = str(classes[1])
    for metric in ("accuracy", "balanced_accuracy", "auroc"):
        result[metric] = _summary([run[metric] for run in per_seed])
    result["per_seed"] = per_seed
    return result


def validation_probe(
    embeddings: np.ndarray,
    labels: Sequence | np.ndarray | pd.Series,
    test_fraction: float = 0.2,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    scaling: str = "standard",
    class_weight: str | None = None,
    groups: Sequence | np.ndarray | None = None,
) -> dict[str, float | None]:
    """Mean ``accuracy``, ``balanced_accuracy`` and ``auroc`` of the probe on validation items
    (module doc): the only scores a setting should be chosen by."""
    codes, _ = _encode_labels(labels)
    labels = np.asarray(labels, dtype=object)
    groups = None if groups is None else np.asarray(groups)
    runs = []
    for seed, (train, _test) in zip(
        seeds, stratified_splits(codes, test_fraction, seeds, groups), strict=True
    ):
        inner = linear_probe(
            embeddings[train],
            labels[train],
            test_fraction,
            [seed],
            scaling,
            class_weight,
            None if groups is None else groups[train],
        )
        runs.append(inner["per_seed"][0])
    return {
        metric: _summary([run[metric] for run in runs])["mean"]
        for metric in ("accuracy", "balanced_accuracy", "auroc")
    }


def knn_accuracy(
    embeddings: np.ndarray,
    labels: Sequence | np.ndarray | pd.Series,
    k: int = 10,
    test_fraction: float = 0.2,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    groups: Sequence | np.ndarray | None = None,
) -> dict[str, Any]:
    """Cosine ``k``-nearest-neighbour accuracy on the probe's splits (``k`` capped at the
    training-set size), grouped with ``groups``."""
    codes, _ = _encode_labels(labels)
    splits = stratified_splits(
        codes, test_fraction, seeds, None if groups is None else np.asarray(groups)
    )
    return knn_on_splits(embeddings, codes, seeds, splits, k, test_fraction)


@_one_blas_thread
def knn_on_splits(
    embeddings: np.ndarray,
    codes: np.ndarray,
    seeds: Sequence[int],
    splits: Sequence[tuple[np.ndarray, ...]],
    k: int,
    test_fraction: float,
) -> dict[str, Any]:
    """Cosine kNN scored per split; each split is ``(train, ..., test)`` index arrays."""
    per_seed = []
    for seed, split in zip(seeds, splits, strict=True):
        train, test = split[0], split[-1]
        model = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine")
        predicted = model.fit(embeddings[train], codes[train]).predict(embeddings[test])
        per_seed.append(
            {
                "seed": int(seed),
                "accuracy": float(accuracy_score(codes[test], predicted)),
                "balanced_accuracy": float(balanced_accuracy_score(codes[test], predicted)),
            }
        )
    return {
        "k": k,
        "test_fraction": test_fraction,
        "accuracy": _summary([run["accuracy"] for run in per_seed]),
        "balanced_accuracy": _summary([run["balanced_accuracy"] for run in per_seed]),
        "per_seed": per_seed,
    }


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
            views, owners = collate_views(
                [dataset[int(g)] for g in chosen[start : start + batch_size]]
            )
            z = F.normalize(embed_fn(views).float(), dim=1)
            _, counts = torch.unique_consecutive(owners, return_counts=True)
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


def _usable_labels(
    metadata: pd.DataFrame, label_column: str, source: Path
) -> tuple[np.ndarray, pd.Series, dict[str, Any]]:
    """Rows with a label whose class has at least 2 members: ``(rows, labels, summary)``."""
    if label_column not in metadata.columns:
        raise ConfigError(
            f"{source}: label column {label_column!r} is not in the table; "
            f"available columns: {', '.join(map(str, metadata.columns))}"
        )
    labels = metadata[label_column]
    present = labels.notna().to_numpy()
    class_sizes = labels[present].value_counts()
    rare = class_sizes.index[class_sizes < 2]
    keep = present & ~labels.isin(rare).to_numpy()
    if rare.size:
        warnings.warn(
            f"{source}: label column {label_column!r}: dropping {int((~keep & present).sum())} "
            f"items whose class has fewer than 2 members: {', '.join(map(str, rare))}",
            stacklevel=3,
        )
    n_classes = int(labels[keep].nunique())
    if n_classes < 2:
        raise InputDataError(
            f"{source}: label column {label_column!r} has {n_classes} class(es) with at least "
            "2 members; the probes need at least 2"
        )
    summary = {
        "n_labelled": int(present.sum()),
        "n_missing": int((~present).sum()),
        "n_used": int(keep.sum()),
        "dropped_classes": [str(c) for c in rare],
    }
    return np.flatnonzero(keep), labels[keep], summary


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
        rows, labels, result["labels"] = _usable_labels(metadata, label_column, source)
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
    from scicontrast.models.train import resolve_device
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
