"""Count windows: every ``n`` consecutive events of a key, in event-time order."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb._frames import take
from rtnb.windows.base import END_OF_STREAM, AggSpec, KeyedEngine, WindowOutput
from rtnb.windows.specs import Rows

__all__ = ["RowsAggregator"]


class RowsAggregator(KeyedEngine):
    """Keyed count windows; same interface as ``WindowAggregator``.

    Rows wait until the watermark reaches them (so disorder within the allowed lateness is put
    right), are numbered per key in (event time, arrival) order, and every ``n`` of them form a
    window. ``window_start`` and ``window_end`` are the times of its first and last event (both
    inclusive). At the end of the stream the last, incomplete windows are emitted too; this is
    ``groupby([key, groupby(key).cumcount() // n])`` on the time-sorted frame.

    Examples
    --------
    >>> import pandas as pd
    >>> from rtnb.aggregations import Sum
    >>> from rtnb.windows.specs import rows
    >>> df = pd.DataFrame({"t": pd.date_range("2026-01-01 09:00", periods=5, freq="s"),
    ...                    "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    >>> eng = RowsAggregator(rows(2), time="t", by=[], aggs=[AggSpec("s", "x", Sum())],
    ...                      example=df.iloc[:0])
    >>> eng.process(df).windows
             window_start          window_end    s
    0 2026-01-01 09:00:00 2026-01-01 09:00:01  3.0
    1 2026-01-01 09:00:02 2026-01-01 09:00:03  7.0
    >>> eng.flush().windows
             window_start          window_end    s
    0 2026-01-01 09:00:04 2026-01-01 09:00:04  5.0
    """

    STATE = (*KeyedEngine.STATE, "_key", "_t", "_q", "_vals")

    def __init__(self, spec: Rows, *, time: str, by: list[str], aggs: list[AggSpec],
                 example: pd.DataFrame, allowed_lateness_ns: int = 0,
                 emit: str = "final") -> None:
        super().__init__(time=time, by=by, aggs=aggs, example=example,
                         allowed_lateness_ns=allowed_lateness_ns, emit=emit)
        self.spec = spec
        self.n = int(spec.n if isinstance(spec.n, int) else spec.n.value)
        self._columns = sorted({a.column for a in aggs})
        self._reset_state()

    def _reset_state(self) -> None:
        # Accepted rows not yet in a complete window: pending (waiting for the watermark)
        # and ready ones of incomplete windows, all kept together in arrival order.
        self._key = np.zeros(0, dtype=np.intp)
        self._t = np.zeros(0, dtype=np.int64)
        self._q = np.zeros(0, dtype=np.int64)
        self._vals: dict[str, npt.NDArray[np.float64]] = {c: np.zeros(0) for c in self._columns}

    @property
    def open_windows(self) -> int:
        """How many rows wait in incomplete windows."""
        return len(self._t)

    def reconfigure(self, spec: Rows) -> pd.DataFrame | None:
        """Switch to a new ``n``; the rows held so far are emitted first (nothing is lost)."""
        if len(self._t):
            self._floor = max(self._floor, int(self._t.max()))
        out = self._release(np.ones(len(self._t), dtype=bool), complete_only=False)
        self.spec = spec
        self.n = int(spec.n if isinstance(spec.n, int) else spec.n.value)
        return out

    def process(self, batch: pd.DataFrame) -> WindowOutput:
        """Accept one batch; return the windows that became complete and final."""
        m = len(batch)
        if m == 0:
            return WindowOutput(None, None)
        t, seq, key = self._read(batch)
        late_mask = (t < self._watermark) | (t < self._floor)
        late = None
        keep = np.arange(m)
        if late_mask.any():
            late = take(batch, late_mask)
            self.late_total += int(late_mask.sum())
            keep = np.flatnonzero(~late_mask)
        self._key = np.concatenate([self._key, key[keep]])
        self._t = np.concatenate([self._t, t[keep]])
        self._q = np.concatenate([self._q, seq[keep]])
        for c in self._columns:
            self._vals[c] = np.concatenate([self._vals[c], self._values(batch, c)[keep]])
        self._advance(t[keep])
        return WindowOutput(self._release(self._t <= self._watermark, complete_only=True),
                            late)

    def flush(self) -> WindowOutput:
        """End of stream: every held row is emitted, incomplete windows included."""
        self._watermark = END_OF_STREAM
        return WindowOutput(self._release(np.ones(len(self._t), dtype=bool),
                                          complete_only=False), None)

    def _release(self, ready: npt.NDArray[np.bool_], *, complete_only: bool) -> pd.DataFrame | None:
        if not ready.any():
            return None
        idx = np.flatnonzero(ready)
        order = idx[np.lexsort((self._q[idx], self._t[idx], self._key[idx]))]
        k = self._key[order]
        first = np.concatenate(([True], k[1:] != k[:-1]))
        seg_start = np.maximum.accumulate(np.where(first, np.arange(len(k)), 0))
        rank = np.arange(len(k)) - seg_start
        win = rank // self.n
        # group = (key segment, window number); complete windows have n rows
        new_group = first | np.concatenate(([True], win[1:] != win[:-1]))
        gid = np.cumsum(new_group) - 1
        g = int(gid[-1]) + 1
        counts = np.bincount(gid, minlength=g)
        emit_group = counts == self.n if complete_only else np.ones(g, dtype=bool)
        take = emit_group[gid]
        if not take.any():
            return None
        rows = order[take]
        groups = np.cumsum(emit_group) - 1
        row_group = groups[gid[take]]
        n_out = int(emit_group.sum())
        heads = np.flatnonzero(new_group & take)
        key_out = k[heads]
        t_rows = self._t[rows]
        start = t_rows[np.flatnonzero(np.concatenate(([True], row_group[1:] != row_group[:-1])))]
        end = np.maximum.reduceat(t_rows, np.flatnonzero(
            np.concatenate(([True], row_group[1:] != row_group[:-1]))))
        results = {}
        for spec in self._plain:
            state = spec.agg.on_new(spec.agg.initial(n_out), row_group,
                                    self._vals[spec.column][rows], t_rows, self._q[rows])
            results[spec.name] = spec.agg.result(state)
        if self._holistic:
            pos = np.full(len(self._t), -1, dtype=np.intp)
            pos[rows] = row_group
            results.update(self._holistic_from_rows(pos, self._vals, n_out))
        out_order = np.lexsort((key_out, start))
        results = {name: v[out_order] for name, v in results.items()}
        frame = self._frame(start[out_order], end[out_order], key_out[out_order], results)
        keep = np.ones(len(self._t), dtype=bool)
        keep[rows] = False
        self._key, self._t, self._q = self._key[keep], self._t[keep], self._q[keep]
        self._vals = {c: v[keep] for c, v in self._vals.items()}
        return frame
