r"""The ``synchronized_pairs`` pair builder and its batches.

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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from scicontrast.data_adapters.audio_image.pair_stream import event_order, pair_parts
from scicontrast.data_adapters.base import Items, PairBuilder, epoch_seed, item_rows
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.items_store import drop_mapped_pages
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.data_adapters.pair_parts import items_folder
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import PAIR_BUILDERS

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
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> AudioImageBatch:
        """The batch in page-locked memory (``DataLoader(pin_memory=True)`` on a GPU), so that
        its copy to the device overlaps the host's work."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, move: Callable[[torch.Tensor], torch.Tensor]) -> AudioImageBatch:
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

    def table_columns(self, meta: dict[str, Any]) -> list[str]:
        """The columns the pairs, batches and embeddings read: the clips and images are in
        the extras, the metadata (file paths, times) stays on disk. Items read from single
        files (no synchronisation) have no ``event``."""
        events = ["event"] if "synchronization" in meta else []
        return ["item_id", "modality", *events, "modality_row"]

    def build(self, items: Items) -> pd.DataFrame:
        """Two rows per event: its audio item (view ``audio``) and image item (``image``)."""
        table = _check_items(items)
        if "event" not in table.columns:
            raise InputDataError(_NO_EVENTS)
        # In numpy, not a groupby and sort over the modality strings (their hash tables
        # were most of the step's memory at 10^5 items).
        events = table["event"].to_numpy()
        modality = table["modality"].to_numpy()
        order = event_order(events, modality)
        return pd.DataFrame(
            {
                "group_id": events[order],
                "item_id": table["item_id"].to_numpy()[order],
                "view": modality[order],
            }
        )

    def build_parts(self, folder: Path) -> Iterator[pa.Table]:
        """:meth:`build`'s table in Arrow parts, from the items table's row groups without
        loading it (:mod:`~scicontrast.data_adapters.audio_image.pair_stream`): no Python
        string per item."""
        meta, columns = items_folder(folder)
        _check_meta(meta)
        if "event" not in columns:
            raise InputDataError(_NO_EVENTS)
        return pair_parts(folder)

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
        groups, audio_rows, image_rows = _event_rows(pairs, items)
        return EpochLoader(
            PairBatches(
                self,
                groups=groups,
                audio_rows=audio_rows,
                image_rows=image_rows,
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
            # Clips and images are memory-mapped: hand back the pages read, or one pass over
            # the set would keep all of it resident.
            for array in items.extras.values():
                drop_mapped_pages(array)

    def _batch(self, audio, images, is_audio, items: Items) -> AudioImageBatch:
        return AudioImageBatch(
            audio=torch.as_tensor(np.asarray(audio, dtype=np.float32)),
            images=torch.as_tensor(np.asarray(images, dtype=np.float32)),
            is_audio=torch.as_tensor(np.asarray(is_audio, dtype=bool)),
            sample_rate=int(items.meta["sample_rate"]),
        )


def _event_rows(pairs: pd.DataFrame, items: Items) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(groups, audio rows, image rows)``: each group of ``pairs`` (sorted) and the
    items-table rows of its ``audio`` and ``image`` views, from the pairs table's row codes
    (:func:`~scicontrast.data_adapters.base.item_rows`), not a lookup of the id strings."""
    rows = item_rows(pairs["item_id"], items.table["item_id"])
    views = pairs["view"].to_numpy()
    groups = pairs["group_id"].to_numpy()
    is_audio, is_image = views == "audio", views == "image"
    audio_order = np.argsort(groups[is_audio], kind="stable")
    image_order = np.argsort(groups[is_image], kind="stable")
    audio_groups = groups[is_audio][audio_order]
    if (
        not (is_audio | is_image).all()
        or not np.array_equal(audio_groups, groups[is_image][image_order])
        or (audio_groups[1:] == audio_groups[:-1]).any()
    ):
        raise InputDataError(
            "pairs table: every group needs one 'audio' and one 'image' view (built by "
            "synchronized_pairs)"
        )
    return audio_groups, rows[is_audio][audio_order], rows[is_image][image_order]


_NO_EVENTS = (
    "items: read from single files (adapter params.files), so they have no events to pair; "
    "training needs params.synchronization"
)


def _check_items(items: Items) -> pd.DataFrame:
    _check_meta(items.meta)
    return items.table


def _check_meta(meta: dict[str, Any]) -> None:
    if meta.get("modality") != "audio_image":
        raise InputDataError(
            "pairs synchronized_pairs: the items are not audio-image items (adapter audio_image)"
        )


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
        inputs = self.builder._batch(audio, images, is_audio, items)  # copies the views
        for array in (audio_store, image_store):  # as in embedding_batches
            drop_mapped_pages(array)
        return ContrastiveBatch(
            inputs,
            torch.as_tensor(np.tile(self.groups[positions], 2), dtype=torch.long),
            towers=(torch.arange(count), torch.arange(count, 2 * count)),
        )
