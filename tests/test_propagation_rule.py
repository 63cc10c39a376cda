"""The propagation rule of ``propagated_mlp`` (hops and teleport from the graph's size)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import minimal_experiment
from test_gnn import toy_graph
from torch_geometric.utils import dropout_edge

from scicontrast.config import validate_config
from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model, load_model, save_model
from scicontrast.models.gnn import PropagatedMLPEncoder, propagation_rule


@pytest.mark.parametrize(
    ("num_nodes", "num_edges", "hops"),
    [
        (2708, 10556, 10),  # ln 2708 / ln 4.898 = 4.975: twice, rounded up
        (2, 2, 2),  # ln 2 / ln 2 = 1
        (1000, 999_000, 2),  # complete graph: one step apart
        (10**6, 10**6, 40),  # ln 1e6 / ln 2 = 19.93
        (10**12, 10**12, 64),  # 79.7, clipped
        (100, 10, 64),  # mostly isolated nodes: ln 100 / ln 1.1 = 48.3, clipped
    ],
)
def test_rule_is_twice_the_random_graph_distance(num_nodes, num_edges, hops):
    """``K = clip(ceil(2 ln N / ln(1 + E/N)), 2, 64)`` and ``alpha = 1/K``."""
    assert propagation_rule(num_nodes, num_edges) == (hops, 1.0 / hops)
    distance = math.log(num_nodes) / math.log1p(num_edges / num_nodes)
    assert hops == min(max(math.ceil(2 * distance), 2), 64)


def test_rule_needs_nodes_and_edges():
    with pytest.raises(ConfigError, match="at least 2 nodes and 1 edge"):
        propagation_rule(5, 0)


def test_auto_is_fixed_by_the_first_graph_and_equals_explicit_values():
    """The sizing pass on the whole graph fixes (K, alpha); a sparser view later changes
    nothing, and the encoder equals one given the rule's values outright."""
    data = toy_graph(n_nodes=9)
    hops, teleport = propagation_rule(data.num_nodes, data.edge_index.shape[1])
    auto = PropagatedMLPEncoder(embedding_dim=4, hops="auto", teleport="auto", order="after")
    explicit = PropagatedMLPEncoder(embedding_dim=4, hops=hops, teleport=teleport, order="after")
    with torch.no_grad():
        # Lazy layers draw their weights at the first pass: seed each the same.
        torch.manual_seed(0)
        first = auto(data)
        torch.manual_seed(0)
        torch.testing.assert_close(first, explicit(data))
        view = data.clone()
        view.edge_index, _ = dropout_edge(data.edge_index, p=0.5)
        auto(view)
    assert auto.rule.tolist() == [hops, teleport]
    assert (auto.propagation.K, auto.propagation.alpha) == (hops, teleport)


def test_auto_values_are_saved_with_the_model(tmp_path):
    experiment = minimal_experiment(
        adapter={"name": "graph_table", "params": {"nodes": "n.csv", "edges": "e.csv"}},
        pairs={"name": "graph_views"},
        encoder={
            "name": "propagated_mlp",
            "params": {"embedding_dim": 4, "hops": "auto", "teleport": "auto"},
        },
    )
    validated = validate_config({"experiments": {"g": experiment}})["experiments"]["g"]
    typed = Experiment.from_dict({"name": "g", **validated})
    model = build_model(typed).eval()
    data = toy_graph(n_nodes=9)
    with torch.no_grad():
        expected = model.embed(data)
    save_model(tmp_path / "model.pt", model, typed)
    loaded, _ = load_model(tmp_path / "model.pt")
    assert loaded.encoder.rule.tolist() == model.encoder.rule.tolist()
    # A different graph first: the loaded model still propagates with the trained values.
    sparser = toy_graph(n_nodes=30)
    with torch.no_grad():
        loaded.embed(sparser)
        torch.testing.assert_close(loaded.embed(data), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hops": "some"}, "hops must be an integer >= 1 or 'auto'"),
        ({"teleport": "many"}, r"teleport must be in \[0, 1\) or 'auto'"),
        ({"hops": "auto", "in_channels": 5}, "hops/teleport .auto. need in_channels -1"),
    ],
)
def test_bad_auto_settings_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=f"encoder propagated_mlp: {message}"):
        PropagatedMLPEncoder(**params)
