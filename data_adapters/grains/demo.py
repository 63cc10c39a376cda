"""Synthetic polycrystals: the embedded microscopy demo data set.

Each micrograph is a Voronoi tessellation of ``size x size`` pixels around
``grains_per_image`` uniform random seed points (a grain is the set of pixels nearest to its
seed). A grain's crystal orientation is modelled in two parts:

* an **orientation class** ``k in {1, ..., classes}``, uniform at random, which sets what a
  tint etch shows of the crystal: the hue, ``HUE_START + HUE_RANGE (k - 1) / (classes - 1)``
  (from orange to blue, leaving magenta free for drawn boundaries), and the spacing of the
  etched lamellae, ``LAMELLA_PERIODS[(k - 1) % 2]`` pixels, so that classes next to each
  other in hue also differ in texture;
* an **in-plane angle** ``phi ~ U[0, pi)``: how the sample happened to sit under the
  microscope. It only turns the lamellae, so a rotation-invariant embedding should group
  grains by class whatever ``phi`` is.

Pixel ``x`` (row, column) of grain ``g`` has intensity

.. math::

    I(x) = c_g \\cdot \\bigl(1 - a + a \\cdot \\tfrac12
           [1 + \\sin(2\\pi\\, \\langle x, (\\sin\\phi_g, \\cos\\phi_g) \\rangle / \\lambda_k
           + \\psi_g)]\\bigr)

with ``c_g`` the grain's RGB colour (the class hue with per-grain jitter of saturation and
value, so that neighbouring grains of one class still differ slightly, as real grains of
similar orientation do), lamella contrast ``a = LAMELLA_CONTRAST``, period ``lambda_k`` and a
random phase ``psi_g``. Etched grain boundaries show as dark grooves: pixels within
``GROOVE_HALF_WIDTH`` of a boundary are multiplied by ``GROOVE_DEPTH``. Finally the image is
blurred (Gaussian, ``blur`` pixels) and Gaussian noise of standard deviation ``noise`` is
added.

Outputs in ``out_dir`` (ids ``micrograph_00``, ``micrograph_01``, ...)::

    micrographs/<id>.png   8-bit RGB micrograph
    truth/<id>.png         16-bit ground-truth grain labels 1..G (PNG)
    classes/<id>.png       8-bit orientation class of each pixel's grain, 1..classes
    grains.csv             one row per grain: image, grain, orientation_class,
                           angle_deg (phi), period_px, hue

Image ``i`` depends only on ``(seed, i)`` and the size arguments, so the output is
deterministic given the arguments. Each file is written atomically.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import io as skio

from scicontrast.errors import ConfigError
from scicontrast.io import atomic_path

LAMELLA_PERIODS = (4.0, 9.0)
LAMELLA_CONTRAST = 0.25
GROOVE_HALF_WIDTH = 1.0
GROOVE_DEPTH = 0.45
HUE_START = 0.05  # an orange-brown, as tint-etched steel often looks
HUE_RANGE = 0.6  # up to blue
SATURATION = (0.5, 0.65)  # per-grain uniform range
VALUE = (0.7, 0.9)  # per-grain uniform range


def image_ids(images: int) -> list[str]:
    """The ids of the demo micrographs, in order."""
    return [f"micrograph_{i:02d}" for i in range(images)]


def class_hue(orientation_class: int, classes: int) -> float:
    """Hue in ``[0, 1)`` of a class (module docstring)."""
    return HUE_START + HUE_RANGE * (orientation_class - 1) / (classes - 1)


def class_period(orientation_class: int) -> float:
    """Lamella period in pixels of a class (module docstring)."""
    return LAMELLA_PERIODS[(orientation_class - 1) % len(LAMELLA_PERIODS)]


def voronoi_labels(size: int, seeds: np.ndarray) -> np.ndarray:
    """``int32 [size, size]`` labels ``1..len(seeds)``: the nearest seed of each pixel."""
    # The distance transform of "not a seed" returns the nearest seed pixel of every pixel:
    # exact Euclidean nearest-seed, in O(pixels), instead of a pixels x seeds distance table.
    grid = np.zeros((size, size), dtype=np.int32)
    rows, cols = np.clip(np.rint(seeds).astype(int), 0, size - 1).T
    grid[rows, cols] = np.arange(1, len(seeds) + 1)
    _, (nearest_row, nearest_col) = ndimage.distance_transform_edt(grid == 0, return_indices=True)
    return grid[nearest_row, nearest_col]


def _boundary_distance(labels: np.ndarray) -> np.ndarray:
    """Distance of each pixel to the nearest pixel whose right or lower neighbour differs."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return ndimage.distance_transform_edt(~edge)


def synthetic_micrograph(
    size: int,
    grains: int,
    classes: int,
    rng: np.random.Generator,
    noise: float = 0.04,
    blur: float = 0.8,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """One micrograph: ``(uint8 [size, size, 3], int32 labels, per-grain table)``."""
    seeds = rng.uniform(0, size, size=(grains, 2))
    labels = voronoi_labels(size, seeds)
    present = np.unique(labels)
    n_grains = int(present.max())
    orientation_class = rng.integers(1, classes + 1, size=n_grains + 1)
    angle = rng.uniform(0.0, np.pi, size=n_grains + 1)
    phase = rng.uniform(0.0, 2 * np.pi, size=n_grains + 1)
    saturation = rng.uniform(*SATURATION, size=n_grains + 1)
    value = rng.uniform(*VALUE, size=n_grains + 1)
    hue = np.array([class_hue(int(k), classes) for k in orientation_class])
    period = np.array([class_period(int(k)) for k in orientation_class])
    colour = np.array(
        [colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hue, saturation, value, strict=True)]
    )

    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    phi, lam = angle[labels], period[labels]
    along = rows * np.sin(phi) + cols * np.cos(phi)
    lamellae = 0.5 * (1 + np.sin(2 * np.pi * along / lam + phase[labels]))
    shade = 1 - LAMELLA_CONTRAST + LAMELLA_CONTRAST * lamellae
    groove = np.where(_boundary_distance(labels) <= GROOVE_HALF_WIDTH, GROOVE_DEPTH, 1.0)
    image = colour[labels] * (shade * groove)[:, :, None]
    if blur > 0:
        image = ndimage.gaussian_filter(image, sigma=(blur, blur, 0))
    image = image + rng.normal(0.0, noise, size=image.shape)
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)

    table = pd.DataFrame(
        {
            "grain": present,
            "orientation_class": orientation_class[present],
            "angle_deg": np.degrees(angle[present]),
            "period_px": period[present],
            "hue": hue[present],
        }
    )
    return pixels, labels, table


def generate_demo_grains(
    out_dir: str | Path,
    images: int = 8,
    size: int = 320,
    grains_per_image: int = 60,
    classes: int = 4,
    noise: float = 0.04,
    blur: float = 0.8,
    seed: int = 0,
) -> list[Path]:
    """Write the demo micrographs and their ground truth (module docstring); return the
    micrograph paths."""
    if images < 1 or size < 16 or grains_per_image < 2 or classes < 2:
        raise ConfigError(
            f"demo_data.grains: need images >= 1 (got {images}), size >= 16 (got {size}), "
            f"grains_per_image >= 2 (got {grains_per_image}) and classes >= 2 (got {classes})"
        )
    if classes > 255:
        raise ConfigError(f"demo_data.grains: classes={classes} must be at most 255 (8-bit map)")
    if noise < 0 or blur < 0:
        raise ConfigError(f"demo_data.grains: noise ({noise}) and blur ({blur}) must be >= 0")
    out_dir = Path(out_dir)
    tables, paths = [], []
    for index, image_id in enumerate(image_ids(images)):
        rng = np.random.default_rng([seed, index])
        pixels, labels, table = synthetic_micrograph(
            size, grains_per_image, classes, rng, noise=noise, blur=blur
        )
        lookup = np.zeros(int(labels.max()) + 1, dtype=np.uint8)
        lookup[table["grain"].to_numpy()] = table["orientation_class"].to_numpy()
        path = out_dir / "micrographs" / f"{image_id}.png"
        _write_png(path, pixels)
        _write_png(out_dir / "truth" / f"{image_id}.png", labels.astype(np.uint16))
        _write_png(out_dir / "classes" / f"{image_id}.png", lookup[labels])
        tables.append(table.assign(image=image_id))
        paths.append(path)
    grains = pd.concat(tables, ignore_index=True)
    columns = ["image", "grain", "orientation_class", "angle_deg", "period_px", "hue"]
    with atomic_path(out_dir / "grains.csv") as tmp:
        grains[columns].to_csv(tmp, index=False, float_format="%.4f")
    return paths


def _write_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        skio.imsave(tmp, array, check_contrast=False)
