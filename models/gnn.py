r"""Graph encoders: node features in, node embeddings out.

Two kinds: a stack of PyG message-passing layers (``gcn``, ``gat``, ``gin``, below), and
``propagated_mlp``, a parameter-free propagation decoupled from an MLP (its class docstring).

Input and output::

    data.x:          [N, F] float node features (N: nodes of all graphs in a PyG batch)
    data.edge_index: [2, E] long, edges source -> target, indices into the rows of x
    data.edge_weight: [E] float, optional (``gcn`` only; see below)
    h:               [N, embedding_dim]

Layer ``l`` computes :math:`H^{(l)} = \sigma(\mathrm{conv}_l(H^{(l-1)}, A))` with
:math:`H^{(0)} = X`; as in GRACE (Zhu et al. 2020) the activation also follows the last
layer, and the embedding is :math:`H^{(L)}`, or with ``jumping_knowledge="cat"`` the
concatenation :math:`[H^{(1)} \| \dots \| H^{(L)}]` of every layer's output (Xu et al.,
"Representation Learning on Graphs with Jumping Knowledge Networks", ICML 2018). Hidden
layers have ``hidden_channels`` (GRACE: twice ``embedding_dim``), the last has
``embedding_dim`` channels, so with ``"cat"`` the embedding is
``(num_layers - 1) * hidden_channels + embedding_dim`` wide.

The convolutions (Kipf & Welling 2017; Veličković et al. 2018; Xu et al. 2019):

* ``gcn``: ``GCNConv``, :math:`\hat D^{-1/2} (A + I) \hat D^{-1/2} H W`. When the graph
  carries ``edge_weight`` (the diffusion view of ``graph_views``, whose PyG ``Batch``
  concatenates the views' weights), ``A`` is the weighted adjacency and :math:`\hat D` its
  weighted in-degrees (self-loop included); a node without a self-loop gets one of weight
  1, an existing self-loop keeps its weight (``add_remaining_self_loops``), so all-ones
  weights give plain GCN.
* ``gat``: ``GATConv`` with ``heads`` attention heads of ``width / heads`` channels each,
  concatenated (``width`` must be divisible by ``heads``).
* ``gin``: ``GINConv`` with a learnable :math:`\epsilon` and a two-layer MLP with batch norm,
  :math:`\mathrm{MLP}((1 + \epsilon) h_v + \sum_{u \in N(v)} h_u)`.

``gat`` and ``gin`` have no use for edge weights; a graph that carries ``edge_weight`` is a
``ConfigError`` for them rather than being silently read as unweighted.

The input size is inferred on the first forward pass (PyG's lazy ``in_channels=-1``), so one
config fits any data set; the training loop runs that pass before building the optimiser,
and loading a saved model fills the sizes from its weights.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import APPNP, MLP, GATConv, GCNConv, GINConv, Linear
from torch_geometric.utils import to_torch_csr_tensor

from scicontrast.errors import ConfigError
from scicontrast.registry import ENCODERS

ACTIVATIONS = {"prelu": nn.PReLU, "elu": nn.ELU, "relu": nn.ReLU}
JUMPING_KNOWLEDGE = ("last", "cat")
#: Bounds of the hops the propagation rule gives (below 2 is no smoothing; above 64 costs
#: more than the truncation error it saves).
RULE_HOPS = (2, 64)


def propagation_rule(num_nodes: int, num_edges: int) -> tuple[int, float]:
    r"""Hops :math:`K` and teleport :math:`\alpha` of a personalized-PageRank propagation,
    from the graph's size alone.

    With mean degree :math:`\bar d = E / N` (``num_edges`` counts directed edges, so an
    undirected edge counts twice), a random graph's typical distance between two nodes is
    about :math:`\ln N / \ln(1 + \bar d)` (the ``1 +`` for the self-loop, which also keeps
    sparse graphs finite). The rule propagates twice that far and teleports once per
    :math:`K` steps:

    .. math::

        K = \operatorname{clip}\bigl(\lceil 2 \ln N / \ln(1 + \bar d) \rceil, 2, 64\bigr),
        \qquad \alpha = 1 / K,

    so the mean length of a walk before it teleports, :math:`(1 - \alpha) / \alpha`, is
    :math:`K - 1`: about one distance across the graph and back, and the truncation keeps
    the walks of up to :math:`K` steps. No setting mentions a data set; on a 2,708-node
    graph of mean degree 3.9 the rule gives APPNP's published constants (10, 0.1).

    Raises:
        ConfigError: for a graph without nodes or edges.
    """
    if num_nodes < 2 or num_edges < 1:
        raise ConfigError(
            "encoder propagated_mlp: hops/teleport 'auto' need a graph with at least 2 nodes "
            f"and 1 edge (got {num_nodes} nodes, {num_edges} edges)"
        )
    distance = math.log(num_nodes) / math.log1p(num_edges / num_nodes)
    hops = min(max(math.ceil(2 * distance), RULE_HOPS[0]), RULE_HOPS[1])
    return hops, 1.0 / hops


class GraphEncoder(nn.Module):
    """``num_layers`` message-passing layers with activations; see the module docstring.

    Subclasses say how to build one layer (:meth:`conv`).

    Args:
        embedding_dim: Channels of the last layer.
        hidden_channels: Channels of the other layers; ``None`` means ``2 * embedding_dim``.
        num_layers: Message-passing layers, at least 1.
        activation: ``"prelu"`` (one learnable slope per layer, as GRACE), ``"elu"``,
            ``"relu"``.
        jumping_knowledge: ``"last"`` embeds with the last layer's output, ``"cat"`` with the
            concatenation of every layer's output.
        in_channels: Node feature size; ``-1`` infers it from the first batch.
    """

    name: ClassVar[str]
    #: Whether the layers take ``edge_weight`` (``conv(h, edge_index, edge_weight)``).
    uses_edge_weight: ClassVar[bool] = False

    def __init__(
        self,
        embedding_dim: int = 128,
        hidden_channels: int | None = None,
        num_layers: int = 2,
        activation: str = "prelu",
        jumping_knowledge: str = "last",
        in_channels: int = -1,
    ) -> None:
        super().__init__()
        hidden_channels = 2 * embedding_dim if hidden_channels is None else hidden_channels
        self._require(
            all(isinstance(v, int) and v >= 1 for v in (embedding_dim, hidden_channels)),
            "embedding_dim and hidden_channels must be integers >= 1",
        )
        self._require(isinstance(num_layers, int) and num_layers >= 1, "num_layers must be >= 1")
        self._require(activation in ACTIVATIONS, f"activation must be one of {sorted(ACTIVATIONS)}")
        self._require(
            jumping_knowledge in JUMPING_KNOWLEDGE,
            f"jumping_knowledge must be one of {list(JUMPING_KNOWLEDGE)}",
        )
        widths = [hidden_channels] * (num_layers - 1) + [embedding_dim]
        self.convs = nn.ModuleList(
            self.conv(width_in, width)
            for width_in, width in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in widths)
        self.jumping_knowledge = jumping_knowledge
        self.embedding_dim = sum(widths) if jumping_knowledge == "cat" else embedding_dim

    def _require(self, ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"encoder {self.name}: {message}")

    def conv(self, in_channels: int, out_channels: int) -> nn.Module:
        """One message-passing layer ``[n, in_channels] -> [n, out_channels]``."""
        raise NotImplementedError

    def forward(self, data: Data) -> Tensor:
        """``[N, embedding_dim]`` embeddings of the nodes of ``data`` (a PyG Data or Batch);
        of its seeds alone, ``[num_sampled_nodes[0], embedding_dim]``, when ``data`` is a
        hop-ordered neighbour sample (``models.graph_minibatch.trimmed_forward``)."""
        h, edge_index = data.x, data.edge_index
        edge_weight = getattr(data, "edge_weight", None)
        if edge_weight is not None and not self.uses_edge_weight:
            raise ConfigError(
                f"encoder {self.name}: the graph carries edge weights (pairs graph_views with "
                f"a diffusion_view), which {self.name} layers cannot use; use encoder gcn"
            )
        chunk = getattr(data, "layerwise_nodes", None)
        if chunk is not None and not torch.is_grad_enabled():
            # A graph too large for one pass (graph_neighbor_views): exact, layer by layer.
            from scicontrast.models.graph_minibatch import layerwise_embed

            return layerwise_embed(self, data, chunk)
        hops = getattr(data, "num_sampled_nodes", None)
        if hops is not None:
            # A neighbour-sampled step (graph_neighbor_views): the seeds' rows, trimmed.
            from scicontrast.models.graph_minibatch import trimmed_forward

            return trimmed_forward(self, data, hops)
        graph = (edge_index,) if edge_weight is None else (edge_index, edge_weight)
        outputs = []
        for conv, activation in zip(self.convs, self.activations, strict=True):
            h = activation(conv(h, *graph))
            outputs.append(h)
        return torch.cat(outputs, dim=1) if self.jumping_knowledge == "cat" else h


@ENCODERS.register("gcn")
class GCNEncoder(GraphEncoder):
    """Graph convolutional layers (``GCNConv``); the default graph encoder.

    Uses ``data.edge_weight`` when the graph carries it (module docstring).
    """

    name = "gcn"
    uses_edge_weight = True

    def conv(self, in_channels: int, out_channels: int) -> nn.Module:
        return GCNConv(in_channels, out_channels)


@ENCODERS.register("gat")
class GATEncoder(GraphEncoder):
    """Graph attention layers (``GATConv``), ``heads`` concatenated heads per layer.

    Args:
        heads: Attention heads per layer; every layer width must be divisible by it.
        **kwargs: As for :class:`GraphEncoder`.
    """

    name = "gat"

    def __init__(self, heads: int = 4, **kwargs) -> None:
        self.heads = heads
        super().__init__(**kwargs)

    def conv(self, in_channels: int, out_channels: int) -> nn.Module:
        self._require(
            isinstance(self.heads, int) and self.heads >= 1 and out_channels % self.heads == 0,
            f"layer width {out_channels} is not divisible by heads={self.heads!r}",
        )
        return GATConv(in_channels, out_channels // self.heads, heads=self.heads)


@ENCODERS.register("gin")
class GINEncoder(GraphEncoder):
    """Graph isomorphism layers (``GINConv``, learnable epsilon, 2-layer MLP with batch norm)."""

    name = "gin"

    def conv(self, in_channels: int, out_channels: int) -> nn.Module:
        mlp = MLP([in_channels, out_channels, out_channels], norm="batch_norm")
        return GINConv(mlp, train_eps=True)


@ENCODERS.register("propagated_mlp")
class PropagatedMLPEncoder(nn.Module):
    r"""A parameter-free propagation and an MLP, decoupled (SGC, APPNP, SIGN).

    The propagation is personalized PageRank by power iteration (APPNP: Klicpera, Bojchevski &
    Günnemann, ICLR 2019), with :math:`S = \hat D^{-1/2} (A + I) \hat D^{-1/2}`,
    :math:`P^{(0)} = M` and

    .. math::

        P^{(t+1)} = (1 - \alpha) S P^{(t)} + \alpha M, \qquad t < K,

    so :math:`P^{(K)} = \bigl[(1-\alpha)^K S^K + \alpha \sum_{t<K} (1-\alpha)^t S^t\bigr] M`;
    ``teleport`` :math:`\alpha = 0` gives SGC's :math:`S^K M` (Wu et al., ICML 2019). With
    ``order="before"`` :math:`M = X` and the embedding is :math:`\mathrm{MLP}(P^{(K)})` (the
    propagation of the features, done on each view's edges); with ``order="after"``
    :math:`M = \mathrm{MLP}(X)` and the embedding is :math:`P^{(K)}` (APPNP). The MLP has
    ``num_layers`` linear layers, each followed by the activation (as GRACE's GCN layers).
    The only weights are the MLP's, so a step costs :math:`K` sparse products
    (``[N, N] x [N, F]`` before, ``[N, N] x [N, embedding_dim]`` after) and the MLP.

    Shapes: ``data.x [N, F]``, ``data.edge_index [2, E]`` -> ``[N, embedding_dim]``.

    Args:
        embedding_dim: Width of the last layer (the embedding).
        hidden_channels: Width of the other layers; ``None`` means ``embedding_dim``.
        num_layers: Linear layers of the MLP, at least 1.
        activation: ``"prelu"``, ``"elu"`` or ``"relu"``.
        hops: Power iterations :math:`K`, at least 1, or ``"auto"``.
        teleport: :math:`\alpha` in ``[0, 1)``, or ``"auto"``.
        order: ``"before"`` (propagate the features, then the MLP) or ``"after"``.
        in_channels: Node feature size; ``-1`` infers it from the first batch.

    ``"auto"`` takes the value of :func:`propagation_rule` for the first graph the encoder
    sees: the training loop's sizing pass over the whole graph (hence ``in_channels=-1``),
    not an edge-dropped view. The values are kept in the ``rule`` buffer, so a saved model
    propagates as it was trained.
    """

    rule: torch.Tensor  # buffer [2]: hops and teleport, NaN until the rule fills them

    name = "propagated_mlp"
    ORDERS = ("before", "after")

    def __init__(
        self,
        embedding_dim: int = 256,
        hidden_channels: int | None = None,
        num_layers: int = 1,
        activation: str = "prelu",
        hops: int | str = "auto",
        teleport: float | str = "auto",
        order: str = "after",
        in_channels: int = -1,
    ) -> None:
        super().__init__()
        self.auto = tuple(value == "auto" for value in (hops, teleport))
        hidden_channels = embedding_dim if hidden_channels is None else hidden_channels
        checks = (
            (
                all(isinstance(v, int) and v >= 1 for v in (embedding_dim, hidden_channels)),
                "embedding_dim and hidden_channels must be integers >= 1",
            ),
            (isinstance(num_layers, int) and num_layers >= 1, "num_layers must be >= 1"),
            (activation in ACTIVATIONS, f"activation must be one of {sorted(ACTIVATIONS)}"),
            (
                self.auto[0] or (isinstance(hops, int) and hops >= 1),
                "hops must be an integer >= 1 or 'auto'",
            ),
            (
                self.auto[1] or (isinstance(teleport, (int, float)) and 0.0 <= teleport < 1.0),
                "teleport must be in [0, 1) or 'auto'",
            ),
            (order in self.ORDERS, f"order must be one of {list(self.ORDERS)}"),
            (
                not any(self.auto) or in_channels == -1,
                "hops/teleport 'auto' need in_channels -1 (the sizing pass sees the whole graph)",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"encoder {self.name}: {message}")
        widths = [hidden_channels] * (num_layers - 1) + [embedding_dim]
        layers: list[nn.Module] = []
        for width_in, width in zip([in_channels, *widths[:-1]], widths, strict=True):
            layers += [Linear(width_in, width), ACTIVATIONS[activation]()]
        self.mlp = nn.Sequential(*layers)
        # (K, alpha); NaN until "auto" has seen its graph. Saved only when a rule sets it, so
        # models with fixed values load as before.
        fixed = [
            math.nan if auto else float(v)
            for auto, v in zip(self.auto, (hops, teleport), strict=True)
        ]
        self.register_buffer(
            "rule", torch.tensor(fixed, dtype=torch.float64), persistent=any(self.auto)
        )
        # Placeholders where "auto" waits for its graph (_set_propagation).
        self.propagation = APPNP(
            K=1 if self.auto[0] else hops, alpha=0.0 if self.auto[1] else float(teleport)
        )
        self.order = order
        self.embedding_dim = embedding_dim

    def _set_propagation(self, data: Data) -> None:
        """Fill the ``"auto"`` values from ``data`` once, then set the propagation's K and alpha."""
        if torch.isnan(self.rule).any():
            hops, teleport = propagation_rule(data.num_nodes, data.edge_index.shape[1])
            for index, value in enumerate((hops, teleport)):
                if self.auto[index]:
                    self.rule[index] = value
        self.propagation.K = int(self.rule[0])
        self.propagation.alpha = float(self.rule[1])

    def forward(self, data: Data) -> Tensor:
        """``[N, embedding_dim]`` embeddings of the nodes of ``data`` (a PyG Data or Batch)."""
        if getattr(data, "edge_weight", None) is not None:
            raise ConfigError(
                f"encoder {self.name}: the graph carries edge weights (a diffusion_view); "
                "this encoder diffuses the adjacency itself, so use plain graph_views"
            )
        # A sparse adjacency (row = target) makes each power iteration one sparse-dense
        # product; per-edge messages would materialise an [E, F] tensor per hop (Cora's
        # views: about 7 times slower).
        self._set_propagation(data)
        n_nodes = data.num_nodes
        adjacency = to_torch_csr_tensor(data.edge_index.flip(0), size=(n_nodes, n_nodes))
        if self.order == "before":
            return self.mlp(self._propagate(data.x, adjacency))
        return self._propagate(self.mlp(data.x), adjacency)

    def _propagate(self, x: Tensor, adjacency: Tensor) -> Tensor:
        """The power iteration in float32 even under bf16 autocast (the training loop's GPU
        setting): autocast would cast the sparse product to bfloat16, which CPU sparse
        kernels lack and which would round the K-fold repeated sums."""
        with torch.autocast(x.device.type, enabled=False):
            return self.propagation(x.float(), adjacency)
