r"""A small 2-D CNN for micrographs, optionally invariant to rotations by construction.

Input and output::

    x: [B, in_channels, S, S]  images in [0, 1], usually zero outside the inscribed disc
                               (as the ``rotations`` pair builder makes them)
    h: [B, embedding_dim]

**Trunk.** ``len(channels)`` stages of ``Conv3x3 -> BatchNorm -> ReLU``; the first stage
strides by ``stem_stride``, every later one by 2, so stage ``s`` sees the image at
``1 / (stem_stride * 2^(s-1))`` of its resolution. Each stage's feature map
``f_s [C_s, H_s, W_s]`` is pooled over positions: its mean, and with ``pooling="mean_std"``
also its standard deviation :math:`\sqrt{\operatorname{Var} f_s + 10^{-5}}` per channel (the
first two moments of the feature distribution, a texture descriptor in the spirit of Gram
statistics; Gatys et al. 2015, Huang and Belongie 2017). With ``multiscale=True`` the pooled
vectors of all stages are concatenated (fine stages see small structures, coarse stages
large ones); otherwise only the last stage's. Call the result :math:`p(x) \in \mathbb{R}^P`,
``P = (2 if mean_std else 1) * (sum(channels) if multiscale else channels[-1])``.

**Rotation pooling.** With ``r`` the exact quarter turn ``torch.rot90(x, 1, dims=(-2, -1))``
(a permutation of pixels, no interpolation) and ``G`` a set of transformations,

.. math::

    h(x) = W\,\bar p(x) + b, \qquad \bar p(x) = \frac{1}{|G|} \sum_{g \in G} p(g x),

with ``W, b`` a linear output layer (``embedding_dim`` set) or the identity
(``embedding_dim=None``, then ``h = p̄`` and ``embedding_dim = P``).

``rotation_invariant="none"``
    ``G = {id}``: a plain CNN; how rotation-invariant it becomes is left to training.
``rotation_invariant="c4"``
    ``G = {r^0, r^1, r^2, r^3}``. Since ``r^4 = id``, ``G r = G`` and so
    :math:`h(r x) = h(x)` for every weight setting, trained or not: exact invariance to the
    four quarter turns (and only to them; other angles are left to training).
``rotation_invariant="c8"``
    ``G = {r^k, r^k R_45 : k = 0..3}`` with ``R_45`` a bilinear rotation by 45 degrees
    (``scicontrast.data_adapters.images.rotations.rotate``) of the disc-masked input, masked again
    by the disc. Quarter turns stay exact (``R_45`` commutes with ``r``: the bilinear
    sampling grid of a quarter-turned image is the quarter-turned grid, up to float rounding
    of the coordinates, ~1e-6). Invariance to 45-degree turns is only **approximate**: an
    input turned by 45 degrees is itself interpolated, and ``R_45 R_45 x`` differs from
    ``r x`` by two interpolations, so the two orbits agree up to interpolation error. The
    disc mask is what makes the 45-degree copies comparable at all: without it the copies
    would show the square's corners at different places.

All copies go through the trunk as one batch (``|G| B`` images), so BatchNorm in training
mode normalises them with the statistics of the whole orbit. ``[x; r x; r^2 x; r^3 x]`` and
the orbit of ``r x`` are the same images in another order, so in training mode invariance
holds up to float summation order (~1e-7), and exactly in evaluation mode. The price of
invariance by construction is ``|G|`` times the compute of a plain forward pass.

**Patches.** A :class:`~scicontrast.data_adapters.images.patches.PatchBag` (patches ``[M, C, S, S]``
of ``B`` images, ``owner [M]``) embeds as ``[B, D]``, row ``b`` the mean of ``h`` over image
``b``'s patches, :math:`\frac{1}{|P_b|}\sum_{x \in P_b} h(x)`: how a micrograph kept at its
own scale (``image_folder`` with ``patch_size``) is embedded. ``h`` is affine in the pooled
features, so this is also ``W`` times the mean pooled features plus ``b``.

**Channels.** The encoder is built from its config alone, so ``in_channels`` must be set to
the items' ``meta["channels"]`` (1 for grey, 3 for RGB); a mismatch fails at the first
forward pass with a message naming the parameter.

References: pooling a CNN over a rotated copy of its input is the "test-time augmentation"
form of group invariance (Laptev et al., "TI-pooling", CVPR 2016; Dieleman et al.,
"Exploiting cyclic symmetry in convolutional neural networks", ICML 2016).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scicontrast.data_adapters.images.patches import PatchBag
from scicontrast.errors import ConfigError
from scicontrast.geometry import disc_mask, rotate
from scicontrast.registry import ENCODERS

ROTATION_MODES = ("none", "c4", "c8")
POOLINGS = ("mean", "mean_std")


def _check_positive_int(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"encoder image_cnn: {key} must be a positive integer, not {value!r}")


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        # The bias would be cancelled by the BatchNorm that follows.
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@ENCODERS.register("image_cnn")
class ImageCNN(nn.Module):
    """Strided 2-D CNN with moment pooling and optional rotation pooling (module docstring).

    Args:
        in_channels: Image channels; must match the items' ``meta["channels"]``.
        channels: Output channels of each stage.
        stem_stride: Stride of the first stage (2 halves the resolution right away, which
            keeps large images cheap); every later stage strides by 2.
        embedding_dim: Size of a linear output layer on the pooled features; ``None``
            exports the pooled features themselves.
        rotation_invariant: ``"none"``, ``"c4"`` (exact invariance to quarter turns) or
            ``"c8"`` (exact for quarter turns, approximate for 45 degrees).
        pooling: ``"mean"`` or ``"mean_std"`` (mean and standard deviation per channel).
        multiscale: Concatenate the pooled features of every stage, not just the last.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: list[int] | tuple[int, ...] = (32, 64, 128),
        stem_stride: int = 2,
        embedding_dim: int | None = 128,
        rotation_invariant: str = "c4",
        pooling: str = "mean_std",
        multiscale: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("stem_stride", stem_stride)
        if not isinstance(channels, (list, tuple)) or not channels:
            raise ConfigError(
                f"encoder image_cnn: channels must be a non-empty list of positive integers, "
                f"not {channels!r}"
            )
        for width in channels:
            _check_positive_int("channels", width)
        if embedding_dim is not None:
            _check_positive_int("embedding_dim", embedding_dim)
        if not isinstance(rotation_invariant, str) or rotation_invariant not in ROTATION_MODES:
            raise ConfigError(
                f"encoder image_cnn: rotation_invariant must be one of "
                f"{', '.join(ROTATION_MODES)}, not {rotation_invariant!r}"
            )
        if pooling not in POOLINGS:
            raise ConfigError(
                f"encoder image_cnn: pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}"
            )
        self.in_channels = in_channels
        self.rotation_invariant = rotation_invariant
        self.pooling = pooling
        self.multiscale = bool(multiscale)
        widths = [in_channels, *channels]
        self.stages = nn.ModuleList(
            _stage(widths[i], widths[i + 1], stem_stride if i == 0 else 2)
            for i in range(len(channels))
        )
        moments = 2 if pooling == "mean_std" else 1
        pooled_dim = moments * (sum(channels) if self.multiscale else channels[-1])
        self.output: nn.Module
        if embedding_dim is None:
            self.output = nn.Identity()
            self.embedding_dim = pooled_dim
        else:
            self.output = nn.Linear(pooled_dim, embedding_dim)
            self.embedding_dim = embedding_dim

    def _pool(self, features: Tensor) -> Tensor:
        mean = features.mean(dim=(-2, -1))
        if self.pooling == "mean":
            return mean
        std = (features.var(dim=(-2, -1), unbiased=False) + 1e-5).sqrt()
        return torch.cat([mean, std], dim=1)

    def _trunk(self, x: Tensor) -> Tensor:
        """:math:`p`: ``[N, C, S, S]`` -> pooled features ``[N, P]``."""
        pooled = []
        for stage in self.stages:
            x = stage(x)
            if self.multiscale:
                pooled.append(self._pool(x))
        if not self.multiscale:
            pooled.append(self._pool(x))
        return torch.cat(pooled, dim=1)

    def _orbit(self, x: Tensor) -> list[Tensor]:
        """The transformed copies ``g x`` for ``g`` in ``G``."""
        if self.rotation_invariant == "none":
            return [x]
        bases = [x]
        if self.rotation_invariant == "c8":
            disc = disc_mask(x.shape[-1]).to(x)
            x = x * disc
            turned = rotate(x, torch.full((x.shape[0],), 45.0, device=x.device))
            bases = [x, turned * disc]
        return [torch.rot90(base, k, dims=(-2, -1)) for base in bases for k in range(4)]

    def forward(self, x: Tensor | PatchBag) -> Tensor:
        if isinstance(x, PatchBag):
            return x.pool(self.forward(x.patches))
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"image_cnn: expected images [B, in_channels={self.in_channels}, H, W], got "
                f"{list(x.shape)}; set encoder params.in_channels to the items' channels"
            )
        if self.rotation_invariant != "none" and x.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"image_cnn: rotation pooling needs square images, got {list(x.shape)}"
            )
        orbit = self._orbit(x)
        features = self._trunk(torch.cat(orbit))
        pooled = features.view(len(orbit), x.shape[0], -1).mean(dim=0)
        return self.output(pooled)
