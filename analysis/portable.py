"""Encoders as portable programs: ``torch.export`` (``.pt2``) and ONNX (``.onnx``).

TorchScript (:mod:`scicontrast.analysis.export`) is deprecated since torch 2.9; its
successors are ``torch.export`` (a graph of ATen operators, loaded with
``torch.export.load(path).module()``, no scicontrast needed) and ONNX (run by onnxruntime,
from Python, C++, C#, Java or JavaScript, without torch at all).

An encoder is exported as one or more :class:`Entry` objects, each a module over tensors
with its first dimension (batch, nodes, edges) left dynamic:

- DNA and image encoders: ``encoder`` maps ``x [B, ...]`` to ``[B, D]``;
- graph encoders: ``encoder`` maps ``(x [nodes, F], edge_index [2, edges])`` to
  ``[nodes, D]``;
- the audio-image two-tower encoder: ``audio_encoder`` maps ``audio [A, T]`` and
  ``image_encoder`` maps ``images [I, C, S, S]`` to ``[*, D]`` in the shared space.

Every file is checked on export against the eager encoder on a batch of another size than
the example it was exported from (onnxruntime runs the ONNX file), and refused when the
largest absolute difference exceeds :data:`PARITY_TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

PARITY_TOLERANCE = 1e-4


@dataclass
class Entry:
    """One callable of an encoder, ready to export.

    ``example`` traces it, ``check`` (another batch size) tests the exported file, and
    ``dynamic[i]`` maps dimension numbers of input ``i`` to their names.
    """

    name: str
    module: nn.Module
    input_names: list[str]
    example: tuple[torch.Tensor, ...]
    check: tuple[torch.Tensor, ...]
    dynamic: tuple[dict[int, str], ...]

    def dynamic_shapes(self) -> tuple[dict[int, torch.export.Dim], ...]:
        dims: dict[str, torch.export.Dim] = {}
        return tuple(
            {axis: dims.setdefault(name, torch.export.Dim(name, min=1)) for axis, name in d.items()}
            for d in self.dynamic
        )


class Method(nn.Module):
    """``forward`` = one method of ``module`` (a tower of a two-tower encoder)."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.inner = module
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.inner, self.method)(x)


def export_program(entry: Entry, path: Path) -> float:
    """Write ``entry`` as ``torch.export`` program ``path``; return its parity difference."""
    entry.module.eval()
    with torch.no_grad():
        program = torch.export.export(
            entry.module, entry.example, dynamic_shapes=entry.dynamic_shapes()
        )
    torch.export.save(program, path)
    with torch.no_grad(), warnings.catch_warnings():
        # Weights that share storage (a view of a buffer) load fine but warn.
        warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
        got = torch.export.load(path).module()(*entry.check)
    return _check_parity(f"{path.name}", got.numpy(), entry)


def export_onnx(entry: Entry, path: Path) -> float:
    """Write ``entry`` as ONNX file ``path`` (opset of the dynamo exporter), checked with
    onnxruntime; return the parity difference."""
    import onnxruntime

    entry.module.eval()
    with torch.no_grad(), _quiet_onnx():
        torch.onnx.export(
            entry.module,
            entry.example,
            str(path),
            input_names=entry.input_names,
            output_names=["embedding"],
            dynamic_shapes=entry.dynamic_shapes(),
            dynamo=True,
            external_data=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {name: x.numpy() for name, x in zip(entry.input_names, entry.check, strict=True)}
    return _check_parity(path.name, session.run(None, inputs)[0], entry)


def onnx_available() -> bool:
    """Whether the ``export`` extra (onnx, onnxscript, onnxruntime) is installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _check_parity(name: str, got: np.ndarray, entry: Entry) -> float:
    with torch.no_grad():
        expected = entry.module(*entry.check).numpy()
    difference = float(np.abs(got - expected).max())
    if not difference <= PARITY_TOLERANCE:
        raise RuntimeError(
            f"exported {name} differs from the model by {difference:.3g} "
            f"(tolerance {PARITY_TOLERANCE}); not exporting it"
        )
    return difference


@contextlib.contextmanager
def _quiet_onnx() -> Iterator[None]:
    """The dynamo exporter prints its progress and warns about absent torchvision ops."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
