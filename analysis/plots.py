"""The pictures a scientist looks at first, as PNG files (matplotlib, Agg backend).

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``, so plotting needs
no display, changes no global backend and leaves no figure open.

Each ``plot_*`` function takes plain arrays or the JSON/JSONL the other steps write, saves
one figure and returns it; :func:`make_plots` writes them all into one folder
(``results/{experiment}/plots``), which the workflow's report shows
(``snakemake --report report.html``):

``map_<colouring>.png``
    t-SNE (van der Maaten & Hinton 2008; scikit-learn, Barnes-Hut, PCA initialisation) of the
    centred, L2-normalised embeddings (the space the clusterings use) of at most
    ``max_points`` items (a seeded subsample), coloured by the label column and by each
    clustering; ``map.parquet`` holds the coordinates with ``item_id``.
``training_curves.png``
    Per-epoch means over training batches from ``metrics.jsonl`` (loss, MI bound with its
    ceiling ``log(K + 1)``, positive and negative cosine, gap against the margin
    ``tau * ln K``, alignment, uniformity), beside the same numbers on the held-out groups
    after every epoch when training held groups out, with the diagnostics' values of the
    untrained model (at epoch 0) and the trained one (at the last epoch) as markers.
``diagnostics.png``, ``diagnostics.html``
    The diagnostics table (``scicontrast.analysis.diagnostics_report.diagnostics_table``).
``gaussianity.png``
    Histograms of random projections against ``N(0, 1)`` and the per-projection excess
    kurtosis of the untrained model, the trained one and true Gaussian samples.
``norm_specificity.png``
    Embedding norm against each specificity proxy, with the Spearman correlation.
``clusters.png``
    ARI, NMI and silhouette of each clustering method side by side.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from scicontrast.io import atomic_path

DPI = 120
MAX_LEGEND_ENTRIES = 20
NOISE_COLOUR = "#bbbbbb"


def tsne_map(
    embeddings: np.ndarray, max_points: int = 3000, seed: int = 0, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [n], coordinates [n, 2])``: t-SNE of a seeded subsample of the embeddings.

    ``threads`` caps OpenMP threads: on a busy machine more threads than cores spin and
    make t-SNE several times slower.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    rows = np.arange(len(embeddings))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_points, replace=False))
    points = embeddings[rows].astype(np.float64)
    points = points - points.mean(axis=0, keepdims=True)
    points /= np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    perplexity = float(min(30.0, max(2.0, (len(rows) - 1) / 3)))
    with threadpool_limits(limits=threads):
        coordinates = TSNE(
            2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed
        ).fit_transform(points)
    return rows, coordinates


def plot_map(
    coordinates: np.ndarray, values: pd.Series | np.ndarray, title: str, legend_title: str, path
) -> Figure:
    """Scatter ``[n, 2]`` coordinates coloured by categorical ``values`` (missing = grey)."""
    values = pd.Series(np.asarray(values, dtype=object))
    missing = values.isna().to_numpy() | (values.astype(str) == "-1").to_numpy()
    categories = sorted(values[~missing].unique(), key=_natural_key)
    colours = matplotlib.colormaps["tab10" if len(categories) <= 10 else "tab20"]
    figure, axes = _subplots(figsize=(7.5, 6.5))
    if missing.any():
        axes.scatter(*coordinates[missing].T, s=6, c=NOISE_COLOUR, label="none / noise")
    for index, category in enumerate(categories):
        chosen = (values == category).to_numpy() & ~missing
        colour = colours(index % colours.N)
        label = str(category) if index < MAX_LEGEND_ENTRIES else None
        axes.scatter(*coordinates[chosen].T, s=6, color=colour, label=label)
    axes.set(title=title, xlabel="t-SNE 1", ylabel="t-SNE 2")
    axes.set_xticks([])
    axes.set_yticks([])
    more = len(categories) - MAX_LEGEND_ENTRIES
    legend = axes.legend(
        title=legend_title + (f" ({more} more not listed)" if more > 0 else ""),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        markerscale=3,
        frameon=False,
    )
    _save(figure, path, extra_artists=[legend])
    return figure


HELD_OUT_PREFIX = "heldout_"
HELD_OUT_LABEL = "held-out groups"


def read_epochs(metrics_path: str | Path) -> pd.DataFrame:
    """The per-epoch records of ``metrics.jsonl`` as a table (one row per epoch).

    Held-out records (projection space) join as ``heldout_<metric>`` columns. Of an
    ensemble's records (tagged ``"member"``), those of the first member.
    """
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    records = [r for r in records if r.get("member", 0) == 0]
    epochs = pd.DataFrame([r for r in records if r.get("kind") == "epoch"])
    held_out = [
        {"epoch": r["epoch"], **{HELD_OUT_PREFIX + k: v for k, v in r["projection"].items()}}
        for r in records
        if r.get("kind") == "heldout"
    ]
    if held_out and len(epochs):
        epochs = epochs.merge(pd.DataFrame(held_out), on="epoch", how="left")
    return epochs


def plot_training_curves(
    epochs: pd.DataFrame, diagnostics: dict[str, Any] | None, title: str, path
) -> Figure:
    """Six panels of per-epoch training metrics, held-out diagnostics as markers."""
    x = epochs["epoch"].to_numpy() + 1  # epochs completed
    last = int(x.max()) if len(x) else 1
    held = {}
    if diagnostics is not None:
        held = {name: diagnostics[name]["projection"] for name in ("untrained", "trained")}
        subset = "held-out" if diagnostics["subset"]["held_out_from_training"] else "sampled"
    ceiling = np.log1p(epochs["num_negatives"]) if "num_negatives" in epochs else None
    margin = epochs["temperature"] * np.log(epochs["num_negatives"])

    # The loss grows with the number of negatives K, and held-out batches may have fewer.
    held_out_negatives = epochs.get(HELD_OUT_PREFIX + "num_negatives")
    held_out_label = HELD_OUT_LABEL
    if held_out_negatives is not None:
        held_out_label += f" (K = {held_out_negatives.iloc[-1]:.0f})"

    def held_out(key: str) -> tuple[str, pd.Series | None]:
        return held_out_label, epochs.get(HELD_OUT_PREFIX + key)

    panels = [
        (
            "InfoNCE loss",
            [
                (f"training batches (K = {epochs['num_negatives'].iloc[-1]:.0f})", epochs["loss"]),
                held_out("loss"),
            ],
            "loss",
            "lower is better",
        ),
        (
            "MI lower bound log(K+1) - L",
            [
                ("training batches", epochs["mi_lower_bound"]),
                held_out("mi_lower_bound"),
                ("ceiling log(K+1)", ceiling),
            ],
            "mi_lower_bound",
            "nats",
        ),
        (
            "cosine similarity (projection z)",
            [("positive pairs", epochs["pos_sim"]), ("negative pairs", epochs["neg_sim"])],
            None,
            "cosine",
        ),
        (
            "similarity gap vs effective margin",
            [
                ("pos - neg", epochs["pos_sim"] - epochs["neg_sim"]),
                held_out("similarity_gap"),
                ("tau ln K", margin),
            ],
            "similarity_gap",
            "cosine",
        ),
        (
            "alignment (positives)",
            [("training batches", epochs["alignment"]), held_out("alignment")],
            "alignment",
            "",
        ),
        (
            "uniformity (all pairs)",
            [("training batches", epochs["uniformity"]), held_out("uniformity")],
            "uniformity",
            "",
        ),
    ]
    figure, grid = _subplots(2, 3, figsize=(15, 8.5))
    for axes, (panel_title, lines, held_key, unit) in zip(grid.flat, panels, strict=True):
        for index, (label, values) in enumerate(lines):
            if values is not None:
                style = "-o" if index == 0 else "-s" if label == held_out_label else "--"
                # Held-out passes may skip epochs (training.heldout_min_steps): join the ones run.
                kept = values.notna().to_numpy() if label == held_out_label else slice(None)
                axes.plot(x[kept], np.asarray(values)[kept], style, markersize=4, label=label)
        for name, position, marker in (("untrained", 0, "s"), ("trained", last, "*")):
            if held_key is not None and held.get(name, {}).get(held_key) is not None:
                axes.plot(
                    [position],
                    [held[name][held_key]],
                    marker,
                    markersize=11 if marker == "*" else 7,
                    color="black" if name == "trained" else "grey",
                    label=f"{subset}, {name}",
                    linestyle="none",
                )
        axes.set(title=panel_title, xlabel="epochs completed", ylabel=unit)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    _save(figure, path)
    return figure


def plot_diagnostics_table(table: pd.DataFrame, title: str, path) -> Figure:
    """The diagnostics table drawn as a figure."""
    cells = [
        [row.diagnostic, _cell(row.untrained), _cell(row.trained), _cell(row.gaussian), row.good]
        for row in table.itertuples(index=False)
    ]
    figure, axes = _subplots(figsize=(11, 0.3 * len(cells) + 0.8))
    axes.axis("off")
    drawn = axes.table(
        cellText=cells,
        colLabels=["diagnostic", "untrained", "trained", "Gaussian floor", "good value"],
        loc="upper center",
        cellLoc="left",
        colWidths=[0.33, 0.13, 0.13, 0.15, 0.26],
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(10)
    drawn.scale(1, 1.4)
    for (row, _), cell in drawn.get_celld().items():
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8e8e8")
    axes.set_title(title)
    _save(figure, path)
    return figure


def diagnostics_html(table: pd.DataFrame, title: str) -> str:
    """The diagnostics table as a standalone HTML page."""
    shown = table.assign(
        untrained=table["untrained"].map(_cell),
        trained=table["trained"].map(_cell),
        gaussian=table["gaussian"].map(_cell),
    ).rename(columns={"gaussian": "Gaussian floor", "good": "good value"})
    style = (
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#eee}"
    )
    body = shown.to_html(index=False, escape=True, border=0)
    title = html.escape(title)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h3>{title}</h3>{body}"
        "<p>See docs/diagnostics.md for what each number means.</p></body></html>\n"
    )


def plot_gaussianity(projections: dict[str, np.ndarray], title: str, path) -> Figure:
    """Two histograms of one random projection, and per-projection excess kurtosis."""
    grid = np.linspace(-4, 4, 200)
    figure, (untrained, trained, kurtosis) = _subplots(1, 3, figsize=(15, 4.5))
    for axes, name in ((untrained, "untrained"), (trained, "trained")):
        sample = projections[f"sample_{name}"]
        if sample.size:
            axes.hist(sample[:, 0], bins=40, density=True, alpha=0.6, label="projection 1")
        axes.plot(grid, stats.norm.pdf(grid), "k--", label="N(0, 1)")
        axes.set(
            title=f"{name}: a random 1-D projection",
            xlabel="standardised projection",
            ylabel="density",
        )
        axes.legend()
    names = ("gaussian", "untrained", "trained")
    pooled = np.concatenate([projections[f"kurtosis_{name}"] for name in names])
    low, high = np.quantile(pooled, [0.005, 0.995]) if pooled.size else (-1.0, 1.0)
    pad = 0.1 * max(high - low, 0.1)
    bins = np.linspace(low - pad, high + pad, 50)
    for name, colour in zip(names, ("grey", "tab:orange", "tab:blue"), strict=True):
        values = np.clip(projections[f"kurtosis_{name}"], bins[0], bins[-1])
        label = "Gaussian samples" if name == "gaussian" else name
        kurtosis.hist(values, bins=bins, histtype="step", linewidth=2, color=colour, label=label)
    kurtosis.set(
        title="excess kurtosis of every projection",
        xlabel="excess kurtosis (0 for a Gaussian)",
        ylabel="projections",
    )
    kurtosis.legend()
    figure.suptitle(title)
    _save(figure, path)
    return figure


def plot_norm_specificity(
    per_item: pd.DataFrame, diagnostics: dict[str, Any], title: str, path
) -> Figure | None:
    """Embedding norm (trained) against each specificity proxy; ``None`` if there is none."""
    entries = diagnostics["trained"]["norm_specificity"]
    if not entries:
        return None
    figure, grid = _subplots(1, len(entries), figsize=(6.5 * len(entries), 5), squeeze=False)
    for axes, entry in zip(grid.flat, entries, strict=True):
        column = entry["proxy"]
        if column not in per_item.columns:
            column = f"{entry['proxy']} (trained)"
        axes.scatter(per_item[column], per_item["norm_trained"], s=5, alpha=0.5)
        rho = "-" if entry["spearman"] is None else f"{entry['spearman']:.3f}"
        axes.set(
            title=f"Spearman rho = {rho} (n = {entry['n']})",
            xlabel=f"{entry['proxy']} (higher = more specific)",
            ylabel="embedding norm ||h||",
        )
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    _save(figure, path)
    return figure


def plot_cluster_comparison(metrics: dict[str, Any], title: str, path) -> Figure:
    """Grouped bars: ARI, NMI (when labels exist) and silhouette per clustering method."""
    methods = metrics["methods"]
    scores = [s for s in ("ari", "nmi", "silhouette") if metrics[methods[0]].get(s) is not None]
    width = 0.8 / max(len(scores), 1)
    figure, axes = _subplots(figsize=(2.2 * len(methods) + 3, 4.5))
    positions = np.arange(len(methods))
    for index, score in enumerate(scores):
        values = [metrics[m].get(score) for m in methods]
        heights = [np.nan if v is None else v for v in values]
        bars = axes.bar(positions + (index - (len(scores) - 1) / 2) * width, heights, width)
        bars.set_label(score.upper() if score != "silhouette" else "silhouette (cosine)")
        axes.bar_label(bars, labels=[_cell(v) for v in values], fontsize=8, padding=2)
    axes.set_xticks(positions, [f"{m}\n({metrics[m]['n_clusters']} clusters)" for m in methods])
    axes.set(title=title, ylabel="score", ylim=(min(0.0, axes.get_ylim()[0]), 1.1))
    axes.axhline(0, color="black", linewidth=0.8)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _save(figure, path)
    return figure


def make_plots(
    embeddings_dir: str | Path,
    clusters_dir: str | Path,
    metrics_path: str | Path,
    diagnostics_dir: str | Path,
    out_dir: str | Path,
    experiment_name: str,
    label_column: str | None = None,
    max_points: int = 3000,
    seed: int = 0,
    threads: int = 1,
) -> list[str]:
    """Write every figure of the module docstring into ``out_dir`` (atomically)."""
    from scicontrast.analysis.diagnostics_report import diagnostics_table
    from scicontrast.analysis.embed import load_embeddings

    metadata, embeddings = load_embeddings(embeddings_dir)
    assignments = pd.read_parquet(Path(clusters_dir) / "assignments.parquet")
    cluster_metrics = json.loads((Path(clusters_dir) / "metrics.json").read_text())
    diagnostics = json.loads((Path(diagnostics_dir) / "diagnostics.json").read_text())
    per_item = pd.read_parquet(Path(diagnostics_dir) / "per_item.parquet")
    projections = dict(np.load(Path(diagnostics_dir) / "projections.npz"))
    table = diagnostics_table(diagnostics)

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        rows, coordinates = tsne_map(embeddings, max_points, seed, threads)
        pd.DataFrame(
            {
                "item_id": metadata["item_id"].to_numpy()[rows],
                "tsne_1": coordinates[:, 0],
                "tsne_2": coordinates[:, 1],
            }
        ).to_parquet(tmp / "map.parquet", index=False)
        shown = f"{len(rows)} of {len(embeddings)} items" if len(rows) < len(embeddings) else ""
        colourings = []
        if label_column is not None:
            colourings.append(("label", metadata[label_column], f"label '{label_column}'"))
        colourings += [(m, assignments[m], m) for m in cluster_metrics["methods"]]
        for name, values, what in colourings:
            plot_map(
                coordinates,
                np.asarray(values)[rows],
                f"{experiment_name}: t-SNE of the embeddings, coloured by {what}"
                + (f"\n({shown})" if shown else ""),
                what,
                tmp / f"map_{name}.png",
            )
        plot_training_curves(
            read_epochs(metrics_path),
            diagnostics,
            f"{experiment_name}: training (per-epoch means) and diagnostics",
            tmp / "training_curves.png",
        )
        diagnostics_title = f"{experiment_name}: diagnostics"
        plot_diagnostics_table(table, diagnostics_title, tmp / "diagnostics.png")
        (tmp / "diagnostics.html").write_text(diagnostics_html(table, diagnostics_title))
        plot_gaussianity(
            projections,
            f"{experiment_name}: Gaussianity of random projections of the embedding",
            tmp / "gaussianity.png",
        )
        plot_norm_specificity(
            per_item,
            diagnostics,
            f"{experiment_name}: embedding norm against specificity",
            tmp / "norm_specificity.png",
        )
        plot_cluster_comparison(
            cluster_metrics,
            f"{experiment_name}: clustering methods compared",
            tmp / "clusters.png",
        )
        written = sorted(p.name for p in tmp.iterdir())
    return written


def _natural_key(value: Any) -> tuple:
    text = str(value)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def _subplots(*args, **kwargs):
    figure = Figure(figsize=kwargs.pop("figsize", None))
    return figure, figure.subplots(*args, **kwargs)


def _save(figure: Figure, path, extra_artists=None) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, bbox_inches="tight", bbox_extra_artists=extra_artists)
