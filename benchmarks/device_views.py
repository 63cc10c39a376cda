"""Views per second of ``rotations``: item by item on the CPU against one batch on the device.

::

    OMP_NUM_THREADS=1 python benchmarks/device_views.py                  # CPU device
    python benchmarks/device_views.py --device cuda --markdown           # on a GPU machine

For generated image items (``--items`` grey ``uint8`` images of ``--size`` pixels, in the
crop layout, with grain masks, or in the patch layout of whole images twice the side), this
draws ``--epochs`` epochs of ``rotations``' training batches (``--batch`` groups of two
views) through the loader, in this process (no workers), once with the item-by-item views
(``make_view``, the default) and once with ``training.augment_on_device`` (every view of a
batch rendered in one call on ``--device``). It reports views per second of CPU time of the
process (``time.process_time``: the load of a shared machine hardly moves it) and of wall
time, and checks that both paths give the same views (bit for bit on a CPU; to float
rounding on a GPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.images.patches import EXTENT, PIXELS, pack_images
from scicontrast.data_adapters.images.rotations import RotationViews

LAYOUTS = ("crop", "grains", "patches")


def image_items(layout: str, n: int, size: int, seed: int = 0) -> Items:
    """``n`` grey images of side ``size`` (patch layout: ``2 size``, patches of ``size``)."""
    rng = np.random.default_rng(seed)
    side = 2 * size if layout == "patches" else size
    images = rng.integers(0, 256, (n, 1, side, side), dtype=np.uint8)
    table = pd.DataFrame({"item_id": [f"img{i}" for i in range(n)]})
    meta = {"modality": "image", "channels": 1, "size": size}
    if layout == "patches":
        pixels, extent = pack_images(list(images), np.uint8)
        meta["layout"] = "patches"
        return Items(table, meta=meta, arrays={EXTENT: extent}, extras={PIXELS: pixels})
    arrays = {"images": images}
    if layout == "grains":
        yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
        radii = rng.uniform(0.25, 0.45, n)[:, None, None] * size
        arrays["masks"] = yy**2 + (0.7 * xx) ** 2 <= radii**2
    return Items(table, meta=meta, arrays=arrays)


def views_per_second(
    items: Items, params: dict, batch: int, epochs: int, device: str | None
) -> tuple[float, float, list[torch.Tensor]]:
    """``(views per CPU second, views per wall second, the first epoch's batches)``."""
    builder = RotationViews(**params)
    batches = builder.training_batches(items, builder.build(items), 0, batch)
    if device is not None:
        batches.augment_on(torch.device(device))
    views, first = 0, []
    cpu, wall = time.process_time(), time.perf_counter()
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for made in batches:
            views += made.n_views
            if epoch == 0:
                first.append(made.inputs)
    if device is not None and device.startswith("cuda"):
        torch.cuda.synchronize()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return views / cpu, views / wall, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2048)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128, help="groups per batch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = {"angles": "continuous", "flips": True, "max_shift": 2, "out_size": args.size - 8}
    rows = []
    for layout in args.layouts:
        items = image_items(layout, args.items, args.size)
        cpu_path = views_per_second(items, params, args.batch, args.epochs, None)
        device_path = views_per_second(items, params, args.batch, args.epochs, args.device)
        gap = max(
            float((a - b.cpu()).abs().max())
            for a, b in zip(cpu_path[2], device_path[2], strict=True)
        )
        rows.append(
            {
                "layout": layout,
                "items": args.items,
                "px": args.size,
                "device": args.device,
                "cpu path views/CPU s": round(cpu_path[0]),
                "device path views/CPU s": round(device_path[0]),
                "speed-up (CPU s)": round(device_path[0] / cpu_path[0], 2),
                "cpu path views/wall s": round(cpu_path[1]),
                "device path views/wall s": round(device_path[1]),
                "largest difference": gap,
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False) if args.markdown else table.to_string(index=False))


if __name__ == "__main__":
    main()
