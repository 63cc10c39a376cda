"""NEU steel surface defects: frozen contrastive embeddings against texture baselines.

Run the workflow on ``benchmarks/neu.yaml`` first (see BENCHMARKS.md), then::

    python benchmarks/neu.py              # plain-text table
    python benchmarks/neu.py --markdown   # the table in BENCHMARKS.md

For every experiment of the config this reads ``results/<experiment>/items`` (the items the
workflow prepared), ``results/<experiment>/embeddings`` (the frozen encoder's embedding of
every image's canonical view) and ``results/<experiment>/metrics/evaluation.json`` (for the
invariance scores of :func:`scicontrast.analysis.invariance.invariance_score`: the
rotation-invariance score over views that differ by their rotation alone, and the score over
the training views, which add intensity jitter). On the same images, in the same row order, it
computes two baselines from the original files at full resolution (200 x 200 for NEU):

* raw pixels: the grey image resized to 32 x 32 (``skimage.transform.resize`` with
  anti-aliasing), 1,024 values;
* multi-scale rotation-invariant uniform local binary patterns (Ojala, Pietikainen and
  Maenpaa, IEEE TPAMI 24:971, 2002): ``skimage.feature.local_binary_pattern`` with
  ``method="uniform"`` at ``(P, R) = (8, 1), (16, 2), (24, 3)``; the normalised histograms
  of the ``P + 2`` codes of each scale are concatenated (10 + 18 + 26 = 54 features).

Every row, embeddings and baselines alike, is scored with the workflow's own
:func:`~scicontrast.analysis.probes.linear_probe` (``StandardScaler`` +
``LogisticRegression``, its ``C`` chosen inside each training part) and
:func:`~scicontrast.analysis.probes.knn_accuracy` (cosine,
``knn_k`` neighbours) on the splits of :func:`~scicontrast.analysis.probes.stratified_splits`
with the experiment's ``probe_test_fraction`` and ``probe_seeds``, so every row is tested on
the same images. Metrics are mean ± population std over the seeds. Pre-training saw every
image without its label (the usual self-supervised protocol); the probe saw only the
training part of each split.

Settings are chosen by the "val" column alone
(:func:`~scicontrast.analysis.probes.validation_probe`): the probe refit inside each seed's
training part and scored on a stratified part of it, so the test images choose nothing. The
last line names the contrastive experiment with the best validation accuracy (an exact tie
goes to the higher validation AUROC, the column's second figure) and whether it meets the
targets of issue 3: linear-probe accuracy >= 98.5 % and rotation-invariance score >= 0.99
(the score needs no labels).

When the data folder is absent (a fresh clone has no ``../shared/data``) the script says so
and exits with status 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skimage.color import rgb2gray
from skimage.io import imread

from scicontrast.analysis.embed import load_embeddings
from scicontrast.analysis.probes import knn_accuracy, linear_probe, validation_probe
from scicontrast.config import read_config_file
from scicontrast.data_adapters import classical
from scicontrast.data_adapters.base import Items

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "benchmarks" / "neu.yaml"
TARGET_PROBE = 0.985
TARGET_INVARIANCE = 0.99


def grey_image(path: str | Path) -> np.ndarray:
    """The file as ``float64 [H, W]`` in ``[0, 1]`` (RGB averaged to luminance)."""
    image = imread(path)
    if image.ndim == 3:
        image = rgb2gray(image[..., :3])
    elif image.dtype == np.uint8:
        image = image / 255.0
    return np.asarray(image, dtype=np.float64)


def raw_pixels(image: np.ndarray) -> np.ndarray:
    """The grey image resized to 32 x 32 with anti-aliasing, flattened (the workflow's
    :func:`scicontrast.data_adapters.classical.raw_pixels`)."""
    return classical.raw_pixels([image[None]]).features[0]


def lbp_histograms(image: np.ndarray) -> np.ndarray:
    """Multi-scale rotation-invariant uniform LBP histograms of the grey image (the
    workflow's :func:`scicontrast.data_adapters.classical.lbp_histograms`)."""
    return classical.lbp_histograms([image[None]]).features[0]


@dataclass
class Row:
    """One line of the table."""

    method: str
    probe: dict[str, Any]
    validation: dict[str, float | None]
    knn: dict[str, Any]
    invariance: dict[str, Any] | None = None
    training_view_invariance: dict[str, Any] | None = None
    train_seconds: float | None = None
    workflow_seconds: float | None = None


def rule_seconds(results: Path, name: str) -> tuple[float | None, float | None]:
    """Wall seconds of the ``train`` rule and of all rules of one experiment (Snakemake's
    benchmark tables), or ``None`` where they are missing."""
    tables = sorted((results / name / "benchmarks").glob("*.tsv"))
    if not tables:
        return None, None
    seconds = {path.stem: float(pd.read_csv(path, sep="\t")["s"].iloc[0]) for path in tables}
    return seconds.get("train"), sum(seconds.values())


def describe(experiment: dict[str, Any]) -> str:
    mode = experiment["encoder"]["params"].get("rotation_invariant", "c4")
    encoder = "plain CNN" if mode == "none" else f"{mode.upper()}-pooled CNN"
    return f"contrastive, {encoder} ({experiment['name']})"


def benchmark_rows(experiments: list[dict[str, Any]], results: Path) -> tuple[Items, list[Row]]:
    """The baselines and one row per experiment, all on the first experiment's splits."""
    first = experiments[0]
    analysis = first["analysis"]
    label_column = analysis["label_column"]
    split = {"test_fraction": analysis["probe_test_fraction"], "seeds": analysis["probe_seeds"]}
    items = Items.load(results / first["name"] / "items")
    labels = items.table[label_column]
    if labels.isna().any():
        raise SystemExit(f"{results / first['name'] / 'items'}: {label_column!r} has gaps")

    rows = []
    for experiment in experiments:
        name = experiment["name"]
        if experiment["analysis"] != analysis:
            raise SystemExit(f"{name}: analysis settings differ from {first['name']}'s")
        metadata, embeddings = load_embeddings(results / name / "embeddings")
        if not metadata["item_id"].equals(items.table["item_id"]):
            raise SystemExit(f"{name}: items differ from {first['name']}'s, splits would differ")
        evaluation = json.loads((results / name / "metrics" / "evaluation.json").read_text())
        rows.append(
            Row(
                describe(experiment),
                linear_probe(embeddings, labels, **split),
                validation_probe(embeddings, labels, **split),
                knn_accuracy(embeddings, labels, analysis["knn_k"], **split),
                # Views without intensity jitter carry the rotation alone; the workflow
                # scores them separately whenever the training views add jitter.
                evaluation.get("invariance_symmetry", evaluation["invariance"]),
                evaluation["invariance"],
                *rule_seconds(results, name),
            )
        )

    # The adapter stores file paths as configured: relative to the repository root.
    images = [grey_image(REPO / path) for path in items.table["file"]]
    baselines = {
        f"raw pixels {classical.RAW_PIXELS_SIZE}x{classical.RAW_PIXELS_SIZE}": np.stack(
            [raw_pixels(image) for image in images]
        ),
        "multi-scale rotation-invariant uniform LBP": np.stack(
            [lbp_histograms(image) for image in images]
        ),
    }
    baseline_rows = [
        Row(
            f"{method} + logistic regression",
            linear_probe(features, labels, **split),
            validation_probe(features, labels, **split),
            knn_accuracy(features, labels, analysis["knn_k"], **split),
        )
        for method, features in baselines.items()
    ]
    return items, baseline_rows + rows


def percent(summary: dict[str, float | None]) -> str:
    return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}"


def invariance_text(invariance: dict[str, Any] | None) -> str:
    if invariance is None:
        return ""
    score = "-" if invariance["score"] is None else f"{invariance['score']:.4f}"
    return (
        f"{score} (cos+ {invariance['cos_positive']:.3f}, cos rand {invariance['cos_random']:.3f})"
    )


def verdict(row: Row) -> str:
    if row.invariance is None:
        return ""
    probe = row.probe["accuracy"]["mean"]
    score = row.invariance["score"]
    probe_ok = probe >= TARGET_PROBE
    invariance_ok = score is not None and score >= TARGET_INVARIANCE
    return (
        f"probe {'yes' if probe_ok else 'no'} ({100 * (probe - TARGET_PROBE):+.2f} pt), "
        f"invariance {'yes' if invariance_ok else 'no'}"
    )


def validation_text(validation: dict[str, float | None]) -> str:
    return f"{100 * validation['accuracy']:.2f} / {validation['auroc']:.5f}"


def seconds_text(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.0f}"


def render(items: Items, rows: list[Row], label_column: str, markdown: bool) -> str:
    header = [
        "method",
        "linear probe acc. %",
        "val: probe acc. % / AUROC",
        "kNN acc. %",
        "rotation invariance",
        "invariance, training views",
        "targets met",
        "train s",
        "workflow s",
    ]
    table = [
        [
            row.method,
            percent(row.probe["accuracy"]),
            validation_text(row.validation),
            f"{percent(row.knn['accuracy'])} (k={row.knn['k']})",
            invariance_text(row.invariance),
            invariance_text(row.training_view_invariance),
            verdict(row),
            seconds_text(row.train_seconds),
            seconds_text(row.workflow_seconds),
        ]
        for row in rows
    ]
    counts = items.table[label_column].value_counts().sort_index()
    first = rows[0].probe
    heading = (
        f"NEU: {len(items)} images, {len(counts)} classes ("
        + ", ".join(f"{label} {n}" for label, n in counts.items())
        + f"); {len(first['per_seed'])} stratified splits, "
        f"{100 * first['test_fraction']:.0f} % test"
    )
    target = (
        f"targets: linear probe >= {100 * TARGET_PROBE:.1f} %, "
        f"rotation-invariance score >= {TARGET_INVARIANCE}"
    )
    if markdown:
        out = [f"**{heading}**; {target}.", ""]
        out.append("| " + " | ".join(header) + " |")
        out.append("| " + " | ".join("---" for _ in header) + " |")
        out += ["| " + " | ".join(cells) + " |" for cells in table]
    else:
        widths = [max(len(str(c)) for c in column) for column in zip(header, *table, strict=True)]
        out = [heading, target]
        for cells in [header, *table]:
            out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    out += ["", chosen_text(rows)]
    return "\n".join(out) + "\n"


def chosen_text(rows: list[Row]) -> str:
    """The contrastive row with the best validation accuracy, and its verdict.

    Accuracy counts whole images, so two settings can tie exactly; the validation AUROC,
    which ranks every image's class scores, breaks the tie.
    """
    chosen = max(
        (row for row in rows if row.invariance is not None),
        key=lambda r: (r.validation["accuracy"], r.validation["auroc"]),
    )
    return (
        f"chosen on validation: {chosen.method}, val {validation_text(chosen.validation)}; "
        f"test probe {percent(chosen.probe['accuracy'])} %, targets: {verdict(chosen)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--experiments", nargs="+", help="only these experiments of the config (default: all)"
    )
    args = parser.parse_args(argv)

    config = read_config_file(args.config)
    experiments = [
        {"name": name, **e}
        for name, e in config["experiments"].items()
        if args.experiments is None or name in args.experiments
    ]
    if not experiments:
        print(f"{args.config}: none of the experiments {args.experiments}", file=sys.stderr)
        return 1
    data = Path(experiments[0]["adapter"]["params"]["labels"])
    if not (REPO / data).is_file():
        print(f"skipping the NEU benchmark: {data} not found (no ../shared/data)")
        return 0
    unfinished = [
        e["name"]
        for e in experiments
        if not (args.results / e["name"] / "metrics" / "evaluation.json").is_file()
    ]
    if unfinished:
        print(
            f"no evaluation for {', '.join(unfinished)} under {args.results}; run the workflow "
            "first (command in BENCHMARKS.md)",
            file=sys.stderr,
        )
        return 1
    items, rows = benchmark_rows(experiments, args.results)
    label_column = experiments[0]["analysis"]["label_column"]
    print(render(items, rows, label_column, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
