"""Promoter benchmark: frozen contrastive embeddings against k-mer frequencies.

Run the workflow on ``benchmarks/promoters.yaml`` first (see BENCHMARKS.md), then::

    python benchmarks/promoters.py              # plain-text table
    python benchmarks/promoters.py --markdown   # the table in BENCHMARKS.md

For every experiment of the config this reads ``results/<experiment>/items`` (the items
table the workflow prepared) and ``results/<experiment>/embeddings`` (its frozen embedding),
and probes the embedding here, so that runs made before a change of the probe are scored
by the current one. Experiments reading the same files form one data set; on its items
table, in the same row order, it computes the baselines

* forward-strand k-mer frequencies, ``k = 3, 4, 5``: ``x_w = n_w / sum_v n_v`` over the
  ``4^k`` words ``w`` of the window as read (words with an ambiguity code are skipped);
* canonical (both-strand) k-mer frequencies: a word and its reverse complement share one
  feature, ``(4^k + 4^(k/2) [k even]) / 2`` features, invariant to the strand read;

and probes them, like the embeddings, with the workflow's own
:func:`scicontrast.analysis.probes.linear_probe` (``StandardScaler`` +
``LogisticRegression``, its ``C`` chosen inside each training part) on the splits of
:func:`~scicontrast.analysis.probes.stratified_splits` with the experiment's
``probe_test_fraction`` and ``probe_seeds``, so every row of the table is scored on the
same test items. Metrics are mean ± population std over the seeds.

Only labelled items are probed. An experiment may pre-train on more sequences than it
probes: files whose ``label_from_filename`` group does not take part (or records without a
row in the labels table) give items without a label, which contrastive training uses and
the probes skip. Experiments are grouped into data sets by their labelled items, so such a
run is scored on the same items and splits as the runs that read the labelled files alone.

With ``--untrained`` each contrastive experiment also gets a control row: the same encoder
at its initial weights (built with the experiment's training seed, as training starts),
embedded and probed the same way, to separate what the architecture gives (position bins,
width) from what contrastive training adds.

With ``--balanced-probe`` every probe, baselines included, weighs the classes equally
(``class_weight="balanced"``, its ``C`` chosen by balanced accuracy): with 22 % promoters
on E. coli and 67 % on Arabidopsis, the default probe's balanced accuracy depends on where
its threshold falls, which the balanced one takes out.

With ``--grouped-splits`` every split, the inner ones that choose ``C`` and the validation
probe's included, keeps windows that share a stretch of 20 bases (on either strand;
:func:`~scicontrast.data_adapters.dna.overlap_groups`) on one side: the E. coli
non-promoters are mostly windows tiled along the same stretches of genome
(``benchmarks/promoters_overlap.py``), so on a random split most test non-promoters
overlap a training one, and a probe can score by recognising the stretch.

Settings are chosen by the "val" column alone (:func:`validation_scores`): the probe refit
inside each seed's training part and scored on a stratified part of it, so the test items
choose nothing. The heading names the contrastive experiment with the best validation
balanced accuracy and whether it meets the target of issue 2: an embedding's balanced
accuracy at least 3 points above the best k-mer row and its AUROC above the best k-mer AUROC
(both maxima over the six k-mer rows).

When the data set folder is absent (a fresh clone has no ``../shared/data``) the script
says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.analysis.probes import linear_probe, validation_probe
from scicontrast.config import read_config_file
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.dna.encoding import PAD_CODE, encode_codes, overlap_groups
from scicontrast.data_adapters.dna.kmers import kmer_frequencies as window_kmer_frequencies

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "benchmarks" / "promoters.yaml"
KS = (3, 4, 5)
METRICS = ("accuracy", "balanced_accuracy", "auroc")
TARGET_MARGIN = 0.03
OVERLAP_STRETCH = 20


def kmer_frequencies(sequences: Sequence[str], k: int, canonical: bool = False) -> np.ndarray:
    """k-mer frequencies ``float64 [N, F]`` (see module docstring).

    Columns follow the lexicographic order of the words over ``ACGT``; with ``canonical``
    only the columns of words that are not larger than their reverse complement remain.
    A sequence without any countable word gives a zero row.
    """
    codes = np.full((len(sequences), max(map(len, sequences), default=0)), PAD_CODE, np.uint8)
    for row, sequence in enumerate(sequences):
        codes[row, : len(sequence)] = encode_codes(sequence)
    return window_kmer_frequencies(codes, k, canonical)


def window_sequences(items: Items) -> list[str]:
    """Each item's window as read (without flanks), from the ``dna_fasta`` payload."""
    window = int(items.meta["window"])
    table = items.table
    return [
        sequence[start : start + window]
        for sequence, start in zip(table["sequence"], table["window_start"], strict=True)
    ]


@dataclass
class Row:
    """One line of the table: a method's probe summary on one data set."""

    method: str
    kind: str  # "kmer", "contrastive" or "untrained"
    probe: dict[str, Any]
    validation: dict[str, float]
    experiment: str | None = None
    train_seconds: float | None = None
    workflow_seconds: float | None = None


def describe(experiment: dict[str, Any]) -> str:
    """Encoder and positives of an experiment, in words."""
    invariant = experiment["encoder"]["params"].get("rc_invariant", True)
    pairs = experiment["pairs"]["params"]
    encoder = "RC-invariant encoder" if invariant else "plain encoder"
    positives = (
        "RC + shift positives" if pairs.get("reverse_complement", True) else "shift-only positives"
    )
    if pairs.get("mask_fraction"):
        positives += f", {pairs['mask_fraction']:.0%} of each view masked"
    if pairs.get("neighbours"):
        positives += f" and {pairs['neighbours']} composition neighbours"
    return f"contrastive: {encoder}, {positives}"


def rule_seconds(results: Path, name: str) -> tuple[float | None, float | None]:
    """Wall seconds of the ``train`` rule and of all rules of one experiment (Snakemake's
    benchmark tables), or ``None`` where they are missing."""
    folder = results / name / "benchmarks"
    tables = sorted(folder.glob("*.tsv"))
    if not tables:
        return None, None
    seconds = {path.stem: float(pd.read_csv(path, sep="\t")["s"].iloc[0]) for path in tables}
    return seconds.get("train"), sum(seconds.values())


def validation_scores(
    features: np.ndarray,
    labels: pd.Series,
    analysis: dict[str, Any],
    class_weight: str | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Validation accuracy, balanced accuracy and AUROC (``validation_probe``): the only scores
    settings are chosen by; the outer test items take no part."""
    return validation_probe(
        features,
        labels,
        analysis["probe_test_fraction"],
        analysis["probe_seeds"],
        class_weight=class_weight,
        groups=groups,
    )


def scored_row(
    features: np.ndarray,
    labels: pd.Series,
    analysis: dict[str, Any],
    class_weight: str | None = None,
    groups: np.ndarray | None = None,
    **row,
) -> Row:
    """A table row: the probe (``class_weight`` and ``groups`` as in ``linear_probe``) on the
    outer splits, and the validation scores."""
    probe = linear_probe(
        features,
        labels,
        analysis["probe_test_fraction"],
        analysis["probe_seeds"],
        class_weight=class_weight,
        groups=groups,
    )
    validation = validation_scores(features, labels, analysis, class_weight, groups)
    return Row(probe=probe, validation=validation, **row)


def probed_items(results: Path, experiment: dict[str, Any]) -> tuple[Items, np.ndarray, int]:
    """An experiment's labelled items (the ones probed), their rows in its items table, and
    how many items it has without a label (pre-training only)."""
    items = Items.load(results / experiment["name"] / "items")
    rows = np.flatnonzero(items.table[experiment["analysis"]["label_column"]].notna())
    labelled = items.table.iloc[rows].reset_index(drop=True)
    return Items(table=labelled, meta=items.meta), rows, len(items) - len(rows)


def trained_embeddings(results: Path, name: str, probed: Items, rows: np.ndarray) -> np.ndarray:
    """The workflow's exported embeddings of the ``probed`` items, found at ``rows`` of the
    experiment's items table (:func:`probed_items`)."""
    metadata, embeddings = load_embeddings(results / name / "embeddings")
    if not metadata["item_id"].iloc[rows].reset_index(drop=True).equals(probed.table["item_id"]):
        raise SystemExit(f"{name}: embeddings are not in the items' order")
    return embeddings[rows]


def untrained_embeddings(experiment: dict[str, Any], items: Items) -> np.ndarray:
    """The experiment's encoder at its initial weights (the ``--untrained`` rows)."""
    import torch

    from scicontrast.analysis.embed import embed_items
    from scicontrast.experiment import Experiment
    from scicontrast.models.contrastive import build_model
    from scicontrast.registry import PAIR_BUILDERS

    torch.manual_seed(experiment["training"]["seed"])  # as models.train.train does
    model = build_model(Experiment.from_dict(experiment))
    builder = PAIR_BUILDERS.create(experiment["pairs"], where=experiment["name"])
    return embed_items(model, builder, items, progress=False)


def data_set_rows(
    experiments: list[dict[str, Any]],
    probed: dict[str, tuple[Items, np.ndarray, int]],
    results: Path,
    untrained: bool = False,
    class_weight: str | None = None,
    grouped: bool = False,
) -> tuple[str, int, dict[str, int], list[Row]]:
    """Baselines and contrastive probes of experiments with the same labelled items
    (``probed``: :func:`probed_items` of each experiment, by name), every row probed with
    ``class_weight``, and with ``grouped`` on splits grouped by :func:`overlap_groups`."""
    first = experiments[0]
    analysis = first["analysis"]
    items = probed[first["name"]][0]
    labels = items.table[analysis["label_column"]]
    sequences = window_sequences(items)
    groups = overlap_groups(sequences, OVERLAP_STRETCH) if grouped else None

    rows = []
    descriptions = [describe(e) for e in experiments]
    for experiment, description in zip(experiments, descriptions, strict=True):
        name = experiment["name"]
        if descriptions.count(description) > 1:  # a settings search: name each run
            description = f"{description} ({name})"
        if experiment["analysis"] != analysis:
            raise SystemExit(f"{name}: analysis settings differ from {first['name']}'s")
        labelled, item_rows, unlabelled = probed[name]
        if unlabelled:
            description += f", pre-trained also on {unlabelled} unlabelled sequences"
        row = scored_row(
            trained_embeddings(results, name, labelled, item_rows),
            labels,
            analysis,
            class_weight,
            groups,
            method=description,
            kind="contrastive",
            experiment=name,
        )
        row.train_seconds, row.workflow_seconds = rule_seconds(results, name)
        rows.append(row)
        if untrained:
            rows.append(
                scored_row(
                    untrained_embeddings(experiment, labelled),
                    labels,
                    analysis,
                    class_weight,
                    groups,
                    method=f"{description}, untrained control",
                    kind="untrained",
                )
            )

    baselines = []
    for k, canonical in itertools.product(KS, (False, True)):
        strand = "canonical (both strands)" if canonical else "forward strand"
        baselines.append(
            scored_row(
                kmer_frequencies(sequences, k, canonical),
                labels,
                analysis,
                class_weight,
                groups,
                method=f"{k}-mer frequencies, {strand}",
                kind="kmer",
            )
        )
    stems = [Path(p).name.split(".")[0] for p in items.table["source_file"].unique()]
    title = " vs ".join(stems)
    if grouped:
        title += (
            f", splits grouped by shared {OVERLAP_STRETCH}-nt stretches ({len(set(groups))} groups)"
        )
    return title, len(items), labels.value_counts().to_dict(), baselines + rows


def mean_std(summary: dict[str, float | None]) -> str:
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def seconds_text(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.0f}"


def verdict(row: Row, best: dict[str, float]) -> str:
    """Whether a contrastive row meets the target against the best k-mer rows."""
    if row.kind == "kmer":
        return ""
    gain = row.probe["balanced_accuracy"]["mean"] - best["balanced_accuracy"]
    auroc_ok = row.probe["auroc"]["mean"] > best["auroc"]
    met = gain >= TARGET_MARGIN and auroc_ok
    return f"{'yes' if met else 'no'} ({100 * gain:+.1f} pt, AUROC {'>' if auroc_ok else '<='})"


def render(data_sets: list[tuple[str, int, dict[str, int], list[Row]]], markdown: bool) -> str:
    header = [
        "method",
        "accuracy",
        "balanced acc.",
        "AUROC",
        "val: bal. acc. / AUROC",
        "target met (bal. acc. vs best k-mer)",
        "train s",
        "workflow s",
    ]
    out = []
    for title, n_items, counts, rows in data_sets:
        kmer_rows = [r for r in rows if r.kind == "kmer"]
        best = {m: max(r.probe[m]["mean"] for r in kmer_rows) for m in METRICS}
        table = [
            [
                r.method,
                *(mean_std(r.probe[m]) for m in METRICS),
                f"{r.validation['balanced_accuracy']:.3f} / {r.validation['auroc']:.3f}",
                verdict(r, best),
                seconds_text(r.train_seconds),
                seconds_text(r.workflow_seconds),
            ]
            for r in rows
        ]
        class_counts = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
        heading = f"{title}: {n_items} sequences ({class_counts})"
        chosen = max(
            (r for r in rows if r.kind == "contrastive"),
            key=lambda r: r.validation["balanced_accuracy"],
        )
        target = (
            f"target: balanced accuracy >= {best['balanced_accuracy'] + TARGET_MARGIN:.3f} "
            f"and AUROC > {best['auroc']:.3f}; chosen on validation items: {chosen.experiment}, "
            f"target {verdict(chosen, best)}"
        )
        if markdown:
            out += [f"**{heading}**; {target}.", ""]
            out.append("| " + " | ".join(header) + " |")
            out.append("| " + " | ".join("---" for _ in header) + " |")
            out += ["| " + " | ".join(cells) + " |" for cells in table]
        else:
            widths = [
                max(len(str(c)) for c in column) for column in zip(header, *table, strict=True)
            ]
            out += [heading, target]
            for cells in [header, *table]:
                out.append(
                    "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
                )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--untrained", action="store_true", help="add each encoder at its initial weights"
    )
    parser.add_argument(
        "--grouped-splits",
        action="store_true",
        help=f"keep windows that share a {OVERLAP_STRETCH}-nt stretch on one side of every split",
    )
    parser.add_argument(
        "--balanced-probe",
        action="store_true",
        help="weigh the classes of every probe equally (class_weight='balanced')",
    )
    args = parser.parse_args(argv)
    class_weight = "balanced" if args.balanced_probe else None

    config = read_config_file(args.config)
    experiments = []
    for name, experiment in config["experiments"].items():
        missing = [p for p in experiment["adapter"]["params"]["paths"] if not (REPO / p).is_file()]
        if missing:
            print(f"skipping the promoter benchmark: {missing[0]} not found (no ../shared/data)")
            return 0
        experiments.append({"name": name, **experiment})
    unfinished = [
        e["name"]
        for e in experiments
        if not (args.results / e["name"] / "embeddings" / EMBEDDINGS_TABLE).is_file()
    ]
    if unfinished:
        print(
            f"no embeddings for {', '.join(unfinished)} under {args.results}; run the workflow "
            "first (command in BENCHMARKS.md)",
            file=sys.stderr,
        )
        return 1
    probed = {e["name"]: probed_items(args.results, e) for e in experiments}
    by_items: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for experiment in experiments:
        labelled_ids = tuple(probed[experiment["name"]][0].table["item_id"])
        by_items.setdefault(labelled_ids, []).append(experiment)
    data_sets = [
        data_set_rows(
            group, probed, args.results, args.untrained, class_weight, args.grouped_splits
        )
        for group in by_items.values()
    ]
    print(render(data_sets, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
