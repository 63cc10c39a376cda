r"""The one place that turns a :class:`ContrastiveBatch`'s embeddings into a loss.

Training (``scicontrast.models.train``) and the contrastive numbers of the diagnostics and the
held-out curve (``scicontrast.models.contrastive_metrics``) both call :func:`batch_loss`, so
they compare views in the same form. With ``z [M', d]`` the encoder (and head) output for
``batch.inputs`` and ``z_L = z[loss_rows]`` (all rows when ``loss_rows`` is ``None``):

* ``towers = (a, b)``: the symmetric two-tower (CLIP) loss
  :math:`\tfrac12 (L(z_L[a] \to z_L[b]) + L(z_L[b] \to z_L[a]))`;
* a MoCo key queue: queries :math:`z_L` against the momentum keys of the batch and the queue;
* several processes: every row against the rows of all processes (``gathered_info_nce``);
* otherwise in-batch InfoNCE over :math:`z_L` by ``group_ids``, plus ``positive_pairs``.
"""

from __future__ import annotations

from torch import Tensor

from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.errors import ConfigError
from scicontrast.models.distributed import gathered_info_nce
from scicontrast.models.losses import InfoNCELoss, InfoNCEOutput
from scicontrast.models.moco import KeyQueue, moco_info_nce


def batch_loss(
    loss: InfoNCELoss,
    z: Tensor,
    batch: ContrastiveBatch,
    keys: Tensor | None = None,
    key_queue: KeyQueue | None = None,
    distributed: bool = False,
) -> InfoNCEOutput:
    """The loss of ``batch`` in its declared form (module docstring).

    Args:
        loss: The model's InfoNCE loss (its temperature).
        z: ``[M', d]`` float embeddings of every input row.
        batch: The batch the rows came from.
        keys: ``[M', d]`` momentum-encoder keys, needed with ``key_queue``.
        key_queue: The MoCo queue, or ``None``.
        distributed: Gather negatives from every process.
    """
    if batch.loss_rows is not None:
        z = z[batch.loss_rows]
        keys = None if keys is None else keys[batch.loss_rows]
    if batch.towers is not None and key_queue is not None:
        raise ConfigError("loss.queue_size (MoCo) does not apply to two-tower batches")
    if distributed:
        if batch.towers is not None or key_queue is not None or batch.positive_pairs is not None:
            raise ConfigError(
                "with several processes (training.gpus > 1) only the in-batch loss is "
                "implemented; two-tower batches, graph positives and loss.queue_size need one "
                "process"
            )
        return gathered_info_nce(loss, z, batch.group_ids)
    if batch.towers is not None:
        a, b = batch.towers
        return loss.symmetric(z[a], z[b], batch.group_ids[a])
    if key_queue is not None:
        if keys is None:
            raise ValueError("batch_loss: a key queue needs the batch's momentum keys")
        return moco_info_nce(loss, z, keys, batch.group_ids, key_queue, exclude_diagonal=True)
    return loss(z, batch.group_ids, positive_pairs=batch.positive_pairs)
