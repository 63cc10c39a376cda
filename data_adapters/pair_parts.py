"""Pairs tables built an items row group at a time: the streaming form of ``PairBuilder.build``.

``PairBuilder.build(items)`` returns the whole pairs table as one ``DataFrame`` over items
loaded whole: at 10^6 DNA windows, 2 x 10^6 rows with a Python string per item id, and the
items' ids as 10^6 more (the ``pairs`` step peaked at 602 MiB against 358 MiB at 10^4).
``PairBuilder.build_parts(folder)`` yields the same table in parts, Arrow tables that
:func:`~scicontrast.data_adapters.pairs_table.write_pairs` writes as they come. The default
cuts ``build``'s table (:func:`~scicontrast.data_adapters.pairs_table.frame_parts`), so a
builder that implements only ``build`` keeps working. A builder whose rows for one items
row group depend only on that row group and the ones before it (one group per item, or
groups named by a column) overrides ``build_parts`` with the pieces here:

* :func:`items_folder`: the folder's meta and table columns, without reading the table;
* :func:`mapped_arrays`: its row count and arrays (memory-mapped), to check the set by, and
  :func:`item_id_at` to name an item in an error;
* :func:`item_row_groups`: the table one row group at a time, only the columns named, with
  every ``item_id`` checked against all earlier ones (as hashes,
  :class:`~scicontrast.data_adapters.id_hashes.HashedIdSet`: 16 bytes an id);
* :class:`FirstSeenCodes`: ``pandas.factorize(column, sort=False)`` of the whole column,
  computed row group by row group;
* :func:`repeat_views`: the rows of a row group's items, each with its views in order.

Memory then stays at a row group's rows plus 16 bytes an item (the id hashes) and the
distinct groups, whatever the number of items.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scicontrast.data_adapters.base import read_meta
from scicontrast.data_adapters.id_hashes import HashedIdSet
from scicontrast.data_adapters.items_store import (
    META_FILE,
    TABLE_FILE,
    arrow_row_groups,
    load_arrays,
    table_rows,
    table_schema,
)
from scicontrast.errors import InputDataError


def items_folder(folder: str | Path) -> tuple[dict[str, Any], list[str]]:
    """``(meta, table column names)`` of the items folder ``folder``; ``InputDataError``
    when it is not one. Reads the table's schema only."""
    folder = Path(folder)
    for name in (TABLE_FILE, META_FILE):
        if not (folder / name).exists():
            raise InputDataError(f"{folder}: not an items folder (no {name})")
    return read_meta(folder), table_schema(folder / TABLE_FILE).names


def mapped_arrays(
    folder: str | Path,
) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(rows, arrays, extras)`` of the items folder ``folder``: the arrays as
    ``Items.load`` maps them, the rows counted from the table's Parquet footers.

    ``InputDataError`` naming the file for an array whose length is not the row count.
    """
    folder = Path(folder)
    rows = table_rows(folder / TABLE_FILE)
    arrays, extras = load_arrays(folder)
    for name, array in arrays.items():
        if len(array) != rows:
            raise InputDataError(f"{folder / name}.npy: {len(array)} rows, the items table {rows}")
    return rows, arrays, extras


def item_id_at(folder: str | Path, row: int) -> Any:
    """The ``item_id`` of row ``row`` of the items table in ``folder`` (read to that row)."""
    for first, table in item_row_groups(folder, []):
        if row < first + len(table):
            return table.column("item_id")[row - first].as_py()
    raise IndexError(f"{folder}: no row {row} in the items table")


def item_row_groups(folder: str | Path, columns: Sequence[str]) -> Iterator[tuple[int, pa.Table]]:
    """``(first row, table)`` for each row group of the items table in ``folder``, with the
    ``columns`` named (``item_id`` first, always).

    ``InputDataError`` naming the file and the row for an ``item_id`` that repeats an
    earlier one (``Items`` refuses such a table too), or when the table has no row group.
    """
    path = Path(folder) / TABLE_FILE
    wanted = list(dict.fromkeys(["item_id", *columns]))
    missing = [name for name in wanted if name not in table_schema(path).names]
    if missing:
        raise InputDataError(f"{path}: the items table lacks columns {missing}")
    seen, first, row_groups = HashedIdSet(), 0, 0
    for table in arrow_row_groups(path, wanted):
        ids = table.column("item_id").to_numpy()
        repeat = seen.add_new(ids)
        if repeat is not None:
            raise InputDataError(
                f"{path}: row {first + repeat} repeats item_id {ids[repeat]!r}; "
                "item ids must be unique"
            )
        yield first, table
        first, row_groups = first + len(table), row_groups + 1
    if not row_groups:
        raise InputDataError(f"{path}: a Parquet table without row groups")


class FirstSeenCodes:
    """Codes of values in order of first appearance, over successive parts of a column.

    Calling it with each part in turn gives, concatenated, ``pandas.factorize(column,
    sort=False)[0]`` of the whole column (``-1`` for missing values), holding only the
    distinct values seen so far.
    """

    def __init__(self) -> None:
        self._codes: dict[Any, int] = {}

    def __call__(self, values: pd.Series) -> np.ndarray:
        """``int64 [len(values)]``: the codes of this part."""
        local, uniques = pd.factorize(values, sort=False)
        # A Python loop over the part's distinct values only (a record or genome column has
        # few), first appearances in order, as factorize numbers them.
        codes = [self._codes.setdefault(value, len(self._codes)) for value in uniques]
        lookup = np.array([*codes, -1], dtype=np.int64)  # local code -1 (missing) takes -1
        return lookup[local]


def repeat_views(groups: np.ndarray, item_ids: pa.ChunkedArray, views: Sequence[str]) -> pa.Table:
    """The pairs rows of ``n`` items: item ``i``'s views in order, ``n * len(views)`` rows.

    Row ``i * k + j`` (``k = len(views)``) is ``(groups[i], item_ids[i], views[j])``: the
    columns ``group_id`` (``int64``), ``item_id`` (taken from the Arrow column, no Python
    object per row) and ``view``.
    """
    k, n = len(views), len(item_ids)
    return pa.table(
        {
            "group_id": np.repeat(np.asarray(groups, dtype=np.int64), k),
            "item_id": item_ids.take(np.repeat(np.arange(n), k)),
            "view": pa.array(list(views), pa.string()).take(np.tile(np.arange(k), n)),
        }
    )
