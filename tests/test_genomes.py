"""Genome-scale DNA: record store, same-genome reads, masked pooling, genome-of-origin scores."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from scicontrast.analysis.genome_eval import (
    origin_scores,
    read_codes,
    split_genomes,
)
from scicontrast.cli import main
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.classical import kmer_features
from scicontrast.data_adapters.dna.demo_genomes import generate_demo_genomes
from scicontrast.data_adapters.dna.encoding import encode_codes, reverse_complement
from scicontrast.data_adapters.dna.genome_reads import (
    GenomeReads,
    codes_to_tensor,
    cut_reads,
    reverse_complement_codes,
)
from scicontrast.data_adapters.dna.genome_store import GenomeAdapter, record_codes
from scicontrast.data_adapters.dna.kmers import kmer_frequencies
from scicontrast.errors import InputDataError
from scicontrast.models.dna_cnn import DNAConvEncoder

GENBANK_TEMPLATE = """LOCUS       {name}                  12 bp    DNA     linear   BCT 01-JAN-2000
DEFINITION  test record.
ACCESSION   {name}
VERSION     {name}.1
FEATURES             Location/Qualifiers
     source          1..12
{origin}//
"""


def write_genome(path: Path, records: dict[str, str]) -> Path:
    text = "".join(f">{name} description\n{seq[:7]}\n{seq[7:]}\n" for name, seq in records.items())
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def random_sequence(length: int, gc: float, seed: int) -> str:
    rng = np.random.default_rng(seed)
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(rng.choice(list("ACGT"), size=length, p=p))


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[list[str], str, dict[str, dict[str, str]]]:
    genomes = {
        "g_low": {
            "g_low_chr": random_sequence(3000, 0.25, 0),
            "g_low_p": random_sequence(900, 0.25, 1),
        },
        "g_mid": {"g_mid_chr": random_sequence(2500, 0.5, 2)},
        "g_high": {"g_high_chr": random_sequence(2000, 0.75, 3)},
    }
    paths = [
        str(write_genome(tmp_path / f"{name}.fa{'.gz' if name == 'g_mid' else ''}", records))
        for name, records in genomes.items()
    ]
    table = tmp_path / "genomes.tsv"
    table.write_text(
        "genome_id\tspecies\tstrain_label\n"
        "g_low\tlow\tlow 1\ng_mid\tmid\tmid 1\ng_high\thigh\thigh 1\n"
    )
    return paths, str(table), genomes


def test_store_keeps_every_record_once_memory_mapped(corpus, tmp_path):
    paths, table, genomes = corpus
    items = GenomeAdapter(paths, table=table).read()
    assert len(items) == 4 and items.table["length"].sum() == len(items.extras["codes"])
    items.save(tmp_path / "store")
    loaded = Items.load(tmp_path / "store")
    assert isinstance(loaded.extras["codes"], np.memmap)
    for row, record in loaded.table.iterrows():
        expected = genomes[record["genome"]][record["record_id"]]
        assert np.array_equal(record_codes(loaded, row), encode_codes(expected))
    assert set(loaded.table["species"]) == {"low", "mid", "high"}


@pytest.mark.filterwarnings("ignore::Bio.BiopythonParserWarning")
def test_genbank_reads_like_fasta_and_without_sequence_is_an_error(tmp_path):
    origin = "ORIGIN\n        1 acgtacgtnn ac\n"
    good = tmp_path / "gb_ok.gbk"
    good.write_text(GENBANK_TEMPLATE.format(name="REC1", origin=origin))
    items = GenomeAdapter([str(good)]).read()
    assert np.array_equal(record_codes(items, 0), encode_codes("ACGTACGTNNAC"))
    bad = tmp_path / "gb_bad.gbk"
    bad.write_text(GENBANK_TEMPLATE.format(name="REC2", origin="CONTIG      join(X:1..12)\n"))
    with pytest.raises(InputDataError, match=r"gb_bad\.gbk: record 1 \(REC2.*no sequence"):
        GenomeAdapter([str(bad)]).read()


@pytest.mark.parametrize(
    ("records", "table_rows", "message"),
    [
        ({"a": {"r1": "NNNNNNNNNNNN"}}, None, r"a\.fa: record 1 \(r1\).*all N"),
        ({"a": {"r1": "ACGTXACGTACG"}}, None, r"a\.fa: record 1 \(r1\).*invalid character 'X'"),
        ({"a": {"r1": "ACGTACGTACGT"}}, ["a", "b"], r"genome 'b' has no sequence file"),
        ({"a": {"r1": "ACGTACGTACGT"}, "b": {"r2": "ACGTACGTACGT"}}, ["a"], r"'b' has a file"),
        ({"a": {"r1": "ACGTACGTACGT"}}, ["a", "a"], r"t\.tsv: genome 'a' has more than one row"),
    ],
)
def test_bad_input_names_file_and_record_and_writes_nothing(tmp_path, records, table_rows, message):
    paths = [str(write_genome(tmp_path / f"{g}.fa", r)) for g, r in records.items()]
    params = {"paths": paths}
    if table_rows is not None:
        table = tmp_path / "t.tsv"
        table.write_text("genome_id\tspecies\n" + "".join(f"{g}\tsp\n" for g in table_rows))
        params["table"] = str(table)
    with pytest.raises(InputDataError, match=message):
        GenomeAdapter(**params).read()
    config = tmp_path / "c.yaml"
    table_line = f"\n        table: {params['table']}" if "table" in params else ""
    config.write_text(
        "experiments:\n  g:\n    adapter:\n      name: genomes\n      params:\n"
        f"        paths: {paths}{table_line}\n"
        "    pairs: {name: genome_reads}\n    encoder: {name: dna_cnn}\n"
    )
    out = tmp_path / "items"
    assert main(["prepare", "--config", str(config), "--out", str(out)]) != 0
    assert not out.exists()


def test_reverse_complement_codes_matches_strings():
    for seq in ("ACGTN", "AAGCTRYKMBDHVSW", "ttgca"):
        codes = encode_codes(seq)
        assert np.array_equal(
            reverse_complement_codes(codes), encode_codes(reverse_complement(seq))
        )
        assert np.array_equal(reverse_complement_codes(reverse_complement_codes(codes)), codes)
    assert np.array_equal(reverse_complement_codes(encode_codes("AACGN")), encode_codes("NCGTT"))
    one_hot = codes_to_tensor(encode_codes("AACGT"))
    assert torch.equal(codes_to_tensor(encode_codes("ACGTT")), one_hot.flip(-2).flip(-1))


def _locate(read: str, genome: dict[str, str]) -> bool:
    return any(read in seq or reverse_complement(read) in seq for seq in genome.values())


def test_training_batches_are_reads_of_their_genome(corpus):
    paths, table, genomes = corpus
    items = GenomeAdapter(paths, table=table).read()
    builder = GenomeReads(read_length=[50, 120], reads_per_group=3, steps_per_epoch=4)
    pairs = builder.build(items)
    batches = builder.training_batches(items, pairs, seed=0, batch_size=8)
    names = sorted(items.table["genome"].unique())
    lengths = set()
    for batch in batches:
        reads, ids = batch.inputs, batch.group_ids
        assert reads.shape[0] == 3 * 3 and torch.equal(ids.unique(), torch.arange(3))
        lengths.add(reads.shape[-1])
        for read, group in zip(reads, ids, strict=True):
            text = "".join("ACGT"[i] for i in read.argmax(0).tolist())
            assert _locate(text, genomes[names[int(group)]])
    assert len(lengths) > 1 and all(50 <= n <= 120 for n in lengths)
    # Batches are a function of (seed, epoch, index): resuming mid-epoch gives the same ones.
    batches.set_epoch(1)
    full = list(batches)
    batches.set_epoch(1, start_batch=2)
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(full[2:], batches, strict=True))


def test_reads_longer_than_any_record_are_an_error(corpus):
    paths, table, _ = corpus
    items = GenomeAdapter(paths, table=table).read()
    with pytest.raises(InputDataError, match=r"g_high\.fa: record g_high_chr .* shorter than"):
        cut_reads(items, 2100, 5, seed=0)
    builder = GenomeReads(read_length=[100, 2600])
    with pytest.raises(InputDataError, match=r"g_high\.fa: record g_high_chr"):
        builder.training_batches(items, builder.build(items), seed=0, batch_size=4)


def test_cut_reads_keep_metadata_and_strand(corpus):
    paths, table, genomes = corpus
    items = GenomeAdapter(paths, table=table).read()
    reads = cut_reads(items, 80, 10, seed=3, groups=["g_low", "g_high"])
    assert len(reads) == 20 and reads.table["item_id"].is_unique
    assert set(reads.table["species"]) == {"low", "high"}
    codes = read_codes(reads)
    for row, record in reads.table.iterrows():
        forward = genomes[record["genome"]][record["record_id"]][
            record["start"] : record["start"] + 80
        ]
        expected = forward if record["strand"] == "+" else reverse_complement(forward)
        assert np.array_equal(codes[row], encode_codes(expected))


def test_masked_encoder_embeds_a_padded_read_as_the_read_alone():
    torch.manual_seed(0)
    encoder = DNAConvEncoder(channels=8, kernel_size=5, layers=3, mask_padding=True).eval()
    read = codes_to_tensor(encode_codes(random_sequence(70, 0.5, 9)))
    padded = codes_to_tensor(encode_codes(random_sequence(70, 0.5, 9)), length=130)
    with torch.no_grad():
        alone = encoder(read[None])
        batch = encoder(torch.stack([padded, codes_to_tensor(np.full(130, 1, np.uint8))]))
        rc = encoder(padded.flip(-2).flip(-1)[None])
    torch.testing.assert_close(batch[0], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rc[0], alone[0], rtol=1e-5, atol=1e-5)
    plain = DNAConvEncoder(channels=8, kernel_size=5, layers=3).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(padded[None]), plain(read[None]), atol=1e-4)


def test_canonical_kmers_and_tnf():
    codes = np.stack([encode_codes(random_sequence(200, gc, i)) for i, gc in enumerate([0.3, 0.6])])
    rc = np.stack([reverse_complement_codes(c) for c in codes])
    for k, width in ((4, 136), (5, 512)):
        freq = kmer_frequencies(codes, k, canonical=True)
        assert freq.shape == (2, width)
        np.testing.assert_allclose(freq, kmer_frequencies(rc, k, canonical=True))
        np.testing.assert_allclose(freq.sum(axis=1), 1.0)
    z = kmer_features(np.concatenate([codes, rc, codes[::-1]]), 4, canonical=True).features
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)


def test_origin_scores_on_separated_and_shuffled_features():
    rng = np.random.default_rng(0)
    genomes = np.repeat(["a", "b", "c", "d"], 30)
    species = np.repeat(["x", "x", "y", "z"], 30)
    centres = rng.normal(size=(4, 8)) * 10
    separated = centres[np.repeat(np.arange(4), 30)] + rng.normal(size=(120, 8))
    scores = origin_scores(separated, genomes, species, embedding=False)
    assert scores["ari_strain"] == pytest.approx(1.0) and scores["knn_species"] == 1.0
    noise = origin_scores(rng.normal(size=(120, 8)), genomes, species, embedding=True)
    assert abs(noise["ari_strain"]) < 0.1 and noise["knn_strain"] < 0.5


def test_split_by_species_keeps_strains_together():
    import pandas as pd

    table = pd.DataFrame(
        {
            "genome": [f"g{i}" for i in range(12)],
            "species": [f"s{i // 2}" for i in range(12)],
        }
    )
    for by in ("genome", "species"):
        parts = split_genomes(table, by, seed=1)
        assert sorted(g for part in parts.values() for g in part) == sorted(table["genome"])
    species_of = dict(zip(table["genome"], table["species"], strict=True))
    parts = split_genomes(table, "species", seed=1)
    seen = [{species_of[g] for g in parts[p]} for p in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_demo_genomes_read_back_with_strains(tmp_path):
    paths = generate_demo_genomes(tmp_path, species=2, strains=2, length=2000, divergence=0.05)
    assert paths == sorted(paths) and len(paths) == 4
    items = GenomeAdapter([str(p) for p in paths], table=str(tmp_path / "genomes.tsv")).read()
    assert len(items) == 6  # strain 0 of each species has a plasmid record
    strain0 = np.concatenate([record_codes(items, i) for i in range(2)])
    strain1 = record_codes(items, 2)
    assert 0.9 < np.mean(strain0 == strain1) < 0.99
    again = generate_demo_genomes(
        tmp_path / "again", species=2, strains=2, length=2000, divergence=0.05
    )
    assert all(a.read_text() == b.read_text() for a, b in zip(paths, again, strict=True))


@pytest.mark.real_data
@pytest.mark.slow
def test_real_genbank_matches_fasta_and_reads_cut(shared_data):
    folder = shared_data / "genomes"
    fasta = GenomeAdapter([str(folder / "Escherichia_coli_K_12_MG1655.fa.gz")]).read()
    genbank = GenomeAdapter([str(folder / "Escherichia_coli_K_12_MG1655.gbk.gz")]).read()
    assert np.array_equal(record_codes(fasta, 0), record_codes(genbank, 0))
    small = [
        "Homo_sapiens_mitochondrion",
        "Human_herpesvirus_3",
        "Reclinomonas_americana_mitochondrion",
    ]
    items = GenomeAdapter(
        [str(folder / "*.fa.gz")], table=str(folder / "genomes.tsv"), genomes=small
    ).read()
    assert sorted(items.table["genome"]) == sorted(small)
    reads = cut_reads(items, 1000, 20, seed=0)
    assert read_codes(reads).shape == (60, 1000)
