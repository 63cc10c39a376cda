"""Grain benchmark on real tint-etched micrographs (TBM, ``../shared/data/grains_tbm``).

Two parts (BENCHMARKS.md, "Microscopy: grains (TBM)"):

**Segmentation** against the hand-drawn boundary masks of the 256 x 256 crops
(``crops256_with_boundary_masks``). The parameters of
:func:`~scicontrast.data_adapters.grains.segment_micrograph` are chosen on the 64
``TrainDataset`` crops by a grid search (the pooled boundary F-score at a 2-pixel
tolerance, :mod:`scicontrast.analysis.segmentation`); the project's defaults
(``DEFAULT_PARAMS``) are the parameters this search selected. The chosen parameters, an
ablation without total-variation denoising and region merging, and an off-the-shelf
reference, Felzenszwalb & Huttenlocher's graph segmentation
(``skimage.segmentation.felzenszwalb``, scale 100, sigma 0.8, min size 50), are then scored
on the 16 ``TestDataset`` crops at tolerances of 1, 2 and 3 pixels. The predicted label
images of the test crops are written as 16-bit PNGs and scored from there with
:func:`~scicontrast.analysis.segmentation.score_folder`, the function a user calls on their
own folder. Caveat: the data set's own split puts crops of the same full micrographs
(ids 10-31) in both parts, so the test crops are not from unseen micrographs.

**Grain embeddings** of the 5 full micrographs: run the workflow on
``benchmarks/grains_tbm.yaml`` first (segmentation with the tuned parameters, one crop per
grain, rotation pairs, rotation-invariant CNN, k-means), then this script draws every
image's grains tinted by their k-means cluster, ``results/grains_tbm/cluster_overlays/
<image>.png``, and tabulates the clusters' grain statistics. The micrographs have no class
labels (one material), so the clusters are described, not scored.

    python benchmarks/grains_tbm.py              # plain text
    python benchmarks/grains_tbm.py --markdown   # the tables in BENCHMARKS.md

When the data folder is absent (a fresh clone has no ``../shared/data``) the script says so
and exits with status 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skimage import io as skio
from skimage.segmentation import felzenszwalb

from scicontrast.analysis.segmentation import (
    COUNT_COLUMNS,
    boundary_counts,
    score_folder,
    scores_from_counts,
    thin_boundaries,
)
from scicontrast.data_adapters.grains.folders import load_labels, load_micrograph, load_segmentation
from scicontrast.data_adapters.grains.segmentation import (
    DEFAULT_PARAMS,
    boundary_mask,
    segment_micrograph,
)
from scicontrast.data_adapters.grains.statistics import overlay_grain_values
from scicontrast.io import atomic_path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "grains_tbm"
CROPS = DATA / "crops256_with_boundary_masks"
OUT = REPO / "results" / "benchmarks" / "grains_tbm"
EXPERIMENT = "grains_tbm"
SEGMENTATION = REPO / "results" / "segmentations" / "grains_tbm"
TUNING_TOLERANCE = 2
TOLERANCES = (1, 2, 3)

#: The grid searched on the training crops (every combination).
GRID: dict[str, list[Any]] = {
    "tv_weight": [0.1, 0.15, 0.2],
    "h": [0.4, 0.55, 0.7],
    "merge_threshold": [0.0, 1.4],
}


#: The ablation: the plain marker-controlled watershed on the colour gradient.
PLAIN = {"tv_weight": 0.0, "merge_threshold": 0.0}


def load_crops(split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, RGB image, thin true boundaries)`` of every crop in a split."""
    crops = []
    for path in sorted((CROPS / split / "images").glob("*.png")):
        image = skio.imread(path)[:, :, :3]
        mask = skio.imread(CROPS / split / "masks" / path.name)
        mask = mask[:, :, 0] if mask.ndim == 3 else mask
        crops.append((path.stem, image, thin_boundaries(mask > 127)))
    return crops


def _felzenszwalb(image: np.ndarray) -> np.ndarray:
    return felzenszwalb(image, scale=100, sigma=0.8, min_size=50) + 1


def _score_one(task: tuple[dict[str, Any] | None, np.ndarray, np.ndarray, tuple[int, ...]]):
    params, image, true, tolerances = task
    labels = _felzenszwalb(image) if params is None else segment_micrograph(image, params)
    predicted = boundary_mask(labels)
    return labels, [boundary_counts(predicted, true, t) for t in tolerances]


def pooled_scores(
    crops: list, params: dict[str, Any] | None, tolerances: tuple[int, ...], pool: Any
) -> tuple[list[np.ndarray], dict[int, dict[str, float]]]:
    """Segment every crop (``params=None``: Felzenszwalb) and pool the counts per tolerance."""
    results = list(pool.map(_score_one, [(params, im, tr, tolerances) for _, im, tr in crops]))
    scores = {}
    for k, tolerance in enumerate(tolerances):
        totals = {c: sum(counts[k][c] for _, counts in results) for c in COUNT_COLUMNS}
        scores[tolerance] = scores_from_counts(totals)
    return [labels for labels, _ in results], scores


def tune(train: list, pool: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grid search on the training crops; returns the best parameters and every result."""
    rows = []
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values, strict=True))
        _, scores = pooled_scores(train, params, (TUNING_TOLERANCE,), pool)
        rows.append({**params, **scores[TUNING_TOLERANCE]})
    table = pd.DataFrame(rows).sort_values("f_score", ascending=False, kind="stable")
    best = {k: table.iloc[0][k] for k in GRID}
    return {k: float(v) for k, v in best.items()}, table


def segmentation_benchmark(workers: int) -> dict[str, Any]:
    train, test = load_crops("TrainDataset"), load_crops("TestDataset")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        best, grid = tune(train, pool)
        tuned_seconds = time.perf_counter() - started
        methods = {
            "tuned": {**DEFAULT_PARAMS, **best},
            "no denoising, no merging": {**DEFAULT_PARAMS, **PLAIN},
            "felzenszwalb": None,
        }
        results = {}
        for name, params in methods.items():
            started = time.perf_counter()
            labels, scores = pooled_scores(test, params, TOLERANCES, pool)
            results[name] = {
                "params": params,
                "test": scores,
                "seconds_per_crop": (time.perf_counter() - started) / len(test),
            }
            if name == "tuned":
                tuned_labels = labels
    # The tuned predictions, written and scored the way a user scores their own folder.
    predicted_dir = OUT / "test_labels"
    with atomic_path(predicted_dir) as tmp:
        tmp.mkdir()
        for (name, _, _), labels in zip(test, tuned_labels, strict=True):
            skio.imsave(tmp / f"{name}.png", labels.astype(np.uint16), check_contrast=False)
    per_image, summaries = score_folder(predicted_dir, CROPS / "TestDataset" / "masks", TOLERANCES)
    results["tuned"]["test_from_folder"] = summaries
    results["tuned"]["per_image"] = per_image.to_dict(orient="records")
    results["grid"] = grid.to_dict(orient="records")
    results["tuning_seconds"] = tuned_seconds
    results["crops"] = {"train": len(train), "test": len(test)}
    return results


def cluster_overlays(results: Path) -> pd.DataFrame | None:
    """Grains tinted by k-means cluster, per image; returns per-cluster grain statistics."""
    assignments_path = results / EXPERIMENT / "clusters" / "assignments.parquet"
    if not assignments_path.is_file() or not SEGMENTATION.is_dir():
        return None
    _, grains = load_segmentation(SEGMENTATION)
    assignments = pd.read_parquet(assignments_path)[["item_id", "kmeans"]]
    grains["item_id"] = grains["image"] + ":" + grains["grain"].astype(str)
    clustered = grains.merge(assignments, on="item_id")
    out = results / EXPERIMENT / "cluster_overlays"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for image_id, rows in clustered.groupby("image"):
            picture = overlay_grain_values(
                load_micrograph(SEGMENTATION, image_id),
                load_labels(SEGMENTATION, image_id),
                rows["grain"].to_numpy(),
                rows["kmeans"].to_numpy(),
            )
            skio.imsave(tmp / f"{image_id}.png", picture, check_contrast=False)
    colour = [c for c in ("mean_red", "mean_green", "mean_blue") if c in clustered]
    return (
        clustered.groupby("kmeans")
        .agg(
            grains=("grain", "size"),
            median_area_px=("area_px", "median"),
            median_eccentricity=("eccentricity", "median"),
            **{c: (c, "mean") for c in colour},
        )
        .reset_index()
    )


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, *rows]
    )


def render(segmentation: dict[str, Any], clusters: pd.DataFrame | None, markdown: bool) -> str:
    rows = []
    for name in ("tuned", "no denoising, no merging", "felzenszwalb"):
        scores = segmentation[name]["test"]
        row = [name]
        for t in TOLERANCES:
            s = scores[t]
            row.append(f"{s['precision']:.3f} / {s['recall']:.3f} / {s['f_score']:.3f}")
        row.append(f"{segmentation[name]['seconds_per_crop']:.2f}")
        rows.append(row)
    header = ["method", *[f"P / R / F at {t} px" for t in TOLERANCES], "s per crop"]
    tuned = {k: segmentation["tuned"]["params"][k] for k in GRID}
    mean_f = segmentation["tuned"]["test_from_folder"][TUNING_TOLERANCE]["mean_per_image"]
    parts = [
        f"Boundary scores on the {segmentation['crops']['test']} test crops (pooled counts; "
        f"parameters tuned on the {segmentation['crops']['train']} training crops at "
        f"{TUNING_TOLERANCE} px: {json.dumps(tuned)})",
        "",
        _table(header, rows, markdown),
        "",
        f"Tuned, mean of per-crop F at {TUNING_TOLERANCE} px: {mean_f['f_score']:.3f}",
    ]
    if clusters is not None:
        header = list(clusters.columns)
        rows = [
            [f"{v:.3f}" if isinstance(v, float) else str(v) for v in record]
            for record in clusters.itertuples(index=False)
        ]
        parts += ["", "k-means clusters of the grain embeddings (5 full micrographs)", ""]
        parts.append(_table(header, rows, markdown))
    return "\n".join(parts)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, for JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--workers", type=int, default=2, help="processes for segmentation")
    args = parser.parse_args(argv)
    if not CROPS.is_dir():
        print(f"skipping the grains benchmark: {CROPS} not found (no ../shared/data)")
        return 0
    segmentation = segmentation_benchmark(args.workers)
    OUT.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT / "segmentation.json") as tmp:
        tmp.write_text(json.dumps(segmentation, indent=2, default=_plain) + "\n")
    clusters = cluster_overlays(args.results)
    if clusters is None:
        print(
            f"(no grain clusters: run the workflow on benchmarks/grains_tbm.yaml for "
            f"results/{EXPERIMENT}, command in BENCHMARKS.md)",
            file=sys.stderr,
        )
    print(render(segmentation, clusters, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
