"""Compiled loops of the tumbling/sliding window engine (numba): one call per batch.

Imported when the first :class:`~rtnb.windows.engine.WindowAggregator` is built, not with
``rtnb`` (numba takes ~0.3 s to import). Each kernel is compiled on its first call in a
process and then read from numba's cache (``__pycache__`` next to this file); without a
writable cache directory the kernels are compiled in every process instead.

Open windows live in *slots*: ``slot_key[s]`` and ``slot_start[s]`` say which (key, window)
slot ``s`` holds, slots ``0 .. m-1`` are the open ones (dense: emission packs them). A
hash table ``table`` (open addressing, linear probing, a power-of-two length, ``-1`` for an
empty entry) maps (window start, key code) to the slot; it is rebuilt from the slots when
windows are emitted (:func:`rebuild`), so it never holds deleted entries.

The built-in count/sum/mean/min/max share one *fused* state per value column ``c``: rows
``4c .. 4c+3`` of ``fused[:, s]`` are the count of non-NaN values, their sum, their
minimum (``+inf`` when none) and maximum (``-inf``), updated row by row in arrival order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from rtnb._jit import jit

__all__ = ["fold", "group_sort", "rebuild"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]




@jit
def _hash(start: int, key: int, mask: int) -> Any:
    h = np.uint64(start) * np.uint64(0x9E3779B97F4A7C15)
    h ^= np.uint64(key) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(31)
    return np.int64(h & np.uint64(mask))


@jit
def _fold(t: Ints, key: Ints, size: int, every: int, offset: int, copies: int,
          closed_before: int, floor: int, table: Ints, slot_key: Ints, slot_start: Ints,
          m: int, values: Floats, fused: Floats, touched: Bools, track: bool,
          pair_row: Ints, pair_slot: Ints, pairs: bool, late: Bools) -> Any:
    mask = len(table) - 1
    n_cols = values.shape[0]
    p = 0
    n_late = 0
    t_max = np.iinfo(np.int64).min
    for i in range(len(t)):
        ti = t[i]
        k = key[i]
        folded = False
        last = (ti - offset) // every * every + offset
        for j in range(copies):
            s = last - j * every
            if ti >= s + size:
                break  # row i lies in windows last, last - every, ... while t < start + size
            if s + size <= closed_before or ti < floor:
                if not late[i]:
                    late[i] = True
                    n_late += 1
                continue
            h = _hash(s, k, mask)
            while True:
                slot = table[h]
                if slot < 0:
                    slot = m
                    m += 1
                    table[h] = slot
                    slot_key[slot] = k
                    slot_start[slot] = s
                    for c in range(n_cols):
                        fused[4 * c, slot] = 0.0
                        fused[4 * c + 1, slot] = 0.0
                        fused[4 * c + 2, slot] = np.inf
                        fused[4 * c + 3, slot] = -np.inf
                    break
                if slot_start[slot] == s and slot_key[slot] == k:
                    break
                h = (h + 1) & mask
            for c in range(n_cols):
                v = values[c, i]
                if v == v:
                    fused[4 * c, slot] += 1.0
                    fused[4 * c + 1, slot] += v
                    if v < fused[4 * c + 2, slot]:
                        fused[4 * c + 2, slot] = v
                    if v > fused[4 * c + 3, slot]:
                        fused[4 * c + 3, slot] = v
            folded = True
            if track:
                touched[slot] = True
            if pairs:
                pair_row[p] = i
                pair_slot[p] = slot
                p += 1
        if folded and ti > t_max:
            t_max = ti
    return m, p, n_late, t_max


def fold(t: Ints, key: Ints, size: int, every: int, offset: int, copies: int,
         closed_before: int, floor: int, table: Ints, slot_key: Ints, slot_start: Ints,
         m: int, values: Floats, fused: Floats, touched: Bools, track: bool,
         pair_row: Ints, pair_slot: Ints, pairs: bool, late: Bools
         ) -> tuple[int, int, int, int]:
    """Fold a batch's rows into their open windows, opening the missing ones; one pass.

    Row ``i`` (event time ``t[i]``, key code ``key[i]``) lies in the windows starting at
    ``last - j * every`` (``last`` its newest window's start, ``j < copies``) that still
    contain it. A window that ended at or before ``closed_before`` (the watermark before
    the batch), or any window of a row older than ``floor``, is closed: the row is marked in
    ``late`` and not folded there. Every other (row, window) finds its slot in ``table``
    (a new window takes slot ``m``, ``m + 1``, ...; the caller made room for one per pair)
    and updates the fused count/sum/min/max of every row ``c`` of ``values``; with ``track``
    the slot is marked in ``touched``, with ``pairs`` the pair is written to
    ``pair_row``/``pair_slot`` (for the aggregations that are not fused).

    Returns the new number of open slots, of pairs written, of late rows, and the largest
    event time of the rows folded into some window (int64 min if none).
    """
    out = _fold(t, key, size, every, offset, copies, closed_before, floor, table, slot_key,
                slot_start, m, values, fused, touched, track, pair_row, pair_slot, pairs,
                late)
    return int(out[0]), int(out[1]), int(out[2]), int(out[3])


@jit
def _rebuild(table: Ints, slot_key: Ints, slot_start: Ints, m: int) -> None:
    mask = len(table) - 1
    table[:] = -1
    for slot in range(m):
        h = _hash(slot_start[slot], slot_key[slot], mask)
        while table[h] >= 0:
            h = (h + 1) & mask
        table[h] = slot


def rebuild(table: Ints, slot_key: Ints, slot_start: Ints, m: int) -> None:
    """Fill ``table`` (length a power of two, > ``m``) with slots ``0 .. m-1`` afresh."""
    _rebuild(table, slot_key, slot_start, m)


@jit
def _group_sort(group: Ints, values: Floats, n: int) -> Any:
    counts = np.zeros(n, dtype=np.int64)
    for i in range(len(group)):
        g = group[i]
        if g >= 0 and values[i] == values[i]:
            counts[g] += 1
    starts = np.zeros(n, dtype=np.int64)
    total = 0
    for g in range(n):
        starts[g] = total
        total += counts[g]
    out = np.empty(total)
    fill = starts.copy()
    for i in range(len(group)):
        g = group[i]
        if g >= 0 and values[i] == values[i]:
            out[fill[g]] = values[i]
            fill[g] += 1
    for g in range(n):
        c = counts[g]
        lo = starts[g]
        if c > 32:
            out[lo:lo + c] = np.sort(out[lo:lo + c])
        else:  # insertion sort in place: no allocation for the usual small window
            for i in range(lo + 1, lo + c):
                v = out[i]
                j = i - 1
                while j >= lo and out[j] > v:
                    out[j + 1] = out[j]
                    j -= 1
                out[j + 1] = v
    return out, starts, counts


def group_sort(group: Ints, values: Floats, n: int) -> tuple[Floats, Ints, Ints]:
    """The non-NaN ``values`` of each of ``n`` groups, sorted within the group.

    ``group[i]`` is value ``i``'s group (``-1``: none). A counting sort by group (O(rows))
    then a sort of each group's values; returns the values, each group's offset in them and
    each group's count (what :meth:`~rtnb.aggregations.Aggregation.result_sorted` takes).

    >>> v, s, c = group_sort(np.array([1, 0, 1, -1, 1]), np.array([3., 9., 1., 5., np.nan]), 2)
    >>> v.tolist(), s.tolist(), c.tolist()
    ([9.0, 1.0, 3.0], [0, 1], [1, 2])
    """
    out = _group_sort(group, values, n)
    return out[0], out[1], out[2]
