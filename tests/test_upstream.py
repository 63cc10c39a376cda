"""Upstream regions of GenBank genes (adapter ``genbank_upstream``) and same-locus positives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import FeatureLocation, SeqFeature
from Bio.SeqRecord import SeqRecord

from scicontrast.cli import main
from scicontrast.data_adapters.dna.encoding import reverse_complement
from scicontrast.data_adapters.dna.upstream import UpstreamAdapter, window_offsets
from scicontrast.data_adapters.dna.views import DNAViews
from scicontrast.errors import ConfigError, InputDataError

# upstream u, downstream d, window, stride, flank of the small cases below
SMALL = {"upstream": 50, "downstream": 10, "window": 20, "stride": 10, "flank": 3}


def random_bases(length: int, seed: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), size=length))


def write_genbank(
    path: Path, sequence: str, genes: list[tuple[int, int, int, str]], topology: str = "linear"
) -> Path:
    """A one-record GenBank file; ``genes`` are ``(start, end, strand, locus_tag)``, 0-based
    half-open as Biopython's locations (GenBank's ``start+1..end``)."""
    record = SeqRecord(
        Seq(sequence),
        id="REC1",
        name="REC1",
        description="hand-made record",
        annotations={"molecule_type": "DNA", "topology": topology},
    )
    record.features = [
        SeqFeature(FeatureLocation(s, e, strand=strand), type="gene", qualifiers={"locus_tag": [t]})
        for s, e, strand, t in genes
    ]
    SeqIO.write(record, path, "genbank")
    return path


@pytest.fixture
def two_genes(tmp_path: Path) -> tuple[Path, str]:
    """A plus gene at 401..460 starting ATG, a minus gene at 101..160 whose start codon
    (read on the minus strand) is the reverse complement of its last three bases, CAT."""
    bases = list(random_bases(1000, 0))
    bases[400:403] = "ATG"
    bases[157:160] = "CAT"
    sequence = "".join(bases)
    genes = [(400, 460, 1, "p1"), (100, 160, -1, "m1")]
    path = write_genbank(tmp_path / "rec.gbk", sequence, genes)
    return path, sequence


def test_upstream_regions_follow_the_gene_strand(two_genes):
    """Plus gene: bases [p - u, p + d) as read; minus gene: [e - d, e + u) reverse-complemented,
    so both regions read 5'->3' on the gene's strand with the start codon at offset u."""
    path, sequence = two_genes
    items = UpstreamAdapter(str(path), **SMALL).read()
    u, d, window, flank = 50, 10, 20, 3
    expected = {
        "p1": sequence[400 - u - flank : 400 + d + flank],
        "m1": reverse_complement(sequence[160 - d - flank : 160 + u + flank]),
    }
    assert window_offsets(u + d, window, 10) == [0, 10, 20, 30, 40]
    for locus, extended in expected.items():
        rows = items.table[items.table["locus"] == locus]
        assert rows["position"].tolist() == [-50, -40, -30, -20, -10]
        for position, stored in zip(rows["position"], rows["sequence"], strict=True):
            offset = position + u
            assert stored == extended[offset : offset + window + 2 * flank]
        region = extended[flank:-flank]
        assert region[u : u + 3] == "ATG"
    assert items.table.set_index("locus")["strand"].to_dict() == {"p1": "+", "m1": "-"}
    assert set(items.table["window_start"]) == {flank}
    assert items.meta["window"] == window and items.meta["modality"] == "dna"


def test_circular_record_wraps_and_linear_record_is_an_error(tmp_path):
    sequence = random_bases(300, 1)
    circular = write_genbank(tmp_path / "c.gbk", sequence, [(20, 80, 1, "g0")], "circular")
    items = UpstreamAdapter(str(circular), **SMALL).read()
    stored = items.table.set_index("position")["sequence"]
    # the region with its flanks is [20 - 50 - 3, 20 + 10 + 3) = [-33, 33): across the origin
    assert stored[-50] == sequence[-33:-7]
    assert stored[-20] == sequence[-3:] + sequence[:23]
    linear = write_genbank(tmp_path / "l.gbk", sequence, [(20, 80, 1, "g0")], "linear")
    with pytest.raises(InputDataError, match=r"l\.gbk: record 1 \(REC1\).*gene g0 runs off"):
        UpstreamAdapter(str(linear), **SMALL).read()
    minus_end = write_genbank(tmp_path / "m.gbk", sequence, [(250, 280, -1, "g9")], "linear")
    with pytest.raises(InputDataError, match=r"m\.gbk: record 1 \(REC1\).*gene g9 runs off"):
        UpstreamAdapter(str(minus_end), **SMALL).read()
    skipped = UpstreamAdapter(str(linear), off_end="skip", background=2, **SMALL).read()
    assert skipped.meta["skipped_genes"] == 1
    assert skipped.table["locus"].str.startswith("background:").all()


def test_background_windows_are_reads_of_the_record(tmp_path):
    sequence = random_bases(400, 2)
    path = write_genbank(tmp_path / "b.gbk", sequence, [(200, 260, 1, "g")])
    items = UpstreamAdapter(str(path), background=30, **SMALL).read()
    background = items.table[items.table["locus"].str.startswith("background:")]
    assert len(background) == 30 and background["item_id"].is_unique
    for stored, strand in zip(background["sequence"], background["strand"], strict=True):
        forward = stored if strand == "+" else reverse_complement(stored)
        assert len(stored) == 26 and forward in sequence


def test_windows_of_one_locus_are_positives_of_each_other(two_genes):
    """dna_views with group_by locus: one group per gene, all its windows' views in it."""
    path, _ = two_genes
    items = UpstreamAdapter(str(path), **SMALL).read()
    pairs = DNAViews(reverse_complement=True, max_shift=3, group_by="locus").build(items)
    locus_of = items.table.set_index("item_id")["locus"]
    per_group = pairs.groupby("group_id")["item_id"].agg(lambda ids: set(locus_of[list(ids)]))
    assert len(per_group) == 2 and all(len(loci) == 1 for loci in per_group)
    assert pairs.groupby("group_id").size().tolist() == [10, 10]  # 5 windows x 2 views


GENBANK_WITHOUT_SEQUENCE = """\
LOCUS       NOSEQ                  12 bp    DNA     linear   BCT 01-JAN-2000
DEFINITION  test record.
ACCESSION   NOSEQ
VERSION     NOSEQ.1
FEATURES             Location/Qualifiers
     source          1..12
     gene            3..8
                     /locus_tag="x1"
CONTIG      join(X:1..12)
//
"""


def test_bad_input_names_file_and_record_and_writes_nothing(tmp_path, two_genes):
    no_sequence = tmp_path / "noseq.gbk"
    no_sequence.write_text(GENBANK_WITHOUT_SEQUENCE)
    with pytest.raises(InputDataError, match=r"noseq\.gbk: record 1 \(NOSEQ.*no sequence"):
        UpstreamAdapter(str(no_sequence), **SMALL).read()
    no_genes = write_genbank(tmp_path / "nog.gbk", random_bases(200, 3), [])
    with pytest.raises(InputDataError, match=r"nog\.gbk: no 'gene' feature"):
        UpstreamAdapter(str(no_genes), **SMALL).read()
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGT\n")
    with pytest.raises(InputDataError, match=r"x\.fa: genbank_upstream reads GenBank"):
        UpstreamAdapter(str(fasta), **SMALL).read()
    with pytest.raises(ConfigError, match="window 90 exceeds the region"):
        UpstreamAdapter(str(fasta), upstream=50, downstream=10, window=90)
    config = tmp_path / "c.yaml"
    config.write_text(
        "experiments:\n  u:\n    adapter:\n      name: genbank_upstream\n      params:\n"
        f"        paths: [{no_sequence}]\n"
        "    pairs: {name: dna_views, params: {group_by: locus}}\n    encoder: {name: dna_cnn}\n"
    )
    out = tmp_path / "items"
    assert main(["prepare", "--config", str(config), "--out", str(out)]) != 0
    assert not out.exists()
