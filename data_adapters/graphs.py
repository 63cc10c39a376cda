r"""Graphs: node-level adapters for five file formats and GRACE's two-view pair builder.

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
* ``graph_table``: a node table and an edge table, each CSV (``.csv``), TSV (``.tsv``,
  ``.tab``, ``.txt``) or Parquet (``.parquet``, ``.pq``). The node table has a node id
  column, feature columns (by default every column that is not the id, label, split or a
  metadata column), optionally a label column and a split column (``train``, ``val``,
  ``test``, or empty). The edge table has a source and a target column; other columns (e.g.
  weights) are ignored. Ids are compared as text.
* ``networkx``: a GraphML (``.graphml``), GML (``.gml``) or edge-list (``.edgelist``,
  ``.edges``) file read with networkx; node attributes (or a ``node_table`` as for
  ``graph_table``) give the features and labels. An undirected networkx graph is always
  read as undirected.

A trained model embeds a new graph through the adapter it was trained with, with every
other setting unchanged (``scicontrast embed --model model.pt PATH... --out FOLDER``):
``planetoid`` takes the new folder, ``pyg_data`` the new file, ``graph_table`` the new node
and edge tables in that order, ``networkx`` the new graph file and, when the model was
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

Views (:class:`GraphViews`, GRACE: Zhu et al., "Deep Graph Contrastive Representation
Learning", 2020). Each training step draws two views of the whole graph, view ``k`` dropping
every edge with probability ``drop_edge_rate_k`` (PyG ``dropout_edge``) and zeroing every
feature column with probability ``mask_feature_rate_k`` for all nodes at once (PyG
``mask_feature``, ``mode="col"``). Node ``i``'s positive is node ``i`` in the other view;
every other node of both views is a negative. With ``neighbours_as_positives`` the nodes
that ``i`` has an edge to in the other view count as positives too (multi-positive InfoNCE).
The randomness of step ``(seed, epoch)`` and view ``k`` comes from a torch seed derived from
``(seed, epoch, k)`` inside ``torch.random.fork_rng``, so views are reproducible, a resumed
run sees the same views, and the caller's random state is untouched. A training epoch is one
optimisation step on the full graph (``training.batch_size`` is unused).

Diffusion view (``diffusion_view: ppr``; MVGRL: Hassani & Khasahmadi, "Contrastive
Multi-View Representation Learning on Graphs", ICML 2020; GDC: Klicpera, Weißenberger &
Günnemann, "Diffusion Improves Graph Learning", NeurIPS 2019). View 2 is then drawn from the
personalized-PageRank diffusion of the graph instead of its adjacency, computed once per
graph (PyG's ``GDC`` transform, exact, in float64) as

.. math::

    T = D^{-1/2} (A + I) D^{-1/2}, \qquad
    S = \alpha \bigl(I - (1 - \alpha) T\bigr)^{-1}
      = \alpha \sum_{t \ge 0} (1 - \alpha)^t T^t,

with ``D`` the degree matrix of ``A + I`` and :math:`\alpha` = ``ppr_alpha`` the teleport
(restart) probability. ``S`` is dense; it is sparsified GDC's way: every column ``j`` (node
``j``) keeps its ``ppr_top_k`` largest entries :math:`S_{ij}`, which become edges
``i -> j`` (``j`` aggregates from the ``k`` nodes that diffuse most into it), and the kept
entries of each column are scaled to sum to 1 (GDC's ``normalization_out="col"``). Entries
that are exactly zero (nodes outside ``j``'s connected component, which GDC's top-k would
keep as fillers when the component has fewer than ``k`` nodes) are left out, so a node keeps
``min(k, size of its component)`` entries (Cora, ``k = 32``: 80,839 edges; 223 nodes in
small components keep fewer). Self-loops are entries like any other (:math:`S_{jj} \ge
\alpha`; on Cora every node's own entry is its largest, so every node keeps it). The exact
inverse is dense: memory ``O(N^2)``, time ``O(N^3)`` (Cora: about 2 s, once).

The diffusion view carries ``edge_weight`` (the kept, normalised :math:`S_{ij}`); view 1
then carries ``edge_weight`` of ones so that the two views batch together (GCN with unit
weights is GCN without weights). Edge drop (``drop_edge_rate_2``) removes each off-diagonal
diffusion edge, with its weight, with that probability; the self-loops are always kept,
since GCN layers would otherwise re-add a dropped one with weight 1 instead of
:math:`S_{jj}`. Feature masking (``mask_feature_rate_2``) is unchanged. Only the ``gcn``
encoder uses edge weights (``GCNConv``'s normalisation leaves a column-stochastic ``S``
unchanged when its self-loops are present, as its weighted in-degrees are 1, and rescales a
view with dropped edges by its remaining in-degrees); ``gat`` and ``gin`` refuse a batch
that carries them. With ``neighbours_as_positives`` the positives come from view 1's
(adjacency) edges alone, in both directions: node ``i`` of either view has as positives its
kept view-1 neighbours ``j`` in the other view; the diffusion edges (``k`` weighted
neighbours per node, most of them not adjacent) are not positives.
Embeddings are still computed on the clean adjacency graph (``embedding_batches``).

Held-out nodes (``training.holdout_fraction``). Training on a pairs table that lacks some
nodes still propagates over the whole graph (the transductive setting of GRACE), but the
loss leaves those nodes out entirely: not anchors, not positives, not negatives. The batch
then carries ``loss_rows``, the rows of the two views that enter the loss, and the loss sees
``z[loss_rows]``; the diagnostics score the held-out nodes the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage
from torch_geometric.io.planetoid import read_file, read_planetoid_data
from torch_geometric.utils import coalesce, dropout_edge, mask_feature, to_undirected

from scicontrast.data_adapters.base import Adapter, Items, PairBuilder, one_path_each
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.classical import ClassicalFeatures, propagated_features
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS, PAIR_BUILDERS

MODALITY = "graph"
FEATURES = "features"
EDGE_INDEX = "edge_index"
LABEL = "label"
SPLIT_MASKS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}
PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
PYG_SAFE_GLOBALS = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]

_TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".pq")
_NETWORKX_FORMATS = {
    ".graphml": "graphml",
    ".gml": "gml",
    ".edgelist": "edgelist",
    ".edges": "edgelist",
}
_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}
# The column holding networkx node names when node attributes form the node table.
_NODE_NAME = "__node_name__"

Locator = Callable[[int], str]


# --- shared cleaning ---------------------------------------------------------------------


class _GraphAdapter(Adapter):
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
        repeated = np.setdiff1d(np.arange(kept.size), first)
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


# --- Planetoid ---------------------------------------------------------------------------


@ADAPTERS.register("planetoid")
class PlanetoidAdapter(_GraphAdapter):
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
class PyGDataAdapter(_GraphAdapter):
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


# --- tables ------------------------------------------------------------------------------


class _Table:
    """A node or edge table and how to name its rows in messages (from 1, after the header)."""

    def __init__(self, frame: pd.DataFrame, source: str, row_name: Callable[[int], str]) -> None:
        self.frame = frame
        self.source = source
        self._row_name = row_name

    def where(self, row: int) -> str:
        return f"{self.source}, {self._row_name(row)}"

    def column(self, name: str, what: str) -> pd.Series:
        if name not in self.frame.columns:
            raise InputDataError(
                f"{self.source}: no {what} column {name!r}; columns: "
                f"{', '.join(map(str, self.frame.columns))}"
            )
        return self.frame[name]

    @classmethod
    def read(cls, path: str | Path) -> _Table:
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in _PARQUET_SUFFIXES and suffix not in _TABLE_SEPARATORS:
            raise InputDataError(
                f"{path}: unknown table format {suffix!r}; use .csv, .tsv, .tab, .txt, "
                ".parquet or .pq"
            )
        if not path.is_file():
            raise InputDataError(f"{path}: file not found")
        try:
            if suffix in _PARQUET_SUFFIXES:
                frame = pd.read_parquet(path)
            else:
                # Text as text: ids keep leading zeros, and a bad value can be quoted back.
                frame = pd.read_csv(
                    path, sep=_TABLE_SEPARATORS[suffix], dtype=str, keep_default_na=False
                )
        except Exception as exc:  # pandas and pyarrow raise many types for a bad file
            raise InputDataError(f"{path}: not a readable table ({exc})") from None
        return cls(frame.reset_index(drop=True), str(path), lambda i: f"row {i + 1}")


def _is_missing(values: pd.Series) -> np.ndarray:
    text = values.astype("string").str.strip().str.lower()
    return (values.isna() | text.isna() | text.isin(_MISSING_TEXT)).to_numpy(dtype=bool)


def _as_ids(values: pd.Series) -> pd.Series:
    return values.map(lambda v: v if isinstance(v, str) else str(v))


class _NodeColumns:
    """How a node table (or a networkx graph's node attributes) maps onto items."""

    def __init__(
        self,
        registry_name: str,
        node_id_column: str,
        label_column: str | None,
        classes: list | None,
        unknown_labels: str,
        feature_columns: list[str] | None,
        metadata_columns: list[str],
        split_column: str | None,
        missing_features: str,
    ) -> None:
        self.node_id_column = node_id_column
        self.label_column = label_column
        self.classes = None if classes is None else [str(c) for c in classes]
        self.unknown_labels = unknown_labels
        self.feature_columns = feature_columns
        self.metadata_columns = list(metadata_columns)
        self.split_column = split_column
        self.missing_features = missing_features
        for key, value, allowed in (
            ("unknown_labels", unknown_labels, ("error", "missing")),
            ("missing_features", missing_features, ("error", "zero")),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"adapter {registry_name}: params.{key}: must be one of {list(allowed)}, "
                    f"got {value!r}"
                )

    def parse(self, nodes: _Table, cleaning: dict[str, int]) -> tuple[pd.DataFrame, np.ndarray]:
        """``(table with item_id, label, masks and metadata; features [N, F] float64)``."""
        frame = nodes.frame
        ids = nodes.column(self.node_id_column, "node id")
        missing_id = np.flatnonzero(_is_missing(ids))
        if missing_id.size:
            raise InputDataError(f"{nodes.where(int(missing_id[0]))}: empty node id")
        ids = _as_ids(ids)
        repeated = np.flatnonzero(ids.duplicated().to_numpy())
        if repeated.size:
            row = int(repeated[0])
            raise InputDataError(f"{nodes.where(row)}: duplicate node id {ids.iloc[row]!r}")
        table = pd.DataFrame({"item_id": ids.to_numpy()})
        reserved = {self.node_id_column}
        if self.label_column is not None:
            table[self.label_column] = self._labels(nodes, cleaning)
            reserved.add(self.label_column)
        if self.split_column is not None:
            for name, mask in self._split_masks(nodes).items():
                table[name] = mask
            reserved.add(self.split_column)
        for column in self.metadata_columns:
            values = nodes.column(column, "metadata")
            if column in table.columns:
                raise InputDataError(f"{nodes.source}: metadata column {column!r} is reserved")
            table[column] = values.to_numpy()
        reserved.update(self.metadata_columns)
        columns = self.feature_columns
        if columns is None:
            columns = [c for c in frame.columns if c not in reserved]
        if not columns:
            raise InputDataError(
                f"{nodes.source}: no feature columns (every column is the id, label, split or "
                "metadata); graph encoders need node features"
            )
        features = np.column_stack([self._numeric(nodes, c, cleaning) for c in columns])
        return table, features

    def _numeric(self, nodes: _Table, column: str, cleaning: dict[str, int]) -> np.ndarray:
        values = nodes.column(column, "feature")
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            numbers = values.astype("float64").to_numpy()
            missing = np.isnan(numbers)
        else:
            missing = _is_missing(values)
            numbers = pd.to_numeric(values.where(~missing), errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
            bad = np.flatnonzero(np.isnan(numbers) & ~missing)
            if bad.size:
                row = int(bad[0])
                raise InputDataError(
                    f"{nodes.where(row)}: feature column {column!r}: {values.iloc[row]!r} is "
                    "not a number"
                )
        infinite = np.flatnonzero(np.isinf(numbers))
        if infinite.size:
            raise InputDataError(
                f"{nodes.where(int(infinite[0]))}: feature column {column!r}: infinite value"
            )
        if missing.any():
            if self.missing_features == "error":
                raise InputDataError(
                    f"{nodes.where(int(np.flatnonzero(missing)[0]))}: feature column {column!r} "
                    "is empty or NaN (set missing_features: zero to read it as 0)"
                )
            cleaning["missing_features_zeroed"] = cleaning.get("missing_features_zeroed", 0) + int(
                missing.sum()
            )
        return np.where(missing, 0.0, numbers)

    def _labels(self, nodes: _Table, cleaning: dict[str, int]) -> pd.Series:
        values = nodes.column(self.label_column, "label")
        missing = _is_missing(values)
        labels = pd.Series(np.where(missing, None, _as_ids(values).str.strip()), dtype="object")
        if self.classes is not None:
            unknown = np.flatnonzero(~missing & ~labels.isin(self.classes).to_numpy())
            if unknown.size and self.unknown_labels == "error":
                row = int(unknown[0])
                raise InputDataError(
                    f"{nodes.where(row)}: label {labels.iloc[row]!r} is not one of the classes "
                    f"{self.classes} (unknown_labels: error)"
                )
            labels.iloc[unknown] = None
            cleaning["unknown_labels"] = int(unknown.size)
        cleaning["unlabelled_nodes"] = int(labels.isna().sum())
        return labels

    def _split_masks(self, nodes: _Table) -> dict[str, np.ndarray]:
        values = nodes.column(self.split_column, "split")
        missing = _is_missing(values)
        split = _as_ids(values).str.strip().str.lower()
        unknown = np.flatnonzero(~missing & ~split.isin(list(SPLIT_MASKS)).to_numpy())
        if unknown.size:
            row = int(unknown[0])
            raise InputDataError(
                f"{nodes.where(row)}: split {values.iloc[row]!r} is not one of train, val, test "
                "or empty"
            )
        return {mask: (split == part).to_numpy() & ~missing for part, mask in SPLIT_MASKS.items()}


def _edge_rows(
    source_ids: pd.Series,
    target_ids: pd.Series,
    item_ids: pd.Series,
    where: Locator,
    missing_nodes: str,
    cleaning: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Edges as ``[2, E]`` node rows, and the input positions of the kept edges."""
    row_of = pd.Series(np.arange(len(item_ids)), index=item_ids.to_numpy())
    rows = []
    for ids in (source_ids, target_ids):
        empty = np.flatnonzero(_is_missing(ids))
        if empty.size:
            raise InputDataError(f"{where(int(empty[0]))}: empty node id in an edge")
        rows.append(row_of.reindex(_as_ids(ids).to_numpy()).to_numpy())
    unknown = np.isnan(rows[0]) | np.isnan(rows[1])
    if unknown.any() and missing_nodes == "error":
        k = int(np.flatnonzero(unknown)[0])
        name = source_ids.iloc[k] if np.isnan(rows[0][k]) else target_ids.iloc[k]
        raise InputDataError(
            f"{where(k)}: edge names node {str(name)!r}, which is not in the node list "
            "(missing_nodes: error)"
        )
    cleaning["edges_with_missing_nodes"] = int(unknown.sum())
    kept = np.flatnonzero(~unknown)
    return np.stack([rows[0][kept], rows[1][kept]]).astype(np.int64).reshape(2, -1), kept


_NODE_PARAMS_DOC = """
        node_id_column: The node table's id column.
        label_column: Column of class labels; ``None``: no labels.
        classes: The known classes; a label outside them follows ``unknown_labels``.
        unknown_labels: ``"error"`` or ``"missing"`` (the label becomes null).
        feature_columns: Feature columns; ``None``: every other column.
        metadata_columns: Columns kept in the items table, not used as features.
        split_column: Column with ``train``/``val``/``test``/empty: the public split.
        missing_features: ``"error"`` or ``"zero"``.
        missing_nodes: An edge naming an unknown node: ``"error"`` or ``"drop"``.
        **policies: ``undirected``, ``self_loops``, ``duplicate_edges``, ``isolated_nodes``,
            ``normalize_features`` (module docstring)."""


@ADAPTERS.register("graph_table")
class GraphTableAdapter(_GraphAdapter):
    __doc__ = (
        """A node table and an edge table (CSV, TSV or Parquet); see the module docstring.

    Args:
        nodes: The node table.
        edges: The edge table.
        source_column, target_column: The edge table's endpoint columns."""
        + _NODE_PARAMS_DOC
        + "\n    "
    )

    input_param = ("nodes", "edges")

    def __init__(
        self,
        nodes: str,
        edges: str,
        node_id_column: str = "node_id",
        source_column: str = "source",
        target_column: str = "target",
        label_column: str | None = None,
        classes: list | None = None,
        unknown_labels: str = "error",
        feature_columns: list[str] | None = None,
        metadata_columns: list[str] = (),
        split_column: str | None = None,
        missing_features: str = "error",
        missing_nodes: str = "error",
        **policies: Any,
    ) -> None:
        super().__init__(**policies)
        self.nodes = Path(nodes)
        self.edges = Path(edges)
        self.source_column = source_column
        self.target_column = target_column
        self.missing_nodes = missing_nodes
        self._choice("missing_nodes", missing_nodes, ("error", "drop"))
        self.columns = _NodeColumns(
            self.registry_name,
            node_id_column,
            label_column,
            classes,
            unknown_labels,
            feature_columns,
            metadata_columns,
            split_column,
            missing_features,
        )

    def input_files(self) -> list[Path]:
        return [self.nodes, self.edges]

    def read(self) -> Items:
        cleaning: dict[str, int] = {}
        nodes = _Table.read(self.nodes)
        table, features = self.columns.parse(nodes, cleaning)
        edges = _Table.read(self.edges)
        edge_index, kept = _edge_rows(
            edges.column(self.source_column, "source"),
            edges.column(self.target_column, "target"),
            table["item_id"],
            edges.where,
            self.missing_nodes,
            cleaning,
        )
        return self._graph_items(
            table,
            features,
            edge_index,
            edge_where=lambda k: edges.where(int(kept[k])),
            node_where=nodes.where,
            cleaning=cleaning,
            sources=(nodes.source, edges.source),
            label_column=self.columns.label_column,
        )


# --- networkx ----------------------------------------------------------------------------


@ADAPTERS.register("networkx")
class NetworkxAdapter(_GraphAdapter):
    __doc__ = (
        """A GraphML, GML or edge-list file read with networkx; see the module docstring.

    Node attributes are the node table (``node_id_column`` is ignored: ids are the networkx
    node names) unless ``node_table`` gives one; GML nodes are named by their ``label``.

    Args:
        path: The graph file.
        format: ``"graphml"``, ``"gml"`` or ``"edgelist"``; ``None`` infers it from the
            extension (``.graphml``, ``.gml``, ``.edgelist``, ``.edges``).
        node_table: A CSV/TSV/Parquet node table for features and labels."""
        + _NODE_PARAMS_DOC
        + "\n    "
    )

    def __init__(
        self,
        path: str,
        format: str | None = None,
        node_table: str | None = None,
        node_id_column: str = "node_id",
        label_column: str | None = None,
        classes: list | None = None,
        unknown_labels: str = "error",
        feature_columns: list[str] | None = None,
        metadata_columns: list[str] = (),
        split_column: str | None = None,
        missing_features: str = "error",
        missing_nodes: str = "error",
        **policies: Any,
    ) -> None:
        super().__init__(**policies)
        self.path = Path(path)
        self.format = format
        self._choice("format", format, (None, *sorted(set(_NETWORKX_FORMATS.values()))))
        self.node_table = None if node_table is None else Path(node_table)
        self.missing_nodes = missing_nodes
        self._choice("missing_nodes", missing_nodes, ("error", "drop"))
        self.columns = _NodeColumns(
            self.registry_name,
            node_id_column if node_table is not None else _NODE_NAME,
            label_column,
            classes,
            unknown_labels,
            feature_columns,
            metadata_columns,
            split_column,
            missing_features,
        )

    @classmethod
    def params_for_new_inputs(cls, params: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        """A new graph file, and a new node table when the model was trained with one."""
        names = ("path", "node_table") if params.get("node_table") is not None else ("path",)
        return {**params, **one_path_each(cls.registry_name, names, paths)}

    def input_files(self) -> list[Path]:
        return [self.path] + ([self.node_table] if self.node_table is not None else [])

    def _read_graph(self) -> nx.Graph:
        path = self.path
        fmt = self.format or _NETWORKX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise InputDataError(
                f"{path}: unknown graph format {path.suffix!r}; use .graphml, .gml, .edgelist "
                "or .edges, or set adapter params.format"
            )
        if not path.is_file():
            raise InputDataError(f"{path}: file not found")
        try:
            if fmt == "graphml":
                return nx.read_graphml(path)
            if fmt == "gml":
                return nx.read_gml(path)
            # A multigraph keeps repeated lines, so they are counted as duplicates.
            return nx.read_edgelist(path, create_using=nx.MultiDiGraph, nodetype=str, data=False)
        except Exception as exc:  # networkx and its parsers raise many types
            raise InputDataError(f"{path}: not a readable {fmt} file ({exc})") from None

    def read(self) -> Items:
        graph = self._read_graph()
        cleaning: dict[str, int] = {}
        if self.node_table is not None:
            nodes = _Table.read(self.node_table)
        else:
            attributes = [{_NODE_NAME: name, **attrs} for name, attrs in graph.nodes(data=True)]
            frame = pd.DataFrame(attributes, columns=_attribute_columns(attributes))
            names = frame[_NODE_NAME].tolist()
            nodes = _Table(frame, str(self.path), lambda i: f"node {names[i]!r}")
        table, features = self.columns.parse(nodes, cleaning)
        edge_list = list(graph.edges())
        edge_index, kept = _edge_rows(
            pd.Series([str(u) for u, _ in edge_list], dtype=object),
            pd.Series([str(v) for _, v in edge_list], dtype=object),
            table["item_id"],
            lambda k: f"{self.path}, edge {edge_list[k][0]!r} -> {edge_list[k][1]!r}",
            self.missing_nodes,
            cleaning,
        )
        return self._graph_items(
            table,
            features,
            edge_index,
            edge_where=lambda k: (
                f"{self.path}, edge {edge_list[kept[k]][0]!r} -> {edge_list[kept[k]][1]!r}"
            ),
            node_where=nodes.where,
            cleaning=cleaning,
            sources=(nodes.source, str(self.path)),
            label_column=self.columns.label_column,
            undirected=self.undirected or not graph.is_directed(),
        )


def _attribute_columns(attributes: list[dict[str, Any]]) -> list[str]:
    """Attribute names in first-seen order (the node name first)."""
    return list(dict.fromkeys(key for record in attributes for key in record))


# --- views -------------------------------------------------------------------------------


def graph_data(items: Items, source: str = "items") -> Data:
    """The graph of a graph items set as a PyG ``Data`` (``x``, ``edge_index``)."""
    if items.meta.get("modality") != MODALITY or FEATURES not in items.arrays:
        raise InputDataError(
            f"{source}: not a graph items set (modality {items.meta.get('modality')!r}); "
            "read it with a graph adapter (planetoid, pyg_data, graph_table, networkx)"
        )
    return Data(
        x=torch.from_numpy(items.arrays[FEATURES]).float(),
        edge_index=torch.from_numpy(items.extras[EDGE_INDEX]).long(),
        num_nodes=len(items),
    )


VIEW_NAMES = ("view_1", "view_2")


@PAIR_BUILDERS.register("graph_views")
class GraphViews(PairBuilder):
    """GRACE's two stochastic views of the whole graph; see the module docstring.

    Args:
        drop_edge_rate_1, drop_edge_rate_2: Edge drop probability of view 1 and view 2.
        mask_feature_rate_1, mask_feature_rate_2: Feature-column mask probability per view.
        neighbours_as_positives: Also count a node's out-neighbours in the other view as
            its positives (with a diffusion view: its view-1 neighbours, in both directions).
        diffusion_view: ``None`` (GRACE: both views from the adjacency) or ``"ppr"``: view 2
            from the personalized-PageRank diffusion (MVGRL; module docstring).
        ppr_alpha: Teleport probability :math:`\alpha` of the PPR diffusion, in (0, 1).
        ppr_top_k: Entries of the diffusion matrix kept per node (column), at least 1.
    """

    DIFFUSIONS = ("ppr",)

    canonical_view = "clean"
    embeds_whole_set = True

    def __init__(
        self,
        drop_edge_rate_1: float = 0.2,
        drop_edge_rate_2: float = 0.4,
        mask_feature_rate_1: float = 0.3,
        mask_feature_rate_2: float = 0.4,
        neighbours_as_positives: bool = False,
        diffusion_view: str | None = None,
        ppr_alpha: float = 0.15,
        ppr_top_k: int = 32,
    ) -> None:
        self.drop_edge_rates = (drop_edge_rate_1, drop_edge_rate_2)
        self.mask_feature_rates = (mask_feature_rate_1, mask_feature_rate_2)
        for key, value in zip(
            ("drop_edge_rate_1", "drop_edge_rate_2", "mask_feature_rate_1", "mask_feature_rate_2"),
            (*self.drop_edge_rates, *self.mask_feature_rates),
            strict=True,
        ):
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ConfigError(
                    f"pairs graph_views: params.{key} must be in [0, 1), got {value!r}"
                )
        if not isinstance(neighbours_as_positives, bool):
            raise ConfigError("pairs graph_views: params.neighbours_as_positives must be a boolean")
        self.neighbours_as_positives = neighbours_as_positives
        if diffusion_view is not None and diffusion_view not in self.DIFFUSIONS:
            raise ConfigError(
                "pairs graph_views: params.diffusion_view must be null or one of "
                f"{list(self.DIFFUSIONS)}, got {diffusion_view!r}"
            )
        if isinstance(ppr_alpha, bool) or not (
            isinstance(ppr_alpha, (int, float)) and 0.0 < ppr_alpha < 1.0
        ):
            raise ConfigError(
                f"pairs graph_views: params.ppr_alpha must be in (0, 1), got {ppr_alpha!r}"
            )
        if isinstance(ppr_top_k, bool) or not (isinstance(ppr_top_k, int) and ppr_top_k >= 1):
            raise ConfigError(
                f"pairs graph_views: params.ppr_top_k must be an integer >= 1, got {ppr_top_k!r}"
            )
        self.diffusion_view = diffusion_view
        self.ppr_alpha = float(ppr_alpha)
        self.ppr_top_k = ppr_top_k
        # (num_nodes, edge_index, diffusion edge_index, diffusion edge_weight) of the last graph.
        self._diffusion: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._data: Data | None = None

    def build(self, items: Items) -> pd.DataFrame:
        """Two rows per node (one per view); ``group_id`` is the node's row."""
        graph_data(items)
        n_nodes = len(items)
        return pd.DataFrame(
            {
                "group_id": np.tile(np.arange(n_nodes), 2),
                "item_id": np.tile(items.table["item_id"].to_numpy(), 2),
                "view": np.repeat(VIEW_NAMES, n_nodes),
            }
        )

    def bind(self, items: Items) -> None:
        self._data = graph_data(items)

    def make_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> torch.Tensor:
        raise TypeError(
            "graph_views draws views of the whole graph, not of one node: use "
            "training_batches / embedding_batches / views"
        )

    def views(self, data: Data, seed: int, epoch: int) -> tuple[Batch, torch.Tensor]:
        """The two views of ``data`` for ``(seed, epoch)``: ``(batch, group_ids [2N])``.

        ``batch`` is a PyG ``Batch`` of the two view graphs (view 1's nodes first); with
        ``neighbours_as_positives`` it carries ``positive_pairs [2, P]``, the rows
        ``(anchor, candidate)`` of each node and its out-neighbours in the other view (with a
        diffusion view: its view-1 neighbours). With a diffusion view both view graphs carry
        ``edge_weight`` (ones for view 1).
        """
        graphs = []
        for view, (edge_rate, feature_rate) in enumerate(
            zip(self.drop_edge_rates, self.mask_feature_rates, strict=True)
        ):
            diffused = view == 1 and self.diffusion_view is not None
            if diffused:
                edge_index, edge_weight = self.diffusion(data)
            # On a GPU (training.augment_on_device) the draws come from its generator.
            with torch.random.fork_rng(devices=[data.x.device] if data.x.is_cuda else []):
                torch.manual_seed(_view_seed(seed, epoch, view))
                if diffused:
                    edge_index, edge_weight = _drop_edges_keep_loops(
                        edge_index, edge_weight, p=edge_rate
                    )
                else:
                    edge_index, _ = dropout_edge(data.edge_index, p=edge_rate)
                x, _ = mask_feature(data.x, p=feature_rate, mode="col")
            graph = Data(x=x, edge_index=edge_index, num_nodes=data.num_nodes)
            if self.diffusion_view is not None:
                graph.edge_weight = (
                    edge_weight if diffused else torch.ones(edge_index.shape[1], dtype=x.dtype)
                )
            graphs.append(graph)
        batch = Batch.from_data_list(graphs)
        n_nodes = data.num_nodes
        if self.neighbours_as_positives:
            first, second = (g.edge_index for g in graphs)
            if self.diffusion_view is not None:
                second = first  # positives from the adjacency view only (module docstring)
            batch.positive_pairs = torch.cat(
                [
                    torch.stack([second[0], second[1] + n_nodes]),
                    torch.stack([first[0] + n_nodes, first[1]]),
                ],
                dim=1,
            )
        return batch, torch.arange(n_nodes, device=data.x.device).repeat(2)

    def diffusion(self, data: Data) -> tuple[torch.Tensor, torch.Tensor]:
        """The sparsified PPR diffusion of ``data``: ``(edge_index [2, E'], edge_weight [E'])``.

        Edges ``i -> j`` with float32 weights, each node ``j``'s (column's) kept entries
        summing to 1 (module docstring, "Diffusion view"). Computed once and reused while
        the graph's edges stay the same.
        """
        if self.diffusion_view is None:
            raise ValueError("graph_views has no diffusion view (params.diffusion_view: null)")
        cached = self._diffusion
        if (
            cached is not None
            and cached[0] == data.num_nodes
            and torch.equal(cached[1], data.edge_index)
        ):
            return cached[2], cached[3]
        gdc = T.GDC(
            self_loop_weight=1,
            normalization_in="sym",
            normalization_out="col",
            diffusion_kwargs={"method": "ppr", "alpha": self.ppr_alpha},
            sparsification_kwargs={"method": "topk", "k": self.ppr_top_k, "dim": 0},
            exact=True,
        )
        n_edges = data.edge_index.shape[1]
        diffused = gdc(
            Data(
                edge_index=data.edge_index.clone(),
                edge_attr=torch.ones(n_edges, dtype=torch.float64),
                num_nodes=data.num_nodes,
            )
        )
        nonzero = diffused.edge_attr > 0  # fillers from outside a small component
        edge_index = diffused.edge_index[:, nonzero]
        edge_weight = diffused.edge_attr[nonzero].float()
        self._diffusion = (data.num_nodes, data.edge_index.clone(), edge_index, edge_weight)
        return edge_index, edge_weight

    def training_batches(
        self,
        items: Items,
        pairs: pd.DataFrame,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> EpochLoader:
        """One full-graph batch of both views per epoch (``batch_size`` is unused).

        The loss covers the nodes of ``pairs`` (a subset of the nodes when some are held out).
        """
        if world_size != 1:
            raise ConfigError(
                "pairs graph_views: full-graph training runs in one process; "
                f"got {world_size} processes"
            )
        expected = self.build(items)
        expected = expected[expected["group_id"].isin(pairs["group_id"])]
        if (
            len(pairs) != len(expected)
            or not (pairs["group_id"].to_numpy() == expected["group_id"].to_numpy()).all()
        ):
            raise InputDataError(
                "the pairs table was not built by graph_views for these items "
                f"({len(pairs)} rows, expected {len(expected)}); rebuild it"
            )
        nodes = np.unique(pairs["group_id"].to_numpy())
        return EpochLoader(GraphViewBatches(self, graph_data(items), seed, torch.as_tensor(nodes)))

    def classical_features(self, items: Items) -> list[ClassicalFeatures]:
        """SGC features ``S^2 X``, PPR features (APPNP's teleport 0.1, 10 hops) and the node
        features ``X`` themselves, no training."""
        data = graph_data(items)
        raw = ClassicalFeatures("node features X", data.x.double().numpy())
        return [
            propagated_features(data.x, data.edge_index, hops=2),
            propagated_features(data.x, data.edge_index, hops=10, teleport=0.1),
            raw,
        ]

    def embedding_batches(self, items: Items, batch_size: int) -> Iterator[Data]:
        """The clean graph, once (``batch_size`` is unused)."""
        yield graph_data(items)


class GraphViewBatches:
    """An epoch of graph training: one step on both views of the full graph (a
    :class:`~scicontrast.data_adapters.loader.BatchPlan`).

    The batch's ``positive_pairs`` come out of the views' PyG batch. With ``nodes`` short of
    every node, the batch carries ``loss_rows`` (those nodes' rows in both views), and
    ``group_ids`` and ``positive_pairs`` are given for those rows only, in their order
    (module docstring, "Held-out nodes").
    """

    def __init__(self, builder: GraphViews, data: Data, seed: int, nodes: torch.Tensor) -> None:
        self.builder = builder
        self.data = data
        self.seed = seed
        self.nodes = nodes
        self.n_groups = len(nodes)

    def __len__(self) -> int:
        return 1

    def batch_keys(self, epoch: int) -> list[int]:
        return [0]

    def to_device(self, device: torch.device) -> None:
        """Edge dropping and feature masking then run on ``device`` (``augment_on_device``)."""
        self.data, self.nodes = self.data.to(device), self.nodes.to(device)

    def make_batch(self, epoch: int, key: int) -> ContrastiveBatch:
        batch, group_ids = self.builder.views(self.data, self.seed, epoch)
        positive_pairs = getattr(batch, "positive_pairs", None)
        if positive_pairs is not None:
            del batch.positive_pairs
        n_nodes = self.data.num_nodes
        if self.n_groups == n_nodes:
            return ContrastiveBatch(batch, group_ids, positive_pairs=positive_pairs)
        rows = torch.cat([self.nodes, self.nodes + n_nodes])
        if positive_pairs is not None:
            # Old row -> position among the loss rows; -1 for rows outside the loss.
            position = torch.full((2 * n_nodes,), -1, dtype=torch.long, device=rows.device)
            position[rows] = torch.arange(len(rows), device=rows.device)
            kept = position[positive_pairs]
            positive_pairs = kept[:, (kept >= 0).all(dim=0)]
        return ContrastiveBatch(
            batch, group_ids[rows], loss_rows=rows, positive_pairs=positive_pairs
        )


def _drop_edges_keep_loops(
    edge_index: torch.Tensor, edge_weight: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop each edge that is not a self-loop with probability ``p`` (PyG ``dropout_edge``)."""
    keep = edge_index[0] == edge_index[1]
    others = ~keep
    _, kept = dropout_edge(edge_index[:, others], p=p)
    keep[others] = kept
    return edge_index[:, keep], edge_weight[keep]


def _view_seed(seed: int, epoch: int, view: int) -> int:
    """A torch seed for view ``view`` of epoch ``epoch``, well mixed from all three."""
    return int(np.random.SeedSequence([seed, epoch, view]).generate_state(1)[0])
