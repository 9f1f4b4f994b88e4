"""Per-event rolling aggregations over event time, as ``groupby(key).rolling(window, on=time)``.

For every input row the output holds the aggregate of the same key's rows in
``(t - window, t]`` that arrived no later than it in event-time order, exactly what pandas
computes on the whole frame sorted by time. Rows wait until the watermark passes their time
(so disorder within the allowed lateness is put right), then are computed in one vectorised
pass over the retained history (rows younger than ``window``) and the ready rows: prefix sums
for count/sum/mean/var, a sparse table for min/max. Memory is bounded by keys x window.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb._frames import column, take
from rtnb.errors import ConfigError
from rtnb.windows.base import (
    NO_WATERMARK,
    build_frame,
    restore_attributes,
    snapshot_attributes,
    time_values_ns,
)
from rtnb.windows.keys import KeyRegistry

__all__ = ["ROLLING_AGGS", "RollingAggregator", "RollingOutput"]

ROLLING_AGGS = ("count", "sum", "mean", "var", "std", "min", "max")
_PREFIX_AGGS = frozenset({"count", "sum", "mean"})
_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]


class RollingOutput:
    """Rows computed by one batch (or ``None``) and the rows that came too late."""

    __slots__ = ("late", "rows")

    def __init__(self, rows: pd.DataFrame | None, late: pd.DataFrame | None) -> None:
        self.rows = rows
        self.late = late


class RollingAggregator:
    """Keyed per-event rolling aggregation of one column.

    Parameters
    ----------
    window_ns
        Window length: a row's window is ``(t - window, t]``.
    time, by, column
        Event-time column, key columns, value column.
    hows
        Aggregations among ``count, sum, mean, var, std, min, max``.
    example
        Input schema.
    allowed_lateness_ns
        Rows are emitted once the watermark (newest time - lateness) reaches them.
    min_periods
        Fewer non-NaN values than this in a window give NaN (pandas' default is 1).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:01",
    ...                                         "2026-01-01 00:00:05"]), "x": [1.0, 3.0, 5.0]})
    >>> agg = RollingAggregator(2_000_000_000, time="t", by=[], column="x", hows=["mean"],
    ...                         example=df.iloc[:0])
    >>> agg.process(df).rows
                        t  x_mean
    0 2026-01-01 00:00:00     1.0
    1 2026-01-01 00:00:01     2.0
    2 2026-01-01 00:00:05     5.0
    """

    #: Attributes holding what the aggregator has seen (see :meth:`snapshot`).
    STATE: ClassVar[tuple[str, ...]] = (
        "max_time", "_watermark", "_seq", "late_total", "_h_key", "_h_t", "_h_seq", "_h_v",
        "_p_key", "_p_t", "_p_seq", "_p_v", "_p_frames")

    def __init__(self, window_ns: int, *, time: str, by: list[str], column: str,
                 hows: list[str], example: pd.DataFrame, allowed_lateness_ns: int = 0,
                 min_periods: int = 1, names: dict[str, str] | None = None) -> None:
        unknown = [h for h in hows if h not in ROLLING_AGGS]
        if unknown:
            msg = f"rolling aggregation(s) {unknown!r} unknown; use {', '.join(ROLLING_AGGS)}"
            raise ConfigError(msg)
        if window_ns <= 0:
            msg = f"rolling window must be positive; got {window_ns}ns"
            raise ConfigError(msg)
        self.window_ns = window_ns
        self.time, self.by, self.column, self.hows = time, by, column, hows
        self.names = names or {h: f"{column}_{h}" for h in hows}
        self.allowed_lateness_ns = allowed_lateness_ns
        self.min_periods = min_periods
        self.keys = KeyRegistry(by, example)
        self.max_time = NO_WATERMARK
        self._watermark = NO_WATERMARK
        self._seq = 0
        self.late_total = 0
        empty_i = np.zeros(0, dtype=np.int64)
        # history: rows already emitted that later rows may still see (sorted by key, t, seq)
        self._h_key, self._h_t, self._h_seq, self._h_v = empty_i, empty_i, empty_i, np.zeros(0)
        # pending: accepted rows waiting for the watermark (arrival order)
        self._p_key, self._p_t, self._p_seq, self._p_v = empty_i, empty_i, empty_i, np.zeros(0)
        self._p_frames: list[pd.DataFrame] = []
        # count/sum/mean only: per-key running prefix sums kept with the history, so a batch
        # costs its own rows (plus the history's merge copy), not a pass over the history
        self._incremental = set(hows) <= _PREFIX_AGGS
        self._prefix: tuple[_F64, _F64, _F64] | None = None  # None: rebuild from history
        self._ref = np.zeros(0)  # per key code: the value prefix sums are taken around
        self._since_rebase = 0
        self._prune_after = NO_WATERMARK

    @property
    def watermark(self) -> pd.Timestamp | None:
        """The current watermark (``None`` before the first event)."""
        if self._watermark == NO_WATERMARK:
            return None
        return pd.Timestamp(min(self._watermark, pd.Timestamp.max.value))

    def carry_time(self, other: RollingAggregator) -> None:
        """Go on from ``other``'s event time (a new window setting replaced ``other``)."""
        self._watermark = other._watermark
        self.max_time = other.max_time

    def snapshot(self) -> dict[str, Any]:
        """The aggregator's data state (history, pending rows, keys), for a checkpoint."""
        return snapshot_attributes(self, self.STATE)

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back into this (freshly built, identically configured) one."""
        restore_attributes(self, self.STATE, state)
        self._prefix = None
        self._prune_after = NO_WATERMARK

    def process(self, batch: pd.DataFrame) -> RollingOutput:
        """Accept one batch; return the rows the advanced watermark made final."""
        n = len(batch)
        if n == 0:
            return RollingOutput(None, None)
        t = time_values_ns(column(batch, self.time))
        key = self.keys.codes(batch).astype(np.int64)
        values = column(batch, self.column)
        if isinstance(values, np.ndarray) and values.dtype == np.float64:
            v = values  # NaN is float64's own missing value: no conversion
        else:
            v = pd.Series(values, copy=False).to_numpy(dtype=np.float64, na_value=np.nan)
        seq = np.arange(self._seq, self._seq + n, dtype=np.int64)
        self._seq += n
        late_mask = t < self._watermark
        late = None
        if late_mask.any():
            late = take(batch, late_mask)
            self.late_total += int(late_mask.sum())
            keep = ~late_mask
            t, key, v, seq = t[keep], key[keep], v[keep], seq[keep]
        self._p_key = np.concatenate([self._p_key, key])
        self._p_t = np.concatenate([self._p_t, t])
        self._p_seq = np.concatenate([self._p_seq, seq])
        self._p_v = np.concatenate([self._p_v, v])
        if len(t):
            self.max_time = max(self.max_time, int(t.max()))
            self._watermark = max(self._watermark, self.max_time - self.allowed_lateness_ns)
        return RollingOutput(self._release(self._p_t <= self._watermark), late)

    def flush(self) -> RollingOutput:
        """End of stream: every pending row is computed and emitted."""
        self._watermark = np.iinfo(np.int64).max
        return RollingOutput(self._release(np.ones(len(self._p_t), dtype=bool)), None)

    def _release(self, ready: npt.NDArray[np.bool_]) -> pd.DataFrame | None:
        if not ready.any():
            return None
        r_key, r_t = self._p_key[ready], self._p_t[ready]
        r_seq, r_v = self._p_seq[ready], self._p_v[ready]
        wait = ~ready
        self._p_key, self._p_t = self._p_key[wait], self._p_t[wait]
        self._p_seq, self._p_v = self._p_seq[wait], self._p_v[wait]

        h_key, h_t = self._h_key, self._h_t
        # Merge the ready rows into the sorted history. Ready rows arrived after every
        # history row with the same (key, t), so they go to the right of them.
        lo = min(int(r_t.min()), int(h_t.min()) if len(h_t) else int(r_t.min()))
        span = max(int(r_t.max()), int(h_t.max()) if len(h_t) else 0) - lo + 1
        stride = span + self.window_ns + 1
        n_keys = int(max(r_key.max(), h_key.max() if len(h_key) else 0)) + 1
        if n_keys * stride >= 2**62:  # composite would overflow: sort instead
            order = np.lexsort((r_seq, r_t, r_key))
            r_key, r_t, r_seq, r_v = r_key[order], r_t[order], r_seq[order], r_v[order]
            m_key = np.concatenate([h_key, r_key])
            m_t = np.concatenate([h_t, r_t])
            m_seq = np.concatenate([self._h_seq, r_seq])
            m_v = np.concatenate([self._h_v, r_v])
            o = np.lexsort((m_seq, m_t, m_key))
            m_key, m_t, m_seq, m_v = m_key[o], m_t[o], m_seq[o], m_v[o]
            is_new = np.zeros(len(m_t), dtype=bool)
            is_new[np.flatnonzero(o >= len(h_t))] = True
            comp = m_key * stride + (m_t - lo)
            sorted_insert = False
        else:
            h_comp = h_key * stride + (h_t - lo)
            r_comp = r_key * stride + (r_t - lo)
            # Pending rows are in arrival order, so a stable sort keeps ties by arrival.
            order = np.argsort(r_comp, kind="stable")
            r_comp, r_key, r_t = r_comp[order], r_key[order], r_t[order]
            r_seq, r_v = r_seq[order], r_v[order]
            pos = np.searchsorted(h_comp, r_comp, side="right")
            # np.insert(h, pos, r) for five arrays, with the destination worked out once.
            dest = pos + np.arange(len(pos))
            is_new = np.zeros(len(h_comp) + len(pos), dtype=bool)
            is_new[dest] = True
            was_old = ~is_new
            m_key = _insert(h_key, r_key, was_old, dest)
            m_t = _insert(h_t, r_t, was_old, dest)
            m_seq = _insert(self._h_seq, r_seq, was_old, dest)
            m_v = _insert(self._h_v, r_v, was_old, dest)
            comp = _insert(h_comp, r_comp, was_old, dest)
            sorted_insert = True

        out_idx = np.flatnonzero(is_new)
        start = np.searchsorted(comp, comp[out_idx] - self.window_ns, side="right")
        end = out_idx + 1
        values = None
        prefix = None
        # a batch as large as the history gains nothing from prefix sums: one full pass
        if self._incremental and sorted_insert and 2 * len(r_key) < len(self._h_key):
            found = self._incremental_values(r_key, r_v, dest, was_old, m_key, m_v, start,
                                             end)
            if found is not None:
                values, prefix = found
        if values is None:
            values = self._aggregate(m_key, m_v, start, end)
            self._prefix = None

        o_key = m_key[out_idx].astype(np.intp)
        o_t = m_t[out_idx]
        # Keep only rows a future row can still see: t > watermark - window. With prefix
        # sums the stale rows cost nothing but memory, so they go a quarter window at a time.
        horizon = self._watermark - self.window_ns
        if self._watermark == np.iinfo(np.int64).max:
            keep: npt.NDArray[np.bool_] | None = np.zeros(len(m_t), dtype=bool)
        elif prefix is None or horizon >= self._prune_after:
            keep = m_t > horizon
            self._prune_after = horizon + self.window_ns // 4
        else:
            keep = None
        if keep is not None:
            m_key, m_t, m_seq, m_v = m_key[keep], m_t[keep], m_seq[keep], m_v[keep]
            if prefix is not None:
                prefix = (prefix[0][keep], prefix[1][keep], prefix[2][keep])
        self._h_key, self._h_t, self._h_seq, self._h_v = m_key, m_t, m_seq, m_v
        if prefix is not None:
            self._prefix = prefix

        # Rows leave ordered by key, then event time (arrival order for equal times).
        cols: dict[str, Any] = {self.time: o_t.view("datetime64[ns]")}
        for c in self.by:
            cols[c] = self.keys.array(c, o_key)
        for how in self.hows:
            cols[self.names[how]] = values[how]
        return build_frame(cols, len(out_idx))

    def _rebase(self) -> tuple[_F64, _F64, _F64]:
        """Prefix sums of the history from scratch (per key: count, value - ref, |value - ref|)."""
        key, v = self._h_key, self._h_v
        self._ref = np.full(len(self.keys), np.nan)
        self._since_rebase = 0
        if not len(key):
            return np.zeros(0), np.zeros(0), np.zeros(0)
        ok = ~np.isnan(v)
        is_head = np.concatenate(([True], key[1:] != key[:-1]))
        seg = np.cumsum(is_head) - 1
        heads = np.flatnonzero(is_head)
        has_value = np.add.reduceat(ok, heads) > 0
        ref = _key_reference(v, ok, seg)
        self._ref[key[heads[has_value]]] = ref[heads[has_value]]
        d = np.where(ok, v - ref, 0.0)
        return (_segment_scan(ok.astype(np.float64), seg, heads),
                _segment_scan(d, seg, heads), _segment_scan(np.abs(d), seg, heads))

    def _incremental_values(self, r_key: _I64, r_v: _F64, dest: npt.NDArray[np.intp],
                            was_old: npt.NDArray[np.bool_], m_key: _I64, m_v: _F64,
                            start: npt.NDArray[np.intp], end: npt.NDArray[np.intp]
                            ) -> tuple[dict[str, _F64], tuple[_F64, _F64, _F64]] | None:
        """count/sum/mean of the ready rows' windows, and the merged prefix sums, or ``None``.

        ``None`` means this batch needs the full pass (see below).

        Ready rows (sorted by key, time, arrival) always land at the end of their key's
        history: they are at or after the watermark the history was released at. Each key's
        prefix sums go on from its last history row; a window is the difference of the prefix
        at its last row and just before its first. Taken around a per-key reference value
        (as the full pass does), and rebuilt from the history once as many rows as it holds
        have gone by, so the sums stay as small as the full pass's. ``None`` (and the full
        pass) if a ready row would land inside its key's history, or if a window's sum would
        lose more than 10 bits to the prefix before it.
        """
        h_key = self._h_key
        n_old = len(h_key)
        if self._prefix is None or self._since_rebase > max(n_old, 4096):
            self._prefix = self._rebase()
        pc, ps, pa = self._prefix
        n_new = len(r_key)
        is_head = np.concatenate(([True], r_key[1:] != r_key[:-1]))
        heads = np.flatnonzero(is_head)
        tails = np.concatenate((heads[1:] - 1, [n_new - 1]))
        after = dest[tails] + 1 - (tails + 1)  # history row right after each key's new rows
        inside = after < n_old
        if (h_key[after[inside]] == r_key[tails[inside]]).any():
            return None
        if len(self._ref) < len(self.keys):
            self._ref = np.concatenate([self._ref, np.full(len(self.keys) - len(self._ref),
                                                           np.nan)])
        ok = ~np.isnan(r_v)
        seg = np.cumsum(is_head) - 1
        ref = self._ref
        unset = np.isnan(ref[r_key]) & ok
        if unset.any():  # a key's first value: its reference from now on
            first = np.flatnonzero(unset)
            first = first[np.concatenate(([True], r_key[first][1:] != r_key[first][:-1]))]
            ref[r_key[first]] = r_v[first]
        r_ref = ref[r_key]
        d = np.where(ok, r_v - r_ref, 0.0)
        r_ref = np.where(np.isnan(r_ref), 0.0, r_ref)  # a key with no value yet: sums are 0
        before = dest[heads] - 1 - heads  # history row right before each key's new rows
        carried = (before >= 0) & (h_key[np.maximum(before, 0)] == r_key[heads]) if n_old \
            else np.zeros(len(heads), dtype=bool)
        at = np.where(carried, before, 0)

        def go_on(prefix: _F64, x: _F64) -> _F64:
            base = np.where(carried, prefix[at], 0.0) if n_old else np.zeros(len(heads))
            out: _F64 = _segment_scan(x, seg, heads) + base[seg]
            return out

        new = (go_on(pc, ok.astype(np.float64)), go_on(ps, d), go_on(pa, np.abs(d)))
        merged = tuple(_insert(old, fresh, was_old, dest) for old, fresh in zip(
            (pc, ps, pa), new, strict=True))
        # exclusive prefix at each window's first row
        first_v = m_v[start]
        first_ok = ~np.isnan(first_v)
        first_d = np.where(first_ok, first_v - ref[m_key[start]], 0.0)
        last = end - 1
        n = merged[0][last] - (merged[0][start] - first_ok)
        lead = merged[1][start] - first_d
        sw = merged[1][last] - lead
        scale = merged[2][last] - (merged[2][start] - np.abs(first_d))
        if ((np.abs(lead) > 1024.0 * scale) & (lead != 0.0)).any():
            return None
        self._since_rebase += n_new
        out: dict[str, _F64] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            if "count" in self.hows:
                out["count"] = n
            if "sum" in self.hows:
                out["sum"] = np.where(n >= self.min_periods, sw + n * r_ref, np.nan)
            if "mean" in self.hows:
                out["mean"] = np.where(n >= max(self.min_periods, 1), sw / n + r_ref, np.nan)
        return out, (merged[0], merged[1], merged[2])

    def _aggregate(self, key: _I64, v: _F64, start: npt.NDArray[np.intp],
                   end: npt.NDArray[np.intp]) -> dict[str, _F64]:
        ok = ~np.isnan(v)
        cnt = np.concatenate(([0], np.cumsum(ok)))
        n = (cnt[end] - cnt[start]).astype(np.float64)
        out: dict[str, _F64] = {}
        enough = n >= max(self.min_periods, 1)
        wants = set(self.hows)
        if wants & {"sum", "mean", "var", "std"}:
            # Shift by each key's first value so the sums of squares stay small (no
            # catastrophic cancellation when the mean is large compared with the spread).
            is_head = np.concatenate(([True], key[1:] != key[:-1]))
            seg = np.cumsum(is_head) - 1
            heads = np.flatnonzero(is_head)
            ref = _key_reference(v, ok, seg)
            d = np.where(ok, v - ref, 0.0)
            # Prefix sums restart at every key, so one key's magnitudes never cost another
            # key precision.
            inside = start > heads[seg][end - 1]
            sw = _window_sum(d, seg, heads, end, start, inside)
            ref_out = ref[end - 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                if "sum" in wants:
                    total = sw + n * ref_out
                    out["sum"] = np.where(n >= self.min_periods, total, np.nan)
                if "mean" in wants:
                    out["mean"] = np.where(enough, sw / n + ref_out, np.nan)
                if wants & {"var", "std"}:
                    ss = _window_sum(d * d, seg, heads, end, start, inside)
                    var = (ss - sw * sw / n) / (n - 1)
                    # A window of equal values has variance 0 exactly (as pandas reports),
                    # not the rounding noise left by the prefix-sum difference.
                    lo = _range_reduce(np.minimum, np.where(ok, v, np.inf), start, end)
                    hi = _range_reduce(np.maximum, np.where(ok, v, -np.inf), start, end)
                    var = np.where(lo == hi, 0.0, np.maximum(var, 0.0))
                    var = np.where(enough & (n > 1), var, np.nan)
                    if "var" in wants:
                        out["var"] = var
                    if "std" in wants:
                        out["std"] = np.sqrt(var)
        if "count" in wants:
            out["count"] = n
        if "min" in wants:
            out["min"] = np.where(enough, _range_reduce(np.minimum, np.where(ok, v, np.inf),
                                                        start, end), np.nan)
        if "max" in wants:
            out["max"] = np.where(enough, _range_reduce(np.maximum, np.where(ok, v, -np.inf),
                                                        start, end), np.nan)
        return out


def _insert(old: npt.NDArray[Any], new: npt.NDArray[Any], was_old: npt.NDArray[np.bool_],
            dest: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
    """``old`` and ``new`` interleaved: ``new[i]`` at ``dest[i]``, ``old`` where ``was_old``."""
    out = np.empty(len(was_old), dtype=old.dtype)
    out[was_old] = old
    out[dest] = new
    return out


def _segment_scan(x: _F64, seg: npt.NDArray[np.intp], heads: npt.NDArray[np.intp]) -> _F64:
    """Cumulative sums of ``x`` restarting at every segment head (``seg``: segment per row).

    One global ``cumsum`` minus each segment's offset when that costs a segment at most 10
    bits (as :func:`_segment_cumsum`); otherwise a Hillis-Steele scan: log2(longest segment)
    vectorised passes, each adding the partial sum ``span`` rows back within the segment;
    each output is then a tree sum of its own segment's values only (no cancellation).
    """
    if len(x) >= 2:  # one global cumsum when subtracting its offsets costs <= 10 bits
        c = np.cumsum(x)
        offset = c[heads] - x[heads]
        local: _F64 = c - offset[seg]
        scale = np.maximum.reduceat(np.abs(local), heads)
        if np.all((np.abs(offset) <= 1024.0 * scale) | (offset == 0.0)):
            return local
    out = x.copy()
    if len(x) < 2:
        return out
    longest = int(np.diff(np.append(heads, len(x))).max())
    span = 1
    while span < longest:
        same = seg[span:] == seg[:-span]
        out[span:] += np.where(same, out[:-span], 0.0)
        span *= 2
    return out


def _window_sum(x: _F64, seg: npt.NDArray[np.intp], heads: npt.NDArray[np.intp],
                end: npt.NDArray[np.intp], start: npt.NDArray[np.intp],
                inside: npt.NDArray[np.bool_]) -> _F64:
    """Sum of ``x[start:end]`` for every window, from prefix sums restarted per key segment."""
    c = _segment_cumsum(x, seg, heads)
    before = np.where(inside, c[np.maximum(start - 1, 0)], 0.0)
    out: _F64 = (c[end - 1] - before).astype(np.float64, copy=False)
    return out


def _segment_cumsum(x: _F64, seg: npt.NDArray[np.intp], heads: npt.NDArray[np.intp]) -> _F64:
    """Cumulative sums of ``x`` restarting at every segment head.

    One global ``cumsum`` minus each segment's offset, as long as that costs a segment at most
    10 bits (its offset at most 1024 times its own magnitude); otherwise a grouped cumsum
    that restarts exactly.
    """
    if not len(x):
        return x.copy()
    c = np.cumsum(x)
    offset = c[heads] - x[heads]
    local: _F64 = c - offset[seg]
    scale = np.maximum.reduceat(np.abs(local), heads)
    if np.all((np.abs(offset) <= 1024.0 * scale) | (offset == 0.0)):
        return local
    grouped = pd.Series(x).groupby(seg, sort=False).cumsum()
    out: _F64 = np.asarray(grouped, dtype=np.float64)
    return out


def _key_reference(v: _F64, ok: npt.NDArray[np.bool_], seg_id: npt.NDArray[np.intp]) -> _F64:
    """Per row, the first non-NaN value of its key's segment (``seg_id``; 0 if none).

    Subtracting it keeps the prefix sums of squares small (no catastrophic cancellation).
    """
    valid = np.flatnonzero(ok)
    seg_of_valid = seg_id[valid]
    heads = valid[np.concatenate(([True], seg_of_valid[1:] != seg_of_valid[:-1]))] if len(
        valid) else valid
    ref_per_seg = np.zeros(int(seg_id[-1]) + 1 if len(seg_id) else 0)
    ref_per_seg[seg_id[heads]] = v[heads]
    out: _F64 = ref_per_seg[seg_id]
    return out


def _range_reduce(ufunc: np.ufunc, v: _F64, start: npt.NDArray[np.intp],
                  end: npt.NDArray[np.intp]) -> _F64:
    """``ufunc.reduce(v[start[i]:end[i]])`` for every i, with a sparse table (O(n log n))."""
    length = end - start
    if len(v) == 0 or len(length) == 0:
        return np.zeros(len(start))
    levels = [v]
    span = 1
    max_len = int(length.max())
    while span * 2 <= max_len:
        prev = levels[-1]
        levels.append(ufunc(prev[:-span], prev[span:]))
        span *= 2
    k = np.floor(np.log2(np.maximum(length, 1))).astype(np.intp)
    out = np.empty(len(start))
    for level in np.unique(k):
        sel = k == level
        table = levels[level]
        a = table[start[sel]]
        b = table[end[sel] - (1 << level)]
        out[sel] = ufunc(a, b)
    return out
