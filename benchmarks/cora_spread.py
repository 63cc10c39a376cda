"""Whose is the spread between training seeds on Cora's public split: the model's or the split's?

Planetoid's public split is one draw of 20 training nodes per class, 500 validation and 1,000
test nodes. This script scores the embeddings of several training seeds (written by
``benchmarks/cora_curve.py`` at one epoch) with ``benchmarks/cora.py``'s validated probe on
that split and on ``--splits`` more draws of the same sizes ("public-like": 20 labelled
nodes per class for training, then 500 and 1,000 of the rest, seeded by the draw's number),
beside the SGC and PPR features on the same draws.

With accuracy ``a[s, p]`` of training seed ``s`` on draw ``p`` (``S`` seeds, ``P`` draws),
the two-way decomposition without replication ``a[s, p] = m + u_s + v_p + e_sp`` gives

* the interaction variance ``var_e = sum e_sp^2 / ((S - 1)(P - 1))``: how much one seed is
  luckier than another on one draw, beyond what it is on every draw;
* the seed (model) variance ``var_u = var_s(mean_p a[s, p]) - var_e / P`` (clipped at 0):
  what differs between seeds on every draw alike;

so that on a single draw, such as the public split, seeds spread by about
``sqrt(var_u + var_e)``. It is printed twice: for the probe as it is (``C`` chosen on each
draw's validation nodes) and with each draw's best ``C`` on its test nodes (an oracle, not a
probe: what is left once the choice of ``C`` is taken out of the spread). The same
decomposition is printed for the 10 random 10/10/80 splits
of ``curve.jsonl``. The last table is the public split's test accuracy of each seed at every
``C`` of the probe's grid, with the ``C`` its validation nodes chose.

    python benchmarks/cora_spread.py --curve results/cora_curve --experiment cora_propagated \\
        --epoch 100 --seeds 0 1 2 3 4 --splits 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from cora import propagated_features
from sklearn.metrics import accuracy_score

from scicontrast.analysis.probes import C_GRID, probe_model
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs.cleaning import SPLIT_MASKS

REPO = Path(__file__).resolve().parents[1]
PER_CLASS, VALIDATION, TEST = 20, 500, 1000


def public_like_split(codes: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node indices ``(train, val, test)``: 20 per class, then 500 and 1,000 of the rest."""
    rng = np.random.default_rng([seed, 0x5EED])
    train = np.concatenate(
        [rng.choice(np.flatnonzero(codes == c), PER_CLASS, replace=False) for c in np.unique(codes)]
    )
    rest = rng.permutation(np.setdiff1d(np.arange(len(codes)), train))
    return np.sort(train), np.sort(rest[:VALIDATION]), np.sort(rest[VALIDATION : VALIDATION + TEST])


def decomposition(accuracy: np.ndarray) -> dict[str, float]:
    """Seed and seed-by-split standard deviations of ``accuracy [S, P]`` (module docstring)."""
    seeds, draws = accuracy.shape
    row, column, grand = (
        accuracy.mean(1, keepdims=True),
        accuracy.mean(0, keepdims=True),
        accuracy.mean(),
    )
    residual = accuracy - row - column + grand
    var_e = float((residual**2).sum() / ((seeds - 1) * (draws - 1)))
    var_rows = float(row.var(ddof=1))
    var_u = max(var_rows - var_e / draws, 0.0)
    return {
        "sd of the seeds' means over the draws": var_rows**0.5,
        "seed sd (model)": var_u**0.5,
        "seed x draw sd (interaction)": var_e**0.5,
        "seed sd on one draw, mean over draws": float(accuracy.std(0, ddof=1).mean()),
        "seed sd on one draw, largest": float(accuracy.std(0, ddof=1).max()),
    }


def load(curve: Path, experiment: str, seeds: list[int], epoch: int) -> dict[str, np.ndarray]:
    """The embeddings of each training seed at ``epoch``, by row name."""
    return {
        f"seed {s}": np.load(curve / f"{experiment}_seed{s}" / f"embeddings_epoch{epoch}.npy")
        for s in seeds
    }


def per_c(
    x: np.ndarray, codes: np.ndarray, split: tuple[np.ndarray, ...], scaling: str
) -> np.ndarray:
    """``[2, len(C_GRID)]``: validation and test accuracy of the probe fitted at each ``C``."""
    train, val, test = split
    out = np.empty((2, len(C_GRID)))
    for j, c in enumerate(C_GRID):
        model = probe_model(scaling, c, None).fit(x[train], codes[train])
        out[:, j] = [accuracy_score(codes[rows], model.predict(x[rows])) for rows in (val, test)]
    return out


def chosen(scores: np.ndarray) -> np.ndarray:
    """Test accuracy at the ``C`` with the best validation accuracy (the smallest on ties, as
    :func:`~scicontrast.analysis.probes.best_C`), for ``scores [..., 2, C]``."""
    pick = scores[..., 0, :].argmax(-1)
    return np.take_along_axis(scores[..., 1, :], pick[..., None], -1)[..., 0]


def draws_scores(
    rows: dict[str, np.ndarray], codes: np.ndarray, draws: int, scaling: str
) -> np.ndarray:
    """``[rows, draws, 2, C]``: :func:`per_c` of each row's features on each public-like draw."""
    splits = [public_like_split(codes, p) for p in range(draws)]
    return np.array([[per_c(x, codes, split, scaling) for split in splits] for x in rows.values()])


def c_table(
    rows: dict[str, np.ndarray], codes: np.ndarray, table: pd.DataFrame, scaling: str
) -> pd.DataFrame:
    """Public split: validation / test accuracy (%) of each row at each ``C``; the chosen ``C``."""
    split = tuple(np.flatnonzero(table[m].to_numpy(dtype=bool)) for m in SPLIT_MASKS.values())
    out = {}
    for name, x in rows.items():
        scores = 100 * per_c(x, codes, split, scaling)
        out[name] = {
            f"C={c:g}": f"{v:.1f} / {t:.1f}" for c, v, t in zip(C_GRID, *scores, strict=True)
        }
        out[name]["chosen C"] = f"{C_GRID[int(scores[0].argmax())]:g}"
    return pd.DataFrame(out).T


def draws_summary(scores: np.ndarray, draws: pd.DataFrame, seeds: list[str]) -> pd.DataFrame:
    """Per row: test accuracy (%) over the draws at the validation's ``C``, how much the best
    ``C`` of each draw would add, and each seed's margin over SGC, draw by draw."""
    margin = draws.loc[seeds] - draws.loc["SGC S^2 X"]
    best = pd.Series(scores[:, :, 1, :].max(-1).mean(1), index=draws.index)
    return pd.DataFrame(
        {
            "mean": 100 * draws.mean(1),
            "sd over draws": 100 * draws.std(1, ddof=1),
            "min": 100 * draws.min(1),
            "best C's minus chosen C's": 100 * (best - draws.mean(1)),
            "margin over SGC, mean": 100 * margin.mean(1),
            "margin sd over draws": 100 * margin.std(1, ddof=1),
            "draws with margin >= 1.5": (margin >= 0.015).mean(1),
        }
    )


def random_split_matrix(curve: Path, experiment: str, seeds: list[int], epoch: int) -> np.ndarray:
    """``[S, 10]`` test accuracies of the random 10/10/80 splits from ``curve.jsonl``."""
    lines = [json.loads(line) for line in (curve / "curve.jsonl").read_text().splitlines()]
    by_seed = {
        r["seed"]: r["random_per_seed"]
        for r in lines
        if r["experiment"] == experiment and r["epoch"] == epoch
    }
    return np.array([by_seed[s] for s in seeds])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curve", type=Path, required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--epoch", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--splits", type=int, default=30)
    parser.add_argument("--scaling", default="l2")
    args = parser.parse_args(argv)

    items = Items.load(args.results / args.experiment / "items")
    labelled = items.table["label"].notna().to_numpy()
    if not labelled.all():
        raise SystemExit(
            f"{args.experiment}: unlabelled nodes; this script assumes every node has a label"
        )
    codes, _ = pd.factorize(items.table["label"].astype(object), sort=True)
    seeds = load(args.curve, args.experiment, args.seeds, args.epoch)
    baselines = {
        "SGC S^2 X": propagated_features(items),
        "PPR features": propagated_features(items, 10, 0.1),
    }
    rows = {**seeds, **baselines}

    scores = draws_scores(rows, codes, args.splits, args.scaling)
    draws = pd.DataFrame(chosen(scores), index=list(rows))
    print(f"## {args.experiment}, epoch {args.epoch}: {args.splits} public-like draws\n")
    print(draws_summary(scores, draws, list(seeds)).round(2).to_markdown(), "\n")
    at_best_c = scores[: len(seeds), :, 1, :].max(-1)
    parts = {
        "C chosen on validation": decomposition(100 * draws.loc[list(seeds)].to_numpy()),
        "best C of each draw (oracle)": decomposition(100 * at_best_c),
    }
    print("Decomposition over public-like draws (points):\n")
    print(pd.DataFrame(parts).round(2).to_markdown(), "\n")
    print("Decomposition over the random 10/10/80 splits (points):\n")
    random = random_split_matrix(args.curve, args.experiment, args.seeds, args.epoch)
    print(pd.Series(decomposition(100 * random)).round(2).to_markdown(), "\n")
    print("Public split, validation / test accuracy (%) by C:\n")
    print(c_table(rows, codes, items.table, args.scaling).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
