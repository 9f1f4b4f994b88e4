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

__all__ = ["close", "fold", "group_sort", "rebuild"]

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
          pair_row: Ints, pair_slot: Ints, pairs: bool, late: Bools, raw_in: Floats,
          raw_slot: Ints, raw_vals: Floats, r: int, max_time: int, lateness: int) -> Any:
    mask = len(table) - 1
    n_cols = values.shape[0]
    n_raw = raw_in.shape[0]
    p = 0
    n_late = 0
    t_max = np.iinfo(np.int64).min
    last = 0  # the newest window start of the previous row
    for i in range(len(t)):
        ti = t[i]
        k = key[i]
        folded = False
        if i == 0 or ti < last or ti - last >= every:  # rows in order skip the division
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
            if n_raw:
                raw_slot[r] = slot
                for c in range(n_raw):
                    raw_vals[c, r] = raw_in[c, i]
                r += 1
        if folded and ti > t_max:
            t_max = ti
    watermark = closed_before
    if t_max != np.iinfo(np.int64).min:
        watermark = max(watermark, max(max_time, t_max) - lateness)
    n_done = 0
    for s in range(m):
        if slot_start[s] + size <= watermark:
            n_done += 1
    return m, p, n_late, t_max, r, n_done


def fold(t: Ints, key: Ints, size: int, every: int, offset: int, copies: int,
         closed_before: int, floor: int, table: Ints, slot_key: Ints, slot_start: Ints,
         m: int, values: Floats, fused: Floats, touched: Bools, track: bool,
         pair_row: Ints, pair_slot: Ints, pairs: bool, late: Bools, raw_in: Floats,
         raw_slot: Ints, raw_vals: Floats, r: int, max_time: int, lateness: int
         ) -> tuple[int, int, int, int, int, int]:
    """Fold a batch's rows into their open windows, opening the missing ones; one pass.

    Row ``i`` (event time ``t[i]``, key code ``key[i]``) lies in the windows starting at
    ``last - j * every`` (``last`` its newest window's start, ``j < copies``) that still
    contain it. A window that ended at or before ``closed_before`` (the watermark before
    the batch), or any window of a row older than ``floor``, is closed: the row is marked in
    ``late`` and not folded there. Every other (row, window) finds its slot in ``table``
    (a new window takes slot ``m``, ``m + 1``, ...; the caller made room for one per pair)
    and updates the fused count/sum/min/max of every row ``c`` of ``values``; with ``track``
    the slot is marked in ``touched``, with ``pairs`` the pair is written to
    ``pair_row``/``pair_slot`` (for the aggregations that are not fused), and when
    ``raw_in`` has rows (the columns of holistic aggregations) the pair's slot and values
    are appended to ``raw_slot``/``raw_vals`` at ``r``, ``r + 1``, ... (the caller made
    room for one per pair).

    Returns the new number of open slots, of pairs written, of late rows, the largest event
    time of the rows folded into some window (int64 min if none), the new number of raw
    rows, and how many open windows end at or before the watermark after the batch (the
    larger of ``closed_before`` and ``max(max_time, that time) - lateness``): the ones to
    emit.
    """
    return _fold(t, key, size, every, offset, copies, closed_before, floor,  # type: ignore[no-any-return]
                 table, slot_key, slot_start, m, values, fused, touched, track, pair_row,
                 pair_slot, pairs, late, raw_in, raw_slot, raw_vals, r, max_time, lateness)


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


#: ``plan`` kinds of :func:`close`: what a fused aggregation reads from its column's state
COUNT, SUM, MEAN, MIN, MAX = 0, 1, 2, 3, 4


@jit
def _sort_runs(out: Floats, starts: Ints, counts: Ints) -> None:
    for g in range(len(starts)):
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


@jit
def _by_start_and_key(idx: Ints, slot_key: Ints, slot_start: Ints) -> Any:
    """``idx`` ordered by (window start, key code).

    An emission usually closes the windows of one or two starts: a counting sort over
    (rank of the start, key code) then orders them in O(windows + starts x keys); more than
    8 distinct starts, or a key range much larger than the windows, takes two stable sorts.
    """
    k = len(idx)
    distinct = np.empty(8, dtype=np.int64)
    n_starts = 0
    top = 0
    few = True
    for j in range(k):
        s = slot_start[idx[j]]
        top = max(top, slot_key[idx[j]])
        u = 0
        while u < n_starts and distinct[u] != s:
            u += 1
        if u == n_starts:
            if n_starts == len(distinct):
                few = False
                break
            distinct[n_starts] = s
            n_starts += 1
    buckets = n_starts * (top + 1)
    if not few or buckets > 4 * k + 1024:
        idx = idx[np.argsort(slot_key[idx], kind="mergesort")]
        return idx[np.argsort(slot_start[idx], kind="mergesort")]
    starts = np.sort(distinct[:n_starts])
    first = np.zeros(buckets + 1, dtype=np.int64)
    bucket = np.empty(k, dtype=np.int64)
    for j in range(k):
        s = slot_start[idx[j]]
        u = 0
        while starts[u] != s:
            u += 1
        bucket[j] = u * (top + 1) + slot_key[idx[j]]
        first[bucket[j] + 1] += 1
    for b in range(buckets):
        first[b + 1] += first[b]
    out = np.empty(k, dtype=np.int64)
    for j in range(k):
        out[first[bucket[j]]] = idx[j]
        first[bucket[j]] += 1
    return out


@jit
def _close(slot_key: Ints, slot_start: Ints, m: int, size: int, watermark: int,
           everything: bool, fused: Floats, plan: Ints, n_float: int, n_int: int,
           touched: Bools, track: bool, table: Ints, raw_slot: Ints, raw_vals: Floats,
           r: int, quantiles: Floats, q_plan: Ints) -> Any:
    done = np.zeros(m, dtype=np.bool_)
    idx = np.empty(m, dtype=np.int64)
    k = 0
    n_done = 0
    for s in range(m):
        d = everything or slot_start[s] + size <= watermark
        done[s] = d
        if d:
            n_done += 1
        if d or (track and touched[s]):
            idx[k] = s
            k += 1
    idx = idx[:k]
    if k > 1:
        idx = _by_start_and_key(idx, slot_key, slot_start)
    times = np.empty((2, k), dtype=np.int64)
    keys = np.empty(k, dtype=np.int64)
    out_f = np.empty((n_float, k))
    out_i = np.empty((n_int, k), dtype=np.int64)
    for j in range(k):
        s = idx[j]
        times[0, j] = slot_start[s]
        times[1, j] = slot_start[s] + size
        keys[j] = slot_key[s]
        for e in range(plan.shape[0]):
            kind, c, row = plan[e, 0], plan[e, 1], plan[e, 2]
            if kind == COUNT:
                out_i[row, j] = np.int64(fused[4 * c, s])
            elif kind == SUM:
                out_f[row, j] = fused[4 * c + 1, s]
            elif kind == MEAN:
                n = fused[4 * c, s]
                out_f[row, j] = fused[4 * c + 1, s] / n if n > 0 else np.nan
            elif kind == MIN:
                v = fused[4 * c + 2, s]
                out_f[row, j] = np.nan if v == np.inf else v
            else:
                v = fused[4 * c + 3, s]
                out_f[row, j] = np.nan if v == -np.inf else v
    # holistic columns: each reported window's non-NaN raw values, sorted, one run each
    n_raw = raw_vals.shape[0]
    counts = np.zeros((n_raw, k), dtype=np.int64)
    starts = np.zeros((n_raw, k), dtype=np.int64)
    total = 0
    pos = np.full(m if n_raw else 0, -1, dtype=np.int64)
    if n_raw and k:
        for j in range(k):
            pos[idx[j]] = j
        for q in range(r):
            g = pos[raw_slot[q]]
            if g >= 0:
                for c in range(n_raw):
                    if raw_vals[c, q] == raw_vals[c, q]:
                        counts[c, g] += 1
        for c in range(n_raw):
            for g in range(k):
                starts[c, g] = total
                total += counts[c, g]
    vals = np.empty(total)
    if total:
        fill = starts.copy()
        for q in range(r):
            g = pos[raw_slot[q]]
            if g >= 0:
                for c in range(n_raw):
                    v = raw_vals[c, q]
                    if v == v:
                        vals[fill[c, g]] = v
                        fill[c, g] += 1
        for c in range(n_raw):
            _sort_runs(vals, starts[c], counts[c])
    for e in range(q_plan.shape[0]):  # exact quantiles, interpolated as Quantile does
        c, row, q = q_plan[e, 0], q_plan[e, 1], quantiles[e]
        for j in range(k):
            cnt = counts[c, j]
            if cnt > 0:
                at = q * (cnt - 1)
                lo = np.int64(np.floor(at))
                hi = min(lo + 1, cnt - 1)
                frac = at - lo
                v_lo = vals[starts[c, j] + lo]
                v_hi = vals[starts[c, j] + hi]
                out_f[row, j] = v_lo + (v_hi - v_lo) * frac
            else:
                out_f[row, j] = np.nan
    # drop the closed windows: the open ones packed to the front, in order
    kept = np.empty(m - n_done, dtype=np.int64)
    new_id = np.full(m, -1, dtype=np.int64)
    j = 0
    for s in range(m):
        if not done[s]:
            new_id[s] = j
            kept[j] = s
            if j != s:
                slot_key[j] = slot_key[s]
                slot_start[j] = slot_start[s]
                for row in range(fused.shape[0]):
                    fused[row, j] = fused[row, s]
            j += 1
    if track:
        touched[:m] = False
    if n_raw and n_done:
        rr = 0
        for q in range(r):
            nid = new_id[raw_slot[q]]
            if nid >= 0:
                raw_slot[rr] = nid
                for c in range(n_raw):
                    raw_vals[c, rr] = raw_vals[c, q]
                rr += 1
        r = rr
    if n_done:
        _rebuild(table, slot_key, slot_start, j)
    return idx, times, keys, out_f, out_i, vals, starts, counts, j, r, kept


def close(slot_key: Ints, slot_start: Ints, m: int, size: int, watermark: int,
          everything: bool, fused: Floats, plan: Ints, n_float: int, n_int: int,
          touched: Bools, track: bool, table: Ints, raw_slot: Ints, raw_vals: Floats,
          r: int, quantiles: Floats, q_plan: Ints) -> tuple[Any, ...]:
    """Emit and drop the windows that closed; one pass over the open slots.

    Slot ``s < m`` is *done* when ``everything`` or its window ended at or before
    ``watermark``; the *reported* slots are the done ones and, with ``track``, the ones
    ``touched`` marks. Returns, for the reported slots ordered by (window start, key code):
    their slots ``idx``, ``times`` (rows: window start, window end), key codes, the fused
    results (``plan`` row ``(kind, c, row)``: :data:`COUNT` into ``row`` of the
    ``n_int``-row int64 output, the others into ``row`` of the ``n_float``-row float
    output, from value column ``c``'s fused state, as the classes' ``result`` computes
    them), then the non-NaN raw values of each holistic column ``c`` (rows of ``raw_vals``)
    of each reported window, sorted within the window: ``values``, and ``starts[c, j]`` /
    ``counts[c, j]`` where window ``j``'s run lies (what ``Aggregation.result_sorted``
    takes). ``q_plan`` row ``(c, row)`` writes the exact ``quantiles[e]``-quantile of column
    ``c`` (linear interpolation, as :class:`~rtnb.aggregations.Quantile`) into float output
    ``row``. Then the done slots are dropped: the others packed to the front in order (the
    raw rows of dropped windows removed, the others renumbered, ``touched`` cleared with
    ``track``, ``table`` rebuilt if any was dropped); also returns the new number of open
    slots, of raw rows, and the old slot of every kept one.
    """
    return _close(slot_key, slot_start, m, size, watermark, everything,  # type: ignore[no-any-return]
                  fused, plan, n_float, n_int, touched, track, table, raw_slot, raw_vals, r,
                  quantiles, q_plan)


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
    _sort_runs(out, starts, counts)
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
