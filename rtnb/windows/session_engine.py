"""Session windows: per key, events closer than ``gap`` belong to one session.

A session is ``[first event, last event + gap)``. A late (but allowed) row can bridge two
open sessions of its key into one. A session closes when the watermark passes its end.

Two paths, chosen once from the aggregations:

* only count/sum/mean/min/max (the usual case): open sessions live in slots of growable
  preallocated arrays, chained per key from the newest session; one compiled pass over the
  batch's rows (:mod:`rtnb.windows._session_kernels`) marks late rows, finds or opens each
  row's session (merging two sessions a row bridges) and folds the row into one fused
  count/sum/min/max state per value column. In an ordered feed a row only looks at its
  key's newest session, so the work is proportional to the rows; emission reads the closed
  slots and packs the rest (another compiled pass).
* any other aggregation (var, first/last, custom, quantiles): each batch's rows are treated
  as tiny intervals ``[t, t]`` and merged with the open sessions in one vectorised
  interval-union pass (sort by key and start, running maximum of the ends), the states
  through ``Aggregation.on_new`` and ``Aggregation.merge``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb._frames import ColumnReader, take
from rtnb.aggregations import State, concat_states, take_state
from rtnb.windows.base import (
    END_OF_STREAM,
    NO_WATERMARK,
    NOTHING,
    AggSpec,
    KeyedEngine,
    WindowOutput,
    restore_attributes,
)
from rtnb.windows.engine import _FUSED, _fused_result, _fused_state, _restore_fused
from rtnb.windows.specs import Session

_NO_BOOLS = np.zeros(0, dtype=np.bool_)
_INT64 = np.dtype(np.int64)

__all__ = ["SessionAggregator"]


class SessionAggregator(KeyedEngine):
    """Keyed session windows with watermarks; same interface as ``WindowAggregator``.

    A row is late when its own session ``[t, t + gap)`` would already be closed, or when it
    would extend a session that was already emitted; late rows go to the ``late`` output.

    Notes
    -----
    With only count/sum/mean/min/max, the open sessions live in slots of preallocated
    arrays (capacity doubled when a batch could need more), chained per key from its newest
    session. One compiled pass over the batch's rows, in arrival order, marks the late ones
    and folds every other row into the session it falls in (``t`` within ``gap`` of it), a
    new one linked into its key's chain if none, or the one it bridges two sessions into;
    see :func:`rtnb.windows._session_kernels.fold`. The watermark (max event time folded -
    allowed lateness) then closes the sessions whose end it passed; they are read from the
    slots and the open ones packed to the front. Per batch: O(rows) in an ordered feed,
    plus O(open sessions) for the closing check, and no sort unless sessions close.

    Other aggregations take the vectorised interval-union path described in the module
    docstring. Both paths give the same sessions and save the same snapshot layout.

    Examples
    --------
    >>> import pandas as pd
    >>> from rtnb.aggregations import Count
    >>> from rtnb.windows.specs import session
    >>> df = pd.DataFrame({"t": pd.to_datetime(["2026-01-01 09:00:00", "2026-01-01 09:00:20",
    ...     "2026-01-01 09:02:00"]), "x": [1.0, 2.0, 3.0]})
    >>> eng = SessionAggregator(session("30s"), time="t", by=[],
    ...                         aggs=[AggSpec("n", "x", Count())], example=df.iloc[:0])
    >>> eng.process(df).windows
             window_start          window_end  n
    0 2026-01-01 09:00:00 2026-01-01 09:00:50  2
    """

    STATE = (*KeyedEngine.STATE, "_closed_end", "_s_key", "_s_start", "_s_last", "_states",
             "_touched", "_raw_key", "_raw_t", "_raw_values")

    def __init__(self, spec: Session, *, time: str, by: list[str], aggs: list[AggSpec],
                 example: pd.DataFrame, allowed_lateness_ns: int = 0,
                 emit: str = "final") -> None:
        super().__init__(time=time, by=by, aggs=aggs, example=example,
                         allowed_lateness_ns=allowed_lateness_ns, emit=emit)
        self.spec = spec
        self.gap = spec.gap_ns()
        self._closed_end = np.full(0, NO_WATERMARK, dtype=np.int64)
        # The compiled path when every aggregation is a fused built-in (exact types).
        self._fast = not self._holistic and all(type(a.agg) in _FUSED for a in self._plain)
        fused_cols: list[str] = []
        self._fused_specs: list[tuple[AggSpec, str, int]] = []
        if self._fast:
            from rtnb.windows import _session_kernels  # numba: imported on first use

            self._kernels = _session_kernels
            for a in self._plain:
                if a.column not in fused_cols:
                    fused_cols.append(a.column)
                self._fused_specs.append((a, _FUSED[type(a.agg)], fused_cols.index(a.column)))
        self._fused_cols = fused_cols
        # the batch's columns read from its blocks (~0.3 us a column for row slices of one
        # frame; the time column through ``column`` built a DatetimeArray, ~3 us)
        self._read_time = ColumnReader(time, times=True)
        self._read_fused = [ColumnReader(c) for c in fused_cols]
        self._track = emit != "final"
        self._reset_state()

    def _reset_state(self) -> None:
        if self._fast:
            self._m = 0  # slots 0 .. _m - 1 (dead ones included until the next pack)
            self._cap = 0
            self._head = np.full(len(self._closed_end), -1, dtype=np.int64)
            self._prev = np.zeros(0, dtype=np.int64)
            self._slot_key = np.zeros(0, dtype=np.int64)
            self._slot_start = np.zeros(0, dtype=np.int64)
            self._slot_last = np.zeros(0, dtype=np.int64)
            self._alive = np.zeros(0, dtype=bool)
            self._fused = np.zeros((4 * len(self._fused_cols), 0))
            self._touched_buf = np.zeros(0, dtype=bool)
            return
        self._s_key = np.zeros(0, dtype=np.intp)
        self._s_start = np.zeros(0, dtype=np.int64)
        self._s_last = np.zeros(0, dtype=np.int64)
        self._states: list[State] = [a.agg.initial(0) for a in self._plain]
        self._touched = np.zeros(0, dtype=bool)
        self._raw_key = np.zeros(0, dtype=np.intp)
        self._raw_t = np.zeros(0, dtype=np.int64)
        self._raw_values: dict[str, npt.NDArray[np.float64]] = {
            c: np.zeros(0) for c in self._raw_columns}

    def _grow(self, need: int) -> None:
        """Make room for ``need`` slots (capacity at least doubles; slots kept)."""
        cap = max(need, 2 * self._cap, 16)
        m = self._m

        def regrow(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            out = np.empty((*a.shape[:-1], cap), dtype=a.dtype)
            out[..., :m] = a[..., :m]
            return out

        self._prev, self._slot_key = regrow(self._prev), regrow(self._slot_key)
        self._slot_start, self._slot_last = regrow(self._slot_start), regrow(self._slot_last)
        self._alive, self._fused = regrow(self._alive), regrow(self._fused)
        if self._track:
            self._touched_buf = regrow(self._touched_buf)
        self._cap = cap

    def reconfigure(self, spec: Session) -> pd.DataFrame | None:
        """Switch to a new gap; open sessions are emitted first (nothing is lost)."""
        if self._fast:
            live = self._alive[:self._m]
            if live.any():
                last = int(self._slot_last[:self._m][live].max())
                self._floor = max(self._floor, last + self.gap)
            out = self._emit_fast(live.copy())
        else:
            if len(self._s_last):
                self._floor = max(self._floor, int(self._s_last.max()) + self.gap)
            out = self._emit(np.ones(len(self._s_key), dtype=bool))
        self.spec = spec
        self.gap = spec.gap_ns()
        self._reset_state()
        return out

    @property
    def open_windows(self) -> int:
        """How many sessions are open."""
        if self._fast:
            return int(self._alive[:self._m].sum())
        return len(self._s_key)

    def _grow_keys(self) -> None:
        n_keys = len(self.keys)
        if len(self._closed_end) < n_keys:
            grow = np.full(n_keys - len(self._closed_end), NO_WATERMARK, dtype=np.int64)
            self._closed_end = np.concatenate([self._closed_end, grow])
        if self._fast and len(self._head) < n_keys:
            self._head = np.concatenate(
                [self._head, np.full(n_keys - len(self._head), -1, dtype=np.int64)])

    def process(self, batch: pd.DataFrame) -> WindowOutput:
        """Fold one micro-batch in; return the sessions it closed (or updated) and late rows."""
        if self._fast:
            t = self._read_time(batch)
            n = len(t)  # a numpy length: len(batch) goes through pandas' index
            if n == 0:
                return NOTHING
            key = self.keys.codes(batch)
            self._seq += n  # arrival numbers: only the general path's aggregations use them
            if self.keys.size > len(self._head):  # new keys: room in the per-key arrays
                self._grow_keys()
            return self._process_fast(batch, t, key)
        n = len(batch)
        if n == 0:
            return WindowOutput(None, None)
        t, seq, key = self._read(batch)
        self._grow_keys()
        late_mask = ((t + self.gap <= self._watermark) | (t < self._closed_end[key])
                     | (t < self._floor))
        late = None
        rows = np.arange(n)
        if late_mask.any():
            late = take(batch, late_mask)
            self.late_total += int(late_mask.sum())
            rows = np.flatnonzero(~late_mask)
            t, seq, key = t[rows], seq[rows], key[rows]
        if len(rows):
            self._merge(batch, rows, t, seq, key)
        self._advance(t)
        done = self._s_last + self.gap <= self._watermark
        if self.emit == "final":
            out = self._emit(done) if done.any() else None
        else:
            report = self._touched | done
            out = self._emit(done, report=report) if report.any() else None
        return WindowOutput(out, late)

    # -- the compiled path -----------------------------------------------------------------
    def _process_fast(self, batch: pd.DataFrame, t: npt.NDArray[np.int64],
                      key: npt.NDArray[np.intp]) -> WindowOutput:
        n = len(t)
        # the usual arrays (a row of the batch's time block, the codes just made) are passed
        # as they are; anything else is made a contiguous int64 copy
        if type(t) is not np.ndarray or t.dtype != _INT64 or not t.flags.c_contiguous:
            t = np.ascontiguousarray(t, dtype=np.int64)
        if type(key) is not np.ndarray or key.dtype != _INT64 or not key.flags.c_contiguous:
            key = np.ascontiguousarray(key, dtype=np.int64)
        fcols = self._fused_cols
        if len(fcols) == 1:
            values = self._fused_values(batch, 0)
            if not values.flags.c_contiguous:
                values = np.ascontiguousarray(values)
            values = values.reshape(1, n)
        elif fcols:
            values = np.vstack([self._fused_values(batch, i) for i in range(len(fcols))])
        else:
            values = np.zeros((0, n))
        m = self._m
        if m + n > self._cap:
            self._grow(m + n)  # a new session per row at most
        late_mask = np.zeros(n, dtype=bool)
        m, n_late, n_dead, t_max, n_done = self._kernels.fold(
            t, key, values, self.gap, self._watermark, self._floor, self._closed_end,
            self._head, self._prev, self._slot_key, self._slot_start, self._slot_last,
            self._alive, self._fused, self._touched_buf if self._track else _NO_BOOLS,
            self._track, m, late_mask, self.max_time, self.allowed_lateness_ns)
        self._m = m
        late = None
        if n_late:
            late = take(batch, late_mask)
            self.late_total += n_late
        if t_max != NO_WATERMARK:
            if t_max > self.max_time:
                self.max_time = t_max
            if self.max_time - self.allowed_lateness_ns > self._watermark:
                self._watermark = self.max_time - self.allowed_lateness_ns
        if not (n_done or n_dead or self._track):
            return NOTHING if late is None else WindowOutput(None, late)
        done = np.zeros(m, dtype=bool)
        idx = None
        if n_done:
            idx, ordered = self._kernels.closing(
                self._alive, self._slot_key, self._slot_start, self._slot_last, self.gap,
                self._watermark, m, done)
            if not ordered:
                idx = idx[np.lexsort((self._slot_key[idx], self._slot_start[idx]))]
        if self._track:
            report = self._alive[:m] & (self._touched_buf[:m] | done)
            out = self._emit_fast(done, report=report, dead=n_dead)
        else:
            out = self._emit_fast(done, dead=n_dead, order=idx)
        return WindowOutput(out, late)

    def _fused_values(self, batch: pd.DataFrame, i: int) -> npt.NDArray[np.float64]:
        """Fused value column ``i`` as float64 (``_values``)."""
        values = self._read_fused[i](batch)
        if type(values) is np.ndarray and values.dtype == np.float64:
            return values
        return self._values(batch, self._fused_cols[i])

    def _emit_fast(self, done: npt.NDArray[np.bool_],
                   report: npt.NDArray[np.bool_] | None = None, dead: int = 0,
                   order: npt.NDArray[np.int64] | None = None) -> pd.DataFrame | None:
        """Output rows for ``report`` (default ``done``), by (start, key); drop ``done``.

        ``done`` and ``report`` are masks over the slots; dead slots are dropped too.
        ``order``: the slots ``done`` marks, already by (start, key) (``report`` unset).
        """
        m = self._m
        frame = None
        idx = order
        if idx is None:
            report = done if report is None else report
            if report.any():
                idx = np.flatnonzero(report)
                idx = idx[np.lexsort((self._slot_key[idx], self._slot_start[idx]))]
        if idx is not None and len(idx):
            key, start = self._slot_key[idx], self._slot_start[idx]
            results = {spec.name: _fused_result(self._fused, kind, c, idx)
                       for spec, kind, c in self._fused_specs}
            frame = self._frame(start, self._slot_last[idx] + self.gap,
                                key.astype(np.intp, copy=False), results)
        if dead or done.any():
            keep = self._alive[:m] & ~done
            self._m = self._kernels.pack(
                keep, self._alive, self.gap, self._closed_end, self._head, self._prev,
                self._slot_key, self._slot_start, self._slot_last, self._fused,
                self._touched_buf if self._track else _NO_BOOLS, self._track, m)
        if self._track:
            self._touched_buf[:self._m] = False
        return frame

    # -- the general path ------------------------------------------------------------------
    def _merge(self, batch: pd.DataFrame, rows: npt.NDArray[np.intp],
               t: npt.NDArray[np.int64], seq: npt.NDArray[np.int64],
               key: npt.NDArray[np.intp]) -> None:
        s = len(self._s_key)
        all_key = np.concatenate([self._s_key, key])
        all_start = np.concatenate([self._s_start, t])
        all_last = np.concatenate([self._s_last, t])
        order = np.lexsort((all_start, all_key))
        k, st, la = all_key[order], all_start[order], all_last[order]
        # Interval union per key: a new session starts where the key changes or the start is
        # at least `gap` after the latest end seen so far within the key.
        new = np.ones(len(k), dtype=bool)
        if len(k) > 1:
            same_key = k[1:] == k[:-1]
            key_start = np.concatenate(([True], ~same_key))
            seg = np.cumsum(key_start) - 1
            # running max of `last` within each key segment
            offset = la.min()
            span = int(la.max() - offset) + 1
            run = np.maximum.accumulate((la - offset) + seg * span) - seg * span + offset
            new[1:] = ~same_key | (st[1:] - run[:-1] >= self.gap)
        sid = np.cumsum(new) - 1
        m = int(sid[-1]) + 1
        heads = np.flatnonzero(new)
        s_key = k[heads]
        s_start = st[heads]
        s_last = np.maximum.reduceat(la, heads)
        inverse = np.empty(len(order), dtype=np.intp)
        inverse[order] = sid
        old_to_new, row_to_new = inverse[:s], inverse[s:]
        states = []
        for spec, old in zip(self._plain, self._states, strict=True):
            values = self._values(batch, spec.column)[rows]
            part = spec.agg.on_new(spec.agg.initial(m), row_to_new, values, t, seq)
            states.append(spec.agg.merge(concat_states([old, part]),
                                         np.concatenate([old_to_new, np.arange(m)]), m))
        self._s_key, self._s_start, self._s_last, self._states = s_key, s_start, s_last, states
        self._touched = np.zeros(m, dtype=bool)
        self._touched[row_to_new] = True
        if self._holistic:
            self._raw_key = np.concatenate([self._raw_key, key])
            self._raw_t = np.concatenate([self._raw_t, t])
            for c in self._raw_columns:
                self._raw_values[c] = np.concatenate(
                    [self._raw_values[c], self._values(batch, c)[rows]])

    def flush(self) -> WindowOutput:
        """End of stream: the watermark goes to +inf and every open session is emitted."""
        self._watermark = END_OF_STREAM
        if self._fast:
            live = self._alive[:self._m].copy()
            if not live.any():
                return WindowOutput(None, None)
            return WindowOutput(self._emit_fast(live, dead=self._m - int(live.sum())), None)
        if not len(self._s_key):
            return WindowOutput(None, None)
        return WindowOutput(self._emit(np.ones(len(self._s_key), dtype=bool)), None)

    # -- checkpoints -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The engine's data state, for a checkpoint (copies; the engine keeps running).

        The same layout on both paths: the open sessions as arrays sorted by (key, start)
        (``_s_key``, ``_s_start``, ``_s_last``), every plain aggregation's state in its
        class's layout (``_states``), ``_touched``, ``_closed_end`` and the rows held for
        holistic aggregations (``_raw_key``, ``_raw_t``, ``_raw_values``).
        """
        if not self._fast:
            return super().snapshot()
        state: dict[str, Any] = {name: getattr(self, name) for name in KeyedEngine.STATE}
        m = self._m
        live = np.flatnonzero(self._alive[:m])
        sel = live[np.lexsort((self._slot_start[live], self._slot_key[live]))]
        state["_closed_end"] = self._closed_end.copy()
        state["_s_key"] = self._slot_key[sel].astype(np.intp)
        state["_s_start"] = self._slot_start[sel]
        state["_s_last"] = self._slot_last[sel]
        fused = self._fused[:, sel]
        state["_states"] = [_fused_state(fused, kind, c) for _, kind, c in self._fused_specs]
        state["_touched"] = (self._touched_buf[sel] if self._track
                             else np.zeros(len(sel), dtype=bool))
        state["_raw_key"] = np.zeros(0, dtype=np.intp)
        state["_raw_t"] = np.zeros(0, dtype=np.int64)
        state["_raw_values"] = {}
        state["keys"] = self.keys.snapshot()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back into this (freshly built, identically configured) engine."""
        if not self._fast:
            super().restore(state)
            return
        missing = [n for n in self.STATE if n not in state]
        if missing:
            msg = f"{type(self).__name__} state lacks {missing!r}"
            raise ValueError(msg)
        restore_attributes(self, (*KeyedEngine.STATE, "_closed_end"), state)
        self._closed_end = np.array(self._closed_end, dtype=np.int64)
        self._key_cache = {}
        self._reset_state()
        s_key = np.asarray(state["_s_key"], dtype=np.int64)
        s_start = np.asarray(state["_s_start"], dtype=np.int64)
        order = np.lexsort((s_start, s_key))
        m = len(order)
        self._grow(m)
        k = s_key[order]
        self._slot_key[:m] = k
        self._slot_start[:m] = s_start[order]
        self._slot_last[:m] = np.asarray(state["_s_last"], dtype=np.int64)[order]
        self._alive[:m] = True
        fused = self._fused
        for c in range(len(self._fused_cols)):
            fused[4 * c:4 * c + 2, :m] = 0.0
            fused[4 * c + 2, :m] = np.inf
            fused[4 * c + 3, :m] = -np.inf
        for (_, kind, c), saved in zip(self._fused_specs, state["_states"], strict=True):
            _restore_fused(fused[:, :m], kind, c, {f: np.asarray(v)[order]
                                                   for f, v in saved.items()})
        if self._track:
            self._touched_buf[:m] = np.asarray(state["_touched"], dtype=bool)[order]
        # chains: within a key, sorted by start, each session's older neighbour precedes it
        same = np.zeros(m, dtype=bool)
        same[1:] = k[1:] == k[:-1]
        self._prev[:m] = np.where(same, np.arange(m) - 1, -1)
        n_keys = max(len(self.keys), len(self._closed_end), int(k.max()) + 1 if m else 0)
        self._head = np.full(n_keys, -1, dtype=np.int64)
        self._head[k] = np.arange(m)  # the last assignment per key wins: its newest session
        if len(self._closed_end) < n_keys:
            self._closed_end = np.concatenate([self._closed_end, np.full(
                n_keys - len(self._closed_end), NO_WATERMARK, dtype=np.int64)])
        self._m = m

    def _emit(self, done: npt.NDArray[np.bool_],
              report: npt.NDArray[np.bool_] | None = None) -> pd.DataFrame | None:
        report = done if report is None else report
        frame = None
        if report.any():
            idx = np.flatnonzero(report)
            idx = idx[np.lexsort((self._s_key[idx], self._s_start[idx]))]
            key, start, last = self._s_key[idx], self._s_start[idx], self._s_last[idx]
            results = {spec.name: spec.agg.result(take_state(state, idx))
                       for spec, state in zip(self._plain, self._states, strict=True)}
            if self._holistic:
                results.update(self._holistic_results(key, start, last))
            frame = self._frame(start, last + self.gap, key, results)
        if done.any():
            np.maximum.at(self._closed_end, self._s_key[done], self._s_last[done] + self.gap)
            if self._holistic:
                gone = self._rows_in(self._s_key[done], self._s_start[done], self._s_last[done])
                keep_raw = gone < 0
                self._raw_key, self._raw_t = self._raw_key[keep_raw], self._raw_t[keep_raw]
                self._raw_values = {c: v[keep_raw] for c, v in self._raw_values.items()}
            keep = ~done
            self._s_key, self._s_start = self._s_key[keep], self._s_start[keep]
            self._s_last = self._s_last[keep]
            self._states = [take_state(s, keep) for s in self._states]
        self._touched = np.zeros(len(self._s_key), dtype=bool)
        return frame

    def _rows_in(self, key: npt.NDArray[np.intp], start: npt.NDArray[np.int64],
                 last: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """For every raw row, the index of the given session containing it, or -1."""
        order = np.lexsort((start, key))
        k, st, la = key[order], start[order], last[order]
        # Sessions of one key never overlap, so the candidate is the last start <= t.
        pos = np.full(len(self._raw_t), -1, dtype=np.intp)
        if not len(k):
            return pos
        lo = int(min(st.min(), self._raw_t.min())) if len(self._raw_t) else int(st.min())
        hi = int(max(la.max(), self._raw_t.max())) if len(self._raw_t) else int(la.max())
        stride = hi - lo + 1
        comp = k.astype(np.int64) * stride + (st - lo)
        raw_comp = self._raw_key.astype(np.int64) * stride + (self._raw_t - lo)
        cand = np.searchsorted(comp, raw_comp, side="right") - 1
        ok = cand >= 0
        c = np.where(ok, cand, 0)
        ok &= (k[c] == self._raw_key) & (self._raw_t >= st[c]) & (self._raw_t <= la[c])
        pos[ok] = order[c[ok]]
        return pos

    def _holistic_results(self, key: npt.NDArray[np.intp], start: npt.NDArray[np.int64],
                          last: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.float64]]:
        pos = self._rows_in(key, start, last)
        return self._holistic_from_rows(pos, self._raw_values, len(key))
