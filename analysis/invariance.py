"""The invariance score: how close the views of one object embed.

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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from scicontrast.data_adapters.base import (
    Items,
    PairBuilder,
    ViewDataset,
    collate_views,
)


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
