r"""Rotation pair builder for images: the same crop (or grain) seen at any angle.

Items
-----
An image items set (written by the ``image_folder`` or ``grains`` adapter) has
``meta["modality"] == "image"``, ``meta["channels"]`` ``C`` (1 or 3), ``meta["size"]`` ``S``
and the arrays

``images``
    ``uint8 [N, C, S, S]`` or ``float32 [N, C, S, S]`` with values in ``[0, 1]``;
``masks`` (optional)
    ``bool [N, S, S]``: ``True`` inside the object (e.g. the grain); absent means the whole
    crop is the object.

Views
-----
A view of item ``i`` is

.. math::

    v = \operatorname{jitter}\bigl(\operatorname{crop}_o\,R_\theta\,F^{f}\,x_i\bigr)
        \cdot \operatorname{crop}_o\,R_\theta\,F^{f}\,m_i \cdot D_o,

read right to left: an optional horizontal mirror ``F`` (``f ~ Bernoulli(1/2)`` when
``flips``), a rotation ``R_theta`` about the image centre (moved by a random whole-pixel
shift of up to ``max_shift`` per axis), the ``o x o`` crop around that centre
(``o = out_size``, default ``S``), intensity jitter, and multiplication by the rotated
object mask ``m_i`` (all ones without ``masks``) and by the disc ``D_o`` inscribed in the
crop (pixel centres within ``o / 2`` of the centre). Because every view is cut to the same
disc, the corners, which a rotation fills with padding or with content from outside the
crop, cannot tell the network the angle. With ``out_size <= S / sqrt(2)`` the disc only
ever holds real image content, at every angle.

The angle ``theta`` (degrees, counter-clockwise as displayed with rows going down, the
sense of ``torch.rot90(x, 1, dims=(-2, -1))``) is drawn per view:

``angles="continuous"``
    ``theta ~ U[0, 360)``;
``angles="c4"`` / ``"c8"``
    ``theta ~ U{0, 90, 180, 270}`` / ``U{0, 45, ..., 315}``.

Sampling is one ``torch.nn.functional.affine_grid`` + ``grid_sample`` call per view (per batch
with ``training.augment_on_device``, :mod:`.device_views`) with
``interpolation`` ``"bilinear"`` (default), ``"bicubic"`` (clamped to ``[0, 1]``) or
``"nearest"``, border padding and ``align_corners=False``, so the rotation centre is the
geometric centre of the image and a rotation by a multiple of 90 degrees samples pixel
centres exactly (it equals ``torch.rot90`` up to float rounding of ``cos``/``sin``).

Jitter, drawn per view and applied inside the disc, in this order: contrast
``x <- mu + c (x - mu)`` with ``c ~ U[1 - contrast, 1 + contrast]`` and ``mu`` the mean of
the view over the object, brightness ``x <- x + b`` with ``b ~ U[-brightness, brightness]``,
and for RGB a per-channel gain ``g_k ~ U[1 - colour, 1 + colour]`` (a mild tint); then
``x`` is clamped to ``[0, 1]``.

The canonical view (``"identity"``, also what ``rng=None`` gives) is ``theta = 0``, no
mirror, no jitter, cropped and masked the same way, so the embedding step sees the object
exactly as training framed it. All randomness comes from the generator passed to
:meth:`RotationViews.make_view`: the angle, then the mirror (if ``flips``), then the centre
shift (if ``max_shift``), then the jitter factors (those that are non-zero), in that order.

Patch layout
------------
Items of the ``image_folder`` adapter's patch layout (``meta["layout"] == "patches"``) keep
each image whole at its working scale (``scicontrast.data_adapters.images.patches``), with
``S = meta["size"]`` the patch side. A view is then cut from a ``S x S`` window of the image
at a random position (``top ~ U{0..h-S}``, ``left ~ U{0..w-S}``, drawn last, after the
jitter), so the views of one image are different places of its texture, each rotated as
above. The canonical view is the centred window. An image's embedding is the mean of the
embeddings of up to ``max_patches`` canonical ``o x o`` patches (``o = out_size``) on the
centred grid of non-overlapping tiles, spread evenly (:meth:`RotationViews.embedding_batches`
yields :class:`~scicontrast.data_adapters.images.patches.PatchBag`; its ``batch_size`` then counts
patches, at least one image per batch).

References: rotation as a positive-pair augmentation for rotation-invariant microscopy
features follows e.g. Lafarge et al., "Learning domain-invariant representations of
histological images" (2019) and Chen et al., SimCLR (2020) for the jitter.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import Tensor

from scicontrast.data_adapters.base import Items, PairBuilder, ViewDataset
from scicontrast.data_adapters.classical import ClassicalFeatures, lbp_histograms, raw_pixels
from scicontrast.data_adapters.images.device_views import (
    DeviceRotationBatches,
    ViewDraw,
    ViewShape,
    render_views,
)
from scicontrast.data_adapters.images.image_checks import check_image_set
from scicontrast.data_adapters.images.patches import (
    EXTENT,
    PIXELS,
    PatchBag,
    tile_grid,
    unpack_image,
)
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.data_adapters.pair_parts import (
    item_id_at,
    item_row_groups,
    items_folder,
    mapped_arrays,
    repeat_views,
)
from scicontrast.errors import ConfigError
from scicontrast.geometry import disc_mask
from scicontrast.registry import PAIR_BUILDERS

ANGLE_MODES = {"continuous": None, "c4": 90.0, "c8": 45.0}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
JITTER_KEYS = ("brightness", "contrast", "colour")
DEFAULT_JITTER = {"brightness": 0.05, "contrast": 0.05, "colour": 0.02}


def _check_number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
        raise ConfigError(
            f"pairs rotations: params.{name} must be a number in [{low}, {high}), got {value!r}"
        )
    return float(value)


def _parse_jitter(jitter: Mapping[str, Any] | bool | None) -> dict[str, float]:
    if jitter is None or jitter is False:
        return dict.fromkeys(JITTER_KEYS, 0.0)
    if jitter is True:
        return dict(DEFAULT_JITTER)
    if not isinstance(jitter, Mapping):
        raise ConfigError(
            f"pairs rotations: params.jitter must be a mapping with keys {list(JITTER_KEYS)}, "
            f"true (defaults {DEFAULT_JITTER}) or false/null (off), got {jitter!r}"
        )
    unknown = sorted(set(jitter) - set(JITTER_KEYS))
    if unknown:
        raise ConfigError(
            f"pairs rotations: params.jitter.{unknown[0]} is not a jitter setting; "
            f"known: {', '.join(JITTER_KEYS)}"
        )
    return {
        key: _check_number(f"jitter.{key}", jitter.get(key, 0.0), 0.0, 1.0) for key in JITTER_KEYS
    }


@PAIR_BUILDERS.register("rotations")
class RotationViews(PairBuilder):
    """Views of an image (or a segmented grain) under random rotations by any angle.

    Args:
        views: Views per item (>= 2), each with its own angle, mirror and jitter; all are
            positives of each other.
        angles: ``"continuous"`` (any angle), ``"c4"`` or ``"c8"`` (multiples of 90 / 45
            degrees).
        flips: Also mirror each view left-right with probability 1/2.
        jitter: Intensity jitter half-ranges ``{brightness, contrast, colour}`` (missing
            keys are 0; ``colour`` only acts on RGB); ``true`` gives the defaults
            ``{brightness: 0.05, contrast: 0.05, colour: 0.02}``, ``false``/``null`` none.
        out_size: Side of the central crop each view keeps (``<= S``); ``None`` keeps
            ``S``. ``out_size <= S / sqrt(2)`` keeps padding out of the disc at any angle.
        max_shift: Largest move, in whole pixels, of the rotation centre (and so of the
            crop) along each axis, drawn uniformly per view from
            ``{-max_shift, ..., max_shift}``; needs ``out_size + 2 * max_shift <= S``.
            0 (default) keeps every view centred.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        max_patches: Patch layout only: most patches per image in its embedding.

    ``make_view`` returns ``float32 [C, out_size, out_size]``, zero outside the disc (and
    outside the object mask, if the items have one). See the module docstring.
    """

    canonical_view = "identity"
    VIEWS = ("identity", "rotated")

    def __init__(
        self,
        views: int = 2,
        angles: str = "continuous",
        flips: bool = False,
        jitter: Mapping[str, Any] | bool | None = True,
        out_size: int | None = None,
        max_shift: int = 0,
        interpolation: str = "bilinear",
        max_patches: int = 64,
    ) -> None:
        if isinstance(views, bool) or not isinstance(views, int) or views < 2:
            raise ConfigError(
                f"pairs rotations: params.views must be an integer >= 2, got {views!r}"
            )
        if angles not in ANGLE_MODES:
            raise ConfigError(
                f"pairs rotations: params.angles must be one of {', '.join(ANGLE_MODES)}, "
                f"got {angles!r}"
            )
        if not isinstance(flips, bool):
            raise ConfigError(f"pairs rotations: params.flips must be true or false, got {flips!r}")
        if out_size is not None and (
            isinstance(out_size, bool) or not isinstance(out_size, int) or out_size < 1
        ):
            raise ConfigError(
                f"pairs rotations: params.out_size must be a positive integer or null, "
                f"got {out_size!r}"
            )
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ConfigError(
                f"pairs rotations: params.max_shift must be an integer >= 0, got {max_shift!r}"
            )
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"pairs rotations: params.interpolation must be one of "
                f"{', '.join(INTERPOLATIONS)}, got {interpolation!r}"
            )
        if isinstance(max_patches, bool) or not isinstance(max_patches, int) or max_patches < 1:
            raise ConfigError(
                f"pairs rotations: params.max_patches must be an integer >= 1, got {max_patches!r}"
            )
        self.views = views
        self.angles = angles
        self.flips = flips
        self.jitter = _parse_jitter(jitter)
        self.out_size = out_size
        self.max_shift = max_shift
        self.interpolation = interpolation
        self.max_patches = max_patches
        # Patch layout: training views come from random places of the image; the symmetry
        # views (symmetry_only) all from the centre, so that they differ by the rotation alone.
        self.random_window = True
        self._images: Tensor | None = None
        self._masks: Tensor | None = None
        self._store: tuple[np.ndarray, np.ndarray] | None = None

    def classical_features(self, items: Items) -> list[ClassicalFeatures]:
        """Multi-scale rotation-invariant LBP and raw pixels of each stored image (whole, at
        its working scale, for patch items)."""
        self._check_items(items)
        if items.meta.get("layout") == "patches":
            store, channels = (items.extras[PIXELS], items.arrays[EXTENT]), items.meta["channels"]

            def patch_images():
                return (unpack_image(*store, i, channels) for i in range(len(items)))

            return [lbp_histograms(patch_images()), raw_pixels(patch_images())]
        images = items.arrays["images"]
        return [lbp_histograms(images), raw_pixels(images)]

    def symmetry_only(self) -> tuple[str, PairBuilder] | None:
        """Rotations (and mirrors, with ``flips``) without intensity jitter or centre shift,
        and, for patch items (known once bound), of the centred window only."""
        windows = self.random_window and self._store is not None
        if self.max_shift == 0 and not any(self.jitter.values()) and not windows:
            return None
        symmetry = copy.copy(self)
        symmetry.jitter = _parse_jitter(None)
        symmetry.max_shift = 0
        symmetry.random_window = False
        return ("rotation and mirror" if self.flips else "rotation"), symmetry

    def _check_items(self, items: Items) -> int:
        """Validate an image items set; return the view side ``out_size`` (or ``S``)."""
        ids = items.table["item_id"]
        size = check_image_set(
            items.meta, len(items), items.arrays, items.extras, lambda row: ids.iloc[row]
        )
        return self._check_view_size(size)

    def _check_view_size(self, size: int) -> int:
        if self.out_size is not None and self.out_size > size:
            raise ConfigError(
                f"pairs rotations: params.out_size={self.out_size} exceeds the image size "
                f"S={size}; use out_size <= S or null"
            )
        out_size = size if self.out_size is None else self.out_size
        if out_size + 2 * self.max_shift > size:
            raise ConfigError(
                f"pairs rotations: params.max_shift={self.max_shift} moves the disc of "
                f"out_size={out_size} past the edge of S={size} images; need "
                "out_size + 2 * max_shift <= S"
            )
        return out_size

    def table_columns(self, meta: dict[str, Any]) -> list[str] | None:
        """``item_id`` only: views come from the arrays (file paths, labels stay on disk)."""
        return ["item_id"]

    def build_parts(self, folder: Path) -> Iterator[pa.Table]:
        """:meth:`build`'s table an items row group at a time, in Arrow
        (:mod:`~scicontrast.data_adapters.pair_parts`), the set checked from its meta and
        memory-mapped arrays: no ``item_id`` column in memory, whatever the number of images."""
        meta, _ = items_folder(folder)
        n, arrays, extras = mapped_arrays(folder)
        check = check_image_set(meta, n, arrays, extras, lambda row: item_id_at(folder, row))
        self._check_view_size(check)
        for first, table in item_row_groups(folder, []):
            groups = np.arange(first, first + len(table), dtype=np.int64)
            yield repeat_views(groups, table.column("item_id"), ["rotated"] * self.views)

    def build(self, items: Items) -> pd.DataFrame:
        self._check_items(items)
        n, k = len(items), self.views
        # A categorical view name (written as its values), not a Python string per row.
        views = pd.Categorical.from_codes(np.zeros(n * k, dtype=np.int8), ["rotated"])
        ids = np.repeat(items.table["item_id"].to_numpy(), k)
        return pd.DataFrame({"group_id": np.repeat(np.arange(n), k), "item_id": ids, "view": views})

    def bind(self, items: Items) -> None:
        """Keep the images (and object masks) as tensors over the stored arrays.

        Images stay in their stored dtype (uint8 takes a quarter of float32's memory) and
        memory-mapped: an item's pixels are read when a view needs them, and are scaled to
        ``[0, 1]`` per view.
        """
        self._out_size = self._check_items(items)
        self._channels = int(items.meta["channels"])
        self._disc = disc_mask(self._out_size).float()
        self._mapped = [*items.arrays.values(), *items.extras.values()]  # pages handed back
        if items.meta.get("layout") == "patches":
            self._store = (items.extras[PIXELS], items.arrays[EXTENT])
            self._window = int(items.meta["size"])
            self._has_masks = False
            self._scale = 1 / 255 if self._store[0].dtype == np.uint8 else 1.0
            return
        self._store = None
        # No copy: a memory-mapped array stays one, and a mask joins its item per view.
        images = torch.from_numpy(np.ascontiguousarray(items.arrays["images"]))
        masks = items.arrays.get("masks")
        self._has_masks = masks is not None
        self._masks = None if masks is None else torch.from_numpy(np.ascontiguousarray(masks))
        self._images = images
        self._scale = 1 / 255 if images.dtype == torch.uint8 else 1.0

    def source(self, item_index: int, window: tuple[int, int] | None) -> Tensor:
        """``[C', S, S]`` in the stored dtype (the object mask as a last channel): the item,
        or (patch layout) the window of side ``S`` at ``(top, left)`` of its image, the
        centred one for ``None``. Times ``_scale`` it is in ``[0, 1]``."""
        if self._store is None:
            assert self._images is not None  # bind() sets the images or the patch store
            image = self._images[item_index]
            if self._masks is None:
                return image
            ones = 255 if image.dtype == torch.uint8 else 1.0
            return torch.cat([image, self._masks[item_index][None].to(image.dtype) * ones])
        stored = unpack_image(*self._store, item_index, self._channels)
        height, width = stored.shape[1:]
        top, left = window if window is not None else self._centred_window(height, width)
        patch = stored[:, top : top + self._window, left : left + self._window]
        return torch.from_numpy(np.ascontiguousarray(patch))

    def _centred_window(self, height: int, width: int) -> tuple[int, int]:
        return (height - self._window) // 2, (width - self._window) // 2

    def render(
        self,
        item_index: int,
        angle: float = 0.0,
        flip: bool = False,
        shift: tuple[int, int] = (0, 0),
        contrast: float = 1.0,
        brightness: float = 0.0,
        gains: tuple[float, ...] | None = None,
        window: tuple[int, int] | None = None,
    ) -> Tensor:
        """Item ``item_index`` (patch layout: its window at ``(top, left)``, centred for
        ``None``) turned by ``angle`` degrees (and mirrored first if ``flip``) about a centre
        moved by ``shift`` pixels ``(right, down)``, cropped, jittered (contrast factor,
        brightness offset, per-channel ``gains``) and masked:
        ``float32 [C, out_size, out_size]``."""
        if self._images is None and self._store is None:
            raise RuntimeError("rotations: call bind(items) before making views")
        draw = ViewDraw(angle, flip, shift, contrast, brightness, gains, window)
        image = self.source(item_index, window)[None].float() * self._scale
        return render_views(image, [draw], self.view_shape, self._disc)[0]

    @property
    def view_shape(self) -> ViewShape:
        """The bound items' channels and view side, for :func:`render_views`."""
        return ViewShape(self._channels, self._out_size, self._has_masks, self.interpolation)

    def make_view(self, item_index: int, view: str, rng: np.random.Generator | None) -> Tensor:
        return self.render(item_index, *self.draw_view(item_index, view, rng))

    def draw_view(self, item_index: int, view: str, rng: np.random.Generator | None) -> ViewDraw:
        """A view's random parameters, drawn from ``rng`` in the order of the module
        docstring; the canonical view's for ``"identity"`` or ``rng=None``."""
        if view not in self.VIEWS:
            raise ValueError(f"rotations: unknown view {view!r}; known: {list(self.VIEWS)}")
        if rng is None or view == "identity":
            return ViewDraw()
        step = ANGLE_MODES[self.angles]
        if step is None:
            angle = float(rng.uniform(0.0, 360.0))
        else:
            angle = float(rng.integers(round(360 / step))) * step
        flip = bool(rng.random() < 0.5) if self.flips else False
        shift = (0, 0)
        if self.max_shift > 0:
            dx, dy = rng.integers(-self.max_shift, self.max_shift + 1, size=2).tolist()
            shift = (int(dx), int(dy))
        jitter = self.jitter
        contrast = 1.0
        if jitter["contrast"] > 0:
            contrast = float(rng.uniform(1 - jitter["contrast"], 1 + jitter["contrast"]))
        brightness = 0.0
        if jitter["brightness"] > 0:
            brightness = float(rng.uniform(-jitter["brightness"], jitter["brightness"]))
        gains = None
        if jitter["colour"] > 0 and self._channels == 3:
            gains = tuple(rng.uniform(1 - jitter["colour"], 1 + jitter["colour"], size=3).tolist())
        window = None
        if self._store is not None and self.random_window:
            _, height, width = (int(v) for v in self._store[1][item_index])
            window = (
                int(rng.integers(height - self._window + 1)),
                int(rng.integers(width - self._window + 1)),
            )
        return ViewDraw(angle, flip, shift, contrast, brightness, gains, window)

    def training_batches(
        self,
        items: Items,
        pairs: pd.DataFrame,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> EpochLoader:
        """The default batches, able to render a batch's views in one call on the training
        device (``training.augment_on_device``; :mod:`.device_views`)."""
        dataset = ViewDataset(items, pairs, self, seed)
        return EpochLoader(
            DeviceRotationBatches(dataset, batch_size, rank=rank, world_size=world_size)
        )

    def embedding_batches(self, items: Items, batch_size: int) -> Iterator[Tensor | PatchBag]:
        """Canonical views, ``batch_size`` at a time; for patch items, :class:`PatchBag` s of
        whole images' patch grids holding about ``batch_size`` patches (module docstring)."""
        if items.meta.get("layout") != "patches":
            yield from super().embedding_batches(items, batch_size)
            return
        self.bind(items)
        patches: list[Tensor] = []
        owners: list[int] = []
        for index in range(len(items)):
            grid = self._grid(index)
            owners.extend([owners[-1] + 1 if owners else 0] * len(grid))
            patches.extend(grid)
            if len(patches) >= batch_size or index == len(items) - 1:
                yield PatchBag(torch.stack(patches), torch.tensor(owners), owners[-1] + 1)
                patches, owners = [], []

    def _grid(self, item_index: int) -> list[Tensor]:
        """Canonical ``o x o`` views at up to ``max_patches`` places of the image's grid."""
        store = self._store
        assert store is not None  # embedding_batches bound the patch items
        _, height, width = (int(v) for v in store[1][item_index])
        image = unpack_image(*store, item_index, self._channels)
        side = self._out_size
        views = []
        for _, _, top, left in tile_grid(height, width, side, self.max_patches):
            patch = torch.from_numpy(
                image[:, top : top + side, left : left + side].astype(np.float32)
            )
            views.append(patch * self._scale * self._disc)
        return views
