"""Compiled per-row loops of the detectors (numba): a batch's rows, all keys in one call.

The rows are taken in arrival order, each reading and changing its key slot's state in place.

Imported on a detector's first batch, not with ``rtnb`` (numba takes ~0.3 s to import).
Each kernel is compiled on its first call in a process (a few seconds, see :func:`warm_up`)
and then read from numba's cache (``__pycache__`` next to this file, else the user's cache
directory); when no cache directory can be written (a read-only install and home), the
kernels are compiled in every process instead.

State layout (per key *slot*, a dense index the detector gives each key code):

- EWMA: ``state[slot] = (mean, var, n)``, ``held[slot]`` (protect's held-out count).
- RateOfChange: ``last_t[slot]``, ``last_x[slot]``: the key's latest learned row;
  ``prev_t[slot]``, ``prev_x[slot]``: its latest learned row of an earlier time.
- ZScore, MAD, RollingQuantile (:func:`window_rows`): the key's learned values still in the
  window, with their times, in a ring buffer of ``meta[slot, CAP]`` rows (a power of two) at
  ``meta[slot, OFF]`` of the pools ``pool_t`` / ``pool_x``, oldest at ``meta[slot, HEAD]``,
  ``meta[slot, CNT]`` of them, of which the last ``meta[slot, PEND]`` (values of the key's
  latest time, duration windows only) are not yet in the statistics. The window is either
  the last ``nrows`` values (evicted by count) or the values of ``[t - w, t)`` (evicted by
  time). A full ring moves to a region twice its size at the end of the pools; when the
  pools are full they are reallocated (doubling) with the live rings packed. ZScore keeps
  per slot ``fm[slot] = (ref, s1, s2)``: sums of ``v - ref`` and its square over the
  window, rebuilt from the ring (``ref`` = its oldest value) once as many values have left
  the window as it holds, so rounding builds up over at most about two windows' adds and
  removes. MAD and RollingQuantile keep the same values sorted, in blocks of about
  ``2 sqrt(n)`` values with each block's sum (a sorted list of sortedcontainers' kind,
  below): a value in or out shifts the values of one block and updates the blocks' counts
  and its sum, and the i-th smallest value is a binary search over those counts; each key's
  blocks live in regions of two more pools (``ps``, ``pi``) and are laid out afresh (O(n),
  amortised over the n rows that used up the spare blocks) when no spare block is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from rtnb._jit import jit

__all__ = ["ABS_FLOOR", "AUX", "BC", "CAP", "CNT", "FI", "FO", "HEAD", "HELD", "KERNELS",
           "LAST", "MAD", "MAD_SIGNED", "META", "NO_TIME", "OFF", "PEND", "PH", "QUANTILE",
           "REL_FLOOR", "ZSCORE", "ewma_rows", "lookup", "rate_rows", "warm_up", "window_rows"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

#: Columns of the windowed detectors' ``meta[slot]``: region offset, capacity, oldest row,
#: row count, and (ZScore) values removed since the sums were rebuilt / (MAD) the last split.
OFF, CAP, HEAD, CNT, AUX = 0, 1, 2, 3, 4
#: More columns for MAD's and RollingQuantile's sorted values (blocks): float and int region
#: offsets, values per block, blocks of room (0: not built).
FO, FI, BC, PH = 5, 6, 7, 8
#: More columns: values at the ring's end not yet in the statistics (they share the key's
#: latest time, which later rows of that same time must not see), the count of rows held
#: out by ``protect`` (+1 each, -1 per normal row), the key's latest learned time
#: (:data:`NO_TIME`: none yet).
PEND, HELD, LAST = 9, 10, 11
#: Columns of ``meta``.
META = 12
NO_TIME = np.iinfo(np.int64).min
ZSCORE, MAD, QUANTILE, MAD_SIGNED = 0, 1, 2, 3  # window_rows' kinds
#: A scale (standard deviation, MAD, quantile) is taken as at least ``REL_FLOOR * |level|``
#: and at least ``ABS_FLOOR``: a departure from a flat history scores large but finite.
REL_FLOOR, ABS_FLOOR = 1e-9, 1e-12


F = TypeVar("F", bound=Callable[..., Any])


def _inline(fn: F) -> F:
    """A helper compiled into each kernel that calls it (numba ``inline="always"``).

    For the helpers that return arrays (views of a key's region of the pools): called as
    functions, each view returned costs reference counting (atomic operations) at every row,
    ~20 % of MAD's time per row at 10,000-row batches; inlined, numba removes it. Nothing of
    its own is compiled or cached: the kernels that call it are (:func:`rtnb._jit.jit`).
    """
    return cast(F, numba.njit(inline="always", nogil=True, error_model="numpy")(fn))


@jit
def _floored(scale: float, level: float) -> float:
    """``max(scale, REL_FLOOR * |level|, ABS_FLOOR)`` (NaN scale: the floor)."""
    least = REL_FLOOR * abs(level)
    if least < ABS_FLOOR:
        least = ABS_FLOOR
    return scale if scale > least else least



@jit
def _lookup(codes: Ints, table: Ints, slots: Ints) -> int:
    n: int = codes.shape[0]
    size = table.shape[0]
    for r in range(n):
        c = codes[r]
        if c < 0 or c >= size:
            return r
        s = table[c]
        if s < 0:
            return r
        slots[r] = s
    return n


def lookup(codes: Ints, table: Ints, slots: Ints) -> int:
    """``slots[r] = table[codes[r]]`` up to the first row whose code has no slot; that row.

    A code has no slot when it is outside ``[0, len(table))`` or its entry is negative;
    returns ``len(codes)`` when every row has one (one compiled pass instead of numpy's
    min, max, take and min on a small batch).
    """
    return int(_lookup(codes, table, slots))


# -- EWMA --------------------------------------------------------------------------------------
@jit
def _ewma_rows(slots: Ints, x: Floats, state: Floats, held: Ints, a: float, min_periods: int,
               limit: float, protect: bool, patience: int, out: Floats,
               flags: Bools) -> None:
    c = 1.0 - a
    for r in range(x.shape[0]):
        k = slots[r]
        xi = x[r]
        score = np.nan
        if xi == xi:  # a missing value is neither scored nor learned
            mean, var, n = state[k, 0], state[k, 1], state[k, 2]
            if n >= min_periods and n > 0:
                score = (xi - mean) / _floored(np.sqrt(var), mean)
            flag = abs(score) > limit
            if not np.isfinite(xi):  # +/-inf: scored (inf), never learned
                pass
            elif protect and flag and held[k] < patience:  # protect: held out, for a while
                held[k] += 1
            else:
                if not flag and held[k] > 0:  # a normal row counts down
                    held[k] -= 1
                if n == 0:
                    state[k, 0], state[k, 1] = xi, 0.0
                else:
                    d = xi - mean
                    state[k, 0] = mean + a * d
                    state[k, 1] = c * (var + a * d * d)
                state[k, 2] = n + 1
        out[r] = score
        flags[r] = abs(score) > limit


def ewma_rows(slots: Ints, x: Floats, state: Floats, held: Ints, a: float, min_periods: int,
              limit: float, protect: bool, patience: int, out: Floats,
              flags: Bools) -> None:
    """Score a batch's rows as :class:`~rtnb.detect.EWMA` into ``out``; update ``state``.

    Row ``r`` belongs to key slot ``slots[r]``, whose state is ``state[slot] = (mean, var,
    n)`` (``n`` values learned; 0: its first value seeds the mean), changed in place. Per
    row: the score ``(x - mean) / max(sqrt(var), floor)`` once ``n >= min_periods`` (and
    ``n >= 1``), else ``NaN`` (the floor: :func:`_floored` of the mean); ``flags`` is
    ``|score| > limit``; then ``mean += a d`` and ``var = (1 - a) (var + a d^2)`` with
    ``d = x - mean``, unless ``protect``, the row is flagged and its key's count of
    held-out rows (``held[slot]``: +1 per held-out row, -1 per row not flagged, never below
    0) is below ``patience``.
    Missing values score ``NaN`` and are not learned.
    """
    _ewma_rows(slots, x, state, held, a, min_periods, limit, protect, patience, out, flags)


# -- RateOfChange ------------------------------------------------------------------------------
@jit
def _rate_rows(slots: Ints, t: Ints, x: Floats, last_t: Ints, last_x: Floats, prev_t: Ints,
               prev_x: Floats, per: float, limit: float, protect: bool, out: Floats,
               flags: Bools, counters: Ints) -> None:
    for r in range(x.shape[0]):
        k = slots[r]
        ti, xi = t[r], x[r]
        lt = last_t[k]
        score = np.nan
        if ti < lt and last_x[k] == last_x[k]:  # before the key's latest row: not used
            counters[0] += 1
            out[r] = score
            flags[r] = False
            continue
        if xi == xi:
            if ti > lt:
                score = (xi - last_x[k]) / np.float64(ti - lt) * per
            else:  # the latest row's time again: against the row before that time
                score = (xi - prev_x[k]) / np.float64(ti - prev_t[k]) * per
        out[r] = score
        flag = abs(score) > limit
        flags[r] = flag
        if np.isfinite(xi) and not (protect and flag):  # protect: not the next's previous;
            # +/-inf: scored, never a previous row
            if ti > lt:
                prev_t[k] = lt
                prev_x[k] = last_x[k]
            last_t[k] = ti
            last_x[k] = xi


def rate_rows(slots: Ints, t: Ints, x: Floats, last_t: Ints, last_x: Floats, prev_t: Ints,
              prev_x: Floats, per: float, limit: float, protect: bool, out: Floats,
              flags: Bools, counters: Ints) -> None:
    """Score a batch's rows as :class:`~rtnb.detect.RateOfChange`; update the last rows.

    Per row: ``(x - last_x) / (t - last_t) * per`` against its slot's latest learned row, or,
    when ``t`` equals that row's time, against the latest learned row of an earlier time
    (``prev_t``, ``prev_x``); ``NaN`` when there is none (``NaN`` values) or ``x`` is
    missing. ``flags`` is ``|score| > limit``. A row with a value becomes the latest unless
    ``protect`` and flagged; a missing value is not learned. A row before its key's latest
    row scores ``NaN``, is not learned and is counted in ``counters[0]``.
    """
    _rate_rows(slots, t, x, last_t, last_x, prev_t, prev_x, per, limit, protect, out, flags,
               counters)


# -- windows: per-slot rings in shared pools ---------------------------------------------------
@jit
def _pack(meta: Ints, pool_t: Ints, pool_x: Floats, used: Ints, slot: int,
          new_cap: int) -> tuple[Ints, Floats]:
    """Give ``slot`` a ring of ``new_cap`` rows at the end of the pools.

    When their free tail is too short, the pools are reallocated with the live rings packed
    (and unrolled).
    """
    if used[0] + new_cap <= pool_t.shape[0]:  # room at the end: move this slot only
        nt, nx = pool_t, pool_x
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
        meta[k, OFF], meta[k, CAP], meta[k, HEAD] = base, cap, 0
        base += cap
    used[0] = base
    return nt, nx


# -- a sorted multiset in blocks --------------------------------------------------------------
# The window's values, sorted and cut into blocks of at most ``cap`` values (a sorted list of
# sortedcontainers' kind): adding or removing a value shifts the values of one block and
# updates the blocks' cumulative counts, and the i-th smallest value is a binary search over
# those counts away. Block j (in value order) is stored at ``val[order[j] * cap:]``, holds
# ``cum[j + 1] - cum[j]`` values and ends with ``last[j]``; ``meta`` holds the number of
# blocks and of free storage slots (``free[:meta[1]]``). Only the sole block of an empty
# multiset is ever empty. The binary searches choose with a conditional move (no branch on
# the data, which random values would mispredict), and the loops that shift values index
# with ``_u`` (unsigned: no test for negative indices, so the loops are vectorised). The
# helpers read and write a key's arrays in the pools themselves, at the offsets ``Bases``
# (:func:`_bases`): views of the pools would cost reference counting at every call.

_u = np.uint64
#: Offsets in the pools of a key's ``val``, ``last``, ``bsum`` (float pool), ``order``, ``cum``,
#: ``free`` and its (block count, free count) (int pool).
Bases = tuple[int, int, int, int, int, int, int]


@jit
def _blower(a: Floats, lo: int, n: int, v: float) -> int:
    """``lo + bisect.bisect_left(a[lo:lo + n], v)``."""
    if n <= 0:
        return lo
    while n > 1:
        half = n >> 1
        lo = lo + half if a[lo + half] < v else lo
        n -= half
    return lo + 1 if a[lo] < v else lo


@jit
def _bupper(a: Floats, lo: int, n: int, v: float) -> int:
    """``lo + bisect.bisect_right(a[lo:lo + n], v)``."""
    if n <= 0:
        return lo
    while n > 1:
        half = n >> 1
        lo = lo if v < a[lo + half] else lo + half
        n -= half
    return lo if v < a[lo] else lo + 1


@jit
def _block_of(pi: Ints, c0: int, nb: int, i: int) -> int:
    """The block holding the ``i``-th value: the last j < nb with ``pi[c0 + j] <= i`` (cum)."""
    lo, n = 1, nb - 1
    if n > 0:
        while n > 1:
            half = n >> 1
            lo = lo if i < pi[c0 + lo + half] else lo + half
            n -= half
        lo = lo if i < pi[c0 + lo] else lo + 1
    return lo - 1


@jit
def _at(ps: Floats, pi: Ints, b: Bases, cap: int, nb: int, i: int) -> float:
    """The ``i``-th smallest value (0-based)."""
    v0, _, _, o0, c0, _, _ = b
    j = _block_of(pi, c0, nb, i)
    return ps[v0 + pi[o0 + j] * cap + i - pi[c0 + j]]  # type: ignore[no-any-return]


@jit
def _pair(ps: Floats, pi: Ints, b: Bases, cap: int, nb: int, n: int,
          i: int) -> tuple[float, float]:
    """The ``i``-th and ``i + 1``-th smallest values, -inf and inf outside ``0 .. n - 1``."""
    if i < 0:
        return -np.inf, _at(ps, pi, b, cap, nb, 0) if n else np.inf
    v0, _, _, o0, c0, _, _ = b
    j = _block_of(pi, c0, nb, i)
    at = v0 + pi[o0 + j] * cap - pi[c0 + j] + i
    if i + 1 >= n:
        return ps[at], np.inf
    if i + 1 < pi[c0 + j + 1]:
        return ps[at], ps[at + 1]
    return ps[at], ps[v0 + pi[o0 + j + 1] * cap]


@jit
def _rank(ps: Floats, pi: Ints, b: Bases, cap: int, nb: int, v: float) -> int:
    """``bisect.bisect_left(sorted values, v)``: how many values are < v."""
    v0, l0, _, o0, c0, _, _ = b
    j = _blower(ps, l0, nb - 1, v) - l0  # the first block whose last value is >= v, or the last
    base = v0 + pi[o0 + j] * cap
    return pi[c0 + j] + _blower(ps, base, pi[c0 + j + 1] - pi[c0 + j], v) - base  # type: ignore[no-any-return]


@jit
def _insert(ps: Floats, pi: Ints, b: Bases, cap: int, v: float) -> None:
    """Add ``v`` after the values equal to it (``bisect.insort``); a full block is halved."""
    v0, l0, s0, o0, c0, f0, n0 = b
    nb = pi[n0]
    j = _bupper(ps, l0, nb - 1, v) - l0  # the first block whose last value is > v, or the last
    base = v0 + pi[o0 + j] * cap
    c = pi[c0 + j + 1] - pi[c0 + j]
    at = _bupper(ps, base, c, v)
    for q in range(base + c, at, -1):
        ps[_u(q)] = ps[_u(q - 1)]
    ps[at] = v
    ps[s0 + j] += v
    if at == base + c:
        ps[l0 + j] = v
    for q in range(c0 + j + 1, c0 + nb + 1):
        pi[_u(q)] += 1
    if c + 1 == cap:  # full: its upper half moves to a new block right after it
        half = cap >> 1
        pi[n0 + 1] -= 1
        spare = pi[f0 + pi[n0 + 1]]
        new = v0 + spare * cap
        moved = 0.0
        for q in range(cap - half):
            ps[_u(new + q)] = ps[_u(base + half + q)]
            moved += ps[_u(base + half + q)]
        kept = 0.0
        for q in range(half):
            kept += ps[_u(base + q)]
        for q in range(nb, j + 1, -1):
            pi[o0 + q] = pi[o0 + q - 1]
            ps[l0 + q] = ps[l0 + q - 1]
            ps[s0 + q] = ps[s0 + q - 1]
        for q in range(nb, j, -1):
            pi[c0 + q + 1] = pi[c0 + q]
        pi[o0 + j + 1] = spare
        ps[l0 + j + 1] = ps[l0 + j]
        ps[s0 + j], ps[s0 + j + 1] = kept, moved  # exact again
        ps[l0 + j] = ps[base + half - 1]
        pi[c0 + j + 1] = pi[c0 + j] + half
        pi[n0] = nb + 1


@jit
def _remove(ps: Floats, pi: Ints, b: Bases, cap: int, v: float) -> None:
    """Remove one value equal to ``v`` (which is there); an emptied block is dropped."""
    v0, l0, s0, o0, c0, f0, n0 = b
    nb = pi[n0]
    j = _blower(ps, l0, nb - 1, v) - l0  # the first block whose last value is >= v, or the last
    blk = pi[o0 + j]
    base = v0 + blk * cap
    c = pi[c0 + j + 1] - pi[c0 + j]
    at = _blower(ps, base, c, v)
    for q in range(at, base + c - 1):
        ps[_u(q)] = ps[_u(q + 1)]
    if at == base + c - 1 and c > 1:
        ps[l0 + j] = ps[at - 1]
    ps[s0 + j] = ps[s0 + j] - v if c > 1 else 0.0
    for q in range(c0 + j + 1, c0 + nb + 1):
        pi[_u(q)] -= 1
    if c == 1 and nb > 1:  # emptied: dropped
        pi[f0 + pi[n0 + 1]] = blk
        pi[n0 + 1] += 1
        for q in range(j, nb - 1):
            pi[o0 + q] = pi[o0 + q + 1]
            ps[l0 + q] = ps[l0 + q + 1]
            ps[s0 + q] = ps[s0 + q + 1]
            pi[c0 + q + 1] = pi[c0 + q + 2]
        pi[n0] = nb - 1


@jit
def _prefix(ps: Floats, pi: Ints, b: Bases, cap: int, nb: int, i: int) -> float:
    """The sum of the ``i`` smallest values (block sums, then part of one block)."""
    v0, _, s0, o0, c0, _, _ = b
    acc = 0.0
    j = 0
    while j < nb and pi[c0 + j + 1] <= i:
        acc += ps[s0 + j]
        j += 1
    if j < nb:
        base = v0 + pi[o0 + j] * cap
        for q in range(i - pi[c0 + j]):
            acc += ps[base + q]
    return acc


# -- a key's sorted values: blocks in regions of two shared pools ------------------------------
# Key slot k's multiset has blocks of meta[k, BC] values and room for meta[k, PH] blocks
# (0: none built yet): ``val``, ``last`` and ``bsum`` (each block's sum) at meta[k, FO] of
# the float pool, ``order``,
# ``cum``, ``free`` and its (block count, free count) at meta[k, FI] of the int pool.

@_inline
def _bases(fo: int, fi: int, bc: int, ph: int) -> Bases:
    """The offsets of one key's multiset (the arrays :func:`_views` returns) in the pools."""
    nv = ph * bc
    return (fo, fo + nv, fo + nv + ph, fi, fi + ph, fi + 2 * ph + 1, fi + 3 * ph + 1)


@_inline
def _views(ps: Floats, pi: Ints, fo: int, fi: int, bc: int,
           ph: int) -> tuple[Floats, Floats, Floats, Ints, Ints, Ints, Ints]:
    """(val, last, bsum, order, cum, free, counts) of one key's multiset."""
    nv = ph * bc
    return (ps[fo:fo + nv], ps[fo + nv:fo + nv + ph], ps[fo + nv + ph:fo + nv + 2 * ph],
            pi[fi:fi + ph],
            pi[fi + ph:fi + 2 * ph + 1], pi[fi + 2 * ph + 1:fi + 3 * ph + 1],
            pi[fi + 3 * ph + 1:fi + 3 * ph + 3])


@jit
def _rebuild(k: int, meta: Ints, pool_x: Floats, ps: Floats, pi: Ints,
             used: Ints) -> tuple[Floats, Ints]:
    """Lay key ``k``'s sorted values out afresh, at the end of the pools.

    The values are the ring's first ``CNT - PEND`` (those in the statistics). The blocks
    are half full, with as many free blocks as used ones plus two; when the pools are full
    they are reallocated with the live regions packed.
    """
    cnt = meta[k, CNT] - meta[k, PEND]
    s = np.empty(cnt, dtype=np.float64)
    bc, ph = meta[k, BC], meta[k, PH]
    if ph == 0:  # none built (a new key, or restored from a snapshot): sort the ring
        off, mask, head = meta[k, OFF], meta[k, CAP] - 1, meta[k, HEAD]
        for i in range(cnt):
            s[i] = pool_x[off + ((head + i) & mask)]
        s.sort()
    else:
        val, _, _, order, cum, _, counts = _views(ps, pi, meta[k, FO], meta[k, FI], bc, ph)
        for j in range(counts[0]):
            b = order[j] * bc
            s[cum[j]:cum[j + 1]] = val[b:b + cum[j + 1] - cum[j]]
    bc = 32  # ~2 sqrt(n): shifting within a block and updating the block counts cost alike
    while bc < 4096 and bc * bc < 4 * (cnt + 1):
        bc *= 2
    fill = bc >> 1
    nb = max(1, (cnt + fill - 1) // fill)
    ph = 2 * nb + 2
    nf, ni = ph * (bc + 2), 3 * ph + 3
    meta[k, PH] = 0  # its old regions are free
    if used[1] + nf > ps.shape[0] or used[2] + ni > pi.shape[0]:
        live_f, live_i = nf, ni
        for j in range(meta.shape[0]):
            if meta[j, PH]:
                live_f += meta[j, PH] * (meta[j, BC] + 2)
                live_i += 3 * meta[j, PH] + 3
        nps = np.empty(max(2 * live_f, 1024), dtype=np.float64)
        npi = np.empty(max(2 * live_i, 1024), dtype=np.int64)
        bf = bi = 0
        for j in range(meta.shape[0]):
            if meta[j, PH]:
                sf, si = meta[j, PH] * (meta[j, BC] + 2), 3 * meta[j, PH] + 3
                nps[bf:bf + sf] = ps[meta[j, FO]:meta[j, FO] + sf]
                npi[bi:bi + si] = pi[meta[j, FI]:meta[j, FI] + si]
                meta[j, FO], meta[j, FI] = bf, bi
                bf += sf
                bi += si
        ps, pi = nps, npi
        used[1], used[2] = bf, bi
    meta[k, FO], meta[k, FI], meta[k, BC], meta[k, PH] = used[1], used[2], bc, ph
    used[1] += nf
    used[2] += ni
    val, last, bsum, order, cum, free, counts = _views(ps, pi, meta[k, FO], meta[k, FI], bc,
                                                       ph)
    cum[:] = 0
    for j in range(ph):
        order[j] = j
    for j in range(ph - nb):
        free[j] = ph - 1 - j
    counts[0], counts[1] = nb, ph - nb
    for j in range(nb):
        c = min(fill, cnt - j * fill)
        val[j * bc:j * bc + c] = s[j * fill:j * fill + c]
        cum[j + 1] = cum[j] + c
        last[j] = s[j * fill + c - 1] if c else 0.0
        acc = 0.0
        for q in range(c):
            acc += s[j * fill + q]
        bsum[j] = acc
    return ps, pi


@jit
def _mad_score(ps: Floats, pi: Ints, b: Bases, cap: int, nb: int, n: int, a: int,
               xi: float) -> tuple[float, int]:
    """``(x - median) / scale`` of the multiset's ``n`` values; the new split.

    The scale is ``1.4826 MAD``; when the MAD is 0 (more than half the values equal the
    median), ``1.2533`` times the mean absolute deviation from the median (Iglewicz and
    Hoaglin); at least the floor (:func:`_floored` of the median).
    """
    h = n >> 1
    s0, s1 = _pair(ps, pi, b, cap, nb, n, h - 1)  # s[h - 1], s[h] (-inf: none)
    if n & 1:
        med = s1
        k = h + 1
    else:
        med = (s0 + s1) / 2
        k = h
    # with s the sorted values and p = bisect_left(s, med), the k smallest deviations
    # |v - med| are those of the a nearest values below the median (s[p - a:p]) and of the
    # k - a nearest from it up (s[p:p + k - a]); a is the least split in [la, ha] with
    # s[p + k - a - 1] - med <= med - s[p - 1 - a] (up(a) below). It rarely moves by more
    # than one from row to row: walk from the previous row's split, bisect if two steps are
    # not enough. At a split g, b0, b1 = s[p - 1 - g], s[p - g] and u0, u1 =
    # s[p + k - g - 1], s[p + k - g].
    # p: how many values are < med; h when s[h - 1] < med <= s[h], else (ties at the
    # median) a binary search
    p = h if s0 < med <= s1 else _rank(ps, pi, b, cap, nb, med)
    la = max(0, k - n + p)
    ha = min(k, p)
    g = la if a < la else ha if a > ha else a
    found = False
    b0 = b1 = u0 = u1 = 0.0
    for _ in range(2):
        b0, b1 = _pair(ps, pi, b, cap, nb, n, p - 1 - g)
        u0, u1 = _pair(ps, pi, b, cap, nb, n, p + k - g - 1)
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
            if (_at(ps, pi, b, cap, nb, p + k - mid - 1) - med >
                    med - _at(ps, pi, b, cap, nb, p - 1 - mid)):
                la = mid + 1
            else:
                ha = mid
        g = la
        b0, b1 = _pair(ps, pi, b, cap, nb, n, p - 1 - g)
        u0, u1 = _pair(ps, pi, b, cap, nb, n, p + k - g - 1)
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
    scale = 1.4826 * mad
    if not scale > 0:  # sum |v - med| = (sum of the h largest) - (sum of the h smallest)
        h = n >> 1
        total = 0.0
        for j in range(nb):
            total += ps[b[2] + j]
        spread = (total - _prefix(ps, pi, b, cap, nb, n - h)
                  - _prefix(ps, pi, b, cap, nb, h))
        scale = 1.2533 * spread / n
    return (xi - med) / _floored(scale, med), a


@_inline
def _stat_in(sorted_: bool, k: int, v: float, m: int, meta: Ints, fm: Floats,
             pool_x: Floats, ps: Floats, pi: Ints, used: Ints) -> tuple[Floats, Ints]:
    """Add ``v`` to slot ``k``'s statistics, which hold ``m`` values (its ring holds ``v``)."""
    if sorted_:
        bc, ph = meta[k, BC], meta[k, PH]
        if ph == 0 or pi[meta[k, FI] + 3 * ph + 2] == 0:  # no block to split into: anew
            meta[k, CNT] -= 1  # (_rebuild lays out the ring's values but v)
            ps, pi = _rebuild(k, meta, pool_x, ps, pi, used)
            meta[k, CNT] += 1
            bc, ph = meta[k, BC], meta[k, PH]
        _insert(ps, pi, _bases(meta[k, FO], meta[k, FI], bc, ph), bc, v)
    else:
        if m == 0:  # a new window: deviations from its first value
            fm[k, 0], fm[k, 1], fm[k, 2] = v, 0.0, 0.0
            meta[k, AUX] = 0
        d = v - fm[k, 0]
        fm[k, 1] += d
        fm[k, 2] += d * d
    return ps, pi


@_inline
def _stat_out(sorted_: bool, k: int, v: float, meta: Ints, fm: Floats, ps: Floats,
              pi: Ints) -> None:
    """Remove ``v`` from slot ``k``'s statistics."""
    if sorted_:
        _remove(ps, pi, _bases(meta[k, FO], meta[k, FI], meta[k, BC], meta[k, PH]),
                meta[k, BC], v)
    else:
        d = v - fm[k, 0]
        fm[k, 1] -= d
        fm[k, 2] -= d * d
        meta[k, AUX] += 1


@jit
def _window_rows(kind: int, slots: Ints, t: Ints, x: Floats, meta: Ints, fm: Floats,
                 pool_t: Ints, pool_x: Floats, ps: Floats, pi: Ints, used: Ints, w: int,
                 nrows: int, min_periods: int, limit: float, q: float, factor: float,
                 protect: bool, patience: int, out: Floats, flags: Bools,
                 counters: Ints) -> tuple[Ints, Floats, Floats, Ints]:
    sorted_ = kind != ZSCORE
    for r in range(x.shape[0]):
        k = slots[r]
        ti = t[r]
        xi = x[r]
        if ti < meta[k, LAST]:  # before the key's latest learned row: taken at that time
            counters[0] += 1
            ti = meta[k, LAST]
        off, cap, head, cnt = meta[k, OFF], meta[k, CAP], meta[k, HEAD], meta[k, CNT]
        mask = cap - 1
        if sorted_ and cnt - meta[k, PEND] and meta[k, PH] == 0:
            ps, pi = _rebuild(k, meta, pool_x, ps, pi, used)  # restored: sort it first
        pend = meta[k, PEND]
        if pend and (nrows > 0 or ti > meta[k, LAST]):  # a later time: they join the stats
            for i in range(cnt - pend, cnt):
                meta[k, PEND] -= 1
                ps, pi = _stat_in(sorted_, k, pool_x[off + ((head + i) & mask)], i, meta, fm,
                                  pool_x, ps, pi, used)
            pend = 0
        if nrows > 0:  # a row window: the last nrows values
            while cnt > nrows:
                _stat_out(sorted_, k, pool_x[off + head], meta, fm, ps, pi)
                head = (head + 1) & mask
                cnt -= 1
        else:
            cut = ti - w
            while cnt > pend and pool_t[off + head] < cut:  # values that left the window
                _stat_out(sorted_, k, pool_x[off + head], meta, fm, ps, pi)
                head = (head + 1) & mask
                cnt -= 1
        meta[k, HEAD], meta[k, CNT] = head, cnt
        m = cnt - pend  # the values the row is scored against
        if not sorted_ and meta[k, AUX] and meta[k, AUX] >= m:
            # as many values left as the window holds: rebuild the sums from the ring
            ref = pool_x[off + head] if m else np.nan
            s1 = s2 = 0.0
            for i in range(m):
                d = pool_x[off + ((head + i) & mask)] - ref
                s1 += d
                s2 += d * d
            fm[k, 0], fm[k, 1], fm[k, 2] = ref, s1, s2
            meta[k, AUX] = 0
        score = np.nan
        if m >= min_periods and m and xi == xi:
            if kind == ZSCORE:
                n = np.float64(m)
                mean = fm[k, 1] / n
                var = (fm[k, 2] - n * mean * mean) / (n - 1) if m > 1 else 0.0
                std = np.sqrt(var) if var > 0 else 0.0
                score = (xi - fm[k, 0] - mean) / _floored(std, fm[k, 0] + mean)
            else:
                bc = meta[k, BC]
                b = _bases(meta[k, FO], meta[k, FI], bc, meta[k, PH])
                nb = pi[b[6]]
                if kind == QUANTILE:  # pandas' rolling quantile, linear interpolation
                    if m == 1:
                        quant = _at(ps, pi, b, bc, nb, 0)
                    else:
                        frac = q * (m - 1)
                        i = int(frac)
                        if frac == i:
                            quant = _at(ps, pi, b, bc, nb, i)
                        else:
                            lo, hi = _pair(ps, pi, b, bc, nb, m, i)
                            quant = lo + (hi - lo) * (frac - i)
                    fq = factor * quant
                    if fq > 0:
                        score = xi / _floored(fq, fq)
                    else:  # 1 + (x - f q) / |f q|: the same for q > 0, sign-safe below
                        score = 1.0 + (xi - fq) / _floored(abs(fq), fq)
                else:
                    score, a = _mad_score(ps, pi, b, bc, nb, m, meta[k, AUX], xi)
                    meta[k, AUX] = a
                    if kind == MAD:
                        score = abs(score)
        out[r] = score
        flag = score > limit if kind == MAD or kind == QUANTILE else abs(score) > limit
        flags[r] = flag
        if not np.isfinite(xi):  # missing: not scored; +/-inf: scored (inf); neither learned
            continue
        if protect and flag and meta[k, HELD] < patience:  # held out, for a while
            meta[k, HELD] += 1
            continue
        if not flag and meta[k, HELD] > 0:  # a normal row counts down
            meta[k, HELD] -= 1
        if nrows > 0 and cnt >= nrows:  # a row window: the oldest value leaves
            _stat_out(sorted_, k, pool_x[off + head], meta, fm, ps, pi)
            head = (head + 1) & mask
            cnt -= 1
            meta[k, HEAD], meta[k, CNT] = head, cnt
        if cnt == cap:  # full: a ring twice the size
            pool_t, pool_x = _pack(meta, pool_t, pool_x, used, k, max(8, 2 * cap))
            off, cap, head = meta[k, OFF], meta[k, CAP], 0
            mask = cap - 1
        q_at = off + ((head + cnt) & mask)
        pool_t[q_at] = ti
        pool_x[q_at] = xi
        meta[k, CNT] = cnt + 1
        meta[k, LAST] = ti
        if nrows > 0:
            ps, pi = _stat_in(sorted_, k, xi, cnt, meta, fm, pool_x, ps, pi, used)
        else:  # joins the statistics when a row of a later time comes
            meta[k, PEND] += 1
    return pool_t, pool_x, ps, pi


def window_rows(kind: int, slots: Ints, t: Ints, x: Floats, meta: Ints, fm: Floats,
                pool_t: Ints, pool_x: Floats, ps: Floats, pi: Ints, used: Ints, w: int,
                nrows: int, min_periods: int, limit: float, q: float, factor: float,
                protect: bool, patience: int, out: Floats, flags: Bools,
                counters: Ints) -> tuple[Ints, Floats, Floats, Ints]:
    """Score a batch's rows as ZScore (``kind`` 0), MAD (1, 3: signed) or RollingQuantile (2).

    Per row, in arrival order, in its key slot's state (module docstring). A row whose
    time is before its key's latest learned time is taken at that time (counted in
    ``counters[0]``). Then the window is brought up to the row: with ``nrows > 0``, the
    key's last ``nrows`` learned values; else the values in ``[t - w, t)``: learned values
    of the row's own time are held back (``PEND``) until a later row comes, as pandas'
    ``closed="left"``. The row is scored against the window (``NaN`` below ``min_periods``
    values or for a missing value) into ``out``; ``flags`` is ``|score| > limit`` (ZScore,
    signed MAD) or ``score > limit``. The value is learned unless it is missing, or
    ``protect``, the row is flagged and its key's count of held-out rows (``HELD``: +1 per
    held-out row, -1 per row not flagged, never below 0) is below ``patience``.

    Scores: ZScore ``(x - mean) / std``, MAD ``|x - median| / scale`` (:func:`_mad_score`),
    RollingQuantile ``1 + (x - f q) / |f q|`` (``x / (f q)`` for ``q > 0``; ``q`` pandas'
    linear interpolation); every scale at least :func:`_floored`'s floor. Returns the four
    pools (new arrays when they had to grow); ``meta``, ``fm``, ``used`` and ``counters``
    are changed in place.
    """
    pools: tuple[Ints, Floats, Floats, Ints] = _window_rows(
        kind, slots, t, x, meta, fm, pool_t, pool_x, ps, pi, used, w, nrows, min_periods,
        limit, q, factor, protect, patience, out, flags, counters)
    return pools


#: The compiled kernels (what :func:`warm_up` loads).
KERNELS = (_lookup, _ewma_rows, _rate_rows, _window_rows)


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel on a tiny input; return seconds."""
    import time

    started = time.perf_counter()
    slots = np.zeros(4, dtype=np.int64)
    t = np.arange(4, dtype=np.int64)
    x = np.array([1.0, 2.0, np.nan, 4.0])
    out, flags = np.empty(4), np.empty(4, dtype=np.bool_)
    counters = np.zeros(1, dtype=np.int64)
    lookup(slots, np.zeros(1, dtype=np.intp), np.empty(4, dtype=np.intp))
    ewma_rows(slots, x, np.zeros((1, 3)), np.zeros(1, dtype=np.int64), 0.5, 1, 3.0, True, 1,
              out, flags)
    rate_rows(slots, t, x, np.zeros(1, dtype=np.int64), np.full(1, np.nan),
              np.zeros(1, dtype=np.int64), np.full(1, np.nan), 1.0, 3.0, True, out, flags,
              counters)
    for kind in (ZSCORE, MAD, QUANTILE):
        meta = np.zeros((1, META), dtype=np.int64)
        meta[:, LAST] = NO_TIME
        window_rows(kind, slots, t, x, meta, np.zeros((1, 3)), np.zeros(0, dtype=np.int64),
                    np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64),
                    np.zeros(3, dtype=np.int64), 2, 0, 1, 3.0, 0.5, 1.0, True, 1, out, flags,
                    counters)
    return time.perf_counter() - started
