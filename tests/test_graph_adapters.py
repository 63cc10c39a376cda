"""Graph adapters: the five formats, the items set they produce, and every bad-input policy."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import yaml
from conftest import minimal_experiment
from torch_geometric.data import Data

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs.cleaning import EDGE_INDEX, FEATURES
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS


def read(adapter: str, **params) -> Items:
    return ADAPTERS.create({"name": adapter, "params": params}).read()


def edge_set(items: Items) -> set[tuple[str, str]]:
    ids = items.table["item_id"].astype(str).to_numpy()
    return {(ids[u], ids[v]) for u, v in items.extras[EDGE_INDEX].T}


def write_tables(tmp_path: Path, nodes: str, edges: str, suffix: str = ".csv") -> dict:
    nodes_path, edges_path = tmp_path / f"nodes{suffix}", tmp_path / f"edges{suffix}"
    nodes_path.write_text(nodes)
    edges_path.write_text(edges)
    return {"nodes": str(nodes_path), "edges": str(edges_path)}


NODES = "node_id,label,f0,f1\na,x,1,0\nb,y,0,1\nc,x,1,1\nd,,0.5,2\n"
LABELLED = {"label_column": "label"}
EDGES = "source,target\na,b\nb,c\nc,d\n"


# --- Items extras (data_adapters/base.py) ---------------------------------------------------


def test_items_extras_round_trip_apart_from_aligned_arrays(tmp_path):
    items = Items(
        pd.DataFrame({"item_id": ["a", "b", "c"]}),
        meta={"modality": "graph"},
        arrays={"features": np.eye(3, dtype=np.float32)},
        extras={"edge_index": np.array([[0, 1, 1, 2], [1, 0, 2, 1]])},
    )
    items.save(tmp_path / "items")
    assert (tmp_path / "items" / "edge_index.extra.npy").is_file()
    loaded = Items.load(tmp_path / "items")
    assert set(loaded.arrays) == {"features"} and set(loaded.extras) == {"edge_index"}
    np.testing.assert_array_equal(loaded.extras["edge_index"], items.extras["edge_index"])
    np.testing.assert_array_equal(loaded.arrays["features"], items.arrays["features"])


def test_an_aligned_array_cannot_take_an_extra_name():
    with pytest.raises(ValueError, match="extra"):
        Items(pd.DataFrame({"item_id": [1]}), arrays={"x.extra": np.zeros(1)})


# --- graph_table ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_graph_table_reads_nodes_edges_labels_in_every_table_format(tmp_path, suffix):
    if suffix == ".parquet":
        nodes = pd.DataFrame(
            {"node_id": ["a", "b", "c", "d"], "label": ["x", "y", "x", None], "f0": [1, 0, 1, 0.5]}
        )
        nodes["f1"] = [0, 1, 1, 2]
        nodes.to_parquet(tmp_path / "nodes.parquet")
        pd.DataFrame({"source": ["a", "b", "c"], "target": ["b", "c", "d"]}).to_parquet(
            tmp_path / "edges.parquet"
        )
        paths = {"nodes": str(tmp_path / "nodes.parquet"), "edges": str(tmp_path / "edges.parquet")}
    else:
        sep = "," if suffix == ".csv" else "\t"
        paths = write_tables(tmp_path, NODES.replace(",", sep), EDGES.replace(",", sep), suffix)
    items = read("graph_table", label_column="label", **paths)

    assert items.table["item_id"].tolist() == ["a", "b", "c", "d"]
    assert items.table["label"].tolist() == ["x", "y", "x", None]  # empty label: unlabelled
    np.testing.assert_array_equal(
        items.arrays[FEATURES], np.array([[1, 0], [0, 1], [1, 1], [0.5, 2]], dtype=np.float32)
    )
    # Undirected by default: both directions, coalesced (sorted by source, then target).
    assert edge_set(items) == {
        ("a", "b"), ("b", "a"), ("b", "c"), ("c", "b"), ("c", "d"), ("d", "c")
    }  # fmt: skip
    edges = items.extras[EDGE_INDEX]
    assert edges.dtype == np.int64 and (np.diff(edges[0] * 4 + edges[1]) > 0).all()
    assert items.meta["modality"] == "graph" and items.meta["num_nodes"] == 4
    assert items.meta["num_edges"] == 6 and items.meta["num_features"] == 2
    assert items.meta["label_column"] == "label"
    assert items.meta["cleaning"]["unlabelled_nodes"] == 1


def test_directed_graphs_keep_one_direction(tmp_path):
    items = read(
        "graph_table", **LABELLED, undirected=False, **write_tables(tmp_path, NODES, EDGES)
    )
    assert edge_set(items) == {("a", "b"), ("b", "c"), ("c", "d")}


def test_feature_metadata_and_split_columns(tmp_path):
    nodes = "node_id,year,split,f0\na,2001,train,1\nb,2002,val,2\nc,2003,test,3\nd,2004,,4\n"
    items = read(
        "graph_table",
        metadata_columns=["year"],
        split_column="split",
        **write_tables(tmp_path, nodes, EDGES),
    )
    assert items.arrays[FEATURES][:, 0].tolist() == [1, 2, 3, 4]  # year is no feature
    assert items.table["year"].tolist() == ["2001", "2002", "2003", "2004"]
    assert items.table["train_mask"].tolist() == [True, False, False, False]
    assert items.table["val_mask"].tolist() == [False, True, False, False]
    assert items.table["test_mask"].tolist() == [False, False, True, False]


def test_normalize_features_divides_rows_by_their_sums(tmp_path):
    nodes = "node_id,f0,f1,f2\na,1,1,2\nb,0,3,0\nc,0,0,0\nd,0,1,0\n"
    items = read("graph_table", normalize_features=True, **write_tables(tmp_path, nodes, EDGES))
    np.testing.assert_allclose(
        items.arrays[FEATURES], [[0.25, 0.25, 0.5], [0, 1, 0], [0, 0, 0], [0, 1, 0]]
    )


# --- bad input -----------------------------------------------------------------------------


def test_edge_naming_a_missing_node_is_an_error_naming_file_and_row(tmp_path):
    paths = write_tables(tmp_path, NODES, "source,target\na,b\nb,zz\n")
    with pytest.raises(InputDataError, match=r"edges\.csv, row 2: edge names node 'zz'"):
        read("graph_table", **LABELLED, **paths)
    items = read("graph_table", **LABELLED, missing_nodes="drop", **paths)
    assert edge_set(items) == {("a", "b"), ("b", "a")}
    assert items.meta["cleaning"]["edges_with_missing_nodes"] == 1


def test_duplicate_edges_are_merged_and_counted_or_rejected(tmp_path):
    paths = write_tables(tmp_path, NODES, "source,target\na,b\nb,c\na,b\nc,d\n")
    items = read("graph_table", **LABELLED, **paths)
    assert items.meta["cleaning"]["duplicate_edges_merged"] == 1
    assert items.meta["num_edges"] == 6
    with pytest.raises(InputDataError, match=r"edges\.csv, row 3: duplicate edge"):
        read("graph_table", **LABELLED, duplicate_edges="error", **paths)


def test_self_loops_are_removed_and_counted_or_rejected(tmp_path):
    paths = write_tables(tmp_path, NODES, "source,target\na,b\nc,c\nb,c\nc,d\n")
    items = read("graph_table", **LABELLED, **paths)
    assert items.meta["cleaning"]["self_loops_removed"] == 1
    assert ("c", "c") not in edge_set(items)
    with pytest.raises(InputDataError, match=r"edges\.csv, row 2: self-loop"):
        read("graph_table", **LABELLED, self_loops="error", **paths)


def test_isolated_nodes_are_kept_dropped_or_rejected(tmp_path):
    paths = write_tables(tmp_path, NODES, "source,target\na,b\nb,d\n")  # c has no edge
    kept = read("graph_table", **LABELLED, **paths)
    assert len(kept) == 4 and kept.meta["cleaning"]["isolated_nodes"] == 1

    dropped = read("graph_table", **LABELLED, isolated_nodes="drop", **paths)
    assert dropped.table["item_id"].tolist() == ["a", "b", "d"]
    np.testing.assert_array_equal(dropped.arrays[FEATURES][:, 1], [0, 1, 2])  # rows follow
    assert edge_set(dropped) == {("a", "b"), ("b", "a"), ("b", "d"), ("d", "b")}

    with pytest.raises(InputDataError, match=r"nodes\.csv, row 3: isolated node 'c'"):
        read("graph_table", **LABELLED, isolated_nodes="error", **paths)


def test_non_numeric_feature_names_file_row_column_and_value(tmp_path):
    nodes = "node_id,f0,f1\na,1,0\nb,0,one\nc,1,1\nd,0,0\n"
    with pytest.raises(
        InputDataError, match=r"nodes\.csv, row 2: feature column 'f1': 'one' is not a number"
    ):
        read("graph_table", **write_tables(tmp_path, nodes, EDGES))


@pytest.mark.parametrize("missing", ["", "NaN", "nan"])
def test_missing_features_are_an_error_or_zero(tmp_path, missing):
    nodes = f"node_id,f0,f1\na,1,0\nb,0,1\nc,{missing},1\nd,0,0\n"
    paths = write_tables(tmp_path, nodes, EDGES)
    with pytest.raises(InputDataError, match=r"nodes\.csv, row 3: feature column 'f0' is empty"):
        read("graph_table", **paths)
    items = read("graph_table", missing_features="zero", **paths)
    assert items.arrays[FEATURES][2].tolist() == [0, 1]
    assert items.meta["cleaning"]["missing_features_zeroed"] == 1


def test_infinite_features_are_always_an_error(tmp_path):
    nodes = "node_id,f0\na,1\nb,inf\nc,1\nd,0\n"
    with pytest.raises(InputDataError, match=r"row 2: feature column 'f0': infinite"):
        read("graph_table", missing_features="zero", **write_tables(tmp_path, nodes, EDGES))


def test_labels_outside_the_declared_classes(tmp_path):
    nodes = "node_id,label,f0\na,x,1\nb,y,0\nc,w,1\nd,,0\n"
    paths = write_tables(tmp_path, nodes, EDGES)
    with pytest.raises(InputDataError, match=r"row 3: label 'w' is not one of the classes"):
        read("graph_table", label_column="label", classes=["x", "y"], **paths)
    items = read(
        "graph_table", label_column="label", classes=["x", "y"], unknown_labels="missing", **paths
    )
    assert items.table["label"].tolist() == ["x", "y", None, None]
    assert items.meta["cleaning"]["unknown_labels"] == 1
    assert items.meta["cleaning"]["unlabelled_nodes"] == 2


def test_duplicate_and_empty_node_ids_are_errors(tmp_path):
    with pytest.raises(InputDataError, match=r"nodes\.csv, row 3: duplicate node id 'a'"):
        read("graph_table", **write_tables(tmp_path, "node_id,f0\na,1\nb,2\na,3\n", EDGES))
    with pytest.raises(InputDataError, match=r"nodes\.csv, row 2: empty node id"):
        read("graph_table", **write_tables(tmp_path, "node_id,f0\na,1\n,2\n", EDGES))


def test_missing_columns_files_and_formats_are_named(tmp_path):
    paths = write_tables(tmp_path, NODES, "from,to\na,b\n")
    with pytest.raises(InputDataError, match=r"edges\.csv: no source column 'source'"):
        read("graph_table", **LABELLED, **paths)
    with pytest.raises(InputDataError, match=r"nope\.csv: file not found"):
        read("graph_table", nodes=str(tmp_path / "nope.csv"), edges=paths["edges"])
    with pytest.raises(InputDataError, match="unknown table format"):
        read("graph_table", nodes=str(tmp_path / "nodes.xlsx"), edges=paths["edges"])
    with pytest.raises(InputDataError, match="no feature columns"):
        read("graph_table", **write_tables(tmp_path, "node_id\na\nb\nc\nd\n", EDGES))


def test_bad_policy_values_are_config_errors(tmp_path):
    paths = write_tables(tmp_path, NODES, EDGES)
    for key, value in [("self_loops", "keep"), ("isolated_nodes", "x"), ("missing_nodes", "add")]:
        with pytest.raises(ConfigError, match=f"params.{key}"):
            ADAPTERS.create({"name": "graph_table", "params": {**paths, key: value}})


def test_empty_graphs_are_rejected_naming_the_file(tmp_path):
    """Issue 24: no nodes, no features or no edges is an error naming the file, writing nothing."""
    paths = write_tables(tmp_path, "node_id,f0\n", "source,target\n")
    with pytest.raises(InputDataError, match=r"nodes\.csv: the graph has no nodes"):
        read("graph_table", **paths)
    paths = write_tables(tmp_path, NODES, "source,target\n")
    with pytest.raises(InputDataError, match=r"edges\.csv: the graph has no edges \(removed"):
        read("graph_table", **LABELLED, **paths)
    # Self-loops only: nothing is left once they are removed, and the count says so.
    paths = write_tables(tmp_path, NODES, "source,target\na,a\nb,b\n")
    with pytest.raises(InputDataError, match=r"no edges .*'self_loops_removed': 2"):
        read("graph_table", **LABELLED, **paths)
    # Isolated nodes beside connected ones are still read (and counted).
    paths = write_tables(tmp_path, NODES, "source,target\na,b\n")
    assert read("graph_table", **LABELLED, **paths).meta["cleaning"]["isolated_nodes"] == 2

    path = tmp_path / "graph.pt"
    torch.save(Data(x=torch.ones(3, 0), edge_index=torch.tensor([[0, 1], [1, 2]])), path)
    with pytest.raises(InputDataError, match=r"graph\.pt: the nodes have no features \(\[3, 0\]"):
        read("pyg_data", path=str(path))
    torch.save(Data(x=torch.ones(3, 2), edge_index=torch.zeros(2, 0, dtype=torch.long)), path)
    with pytest.raises(InputDataError, match=r"graph\.pt: the graph has no edges"):
        read("pyg_data", path=str(path))

    graph = nx.Graph()
    graph.add_nodes_from(["a", "b"], f0=1.0)
    nx.write_graphml(graph, tmp_path / "graph.graphml")
    with pytest.raises(InputDataError, match=r"graph\.graphml: the graph has no edges"):
        read("networkx", path=str(tmp_path / "graph.graphml"))

    write_planetoid(tmp_path / "edgeless", graph=defaultdict(list, {i: [] for i in range(510)}))
    with pytest.raises(InputDataError, match=r"ind\.toy\.graph: the graph has no edges"):
        read("planetoid", root=str(tmp_path / "edgeless"))


def test_prepare_writes_nothing_for_an_empty_graph(tmp_path):
    paths = write_tables(tmp_path, NODES, "source,target\n")
    experiment = minimal_experiment(
        adapter={"name": "graph_table", "params": {**paths, **LABELLED}},
        pairs={"name": "graph_views"},
        encoder={"name": "gcn"},
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"empty": experiment}}))
    out = tmp_path / "items"
    run = subprocess.run(
        [sys.executable, "-m", "scicontrast.cli", "prepare", "--config", config, "--out", out],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "edges.csv: the graph has no edges" in run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()


# --- pyg_data ------------------------------------------------------------------------------


def test_pyg_data_reads_features_labels_masks(tmp_path):
    data = Data(
        x=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),
        y=torch.tensor([2, -1, 0]),
        train_mask=torch.tensor([True, False, False]),
    )
    torch.save(data, tmp_path / "graph.pt")
    items = read("pyg_data", path=str(tmp_path / "graph.pt"))
    assert items.table["item_id"].tolist() == [0, 1, 2]
    assert items.table["label"].tolist() == [2, pd.NA, 0]  # negative y: unlabelled
    assert items.table["train_mask"].tolist() == [True, False, False]
    assert "val_mask" not in items.table.columns
    assert edge_set(items) == {("0", "1"), ("1", "0"), ("1", "2"), ("2", "1")}


def test_pyg_data_bad_input(tmp_path):
    path = tmp_path / "graph.pt"
    torch.save(Data(x=torch.ones(2, 1), edge_index=torch.tensor([[0], [5]])), path)
    with pytest.raises(InputDataError, match=r"edge_index\[:, 0\] = \(0, 5\) names a node"):
        read("pyg_data", path=str(path))
    # Dropping the only edge leaves no graph: an error naming the file and what was removed.
    with pytest.raises(
        InputDataError, match=r"graph\.pt: the graph has no edges .*edges_with_missing_nodes"
    ):
        read("pyg_data", path=str(path), missing_nodes="drop")

    torch.save(Data(x=torch.tensor([[1.0], [float("nan")]]), edge_index=torch.zeros(2, 0)), path)
    with pytest.raises(InputDataError, match=r"x\[1, 0\]: missing \(NaN\)"):
        read("pyg_data", path=str(path))

    torch.save({"x": torch.ones(2)}, path)
    with pytest.raises(InputDataError, match="holds a dict, expected a torch_geometric"):
        read("pyg_data", path=str(path))
    path.write_text("not a torch file")
    with pytest.raises(InputDataError, match="not a readable saved PyG Data"):
        read("pyg_data", path=str(path))


# --- networkx ------------------------------------------------------------------------------


def small_graph() -> nx.Graph:
    graph = nx.Graph()
    for name, club, f0 in [("a", "red", 1.0), ("b", "red", 0.0), ("c", "blue", 2.0)]:
        graph.add_node(name, club=club, f0=f0)
    graph.add_edges_from([("a", "b"), ("b", "c")])
    return graph


@pytest.mark.parametrize("fmt", ["graphml", "gml"])
def test_networkx_reads_node_attributes_as_features_and_labels(tmp_path, fmt):
    path = tmp_path / f"graph.{fmt}"
    (nx.write_graphml if fmt == "graphml" else nx.write_gml)(small_graph(), path)
    items = read("networkx", path=str(path), label_column="club")
    assert items.table["item_id"].tolist() == ["a", "b", "c"]
    assert items.table["club"].tolist() == ["red", "red", "blue"]
    assert items.arrays[FEATURES][:, 0].tolist() == [1.0, 0.0, 2.0]
    # An undirected networkx graph is read undirected.
    assert edge_set(items) == {("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")}


def test_networkx_non_numeric_attribute_names_the_node(tmp_path):
    path = tmp_path / "graph.graphml"
    nx.write_graphml(small_graph(), path)
    with pytest.raises(
        InputDataError, match=r"graph\.graphml, node 'a': feature column 'club': 'red' is not"
    ):
        read("networkx", path=str(path))


def test_networkx_edge_list_with_a_node_table(tmp_path):
    (tmp_path / "graph.edgelist").write_text("# comment\na b\nb c\nb c\nc d\n")
    (tmp_path / "nodes.csv").write_text(NODES)
    items = read(
        "networkx",
        path=str(tmp_path / "graph.edgelist"),
        node_table=str(tmp_path / "nodes.csv"),
        label_column="label",
    )
    assert items.meta["cleaning"]["duplicate_edges_merged"] == 1
    assert items.table["label"].tolist() == ["x", "y", "x", None]
    (tmp_path / "graph.edgelist").write_text("a b\nb q\n")
    with pytest.raises(InputDataError, match=r"graph\.edgelist, edge 'b' -> 'q': edge names"):
        read(
            "networkx",
            path=str(tmp_path / "graph.edgelist"),
            node_table=str(tmp_path / "nodes.csv"),
            **LABELLED,
        )


def test_networkx_unreadable_and_unknown_formats(tmp_path):
    (tmp_path / "graph.graphml").write_text("<graphml><broken")
    with pytest.raises(InputDataError, match=r"graph\.graphml: not a readable graphml file"):
        read("networkx", path=str(tmp_path / "graph.graphml"))
    with pytest.raises(InputDataError, match="unknown graph format"):
        read("networkx", path=str(tmp_path / "graph.json"))


# --- planetoid -----------------------------------------------------------------------------


def write_planetoid(folder: Path, name: str = "toy", graph: dict | None = None) -> None:
    """A Planetoid folder of 510 nodes (PyG's reader takes 500 validation nodes after ``y``).

    ``x``/``y``: nodes 0-1 (train); ``allx``/``ally``: nodes 0-505; ``tx``/``ty``: test nodes
    listed as 509, 507, 506, 508. Node 507's label row is all zero (unlabelled, as
    Citeseer's missing test nodes). Features: ``features(510)``; labels ``i % 3``. The
    default graph is a path 0-1-...-509 plus a repeated edge 0->1 and a self-loop 2->2.
    """
    folder.mkdir(parents=True, exist_ok=True)
    features, labels = planetoid_features(510), np.eye(3)[np.arange(510) % 3]
    test_index = [509, 507, 506, 508]  # rows of tx / ty, in this order
    ty = labels[test_index].copy()
    ty[1] = 0
    if graph is None:
        graph = defaultdict(
            list, {i: [j for j in (i - 1, i + 1) if 0 <= j < 510] for i in range(510)}
        )
        graph[0].append(1)
        graph[2].append(2)
    parts = {
        "x": sp.csr_matrix(features[:2]),
        "y": labels[:2],
        "allx": sp.csr_matrix(features[:506]),
        "ally": labels[:506],
        "tx": sp.csr_matrix(features[test_index]),
        "ty": ty,
        "graph": graph,
    }
    for part, value in parts.items():
        with open(folder / f"ind.{name}.{part}", "wb") as f:
            pickle.dump(value, f)
    (folder / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_index))


def planetoid_features(n: int) -> np.ndarray:
    return (np.arange(3 * n, dtype=np.float32).reshape(n, 3) % 5 == 0).astype(np.float32)


def test_planetoid_reads_features_labels_split_and_cleans_edges(tmp_path):
    write_planetoid(tmp_path / "toy")
    items = read("planetoid", root=str(tmp_path / "toy"))
    assert items.table["item_id"].tolist() == list(range(510))
    expected = pd.array(np.arange(510) % 3, dtype="Int64")
    expected[507] = pd.NA
    assert items.table["label"].equals(pd.Series(expected, name="label"))
    assert np.flatnonzero(items.table["train_mask"]).tolist() == [0, 1]
    assert np.flatnonzero(items.table["val_mask"]).tolist() == list(range(2, 502))
    assert np.flatnonzero(items.table["test_mask"]).tolist() == [506, 507, 508, 509]
    # tx rows are in test.index order; the items have them back in node order.
    np.testing.assert_array_equal(items.arrays[FEATURES], planetoid_features(510))
    cleaning = items.meta["cleaning"]
    assert cleaning["duplicate_edges_merged"] == 1 and cleaning["self_loops_removed"] == 1
    assert cleaning["unlabelled_nodes"] == 1
    path = {(str(i), str(i + 1)) for i in range(509)}
    assert edge_set(items) == path | {(v, u) for u, v in path}


def test_planetoid_bad_folders(tmp_path):
    write_planetoid(tmp_path / "two", name="one")
    write_planetoid(tmp_path / "two", name="other")
    with pytest.raises(InputDataError, match=r"found \['one', 'other'\]; set adapter params.name"):
        read("planetoid", root=str(tmp_path / "two"))
    assert len(read("planetoid", root=str(tmp_path / "two"), name="other")) == 510

    write_planetoid(
        tmp_path / "bad", graph=defaultdict(list, {i: [] for i in range(510)} | {3: [600]})
    )
    with pytest.raises(InputDataError, match=r"ind\.toy\.graph: node 3 lists neighbour 600"):
        read("planetoid", root=str(tmp_path / "bad"))

    (tmp_path / "bad" / "ind.toy.ty").unlink()
    with pytest.raises(InputDataError, match=r"ind\.toy\.ty: Planetoid file not found"):
        read("planetoid", root=str(tmp_path / "bad"))
