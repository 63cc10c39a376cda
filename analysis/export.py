"""Hand the results over in the formats the field reads: AnnData, TorchScript, a model card.

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
``model_card.json``
    What the encoder is and how to use it: experiment name and config, embedding size, input
    shape and dtype, the files, the largest difference between TorchScript and eager
    embeddings, and the command that embeds new raw files through the same adapter.
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
from scicontrast.data_adapters.base import Items
from scicontrast.errors import InputDataError
from scicontrast.io import atomic_path

EMBEDDING_KEY = "X_scicontrast"
ANNDATA_FILE = "embeddings.h5ad"
TORCHSCRIPT_FILE = "encoder.torchscript.pt"
MODEL_CARD_FILE = "model_card.json"
EXPERIMENT_EXTRA_FILE = "experiment.json"
PARITY_TOLERANCE = 1e-4
# Batch attribute -> TorchScript method of a two-tower encoder.
TOWER_INPUTS = {"audio": "embed_audio", "images": "embed_images"}


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
            "experiment": json.dumps(experiment, sort_keys=True),
            "cluster_metrics": json.dumps(cluster_metrics, sort_keys=True),
            "embedding_key": EMBEDDING_KEY,
        },
    )

    builder = PAIR_BUILDERS.create(experiment["pairs"], where=f"{model_path}: pairs")
    items = Items.load(items_dir)
    if len(items) != len(embeddings):
        raise InputDataError(
            f"{embeddings_dir}: {len(embeddings)} embeddings for {len(items)} items in {items_dir}"
        )
    card: dict[str, Any] = {
        "experiment_name": experiment.get("name"),
        "experiment": experiment,
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
    traced, card["torchscript"] = _traceable_encoder(model, builder, items)
    if traced is not None:
        card["files"]["torchscript"] = TORCHSCRIPT_FILE

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        adata.write_h5ad(tmp / ANNDATA_FILE)
        if traced is not None:
            extra = {EXPERIMENT_EXTRA_FILE: json.dumps(experiment, sort_keys=True)}
            with _quiet_jit():
                torch.jit.save(traced, str(tmp / TORCHSCRIPT_FILE), _extra_files=extra)
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


def _traceable_encoder(model, builder, items: Items) -> tuple[Any, dict[str, Any]]:
    """``(traced encoder or None, model-card entry)``, checked against the eager model.

    Tensor inputs (DNA, images) trace as they are and are checked on a batch of another
    size; graph inputs (``x``, ``edge_index``) trace through :class:`GraphInputs`; audio-image
    batches trace one method per tower (:func:`_traced_towers`).
    """
    example = next(iter(builder.embedding_batches(items, min(16, len(items)))))
    if isinstance(example, torch.Tensor):
        traced = trace_encoder(model.encoder, example)
        check = next(iter(builder.embedding_batches(items, min(5, len(items)))))
        run_traced = traced
        inputs = {"x": ["batch", *example.shape[1:], str(example.dtype)]}
    elif isinstance(getattr(example, "x", None), torch.Tensor) and isinstance(
        getattr(example, "edge_index", None), torch.Tensor
    ):
        traced = trace_encoder(GraphInputs(model.encoder), (example.x, example.edge_index))
        check = example

        def run_traced(data):
            return traced(data.x, data.edge_index)

        inputs = {
            "x": ["nodes", *example.x.shape[1:], str(example.x.dtype)],
            "edge_index": [2, "edges", str(example.edge_index.dtype)],
        }
    elif all(isinstance(getattr(example, side, None), torch.Tensor) for side in TOWER_INPUTS):
        return _traced_towers(model, builder, items)
    else:
        reason = f"the encoder takes a {type(example).__name__}, not tensors"
        return None, {"exported": False, "reason": reason}
    with torch.no_grad(), _quiet_jit():
        difference = float((run_traced(check) - model.embed(check)).abs().max())
    _check_parity(difference)
    return traced, {
        "exported": True,
        "inputs": _shapes(inputs),
        "output": ["rows", str(model.encoder.embedding_dim), "float32"],
        "max_abs_difference_to_eager": difference,
        "load": f"torch.jit.load('{TORCHSCRIPT_FILE}')",
    }


def _traced_towers(model, builder, items: Items) -> tuple[Any, dict[str, Any]]:
    """The two-tower encoder traced per tower: ``embed_audio`` and ``embed_images``.

    The examples are the first audio and the first image rows of the items (up to 16 each);
    the check runs each method on 5 rows, a batch of another size.
    """
    examples: dict[str, torch.Tensor] = {}
    for batch in builder.embedding_batches(items, min(16, len(items))):
        for side in TOWER_INPUTS:
            if side not in examples and len(getattr(batch, side)):
                examples[side] = getattr(batch, side)
        if len(examples) == len(TOWER_INPUTS):
            break
    missing = [side for side in TOWER_INPUTS if side not in examples]
    if missing:
        return None, {"exported": False, "reason": f"the items hold no {missing[0]} to trace"}
    encoder = model.encoder.eval()
    methods = {method: examples[side] for side, method in TOWER_INPUTS.items()}
    with torch.no_grad(), _quiet_jit():
        traced = torch.jit.trace_module(encoder, methods, check_trace=True)
        difference = max(
            float((getattr(traced, method)(x[:5]) - getattr(encoder, method)(x[:5])).abs().max())
            for method, x in methods.items()
        )
    _check_parity(difference)
    inputs = {
        side: ["rows", *examples[side].shape[1:], str(examples[side].dtype)]
        for side in TOWER_INPUTS
    }
    return traced, {
        "exported": True,
        "inputs": _shapes(inputs),
        "methods": {method: side for side, method in TOWER_INPUTS.items()},
        "output": ["rows", str(encoder.embedding_dim), "float32"],
        "max_abs_difference_to_eager": difference,
        "load": (
            f"m = torch.jit.load('{TORCHSCRIPT_FILE}'); m.embed_audio(audio); "
            "m.embed_images(images)"
        ),
    }


def _check_parity(difference: float) -> None:
    if not difference <= PARITY_TOLERANCE:
        raise RuntimeError(
            f"TorchScript encoder differs from the model by {difference:.3g} "
            f"(tolerance {PARITY_TOLERANCE}); not exporting it"
        )


def _shapes(inputs: dict[str, list]) -> dict[str, list[str]]:
    return {name: [str(v).removeprefix("torch.") for v in spec] for name, spec in inputs.items()}


def cluster_columns(assignments: pd.DataFrame | None, metadata: pd.DataFrame) -> list[str]:
    """The clustering columns of ``assignments``: all but ``item_id`` and metadata columns."""
    if assignments is None:
        return []
    return [c for c in assignments.columns if c != "item_id" and c not in metadata.columns]
