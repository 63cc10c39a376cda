r"""Adapters for Planetoid folders and saved PyG ``Data`` files.

Adapters (all share the edge and node policies below):

* ``planetoid``: a Planetoid raw folder (``ind.<name>.{x,tx,allx,y,ty,ally,graph,
  test.index}``, Yang et al. 2016), read with PyG's ``read_planetoid_data``. Features,
  labels (column ``label``) and the public split (``train_mask``/``val_mask``/``test_mask``)
  come from PyG; a node whose one-hot label row is all zero (Citeseer's unlabelled test
  nodes) gets a null label instead of PyG's class 0. Node ids are the node indices. These
  files are Python pickles: read only files you trust.
* ``pyg_data``: a ``torch.save``-d ``torch_geometric.data.Data`` (read with
  ``weights_only=True``, so a file cannot run code): ``x`` and ``edge_index`` are required;
  ``y`` (negative values = unlabelled) and 1-D boolean ``train_mask``/``val_mask``/
  ``test_mask`` are used when present.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data
from torch_geometric.io.planetoid import read_file, read_planetoid_data

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs.cleaning import (
    LABEL,
    PLANETOID_PARTS,
    PYG_SAFE_GLOBALS,
    SPLIT_MASKS,
    GraphAdapter,
)
from scicontrast.errors import InputDataError
from scicontrast.registry import ADAPTERS


@ADAPTERS.register("planetoid")
class PlanetoidAdapter(GraphAdapter):
    """A Planetoid raw folder (Cora, Citeseer, PubMed format); see the module docstring.

    Args:
        root: The folder holding ``ind.<name>.*``.
        name: The ``<name>`` part; ``None`` infers it when the folder holds one data set.
        **policies: ``undirected``, ``self_loops``, ``duplicate_edges``, ``isolated_nodes``,
            ``normalize_features`` (module docstring).
    """

    input_param = ("root",)

    def __init__(self, root: str, name: str | None = None, **policies: Any) -> None:
        super().__init__(**policies)
        self.root = Path(root)
        self.name = name

    def _name(self) -> str:
        if self.name is not None:
            return self.name
        names = sorted(p.name[len("ind.") : -len(".x")] for p in self.root.glob("ind.*.x"))
        if len(names) != 1:
            found = f"found {names}" if names else "found none"
            raise InputDataError(
                f"{self.root}: expected the files of one Planetoid data set (ind.<name>.x), "
                f"{found}; set adapter params.name"
            )
        return names[0]

    def input_files(self) -> list[Path]:
        name = self._name()
        return [self.root / f"ind.{name}.{part}" for part in PLANETOID_PARTS]

    def read(self) -> Items:
        name = self._name()
        parts = {}
        for part, path in zip(PLANETOID_PARTS, self.input_files(), strict=True):
            if not path.is_file():
                raise InputDataError(f"{path}: Planetoid file not found")
            try:
                parts[part] = read_file(str(self.root), name, part)
            except Exception as exc:  # pickle and numpy raise many types for a bad file
                raise InputDataError(f"{path}: not a readable Planetoid file ({exc})") from None
        graph_path = self.root / f"ind.{name}.graph"
        graph = parts["graph"]
        if not isinstance(graph, dict):
            raise InputDataError(f"{graph_path}: expected a dict node -> neighbours")
        n_nodes = len(graph)
        sources, targets = [], []
        for node, neighbours in graph.items():
            for neighbour in neighbours:
                if not (0 <= node < n_nodes and 0 <= neighbour < n_nodes):
                    raise InputDataError(
                        f"{graph_path}: node {node} lists neighbour {neighbour}, but the graph "
                        f"has nodes 0..{n_nodes - 1}"
                    )
                sources.append(node)
                targets.append(neighbour)
        try:
            data = read_planetoid_data(str(self.root), name)
        except Exception as exc:  # inconsistent part sizes surface as index errors
            raise InputDataError(f"{self.root}/ind.{name}.*: inconsistent files ({exc})") from None
        if data.num_nodes != n_nodes:
            raise InputDataError(
                f"{graph_path}: {n_nodes} nodes, but the feature files give {data.num_nodes}"
            )

        # PyG takes the argmax of each one-hot label row, so an all-zero row (no label)
        # would read as class 0. Row j of ty belongs to node test.index[j].
        known = np.zeros(n_nodes, dtype=bool)
        known[: len(parts["ally"])] = (parts["ally"].sum(dim=1) > 0).numpy()
        known[parts["test.index"].numpy()] = (parts["ty"].sum(dim=1) > 0).numpy()
        table = pd.DataFrame({"item_id": np.arange(n_nodes)})
        table[LABEL] = pd.array(np.where(known, data.y.numpy(), 0), dtype="Int64")
        table.loc[~known, LABEL] = pd.NA
        for mask in SPLIT_MASKS.values():
            table[mask] = data[mask].numpy()
        x = data.x.to_dense() if data.x.layout != torch.strided else data.x
        features = x.numpy()
        if not np.isfinite(features).all():
            row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
            raise InputDataError(f"{self.root}/ind.{name}.*: node {row} has a non-finite feature")
        edges = np.array([sources, targets], dtype=np.int64).reshape(2, -1)
        return self._graph_items(
            table,
            features,
            edges,
            edge_where=lambda k: f"{graph_path}: node {edges[0, k]}, neighbour {edges[1, k]}",
            node_where=lambda i: f"{graph_path}: node {i}",
            cleaning={"unlabelled_nodes": int((~known).sum())},
            sources=(f"{self.root}/ind.{name}.*", str(graph_path)),
            label_column=LABEL,
        )


# --- saved PyG Data ----------------------------------------------------------------------


@ADAPTERS.register("pyg_data")
class PyGDataAdapter(GraphAdapter):
    """A ``torch.save``-d ``torch_geometric.data.Data``; see the module docstring.

    Args:
        path: The file.
        missing_nodes: An edge naming a node index outside ``0..N-1``: ``"error"`` or
            ``"drop"``.
        missing_features: A NaN feature: ``"error"`` or ``"zero"``.
        **policies: As for every graph adapter (module docstring).
    """

    input_param = ("path",)

    def __init__(
        self,
        path: str,
        missing_nodes: str = "error",
        missing_features: str = "error",
        **policies: Any,
    ) -> None:
        super().__init__(**policies)
        self.path = Path(path)
        self.missing_nodes = missing_nodes
        self.missing_features = missing_features
        self._choice("missing_nodes", missing_nodes, ("error", "drop"))
        self._choice("missing_features", missing_features, ("error", "zero"))

    def input_files(self) -> list[Path]:
        return [self.path]

    def read(self) -> Items:
        path = self.path
        if not path.is_file():
            raise InputDataError(f"{path}: file not found")
        try:
            with torch.serialization.safe_globals(PYG_SAFE_GLOBALS):
                data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged or foreign file
            raise InputDataError(f"{path}: not a readable saved PyG Data object ({exc})") from None
        if not isinstance(data, Data):
            raise InputDataError(
                f"{path}: holds a {type(data).__name__}, expected a torch_geometric.data.Data"
            )
        for key in ("x", "edge_index"):
            if getattr(data, key, None) is None:
                raise InputDataError(f"{path}: the Data object has no {key!r}")
        x = data.x.to_dense() if data.x.layout != torch.strided else data.x
        if x.ndim != 2 or x.is_complex():
            raise InputDataError(f"{path}: x must be a [N, F] numeric tensor, got {tuple(x.shape)}")
        features = x.double().numpy()
        n_nodes = len(features)
        cleaning: dict[str, int] = {}
        features = _finite_or_policy(
            features,
            self.missing_features,
            lambda i, j: f"{path}: x[{i}, {j}]",
            cleaning,
        )
        edges = data.edge_index
        if edges.ndim != 2 or edges.shape[0] != 2 or edges.is_floating_point():
            raise InputDataError(
                f"{path}: edge_index must be an integer [2, E] tensor, got {tuple(edges.shape)}"
            )
        edges = edges.long().numpy()
        outside = np.flatnonzero(((edges < 0) | (edges >= n_nodes)).any(axis=0))
        if outside.size and self.missing_nodes == "error":
            k = int(outside[0])
            raise InputDataError(
                f"{path}: edge_index[:, {k}] = ({edges[0, k]}, {edges[1, k]}) names a node "
                f"outside 0..{n_nodes - 1} (missing_nodes: error)"
            )
        cleaning["edges_with_missing_nodes"] = int(outside.size)
        edges = np.delete(edges, outside, axis=1)

        table = pd.DataFrame({"item_id": np.arange(n_nodes)})
        y = getattr(data, "y", None)
        if y is not None:
            y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
            if y.shape != (n_nodes,) or y.is_floating_point():
                raise InputDataError(
                    f"{path}: y must hold one integer class per node, got {tuple(y.shape)}"
                )
            labels = pd.array(y.long().numpy(), dtype="Int64")
            labels[labels < 0] = pd.NA
            table[LABEL] = labels
            cleaning["unlabelled_nodes"] = int(labels.isna().sum())
        for mask in SPLIT_MASKS.values():
            value = getattr(data, mask, None)
            if value is not None and value.dtype == torch.bool and value.shape == (n_nodes,):
                table[mask] = value.numpy()
        return self._graph_items(
            table,
            features,
            edges,
            edge_where=lambda k: f"{path}: edge {k} ({edges[0, k]} -> {edges[1, k]})",
            node_where=lambda i: f"{path}: node {i}",
            cleaning=cleaning,
            sources=(str(path), str(path)),
            label_column=LABEL if y is not None else None,
        )


def _finite_or_policy(
    features: np.ndarray, missing: str, where: Callable[[int, int], str], cleaning: dict
) -> np.ndarray:
    """Raise on infinite values; NaN is an error or 0 (``missing="zero"``), counted."""
    infinite = np.argwhere(np.isinf(features))
    if len(infinite):
        raise InputDataError(f"{where(*infinite[0])}: infinite feature value")
    nan = np.isnan(features)
    if nan.any() and missing == "error":
        raise InputDataError(f"{where(*np.argwhere(nan)[0])}: missing (NaN) feature value")
    cleaning["missing_features_zeroed"] = int(nan.sum())
    return np.where(nan, 0.0, features)
