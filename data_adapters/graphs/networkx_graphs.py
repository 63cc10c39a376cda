r"""The ``networkx`` adapter: GraphML, GML and edge-list files.

* ``networkx``: a GraphML (``.graphml``), GML (``.gml``) or edge-list (``.edgelist``,
  ``.edges``) file read with networkx; node attributes (or a ``node_table`` as for
  ``graph_table``) give the features and labels. An undirected networkx graph is always
  read as undirected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from scicontrast.data_adapters.base import Items, one_path_each
from scicontrast.data_adapters.graphs.cleaning import GraphAdapter
from scicontrast.data_adapters.graphs.tables import (
    NODE_PARAMS_DOC,
    NodeColumns,
    Table,
    edge_rows,
    node_rows,
)
from scicontrast.errors import InputDataError
from scicontrast.registry import ADAPTERS

_NETWORKX_FORMATS = {
    ".graphml": "graphml",
    ".gml": "gml",
    ".edgelist": "edgelist",
    ".edges": "edgelist",
}


# The column holding networkx node names when node attributes form the node table.
_NODE_NAME = "__node_name__"


@ADAPTERS.register("networkx")
class NetworkxAdapter(GraphAdapter):
    __doc__ = (
        """A GraphML, GML or edge-list file read with networkx; see the module docstring.

    Node attributes are the node table (``node_id_column`` is ignored: ids are the networkx
    node names) unless ``node_table`` gives one; GML nodes are named by their ``label``.

    Args:
        path: The graph file.
        format: ``"graphml"``, ``"gml"`` or ``"edgelist"``; ``None`` infers it from the
            extension (``.graphml``, ``.gml``, ``.edgelist``, ``.edges``).
        node_table: A CSV/TSV/Parquet node table for features and labels."""
        + NODE_PARAMS_DOC
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
        metadata_columns: Sequence[str] = (),
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
        self.columns = NodeColumns(
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
            nodes = Table.read(self.node_table)
        else:
            attributes = [{_NODE_NAME: name, **attrs} for name, attrs in graph.nodes(data=True)]
            frame = pd.DataFrame(attributes, columns=_attribute_columns(attributes))
            names = frame[_NODE_NAME].tolist()
            nodes = Table(frame, str(self.path), lambda i: f"node {names[i]!r}")
        table, features = self.columns.parse(nodes, cleaning)
        edge_list = list(graph.edges())
        edge_index, kept = edge_rows(
            pd.Series([str(u) for u, _ in edge_list], dtype=object),
            pd.Series([str(v) for _, v in edge_list], dtype=object),
            node_rows(table["item_id"]),
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
