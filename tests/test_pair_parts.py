"""The pairs table built and written in parts (``PairBuilder.build_parts``, ``write_pairs``):
the same file as the table built whole, however the parts and row groups fall."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scicontrast.data_adapters import pairs_table
from scicontrast.data_adapters.base import Items, PairBuilder, load_items
from scicontrast.data_adapters.chunks import write_chunks
from scicontrast.data_adapters.dna.demo import generate_demo_dna
from scicontrast.data_adapters.dna.reading import FastaAdapter
from scicontrast.data_adapters.dna.views import DNAViews
from scicontrast.data_adapters.images.rotations import RotationViews
from scicontrast.data_adapters.pair_parts import FirstSeenCodes
from scicontrast.data_adapters.pairs_table import frame_parts, write_pairs
from scicontrast.errors import InputDataError


@pytest.fixture
def dna_folder(tmp_path) -> Path:
    """The DNA demo's windows (two sources, 30 windows) in row groups of at most 7 items."""
    fasta = generate_demo_dna(tmp_path / "fa", sources=2, sequences_per_source=5, length=90)
    reader = FastaAdapter(paths=[str(p) for p in fasta], window=40, stride=20, flank=2)
    write_chunks(reader.read_chunks(7), tmp_path / "items")
    assert pq.ParquetFile(tmp_path / "items" / "items.parquet").num_row_groups >= 3
    return tmp_path / "items"


@pytest.mark.parametrize(
    "params",
    [
        {"max_shift": 2},
        {"reverse_complement": False, "max_shift": 2, "group_by": "record_id"},
        {"max_shift": 2, "neighbours": 2},  # the default parts: neighbours need all windows
    ],
)
def test_dna_pairs_in_parts_are_the_file_of_the_table_built_whole(
    dna_folder, tmp_path, monkeypatch, params
):
    monkeypatch.setattr(pairs_table, "ROW_GROUP_ROWS", 10)  # row groups across the parts
    builder = DNAViews(**params)
    table = builder.build(load_items(dna_folder, builder))
    write_pairs(tmp_path / "whole.parquet", frame_parts(table))
    if "neighbours" not in params:

        def refuse(*args, **kwargs):
            raise AssertionError("the items were loaded whole")

        monkeypatch.setattr(Items, "load", refuse)
    counts = write_pairs(tmp_path / "parts.parquet", builder.build_parts(dna_folder))
    assert counts == (len(table), table["group_id"].nunique())
    written = (tmp_path / "parts.parquet").read_bytes()
    assert written == (tmp_path / "whole.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "parts.parquet").metadata.row_group(0).num_rows == 10
    if "neighbours" not in params:  # (read back, the neighbour lists are numpy arrays)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "parts.parquet"), table)


def test_a_builder_that_only_builds_writes_its_table_through_the_default_parts(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(pairs_table, "ROW_GROUP_ROWS", 4)
    n = 5
    images = np.random.default_rng(0).integers(0, 256, (n, 1, 16, 16), dtype=np.uint8)
    meta = {"modality": "image", "channels": 1, "size": 16, "payload_columns": []}
    table = pd.DataFrame({"item_id": [f"img{i}" for i in range(n)]})
    Items(table=table, meta=meta, arrays={"images": images}).save(tmp_path / "items")

    class WholeRotations(RotationViews):  # only builds: the default parts
        build_parts = PairBuilder.build_parts

    builder = WholeRotations(views=3)
    assert write_pairs(tmp_path / "pairs.parquet", builder.build_parts(tmp_path / "items")) == (
        3 * n,
        n,
    )
    expected = builder.build(load_items(tmp_path / "items", builder))
    # A categorical column is written as its values (``frame_parts``).
    expected = expected.astype({"view": object})
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pairs.parquet"), expected)
    assert pq.ParquetFile(tmp_path / "pairs.parquet").num_row_groups == 4


@pytest.mark.parametrize(
    "values",
    [
        ["b", "a", None, "b", "c", "a", "d", None, "e", "c", "f", "b"],
        [3, 1, np.nan, 3, 7, 1, 2, np.nan, 9, 7, 4, 3],
    ],
)
def test_first_seen_codes_over_parts_are_factorize_of_the_whole_column(values):
    column = pd.Series(values)
    codes = FirstSeenCodes()
    cuts = [0, 1, 4, 4, 9, len(column)]  # an empty part too
    parts = [codes(column.iloc[a:b]) for a, b in pairwise(cuts)]
    expected = pd.factorize(column, sort=False)[0]
    np.testing.assert_array_equal(np.concatenate(parts), expected)


def test_an_item_id_repeated_in_a_later_row_group_names_the_row_and_writes_nothing(
    dna_folder, tmp_path
):
    path = dna_folder / "items.parquet"
    table = pq.read_table(path)
    ids = table.column("item_id").to_pylist()
    ids[17] = ids[2]  # row group 2 repeats an id of row group 0
    table = table.set_column(0, "item_id", pa.array(ids))
    pq.write_table(table, path, row_group_size=7)
    out = tmp_path / "pairs.parquet"
    with pytest.raises(InputDataError, match=rf"items\.parquet: row 17 repeats item_id '{ids[2]}'"):
        write_pairs(out, DNAViews().build_parts(dna_folder))
    assert not out.exists() and list(tmp_path.glob(".pairs*")) == []


def test_parts_whose_columns_do_not_match_the_first_name_the_part(tmp_path):
    first = pa.table({"group_id": [0, 0], "item_id": ["a", "a"], "view": ["x", "y"]})
    second = pa.table({"group_id": ["one"], "item_id": ["b"], "view": ["x"]})
    with pytest.raises(InputDataError, match=r"part 1 of the pairs table"):
        write_pairs(tmp_path / "pairs.parquet", iter([first, second]))
    with pytest.raises(InputDataError, match=r"lacks columns \['view'\]"):
        write_pairs(tmp_path / "pairs.parquet", [first.drop_columns(["view"])])
    with pytest.raises(TypeError, match=r"frame_parts"):
        write_pairs(tmp_path / "pairs.parquet", first.to_pandas())  # type: ignore[arg-type]
    assert not (tmp_path / "pairs.parquet").exists()
