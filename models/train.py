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
  (``training.holdout_fraction > 0``), each epoch also writes ``{"kind": "heldout",
  "epoch", "projection": {...}, "embedding": {...}}``: the diagnostics' contrastive numbers
  (:func:`scicontrast.models.contrastive_metrics.contrastive_metrics`) on the held-out groups, with
  the same fixed views every epoch, so overfitting shows as a gap to the training curve.
- ``checkpoint.pt``: written atomically after every epoch (weights, optimiser state, epochs
  done, steps taken, torch RNG state, the weight average so far and a hash of the
  experiment config).
- ``model.pt``: written once every epoch is done (format: ``scicontrast.models.contrastive``):
  the last weights, or their average with ``training.swa_epochs``.

**Resuming.** With ``resume=True`` a run picks up after the last completed epoch, provided
the checkpoint was written for the same config (same hash); lines of ``metrics.jsonl`` from
an unfinished epoch are dropped. Because the views of an epoch are drawn from
``(seed, epoch, group)``, the batch order from a generator seeded by ``(seed, epoch)``, and
the checkpoint holds everything else that changes during training, an interrupted and resumed
CPU run ends with the same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import resource
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.nn.parameter import UninitializedParameter
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm.auto import tqdm

from scicontrast.data_adapters.base import Items, check_pairs_table, held_out_groups
from scicontrast.device import resolve_device
from scicontrast.errors import ConfigError, InputDataError, Preempted, ScicontrastError
from scicontrast.io import atomic_path
from scicontrast.models.contrastive import (
    ContrastiveModel,
    build_model,
    ensemble_model,
    load_model,
    save_model,
)
from scicontrast.models.contrastive_metrics import VIEW_EPOCH, contrastive_metrics
from scicontrast.models.distributed import (
    any_process,
    gathered_info_nce,
    start_process_group,
    stop_process_group,
    sync_batchnorm,
)
from scicontrast.models.ensemble import member_experiment
from scicontrast.models.grad_cache import grad_cache_step
from scicontrast.models.losses import InfoNCEOutput
from scicontrast.models.moco import moco_info_nce
from scicontrast.registry import PAIR_BUILDERS

logger = logging.getLogger("scicontrast.train")

CHECKPOINT_VERSION = 1


def _check_lr(lr: float, name: str) -> None:
    """Refuse a learning rate whose first AdamW step cannot be written in float32.

    AdamW's first step moves each weight by ``lr / (1 - beta1)`` times a unit-size ratio;
    beyond float32's largest value that scalar overflows inside torch, a raw RuntimeError.
    """
    beta1 = 0.9  # torch.optim.AdamW's default, which training uses
    if lr / (1 - beta1) > torch.finfo(torch.float32).max:
        raise ConfigError(
            f"experiments.{name}.training.lr: {lr:g} makes AdamW's first step "
            f"lr / (1 - {beta1}) overflow float32; lower training.lr"
        )


def experiment_hash(experiment: dict[str, Any]) -> str:
    """SHA-256 of the settings that shape training (all but ``analysis`` and ``description``)."""
    relevant = {k: v for k, v in experiment.items() if k not in ("analysis", "description")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


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
    experiment: dict[str, Any],
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
        experiment: A validated experiment (defaults filled), as from ``load_experiment``.
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
    settings = experiment["training"]
    epochs = settings["epochs"]
    swa_epochs = settings.get("swa_epochs", 0)
    if swa_epochs > epochs:
        raise ConfigError(
            f"experiments.{experiment['name']}.training.swa_epochs: {swa_epochs} epochs to "
            f"average, but training.epochs is {epochs}"
        )
    _check_lr(settings["lr"], experiment["name"])
    out_dir = Path(out_dir)
    if settings["ensemble"] > 1:
        return _train_ensemble(
            experiment,
            items_dir,
            pairs_path,
            out_dir,
            resume=resume,
            progress=progress,
            stop_after_epochs=stop_after_epochs,
            num_threads=num_threads,
        )
    checkpoint_path = out_dir / "checkpoint.pt"
    metrics_path = out_dir / "metrics.jsonl"
    model_path = out_dir / "model.pt"
    # Under torchrun every process runs this function; it learns its rank here. Only the
    # main process (rank 0) writes files.
    group = start_process_group(resolve_device(settings["device"]))
    loop = _Loop(experiment, group, checkpoint_path, progress)
    _load_data(loop, items_dir, pairs_path)
    _build_model_and_optimizer(loop)
    position = _resume(loop, resume)
    if start_weights is not None:
        loop.model.load_state_dict(start_weights)
    if group.is_main:
        # Created only now, so that bad input or settings found above leave nothing behind.
        out_dir.mkdir(parents=True, exist_ok=True)
        _keep_lines_up_to(metrics_path, position)
        if position.epochs_done < epochs:
            # A model.pt from an earlier run would not match the weights trained from here on.
            model_path.unlink(missing_ok=True)
    # Several processes: each holds a replica; DDP averages their gradients.
    loop.network = loop.model
    if group.distributed:
        loop.network = DistributedDataParallel(
            loop.model, device_ids=[group.device.index] if group.device.type == "cuda" else None
        )
    _log_start(loop)

    final_loss = math.nan
    try:
        metrics = open(metrics_path, "a") if group.is_main else contextlib.nullcontext()
        with (
            _torch_settings(group.device, num_threads),
            _sigterm_flag() as loop.sigterm,
            metrics as loop.metrics_file,
        ):
            for epoch in range(position.epochs_done, epochs):
                if stop_after_epochs is not None and epoch >= stop_after_epochs:
                    break
                position, final_loss = _train_epoch(loop, epoch, position)
            if loop.averaged is not None and position.epochs_done == epochs:
                # Views of one further epoch, drawn as training draws them.
                loop.batches.set_epoch(epochs)
                update_bn(loop.batches, loop.averaged.module, group.device)
                logger.info("model.pt holds the average of the last %d epochs' weights", swa_epochs)
    finally:
        # The DDP wrapper goes first: see stop_process_group.
        loop.network = None
        stop_process_group(group)
    return _finish(loop, position, final_loss, model_path)


@dataclass
class _Loop:
    """What the phases of :func:`train` share: settings, data, model and the open run."""

    experiment: dict[str, Any]
    group: Any
    checkpoint_path: Path
    progress: bool
    items: Items | None = None
    pairs: pd.DataFrame | None = None
    builder: Any = None
    batches: Any = None
    held_out_batches: Any = None
    model: ContrastiveModel | None = None
    network: torch.nn.Module | None = None
    averaged: AveragedModel | None = None
    optimizer: torch.optim.Optimizer | None = None
    config_hash: str = ""
    sigterm: threading.Event | None = None
    metrics_file: Any = None

    @property
    def settings(self) -> dict[str, Any]:
        return self.experiment["training"]

    @property
    def epochs(self) -> int:
        return self.settings["epochs"]


def _load_data(loop: _Loop, items_dir: str | Path, pairs_path: str | Path) -> None:
    """Items, pairs (less the held-out groups) and the epoch's batches.

    By default a batch is ``batch_size`` groups (per process) with all their views, drawn
    afresh each epoch (the pair builder decides; see ``PairBuilder.training_batches``).
    """
    settings, group = loop.settings, loop.group
    seed, batch_size = settings["seed"], settings["batch_size"]
    items = Items.load(items_dir)
    pairs = _read_pairs(pairs_path)
    check_pairs_table(pairs, items, str(pairs_path))
    # Groups set aside for the diagnostics (scicontrast.analysis.diagnostics) never train.
    held_out = held_out_groups(pairs, settings.get("holdout_fraction", 0.0), seed)
    held_out_pairs = pairs[pairs["group_id"].isin(held_out)]
    pairs = pairs[~pairs["group_id"].isin(held_out)]
    where = f"experiments.{loop.experiment['name']}.pairs"
    builder = PAIR_BUILDERS.create(loop.experiment["pairs"], where=where)
    batches = builder.training_batches(
        items, pairs, seed, batch_size, rank=group.rank, world_size=group.world_size
    )
    if batches.n_groups < 2:
        raise InputDataError(
            f"{pairs_path}: {batches.n_groups} group(s); contrastive training needs at least 2"
        )
    # Its own builder, so that the held-out pass leaves the training batches' state alone.
    if group.is_main and len(held_out) >= 2:
        loop.held_out_batches = PAIR_BUILDERS.create(
            loop.experiment["pairs"], where=where
        ).training_batches(items, held_out_pairs, seed, batch_size)
    loop.items, loop.pairs, loop.builder, loop.batches = items, pairs, builder, batches


def _build_model_and_optimizer(loop: _Loop) -> None:
    """The seeded model on its device, its weight average, and AdamW.

    As in nanoGPT, only matrices and kernels are weight-decayed, not biases, normalisation
    scales or the temperature.
    """
    settings, group = loop.settings, loop.group
    torch.manual_seed(settings["seed"])
    model = build_model(loop.experiment)
    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        # Lazy layers (PyG's in_channels=-1) learn their input size from one forward pass,
        # in eval mode so that it leaves no batch-norm statistics behind.
        model.eval()
        with torch.no_grad():
            batch = next(iter(loop.builder.embedding_batches(loop.items, settings["batch_size"])))
            model.embed(batch)
    model = model.to(group.device)
    swa_epochs = settings.get("swa_epochs", 0)
    if group.distributed:
        if swa_epochs:
            raise ConfigError(
                f"experiments.{loop.experiment['name']}.training.swa_epochs needs one process; "
                "weight averaging with several processes (training.gpus > 1) is not implemented"
            )
        model = sync_batchnorm(model, group.device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    loop.model = model
    loop.averaged = AveragedModel(model) if swa_epochs else None
    loop.optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in parameters if p.dim() >= 2]},
            {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=settings["lr"],
        weight_decay=settings["weight_decay"],
    )


def _resume(loop: _Loop, resume: bool) -> _Position:
    """Where the last checkpoint left off, when it belongs to this config: after a completed
    epoch, or mid-epoch after a preemption; else the start."""
    loop.config_hash = experiment_hash(loop.experiment)
    path = loop.checkpoint_path
    if not (resume and path.exists()):
        return _Position()
    checkpoint = _load_checkpoint(path)
    if checkpoint["config_hash"] != loop.config_hash:
        logger.warning("%s was written for a different experiment config; starting fresh", path)
        return _Position()
    loop.model.load_state_dict(checkpoint["model"])
    loop.optimizer.load_state_dict(checkpoint["optimizer"])
    if loop.averaged is not None:
        loop.averaged.load_state_dict(checkpoint["averaged_model"])
    torch.set_rng_state(checkpoint["torch_rng_state"])
    if loop.group.device.type == "cuda" and "cuda_rng_state" in checkpoint:
        torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
    position = _Position.from_checkpoint(checkpoint)
    logger.info(
        "resuming from %s: %d of %d epochs done%s",
        path,
        position.epochs_done,
        loop.epochs,
        f" and {position.batches_done} batches of the next" if position.batches_done else "",
    )
    return position


def _log_start(loop: _Loop) -> None:
    group, batches = loop.group, loop.batches
    logger.info(
        "training on %s%s: %d groups, %d views, %d steps per epoch (%d groups per batch%s), "
        "%d parameters",
        group.device,
        f" (process {group.rank} of {group.world_size})" if group.distributed else "",
        batches.n_groups,
        len(loop.pairs),
        len(batches),
        loop.settings["batch_size"],
        " and process" if group.distributed else "",
        sum(p.numel() for p in loop.model.parameters() if p.requires_grad),
    )


def _train_epoch(loop: _Loop, epoch: int, position: _Position) -> tuple[_Position, float]:
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
    for batch_index, (inputs, group_ids) in enumerate(bar, start=start_batch):
        record = _train_step(loop, inputs, group_ids, step)
        step += 1
        _check_finite(loop.model, record["loss"], epoch, step)
        if group.is_main:
            _write_line(
                loop.metrics_file,
                {"kind": "step", "epoch": epoch, "step": step, **record},
            )
        for key, value in record.items():
            if key != "lr":
                sums[key] += value
        n_views += len(group_ids)
        # The epoch's mean loss so far: the bar's last value is the epoch line's.
        bar.set_postfix(loss=f"{sums['loss'] / (batch_index + 1):.4f}")
        # Preempted (SLURM sends SIGTERM before killing a job): keep this step's work, so a
        # rerun resumes right after it.
        if any_process(loop.sigterm.is_set(), group) and batch_index + 1 < len(batches):
            position = _Position(epoch, batch_index + 1, step, dict(sums), n_views)
            if group.is_main:
                _save_checkpoint(loop, position, group.device)
            raise Preempted(
                f"stopped by SIGTERM at epoch {epoch + 1}, batch {batch_index + 1}; "
                f"checkpoint saved to {loop.checkpoint_path}: run again to resume"
            )
    seconds = time.perf_counter() - started
    means = {key: total / len(batches) for key, total in sums.items()}
    _end_epoch(loop, epoch, means, seconds, n_views)
    position = _Position(epoch + 1, 0, step)
    if group.is_main:
        _save_checkpoint(loop, position, group.device)
    logger.info("epoch %d/%d: loss %.4f (%.1f s)", epoch + 1, epochs, means["loss"], seconds)
    if any_process(loop.sigterm.is_set(), group):
        raise Preempted(
            f"stopped by SIGTERM after epoch {epoch + 1}; checkpoint saved to "
            f"{loop.checkpoint_path}: run again to resume"
        )
    return position, means["loss"]


def _train_step(loop: _Loop, inputs: Any, group_ids: torch.Tensor, step: int) -> dict[str, float]:
    """Optimiser step number ``step`` (from 0) at its scheduled learning rate; its record
    ``{"lr", "loss", ...}`` (the loss's metrics)."""
    settings, device = loop.settings, loop.group.device
    inputs = inputs.to(device, non_blocking=True)
    group_ids = group_ids.to(device, non_blocking=True)
    steps_per_epoch = len(loop.batches)
    lr = learning_rate(
        settings["lr"],
        step,
        loop.epochs * steps_per_epoch,
        round(settings.get("warmup_epochs", 0) * steps_per_epoch),
        settings.get("lr_schedule", "constant"),
    )
    for param_group in loop.optimizer.param_groups:
        param_group["lr"] = lr
    loop.optimizer.zero_grad(set_to_none=True)
    output = _forward_backward(
        loop.network, loop.model, inputs, group_ids, settings, device, loop.group.distributed
    )
    loop.optimizer.step()
    loop.model.update_momentum_encoder()
    return {"lr": lr, **output.metrics}  # metrics include "loss"


def _end_epoch(
    loop: _Loop, epoch: int, means: dict[str, float], seconds: float, n_views: int
) -> None:
    """The epoch line, the held-out numbers and the weight average's update.

    The epoch line goes out before the checkpoint: a crash in between makes the resumed run
    drop the line and redo the epoch, never skip the line.
    """
    group = loop.group
    if group.is_main:
        _write_line(
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
    if loop.held_out_batches is not None:
        _write_line(
            loop.metrics_file,
            {
                "kind": "heldout",
                "epoch": epoch,
                **_held_out_metrics(loop.model, loop.held_out_batches, group.device),
            },
        )
    if loop.averaged is not None and epoch >= loop.epochs - loop.settings.get("swa_epochs", 0):
        loop.averaged.update_parameters(loop.model)


def _finish(loop: _Loop, position: _Position, final_loss: float, model_path: Path) -> Path:
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
        save_model(model_path, model, loop.experiment)
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
    experiment: dict[str, Any],
    items_dir: str | Path,
    pairs_path: str | Path,
    out_dir: Path,
    **options: Any,
) -> Path:
    """Train the members one after another, then join them (module doc, "Ensembles")."""
    members = experiment["training"]["ensemble"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"experiments.{experiment['name']}.training.ensemble needs one process; training "
            "an ensemble with several processes (training.gpus > 1) is not implemented"
        )
    model_path = out_dir / "model.pt"
    # Written again once every member is done; until then it would not match them.
    model_path.unlink(missing_ok=True)
    member_paths = []
    for k in range(members):
        member = member_experiment(experiment, k)
        seed = member["training"]["seed"]
        logger.info("ensemble member %d of %d (seed %d)", k + 1, members, seed)
        path = train(member, items_dir, pairs_path, out_dir / "members" / str(k), **options)
        if not path.exists():  # stopped as asked (stop_after_epochs)
            return model_path
        member_paths.append(path)
    with atomic_path(out_dir / "metrics.jsonl") as tmp, open(tmp, "w") as metrics:
        for k, path in enumerate(member_paths):
            for line in (path.parent / "metrics.jsonl").read_text().splitlines():
                _write_line(metrics, {"member": k, **json.loads(line)})
    trained = [load_model(path)[0] for path in member_paths]
    save_model(model_path, ensemble_model(trained), experiment)
    logger.info("model.pt holds the %d members side by side", members)
    return model_path


def _check_finite(model: ContrastiveModel, loss: float, epoch: int, step: int) -> None:
    """Stop training once the loss or any weight or buffer is NaN or infinite.

    A too-large learning rate can leave the loss finite (batch norm normalises with the
    batch's own statistics in training mode) while the running statistics or weights are
    already infinite; such a model would embed everything as NaN, so it must not be saved.
    One device sync per step: the per-tensor flags are reduced on the device first.
    """
    what = None if math.isfinite(loss) else f"loss is {loss}"
    if what is None:
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


def _held_out_metrics(
    model: ContrastiveModel, batches: Any, device: torch.device
) -> dict[str, dict[str, float]]:
    """The diagnostics' contrastive numbers on the held-out groups, with fixed views.

    Eval mode and seeded views: the pass draws nothing from torch's global generator and
    changes no weights or batch-norm statistics, so a resumed run stays bitwise equal.
    """
    batches.set_epoch(VIEW_EPOCH)
    return contrastive_metrics(model, batches, device)


def _forward_backward(
    network: torch.nn.Module,
    model: ContrastiveModel,
    inputs: Any,
    group_ids: torch.Tensor,
    settings: dict[str, Any],
    device: torch.device,
    distributed: bool,
) -> InfoNCEOutput:
    """One batch's loss in the form the batch and the config ask for, backpropagated.

    ``network`` is ``model`` or its DDP wrapper. Forms: across processes, every view against
    the views of all processes (``gathered_info_nce``); two towers (batches with ``towers``),
    the symmetric CLIP loss; a MoCo key queue, queries against momentum keys and the queue;
    otherwise in-batch InfoNCE, with extra positives when the batch has ``positive_pairs``
    (graph neighbours). ``training.grad_cache_views`` runs the encoder in chunks of views.
    """

    def embed(x: Any) -> torch.Tensor:
        # bf16 autocast for the network on GPU; the loss (a softmax over similarities divided
        # by a small temperature) stays in float32.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return network(x).float()

    towers = getattr(inputs, "towers", None)
    if distributed and (
        towers is not None or model.key_queue is not None or settings["grad_cache_views"]
    ):
        raise ConfigError(
            "with several processes (training.gpus > 1) only the in-batch loss is implemented; "
            "two-tower batches, loss.queue_size and training.grad_cache_views need one process"
        )
    if towers is not None and model.key_queue is not None:
        raise ConfigError("loss.queue_size (MoCo) does not apply to two-tower batches")
    if settings["grad_cache_views"]:
        if not isinstance(inputs, torch.Tensor) or model.key_queue is not None:
            raise ConfigError(
                "training.grad_cache_views needs the in-batch loss on batches that are one "
                f"tensor of views (DNA, images); got {type(inputs).__name__} batches"
                + (" and loss.queue_size" if model.key_queue is not None else "")
            )
        return grad_cache_step(embed, inputs, group_ids, model.loss, settings["grad_cache_views"])
    z = embed(inputs)
    loss_rows = getattr(inputs, "loss_rows", None)
    if loss_rows is not None:
        # Rows that are computed but held out of the loss (graph nodes; see graph_views).
        z = z[loss_rows]
    if distributed:
        output = gathered_info_nce(model.loss, z, group_ids)
    elif towers is not None:
        output = model.loss.symmetric(z[towers[0]], z[towers[1]], group_ids[towers[0]])
    elif model.key_queue is not None:
        keys = model.keys(inputs).float()
        output = moco_info_nce(
            model.loss, z, keys, group_ids, model.key_queue, exclude_diagonal=True
        )
    else:
        positive_pairs = getattr(inputs, "positive_pairs", None)
        extra = {} if positive_pairs is None else {"positive_pairs": positive_pairs}
        output = model.loss(z, group_ids, **extra)
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


@dataclass
class _Position:
    """How far training got: whole epochs, batches of the next one, optimiser steps.

    Mid-epoch (after a preemption) it also carries the epoch's running metric sums, so the
    resumed epoch's summary line equals an uninterrupted one.
    """

    epochs_done: int = 0
    batches_done: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    n_views: int = 0

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> _Position:
        return cls(
            checkpoint["epochs_done"],
            checkpoint.get("batches_done", 0),
            checkpoint["global_step"],
            dict(checkpoint.get("epoch_sums", {})),
            checkpoint.get("epoch_views", 0),
        )


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[threading.Event]:
    """An event set by SIGTERM while training runs; the previous handler is restored after.

    Only the main thread may install signal handlers; elsewhere (e.g. a test runner's
    worker thread) the flag simply never gets set.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_pairs(pairs_path: str | Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(pairs_path)
    except FileNotFoundError:
        raise InputDataError(f"{pairs_path}: pairs table not found") from None
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputDataError(f"{pairs_path}: not a readable Parquet pairs table ({exc})") from None


@contextlib.contextmanager
def _torch_settings(device: torch.device, num_threads: int) -> Iterator[None]:
    """Deterministic kernels on CPU and the asked thread count, restored afterwards."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def _write_line(file, record: dict[str, Any]) -> None:
    file.write(json.dumps(record) + "\n")
    file.flush()


def _keep_lines_up_to(metrics_path: Path, position: _Position) -> None:
    """Rewrite ``metrics.jsonl`` with only the records up to the checkpointed ``position``.

    Keeps step lines up to the checkpoint's step, and epoch and held-out lines of completed
    epochs; drops what an interrupted stretch wrote after it (including a half-written last
    line), so a resumed run appends without duplicates. Without a checkpoint the file starts
    empty.
    """
    kept = []
    if metrics_path.exists() and position.step > 0:
        for line in metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            if record.get("kind") == "step" and record.get("step", math.inf) <= position.step:
                kept.append(line + "\n")
            elif record.get("kind") in ("epoch", "heldout") and record.get("epoch", math.inf) < (
                position.epochs_done
            ):
                kept.append(line + "\n")
    with atomic_path(metrics_path) as tmp:
        tmp.write_text("".join(kept))


def _save_checkpoint(loop: _Loop, position: _Position, device: torch.device) -> None:
    """Write the loop's model, optimizer, weight average and RNG states at ``position``."""
    path, model, optimizer = loop.checkpoint_path, loop.model, loop.optimizer
    config_hash, averaged = loop.config_hash, loop.averaged
    checkpoint = {
        "format_version": CHECKPOINT_VERSION,
        "config_hash": config_hash,
        "epochs_done": position.epochs_done,
        "batches_done": position.batches_done,
        "global_step": position.step,
        "epoch_sums": position.sums,
        "epoch_views": position.n_views,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng_state": torch.get_rng_state(),
    }
    if averaged is not None:
        checkpoint["averaged_model"] = averaged.state_dict()
    if device.type == "cuda":
        checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state()
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputDataError(
            f"{path}: unreadable checkpoint ({exc}); delete it or train with resume off"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise InputDataError(
            f"{path}: not a scicontrast checkpoint of format_version {CHECKPOINT_VERSION}; "
            "delete it or train with resume off"
        )
    return checkpoint
