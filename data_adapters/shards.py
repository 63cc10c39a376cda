"""Shards of an items set: contiguous row ranges, one per cluster job of a sharded step.

Shard ``k`` of ``n`` holds rows ``[k N / n, (k + 1) N / n)`` of ``N`` items (integer division),
so shard sizes differ by at most one and the shards in order are the set in order; the
gather step (``scicontrast.analysis.embed_shards``) relies on that order.
"""

from __future__ import annotations

from scicontrast.data_adapters.base import Items
from scicontrast.errors import ConfigError


def shard_rows(n_items: int, shard: int, shards: int) -> range:
    """Rows of shard ``shard`` (0-based) of ``shards``: contiguous, sizes differing by <= 1."""
    if not 0 <= shard < shards:
        raise ConfigError(f"shard {shard} is not one of 0..{shards - 1}")
    return range(shard * n_items // shards, (shard + 1) * n_items // shards)


def shard_items(items: Items, shard: int, shards: int, source: str) -> Items:
    """The items of one shard: table rows and row-aligned arrays cut, extras kept whole."""
    if shards == 1:
        return items
    if items.meta.get("modality") == "graph":
        raise ConfigError(
            f"{source}: a graph is embedded whole and cannot be split into {shards} shards; "
            "set analysis.embed_shards to 1"
        )
    rows = shard_rows(len(items), shard, shards)
    cut = slice(rows.start, rows.stop)
    return Items(
        table=items.table.iloc[cut].reset_index(drop=True),
        meta=items.meta,
        arrays={name: array[cut] for name, array in items.arrays.items()},
        extras=items.extras,
    )
