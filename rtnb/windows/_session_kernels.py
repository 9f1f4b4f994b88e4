"""Compiled loops of the session window engine (numba): one pass over a batch's rows.

Imported when the first :class:`~rtnb.windows.session_engine.SessionAggregator` is built,
not with ``rtnb``; compiled on first call and then read from numba's cache (see
:mod:`rtnb.windows._kernels`).

Open sessions live in *slots* ``0 .. m-1``: ``slot_key``, ``slot_start`` (first event),
``slot_last`` (last event), ``alive`` (``False`` for a slot merged into another, dropped at
the next :func:`pack`). The sessions of one key form a chain from the newest:
``head[key]`` is the key's newest session (``-1``: none) and ``prev[s]`` the next older one.
Sessions of one key never overlap and are at least ``gap`` apart (last of the older to the
start of the newer), so in an ordered feed a row only looks at its key's head.

The built-in count/sum/mean/min/max share one *fused* state per value column ``c``: rows
``4c .. 4c+3`` of ``fused[:, s]`` are the count of non-NaN values, their sum, their minimum
(``+inf`` when none) and maximum (``-inf``), as in :mod:`rtnb.windows._kernels`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from rtnb._jit import jit

__all__ = ["closing", "fold", "pack"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@jit
def _fold(t: Ints, key: Ints, values: Floats, gap: int, watermark: int, floor: int,
          closed_end: Ints, head: Ints, prev: Ints, slot_key: Ints, slot_start: Ints,
          slot_last: Ints, alive: Bools, fused: Floats, touched: Bools, track: bool, m: int,
          late: Bools, max_time: int, lateness: int) -> Any:
    n_cols = values.shape[0]
    n_late = 0
    n_dead = 0
    t_max = np.iinfo(np.int64).min
    for i in range(len(t)):
        ti = t[i]
        k = key[i]
        if ti + gap <= watermark or ti < closed_end[k] or ti < floor:
            late[i] = True
            n_late += 1
            continue
        if ti > t_max:
            t_max = ti
        # the newest session of the key starting before ti + gap (newer ones are too far)
        after = -1
        cur = head[k]
        while cur >= 0 and slot_start[cur] >= ti + gap:
            after = cur
            cur = prev[cur]
        if cur >= 0 and slot_last[cur] > ti - gap:
            slot = cur
            p = prev[cur]
            if p >= 0 and slot_last[p] > ti - gap:
                # the row bridges the older session p and cur: p joins cur
                slot_start[slot] = slot_start[p]
                for c in range(n_cols):
                    fused[4 * c, slot] += fused[4 * c, p]
                    fused[4 * c + 1, slot] = fused[4 * c + 1, p] + fused[4 * c + 1, slot]
                    if fused[4 * c + 2, p] < fused[4 * c + 2, slot]:
                        fused[4 * c + 2, slot] = fused[4 * c + 2, p]
                    if fused[4 * c + 3, p] > fused[4 * c + 3, slot]:
                        fused[4 * c + 3, slot] = fused[4 * c + 3, p]
                prev[slot] = prev[p]
                alive[p] = False
                n_dead += 1
            if ti < slot_start[slot]:
                slot_start[slot] = ti
            if ti > slot_last[slot]:
                slot_last[slot] = ti
        else:  # a new session between cur (older) and after (newer)
            slot = m
            m += 1
            slot_key[slot] = k
            slot_start[slot] = ti
            slot_last[slot] = ti
            alive[slot] = True
            if track:
                touched[slot] = False
            prev[slot] = cur
            if after < 0:
                head[k] = slot
            else:
                prev[after] = slot
            for c in range(n_cols):
                fused[4 * c, slot] = 0.0
                fused[4 * c + 1, slot] = 0.0
                fused[4 * c + 2, slot] = np.inf
                fused[4 * c + 3, slot] = -np.inf
        for c in range(n_cols):
            v = values[c, i]
            if v == v:
                fused[4 * c, slot] += 1.0
                fused[4 * c + 1, slot] += v
                if v < fused[4 * c + 2, slot]:
                    fused[4 * c + 2, slot] = v
                if v > fused[4 * c + 3, slot]:
                    fused[4 * c + 3, slot] = v
        if track:
            touched[slot] = True
    n_done = 0
    if t_max != np.iinfo(np.int64).min:
        if t_max > max_time:
            max_time = t_max
        if max_time - lateness > watermark:
            watermark = max_time - lateness
    for s in range(m):
        if alive[s] and slot_last[s] + gap <= watermark:
            n_done += 1
    return m, n_late, n_dead, t_max, n_done


def fold(t: Ints, key: Ints, values: Floats, gap: int, watermark: int, floor: int,
         closed_end: Ints, head: Ints, prev: Ints, slot_key: Ints, slot_start: Ints,
         slot_last: Ints, alive: Bools, fused: Floats, touched: Bools, track: bool, m: int,
         late: Bools, max_time: int, lateness: int) -> tuple[int, int, int, int, int]:
    """Fold a batch's rows into their keys' sessions in arrival order; one pass.

    Row ``i`` (event time ``t[i]``, key code ``key[i]``) is late, marked in ``late`` and
    skipped, when its own session ``[t, t + gap)`` ended at or before ``watermark`` (the
    watermark before the batch), when ``t < closed_end[key]`` (it would extend or overlap a
    session already emitted) or when ``t < floor``. Otherwise it walks its key's chain from
    the newest session to the newest one starting before ``t + gap``; if that session's
    last event is after ``t - gap`` the row joins it (and if the next older session's last
    event is too, the row bridges the two: the older one is merged in and marked dead),
    else the row opens a new session in slot ``m`` (the caller made room for one per row),
    linked into the chain at its place. The row's value of every row ``c`` of ``values``
    updates the fused count/sum/min/max; with ``track`` the slot is marked in ``touched``.

    Returns the new number of slots, of late rows, of slots merged away (dead), the largest
    event time of the rows folded (int64 min if none), and how many live sessions end at or
    before the new watermark (``max(max_time, that time) - lateness``, never lower than
    ``watermark``): the ones to emit.
    """
    return _fold(t, key, values, gap, watermark, floor,  # type: ignore[no-any-return]
                 closed_end, head, prev, slot_key, slot_start, slot_last, alive, fused,
                 touched, track, m, late, max_time, lateness)


@jit
def _closing(alive: Bools, slot_key: Ints, slot_start: Ints, slot_last: Ints, gap: int,
             watermark: int, m: int, done: Bools) -> Any:
    idx = np.empty(m, dtype=np.int64)
    n = 0
    for s in range(m):
        if alive[s] and slot_last[s] + gap <= watermark:
            done[s] = True
            idx[n] = s
            n += 1
    ordered = True
    for j in range(1, n):
        a, b = idx[j - 1], idx[j]
        if slot_start[a] > slot_start[b] or (
                slot_start[a] == slot_start[b] and slot_key[a] > slot_key[b]):
            ordered = False
            break
    return idx[:n], ordered


def closing(alive: Bools, slot_key: Ints, slot_start: Ints, slot_last: Ints, gap: int,
            watermark: int, m: int, done: Bools) -> tuple[Ints, bool]:
    """The live slots whose session ends at or before ``watermark``, marked in ``done``.

    Returns their indices in slot order and whether that order is already by (start, key)
    (the usual case: slots are opened in arrival order).

    >>> done = np.zeros(3, dtype=np.bool_)
    >>> idx, ordered = closing(np.array([True, True, False]), np.array([0, 1, 0]),
    ...     np.array([5, 2, 0]), np.array([6, 3, 1]), 2, 10, 3, done)
    >>> idx.tolist(), ordered, done.tolist()
    ([0, 1], False, [True, True, False])
    """
    out = _closing(alive, slot_key, slot_start, slot_last, gap, watermark, m, done)
    return out[0], bool(out[1])


@jit
def _pack(keep: Bools, alive: Bools, gap: int, closed_end: Ints, head: Ints, prev: Ints,
          slot_key: Ints, slot_start: Ints, slot_last: Ints, fused: Floats, touched: Bools,
          track: bool, m: int) -> Any:
    new_id = np.full(m, -1, dtype=np.int64)
    j = 0
    for s in range(m):
        if keep[s]:
            new_id[s] = j
            if j != s:
                slot_key[j] = slot_key[s]
                slot_start[j] = slot_start[s]
                slot_last[j] = slot_last[s]
                prev[j] = prev[s]
                alive[j] = True
                for r in range(fused.shape[0]):
                    fused[r, j] = fused[r, s]
                if track:
                    touched[j] = touched[s]
            j += 1
        elif alive[s]:  # emitted: later rows before its end are late
            end = slot_last[s] + gap
            if end > closed_end[slot_key[s]]:
                closed_end[slot_key[s]] = end
    for s in range(j):
        p = prev[s]
        prev[s] = new_id[p] if p >= 0 else -1
    for k in range(len(head)):
        h = head[k]
        if h >= 0:
            head[k] = new_id[h]
    return j


def pack(keep: Bools, alive: Bools, gap: int, closed_end: Ints, head: Ints, prev: Ints,
         slot_key: Ints, slot_start: Ints, slot_last: Ints, fused: Floats, touched: Bools,
         track: bool, m: int) -> int:
    """Keep the slots ``keep`` marks, packed to the front in order; return how many.

    Every other live slot is an emitted session: ``closed_end`` of its key is raised to its
    end. Chains (``prev``, ``head``) are renumbered; emitted sessions are the oldest of
    their key's chain (their last event is the smallest), so a chain is only cut short.
    """
    return int(_pack(keep, alive, gap, closed_end, head, prev, slot_key, slot_start,
                     slot_last, fused, touched, track, m))
