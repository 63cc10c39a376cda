"""The one batch type the training loop consumes: :class:`ContrastiveBatch`.

Every pair builder's training batches are ``ContrastiveBatch`` objects. They say, in declared
fields rather than attributes stuck onto the encoder input, which rows enter the loss and in
which form; :func:`scicontrast.models.batch_loss.batch_loss` is the one place that reads them
and turns a batch's embeddings into a loss::

    inputs --encoder--> z [M', d] --z[loss_rows]--> z [M, d] --InfoNCE(z, group_ids [M])--> loss

Forms: in-batch InfoNCE by ``group_ids`` (views sharing an id are positives), optionally with
``positive_pairs`` (extra ``(anchor, candidate)`` positives: graph neighbours); or, with
``towers``, the symmetric two-tower (CLIP) loss between the rows ``towers[0]`` and
``towers[1]`` (row ``b`` of each are the two sides of pair ``b``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass
class ContrastiveBatch:
    """One training step's inputs and the loss's view of them.

    Attributes:
        inputs: What the encoder takes (a tensor of views ``[M', ...]``, a PyG batch, an
            audio-image batch); has ``.to(device)``. Row ``m`` of the encoder's output
            belongs to input row ``m``.
        group_ids: ``long [M]``: the object each loss row came from.
        loss_rows: ``long [M]`` rows of the encoder's output that enter the loss (graph
            nodes held out of the loss still pass messages); ``None``: all, ``M = M'``.
        positive_pairs: ``long [2, P]`` extra positives ``(anchor, candidate)``, indices
            into the loss rows; ``None``: positives by ``group_ids`` only.
        towers: ``(rows_a [B], rows_b [B])`` for the two-tower loss; ``None``: in-batch.
    """

    inputs: Any
    group_ids: torch.Tensor
    loss_rows: torch.Tensor | None = None
    positive_pairs: torch.Tensor | None = None
    towers: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def n_views(self) -> int:
        """Views (loss rows) in the batch."""
        return len(self.group_ids)

    def to(self, device: str | torch.device, non_blocking: bool = False) -> ContrastiveBatch:
        """The batch with every tensor on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> ContrastiveBatch:
        """The batch in page-locked memory; ``DataLoader(pin_memory=True)`` calls this.

        Inputs without a ``pin_memory`` method stay pageable.
        """
        return self._map(lambda t: t.pin_memory() if hasattr(t, "pin_memory") else t)

    def _map(self, move) -> ContrastiveBatch:
        def optional(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else move(t)

        return replace(
            self,
            inputs=move(self.inputs),
            group_ids=move(self.group_ids),
            loss_rows=optional(self.loss_rows),
            positive_pairs=optional(self.positive_pairs),
            towers=None if self.towers is None else (move(self.towers[0]), move(self.towers[1])),
        )


def collate_views(batch: list[tuple[torch.Tensor, int]]) -> ContrastiveBatch:
    """Concatenate groups' views ``(views [k_g, ...], g)`` into one in-batch batch."""
    views = torch.cat([v for v, _ in batch])
    group_ids = torch.cat([torch.full((len(v),), g, dtype=torch.long) for v, g in batch])
    return ContrastiveBatch(views, group_ids)
