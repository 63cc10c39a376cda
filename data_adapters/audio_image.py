r"""Audio and images from two clocks: manifests, synchronisation, the adapter and the pairs.

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

Synchronisation (:func:`synchronize`)
-------------------------------------
**Offsets.** Each device ``d`` gets a clock offset ``delta_d`` relative to a reference device
(``delta_ref = 0``), so that ``t + delta_d`` is the time on the reference clock. With
reference times ``r_i``, the device's times ``t_j`` and a tolerance ``tau``,

.. math::

    \hat\delta_d = \arg\max_{|\delta| \le \Delta}
        \#\{(i, j) : |r_i - (t_j + \delta)| \le \tau\},

the lag that lines up the most events (the peak of the cross-correlation of the two event
trains, smoothed by a box of width ``2 tau``). It is computed exactly, not on a grid: every
difference ``r_i - t_j`` within ``Delta + tau`` of zero is a candidate, the count of a
window ``[delta - tau, delta + tau]`` only changes at such differences, so a sliding
window over the sorted differences finds the maximum; the estimate is the median of the
differences in the best window (robust to the jitter's tails). ``runner_up_matches``, the
best count at lags farther than ``2 tau`` from the estimate, says how clear the peak is:
a periodic event schedule, for instance, has several equal peaks and no unique offset.

**Pairs.** On the reference clock, each audio event is paired with the nearest image event
within ``tau``, one to one: candidate pairs are accepted in order of increasing
``|time difference|`` while neither side is taken. Events left over are *unmatched*.

**Output folder** (written atomically: all of it or nothing)::

    pairs.parquet          one row per pair: event (0..P-1), time_difference_s (image minus
                           audio, reference clock), and for side in (audio, image):
                           <side>_device, <side>_file (absolute), <side>_time_s (device
                           clock), <side>_corrected_s (reference clock), <side>_manifest,
                           <side>_row, <side>_<metadata column>
    unmatched.parquet      the events without a partner: modality, device, file, time_s,
                           corrected_s, manifest, row
    offsets.json           reference device, tolerance, search range; per device its
                           modality, manifests, offset_s, events, matched, unmatched and the
                           offset search's best and runner-up counts; totals; and, with a
                           truth column, the pairing precision and recall
    time_differences.png   histogram of the pairs' time differences, for a person to look at

Every file a manifest names must exist, and audio files must have a readable header and at
least one frame; otherwise :class:`~scicontrast.errors.InputDataError` names the manifest,
the row and the file, and nothing is written. So does a device none of whose events is
paired.

Adapter (``audio_image``)
-------------------------
Reads a synchronisation folder: one item per paired audio clip and one per paired image.
Audio is read with ``soundfile`` (WAV, FLAC), down-mixed to mono by averaging the channels,
resampled to ``sample_rate`` with a polyphase filter (``scipy.signal.resample_poly``, up
and down by the rates over their gcd; Kaiser window, beta 5) and cut or zero-padded to
``clip_seconds`` around its centre. Images are read as in
:mod:`~scicontrast.data_adapters.images`, made grey or RGB (``channels``) and brought to
``image_size`` (``resize``: ``crop`` or ``fit``).

Items table: ``item_id`` (``<modality>/<device>/<file as in the manifest>``), ``modality``,
``event`` (the pair), ``device``, ``file``, ``time_s``, ``corrected_s``, ``duration_s``
(audio as recorded; ``NaN`` for images), ``modality_row`` (the row in that modality's
array) and the metadata columns. Audio rows come first, then image rows, each in event
order. Arrays are extras (``Items.extras``), one per modality: ``audio`` ``float32 [A, T]``
and ``images`` ``float32 [I, C, S, S]`` in ``[0, 1]``. ``meta["modality"] ==
"audio_image"``; ``meta["synchronization"]`` holds ``offsets.json``.

New recordings, unpaired (``files``). ``scicontrast embed --model model.pt FILE...`` reads
audio clips and images one by one, with the trained model's settings (modality by suffix,
as in a manifest): one item per file, in the order given, ``item_id``
``<modality>/<file as given>``, columns ``modality``, ``file``, ``duration_s``,
``modality_row``. Such items have no events, so they embed but do not train.

Pairs (``synchronized_pairs``)
------------------------------
One group per event, views ``audio`` and ``image``. A training view may be augmented:
audio played faster or slower by a factor ``r ~ U[1 - audio_speed, 1 + audio_speed]``
about the clip's centre (linear interpolation; like tape speed, it scales tempo and pitch
together, a rough stand-in for another voice), shifted in time by up to ``audio_shift_s``
(zero-filled) and scaled by a gain of up to ``audio_gain_db``; an image translated by up to
``image_shift`` pixels (zero-filled).
Training batches carry both towers' inputs (:class:`AudioImageBatch`) and ``towers``, the
rows of the two sides of each pair, which the training loop hands to the symmetric (CLIP) loss.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile
import torch
from skimage.color import rgb2gray

from scicontrast.data_adapters.base import Adapter, Items, PairBuilder, epoch_seed
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.images import (
    IMAGE_SUFFIXES,
    normalise_pixels,
    read_image_pages,
    square_image,
)
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.io import atomic_path
from scicontrast.registry import ADAPTERS, PAIR_BUILDERS

AUDIO_SUFFIXES = (".wav", ".flac")
MODALITIES = ("audio", "image")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq")
PAIRS_FILE = "pairs.parquet"
UNMATCHED_FILE = "unmatched.parquet"
OFFSETS_FILE = "offsets.json"
PLOT_FILE = "time_differences.png"


# --- manifests ---------------------------------------------------------------------------


def read_manifest(
    path: str | Path,
    device_column: str = "device",
    file_column: str = "file",
    time_column: str = "time",
    modality_column: str = "modality",
) -> pd.DataFrame:
    """One manifest as a table of events (format in the module docstring).

    Returns columns ``device``, ``file`` (absolute path), ``file_as_listed``, ``time_s``,
    ``modality``, ``manifest``, ``row`` (1-based data row) and the metadata columns.
    Raises ``InputDataError`` naming the manifest and row for a missing column, a missing or
    unparseable time, an unsupported file format or a device with two modalities.
    """
    path = Path(path)
    frame = _read_table(path)
    missing = [c for c in (device_column, file_column, time_column) if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{path}: manifest lacks column(s) {missing}; columns: {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise InputDataError(f"{path}: manifest has no rows")
    where = [f"{path}: row {i + 1}" for i in range(len(frame))]
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
        modalities = [_modality_of(f, w) for f, w in zip(files, where, strict=True)]
    for file, modality, place in zip(files, modalities, where, strict=True):
        suffixes = AUDIO_SUFFIXES if modality == "audio" else IMAGE_SUFFIXES
        if Path(file).suffix.lower() not in suffixes:
            raise InputDataError(
                f"{place}: {file}: unsupported {modality} format {Path(file).suffix!r}; "
                f"supported: {', '.join(suffixes)}"
            )
    base = path.parent
    events = pd.DataFrame(
        {
            "device": frame[device_column].astype(str).to_numpy(),
            "file": [str((base / f).resolve()) for f in files],
            "file_as_listed": files.to_numpy(),
            "time_s": times,
            "modality": modalities,
            "manifest": str(path),
            "row": np.arange(1, len(frame) + 1),
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


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputDataError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise InputDataError(
            f"{path}: manifest must be CSV, TSV or Parquet ({', '.join(MANIFEST_SUFFIXES)})"
        )
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".tsv", ".tab", ".txt"):
            return pd.read_csv(path, sep="\t")
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise InputDataError(f"{path}: manifest is empty") from None
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot read manifest: {exc}") from None


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


def _modality_of(file: str, where: str) -> str:
    suffix = Path(file).suffix.lower()
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
        path = Path(file)
        if not path.is_file():
            raise InputDataError(f"{where}: file not found")
        if path.stat().st_size == 0:
            raise InputDataError(f"{where}: empty file (0 bytes)")
        if modality == "audio":
            _audio_info(path, where)


def _audio_info(path: Path, where: str) -> soundfile._SoundFileInfo:
    try:
        info = soundfile.info(str(path))
    except Exception as exc:  # libsndfile raises its own error types, not always OSError
        raise InputDataError(f"{where}: cannot read audio ({' '.join(str(exc).split())})") from None
    if info.frames == 0:
        raise InputDataError(f"{where}: audio has no samples")
    return info


# --- offsets and matching ----------------------------------------------------------------


@dataclass
class OffsetEstimate:
    """Result of :func:`estimate_offset`: the lag and how many events it lines up."""

    offset_s: float
    matches: int
    runner_up_matches: int


def estimate_offset(
    reference: np.ndarray, times: np.ndarray, tolerance_s: float, max_offset_s: float
) -> OffsetEstimate:
    """The offset ``delta`` (``|delta| <= max_offset_s``) with ``reference ~ times + delta``
    that lines up the most events within ``tolerance_s`` (module docstring).

    With no candidate lag at all the offset is 0 with 0 matches.
    """
    reference = np.sort(np.asarray(reference, dtype=np.float64))
    times = np.sort(np.asarray(times, dtype=np.float64))
    reach = max_offset_s + tolerance_s
    starts = np.searchsorted(reference, times - reach, side="left")
    stops = np.searchsorted(reference, times + reach, side="right")
    counts = stops - starts
    if counts.sum() == 0:
        return OffsetEstimate(0.0, 0, 0)
    owner = np.repeat(np.arange(len(times)), counts)
    first = np.repeat(starts - np.cumsum(counts) + counts, counts)
    differences = np.sort(reference[first + np.arange(counts.sum())] - times[owner])
    # Window [d_k, d_k + 2 tau] for every candidate start d_k; its centre is the lag.
    ends = np.searchsorted(differences, differences + 2 * tolerance_s, side="right")
    window_counts = ends - np.arange(len(differences))
    centres = differences + tolerance_s
    allowed = np.abs(centres) <= max_offset_s + 1e-12
    if not allowed.any():
        return OffsetEstimate(0.0, 0, 0)
    window_counts = np.where(allowed, window_counts, 0)
    best = int(np.argmax(window_counts))
    offset = float(np.median(differences[best : ends[best]]))
    offset = float(np.clip(offset, -max_offset_s, max_offset_s))
    far = np.abs(centres - offset) > 2 * tolerance_s
    runner_up = int(window_counts[far].max()) if far.any() else 0
    matched = len(match_events(reference, times + offset, tolerance_s)[0])
    return OffsetEstimate(offset, matched, runner_up)


def match_events(
    first: np.ndarray, second: np.ndarray, tolerance_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs ``(i, j)`` with ``|first[i] - second[j]| <= tolerance_s``, taken in
    order of increasing distance (ties by ``i``, then ``j``); returns index arrays sorted by
    ``i``."""
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    order = np.argsort(second, kind="stable")
    ordered = second[order]
    starts = np.searchsorted(ordered, first - tolerance_s, side="left")
    stops = np.searchsorted(ordered, first + tolerance_s, side="right")
    counts = stops - starts
    i = np.repeat(np.arange(len(first)), counts)
    positions = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    j = order[positions]
    distance = np.abs(first[i] - second[j])
    taken_first = np.zeros(len(first), dtype=bool)
    taken_second = np.zeros(len(second), dtype=bool)
    kept = []
    for k in np.lexsort((j, i, distance)):
        if not taken_first[i[k]] and not taken_second[j[k]]:
            taken_first[i[k]] = taken_second[j[k]] = True
            kept.append(k)
    kept = np.asarray(kept, dtype=np.int64)
    by_first = np.argsort(i[kept], kind="stable")
    return i[kept][by_first], j[kept][by_first]


# --- synchronisation ---------------------------------------------------------------------


def synchronize(
    manifests: Sequence[str | Path],
    out_dir: str | Path,
    reference_device: str | None = None,
    tolerance_s: float = 0.25,
    max_offset_s: float = 10.0,
    truth_column: str | None = None,
    device_column: str = "device",
    file_column: str = "file",
    time_column: str = "time",
    modality_column: str = "modality",
) -> dict[str, Any]:
    """Estimate clock offsets, pair audio with image events, write ``out_dir``.

    Args:
        manifests: One or more manifest files (module docstring); together they list every
            device's events.
        out_dir: The synchronisation folder to write (atomically).
        reference_device: The device whose clock the others are aligned to; ``None``: the
            audio device with the most events (ties: first by name).
        tolerance_s: Events closer than this on the reference clock may pair.
        max_offset_s: Offsets are searched in ``[-max_offset_s, max_offset_s]``.
        truth_column: A metadata column holding the true event id (a simulation's ground
            truth): the pairing precision and recall are computed from it.
        device_column, file_column, time_column, modality_column: The manifests' column
            names.

    Returns:
        What ``offsets.json`` holds.
    """
    if not manifests:
        raise ConfigError("synchronize: name at least one manifest")
    for name, value in (("tolerance_s", tolerance_s), ("max_offset_s", max_offset_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"synchronize: {name} must be a number > 0, got {value!r}")
    events = pd.concat(
        [
            read_manifest(m, device_column, file_column, time_column, modality_column)
            for m in manifests
        ],
        ignore_index=True,
    )
    _check_unique(events)
    if truth_column is not None and truth_column not in events.columns:
        raise ConfigError(
            f"synchronize: truth_column {truth_column!r} is not a manifest column; "
            f"columns: {list(events.columns)}"
        )
    check_files(events)
    devices = _device_table(events)
    for modality in MODALITIES:
        if modality not in set(devices["modality"]):
            raise InputDataError(f"{', '.join(map(str, manifests))}: no {modality} events")
    reference = _reference(devices, reference_device)

    reference_times = events.loc[events["device"] == reference, "time_s"].to_numpy()
    estimates = {}
    for device in devices.index:
        times = events.loc[events["device"] == device, "time_s"].to_numpy()
        if device == reference:
            estimates[device] = OffsetEstimate(0.0, len(times), 0)
        else:
            estimates[device] = estimate_offset(reference_times, times, tolerance_s, max_offset_s)
    events["corrected_s"] = events["time_s"] + events["device"].map(
        {d: e.offset_s for d, e in estimates.items()}
    )

    audio = events[events["modality"] == "audio"].reset_index(drop=True)
    image = events[events["modality"] == "image"].reset_index(drop=True)
    a, i = match_events(
        audio["corrected_s"].to_numpy(), image["corrected_s"].to_numpy(), tolerance_s
    )
    pairs = _pairs_table(audio.iloc[a], image.iloc[i])
    matched = np.zeros(len(events), dtype=bool)
    is_audio = (events["modality"] == "audio").to_numpy()
    matched[np.flatnonzero(is_audio)[a]] = True
    matched[np.flatnonzero(~is_audio)[i]] = True
    events["matched"] = matched

    per_device = {}
    for device, info in devices.iterrows():
        rows = events[events["device"] == device]
        estimate = estimates[device]
        per_device[device] = {
            "modality": info["modality"],
            "manifests": sorted(set(rows["manifest"])),
            "offset_s": estimate.offset_s,
            "offset_search_matches": estimate.matches,
            "offset_search_runner_up": estimate.runner_up_matches,
            "events": len(rows),
            "matched": int(rows["matched"].sum()),
            "unmatched": int((~rows["matched"]).sum()),
        }
        if per_device[device]["matched"] == 0:
            raise InputDataError(
                f"{', '.join(per_device[device]['manifests'])}: device {device!r}: none of its "
                f"{len(rows)} events pairs within {tolerance_s} s (best offset "
                f"{estimate.offset_s:+.3f} s against reference {reference!r} lined up "
                f"{estimate.matches}); check its clock, max_offset_s and tolerance_s"
            )
    summary: dict[str, Any] = {
        "manifests": [str(m) for m in manifests],
        "reference_device": reference,
        "tolerance_s": float(tolerance_s),
        "max_offset_s": float(max_offset_s),
        "devices": per_device,
        "events": len(events),
        "pairs": len(pairs),
        "unmatched": {
            m: int((~events["matched"] & (events["modality"] == m)).sum()) for m in MODALITIES
        },
        "time_difference_s": _spread(pairs["time_difference_s"].to_numpy()),
    }
    if truth_column is not None:
        summary["pairing"] = pairing_accuracy(events, pairs, truth_column)

    unmatched = events.loc[
        ~events["matched"],
        ["modality", "device", "file", "time_s", "corrected_s", "manifest", "row"],
    ]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        pairs.to_parquet(tmp / PAIRS_FILE, index=False)
        unmatched.reset_index(drop=True).to_parquet(tmp / UNMATCHED_FILE, index=False)
        (tmp / OFFSETS_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        plot_time_differences(pairs["time_difference_s"].to_numpy(), tolerance_s, tmp / PLOT_FILE)
    return summary


def _check_unique(events: pd.DataFrame) -> None:
    keys = events["device"] + "/" + events["file_as_listed"]
    duplicated = keys.duplicated(keep=False)
    if duplicated.any():
        rows = events[duplicated].head(2)
        places = " and ".join(
            f"{m}: row {r}" for m, r in zip(rows["manifest"], rows["row"], strict=True)
        )
        raise InputDataError(f"{places}: device and file {keys[duplicated].iloc[0]!r} listed twice")


def _device_table(events: pd.DataFrame) -> pd.DataFrame:
    modality = events.groupby("device")["modality"].agg(lambda m: sorted(set(m)))
    mixed = modality[modality.map(len) > 1]
    if len(mixed):
        device = mixed.index[0]
        manifests = ", ".join(sorted(set(events.loc[events["device"] == device, "manifest"])))
        raise InputDataError(f"{manifests}: device {device!r} lists both audio and image files")
    return pd.DataFrame(
        {"modality": modality.map(lambda m: m[0]), "events": events.groupby("device").size()}
    )


def _reference(devices: pd.DataFrame, reference_device: str | None) -> str:
    if reference_device is not None:
        if reference_device not in devices.index:
            raise ConfigError(
                f"synchronize: reference_device {reference_device!r} is not in the manifests; "
                f"devices: {sorted(devices.index)}"
            )
        return reference_device
    audio = devices[devices["modality"] == "audio"]
    most = audio["events"].max()
    return sorted(audio.index[audio["events"] == most])[0]


def _pairs_table(audio: pd.DataFrame, image: pd.DataFrame) -> pd.DataFrame:
    columns = {"event": np.arange(len(audio))}
    columns["time_difference_s"] = image["corrected_s"].to_numpy() - audio["corrected_s"].to_numpy()
    for side, frame in (("audio", audio), ("image", image)):
        for column in ("device", "file", "time_s", "corrected_s", "manifest", "row"):
            columns[f"{side}_{column}"] = frame[column].to_numpy()
        columns[f"{side}_file_as_listed"] = frame["file_as_listed"].to_numpy()
        for column in _metadata_columns(frame):
            columns[f"{side}_{column}"] = frame[column].to_numpy()
    return pd.DataFrame(columns)


_EVENT_COLUMNS = {"device", "file", "file_as_listed", "time_s", "modality", "manifest", "row"}
_EVENT_COLUMNS |= {"corrected_s", "matched"}


def _metadata_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in _EVENT_COLUMNS and frame[c].notna().any()]


def pairing_accuracy(events: pd.DataFrame, pairs: pd.DataFrame, truth_column: str) -> dict:
    """Pairs whose audio and image share the true event id (``truth_column``).

    ``precision`` = correct / pairs; ``recall`` = correct / true events that have both an
    audio and an image event.
    """
    correct = int((pairs[f"audio_{truth_column}"] == pairs[f"image_{truth_column}"]).sum())
    truth = events.dropna(subset=[truth_column])
    both = set(truth.loc[truth["modality"] == "audio", truth_column]) & set(
        truth.loc[truth["modality"] == "image", truth_column]
    )
    return {
        "truth_column": truth_column,
        "pairs": len(pairs),
        "correct": correct,
        "true_pairs": len(both),
        "precision": correct / len(pairs) if len(pairs) else None,
        "recall": correct / len(both) if both else None,
    }


def _spread(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"median": None, "mad": None, "max_abs": None}
    median = float(np.median(values))
    return {
        "median": median,
        "mad": float(np.median(np.abs(values - median))),
        "max_abs": float(np.abs(values).max()),
    }


def plot_time_differences(differences: np.ndarray, tolerance_s: float, path: Path) -> None:
    """Histogram of the pairs' time differences, with the tolerance marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.subplots()
    bins = np.linspace(-tolerance_s, tolerance_s, 41)
    axes.hist(differences, bins=bins, color="tab:blue")
    for x in (-tolerance_s, tolerance_s):
        axes.axvline(x, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("image time - audio time on the reference clock (s)")
    axes.set_ylabel("pairs")
    axes.set_title(f"{len(differences)} pairs; tolerance ±{tolerance_s:g} s")
    figure.savefig(path, dpi=100)


def load_synchronization(folder: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``(offsets.json, pairs table)`` of a synchronisation folder."""
    folder = Path(folder)
    offsets, pairs = folder / OFFSETS_FILE, folder / PAIRS_FILE
    if not offsets.is_file() or not pairs.is_file():
        raise InputDataError(
            f"{folder}: not a synchronisation folder (needs {OFFSETS_FILE} and {PAIRS_FILE}; "
            "write one with 'scicontrast synchronize')"
        )
    return json.loads(offsets.read_text()), pd.read_parquet(pairs)


def synchronization_options(entry: dict[str, Any]) -> str:
    """The ``scicontrast synchronize`` options (shell-quoted) for one ``synchronizations``
    entry of the config."""
    options = []
    for key in ("reference_device", "tolerance_s", "max_offset_s", "truth_column"):
        if entry.get(key) is not None:
            options += [f"--{key.replace('_', '-')}", str(entry[key])]
    for key in ("device_column", "file_column", "time_column", "modality_column"):
        if key in entry:
            options += [f"--{key.replace('_', '-')}", str(entry[key])]
    return shlex.join(options)


# --- reading audio and images ------------------------------------------------------------


def read_audio(path: str | Path, sample_rate: int, where: str | None = None) -> np.ndarray:
    """A clip as ``float32 [T]`` at ``sample_rate``: channels averaged, resampled.

    Raises ``InputDataError`` naming ``where`` (default: the path) for a missing,
    unreadable or empty file.
    """
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise InputDataError(f"{where}: audio file not found")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises its own error types
        raise InputDataError(f"{where}: cannot read audio ({' '.join(str(exc).split())})") from None
    if samples.shape[0] == 0:
        raise InputDataError(f"{where}: audio has no samples")
    return resample(samples.mean(axis=1), rate, sample_rate)


def resample(signal: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling of ``[T]`` from ``rate`` to ``target_rate`` (float32)."""
    if rate == target_rate:
        return np.asarray(signal, dtype=np.float32)
    # Imported here: scipy.signal takes most of a second to import, and every workflow step
    # imports this module through the registry.
    from scipy.signal import resample_poly

    divisor = math.gcd(int(rate), int(target_rate))
    up, down = int(target_rate) // divisor, int(rate) // divisor
    return resample_poly(np.asarray(signal, dtype=np.float64), up, down).astype(np.float32)


def fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad ``[T]`` to ``length`` samples, keeping the centre."""
    if len(signal) >= length:
        start = (len(signal) - length) // 2
        return np.ascontiguousarray(signal[start : start + length])
    out = np.zeros(length, dtype=np.float32)
    start = (length - len(signal)) // 2
    out[start : start + len(signal)] = signal
    return out


def read_picture(path: str | Path, size: int, channels: int, resize: str, where: str) -> np.ndarray:
    """An image as ``float32 [channels, size, size]`` in ``[0, 1]``."""
    pages = read_image_pages(path)
    pixels, _ = normalise_pixels(pages[0], where)
    if channels == 1 and pixels.shape[2] == 3:
        pixels = rgb2gray(pixels)[:, :, None].astype(np.float32)
    elif channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    square, _, _ = square_image(pixels, size, resize, where)
    return np.ascontiguousarray(square.transpose(2, 0, 1), dtype=np.float32)


# --- adapter -----------------------------------------------------------------------------


@ADAPTERS.register("audio_image")
class AudioImageAdapter(Adapter):
    """The paired audio clips and images of a synchronisation folder (module docstring).

    Args:
        synchronization: A folder written by ``scicontrast synchronize``.
        files: Instead of ``synchronization``: audio and image files read one by one,
            without pairs (module docstring); what ``scicontrast embed --model`` passes.
        sample_rate: Audio is resampled to this rate (Hz).
        clip_seconds: Audio is cut or zero-padded to this length around its centre.
        image_size: Side ``S`` of the square images.
        channels: 1 (grey) or 3 (RGB).
        resize: ``"crop"`` (shorter side to ``S``, centre square) or ``"fit"`` (longer side
            to ``S``, zero-padded).
    """

    input_param = "files"
    training_only_params = ("synchronization",)

    def __init__(
        self,
        synchronization: str | None = None,
        files: list[str] | None = None,
        sample_rate: int = 8000,
        clip_seconds: float = 1.0,
        image_size: int = 28,
        channels: int = 1,
        resize: str = "crop",
    ) -> None:
        name = "adapter audio_image"
        if (synchronization is None) == (files is None):
            raise ConfigError(
                f"{name}: give params.synchronization (a folder written by 'scicontrast "
                "synchronize') or params.files, not both or neither"
            )
        if files is not None and (isinstance(files, str) or not files):
            raise ConfigError(f"{name}: params.files must be a non-empty list of files")
        for key, value in (("sample_rate", sample_rate), ("image_size", image_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: params.{key} must be a positive integer, got {value!r}")
        if isinstance(clip_seconds, bool) or not isinstance(clip_seconds, (int, float)):
            raise ConfigError(f"{name}: params.clip_seconds must be a number, got {clip_seconds!r}")
        if round(clip_seconds * sample_rate) < 1:
            raise ConfigError(f"{name}: params.clip_seconds is shorter than one sample")
        if channels not in (1, 3):
            raise ConfigError(f"{name}: params.channels must be 1 or 3, got {channels!r}")
        if resize not in ("crop", "fit"):
            raise ConfigError(f"{name}: params.resize must be 'crop' or 'fit', got {resize!r}")
        self.folder = None if synchronization is None else Path(synchronization)
        self.files = None if files is None else [str(f) for f in files]
        self.sample_rate = sample_rate
        self.clip_samples = round(clip_seconds * sample_rate)
        self.image_size = image_size
        self.channels = channels
        self.resize = resize

    def input_files(self) -> list[Path]:
        return [self.folder] if self.files is None else [Path(f) for f in self.files]

    def read(self) -> Items:
        if self.files is not None:
            return self._read_files()
        summary, pairs = load_synchronization(self.folder)
        if len(pairs) == 0:
            raise InputDataError(f"{self.folder}/{PAIRS_FILE}: no pairs")
        clips, durations, pictures = [], [], []
        for row in pairs.itertuples(index=False):
            where = f"{row.audio_manifest}: row {row.audio_row}: {row.audio_file}"
            signal = read_audio(row.audio_file, self.sample_rate, where)
            durations.append(len(signal) / self.sample_rate)
            clips.append(fit_length(signal, self.clip_samples))
            where = f"{row.image_manifest}: row {row.image_row}: {row.image_file}"
            pictures.append(
                read_picture(row.image_file, self.image_size, self.channels, self.resize, where)
            )
        table = pd.concat(
            [self._side(pairs, "audio", durations), self._side(pairs, "image", None)],
            ignore_index=True,
        )
        meta = self._meta(table, synchronization=summary, synchronization_folder=str(self.folder))
        extras = {"audio": np.stack(clips), "images": np.stack(pictures)}
        return Items(table=table, meta=meta, extras=extras)

    def _meta(self, table: pd.DataFrame, **more: Any) -> dict[str, Any]:
        payload = ["modality_row"]
        return {
            "modality": "audio_image",
            "sample_rate": self.sample_rate,
            "clip_samples": self.clip_samples,
            "image_size": self.image_size,
            "channels": self.channels,
            "payload_columns": payload,
            "metadata_columns": [c for c in table.columns if c not in ("item_id", *payload)],
            **more,
        }

    def _read_files(self) -> Items:
        """One unpaired item per file of ``files`` (module docstring)."""
        arrays: dict[str, list[np.ndarray]] = {"audio": [], "image": []}
        rows = []
        for position, file in enumerate(self.files):
            where = f"adapter audio_image: params.files[{position}]: {file}"
            modality = _modality_of(file, f"adapter audio_image: params.files[{position}]")
            duration = np.nan
            if modality == "audio":
                signal = read_audio(file, self.sample_rate, where)
                duration = len(signal) / self.sample_rate
                arrays["audio"].append(fit_length(signal, self.clip_samples))
            else:
                arrays["image"].append(
                    read_picture(file, self.image_size, self.channels, self.resize, where)
                )
            rows.append(
                {
                    "item_id": f"{modality}/{file}",
                    "modality": modality,
                    "file": str(Path(file).resolve()),
                    "duration_s": duration,
                    "modality_row": len(arrays[modality]) - 1,
                }
            )
        shapes = {
            "audio": (self.clip_samples,),
            "image": (self.channels, self.image_size, self.image_size),
        }
        extras = {
            store: np.stack(arrays[modality])
            if arrays[modality]
            else np.zeros((0, *shapes[modality]), dtype=np.float32)
            for store, modality in (("audio", "audio"), ("images", "image"))
        }
        table = pd.DataFrame(rows)
        return Items(table=table, meta=self._meta(table), extras=extras)

    @staticmethod
    def _side(pairs: pd.DataFrame, side: str, durations: list[float] | None) -> pd.DataFrame:
        prefix = f"{side}_"
        listed = pairs[f"{side}_file_as_listed"].astype(str)
        table = pd.DataFrame(
            {
                "item_id": f"{side}/" + pairs[f"{side}_device"].astype(str) + "/" + listed,
                "modality": side,
                "event": pairs["event"].to_numpy(),
                "device": pairs[f"{side}_device"].to_numpy(),
                "file": pairs[f"{side}_file"].to_numpy(),
                "time_s": pairs[f"{side}_time_s"].to_numpy(),
                "corrected_s": pairs[f"{side}_corrected_s"].to_numpy(),
                "duration_s": np.nan if durations is None else np.asarray(durations),
                "modality_row": np.arange(len(pairs)),
            }
        )
        fixed = {"device", "file", "file_as_listed", "time_s", "corrected_s", "manifest", "row"}
        for column in pairs.columns:
            name = column.removeprefix(prefix)
            if column.startswith(prefix) and name not in fixed:
                table[name] = pairs[column].to_numpy()
        return table


# --- pairs and batches -------------------------------------------------------------------


@dataclass
class AudioImageBatch:
    """Inputs of both towers; row ``m`` of the encoder's output belongs to input row ``m``.

    Attributes:
        audio: ``float32 [A, T]`` waveforms of the audio rows, in row order.
        images: ``float32 [I, C, S, S]`` images of the image rows, in row order.
        is_audio: ``bool [M]`` (``M = A + I``): which output rows are audio.
        sample_rate: Of ``audio`` (Hz); the encoder checks it against its own.
    """

    audio: torch.Tensor
    images: torch.Tensor
    is_audio: torch.Tensor
    sample_rate: int

    def to(self, device: str | torch.device, non_blocking: bool = False) -> AudioImageBatch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return replace(
            self, audio=move(self.audio), images=move(self.images), is_audio=move(self.is_audio)
        )

    def __len__(self) -> int:
        return len(self.is_audio)


@PAIR_BUILDERS.register("synchronized_pairs")
class SynchronizedPairs(PairBuilder):
    """Audio and image of one synchronised event are positives (module docstring).

    Args:
        audio_speed: Training views play audio at a speed factor in ``1 ± audio_speed``.
        audio_shift_s: Training views shift audio by up to this many seconds (zero-filled).
        audio_gain_db: Training views scale audio by a gain of up to ``±audio_gain_db``.
        image_shift: Training views translate images by up to this many pixels.
    """

    canonical_view = "identity"

    def __init__(
        self,
        audio_speed: float = 0.0,
        audio_shift_s: float = 0.0,
        audio_gain_db: float = 0.0,
        image_shift: int = 0,
    ) -> None:
        name = "pairs synchronized_pairs"
        for key, value in (
            ("audio_speed", audio_speed),
            ("audio_shift_s", audio_shift_s),
            ("audio_gain_db", audio_gain_db),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name}: params.{key} must be a number >= 0, got {value!r}")
        if isinstance(image_shift, bool) or not isinstance(image_shift, int) or image_shift < 0:
            raise ConfigError(f"{name}: params.image_shift must be an integer >= 0")
        if audio_speed >= 1:
            raise ConfigError(f"{name}: params.audio_speed must be below 1, got {audio_speed!r}")
        self.audio_speed = float(audio_speed)
        self.audio_shift_s = float(audio_shift_s)
        self.audio_gain_db = float(audio_gain_db)
        self.image_shift = image_shift
        self._items: Items | None = None

    def build(self, items: Items) -> pd.DataFrame:
        """Two rows per event: its audio item (view ``audio``) and image item (``image``)."""
        table = _check_items(items)
        if "event" not in table.columns:
            raise InputDataError(
                "items: read from single files (adapter params.files), so they have no events "
                "to pair; training needs params.synchronization"
            )
        counts = table.groupby(["event", "modality"]).size().unstack(fill_value=0)
        incomplete = counts[(counts.get("audio", 0) != 1) | (counts.get("image", 0) != 1)]
        if len(incomplete):
            raise InputDataError(
                f"items: event {incomplete.index[0]!r} does not have exactly one audio and one "
                "image item"
            )
        ordered = table.sort_values(["event", "modality"], kind="stable")
        return pd.DataFrame(
            {
                "group_id": ordered["event"].to_numpy(),
                "item_id": ordered["item_id"].to_numpy(),
                "view": ordered["modality"].to_numpy(),
            }
        )

    def bind(self, items: Items) -> None:
        _check_items(items)
        self._items = items

    def make_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> torch.Tensor:
        """Audio ``[T]`` or image ``[C, S, S]`` of row ``item_index``, augmented with ``rng``."""
        items = self._bound()
        row = items.table.iloc[item_index]
        if view != row["modality"]:
            raise ValueError(f"item {row['item_id']!r} is {row['modality']}, not {view}")
        index = int(row["modality_row"])
        if view == "audio":
            return torch.from_numpy(self._audio(items.extras["audio"][index], rng, items))
        return torch.from_numpy(self._image(items.extras["images"][index], rng))

    def _bound(self) -> Items:
        if self._items is None:
            raise RuntimeError("synchronized_pairs: call bind(items) first")
        return self._items

    def _audio(self, clip: np.ndarray, rng: np.random.Generator | None, items: Items) -> np.ndarray:
        if rng is None:
            return clip
        if self.audio_speed:
            factor = rng.uniform(1 - self.audio_speed, 1 + self.audio_speed)
            centre = (len(clip) - 1) / 2
            positions = centre + (np.arange(len(clip)) - centre) * factor
            clip = np.interp(positions, np.arange(len(clip)), clip, left=0.0, right=0.0)
            clip = clip.astype(np.float32)
        max_shift = round(self.audio_shift_s * items.meta["sample_rate"])
        shift = int(rng.integers(-max_shift, max_shift + 1)) if max_shift else 0
        gain = 10 ** (rng.uniform(-self.audio_gain_db, self.audio_gain_db) / 20)
        out = np.zeros_like(clip)
        if shift >= 0:
            out[shift:] = clip[: len(clip) - shift]
        else:
            out[:shift] = clip[-shift:]
        return out * np.float32(gain)

    def _image(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        if rng is None or self.image_shift == 0:
            return image
        dy, dx = rng.integers(-self.image_shift, self.image_shift + 1, size=2)
        size = image.shape[-1]
        padded = np.pad(image, ((0, 0), (self.image_shift,) * 2, (self.image_shift,) * 2))
        top, left = self.image_shift - dy, self.image_shift - dx
        return np.ascontiguousarray(padded[:, top : top + size, left : left + size])

    def training_batches(
        self,
        items: Items,
        pairs: pd.DataFrame,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> EpochLoader:
        if world_size != 1:
            raise ConfigError(
                "pairs synchronized_pairs: the two-tower (CLIP) loss runs in one process; "
                f"got {world_size} processes (gathering negatives across processes is only "
                "implemented for the in-batch loss)"
            )
        self.bind(items)
        row_of = pd.Series(np.arange(len(items)), index=items.table["item_id"].to_numpy())
        sides = pairs.pivot(index="group_id", columns="view", values="item_id")
        missing = [v for v in MODALITIES if v not in sides.columns]
        if missing or sides.isna().any().any():
            raise InputDataError(
                "pairs table: every group needs one 'audio' and one 'image' view (built by "
                "synchronized_pairs)"
            )
        return EpochLoader(
            PairBatches(
                self,
                groups=sides.index.to_numpy(),
                audio_rows=row_of.loc[sides["audio"].to_numpy()].to_numpy(),
                image_rows=row_of.loc[sides["image"].to_numpy()].to_numpy(),
                seed=seed,
                batch_size=batch_size,
            )
        )

    def embedding_batches(self, items: Items, batch_size: int) -> Iterator[AudioImageBatch]:
        """Canonical inputs in table order, ``batch_size`` rows at a time."""
        self.bind(items)
        modality = items.table["modality"].to_numpy()
        index = items.table["modality_row"].to_numpy()
        for start in range(0, len(items), batch_size):
            rows = slice(start, min(start + batch_size, len(items)))
            is_audio = modality[rows] == "audio"
            yield self._batch(
                items.extras["audio"][index[rows][is_audio]],
                items.extras["images"][index[rows][~is_audio]],
                is_audio,
                items,
            )

    def _batch(self, audio, images, is_audio, items: Items) -> AudioImageBatch:
        return AudioImageBatch(
            audio=torch.as_tensor(np.asarray(audio, dtype=np.float32)),
            images=torch.as_tensor(np.asarray(images, dtype=np.float32)),
            is_audio=torch.as_tensor(np.asarray(is_audio, dtype=bool)),
            sample_rate=int(items.meta["sample_rate"]),
        )


def _check_items(items: Items) -> pd.DataFrame:
    if items.meta.get("modality") != "audio_image":
        raise InputDataError(
            "pairs synchronized_pairs: the items are not audio-image items (adapter audio_image)"
        )
    return items.table


class PairBatches:
    """An epoch of two-tower training: ``batch_size`` pairs per batch, fresh order and views.

    The order is a permutation seeded by ``(seed, epoch)``; the views of group ``g`` come
    from a generator seeded by ``(seed, epoch, g)``, so batches do not depend on when they
    run. A last, incomplete batch is dropped unless it is the only one (as CLIP trains): a
    handful of pairs would make an easy contrast and noisy batch-norm statistics; a new order
    each epoch lets every pair take part. Rows of a batch: the ``B``
    audio views, then the ``B`` image views; ``group_ids`` repeats the groups twice. A
    :class:`~scicontrast.data_adapters.loader.BatchPlan`.
    """

    def __init__(
        self,
        builder: SynchronizedPairs,
        groups: np.ndarray,
        audio_rows: np.ndarray,
        image_rows: np.ndarray,
        seed: int,
        batch_size: int,
    ) -> None:
        self.builder = builder
        self.groups = groups
        self.audio_rows = audio_rows
        self.image_rows = image_rows
        self.seed = seed
        self.batch_size = batch_size
        self.n_groups = len(groups)

    def __len__(self) -> int:
        return max(self.n_groups // self.batch_size, 1)

    def batch_keys(self, epoch: int) -> list[np.ndarray]:
        """Positions (into ``groups``) of each batch's pairs."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(self.n_groups, generator=generator).numpy()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def make_batch(self, epoch: int, positions: np.ndarray) -> ContrastiveBatch:
        items = self.builder._bound()
        audio_store, image_store = items.extras["audio"], items.extras["images"]
        modality_row = items.table["modality_row"].to_numpy()
        audio, images = [], []
        for p in positions:
            rng = np.random.default_rng([self.seed, epoch, int(p)])
            clip = audio_store[modality_row[self.audio_rows[p]]]
            audio.append(self.builder._audio(clip, rng, items))
            image = image_store[modality_row[self.image_rows[p]]]
            images.append(self.builder._image(image, rng))
        count = len(positions)
        is_audio = np.repeat([True, False], count)
        return ContrastiveBatch(
            self.builder._batch(audio, images, is_audio, items),
            torch.as_tensor(np.tile(self.groups[positions], 2), dtype=torch.long),
            towers=(torch.arange(count), torch.arange(count, 2 * count)),
        )
