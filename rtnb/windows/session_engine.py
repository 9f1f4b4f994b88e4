"""Session windows: per key, events closer than ``gap`` belong to one session.

A session is ``[first event, last event + gap)``. Each batch's rows are treated as tiny
intervals ``[t, t]`` and merged with the open sessions in one vectorised interval-union pass
(sort by key and start, running maximum of the ends), so a late row can also bridge two open
sessions into one. A session closes when the watermark passes its end.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb._frames import take
from rtnb.aggregations import State, concat_states, take_state
from rtnb.windows.base import (
    END_OF_STREAM,
    NO_WATERMARK,
    AggSpec,
    KeyedEngine,
    WindowOutput,
)
from rtnb.windows.specs import Session

__all__ = ["SessionAggregator"]


class SessionAggregator(KeyedEngine):
    """Keyed session windows with watermarks; same interface as ``WindowAggregator``.

    A row is late when its own session ``[t, t + gap)`` would already be closed, or when it
    would extend a session that was already emitted; late rows go to the ``late`` output.

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
        self._reset_state()

    def _reset_state(self) -> None:
        self._s_key = np.zeros(0, dtype=np.intp)
        self._s_start = np.zeros(0, dtype=np.int64)
        self._s_last = np.zeros(0, dtype=np.int64)
        self._states: list[State] = [a.agg.initial(0) for a in self._plain]
        self._touched = np.zeros(0, dtype=bool)
        self._raw_key = np.zeros(0, dtype=np.intp)
        self._raw_t = np.zeros(0, dtype=np.int64)
        self._raw_values: dict[str, npt.NDArray[np.float64]] = {
            c: np.zeros(0) for c in self._raw_columns}

    def reconfigure(self, spec: Session) -> pd.DataFrame | None:
        """Switch to a new gap; open sessions are emitted first (nothing is lost)."""
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
        return len(self._s_key)

    def process(self, batch: pd.DataFrame) -> WindowOutput:
        """Fold one micro-batch in; return the sessions it closed (or updated) and late rows."""
        n = len(batch)
        if n == 0:
            return WindowOutput(None, None)
        t, seq, key = self._read(batch)
        if len(self._closed_end) < len(self.keys):
            grow = np.full(len(self.keys) - len(self._closed_end), NO_WATERMARK, dtype=np.int64)
            self._closed_end = np.concatenate([self._closed_end, grow])
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
        if not len(self._s_key):
            return WindowOutput(None, None)
        return WindowOutput(self._emit(np.ones(len(self._s_key), dtype=bool)), None)

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
