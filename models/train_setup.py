"""A training run's setup: settings checked, data and batches, model and optimiser, resume point.

The phases :func:`scicontrast.models.train.train` runs before its first step, each filling
the shared :class:`Loop`; and the context managers the steps run under.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.nn.parameter import UninitializedParameter
from torch.optim.swa_utils import AveragedModel

from scicontrast.data_adapters.base import Items, check_pairs_table, held_out_groups, load_items
from scicontrast.data_adapters.fixed_batches import DEFAULT_MAX_BYTES, FixedBatches
from scicontrast.data_adapters.pairs_table import read_pairs
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Experiment, Training
from scicontrast.models.cadence import heldout_cadence
from scicontrast.models.contrastive import ContrastiveModel, build_model
from scicontrast.models.contrastive_metrics import VIEW_EPOCH
from scicontrast.models.distributed import sync_batchnorm
from scicontrast.models.run_state import (
    Position,
    experiment_hash,
    keep_lines_up_to,
    load_checkpoint,
)
from scicontrast.registry import PAIR_BUILDERS

logger = logging.getLogger("scicontrast.train")


def check_settings(experiment: Experiment) -> None:
    """Refuse settings that cannot train: more epochs to average than epochs, and a learning
    rate whose first AdamW step cannot be written in float32.

    AdamW's first step moves each weight by ``lr / (1 - beta1)`` times a unit-size ratio;
    beyond float32's largest value that scalar overflows inside torch, a raw RuntimeError.
    """
    settings, name = experiment.training, experiment.name
    epochs, swa_epochs = settings.epochs, settings.swa_epochs
    if swa_epochs > epochs:
        raise ConfigError(
            f"experiments.{name}.training.swa_epochs: {swa_epochs} epochs to "
            f"average, but training.epochs is {epochs}"
        )
    lr, beta1 = settings.lr, 0.9  # torch.optim.AdamW's default, which training uses
    if lr / (1 - beta1) > torch.finfo(torch.float32).max:
        raise ConfigError(
            f"experiments.{name}.training.lr: {lr:g} makes AdamW's first step "
            f"lr / (1 - {beta1}) overflow float32; lower training.lr"
        )


@dataclass
class Loop:
    """What the phases of :func:`train` share: settings, data, model and the open run.

    The phases fill the fields in order (:func:`load_data`, :func:`build_model_and_optimizer`,
    :func:`open_run`); the loop reads them only after, so they are typed as filled.
    """

    experiment: Experiment
    group: Any
    checkpoint_path: Path
    progress: bool
    items: Items = None  # type: ignore[assignment]
    pairs: pd.DataFrame = None  # type: ignore[assignment]
    builder: Any = None
    batches: Any = None
    held_out_batches: Any = None
    model: ContrastiveModel = None  # type: ignore[assignment]
    network: Any = None  # the model, or its DDP wrapper while the run is open
    averaged: AveragedModel | None = None
    optimizer: torch.optim.Optimizer = None  # type: ignore[assignment]
    config_hash: str = ""
    resumed_threads: int | None = None  # the torch threads of the run that wrote the checkpoint
    sigterm: threading.Event = None  # type: ignore[assignment]
    metrics_file: Any = None
    checkpointed_at: float = 0.0  # time.monotonic() of the last checkpoint
    heldout_every: int = 1  # the held-out pass's cadence in epochs (heldout_cadence)

    @property
    def settings(self) -> Training:
        return self.experiment.training

    @property
    def epochs(self) -> int:
        return self.settings.epochs


def load_data(loop: Loop, items_dir: str | Path, pairs_path: str | Path, num_threads: int) -> None:
    """Items, pairs (less the held-out groups) and the epoch's batches.

    By default a batch is ``batch_size`` groups (per process) with all their views, drawn
    afresh each epoch (the pair builder decides; see ``PairBuilder.training_batches``), in
    ``training.loader_workers`` processes (``None``: ``num_threads // 4``, none when the
    thread count is not given), into pinned memory for a GPU.
    """
    settings, group = loop.settings, loop.group
    seed, batch_size = settings.seed, settings.batch_size
    where = f"experiments.{loop.experiment.name}.pairs"
    builder = PAIR_BUILDERS.create(loop.experiment.pairs, where=where)
    # Only the columns the builder reads, and pairs as row codes: the rest stays on disk.
    items = load_items(items_dir, builder)
    pairs = read_pairs(pairs_path, items.table["item_id"])
    check_pairs_table(pairs, items, str(pairs_path))
    # Groups set aside for the diagnostics (scicontrast.analysis.diagnostics) never train.
    held_out = held_out_groups(pairs, settings.holdout_fraction, seed)
    held_out_pairs = pairs.iloc[:0]
    if len(held_out):  # else no copy of the pairs: 2 x 10^6 rows at 10^6 windows
        held_out_pairs = pairs[pairs["group_id"].isin(held_out)]
        pairs = pairs[~pairs["group_id"].isin(held_out)]
    batches = builder.training_batches(
        items, pairs, seed, batch_size, rank=group.rank, world_size=group.world_size
    )
    if batches.n_groups < 2:
        raise InputDataError(
            f"{pairs_path}: {batches.n_groups} group(s); contrastive training needs at least 2"
        )
    workers = settings.loader_workers
    if workers is None:
        workers = num_threads // 4
    batches.use_workers(workers, pin_memory=group.device.type == "cuda")
    if settings.augment_on_device:
        batches.augment_on(group.device)
    if settings.max_steps_per_epoch is not None:
        batches.limit_steps(settings.max_steps_per_epoch)
    # Its own builder, so that the held-out pass leaves the training batches' state alone.
    loop.heldout_every = heldout_cadence(settings, len(batches))
    if group.is_main and len(held_out) >= 2:
        # The same views at every pass: made once and kept while small, if passes recur.
        held_out_builder = PAIR_BUILDERS.create(loop.experiment.pairs, where=where)
        loop.held_out_batches = FixedBatches(
            held_out_builder.training_batches(items, held_out_pairs, seed, batch_size),
            VIEW_EPOCH,
            DEFAULT_MAX_BYTES if loop.epochs > loop.heldout_every else 0,
        )
    loop.items, loop.pairs, loop.builder, loop.batches = items, pairs, builder, batches


def build_model_and_optimizer(loop: Loop) -> None:
    """The seeded model on its device, its weight average, and AdamW.

    As in nanoGPT, only matrices and kernels are weight-decayed, not biases, normalisation
    scales or the temperature.
    """
    settings, group = loop.settings, loop.group
    torch.manual_seed(settings.seed)
    model = build_model(loop.experiment)
    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        # Lazy layers (PyG's in_channels=-1) learn their input size from one forward pass,
        # in eval mode so that it leaves no batch-norm statistics behind.
        model.eval()
        with torch.no_grad():
            batch = next(iter(loop.builder.embedding_batches(loop.items, settings.batch_size)))
            if getattr(batch, "layerwise_nodes", None) is not None:
                # A graph of any size, embedded layer by layer: one node shows the input size.
                batch = batch.subgraph(torch.arange(1))
            model.embed(batch)
    model = model.to(group.device)
    swa_epochs = settings.swa_epochs
    if group.distributed:
        if swa_epochs:
            raise ConfigError(
                f"experiments.{loop.experiment.name}.training.swa_epochs needs one process; "
                "weight averaging with several processes (training.gpus > 1) is not implemented"
            )
        model = cast(ContrastiveModel, sync_batchnorm(model, group.device))
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in parameters if p.dim() >= 2]},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    loop.model = model
    loop.averaged = AveragedModel(model) if swa_epochs else None
    loop.optimizer = torch.optim.AdamW(
        groups,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )


def resume_position(
    loop: Loop, resume: bool, start_weights: dict[str, torch.Tensor] | None = None
) -> Position:
    """Where the last checkpoint left off, when it belongs to this config: after a completed
    epoch, or mid-epoch after a preemption; else the start. ``start_weights`` (a federated
    round's global weights) then replace the model's, keeping the checkpoint's optimiser state,
    step count and RNG."""
    position = _checkpoint_position(loop, resume)
    if start_weights is not None:
        loop.model.load_state_dict(start_weights)
    return position


def _checkpoint_position(loop: Loop, resume: bool) -> Position:
    """The position of ``loop``'s checkpoint, its state loaded; the start if there is none."""
    loop.config_hash = experiment_hash(loop.experiment)
    path = loop.checkpoint_path
    if not (resume and path.exists()):
        return Position()
    checkpoint = load_checkpoint(path)
    if checkpoint["config_hash"] != loop.config_hash:
        logger.warning("%s was written for a different experiment config; starting fresh", path)
        return Position()
    loop.model.load_state_dict(checkpoint["model"])
    loop.optimizer.load_state_dict(checkpoint["optimizer"])
    loop.resumed_threads = checkpoint.get("torch_threads")
    if loop.averaged is not None:
        loop.averaged.load_state_dict(checkpoint["averaged_model"])
    torch.set_rng_state(checkpoint["torch_rng_state"])
    if loop.group.device.type == "cuda" and "cuda_rng_state" in checkpoint:
        torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
    position = Position.from_checkpoint(checkpoint)
    logger.info(
        "resuming from %s: %d of %d epochs done%s",
        path,
        position.epochs_done,
        loop.epochs,
        f" and {position.batches_done} batches of the next" if position.batches_done else "",
    )
    return position


def open_run(loop: Loop, position: Position, out_dir: Path) -> None:
    """The output folder cut back to ``position``, and the network the steps run (DDP)."""
    group = loop.group
    if group.is_main:
        # Created only now, so that bad input or settings found above leave nothing behind.
        out_dir.mkdir(parents=True, exist_ok=True)
        keep_lines_up_to(out_dir / "metrics.jsonl", position)
        if position.epochs_done < loop.epochs:
            # A model.pt from an earlier run would not match the weights trained from here on.
            (out_dir / "model.pt").unlink(missing_ok=True)
    # Several processes: each holds a replica; DDP averages their gradients.
    loop.network = loop.model
    if group.distributed:
        loop.network = DistributedDataParallel(
            loop.model, device_ids=[group.device.index] if group.device.type == "cuda" else None
        )
    log_start(loop)


def log_start(loop: Loop) -> None:
    group, batches = loop.group, loop.batches
    logger.info(
        "training on %s%s: %d groups, %d views, %d steps per epoch (%d groups per batch%s), "
        "%d parameters",
        group.device,
        f" (process {group.rank} of {group.world_size})" if group.distributed else "",
        batches.n_groups,
        len(loop.pairs),
        len(batches),
        loop.settings.batch_size,
        " and process" if group.distributed else "",
        sum(p.numel() for p in loop.model.parameters() if p.requires_grad),
    )


@contextlib.contextmanager
def torch_settings(device: torch.device, num_threads: int) -> Iterator[None]:
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


def warn_if_threads_changed(loop: Loop) -> None:
    """Warn when this run trains with another torch thread count than the run that wrote the
    checkpoint it resumes: sums split over other thread counts round differently, so it would
    not end bitwise equal to an uninterrupted run (docs/experiments/sigterm.md)."""
    threads, before = torch.get_num_threads(), loop.resumed_threads
    if before is not None and before != threads:
        logger.warning(
            "%s was written by a run with %d torch threads, this one has %d: the weights will "
            "not be bitwise equal to an uninterrupted run's (--threads %d restores them)",
            loop.checkpoint_path,
            before,
            threads,
            before,
        )


@contextlib.contextmanager
def sigterm_flag() -> Iterator[threading.Event]:
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
