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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scicontrast.data_adapters.audio_image.events import Events, read_events
from scicontrast.data_adapters.audio_image.manifests import (
    MODALITIES,
    OFFSETS_FILE,
    PAIRS_FILE,
    PLOT_FILE,
    UNMATCHED_FILE,
)
from scicontrast.data_adapters.audio_image.sync_output import write_pairs_table, write_unmatched
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

    With no candidate lag at all the offset is 0 with 0 matches. The candidate differences
    (about ``2 (max_offset_s + tolerance_s) / spacing`` an event: 7 x 10^6 at 10^6 events
    3 s apart) are taken a slice of lags at a time (:func:`_lag_slices`), so memory holds
    ``DIFFERENCES_PER_SLICE`` of them, whatever the number of events.
    """
    reference = np.sort(np.asarray(reference, dtype=np.float64))
    times = np.sort(np.asarray(times, dtype=np.float64))
    best_count, window = 0, np.zeros(0)
    for values, starts, counts, _ in _lag_slices(reference, times, tolerance_s, max_offset_s):
        k = int(np.argmax(counts)) if len(counts) else 0
        if len(counts) and counts[k] > best_count:  # ties: the smallest lag, as argmax
            best_count = int(counts[k])
            window = values[starts[k] : starts[k] + best_count].copy()
    if best_count == 0:
        return OffsetEstimate(0.0, 0, 0)
    offset = float(np.clip(np.median(window), -max_offset_s, max_offset_s))
    runner_up = 0
    for _, _, counts, centres in _lag_slices(reference, times, tolerance_s, max_offset_s):
        far = np.abs(centres - offset) > 2 * tolerance_s
        runner_up = max(runner_up, int(counts[far].max()) if far.any() else 0)
    matched = len(match_events(reference, times + offset, tolerance_s)[0])
    return OffsetEstimate(offset, matched, runner_up)


# Candidate differences held at a time by estimate_offset (8 bytes each, and a few arrays
# of their length).
DIFFERENCES_PER_SLICE = 1 << 16


def _lag_slices(
    reference: np.ndarray, times: np.ndarray, tolerance_s: float, max_offset_s: float
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The windows ``[d_k, d_k + 2 tau]`` of :func:`estimate_offset`, slice by slice of
    ``d_k`` in increasing order: ``(values, starts, counts, centres)`` where ``values`` are
    the sorted differences from the slice's first ``d_k`` to its last ``+ 2 tau``, and for
    each candidate ``d_k`` in the slice (in sorted order) ``starts`` is its position in
    ``values``, ``counts`` the differences in its window (0 where the centre ``d_k + tau``
    is outside ``|lag| <= max_offset_s``) and ``centres`` the centre.

    The candidates are the differences ``r_i - t_j`` with ``t_j - reach <= r_i <= t_j +
    reach`` (``reach = max_offset_s + tolerance_s``), as one sorted array of all of them
    would give (its window counts are the same numbers).
    """
    reach = max_offset_s + tolerance_s
    low = np.searchsorted(reference, times - reach, side="left")
    high = np.searchsorted(reference, times + reach, side="right")
    slices = max(-(-int((high - low).sum()) // DIFFERENCES_PER_SLICE), 1)
    edges = np.linspace(-reach, reach, slices + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    # Far above the rounding of t + x and r - t (2^-52 of the times' size).
    margin = 1e-9 * (1 + max(np.abs(reference).max(initial=0), np.abs(times).max(initial=0)))
    for lower, top in pairwise(edges):
        first = np.maximum(low, np.searchsorted(reference, times + lower - margin))
        last = np.searchsorted(reference, times + top + 2 * tolerance_s + margin, side="right")
        counts = np.maximum(np.minimum(high, last) - first, 0)
        owner = np.repeat(np.arange(len(times)), counts)
        at = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        values = np.sort(reference[at] - times[owner])
        del owner, at
        values = values[values >= lower]
        starts = np.arange(np.searchsorted(values, top))
        ends = np.searchsorted(values, values[starts] + 2 * tolerance_s, side="right")
        centres = values[starts] + tolerance_s
        allowed = np.abs(centres) <= max_offset_s + 1e-12
        yield values, starts, np.where(allowed, ends - starts, 0), centres


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
    counts = np.searchsorted(ordered, first + tolerance_s, side="right") - starts
    del ordered
    # The candidates' indices in 32 bits where they fit, the arrays freed as soon as used:
    # at 10^6 events these arrays were the peak of synchronize.
    total = int(counts.sum())
    index = np.int32 if max(len(first), len(second), total) < 2**31 else np.int64
    i = np.repeat(np.arange(len(first), dtype=index), counts)
    positions = np.repeat((starts - np.cumsum(counts) + counts).astype(index), counts)
    positions += np.arange(total, dtype=index)
    del starts, counts
    j = order[positions].astype(index)
    del positions, order
    sequence = np.lexsort((j, i, np.abs(first[i] - second[j])))
    taken_first = np.zeros(len(first), dtype=bool)
    taken_second = np.zeros(len(second), dtype=bool)
    accepted = np.zeros(len(i), dtype=bool)
    for k in sequence:
        if not taken_first[i[k]] and not taken_second[j[k]]:
            taken_first[i[k]] = taken_second[j[k]] = accepted[k] = True
    kept = np.flatnonzero(accepted)
    by_first = np.argsort(i[kept], kind="stable")
    return i[kept][by_first].astype(np.int64), j[kept][by_first].astype(np.int64)


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
    with atomic_path(out_dir) as tmp:
        # The events' strings wait in a spill folder beside the output, removed with it.
        events = read_events(manifests, columns, truth_column, tmp.parent / f"{tmp.name}.events")
        reference = _reference(_device_table(events, manifests), reference_device)
        estimates = _estimate_offsets(events, reference, tolerance_s, max_offset_s)
        offsets = np.array([estimates[d].offset_s for d in events.devices])
        corrected = events.times + offsets[events.device]
        pairs, matched = _pair_events(events, corrected, tolerance_s)
        is_audio = events.is_audio()
        summary: dict[str, Any] = {
            "manifests": [str(m) for m in manifests],
            "reference_device": reference,
            "tolerance_s": float(tolerance_s),
            "max_offset_s": float(max_offset_s),
            "devices": _device_summaries(events, matched, estimates, reference, tolerance_s),
            "events": len(events),
            "pairs": len(pairs[0]),
            "unmatched": {
                m: int((~matched & (is_audio == (m == "audio"))).sum()) for m in MODALITIES
            },
            "time_difference_s": _spread(corrected[pairs[1]] - corrected[pairs[0]]),
        }
        if events.truth is not None and truth_column is not None:
            truth, known = events.truth
            summary["pairing"] = pairing_accuracy(truth, known, is_audio, pairs, truth_column)
        _write_folder(tmp, events, corrected, pairs, matched, summary, tolerance_s)
    return summary


def _check_settings(
    manifests: Sequence[str | Path], tolerance_s: float, max_offset_s: float
) -> None:
    if not manifests:
        raise ConfigError("synchronize: name at least one manifest")
    for name, value in (("tolerance_s", tolerance_s), ("max_offset_s", max_offset_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"synchronize: {name} must be a number > 0, got {value!r}")


def _estimate_offsets(
    events: Events, reference: str, tolerance_s: float, max_offset_s: float
) -> dict[str, OffsetEstimate]:
    """Each device's clock offset against the reference device (0 for the reference), in
    the order of the device names."""
    codes = {name: code for code, name in enumerate(events.devices)}
    reference_times = events.times[events.device == codes[reference]]
    estimates = {}
    for device in sorted(codes):
        times = events.times[events.device == codes[device]]
        if device == reference:
            estimates[device] = OffsetEstimate(0.0, len(times), 0)
        else:
            estimates[device] = estimate_offset(reference_times, times, tolerance_s, max_offset_s)
    return estimates


def _pair_events(
    events: Events, corrected: np.ndarray, tolerance_s: float
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """``((audio events, image events), matched)``: the pairs of audio and image events on
    the reference clock (event numbers, in audio-event order) and whether each event is
    paired."""
    is_audio = events.is_audio()
    audio, image = np.flatnonzero(is_audio), np.flatnonzero(~is_audio)
    a, i = match_events(corrected[audio], corrected[image], tolerance_s)
    matched = np.zeros(len(events), dtype=bool)
    matched[audio[a]] = matched[image[i]] = True
    return (audio[a], image[i]), matched


def _device_summaries(
    events: Events,
    matched: np.ndarray,
    estimates: dict[str, OffsetEstimate],
    reference: str,
    tolerance_s: float,
) -> dict[str, dict[str, Any]]:
    """Per device: modality, manifests, offset and its search, matched and unmatched events.
    A device none of whose events paired is an error."""
    count = np.bincount(events.device, minlength=len(events.devices))
    paired = np.bincount(events.device, weights=matched, minlength=len(events.devices))
    per_device = {}
    for code, device in sorted(enumerate(events.devices), key=lambda d: d[1]):
        estimate = estimates[device]
        per_device[device] = {
            "modality": events.modalities[code],
            "manifests": events.device_manifests[code],
            "offset_s": estimate.offset_s,
            "offset_search_matches": estimate.matches,
            "offset_search_runner_up": estimate.runner_up_matches,
            "events": int(count[code]),
            "matched": int(paired[code]),
            "unmatched": int(count[code] - paired[code]),
        }
        if per_device[device]["matched"] == 0:
            raise InputDataError(
                f"{', '.join(events.device_manifests[code])}: device {device!r}: none of its "
                f"{count[code]} events pairs within {tolerance_s} s (best offset "
                f"{estimate.offset_s:+.3f} s against reference {reference!r} lined up "
                f"{estimate.matches}); check its clock, max_offset_s and tolerance_s"
            )
    return per_device


def _write_folder(
    tmp: Path,
    events: Events,
    corrected: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    matched: np.ndarray,
    summary: dict[str, Any],
    tolerance_s: float,
) -> None:
    """The synchronisation folder (module docstring) at ``tmp``, moved into place by the
    caller."""
    tmp.mkdir()
    # In row groups, which the adapter reads one at a time.
    write_pairs_table(tmp / PAIRS_FILE, events, corrected, pairs, PAIRS_ROW_GROUP)
    write_unmatched(tmp / UNMATCHED_FILE, events, corrected, matched)
    (tmp / OFFSETS_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    differences = corrected[pairs[1]] - corrected[pairs[0]]
    plot_time_differences(differences, tolerance_s, tmp / PLOT_FILE)


def _device_table(events: Events, manifests: Sequence[str | Path]) -> pd.DataFrame:
    """Per device (sorted by name): its modality and number of events. Both modalities
    must have events."""
    for modality in MODALITIES:
        if modality not in events.modalities:
            raise InputDataError(f"{', '.join(map(str, manifests))}: no {modality} events")
    count = np.bincount(events.device, minlength=len(events.devices))
    table = pd.DataFrame(
        {"modality": events.modalities, "events": count}, index=pd.Index(events.devices)
    )
    return table.sort_index()


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


def pairing_accuracy(
    truth: np.ndarray,
    known: np.ndarray,
    is_audio: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    truth_column: str,
) -> dict:
    """Pairs whose audio and image share the true event id (``truth``, one key per event,
    ``known`` where the event has one; ``truth_column`` names it).

    ``precision`` = correct / pairs; ``recall`` = correct / true events that have both an
    audio and an image event.
    """
    audio, image = pairs
    correct = int(((truth[audio] == truth[image]) & known[audio] & known[image]).sum())
    both = len(np.intersect1d(truth[is_audio & known], truth[~is_audio & known]))
    return {
        "truth_column": truth_column,
        "pairs": len(audio),
        "correct": correct,
        "true_pairs": both,
        "precision": correct / len(audio) if len(audio) else None,
        "recall": correct / both if both else None,
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
