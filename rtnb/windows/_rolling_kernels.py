"""Compiled per-row loop of the rolling engine (numba): a batch's ready rows, all keys in one call.

Imported on a rolling aggregator's first batch, not with ``rtnb`` (numba takes ~0.3 s to
import); compiled on the first call in a process and then read from numba's cache
(``__pycache__`` next to this file), or compiled in every process when no cache directory
can be written.

State layout, per key code ``k`` (the key registry's dense codes):

- The key's rows still in its window, times and values, in a ring buffer of
  ``meta[k, CAP]`` rows (a power of two) at ``meta[k, OFF]`` of the pools ``pool_t`` /
  ``pool_v``. Rows are numbered per key in arrival order (``meta[k, TOT]`` pushed so far);
  row ``a`` sits at ``OFF + (a & (CAP - 1))`` and the oldest kept row is ``TOT - CNT``.
  A full ring moves to a region twice its size at the end of the pools; when the pools are
  full they are reallocated (doubling) with the live rings packed.
- min/max: monotonic deques of row numbers in ``pool_qn`` / ``pool_qx``, in the same region
  as the ring (a deque never holds more rows than the ring); entry ``c`` of a deque sits at
  ``OFF + (c & (CAP - 1))``, its live entries are ``QNH .. QNT - 1`` (``QXH .. QXT - 1``).
  The front of the min deque is the window's minimum; a row pushed drops the rows behind it
  that are larger (smaller, for max), so each row enters and leaves a deque once.
- ``fs[k] = (REF, S, SC, SS, SSC, A, PEAK, LAST)``: running sums over the window's non-NaN
  values of ``d = v - REF`` (``S``) and ``d * d`` (``SS``), each with its Neumaier
  compensation (``SC``, ``SSC``), and of ``|d|`` (``A``, the window's magnitude); ``PEAK``
  the largest ``A`` since the sums were rebuilt; ``LAST`` the last non-NaN value, and
  ``meta[k, RUN]`` how many equal values end the key's sequence (a window whose ``NOK``
  values are all equal has variance 0 and mean ``LAST`` exactly, as pandas reports).
  The sums are rebuilt exactly from the ring (``REF`` = the window's oldest value) once as
  many rows have left the window as it holds (``SINCE``), or when the window's magnitude
  has dropped below 1/1024 of its peak (a huge value left: the running sums would keep its
  rounding), so rounding builds up over at most about two windows of adds and removes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rtnb._jit import jit

__all__ = ["FS_INIT", "N_FS", "N_META", "WANT", "group_rows", "load_rows", "roll_rows"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

#: ``meta[k]`` columns: ring offset, capacity, rows kept, rows pushed so far, non-NaN rows
#: kept, equal values ending the sequence, min/max deque heads and tails, rows removed
#: since the sums were rebuilt.
OFF, CAP, CNT, TOT, NOK, RUN, QNH, QNT, QXH, QXT, SINCE = range(11)
N_META = 11
#: ``fs[k]`` columns (see the module docstring).
REF, S, SC, SS, SSC, A, PEAK, LAST = range(8)
N_FS = 8
#: ``fs`` of a key never seen
FS_INIT = np.array([np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, np.nan])
#: output rows of ``out`` per aggregation
WANT = {"count": 0, "sum": 1, "mean": 2, "var": 3, "std": 4, "min": 5, "max": 6}
_FIRST_CAP = 8




@jit
def _group(key: Ints, t: Ints, n_keys: int) -> Ints:
    """Row order by key, then time, then arrival.

    A stable counting sort by key when the keys are few next to the rows, else a merge sort;
    when a key's rows are out of time order, a stable sort by time comes first.
    """
    n = key.shape[0]
    if n_keys <= 4 * n + 256:
        count = np.zeros(n_keys + 1, dtype=np.int64)
        for r in range(n):
            count[key[r] + 1] += 1
        for k in range(n_keys):
            count[k + 1] += count[k]
        order = np.empty(n, dtype=np.int64)
        for r in range(n):
            k = key[r]
            order[count[k]] = r
            count[k] += 1
    else:
        order = np.argsort(key, kind="mergesort").astype(np.int64)
    for i in range(1, n):
        a, b = order[i - 1], order[i]
        if key[a] == key[b] and t[b] < t[a]:  # out of time order: time first, then key
            by_time = np.argsort(t, kind="mergesort")
            kk = key[by_time]
            again = np.argsort(kk, kind="mergesort")
            return by_time[again].astype(np.int64)
    return order


def group_rows(key: Ints, t: Ints, n_keys: int) -> Ints:
    """Positions of the rows ordered by key, then time, then arrival (stable)."""
    return _group(key, t, n_keys)


@jit
def _relocate(meta: Ints, pool_t: Ints, pool_v: Floats, pool_qn: Ints, pool_qx: Ints,
              used: Ints, k: int, new_cap: int, deques: bool
              ) -> tuple[Ints, Floats, Ints, Ints]:
    """Give key ``k`` a region of ``new_cap`` rows at the end of the pools.

    When their free tail is too short, the pools are reallocated (twice the live regions)
    with every live region packed.
    """
    if used[0] + new_cap <= pool_t.shape[0]:
        nt, nv, nqn, nqx = pool_t, pool_v, pool_qn, pool_qx
        base = used[0]
        first, last = k, k + 1
    else:
        live = new_cap
        for j in range(meta.shape[0]):
            if j != k:
                live += meta[j, CAP]
        size = max(2 * live, 1024)
        nt = np.empty(size, dtype=np.int64)
        nv = np.empty(size, dtype=np.float64)
        qsize = size if deques else 0
        nqn = np.empty(qsize, dtype=np.int64)
        nqx = np.empty(qsize, dtype=np.int64)
        base = 0
        first, last = 0, meta.shape[0]
    for j in range(first, last):
        cap = new_cap if j == k else meta[j, CAP]
        if cap == 0:
            continue
        off, old = meta[j, OFF], meta[j, CAP]
        if old:
            m_old, m_new = old - 1, cap - 1
            tot = meta[j, TOT]
            for a in range(tot - meta[j, CNT], tot):
                nt[base + (a & m_new)] = pool_t[off + (a & m_old)]
                nv[base + (a & m_new)] = pool_v[off + (a & m_old)]
            if deques:
                for c in range(meta[j, QNH], meta[j, QNT]):
                    nqn[base + (c & m_new)] = pool_qn[off + (c & m_old)]
                for c in range(meta[j, QXH], meta[j, QXT]):
                    nqx[base + (c & m_new)] = pool_qx[off + (c & m_old)]
        meta[j, OFF], meta[j, CAP] = base, cap
        base += cap
    used[0] = base
    return nt, nv, nqn, nqx


@jit
def _rebuild(meta: Ints, fs: Floats, pool_v: Floats, k: int) -> None:
    """The key's running sums afresh from its ring, around its oldest non-NaN value."""
    off, mask, tot = meta[k, OFF], meta[k, CAP] - 1, meta[k, TOT]
    ref = np.nan
    s = sc = ss = ssc = a_sum = 0.0
    for a in range(tot - meta[k, CNT], tot):
        v = pool_v[off + (a & mask)]
        if v != v:
            continue
        if ref != ref:
            ref = v
        d = v - ref
        x = s + d
        sc += (s - x) + d if abs(s) >= abs(d) else (d - x) + s
        s = x
        dd = d * d
        x = ss + dd
        ssc += (ss - x) + dd if abs(ss) >= dd else (dd - x) + ss
        ss = x
        a_sum += abs(d)
    if ref == ref:
        fs[k, REF] = ref
    fs[k, S], fs[k, SC], fs[k, SS], fs[k, SSC] = s, sc, ss, ssc
    fs[k, A], fs[k, PEAK] = a_sum, a_sum
    meta[k, SINCE] = 0


@jit
def _roll(order: Ints, key: Ints, t: Ints, v: Floats, meta: Ints, fs: Floats,
          pool_t: Ints, pool_v: Floats, pool_qn: Ints, pool_qx: Ints, used: Ints,
          window: int, min_periods: int, want: Ints, deques: bool, out: Floats
          ) -> tuple[Ints, Floats, Ints, Ints]:
    n_out = out.shape[0]
    enough_at = max(min_periods, 1)
    for i in range(order.shape[0]):
        r = order[i]
        k = key[r]
        ti = t[r]
        vi = v[r]
        # rows that left the window (t - window, t]
        off, mask, tot, cnt = meta[k, OFF], meta[k, CAP] - 1, meta[k, TOT], meta[k, CNT]
        horizon = ti - window
        removed = False
        while cnt and pool_t[off + ((tot - cnt) & mask)] <= horizon:
            a = tot - cnt
            x = pool_v[off + (a & mask)]
            if x == x:
                d = x - fs[k, REF]
                s = fs[k, S]
                y = s - d
                fs[k, SC] += (s - y) - d if abs(s) >= abs(d) else (-d - y) + s
                fs[k, S] = y
                dd = d * d
                s = fs[k, SS]
                y = s - dd
                fs[k, SSC] += (s - y) - dd if abs(s) >= dd else (-dd - y) + s
                fs[k, SS] = y
                fs[k, A] -= abs(d)
                meta[k, NOK] -= 1
                if deques:
                    if meta[k, QNH] < meta[k, QNT] and pool_qn[off + (meta[k, QNH] & mask)] == a:
                        meta[k, QNH] += 1
                    if meta[k, QXH] < meta[k, QXT] and pool_qx[off + (meta[k, QXH] & mask)] == a:
                        meta[k, QXH] += 1
            cnt -= 1
            meta[k, SINCE] += 1
            removed = True
        meta[k, CNT] = cnt
        if cnt == meta[k, CAP]:  # full: a region twice the size
            pool_t, pool_v, pool_qn, pool_qx = _relocate(
                meta, pool_t, pool_v, pool_qn, pool_qx, used, k,
                max(2 * meta[k, CAP], _FIRST_CAP), deques)
            off, mask = meta[k, OFF], meta[k, CAP] - 1
        if removed and (meta[k, SINCE] > cnt or not fs[k, A] * 1024.0 >= fs[k, PEAK]):
            _rebuild(meta, fs, pool_v, k)
        # the row itself
        p = off + (tot & mask)
        pool_t[p] = ti
        pool_v[p] = vi
        meta[k, TOT] = tot + 1
        meta[k, CNT] = cnt + 1
        if vi == vi:
            if fs[k, REF] != fs[k, REF]:
                fs[k, REF] = vi
            d = vi - fs[k, REF]
            s = fs[k, S]
            y = s + d
            fs[k, SC] += (s - y) + d if abs(s) >= abs(d) else (d - y) + s
            fs[k, S] = y
            dd = d * d
            s = fs[k, SS]
            y = s + dd
            fs[k, SSC] += (s - y) + dd if abs(s) >= dd else (dd - y) + s
            fs[k, SS] = y
            fs[k, A] += abs(d)
            if fs[k, A] > fs[k, PEAK]:
                fs[k, PEAK] = fs[k, A]
            meta[k, NOK] += 1
            meta[k, RUN] = meta[k, RUN] + 1 if vi == fs[k, LAST] else 1
            fs[k, LAST] = vi
            if deques:
                h, e = meta[k, QNH], meta[k, QNT]
                while e > h and pool_v[off + (pool_qn[off + ((e - 1) & mask)] & mask)] > vi:
                    e -= 1
                pool_qn[off + (e & mask)] = tot
                meta[k, QNT] = e + 1
                h, e = meta[k, QXH], meta[k, QXT]
                while e > h and pool_v[off + (pool_qx[off + ((e - 1) & mask)] & mask)] < vi:
                    e -= 1
                pool_qx[off + (e & mask)] = tot
                meta[k, QXT] = e + 1
        # the row's window
        nok = meta[k, NOK]
        n = np.float64(nok)
        same = nok > 0 and meta[k, RUN] >= nok  # every value of the window equal
        sw = fs[k, S] + fs[k, SC]
        ref = fs[k, REF] if fs[k, REF] == fs[k, REF] else 0.0
        for j in range(n_out):
            w = want[j]
            if w == 0:  # pandas: NaN while the window has fewer rows (NaN or not)
                res = n if cnt + 1 >= min_periods else np.nan
            elif w == 1:
                if nok < min_periods:
                    res = np.nan
                elif same:
                    res = fs[k, LAST] * n
                else:
                    res = sw + n * ref
            elif w == 2:
                if nok < enough_at:
                    res = np.nan
                elif same:
                    res = fs[k, LAST]
                else:
                    res = sw / n + ref
            elif w == 3 or w == 4:
                if nok < enough_at or nok < 2:
                    res = np.nan
                elif same:
                    res = 0.0
                else:
                    res = max((fs[k, SS] + fs[k, SSC] - sw * sw / n) / (n - 1.0), 0.0)
                    if w == 4:
                        res = np.sqrt(res)
            elif w == 5:
                if nok < enough_at:
                    res = np.nan
                else:
                    res = pool_v[off + (pool_qn[off + (meta[k, QNH] & mask)] & mask)]
            else:
                if nok < enough_at:
                    res = np.nan
                else:
                    res = pool_v[off + (pool_qx[off + (meta[k, QXH] & mask)] & mask)]
            out[j, i] = res
    return pool_t, pool_v, pool_qn, pool_qx


def roll_rows(order: Ints, key: Ints, t: Ints, v: Floats, meta: Ints, fs: Floats,
              pools: tuple[Ints, Floats, Ints, Ints], used: Ints, window: int,
              min_periods: int, want: Ints, deques: bool, out: Floats
              ) -> tuple[Ints, Floats, Ints, Ints]:
    """Take rows ``order`` (by key, then time and arrival) into their keys' windows.

    Row ``order[i]`` goes into its key's ring (after the rows at or before ``t - window``
    left it); ``out[j, i]`` is aggregation ``want[j]`` (:data:`WANT`) of its window
    ``(t - window, t]``. ``meta``, ``fs`` and ``used`` change in place; the pools returned
    replace ``pools`` (reallocated when they ran out of room). ``deques``: keep the min/max
    deques (the deque pools are as long as the others; else empty).
    """
    return _roll(order, key, t, v, meta, fs, *pools, used, window, min_periods, want, deques,
                 out)


def load_rows(key: Ints, t: Ints, v: Floats, meta: Ints, fs: Floats,
              pools: tuple[Ints, Floats, Ints, Ints], used: Ints, window: int,
              deques: bool) -> tuple[Ints, Floats, Ints, Ints]:
    """Put rows (already ordered by key, time, arrival) into the rings, no output (restore)."""
    order = np.arange(len(key), dtype=np.int64)
    return roll_rows(order, key, t, v, meta, fs, pools, used, window, 1,
                     np.zeros(0, dtype=np.int64), deques, np.zeros((0, len(key))))
