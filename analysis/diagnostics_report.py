"""The diagnostics as a person reads them: one table of every number, trained against
untrained against the Gaussian floor, and its plain-text form for the summary.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

#: ``(label, path into a model's result, what is good)`` rows of the diagnostics table.
TABLE_ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("loss (z)", ("projection", "loss"), "lower"),
    ("MI bound log(K+1)-L (z)", ("projection", "mi_lower_bound"), "higher, <= log(K+1)"),
    ("negatives K", ("projection", "num_negatives"), ""),
    ("pos - neg cosine (z)", ("projection", "similarity_gap"), ">= margin"),
    ("margin tau*ln K", ("projection", "effective_margin"), ""),
    ("gap / margin (z)", ("projection", "gap_over_margin"), ">= 1"),
    ("alignment (h)", ("embedding", "alignment"), "lower, near 0"),
    ("uniformity (h)", ("embedding", "uniformity"), "lower (more negative)"),
    ("invariance (h)", ("embedding", "invariance"), "near 1"),
    ("|skew| of projections", ("gaussianity", "mean_abs_skew"), "near the Gaussian floor"),
    ("|excess kurtosis|", ("gaussianity", "mean_abs_excess_kurtosis"), "near the floor"),
    ("KS distance to N(0,1)", ("gaussianity", "mean_ks_distance"), "near the floor"),
    ("normality rejected", ("gaussianity", "normality_rejected_fraction"), "near 5%"),
)


def _lookup(block: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(block, dict) or key not in block:
            return None
        block = block[key]
    return block


def diagnostics_table(diagnostics: dict[str, Any]) -> pd.DataFrame:
    """The diagnostics as rows ``diagnostic, untrained, trained, gaussian, good`` (floats)."""
    rows = []
    for label, path, good in TABLE_ROWS:
        gaussian = (
            _lookup(diagnostics["gaussian_reference"], path[1:])
            if path[0] == "gaussianity"
            else None
        )
        rows.append(
            {
                "diagnostic": label,
                "untrained": _lookup(diagnostics["untrained"], path),
                "trained": _lookup(diagnostics["trained"], path),
                "gaussian": gaussian,
                "good": good,
            }
        )
    on_training = diagnostics["trained"].get("projection_on_training_groups")
    if on_training is not None:
        rows.append(
            {
                "diagnostic": "loss (z), training groups",
                "untrained": None,
                "trained": on_training["loss"],
                "gaussian": None,
                "good": "close to held-out loss",
            }
        )
    for name in ("untrained", "trained"):
        for entry in diagnostics[name]["norm_specificity"]:
            label = f"Spearman(norm, {entry['proxy']})"
            row = next((r for r in rows if r["diagnostic"] == label), None)
            if row is None:
                row = {"diagnostic": label, "untrained": None, "trained": None, "gaussian": None}
                row["good"] = "> 0"
                rows.append(row)
            row[name] = entry["spearman"]
    return pd.DataFrame(rows, columns=["diagnostic", "untrained", "trained", "gaussian", "good"])


def format_diagnostics(diagnostics: dict[str, Any]) -> list[str]:
    """Plain-text lines: a heading and the table of :func:`diagnostics_table`."""
    subset = diagnostics["subset"]
    where = "held-out" if subset["held_out_from_training"] else "sampled (not held-out)"
    lines = [
        f"Diagnostics ({subset['groups']} {where} groups of {subset['groups_total']}, "
        f"{subset['items']} items, fresh views; z = projection, h = embedding)"
    ]
    table = diagnostics_table(diagnostics)
    rows = [["", "untrained", "trained", "Gaussian", "good"]]
    for row in table.itertuples(index=False):
        rows.append(
            [
                row.diagnostic,
                _cell(row.untrained),
                _cell(row.trained),
                _cell(row.gaussian),
                row.good,
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return lines


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
