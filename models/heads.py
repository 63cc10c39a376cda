"""The projection head: a small MLP between the encoder and the contrastive loss.

Shapes::

    h: [N, in_dim] (encoder output, the embedding that gets exported)
    z: [N, output_dim] = Linear(ReLU(BatchNorm(Linear(h))))

SimCLR (Chen et al., ICML 2020) found that applying the loss to ``z = head(h)`` rather than to
``h`` itself gives a better ``h``: the loss makes ``z`` invariant to the augmentations and may
discard information the head can throw away, while ``h`` keeps it. The head is therefore used
only during training; the analysis step embeds with the encoder alone. BatchNorm after the
hidden layer follows SimCLR v2 and lightly's ``SimCLRProjectionHead``.
"""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """``Linear(in_dim, hidden_dim) -> BatchNorm -> ReLU -> Linear(hidden_dim, output_dim)``.

    Args:
        in_dim: Size of the encoder's embedding.
        hidden_dim: Width of the hidden layer.
        output_dim: Size of the vectors the loss compares.
    """

    def __init__(self, in_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            # The bias would be cancelled by the BatchNorm that follows.
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)
