r"""A stochastic block model with bag-of-words features: the embedded graph demo data set.

``blocks`` blocks of ``nodes_per_block`` nodes each. Every unordered pair of distinct nodes
is an edge independently with probability

.. math::

    P(\{u, v\} \in E) = \begin{cases} p_\text{in} & b(u) = b(v) \\
                                      p_\text{out} & b(u) \ne b(v) \end{cases}

(Holland, Laskey & Leinhardt 1983). Node features are binary bag-of-words over ``features``
words, like Cora's: block ``k`` prefers a set of ``features / blocks`` words (a disjoint
slice), which a node of the block uses with probability ``word_rate_in`` each, any other
word with probability ``word_rate_out``. Features alone separate the blocks only partly;
averaging over neighbours (mostly of the same block) separates them well, so the demo
rewards an encoder that uses the graph.

Output in ``out_dir``: ``nodes.csv`` (``node_id`` ``n0``, ``n1``, ..., ``block``
``block_0``..., then ``w0``... the word indicators) and ``edges.csv`` (``source``,
``target``, each undirected edge once, ``source < target`` by node index), both written
atomically. The output depends only on the arguments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scicontrast.errors import ConfigError
from scicontrast.io import atomic_path

WORD_RATE_IN = 0.2
WORD_RATE_OUT = 0.05


def generate_demo_graph(
    out_dir: str | Path,
    blocks: int = 4,
    nodes_per_block: int = 100,
    p_in: float = 0.06,
    p_out: float = 0.0075,
    features: int = 64,
    seed: int = 0,
) -> list[Path]:
    """Write ``nodes.csv`` and ``edges.csv`` into ``out_dir``; return their paths."""
    if blocks < 2 or nodes_per_block < 2:
        raise ConfigError(
            f"demo_data.graph: blocks ({blocks}) and nodes_per_block ({nodes_per_block}) "
            "must be >= 2"
        )
    if not (0 <= p_out <= 1 and 0 <= p_in <= 1):
        raise ConfigError(f"demo_data.graph: p_in ({p_in}) and p_out ({p_out}) must be in [0, 1]")
    if features < blocks:
        raise ConfigError(
            f"demo_data.graph: features ({features}) must be at least blocks ({blocks})"
        )
    rng = np.random.default_rng(seed)
    n_nodes = blocks * nodes_per_block
    block = np.repeat(np.arange(blocks), nodes_per_block)

    upper_u, upper_v = np.triu_indices(n_nodes, k=1)
    same = block[upper_u] == block[upper_v]
    is_edge = rng.random(len(upper_u)) < np.where(same, p_in, p_out)
    edges = pd.DataFrame(
        {
            "source": [f"n{u}" for u in upper_u[is_edge]],
            "target": [f"n{v}" for v in upper_v[is_edge]],
        }
    )

    words_per_block = features // blocks
    preferred = np.zeros((blocks, features), dtype=bool)
    for k in range(blocks):
        preferred[k, k * words_per_block : (k + 1) * words_per_block] = True
    rates = np.where(preferred[block], WORD_RATE_IN, WORD_RATE_OUT)
    words = (rng.random((n_nodes, features)) < rates).astype(np.int8)

    nodes = pd.DataFrame({"node_id": [f"n{i}" for i in range(n_nodes)]})
    nodes["block"] = [f"block_{k}" for k in block]
    nodes = pd.concat(
        [nodes, pd.DataFrame(words, columns=[f"w{j}" for j in range(features)])], axis=1
    )

    out_dir = Path(out_dir)
    paths = []
    for name, frame in (("nodes.csv", nodes), ("edges.csv", edges)):
        path = out_dir / name
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        paths.append(path)
    return paths
