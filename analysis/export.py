"""Hand the results over in the formats the field reads: AnnData, TorchScript, torch.export,
ONNX, a model card.

Output folder ``results/{experiment}/export/`` (written atomically):

``embeddings.h5ad``
    AnnData (``anndata.read_h5ad`` / ``scanpy.read_h5ad``), one observation per item:
    ``obs_names`` the item ids, ``obs`` the metadata columns of the embeddings table plus one
    categorical column per clustering (``kmeans``, ``hdbscan``, ``leiden``; categories are the
    cluster numbers as strings, HDBSCAN noise is missing), ``obsm["X_scicontrast"]`` the
    ``[N, D]`` float32 embedding, no ``X`` (``n_vars = 0``: the embedding is a
    representation, not measured features; in scanpy pass ``use_rep="X_scicontrast"``), and
    ``uns["scicontrast"]`` the experiment config and the cluster metrics as JSON strings.
``encoder.torchscript.pt``
    The trained encoder as TorchScript (``torch.jit.trace`` on a canonical input batch),
    loadable without this package: ``torch.jit.load(path)(x)`` maps a batch of canonical
    inputs (the shape in the model card; DNA: one-hot ``float32 [B, 4, window]``, channels
    A, C, G, T) to ``[B, D]`` embeddings equal to the workflow's (checked on export); a graph
    encoder takes ``(x [nodes, F], edge_index [2, E])``; the audio-image two-tower encoder has
    one method per tower, ``embed_audio(waveforms [A, T])`` and ``embed_images(images [I, C,
    S, S])``, both to ``[*, D]`` in the shared space. The experiment config travels inside the
    file (``_extra_files["experiment.json"]``). Absent, with the reason in the model card, for
    an encoder whose input is none of these.
``encoder.pt2`` and ``encoder.onnx``
    The same encoder as a ``torch.export`` program (``torch.export.load(path).module()(x)``)
    and as ONNX (``onnxruntime.InferenceSession(path).run(None, {"x": x})[0]``), first
    dimensions dynamic (:mod:`scicontrast.analysis.portable`); the two-tower encoder as
    ``audio_encoder.*`` (input ``audio``) and ``image_encoder.*`` (input ``images``). ONNX
    needs the ``export`` extra (onnx, onnxscript, onnxruntime); without it the model card
    says so.
``model_card.json``
    What the encoder is and how to use it: experiment name and config, embedding size, input
    shape and dtype, the files, the largest difference between each exported file's and the
    eager embeddings, and the command that embeds new raw files through the same adapter.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from scicontrast.analysis.embed import load_embeddings
from scicontrast.analysis.portable import (
    PARITY_TOLERANCE,
    Entry,
    Method,
    export_onnx,
    export_program,
    onnx_available,
)
from scicontrast.data_adapters.base import Items
from scicontrast.errors import InputDataError
from scicontrast.io import atomic_path

EMBEDDING_KEY = "X_scicontrast"
ANNDATA_FILE = "embeddings.h5ad"
TORCHSCRIPT_FILE = "encoder.torchscript.pt"
MODEL_CARD_FILE = "model_card.json"
EXPERIMENT_EXTRA_FILE = "experiment.json"
# Batch attribute -> TorchScript method of a two-tower encoder, and its exported files' stem.
TOWER_INPUTS = {"audio": "embed_audio", "images": "embed_images"}
TOWER_FILES = {"audio": "audio_encoder", "images": "image_encoder"}


def to_anndata(
    metadata: pd.DataFrame,
    embeddings: np.ndarray,
    assignments: pd.DataFrame | None = None,
    uns: dict[str, Any] | None = None,
):
    """An ``AnnData`` of ``[N, D]`` embeddings with ``metadata`` (one row each, ``item_id``).

    Object columns holding anything but strings are written as strings (h5ad stores a
    column as one type); ``assignments`` columns other than ``item_id`` and metadata columns
    become categorical cluster columns (``-1`` -> missing).
    """
    import anndata

    obs = metadata.drop(columns="item_id").copy()
    obs.index = pd.Index(metadata["item_id"].astype(str).to_numpy(), name="item_id")
    for column in obs.columns:
        values = obs[column]
        if values.dtype == object and not values.dropna().map(type).eq(str).all():
            obs[column] = values.map(lambda v: v if pd.isna(v) else str(v))
    if assignments is not None:
        if not (assignments["item_id"].astype(str).to_numpy() == obs.index.to_numpy()).all():
            raise ValueError("cluster assignments are not in the embeddings' item order")
        for method in cluster_columns(assignments, metadata):
            clusters = assignments[method].to_numpy()
            categories = [str(c) for c in np.unique(clusters[clusters >= 0])]
            obs[method] = pd.Categorical(
                [str(c) if c >= 0 else np.nan for c in clusters], categories=categories
            )
    return anndata.AnnData(
        obs=obs,
        obsm={EMBEDDING_KEY: np.ascontiguousarray(embeddings, dtype=np.float32)},
        uns={"scicontrast": uns or {}},
    )


def trace_encoder(
    encoder: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]
) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``encoder`` in eval mode on one example input."""
    encoder.eval()
    with torch.no_grad(), _quiet_jit():
        return torch.jit.trace(encoder, example, check_trace=True)


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence torch.jit's deprecation notices and tracer warnings.

    torch 2.9+ marks TorchScript deprecated in favour of ``torch.export``, yet TorchScript
    is still what runs without Python (LibTorch) and loads in every torch since 1.x. Shape
    checks inside ``forward`` become constants of the trace; :func:`export` compares the
    traced encoder with the eager one on a batch of another size instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load an exported encoder and the experiment config stored inside it."""
    extra = {EXPERIMENT_EXTRA_FILE: ""}
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[EXPERIMENT_EXTRA_FILE])


def export(
    model_path: str | Path,
    items_dir: str | Path,
    embeddings_dir: str | Path,
    out_dir: str | Path,
    clusters_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``embeddings.h5ad``, ``encoder.torchscript.pt`` and ``model_card.json``.

    Returns the model card.
    """
    from scicontrast.models.contrastive import load_model
    from scicontrast.registry import PAIR_BUILDERS

    model, experiment = load_model(model_path, map_location="cpu")
    settings = experiment.to_dict()
    metadata, embeddings = load_embeddings(embeddings_dir)
    assignments, cluster_metrics = None, None
    if clusters_dir is not None:
        clusters_dir = Path(clusters_dir)
        assignments = pd.read_parquet(clusters_dir / "assignments.parquet")
        cluster_metrics = json.loads((clusters_dir / "metrics.json").read_text())
    adata = to_anndata(
        metadata,
        embeddings,
        assignments,
        uns={
            "experiment": json.dumps(settings, sort_keys=True),
            "cluster_metrics": json.dumps(cluster_metrics, sort_keys=True),
            "embedding_key": EMBEDDING_KEY,
        },
    )

    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"{model_path}: pairs")
    items = Items.load(items_dir)
    if len(items) != len(embeddings):
        raise InputDataError(
            f"{embeddings_dir}: {len(embeddings)} embeddings for {len(items)} items in {items_dir}"
        )
    card: dict[str, Any] = {
        "experiment_name": experiment.name,
        "experiment": settings,
        "embedding_dim": int(embeddings.shape[1]),
        "n_items": len(embeddings),
        "files": {"anndata": ANNDATA_FILE, "model_card": MODEL_CARD_FILE},
        "anndata": {
            "embedding": f"obsm['{EMBEDDING_KEY}']",
            "clusters": cluster_columns(assignments, metadata),
        },
        "embed_new_files": (
            f"scicontrast embed --model {Path(model_path).as_posix()} FILE... --out FOLDER"
        ),
    }
    entries = encoder_entries(model, builder, items)
    traced = None
    if isinstance(entries, str):
        card["torchscript"] = {"exported": False, "reason": entries}
    else:
        traced, card["torchscript"] = _torchscript(model, entries)
        card["files"]["torchscript"] = TORCHSCRIPT_FILE

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        adata.write_h5ad(tmp / ANNDATA_FILE)
        if traced is not None and not isinstance(entries, str):
            extra = {EXPERIMENT_EXTRA_FILE: json.dumps(settings, sort_keys=True)}
            with _quiet_jit():
                torch.jit.save(traced, str(tmp / TORCHSCRIPT_FILE), _extra_files=extra)
            card.update(_portable(entries, tmp))
        (tmp / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return card


class GraphInputs(nn.Module):
    """``forward(x, edge_index)`` around an encoder of PyG ``Data``: tensors in, so it traces."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        from torch_geometric.data import Data

        return self.encoder(Data(x=x, edge_index=edge_index))


def encoder_entries(model, builder, items: Items) -> list[Entry] | str:
    """The encoder's callables over tensors (:class:`Entry`), or why it has none.

    Tensor inputs (DNA, images) are one entry, checked on a batch of another size; graph
    inputs (``x``, ``edge_index``) go through :class:`GraphInputs`; an audio-image batch gives
    one entry per tower, from the first audio and image rows of the items (up to 16 each).
    """
    example = next(iter(builder.embedding_batches(items, min(16, len(items)))))
    if isinstance(example, torch.Tensor):
        check = next(iter(builder.embedding_batches(items, min(5, len(items)))))
        return [Entry("encoder", model.encoder, ["x"], (example,), (check,), ({0: "batch"},))]
    if isinstance(getattr(example, "x", None), torch.Tensor) and isinstance(
        getattr(example, "edge_index", None), torch.Tensor
    ):
        graph = (example.x, example.edge_index)
        dynamic = ({0: "nodes"}, {1: "edges"})
        module = GraphInputs(model.encoder)
        return [Entry("encoder", module, ["x", "edge_index"], graph, graph, dynamic)]
    if not all(isinstance(getattr(example, side, None), torch.Tensor) for side in TOWER_INPUTS):
        return f"the encoder takes a {type(example).__name__}, not tensors"
    examples: dict[str, torch.Tensor] = {}
    for batch in builder.embedding_batches(items, min(16, len(items))):
        for side in TOWER_INPUTS:
            if side not in examples and len(getattr(batch, side)):
                examples[side] = getattr(batch, side)
        if len(examples) == len(TOWER_INPUTS):
            break
    missing = [side for side in TOWER_INPUTS if side not in examples]
    if missing:
        return f"the items hold no {missing[0]} to trace"
    return [
        Entry(
            TOWER_FILES[side], Method(model.encoder, method), [side], (x,), (x[:5],), ({0: "rows"},)
        )
        for side, method in TOWER_INPUTS.items()
        for x in [examples[side]]
    ]


def _torchscript(model, entries: list[Entry]) -> tuple[Any, dict[str, Any]]:
    """``(traced encoder, model-card entry)``, checked against the eager model.

    One entry traces as it is; the towers of a two-tower encoder trace as one module with a
    method each (``embed_audio``, ``embed_images``).
    """
    if len(entries) == 1:
        (entry,) = entries
        traced = trace_encoder(entry.module, entry.example)
        with torch.no_grad(), _quiet_jit():
            difference = float((traced(*entry.check) - entry.module(*entry.check)).abs().max())
        card: dict[str, Any] = {"load": f"torch.jit.load('{TORCHSCRIPT_FILE}')"}
    else:
        encoder = model.encoder.eval()
        methods = {}
        for entry in entries:
            # Several entries: one per tower of a two-tower encoder (encoder_entries).
            assert isinstance(entry.module, Method)
            methods[entry.module.method] = entry.example[0]
        with torch.no_grad(), _quiet_jit():
            traced = torch.jit.trace_module(encoder, methods, check_trace=True)
            difference = max(
                float(
                    (getattr(traced, method)(x[:5]) - getattr(encoder, method)(x[:5])).abs().max()
                )
                for method, x in methods.items()
            )
        card = {
            "methods": {method: side for side, method in TOWER_INPUTS.items()},
            "load": (
                f"m = torch.jit.load('{TORCHSCRIPT_FILE}'); m.embed_audio(audio); "
                "m.embed_images(images)"
            ),
        }
    if not difference <= PARITY_TOLERANCE:
        raise RuntimeError(
            f"TorchScript encoder differs from the model by {difference:.3g} "
            f"(tolerance {PARITY_TOLERANCE}); not exporting it"
        )
    return traced, {
        "exported": True,
        "inputs": _inputs(entries),
        "output": ["rows", str(model.encoder.embedding_dim), "float32"],
        "max_abs_difference_to_eager": difference,
        **card,
    }


def _portable(entries: list[Entry], folder: Path) -> dict[str, dict[str, Any]]:
    """Write every entry as ``torch.export`` program and ONNX file into ``folder``; their
    model-card entries. ONNX needs the ``export`` extra; without it the card says so."""
    inputs = _inputs(entries)
    program = {entry.name: f"{entry.name}.pt2" for entry in entries}
    differences = [export_program(entry, folder / program[entry.name]) for entry in entries]
    card = {
        "torch_export": {
            "exported": True,
            "files": program,
            "inputs": inputs,
            "max_abs_difference_to_eager": max(differences),
            "load": "torch.export.load(FILE).module()(*inputs)",
        }
    }
    if not onnx_available():
        card["onnx"] = {
            "exported": False,
            "reason": "onnx, onnxscript or onnxruntime is not installed: "
            "pip install 'scicontrast[export]'",
        }
        return card
    onnx = {entry.name: f"{entry.name}.onnx" for entry in entries}
    differences = [export_onnx(entry, folder / onnx[entry.name]) for entry in entries]
    card["onnx"] = {
        "exported": True,
        "files": onnx,
        "inputs": inputs,
        "output": "embedding",
        "max_abs_difference_to_eager": max(differences),
        "load": "onnxruntime.InferenceSession(FILE).run(None, {name: array, ...})[0]",
    }
    return card


def _inputs(entries: list[Entry]) -> dict[str, list[str]]:
    """Input name -> shape (dynamic dimensions by name) and dtype, over all entries."""
    shapes = {}
    for entry in entries:
        for name, x, dynamic in zip(entry.input_names, entry.example, entry.dynamic, strict=True):
            shape = [dynamic.get(axis, size) for axis, size in enumerate(x.shape)]
            shapes[name] = [*shape, str(x.dtype)]
    return _shapes(shapes)


def _shapes(inputs: dict[str, list]) -> dict[str, list[str]]:
    return {name: [str(v).removeprefix("torch.") for v in spec] for name, spec in inputs.items()}


def cluster_columns(assignments: pd.DataFrame | None, metadata: pd.DataFrame) -> list[str]:
    """The clustering columns of ``assignments``: all but ``item_id`` and metadata columns."""
    if assignments is None:
        return []
    return [c for c in assignments.columns if c != "item_id" and c not in metadata.columns]
