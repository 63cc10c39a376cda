r"""A 1-D convolutional encoder for one-hot DNA, optionally reverse-complement invariant.

Input and output::

    x: [B, 4, L]  one-hot (or soft) DNA, channels in the order A, C, G, T; any L >= 1
    h: [B, embedding_dim]

The trunk :math:`g` is a stem convolution followed by ``layers - 1`` residual blocks whose
dilation doubles at every block (receptive field
:math:`k + (k - 1)(2 + 4 + \dots + 2^{\text{layers}-1})`), so the length never shrinks and
any ``L >= 1`` works; a pooling over positions (mean, max or both concatenated) turns the
feature map into one vector per sequence.

**Position bins.** Global pooling forgets *where* a feature fired. With
``position_bins = B > 1`` the length axis is cut into ``B`` near-equal segments (adaptive
pooling: segment ``b`` covers positions ``[floor(bL/B), ceil((b+1)L/B))``, counted from the
5' end of the strand read) and each is pooled on its own; the ``B`` pooled vectors are
concatenated, ``[N, C, L] -> [N, (2) C B]``. This suits sequences aligned to a landmark, such
as promoters cut around the transcription start site, where a motif's distance from the
landmark carries signal; ``B = 1`` is global pooling.

**Reverse-complement invariance by construction.** With channels ordered ACGT, the
complement swaps A<->T and C<->G, which is a flip of the channel axis, and reversing the
strand is a flip of the position axis:

.. math::

    \operatorname{rc}(x) = x_{[::-1,\ ::-1]} \qquad (\text{``x.flip(-2).flip(-1)``}).

``rc`` is an involution, :math:`\operatorname{rc}(\operatorname{rc}(x)) = x`. With
``rc_invariant=True`` the encoder pools over both strands before the output layer,

.. math::

    h(x) = W \bigl[g(x) + g(\operatorname{rc}(x))\bigr] + b

(``W = I``, ``b = 0`` with ``embedding_dim=None``), so
:math:`h(\operatorname{rc}(x)) = W[g(\operatorname{rc}(x)) + g(x)] + b = h(x)` for every
weight setting, trained or not, and for soft inputs as well as one-hot ones. With position
bins, :math:`g` bins each strand from its own 5' end and the two are summed bin by bin, so
the identity above still holds term by term. Bin ``b`` of the sum thus mixes the locus at
``b`` on the forward strand with the mirrored locus ``B - 1 - b`` read on the other strand:
an invariant encoder cannot tell a motif at ``-35`` on one strand from the same motif at the
mirrored place on the other, which is exactly the information strand invariance gives up.
(Reversing the bin order of the reverse strand before summing would align the bins to loci
instead, but the result is then *equivariant*, :math:`g'(\operatorname{rc}(x))` being
:math:`g'(x)` with its bins reversed, and ``W`` would break the invariance.) Both strands go
through the trunk in one batched pass (``x`` and ``rc(x)`` concatenated along the batch), so
BatchNorm normalises them with the same statistics; in training mode the statistics of the
batch ``[x; rc(x)]`` and of ``[rc(x); x]`` are the same numbers summed in a different order,
so invariance then holds up to float rounding (~1e-7), and exactly in evaluation mode. With
``rc_invariant=False``, :math:`h(x) = W g(x) + b`, and how invariant the embedding becomes is
left to training (the analysis step measures it).

**Variable length.** Reads of unequal length are batched by padding them with all-zero
columns. With ``mask_padding=True`` the mask :math:`m_t = [\lVert x_{:,t} \rVert_1 > 0]` is
applied after the stem and after every residual block (``h <- h * m``), so a valid position
only ever sees zeros beyond the read's ends, exactly what the convolutions' own zero padding
shows an unpadded read; pooling is then over valid positions only,
:math:`\text{mean} = \sum_t m_t h_t / \sum_t m_t`,
:math:`\text{max} = \max_{t: m_t = 1} h_t`. In evaluation mode a padded read thus embeds
exactly as the read alone (tested); the reverse complement of a padded read has its padding
on the other side, which the mask handles the same way, so invariance holds as above. In
training mode BatchNorm's batch statistics would include padded positions: the genome
pair builder therefore draws one length per training batch and pads only when embedding.

References: the dilated residual trunk follows Basenji (Kelley et al., Genome Research 2018);
strand pooling follows the "RC-parameter sharing" / post-hoc conjoining discussion in
Shrikumar et al. (2017) and Zhou et al., "Towards a better understanding of reverse-complement
equivariance for deep learning models in genomics" (MLCB 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scicontrast.errors import ConfigError
from scicontrast.registry import ENCODERS

POOLINGS = ("mean_max", "mean", "max")


def reverse_complement(x: Tensor) -> Tensor:
    """Reverse complement of one-hot DNA ``x [..., 4, L]`` with channels ordered ACGT."""
    return x.flip(-2).flip(-1)


class DilatedResidualBlock(nn.Module):
    """``x + ReLU(BN(Conv1d_dilated(x)))``: same length, wider receptive field."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation, padding="same", bias=False
        )
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        out = x + torch.relu(self.norm(self.conv(x)))
        return out if mask is None else out * mask


@ENCODERS.register("dna_cnn")
class DNAConvEncoder(nn.Module):
    """Dilated residual 1-D CNN over one-hot DNA ``[B, 4, L]`` -> ``[B, embedding_dim]``.

    Args:
        channels: Feature channels of every convolution.
        kernel_size: Width of every convolution (in bases; dilated in the residual blocks).
        layers: Number of convolutions: one stem plus ``layers - 1`` residual blocks with
            dilation ``2, 4, 8, ...``.
        embedding_dim: Size of the output embedding, made by a linear layer from the pooled
            features; ``None``: no output layer, the embedding is the pooled features
            themselves (``channels * position_bins``, twice that for ``"mean_max"``), so a
            linear probe sees every pooled feature.
        rc_invariant: Pool the two strands, making the embedding exactly invariant to the
            reverse complement (see the module docstring).
        pooling: Pooling over positions: ``"mean_max"`` (both, concatenated), ``"mean"``
            or ``"max"``.
        position_bins: Pool each of this many near-equal segments of the sequence
            separately and concatenate them (see the module docstring); 1 pools globally.
        mask_padding: Treat all-zero columns (padding) as absent: zero the feature map there
            after every layer and pool over the other positions only (see "Variable
            length" in the module docstring). Needs ``position_bins = 1``.
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_size: int = 9,
        layers: int = 3,
        embedding_dim: int | None = 64,
        rc_invariant: bool = True,
        pooling: str = "mean_max",
        position_bins: int = 1,
        mask_padding: bool = False,
    ) -> None:
        super().__init__()
        for key, value in (
            ("channels", channels),
            ("kernel_size", kernel_size),
            ("layers", layers),
            ("embedding_dim", 1 if embedding_dim is None else embedding_dim),
            ("position_bins", position_bins),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"encoder dna_cnn: {key} must be a positive integer, not {value!r}"
                )
        if pooling not in POOLINGS:
            raise ConfigError(
                f"encoder dna_cnn: pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}"
            )
        if mask_padding and position_bins != 1:
            raise ConfigError("encoder dna_cnn: mask_padding needs position_bins = 1")
        self.mask_padding = mask_padding
        self.rc_invariant = rc_invariant
        self.pooling = pooling
        self.position_bins = position_bins
        self.stem = nn.Sequential(
            nn.Conv1d(4, channels, kernel_size, padding="same", bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            *(DilatedResidualBlock(channels, kernel_size, 2**i) for i in range(1, layers))
        )
        pooled_dim = (2 if pooling == "mean_max" else 1) * channels * position_bins
        self.output = (
            nn.Identity() if embedding_dim is None else nn.Linear(pooled_dim, embedding_dim)
        )
        self.embedding_dim = pooled_dim if embedding_dim is None else embedding_dim

    def _trunk(self, x: Tensor) -> Tensor:
        """:math:`g`: ``[N, 4, L]`` -> pooled features ``[N, pooled_dim]``.

        Layout: pooling kind (mean, then max), then channel, then bin (5' first).
        """
        if self.mask_padding:
            return self._masked_trunk(x)
        features = self.blocks(self.stem(x))
        pooled = []
        if self.pooling in ("mean", "mean_max"):
            pooled.append(F.adaptive_avg_pool1d(features, self.position_bins))
        if self.pooling in ("max", "mean_max"):
            pooled.append(F.adaptive_max_pool1d(features, self.position_bins))
        return torch.cat(pooled, dim=1).flatten(start_dim=1)

    def _masked_trunk(self, x: Tensor) -> Tensor:
        """:math:`g` over the non-padding positions only: ``[N, 4, L]`` -> ``[N, pooled_dim]``."""
        mask = (x.abs().sum(dim=1, keepdim=True) > 0).to(x.dtype)  # [N, 1, L]
        features = self.stem(x) * mask
        for block in self.blocks:
            features = block(features, mask)
        count = mask.sum(dim=-1).clamp(min=1.0)  # [N, 1]
        pooled = []
        if self.pooling in ("mean", "mean_max"):
            pooled.append(features.sum(dim=-1) / count)
        if self.pooling in ("max", "mean_max"):
            pooled.append(features.masked_fill(mask == 0, float("-inf")).amax(dim=-1))
        return torch.cat(pooled, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != 4:
            raise ValueError(f"expected one-hot DNA of shape [B, 4, L], got {list(x.shape)}")
        if not self.rc_invariant:
            return self.output(self._trunk(x))
        both_strands = self._trunk(torch.cat([x, reverse_complement(x)], dim=0))
        # Sliced at the batch size rather than chunk(2): torch.export keeps the batch dynamic.
        n = x.shape[0]
        return self.output(both_strands[:n] + both_strands[n:])
