"""Where the promoter set lies in the K-12 genome: inside the pre-training's upstream regions?

::

    python benchmarks/promoters_in_upstream.py

Finds every window of the E. coli promoter set (``benchmarks/promoters.yaml``) verbatim in the
K-12 GenBank sequence, on either strand (``str.find``), and counts per class how many lie
mostly (more than half their bases) inside the upstream regions that
``benchmarks/promoters_genome.yaml`` pre-trains on (with their flanks;
:func:`~scicontrast.data_adapters.dna.upstream.region_bounds`, wrapping around the circular
chromosome). Needs ``../shared/data``; says so and exits 0 without it.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from Bio import SeqIO

from scicontrast.config import load_experiment
from scicontrast.data_adapters.dna.encoding import reverse_complement
from scicontrast.data_adapters.dna.upstream import region_bounds

REPO = Path(__file__).resolve().parents[1]


def covered_bases(record, params: dict) -> np.ndarray:
    """``bool [n]``: bases of ``record`` inside some gene's upstream region with its flanks."""
    n, flank = len(record.seq), params["flank"]
    covered = np.zeros(n, dtype=bool)
    for feature in record.features:
        if feature.type != params.get("feature", "gene"):
            continue
        first = feature.location.parts[0]
        strand = -1 if first.strand == -1 else 1
        five_prime = int(first.start) if strand == 1 else int(first.end) - 1
        begin, end = region_bounds(five_prime, strand, params["upstream"], params["downstream"])
        covered[np.arange(begin - flank, end + flank) % n] = True
    return covered


def main() -> int:
    genome_config = REPO / "benchmarks/promoters_genome.yaml"
    pretrain = load_experiment(genome_config, "promoters_genome_rc_positives")["adapter"]["params"]
    probe = load_experiment(REPO / "benchmarks/promoters.yaml", "promoters_ecoli_rc_positives")
    files = [REPO / p for p in [*pretrain["paths"], *probe["adapter"]["params"]["paths"]]]
    if not all(f.is_file() for f in files):
        print("no ../shared/data: nothing to count")
        return 0
    with gzip.open(files[0], "rt") as handle:
        record = next(SeqIO.parse(handle, "genbank"))
    genome, covered = str(record.seq).upper(), covered_bases(record, pretrain)
    print(f"upstream regions with flanks cover {covered.mean():.1%} of {len(genome):,} bases")
    for path in files[1:]:
        found = inside = 0
        windows = [str(r.seq).upper() for r in SeqIO.parse(path, "fasta")]
        for window in windows:
            start = genome.find(window)
            if start < 0:
                start = genome.find(reverse_complement(window))
            if start >= 0:
                found += 1
                inside += covered[start : start + len(window)].mean() > 0.5
        print(f"{path.name}: {len(windows)} windows, {found} found in K-12, {inside} inside")
    return 0


if __name__ == "__main__":
    sys.exit(main())
