"""The embedding beside what it has to beat: the domain's classical features and its own
encoder untrained.

An embedding is worth its GPU hours only if it beats what a scientist computes in ten lines
(tetranucleotide frequencies, LBP, SGC features; ``scicontrast.data_adapters.classical``) and
what the same encoder gives before any training. ``evaluate`` scores every *row* (the trained
embedding, the untrained encoder, each classical feature set the pair builder declares in
``classical_features``) with one scoring function, so all rows share the probe, its splits,
the kNN and the k-means. Each row maps metric names to ``{"mean", "std", "per_split"}``
(``per_split`` the values on the shared splits, or ``None`` for a single fit such as k-means).

**Verdict.** For every metric, the trained embedding against the best classical row on that
metric (the highest mean) and against the untrained encoder::

    difference = mean_s (trained_s - other_s)        over the shared splits s
    spread     = std_s  (trained_s - other_s)

It *beats* the other row when ``difference > 0`` (equal scores *tie*); when
``|difference| <= spread`` the line adds that the difference is within the split-to-split
spread. Differences are in points (hundredths) of the metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from scicontrast.analysis.trained import TrainedModel
from scicontrast.data_adapters.base import Items, PairBuilder
from scicontrast.data_adapters.classical import ClassicalFeatures
from scicontrast.experiment import Experiment

Metric = dict[str, Any]
Scores = dict[str, Metric]
TRAINED, UNTRAINED, CLASSICAL = "trained", "untrained", "classical"
TIE = 1e-9  # differences this small are float noise on equal scores


def metric_summary(values: list[float | None] | float | None) -> Metric:
    """``{"mean", "std", "per_split"}`` of per-split values, or of one value (``std`` None)."""
    if not isinstance(values, list):
        return {"mean": values, "std": None, "per_split": None}
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "per_split": values}
    return {"mean": float(np.mean(present)), "std": float(np.std(present)), "per_split": values}


def untrained_embeddings(
    experiment: Experiment,
    builder: PairBuilder,
    items: Items,
    device: torch.device | str = "cpu",
    projected: bool = False,
) -> np.ndarray:
    """``[N, D]`` embeddings of ``items`` by the experiment's model exactly as training
    starts it (:func:`~scicontrast.analysis.diagnostics.untrained_model`); with
    ``projected``, their projections ``head(h)`` instead."""
    from scicontrast.analysis.diagnostics import untrained_model
    from scicontrast.analysis.embed import embed_items

    model = untrained_model(experiment, builder, items)
    embeddings = embed_items(model, builder, items, device=device, progress=False)
    if not projected:
        return embeddings
    with torch.no_grad():
        return model.head(torch.from_numpy(embeddings).to(device)).cpu().numpy()


def compare(
    trained: Scores,
    score: Callable[[np.ndarray], Scores],
    classical: list[ClassicalFeatures],
    untrained: np.ndarray | None,
) -> dict[str, Any]:
    """Score the untrained embeddings and the classical features with ``score`` and set them
    beside the trained embedding's ``trained`` scores; add the verdicts."""
    rows = [{"name": "trained embedding", "kind": TRAINED, "scores": trained}]
    if untrained is not None:
        rows.append({"name": "untrained encoder", "kind": UNTRAINED, "scores": score(untrained)})
    skipped = []
    for features in classical:
        if features.features is None:
            skipped.append({"name": features.name, "reason": features.skipped})
            continue
        rows.append({"name": features.name, "kind": CLASSICAL, "scores": score(features.features)})
    return {"rows": rows, "skipped": skipped, "verdicts": verdicts(rows)}


def compare_with_controls(
    trained_scores: Scores,
    trained: TrainedModel,
    items: Items,
    score: Callable[[np.ndarray], Scores],
    untrained_control: bool,
) -> dict[str, Any]:
    """:func:`compare` against the pair builder's classical features of ``items`` and, with
    ``untrained_control``, the trained model's encoder at its initial weights."""
    untrained = (
        untrained_embeddings(trained.experiment, trained.builder, items, trained.device)
        if untrained_control
        else None
    )
    return compare(trained_scores, score, trained.builder.classical_features(items), untrained)


def _difference(trained: Metric, other: Metric) -> tuple[float, float | None]:
    ours, theirs = trained["per_split"], other["per_split"]
    if ours is not None and theirs is not None and None not in ours and None not in theirs:
        differences = np.asarray(ours, dtype=float) - np.asarray(theirs, dtype=float)
        return float(differences.mean()), float(differences.std())
    return trained["mean"] - other["mean"], None


def _against(trained: Metric, other: dict[str, Any], metric_name: str) -> dict[str, Any]:
    difference, spread = _difference(trained, other["scores"][metric_name])
    return {
        "name": other["name"],
        "value": other["scores"][metric_name]["mean"],
        "difference": difference,
        "spread": spread,
        "beats": difference >= TIE,
    }


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric of the trained row: how it stands against the best classical row and the
    untrained encoder (module docstring). Metrics without a value are left out."""
    trained = next(row for row in rows if row["kind"] == TRAINED)
    untrained = next((row for row in rows if row["kind"] == UNTRAINED), None)
    found = []
    for name, value in trained["scores"].items():
        if value["mean"] is None:
            continue
        classical = [
            row
            for row in rows
            if row["kind"] == CLASSICAL and row["scores"].get(name, {}).get("mean") is not None
        ]
        verdict: dict[str, Any] = {"metric": name, "value": value["mean"]}
        if classical:
            best = max(classical, key=lambda row: row["scores"][name]["mean"])
            verdict["classical"] = _against(value, best, name)
        if untrained is not None and untrained["scores"].get(name, {}).get("mean") is not None:
            verdict["untrained"] = _against(value, untrained, name)
        found.append(verdict)
    return found


def _points(value: float) -> str:
    return f"{100 * value:+.1f} points"


def _clause(against: dict[str, Any], what: str) -> str:
    spread = against["spread"]
    within = (
        f", within the split-to-split spread of ±{100 * spread:.1f}"
        if spread is not None and abs(against["difference"]) <= spread
        else ""
    )
    value = f"{against['value']:.3f}"
    if abs(against["difference"]) < TIE:
        return f"ties with {what} ({value})"
    if against["beats"]:
        return f"beats {what} by {_points(against['difference'])} ({value}{within})"
    return f"does NOT beat {what}: {_points(against['difference'])} ({value}{within})"


def verdict_lines(comparison: dict[str, Any]) -> list[str]:
    """One plain sentence per metric: whether the trained embedding beats the best classical
    features and its untrained encoder, by how many points."""
    lines = []
    for verdict in comparison["verdicts"]:
        clauses = []
        if "classical" in verdict:
            best = verdict["classical"]
            clauses.append(_clause(best, f"the best classical features, {best['name']}"))
        if "untrained" in verdict:
            clauses.append(_clause(verdict["untrained"], "its untrained encoder"))
        if clauses:
            lines.append(f"  {verdict['metric']} {verdict['value']:.3f}: " + "; ".join(clauses))
    return lines


def _cell(value: Metric) -> str:
    if value["mean"] is None:
        return "-"
    if value["std"] is None:
        return f"{value['mean']:.3f}"
    return f"{value['mean']:.3f} ± {value['std']:.3f}"


def format_comparison(comparison: dict[str, Any]) -> list[str]:
    """Report lines: the table of rows by metric and the skipped features."""
    rows = comparison["rows"]
    metrics = list(rows[0]["scores"])
    table = [["", *metrics]]
    table += [[row["name"], *(_cell(row["scores"][m]) for m in metrics)] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [
        "",
        "Against the classical baseline and the untrained encoder (same splits, probe, kNN "
        "and k-means)",
    ]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    lines += [f"  skipped {s['name']}: {s['reason']}" for s in comparison["skipped"]]
    return lines


def format_verdict(comparison: dict[str, Any]) -> list[str]:
    """The closing section of a summary: a heading and :func:`verdict_lines`."""
    return [
        "",
        "Verdict: is the trained embedding worth computing? (points = hundredths of the metric)",
        *verdict_lines(comparison),
    ]
