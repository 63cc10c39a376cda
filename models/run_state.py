"""What a training run leaves on disk and reads back to resume: checkpoint and metrics lines.

``checkpoint.pt`` (:func:`save_checkpoint`, written atomically) holds the weights, optimiser
state, the weight average, torch's RNG states, how far training got (:class:`Position`) and
a hash of the experiment config (:func:`experiment_hash`); ``metrics.jsonl`` is cut back to
the checkpoint's position before a resumed run appends to it (:func:`keep_lines_up_to`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from scicontrast.errors import InputDataError
from scicontrast.experiment import Experiment
from scicontrast.io import atomic_path

CHECKPOINT_VERSION = 1


class Checkpointed(Protocol):
    """What a checkpoint is written from (the training loop's state)."""

    @property
    def checkpoint_path(self) -> Path: ...
    @property
    def model(self) -> torch.nn.Module: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def averaged(self) -> torch.nn.Module | None: ...
    @property
    def config_hash(self) -> str: ...


def experiment_hash(experiment: Experiment) -> str:
    """The hash :func:`stored_experiment_hash` gives the experiment's dict form."""
    return stored_experiment_hash(experiment.to_dict())


def stored_experiment_hash(stored: Mapping[str, Any]) -> str:
    """SHA-256 of the settings that shape training: all but ``analysis``, ``description``,
    ``training.loader_workers``, ``training.checkpoint_every`` and
    ``training.checkpoint_seconds`` (which change no result, so a run resumes with other
    workers or checkpoints); ``training.augment_on_device``, ``heldout_every``,
    ``heldout_min_steps`` and ``max_steps_per_epoch`` count only when not at their
    defaults, so that checkpoints written before they existed (whose dict form lacks them)
    still resume."""
    relevant = {k: v for k, v in stored.items() if k not in ("analysis", "description")}
    defaults = {
        "augment_on_device": False,
        "heldout_every": 1,
        "heldout_min_steps": 4,
        "max_steps_per_epoch": None,
    }
    relevant["training"] = {
        k: v
        for k, v in relevant["training"].items()
        if k not in ("loader_workers", "checkpoint_every", "checkpoint_seconds")
        and not (k in defaults and v == defaults[k])
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


@dataclass
class Position:
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
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> Position:
        return cls(
            checkpoint["epochs_done"],
            checkpoint.get("batches_done", 0),
            checkpoint["global_step"],
            dict(checkpoint.get("epoch_sums", {})),
            checkpoint.get("epoch_views", 0),
        )


def write_line(file, record: dict[str, Any]) -> None:
    file.write(json.dumps(record) + "\n")
    file.flush()


def keep_lines_up_to(metrics_path: Path, position: Position) -> None:
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


def save_checkpoint(loop: Checkpointed, position: Position, device: torch.device) -> None:
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
        # Written while training runs: the thread count its sums were split over.
        "torch_threads": torch.get_num_threads(),
    }
    if averaged is not None:
        checkpoint["averaged_model"] = averaged.state_dict()
    if device.type == "cuda":
        checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state()
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
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
