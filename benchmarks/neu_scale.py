"""NEU at another size: does the native-scale reference configuration transfer?

Issue 23 asks for an image configuration that holds on micrographs it was not tuned on. The
second setting here is NEU presented at twice its size: every image upsampled 2x
(``skimage.transform.resize``, bilinear) to 400 x 400, written once to ``--data``
(default ``results/neu_x2_data``, with a labels table whose ``pixel_size_um`` is 0.5, NEU's
own pixel taken as the unit). The model trained on the 200 x 200 originals
(``benchmarks/neu_native.yaml``, run by the workflow first) then embeds three item sets, all
probed on the same stratified splits (the experiment's ``probe_test_fraction`` and
``probe_seeds``, rows in the same image order):

``native``
    the originals (the experiment's own items);
``x2, pixel size given``
    the 2x copies read with ``target_pixel_size_um: 1``, so they are resampled to the
    working scale the model was trained at (``scicontrast.data_adapters.images.patches``);
``x2, pixel size unknown``
    the 2x copies at their native resolution, the control: texture twice as coarse.

Each set gets raw pixels (32 x 32) and multi-scale rotation-invariant LBP from the files as
they are (``benchmarks/neu.py``), the experiment's encoder at its initial weights (seeded as
training seeds it; not for the control) and the trained encoder (on the originals: the
workflow's embeddings), all scored by the workflow's ``linear_probe``, ``validation_probe``
and ``knn_accuracy``. An image embeds from at most ``--max-patches`` (16) patches spread over
its grid: all of a 200 x 200 image's 45-pixel patches, a quarter of a 400 x 400 one's. Run::

    python benchmarks/neu_scale.py --experiment neu_native_p64

Exits with status 0 and a message when ``../shared/data`` is absent.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from neu import grey_image, lbp_histograms, percent, raw_pixels, validation_text
from skimage.io import imsave
from skimage.transform import resize

from scicontrast.analysis.embed import embed_items, load_embeddings
from scicontrast.analysis.probes import knn_accuracy, linear_probe, validation_probe
from scicontrast.config import read_config_file
from scicontrast.data_adapters.base import Items
from scicontrast.models.contrastive import build_model, load_model
from scicontrast.registry import ADAPTERS, PAIR_BUILDERS

REPO = Path(__file__).resolve().parents[1]
FACTOR = 2


def write_upsampled(items: Items, out: Path) -> Path:
    """The items' files upsampled ``FACTOR`` times into ``out/images``; returns the labels
    table (``file``, ``label``, ``pixel_size_um = 1 / FACTOR``). Skips work already done."""
    labels = out / "labels.csv"
    if labels.is_file():
        return labels
    (out / "images").mkdir(parents=True, exist_ok=True)
    for path in items.table["file"]:
        image = grey_image(REPO / path)
        big = resize(image, (image.shape[0] * FACTOR, image.shape[1] * FACTOR), order=1)
        imsave(out / "images" / f"{Path(path).stem}.png", np.rint(big * 255).astype(np.uint8))
    table = pd.DataFrame(
        {
            "file": [f"images/{Path(p).stem}.png" for p in items.table["file"]],
            "label": items.table["label"].to_numpy(),
            "pixel_size_um": 1 / FACTOR,
        }
    )
    table.to_csv(labels, index=False)
    return labels


def read_set(experiment: dict[str, Any], labels: Path, target: float | None) -> Items:
    """The upsampled files through the experiment's adapter, with or without the target."""
    params = {
        **experiment["adapter"]["params"],
        "paths": str(labels.parent / "images"),
        "labels": str(labels),
        "target_pixel_size_um": target,
    }
    return ADAPTERS.create({"name": "image_folder", "params": params}, where="neu_scale").read()


def scores(features: np.ndarray, labels: pd.Series, analysis: dict[str, Any]) -> dict[str, str]:
    split = {"test_fraction": analysis["probe_test_fraction"], "seeds": analysis["probe_seeds"]}
    probe = linear_probe(features, labels, **split)
    knn = knn_accuracy(features, labels, analysis["knn_k"], **split)
    return {
        "linear probe acc. %": percent(probe["accuracy"]),
        "val: probe acc. % / AUROC": validation_text(validation_probe(features, labels, **split)),
        "kNN acc. %": percent(knn["accuracy"]),
    }


@functools.cache
def baselines(files: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Raw pixels and LBP of the files as they are (both x2 settings read the same files)."""
    images = [grey_image(REPO / path) for path in files]
    return {
        "raw pixels 32x32": np.stack([raw_pixels(image) for image in images]),
        "multi-scale LBP": np.stack([lbp_histograms(image) for image in images]),
    }


def set_rows(
    name: str, items: Items, embeddings: dict[str, Any], experiment: dict, max_patches: int
) -> list[dict[str, str]]:
    """Baselines from the files, then each embedding of ``items``: an ``[N, D]`` array as
    given, or a model that embeds them here (at most ``max_patches`` patches per image)."""
    analysis = experiment["analysis"]
    labels = items.table[analysis["label_column"]].reset_index(drop=True)
    features = dict(baselines(tuple(items.table["file"])))
    seconds = {}
    builder = PAIR_BUILDERS.create(experiment["pairs"], where=experiment["name"])
    builder.max_patches = max_patches
    for label, source in embeddings.items():
        start = time.perf_counter()
        if isinstance(source, np.ndarray):
            features[label] = source
        else:
            features[label] = embed_items(source, builder, items, progress=False)
            seconds[label] = time.perf_counter() - start
    rows = []
    for method, values in features.items():
        row = {"setting": name, "method": method, **scores(values, labels, analysis)}
        row["embed s"] = f"{seconds[method]:.0f}" if method in seconds else ""
        rows.append(row)
        print(" | ".join(row.values()), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "benchmarks" / "neu_native.yaml")
    parser.add_argument("--experiment", default="neu_native_p64")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--data", type=Path, default=REPO / "results" / "neu_x2_data")
    parser.add_argument("--max-patches", type=int, default=16)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    config = read_config_file(args.config)
    experiment = {"name": args.experiment, **config["experiments"][args.experiment]}
    if not (REPO / experiment["adapter"]["params"]["labels"]).is_file():
        print("skipping the NEU scale benchmark: ../shared/data not found")
        return 0
    run = args.results / args.experiment
    if not (run / "model" / "model.pt").is_file():
        print(f"no model under {run}; run the workflow first (header of {args.config})")
        return 1
    trained, experiment = load_model(run / "model" / "model.pt", map_location="cpu")
    stored = experiment.to_dict()
    torch.manual_seed(experiment.training.seed)  # as models.train.train seeds it
    untrained = build_model(experiment)
    native = Items.load(run / "items")
    metadata, workflow_embeddings = load_embeddings(run / "embeddings")
    if not metadata["item_id"].equals(native.table["item_id"]):
        raise SystemExit(f"{run}: embeddings and items differ in order")
    labels = write_upsampled(native, args.data)
    given = read_set(stored, labels, 1.0)
    unknown = read_set(stored, labels, None)
    for items in (given, unknown):
        if not np.array_equal(items.table["label"], native.table["label"]):
            raise SystemExit(f"{args.data}: images not in the order of {run / 'items'}")
    untrained_name, trained_name = "untrained encoder (same config)", "trained encoder"
    sets = (
        ("native 200x200", native, {untrained_name: untrained, trained_name: workflow_embeddings}),
        ("x2, pixel size given", given, {untrained_name: untrained, trained_name: trained}),
        ("x2, pixel size unknown", unknown, {trained_name: trained}),
    )
    rows = []
    for name, items, embeddings in sets:
        rows += set_rows(name, items, embeddings, stored, args.max_patches)
    table = pd.DataFrame(rows)
    if args.markdown:
        print(table.to_markdown(index=False))
    else:
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
