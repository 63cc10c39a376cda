"""The pairs table on disk: written and read in row groups, item ids held as row codes.

A pairs table (``group_id``, ``item_id``, ``view``, optional columns; see
:mod:`scicontrast.data_adapters.base`) has a row per view, so at 10^6 windows with two views
each it is 2 x 10^6 rows; with the item id as a Python string per row and the table and its
Arrow copy in memory at once, it cost 340 MiB in ``pairs`` and ``train``.

:func:`write_pairs` writes a built table ``ROW_GROUP_ROWS`` rows at a time (one Arrow slice
in memory, not the whole table's). :func:`read_pairs` reads it one row group at a time and
keeps ``item_id`` as a ``pandas.Categorical`` over the items' own ids: 4 bytes a row and no
string copies, the same values as the file. A damaged row group and an id the items lack
are :class:`~scicontrast.errors.InputDataError` naming the file and the row group or row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scicontrast.data_adapters.items_store import arrow_row_groups, release_arrow_memory
from scicontrast.errors import InputDataError
from scicontrast.io import atomic_path

ROW_GROUP_ROWS = 131_072


def write_pairs(path: str | Path, pairs: pd.DataFrame) -> None:
    """Write ``pairs`` to ``path`` atomically, ``ROW_GROUP_ROWS`` rows per row group.

    Reads back (``pandas.read_parquet``) as the table ``DataFrame.to_parquet`` writes:
    categorical columns are written as their values.
    """
    plain = {
        name: pairs[name].dtype.categories.dtype
        for name in pairs.columns
        if isinstance(pairs[name].dtype, pd.CategoricalDtype)
    }
    first = pairs.iloc[:ROW_GROUP_ROWS].astype(plain)
    schema = _typed(pa.Schema.from_pandas(first, preserve_index=False), pairs, plain)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, max(len(pairs), 1), ROW_GROUP_ROWS):
            part = pairs.iloc[start : start + ROW_GROUP_ROWS].astype(plain)
            writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))


def _typed(schema: pa.Schema, pairs: pd.DataFrame, plain: dict) -> pa.Schema:
    """``schema`` with each column that is null throughout the first row group typed from
    its first value that is not (the type of a column of objects is inferred from values)."""
    for index, field in enumerate(schema):
        if pa.types.is_null(field.type):
            column = pairs[field.name].dropna()
            if len(column):
                values = column.iloc[:1].astype(plain.get(field.name, column.dtype))
                schema = schema.set(index, field.with_type(pa.array(values).type))
    return schema


def read_pairs(path: str | Path, item_ids: pd.Series) -> pd.DataFrame:
    """The pairs table at ``path``, ``item_id`` as a categorical over ``item_ids`` (the
    items-table column, in table order: its codes are the items' rows)."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: pairs table not found")
    # Matched in Arrow: no Python string per pairs row, no hash table of Python objects.
    known = pa.array(item_ids.to_numpy())
    parts, codes, seen = [], [], 0
    columns: list[str] = []
    for number, part in enumerate(arrow_row_groups(path)):
        columns = part.column_names
        if "item_id" not in columns:
            raise InputDataError(f"{path}: pairs table lacks the column 'item_id'")
        ids = part.column("item_id")
        try:
            value_set = known if known.type == ids.type else known.cast(ids.type)
        except pa.ArrowException:
            raise InputDataError(
                f"{path}: item_id is {ids.type} in the pairs table, {known.type} in the items"
            ) from None
        rows = pc.index_in(ids, value_set=value_set).to_numpy(zero_copy_only=False)
        # Nulls (ids not found) make the indices float with NaN.
        unknown = np.flatnonzero(np.isnan(rows)) if rows.dtype.kind == "f" else np.zeros(0, int)
        if len(unknown):
            row = int(unknown[0])
            raise InputDataError(
                f"{path}: row {seen + row} (row group {number}) names item_id "
                f"{ids[row].as_py()!r}, which is not in the items table"
            )
        codes.append(rows.astype(np.int32 if len(known) < 2**31 else np.int64))
        parts.append(part.drop_columns(["item_id"]).to_pandas())
        seen += len(part)
    if not parts:
        raise InputDataError(f"{path}: a pairs table without row groups")
    pairs = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    categories = pd.Index(item_ids.to_numpy(), copy=False)
    pairs["item_id"] = pd.Categorical.from_codes(np.concatenate(codes), categories=categories)
    del known, part, ids, value_set  # the Arrow buffers, so that their memory can be released
    release_arrow_memory()
    return pairs[columns]
