"""Neighbour-sampled graph training and layer-wise graph embedding."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from conftest import minimal_experiment
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from scicontrast.config import validate_config
from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.graphs.cleaning import EDGE_INDEX, FEATURES, MODALITY
from scicontrast.data_adapters.graphs.neighbors import (
    NeighborSampledGraphViews,
    hop_ordered_union,
)
from scicontrast.data_adapters.graphs.sampling import IncomingEdges, sample_subgraph
from scicontrast.data_adapters.graphs.views import GraphViews, graph_data
from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model
from scicontrast.models.distributed import start_process_group
from scicontrast.models.gnn import GATEncoder, GCNEncoder, GINEncoder
from scicontrast.models.graph_minibatch import layerwise_embed
from scicontrast.models.losses import InfoNCELoss
from scicontrast.models.train import train
from scicontrast.models.train_setup import Loop, build_model_and_optimizer, load_data


def random_graph(n: int = 40, edges: int = 120, features: int = 6, seed: int = 0) -> Data:
    generator = torch.Generator().manual_seed(seed)
    edge_index = to_undirected(torch.randint(0, n, (2, edges), generator=generator), num_nodes=n)
    x = torch.randn(n, features, generator=generator)
    return Data(x=x, edge_index=edge_index, num_nodes=n)


def graph_items(data: Data) -> Items:
    n = data.num_nodes
    return Items(
        table=pd.DataFrame({"item_id": [f"n{i}" for i in range(n)]}),
        meta={"modality": MODALITY},
        arrays={FEATURES: data.x.numpy()},
        extras={EDGE_INDEX: data.edge_index.numpy()},
    )


def loss_and_grads(encoder, batch):
    encoder.zero_grad()
    z = encoder(batch.inputs)
    z = z if batch.loss_rows is None else z[batch.loss_rows]
    loss = InfoNCELoss(temperature=0.5)(z, batch.group_ids).loss
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in encoder.named_parameters()}


@pytest.mark.parametrize("encoder_class", [GCNEncoder, GINEncoder])
def test_sampling_every_neighbour_of_every_node_is_the_full_batch_step(encoder_class):
    data = random_graph()
    items = graph_items(data)
    views = dict(drop_edge_rate_1=0.2, drop_edge_rate_2=0.3)
    full = GraphViews(**views)
    sampled = NeighborSampledGraphViews(batch_nodes=1000, num_neighbors=[-1, -1], **views)
    pairs = full.build(items)
    torch.manual_seed(0)
    encoder = encoder_class(embedding_dim=8, num_layers=2)
    for epoch in (0, 3):
        loaders = [b.training_batches(items, pairs, 7, 0) for b in (full, sampled)]
        for loader in loaders:
            loader.set_epoch(epoch)
        (whole,) = list(loaders[0])
        (mini,) = list(loaders[1])
        assert sorted(mini.group_ids.tolist()) == sorted(whole.group_ids.tolist())
        full_loss, full_grads = loss_and_grads(encoder, whole)
        mini_loss, mini_grads = loss_and_grads(encoder, mini)
        assert mini_loss == pytest.approx(full_loss, rel=1e-5)
        for name, grad in full_grads.items():
            torch.testing.assert_close(mini_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_an_epoch_visits_every_training_node_once_in_small_steps():
    data = random_graph(n=50)
    items = graph_items(data)
    builder = NeighborSampledGraphViews(batch_nodes=8, num_neighbors=[3, 2])
    pairs = builder.build(items)
    pairs = pairs[pairs["group_id"] % 5 != 0]  # a fifth held out: they pass messages only
    batches = builder.training_batches(items, pairs, 0, 0)
    batches.set_epoch(2)
    steps = list(batches)
    assert len(steps) == len(batches) == 5
    seen = torch.cat([b.group_ids[: len(b.group_ids) // 2] for b in steps])
    assert sorted(seen.tolist()) == sorted(set(pairs["group_id"].tolist()))
    encoder = GCNEncoder(embedding_dim=4)
    for batch in steps:
        # The encoder returns the seeds' rows of both views: the rows of the loss.
        assert batch.loss_rows is None
        assert encoder(batch.inputs).shape == (len(batch.group_ids), 4)
    # Resuming at step 3 gives the uninterrupted epoch's steps 3 and 4, as do two workers.
    batches.set_epoch(2, start_batch=3)
    for batch, again in zip(steps[3:], batches, strict=True):
        assert torch.equal(batch.group_ids, again.group_ids)
        assert torch.equal(batch.inputs.edge_index, again.inputs.edge_index)
    batches.use_workers(2)
    batches.set_epoch(2)
    for batch, again in zip(steps, batches, strict=True):
        assert torch.equal(batch.inputs.edge_index, again.inputs.edge_index)


def test_sampled_fan_out_bounds_the_incoming_edges_of_each_hop():
    data = random_graph(n=60, edges=600)
    incoming = IncomingEdges(data.edge_index, 60)
    seeds = torch.tensor([5, 1, 9])
    n_id, edges, hops = sample_subgraph(incoming, seeds, [4, 2], torch.Generator().manual_seed(0))
    assert torch.equal(n_id[:3], seeds) and len(torch.unique(n_id)) == len(n_id)
    assert hops[0] == 3 and sum(hops) == len(n_id) and len(hops) == 3
    in_degree = torch.bincount(edges[1], minlength=len(n_id))
    assert (in_degree[:3] == 4).all()  # every seed has more than 4 neighbours here
    assert (in_degree[3:] <= 2).all()
    edge_set = set(map(tuple, data.edge_index.t().tolist()))
    assert all((int(n_id[s]), int(n_id[t])) in edge_set for s, t in edges.t().tolist())


@pytest.mark.parametrize(
    ("encoder", "fanouts"),
    [
        (GCNEncoder(embedding_dim=6, num_layers=3, jumping_knowledge="cat"), [3, 2, 2]),
        (GATEncoder(embedding_dim=8, heads=2, num_layers=2), [3, 2]),
        (GINEncoder(embedding_dim=6, num_layers=2), [3, 2]),
        (GCNEncoder(embedding_dim=6, num_layers=3), [4]),  # fewer hops than layers
    ],
)
def test_the_trimmed_pass_gives_the_untrimmed_pass_rows_of_the_seeds(encoder, fanouts):
    data = random_graph(n=200, edges=800)
    builder = NeighborSampledGraphViews(batch_nodes=5, num_neighbors=fanouts)
    items = graph_items(data)
    batch = next(iter(builder.training_batches(items, builder.build(items), 0, 0)))
    sampled = batch.inputs
    hops = sampled.num_sampled_nodes
    assert hops[0] == 10 and sum(hops) == sampled.num_nodes and len(hops) == len(fanouts) + 1
    # Rows by hop: a node first reached at hop h is the target of an edge only if h < H.
    reached = sum(hops[:-1])
    assert int(sampled.edge_index[1].max()) < reached
    whole = Data(x=sampled.x, edge_index=sampled.edge_index, num_nodes=sampled.num_nodes)
    encoder.eval()  # GIN's batch norm with running statistics: rows do not interact
    with torch.no_grad():
        torch.testing.assert_close(encoder(sampled), encoder(whole)[: hops[0]])


def test_the_union_of_two_subgraphs_lists_its_rows_by_hop_then_by_view():
    first = (torch.tensor([[10.0], [11.0], [12.0]]), torch.tensor([[1, 2], [0, 0]]), [1, 2])
    second = (torch.tensor([[20.0], [21.0]]), torch.tensor([[1], [0]]), [1, 1])
    union = hop_ordered_union([first, second])
    assert union.x.flatten().tolist() == [10.0, 20.0, 11.0, 12.0, 21.0]
    assert union.edge_index.tolist() == [[2, 3, 4], [0, 0, 1]]
    assert union.num_sampled_nodes == [2, 3] and union.num_nodes == 5


@pytest.mark.parametrize(
    "encoder",
    [
        GCNEncoder(embedding_dim=6, num_layers=3),
        GATEncoder(embedding_dim=8, heads=2, num_layers=2),
        GINEncoder(embedding_dim=6, num_layers=2, jumping_knowledge="cat"),
    ],
)
def test_layerwise_embedding_equals_the_full_graph_pass(encoder):
    data = random_graph(n=70, edges=250)
    encoder.eval()
    with torch.no_grad():
        whole = encoder(data)
        chunked = layerwise_embed(encoder, data, chunk=16)
        data.layerwise_nodes = 16
        hooked = encoder(data)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hooked, chunked)


def test_bad_settings_and_node_ids_are_clear_errors():
    with pytest.raises(ConfigError, match="num_neighbors"):
        NeighborSampledGraphViews(num_neighbors=[0])
    with pytest.raises(ConfigError, match="batch_nodes"):
        NeighborSampledGraphViews(batch_nodes=0)
    with pytest.raises(ConfigError, match="graph_views"):
        NeighborSampledGraphViews(neighbours_as_positives=True)
    with pytest.raises(ValueError, match="node 9 of a graph of 5 nodes"):
        IncomingEdges(torch.tensor([[0, 9], [1, 2]]), 5)


def neighbor_experiment() -> Experiment:
    config = validate_config(
        {
            "experiments": {
                "g": minimal_experiment(
                    adapter={"name": "graph_table", "params": {"nodes": "n.csv", "edges": "e.csv"}},
                    pairs={"name": "graph_neighbor_views", "params": {"batch_nodes": 16}},
                    encoder={"name": "gcn", "params": {"embedding_dim": 8}},
                    head={"hidden_dim": 8, "output_dim": 8},
                    training={"epochs": 1, "device": "cpu", "seed": 3},
                )
            }
        }
    )
    return Experiment.from_dict({"name": "g", **config["experiments"]["g"]})


def test_training_sizes_its_layers_from_one_node_as_from_the_whole_graph(tmp_path, monkeypatch):
    """The loop's lazy-size pass reads one node of a layer-wise graph, not the whole graph,
    and initialises the weights a whole-graph pass gives; then a capped epoch trains."""
    embedded = []

    def recorded(encoder, data, chunk):
        embedded.append(data.num_nodes)
        return layerwise_embed(encoder, data, chunk)

    monkeypatch.setattr("scicontrast.models.graph_minibatch.layerwise_embed", recorded)
    items = graph_items(random_graph(n=50))
    items.save(tmp_path / "items")
    NeighborSampledGraphViews().build(items).to_parquet(tmp_path / "pairs.parquet")
    experiment = neighbor_experiment()
    loop = Loop(experiment, start_process_group(torch.device("cpu")), tmp_path / "c.pt", False)
    load_data(loop, tmp_path / "items", tmp_path / "pairs.parquet", 0)
    build_model_and_optimizer(loop)
    assert embedded == [1]
    torch.manual_seed(3)
    expected = build_model(experiment)
    expected.eval()
    with torch.no_grad():
        expected.embed(graph_data(items))
    got, want = loop.model.state_dict(), expected.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    capped = experiment.replace(training={"max_steps_per_epoch": 2})
    model_path = train(capped, tmp_path / "items", tmp_path / "pairs.parquet", tmp_path / "run")
    lines = [json.loads(line) for line in (model_path.parent / "metrics.jsonl").open()]
    steps = [line for line in lines if line["kind"] == "step"]
    assert len(steps) == 2 and all(math.isfinite(line["loss"]) for line in steps)
