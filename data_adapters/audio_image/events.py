"""The manifests' events as numpy columns, their strings spilled to disk by block.

``synchronize`` needs every event's time and device to estimate the clocks' offsets and to
pair the events; it needs the strings (file paths, devices, metadata) only to write its
output. Held as pandas rows of Python strings, the events of a 10^6-event recording cost
about 0.6 KiB each (940 MiB at 950,000 events). :func:`read_events` reads each manifest
``BLOCK_ROWS`` rows at a time, checks the block (:func:`~.manifests.manifest_events`, the
files, repeated files) and keeps

* ``times`` (``float64 [E]``), ``device`` (``int32 [E]``, codes into ``devices``);
* per metadata column, whether each event has a value (``bool [E]``), and its type as
  ``pandas.concat`` of all manifests would give it;
* the truth column, if asked for, as comparable keys (numbers as they are, other values as
  64-bit hashes) and a mask of the events that have one;
* every event's device and file as a 16-byte hash, to find a file listed twice
  (:class:`~scicontrast.data_adapters.id_hashes.HashedIdSet`);

about 40 bytes an event. The block's table itself goes to a pickle in the spill folder (the
exact values and types: a round trip), and :meth:`Events.frame` reads back the rows that an
output needs. Events are numbered in manifest order, rows within a manifest in file order.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scicontrast.data_adapters.audio_image.manifests import (
    check_files,
    manifest_blocks,
    manifest_events,
)
from scicontrast.data_adapters.id_hashes import HashedIdSet
from scicontrast.errors import ConfigError, InputDataError

# Rows per block: a block's table holds ~330 bytes of Python strings a row (5 MiB).
BLOCK_ROWS = 16_384
COLLECT_ROWS = 65_536
SPILLED = ["device", "file", "file_as_listed"]
_EVENT_COLUMNS = {"device", "file", "file_as_listed", "time_s", "modality", "manifest", "row"}


@dataclass
class Block:
    """One spilled block (a pickled table at ``path``): the events from number ``first`` on,
    of manifest number ``manifest``, whose data rows start at ``first_row`` (0-based)."""

    path: Path
    manifest: int
    first: int
    first_row: int


@dataclass
class Events:
    """Every manifest's events as columns (module docstring); ``E`` events."""

    manifests: list[str]
    times: np.ndarray
    device: np.ndarray
    devices: list[str]
    modalities: list[str]
    device_manifests: list[list[str]]
    metadata: dict[str, Any]
    present: dict[str, np.ndarray]
    truth: tuple[np.ndarray, np.ndarray] | None
    blocks: list[Block]
    _cache: dict[int, pd.DataFrame] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)

    def is_audio(self) -> np.ndarray:
        """``bool [E]``: which events are audio."""
        return (np.asarray(self.modalities) == "audio")[self.device]

    def frame(self, rows: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        """The events ``rows`` (in that order) with ``columns``: any of ``device``, ``file``,
        ``file_as_listed``, ``time_s``, ``modality``, ``manifest``, ``row`` and the metadata
        columns, typed as in one table of all manifests; the strings read back by block."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.array([block.first for block in self.blocks])
        owner = np.searchsorted(starts, rows, side="right") - 1
        out: dict[str, Any] = {}
        if "time_s" in columns:
            out["time_s"] = self.times[rows]
        if "modality" in columns:
            out["modality"] = np.asarray(self.modalities, dtype=object)[self.device[rows]]
        if "manifest" in columns:
            names = np.asarray(self.manifests, dtype=object)
            out["manifest"] = names[[self.blocks[b].manifest for b in owner]]
        if "row" in columns:
            first_rows = np.array([b.first_row - b.first + 1 for b in self.blocks])
            out["row"] = rows + first_rows[owner]
        spilled = [c for c in columns if c in SPILLED or c in self.metadata]
        if spilled:
            parts = self._spilled(rows, owner, spilled)
            out.update({c: parts[c] for c in spilled})
        return pd.DataFrame({c: out[c] for c in columns})

    def _spilled(self, rows: np.ndarray, owner: np.ndarray, columns: list[str]) -> pd.DataFrame:
        """``columns`` of the spilled blocks at ``rows``, in order, with the metadata's types."""
        if len(rows) == 0:
            return pd.DataFrame({c: pd.Series([], dtype=self._types(columns)[c]) for c in columns})
        pieces, places = [], []
        for b in np.unique(owner):
            block = self._block(int(b))
            mine = np.flatnonzero(owner == b)
            local = block.iloc[rows[mine] - self.blocks[b].first]
            pieces.append(local.reindex(columns=columns).astype(self._types(columns)))
            places.append(mine)
        table = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
        order = np.argsort(np.concatenate(places), kind="stable")
        return table.iloc[order].reset_index(drop=True)

    def _types(self, columns: list[str]) -> dict[str, Any]:
        return {c: self.metadata.get(c, object) for c in columns}

    def _block(self, number: int) -> pd.DataFrame:
        if number not in self._cache:
            if len(self._cache) >= 2:  # two blocks: an output group's audio and image rows
                self._cache.pop(next(iter(self._cache)))
            self._cache[number] = pd.read_pickle(self.blocks[number].path)
        return self._cache[number]


def read_events(
    manifests: Sequence[str | Path],
    columns: tuple[str, str, str, str],
    truth_column: str | None,
    spill: Path,
) -> Events:
    """Read and check every manifest's events (module docstring), spilling their strings to
    the folder ``spill`` (created here; the caller removes it).

    ``InputDataError`` names the manifest and row of the first bad event, ``ConfigError`` a
    truth column that no manifest has.
    """
    spill.mkdir(parents=True)
    reader, since_collected = _Reader(columns, truth_column, spill), 0
    for number, manifest in enumerate(manifests):
        for first_row, frame in manifest_blocks(manifest, BLOCK_ROWS):
            reader.add(number, Path(manifest), first_row, frame)
            # The blocks' tables hold reference cycles: freed every COLLECT_ROWS rows, not
            # when the collector comes to them (18 MiB less at 10^6 events).
            since_collected += len(frame)
            if since_collected >= COLLECT_ROWS:
                gc.collect()
                since_collected = 0
    events = reader.finish([str(m) for m in manifests])
    del reader
    return_freed_memory()
    return events


def return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing
    where the C library has none). The blocks' Python strings leave holes in the heap that
    it keeps otherwise: 230 MiB resident after reading 10^6 events, 172 after the trim."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


class _Reader:
    """The state of :func:`read_events` between blocks."""

    def __init__(self, columns: tuple[str, str, str, str], truth: str | None, spill: Path):
        self.columns, self.truth_column, self.spill = columns, truth, spill
        self.times: list[np.ndarray] = []
        self.device: list[np.ndarray] = []
        self.codes: dict[str, int] = {}
        self.modalities: list[str] = []
        self.device_manifests: list[list[str]] = []
        self.samples: list[pd.DataFrame] = []
        self.present: dict[str, list[tuple[int, np.ndarray]]] = {}
        self.truth: list[np.ndarray] = []
        self.blocks: list[Block] = []
        self.keys = HashedIdSet()
        self.names: dict[int, str] = {}
        self.truth_seen = False
        self.count = 0

    def add(self, number: int, manifest: Path, first_row: int, frame: pd.DataFrame) -> None:
        events = manifest_events(manifest, frame, *self.columns)
        self.names[number] = str(manifest)
        self._check_unique(events)
        check_files(events)
        self.device.append(self._device_codes(events, str(manifest)))
        self.times.append(events["time_s"].to_numpy(dtype=np.float64))
        metadata = [c for c in events.columns if c not in _EVENT_COLUMNS]
        self.samples.append(events[metadata].iloc[:1])
        for column in metadata:
            mask = events[column].notna().to_numpy()
            self.present.setdefault(column, []).append((self.count, mask))
        if self.truth_column is not None:
            self.truth_seen |= self.truth_column in events.columns
            self.truth.append(_truth_values(events, self.truth_column))
        path = self.spill / f"{len(self.blocks)}.pkl"
        events[SPILLED + metadata].to_pickle(path)
        self.blocks.append(Block(path, number, self.count, first_row))
        self.count += len(events)

    def _check_unique(self, events: pd.DataFrame) -> None:
        keys = (events["device"] + "/" + events["file_as_listed"]).to_numpy()
        repeat = self.keys.add_new(keys)
        if repeat is None:
            return
        key = keys[repeat]
        here = np.flatnonzero(keys == key)
        places = self._places(key) + [
            f"{events['manifest'].iloc[i]}: row {events['row'].iloc[i]}" for i in here
        ]
        raise InputDataError(f"{places[0]} and {places[1]}: device and file {key!r} listed twice")

    def _places(self, key: str) -> list[str]:
        """Where the spilled blocks list ``key`` (device/file as listed), in event order."""
        places = []
        for block in self.blocks:
            table = pd.read_pickle(block.path)
            hits = np.flatnonzero((table["device"] + "/" + table["file_as_listed"]) == key)
            manifest = self.names[block.manifest]
            places += [f"{manifest}: row {block.first_row + int(h) + 1}" for h in hits]
        return places

    def _device_codes(self, events: pd.DataFrame, manifest: str) -> np.ndarray:
        """``int32`` codes of the block's devices; a device seen with both modalities (in
        this manifest or across manifests) is an error."""
        names, local = np.unique(events["device"].to_numpy(dtype=object), return_inverse=True)
        modality = events["modality"].to_numpy()
        lookup = np.empty(len(names), dtype=np.int32)
        for k, name in enumerate(names):
            kind = modality[np.flatnonzero(local == k)[0]]
            code = self.codes.setdefault(name, len(self.codes))
            if code == len(self.modalities):
                self.modalities.append(kind)
                self.device_manifests.append([])
            if manifest not in self.device_manifests[code]:
                self.device_manifests[code].append(manifest)
            if self.modalities[code] != kind:
                where = sorted(self.device_manifests[code])
                raise InputDataError(
                    f"{', '.join(where)}: device {name!r} lists both audio and image files"
                )
            lookup[k] = code
        return lookup[local]

    def _truth_keys(self, manifests: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """``(keys, has value)``: keys equal where the truth values are equal; numbers as
        they are (``numpy``'s promotion, as ``pandas.concat``'s), other values as 64-bit
        hashes (``pandas.util.hash_array``)."""
        if self.truth_column is None:
            return None
        if not self.truth_seen:
            raise ConfigError(
                f"synchronize: truth_column {self.truth_column!r} is not a column of "
                f"{', '.join(manifests)}"
            )
        if all(p.dtype.kind in "biuf" for p in self.truth):
            keys = np.concatenate(self.truth)
            return keys, ~pd.isna(keys)
        objects = [p.astype(object) for p in self.truth]
        valid = np.concatenate([~pd.isna(p) for p in objects])
        keys = np.concatenate([pd.util.hash_array(p, categorize=False) for p in objects])
        return keys, valid

    def finish(self, manifests: list[str]) -> Events:
        metadata = dict(pd.concat(self.samples, ignore_index=True).dtypes.items())
        present = {}
        for column in metadata:
            mask = np.zeros(self.count, dtype=bool)
            for first, part in self.present.get(column, []):
                mask[first : first + len(part)] = part
            present[column] = mask
        return Events(
            manifests=manifests,
            times=np.concatenate(self.times),
            device=np.concatenate(self.device),
            devices=list(self.codes),
            modalities=self.modalities,
            device_manifests=[sorted(m) for m in self.device_manifests],
            metadata=metadata,
            present=present,
            truth=self._truth_keys(manifests),
            blocks=self.blocks,
        )


def _truth_values(events: pd.DataFrame, column: str) -> np.ndarray:
    """The block's truth values: numbers as ``float64``/``int64``, anything else as objects;
    missing (or a block without the column): NaN."""
    if column not in events.columns:
        return np.full(len(events), np.nan)
    values = events[column]
    if values.dtype.kind in "biuf":
        return values.to_numpy()
    return values.to_numpy(dtype=object)
