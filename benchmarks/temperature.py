"""Temperature study: how the InfoNCE temperature moves the diagnostics and the probe.

Run the workflow on ``benchmarks/temperature.yaml`` first (see BENCHMARKS.md), then::

    python benchmarks/temperature.py                      # plain-text table
    python benchmarks/temperature.py --markdown           # the table in BENCHMARKS.md
    python benchmarks/temperature.py --figure docs/figures/temperature_study.png

For every experiment of the config it reads ``results/<experiment>/metrics/evaluation.json``
(linear probe and kNN on the frozen embedding) and
``results/<experiment>/diagnostics/diagnostics.json`` (diagnostics on the held-out groups),
and tabulates them against ``loss.temperature``. The figure has one panel per question:
does the probe improve, how much mutual information do held-out views share, are positives
resolved (gap over the margin ``tau ln K``), how aligned and uniform is the embedding, how
Gaussian are its projections, and does its norm track specificity.

Experiments whose results are missing are listed and skipped; with none at all (a fresh
clone has no ``../shared/data``) the script says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scicontrast.config import read_config_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "benchmarks" / "temperature.yaml"

COLUMNS = {
    "tau": "tau",
    "probe_balanced_accuracy": "probe bal. acc.",
    "probe_auroc": "probe AUROC",
    "knn_balanced_accuracy": "kNN bal. acc.",
    "mi_lower_bound": "MI bound (held-out)",
    "mi_ceiling": "log(K+1)",
    "gap_over_margin": "gap / margin",
    "alignment": "alignment (h)",
    "uniformity": "uniformity (h)",
    "invariance": "invariance (h)",
    "ks_trained": "KS to N(0,1)",
    "ks_untrained": "KS untrained",
    "ks_floor": "KS floor",
    "norm_kmer": "rho(norm, k-mer)",
    "norm_purity": "rho(norm, purity)",
}


def collect(config_path: Path, results: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per experiment with results (sorted by temperature), and the missing ones."""
    experiments = read_config_file(config_path)["experiments"]
    rows, missing = [], []
    for name, experiment in experiments.items():
        evaluation_path = results / name / "metrics" / "evaluation.json"
        diagnostics_path = results / name / "diagnostics" / "diagnostics.json"
        if not (evaluation_path.is_file() and diagnostics_path.is_file()):
            missing.append(name)
            continue
        evaluation = json.loads(evaluation_path.read_text())
        diagnostics = json.loads(diagnostics_path.read_text())
        rows.append(
            {"experiment": name, **row(experiment["loss"]["temperature"], evaluation, diagnostics)}
        )
    table = pd.DataFrame(rows)
    return (table.sort_values("tau").reset_index(drop=True) if rows else table), missing


def row(tau: float, evaluation: dict[str, Any], diagnostics: dict[str, Any]) -> dict[str, Any]:
    trained, untrained = diagnostics["trained"], diagnostics["untrained"]
    specificity = {e["proxy"]: e["spearman"] for e in trained["norm_specificity"]}
    kmer = next((v for k, v in specificity.items() if k.endswith("-mer surprisal")), None)
    probe, knn = evaluation.get("probe", {}), evaluation.get("knn", {})
    return {
        "tau": tau,
        "probe_balanced_accuracy": probe.get("balanced_accuracy", {}).get("mean"),
        "probe_balanced_accuracy_std": probe.get("balanced_accuracy", {}).get("std"),
        "probe_auroc": probe.get("auroc", {}).get("mean"),
        "knn_balanced_accuracy": knn.get("balanced_accuracy", {}).get("mean"),
        "mi_lower_bound": trained["projection"]["mi_lower_bound"],
        "mi_ceiling": float(np.log1p(trained["projection"]["num_negatives"])),
        "gap_over_margin": trained["projection"]["gap_over_margin"],
        "alignment": trained["embedding"]["alignment"],
        "uniformity": trained["embedding"]["uniformity"],
        "invariance": trained["embedding"]["invariance"],
        "ks_trained": trained["gaussianity"]["mean_ks_distance"],
        "ks_untrained": untrained["gaussianity"]["mean_ks_distance"],
        "ks_floor": diagnostics["gaussian_reference"]["mean_ks_distance"],
        "norm_kmer": kmer,
        "norm_purity": specificity.get("knn_label_purity"),
    }


def format_table(table: pd.DataFrame, markdown: bool) -> str:
    header = list(COLUMNS.values())
    cells = [
        [f"{r['tau']:g}"] + [_cell(r[column]) for column in list(COLUMNS)[1:]]
        for _, r in table.iterrows()
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path, title: str) -> None:
    """Six panels of results against the temperature (log scale)."""
    tau = table["tau"].to_numpy()
    figure = Figure(figsize=(15, 8.5))
    grid = figure.subplots(2, 3)
    panels = [
        (
            "linear probe and kNN (held-out test split)",
            [
                ("probe balanced accuracy", "probe_balanced_accuracy"),
                ("probe AUROC", "probe_auroc"),
                ("kNN balanced accuracy", "knn_balanced_accuracy"),
            ],
            "score",
        ),
        (
            "mutual information between views (held-out)",
            [("MI bound log(K+1) - L", "mi_lower_bound"), ("ceiling log(K+1)", "mi_ceiling")],
            "nats",
        ),
        (
            "positives resolved? gap / (tau ln K)",
            [("gap / margin", "gap_over_margin")],
            "ratio (>= 1: resolved)",
        ),
        (
            "embedding geometry (held-out, h)",
            [
                ("alignment", "alignment"),
                ("uniformity", "uniformity"),
                ("invariance", "invariance"),
            ],
            "value",
        ),
        (
            "Gaussianity: KS distance of projections to N(0,1)",
            [
                ("trained", "ks_trained"),
                ("untrained", "ks_untrained"),
                ("Gaussian floor", "ks_floor"),
            ],
            "mean KS distance (lower = more Gaussian)",
        ),
        (
            "norm as specificity (Spearman rho)",
            [("k-mer surprisal", "norm_kmer"), ("kNN label purity", "norm_purity")],
            "Spearman rho",
        ),
    ]
    for axes, (panel_title, lines, ylabel) in zip(grid.flat, panels, strict=True):
        for label, column in lines:
            values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
            if np.isfinite(values).any():
                axes.plot(tau, values, "-o", label=label)
        if panel_title.startswith("positives"):
            axes.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="margin")
        axes.set_xscale("log")
        axes.set_xticks(tau, [f"{t:g}" for t in tau])
        axes.minorticks_off()
        axes.set(title=panel_title, xlabel="temperature tau", ylabel=ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--figure", type=Path, help="write the figure (PNG) here")
    args = parser.parse_args(argv)
    table, missing = collect(args.config, args.results)
    if missing:
        print(f"no results yet for: {', '.join(missing)}", file=sys.stderr)
    if table.empty:
        print("nothing to report: run the workflow on the config first (BENCHMARKS.md)")
        return 0
    print(format_table(table, args.markdown))
    if args.figure is not None:
        plot(table, args.figure, "E. coli promoters: effect of the InfoNCE temperature")
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
