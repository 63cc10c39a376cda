"""graph_table reads its node and edge tables in chunks: the items do not depend on the chunk
size, and bad input in any chunk is named by file and row (issue 26 item 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_chunked_prepare import _assert_same

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.chunks import write_chunks
from scicontrast.errors import InputDataError
from scicontrast.registry import ADAPTERS

POLICIES = {
    "label_column": "label",
    "split_column": "split",
    "missing_features": "zero",
    "missing_nodes": "drop",
    "isolated_nodes": "drop",
}


def graph_tables(folder: Path, suffix: str, n: int = 11) -> dict:
    """A node table with labels, a split, a missing feature and an isolated node; an edge
    table with a self-loop, a duplicate, an edge to an unknown node and leading zeros."""
    rng = np.random.default_rng(0)
    ids = [f"0{i}" for i in range(n)]
    nodes = pd.DataFrame(
        {
            "node_id": ids,
            "label": [["x", "y", ""][i % 3] for i in range(n)],
            "split": [["train", "val", "test", ""][i % 4] for i in range(n)],
            "f0": [f"{v:.3f}" for v in rng.random(n)],
            "f1": [f"{v:.3f}" for v in rng.random(n)],
        }
    )
    nodes.loc[4, "f1"] = ""
    pairs = [(ids[i], ids[(i + 1) % (n - 1)]) for i in range(n - 1)]  # ids[-1]: isolated
    pairs += [(ids[2], ids[2]), pairs[3], (ids[5], "nowhere"), (ids[7], ids[1])]
    edges = pd.DataFrame(pairs, columns=["source", "target"]).assign(weight="1")
    paths = {"nodes": folder / f"nodes{suffix}", "edges": folder / f"edges{suffix}"}
    for name, frame in (("nodes", nodes), ("edges", edges)):
        if suffix == ".parquet":
            # several row groups, so that record batches cross them
            pq.write_table(pa_table(frame), paths[name], row_group_size=4)
        else:
            frame.to_csv(paths[name], sep="\t" if suffix == ".tsv" else ",", index=False)
    return {"nodes": str(paths["nodes"]), "edges": str(paths["edges"])}


def pa_table(frame: pd.DataFrame):
    import pyarrow as pa

    typed = frame.copy()
    for column in ("f0", "f1"):
        if column in typed.columns:  # node features as numbers: "" -> NaN, a missing one
            typed[column] = pd.to_numeric(typed[column])
    return pa.Table.from_pandas(typed, preserve_index=False)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_chunked_tables_give_the_items_of_the_whole_read(tmp_path, suffix):
    spec = {"name": "graph_table", "params": graph_tables(tmp_path, suffix) | POLICIES}
    adapter = ADAPTERS.create(spec, where="graph")
    adapter.read().save(tmp_path / "whole")
    whole = Items.load(tmp_path / "whole")
    cleaning = whole.meta["cleaning"]
    assert cleaning["self_loops_removed"] == 1 and cleaning["duplicate_edges_merged"] == 1
    assert cleaning["edges_with_missing_nodes"] == 1 and cleaning["missing_features_zeroed"] == 1
    assert cleaning["isolated_nodes_dropped"] == 1 and cleaning["unlabelled_nodes"] == 3
    assert whole.table["item_id"].iloc[0] == "00"  # ids stay text
    for chunk_rows in (1, 3, 100):
        folder = tmp_path / f"chunks{chunk_rows}"
        assert write_chunks(adapter.read_chunks(chunk_rows), folder) == len(whole)
        _assert_same(whole, Items.load(folder))
        groups = pq.ParquetFile(folder / "items.parquet").num_row_groups
        assert groups == -(-len(whole) // chunk_rows)  # written a chunk of nodes at a time


def _bad(tmp_path: Path, change) -> dict:
    files = graph_tables(tmp_path, ".csv")
    for name in ("nodes", "edges"):
        frame = pd.read_csv(files[name], dtype=str, keep_default_na=False)
        change(name, frame)
        frame.to_csv(files[name], index=False)
    return {"name": "graph_table", "params": files | POLICIES | {"missing_nodes": "error"}}


def _edit(table: str, row: int, column: str, value: str):
    def change(name: str, frame: pd.DataFrame) -> None:
        if name == table:
            frame.loc[row, column] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_edit("nodes", 8, "f0", "abc"), r"nodes\.csv, row 9: feature column 'f0': 'abc'"),
        (_edit("nodes", 9, "node_id", "01"), r"nodes\.csv, row 10: duplicate node id '01'"),
        (_edit("edges", 9, "target", "ghost"), r"edges\.csv, row 10: edge names node 'ghost'"),
    ],
    ids=["feature", "duplicate id", "unknown node"],
)
def test_bad_input_in_a_later_chunk_names_file_and_row(tmp_path, change, message):
    spec = _bad(tmp_path, change)
    adapter = ADAPTERS.create(spec, where="graph")
    for chunk_rows in (1, 3, 100):
        with pytest.raises(InputDataError, match=message):
            write_chunks(adapter.read_chunks(chunk_rows), tmp_path / "items")
        assert not (tmp_path / "items").exists()
