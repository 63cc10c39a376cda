"""The cluster step on an embeddings folder: today's results below the threshold, batches beyond."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from scicontrast.analysis import cluster as cluster_module
from scicontrast.analysis import cluster_input, cluster_scale
from scicontrast.analysis.cluster import cluster, cluster_embeddings, cluster_unit, knn_graph_edges
from scicontrast.analysis.cluster_input import label_codes, unit_vectors, unit_vectors_on_disk
from scicontrast.analysis.embed_stream import EMBEDDINGS_ARRAY, EMBEDDINGS_TABLE, EmbeddingsWriter
from scicontrast.errors import InputDataError

SCHEMA = pa.schema([("item_id", pa.string()), ("kind", pa.string())])


def mixture(n_per: int, centres: int = 4, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim)) * 6
    labels = np.repeat(np.arange(centres), n_per)
    points = means[labels] + rng.standard_normal((len(labels), dim))
    return points.astype(np.float32), np.array([f"k{c}" for c in labels], dtype=object)


def write_folder(folder, points, kinds, rows_per_group):
    """An embeddings folder as ``embed`` writes it, in row groups of ``rows_per_group``."""
    with EmbeddingsWriter(folder, SCHEMA) as writer:
        for start in range(0, len(points), rows_per_group):
            rows = slice(start, start + rows_per_group)
            ids = [f"i{i}" for i in range(len(points))[rows]]
            writer.write(pd.DataFrame({"item_id": ids, "kind": kinds[rows]}), points[rows])


def test_below_the_threshold_the_folder_gives_the_in_memory_result(tmp_path):
    """What ``cluster`` did before it read by row group: everything loaded, then
    ``cluster_embeddings``; the same assignments file and the same metrics."""
    points, kinds = mixture(n_per=60)
    kinds[::7] = None
    write_folder(tmp_path / "emb", points, kinds, rows_per_group=100)
    metrics = cluster(tmp_path / "emb", tmp_path / "out", label_column="kind", seed=2)
    metadata = pd.read_parquet(tmp_path / "emb" / EMBEDDINGS_TABLE).drop(columns="embedding")
    found, expected = cluster_embeddings(
        np.load(tmp_path / "emb" / EMBEDDINGS_ARRAY), metadata["kind"], seed=2
    )
    expected["label_column"] = "kind"
    assert metrics == expected and metrics["exact"] is True
    found.insert(0, "item_id", metadata["item_id"])
    found["kind"] = metadata["kind"]
    written = pd.read_parquet(tmp_path / "out" / "assignments.parquet")
    pd.testing.assert_frame_equal(written, found)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics


def test_silhouette_is_scikit_learns_on_its_own_subsample(monkeypatch):
    monkeypatch.setattr(cluster_module, "SILHOUETTE_MAX_POINTS", 500)
    points, _ = mixture(n_per=300, dim=4)
    unit = unit_vectors(points)
    found, metrics = cluster_unit(unit, methods=["kmeans"], seed=5, exact_max_items=1000)
    expected = silhouette_score(
        unit, found["kmeans"], metric="cosine", sample_size=500, random_state=5
    )
    assert metrics["kmeans"]["silhouette"] == expected


def test_silhouette_is_undefined_when_its_subsample_draws_one_cluster(monkeypatch):
    # Two clusters, one of a single row that the seeded subsample leaves out: scikit-learn
    # would raise on the one label it is given (as on HDBSCAN of real reads).
    monkeypatch.setattr(cluster_module, "SILHOUETTE_MAX_POINTS", 50)
    unit = unit_vectors(np.random.default_rng(0).standard_normal((60, 4)))
    drawn = np.random.RandomState(3).permutation(60)[:50]
    assignment = np.zeros(60, dtype=np.int64)
    assignment[np.setdiff1d(np.arange(60), drawn)[0]] = 1
    assert cluster_module._silhouette(unit, assignment, seed=3) is None
    assignment[drawn[0]] = 1
    assert cluster_module._silhouette(unit, assignment, seed=3) == silhouette_score(
        unit, assignment, metric="cosine", sample_size=50, random_state=3
    )


def test_the_exact_knn_graph_in_blocks_is_the_one_in_one_block():
    points, _ = mixture(n_per=500, dim=16)
    unit = unit_vectors(points)
    # scikit-learn's default working memory takes all 2000 x 2000 distances in one block.
    nearest = NearestNeighbors(n_neighbors=11, metric="cosine").fit(unit).kneighbors(unit)[1]
    sources = np.arange(len(unit)).repeat(11)
    edges = {tuple(sorted(p)) for p in zip(sources, nearest.ravel(), strict=True) if p[0] != p[1]}
    assert {tuple(e) for e in knn_graph_edges(unit, 10)} == edges


def test_beyond_the_threshold_a_partitioned_folder_clusters_the_mixture(tmp_path):
    points, kinds = mixture(n_per=300)
    write_folder(tmp_path / "emb", points, kinds, rows_per_group=250)
    # A partitioned table (the gather of sharded embedding) reads as the same table.
    table = pd.read_parquet(tmp_path / "emb" / EMBEDDINGS_TABLE)
    (tmp_path / "emb" / EMBEDDINGS_TABLE).unlink()
    (tmp_path / "emb" / EMBEDDINGS_TABLE).mkdir()
    for part, rows in enumerate((slice(0, 500), slice(500, None))):
        table[rows].to_parquet(
            tmp_path / "emb" / EMBEDDINGS_TABLE / f"part-{part}.parquet", index=False
        )
    methods = ["kmeans", "hdbscan"]
    metrics = cluster(
        tmp_path / "emb", tmp_path / "out", "kind", methods=methods, exact_max_items=300
    )
    assert metrics["exact"] is False and metrics["hdbscan"]["fitted_on"] == 300
    written = pd.read_parquet(tmp_path / "out" / "assignments.parquet")
    assert written["item_id"].tolist() == [f"i{i}" for i in range(len(points))]
    for method in methods:
        assert metrics[method]["ari"] > 0.95, method
        assert adjusted_rand_score(kinds, written[method]) == metrics[method]["ari"]
    # The memory-mapped unit vectors were scratch: only the three results are left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb", "out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "assignments.parquet",
        "comparison.csv",
        "metrics.json",
    ]


class RowReader:
    """``[N, D]`` rows that can only be read a batch at a time: converting the whole of it
    to an array (as scikit-learn does with what it is given) fails the test."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows, self.shape, self.dtype = rows, rows.shape, rows.dtype
        self.largest = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        batch = self.rows[index]
        self.largest = max(self.largest, len(batch))
        return batch

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole [N, D] array was read")


def test_scalable_methods_read_the_unit_vectors_a_batch_at_a_time(monkeypatch):
    monkeypatch.setattr(cluster_input, "BATCH_ROWS", 200)
    monkeypatch.setattr(cluster_scale, "KMEANS_BATCH", 128)
    monkeypatch.setattr(cluster_module, "SILHOUETTE_MAX_POINTS", 250)
    points, kinds = mixture(n_per=400)
    reader = RowReader(unit_vectors(points))
    codes = pd.factorize(kinds)[0]
    methods = ["kmeans", "hdbscan", "leiden"]
    _, metrics = cluster_unit(
        reader, codes, methods=methods, exact_max_items=300, leiden_sample_items=280
    )
    assert reader.largest == 300  # the sample; every other read is a batch of at most 280
    assert metrics["leiden"]["fitted_on"] == 280
    for method in methods:
        assert metrics[method]["ari"] > 0.95, method


def test_unit_vectors_on_disk_are_the_in_memory_ones_and_read_by_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_input, "BATCH_ROWS", 7)
    points, _ = mixture(n_per=10)
    rows = unit_vectors_on_disk(points, tmp_path / "unit.npy")
    whole = np.load(tmp_path / "unit.npy")
    assert whole.dtype == np.float32 and len(rows) == 40 and rows.shape == (40, 8)
    np.testing.assert_allclose(whole, unit_vectors(points), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(rows), whole)
    np.testing.assert_array_equal(rows[5:12], whole[5:12])
    np.testing.assert_array_equal(rows[35:99], whole[35:])
    picked = np.array([39, 0, 17, 17])
    np.testing.assert_array_equal(rows[picked], whole[picked])
    with open(tmp_path / "unit.npy", "r+b") as file:
        file.truncate(file.seek(0, 2) - 4)
    with pytest.raises(InputDataError, match=r"unit.npy: truncated at row 39"):
        rows[np.array([39])]


@pytest.mark.parametrize(
    "values",
    [
        pa.array(["b", None, "a", "b", "c"]),
        pa.array([2.0, float("nan"), 1.0, 2.0, None]),
        pa.array(["b", "a", None, "b", "c"]).dictionary_encode(),
    ],
)
def test_label_codes_are_pandas_factorize_codes(tmp_path, values):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"label": values}), path, row_group_size=2)
    expected = pd.factorize(pd.Series(values.to_pandas(), dtype=object))[0]
    np.testing.assert_array_equal(label_codes(path, "label"), expected)


def test_rows_that_disagree_name_the_folder_and_leave_nothing(tmp_path):
    points, kinds = mixture(n_per=5)
    write_folder(tmp_path / "emb", points, kinds, rows_per_group=8)
    np.save(tmp_path / "emb" / EMBEDDINGS_ARRAY, points[:-1])
    with pytest.raises(InputDataError, match=r"emb: embeddings.npy has 19 rows but .* has 20"):
        cluster(tmp_path / "emb", tmp_path / "out")
    assert not (tmp_path / "out").exists()
