"""Reading raw data into items tables and turning domain knowledge into positive pairs.

An *adapter* reads a lab's files into an :class:`~scicontrast.data_adapters.base.Items`
set (a table plus optional arrays). A *pair builder* says which views of which item are the
same object (the pairs table) and materialises those views on the fly, with fresh
randomness each epoch. See ``base.py`` for the two protocols.

The names below are imported from ``base`` when first used, so that a step which only reads
tables (``items_store``; the ``cluster`` step) does not import torch (about 220 MiB).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scicontrast.data_adapters.base import (
        Adapter,
        Items,
        PairBuilder,
        ViewDataset,
        collate_views,
    )

__all__ = ["Adapter", "Items", "PairBuilder", "ViewDataset", "collate_views"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from scicontrast.data_adapters import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
