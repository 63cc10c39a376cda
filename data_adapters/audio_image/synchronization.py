r"""Synchronisation of two devices' clocks: offsets, one-to-one pairs, the output folder.

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
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scicontrast.data_adapters.audio_image.manifests import (
    MODALITIES,
    OFFSETS_FILE,
    PAIRS_FILE,
    PLOT_FILE,
    UNMATCHED_FILE,
    check_files,
    read_manifest,
)
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.io import atomic_path

# Rows per row group of pairs.parquet.
PAIRS_ROW_GROUP = 65_536

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
    accepted = []
    for k in np.lexsort((j, i, distance)):
        if not taken_first[i[k]] and not taken_second[j[k]]:
            taken_first[i[k]] = taken_second[j[k]] = True
            accepted.append(k)
    kept = np.asarray(accepted, dtype=np.int64)
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
    _check_settings(manifests, tolerance_s, max_offset_s)
    columns = (device_column, file_column, time_column, modality_column)
    events = _read_events(manifests, columns, truth_column)
    devices = _device_table(events)
    for modality in MODALITIES:
        if modality not in set(devices["modality"]):
            raise InputDataError(f"{', '.join(map(str, manifests))}: no {modality} events")
    reference = _reference(devices, reference_device)
    estimates = _estimate_offsets(events, devices.index, reference, tolerance_s, max_offset_s)
    events["corrected_s"] = events["time_s"] + events["device"].map(
        {d: e.offset_s for d, e in estimates.items()}
    )
    pairs = _pair_events(events, tolerance_s)
    summary: dict[str, Any] = {
        "manifests": [str(m) for m in manifests],
        "reference_device": reference,
        "tolerance_s": float(tolerance_s),
        "max_offset_s": float(max_offset_s),
        "devices": _device_summaries(events, devices, estimates, reference, tolerance_s),
        "events": len(events),
        "pairs": len(pairs),
        "unmatched": {
            m: int((~events["matched"] & (events["modality"] == m)).sum()) for m in MODALITIES
        },
        "time_difference_s": _spread(pairs["time_difference_s"].to_numpy()),
    }
    if truth_column is not None:
        summary["pairing"] = pairing_accuracy(events, pairs, truth_column)
    _write_folder(out_dir, events, pairs, summary, tolerance_s)
    return summary


def _check_settings(
    manifests: Sequence[str | Path], tolerance_s: float, max_offset_s: float
) -> None:
    if not manifests:
        raise ConfigError("synchronize: name at least one manifest")
    for name, value in (("tolerance_s", tolerance_s), ("max_offset_s", max_offset_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"synchronize: {name} must be a number > 0, got {value!r}")


def _read_events(
    manifests: Sequence[str | Path], columns: tuple[str, str, str, str], truth_column: str | None
) -> pd.DataFrame:
    """Every manifest's events in one table, checked: unique files, the truth column, files."""
    events = pd.concat([read_manifest(m, *columns) for m in manifests], ignore_index=True)
    _check_unique(events)
    if truth_column is not None and truth_column not in events.columns:
        raise ConfigError(
            f"synchronize: truth_column {truth_column!r} is not a manifest column; "
            f"columns: {list(events.columns)}"
        )
    check_files(events)
    return events


def _estimate_offsets(
    events: pd.DataFrame,
    devices: pd.Index,
    reference: str,
    tolerance_s: float,
    max_offset_s: float,
) -> dict[str, OffsetEstimate]:
    """Each device's clock offset against the reference device (0 for the reference)."""
    reference_times = events.loc[events["device"] == reference, "time_s"].to_numpy()
    estimates = {}
    for device in devices:
        times = events.loc[events["device"] == device, "time_s"].to_numpy()
        if device == reference:
            estimates[device] = OffsetEstimate(0.0, len(times), 0)
        else:
            estimates[device] = estimate_offset(reference_times, times, tolerance_s, max_offset_s)
    return estimates


def _pair_events(events: pd.DataFrame, tolerance_s: float) -> pd.DataFrame:
    """The pairs table of the audio and image events on the reference clock; marks every
    event ``matched`` or not in ``events``."""
    audio = events[events["modality"] == "audio"].reset_index(drop=True)
    image = events[events["modality"] == "image"].reset_index(drop=True)
    a, i = match_events(
        audio["corrected_s"].to_numpy(), image["corrected_s"].to_numpy(), tolerance_s
    )
    matched = np.zeros(len(events), dtype=bool)
    is_audio = (events["modality"] == "audio").to_numpy()
    matched[np.flatnonzero(is_audio)[a]] = True
    matched[np.flatnonzero(~is_audio)[i]] = True
    events["matched"] = matched
    return _pairs_table(audio.iloc[a], image.iloc[i])


def _device_summaries(
    events: pd.DataFrame,
    devices: pd.DataFrame,
    estimates: dict[str, OffsetEstimate],
    reference: str,
    tolerance_s: float,
) -> dict[str, dict[str, Any]]:
    """Per device: modality, manifests, offset and its search, matched and unmatched events.
    A device none of whose events paired is an error."""
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
    return per_device


def _write_folder(
    out_dir: str | Path,
    events: pd.DataFrame,
    pairs: pd.DataFrame,
    summary: dict[str, Any],
    tolerance_s: float,
) -> None:
    """The synchronisation folder (module docstring), atomically."""
    unmatched = events.loc[
        ~events["matched"],
        ["modality", "device", "file", "time_s", "corrected_s", "manifest", "row"],
    ]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        # In row groups, which the adapter reads one at a time.
        pairs.to_parquet(tmp / PAIRS_FILE, index=False, row_group_size=PAIRS_ROW_GROUP)
        unmatched.reset_index(drop=True).to_parquet(tmp / UNMATCHED_FILE, index=False)
        (tmp / OFFSETS_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        plot_time_differences(pairs["time_difference_s"].to_numpy(), tolerance_s, tmp / PLOT_FILE)


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
    axes.hist(differences, bins=bins.tolist(), color="tab:blue")
    for x in (-tolerance_s, tolerance_s):
        axes.axvline(x, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("image time - audio time on the reference clock (s)")
    axes.set_ylabel("pairs")
    axes.set_title(f"{len(differences)} pairs; tolerance ±{tolerance_s:g} s")
    figure.savefig(path, dpi=100)


def load_offsets(folder: str | Path) -> dict[str, Any]:
    """The ``offsets.json`` of a synchronisation folder that also holds its pairs table."""
    folder = Path(folder)
    offsets, pairs = folder / OFFSETS_FILE, folder / PAIRS_FILE
    if not offsets.is_file() or not pairs.is_file():
        raise InputDataError(
            f"{folder}: not a synchronisation folder (needs {OFFSETS_FILE} and {PAIRS_FILE}; "
            "write one with 'scicontrast synchronize')"
        )
    return json.loads(offsets.read_text())


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
