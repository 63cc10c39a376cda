r"""Neighbour-sampled subgraphs: how a large graph trains in mini-batches.

**Neighbour sampling** (GraphSAGE, Hamilton et al. 2017; PyG's ``NeighborLoader`` semantics,
``directed=True``). Edges run source -> target and a layer aggregates at the target. From
``seeds``, hop ``l`` takes, for every node first reached at hop ``l - 1`` (the seeds at hop
1), ``fanouts[l-1]`` of its incoming edges drawn without replacement (all of them when the
fan-out is ``-1`` or at least the in-degree); their sources not yet reached form the next
frontier. The subgraph holds the reached nodes by hop (seeds first in seed order, then
the nodes first reached at hop 1, ...) and the sampled edges. With every fan-out ``-1`` and
every node a seed it is the whole graph, relabelled, so a mini-batch step then equals a
full-batch step (``tests/test_graph_minibatch.py``).
PyG's ``NeighborLoader`` needs ``pyg-lib`` or ``torch-sparse``, neither of which installs
from PyPI for every torch; this sampler is a few vectorised torch operations on a CSR index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


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
) -> tuple[Tensor, Tensor, list[int]]:
    """Neighbour-sampled subgraph around ``seeds`` (module docstring).

    Returns ``(n_id [n], edge_index [2, e], hop_sizes [len(fanouts) + 1])``: the reached
    nodes' global ids by hop (``n_id[:len(seeds)] == seeds``), the sampled edges in local ids,
    and how many nodes were first reached at each hop (``hop_sizes[0] == len(seeds)``).
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
    return torch.cat(nodes), torch.cat(edges, dim=1), [len(hop) for hop in nodes]


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed(_mixed_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


def step_generator(seed: int, epoch: int, step: int, view: int) -> torch.Generator:
    """The sampling generator of one view of one step, from ``(seed, epoch, step, view)``."""
    return torch.Generator().manual_seed(_mixed_seed(seed, epoch, step, view))


def _mixed_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
