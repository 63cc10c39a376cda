"""The label probes: linear probe, validation probe and kNN on fixed splits, and the labels
they can use. Array-level: embeddings and labels in, scores out.

:mod:`scicontrast.analysis.evaluate` (item-wise) and :mod:`scicontrast.analysis.graph_eval`
(node-wise) both build on them.

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
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from threadpoolctl import threadpool_limits

from scicontrast.errors import ConfigError, InputDataError

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
    best: tuple[Pipeline, float, float] | None = None
    for c in c_grid:
        model = probe_model(scaling, c, class_weight).fit(fit_x, fit_y)
        accuracy = float(score(val_y, model.predict(val_x)))
        if best is None or accuracy > best[2]:
            best = model, c, accuracy
    if best is None:
        raise ConfigError("best_C: the grid of C values is empty")
    return best


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


def seed_summary(values: list[float | None]) -> dict[str, float | None]:
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
    per_seed: list[dict[str, Any]] = []
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
        result[metric] = seed_summary([run[metric] for run in per_seed])
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
        metric: seed_summary([run[metric] for run in runs])["mean"]
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
        "accuracy": seed_summary([run["accuracy"] for run in per_seed]),
        "balanced_accuracy": seed_summary([run["balanced_accuracy"] for run in per_seed]),
        "per_seed": per_seed,
    }


def usable_labels(
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
