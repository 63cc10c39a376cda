r"""Layer-wise inference and trimmed training passes: graphs too large for one forward pass.

**Layer-wise inference** (PyG's ``inference`` examples): the embedding of a graph too large
for one pass is computed one layer at a time over all nodes, ``chunk`` target nodes at a
time, each chunk with *all* its incoming edges, so every layer is exact: with
:math:`H^{(0)} = X`, :math:`H^{(l)}[T] = \sigma(\mathrm{conv}_l(H^{(l-1)}, A)[T])` for every
chunk ``T``. GCN's symmetric normalisation :math:`\hat D^{-1/2}(A + I)\hat D^{-1/2}` needs the
degrees of the whole graph, so it is computed once and passed as edge weights with the
layer's own normalisation off. Memory: two ``[N, width]`` layer outputs plus one chunk's
edges, instead of every layer's activations and messages for every edge at once.

**Trimmed training pass** (PyG's ``trim_to_layer``): a neighbour-sampled step's input lists
its nodes by hop (``num_sampled_nodes``: hop 0 = the seeds). With ``L`` layers, the seeds'
outputs read layer ``L - 1`` at hop <= 1 only, which reads layer ``L - 2`` at hop <= 2, and so
on: layer ``l`` (from 1) is computed for the nodes of hop <= ``L - l`` alone, from their
incoming edges alone. Every computed row equals the untrimmed pass's row (GCN's
normalisation again comes from the whole sampled graph's degrees, computed once), except
that batch-norm statistics (GIN's MLP) are those of the computed rows; the pass returns the
seeds' rows ``[num_sampled_nodes[0], D]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from scicontrast.data_adapters.graphs.sampling import IncomingEdges


def layerwise_embed(encoder: nn.Module, data: Data, chunk: int) -> Tensor:
    """``encoder(data)`` of a :class:`~scicontrast.models.gnn.GraphEncoder`, computed layer by
    layer over ``chunk`` target nodes at a time (module docstring); ``[N, embedding_dim]``."""
    n_nodes = data.num_nodes
    edge_index, edge_weight = data.edge_index, getattr(data, "edge_weight", None)
    convs = cast(nn.ModuleList, encoder.convs)
    activations = cast(nn.ModuleList, encoder.activations)
    gcn = any(isinstance(conv, GCNConv) for conv in convs)
    if gcn:
        edge_index, edge_weight = gcn_norm(edge_index, edge_weight, n_nodes, dtype=data.x.dtype)
    incoming = IncomingEdges(edge_index, n_nodes)
    h, outputs = data.x, []
    device = data.x.device
    for conv, activation in zip(convs, activations, strict=True):
        parts = []
        for start in range(0, n_nodes, chunk):
            stop = min(start + chunk, n_nodes)
            targets = torch.arange(start, stop, device=device)
            positions, owner = incoming.into(targets)
            sources = incoming.sources[positions]
            # Targets first, then the other sources: the layer's output rows [:len(targets)].
            others = torch.unique(sources[(sources < start) | (sources >= stop)])
            n_id = torch.cat([targets, others])
            local = torch.empty(n_nodes, dtype=torch.long, device=device)
            local[n_id] = torch.arange(len(n_id), device=device)
            sub_edges = torch.stack([local[sources], owner])
            graph = [sub_edges]
            if edge_weight is not None:
                graph.append(edge_weight[incoming.edge_ids[positions]])
            with _normalised_already(conv, gcn):
                parts.append(activation(conv(h[n_id], *graph))[: len(targets)])
        h = torch.cat(parts)
        outputs.append(h)
    return torch.cat(outputs, dim=1) if encoder.jumping_knowledge == "cat" else h


def trimmed_forward(encoder: nn.Module, data: Data, num_sampled_nodes: Sequence[int]) -> Tensor:
    """``encoder(data)``'s rows of the seeds (hop 0) of a hop-ordered sampled graph, each layer
    computed only for the nodes a later layer reads (module docstring); ``[S, D]``."""
    convs = cast(nn.ModuleList, encoder.convs)
    activations = cast(nn.ModuleList, encoder.activations)
    edge_index, edge_weight = data.edge_index, getattr(data, "edge_weight", None)
    gcn = any(isinstance(conv, GCNConv) for conv in convs)
    if gcn:
        edge_index, edge_weight = gcn_norm(
            edge_index, edge_weight, data.num_nodes, dtype=data.x.dtype
        )
    h, outputs, seeds = data.x, [], num_sampled_nodes[0]
    for layer, (conv, activation) in enumerate(zip(convs, activations, strict=True)):
        # Rows a later layer reads: hops 0 .. L - 1 - layer, a prefix of the rows; their
        # incoming edges come from hops <= L - layer, the rows the previous layer computed.
        rows = sum(num_sampled_nodes[: len(convs) - layer])
        kept = edge_index[1] < rows
        graph = [edge_index[:, kept]]
        if edge_weight is not None:
            graph.append(edge_weight[kept])
        if isinstance(conv, GCNConv) and h.shape[1] < conv.out_channels:
            h = activation(_aggregate_first(conv, h, graph[0], graph[1], rows))
        else:
            with _normalised_already(conv, gcn):
                h = activation(conv(h, *graph)[:rows])
        outputs.append(h[:seeds])
    return torch.cat(outputs, dim=1) if encoder.jumping_knowledge == "cat" else h


def _aggregate_first(
    conv: GCNConv, h: Tensor, edge_index: Tensor, edge_weight: Tensor, rows: int
) -> Tensor:
    r"""``conv(h)[:rows]`` of a GCN layer with normalised ``edge_weight``, as
    :math:`(\hat A H) W + b` rather than PyG's :math:`\hat A (H W) + b`: equal, but when the
    input is narrower than the output the messages carry the input's channels and the linear
    map runs on the ``rows`` targets only, not on every source (a sampled step's first layer:
    a few times more sources than targets)."""
    aggregated = conv.propagate(edge_index, x=h, edge_weight=edge_weight)[:rows]
    out = conv.lin(aggregated)
    return out if conv.bias is None else out + conv.bias


@contextlib.contextmanager
def _normalised_already(conv: Any, gcn: bool) -> Iterator[None]:
    """Turn a GCN layer's own normalisation (and self-loops) off: the weights carry them."""
    if not gcn:
        yield
        return
    conv.normalize = False
    try:
        yield
    finally:
        conv.normalize = True
