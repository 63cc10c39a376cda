"""Which torch device a step runs on: shared by training and every analysis step."""

from __future__ import annotations

import time

import torch

from scicontrast.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "training.device: 'cuda' was asked for but torch sees no CUDA device "
            "(use 'auto' or 'cpu')"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"training.device: {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


def seconds_since(started: float, device: torch.device) -> float:
    """Wall seconds since ``started`` (``time.perf_counter()``) of work on ``device``.

    CUDA runs kernels after the host queued them: the clock stops only once the device has
    finished them (``torch.cuda.synchronize``), or the last step's backward pass and
    optimiser update would not count (a whole-graph epoch is that one step).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started
