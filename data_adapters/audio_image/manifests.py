r"""Manifests: the tables of recorded events that synchronisation reads.

Field stations record sound with one device and images with another. A sound and an image
captured at the same moment are a positive pair; the timestamps are the only supervision,
and the devices' clocks disagree by an unknown offset plus jitter.

Manifest
--------
A CSV (``.csv``), TSV (``.tsv``, ``.tab``, ``.txt``) or Parquet (``.parquet``, ``.pq``)
table, one row per recorded event, with columns

``device``
    the recording device's id (any string);
``file``
    the audio clip or image, relative to the manifest's folder (or absolute);
``time``
    the capture time on that device's clock: seconds (a number) or a date-time string
    (ISO 8601, read by ``pandas.to_datetime``; converted to seconds since 1970-01-01 UTC);
``modality`` (optional)
    ``audio`` or ``image``; without it the file suffix decides: ``.wav``, ``.flac`` are
    audio, ``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff`` images. Any other suffix is an
    unsupported format.

Other columns (``site``, ``label``, ...) are metadata and travel with the events. Every row
of a device must have the same modality. Column names are configurable.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile

from scicontrast.data_adapters.images.reading import IMAGE_SUFFIXES
from scicontrast.errors import InputDataError

AUDIO_SUFFIXES = (".wav", ".flac")
MODALITIES = ("audio", "image")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq")
PAIRS_FILE = "pairs.parquet"
UNMATCHED_FILE = "unmatched.parquet"
OFFSETS_FILE = "offsets.json"
PLOT_FILE = "time_differences.png"


# --- manifests ---------------------------------------------------------------------------


def manifest_blocks(path: str | Path, rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(first row, table)`` for each block of ``rows`` data rows of the manifest ``path``
    (0-based first row), read as they come: a manifest of 10^6 events is never whole in memory.

    Each block's columns are typed from its own values (as ``pandas.read_csv`` types a large
    file's parts); ``InputDataError`` names the manifest when it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise InputDataError(
            f"{path}: manifest must be CSV, TSV or Parquet ({', '.join(MANIFEST_SUFFIXES)})"
        )
    first = 0
    try:
        if suffix in (".parquet", ".pq"):
            batches = pq.ParquetFile(path).iter_batches(batch_size=rows)
            blocks: Iterable[pd.DataFrame] = (batch.to_pandas() for batch in batches)
        else:
            sep = "," if suffix == ".csv" else "\t"
            blocks = pd.read_csv(path, sep=sep, chunksize=rows)
        for block in blocks:
            yield first, block.set_axis(range(first, first + len(block)))
            first += len(block)
    except pd.errors.EmptyDataError:
        raise InputDataError(f"{path}: manifest is empty") from None
    except (ValueError, OSError, UnicodeDecodeError, pa.ArrowException) as exc:
        raise InputDataError(f"{path}: cannot read manifest: {exc}") from None
    if first == 0:
        raise InputDataError(f"{path}: manifest has no rows")


def manifest_events(
    path: Path,
    frame: pd.DataFrame,
    device_column: str = "device",
    file_column: str = "file",
    time_column: str = "time",
    modality_column: str = "modality",
) -> pd.DataFrame:
    """The events of ``frame``, a block of the manifest ``path`` (format in the module
    docstring) whose index is its 0-based data rows (:func:`manifest_blocks`).

    Returns columns ``device``, ``file`` (absolute path), ``file_as_listed``, ``time_s``,
    ``modality``, ``manifest``, ``row`` (1-based data row) and the metadata columns.
    Raises ``InputDataError`` naming the manifest and row for a missing column, a missing or
    unparseable time, an unsupported file format or a device with two modalities.
    """
    missing = [c for c in (device_column, file_column, time_column) if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{path}: manifest lacks column(s) {missing}; columns: {list(frame.columns)}"
        )
    first_row = int(frame.index[0]) if len(frame) else 0
    where = RowPlaces(path, len(frame), first_row)
    for column in (device_column, file_column):
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise InputDataError(f"{where[int(np.flatnonzero(empty)[0])]}: no {column!r}")
    times = parse_times(frame[time_column], where, time_column)
    files = frame[file_column].astype(str)
    if modality_column in frame.columns:
        modalities = frame[modality_column].astype(str).str.strip().str.lower()
        bad = ~modalities.isin(MODALITIES)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputDataError(
                f"{where[i]}: {modality_column} {frame[modality_column].iloc[i]!r} is not "
                f"one of {list(MODALITIES)}"
            )
        modalities = modalities.tolist()
    else:
        modalities = [modality_of(f, where[i]) for i, f in enumerate(files)]
    for i, (file, modality) in enumerate(zip(files, modalities, strict=True)):
        suffixes = AUDIO_SUFFIXES if modality == "audio" else IMAGE_SUFFIXES
        if suffix_of(file).lower() not in suffixes:
            raise InputDataError(
                f"{where[i]}: {file}: unsupported {modality} format {suffix_of(file)!r}; "
                f"supported: {', '.join(suffixes)}"
            )
    base = path.parent
    events = pd.DataFrame(
        {
            "device": frame[device_column].astype(str).to_numpy(),
            # As str((base / f).resolve()), without a Path per row (suffix_of).
            "file": [os.path.realpath(os.path.join(base, f)) for f in files],
            "file_as_listed": files.to_numpy(),
            "time_s": times,
            "modality": modalities,
            "manifest": str(path),
            "row": np.arange(first_row + 1, first_row + len(frame) + 1),
        }
    )
    mixed = events.groupby("device")["modality"].nunique()
    if (mixed > 1).any():
        device = mixed.index[mixed > 1][0]
        raise InputDataError(f"{path}: device {device!r} lists both audio and image files")
    reserved = {device_column, file_column, time_column, modality_column}
    metadata = frame[[c for c in frame.columns if c not in reserved]].reset_index(drop=True)
    clash = sorted(set(metadata.columns) & set(events.columns))
    if clash:
        raise InputDataError(f"{path}: metadata column(s) {clash} clash with reserved names")
    return pd.concat([events, metadata], axis=1)


class RowPlaces(Sequence[str]):
    """``places[i]`` is ``"<manifest>: row <first + i + 1>"``, made when an error needs it (a
    string per row, made up front, cost 150 bytes a row)."""

    def __init__(self, path: Path, rows: int, first: int = 0) -> None:
        self.path, self.rows, self.first = path, rows, first

    def __len__(self) -> int:
        return self.rows

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.rows))]
        if not -self.rows <= index < self.rows:
            raise IndexError(index)
        return f"{self.path}: row {self.first + index % self.rows + 1}"


def parse_times(values: pd.Series, where: Sequence[str], column: str = "time") -> np.ndarray:
    """Capture times -> ``float64`` seconds: numbers as they are, date-time strings (ISO 8601)
    as seconds since 1970-01-01 UTC (naive times are taken as UTC).

    Raises ``InputDataError`` at the first missing or unparseable value, naming ``where[i]``.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        seconds = values.to_numpy(dtype=np.float64)
    else:
        as_text = values.astype(str).str.strip()
        numbers = pd.to_numeric(as_text, errors="coerce")
        stamps = pd.to_datetime(as_text, errors="coerce", utc=True, format="ISO8601")
        # The column is read as whichever kind most of its values are; the first value that
        # is not of that kind is the one reported.
        if numbers.notna().sum() >= stamps.notna().sum():
            seconds = numbers.to_numpy(dtype=np.float64)
        else:
            seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
            seconds[numbers.notna().to_numpy()] = np.nan
        seconds[values.isna().to_numpy()] = np.nan
    bad = ~np.isfinite(seconds)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = values.iloc[i]
        what = "missing" if pd.isna(value) else f"unparseable ({value!r})"
        raise InputDataError(
            f"{where[i]}: {column} is {what}; write seconds or an ISO 8601 date-time"
        )
    return seconds


def suffix_of(file: str) -> str:
    """The file name's suffix, as ``Path(file).suffix`` (a leading dot is no suffix), without
    making a ``Path``: that interns every part of the path, and Python's table of interned
    strings never shrinks (about 100 MiB after 10^6 files)."""
    suffix = os.path.splitext(file)[1]
    return "" if suffix == "." else suffix


def modality_of(file: str, where: str) -> str:
    suffix = suffix_of(file).lower()
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise InputDataError(
        f"{where}: {file}: unsupported format {suffix!r}; audio: {', '.join(AUDIO_SUFFIXES)}; "
        f"images: {', '.join(IMAGE_SUFFIXES)}"
    )


def check_files(events: pd.DataFrame) -> None:
    """Every event's file exists; audio files have a readable header and at least one frame."""
    for file, modality, manifest, row in zip(
        events["file"], events["modality"], events["manifest"], events["row"], strict=True
    ):
        where = f"{manifest}: row {row}: {file}"
        try:
            facts = os.stat(file)
        except OSError:
            facts = None
        if facts is None or not stat.S_ISREG(facts.st_mode):
            raise InputDataError(f"{where}: file not found")
        if facts.st_size == 0:
            raise InputDataError(f"{where}: empty file (0 bytes)")
        if modality == "audio":
            _audio_info(file, where)


def _audio_info(path: str, where: str) -> soundfile._SoundFileInfo:
    try:
        info = soundfile.info(path)
    except Exception as exc:  # libsndfile raises its own error types, not always OSError
        raise InputDataError(f"{where}: cannot read audio ({' '.join(str(exc).split())})") from None
    if info.frames == 0:
        raise InputDataError(f"{where}: audio has no samples")
    return info
