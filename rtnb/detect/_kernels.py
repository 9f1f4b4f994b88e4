"""Compiled per-row loops of the detectors (numba): a batch's rows, all keys in one call.

The rows are taken in arrival order, each reading and changing its key slot's state in place.

Imported on a detector's first batch, not with ``rtnb`` (numba takes ~0.3 s to import).
Each kernel is compiled on its first call in a process (a few seconds, see :func:`warm_up`)
and then read from numba's cache (``__pycache__`` next to this file, else the user's cache
directory); when no cache directory can be written (a read-only install and home), the
kernels are compiled in every process instead.

State layout (per key *slot*, a dense index the detector gives each key code):

- EWMA: ``state[slot] = (mean, var, n)``.
- RateOfChange: ``last_t[slot]``, ``last_x[slot]``: the key's previous learned row.
- ZScore, MAD, RollingQuantile (:func:`window_rows`): the key's learned values still in the
  window, with their times, in a ring buffer of ``meta[slot, CAP]`` rows (a power of two) at
  ``meta[slot, OFF]`` of the pools ``pool_t`` / ``pool_x``, oldest at ``meta[slot, HEAD]``,
  ``meta[slot, CNT]`` of them. MAD and RollingQuantile also keep the same values sorted in
  ``pool_s[OFF:OFF + CNT]``. A full ring moves to a region twice its size at the end of the
  pools; when the pools are full they are reallocated (doubling) with the live regions packed.
  ZScore keeps per slot ``fm[slot] = (ref, s1, s2)``: sums of ``v - ref`` and its square over
  the window, rebuilt from the ring (``ref`` = its oldest value) once as many values have
  left the window as it holds, so rounding never accumulates over more than two windows'
  adds and removes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["AUX", "CAP", "CNT", "HEAD", "KERNELS", "OFF", "ewma_rows", "rate_rows",
           "warm_up", "window_rows"]

F = TypeVar("F", bound=Callable[..., Any])
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

#: Columns of the windowed detectors' ``meta[slot]``: region offset, capacity, oldest row,
#: row count, and (ZScore) values removed since the sums were rebuilt / (MAD) the last split.
OFF, CAP, HEAD, CNT, AUX = 0, 1, 2, 3, 4
ZSCORE, MAD, QUANTILE = 0, 1, 2  # window_rows' kinds


def _jit(fn: F) -> F:
    """``numba.njit(cache=True, nogil=True, error_model="numpy")``, or without the cache.

    ``error_model="numpy"``: x / 0 is inf or NaN as in numpy, no ZeroDivisionError; the
    cache is left out when it cannot be written.
    """
    try:
        compiled = numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        compiled = numba.njit(nogil=True, error_model="numpy")(fn)
    return cast(F, compiled)


# -- EWMA --------------------------------------------------------------------------------------
@_jit
def _ewma_rows(slots: Ints, x: Floats, state: Floats, a: float, min_periods: int,
               limit: float, protect: bool, out: Floats, flags: Bools) -> None:
    c = 1.0 - a
    for r in range(x.shape[0]):
        k = slots[r]
        xi = x[r]
        score = np.nan
        if xi == xi:  # a missing value is neither scored nor learned
            mean, var, n = state[k, 0], state[k, 1], state[k, 2]
            if n >= min_periods and var > 0:
                score = (xi - mean) / np.sqrt(var)
            if not (protect and abs(score) > limit):  # protect: anomalies not learned
                if n == 0:
                    state[k, 0], state[k, 1] = xi, 0.0
                else:
                    d = xi - mean
                    state[k, 0] = mean + a * d
                    state[k, 1] = c * (var + a * d * d)
                state[k, 2] = n + 1
        out[r] = score
        flags[r] = abs(score) > limit


def ewma_rows(slots: Ints, x: Floats, state: Floats, a: float, min_periods: int,
              limit: float, protect: bool, out: Floats, flags: Bools) -> None:
    """Score a batch's rows as :class:`~rtnb.detect.EWMA` into ``out``; update ``state``.

    Row ``r`` belongs to key slot ``slots[r]``, whose state is ``state[slot] = (mean, var,
    n)`` (``n`` values learned; 0: its first value seeds the mean), changed in place. Per
    row: the score ``(x - mean) / sqrt(var)`` once ``n >= min_periods`` and ``var > 0``, else
    ``NaN``; ``flags`` is ``|score| > limit``; then, unless ``protect`` and the row is
    flagged, ``mean += a d`` and ``var = (1 - a) (var + a d^2)`` with ``d = x - mean``.
    Missing values score ``NaN`` and are not learned.
    """
    _ewma_rows(slots, x, state, a, min_periods, limit, protect, out, flags)


# -- RateOfChange ------------------------------------------------------------------------------
@_jit
def _rate_rows(slots: Ints, t: Ints, x: Floats, last_t: Ints, last_x: Floats, per: float,
               limit: float, protect: bool, out: Floats, flags: Bools) -> None:
    for r in range(x.shape[0]):
        k = slots[r]
        ti, xi = t[r], x[r]
        lt = last_t[k]
        score = np.nan
        if ti != lt:
            score = (xi - last_x[k]) / np.float64(ti - lt) * per
        out[r] = score
        flag = abs(score) > limit
        flags[r] = flag
        if not (protect and flag):  # protect: an anomalous row is not the next one's previous
            last_t[k] = ti
            last_x[k] = xi


def rate_rows(slots: Ints, t: Ints, x: Floats, last_t: Ints, last_x: Floats, per: float,
              limit: float, protect: bool, out: Floats, flags: Bools) -> None:
    """Score a batch's rows as :class:`~rtnb.detect.RateOfChange`; update the last rows.

    Per row: ``(x - last_x) / (t - last_t) * per`` against its slot's previous learned row
    (``NaN`` when the times are equal or the key has none: ``last_x`` NaN); ``flags`` is
    ``|score| > limit``; the row becomes the previous one unless ``protect`` and flagged.
    """
    _rate_rows(slots, t, x, last_t, last_x, per, limit, protect, out, flags)


# -- windows: per-slot rings in shared pools ---------------------------------------------------
@_jit
def _pack(meta: Ints, pool_t: Ints, pool_x: Floats, pool_s: Floats, used: Ints, slot: int,
          new_cap: int, sorted_: bool) -> tuple[Ints, Floats, Floats]:
    """Give ``slot`` a ring of ``new_cap`` rows at the end of the pools.

    When their free tail is too short, the pools are reallocated with the live regions
    packed (rings unrolled).
    """
    if used[0] + new_cap <= pool_t.shape[0]:  # room at the end: move this slot only
        nt, nx, ns = pool_t, pool_x, pool_s
        base = used[0]
        first, last = slot, slot + 1
    else:
        live = new_cap
        for k in range(meta.shape[0]):
            if k != slot:
                live += meta[k, CAP]
        size = max(2 * live, 1024)
        nt = np.empty(size, dtype=np.int64)
        nx = np.empty(size, dtype=np.float64)
        ns = np.empty(size if sorted_ else 0, dtype=np.float64)
        base = 0
        first, last = 0, meta.shape[0]
    for k in range(first, last):
        cap = new_cap if k == slot else meta[k, CAP]
        if cap == 0:
            continue
        off, old, head, cnt = meta[k, OFF], meta[k, CAP], meta[k, HEAD], meta[k, CNT]
        for i in range(cnt):
            q = off + ((head + i) & (old - 1))
            nt[base + i] = pool_t[q]
            nx[base + i] = pool_x[q]
        if sorted_:
            for i in range(cnt):
                ns[base + i] = pool_s[off + i]
        meta[k, OFF], meta[k, CAP], meta[k, HEAD] = base, cap, 0
        base += cap
    used[0] = base
    return nt, nx, ns


@_jit
def _lower(s: Floats, lo: int, hi: int, v: float) -> int:
    """The first position in ``s[lo:hi]`` (sorted) whose value is not < ``v``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if s[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _upper(s: Floats, lo: int, hi: int, v: float) -> int:
    """The first position in ``s[lo:hi]`` (sorted) whose value is > ``v``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if v < s[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@_jit
def _pair(s: Floats, off: int, n: int, i: int) -> tuple[float, float]:
    """The ``i``-th and ``i + 1``-th smallest values, -inf and inf outside ``0 .. n - 1``."""
    if i < 0:
        return -np.inf, s[off] if n else np.inf
    if i + 1 >= n:
        return s[off + i], np.inf
    return s[off + i], s[off + i + 1]


@_jit
def _mad_score(s: Floats, off: int, n: int, a: int, xi: float) -> tuple[float, int]:
    """``|x - median| / (1.4826 MAD)`` of the sorted ``s[off:off + n]``; the new split."""
    h = n >> 1
    if n & 1:
        med = s[off + h]
        k = h + 1
    else:
        med = (s[off + h - 1] + s[off + h]) / 2
        k = h
    # with p = bisect_left(s, med), the k smallest deviations |v - med| are those of the a
    # nearest values below the median (s[p - a:p]) and of the k - a nearest from it up
    # (s[p:p + k - a]); a is the least split in [la, ha] with s[p + k - a - 1] - med <=
    # med - s[p - 1 - a] (up(a) below). It rarely moves by more than one from row to row:
    # walk from the previous row's split, bisect if two steps are not enough. At a split g,
    # b0, b1 = s[p - 1 - g], s[p - g] and u0, u1 = s[p + k - g - 1], s[p + k - g].
    p = _lower(s, off, off + n, med) - off
    la = max(0, k - n + p)
    ha = min(k, p)
    g = la if a < la else ha if a > ha else a
    found = False
    b0 = b1 = u0 = u1 = 0.0
    for _ in range(2):
        b0, b1 = _pair(s, off, n, p - 1 - g)
        u0, u1 = _pair(s, off, n, p + k - g - 1)
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
            if s[off + p + k - mid - 1] - med > med - s[off + p - 1 - mid]:
                la = mid + 1
            else:
                ha = mid
        g = la
        b0, b1 = _pair(s, off, n, p - 1 - g)
        u0, u1 = _pair(s, off, n, p + k - g - 1)
    a = g
    inf = np.inf
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
    score = np.nan
    if scale:
        score = dev / scale
    elif dev > 0:
        score = inf
    return score, a


@_jit
def _window_rows(kind: int, slots: Ints, t: Ints, x: Floats, meta: Ints, fm: Floats,
                 pool_t: Ints, pool_x: Floats, pool_s: Floats, used: Ints, w: int,
                 min_periods: int, limit: float, q: float, factor: float, protect: bool,
                 out: Floats, flags: Bools) -> tuple[Ints, Floats, Floats]:
    sorted_ = kind != ZSCORE
    for r in range(x.shape[0]):
        k = slots[r]
        ti = t[r]
        xi = x[r]
        off, cap, head, cnt = meta[k, OFF], meta[k, CAP], meta[k, HEAD], meta[k, CNT]
        mask = cap - 1
        cut = ti - w
        while cnt and pool_t[off + head] < cut:  # values that left the window
            v = pool_x[off + head]
            if sorted_:
                for i in range(_lower(pool_s, off, off + cnt, v), off + cnt - 1):
                    pool_s[i] = pool_s[i + 1]
            else:
                d = v - fm[k, 0]
                fm[k, 1] -= d
                fm[k, 2] -= d * d
                meta[k, AUX] += 1
            head = (head + 1) & mask
            cnt -= 1
        if not sorted_ and meta[k, AUX] and meta[k, AUX] >= cnt:
            # as many values left as the window holds: rebuild the sums from the ring
            ref = pool_x[off + head] if cnt else np.nan
            s1 = s2 = 0.0
            for i in range(cnt):
                d = pool_x[off + ((head + i) & mask)] - ref
                s1 += d
                s2 += d * d
            fm[k, 0], fm[k, 1], fm[k, 2] = ref, s1, s2
            meta[k, AUX] = 0
        score = np.nan
        if cnt >= min_periods and cnt:
            if kind == ZSCORE:
                n = np.float64(cnt)
                mean = fm[k, 1] / n
                var = (fm[k, 2] - n * mean * mean) / (n - 1)
                std = np.sqrt(var) if var > 0 else 0.0
                dev = xi - fm[k, 0] - mean
                if std > 0:
                    score = dev / std
                elif dev > 0:
                    score = np.inf
                elif dev < 0:
                    score = -np.inf
            elif kind == MAD:
                score, a = _mad_score(pool_s, off, cnt, meta[k, AUX], xi)
                meta[k, AUX] = a
            else:  # pandas' rolling quantile, linear interpolation
                if cnt == 1:
                    quant = pool_s[off]
                else:
                    frac = q * (cnt - 1)
                    i = int(frac)
                    if frac == i:
                        quant = pool_s[off + i]
                    else:
                        lo, hi = pool_s[off + i], pool_s[off + i + 1]
                        quant = lo + (hi - lo) * (frac - i)
                score = xi / (factor * quant)
        out[r] = score
        flag = score > limit if kind != ZSCORE else abs(score) > limit
        flags[r] = flag
        if xi == xi and not (protect and flag):  # learned (protect: unless anomalous)
            if cnt == cap:  # full: a ring twice the size
                meta[k, HEAD], meta[k, CNT] = head, cnt
                pool_t, pool_x, pool_s = _pack(meta, pool_t, pool_x, pool_s, used, k,
                                               max(8, 2 * cap), sorted_)
                off, cap, head = meta[k, OFF], meta[k, CAP], 0
                mask = cap - 1
            q_at = off + ((head + cnt) & mask)
            pool_t[q_at] = ti
            pool_x[q_at] = xi
            if sorted_:
                at = _upper(pool_s, off, off + cnt, xi)
                for i in range(off + cnt, at, -1):
                    pool_s[i] = pool_s[i - 1]
                pool_s[at] = xi
            else:
                if cnt == 0:  # a new window: deviations from its first value
                    fm[k, 0], fm[k, 1], fm[k, 2] = xi, 0.0, 0.0
                    meta[k, AUX] = 0
                d = xi - fm[k, 0]
                fm[k, 1] += d
                fm[k, 2] += d * d
            cnt += 1
        meta[k, HEAD], meta[k, CNT] = head, cnt
    return pool_t, pool_x, pool_s


def window_rows(kind: int, slots: Ints, t: Ints, x: Floats, meta: Ints, fm: Floats,
                pool_t: Ints, pool_x: Floats, pool_s: Floats, used: Ints, w: int,
                min_periods: int, limit: float, q: float, factor: float, protect: bool,
                out: Floats, flags: Bools) -> tuple[Ints, Floats, Floats]:
    """Score a batch's rows as ZScore (``kind`` 0), MAD (1) or RollingQuantile (2).

    Per row, in arrival order, in its key slot's state (module docstring): the values
    older than ``t - w`` leave the ring (and the sorted values), the row is scored against
    the window's values (``NaN`` below ``min_periods`` values) into ``out``, ``flags`` is
    ``|score| > limit`` (ZScore) or ``score > limit``, and the row's value is learned unless
    it is missing or ``protect`` and flagged. RollingQuantile's score is
    ``x / (factor * quantile(q))`` (pandas' linear interpolation). Returns the pools (new
    arrays when they had to grow); ``meta``, ``fm`` and ``used`` are changed in place.
    """
    pools: tuple[Ints, Floats, Floats] = _window_rows(
        kind, slots, t, x, meta, fm, pool_t, pool_x, pool_s, used, w, min_periods, limit, q,
        factor, protect, out, flags)
    return pools


#: The compiled kernels (what :func:`warm_up` loads).
KERNELS = (_ewma_rows, _rate_rows, _window_rows)


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel on a tiny input; return seconds."""
    import time

    started = time.perf_counter()
    slots = np.zeros(4, dtype=np.int64)
    t = np.arange(4, dtype=np.int64)
    x = np.array([1.0, 2.0, np.nan, 4.0])
    out, flags = np.empty(4), np.empty(4, dtype=np.bool_)
    ewma_rows(slots, x, np.zeros((1, 3)), 0.5, 1, 3.0, True, out, flags)
    rate_rows(slots, t, x, np.zeros(1, dtype=np.int64), np.full(1, np.nan), 1.0, 3.0, True,
              out, flags)
    for kind in (ZSCORE, MAD, QUANTILE):
        window_rows(kind, slots, t, x, np.zeros((1, 5), dtype=np.int64), np.zeros((1, 3)),
                    np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0 if kind == ZSCORE
                                                                    else 1),
                    np.zeros(1, dtype=np.int64), 2, 1, 3.0, 0.5, 1.0, True, out, flags)
    return time.perf_counter() - started
