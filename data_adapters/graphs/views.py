r"""GRACE's two-view pair builder, with the diffusion view and held-out nodes.

Views (:class:`GraphViews`, GRACE: Zhu et al., "Deep Graph Contrastive Representation
Learning", 2020). Each training step draws two views of the whole graph, view ``k`` dropping
every edge with probability ``drop_edge_rate_k`` (PyG ``dropout_edge``) and zeroing every
feature column with probability ``mask_feature_rate_k`` for all nodes at once (PyG
``mask_feature``, ``mode="col"``). Node ``i``'s positive is node ``i`` in the other view;
every other node of both views is a negative. With ``neighbours_as_positives`` the nodes
that ``i`` has an edge to in the other view count as positives too (multi-positive InfoNCE).
The randomness of step ``(seed, epoch)`` and view ``k`` comes from a torch seed derived from
``(seed, epoch, k)`` inside ``torch.random.fork_rng``, so views are reproducible, a resumed
run sees the same views, and the caller's random state is untouched (that of the CPU and, for
views made on a GPU, of that GPU; views of CPU data made where CUDA is in use reseed the CUDA
generators, which no encoder draws from). A training epoch is one optimisation step on the
full graph (``training.batch_size`` is unused).

Diffusion view (``diffusion_view: ppr``; MVGRL: Hassani & Khasahmadi, "Contrastive
Multi-View Representation Learning on Graphs", ICML 2020; GDC: Klicpera, Weißenberger &
Günnemann, "Diffusion Improves Graph Learning", NeurIPS 2019). View 2 is then drawn from the
personalized-PageRank diffusion of the graph instead of its adjacency, computed once per
graph (PyG's ``GDC`` transform, exact, in float64) as

.. math::

    T = D^{-1/2} (A + I) D^{-1/2}, \qquad
    S = \alpha \bigl(I - (1 - \alpha) T\bigr)^{-1}
      = \alpha \sum_{t \ge 0} (1 - \alpha)^t T^t,

with ``D`` the degree matrix of ``A + I`` and :math:`\alpha` = ``ppr_alpha`` the teleport
(restart) probability. ``S`` is dense; it is sparsified GDC's way: every column ``j`` (node
``j``) keeps its ``ppr_top_k`` largest entries :math:`S_{ij}`, which become edges
``i -> j`` (``j`` aggregates from the ``k`` nodes that diffuse most into it), and the kept
entries of each column are scaled to sum to 1 (GDC's ``normalization_out="col"``). Entries
that are exactly zero (nodes outside ``j``'s connected component, which GDC's top-k would
keep as fillers when the component has fewer than ``k`` nodes) are left out, so a node keeps
``min(k, size of its component)`` entries (Cora, ``k = 32``: 80,839 edges; 223 nodes in
small components keep fewer). Self-loops are entries like any other (:math:`S_{jj} \ge
\alpha`; on Cora every node's own entry is its largest, so every node keeps it). The exact
inverse is dense: memory ``O(N^2)``, time ``O(N^3)`` (Cora: about 2 s, once).

The diffusion view carries ``edge_weight`` (the kept, normalised :math:`S_{ij}`); view 1
then carries ``edge_weight`` of ones so that the two views batch together (GCN with unit
weights is GCN without weights). Edge drop (``drop_edge_rate_2``) removes each off-diagonal
diffusion edge, with its weight, with that probability; the self-loops are always kept,
since GCN layers would otherwise re-add a dropped one with weight 1 instead of
:math:`S_{jj}`. Feature masking (``mask_feature_rate_2``) is unchanged. Only the ``gcn``
encoder uses edge weights (``GCNConv``'s normalisation leaves a column-stochastic ``S``
unchanged when its self-loops are present, as its weighted in-degrees are 1, and rescales a
view with dropped edges by its remaining in-degrees); ``gat`` and ``gin`` refuse a batch
that carries them. With ``neighbours_as_positives`` the positives come from view 1's
(adjacency) edges alone, in both directions: node ``i`` of either view has as positives its
kept view-1 neighbours ``j`` in the other view; the diffusion edges (``k`` weighted
neighbours per node, most of them not adjacent) are not positives.
Embeddings are still computed on the clean adjacency graph (``embedding_batches``).

Held-out nodes (``training.holdout_fraction``). Training on a pairs table that lacks some
nodes still propagates over the whole graph (the transductive setting of GRACE), but the
loss leaves those nodes out entirely: not anchors, not positives, not negatives. The batch
then carries ``loss_rows``, the rows of the two views that enter the loss, and the loss sees
``z[loss_rows]``; the diagnostics score the held-out nodes the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, Data
from torch_geometric.utils import dropout_edge, mask_feature

from scicontrast.data_adapters.base import Items, PairBuilder
from scicontrast.data_adapters.batch import ContrastiveBatch
from scicontrast.data_adapters.classical import ClassicalFeatures, propagated_features
from scicontrast.data_adapters.graphs.cleaning import EDGE_INDEX, FEATURES, MODALITY
from scicontrast.data_adapters.loader import EpochLoader
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import PAIR_BUILDERS


def graph_data(items: Items, source: str = "items") -> Data:
    """The graph of a graph items set as a PyG ``Data`` (``x``, ``edge_index``)."""
    if items.meta.get("modality") != MODALITY or FEATURES not in items.arrays:
        raise InputDataError(
            f"{source}: not a graph items set (modality {items.meta.get('modality')!r}); "
            "read it with a graph adapter (planetoid, pyg_data, graph_table, networkx)"
        )
    return Data(
        x=torch.from_numpy(items.arrays[FEATURES]).float(),
        edge_index=torch.from_numpy(items.extras[EDGE_INDEX]).long(),
        num_nodes=len(items),
    )


VIEW_NAMES = ("view_1", "view_2")


@PAIR_BUILDERS.register("graph_views")
class GraphViews(PairBuilder):
    """GRACE's two stochastic views of the whole graph; see the module docstring.

    Args:
        drop_edge_rate_1, drop_edge_rate_2: Edge drop probability of view 1 and view 2.
        mask_feature_rate_1, mask_feature_rate_2: Feature-column mask probability per view.
        neighbours_as_positives: Also count a node's out-neighbours in the other view as
            its positives (with a diffusion view: its view-1 neighbours, in both directions).
        diffusion_view: ``None`` (GRACE: both views from the adjacency) or ``"ppr"``: view 2
            from the personalized-PageRank diffusion (MVGRL; module docstring).
        ppr_alpha: Teleport probability :math:`\alpha` of the PPR diffusion, in (0, 1).
        ppr_top_k: Entries of the diffusion matrix kept per node (column), at least 1.
    """

    DIFFUSIONS = ("ppr",)

    canonical_view = "clean"
    embeds_whole_set = True

    def __init__(
        self,
        drop_edge_rate_1: float = 0.2,
        drop_edge_rate_2: float = 0.4,
        mask_feature_rate_1: float = 0.3,
        mask_feature_rate_2: float = 0.4,
        neighbours_as_positives: bool = False,
        diffusion_view: str | None = None,
        ppr_alpha: float = 0.15,
        ppr_top_k: int = 32,
    ) -> None:
        self.drop_edge_rates = (drop_edge_rate_1, drop_edge_rate_2)
        self.mask_feature_rates = (mask_feature_rate_1, mask_feature_rate_2)
        for key, value in zip(
            ("drop_edge_rate_1", "drop_edge_rate_2", "mask_feature_rate_1", "mask_feature_rate_2"),
            (*self.drop_edge_rates, *self.mask_feature_rates),
            strict=True,
        ):
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ConfigError(
                    f"pairs graph_views: params.{key} must be in [0, 1), got {value!r}"
                )
        if not isinstance(neighbours_as_positives, bool):
            raise ConfigError("pairs graph_views: params.neighbours_as_positives must be a boolean")
        self.neighbours_as_positives = neighbours_as_positives
        if diffusion_view is not None and diffusion_view not in self.DIFFUSIONS:
            raise ConfigError(
                "pairs graph_views: params.diffusion_view must be null or one of "
                f"{list(self.DIFFUSIONS)}, got {diffusion_view!r}"
            )
        if isinstance(ppr_alpha, bool) or not (
            isinstance(ppr_alpha, (int, float)) and 0.0 < ppr_alpha < 1.0
        ):
            raise ConfigError(
                f"pairs graph_views: params.ppr_alpha must be in (0, 1), got {ppr_alpha!r}"
            )
        if isinstance(ppr_top_k, bool) or not (isinstance(ppr_top_k, int) and ppr_top_k >= 1):
            raise ConfigError(
                f"pairs graph_views: params.ppr_top_k must be an integer >= 1, got {ppr_top_k!r}"
            )
        self.diffusion_view = diffusion_view
        self.ppr_alpha = float(ppr_alpha)
        self.ppr_top_k = ppr_top_k
        # (num_nodes, edge_index, diffusion edge_index, diffusion edge_weight) of the last graph.
        self._diffusion: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._data: Data | None = None

    def build(self, items: Items) -> pd.DataFrame:
        """Two rows per node (one per view); ``group_id`` is the node's row."""
        graph_data(items)
        n_nodes = len(items)
        return pd.DataFrame(
            {
                "group_id": np.tile(np.arange(n_nodes), 2),
                "item_id": np.tile(items.table["item_id"].to_numpy(), 2),
                "view": np.repeat(VIEW_NAMES, n_nodes),
            }
        )

    def bind(self, items: Items) -> None:
        self._data = graph_data(items)

    def make_view(
        self, item_index: int, view: str, rng: np.random.Generator | None
    ) -> torch.Tensor:
        raise TypeError(
            "graph_views draws views of the whole graph, not of one node: use "
            "training_batches / embedding_batches / views"
        )

    def views(self, data: Data, seed: int, epoch: int) -> tuple[Batch, torch.Tensor]:
        """The two views of ``data`` for ``(seed, epoch)``: ``(batch, group_ids [2N])``.

        ``batch`` is a PyG ``Batch`` of the two view graphs (view 1's nodes first); with
        ``neighbours_as_positives`` it carries ``positive_pairs [2, P]``, the rows
        ``(anchor, candidate)`` of each node and its out-neighbours in the other view (with a
        diffusion view: its view-1 neighbours). With a diffusion view both view graphs carry
        ``edge_weight`` (ones for view 1).
        """
        graphs = []
        for view, (edge_rate, feature_rate) in enumerate(
            zip(self.drop_edge_rates, self.mask_feature_rates, strict=True)
        ):
            diffused = view == 1 and self.diffusion_view is not None
            if diffused:
                edge_index, edge_weight = self.diffusion(data)
            # On a GPU (training.augment_on_device) the draws come from its generator.
            with torch.random.fork_rng(devices=[data.x.device] if data.x.is_cuda else []):
                torch.manual_seed(_view_seed(seed, epoch, view))
                if diffused:
                    edge_index, edge_weight = _drop_edges_keep_loops(
                        edge_index, edge_weight, p=edge_rate
                    )
                else:
                    edge_index, _ = dropout_edge(data.edge_index, p=edge_rate)
                x, _ = mask_feature(data.x, p=feature_rate, mode="col")
            graph = Data(x=x, edge_index=edge_index, num_nodes=data.num_nodes)
            if self.diffusion_view is not None:
                graph.edge_weight = edge_weight if diffused else x.new_ones(edge_index.shape[1])
            graphs.append(graph)
        batch = Batch.from_data_list(graphs)
        n_nodes = data.num_nodes
        if self.neighbours_as_positives:
            first, second = (g.edge_index for g in graphs)
            if self.diffusion_view is not None:
                second = first  # positives from the adjacency view only (module docstring)
            batch.positive_pairs = torch.cat(
                [
                    torch.stack([second[0], second[1] + n_nodes]),
                    torch.stack([first[0] + n_nodes, first[1]]),
                ],
                dim=1,
            )
        return batch, torch.arange(n_nodes, device=data.x.device).repeat(2)

    def diffusion(self, data: Data) -> tuple[torch.Tensor, torch.Tensor]:
        """The sparsified PPR diffusion of ``data``: ``(edge_index [2, E'], edge_weight [E'])``.

        Edges ``i -> j`` with float32 weights, each node ``j``'s (column's) kept entries
        summing to 1 (module docstring, "Diffusion view"). Computed once and reused while
        the graph's edges stay the same.
        """
        if self.diffusion_view is None:
            raise ValueError("graph_views has no diffusion view (params.diffusion_view: null)")
        cached = self._diffusion
        if (
            cached is not None
            and cached[0] == data.num_nodes
            and torch.equal(cached[1], data.edge_index)
        ):
            return cached[2], cached[3]
        gdc = T.GDC(
            self_loop_weight=1,
            normalization_in="sym",
            normalization_out="col",
            diffusion_kwargs={"method": "ppr", "alpha": self.ppr_alpha},
            sparsification_kwargs={"method": "topk", "k": self.ppr_top_k, "dim": 0},
            exact=True,
        )
        n_edges = data.edge_index.shape[1]
        diffused = gdc(
            Data(
                edge_index=data.edge_index.clone(),
                edge_attr=torch.ones(n_edges, dtype=torch.float64, device=data.edge_index.device),
                num_nodes=data.num_nodes,
            )
        )
        nonzero = diffused.edge_attr > 0  # fillers from outside a small component
        edge_index = diffused.edge_index[:, nonzero]
        edge_weight = diffused.edge_attr[nonzero].float()
        self._diffusion = (data.num_nodes, data.edge_index.clone(), edge_index, edge_weight)
        return edge_index, edge_weight

    def training_batches(
        self,
        items: Items,
        pairs: pd.DataFrame,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> EpochLoader:
        """One full-graph batch of both views per epoch (``batch_size`` is unused).

        The loss covers the nodes of ``pairs`` (a subset of the nodes when some are held out).
        """
        if world_size != 1:
            raise ConfigError(
                "pairs graph_views: full-graph training runs in one process; "
                f"got {world_size} processes"
            )
        expected = self.build(items)
        expected = expected[expected["group_id"].isin(pairs["group_id"])]
        if (
            len(pairs) != len(expected)
            or not (pairs["group_id"].to_numpy() == expected["group_id"].to_numpy()).all()
        ):
            raise InputDataError(
                "the pairs table was not built by graph_views for these items "
                f"({len(pairs)} rows, expected {len(expected)}); rebuild it"
            )
        nodes = np.unique(pairs["group_id"].to_numpy())
        return EpochLoader(GraphViewBatches(self, graph_data(items), seed, torch.as_tensor(nodes)))

    def classical_features(self, items: Items) -> list[ClassicalFeatures]:
        """SGC features ``S^2 X``, PPR features (APPNP's teleport 0.1, 10 hops) and the node
        features ``X`` themselves, no training."""
        data = graph_data(items)
        raw = ClassicalFeatures("node features X", data.x.double().numpy())
        return [
            propagated_features(data.x, data.edge_index, hops=2),
            propagated_features(data.x, data.edge_index, hops=10, teleport=0.1),
            raw,
        ]

    def embedding_batches(self, items: Items, batch_size: int) -> Iterator[Data]:
        """The clean graph, once (``batch_size`` is unused)."""
        yield graph_data(items)


class GraphViewBatches:
    """An epoch of graph training: one step on both views of the full graph (a
    :class:`~scicontrast.data_adapters.loader.BatchPlan`).

    The batch's ``positive_pairs`` come out of the views' PyG batch. With ``nodes`` short of
    every node, the batch carries ``loss_rows`` (those nodes' rows in both views), and
    ``group_ids`` and ``positive_pairs`` are given for those rows only, in their order
    (module docstring, "Held-out nodes").
    """

    def __init__(self, builder: GraphViews, data: Data, seed: int, nodes: torch.Tensor) -> None:
        self.builder = builder
        self.data = data
        self.seed = seed
        self.nodes = nodes
        self.n_groups = len(nodes)

    def __len__(self) -> int:
        return 1

    def batch_keys(self, epoch: int) -> list[int]:
        return [0]

    def to_device(self, device: torch.device) -> None:
        """Edge dropping and feature masking then run on ``device`` (``augment_on_device``)."""
        self.data, self.nodes = self.data.to(device), self.nodes.to(device)

    def make_batch(self, epoch: int, key: int) -> ContrastiveBatch:
        batch, group_ids = self.builder.views(self.data, self.seed, epoch)
        positive_pairs = getattr(batch, "positive_pairs", None)
        if positive_pairs is not None:
            del batch.positive_pairs
        n_nodes = self.data.num_nodes
        if self.n_groups == n_nodes:
            return ContrastiveBatch(batch, group_ids, positive_pairs=positive_pairs)
        rows = torch.cat([self.nodes, self.nodes + n_nodes])
        if positive_pairs is not None:
            # Old row -> position among the loss rows; -1 for rows outside the loss.
            position = torch.full((2 * n_nodes,), -1, dtype=torch.long, device=rows.device)
            position[rows] = torch.arange(len(rows), device=rows.device)
            kept = position[positive_pairs]
            positive_pairs = kept[:, (kept >= 0).all(dim=0)]
        return ContrastiveBatch(
            batch, group_ids[rows], loss_rows=rows, positive_pairs=positive_pairs
        )


def _drop_edges_keep_loops(
    edge_index: torch.Tensor, edge_weight: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop each edge that is not a self-loop with probability ``p`` (PyG ``dropout_edge``)."""
    keep = edge_index[0] == edge_index[1]
    others = ~keep
    _, kept = dropout_edge(edge_index[:, others], p=p)
    keep[others] = kept
    return edge_index[:, keep], edge_weight[keep]


def _view_seed(seed: int, epoch: int, view: int) -> int:
    """A torch seed for view ``view`` of epoch ``epoch``, well mixed from all three."""
    return int(np.random.SeedSequence([seed, epoch, view]).generate_state(1)[0])
