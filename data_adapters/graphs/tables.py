r"""The ``graph_table`` adapter: a node table and an edge table.

* ``graph_table``: a node table and an edge table, each CSV (``.csv``), TSV (``.tsv``,
  ``.tab``, ``.txt``) or Parquet (``.parquet``, ``.pq``). The node table has a node id
  column, feature columns (by default every column that is not the id, label, split or a
  metadata column), optionally a label column and a split column (``train``, ``val``,
  ``test``, or empty). The edge table has a source and a target column; other columns (e.g.
  weights) are ignored. Ids are compared as text. Both tables are read a chunk of rows at
  a time (pandas ``read_csv`` chunks, Parquet record batches), so the edge table's text ids
  never lie in memory whole, only the node rows they name (``int64 [2, E]`` in all: edges
  are coalesced over the whole graph); the items are then written in chunks of nodes.


A trained model embeds a new graph through the adapter it was trained with, with every
other setting unchanged (``scicontrast embed --model model.pt PATH... --out FOLDER``):
``planetoid`` takes the new folder, ``pyg_data`` the new file, ``graph_table`` the new node
and edge tables in that order, ``networkx`` the new graph file and, when the model was
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.chunks import CHUNK_ROWS, concat_chunks, split_items
from scicontrast.data_adapters.graphs.cleaning import SPLIT_MASKS, GraphAdapter, Locator
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS

_TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".pq")


_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}


class Table:
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
    def read(cls, path: str | Path) -> Table:
        path = _checked(path)
        suffix = path.suffix.lower()
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

    @classmethod
    def chunks(cls, path: str | Path, rows: int) -> Iterator[Table]:
        """The table at ``path`` (as :meth:`read` reads it), ``rows`` rows at a time; rows
        are named from the file's start. A table without rows is one empty chunk."""
        path = _checked(path)
        suffix = path.suffix.lower()
        try:
            if suffix in _PARQUET_SUFFIXES:
                parquet = pq.ParquetFile(path)
                frames: Iterator[pd.DataFrame] = (
                    pa.Table.from_batches([batch], schema=parquet.schema_arrow).to_pandas()
                    for batch in parquet.iter_batches(batch_size=rows)
                )
                empty = parquet.schema_arrow.empty_table().to_pandas()
            else:
                frames = pd.read_csv(
                    path,
                    sep=_TABLE_SEPARATORS[suffix],
                    dtype=str,
                    keep_default_na=False,
                    chunksize=rows,
                )
                empty = None  # read_csv yields a header-only table as one empty chunk
        except Exception as exc:  # pandas and pyarrow raise many types for a bad file
            raise InputDataError(f"{path}: not a readable table ({exc})") from None
        start = 0
        while True:
            try:
                frame = next(frames, None)
            except Exception as exc:
                raise InputDataError(
                    f"{path}: rows after row {start} are not readable ({exc})"
                ) from None
            if frame is None:
                break
            yield cls(frame.reset_index(drop=True), str(path), _rows_from(start))
            start += len(frame)
        if start == 0 and empty is not None:
            yield cls(empty, str(path), _rows_from(0))


def _rows_from(start: int) -> Callable[[int], str]:
    return lambda i: f"row {start + i + 1}"


def _checked(path: str | Path) -> Path:
    """``path`` if it names an existing table of a known format; else ``InputDataError``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _PARQUET_SUFFIXES and suffix not in _TABLE_SEPARATORS:
        raise InputDataError(
            f"{path}: unknown table format {suffix!r}; use .csv, .tsv, .tab, .txt, .parquet or .pq"
        )
    if not path.is_file():
        raise InputDataError(f"{path}: file not found")
    return path


def _is_missing(values: pd.Series) -> np.ndarray:
    text = values.astype("string").str.strip().str.lower()
    return (values.isna() | text.isna() | text.isin(_MISSING_TEXT)).to_numpy(dtype=bool)


def _as_ids(values: pd.Series) -> pd.Series:
    return values.map(lambda v: v if isinstance(v, str) else str(v))


class NodeColumns:
    """How a node table (or a networkx graph's node attributes) maps onto items."""

    def __init__(
        self,
        registry_name: str,
        node_id_column: str,
        label_column: str | None,
        classes: list | None,
        unknown_labels: str,
        feature_columns: list[str] | None,
        metadata_columns: Sequence[str],
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

    def parse(self, nodes: Table, cleaning: dict[str, int]) -> tuple[pd.DataFrame, np.ndarray]:
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
            table[self.label_column] = self._labels(nodes, self.label_column, cleaning)
            reserved.add(self.label_column)
        if self.split_column is not None:
            for name, mask in self._split_masks(nodes, self.split_column).items():
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

    def _numeric(self, nodes: Table, column: str, cleaning: dict[str, int]) -> np.ndarray:
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

    def _labels(self, nodes: Table, column: str, cleaning: dict[str, int]) -> pd.Series:
        values = nodes.column(column, "label")
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

    def _split_masks(self, nodes: Table, column: str) -> dict[str, np.ndarray]:
        values = nodes.column(column, "split")
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


def node_rows(item_ids: pd.Series) -> pd.Series:
    """Node id -> row, for :func:`edge_rows`."""
    return pd.Series(np.arange(len(item_ids)), index=item_ids.to_numpy())


def edge_rows(
    source_ids: pd.Series,
    target_ids: pd.Series,
    row_of: pd.Series,
    where: Locator,
    missing_nodes: str,
    cleaning: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Edges as ``[2, E]`` node rows (``row_of``: :func:`node_rows`), and the input positions
    of the kept edges; ``cleaning["edges_with_missing_nodes"]`` grows by those dropped."""
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
    dropped = cleaning.get("edges_with_missing_nodes", 0) + int(unknown.sum())
    cleaning["edges_with_missing_nodes"] = dropped
    kept = np.flatnonzero(~unknown)
    return np.stack([rows[0][kept], rows[1][kept]]).astype(np.int64).reshape(2, -1), kept


NODE_PARAMS_DOC = """
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
class GraphTableAdapter(GraphAdapter):
    __doc__ = (
        """A node table and an edge table (CSV, TSV or Parquet); see the module docstring.

    Args:
        nodes: The node table.
        edges: The edge table.
        source_column, target_column: The edge table's endpoint columns."""
        + NODE_PARAMS_DOC
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
        metadata_columns: Sequence[str] = (),
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
        self.columns = NodeColumns(
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
        return concat_chunks(self.read_chunks(CHUNK_ROWS))

    def read_chunks(self, chunk_rows: int) -> Iterator[Items]:
        """Both tables read ``chunk_rows`` rows at a time (module docstring); the items in
        chunks of ``chunk_rows`` nodes, the edges and ``meta`` with the last."""
        cleaning: dict[str, int] = {}
        table, features = self._nodes(chunk_rows, cleaning)
        edge_index, kept = self._edges(node_rows(table["item_id"]), chunk_rows, cleaning)
        items = self._graph_items(
            table,
            features,
            edge_index,
            edge_where=lambda k: f"{self.edges}, row {int(kept[k]) + 1}",
            node_where=lambda i: f"{self.nodes}, row {i + 1}",
            cleaning=cleaning,
            sources=(str(self.nodes), str(self.edges)),
            label_column=self.columns.label_column,
        )
        yield from split_items(items, chunk_rows)

    def _nodes(self, chunk_rows: int, cleaning: dict[str, int]) -> tuple[pd.DataFrame, np.ndarray]:
        """The node table parsed a chunk at a time: ``(table, features [N, F])``."""
        tables, features = [], []
        for nodes in Table.chunks(self.nodes, chunk_rows):
            counts: dict[str, int] = {}
            table, x = self.columns.parse(nodes, counts)
            tables.append(table)
            features.append(x)
            for key, count in counts.items():
                cleaning[key] = cleaning.get(key, 0) + count
        table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
        repeated = np.flatnonzero(table["item_id"].duplicated().to_numpy())
        if repeated.size:  # in two chunks (parse names one within a chunk)
            row = int(repeated[0])
            raise InputDataError(
                f"{self.nodes}, row {row + 1}: duplicate node id {table['item_id'].iloc[row]!r}"
            )
        return table, np.concatenate(features)

    def _edges(
        self, row_of: pd.Series, chunk_rows: int, cleaning: dict[str, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The edge table's node rows ``[2, E]`` and kept input rows, a chunk at a time."""
        index, kept, start = [], [], 0
        for edges in Table.chunks(self.edges, chunk_rows):
            rows, kept_here = edge_rows(
                edges.column(self.source_column, "source"),
                edges.column(self.target_column, "target"),
                row_of,
                edges.where,
                self.missing_nodes,
                cleaning,
            )
            index.append(rows)
            kept.append(kept_here + start)
            start += len(edges.frame)
        return np.concatenate(index, axis=1), np.concatenate(kept)
