r"""Layer-wise inference: the embedding of a graph too large for one forward pass.

**Layer-wise inference** (PyG's ``inference`` examples): the embedding of a graph too large
for one pass is computed one layer at a time over all nodes, ``chunk`` target nodes at a
time, each chunk with *all* its incoming edges, so every layer is exact: with
:math:`H^{(0)} = X`, :math:`H^{(l)}[T] = \sigma(\mathrm{conv}_l(H^{(l-1)}, A)[T])` for every
chunk ``T``. GCN's symmetric normalisation :math:`\hat D^{-1/2}(A + I)\hat D^{-1/2}` needs the
degrees of the whole graph, so it is computed once and passed as edge weights with the
layer's own normalisation off. Memory: two ``[N, width]`` layer outputs plus one chunk's
edges, instead of every layer's activations and messages for every edge at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
