r"""Genome of origin: do reads of genomes never trained on cluster by genome?

Given a read set (:func:`scicontrast.data_adapters.dna.genome_reads.cut_reads`: ``N`` reads of
one length, each with its ``genome`` and ``species``) and features ``X [N, D]`` of the
reads (an encoder's embedding, or a composition baseline), :func:`origin_scores` reports

* **k-means ARI and NMI**, strain level: k-means with ``k`` = number of genomes against the
  genome labels; species level: ``k`` = number of species against the species labels.
  Embeddings are L2-normalised first (k-means then splits by cosine, the geometry InfoNCE
  trains); baselines are clustered as given (they are z-scored, see below). ``n_init = 10``,
  seeded.
* **kNN accuracy**, genome and species: each read is labelled by the majority of its
  ``k = 5`` nearest other reads (cosine on embeddings, Euclidean on baselines;
  leave-one-out over the read set, no training part).

Strains of one species share about 95 % of their 21-mers, so the genome (strain) level is
much harder than the species level on a corpus with several strains per species.

Baselines on the same reads (``codes uint8 [N, L]``):

* **TNF**: canonical tetranucleotide frequencies, a 4-mer and its reverse complement counted
  as one word (136 words), normalised to sum 1 per read, then each dimension z-scored over
  the read set (the metagenome-binning baseline, Teeling et al. 2004; DNABERT-S's "TNF");
* **5-mer**: canonical 5-mer frequencies (512 words), not z-scored.

**Reverse-complement invariance**: :math:`\frac1N\sum_i \cos(h(x_i), h(\mathrm{rc}(x_i)))`
for an encoder :math:`h` (1 for an exactly invariant one, up to rounding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import NearestNeighbors

from scicontrast.data_adapters.base import Items, held_out_groups
from scicontrast.data_adapters.classical import zscore
from scicontrast.data_adapters.dna.genome_reads import (
    codes_to_batch,
    cut_reads,
    reverse_complement_codes,
)
from scicontrast.data_adapters.dna.genome_store import CODES_EXTRA
from scicontrast.data_adapters.dna.kmers import kmer_frequencies
from scicontrast.data_adapters.pairs_table import read_pairs
from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment
from scicontrast.io import write_json
from scicontrast.models.contrastive import build_model, load_model


def split_genomes(
    table: pd.DataFrame, by: str, seed: int, fractions: tuple[float, float] = (0.2, 0.2)
) -> dict[str, list[str]]:
    """Genome ids of the ``train``, ``val`` and ``test`` parts, split by ``by``.

    ``by="genome"`` shuffles the genomes, ``by="species"`` the species (all strains of a
    species fall in one part); ``fractions`` are the val and test shares of those units
    (each at least 2 units). ``table`` is a store's items table (one row per record).
    """
    if by not in ("genome", "species"):
        raise ValueError(f"split by 'genome' or 'species', not {by!r}")
    genomes = table.drop_duplicates("genome")[["genome", "species"]].astype(str)
    units = np.sort(genomes[by].unique())
    units = units[np.random.default_rng([seed, 0x25]).permutation(len(units))]
    n_val, n_test = (max(2, round(f * len(units))) for f in fractions)
    if n_val + n_test >= len(units):
        raise ValueError(f"{len(units)} {by} units cannot make train, val and test parts")
    parts = {"val": units[:n_val], "test": units[n_val : n_val + n_test]}
    parts["train"] = units[n_val + n_test :]
    return {
        name: sorted(genomes.loc[genomes[by].isin(chosen), "genome"])
        for name, chosen in parts.items()
    }


def read_codes(reads: Items) -> np.ndarray:
    """``uint8 [N, L]``: the codes of a read set of one length (``cut_reads``)."""
    lengths = reads.table["length"].unique()
    if len(lengths) != 1:
        raise ValueError(f"read set has several lengths {sorted(lengths)}; cut one per length")
    return np.asarray(reads.extras[CODES_EXTRA]).reshape(len(reads), int(lengths[0]))


def _knn_accuracy(x: np.ndarray, labels: np.ndarray, metric: str, k: int = 5) -> float:
    neighbours = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(x)
    index = neighbours.kneighbors(x, return_distance=False)[:, 1:]  # drop the read itself
    _, codes = np.unique(labels, return_inverse=True)
    votes = np.apply_along_axis(np.bincount, 1, codes[index], minlength=codes.max() + 1)
    return float(np.mean(votes.argmax(axis=1) == codes))


def origin_scores(
    features: np.ndarray, genomes: np.ndarray, species: np.ndarray, embedding: bool, seed: int = 0
) -> dict[str, float]:
    """ARI/NMI (strain and species level) and kNN accuracy of ``features [N, D]``.

    ``embedding=True`` L2-normalises rows and uses cosine neighbours (module docstring).
    """
    x = np.asarray(features, dtype=np.float64)
    if embedding:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    scores: dict[str, float] = {}
    for level, labels in (("strain", genomes), ("species", species)):
        k = len(np.unique(labels))
        predicted = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
        scores[f"ari_{level}"] = float(adjusted_rand_score(labels, predicted))
        scores[f"nmi_{level}"] = float(normalized_mutual_info_score(labels, predicted))
        scores[f"knn_{level}"] = _knn_accuracy(x, labels, "cosine" if embedding else "euclidean")
    return scores


@torch.inference_mode()
def embed_reads(encoder: torch.nn.Module, codes: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``float32 [N, D]``: ``encoder`` (eval mode) on the one-hot reads ``codes [N, L]``,
    ``batch_size`` reads per pass (small batches stay in cache: ``EMBED_NUCLEOTIDES``)."""
    encoder.eval()
    chunks = [
        encoder(codes_to_batch(list(codes[i : i + batch_size]))).numpy()
        for i in range(0, len(codes), batch_size)
    ]
    return np.concatenate(chunks)


def rc_invariance(encoder: torch.nn.Module, codes: np.ndarray) -> float:
    """Mean cosine between the embedding of each read and of its reverse complement."""
    forward = embed_reads(encoder, codes)
    reverse = embed_reads(encoder, np.stack([reverse_complement_codes(c) for c in codes]))
    cos = (forward * reverse).sum(1) / (
        np.linalg.norm(forward, axis=1) * np.linalg.norm(reverse, axis=1) + 1e-12
    )
    return float(cos.mean())


def evaluate_reads(
    reads: Items, encoders: dict[str, torch.nn.Module], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Scores of every encoder and of the TNF and 5-mer baselines on one read set.

    Returns ``{row name: scores}``; encoder rows add ``rc_invariance``.
    """
    codes = read_codes(reads)
    genomes = reads.table["genome"].astype(str).to_numpy()
    species = reads.table["species"].astype(str).to_numpy()
    rows: dict[str, dict[str, Any]] = {
        "TNF (canonical 4-mer, z-scored)": origin_scores(
            zscore(kmer_frequencies(codes, 4, canonical=True)),
            genomes,
            species,
            embedding=False,
            seed=seed,
        ),
        "canonical 5-mer frequencies": origin_scores(
            kmer_frequencies(codes, 5, canonical=True),
            genomes,
            species,
            embedding=False,
            seed=seed,
        ),
    }
    for name, encoder in encoders.items():
        embedding = embed_reads(encoder, codes)
        rows[name] = origin_scores(embedding, genomes, species, embedding=True, seed=seed)
        rows[name]["rc_invariance"] = rc_invariance(encoder, codes)
    return rows


def held_out_reads(
    experiment: Experiment, items_dir: str | Path, pairs_path: str | Path, length: int
) -> Items:
    """Reads of the groups training held out (``training.holdout_fraction``), for the workflow.

    The groups are those :func:`~scicontrast.data_adapters.base.held_out_groups` draws, as
    training does; ``analysis.genome_reads`` reads of ``length`` nt are cut from each.
    """
    items = Items.load(items_dir)
    pairs = read_pairs(pairs_path, items.table["item_id"])
    training = experiment.training
    held_out = held_out_groups(pairs, training.holdout_fraction, training.seed)
    if len(held_out) < 2:
        raise ConfigError(
            f"experiments.{experiment.name}.training.holdout_fraction holds out "
            f"{len(held_out)} group(s); genome-of-origin scores need at least 2"
        )
    column = experiment.pairs.params.get("group_column", "genome")
    # read_pairs's codes of the ids are the items' rows.
    rows = items.table.iloc[pairs.loc[pairs["group_id"].isin(held_out), "item_id"].cat.codes]
    groups = sorted(rows[column].astype(str).unique())
    return cut_reads(items, length, experiment.analysis.genome_reads, training.seed, column, groups)


def evaluate_genome_reads(
    model_path: str | Path, reads_dirs: list[str | Path], out: str | Path
) -> dict[str, Any]:
    """Scores of the trained model, its untrained control and the baselines on read sets.

    Writes ``{read set folder: {row: scores}}`` to the JSON file ``out`` and returns it.
    """
    model, experiment = load_model(model_path)
    seed = experiment.training.seed
    torch.manual_seed(seed)  # the weights training started from
    untrained = build_model(experiment)
    encoders = {"trained encoder": model.encoder, "untrained encoder": untrained.encoder}
    results = {
        Path(folder).name: evaluate_reads(Items.load(folder), encoders, seed)
        for folder in reads_dirs
    }
    write_json(out, results)
    return results
