r"""``rotations``' views made for a whole batch at once, on the training device.

One view of ``rotations`` (module :mod:`~scicontrast.data_adapters.images.rotations`) is
drawn as a :class:`ViewDraw` (angle, mirror, centre shift, jitter factors, patch window) and
rendered by :func:`render_views`, which works on a batch of any size on any device::

    x [B, C', S, S] float in [0, 1]      (C' = C, plus the object mask as a last channel)
    v = grid_sample(x, affine_grid(R_theta F^f, shift))        (geometry.rotate)
        = x itself where theta = 0, no mirror, no shift and out_size = S
    m = D_o * clamp(v[:, C], 0, 1)       (the disc, times the rotated object mask)
    v = mu + c (v - mu)  where c != 1,   mu = sum(v m) / (C sum(m))     per view
    v = clamp((v + b) g_k, 0, 1) m                                      -> [B, C, o, o]

``RotationViews.render`` is this function on a batch of one, so the item-by-item CPU views
and the batched device views are one computation: for the same draws they agree to float
rounding of the batched reductions, and exactly for quarter turns and mirrors.

With ``training.augment_on_device``, :class:`DeviceRotationBatches` draws every view's
parameters on the CPU from the generator seeded by ``(seed, epoch, group)``, in the order
``make_view`` draws them, gathers the views' source pixels in their stored dtype (``uint8``
is a quarter of ``float32`` to move), and renders them all in one call on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, cast

import numpy as np
import torch
from torch import Tensor

from scicontrast.data_adapters.base import GroupBatches
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.items_store import drop_mapped_pages
from scicontrast.geometry import rotate


class ViewDraw(NamedTuple):
    """One view's random parameters; the defaults are the canonical view.

    ``shift`` is ``(right, down)`` pixels, ``gains`` per channel (``None``: 1), ``window``
    the patch layout's ``(top, left)`` (``None``: the centred one).
    """

    angle: float = 0.0
    flip: bool = False
    shift: tuple[int, int] = (0, 0)
    contrast: float = 1.0
    brightness: float = 0.0
    gains: tuple[float, ...] | None = None
    window: tuple[int, int] | None = None


class ViewShape(NamedTuple):
    """What rendering needs of a bound builder besides the draws."""

    channels: int
    out_size: int
    has_masks: bool
    interpolation: str


def render_views(
    images: Tensor, draws: Sequence[ViewDraw], shape: ViewShape, disc: Tensor
) -> Tensor:
    """The views ``draws`` of ``images`` (module docstring): ``[B, C, o, o]``.

    Args:
        images: ``float [B, C', S, S]`` in ``[0, 1]``; with masks the last channel is the
            object mask.
        draws: One :class:`ViewDraw` per row.
        shape: Channels ``C``, view side ``o``, whether ``images`` carry a mask channel,
            the interpolation.
        disc: ``float [o, o]``, the inscribed disc, on the images' device.
    """
    device = images.device
    angles = torch.tensor([d.angle for d in draws])
    flips = torch.tensor([d.flip for d in draws])
    shifts = torch.tensor([d.shift for d in draws])
    # theta = 0, no mirror, no shift, no crop: the image itself, not resampled
    same = (angles == 0) & ~flips & (shifts == 0).all(dim=1)
    same &= shape.out_size == images.shape[-1]
    if same.all():
        views = images
    else:
        views = rotate(images, angles, shape.out_size, flips, shape.interpolation, shifts)
        if same.any():
            views = torch.where(same.to(device).view(-1, 1, 1, 1), images, views)
    mask = disc.expand(len(draws), -1, -1)
    if shape.has_masks:
        views, object_mask = views[:, : shape.channels], views[:, shape.channels :]
        mask = mask * object_mask[:, 0].clamp(0.0, 1.0)
    contrast = torch.tensor([d.contrast for d in draws], dtype=views.dtype)
    changed = contrast != 1.0
    if changed.any():
        weight = mask.sum(dim=(-2, -1)).clamp_min(1e-6) * shape.channels
        mean = ((views * mask[:, None]).sum(dim=(1, 2, 3)) / weight).view(-1, 1, 1, 1)
        scaled = mean + contrast.to(device).view(-1, 1, 1, 1) * (views - mean)
        views = torch.where(changed.to(device).view(-1, 1, 1, 1), scaled, views)
    brightness = torch.tensor([d.brightness for d in draws], dtype=views.dtype)
    if (brightness != 0).any():
        views = views + brightness.to(device).view(-1, 1, 1, 1)
    if any(d.gains is not None for d in draws):
        gains = [d.gains or (1.0,) * shape.channels for d in draws]
        views = views * torch.tensor(gains, dtype=views.dtype, device=device)[:, :, None, None]
    return views.clamp(0.0, 1.0) * mask[:, None]


class _BoundRotationViews(Protocol):
    """What this module reads of a bound ``RotationViews`` (rotations.py imports it)."""

    _scale: float
    _disc: Tensor
    _mapped: list[np.ndarray]

    @property
    def view_shape(self) -> ViewShape: ...

    def draw_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> ViewDraw: ...

    def source(self, item_index: int, window: tuple[int, int] | None) -> Tensor: ...


class DeviceRotationBatches(GroupBatches):
    """:class:`GroupBatches` of ``rotations`` that renders each batch's views in one call on
    a device once :meth:`to_device` is called (a
    :class:`~scicontrast.data_adapters.loader.DeviceBatchPlan`); before that, the
    item-by-item CPU views."""

    _device: torch.device | None = None
    _disc: Tensor | None = None

    @property
    def builder(self) -> _BoundRotationViews:
        return cast(_BoundRotationViews, self.dataset.builder)

    def to_device(self, device: torch.device) -> None:
        self._device = device
        self._disc = self.builder._disc.to(device)

    def make_batch(self, epoch: int, key: np.ndarray) -> ContrastiveBatch:
        """The batch of groups ``key``; then the pages of the memory-mapped images that it
        read are handed back. A view reads one random item, but the kernel maps the file's
        page-cache folio around it (about 400 KiB an item measured): 30 steps of 256 groups
        kept 620 MiB of a 10^6-image set resident after 5 steps, and an epoch keeps all."""
        batch = self._make_batch(epoch, key)
        for array in self.builder._mapped:
            drop_mapped_pages(array)
        return batch

    def _make_batch(self, epoch: int, key: np.ndarray) -> ContrastiveBatch:
        if self._device is None or self._disc is None:
            return super().make_batch(epoch, key)
        builder, dataset = self.builder, self.dataset
        rows, draws, group_ids = [], [], []
        for group in key.tolist():
            rng = np.random.default_rng([dataset.seed, epoch, group])
            item_rows, view_names = dataset.group_views(group)
            for row, view in zip(item_rows, view_names, strict=True):
                rows.append(int(row))
                draws.append(builder.draw_view(int(row), view, rng))
                group_ids.append(group)
        sources = torch.stack(
            [builder.source(r, d.window) for r, d in zip(rows, draws, strict=True)]
        )
        if self._device.type == "cuda":  # page-locked, so the copy overlaps the host's work
            sources = sources.pin_memory()
        images = sources.to(self._device, non_blocking=True).float() * builder._scale
        views = render_views(images, draws, builder.view_shape, self._disc)
        return ContrastiveBatch(views, torch.tensor(group_ids, dtype=torch.long))
