r"""The ``audio_image`` adapter: a synchronisation folder read into audio and image items.

Audio is read with ``soundfile`` (WAV, FLAC), down-mixed to mono by averaging the channels,
resampled to ``sample_rate`` with a polyphase filter (``scipy.signal.resample_poly``, up
and down by the rates over their gcd; Kaiser window, beta 5) and cut or zero-padded to
``clip_seconds`` around its centre. Images are read as in
:mod:`~scicontrast.data_adapters.images.reading`, made grey or RGB (``channels``) and brought to
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
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile
from skimage.color import rgb2gray

from scicontrast.data_adapters.audio_image.manifests import PAIRS_FILE, modality_of
from scicontrast.data_adapters.audio_image.synchronization import load_offsets
from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.data_adapters.chunks import CHUNK_BYTES, CHUNK_ROWS, concat_chunks
from scicontrast.data_adapters.images.cropping import square_image
from scicontrast.data_adapters.images.reading import normalise_pixels, read_image_pages
from scicontrast.data_adapters.items_store import table_row_groups, table_schema
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS

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
        if self.files is not None:
            return [Path(f) for f in self.files]
        assert self.folder is not None  # __init__ takes one of the two
        return [self.folder]

    def read(self) -> Items:
        return concat_chunks(self.read_chunks(CHUNK_ROWS))

    def read_chunks(self, chunk_rows: int) -> Iterator[Items]:
        """The items in chunks of ``chunk_rows`` rows, each clip and image read as it comes.

        The synchronisation's pairs table is read one row group at a time, once for the
        audio side, then for the image side (only that side's columns): each row group's
        clips or images are read a chunk of rows at a time (fewer where their float32
        samples or pixels would pass ``CHUNK_BYTES``), and each chunk's rows of the
        ``audio`` or ``images`` extra are written with its table rows. No step holds the
        whole pairs or items table. The last chunk is empty and carries the meta.
        """
        if self.files is not None:
            yield from self._read_files(self.files, chunk_rows)
            return
        assert self.folder is not None  # __init__ takes one of the two
        summary = load_offsets(self.folder)
        path = self.folder / PAIRS_FILE
        names = table_schema(path).names
        columns = _item_columns(names)
        for side in ("audio", "image"):
            rows = self._chunk_rows(chunk_rows, side)
            wanted = ["event", *(c for c in names if c.startswith(f"{side}_"))]
            done = 0
            for group in table_row_groups(path, wanted):
                for first in range(0, len(group), rows):
                    part = group.iloc[first : first + rows]
                    yield self._event_chunk(part, side, done, columns)
                    done += len(part)
            if done == 0:
                raise InputDataError(f"{path}: no pairs")
        table = pd.DataFrame(columns=columns)
        yield Items(
            table=table,
            meta=self._meta(
                table, synchronization=summary, synchronization_folder=str(self.folder)
            ),
        )

    def _event_chunk(self, pairs: pd.DataFrame, side: str, first: int, columns: list[str]) -> Items:
        """Table rows (``columns``) and clips (or images) of one side of ``pairs``, rows
        ``first ..`` of the pairs table."""
        part = _side(pairs, side, first)
        # A metadata column of the other side only: None (Arrow's null type), typed by the
        # chunks that hold it, as a concatenation of both sides' tables would be.
        for column in columns:
            if column not in part.columns:
                part[column] = pd.Series([None] * len(part), dtype=object)
        part = part[columns]
        # Each clip or image is written into the chunk's array as it is read: a list of
        # them stacked at the end held the chunk twice.
        if side == "image":
            shape = (self.channels, self.image_size, self.image_size)
            pictures = np.empty((len(pairs), *shape), dtype=np.float32)
            for k, row in enumerate(pairs.itertuples(index=False)):
                where = f"{row.image_manifest}: row {row.image_row}: {row.image_file}"
                pictures[k] = read_picture(
                    row.image_file, self.image_size, self.channels, self.resize, where
                )
            return Items(table=part, extras={"images": pictures})
        clips = np.empty((len(pairs), self.clip_samples), dtype=np.float32)
        durations = np.empty(len(pairs))
        for k, row in enumerate(pairs.itertuples(index=False)):
            where = f"{row.audio_manifest}: row {row.audio_row}: {row.audio_file}"
            signal = read_audio(row.audio_file, self.sample_rate, where)
            durations[k] = len(signal) / self.sample_rate
            clips[k] = fit_length(signal, self.clip_samples)
        part["duration_s"] = durations
        return Items(table=part, extras={"audio": clips})

    def _chunk_rows(self, chunk_rows: int, *sides: str) -> int:
        """Rows per chunk: ``chunk_rows``, or fewer where the float32 clips or images of
        ``sides`` (the larger of them) would pass ``CHUNK_BYTES``."""
        values = {"audio": self.clip_samples, "image": self.channels * self.image_size**2}
        return max(1, min(chunk_rows, CHUNK_BYTES // (4 * max(values[s] for s in sides))))

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

    def _read_files(self, files: list[str], chunk_rows: int) -> Iterator[Items]:
        """One unpaired item per file of ``files`` (module docstring), in chunks."""
        counts = {"audio": 0, "image": 0}
        rows = self._chunk_rows(chunk_rows, "audio", "image")
        for first in range(0, len(files), rows):
            chunk = self._file_chunk(files, first, first + rows, counts)
            if first + rows >= len(files):
                chunk.meta = self._meta(chunk.table)
            yield chunk

    def _file_chunk(self, files: list[str], first: int, last: int, counts: dict[str, int]) -> Items:
        """Files ``first .. last - 1``; ``counts``: rows of each modality before them."""
        arrays: dict[str, list[np.ndarray]] = {"audio": [], "image": []}
        rows = []
        for position in range(first, min(last, len(files))):
            file = files[position]
            where = f"adapter audio_image: params.files[{position}]: {file}"
            modality = modality_of(file, f"adapter audio_image: params.files[{position}]")
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
                    "modality_row": counts[modality],
                }
            )
            counts[modality] += 1
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
        return Items(table=pd.DataFrame(rows), extras=extras)


_FIXED = ("device", "file", "file_as_listed", "time_s", "corrected_s", "manifest", "row")
_ITEM_COLUMNS = ["item_id", "modality", "event", "device", "file", "time_s", "corrected_s"]
_ITEM_COLUMNS += ["duration_s", "modality_row"]


def _item_columns(pairs_columns: list[str]) -> list[str]:
    """The items-table columns for a pairs table with ``pairs_columns``: the fixed ones,
    then the audio side's metadata, then the image side's that the audio side lacks."""
    columns = list(_ITEM_COLUMNS)
    for side in ("audio", "image"):
        for column in pairs_columns:
            name = column.removeprefix(f"{side}_")
            if column.startswith(f"{side}_") and name not in _FIXED and name not in columns:
                columns.append(name)
    return columns


def _side(pairs: pd.DataFrame, side: str, first: int) -> pd.DataFrame:
    """Items-table rows of one side of ``pairs`` (rows ``first ..`` of the pairs table)."""
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
            "duration_s": np.nan,
            "modality_row": np.arange(first, first + len(pairs)),
        }
    )
    for column in pairs.columns:
        name = column.removeprefix(f"{side}_")
        if column.startswith(f"{side}_") and name not in _FIXED:
            table[name] = pairs[column].to_numpy()
    return table
