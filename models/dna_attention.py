r"""A convolutional stem with self-attention over its tokens, for DNA reads of any length.

Input and output::

    x: [B, 4, L]  one-hot (or soft) DNA, channels A, C, G, T, zero columns after each read
    h: [B, embedding_dim]

**Trunk** :math:`g` of one strand, shapes for ``N`` sequences of padded length ``L``:

1. *Stem*: the dilated residual convolutions of :mod:`~scicontrast.models.dna_cnn`
   (``conv_layers`` of width ``k``, dilations 1, 2, 4, ...), ``[N, 4, L] -> [N, C, L]``,
   the feature map zeroed at padding after every layer.
2. *Tokens*: the map is zero-padded to a multiple of the token size ``s`` and cut into
   ``T = ceil(L / s)`` non-overlapping segments; a convolution of width and stride ``s``
   turns each into one token of ``d`` features, ``[N, C, L] -> [N, T, d]`` (the CNN stem +
   pooling layout of Enformer, Avsec et al., Nature Methods 2021). A token is valid when
   its segment holds a valid base.
3. *Attention*: ``attention_layers`` pre-norm transformer encoder layers
   (``torch.nn.TransformerEncoderLayer``, ``heads`` heads, feed-forward width
   ``feedforward``, no dropout) over the valid tokens only (key padding mask), so every
   token sees the whole read: the receptive field is the read.
4. *Pooling*: the mean of the valid tokens, :math:`\sum_t m_t z_t / \sum_t m_t`,
   ``[N, T, d] -> [N, d]``.

There is no positional encoding: a read starts at a random place of its genome, so where a
token sits in the read carries no signal for genome of origin; the stem gives each token its
local order, and attention mixes tokens by content.

**Reverse-complement invariance by construction**, as in ``dna_cnn``:
:math:`h(x) = W[g(x) + g(\operatorname{rc}(x))] + b`, so :math:`h(\operatorname{rc}(x)) = h(x)`
for every weight setting. Tokens are cut from each strand's own 5' end, wherever a batch
put the padding: with the read's bases in columns ``first..last`` (the columns that are not
all zero) and :math:`l = \text{last} - \text{first} + 1`, the two strands are
:math:`x^{+}_{c,t} = x_{c,\,\text{first}+t}` and :math:`x^{-}_{c,t} = x_{3-c,\,\text{last}-t}`
for :math:`t < l`, zero after (:func:`left_aligned_strands`); a plain flip would move the
padding to the left and shift the token boundaries. The strands of
:math:`\operatorname{rc}(x)` are those of :math:`x` swapped, so the identity above holds
exactly.

**Padding.** Both strands being left-aligned, padding on either side changes neither the
stem's map at valid positions (the masked convolutions of ``dna_cnn``), nor the tokens (it
adds zero segments after the last one), nor attention (padded tokens are masked keys) nor
pooling: in evaluation mode a padded read embeds as the read alone, to float rounding
(tested to 1e-5). In training mode BatchNorm's statistics would include padded positions,
which is why the genome pair builder draws one length per training batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scicontrast.errors import ConfigError
from scicontrast.models.dna_cnn import DilatedResidualBlock
from scicontrast.registry import ENCODERS


def left_aligned_strands(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Both strands of each read of ``x [N, 4, L]`` (ACGT) with their padding moved right.

    A read's bases are the columns ``first..last`` that are not all zero, wherever the
    padding lies; with ``t`` counted from each strand's 5' end and ``l = last - first + 1``,
    ``forward[n, c, t] = x[n, c, first + t]`` and ``reverse[n, c, t] = x[n, 3 - c, last - t]``
    for ``t < l``, zero after. Returns ``forward``, ``reverse`` (both ``[N, 4, L]``) and the
    base mask ``[N, 1, L]``, ``t < l``, that they share.
    """
    valid = x.abs().sum(dim=1) > 0  # [N, L]
    positions = torch.arange(x.shape[-1], device=x.device)
    last = torch.where(valid, positions, -1).amax(dim=-1, keepdim=True)  # [N, 1]
    first = torch.where(valid, positions, x.shape[-1]).amin(dim=-1, keepdim=True).clamp(max=last)
    mask = (positions < last - first + 1).unsqueeze(1).to(x.dtype)  # [N, 1, L]
    forward_index = (first + positions).clamp(max=x.shape[-1] - 1).unsqueeze(1).expand(-1, 4, -1)
    reverse_index = (last - positions).clamp(min=0).unsqueeze(1).expand(-1, 4, -1)
    forward = x.gather(-1, forward_index) * mask
    reverse = x.flip(-2).gather(-1, reverse_index) * mask
    return forward, reverse, mask


@ENCODERS.register("dna_attention")
class DNAConvAttentionEncoder(nn.Module):
    """Convolutional stem, tokens, self-attention, masked mean: ``[B, 4, L] -> [B, embedding_dim]``.

    Args:
        channels: Channels ``C`` of the stem convolutions.
        kernel_size: Width of the stem convolutions.
        conv_layers: Stem convolutions: one plus ``conv_layers - 1`` dilated residual blocks.
        token_size: Bases per token ``s`` (width and stride of the token convolution).
        model_dim: Token features ``d``.
        heads: Attention heads (must divide ``model_dim``).
        attention_layers: Transformer encoder layers.
        feedforward: Hidden width of each layer's feed-forward network.
        embedding_dim: Size of the output embedding (a linear layer on the pooled tokens).
    """

    def __init__(
        self,
        channels: int = 32,
        kernel_size: int = 9,
        conv_layers: int = 2,
        token_size: int = 8,
        model_dim: int = 64,
        heads: int = 4,
        attention_layers: int = 2,
        feedforward: int = 128,
        embedding_dim: int = 64,
    ) -> None:
        super().__init__()
        sizes = dict(
            channels=channels,
            kernel_size=kernel_size,
            conv_layers=conv_layers,
            token_size=token_size,
            model_dim=model_dim,
            heads=heads,
            attention_layers=attention_layers,
            feedforward=feedforward,
            embedding_dim=embedding_dim,
        )
        for key, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"encoder dna_attention: {key} must be a positive integer, not {value!r}"
                )
        if model_dim % heads:
            raise ConfigError(
                f"encoder dna_attention: heads ({heads}) must divide model_dim ({model_dim})"
            )
        self.token_size = token_size
        self.stem = nn.Sequential(
            nn.Conv1d(4, channels, kernel_size, padding="same", bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.blocks = nn.ModuleList(
            DilatedResidualBlock(channels, kernel_size, 2**i) for i in range(1, conv_layers)
        )
        self.tokenize = nn.Conv1d(channels, model_dim, token_size, stride=token_size)
        layer = nn.TransformerEncoderLayer(
            model_dim, heads, feedforward, dropout=0.0, batch_first=True, norm_first=True
        )
        self.attention = nn.TransformerEncoder(
            layer, attention_layers, norm=nn.LayerNorm(model_dim), enable_nested_tensor=False
        )
        self.output = nn.Linear(model_dim, embedding_dim)
        self.embedding_dim = embedding_dim

    def _tokens(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attended tokens ``[N, T, d]`` and their validity ``bool [N, T]`` of ``x [N, 4, L]``
        with its base mask ``[N, 1, L]`` (steps 1-3 of the module docstring)."""
        features = self.stem(x) * mask
        for block in self.blocks:
            features = block(features, mask)
        extra = -x.shape[-1] % self.token_size  # zero columns up to a whole number of tokens
        features = F.pad(features, (0, extra))
        tokens = self.tokenize(features).transpose(1, 2)  # [N, T, d]
        valid = F.max_pool1d(F.pad(mask, (0, extra)), self.token_size).squeeze(1) > 0  # [N, T]
        return self.attention(tokens, src_key_padding_mask=~valid), valid

    def _trunk(self, x: Tensor, mask: Tensor) -> Tensor:
        """:math:`g`: the mean of the valid attended tokens, ``[N, 4, L] -> [N, model_dim]``."""
        tokens, valid = self._tokens(x, mask)
        weights = valid.unsqueeze(-1).to(tokens.dtype)
        return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != 4:
            raise ValueError(f"expected one-hot DNA of shape [B, 4, L], got {list(x.shape)}")
        forward, reverse, mask = left_aligned_strands(x)
        both = self._trunk(torch.cat([forward, reverse]), torch.cat([mask, mask]))
        n = x.shape[0]  # sliced rather than chunk(2): torch.export keeps the batch dynamic
        return self.output(both[:n] + both[n:])
