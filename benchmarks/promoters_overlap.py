"""How much the promoter sets' windows overlap, and what the overlap alone predicts.

::

    python benchmarks/promoters_overlap.py              # plain-text table
    python benchmarks/promoters_overlap.py --markdown   # the table in BENCHMARKS.md

For each data set of the config (experiments reading the same files, as in
``benchmarks/promoters.py``) this reads the items with the experiment's own adapter, so the
order, labels and the probe's splits (:func:`~scicontrast.analysis.probes.stratified_splits`
with the experiment's ``probe_test_fraction`` and ``probe_seeds``) are those every probe of
``benchmarks/promoters.py`` is scored on. Two windows *overlap* when they share a stretch of
``--stretch`` bases (20 by default, as ``promoters.py --grouped-splits``) on either strand
(:func:`~scicontrast.data_adapters.dna.shared_stretches`): windows cut from the same stretch
of genome at different starts.

Per class it prints how many windows overlap another window of the data set, and how many
test windows overlap a window of their split's training part (mean over the splits). Then it
scores a classifier that sees nothing but overlap: a test window takes the majority class of
the training windows it overlaps (ties to the class listed first), and a window that overlaps
none takes the majority class of the training windows that overlap no other training window.
Where it scores near the probes, a random split rewards recognising the stretch of genome a
window was cut from, not only what promoters share.

When the data set folder is absent the script says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.metrics import balanced_accuracy_score

from scicontrast.analysis.probes import stratified_splits
from scicontrast.config import read_config_file
from scicontrast.data_adapters.dna.encoding import shared_stretches
from scicontrast.registry import ADAPTERS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from promoters import DEFAULT_CONFIG, OVERLAP_STRETCH, REPO, window_sequences


def overlap_classifier(linked: sparse.csr_matrix, codes: np.ndarray, train, test) -> np.ndarray:
    """Predicted codes of ``test`` from overlap with ``train`` alone (module doc); ``linked``
    is :func:`shared_stretches` of all windows."""
    within_train = linked[train][:, train]
    loners = train[within_train.getnnz(axis=1) == 0]
    fallback = np.bincount(codes[loners] if len(loners) else codes[train]).argmax()
    to_train = linked[test][:, train].tocsr()
    predicted = []
    for row in range(len(test)):
        partners = train[to_train.indices[to_train.indptr[row] : to_train.indptr[row + 1]]]
        counts = np.bincount(codes[partners], minlength=codes.max() + 1)
        predicted.append(counts.argmax() if len(partners) else fallback)
    return np.asarray(predicted)


def data_set_table(experiment: dict, length: int) -> tuple[str, list[dict[str, object]]]:
    """The overlap rows of one data set (module doc)."""
    items = ADAPTERS.create(experiment["adapter"], where=experiment["name"]).read()
    analysis = experiment["analysis"]
    labels = items.table[analysis["label_column"]]
    keep = np.flatnonzero(labels.notna())
    all_sequences = window_sequences(items)
    sequences = [all_sequences[i] for i in keep]
    classes, codes = np.unique(labels.iloc[keep].astype(str), return_inverse=True)
    linked = shared_stretches(sequences, length)
    overlaps_any = linked.getnnz(axis=1) > 0

    splits = stratified_splits(codes, analysis["probe_test_fraction"], analysis["probe_seeds"])
    test_overlaps = {c: [] for c in range(len(classes))}
    scores = []
    for train, test in splits:
        hit = linked[test][:, train].getnnz(axis=1) > 0
        for c in test_overlaps:
            test_overlaps[c].append(hit[codes[test] == c].mean())
        predicted = overlap_classifier(linked, codes, train, test)
        scores.append(balanced_accuracy_score(codes[test], predicted))

    rows: list[dict[str, object]] = []
    for c, name in enumerate(classes):
        members = codes == c
        rows.append(
            {
                "class": name,
                "windows": int(members.sum()),
                "overlap another window": f"{overlaps_any[members].mean():.2f}",
                "test windows overlapping a training window": f"{np.mean(test_overlaps[c]):.2f}",
            }
        )
    rows.append(
        {
            "class": "overlap classifier, balanced accuracy",
            "windows": len(codes),
            "overlap another window": "",
            "test windows overlapping a training window": (
                f"{np.mean(scores):.3f} ± {np.std(scores):.3f}"
            ),
        }
    )
    stems = [Path(p).name.split(".")[0] for p in items.table["source_file"].iloc[keep].unique()]
    return " vs ".join(stems), rows


def render(tables: list[tuple[str, list[dict[str, object]]]], markdown: bool, length: int) -> str:
    header = [
        "class",
        "windows",
        f"overlap another window ({length} nt shared)",
        "test windows overlapping a training window (mean over splits)",
    ]
    lines = []
    for title, rows in tables:
        lines.append(f"**{title}**" if markdown else title)
        lines.append("")
        if markdown:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("| " + " | ".join("---" for _ in header) + " |")
        for row in rows:
            cells = [str(value) for value in row.values()]
            lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument(
        "--stretch", type=int, default=OVERLAP_STRETCH, help="bases two windows share"
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)

    experiments = read_config_file(args.config)["experiments"]
    tables, seen = [], set()
    for name, experiment in experiments.items():
        paths = tuple(experiment["adapter"]["params"]["paths"])
        if paths in seen:
            continue
        seen.add(paths)
        missing = [p for p in paths if not (REPO / p).is_file()]
        if missing:
            print(f"skipping the overlap table: {missing[0]} not found (no ../shared/data)")
            return 0
        experiment["adapter"]["params"]["paths"] = [str(REPO / p) for p in paths]
        tables.append(data_set_table({"name": name, **experiment}, args.stretch))
    print(render(tables, args.markdown, args.stretch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
