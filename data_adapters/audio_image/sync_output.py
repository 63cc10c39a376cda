"""The synchronisation's tables written a row group at a time from the spilled events.

``pairs.parquet`` has a row per pair, in audio-event order: ``event`` (0..P-1),
``time_difference_s`` and, per side (``audio``, ``image``), the event's ``device``,
``file``, ``time_s``, ``corrected_s``, ``manifest``, ``row``, ``file_as_listed`` and the
metadata columns that any of that side's paired events has. :func:`write_pairs_table` builds
it ``PIECE_ROWS`` pairs at a time from :meth:`~.events.Events.frame` (the strings read back
from the spill), converts each piece to Arrow and writes a row group of ``row_group`` pairs
as ``DataFrame.to_parquet`` of the whole table would: the same bytes, held a row group at a
time (about 30 MiB in Arrow at 65,536 pairs) instead of the whole table of Python strings.
``unmatched.parquet`` (the events without a partner, a small share) is written whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scicontrast.data_adapters.audio_image.events import Events

# Pairs converted to Arrow at a time: a piece's Python strings are ~12 MiB.
PIECE_ROWS = 16_384
SIDE_COLUMNS = ["device", "file", "time_s", "corrected_s", "manifest", "row", "file_as_listed"]
UNMATCHED_COLUMNS = ["modality", "device", "file", "time_s", "corrected_s", "manifest", "row"]


def write_pairs_table(
    path: Path,
    events: Events,
    corrected: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    row_group: int,
) -> None:
    """``pairs.parquet`` (module docstring) of the pairs ``(audio events, image events)``
    (event numbers, in pair order), ``corrected``: every event's time on the reference
    clock. Row groups of ``row_group`` pairs, as ``to_parquet(row_group_size=...)``."""
    sides = dict(zip(("audio", "image"), pairs, strict=True))
    metadata = {
        side: [c for c in events.metadata if events.present[c][rows].any()]
        for side, rows in sides.items()
    }
    writer, schema = None, None
    try:
        for start in range(0, max(len(pairs[0]), 1), row_group):
            stop = min(start + row_group, len(pairs[0]))
            tables = []
            for low in range(start, max(stop, start + 1), PIECE_ROWS):
                piece = _piece(events, corrected, sides, metadata, low, min(low + PIECE_ROWS, stop))
                if schema is None:
                    schema = _file_schema(piece, events, sides, metadata)
                tables.append(pa.Table.from_pandas(piece, schema=schema, preserve_index=False))
            if writer is None:
                writer = pq.ParquetWriter(path, schema, compression="snappy")
            writer.write_table(_one_chunk(tables, schema))
    finally:
        if writer is not None:
            writer.close()


def _one_chunk(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """The rows of ``tables`` as one table of one chunk a column, a column at a time (each
    piece's column freed as it is copied). Parquet's writer cuts pages and gives up a
    dictionary at chunk boundaries too: the same rows in pieces were other bytes."""
    parts = [table.columns for table in tables]
    tables.clear()
    columns = []
    for index in range(len(schema)):
        chunks = [c for part in parts for c in part[index].chunks]
        empty = pa.array([], schema.field(index).type)
        columns.append(pa.concat_arrays(chunks) if chunks else empty)
        for part in parts:
            part[index] = None
    return pa.Table.from_arrays(columns, schema=schema)


def _file_schema(
    piece: pd.DataFrame,
    events: Events,
    sides: dict[str, np.ndarray],
    metadata: dict[str, list[str]],
) -> pa.Schema:
    """The schema ``to_parquet`` gives the whole table, from its first ``piece``: a
    metadata column without values there is typed (and described in the pandas metadata)
    by its first value in the table, as ``pyarrow`` infers a column of objects."""
    schema = pa.Schema.from_pandas(piece, preserve_index=False)
    sample = piece
    for side, rows in sides.items():
        for column in metadata[side]:
            name = f"{side}_{column}"
            if len(piece) and pa.types.is_null(schema.field(name).type):
                first = rows[np.flatnonzero(events.present[column][rows])[:1]]
                values = piece[name].to_numpy(copy=True)
                values[0] = events.frame(first, [column])[column].iloc[0]
                sample = sample.assign(**{name: values})
    return schema if sample is piece else pa.Schema.from_pandas(sample, preserve_index=False)


def _piece(
    events: Events,
    corrected: np.ndarray,
    sides: dict[str, np.ndarray],
    metadata: dict[str, list[str]],
    start: int,
    stop: int,
) -> pd.DataFrame:
    """Pairs ``start .. stop - 1`` as a table of the pairs file's columns."""
    columns = {"event": np.arange(start, stop)}
    audio, image = (rows[start:stop] for rows in sides.values())
    columns["time_difference_s"] = corrected[image] - corrected[audio]
    for side, rows in (("audio", audio), ("image", image)):
        names = [c for c in SIDE_COLUMNS if c != "corrected_s"] + metadata[side]
        frame = events.frame(rows, names)
        frame["corrected_s"] = corrected[rows]
        for c in [*SIDE_COLUMNS, *metadata[side]]:
            columns[f"{side}_{c}"] = frame[c].to_numpy()
    return pd.DataFrame(columns)


def write_unmatched(path: Path, events: Events, corrected: np.ndarray, matched: np.ndarray) -> None:
    """``unmatched.parquet``: the events without a partner, in event order, one row group."""
    rows = np.flatnonzero(~matched)
    parts = []
    names = [c for c in UNMATCHED_COLUMNS if c != "corrected_s"]
    for start in range(0, max(len(rows), 1), PIECE_ROWS):
        part = events.frame(rows[start : start + PIECE_ROWS], names)
        part["corrected_s"] = corrected[rows[start : start + PIECE_ROWS]]
        parts.append(part[UNMATCHED_COLUMNS])
    pd.concat(parts, ignore_index=True).to_parquet(path, index=False)
