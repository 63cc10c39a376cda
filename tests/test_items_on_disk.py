"""DNA items that stay on disk: the codes array, tables read by row group, pairs as row codes,
streamed embeddings, hashed id checks; and the same results as the whole-table path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from scicontrast.analysis.embed import load_embeddings, write_embeddings
from scicontrast.analysis.embed_stream import metadata_parts, write_stream
from scicontrast.config import select_experiment, validate_config
from scicontrast.data_adapters import pairs_table
from scicontrast.data_adapters.base import Items, ViewDataset, load_items
from scicontrast.data_adapters.chunks import write_chunks
from scicontrast.data_adapters.dna.files import CODES_ARRAY
from scicontrast.data_adapters.dna.reading import FastaAdapter
from scicontrast.data_adapters.dna.views import DNAViews, encode_windows
from scicontrast.data_adapters.id_hashes import HashedIdSet
from scicontrast.data_adapters.pairs_table import frame_parts, read_pairs, write_pairs
from scicontrast.errors import InputDataError
from scicontrast.experiment import Experiment
from scicontrast.models.train import train

WINDOW, FLANK = 30, 4


@pytest.fixture
def fasta(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    lengths = [95, 64, 30, 22, 41, 77]  # 22: shorter than a window, padded
    path = tmp_path / "x.fa"
    path.write_text(
        "".join(
            f">r{i}\n{''.join(rng.choice(list('ACGTACGTACGTN'), size=n))}\n"
            for i, n in enumerate(lengths)
        )
    )
    return path


def adapter(fasta: Path) -> FastaAdapter:
    return FastaAdapter(
        paths=[str(fasta)],
        window=WINDOW,
        stride=10,
        flank=FLANK,
        max_ambiguous_fraction=1.0,
        short_sequences="pad",
    )


@pytest.fixture
def folders(tmp_path, fasta) -> tuple[Path, Path]:
    """The items written in chunks of 7 rows (several row groups), and the same set in the
    format written before the codes array (table only)."""
    new, old = tmp_path / "new", tmp_path / "old"
    write_chunks(adapter(fasta).read_chunks(7), new)
    shutil.copytree(new, old)
    (old / f"{CODES_ARRAY}.npy").unlink()
    meta = json.loads((old / "meta.json").read_text())
    del meta["codes_array"]
    (old / "meta.json").write_text(json.dumps(meta))
    return new, old


def no_whole_table_reads(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a whole-table read")

    monkeypatch.setattr(pd, "read_parquet", refuse)
    monkeypatch.setattr(pq, "read_table", refuse)
    monkeypatch.setattr(pq.ParquetFile, "read", refuse)


def test_the_codes_array_is_the_sequence_column_encoded_with_its_padding(fasta):
    items = adapter(fasta).read()
    assert (items.table["left_pad"] > 0).any() and (items.table["right_pad"] > 0).any()
    expected = encode_windows(items.table, WINDOW + 2 * FLANK)
    np.testing.assert_array_equal(items.arrays[CODES_ARRAY], expected)


def test_steps_read_only_the_builder_columns_by_row_group(folders, monkeypatch):
    new, old = folders
    assert pq.ParquetFile(new / "items.parquet").num_row_groups > 1
    no_whole_table_reads(monkeypatch)
    items = load_items(new, DNAViews(group_by="record_id"))
    assert list(items.table.columns) == ["item_id", "record_id"]
    assert isinstance(items.arrays[CODES_ARRAY], np.memmap)
    # A set without the array reads the payload columns and encodes them.
    assert "sequence" in load_items(old, DNAViews()).table.columns


@pytest.mark.parametrize("group_by", [None, "record_id"])
def test_the_codes_array_and_the_old_format_give_the_same_pairs_and_batches(
    folders, tmp_path, group_by
):
    builder = DNAViews(max_shift=FLANK, mutation_rate=0.1, mask_fraction=0.2, group_by=group_by)
    batches = []
    for folder in folders:
        items = load_items(folder, builder)
        write_pairs(tmp_path / "pairs.parquet", builder.build_parts(folder))
        pairs = read_pairs(tmp_path / "pairs.parquet", items.table["item_id"])
        loader = builder.training_batches(items, pairs, seed=3, batch_size=4)
        loader.set_epoch(1)
        batches.append([(b.inputs, b.group_ids) for b in loader])
    assert len(batches[0]) > 1
    for (views, groups), (old_views, old_groups) in zip(*batches, strict=True):
        torch.testing.assert_close(views, old_views, rtol=0, atol=0)
        torch.testing.assert_close(groups, old_groups, rtol=0, atol=0)


def test_training_on_the_codes_array_gives_the_old_format_weights(folders, tmp_path):
    config = {
        "experiments": {
            "tiny": {
                "adapter": {"name": "dna_fasta", "params": {"paths": ["x.fa"], "window": WINDOW}},
                "pairs": {"name": "dna_views", "params": {"max_shift": 2}},
                "encoder": {"name": "dna_cnn", "params": {"channels": 8, "layers": 1}},
                "training": {"epochs": 2, "batch_size": 8, "seed": 1, "device": "cpu"},
            }
        }
    }
    experiment = Experiment.from_dict(select_experiment(validate_config(config), "tiny", "test"))
    weights = []
    for folder in folders:
        pairs = tmp_path / f"{folder.name}.parquet"
        write_pairs(pairs, DNAViews(max_shift=2).build_parts(folder))
        model = train(experiment, folder, pairs, tmp_path / f"model_{folder.name}", progress=False)
        weights.append(torch.load(model, weights_only=True)["state_dict"])
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], rtol=0, atol=0)


def test_the_view_index_equals_grouping_the_pairs_table():
    rng = np.random.default_rng(1)
    n = 40
    ids = np.array([f"w{i}" for i in rng.permutation(n)], dtype=object)
    items = Items(table=pd.DataFrame({"item_id": ids}), arrays={"x": np.zeros((n, 1))})
    rows = rng.integers(0, n, size=90)
    pairs = pd.DataFrame(
        {
            "group_id": rng.integers(0, 25, size=90) * 3,
            "item_id": ids[rows],
            "view": rng.choice(["forward", "reverse_complement", "neighbour"], size=90),
        }
    )

    class Rows(DNAViews):
        def bind(self, items):
            pass

    dataset = ViewDataset(items, pairs, Rows(), seed=0)
    # The construction before the view index: a groupby and a lookup per group.
    row_of = pd.Series(np.arange(n), index=ids)
    grouped = pairs.groupby("group_id", sort=True)
    assert dataset.group_ids.tolist() == list(grouped.groups.keys())
    for index, (_, group) in enumerate(grouped):
        item_rows, views = dataset.group_views(index)
        assert item_rows.tolist() == row_of.loc[group["item_id"].to_numpy()].tolist()
        assert views == group["view"].tolist()


def test_pairs_are_written_and_read_in_row_groups(tmp_path, monkeypatch):
    ids = pd.Series([f"i{k}" for k in range(30)], dtype=object)
    pairs = pd.DataFrame(
        {
            "group_id": np.repeat(np.arange(30), 2),
            "item_id": np.repeat(ids.to_numpy(), 2),
            "view": np.tile(np.array(["forward", "reverse_complement"], dtype=object), 30),
        }
    )
    monkeypatch.setattr(pairs_table, "ROW_GROUP_ROWS", 8)
    path = tmp_path / "pairs.parquet"
    write_pairs(path, frame_parts(pairs))
    assert pq.ParquetFile(path).num_row_groups == 8
    pd.testing.assert_frame_equal(pd.read_parquet(path), pairs)
    no_whole_table_reads(monkeypatch)
    read = read_pairs(path, ids)
    assert read["item_id"].cat.codes.tolist() == np.repeat(np.arange(30), 2).tolist()
    pd.testing.assert_frame_equal(read.astype({"item_id": object}), pairs)


def test_a_pairs_row_naming_no_item_names_the_row_and_row_group(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs_table, "ROW_GROUP_ROWS", 4)
    pairs = pd.DataFrame({"group_id": range(10), "item_id": list("abcdefghiz"), "view": "x"})
    write_pairs(tmp_path / "pairs.parquet", frame_parts(pairs))
    with pytest.raises(InputDataError, match=r"pairs\.parquet: row 9 \(row group 2\) .*'z'"):
        read_pairs(tmp_path / "pairs.parquet", pd.Series(list("abcdefghij")))


def test_a_truncated_pairs_table_or_codes_array_names_the_file(folders, tmp_path):
    new, _ = folders
    pairs = DNAViews().build(load_items(new, DNAViews()))
    path = tmp_path / "pairs.parquet"
    write_pairs(path, frame_parts(pairs))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match=r"pairs\.parquet: .*(truncated|not a readable)"):
        read_pairs(path, pairs["item_id"])
    codes = new / f"{CODES_ARRAY}.npy"
    codes.write_bytes(codes.read_bytes()[:-7])
    with pytest.raises(InputDataError, match=r"codes\.npy: truncated"):
        load_items(new, DNAViews())


def test_streamed_embeddings_equal_the_whole_write_for_any_cut(tmp_path):
    rng = np.random.default_rng(0)
    n = 23
    table = pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "label": rng.integers(0, 3, n)})
    table["sequence"] = "ACGT"
    table["note"] = [None] * 8 + ["x"] * (n - 8)  # null throughout the first row group
    items = Items(table=table, meta={"payload_columns": ["sequence"]})
    write_chunks([Items(table=table.iloc[s : s + 8]) for s in range(0, n, 8)], tmp_path / "items")
    vectors = rng.normal(size=(n, 5)).astype(np.float32)
    write_embeddings(tmp_path / "whole", items.table.drop(columns="sequence"), vectors)
    for rows in (range(0, n), range(5, 19)):
        stored, parts = metadata_parts(tmp_path / "items", ["sequence"], rows)
        chunks = [vectors[rows][s : s + 3] for s in range(0, len(rows), 3)]
        write_stream(tmp_path / "streamed", stored, parts, chunks, len(rows))
        metadata, loaded = load_embeddings(tmp_path / "streamed")
        whole_metadata, whole = load_embeddings(tmp_path / "whole")
        expected = whole_metadata.iloc[rows.start : rows.stop].reset_index(drop=True)
        pd.testing.assert_frame_equal(metadata, expected)
        np.testing.assert_array_equal(loaded, whole[rows.start : rows.stop])


def test_a_stream_with_too_few_embeddings_leaves_nothing(tmp_path):
    table = pd.DataFrame({"item_id": ["a", "b", "c"]})
    Items(table=table).save(tmp_path / "items")
    stored, parts = metadata_parts(tmp_path / "items", [], range(3))
    with pytest.raises(ValueError, match="embedded 2 rows for 3 items"):
        write_stream(tmp_path / "out", stored, parts, [np.zeros((2, 4), np.float32)], 3)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["items"]


def test_hashed_ids_find_repeats_within_and_across_chunks():
    seen = HashedIdSet()
    assert seen.add_new(np.array(["a", "b", "c"], dtype=object)) is None
    assert seen.add_new(np.array(["d", "e"], dtype=object)) is None
    assert seen.add_new(np.array(["f", "g", "b"], dtype=object)) == 2  # repeats an earlier id
    assert seen.add_new(np.array(["h", "h"], dtype=object)) == 1  # repeats within the chunk
    assert len(seen) == 5  # a chunk with a repeat adds nothing
    numbers = HashedIdSet()
    assert numbers.add_new(np.arange(1000)) is None
    assert numbers.add_new(np.array([1000, 5])) == 1


def test_embedding_batches_are_the_canonical_views_and_leave_the_codes_on_disk(folders):
    for folder in folders:
        builder = DNAViews(max_shift=FLANK)
        items = load_items(folder, builder)
        batches = torch.cat(list(builder.embedding_batches(items, 4)))
        one_by_one = torch.stack([builder.canonical(i) for i in range(len(items))])
        torch.testing.assert_close(batches, one_by_one, rtol=0, atol=0)
