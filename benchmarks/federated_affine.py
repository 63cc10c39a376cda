"""``benchmarks/federated.py`` with every batch-norm layer replaced by a learned per-channel
scale and shift without normalisation, in every arm (central, FedAvg, FedAvg + bank).

A hypothesis check, not a setting: with batch norm, a one-class site normalises each layer
with its class's batch statistics, so its queries are class-centred and the bank's rows
(global statistics) live in another normalisation. Without normalisation a projection no
longer depends on the batch it is in. Same arguments as ``benchmarks/federated.py``::

    python benchmarks/federated_affine.py --out results/federated_affine --markdown
"""

from __future__ import annotations

import sys
from typing import Any

import federated
import torch
from torch import Tensor, nn


class Affine(nn.Module):
    """``x * weight + bias`` per channel (dimension 1), initialised to the identity; takes
    batch norm's constructor arguments and ignores all but the number of channels."""

    def __init__(self, channels: int, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


if __name__ == "__main__":
    # The encoder and head look these names up when they are built.
    nn.BatchNorm1d = nn.BatchNorm2d = Affine  # type: ignore[misc,assignment]
    sys.exit(federated.main())
