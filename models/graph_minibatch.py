r"""Graphs beyond full batch: neighbour-sampled subgraphs for training, layer-wise inference.

**Neighbour sampling** (GraphSAGE, Hamilton et al. 2017; PyG's ``NeighborLoader`` semantics,
``directed=True``). Edges run source -> target and a layer aggregates at the target. From
``seeds``, hop ``l`` takes, for every node first reached at hop ``l - 1`` (the seeds at hop
1), ``fanouts[l-1]`` of its incoming edges drawn without replacement (all of them when the
fan-out is ``-1`` or at least the in-degree); their sources not yet reached form the next
frontier. The subgraph holds the reached nodes, seeds first in seed order, and the sampled
edges. With every fan-out ``-1`` and every node a seed it is the whole graph, relabelled, so
a mini-batch step then equals a full-batch step (``tests/test_graph_minibatch.py``).
PyG's ``NeighborLoader`` needs ``pyg-lib`` or ``torch-sparse``, neither of which installs
from PyPI for every torch; this sampler is a few vectorised torch operations on a CSR index.

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
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm


class IncomingEdges:
    """CSR index of a graph's edges by target: ``sources[ptr[v]:ptr[v+1]]`` point into ``v``.

    Args:
        edge_index: ``[2, E]`` long, ``(source, target)``.
        num_nodes: ``N``; every index must be below it.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        if edge_index.numel() and int(edge_index.max()) >= num_nodes:
            raise ValueError(
                f"edge_index names node {int(edge_index.max())} of a graph of {num_nodes} nodes"
            )
        order = torch.argsort(edge_index[1], stable=True)
        self.sources = edge_index[0, order]
        self.edge_ids = order
        counts = torch.bincount(edge_index[1], minlength=num_nodes)
        self.ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
        torch.cumsum(counts, dim=0, out=self.ptr[1:])
        self.num_nodes = num_nodes

    def into(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Positions ``[M]`` (into ``sources``/``edge_ids``) of every edge into ``targets``,
        and the index ``[M]`` of its target within ``targets``."""
        starts, degrees = self.ptr[targets], self.ptr[targets + 1] - self.ptr[targets]
        owner = torch.repeat_interleave(torch.arange(len(targets), device=targets.device), degrees)
        first = torch.repeat_interleave(torch.cumsum(degrees, 0) - degrees, degrees)
        return starts[owner] + torch.arange(len(owner), device=targets.device) - first, owner


def sample_subgraph(
    incoming: IncomingEdges, seeds: Tensor, fanouts: Sequence[int], generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Neighbour-sampled subgraph around ``seeds`` (module docstring).

    Returns ``(n_id [n], edge_index [2, e])``: the reached nodes' global ids (``n_id[:len(seeds)]
    == seeds``) and the sampled edges in local ids.
    """
    local = torch.full((incoming.num_nodes,), -1, dtype=torch.long)
    local[seeds] = torch.arange(len(seeds))
    nodes, frontier, edges = [seeds], seeds, []
    reached = len(seeds)
    for fanout in fanouts:
        positions, owner = incoming.into(frontier)
        if fanout >= 0 and len(positions):
            # Without replacement: rank each node's edges by a random key, keep the first k.
            keys = owner.double() + torch.rand(len(owner), generator=generator, dtype=torch.float64)
            order = torch.argsort(keys)
            positions, owner = positions[order], owner[order]
            degrees = torch.bincount(owner, minlength=len(frontier))
            rank = torch.arange(len(owner)) - torch.repeat_interleave(
                torch.cumsum(degrees, 0) - degrees, degrees
            )
            keep = rank < fanout
            positions, owner = positions[keep], owner[keep]
        sources = incoming.sources[positions]
        new = torch.unique(sources[local[sources] < 0])
        local[new] = torch.arange(reached, reached + len(new))
        reached += len(new)
        edges.append(torch.stack([local[sources], local[frontier[owner]]]))
        nodes.append(new)
        frontier = new
    return torch.cat(nodes), torch.cat(edges, dim=1)


def layerwise_embed(encoder: nn.Module, data: Data, chunk: int) -> Tensor:
    """``encoder(data)`` of a :class:`~scicontrast.models.gnn.GraphEncoder`, computed layer by
    layer over ``chunk`` target nodes at a time (module docstring); ``[N, embedding_dim]``."""
    n_nodes = data.num_nodes
    edge_index, edge_weight = data.edge_index, getattr(data, "edge_weight", None)
    gcn = any(isinstance(conv, GCNConv) for conv in encoder.convs)
    if gcn:
        edge_index, edge_weight = gcn_norm(edge_index, edge_weight, n_nodes, dtype=data.x.dtype)
    incoming = IncomingEdges(edge_index, n_nodes)
    h, outputs = data.x, []
    device = data.x.device
    for conv, activation in zip(encoder.convs, encoder.activations, strict=True):
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
def _normalised_already(conv: nn.Module, gcn: bool) -> Iterator[None]:
    """Turn a GCN layer's own normalisation (and self-loops) off: the weights carry them."""
    if not gcn:
        yield
        return
    conv.normalize = False
    try:
        yield
    finally:
        conv.normalize = True


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed(_mixed_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


def step_generator(seed: int, epoch: int, step: int, view: int) -> torch.Generator:
    """The sampling generator of one view of one step, from ``(seed, epoch, step, view)``."""
    return torch.Generator().manual_seed(_mixed_seed(seed, epoch, step, view))


def _mixed_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
