"""String ids held as 128-bit hashes: uniqueness checks and id lookups in 16 bytes per id.

An items set of 10^6 reads has 10^6 item ids; a Python ``set`` of them costs about 150 bytes
an id (the string object and the table slot), and a pandas index over them builds a hash
table of Python objects (32 MiB at 10^6). Here an id ``s`` is kept as ``h(s) = (h_1(s),
h_2(s))``, two 64-bit SipHash values under different keys (``pandas.util.hash_array``),
stored as 16-byte strings (``S16``) in sorted arrays. Two different ids share a key with
probability ``2^-128`` per pair, so among ``n`` ids a false repeat has probability at most
``n^2 / 2^129`` (``1.5e-21`` for ``n = 10^9``).

Collisions: :class:`HashedIdSet` reports a repeat by key, so a collision would be reported
as a repeated id (an error, never a silent merge). :class:`IdRows` confirms every match by
comparing the ids themselves, and refuses a set of ids two of which share a key.

:class:`HashedIdSet` keeps its keys in 64 buckets by their first byte's top bits (uniform,
since the keys are hashes), each a list of sorted runs merged like a binary counter (a run
is merged into the previous one while that one is not larger than twice its size): each key
is merged ``O(log n)`` times, a lookup searches ``O(log n)`` runs of its bucket, and a merge
allocates only a bucket's share of the keys (about ``n / 64``), not a copy of all of them
(the whole-set merge of one sorted run held twice the keys, 29 MiB at 10^6 ids, more in RSS).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_HASH_KEYS = ("scicontrast-id-1", "scicontrast-id-2")  # 16 characters each (SipHash keys)
# Buckets by the top bits of the keys' first byte: a merge allocates 1/64 of the keys; more
# buckets cost more Python calls per chunk (256: 1.5x the CPU of 64 at 10^6 ids).
_BUCKETS = 64
# Ids hashed at a time: hashing encodes each string to bytes, a transient copy of the ids.
HASH_CHUNK = 131_072


def id_keys(ids: np.ndarray) -> np.ndarray:
    """The 16-byte keys ``S16 [n]`` of ``ids``: strings are hashed, integers mixed by a
    bijection of 64-bit words (so distinct integer ids never collide)."""
    values = np.asarray(ids)
    if values.dtype.kind in "OUS":
        values = values.astype(object)
    halves = [pd.util.hash_array(values, hash_key=key, categorize=False) for key in _HASH_KEYS]
    return np.ascontiguousarray(np.stack(halves, axis=1)).view("S16").ravel()


def _bucket_bounds(ordered: np.ndarray) -> np.ndarray:
    """``int64 [_BUCKETS + 1]``: where each bucket's keys start in the sorted keys
    ``ordered`` (a bucket: the keys whose first byte has the same top bits)."""
    first_bytes = ordered.view(np.uint8)[:: ordered.dtype.itemsize]
    return np.searchsorted(first_bytes, np.arange(_BUCKETS + 1) * (256 // _BUCKETS))


class HashedIdSet:
    """Ids seen so far, as hashes (module docstring)."""

    def __init__(self) -> None:
        self._buckets: list[list[np.ndarray]] = [[] for _ in range(_BUCKETS)]

    def __len__(self) -> int:
        return sum(len(run) for runs in self._buckets for run in runs)

    def add_new(self, ids: np.ndarray) -> int | None:
        """Add ``ids``; return the position in ``ids`` of the first id that repeats an
        earlier one (in ``ids`` or added before), or ``None`` (then all are added)."""
        keys = id_keys(ids)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        repeats = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
        first = int(order[repeats].min()) if repeats.size else None
        bounds = _bucket_bounds(ordered)
        for bucket in np.flatnonzero(np.diff(bounds)):
            needles = ordered[bounds[bucket] : bounds[bucket + 1]]
            for run in self._buckets[bucket]:
                # Sorted needles: numpy's binary search starts from the last one's place.
                found = np.searchsorted(run, needles)
                hit = np.flatnonzero(run[np.minimum(found, len(run) - 1)] == needles)
                if hit.size:
                    position = int(order[bounds[bucket] + hit].min())
                    first = position if first is None else min(first, position)
        if first is not None:
            return first
        for bucket in np.flatnonzero(np.diff(bounds)):
            self._add_run(self._buckets[bucket], ordered[bounds[bucket] : bounds[bucket + 1]])
        return None

    @staticmethod
    def _add_run(runs: list[np.ndarray], run: np.ndarray) -> None:
        """Append the sorted ``run`` (a copy: not a view of the caller's keys) to a bucket's
        ``runs`` and merge while the previous run is not larger than twice the last."""
        runs.append(run.copy())
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            last = runs.pop()
            # The keys are distinct (repeats were refused), so the merged order is the
            # sorted order: each of ``last``'s keys goes after the smaller keys of runs[-1].
            runs[-1] = np.insert(runs[-1], np.searchsorted(runs[-1], last), last)


class IdRows:
    """The table row of each id of a table's ``item_id`` column, found by hash.

    ``ids``: the column's values in table order (distinct). Holds their keys sorted
    (``S16 [n]``) and each key's row (``int32`` or ``int64 [n]``), 20 bytes an id, plus a
    reference to ``ids`` to confirm each match. ``ValueError`` if two ids repeat or share a
    key (module docstring).
    """

    def __init__(self, ids: np.ndarray) -> None:
        self._ids = ids
        keys = np.empty(len(ids), dtype="S16")
        for start in range(0, len(ids), HASH_CHUNK):
            keys[start : start + HASH_CHUNK] = id_keys(ids[start : start + HASH_CHUNK])
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        del keys
        self._rows = order.astype(np.int32 if len(ids) < 2**31 else np.int64)
        same = np.flatnonzero(self._keys[1:] == self._keys[:-1])
        if same.size:
            a, b = ids[self._rows[same[0]]], ids[self._rows[same[0] + 1]]
            what = "repeats" if a == b else "shares a 128-bit hash with"
            raise ValueError(f"item_id {b!r} {what} item_id {a!r}")

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """``int64 [len(ids)]``: the row of each of ``ids`` (same kind of values as the
        table's), ``-1`` where no row holds that id."""
        rows = np.full(len(ids), -1, dtype=np.int64)
        if not len(self._keys):
            return rows
        keys = id_keys(ids)
        order = np.argsort(keys)  # sorted needles: each binary search starts where the last ended
        ordered = keys[order]
        found = np.minimum(np.searchsorted(self._keys, ordered), len(self._keys) - 1)
        hit = self._keys[found] == ordered
        rows[order[hit]] = self._rows[found[hit]]
        # A key that matches is confirmed on the ids themselves: no two ids are ever merged.
        matched = np.flatnonzero(rows >= 0)
        same = np.asarray(self._ids[rows[matched]] == np.asarray(ids)[matched], dtype=bool)
        rows[matched[~same]] = -1
        return rows
