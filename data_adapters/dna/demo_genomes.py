r"""A few generated genomes of distinct composition, with strains: the genome-scale demo.

Species ``s`` has an order-2 Markov chain over ``A, C, G, T``,
:math:`P(b_t = j \mid b_{t-2} b_{t-1} = c) = T_s[c, j]` with
:math:`T_s[c, :] \sim \mathrm{Dirichlet}(\alpha \mathbf 1_4)`, from which one ancestral
sequence of ``length`` bases is drawn. Strain ``r`` of the species is the ancestor with
independent substitutions at rate ``divergence`` (a substituted base is uniform over the
other three), so strains of one species share most of their k-mers (at 3 % divergence about
:math:`0.97^{21} \approx 53\,\%` of 21-mers, at 0.25 % about 95 %, as real strains do) while
species differ in composition. Strain 0 of every species is split into two records
(a chromosome and a "plasmid" of the last tenth), so multi-record genomes are exercised.

Output: ``out_dir/<genome>.fa`` (60 bases a line; genome ``sp{s}_strain{r}``) and
``out_dir/genomes.tsv`` with columns ``genome_id, species, strain_label`` (the layout of
``../shared/data/genomes``). Deterministic given the arguments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scicontrast.errors import ConfigError
from scicontrast.io import atomic_path

DIRICHLET_CONCENTRATION = 0.7
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def _chain(transitions: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Base indices ``int [length]`` of an order-2 chain with ``transitions [16, 4]``."""
    cumulative = transitions.cumsum(axis=1)
    uniforms = rng.random(length)
    out = np.empty(length, dtype=np.int64)
    out[:2] = rng.integers(0, 4, size=2)
    for t in range(2, length):
        state = 4 * out[t - 2] + out[t - 1]
        out[t] = min(int(np.searchsorted(cumulative[state], uniforms[t])), 3)
    return out


def _write_fasta(path: Path, records: list[tuple[str, np.ndarray]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        for name, bases in records:
            text = BASES[bases].tobytes().decode()
            handle.write(f">{name}\n")
            handle.writelines(text[i : i + 60] + "\n" for i in range(0, len(text), 60))


def generate_demo_genomes(
    out_dir: str | Path,
    species: int = 3,
    strains: int = 2,
    length: int = 40_000,
    divergence: float = 0.03,
    seed: int = 0,
) -> list[Path]:
    """Write ``species * strains`` genomes and ``genomes.tsv``; return the FASTA paths."""
    if species < 2 or strains < 1 or length < 1000 or not 0 <= divergence < 1:
        raise ConfigError(
            "demo genomes need species >= 2, strains >= 1, length >= 1000 and "
            f"0 <= divergence < 1; got {species}, {strains}, {length}, {divergence}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, rows = [], ["genome_id\tspecies\tstrain_label"]
    for s in range(species):
        rng = np.random.default_rng([seed, s])
        transitions = rng.dirichlet(np.full(4, DIRICHLET_CONCENTRATION), size=16)
        ancestor = _chain(transitions, length, rng)
        for r in range(strains):
            mutated = rng.random(length) < divergence
            genome = ancestor.copy()
            genome[mutated] = (genome[mutated] + rng.integers(1, 4, mutated.sum())) % 4
            name = f"sp{s}_strain{r}"
            cut = length - length // 10 if r == 0 else length
            records = [(f"{name}_chr", genome[:cut])]
            if cut < length:
                records.append((f"{name}_plasmid", genome[cut:]))
            paths.append(out_dir / f"{name}.fa")
            _write_fasta(paths[-1], records)
            rows.append(f"{name}\tspecies_{s}\tspecies_{s} strain {r}")
    with atomic_path(out_dir / "genomes.tsv") as tmp:
        tmp.write_text("\n".join(rows) + "\n")
    return paths
