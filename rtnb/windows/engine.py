"""The event-time window engine: vectorised, bounded state, watermarks and late data.

:class:`WindowAggregator` is plain Python over numpy; the streamz node in
:mod:`rtnb.frame` only feeds it batches. Per batch it

1. assigns every row to its windows (a sliding window replicates a row ``size / every``
   times, a tumbling one is the case ``every == size``);
2. sends rows whose windows already closed (window end <= watermark *before* the batch) to
   the ``late`` output;
3. folds the other rows into partial states per (key, window) with ``Aggregation.on_new`` and
   merges them into the open windows with ``Aggregation.merge``;
4. advances the watermark (max event time seen - allowed lateness) and emits the windows
   whose end it passed.

Only open windows are kept, so memory is bounded by keys x open windows, not stream length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb.aggregations import State, concat_states, take_state
from rtnb.windows.base import (
    END_OF_STREAM,
    NO_WATERMARK,
    AggSpec,
    KeyedEngine,
    WindowOutput,
    time_ns,
)
from rtnb.windows.specs import Sliding, Tumbling

__all__ = ["NO_WATERMARK", "AggSpec", "WindowAggregator", "WindowOutput", "time_ns"]

class WindowAggregator(KeyedEngine):
    """Keyed tumbling/sliding window aggregation over event time.

    Parameters
    ----------
    spec
        A :class:`~rtnb.windows.specs.Tumbling` or :class:`~rtnb.windows.specs.Sliding`.
    time
        The event-time column.
    by
        Key columns (may be empty).
    aggs
        The output columns.
    example
        The input schema (for key dtypes).
    allowed_lateness_ns
        How far behind the newest event a window is kept open.
    emit
        ``"final"``: each window once, when the watermark passes its end; ``"update"``: after
        each batch, every window that batch changed, with its current value.

    Examples
    --------
    >>> import pandas as pd
    >>> from rtnb.aggregations import Mean
    >>> from rtnb.windows.specs import tumbling
    >>> df = pd.DataFrame({"timestamp": pd.to_datetime(["2026-01-01 09:00:01",
    ...     "2026-01-01 09:00:04", "2026-01-01 09:00:12"]), "cpu": [1.0, 3.0, 5.0]})
    >>> eng = WindowAggregator(tumbling("10s"), time="timestamp", by=[],
    ...                        aggs=[AggSpec("mean", "cpu", Mean())], example=df.iloc[:0])
    >>> eng.process(df).windows
             window_start          window_end  mean
    0 2026-01-01 09:00:00 2026-01-01 09:00:10   2.0
    >>> eng.flush().windows
             window_start          window_end  mean
    0 2026-01-01 09:00:10 2026-01-01 09:00:20   5.0
    """

    def __init__(
        self,
        spec: Tumbling | Sliding,
        *,
        time: str,
        by: list[str],
        aggs: list[AggSpec],
        example: pd.DataFrame,
        allowed_lateness_ns: int = 0,
        emit: str = "final",
    ) -> None:
        super().__init__(time=time, by=by, aggs=aggs, example=example,
                         allowed_lateness_ns=allowed_lateness_ns, emit=emit)
        self.spec = spec
        self._configure()

    # -- configuration ---------------------------------------------------------------------
    def _configure(self) -> None:
        self.size, self.every, self.offset = self.spec.bounds_ns()
        self._copies = -(-self.size // self.every)  # ceil
        self._reset_state()

    def _reset_state(self) -> None:
        self._g_key = np.zeros(0, dtype=np.intp)
        self._g_start = np.zeros(0, dtype=np.int64)
        self._states: list[State] = [a.agg.initial(0) for a in self._plain]
        self._touched = np.zeros(0, dtype=bool)
        self._raw_key = np.zeros(0, dtype=np.intp)
        self._raw_start = np.zeros(0, dtype=np.int64)
        self._raw_values: dict[str, npt.NDArray[np.float64]] = {
            c: np.zeros(0) for c in self._raw_columns}

    def reconfigure(self, spec: Tumbling | Sliding) -> pd.DataFrame | None:
        """Switch to a new window spec; open windows are emitted first (nothing is lost).

        Events that arrive later for the windows emitted here count as late.
        """
        if len(self._g_start):
            self._floor = max(self._floor, int(self._g_start.max()) + self.size)
        out = self._emit(np.ones(len(self._g_key), dtype=bool))
        self.spec = spec
        self._configure()
        return out

    @property
    def open_windows(self) -> int:
        """How many (key, window) pairs are open."""
        return len(self._g_key)

    # -- processing ------------------------------------------------------------------------
    def process(self, batch: pd.DataFrame) -> WindowOutput:
        """Fold one micro-batch in; return the windows it closed (or updated) and late rows."""
        n = len(batch)
        if n == 0:
            return WindowOutput(None, None)
        t = time_ns(batch[self.time])
        seq = self._next_seq(n)
        key = self.keys.codes(batch)

        # 1. window assignment: row i is in windows last_start[i] - j * every, j < copies.
        last_start = (t - self.offset) // self.every * self.every + self.offset
        if self._copies == 1:
            rows = None
            starts = last_start
        else:
            j = np.arange(self._copies, dtype=np.int64)
            starts = (last_start[:, None] - j[None, :] * self.every).ravel()
            rows = np.repeat(np.arange(n), self._copies)
            inside = t[rows] < starts + self.size
            starts, rows = starts[inside], rows[inside]

        # 2. late rows: a window of theirs already closed before this batch.
        closed = starts + self.size <= self._watermark
        if self._floor != NO_WATERMARK:
            closed |= (t if rows is None else t[rows]) < self._floor
        late = None
        if closed.any():
            late_rows = np.unique(closed.nonzero()[0] if rows is None else rows[closed])
            late = batch.iloc[late_rows]
            self.late_total += len(late_rows)
            starts = starts[~closed]
            rows = (np.flatnonzero(~closed) if rows is None else rows[~closed])
        if rows is not None:
            t, seq, key = t[rows], seq[rows], key[rows]
        # 3. partial states per (key, window) of this batch, then merged into the open ones.
        if len(starts):
            self._fold(batch, rows, starts, t, seq, key)

        # 4. watermark and emission.
        self._advance(t)
        done = self._g_start + self.size <= self._watermark
        if self.emit == "final":
            out = self._emit(done) if done.any() else None
        else:
            out = self._emit(done, report=self._touched | done) if len(self._g_key) else None
        return WindowOutput(out, late)

    def _fold(self, batch: pd.DataFrame, rows: npt.NDArray[np.intp] | None,
              starts: npt.NDArray[np.int64], t: npt.NDArray[np.int64],
              seq: npt.NDArray[np.int64], key: npt.NDArray[np.intp]) -> None:
        n_keys = max(len(self.keys), 1)
        base = int(starts.min()) if not len(self._g_start) else min(
            int(starts.min()), int(self._g_start.min()))
        combo = (starts - base) // self.every * n_keys + key
        local, uniq = pd.factorize(combo)
        g = len(uniq)
        g_key = (uniq % n_keys).astype(np.intp)
        g_start = (uniq // n_keys) * self.every + base
        partial: list[State] = []
        for spec in self._plain:
            values = self._values(batch, spec.column)
            if rows is not None:
                values = values[rows]
            partial.append(spec.agg.on_new(spec.agg.initial(g), local, values, t, seq))
        if self._holistic:
            self._raw_key = np.concatenate([self._raw_key, key])
            self._raw_start = np.concatenate([self._raw_start, starts])
            for c in self._raw_columns:
                values = self._values(batch, c)
                if rows is not None:
                    values = values[rows]
                self._raw_values[c] = np.concatenate([self._raw_values[c], values])

        s = len(self._g_key)
        if s == 0:
            self._g_key, self._g_start, self._states = g_key, g_start, partial
            self._touched = np.ones(g, dtype=bool)
            return
        all_key = np.concatenate([self._g_key, g_key])
        all_start = np.concatenate([self._g_start, g_start])
        inverse, merged = pd.factorize((all_start - base) // self.every * n_keys + all_key)
        m = len(merged)
        first = np.full(m, -1, dtype=np.intp)
        first[inverse[::-1]] = np.arange(len(inverse))[::-1]
        self._g_key = all_key[first]
        self._g_start = all_start[first]
        self._states = [
            spec.agg.merge(concat_states([old, new]), inverse, m)
            for spec, old, new in zip(self._plain, self._states, partial, strict=True)
        ]
        self._touched = np.zeros(m, dtype=bool)
        self._touched[inverse[s:]] = True

    def flush(self) -> WindowOutput:
        """End of stream: the watermark goes to +inf and every open window is emitted."""
        self._watermark = END_OF_STREAM
        if not len(self._g_key):
            return WindowOutput(None, None)
        return WindowOutput(self._emit(np.ones(len(self._g_key), dtype=bool)), None)

    # -- emission --------------------------------------------------------------------------
    def _emit(self, done: npt.NDArray[np.bool_],
              report: npt.NDArray[np.bool_] | None = None) -> pd.DataFrame | None:
        """Build the output rows for ``report`` (default ``done``) and drop ``done`` windows."""
        report = done if report is None else report
        frame = None
        if report.any():
            idx = np.flatnonzero(report)
            order = np.lexsort((self._g_key[idx], self._g_start[idx]))
            idx = idx[order]
            key, start = self._g_key[idx], self._g_start[idx]
            results = {
                spec.name: spec.agg.result(take_state(state, idx))
                for spec, state in zip(self._plain, self._states, strict=True)
            }
            if self._holistic:
                results.update(self._holistic_results(key, start))
            frame = self._frame(start, start + self.size, key, results)
        if done.any():
            keep = ~done
            self._g_key, self._g_start = self._g_key[keep], self._g_start[keep]
            self._states = [take_state(s, keep) for s in self._states]
            if self._holistic:
                raw_keep = (np.zeros(len(self._raw_start), dtype=bool) if done.all()
                            else self._raw_start + self.size > self._watermark)
                self._raw_key = self._raw_key[raw_keep]
                self._raw_start = self._raw_start[raw_keep]
                self._raw_values = {c: v[raw_keep] for c, v in self._raw_values.items()}
        self._touched = np.zeros(len(self._g_key), dtype=bool)
        return frame

    def _holistic_results(self, key: npt.NDArray[np.intp],
                          start: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[Any]]:
        n_keys = max(len(self.keys), 1)
        base = min(int(start.min()), int(self._raw_start.min()) if len(self._raw_start) else 0)
        wanted = pd.Index((start - base) // self.every * n_keys + key)
        pos = wanted.get_indexer((self._raw_start - base) // self.every * n_keys + self._raw_key)
        return self._holistic_from_rows(pos, self._raw_values, len(start))
