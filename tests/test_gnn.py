"""Graph encoders: shapes, lazy input size, permutation equivariance, save and load."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from conftest import minimal_experiment
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_torch_csr_tensor

from scicontrast.config import validate_config
from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model, load_model, save_model
from scicontrast.models.gnn import GATEncoder, GCNEncoder, GINEncoder, PropagatedMLPEncoder
from scicontrast.registry import ENCODERS

ENCODER_CLASSES = [GCNEncoder, GATEncoder, GINEncoder]


def toy_graph(n_nodes: int = 7, n_features: int = 5, seed: int = 0) -> Data:
    generator = torch.Generator().manual_seed(seed)
    source = torch.arange(n_nodes)
    target = (source + 1) % n_nodes
    edge_index = torch.cat([torch.stack([source, target]), torch.stack([target, source])], dim=1)
    edge_index = torch.cat([edge_index, torch.tensor([[0, 3], [3, 0]])], dim=1)  # a chord
    return Data(x=torch.randn(n_nodes, n_features, generator=generator), edge_index=edge_index)


def test_registered_names():
    assert ENCODERS.get("gcn") is GCNEncoder
    assert ENCODERS.get("gat") is GATEncoder
    assert ENCODERS.get("gin") is GINEncoder


@pytest.mark.parametrize("cls", ENCODER_CLASSES)
@pytest.mark.parametrize("jumping_knowledge", ["last", "cat"])
def test_output_shape_matches_embedding_dim(cls, jumping_knowledge):
    encoder = cls(
        embedding_dim=8, hidden_channels=12, num_layers=3, jumping_knowledge=jumping_knowledge
    )
    h = encoder(toy_graph())
    assert h.shape == (7, encoder.embedding_dim)
    assert encoder.embedding_dim == (8 if jumping_knowledge == "last" else 12 + 12 + 8)


def test_grace_defaults_two_gcn_layers_twice_as_wide_then_embedding():
    encoder = GCNEncoder(embedding_dim=16)
    encoder(toy_graph())
    assert [conv.lin.weight.shape for conv in encoder.convs] == [(32, 5), (16, 32)]
    assert all(isinstance(a, torch.nn.PReLU) for a in encoder.activations)


@pytest.mark.parametrize("cls", [*ENCODER_CLASSES, PropagatedMLPEncoder])
def test_permuting_nodes_permutes_embeddings(cls):
    torch.manual_seed(0)
    encoder = cls(embedding_dim=8).eval()
    data = toy_graph()
    permutation = torch.randperm(data.num_nodes)
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(len(permutation))
    permuted = Data(x=data.x[permutation], edge_index=inverse[data.edge_index])
    with torch.no_grad():
        torch.testing.assert_close(encoder(permuted), encoder(data)[permutation])


@pytest.mark.parametrize("cls", [*ENCODER_CLASSES, PropagatedMLPEncoder])
def test_graphs_in_one_batch_do_not_see_each_other(cls):
    torch.manual_seed(0)
    encoder = cls(embedding_dim=8).eval()
    first, second = toy_graph(seed=1), toy_graph(n_nodes=5, seed=2)
    with torch.no_grad():
        together = encoder(Batch.from_data_list([first, second]))
        torch.testing.assert_close(together, torch.cat([encoder(first), encoder(second)]))


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="encoder gat: layer width 10 is not divisible"):
        GATEncoder(embedding_dim=10, hidden_channels=8, heads=4)
    with pytest.raises(ConfigError, match="encoder gcn: activation"):
        GCNEncoder(activation="tanh")
    with pytest.raises(ConfigError, match="num_layers"):
        GINEncoder(num_layers=0)


def test_gcn_with_unit_edge_weights_is_gcn_without_weights():
    torch.manual_seed(0)
    encoder = GCNEncoder(embedding_dim=8, num_layers=2).eval()
    first, second = toy_graph(seed=1), toy_graph(n_nodes=5, seed=2)
    for graph in (first, second):
        graph.edge_weight = torch.ones(graph.edge_index.shape[1])
    with torch.no_grad():
        weighted = encoder(Batch.from_data_list([first, second]))
        for graph in (first, second):
            del graph.edge_weight
        plain = encoder(Batch.from_data_list([first, second]))
    assert torch.equal(weighted, plain)


def test_gcn_uses_edge_weights_as_the_weighted_normalised_adjacency():
    """One layer by hand: relu(Â^T X W^T + b), Â_ij = w_ij / sqrt(d_i d_j), d the in-degree."""
    torch.manual_seed(0)
    data = toy_graph()
    n = data.num_nodes
    generator = torch.Generator().manual_seed(3)
    data.edge_weight = torch.rand(data.edge_index.shape[1], generator=generator) + 0.1
    # Node 2 brings its own self-loop (weight 0.3): kept; every other node gets weight 1.
    data.edge_index = torch.cat([data.edge_index, torch.tensor([[2], [2]])], dim=1)
    data.edge_weight = torch.cat([data.edge_weight, torch.tensor([0.3])])
    encoder = GCNEncoder(embedding_dim=4, num_layers=1, activation="relu").eval()
    with torch.no_grad():
        got = encoder(data)
    a = torch.eye(n, dtype=torch.float64)
    a[2, 2] = 0.3
    a[data.edge_index[0, :-1], data.edge_index[1, :-1]] = data.edge_weight[:-1].double()
    d = a.sum(dim=0).rsqrt()
    a_hat = d[:, None] * a * d[None, :]
    conv = encoder.convs[0]
    expected = torch.relu(
        a_hat.T @ data.x.double() @ conv.lin.weight.double().T + conv.bias.double()
    )
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        del data.edge_weight
        assert not torch.allclose(encoder(data), got)  # the weights matter


@pytest.mark.parametrize("cls", [GATEncoder, GINEncoder, PropagatedMLPEncoder])
def test_encoders_without_edge_weights_refuse_weighted_graphs(cls):
    data = toy_graph()
    data.edge_weight = torch.ones(data.edge_index.shape[1])
    with pytest.raises(ConfigError, match=f"encoder {cls.name}: the graph carries edge weights"):
        cls(embedding_dim=8)(data)


@pytest.mark.parametrize("name", ["gcn", "gat", "gin", "propagated_mlp"])
def test_model_with_lazy_input_size_saves_and_loads(tmp_path, name):
    experiment = minimal_experiment(
        adapter={"name": "graph_table", "params": {"nodes": "n.csv", "edges": "e.csv"}},
        pairs={"name": "graph_views"},
        encoder={"name": name, "params": {"embedding_dim": 8}},
    )
    validated = validate_config({"experiments": {"g": experiment}})["experiments"]["g"]
    typed = Experiment.from_dict({"name": "g", **validated})
    model = build_model(typed).eval()
    data = toy_graph()
    with torch.no_grad():
        expected = model.embed(data)  # the first pass fixes the input size
    save_model(tmp_path / "model.pt", model, typed)
    loaded, _ = load_model(tmp_path / "model.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(data), expected, rtol=0, atol=0)


def dense_propagation(data: Data) -> torch.Tensor:
    """``S = D^-1/2 (A + I) D^-1/2`` as a dense matrix, ``D`` the degrees of ``A + I``."""
    n = data.num_nodes
    adjacency = torch.eye(n)
    adjacency[data.edge_index[1], data.edge_index[0]] = 1.0
    scale = adjacency.sum(dim=1).rsqrt()
    return scale[:, None] * adjacency * scale[None, :]


@pytest.mark.parametrize("teleport", [0.0, 0.1, 0.5])
def test_propagation_is_the_truncated_personalized_pagerank(teleport):
    """``P^(K) = [(1-a)^K S^K + a sum_{t<K} (1-a)^t S^t] X``; ``a = 0`` is SGC's ``S^K X``."""
    data, hops = toy_graph(), 4
    s = dense_propagation(data)
    power = torch.linalg.matrix_power
    closed = (1 - teleport) ** hops * power(s, hops) + teleport * sum(
        (1 - teleport) ** t * power(s, t) for t in range(hops)
    )
    encoder = PropagatedMLPEncoder(
        embedding_dim=3, hops=hops, teleport=teleport, order="before"
    ).eval()
    with torch.no_grad():
        propagated = encoder.propagation(data.x, data.edge_index)
        torch.testing.assert_close(propagated, closed @ data.x)
        torch.testing.assert_close(encoder(data), encoder.mlp(closed @ data.x))


def test_propagation_after_the_mlp_is_appnp():
    torch.manual_seed(0)
    data = toy_graph()
    encoder = PropagatedMLPEncoder(
        embedding_dim=3, num_layers=2, hops=3, teleport=0.1, order="after"
    ).eval()
    closed = 0.9**3 * torch.linalg.matrix_power(dense_propagation(data), 3) + 0.1 * sum(
        0.9**t * torch.linalg.matrix_power(dense_propagation(data), t) for t in range(3)
    )
    with torch.no_grad():
        torch.testing.assert_close(encoder(data), closed @ encoder.mlp(data.x))
    assert [m.out_channels for m in encoder.mlp if hasattr(m, "out_channels")] == [3, 3]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hops": 0}, "hops must be an integer >= 1"),
        ({"teleport": 1.0}, r"teleport must be in \[0, 1\)"),
        ({"order": "middle"}, "order must be one of"),
        ({"num_layers": 0}, "num_layers must be >= 1"),
        ({"activation": "tanh"}, "activation must be one of"),
    ],
)
def test_propagated_mlp_bad_settings_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=f"encoder propagated_mlp: {message}"):
        PropagatedMLPEncoder(**params)


def test_propagated_mlp_follows_edge_direction():
    """Messages flow source -> target: on the edge 0 -> 1 alone, node 0 hears nothing."""
    data = Data(x=torch.tensor([[1.0], [0.0]]), edge_index=torch.tensor([[0], [1]]))
    encoder = PropagatedMLPEncoder(embedding_dim=1, hops=1, teleport=0.0)
    propagated = encoder.propagation(data.x, data.edge_index)  # the reference: edge_index
    adjacency = to_torch_csr_tensor(data.edge_index.flip(0), size=(2, 2))
    torch.testing.assert_close(encoder.propagation(data.x, adjacency), propagated)
    # Node 0 (in-degree 1 with its self-loop) keeps x_0; node 1 gets x_0 / sqrt(1 * 2).
    torch.testing.assert_close(propagated, torch.tensor([[1.0], [0.5**0.5]]))


def test_reference_graph_config_is_the_propagated_mlp_defaults():
    """benchmarks/cora_propagated.yaml fixes nothing for Cora: its encoder is the defaults."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cora_propagated.yaml"
    encoder = yaml.safe_load(path.read_text())["experiments"]["cora_propagated"]["encoder"]
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(PropagatedMLPEncoder).parameters.items()
        if name != "in_channels"
    }
    assert encoder["name"] == "propagated_mlp"
    assert {**defaults, "hidden_channels": None} == {**defaults, **encoder["params"]}
