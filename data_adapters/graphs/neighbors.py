"""``graph_neighbor_views``: GRACE's two views, trained in neighbour-sampled mini-batches.

The views are those of ``graph_views`` (edge dropping and feature masking of the whole
graph, drawn from ``(seed, epoch, view)``); what changes is the step. An epoch visits the
training nodes in a permutation drawn from ``(seed, epoch)``, ``batch_nodes`` at a time;
each step samples, in each view graph, the subgraph of ``num_neighbors[l]`` incoming edges
per node and hop around those seed nodes
(:func:`scicontrast.data_adapters.graphs.sampling.sample_subgraph`), and the loss compares the
seed nodes' two views, every other sampled node only passing messages. A step's input is the
disjoint union of the two subgraphs with its nodes ordered by hop (both views' seeds, then
both views' hop-1 nodes, ...) and ``num_sampled_nodes`` per hop, so that the encoder computes
layer ``l`` only for the nodes that a later layer reads (PyG's ``trim_to_layer``; see
:func:`~scicontrast.models.graph_minibatch.trimmed_forward`) and returns the seeds' rows
alone: hop ``L`` of ``L`` layers is read by the first layer only, and the last layer and the
projection head run on the seeds only. Memory and time per step are set by ``batch_nodes``
and the fan-outs, not by the graph. Embedding is exact and
layer-wise, ``inference_nodes`` target nodes at a time
(:func:`~scicontrast.models.graph_minibatch.layerwise_embed`, for the message-passing
encoders ``gcn``, ``gat``, ``gin``).

With every fan-out ``-1`` and ``batch_nodes`` at least the number of nodes, a step is the
full-batch step of ``graph_views`` (same loss and gradients up to float summation order).
Not supported here (a ``ConfigError``): ``neighbours_as_positives`` and ``diffusion_view``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import cast

import pandas as pd
import torch
from torch_geometric.data import Data

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.graphs.sampling import (
    IncomingEdges,
    epoch_permutation,
    sample_subgraph,
    step_generator,
)
from scicontrast.data_adapters.graphs.views import GraphViewBatches, GraphViews, graph_data
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.errors import ConfigError
from scicontrast.registry import PAIR_BUILDERS


@PAIR_BUILDERS.register("graph_neighbor_views")
class NeighborSampledGraphViews(GraphViews):
    """``graph_views`` in mini-batches; see the module docstring.

    Args:
        batch_nodes: Seed nodes per step.
        num_neighbors: Incoming edges sampled per node at each hop (one entry per encoder
            layer); ``-1`` takes them all.
        inference_nodes: Target nodes per chunk of layer-wise embedding.
        **kwargs: ``graph_views``' view settings (edge drop and feature mask rates).
    """

    def __init__(
        self,
        batch_nodes: int = 1024,
        num_neighbors: Sequence[int] = (10, 10),
        inference_nodes: int = 65536,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        where = "pairs graph_neighbor_views: params"
        if self.neighbours_as_positives or self.diffusion_view is not None:
            raise ConfigError(
                f"{where}: neighbours_as_positives and diffusion_view need pairs graph_views"
            )
        for key, value in (("batch_nodes", batch_nodes), ("inference_nodes", inference_nodes)):
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{where}.{key} must be an integer >= 1, got {value!r}")
        if not num_neighbors or not all(
            isinstance(k, int) and not isinstance(k, bool) and (k >= 1 or k == -1)
            for k in num_neighbors
        ):
            raise ConfigError(
                f"{where}.num_neighbors must be a list of integers >= 1 or -1, "
                f"got {num_neighbors!r}"
            )
        self.batch_nodes = batch_nodes
        self.num_neighbors = list(num_neighbors)
        self.inference_nodes = inference_nodes

    def training_batches(
        self,
        items: Items,
        pairs: pd.DataFrame,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> EpochLoader:
        """An epoch of neighbour-sampled steps over the nodes of ``pairs``."""
        loader = super().training_batches(items, pairs, seed, batch_size, rank, world_size)
        whole = cast(GraphViewBatches, loader.plan)
        return EpochLoader(NeighborViewBatches(self, whole.data, seed, whole.nodes))

    def embedding_batches(self, items: Items, batch_size: int) -> Iterator[Data]:
        """The clean graph, once, marked for layer-wise inference."""
        data = graph_data(items)
        data.layerwise_nodes = self.inference_nodes
        yield data


class NeighborViewBatches:
    """The steps of ``graph_neighbor_views``, a ``BatchPlan`` (``data_adapters.loader``).

    Batch ``key`` of an epoch holds the seed nodes ``key * B ... (key + 1) * B - 1`` of the
    epoch's permutation; its ``group_ids`` ``[2B]`` are their ids, view 1's then view 2's,
    the rows the encoder returns for its hop-ordered input (module docstring). The epoch's
    two view graphs and their CSR indexes are made once per epoch and process, then reused.
    """

    def __init__(
        self, builder: NeighborSampledGraphViews, data: Data, seed: int, nodes: torch.Tensor
    ) -> None:
        self.builder = builder
        self.data = data
        self.seed = seed
        self.nodes = nodes
        self.n_groups = len(nodes)
        self._epoch: tuple[int, list[Data], list[IncomingEdges], torch.Tensor] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.nodes) / self.builder.batch_nodes)

    def batch_keys(self, epoch: int) -> list[int]:
        return list(range(len(self)))

    def _views(self, epoch: int) -> tuple[list[Data], list[IncomingEdges], torch.Tensor]:
        """The epoch's view graphs, their incoming-edge indexes and its seed order."""
        if self._epoch is None or self._epoch[0] != epoch:
            views, _ = self.builder.views(self.data, self.seed, epoch)
            graphs = [views.get_example(view) for view in range(2)]
            incoming = [IncomingEdges(g.edge_index, g.num_nodes) for g in graphs]
            order = self.nodes[epoch_permutation(len(self.nodes), self.seed, epoch)]
            self._epoch = (epoch, graphs, incoming, order)
        return self._epoch[1], self._epoch[2], self._epoch[3]

    def make_batch(self, epoch: int, key: int) -> ContrastiveBatch:
        graphs, incoming, order = self._views(epoch)
        size = self.builder.batch_nodes
        seeds = order[key * size : (key + 1) * size]
        subgraphs = []
        for view, (graph, edges) in enumerate(zip(graphs, incoming, strict=True)):
            generator = step_generator(self.seed, epoch, key, view)
            n_id, edge_index, hops = sample_subgraph(
                edges, seeds, self.builder.num_neighbors, generator
            )
            subgraphs.append((graph.x[n_id], edge_index, hops))
        return ContrastiveBatch(hop_ordered_union(subgraphs), seeds.repeat(2))


def hop_ordered_union(subgraphs: Sequence[tuple[torch.Tensor, torch.Tensor, list[int]]]) -> Data:
    """The disjoint union of sampled subgraphs, its nodes ordered by hop, then by subgraph.

    Each subgraph is ``(x [n_v, F], edge_index [2, e_v], hop_sizes [H])`` with its nodes
    ordered by hop (:func:`~scicontrast.data_adapters.graphs.sampling.sample_subgraph`). The
    union's rows are every subgraph's hop-0 nodes (subgraph 0's, then 1's, ...), then every
    subgraph's hop-1 nodes, and so on; its ``num_sampled_nodes`` ``[H]`` counts them per hop
    (PyG's ``NeighborLoader`` attribute of that name), and its edges are the subgraphs'
    edges relabelled to those rows.
    """
    sizes = torch.tensor([hops for _, _, hops in subgraphs])  # [V, H]
    by_hop = sizes.t().flatten()  # hop-major: the union's blocks in row order
    starts = (torch.cumsum(by_hop, 0) - by_hop).view(sizes.shape[1], -1).t()  # [V, H]
    x = subgraphs[0][0].new_empty((int(sizes.sum()), subgraphs[0][0].shape[1]))
    edges = []
    for view, (x_view, edge_index, _) in enumerate(subgraphs):
        hop = torch.repeat_interleave(torch.arange(sizes.shape[1]), sizes[view])
        first = torch.cumsum(sizes[view], 0) - sizes[view]  # each hop's first local row
        row = starts[view][hop] + torch.arange(len(hop)) - first[hop]
        x[row] = x_view
        edges.append(row[edge_index])
    union = Data(x=x, edge_index=torch.cat(edges, dim=1), num_nodes=len(x))
    union.num_sampled_nodes = sizes.sum(0).tolist()
    return union
