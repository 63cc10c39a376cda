r"""Loss-side numbers of a contrastive model on a pass of batches: what training tracks on
its held-out groups every epoch and what the diagnostics report (their module docstring,
"Contrastive numbers", says what each means).

They live beside the models, not in :mod:`scicontrast.analysis.diagnostics`, because the
training loop computes them too, and training must not depend on the analysis layer.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from scicontrast.models.batch_loss import batch_loss

# Views for these numbers are drawn for this epoch, which training never reaches.
VIEW_EPOCH = 1_000_003
CONTRASTIVE_KEYS = ("loss", "mi_lower_bound", "num_negatives", "pos_sim", "neg_sim")
GEOMETRY_KEYS = ("alignment", "uniformity")


def similarity_gap(
    pos_sim: float, neg_sim: float, temperature: float, num_negatives: float
) -> dict[str, float | None]:
    """``gap = pos - neg``, ``margin = tau * ln K`` and ``gap / margin`` (None when K <= 1)."""
    gap = pos_sim - neg_sim
    margin = temperature * math.log(num_negatives) if num_negatives > 1 else None
    return {
        "similarity_gap": gap,
        "effective_margin": margin,
        "gap_over_margin": gap / margin if margin else None,
    }


def invariance_from_similarities(pos_sim: float, neg_sim: float) -> float | None:
    """``(pos - neg) / (1 - neg)``: 1 = views embed alike, 0 = no closer than others."""
    spread = 1.0 - neg_sim
    return (pos_sim - neg_sim) / spread if spread > 1e-8 else None


def contrastive_metrics(model, batches, device: torch.device) -> dict[str, dict[str, float | None]]:
    """Loss-side numbers over one pass of ``batches``, for ``z`` (projection) and ``h``.

    ``batches`` yields :class:`ContrastiveBatch` objects as in training; each is scored in
    its declared form (:func:`~scicontrast.models.batch_loss.batch_loss`, without a key
    queue). Returns ``{"projection":
    {...}, "embedding": {...}}``: batch means of the metrics, plus the gap, margin and (for
    ``h``) the invariance of the module docstring.
    """
    sums: dict[str, defaultdict[str, float]] = {
        "projection": defaultdict(float),
        "embedding": defaultdict(float),
    }
    n_batches = 0
    model.to(device).eval()
    # Inference mode, not just no_grad: no version counters or views tracked (a tenth of
    # the held-out pass on the small demos, docs/experiments/epochcost.md).
    with torch.inference_mode():
        for batch in batches:
            batch = batch.to(device)
            h = model.embed(batch.inputs).float()
            for space, vectors in (("projection", model.head(h)), ("embedding", h)):
                record = batch_loss(model.loss, vectors, batch).metrics
                for key in (*CONTRASTIVE_KEYS, *GEOMETRY_KEYS, "temperature"):
                    sums[space][key] += record[key]
            n_batches += 1
    if n_batches == 0:
        raise ValueError("no batch to compute the diagnostics on")
    result: dict[str, dict[str, float | None]] = {}
    for space, totals in sums.items():
        averages = {key: value / n_batches for key, value in totals.items()}
        means: dict[str, float | None] = dict(averages)
        means.update(
            similarity_gap(
                averages["pos_sim"],
                averages["neg_sim"],
                averages["temperature"],
                averages["num_negatives"],
            )
        )
        if space == "embedding":
            means["invariance"] = invariance_from_similarities(
                averages["pos_sim"], averages["neg_sim"]
            )
            # The loss value at the model's temperature means little for h: keep the geometry.
            for key in ("loss", "mi_lower_bound", "temperature"):
                means.pop(key)
        means["batches"] = n_batches
        result[space] = means
    return result
