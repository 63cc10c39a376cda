r"""An ensemble of independently trained encoders, read as one model.

With ``training.ensemble = K > 1`` training fits ``K`` members, each a whole model of the
experiment trained on its own with seed ``training.seed + k`` (``k = 0 .. K-1``; member 0 is
the run ``K = 1`` would give). The exported model wraps them::

    h = [h_1, ..., h_K]                          [N, K D]   (EnsembleEncoder: embed)
    z = [z_1, ..., z_K] / sqrt(K),  z_k = head_k(h_k) / ||head_k(h_k)||
                                                 [N, K d]   (EnsembleHead: forward)

so the embedding is the members' embeddings side by side, and the cosine similarity of two
projections is the mean of the members' cosine similarities,
:math:`\cos(z, z') = \frac{1}{K}\sum_k \cos(z_k, z'_k)`, which is what cross-modal retrieval
ranks by. A probe on ``h`` sees every member's features at once.

Why: contrastive embeddings move from one training seed to the next by more than many
settings do (on Cora the public split's accuracy spans 2.3 points over six seeds); the
members' errors are partly independent, and a probe over all of them averages that spread
away, as deep ensembles do for predictions (Lakshminarayanan et al., NeurIPS 2017). The
price is ``K`` times the training time and an embedding ``K`` times as wide. Width alone can
be the gain: on the promoter benchmark three encoders at their initial weights probe as well
as the trained ensemble (BENCHMARKS.md), so compare an ensemble with its untrained control.

The members are not trained together: a loss on the joint ``z`` would let them co-adapt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scicontrast.experiment import Experiment


class TwoTowers(Protocol):
    """An encoder with one method per tower (``models.audio_image.TwoTowerEncoder``)."""

    def embed_audio(self, waveforms: Tensor) -> Tensor: ...

    def embed_images(self, images: Tensor) -> Tensor: ...


class EnsembleEncoder(nn.Module):
    """The members' encoders side by side: ``x -> [h_1, ..., h_K]``, ``[N, sum D_k]``.

    Takes whatever input its members take. Two-tower members keep their per-tower methods
    (``embed_audio``, ``embed_images``), each concatenating the members' outputs likewise.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.member_dims: list[int] = [cast(int, member.embedding_dim) for member in members]
        self.embedding_dim = sum(self.member_dims)

    def forward(self, x) -> Tensor:
        return torch.cat([member(x) for member in self.members], dim=1)

    def embed_audio(self, waveforms: Tensor) -> Tensor:
        return torch.cat([tower.embed_audio(waveforms) for tower in self._towers()], dim=1)

    def embed_images(self, images: Tensor) -> Tensor:
        return torch.cat([tower.embed_images(images) for tower in self._towers()], dim=1)

    def _towers(self) -> list[TwoTowers]:
        # Duck-typed: only two-tower members have the per-tower methods; others raise here.
        return [cast(TwoTowers, member) for member in self.members]


class EnsembleHead(nn.Module):
    """Each member's head on its own slice of ``h``, unit-normalised, joined and scaled by
    ``1 / sqrt(K)`` so that ``z`` has unit length: ``[N, sum D_k] -> [N, sum d_k]``."""

    def __init__(self, heads: Sequence[nn.Module], member_dims: Sequence[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.member_dims = list(member_dims)

    def forward(self, h: Tensor) -> Tensor:
        scale = 1 / math.sqrt(len(self.heads))
        return torch.cat([F.normalize(z, dim=1) * scale for z in self.member_projections(h)], dim=1)

    def member_projections(self, h: Tensor) -> list[Tensor]:
        """Each member's own projection ``z_k = head_k(h_k)`` (not normalised), ``[N, d_k]``."""
        slices = torch.split(h, self.member_dims, dim=1)
        return [head(part) for head, part in zip(self.heads, slices, strict=True)]


def member_experiment(experiment: Experiment, member: int) -> Experiment:
    """The experiment member ``member`` trains: one model (``ensemble: 1``), seed
    ``training.seed + member``."""
    return experiment.replace(training={"ensemble": 1, "seed": experiment.training.seed + member})
