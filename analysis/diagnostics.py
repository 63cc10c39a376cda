r"""Diagnostics from the theory of InfoNCE: should a scientist trust these embeddings?

Every number is computed for the trained model and, as a baseline, for the untrained one (the
same architecture and seed, before the first step), on the same items and views. The page
``docs/diagnostics.md`` says what each number means and what a good value looks like.

**Which data.** When training held groups out (``training.holdout_fraction > 0``), the
diagnostics use those groups (at most ``max_groups`` of them), and the contrastive numbers are
also computed on as many training groups, so a gap between the two shows overfitting. Without
a hold-out they use a seeded sample of all groups (``held_out_from_training: false``). Views
are drawn for epoch :data:`VIEW_EPOCH`, which training never reaches, so they are fresh either
way. Graph nodes are scored in full-graph batches whose loss covers only the chosen nodes
(``graph_views``, "Held-out nodes").

**Contrastive numbers** (per batch of ``training.batch_size`` groups, as in training; then
averaged over batches), in two spaces: the projection ``z`` the loss sees and the embedding
``h`` that is exported:

* ``loss`` ``L`` and the mutual-information lower bound ``log(K + 1) - L`` (Oord et al. 2018),
  ``K`` the mean number of negatives per anchor;
* ``pos_sim``, ``neg_sim``: mean cosine of positive and of negative pairs, their gap
  ``pos_sim - neg_sim`` and the effective margin ``tau * ln(K)``: with ``K`` negatives at
  cosine ``neg`` the positive takes half the softmax mass when
  ``(pos - neg) / tau = ln K``, so ``gap_over_margin >= 1`` means positives are resolved;
* ``alignment`` ``E ||f(x) - f(y)||^2`` over positive pairs and ``uniformity``
  ``log E exp(-2 ||f(x) - f(y)||^2)`` over all pairs (Wang & Isola 2020), on the unit sphere;
* ``invariance`` ``(pos_sim - neg_sim) / (1 - neg_sim)`` of ``h``: 1 when an object's views
  embed alike, 0 when they are no closer than other objects (the score of
  ``scicontrast.analysis.evaluate``, on batch negatives).

**Gaussianity** (arXiv:2602.24012: contrastive training drives one-dimensional projections of
the embedding towards a Gaussian). The L2-normalised embeddings of at most
:data:`GAUSSIANITY_MAX_POINTS` items are projected on ``projections`` random unit directions;
each projection is standardised and summarised by ``|skewness|``, ``|excess kurtosis|``, the
Kolmogorov-Smirnov distance to ``N(0, 1)`` and whether D'Agostino-Pearson's test rejects
normality at 5 %. Reported as means over projections, beside ``gaussian_reference``: the same
statistics of truly Gaussian samples of the same size, the floor set by sampling noise.

**Norm as specificity** (arXiv:2606.30625): the Spearman correlation between the unnormalised
embedding norm ``||h||`` and a specificity proxy (higher = more specific), per proxy:

* ``knn_label_purity`` (needs labels): ``1 - H / ln C``, ``H`` the entropy of the labels of an
  item's ``k`` nearest neighbours (cosine, in the same model's embedding) and ``C`` the number
  of classes: 1 deep inside a class, 0 where all classes mix;
* the pair builder's domain proxy, :meth:`PairBuilder.specificity` (DNA: mean k-mer surprisal).

Output folder (written atomically): ``diagnostics.json`` (the numbers above under
``trained``, ``untrained``, ``gaussian_reference``), ``per_item.parquet`` (``item_id``,
``norm_trained``, ``norm_untrained``, one column per proxy and model) and
``projections.npz`` (per-projection ``skew_*``, ``kurtosis_*``, ``ks_*`` and a few
standardised projections ``sample_*``, for the plots).

References:
    - Oord, Li, Vinyals 2018, https://arxiv.org/abs/1807.03748
    - Wang & Isola 2020, https://arxiv.org/abs/2005.10242
    - D'Agostino & Pearson 1973, Biometrika 60:613 (``scipy.stats.normaltest``)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.neighbors import NearestNeighbors
from torch.nn.parameter import UninitializedParameter

from scicontrast.analysis.trained import load_trained, read_pairs
from scicontrast.data_adapters.base import Items, PairBuilder, held_out_groups
from scicontrast.experiment import Experiment
from scicontrast.io import atomic_path
from scicontrast.models.contrastive_metrics import VIEW_EPOCH, contrastive_metrics

GAUSSIANITY_MAX_POINTS = 2000
SAMPLE_PROJECTIONS = 4


# --------------------------------------------------------------------- array-level pieces


def projection_statistics(
    embeddings: np.ndarray, projections: int = 256, seed: int = 0, normalise: bool = True
) -> dict[str, np.ndarray]:
    """Per-projection normality statistics of ``[n, D]`` points on random unit directions.

    Rows are L2-normalised first (``normalise``), then centred; each of the ``projections``
    directions (seeded Gaussian vectors, normalised) gives ``n`` values, standardised.

    Returns arrays ``[P']`` (``P'`` = projections with non-zero spread): ``skew``,
    ``kurtosis`` (excess), ``ks`` (distance to ``N(0, 1)``), ``normaltest_p`` (all ``NaN``
    below 20 points, where the test is undefined), and ``sample [n, min(P', 4)]``.
    """
    points = np.asarray(embeddings, dtype=np.float64)
    if normalise:
        points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    points = points - points.mean(axis=0, keepdims=True)
    directions = np.random.default_rng([seed, 0x6A55]).standard_normal(
        (points.shape[1], projections)
    )
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    values = points @ directions
    spread = values.std(axis=0)
    values = values[:, spread > 1e-12 * max(float(spread.max(initial=0.0)), 1e-300)]
    values = (values - values.mean(axis=0)) / values.std(axis=0)
    n = len(values)
    ordered = np.sort(values, axis=0)
    cdf = stats.norm.cdf(ordered)
    steps = np.arange(1, n + 1)[:, None] / n
    ks = np.maximum(steps - cdf, cdf - (steps - 1.0 / n)).max(axis=0)
    if n >= 20:
        normaltest_p = stats.normaltest(values, axis=0).pvalue
    else:
        normaltest_p = np.full(values.shape[1], np.nan)
    return {
        "skew": stats.skew(values, axis=0),
        "kurtosis": stats.kurtosis(values, axis=0),
        "ks": ks,
        "normaltest_p": normaltest_p,
        "sample": values[:, :SAMPLE_PROJECTIONS],
    }


def summarise_gaussianity(per_projection: dict[str, np.ndarray]) -> dict[str, Any]:
    """Means over projections of :func:`projection_statistics` (see module docstring)."""
    p_values = per_projection["normaltest_p"]
    return {
        "projections": len(per_projection["skew"]),
        "points": len(per_projection["sample"]),
        "mean_abs_skew": float(np.mean(np.abs(per_projection["skew"]))),
        "mean_abs_excess_kurtosis": float(np.mean(np.abs(per_projection["kurtosis"]))),
        "mean_ks_distance": float(np.mean(per_projection["ks"])),
        "normality_rejected_fraction": None
        if np.isnan(p_values).all()
        else float(np.mean(p_values < 0.05)),
    }


def knn_label_purity(embeddings: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """``1 - H / ln C`` of each item's ``k`` nearest neighbours' labels (cosine, self excluded).

    ``labels`` has no missing values and at least 2 classes; ``k`` is capped at ``n - 1``.
    """
    codes, classes = pd.factorize(pd.Series(np.asarray(labels, dtype=object)))
    if len(classes) < 2:
        raise ValueError(f"label purity needs at least 2 classes, got {len(classes)}")
    k = max(1, min(k, len(codes) - 1))
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(embeddings)
    neighbours = index.kneighbors(embeddings, return_distance=False)
    rows = np.arange(len(codes))[:, None]
    # Drop the item itself wherever it appears (ties can move it from column 0).
    is_self = neighbours == rows
    keep = np.where(is_self.any(axis=1, keepdims=True), ~is_self, np.arange(k + 1) < k)
    neighbour_codes = codes[neighbours[keep].reshape(len(codes), k)]
    counts = np.zeros((len(codes), len(classes)))
    np.add.at(counts, (np.repeat(np.arange(len(codes)), k), neighbour_codes.reshape(-1)), 1.0)
    shares = counts / k
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(shares > 0, shares * np.log(shares), 0.0).sum(axis=1)
    return 1.0 - entropy / math.log(len(classes))


def norm_specificity(norms: np.ndarray, proxy: np.ndarray) -> dict[str, Any]:
    """Spearman correlation of embedding norms with a specificity proxy (NaN rows skipped)."""
    finite = np.isfinite(proxy) & np.isfinite(norms)
    n = int(finite.sum())
    if n < 3 or np.ptp(proxy[finite]) == 0 or np.ptp(norms[finite]) == 0:
        return {"spearman": None, "p_value": None, "n": n}
    result = stats.spearmanr(norms[finite], proxy[finite])
    return {"spearman": float(result.statistic), "p_value": float(result.pvalue), "n": n}


# --------------------------------------------------------------------- model-level pieces


def untrained_model(experiment: Experiment, builder: PairBuilder, items: Items):
    """The model exactly as training starts it: seeded like ``train``, lazy layers sized."""
    from scicontrast.models.contrastive import build_model

    torch.manual_seed(experiment.training.seed)
    model = build_model(experiment)
    model.eval()
    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        with torch.no_grad():
            model.embed(next(iter(builder.embedding_batches(items, 1))))
    return model


def choose_groups(
    pairs: pd.DataFrame, holdout_fraction: float, seed: int, max_groups: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(diagnostic groups, as many training groups or None)`` (see module docstring)."""
    held_out = held_out_groups(pairs, holdout_fraction, seed)
    rng = np.random.default_rng([seed, 0xD1A6])
    if len(held_out) == 0:
        groups = np.unique(pairs["group_id"].to_numpy())
        return np.sort(rng.choice(groups, size=min(max_groups, len(groups)), replace=False)), None
    chosen = np.sort(rng.choice(held_out, size=min(max_groups, len(held_out)), replace=False))
    training = np.setdiff1d(np.unique(pairs["group_id"].to_numpy()), held_out)
    size = min(len(chosen), len(training))
    return chosen, np.sort(rng.choice(training, size=size, replace=False))


def _subset(items: Items, rows: np.ndarray) -> Items:
    return Items(
        table=items.table.iloc[rows].reset_index(drop=True),
        meta=items.meta,
        arrays={name: array[rows] for name, array in items.arrays.items()},
        extras=items.extras,
    )


def diagnose(
    model_path: str | Path,
    items_dir: str | Path,
    pairs_path: str | Path,
    out_dir: str | Path,
    label_column: str | None = None,
    max_groups: int = 1000,
    projections: int = 256,
    knn_k: int = 10,
    device: str = "auto",
) -> dict[str, Any]:
    """Compute every diagnostic for the model at ``model_path``; write ``out_dir``.

    The experiment (pair builder, seed, batch size, hold-out) comes from the model file.
    Returns what ``diagnostics.json`` holds.
    """
    items = Items.load(items_dir)
    pairs = read_pairs(pairs_path, items)
    trained = load_trained(model_path, device)
    experiment, builder, torch_device = trained.experiment, trained.builder, trained.device
    seed, batch_size = experiment.training.seed, experiment.training.batch_size
    baseline = untrained_model(experiment, builder, items)

    groups, training_groups = choose_groups(
        pairs, experiment.training.holdout_fraction, seed, max_groups
    )
    chosen_pairs = pairs[pairs["group_id"].isin(groups)]
    training_pairs = (
        None if training_groups is None else pairs[pairs["group_id"].isin(training_groups)]
    )
    nets = {"untrained": baseline, "trained": trained.model}
    result: dict[str, Any] = {
        "subset": {
            "held_out_from_training": training_groups is not None,
            "groups": len(groups),
            "groups_total": int(pairs["group_id"].nunique()),
            "views": len(chosen_pairs),
            "view_epoch": VIEW_EPOCH,
        },
        "label_column": label_column,
        **_contrastive_numbers(
            nets, builder, items, chosen_pairs, training_pairs, (seed, batch_size), torch_device
        ),
    }
    item_rows, embedded = _embed_chosen(nets, builder, items, chosen_pairs, torch_device)
    table = items.table.iloc[item_rows].reset_index(drop=True)
    result["subset"]["items"] = len(table)
    proxies = _specificity_proxies(builder, items, item_rows, table, label_column, embedded, knn_k)
    per_item, arrays = _embedding_geometry(result, embedded, proxies, table, projections, seed)
    _write_folder(out_dir, result, per_item, arrays)
    return result


def _contrastive_numbers(
    nets: dict[str, Any],
    builder: PairBuilder,
    items: Items,
    chosen_pairs: pd.DataFrame,
    training_pairs: pd.DataFrame | None,
    seed_and_batch_size: tuple[int, int],
    device: torch.device,
) -> dict[str, dict[str, Any]]:
    """Each net's contrastive numbers on the chosen groups' views of epoch
    :data:`VIEW_EPOCH`; the trained net's projection numbers on training groups too, when
    the chosen groups were held out."""
    seed, batch_size = seed_and_batch_size

    def batches(selected: pd.DataFrame):
        epoch = builder.training_batches(items, selected, seed, batch_size)
        epoch.set_epoch(VIEW_EPOCH)
        return epoch

    numbers = {
        name: contrastive_metrics(net, batches(chosen_pairs), device) for name, net in nets.items()
    }
    if training_pairs is not None:
        numbers["trained"]["projection_on_training_groups"] = contrastive_metrics(
            nets["trained"], batches(training_pairs), device
        )["projection"]
    return numbers


def _embed_chosen(
    nets: dict[str, Any],
    builder: PairBuilder,
    items: Items,
    chosen_pairs: pd.DataFrame,
    device: torch.device,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows of the chosen items and each net's embeddings of them, ``[n, D]`` (graph nodes
    are embedded with the whole graph)."""
    from scicontrast.analysis.embed import embed_items

    item_rows = np.flatnonzero(items.table["item_id"].isin(chosen_pairs["item_id"]).to_numpy())
    whole = builder.embeds_whole_set
    embed_set = items if whole else _subset(items, item_rows)
    embedded = {
        name: embed_items(net, builder, embed_set, 512, device, progress=False)
        for name, net in nets.items()
    }
    if whole:
        embedded = {name: vectors[item_rows] for name, vectors in embedded.items()}
    return item_rows, embedded


def _embedding_geometry(
    result: dict[str, Any],
    embedded: dict[str, np.ndarray],
    proxies: dict[str, Any],
    table: pd.DataFrame,
    projections: int,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Gaussianity of random projections and norm against specificity, per net, into
    ``result``; the per-item table and the projection statistics to save."""
    per_item = pd.DataFrame({"item_id": table["item_id"].to_numpy()})
    arrays: dict[str, np.ndarray] = {}
    sample = np.random.default_rng([seed, 0x5A3E]).permutation(len(table))[:GAUSSIANITY_MAX_POINTS]
    for name, vectors in embedded.items():
        norms = np.linalg.norm(vectors, axis=1)
        per_item[f"norm_{name}"] = norms
        statistics = projection_statistics(vectors[sample], projections, seed)
        result[name]["gaussianity"] = summarise_gaussianity(statistics)
        result[name]["norm_specificity"] = []
        for proxy, values in proxies.items():
            proxy_values = values[name] if isinstance(values, dict) else values
            per_item[f"{proxy} ({name})" if isinstance(values, dict) else proxy] = proxy_values
            result[name]["norm_specificity"].append(
                {"proxy": proxy, **norm_specificity(norms, proxy_values)}
            )
        for key in ("skew", "kurtosis", "ks", "sample"):
            arrays[f"{key}_{name}"] = statistics[key]
    gaussian = np.random.default_rng([seed, 0x6A56]).standard_normal(
        (len(sample), max(projections, 1))
    )
    reference = projection_statistics(gaussian, projections, seed, normalise=False)
    result["gaussian_reference"] = summarise_gaussianity(reference)
    for key in ("skew", "kurtosis", "ks", "sample"):
        arrays[f"{key}_gaussian"] = reference[key]
    return per_item, arrays


def _write_folder(
    out_dir: str | Path,
    result: dict[str, Any],
    per_item: pd.DataFrame,
    arrays: dict[str, np.ndarray],
) -> None:
    """``diagnostics.json``, ``per_item.parquet`` and ``projections.npz``, atomically."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "diagnostics.json").write_text(
            json.dumps(result, indent=2, sort_keys=True, default=_plain) + "\n"
        )
        per_item.to_parquet(tmp / "per_item.parquet", index=False)
        np.savez(tmp / "projections.npz", **arrays)  # type: ignore[arg-type]  # stub: allow_pickle


def _specificity_proxies(
    builder: PairBuilder,
    items: Items,
    item_rows: np.ndarray,
    table: pd.DataFrame,
    label_column: str | None,
    embedded: dict[str, np.ndarray],
    knn_k: int,
) -> dict[str, np.ndarray | dict[str, np.ndarray]]:
    """Proxy name -> values for the chosen items (per model where the proxy depends on it)."""
    proxies: dict[str, np.ndarray | dict[str, np.ndarray]] = {}
    domain = builder.specificity(items)
    if domain is not None:
        name, values = domain
        proxies[name] = np.asarray(values, dtype=np.float64)[item_rows]
    if label_column is not None and label_column in table.columns:
        labels = table[label_column]
        known = labels.notna().to_numpy()
        if labels[known].nunique() >= 2:
            per_model = {}
            for name, vectors in embedded.items():
                purity = np.full(len(table), np.nan)
                purity[known] = knn_label_purity(vectors[known], labels[known].to_numpy(), knn_k)
                per_model[name] = purity
            proxies["knn_label_purity"] = per_model
    return proxies


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
