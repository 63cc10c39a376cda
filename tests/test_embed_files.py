"""New raw files stream through ``embed --model`` chunk by chunk (analysis/embed_files.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_export import trained_stand_in  # noqa: F401

from scicontrast.analysis.embed import EMBEDDINGS_TABLE, load_embeddings
from scicontrast.analysis.embed_files import embed_files
from scicontrast.errors import InputDataError


@pytest.mark.parametrize("chunk_rows", [1, 7, 10_000])
def test_files_embedded_in_chunks_equal_the_prepared_items_embedded_whole(
    trained_stand_in,  # noqa: F811
    tmp_path,
    chunk_rows,
):
    out = tmp_path / "new"
    count = embed_files(
        trained_stand_in["model"], trained_stand_in["fasta"], out, chunk_rows=chunk_rows
    )
    metadata, embeddings = load_embeddings(out)
    whole_metadata, whole = load_embeddings(trained_stand_in["embeddings"])
    assert count == len(whole) == len(embeddings)
    assert metadata["item_id"].tolist() == whole_metadata["item_id"].tolist()
    np.testing.assert_allclose(embeddings, whole, rtol=1e-5, atol=1e-6)
    # Several chunks: a partitioned table that pandas reads as one; one chunk: one file.
    assert (out / EMBEDDINGS_TABLE).is_dir() == (chunk_rows < len(whole))
    assert (
        pd.read_parquet(out / EMBEDDINGS_TABLE)["item_id"].tolist() == metadata["item_id"].tolist()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]  # no scratch parts left


def test_a_bad_record_in_a_later_chunk_is_named_and_nothing_is_left(
    trained_stand_in,  # noqa: F811
    tmp_path,
):
    bad = tmp_path / "inputs" / "bad.fa"
    bad.parent.mkdir()
    good = "".join(f">r{i}\n{'ACGT' * 12}\n" for i in range(6))
    bad.write_text(good + ">r6\nACGTXACGT" + "A" * 40 + "\n")
    out = tmp_path / "out" / "new"
    with pytest.raises(InputDataError, match=r"bad\.fa.*record 'r6': invalid character 'X'"):
        embed_files(trained_stand_in["model"], [bad], out, chunk_rows=2)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
