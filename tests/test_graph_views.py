"""GRACE views of a graph, the multi-positive loss they feed, and training on them."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import minimal_experiment
from torch_geometric.data import Data
from torch_geometric.utils import erdos_renyi_graph

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs.cleaning import EDGE_INDEX, FEATURES
from scicontrast.data_adapters.graphs.views import GraphViews, graph_data
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Experiment
from scicontrast.models.losses import InfoNCELoss
from scicontrast.models.train import train


def random_graph_items(n_nodes: int = 300, n_features: int = 200, p: float = 0.05) -> Items:
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        edge_index = erdos_renyi_graph(n_nodes, p)
    x = torch.rand(n_nodes, n_features, generator=generator) + 0.1  # no zero entry
    return Items(
        pd.DataFrame(
            {"item_id": [f"n{i}" for i in range(n_nodes)], "block": np.arange(n_nodes) % 3}
        ),
        meta={"modality": "graph", "num_nodes": n_nodes},
        arrays={FEATURES: x.numpy()},
        extras={EDGE_INDEX: edge_index.numpy()},
    )


def edge_keys(edge_index: torch.Tensor, n_nodes: int) -> set[int]:
    return set((edge_index[0] * n_nodes + edge_index[1]).tolist())


def test_pairs_table_has_both_views_of_every_node():
    items = random_graph_items(n_nodes=5)
    pairs = GraphViews().build(items)
    assert pairs["group_id"].tolist() == [0, 1, 2, 3, 4] * 2
    assert pairs["item_id"].tolist() == ["n0", "n1", "n2", "n3", "n4"] * 2
    assert pairs["view"].tolist() == ["view_1"] * 5 + ["view_2"] * 5


def test_views_keep_every_node_and_drop_only_existing_edges():
    items = random_graph_items()
    data = graph_data(items)
    batch, group_ids = GraphViews().views(data, seed=0, epoch=0)
    n = data.num_nodes
    assert batch.num_nodes == 2 * n and batch.x.shape == (2 * n, data.x.shape[1])
    assert group_ids.tolist() == list(range(n)) * 2
    original = edge_keys(data.edge_index, n)
    first = batch.edge_index[:, batch.edge_index[0] < n]
    second = batch.edge_index[:, batch.edge_index[0] >= n] - n
    assert (first[1] < n).all() and (second >= 0).all()  # no edge between the views
    assert edge_keys(first, n) <= original and edge_keys(second, n) <= original


def test_drop_and_mask_rates_are_respected_per_view():
    items = random_graph_items(n_nodes=400, n_features=2000, p=0.1)
    data = graph_data(items)
    builder = GraphViews(
        drop_edge_rate_1=0.1, drop_edge_rate_2=0.5, mask_feature_rate_1=0.2, mask_feature_rate_2=0.6
    )
    batch, _ = builder.views(data, seed=3, epoch=7)
    n, n_edges = data.num_nodes, data.edge_index.shape[1]
    kept = [(batch.edge_index[0] < n).sum().item(), (batch.edge_index[0] >= n).sum().item()]
    for view, (drop, mask) in enumerate([(0.1, 0.2), (0.5, 0.6)]):
        # Binomial: 5 standard deviations either side.
        assert abs(kept[view] / n_edges - (1 - drop)) < 5 * math.sqrt(drop * (1 - drop) / n_edges)
        x = batch.x[view * n : (view + 1) * n]
        masked_columns = (x == 0).all(dim=0)
        assert ((x == 0) == masked_columns).all()  # whole columns, the same for every node
        assert abs(masked_columns.float().mean().item() - mask) < 5 * math.sqrt(mask / 2000)


def test_views_are_a_function_of_seed_and_epoch_and_leave_global_rng_alone():
    data = graph_data(random_graph_items())
    builder = GraphViews()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, _ = builder.views(data, seed=1, epoch=4)
    assert torch.equal(torch.rand(3), expected_next)
    b, _ = builder.views(data, seed=1, epoch=4)
    c, _ = builder.views(data, seed=1, epoch=5)
    d, _ = builder.views(data, seed=2, epoch=4)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x)
    for other in (c, d):
        assert not torch.equal(a.edge_index, other.edge_index)


def test_neighbour_positives_are_the_out_neighbours_in_the_other_view():
    data = graph_data(random_graph_items(n_nodes=50))
    batch, _ = GraphViews(neighbours_as_positives=True).views(data, seed=0, epoch=0)
    n = data.num_nodes
    first = batch.edge_index[:, batch.edge_index[0] < n]
    second = batch.edge_index[:, batch.edge_index[0] >= n] - n
    pairs = batch.positive_pairs
    from_first = pairs[:, pairs[0] < n]
    from_second = pairs[:, pairs[0] >= n]
    assert edge_keys(torch.stack([from_first[0], from_first[1] - n]), n) == edge_keys(second, n)
    assert edge_keys(torch.stack([from_second[0] - n, from_second[1]]), n) == edge_keys(first, n)


def test_training_batches_are_one_full_graph_step_per_epoch():
    items = random_graph_items(n_nodes=20)
    builder = GraphViews()
    batches = builder.training_batches(items, builder.build(items), seed=0, batch_size=4)
    assert batches.n_groups == 20 and len(batches) == 1
    batches.set_epoch(2)
    [batch] = list(batches)
    assert batch.group_ids.tolist() == list(range(20)) * 2
    expected, _ = builder.views(graph_data(items), seed=0, epoch=2)
    assert torch.equal(batch.inputs.edge_index, expected.edge_index)
    batches.set_epoch(2, start_batch=1)  # resumed after the epoch's only step
    assert list(batches) == []
    [clean] = list(builder.embedding_batches(items, batch_size=4))
    assert clean.num_nodes == 20 and torch.equal(clean.x, graph_data(items).x)


def test_bad_settings_and_inputs_are_rejected():
    items = random_graph_items(n_nodes=10)
    with pytest.raises(ConfigError, match="drop_edge_rate_2"):
        GraphViews(drop_edge_rate_2=1.0)
    with pytest.raises(ConfigError, match="one process"):
        GraphViews().training_batches(items, GraphViews().build(items), 0, 8, world_size=2)
    with pytest.raises(InputDataError, match="not built by graph_views"):
        GraphViews().training_batches(items, GraphViews().build(items).iloc[:5], 0, 8)
    not_a_graph = Items(pd.DataFrame({"item_id": [1, 2]}), meta={"modality": "dna"})
    with pytest.raises(InputDataError, match="not a graph items set"):
        GraphViews().build(not_a_graph)


# --- the diffusion view (MVGRL) -----------------------------------------------------------

# sha256 of x, edge_index, positive_pairs and batch of the views below, computed with the code
# before the diffusion view existed: the default views must not change by a bit.
DEFAULT_VIEWS_SHA256 = "e750e2fcdadb8a6bf7c696937e151ac721e0fa12285914d0e230ac70023233de"


@pytest.mark.parametrize("params", [{}, {"diffusion_view": None}])
def test_default_views_are_bitwise_unchanged(params):
    data = graph_data(random_graph_items(n_nodes=60, n_features=20, p=0.1))
    batch, _ = GraphViews(neighbours_as_positives=True, **params).views(data, seed=3, epoch=5)
    digest = hashlib.sha256()
    for tensor in (batch.x, batch.edge_index, batch.positive_pairs, batch.batch):
        digest.update(tensor.numpy().tobytes())
    assert digest.hexdigest() == DEFAULT_VIEWS_SHA256
    assert getattr(batch, "edge_weight", None) is None


def closed_form_ppr(edge_index: torch.Tensor, n_nodes: int, alpha: float) -> np.ndarray:
    """``alpha (I - (1 - alpha) T)^-1``, ``T = D^-1/2 (A + I) D^-1/2``, float64 numpy."""
    a = np.eye(n_nodes)
    a[edge_index[0].numpy(), edge_index[1].numpy()] = 1.0
    d = 1.0 / np.sqrt(a.sum(axis=0))
    t = d[:, None] * a * d[None, :]
    return alpha * np.linalg.inv(np.eye(n_nodes) - (1 - alpha) * t)


def dense(edge_index: torch.Tensor, edge_weight: torch.Tensor, n_nodes: int) -> np.ndarray:
    matrix = np.zeros((n_nodes, n_nodes))
    matrix[edge_index[0].numpy(), edge_index[1].numpy()] = edge_weight.double().numpy()
    return matrix


def tiny_graph() -> Data:
    """Path 0-1-2-3-4 with chord 0-2, an edge 5-6 and an isolated node 7: three components."""
    pairs = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4], [0, 2], [5, 6]]).t()
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
    return Data(x=torch.ones(8, 3), edge_index=edge_index, num_nodes=8)


@pytest.mark.parametrize("alpha", [0.15, 0.4])
def test_ppr_diffusion_is_the_closed_form_column_normalised(alpha):
    data = tiny_graph()
    builder = GraphViews(diffusion_view="ppr", ppr_alpha=alpha, ppr_top_k=8)  # k = N: no top-k
    edge_index, edge_weight = builder.diffusion(data)
    assert edge_weight.dtype == torch.float32
    s = closed_form_ppr(data.edge_index, 8, alpha)
    # Nothing diffuses between components: those zero entries are not edges.
    blocks = np.zeros((8, 8), dtype=bool)
    for component in ([0, 1, 2, 3, 4], [5, 6], [7]):
        blocks[np.ix_(component, component)] = True
    assert (np.abs(s[~blocks]) < 1e-12).all() and (s[blocks] > 0).all()
    assert {(i, j) for i, j in edge_index.t().tolist()} == set(
        zip(*np.nonzero(blocks), strict=True)
    )
    np.testing.assert_allclose(dense(edge_index, edge_weight, 8), s / s.sum(axis=0), atol=1e-6)
    assert dense(edge_index, edge_weight, 8)[7, 7] == 1.0  # the isolated node: itself only


def test_ppr_top_k_keeps_the_k_largest_entries_of_every_node():
    data = graph_data(random_graph_items(n_nodes=40, n_features=5, p=0.15))
    n, k = data.num_nodes, 6
    edge_index, edge_weight = GraphViews(diffusion_view="ppr", ppr_top_k=k).diffusion(data)
    s = closed_form_ppr(data.edge_index, n, 0.15)
    assert (s > 0).all()  # connected: every column has at least k nonzero entries
    got = dense(edge_index, edge_weight, n)
    for j in range(n):
        kept = np.flatnonzero(got[:, j])
        assert (edge_index[1] == j).sum().item() == k and len(kept) == k
        others = np.setdiff1d(np.arange(n), kept)
        assert s[kept, j].min() >= s[others, j].max() - 1e-9  # the k largest of column j
        np.testing.assert_allclose(got[kept, j], s[kept, j] / s[kept, j].sum(), atol=1e-6)
        assert j in kept  # its own entry, the largest here


def test_diffusion_view_carries_weights_and_drops_only_diffusion_edges():
    data = graph_data(random_graph_items(n_nodes=200, n_features=300, p=0.05))
    n = data.num_nodes
    builder = GraphViews(diffusion_view="ppr", ppr_top_k=16, drop_edge_rate_2=0.5)
    diffusion_index, diffusion_weight = builder.diffusion(data)
    batch, _ = builder.views(data, seed=1, epoch=2)
    plain, _ = GraphViews(drop_edge_rate_2=0.5).views(data, seed=1, epoch=2)
    in_view_2 = batch.edge_index[0] >= n
    # View 1 is GRACE's view, unchanged, with unit weights.
    assert torch.equal(
        batch.edge_index[:, ~in_view_2], plain.edge_index[:, plain.edge_index[0] < n]
    )
    assert torch.equal(batch.x[:n], plain.x[:n])
    assert torch.equal(batch.edge_weight[~in_view_2], torch.ones(int((~in_view_2).sum())))
    # View 2: a subset of the diffusion edges, each with its diffusion weight.
    second, weight = batch.edge_index[:, in_view_2] - n, batch.edge_weight[in_view_2]
    weights = dict(
        zip((diffusion_index[0] * n + diffusion_index[1]).tolist(), diffusion_weight, strict=True)
    )
    keys = (second[0] * n + second[1]).tolist()
    assert set(keys) <= set(weights)
    assert torch.equal(weight, torch.stack([weights[key] for key in keys]))
    # Every self-loop is kept; the other diffusion edges are dropped at the rate.
    loops = second[0] == second[1]
    assert loops.sum().item() == n
    off_diagonal = (diffusion_index[0] != diffusion_index[1]).sum().item()
    kept = (~loops).sum().item() / off_diagonal
    assert abs(kept - 0.5) < 5 * math.sqrt(0.25 / off_diagonal)
    # Feature masking still applies to view 2: whole columns.
    x = batch.x[n:]
    masked = (x == 0).all(dim=0)
    assert ((x == 0) == masked).all() and 0 < masked.sum().item() < x.shape[1]


def test_diffusion_view_positives_are_view_1_neighbours_both_ways():
    data = graph_data(random_graph_items(n_nodes=50))
    n = data.num_nodes
    builder = GraphViews(diffusion_view="ppr", ppr_top_k=8, neighbours_as_positives=True)
    batch, _ = builder.views(data, seed=0, epoch=0)
    first = batch.edge_index[:, batch.edge_index[0] < n]
    pairs = batch.positive_pairs
    from_first, from_second = pairs[:, pairs[0] < n], pairs[:, pairs[0] >= n]
    assert edge_keys(torch.stack([from_first[0], from_first[1] - n]), n) == edge_keys(first, n)
    assert edge_keys(torch.stack([from_second[0] - n, from_second[1]]), n) == edge_keys(first, n)
    assert pairs.shape[1] == 2 * first.shape[1]


def test_diffusion_is_computed_once_per_graph():
    builder = GraphViews(diffusion_view="ppr", ppr_top_k=4)
    data = graph_data(random_graph_items(n_nodes=30, n_features=4, p=0.2))
    first = builder.diffusion(data)
    assert builder.diffusion(data)[0] is first[0]  # reused
    other = graph_data(random_graph_items(n_nodes=30, n_features=4, p=0.3))
    assert not torch.equal(builder.diffusion(other)[0], first[0])  # another graph: recomputed


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"diffusion_view": "heat"}, "diffusion_view must be null or one of"),
        ({"diffusion_view": "ppr", "ppr_alpha": 0.0}, "ppr_alpha must be in"),
        ({"diffusion_view": "ppr", "ppr_alpha": 1.0}, "ppr_alpha must be in"),
        ({"diffusion_view": "ppr", "ppr_alpha": True}, "ppr_alpha must be in"),
        ({"diffusion_view": "ppr", "ppr_top_k": 0}, "ppr_top_k must be an integer >= 1"),
        ({"diffusion_view": "ppr", "ppr_top_k": 2.5}, "ppr_top_k must be an integer >= 1"),
    ],
)
def test_bad_diffusion_settings_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=f"pairs graph_views: params.{message}"):
        GraphViews(**params)


# --- the loss ------------------------------------------------------------------------------


def hand_info_nce(z: np.ndarray, positives: list[set[int]], tau: float) -> float:
    """SupCon L_out by loops: mean over anchors with a positive of mean_p -log softmax."""
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    losses = []
    for a in range(len(u)):
        if not positives[a]:
            continue
        logits = {k: u[a] @ u[k] / tau for k in range(len(u)) if k != a}
        log_denominator = math.log(sum(math.exp(v) for v in logits.values()))
        losses.append(np.mean([log_denominator - logits[p] for p in positives[a]]))
    return float(np.mean(losses))


def test_positive_pairs_extend_the_id_positives_float64():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    group_ids = torch.tensor([0, 1, 2, 0, 1, 2])
    pairs = torch.tensor([[0, 0, 4, 5], [4, 0, 2, 3]])  # (0, 0) is self: ignored
    positives = [{3, 4}, {4}, {5}, {0}, {1, 2}, {2, 3}]
    out = InfoNCELoss(temperature=0.3)(z, group_ids, positive_pairs=pairs)
    assert out.loss.dtype == torch.float64
    assert out.loss.item() == pytest.approx(hand_info_nce(z.numpy(), positives, 0.3), abs=1e-12)
    plain = InfoNCELoss(temperature=0.3)(z, group_ids)
    by_ids = [{3}, {4}, {5}, {0}, {1}, {2}]
    assert plain.loss.item() == pytest.approx(hand_info_nce(z.numpy(), by_ids, 0.3), abs=1e-12)
    with pytest.raises(ValueError, match=r"rows 0\.\.5"):
        InfoNCELoss()(z, group_ids, positive_pairs=torch.tensor([[0], [6]]))


def test_two_view_loss_is_grace_objective_float64():
    """GRACE's l(u_i, v_i): positive v_i, negatives v_k and u_k (k != i), mean over 2N."""
    generator = torch.Generator().manual_seed(1)
    u = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    v = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    tau = 0.4

    def grace_l(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = torch.nn.functional.normalize(a), torch.nn.functional.normalize(b)
        between, within = torch.exp(a @ b.T / tau), torch.exp(a @ a.T / tau)
        return -torch.log(between.diag() / (between.sum(1) + within.sum(1) - within.diag()))

    expected = 0.5 * (grace_l(u, v) + grace_l(v, u)).mean()
    got = InfoNCELoss(temperature=tau)(torch.cat([u, v]), torch.arange(5).repeat(2)).loss
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)


# --- training ------------------------------------------------------------------------------


def graph_experiment(**pairs_params) -> Experiment:
    from scicontrast.config import validate_config

    experiment = minimal_experiment(
        adapter={"name": "graph_table", "params": {"nodes": "n.csv", "edges": "e.csv"}},
        pairs={"name": "graph_views", "params": pairs_params},
        encoder={"name": "gcn", "params": {"embedding_dim": 8}},
        head={"hidden_dim": 8, "output_dim": 8},
        training={"epochs": 3, "device": "cpu", "lr": 0.01},
    )
    config = validate_config({"experiments": {"g": experiment}})
    return Experiment.from_dict({"name": "g", **config["experiments"]["g"]})


@pytest.fixture
def graph_files(tmp_path):
    items = random_graph_items(n_nodes=40, n_features=12, p=0.15)
    items.save(tmp_path / "items")
    GraphViews().build(items).to_parquet(tmp_path / "pairs.parquet")
    return tmp_path / "items", tmp_path / "pairs.parquet"


DIFFUSION_VIEWS = {"diffusion_view": "ppr", "ppr_top_k": 8, "neighbours_as_positives": True}


@pytest.mark.parametrize("views", [{}, DIFFUSION_VIEWS], ids=["grace", "diffusion"])
def test_graph_training_lowers_the_loss(tmp_path, graph_files, views):
    experiment = graph_experiment(**views).replace(training={"epochs": 30})
    train(experiment, *graph_files, tmp_path / "run", progress=False)
    epochs = [
        json.loads(line)
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"kind": "epoch"' in line
    ]
    assert len(epochs) == 30 and epochs[-1]["loss"] < epochs[0]["loss"] - 0.2
    assert epochs[-1]["peak_memory_mb"] > 0


def test_graph_training_with_a_diffusion_view_resumes_exactly(tmp_path, graph_files):
    experiment = graph_experiment(**DIFFUSION_VIEWS)
    full = train(experiment, *graph_files, tmp_path / "full", progress=False)
    assert_resumed_run_equals(full, experiment, graph_files, tmp_path / "pieces")


def assert_resumed_run_equals(
    full: Path, experiment: Experiment, graph_files, pieces: Path
) -> None:
    """A run of ``experiment`` stopped after one epoch and resumed ends with ``full``'s weights."""
    train(experiment, *graph_files, pieces, progress=False, stop_after_epochs=1)
    resumed = train(experiment, *graph_files, pieces, progress=False)
    a = torch.load(full, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_held_out_nodes_are_propagated_but_left_out_of_the_loss():
    items = random_graph_items(n_nodes=30, n_features=10, p=0.2)
    builder = GraphViews(neighbours_as_positives=True)
    pairs = builder.build(items)
    kept = np.array([0, 3, 4, 10, 17, 29])
    batches = builder.training_batches(
        items, pairs[pairs["group_id"].isin(kept)], seed=1, batch_size=8
    )
    assert batches.n_groups == len(kept)
    (batch,) = list(batches)
    group_ids = batch.group_ids
    full_batch, _ = builder.views(graph_data(items), seed=1, epoch=0)
    # Both views of the whole graph go through the encoder ...
    assert torch.equal(batch.inputs.x, full_batch.x) and torch.equal(
        batch.inputs.edge_index, full_batch.edge_index
    )
    # ... but the loss sees only the kept nodes' rows, and positives among them.
    rows = batch.loss_rows.tolist()
    assert rows == [*kept, *(kept + 30)]
    assert group_ids.tolist() == [*kept, *kept]
    expected = {
        (rows.index(a), rows.index(b))
        for a, b in full_batch.positive_pairs.t().tolist()
        if a in rows and b in rows
    }
    assert set(map(tuple, batch.positive_pairs.t().tolist())) == expected


@pytest.mark.parametrize("holdout_fraction", [0.0, 0.25])
def test_graph_training_with_held_out_nodes_tracks_them_and_resumes_exactly(
    tmp_path, graph_files, holdout_fraction
):
    from scicontrast.analysis.diagnostics import diagnose

    # heldout_min_steps=1: a pass after each one-step epoch.
    experiment = graph_experiment(neighbours_as_positives=True).replace(
        training={"holdout_fraction": holdout_fraction, "heldout_min_steps": 1}
    )
    full = train(experiment, *graph_files, tmp_path / "full", progress=False)
    assert_resumed_run_equals(full, experiment, graph_files, tmp_path / "pieces")

    records = [
        json.loads(line) for line in (tmp_path / "full/metrics.jsonl").read_text().splitlines()
    ]
    held_out = [r for r in records if r["kind"] == "heldout"]
    diagnostics = diagnose(full, *graph_files, tmp_path / "diagnostics", device="cpu")
    assert diagnostics["subset"]["held_out_from_training"] is (holdout_fraction > 0)
    if holdout_fraction == 0:
        assert held_out == []
        return
    # 40 nodes, a quarter held out: the loss on those 10, every epoch and in the diagnostics.
    assert [r["epoch"] for r in held_out] == [0, 1, 2]
    assert diagnostics["subset"]["groups"] == 10
    last = held_out[-1]["projection"]
    for key, value in diagnostics["trained"]["projection"].items():
        assert last[key] == pytest.approx(value, abs=1e-6), key
