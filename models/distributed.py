"""Training on several processes (``torchrun``): global negatives, synced BatchNorm.

With ``P`` processes each holding ``n_p`` views, InfoNCE should see every view of the
global batch as a candidate, exactly as one process holding all ``M = sum_p n_p`` views
would. Each process

1. gathers the embeddings of every process with an all-gather that keeps the autograd
   graph (``torch.distributed.nn.functional.all_gather``: its backward sums, over
   processes, the gradient each process's loss sends to a gathered row);
2. computes the loss of its own anchors against all ``M`` candidates, excluding itself by
   its global row index ``offset_p + i`` (the "labels offset by rank" of SimCLR code);
3. scales its loss to ``sum_{own anchors} l_a * P / A``, with ``A`` the number of anchors
   with a positive over all processes, so that DDP's gradient average over processes gives
   the gradient of the global mean ``(1/A) sum_a l_a``.

The loss is never all-reduced by hand (that would double-count gradients). BatchNorm layers
become ``SyncBatchNorm`` on CUDA; PyTorch's ``SyncBatchNorm`` runs only on GPUs, so on CPU
(the gloo backend: tests, CPU clusters) they become :class:`AllReduceBatchNorm`, which sums
the per-channel statistics over processes with the same autograd-aware collective.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn

from scicontrast.models.loss_metrics import loss_metrics, uniformity_from_cosine
from scicontrast.models.losses import InfoNCELoss, InfoNCEOutput, cross_entropy_from_similarity


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process sits: ``rank`` of ``world_size``, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, metrics and models."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start_process_group(device: torch.device) -> ProcessGroup:
    """Join the process group ``torchrun`` describes in the environment, if any.

    Without ``WORLD_SIZE > 1`` this is a single process and nothing is initialised. On CUDA,
    process ``LOCAL_RANK`` takes GPU ``LOCAL_RANK`` and talks NCCL; on CPU it talks gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup(rank=0, world_size=1, device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=30),
        )
    return ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def stop_process_group(group: ProcessGroup) -> None:
    """Leave the process group; drop every ``DistributedDataParallel`` wrapper first.

    A DDP wrapper's C++ reducer holds a reference to the process group. Were it the last
    one, the group's destructor would run inside the wrapper's deallocation, holding the
    GIL, and join gloo's worker threads, one of which may be waiting for the GIL to release
    a finished collective's tensor: a deadlock seen in 3 of 8 torchrun runs on 2
    CPU cores (pytorch/pytorch#56297). Destroyed here, the group's own binding releases the
    GIL first. The collection frees wrappers kept alive only by reference cycles.
    """
    if group.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_gather_rows(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate every process's ``x`` ``[n_p, ...]`` along dim 0, keeping gradients.

    Processes may hold different numbers of rows (groups with different numbers of views):
    rows are padded to the largest count for the collective and the padding removed after.
    Returns ``(gathered [sum_p n_p, ...], offset of this process's first row)``.
    """
    counts = torch.tensor([x.shape[0]], device=x.device)
    all_counts = [torch.zeros_like(counts) for _ in range(dist.get_world_size())]
    dist.all_gather(all_counts, counts)
    sizes = [int(c.item()) for c in all_counts]
    padded = F.pad(x, [0, 0] * (x.dim() - 1) + [0, max(sizes) - x.shape[0]])
    pieces = dist_nn.all_gather(padded)
    rank = dist.get_rank()
    gathered = torch.cat([piece[:size] for piece, size in zip(pieces, sizes, strict=True)])
    return gathered, sum(sizes[:rank])


def gathered_info_nce(loss: InfoNCELoss, z: Tensor, group_ids: Tensor) -> InfoNCEOutput:
    """In-batch InfoNCE of this process's views against the views of all processes.

    Equals ``loss(z_all, group_ids_all)`` of one process holding the whole global batch, in
    value (``metrics["loss"]``, the global mean) and, after DDP's gradient average, in
    gradient. ``group_ids`` must be global (dataset indices), as the batch builders give.
    """
    z = F.normalize(z, dim=1)
    candidates, offset = all_gather_rows(z)
    candidate_ids, _ = all_gather_rows(group_ids)
    rows = torch.arange(z.shape[0], device=z.device)
    not_self = torch.ones(z.shape[0], candidates.shape[0], dtype=torch.bool, device=z.device)
    not_self[rows, offset + rows] = False
    positive = (group_ids[:, None] == candidate_ids[None, :]) & not_self
    similarity = z @ candidates.T
    tau = loss.temperature()
    per_anchor, has_positive = cross_entropy_from_similarity(similarity, positive, not_self, tau)

    totals = torch.stack([per_anchor.detach()[has_positive].sum(), has_positive.sum().to(z.dtype)])
    dist.all_reduce(totals)
    anchors_with_positive = totals[1].clamp(min=1)
    world_size = dist.get_world_size()
    scaled = per_anchor[has_positive].sum() * world_size / anchors_with_positive
    with torch.no_grad():
        # Loss and MI bound are global; the similarity statistics are this process's anchors.
        metrics = loss_metrics(
            totals[0] / anchors_with_positive,
            tau,
            [(similarity, positive, not_self, has_positive)],
            uniformity_from_cosine(similarity, not_self),
        )
    return InfoNCEOutput(scaled, metrics)


def any_process(flag: bool, group: ProcessGroup) -> bool:
    """True on every process when it is true on any (e.g. one of them got SIGTERM)."""
    if not group.distributed:
        return flag
    value = torch.tensor([int(flag)], device=group.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics cover the batches of all processes (CPU, gloo).

    In training mode the per-channel sums of ``x`` and ``x^2`` and the element count are
    summed over processes (autograd-aware), giving the global mean and biased variance
    used to normalise; running statistics take the unbiased variance, as ``nn.BatchNorm``
    does. In eval mode it is plain BatchNorm with the running statistics.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        channels = x.shape[1]
        reduce_dims = [0, *range(2, x.dim())]
        count = x.new_tensor([x.numel() / channels])
        stats = torch.cat([x.sum(reduce_dims), (x * x).sum(reduce_dims), count])
        stats = dist_nn.all_reduce(stats)
        total, total_sq, n = stats[:channels], stats[channels : 2 * channels], stats[-1]
        mean = total / n
        var = total_sq / n - mean * mean
        if self.track_running_stats:
            # track_running_stats is what creates these buffers.
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        x_hat = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            x_hat = x_hat * self.weight.view(shape) + self.bias.view(shape)
        return x_hat


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm layer by its synced form for ``device``."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, AllReduceBatchNorm
        ):
            synced = AllReduceBatchNorm(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            synced.load_state_dict(child.state_dict())
            setattr(model, name, synced.to(next(child.buffers(), torch.empty(0)).device))
        else:
            sync_batchnorm(child, device)
    return model
