"""Ids by 128-bit hashes: the repeat check's results and merge memory, the pairs' item rows
found by hash (the same table as pandas' string matching, collisions never merged), and the
same training weights on the demos' items."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import small_dna_experiment

from scicontrast.config import validate_config
from scicontrast.data_adapters import id_hashes, pairs_table
from scicontrast.data_adapters.audio_image import demo, synchronization
from scicontrast.data_adapters.base import load_items
from scicontrast.data_adapters.chunks import write_chunks
from scicontrast.data_adapters.id_hashes import HashedIdSet, IdRows
from scicontrast.data_adapters.pairs_table import frame_parts, read_pairs, write_pairs
from scicontrast.errors import InputDataError
from scicontrast.experiment import Experiment
from scicontrast.models import train_setup
from scicontrast.models.train import train
from scicontrast.registry import ADAPTERS, PAIR_BUILDERS


def first_repeats(chunks: list[np.ndarray]) -> list[int | None]:
    """What ``HashedIdSet.add_new`` must return for each chunk, by a Python set."""
    seen: set = set()
    answers = []
    for chunk in chunks:
        within: set = set()
        first = next(
            (i for i, x in enumerate(chunk) if x in seen or x in within or within.add(x)), None
        )
        answers.append(first)
        if first is None:
            seen.update(chunk.tolist())
    return answers


@pytest.mark.parametrize("kind", ["strings", "integers"])
def test_the_repeat_check_answers_as_a_python_set(kind):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3_000_000, size=40_000)  # about 270 values repeat
    ids = values.astype(str).astype(object) if kind == "strings" else values
    cuts = np.sort(rng.choice(np.arange(1, len(ids)), size=60, replace=False))
    chunks = np.split(ids, cuts)
    expected = first_repeats(chunks)
    assert None in expected and any(a is not None for a in expected)  # both kinds of chunk
    seen = HashedIdSet()
    assert [seen.add_new(chunk) for chunk in chunks] == expected
    assert len(seen) == sum(len(c) for c, a in zip(chunks, expected, strict=True) if a is None)


def test_a_merge_allocates_a_bucket_not_a_copy_of_the_set():
    n, chunk = 131_072, 4_096
    ids = np.array([f"read/{i}:1-150" for i in range(n)], dtype=object)
    seen = HashedIdSet()
    tracemalloc.start()
    try:
        worst = 0
        for start in range(0, n, chunk):
            kept = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            assert seen.add_new(ids[start : start + chunk]) is None
            worst = max(worst, tracemalloc.get_traced_memory()[1] - kept)
        total = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert 16 * n <= total < 17 * n  # 16 bytes an id
    # A chunk's own keys and sort, and the merge of a bucket's runs: far below one copy of
    # the 2 MiB of keys (the merge of the whole runs allocated two).
    assert worst < 16 * n / 4


def test_id_rows_are_the_rows_pandas_finds_and_minus_one_for_unknown_ids():
    rng = np.random.default_rng(1)
    items = np.array([f"g{i % 7}/r{i}:1-150" for i in rng.permutation(5_000)], dtype=object)
    asked = np.concatenate([items[rng.integers(0, 5_000, 3_000)], ["nope", "g1/r1:1-151"]])
    asked = asked.astype(object)
    expected = pd.Index(items).get_indexer(asked)
    np.testing.assert_array_equal(IdRows(items).rows(asked), expected)
    numbers = rng.permutation(1_000) * 3
    np.testing.assert_array_equal(
        IdRows(numbers).rows(np.array([6, 7, 2997])), pd.Index(numbers).get_indexer([6, 7, 2997])
    )
    with pytest.raises(ValueError, match="'b' repeats item_id 'b'"):
        IdRows(np.array(["a", "b", "b"], dtype=object))


def test_a_hash_collision_is_refused_or_reported_never_merged(monkeypatch):
    real = id_hashes.id_keys

    def colliding(ids):  # "b" and "c" share a key with "a"
        values = np.asarray(ids, dtype=object)
        return real(np.where(np.isin(values, ["b", "c"]), "a", values))

    monkeypatch.setattr(id_hashes, "id_keys", colliding)
    with pytest.raises(ValueError, match="shares a 128-bit hash"):
        IdRows(np.array(["x", "a", "b"], dtype=object))
    # A pairs id whose key is an item's: the ids differ, so it names no item.
    rows = IdRows(np.array(["x", "a"], dtype=object)).rows(np.array(["a", "c", "x"], dtype=object))
    assert rows.tolist() == [1, -1, 0]
    seen = HashedIdSet()  # the repeat check reports a collision as a repeat: an error
    assert seen.add_new(np.array(["a", "x"], dtype=object)) is None
    assert seen.add_new(np.array(["y", "b"], dtype=object)) == 1


def reference_pairs(path, item_ids: pd.Series) -> pd.DataFrame:
    """The pairs table read whole by pandas, ``item_id`` a categorical over the items' ids
    (strings matched by pandas' hash table): what ``read_pairs`` must equal."""
    pairs = pd.read_parquet(path)
    categories = pd.Index(item_ids.to_numpy())
    pairs["item_id"] = pd.Categorical(pairs["item_id"], categories=categories)
    assert not pairs["item_id"].isna().any()
    return pairs


def test_read_pairs_equals_pandas_on_any_row_groups(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    ids = pd.Series([f"i{k}" for k in rng.permutation(50)], dtype=object)
    pairs = pd.DataFrame(
        {
            "group_id": np.repeat(np.arange(40), 2),
            "item_id": ids.to_numpy()[rng.integers(0, 50, 80)],
            "view": np.tile(np.array(["a", "b"], dtype=object), 40),
            "weight": rng.normal(size=80),
        }
    )
    monkeypatch.setattr(pairs_table, "ROW_GROUP_ROWS", 7)
    write_pairs(tmp_path / "p.parquet", frame_parts(pairs))
    read = read_pairs(tmp_path / "p.parquet", ids)
    pd.testing.assert_frame_equal(read, reference_pairs(tmp_path / "p.parquet", ids))
    assert read["item_id"].cat.categories.equals(pd.Index(ids))
    # No hash table over the ids stays behind (pandas counts it in memory_usage), not even
    # after a slice makes a new categorical over the same categories.
    for column in (read["item_id"], read["item_id"].iloc[::3]):
        assert column.cat.categories.memory_usage() == 8 * len(ids)


def test_read_pairs_names_the_row_of_an_unknown_id_and_matches_id_types(tmp_path):
    table = pa.table({"group_id": [0, 0, 1, 1], "item_id": [3, 4, 5, 9], "view": list("abab")})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=2)
    pq.write_table(table.set_column(1, "item_id", table["view"]), tmp_path / "v.parquet")
    with pytest.raises(InputDataError, match=r"p\.parquet: row 3 \(row group 1\) .*item_id 9,"):
        read_pairs(tmp_path / "p.parquet", pd.Series([3, 4, 5, 6], dtype=np.int32))
    read = read_pairs(tmp_path / "p.parquet", pd.Series([9, 5, 4, 3]))
    assert read["item_id"].cat.codes.tolist() == [3, 2, 1, 0]
    # Integers against string ids: cast to strings, they name no item.
    with pytest.raises(InputDataError, match=r"row 0 \(row group 0\) names item_id '3', which"):
        read_pairs(tmp_path / "p.parquet", pd.Series(["a", "b"], dtype=object))
    with pytest.raises(InputDataError, match="item_id is string in the pairs table, int64"):
        read_pairs(tmp_path / "v.parquet", pd.Series([3, 4]))


def dna_demo(folder: Path) -> dict:
    """The DNA demo's FASTA, small, as items and a pairs table in ``folder``."""
    experiment, _ = small_dna_experiment(folder, 6, {"epochs": 1, "batch_size": 8, "seed": 1})
    return experiment


def audio_image_demo(folder: Path) -> dict:
    """The synchronised audio-image demo, small, as items and a pairs table in ``folder``."""
    manifest = demo.generate_demo_audio_image(folder / "demo", events=24, image_size=12)
    synchronization.synchronize([manifest], folder / "sync")
    adapter = {
        "name": "audio_image",
        "params": {"synchronization": str(folder / "sync"), "clip_seconds": 0.2, "image_size": 12},
    }
    encoder = {"embedding_dim": 8, "n_mels": 16, "image_pool": [2, 2]}
    small = {
        "adapter": adapter,
        "pairs": {"name": "synchronized_pairs"},
        "encoder": {"name": "two_tower", "params": encoder},
        "head": {"hidden_dim": 8, "output_dim": 8},
        "training": {"epochs": 1, "batch_size": 8, "seed": 1, "device": "cpu"},
    }
    config = validate_config({"experiments": {"small": small}})
    experiment = {"name": "small", **config["experiments"]["small"]}
    write_chunks(ADAPTERS.create(adapter).read_chunks(16), folder / "items")
    builder = PAIR_BUILDERS.create(experiment["pairs"])
    items = load_items(folder / "items", builder)
    write_pairs(folder / "pairs.parquet", frame_parts(builder.build(items)))
    return experiment


@pytest.mark.parametrize("make", [dna_demo, audio_image_demo])
def test_the_demos_pairs_and_trained_weights_equal_those_of_string_matching(
    make, tmp_path, monkeypatch
):
    experiment = Experiment.from_dict(make(tmp_path))
    items_dir, pairs_path = tmp_path / "items", tmp_path / "pairs.parquet"
    builder = PAIR_BUILDERS.create(experiment.pairs)
    ids = load_items(items_dir, builder).table["item_id"]
    pd.testing.assert_frame_equal(read_pairs(pairs_path, ids), reference_pairs(pairs_path, ids))
    weights = []
    for reader in (read_pairs, reference_pairs):
        monkeypatch.setattr(train_setup, "read_pairs", reader)
        model = train(experiment, items_dir, pairs_path, tmp_path / reader.__name__, progress=False)
        weights.append(torch.load(model, weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], rtol=0, atol=0)
