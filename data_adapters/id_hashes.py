"""A set of string ids held as 128-bit hashes: uniqueness checks in 16 bytes per id.

An items set of 10^6 reads has 10^6 item ids; a Python ``set`` of them costs about 150 bytes
an id (the string object and the table slot), so checking ids for repeats while writing
chunks grew with the set. Here an id ``s`` is kept as ``h(s) = (h_1(s), h_2(s))``, two
64-bit SipHash values under different keys (``pandas.util.hash_array``), stored as 16-byte
strings in sorted runs. Two different ids share a key with probability ``2^-128`` per pair,
so among ``n`` ids a false repeat has probability at most ``n^2 / 2^129`` (``1.5e-21`` for
``n = 10^9``): a repeat reported here is, for every practical size, a real one.

The sorted runs are merged like a binary counter (a run is merged into the previous one
while that one is not larger than twice its size), so each key is merged ``O(log n)`` times
and a lookup searches ``O(log n)`` runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_HASH_KEYS = ("scicontrast-id-1", "scicontrast-id-2")  # 16 characters each (SipHash keys)


def id_keys(ids: np.ndarray) -> np.ndarray:
    """The 16-byte keys ``S16 [n]`` of ``ids``: strings are hashed, integers mixed by a
    bijection of 64-bit words (so distinct integer ids never collide)."""
    values = np.asarray(ids)
    if values.dtype.kind in "OUS":
        values = values.astype(object)
    halves = [pd.util.hash_array(values, hash_key=key, categorize=False) for key in _HASH_KEYS]
    return np.ascontiguousarray(np.stack(halves, axis=1)).view("S16").ravel()


class HashedIdSet:
    """Ids seen so far, as hashes (module docstring)."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def add_new(self, ids: np.ndarray) -> int | None:
        """Add ``ids``; return the position in ``ids`` of the first id that repeats an
        earlier one (in ``ids`` or added before), or ``None`` (then all are added)."""
        keys = id_keys(ids)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        repeats = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
        first = int(order[repeats].min()) if repeats.size else None
        for run in self._runs:
            # Sorted needles: numpy's binary search starts from the last one's place.
            found = np.searchsorted(run, ordered)
            hit = np.flatnonzero(run[np.minimum(found, len(run) - 1)] == ordered)
            if hit.size:
                position = int(order[hit].min())
                first = position if first is None else min(first, position)
        if first is not None:
            return first
        self._runs.append(ordered)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            last = self._runs.pop()
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]), kind="stable")
        return None
