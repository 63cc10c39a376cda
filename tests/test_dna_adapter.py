"""DNA encoding helpers and the FASTA/FASTQ adapter."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from scicontrast.data_adapters.dna.encoding import (
    IUPAC_BASES,
    InvalidBaseError,
    encode_codes,
    one_hot,
    reverse_complement,
    window_starts,
)
from scicontrast.data_adapters.dna.reading import FastaAdapter
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS

IUPAC = "ACGTRYSWKMBDHVN"
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}


def random_sequence(rng: np.random.Generator, length: int, alphabet: str = "ACGT") -> str:
    return "".join(rng.choice(list(alphabet), size=length))


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    lines = []
    for record_id, sequence in records.items():
        lines.append(f">{record_id} some description")
        lines.extend(sequence[i : i + width] for i in range(0, len(sequence), width))
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def write_fastq(path: Path, records: dict[str, str]) -> Path:
    text = "".join(f"@{r}\n{s}\n+\n{'I' * len(s)}\n" for r, s in records.items())
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


# --- encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("ambiguous", ["uniform", "zero"])
def test_one_hot_of_reverse_complement_is_flipped_one_hot(ambiguous):
    rng = np.random.default_rng(0)
    for _ in range(50):
        seq = random_sequence(rng, int(rng.integers(1, 80)), IUPAC + IUPAC.lower() + "NNNN")
        x = torch.from_numpy(one_hot(seq, ambiguous))
        expected = x.flip(-2).flip(-1)
        assert torch.equal(torch.from_numpy(one_hot(reverse_complement(seq), ambiguous)), expected)


def test_reverse_complement_is_an_involution_and_iupac_aware():
    rng = np.random.default_rng(1)
    for _ in range(50):
        seq = random_sequence(rng, int(rng.integers(0, 60)), IUPAC + IUPAC.lower())
        assert reverse_complement(reverse_complement(seq)) == seq
    assert reverse_complement("ACGTRYKMBVDHNSW") == "WSNDHBVKMRYACGT"
    assert reverse_complement("aacN") == "Ngtt"
    assert reverse_complement("U") == "A"


def test_iupac_complement_is_the_complementary_base_set():
    for symbol in IUPAC:
        complement = reverse_complement(symbol)
        assert set(IUPAC_BASES[complement]) == {COMPLEMENT[b] for b in IUPAC_BASES[symbol]}


def test_fractional_encodings():
    x = one_hot("ARNBacgu")
    assert x.dtype == np.float32 and x.shape == (4, 8)
    np.testing.assert_array_equal(x[:, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(x[:, 1], [0.5, 0, 0.5, 0])
    np.testing.assert_array_equal(x[:, 2], [0.25] * 4)
    np.testing.assert_allclose(x[:, 3], [0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_array_equal(x[:, 4:], np.eye(4, dtype=np.float32))  # lowercase, U = T
    np.testing.assert_allclose(x.sum(axis=0), 1.0, rtol=1e-6)
    zero = one_hot("ARNB", ambiguous="zero")
    np.testing.assert_array_equal(zero[:, 1:], 0)
    np.testing.assert_array_equal(zero[:, 0], [1, 0, 0, 0])
    with pytest.raises(ValueError, match="ambiguous"):
        one_hot("ACGT", ambiguous="drop")


@pytest.mark.parametrize("bad", ["0", "-", ".", "*", "X", "J", " ", "\t", "é", ">"])
def test_invalid_characters_name_their_position(bad):
    seq = "ACG" + bad + "T"
    with pytest.raises(InvalidBaseError, match="position 4") as info:
        one_hot(seq)
    assert info.value.position == 4 and info.value.character == bad
    with pytest.raises(ValueError, match="position 4"):
        reverse_complement(seq)


def test_codes_are_vectorised_and_consistent_with_one_hot():
    rng = np.random.default_rng(2)
    seq = random_sequence(rng, 10_000, IUPAC)
    codes = encode_codes(seq)
    assert codes.dtype == np.uint8 and codes.shape == (10_000,) and codes.min() >= 1
    assert one_hot(seq).shape == (4, 10_000)


# --- windows -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "window", "stride", "expected"),
    [
        (199, 200, 200, []),
        (200, 200, 200, [0]),
        (500, 200, 200, [0, 200]),  # 100 bases left: exactly half a stride, no tail window
        (501, 200, 200, [0, 200, 301]),  # 101 left: more than half, window aligned to the end
        (260, 100, 50, [0, 50, 100, 150]),
        (280, 100, 50, [0, 50, 100, 150, 180]),
        (950, 100, 300, [0, 300, 600, 850]),
        (1000, 100, 300, [0, 300, 600, 900]),
    ],
)
def test_window_starts_tail_policy(length, window, stride, expected):
    assert window_starts(length, window, stride).tolist() == expected


def test_windows_cover_the_record_up_to_half_a_stride(tmp_path):
    rng = np.random.default_rng(3)
    records = {f"r{i}": random_sequence(rng, int(n)) for i, n in enumerate([50, 73, 99, 130])}
    path = write_fasta(tmp_path / "x.fa", records)
    items = FastaAdapter(paths=[str(path)], window=50, stride=20, flank=5).read()
    table = items.table
    for record_id, sequence in records.items():
        rows = table[table["record_id"] == record_id]
        starts = rows["start"].tolist()
        assert starts == window_starts(len(sequence), 50, 20).tolist()
        assert (rows["end"] - rows["start"] == 50).all()
        assert len(sequence) - rows["end"].max() <= 10
    assert len(table) == sum(len(window_starts(len(s), 50, 20)) for s in records.values())


# --- adapter: columns and formats --------------------------------------------------------


def test_items_columns_flanks_and_padding(tmp_path):
    rng = np.random.default_rng(4)
    sequence = random_sequence(rng, 120)
    path = write_fasta(tmp_path / "x.fa", {"chr1": sequence.lower()})
    items = FastaAdapter(paths=[str(path)], window=40, flank=10).read()
    table = items.table
    assert table["item_id"].tolist() == ["chr1:1-40", "chr1:41-80", "chr1:81-120"]
    assert table["left_pad"].tolist() == [10, 0, 0]
    assert table["right_pad"].tolist() == [0, 0, 10]
    assert table["window_start"].tolist() == [0, 10, 10]
    for row in table.itertuples():
        assert row.sequence == row.sequence.upper()
        assert (
            row.sequence[row.window_start : row.window_start + 40]
            == sequence[row.start : row.end].upper()
        )
        assert row.left_pad + len(row.sequence) + row.right_pad == 40 + 2 * 10
        assert row.source_file == str(path)
    assert items.meta["modality"] == "dna"
    assert items.meta["window"] == 40 and items.meta["flank"] == 10
    assert items.meta["payload_columns"] == ["sequence", "window_start", "left_pad", "right_pad"]
    assert items.meta["records"] == 1


def test_gzipped_and_plain_files_give_identical_items(tmp_path):
    rng = np.random.default_rng(5)
    records = {f"r{i}": random_sequence(rng, 200, "ACGTN") for i in range(5)}
    params = {"window": 64, "max_ambiguous_fraction": 0.5}
    plain = FastaAdapter(paths=[str(write_fasta(tmp_path / "x.fa", records))], **params)
    zipped = FastaAdapter(paths=[str(write_fasta(tmp_path / "x.fa.gz", records))], **params)
    a, b = plain.read().table, zipped.read().table
    pd.testing.assert_frame_equal(a.drop(columns="source_file"), b.drop(columns="source_file"))


@pytest.mark.parametrize("name", ["reads.fq", "reads.fastq.gz"])
def test_fastq(tmp_path, name):
    records = {"read1": "ACGTACGTAC" * 3, "read2": "TTTTGGGGCC" * 3}
    items = FastaAdapter(paths=[str(write_fastq(tmp_path / name, records))], window=30).read()
    assert items.table["sequence"].tolist() == list(records.values())


def test_format_is_forced_or_refused(tmp_path):
    path = write_fasta(tmp_path / "x.seq", {"r": "ACGT" * 10})
    assert len(FastaAdapter(paths=[str(path)], window=40, format="fasta").read()) == 1
    with pytest.raises(ConfigError, match=r"x\.seq.*format"):
        FastaAdapter(paths=[str(path)], window=40).read()


def test_glob_and_duplicate_record_ids_across_files(tmp_path):
    write_fasta(tmp_path / "a.fa", {"r": "A" * 20, "only_a": "C" * 20})
    write_fasta(tmp_path / "b.fa", {"r": "G" * 20})
    adapter = FastaAdapter(paths=[str(tmp_path / "*.fa")], window=20)
    assert adapter.input_files() == [tmp_path / "a.fa", tmp_path / "b.fa"]
    table = adapter.read().table
    assert table["item_id"].tolist() == ["a/r:1-20", "only_a:1-20", "b/r:1-20"]


def test_input_files_keeps_missing_literal_paths_and_read_refuses_them(tmp_path):
    missing = tmp_path / "later.fa"
    adapter = FastaAdapter(paths=[str(missing)], window=10)
    assert adapter.input_files() == [missing]
    with pytest.raises(InputDataError, match=r"later\.fa"):
        adapter.read()
    with pytest.raises(InputDataError, match=r"nothing_\*\.fa"):
        FastaAdapter(paths=[str(tmp_path / "nothing_*.fa")], window=10).input_files()


def test_registry_resolves_the_adapter(tmp_path):
    path = write_fasta(tmp_path / "x.fa", {"r": "ACGT" * 5})
    adapter = ADAPTERS.create({"name": "dna_fasta", "params": {"paths": [str(path)], "window": 20}})
    assert isinstance(adapter, FastaAdapter)


@pytest.mark.parametrize(
    "params",
    [
        {"window": 0},
        {"stride": -1},
        {"flank": -2},
        {"short_sequences": "truncate"},
        {"ambiguous": "random"},
        {"max_ambiguous_fraction": 1.5},
        {"labels_missing": "maybe"},
        {"format": "genbank"},
        {"label_from_filename": r"source_\d+"},
        {"label_from_filename": r"(?P<start>\d+)"},
        {"label_from_filename": r"(?P<x>"},
    ],
)
def test_bad_params_raise_config_error(params):
    with pytest.raises(ConfigError, match="params"):
        FastaAdapter(paths=["x.fa"], **params)


# --- adapter: bad input ------------------------------------------------------------------


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("comment.fa", lambda p: _text(p, "junk\n>r1\nACGT\n"), "before the first record"),
        ("quality.fq", lambda p: _text(p, "@read7\nACGT\n+\nIII\n"), "read7"),
        (
            "garbage.fa",
            lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfa" * 20) and p,
            "not a text",
        ),
        ("empty.fa", lambda p: _text(p, ""), "no records"),
        ("nothing.fa", lambda p: _text(p, ">r1\nACGT\n>r2\n>r3\nAC\n"), "'r2'"),
        ("bad.fa", lambda p: _text(p, ">r1\nACGT\n>r2\nACG-T\n"), "'r2'.*'-' at position 4"),
        ("semicolon.fa", lambda p: _text(p, ">r1\nACGT\n;note\n"), "'r1'.*';' at position 5"),
        ("twice.fa", lambda p: _text(p, ">r1\nACGT\n>r1\nACGT\n"), "'r1' occurs twice"),
        ("noid.fa", lambda p: _text(p, ">\nACGT\n"), "record #1 has an empty id"),
        (
            "zipped.fa",
            lambda p: p.write_bytes(gzip.compress(b">r1\nACGT\n")) and p,
            "gz",
        ),
        ("broken.fa.gz", lambda p: p.write_bytes(b"not gzip at all") and p, "cannot read"),
    ],
)
def test_bad_input_names_file_and_record(tmp_path, name, make, expected):
    path = tmp_path / name
    make(path)
    with pytest.raises(InputDataError, match=expected) as info:
        FastaAdapter(paths=[str(path)], window=2).read()
    assert str(path) in str(info.value)


def test_error_after_a_record_names_that_record(tmp_path):
    path = _text(tmp_path / "q.fq", "@good\nACGT\n+\nIIII\n@bad\nACGT\n+\nII\n")
    with pytest.raises(InputDataError, match=r"q\.fq.*after 'good'.*bad"):
        FastaAdapter(paths=[str(path)], window=2).read()


# --- short records and ambiguous windows -------------------------------------------------


def test_short_sequences_policies(tmp_path):
    path = write_fasta(tmp_path / "x.fa", {"long": "ACGT" * 10, "tiny": "ACGTAC"})
    with pytest.raises(InputDataError, match=r"x\.fa.*'tiny'.*short_sequences"):
        FastaAdapter(paths=[str(path)], window=20).read()

    with pytest.warns(UserWarning, match="skipped 1 records"):
        skipped = FastaAdapter(paths=[str(path)], window=20, short_sequences="skip").read()
    assert set(skipped.table["record_id"]) == {"long"}
    assert skipped.meta["dropped_windows"]["short_record"] == 1
    assert skipped.meta["records"] == 2

    padded = FastaAdapter(paths=[str(path)], window=20, flank=3, short_sequences="pad").read()
    tiny = padded.table[padded.table["record_id"] == "tiny"].iloc[0]
    assert tiny["item_id"] == "tiny:1-6"
    assert (tiny["start"], tiny["end"], tiny["window_start"]) == (0, 6, 0)
    assert (tiny["left_pad"], tiny["right_pad"]) == (3, 3 + 14)
    assert tiny["sequence"] == "ACGTAC"


def test_ambiguous_windows_are_dropped_and_counted(tmp_path):
    # windows of 10: 1 N (kept at 10%), 2 N (dropped), none, all N (dropped)
    sequence = "ACGTNACGTA" + "NNACGTACGT" + "ACGTACGTAC" + "N" * 10
    path = write_fasta(tmp_path / "x.fa", {"r": sequence})
    with pytest.warns(UserWarning, match="dropped 2 windows"):
        items = FastaAdapter(paths=[str(path)], window=10).read()
    assert items.table["start"].tolist() == [0, 20]
    assert items.meta["dropped_windows"]["too_ambiguous"] == 2
    lenient = FastaAdapter(paths=[str(path)], window=10, max_ambiguous_fraction=1.0).read()
    assert len(lenient) == 4


def test_ambiguous_fraction_boundary_is_inclusive(tmp_path):
    path = write_fasta(tmp_path / "x.fa", {"r": "N" * 29 + "A" * 71})
    items = FastaAdapter(paths=[str(path)], window=100, max_ambiguous_fraction=0.29).read()
    assert len(items) == 1


def test_all_windows_dropped_is_an_error(tmp_path):
    path = write_fasta(tmp_path / "x.fa", {"r": "N" * 30})
    with (
        pytest.warns(UserWarning),
        pytest.raises(InputDataError, match=r"x\.fa.*no windows left"),
    ):
        FastaAdapter(paths=[str(path)], window=10).read()


# --- labels ------------------------------------------------------------------------------


@pytest.fixture
def two_records(tmp_path) -> Path:
    return write_fasta(tmp_path / "x.fa", {"1": "ACGT" * 5, "b": "TTGCA" * 4})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_labels_table_becomes_metadata(tmp_path, two_records, suffix):
    frame = pd.DataFrame({"id": ["1", "b"], "species": ["human", "mouse"], "gc": [0.5, 0.4]})
    path = tmp_path / f"labels{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    items = FastaAdapter(
        paths=[str(two_records)], window=20, labels=str(path), labels_key="id"
    ).read()
    table = items.table.set_index("record_id")
    assert table.loc["1", "species"] == "human" and table.loc["b", "species"] == "mouse"
    assert table.loc["b", "gc"] == pytest.approx(0.4)
    assert "id" not in items.table.columns
    assert items.meta["metadata_columns"] == ["species", "gc"]


def test_labels_table_problems(tmp_path, two_records):
    labels = tmp_path / "labels.csv"
    labels.write_text("record_id,species\n1,human\nb,mouse\nzzz,yeast\n")
    with pytest.warns(UserWarning, match="1 rows name no record"):
        items = FastaAdapter(paths=[str(two_records)], window=20, labels=str(labels)).read()
    assert items.meta["unmatched_label_rows"] == 1

    labels.write_text("record_id,species\n1,human\n")
    with pytest.raises(InputDataError, match=r"labels\.csv.*'b'.*labels_missing"):
        FastaAdapter(paths=[str(two_records)], window=20, labels=str(labels)).read()
    allowed = FastaAdapter(
        paths=[str(two_records)], window=20, labels=str(labels), labels_missing="allow"
    ).read()
    assert allowed.table.set_index("record_id")["species"].isna().tolist() == [False, True]

    labels.write_text("record_id,species\n1,human\nb,mouse\n1,rat\n")
    with pytest.raises(InputDataError, match=r"labels\.csv: row 3: duplicate record_id '1'"):
        FastaAdapter(paths=[str(two_records)], window=20, labels=str(labels)).read()

    labels.write_text("name,species\n1,human\n")
    with pytest.raises(InputDataError, match=r"labels\.csv.*'record_id'"):
        FastaAdapter(paths=[str(two_records)], window=20, labels=str(labels)).read()

    labels.write_text("record_id,start\n1,3\nb,4\n")
    with pytest.raises(InputDataError, match=r"labels\.csv.*'start'"):
        FastaAdapter(paths=[str(two_records)], window=20, labels=str(labels)).read()


def test_label_from_filename(tmp_path):
    (tmp_path / "lab_a").mkdir()
    write_fasta(tmp_path / "lab_a" / "human.fa", {"r1": "ACGT" * 5})
    write_fasta(tmp_path / "lab_a" / "mouse.fa.gz", {"r2": "ACGT" * 5})
    pattern = r"(?P<lab>lab_\w+)/(?P<species>[^/.]+)\.fa"
    items = FastaAdapter(
        paths=[str(tmp_path / "lab_a" / "*.fa*")], window=20, label_from_filename=pattern
    ).read()
    assert items.table[["lab", "species"]].values.tolist() == [
        ["lab_a", "human"],
        ["lab_a", "mouse"],
    ]
    odd = write_fasta(tmp_path / "odd.fasta", {"r3": "ACGT" * 5})
    with pytest.raises(InputDataError, match=r"odd\.fasta.*label_from_filename"):
        FastaAdapter(paths=[str(odd)], window=20, label_from_filename=pattern).read()


def test_a_group_outside_the_match_leaves_its_files_unlabelled(tmp_path):
    for name in ("Ecoli_prom", "Ecoli_non_prom", "Bacillus_prom"):
        write_fasta(tmp_path / f"{name}.fa", {f"{name}_r": "ACGT" * 5})
    pattern = r"(?:Ecoli_(?P<sequence_class>prom|non_prom)|Bacillus_\w+)\.fa$"
    items = FastaAdapter(
        paths=[
            str(tmp_path / f"{n}.fa") for n in ("Ecoli_prom", "Ecoli_non_prom", "Bacillus_prom")
        ],
        window=20,
        label_from_filename=pattern,
    ).read()
    labels = items.table["sequence_class"]
    assert labels.iloc[:2].tolist() == ["prom", "non_prom"]
    assert labels.iloc[2:].isna().all() and len(items) == 3


def test_duplicate_record_ids_error_or_number(tmp_path):
    path = tmp_path / "dups.fa"
    path.write_text(">DNA a\nACGTACGTAC\n>DNA b\nGGGGCCCCAA\n>DNA c\nTTTTAAAACC\n")
    with pytest.raises(InputDataError, match=r"dups\.fa: record 'DNA' occurs twice"):
        FastaAdapter(paths=[str(path)], window=10).read()
    items = FastaAdapter(paths=[str(path)], window=10, duplicate_ids="number").read()
    assert items.table["record_id"].tolist() == ["DNA", "DNA#2", "DNA#3"]
    assert items.table["item_id"].is_unique
    assert items.table["sequence"].tolist() == ["ACGTACGTAC", "GGGGCCCCAA", "TTTTAAAACC"]
    assert items.meta["renamed_duplicate_ids"] == 2
