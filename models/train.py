"""The training loop, in one file, read top to bottom.

``train`` turns an items set and its pairs table into a trained model::

    items + pairs --pair builder--> batches of (views [M, ...], group_ids [M])
        --model--> z [M, d] --InfoNCE--> loss --AdamW--> updated weights

Each batch holds ``training.batch_size`` groups (objects) with all their views; views of the
same group are positives for each other, every other view in the batch is a negative.
The learning rate of each step follows ``training.lr_schedule`` (:func:`learning_rate`).

**Weight averaging.** With ``training.swa_epochs = K > 0`` the exported model is not the last
weights but their average over the ends of the last ``K`` epochs (stochastic weight averaging,
Izmailov et al., UAI 2018), ``theta_swa = (1 / K) sum_{e = E-K}^{E-1} theta_e``, kept by
``torch.optim.swa_utils.AveragedModel``. Averaged weights tend to lie in a flatter region of
the loss than any one of them, which SWAD (Cha et al., NeurIPS 2021) found to carry better to
unseen domains (here: speakers or nodes that training never saw). Batch-norm
statistics of the average are not the average of the statistics, so they are recomputed by
one pass over a further epoch's views in training mode (``swa_utils.update_bn``).

**Ensembles.** With ``training.ensemble = K > 1`` this loop runs ``K`` times, once per member,
each in ``out_dir/members/<k>`` with its own metrics, checkpoints and ``model.pt``, and with
seed ``training.seed + k`` (``scicontrast.models.ensemble``). Once every member is done,
``out_dir/model.pt`` holds all of them, and ``out_dir/metrics.jsonl`` every member's records,
each tagged with its ``"member"``. An interrupted ensemble resumes inside the member it
stopped in.

Outputs in ``out_dir``:

- ``metrics.jsonl``: one JSON object per line, flushed as it is written. Per optimiser step
  ``{"kind": "step", "epoch", "step", "lr", "loss", ...}`` and per epoch
  ``{"kind": "epoch", "epoch", <mean of the step metrics>, "seconds", "samples_per_second",
  "peak_memory_mb"}`` (peak memory so far: CUDA memory allocated by torch when training on
  a GPU, else the process's peak resident set size).
  ``epoch`` counts from 0 (it is the epoch seed of the views), ``step`` is the number of
  optimiser steps taken so far, and a sample is one view. When training holds groups out
  (``training.holdout_fraction > 0``), epochs also write ``{"kind": "heldout",
  "epoch", "projection": {...}, "embedding": {...}}``: the diagnostics' contrastive numbers
  (:func:`scicontrast.models.contrastive_metrics.contrastive_metrics`) on the held-out groups, with
  the same fixed views every epoch, so overfitting shows as a gap to the training curve.
- ``checkpoint.pt``: written atomically (:mod:`~scicontrast.models.run_state`) after every
  ``training.checkpoint_every``-th epoch once ``training.checkpoint_seconds`` (default 60)
  have passed since the last one, and always after the last epoch, at the end of a
  ``stop_after_epochs`` piece and on SIGTERM; an interrupted run redoes the epochs after
  the last checkpoint. The held-out line comes every ``training.heldout_every``-th epoch
  that ends at least ``training.heldout_min_steps`` (default 4) optimiser steps after the
  previous one, and after the last. Both rules: :mod:`scicontrast.models.cadence`.
- ``model.pt``: written once every epoch is done (format: ``scicontrast.models.contrastive``):
  the last weights, or their average with ``training.swa_epochs``.

**Resuming.** With ``resume=True`` a run picks up after the last completed epoch, provided
the checkpoint was written for the same config (same hash); lines of ``metrics.jsonl`` from
an unfinished epoch are dropped. Because the views of an epoch are drawn from
``(seed, epoch, group)``, the batch order from a generator seeded by ``(seed, epoch)``, and
the checkpoint holds everything else that changes during training, an interrupted and resumed
CPU run ends with the same weights, bit for bit, as an uninterrupted one, whatever the number
of loader workers (``training.loader_workers``, :mod:`scicontrast.data_adapters.loader`).
The run's setup is :mod:`scicontrast.models.train_setup`; each batch is a
:class:`~scicontrast.data_adapters.batch.ContrastiveBatch`, its loss
:func:`~scicontrast.models.batch_loss.batch_loss`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch.optim.swa_utils import update_bn
from tqdm.auto import tqdm

from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.device import resolve_device, seconds_since
from scicontrast.errors import ConfigError, Preempted, ScicontrastError
from scicontrast.experiment import Experiment, Training
from scicontrast.io import atomic_path
from scicontrast.models.batch_loss import batch_loss
from scicontrast.models.cadence import checkpoint_due, every
from scicontrast.models.contrastive import (
    ContrastiveModel,
    ensemble_model,
    load_model,
    save_model,
)
from scicontrast.models.contrastive_metrics import contrastive_metrics
from scicontrast.models.distributed import any_process, start_process_group, stop_process_group
from scicontrast.models.ensemble import member_experiment
from scicontrast.models.grad_cache import grad_cache_step
from scicontrast.models.losses import InfoNCEOutput
from scicontrast.models.run_state import (
    Position,
    save_checkpoint,
    write_line,
)
from scicontrast.models.train_setup import (
    Loop,
    build_model_and_optimizer,
    check_settings,
    load_data,
    open_run,
    resume_position,
    sigterm_flag,
    torch_settings,
    warn_if_threads_changed,
)

logger = logging.getLogger("scicontrast.train")


def learning_rate(
    base_lr: float, step: int, total_steps: int, warmup_steps: int, schedule: str
) -> float:
    r"""The learning rate of optimiser step ``step`` (counted from 0) of ``total_steps``.

    Linear warm-up over the first ``W = warmup_steps`` steps, ``lr_s = base_lr (s + 1) / W``,
    then ``constant`` keeps ``base_lr`` and ``cosine`` follows half a cosine to 0 (SGDR
    without restarts, Loshchilov & Hutter, ICLR 2017):

    .. math:: lr_s = \tfrac{1}{2}\, base\_lr \left(1 + \cos\frac{\pi (s - W)}{T - W}\right),
              \qquad W \le s < T.

    A function of the step alone, so a resumed run needs no scheduler state.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"training.lr_schedule: {schedule!r} is not one of constant, cosine")


def train(
    experiment: Experiment,
    items_dir: str | Path,
    pairs_path: str | Path,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    num_threads: int = 0,
    start_weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Train the experiment's model on an items set and its pairs table.

    Args:
        experiment: The typed experiment (``Experiment.from_dict`` of a validated one).
        items_dir: The items folder (``Items.save``).
        pairs_path: The pairs table (Parquet) built over those items.
        out_dir: Where ``metrics.jsonl``, ``checkpoint.pt`` and ``model.pt`` go.
        resume: Continue from ``out_dir/checkpoint.pt`` when it was written for this config.
        progress: Show a tqdm progress bar per epoch.
        stop_after_epochs: Stop once this many epochs (counted from the start of training,
            not of this call) are done, leaving the checkpoint but no ``model.pt``: simulates
            preemption, or trains in pieces. ``None`` trains to ``training.epochs``.
        num_threads: CPU threads for torch during training (e.g. Snakemake's ``threads``);
            0 keeps torch's default.
        start_weights: A full state dict loaded into the model after resuming: a federated
            round (``scicontrast.models.federated``) starts a site from the global weights
            while its optimiser state, step count and RNG come from its checkpoint.

    Returns:
        The path of ``model.pt`` (which exists only once all epochs are done).

    Raises:
        Preempted: on SIGTERM (a cluster preempting the job), after finishing the current
            step and saving a checkpoint from which a rerun resumes mid-epoch.
    """
    check_settings(experiment)
    out_dir = Path(out_dir)
    if experiment.training.ensemble > 1:
        options: dict[str, Any] = {"resume": resume, "progress": progress}
        options.update(num_threads=num_threads, stop_after_epochs=stop_after_epochs)
        return _train_ensemble(experiment, items_dir, pairs_path, out_dir, **options)
    # Under torchrun every process runs this function; it learns its rank here. Only the
    # main process (rank 0) writes files.
    group = start_process_group(resolve_device(experiment.training.device))
    loop = Loop(experiment, group, out_dir / "checkpoint.pt", progress)
    load_data(loop, items_dir, pairs_path, num_threads)
    build_model_and_optimizer(loop)
    position = resume_position(loop, resume, start_weights)
    open_run(loop, position, out_dir)
    try:
        with _epochs_context(loop, out_dir / "metrics.jsonl", num_threads):
            position, final_loss = _train_epochs(loop, position, stop_after_epochs)
    finally:
        # The DDP wrapper goes first: see stop_process_group.
        loop.network = None
        stop_process_group(group)
    return _finish(loop, position, final_loss, out_dir / "model.pt")


@contextlib.contextmanager
def _epochs_context(loop: Loop, metrics_path: Path, num_threads: int) -> Iterator[None]:
    """What the epochs run inside: torch's thread and device settings, the SIGTERM flag, and
    the metrics file open for appending (main process only)."""
    metrics = open(metrics_path, "a") if loop.group.is_main else contextlib.nullcontext()
    with (
        torch_settings(loop.group.device, num_threads),
        sigterm_flag() as loop.sigterm,
        metrics as loop.metrics_file,
    ):
        warn_if_threads_changed(loop)
        yield


def _train_epochs(
    loop: Loop, position: Position, stop_after_epochs: int | None
) -> tuple[Position, float]:
    """The epochs from ``position`` on (to ``stop_after_epochs``), then the weight average's
    batch-norm statistics; the new position and the last epoch's mean loss."""
    final_loss, epochs = math.nan, loop.epochs
    stop = epochs if stop_after_epochs is None else min(epochs, stop_after_epochs)
    loop.checkpointed_at = time.monotonic()
    for epoch in range(position.epochs_done, stop):
        position, final_loss = _train_epoch(loop, epoch, position, last_of_call=epoch + 1 == stop)
    if loop.averaged is not None and position.epochs_done == epochs:
        # Views of one further epoch, drawn as training draws them.
        loop.batches.set_epoch(epochs)
        update_bn((b.inputs for b in loop.batches), loop.averaged.module, loop.group.device)
        logger.info(
            "model.pt holds the average of the last %d epochs' weights", loop.settings.swa_epochs
        )
    return position, final_loss


def _train_epoch(
    loop: Loop, epoch: int, position: Position, last_of_call: bool
) -> tuple[Position, float]:
    """One epoch (or its rest, after a preemption): steps, the epoch line, the held-out
    numbers, the weight average, the checkpoint. Returns the new position and mean loss."""
    group, batches, epochs = loop.group, loop.batches, loop.epochs
    loop.model.train()
    start_batch = position.batches_done if epoch == position.epochs_done else 0
    batches.set_epoch(epoch, start_batch=start_batch)
    sums = defaultdict(float, position.sums if start_batch else {})
    n_views = position.n_views if start_batch else 0
    step = position.step
    started = time.perf_counter()
    bar = tqdm(
        batches,
        desc=f"epoch {epoch + 1}/{epochs}",
        total=len(batches),
        initial=start_batch,
        disable=not (loop.progress and group.is_main),
        # Each epoch's bar stays as its console line: epoch, loss, seconds.
        leave=True,
    )
    for batch_index, batch in enumerate(bar, start=start_batch):
        record = _train_step(loop, batch, step)
        step += 1
        last = batch_index + 1 == len(batches)
        preempted = any_process(loop.sigterm.is_set(), group)
        _check_finite(loop.model, record["loss"], epoch, step, weights=last or preempted)
        if group.is_main:
            write_line(loop.metrics_file, {"kind": "step", "epoch": epoch, "step": step, **record})
        for key, value in record.items():
            if key != "lr":
                sums[key] += value
        n_views += batch.n_views
        # The epoch's mean loss so far: the bar's last value is the epoch line's.
        bar.set_postfix(loss=f"{sums['loss'] / (batch_index + 1):.4f}")
        # Preempted (SLURM sends SIGTERM before killing a job): keep this step's work, so a
        # rerun resumes right after it.
        if preempted and not last:
            position = Position(epoch, batch_index + 1, step, dict(sums), n_views)
            _save_checkpoint(loop, position)
            raise Preempted(
                f"stopped by SIGTERM at epoch {epoch + 1}, batch {batch_index + 1}; "
                f"checkpoint saved to {loop.checkpoint_path}: run again to resume"
            )
    seconds = seconds_since(started, group.device)
    means = {key: total / len(batches) for key, total in sums.items()}
    _end_epoch(loop, epoch, means, seconds, n_views)
    position = Position(epoch + 1, 0, step)
    preempted = any_process(loop.sigterm.is_set(), group)
    if preempted or checkpoint_due(loop.settings, epoch, last_of_call, loop.checkpointed_at):
        _save_checkpoint(loop, position)
    logger.info("epoch %d/%d: loss %.4f (%.1f s)", epoch + 1, epochs, means["loss"], seconds)
    if preempted:
        raise Preempted(
            f"stopped by SIGTERM after epoch {epoch + 1}; checkpoint saved to "
            f"{loop.checkpoint_path}: run again to resume"
        )
    return position, means["loss"]


def _save_checkpoint(loop: Loop, position: Position) -> None:
    """The checkpoint at ``position`` (main process only), and when it was written."""
    if loop.group.is_main:
        save_checkpoint(loop, position, loop.group.device)
    loop.checkpointed_at = time.monotonic()


def _train_step(loop: Loop, batch: ContrastiveBatch, step: int) -> dict[str, float]:
    """Optimiser step number ``step`` (from 0) at its scheduled learning rate; its record
    ``{"lr", "loss", ...}`` (the loss's metrics)."""
    settings, device = loop.settings, loop.group.device
    batch = batch.to(device, non_blocking=True)
    steps_per_epoch = len(loop.batches)
    lr = learning_rate(
        settings.lr,
        step,
        loop.epochs * steps_per_epoch,
        round(settings.warmup_epochs * steps_per_epoch),
        settings.lr_schedule,
    )
    for param_group in loop.optimizer.param_groups:
        param_group["lr"] = lr
    loop.optimizer.zero_grad(set_to_none=True)
    output = _forward_backward(
        loop.network, loop.model, batch, settings, device, loop.group.distributed
    )
    loop.optimizer.step()
    loop.model.update_momentum_encoder()
    return {"lr": lr, **output.metrics}  # metrics include "loss"


def _end_epoch(
    loop: Loop, epoch: int, means: dict[str, float], seconds: float, n_views: int
) -> None:
    """The epoch line, the held-out numbers and the weight average's update.

    The epoch line goes out before the checkpoint: a crash in between makes the resumed run
    drop the line and redo the epoch, never skip the line.
    """
    group = loop.group
    if group.is_main:
        write_line(
            loop.metrics_file,
            {
                "kind": "epoch",
                "epoch": epoch,
                **means,
                "seconds": seconds,
                "samples_per_second": n_views * group.world_size / seconds,
                "peak_memory_mb": _peak_memory_mb(group.device),
            },
        )
    if loop.held_out_batches is not None and every(loop.heldout_every, epoch, loop.epochs):
        # Eval mode and seeded views of a fixed epoch: the pass draws nothing from torch's
        # global generator and changes no weights, so a resumed run stays bitwise equal.
        numbers = contrastive_metrics(loop.model, loop.held_out_batches, group.device)
        write_line(loop.metrics_file, {"kind": "heldout", "epoch": epoch, **numbers})
    if loop.averaged is not None and epoch >= loop.epochs - loop.settings.swa_epochs:
        loop.averaged.update_parameters(loop.model)


def _finish(loop: Loop, position: Position, final_loss: float, model_path: Path) -> Path:
    """Save ``model.pt`` once every epoch is done (the weight average, if kept)."""
    epochs = loop.epochs
    if position.epochs_done < epochs:
        logger.info(
            "stopped after %d of %d epochs as asked; run again to continue from %s",
            position.epochs_done,
            epochs,
            loop.checkpoint_path,
        )
        return model_path
    if loop.group.is_main:
        model = loop.model if loop.averaged is None else loop.averaged.module
        save_model(model_path, cast(ContrastiveModel, model), loop.experiment)
    if math.isnan(final_loss):
        logger.info("all %d epochs were done already; model written to %s", epochs, model_path)
    else:
        logger.info(
            "finished %d epochs (final loss %.4f); model written to %s",
            epochs,
            final_loss,
            model_path,
        )
    return model_path


def _train_ensemble(
    experiment: Experiment,
    items_dir: str | Path,
    pairs_path: str | Path,
    out_dir: Path,
    **options: Any,
) -> Path:
    """Train the members one after another, then join them (module doc, "Ensembles")."""
    members = experiment.training.ensemble
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"experiments.{experiment.name}.training.ensemble needs one process; training "
            "an ensemble with several processes (training.gpus > 1) is not implemented"
        )
    model_path = out_dir / "model.pt"
    # Written again once every member is done; until then it would not match them.
    model_path.unlink(missing_ok=True)
    member_paths = []
    for k in range(members):
        member = member_experiment(experiment, k)
        seed = member.training.seed
        logger.info("ensemble member %d of %d (seed %d)", k + 1, members, seed)
        path = train(member, items_dir, pairs_path, out_dir / "members" / str(k), **options)
        if not path.exists():  # stopped as asked (stop_after_epochs)
            return model_path
        member_paths.append(path)
    with atomic_path(out_dir / "metrics.jsonl") as tmp, open(tmp, "w") as metrics:
        for k, path in enumerate(member_paths):
            for line in (path.parent / "metrics.jsonl").read_text().splitlines():
                write_line(metrics, {"member": k, **json.loads(line)})
    trained = [load_model(path)[0] for path in member_paths]
    save_model(model_path, ensemble_model(trained), experiment)
    logger.info("model.pt holds the %d members side by side", members)
    return model_path


def _check_finite(
    model: ContrastiveModel, loss: float, epoch: int, step: int, weights: bool = True
) -> None:
    """Stop training once the loss or (with ``weights``) any weight or buffer is NaN or
    infinite.

    A too-large learning rate can leave the loss finite (batch norm normalises with the
    batch's own statistics in training mode) while the running statistics or weights are
    already infinite; such a model would embed everything as NaN, so it must not be saved.
    The loop checks the loss every step and the weights and buffers before anything is
    saved or evaluated (end of an epoch, preemption): a non-finite weight makes the next
    step's loss non-finite anyway, and the per-step check of every tensor cost up to a
    tenth of a small model's step (docs/experiments/scale2.md).
    """
    what = None if math.isfinite(loss) else f"loss is {loss}"
    if what is None and weights:
        tensors = [
            (name, tensor)
            for name, tensor in (*model.named_parameters(), *model.named_buffers())
            if tensor.is_floating_point()
        ]
        if not bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
            name = next(name for name, t in tensors if not bool(torch.isfinite(t).all()))
            what = f"{name} holds NaN or infinite values"
    if what is not None:
        raise ScicontrastError(
            f"training diverged: {what} at epoch {epoch}, step {step}; "
            "lower training.lr or raise loss.temperature"
        )


def _forward_backward(
    network: torch.nn.Module,
    model: ContrastiveModel,
    batch: ContrastiveBatch,
    settings: Training,
    device: torch.device,
    distributed: bool,
) -> InfoNCEOutput:
    """One batch's loss (:func:`~scicontrast.models.batch_loss.batch_loss`), backpropagated.

    ``network`` is ``model`` or its DDP wrapper. ``training.grad_cache_views`` runs the
    encoder in chunks of views.
    """

    def embed(x: Any) -> torch.Tensor:
        # bf16 autocast for the network on GPU; the loss (a softmax over similarities divided
        # by a small temperature) stays in float32.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return network(x).float()

    if settings.grad_cache_views:
        plain = batch.loss_rows is None and batch.positive_pairs is None and batch.towers is None
        if not (plain and isinstance(batch.inputs, torch.Tensor)) or model.key_queue is not None:
            raise ConfigError(
                "training.grad_cache_views needs the in-batch loss on batches that are one "
                f"tensor of views (DNA, images); got {type(batch.inputs).__name__} batches"
                + (" and loss.queue_size" if model.key_queue is not None else "")
            )
        if distributed:
            raise ConfigError("training.grad_cache_views needs one process (training.gpus <= 1)")
        return grad_cache_step(
            embed, batch.inputs, batch.group_ids, model.loss, settings.grad_cache_views
        )
    z = embed(batch.inputs)
    keys = None if model.key_queue is None else model.keys(batch.inputs).float()
    output = batch_loss(model.loss, z, batch, keys, model.key_queue, distributed)
    output.loss.backward()
    return output


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far in MiB: torch's CUDA allocations on a GPU, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        2**20 if sys.platform == "darwin" else 2**10
    )
