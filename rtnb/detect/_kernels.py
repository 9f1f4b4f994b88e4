"""Compiled per-row loops of the detectors (numba): each key's rows in order, its state carried.

Imported on a detector's first batch, not with ``rtnb`` (numba takes ~0.3 s to import).
Each kernel is compiled on its first call in a process (a few seconds, see :func:`warm_up`)
and then read from numba's cache (``__pycache__`` next to this file, else the user's cache
directory); when no cache directory can be written (a read-only install and home), the
kernels are compiled in every process instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["ewma_keys", "mad_window", "warm_up", "zscore_window"]

F = TypeVar("F", bound=Callable[..., Any])
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def _jit(fn: F) -> F:
    """``numba.njit(cache=True, nogil=True)``; without the cache when it cannot be written."""
    try:
        compiled = numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        compiled = numba.njit(nogil=True)(fn)
    return cast(F, compiled)


# -- a sorted multiset in blocks --------------------------------------------------------------
# The window's values, sorted and cut into blocks of at most ``cap`` values (a sorted list of
# sortedcontainers' kind): adding or removing a value shifts the values of one block and
# updates the blocks' cumulative counts, and the i-th smallest value is a binary search over
# those counts away. Block j (in value order) is stored at ``val[order[j] * cap:]``, holds
# ``cum[j + 1] - cum[j]`` values and ends with ``last[j]``; ``meta`` holds the number of
# blocks and of free storage slots (``free[:meta[1]]``). Only the sole block of an empty
# multiset is ever empty. The binary searches choose with a conditional move (no branch on
# the data, which random values would mispredict), and the loops that shift values index
# with ``_u`` (unsigned: no test for negative indices, so the loops are vectorised).

_u = np.uint64


@_jit
def _lower(a: Floats, lo: int, n: int, v: float) -> int:
    """``lo + bisect.bisect_left(a[lo:lo + n], v)``."""
    if n <= 0:
        return lo
    while n > 1:
        half = n >> 1
        lo = lo + half if a[lo + half] < v else lo
        n -= half
    return lo + 1 if a[lo] < v else lo


@_jit
def _upper(a: Floats, lo: int, n: int, v: float) -> int:
    """``lo + bisect.bisect_right(a[lo:lo + n], v)``."""
    if n <= 0:
        return lo
    while n > 1:
        half = n >> 1
        lo = lo if v < a[lo + half] else lo + half
        n -= half
    return lo if v < a[lo] else lo + 1


@_jit
def _block_of(cum: Ints, nb: int, i: int) -> int:
    """The block holding the ``i``-th smallest value: the last j < nb with ``cum[j] <= i``."""
    lo, n = 1, nb - 1
    if n > 0:
        while n > 1:
            half = n >> 1
            lo = lo if i < cum[lo + half] else lo + half
            n -= half
        lo = lo if i < cum[lo] else lo + 1
    return lo - 1


@_jit
def _at(val: Floats, order: Ints, cum: Ints, nb: int, cap: int, i: int) -> float:
    """The ``i``-th smallest value (0-based)."""
    j = _block_of(cum, nb, i)
    return val[order[j] * cap + i - cum[j]]  # type: ignore[no-any-return]


@_jit
def _pair(val: Floats, order: Ints, cum: Ints, nb: int, cap: int, n: int,
          i: int) -> tuple[float, float]:
    """The ``i``-th and ``i + 1``-th smallest values, -inf and inf outside ``0 .. n - 1``."""
    if i < 0:
        return -np.inf, _at(val, order, cum, nb, cap, 0) if n else np.inf
    j = _block_of(cum, nb, i)
    b = order[j] * cap - cum[j]
    if i + 1 >= n:
        return val[b + i], np.inf
    if i + 1 < cum[j + 1]:
        return val[b + i], val[b + i + 1]
    return val[b + i], val[order[j + 1] * cap]


@_jit
def _rank(val: Floats, order: Ints, cum: Ints, last: Floats, nb: int, cap: int,
          v: float) -> int:
    """``bisect.bisect_left(sorted values, v)``: how many values are < v."""
    j = _lower(last, 0, nb - 1, v)  # the first block whose last value is >= v, or the last
    base = order[j] * cap
    return cum[j] + _lower(val, base, cum[j + 1] - cum[j], v) - base  # type: ignore[no-any-return]


@_jit
def _insert(val: Floats, order: Ints, cum: Ints, last: Floats, free: Ints, meta: Ints,
            cap: int, v: float) -> None:
    """Add ``v`` after the values equal to it (``bisect.insort``); a full block is halved."""
    nb = meta[0]
    j = _upper(last, 0, nb - 1, v)  # the first block whose last value is > v, or the last
    base = order[j] * cap
    c = cum[j + 1] - cum[j]
    at = _upper(val, base, c, v)
    for q in range(base + c, at, -1):
        val[_u(q)] = val[_u(q - 1)]
    val[at] = v
    if at == base + c:
        last[j] = v
    for q in range(j + 1, nb + 1):
        cum[_u(q)] += 1
    if c + 1 == cap:  # full: its upper half moves to a new block right after it
        half = cap >> 1
        meta[1] -= 1
        new = free[meta[1]] * cap
        for q in range(cap - half):
            val[_u(new + q)] = val[_u(base + half + q)]
        for q in range(nb, j + 1, -1):
            order[q] = order[q - 1]
            last[q] = last[q - 1]
        for q in range(nb, j, -1):
            cum[q + 1] = cum[q]
        order[j + 1] = free[meta[1]]
        last[j + 1] = last[j]
        last[j] = val[base + half - 1]
        cum[j + 1] = cum[j] + half
        meta[0] = nb + 1


@_jit
def _remove(val: Floats, order: Ints, cum: Ints, last: Floats, free: Ints, meta: Ints,
            cap: int, v: float) -> None:
    """Remove one value equal to ``v`` (which is there); an emptied block is dropped."""
    nb = meta[0]
    j = _lower(last, 0, nb - 1, v)  # the first block whose last value is >= v, or the last
    b = order[j]
    base = b * cap
    c = cum[j + 1] - cum[j]
    at = _lower(val, base, c, v)
    for q in range(at, base + c - 1):
        val[_u(q)] = val[_u(q + 1)]
    if at == base + c - 1 and c > 1:
        last[j] = val[at - 1]
    for q in range(j + 1, nb + 1):
        cum[_u(q)] -= 1
    if c == 1 and nb > 1:  # emptied: dropped
        free[meta[1]] = b
        meta[1] += 1
        for q in range(j, nb - 1):
            order[q] = order[q + 1]
            last[q] = last[q + 1]
            cum[q + 1] = cum[q + 2]
        meta[0] = nb - 1


# -- MAD ---------------------------------------------------------------------------------------
@_jit
def _mad_window(ht: Ints, hx: Floats, hs: Floats, t: Ints, x: Floats, w: int,
                min_periods: int, limit: float, protect: bool,
                out: Floats) -> tuple[Ints, Floats, Floats]:
    m = t.shape[0]
    n_old = ht.shape[0]
    # the rows the windows can hold, in arrival order: the state's, then the kept new rows
    ct = np.empty(n_old + m, dtype=np.int64)
    cx = np.empty(n_old + m, dtype=np.float64)
    ct[:n_old] = ht
    cx[:n_old] = hx
    # the window's values (missing ones left out), in blocks of at most cap ~ 2 sqrt(n)
    # values: shifting within a block and updating the counts of the blocks then cost
    # about the same
    n = hs.shape[0]
    cap = 32
    while cap < 4096 and cap * cap < 4 * (n + m):
        cap *= 2
    fill = cap >> 1
    nb = max(1, (n + fill - 1) // fill)
    phys = nb + 2 * m // cap + 1  # a block splits once cap / 2 values went into it
    floats = np.empty(phys * cap + phys, dtype=np.float64)
    val, last = floats[:phys * cap], floats[phys * cap:]
    ints = np.zeros(3 * phys + 3, dtype=np.int64)
    order, cum = ints[:phys], ints[phys:2 * phys + 1]
    free, meta = ints[2 * phys + 1:3 * phys + 1], ints[3 * phys + 1:]
    for j in range(phys):
        order[j] = j
    for j in range(phys - nb):
        free[j] = phys - 1 - j
    meta[0], meta[1] = nb, phys - nb
    for j in range(nb):
        c = min(fill, n - j * fill)
        val[j * cap:j * cap + c] = hs[j * fill:j * fill + c]
        cum[j + 1] = cum[j] + c
        if c:
            last[j] = hs[j * fill + c - 1]
    lo, hi = 0, n_old  # the window is ct[lo:hi]
    a = 0  # the previous row's split (deviations taken from below the median)
    inf = np.inf
    for i in range(m):
        ti = t[i]
        xi = x[i]
        cut = ti - w
        while lo < hi and ct[lo] < cut:  # rows that left the window
            v = cx[lo]
            if v == v:
                _remove(val, order, cum, last, free, meta, cap, v)
                n -= 1
            lo += 1
        score = np.nan
        if n >= min_periods:
            nb = meta[0]
            h = n >> 1
            if n & 1:
                med = _at(val, order, cum, nb, cap, h)
                k = h + 1
            else:
                s0, s1 = _pair(val, order, cum, nb, cap, n, h - 1)
                med = (s0 + s1) / 2
                k = h
            # with s the sorted values and p = bisect_left(s, med), the k smallest
            # deviations |v - med| are those of the a nearest values below the median
            # (s[p - a:p]) and of the k - a nearest from it up (s[p:p + k - a]); a is the
            # least split in [la, ha] with s[p + k - a - 1] - med <= med - s[p - 1 - a]
            # (up(a) below). It rarely moves by more than one from row to row: walk from
            # the previous row's split, bisect if two steps are not enough. At a split g,
            # b0, b1 = s[p - 1 - g], s[p - g] and u0, u1 = s[p + k - g - 1], s[p + k - g].
            p = _rank(val, order, cum, last, nb, cap, med)
            la = max(0, k - n + p)
            ha = min(k, p)
            g = la if a < la else ha if a > ha else a
            found = False
            b0 = b1 = u0 = u1 = 0.0
            for _ in range(2):
                b0, b1 = _pair(val, order, cum, nb, cap, n, p - 1 - g)
                u0, u1 = _pair(val, order, cum, nb, cap, n, p + k - g - 1)
                if g < ha and u0 - med > med - b0:  # up(g): a > g
                    la = g = g + 1
                elif g > la and not u1 - med > med - b1:  # not up(g - 1): a < g
                    ha = g = g - 1
                else:
                    found = True
                    break
            if not found:
                while la < ha:
                    mid = (la + ha) >> 1
                    if (_at(val, order, cum, nb, cap, p + k - mid - 1) - med >
                            med - _at(val, order, cum, nb, cap, p - 1 - mid)):
                        la = mid + 1
                    else:
                        ha = mid
                g = la
                b0, b1 = _pair(val, order, cum, nb, cap, n, p - 1 - g)
                u0, u1 = _pair(val, order, cum, nb, cap, n, p + k - g - 1)
            a = g
            mad = med - b1 if a else -inf  # the k-th smallest deviation
            if k > a and u0 - med > mad:
                mad = u0 - med
            if not n & 1:  # average with the (k + 1)-th: the nearer next value
                nxt = med - b0 if a < p else inf
                if k - a < n - p and u1 - med < nxt:
                    nxt = u1 - med
                mad = (mad + nxt) / 2
            dev = abs(xi - med)
            scale = 1.4826 * mad
            if scale:
                score = dev / scale
            elif dev > 0:
                score = inf
        out[i] = score
        if not (protect and score > limit):  # protect: anomalous rows are not learned
            ct[hi] = ti
            cx[hi] = xi
            hi += 1
            if xi == xi:
                _insert(val, order, cum, last, free, meta, cap, xi)
                n += 1
    s = np.empty(n, dtype=np.float64)
    for j in range(meta[0]):
        b = order[j] * cap
        s[cum[j]:cum[j + 1]] = val[b:b + cum[j + 1] - cum[j]]
    return ct[lo:hi], cx[lo:hi], s


def mad_window(ht: Ints, hx: Floats, hs: Floats, t: Ints, x: Floats, w: int,
               min_periods: int, limit: float, protect: bool,
               out: Floats) -> tuple[Ints, Floats, Floats]:
    """Score one key's rows ``(t, x)`` into ``out`` as :class:`~rtnb.detect.MAD`; new state.

    The state is the rows the next window can hold, in arrival order (times ``ht``, values
    ``hx``), and their values less the missing ones, sorted (``hs``). It is read, never
    changed: the new state is new arrays (the old ones may be held by a checkpoint or by
    ``score``). Per row: rows older than ``t - w`` leave the window, the median is read off,
    the MAD is the middle of the two sorted runs of deviations below and above the median,
    then the row is learned, unless ``protect`` and its score is above ``limit``. Times are
    int64 ns, values float64, arrays C-contiguous.
    """
    new: tuple[Ints, Floats, Floats] = _mad_window(ht, hx, hs, t, x, w, min_periods, limit,
                                                   protect, out)
    return new


# -- EWMA --------------------------------------------------------------------------------------
@_jit
def _ewma_keys(x: Floats, order: Ints, starts: Ints, counts: Ints, state: Floats, a: float,
               min_periods: int, limit: float, protect: bool, out: Floats) -> None:
    c = 1.0 - a
    for j in range(starts.shape[0]):
        mean, var, n = state[j, 0], state[j, 1], np.int64(state[j, 2])
        for q in range(starts[j], starts[j] + counts[j]):
            r = order[q]
            xi = x[r]
            score = np.nan
            if xi == xi:  # a missing value is neither scored nor learned
                if n >= min_periods and var > 0:
                    score = (xi - mean) / np.sqrt(var)
                if not (protect and abs(score) > limit):  # protect: anomalies not learned
                    if n == 0:
                        mean, var = xi, 0.0
                    else:
                        d = xi - mean
                        mean += a * d
                        var = c * (var + a * d * d)
                    n += 1
            out[r] = score
        state[j, 0], state[j, 1], state[j, 2] = mean, var, n


def ewma_keys(x: Floats, order: Ints, starts: Ints, counts: Ints, state: Floats, a: float,
              min_periods: int, limit: float, protect: bool, out: Floats) -> None:
    """Score a batch's rows as :class:`~rtnb.detect.EWMA`, key by key; update ``state``.

    Key ``j``'s rows are ``x[order[starts[j]:starts[j] + counts[j]]]``, in arrival order, and
    its state before them is ``state[j] = (mean, var, n)`` (``n`` rows learned; 0: a new key,
    whose first value seeds the mean), changed in place to the state after them. Per row:
    the score ``(x - mean) / sqrt(var)`` once ``n >= min_periods`` and ``var > 0``, else
    ``NaN``, into ``out`` at the row's position; then, unless ``protect`` and
    ``|score| > limit``, ``mean += a d`` and ``var = (1 - a) (var + a d^2)`` with
    ``d = x - mean``. Missing values score ``NaN`` and are not learned. Arrays C-contiguous.
    """
    _ewma_keys(x, order, starts, counts, state, a, min_periods, limit, protect, out)


# -- ZScore ------------------------------------------------------------------------------------
@_jit
def _zscore_window(ht: Ints, hx: Floats, t: Ints, x: Floats, w: int, min_periods: int,
                   limit: float, protect: bool, out: Floats) -> tuple[Ints, Floats]:
    m = t.shape[0]
    n_old = ht.shape[0]
    # the rows the windows can hold, in arrival order: the state's, then the learned new rows,
    # with running sums of the valid values (less ``ref``) and their squares, and counts:
    # the window ct[lo:hi] has cnt[hi] - cnt[lo] values summing to s1[hi] - s1[lo]
    ct = np.empty(n_old + m, dtype=np.int64)
    cx = np.empty(n_old + m, dtype=np.float64)
    s1 = np.zeros(n_old + m + 1, dtype=np.float64)
    s2 = np.zeros(n_old + m + 1, dtype=np.float64)
    cnt = np.zeros(n_old + m + 1, dtype=np.int64)
    ct[:n_old] = ht
    cx[:n_old] = hx
    ref = np.nan  # the first value: sums of deviations from it lose less to rounding
    for v in hx:
        if v == v:
            ref = v
            break
    if ref != ref:
        for v in x:
            if v == v:
                ref = v
                break
    for q in range(n_old):
        v = hx[q]
        d = v - ref if v == v else 0.0
        s1[q + 1] = s1[q] + d
        s2[q + 1] = s2[q] + d * d
        cnt[q + 1] = cnt[q] + (v == v)
    lo, hi = 0, n_old
    inf = np.inf
    for i in range(m):
        ti = t[i]
        xi = x[i]
        cut = ti - w
        while lo < hi and ct[lo] < cut:  # rows that left the window
            lo += 1
        score = np.nan
        c = cnt[hi] - cnt[lo]
        if c >= min_periods:
            n = np.float64(c)
            mean = (s1[hi] - s1[lo]) / n
            var = ((s2[hi] - s2[lo]) - n * mean * mean) / (n - 1)
            std = np.sqrt(var) if var > 0 else 0.0
            dev = xi - ref - mean
            if std > 0:
                score = dev / std
            elif dev > 0:
                score = inf
            elif dev < 0:
                score = -inf
        out[i] = score
        if not (protect and abs(score) > limit):  # protect: anomalous rows are not learned
            ct[hi] = ti
            cx[hi] = xi
            d = xi - ref if xi == xi else 0.0
            s1[hi + 1] = s1[hi] + d
            s2[hi + 1] = s2[hi] + d * d
            cnt[hi + 1] = cnt[hi] + (xi == xi)
            hi += 1
    return ct[lo:hi], cx[lo:hi]


def zscore_window(ht: Ints, hx: Floats, t: Ints, x: Floats, w: int, min_periods: int,
                  limit: float, protect: bool, out: Floats) -> tuple[Ints, Floats]:
    """Score one key's rows ``(t, x)`` into ``out`` as :class:`~rtnb.detect.ZScore`; new state.

    The state is the rows the next window can hold, in arrival order (times ``ht``, values
    ``hx``); it is read, never changed. Per row: rows older than ``t - w`` leave the window,
    the mean and sample standard deviation of its valid values are read off running sums
    (of deviations from the first valid value, as the vectorised path computes them, with
    the same results), then the row is learned, unless ``protect`` and its score is above
    ``limit``. Times are int64 ns, values float64, arrays C-contiguous.
    """
    new: tuple[Ints, Floats] = _zscore_window(ht, hx, t, x, w, min_periods, limit, protect,
                                              out)
    return new


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel on a tiny input; return seconds."""
    import time

    started = time.perf_counter()
    t = np.arange(4, dtype=np.int64)
    x = np.array([1.0, 2.0, np.nan, 4.0])
    empty = np.zeros(0)
    mad_window(np.zeros(0, dtype=np.int64), empty, empty, t, x, 2, 1, 3.5, True, np.empty(4))
    state = np.array([[np.nan, 0.0, 0.0]])
    ewma_keys(x, t, np.zeros(1, dtype=np.int64), np.array([4]), state, 0.5, 1, 3.0, True,
              np.empty(4))
    zscore_window(np.zeros(0, dtype=np.int64), empty, t, x, 2, 2, 3.0, True, np.empty(4))
    return time.perf_counter() - started
