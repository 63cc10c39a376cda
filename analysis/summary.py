"""The evaluation summary: ``summary.txt``'s plain-text tables from ``evaluation.json``."""

from __future__ import annotations

from typing import Any

from scicontrast.analysis.baselines import (
    format_comparison,
)


def _number(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def _mean_std(summary: dict[str, float | None]) -> str:
    if summary["mean"] is None:
        return "-"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_report(evaluation: dict[str, Any], clusters: dict[str, Any] | None = None) -> str:
    """A plain-text summary of ``evaluate``'s result and, optionally, ``cluster``'s metrics."""
    lines = [f"Embeddings: {evaluation['n_items']} items, {evaluation['embedding_dim']} dimensions"]
    invariance = evaluation.get("invariance")
    if invariance is not None:
        lines += ["", "Invariance (1 = views embed alike, 0 = no closer than random items)"]
        symmetry = evaluation.get("invariance_symmetry")
        scores = [invariance] if symmetry is None else [invariance, symmetry]
        rows = [
            ["score", *(_number(score["score"]) for score in scores)],
            ["cos positive", *(_number(score["cos_positive"]) for score in scores)],
            ["cos random", *(_number(score["cos_random"]) for score in scores)],
            ["groups", *(f"{score['groups']} of {score['groups_total']}" for score in scores)],
        ]
        if symmetry is not None:
            rows.insert(0, ["", "training views", f"{symmetry['symmetry']} alone"])
        lines += _table(rows)
    probe, knn = evaluation.get("probe"), evaluation.get("knn")
    if probe is not None and knn is not None:
        auroc_name = "AUROC" if probe["auroc_kind"] == "binary" else "AUROC (macro OvR)"
        lines += [
            "",
            f"Label {evaluation['label_column']!r}: {probe['n_classes']} classes, "
            f"{probe['n_items']} items, {len(probe['per_seed'])} splits, "
            f"{_number(probe['test_fraction'], percent=True)} test"
            + (
                f", splits grouped by {evaluation['probe_group_column']!r}"
                if "probe_group_column" in evaluation
                else ""
            )
            + ", mean ± std",
        ]
        lines += _table(
            [
                ["", "accuracy", "balanced accuracy", auroc_name],
                [
                    "linear probe"
                    + (" (classes weighed alike)" if probe.get("class_weight") else ""),
                    _mean_std(probe["accuracy"]),
                    _mean_std(probe["balanced_accuracy"]),
                    _mean_std(probe["auroc"]),
                ],
                [
                    f"kNN (k={knn['k']}, cosine)",
                    _mean_std(knn["accuracy"]),
                    _mean_std(knn["balanced_accuracy"]),
                    "",
                ],
                [
                    "chance",
                    _number(probe["majority_class_fraction"]),
                    _number(1 / probe["n_classes"]),
                    _number(0.5),
                ],
            ]
        )
        chosen = ", ".join(f"{run['C']:g}" for run in probe["per_seed"])
        lines.append(f"  probe C per split (chosen without the test items): {chosen}")
    if evaluation.get("comparison") is not None:
        lines += format_comparison(evaluation["comparison"])
    public = evaluation.get("public_split")
    if public is not None:
        lines += [
            "",
            f"Public split ({public['n_train']} train / {public['n_val']} val / "
            f"{public['n_test']} test; C = {public['C']:g} chosen on val)",
        ]
        lines += _table(
            [
                ["accuracy", _number(public["accuracy"])],
                ["balanced accuracy", _number(public["balanced_accuracy"])],
            ]
        )
    if evaluation.get("retrieval") is not None:
        from scicontrast.analysis.retrieval import format_audio_image

        lines += format_audio_image(evaluation)
    training = evaluation.get("training")
    if training is not None:
        peak = training["peak_memory_mb"]
        lines += ["", f"Training ({training['epochs']} epochs)"]
        lines += _table(
            [
                ["seconds per epoch", f"{training['seconds_per_epoch']:.3f}"],
                ["peak memory", "-" if peak is None else f"{peak:.0f} MiB"],
            ]
        )
    if clusters is not None:
        lines += ["", f"Clusters ({clusters['n_items']} items)"]
        rows = [["method", "clusters", "silhouette", "ARI", "NMI", "noise"]]
        for method in clusters.get("methods", ["kmeans", "hdbscan"]):
            found = clusters[method]
            rows.append(
                [
                    method,
                    str(found["n_clusters"]),
                    _number(found["silhouette"]),
                    _number(found.get("ari")),
                    _number(found.get("nmi")),
                    _number(found["noise_fraction"], percent=True)
                    if "noise_fraction" in found
                    else "-",
                ]
            )
        lines += _table(rows)
    return "\n".join(lines) + "\n"
