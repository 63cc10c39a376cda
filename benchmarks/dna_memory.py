"""What the DNA steps hold in memory, structure by structure, before and after items on disk.

::

    python benchmarks/dna_memory.py RUN/results/scale_dna

For a finished ``scale_dna`` run folder (``benchmarks/scale.py``) this measures, one at a
time, the peak of Python and numpy allocations (``tracemalloc``) plus Arrow's pool
(``pyarrow.total_allocated_bytes``) while each structure is built, and what it keeps:

* the items table read whole (what ``Items.load`` read before) against the columns
  ``dna_views`` names (``item_id``; the codes array is memory-mapped),
* the pairs table read whole (``pandas.read_parquet``) against :func:`read_pairs`,
* the view index of ``ViewDataset``: the per-group lists it held before, rebuilt here,
  against its integer arrays,
* the windows' codes: encoded from the ``sequence`` column against the memory-mapped array.
"""

from __future__ import annotations

import argparse
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scicontrast.data_adapters.base import Items, ViewDataset, load_items
from scicontrast.data_adapters.dna.views import DNAViews, encode_windows
from scicontrast.data_adapters.items_store import load_array
from scicontrast.data_adapters.pairs_table import read_pairs

MIB = 2**20


def measured(name: str, build: Callable[[], Any]) -> tuple[dict, Any]:
    """``build()``'s result, and its peak and kept MiB (Python/numpy + Arrow pool)."""
    tracemalloc.start()
    arrow_before = pa.total_allocated_bytes()
    result = build()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrow = pa.total_allocated_bytes() - arrow_before
    row = {"structure": name, "peak MiB": peak / MIB, "kept MiB": (kept + arrow) / MIB}
    return row, result


def old_view_index(items: Items, pairs: pd.DataFrame) -> list:
    """``ViewDataset``'s index before the integer arrays: a lookup and a list per group."""
    row_of = pd.Series(np.arange(len(items)), index=items.table["item_id"].to_numpy())
    return [
        (row_of.loc[g["item_id"].to_numpy()].to_numpy(), g["view"].tolist())
        for _, g in pairs.groupby("group_id", sort=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="results/scale_dna of a scale.py run")
    folder = parser.parse_args().folder
    items_dir, pairs_path = folder / "items", folder / "pairs.parquet"
    builder = DNAViews(max_shift=8)
    rows = []
    row, whole = measured("items table, whole", lambda: Items.load(items_dir).table)
    rows.append(row)
    row, items = measured("items table, dna_views' columns", lambda: load_items(items_dir, builder))
    rows.append(row)
    row, _ = measured("pairs, pandas.read_parquet", lambda: pd.read_parquet(pairs_path))
    rows.append(row)
    row, pairs = measured(
        "pairs, read_pairs", lambda: read_pairs(pairs_path, items.table["item_id"])
    )
    rows.append(row)
    plain = pairs.astype({"item_id": object})
    rows.append(measured("view index, lists per group", lambda: old_view_index(items, plain))[0])

    class Unbound(DNAViews):
        def bind(self, items: Items) -> None:
            pass

    rows.append(measured("view index, arrays", lambda: ViewDataset(items, pairs, Unbound(), 0))[0])
    width = int(items.meta["window"]) + 2 * int(items.meta["flank"])
    rows.append(measured("codes, encoded", lambda: encode_windows(whole, width))[0])
    rows.append(measured("codes, memory-mapped", lambda: load_array(items_dir / "codes.npy"))[0])
    print(f"{len(items):,} items, {len(pairs):,} pairs rows")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
