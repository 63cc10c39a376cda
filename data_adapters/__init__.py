"""Reading raw data into items tables and turning domain knowledge into positive pairs.

An *adapter* reads a lab's files into an :class:`~scicontrast.data_adapters.base.Items`
set (a table plus optional arrays). A *pair builder* says which views of which item are the
same object (the pairs table) and materialises those views on the fly, with fresh
randomness each epoch. See ``base.py`` for the two protocols.
"""

from scicontrast.data_adapters.base import (
    Adapter,
    Items,
    PairBuilder,
    ViewDataset,
    collate_views,
)

__all__ = ["Adapter", "Items", "PairBuilder", "ViewDataset", "collate_views"]
