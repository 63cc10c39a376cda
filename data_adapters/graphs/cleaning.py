r"""The policies every graph adapter shares, and the items set of a graph.

Items set of a graph (one folder, see :class:`~scicontrast.data_adapters.base.Items`)::

    items.parquet          one row per node, in node order: item_id (the node id), the label
                           column (if any; missing labels are null), train_mask / val_mask /
                           test_mask (bool, when the source defines a public split) and any
                           metadata columns
    features.npy           float32 [N, F] node features, row i = node i
    edge_index.extra.npy   int64 [2, E] edges source -> target as row indices, coalesced
                           (sorted, no duplicates), both directions of an undirected edge
    meta.json              modality "graph", num_nodes, num_edges, num_features, undirected,
                           label_column, and "cleaning": what the adapter removed or kept

trained with one, the new node table. The features must be the training graph's features
(same columns, same meaning); node tables need the columns the config names.

Bad input. Rows are counted from 1 after the header; every error names the file and the row,
node or edge, and nothing is written:

============================  ============================================================
edge naming a missing node    ``missing_nodes="error"`` (default) stops; ``"drop"`` drops the
                              edge (counted in ``cleaning.edges_with_missing_nodes``)
duplicate edge                the same (source, target) listed again: ``duplicate_edges=
                              "merge"`` (default) keeps one (counted), ``"error"`` stops
self-loop                     ``self_loops="remove"`` (default; GCN adds its own) counts and
                              drops it, ``"error"`` stops
isolated node                 ``isolated_nodes="keep"`` (default; it is embedded from its own
                              features) counts it, ``"drop"`` removes it, ``"error"`` stops
non-numeric feature           always an error naming the column and the value
missing (empty/NaN) feature   ``missing_features="error"`` (default) stops, ``"zero"`` reads
                              0 and counts it
infinite feature              always an error
label not in ``classes``      ``unknown_labels="error"`` (default) stops, ``"missing"`` makes
                              the label null; without ``classes`` every non-empty value is a
                              class. Empty labels are null (unlabelled nodes: the probes skip
                              them)
duplicate node id             always an error
no nodes, or no features      always an error naming the node file: nothing to embed
no edges (after cleaning)     always an error naming the edge file (with what cleaning
                              removed): views drop edges and encoders propagate along them.
                              Nodes without edges beside connected ones are isolated nodes
============================  ============================================================

With ``undirected=True`` (default) every edge is added in both directions (PyG's
``to_undirected``). ``normalize_features=True`` applies PyG's ``NormalizeFeatures`` (shift
to a zero minimum, divide each row by its sum when that exceeds 1), as GRACE does on
Planetoid bag-of-words features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage
from torch_geometric.utils import coalesce, to_undirected

from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.errors import ConfigError, InputDataError

MODALITY = "graph"
FEATURES = "features"
EDGE_INDEX = "edge_index"
LABEL = "label"
SPLIT_MASKS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}
PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
PYG_SAFE_GLOBALS = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]


Locator = Callable[[int], str]


# --- shared cleaning ---------------------------------------------------------------------


class GraphAdapter(Adapter):
    """Policies shared by every graph adapter (see the module docstring)."""

    def __init__(
        self,
        undirected: bool = True,
        self_loops: str = "remove",
        duplicate_edges: str = "merge",
        isolated_nodes: str = "keep",
        normalize_features: bool = False,
    ) -> None:
        self.undirected = undirected
        self.self_loops = self_loops
        self.duplicate_edges = duplicate_edges
        self.isolated_nodes = isolated_nodes
        self.normalize_features = normalize_features
        self._choice("self_loops", self_loops, ("remove", "error"))
        self._choice("duplicate_edges", duplicate_edges, ("merge", "error"))
        self._choice("isolated_nodes", isolated_nodes, ("keep", "drop", "error"))
        for key in ("undirected", "normalize_features"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(
                    f"adapter {self.registry_name}: params.{key} must be true or false"
                )

    def _choice(self, key: str, value: Any, allowed: tuple) -> None:
        if value not in allowed:
            raise ConfigError(
                f"adapter {self.registry_name}: params.{key}: must be one of {list(allowed)}, "
                f"got {value!r}"
            )

    def _graph_items(
        self,
        table: pd.DataFrame,
        features: np.ndarray,
        edges: np.ndarray,
        edge_where: Locator,
        node_where: Locator,
        cleaning: dict[str, int],
        sources: tuple[str, str],
        label_column: str | None = None,
        undirected: bool | None = None,
    ) -> Items:
        """Apply the edge and node policies and assemble the items set.

        A graph without nodes, without node features or without any edge once cleaned is
        an :class:`InputDataError` naming the file (module docstring, "Bad input").

        Args:
            table: One row per node: ``item_id`` and metadata columns.
            features: ``[N, F]`` finite floats.
            edges: ``[2, E]`` int64 row indices, in input order (for error messages).
            edge_where, node_where: Describe edge ``k`` / node ``i`` as "file, row".
            sources: The files the nodes and the edges came from, for whole-graph errors.
            cleaning: Counts from reading, extended here and stored in ``meta``.
            label_column: The table's label column, if any.
            undirected: Overrides ``self.undirected`` (an undirected networkx graph).
        """
        n_nodes = len(table)
        node_source, edge_source = sources
        if n_nodes == 0:
            raise InputDataError(f"{node_source}: the graph has no nodes")
        if features.shape[1] == 0:
            raise InputDataError(
                f"{node_source}: the nodes have no features ([{n_nodes}, 0]); graph encoders "
                "need at least one (a column of ones, or each node's degree, will do)"
            )
        undirected = self.undirected if undirected is None else undirected
        source, target = edges
        loops = np.flatnonzero(source == target)
        if loops.size and self.self_loops == "error":
            raise InputDataError(f"{edge_where(int(loops[0]))}: self-loop (self_loops: error)")
        cleaning["self_loops_removed"] = int(loops.size)
        kept = np.flatnonzero(source != target)
        _, first = np.unique(source[kept] * n_nodes + target[kept], return_index=True)
        # A mask, not np.setdiff1d(arange, first), which sorts 2E int64 values (~1 GB at 10^7).
        repeated_mask = np.ones(kept.size, dtype=bool)
        repeated_mask[first] = False
        repeated = np.flatnonzero(repeated_mask)
        if repeated.size and self.duplicate_edges == "error":
            raise InputDataError(
                f"{edge_where(int(kept[repeated[0]]))}: duplicate edge (duplicate_edges: error)"
            )
        cleaning["duplicate_edges_merged"] = int(repeated.size)

        edge_index = torch.from_numpy(edges[:, kept]).long()
        if undirected:
            edge_index = to_undirected(edge_index, num_nodes=n_nodes)
        else:
            edge_index = coalesce(edge_index, num_nodes=n_nodes)
        if edge_index.shape[1] == 0:
            removed = {k: v for k, v in cleaning.items() if v and ("edge" in k or "loop" in k)}
            raise InputDataError(
                f"{edge_source}: the graph has no edges (removed while reading: {removed}); "
                "graph views drop edges and graph encoders propagate along them, so a graph "
                "needs at least one"
            )

        degree = np.bincount(edge_index.reshape(-1).numpy(), minlength=n_nodes)
        isolated = np.flatnonzero(degree == 0)
        if isolated.size and self.isolated_nodes == "error":
            node = table["item_id"].iloc[isolated[0]]
            raise InputDataError(
                f"{node_where(int(isolated[0]))}: isolated node {node!r} (no edge; "
                "isolated_nodes: error)"
            )
        cleaning["isolated_nodes"] = int(isolated.size)
        if isolated.size and self.isolated_nodes == "drop":
            keep = degree > 0
            new_index = np.cumsum(keep) - 1
            edge_index = torch.from_numpy(new_index[edge_index.numpy()])
            table = table[keep].reset_index(drop=True)
            features = features[keep]
            cleaning["isolated_nodes_dropped"] = int(isolated.size)

        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        if self.normalize_features:
            x = T.NormalizeFeatures()(Data(x=x)).x
        meta = {
            "modality": MODALITY,
            "num_nodes": len(table),
            "num_edges": int(edge_index.shape[1]),
            "num_features": int(x.shape[1]),
            "undirected": undirected,
            "label_column": label_column,
            "payload_columns": [],
            "cleaning": cleaning,
        }
        return Items(
            table=table,
            meta=meta,
            arrays={FEATURES: x.numpy()},
            extras={EDGE_INDEX: edge_index.numpy().astype(np.int64)},
        )
