"""The pairs table on disk: written and read in row groups, item ids held as row codes.

A pairs table (``group_id``, ``item_id``, ``view``, optional columns; see
:mod:`scicontrast.data_adapters.base`) has a row per view, so at 10^6 windows with two views
each it is 2 x 10^6 rows; with the item id as a Python string per row and the table and its
Arrow copy in memory at once, it cost 340 MiB in ``pairs`` and ``train``.

:func:`write_pairs` writes the table as a pair builder yields it in parts (Arrow tables:
:meth:`~scicontrast.data_adapters.base.PairBuilder.build_parts`, an items row group at a
time where the builder can), in row groups of ``ROW_GROUP_ROWS`` rows; :func:`frame_parts`
cuts a table built in memory into such parts. :func:`read_pairs` reads it one row group at a
time and keeps ``item_id`` as a ``pandas.Categorical`` over the items' own ids: 4 bytes a row
and no string copies, the same values as the file. The ids are matched by their 128-bit hashes
(sorted, binary search), so only one row group's ids are ever Python strings, and no hash
table of Python objects is built over the items' ids (it cost 80-90 MiB at 10^6 items). A
damaged row group and an id the items lack are :class:`~scicontrast.errors.InputDataError`
naming the file and the row group or row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scicontrast.data_adapters.id_hashes import IdRows
from scicontrast.data_adapters.items_store import arrow_row_groups, release_arrow_memory
from scicontrast.errors import InputDataError
from scicontrast.io import atomic_path

ROW_GROUP_ROWS = 131_072
PAIRS_COLUMNS = ("group_id", "item_id", "view")


def frame_parts(pairs: pd.DataFrame) -> Iterator[pa.Table]:
    """``pairs`` as Arrow tables of ``ROW_GROUP_ROWS`` rows, one slice converted at a time
    (not the whole table), typed as ``DataFrame.to_parquet`` types it: categorical columns
    as their values, a column that is null throughout the first slice from its first value.
    The parts :func:`write_pairs` takes, for a table built in memory."""
    plain = {
        name: pairs[name].dtype.categories.dtype
        for name in pairs.columns
        if isinstance(pairs[name].dtype, pd.CategoricalDtype)
    }
    first = pairs.iloc[:ROW_GROUP_ROWS].astype(plain)
    schema = _typed(pa.Schema.from_pandas(first, preserve_index=False), pairs, plain)
    for start in range(0, max(len(pairs), 1), ROW_GROUP_ROWS):
        part = pairs.iloc[start : start + ROW_GROUP_ROWS].astype(plain)
        yield pa.Table.from_pandas(part, schema=schema, preserve_index=False)


def write_pairs(path: str | Path, parts: Iterable[pa.Table]) -> tuple[int, int]:
    """Write the pairs table that ``parts`` hold, in order, to ``path`` atomically;
    returns ``(rows, distinct group ids)``.

    ``parts``: Arrow tables of one schema (later parts are cast to the first's), written as
    they come (:meth:`~scicontrast.data_adapters.base.PairBuilder.build_parts`) in row groups
    of ``ROW_GROUP_ROWS`` rows whatever the parts' sizes, so one table gives one file. Parts
    without pandas metadata get what pandas would write for the first part, so that
    ``pandas.read_parquet`` reads the file back as it reads :func:`frame_parts`' file of the
    same table. Nothing is left at ``path`` when a part fails.
    """
    path = Path(path)
    if isinstance(parts, pd.DataFrame):  # iterating a frame gives its column names
        raise TypeError(f"{path}: write_pairs takes Arrow parts; pass frame_parts(frame)")
    parts = iter(parts)
    first = next(parts, None)
    if first is None:
        raise InputDataError(f"{path}: the pair builder gave no pairs table")
    schema = _file_schema(first, path)
    rows, group_ids = 0, []
    conformed = (_conform(part, schema, path, n) for n, part in enumerate(chain([first], parts)))
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for table in _row_groups(conformed, ROW_GROUP_ROWS):
            writer.write_table(table)
            release_arrow_memory()  # else its pool kept 70 MiB more at 10^6 windows
            rows += len(table)
            group_ids.append(np.unique(table.column("group_id").to_numpy()))
    # Distinct per row group first: the ids of all rows at once would be a second table.
    return rows, len(np.unique(np.concatenate(group_ids)))


def _file_schema(first: pa.Table, path: Path) -> pa.Schema:
    """The schema of the file: ``first``'s, with pandas metadata if it has none."""
    missing = [name for name in PAIRS_COLUMNS if name not in first.column_names]
    if missing:
        raise InputDataError(f"{path}: the pairs table to write lacks columns {missing}")
    if first.schema.metadata and b"pandas" in first.schema.metadata:
        return first.schema
    described = pa.Schema.from_pandas(first.to_pandas(), preserve_index=False)
    return first.schema.with_metadata({**(first.schema.metadata or {}), **described.metadata})


def _conform(part: pa.Table, schema: pa.Schema, path: Path, number: int) -> pa.Table:
    """``part`` with the file's ``schema``; ``InputDataError`` naming the part if it cannot."""
    if part.schema.equals(schema, check_metadata=False):
        return part
    try:
        return part.cast(schema)
    except (ValueError, pa.ArrowException) as exc:
        raise InputDataError(
            f"{path}: part {number} of the pairs table has the schema {part.schema}, which "
            f"does not match the first part's {schema} ({exc})"
        ) from None


def _row_groups(parts: Iterable[pa.Table], size: int) -> Iterator[pa.Table]:
    """The rows of ``parts`` in order, in tables of ``size`` rows (the last may be shorter;
    one empty table when there are no rows), each a single chunk."""
    pending: list[pa.Table] = []
    count, yielded = 0, False
    for part in parts:
        pending.append(part)
        count += len(part)
        if count < size:
            continue
        table, start = pa.concat_tables(pending), 0
        while count - start >= size:
            yield table.slice(start, size).combine_chunks()
            start, yielded = start + size, True
        pending, count = [table.slice(start)], count - start
    if count or not yielded:
        yield pa.concat_tables(pending).combine_chunks()


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
    items-table column, in table order: its codes are the items' rows).

    Each row group's ids are matched to the items' rows by their 128-bit hashes
    (:class:`~scicontrast.data_adapters.id_hashes.IdRows`: sorted keys and binary search,
    each match confirmed on the ids), so that no hash table of Python strings is built
    over the items' or the pairs' ids; the categories are ``item_ids``' values themselves.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: pairs table not found")
    known = item_ids.to_numpy()
    known_type = pa.array(known[:1]).type if len(known) else None
    index: IdRows | None = None
    parts, codes, seen = [], [], 0
    columns: list[str] = []
    for number, part in enumerate(arrow_row_groups(path)):
        columns = part.column_names
        if "item_id" not in columns:
            raise InputDataError(f"{path}: pairs table lacks the column 'item_id'")
        if index is None:  # once the file is known to be readable
            index = _id_rows(known, path)
        ids = _same_type(part.column("item_id"), known_type, path)
        rows = index.rows(ids.to_numpy())
        unknown = np.flatnonzero(rows < 0)
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
    del index, part, ids  # the hashes and the Arrow buffers, so that their memory is released
    release_arrow_memory()
    pairs = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    pairs["item_id"] = _categorical(np.concatenate(codes), known)
    return pairs[columns]


def _id_rows(known: np.ndarray, path: Path) -> IdRows:
    """The lookup of the items' ids ``known``; ``InputDataError`` if two are the same."""
    try:
        return IdRows(known)
    except ValueError as exc:
        raise InputDataError(f"{path}: the items' ids cannot index the pairs: {exc}") from None


def _same_type(ids: pa.ChunkedArray, known: pa.DataType | None, path: Path) -> pa.ChunkedArray:
    """The pairs' ``ids`` as values of the items' id type ``known`` (strings of either
    width stay as they are: they give the same Python strings; no items: no type to match)."""
    if (
        known is None
        or ids.type == known
        or all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in (ids.type, known))
    ):
        return ids
    try:
        return ids.cast(known)
    except pa.ArrowException:
        raise InputDataError(
            f"{path}: item_id is {ids.type} in the pairs table, {known} in the items"
        ) from None


def _categorical(codes: np.ndarray, ids: np.ndarray) -> pd.Categorical:
    """The categorical of ``codes`` over the distinct ``ids``, without the hash table of
    the ids' Python objects (32 MiB at 10^6) that pandas' check of the categories' uniqueness
    builds and would keep for the pairs' lifetime: the check's answer is kept, so that the
    categoricals derived from this one (a slice, a take) do not build it again."""
    categorical = pd.Categorical.from_codes(codes, categories=pd.Index(ids, copy=False))
    # pandas' own (private) release of an index's lookup table; a pandas without it only
    # keeps the 32 MiB, so its absence must not stop a run.
    release_lookup = getattr(categorical.categories, "_cleanup", None)
    if release_lookup is not None:
        release_lookup()
    return categorical
