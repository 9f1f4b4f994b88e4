"""The event-time window engine: vectorised, bounded state, watermarks and late data.

:class:`WindowAggregator` is plain Python over numpy; the streamz node in
:mod:`rtnb.frame` only feeds it batches. Per batch it

1. assigns every row to its windows (a sliding window replicates a row ``size / every``
   times, a tumbling one is the case ``every == size``);
2. sends rows whose windows already closed (window end <= watermark *before* the batch) to
   the ``late`` output;
3. finds every other row's open (key, window), opening the missing ones with
   ``Aggregation.initial``, and folds the rows in with ``Aggregation.on_new`` (an aggregation
   whose ``on_new`` does not accumulate gets fresh groups, merged with ``Aggregation.merge``);
4. advances the watermark (max event time seen - allowed lateness) and emits the windows
   whose end it passed.

Only open windows are kept, so memory is bounded by keys x open windows, not stream length.
"""

from __future__ import annotations

from typing import Any

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

    STATE = (*KeyedEngine.STATE, "_g_key", "_g_start", "_states", "_touched", "_raw_key",
             "_raw_start", "_raw_values")

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
        t, seq, key = self._read(batch)

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
            late = take(batch, late_rows)
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
        s = len(self._g_key)
        base = int(starts.min()) if not s else min(int(starts.min()), int(self._g_start.min()))
        # Every (window, key) pair has a code; rows find their open window by code, and the
        # pairs not open yet are appended to the open windows (their state the identity).
        code = (starts - base) // self.every * n_keys + key
        open_code = (self._g_start - base) // self.every * n_keys + self._g_key
        target, new_code = _assign(code, open_code)
        m = s + len(new_code)
        if len(new_code):
            self._g_key = np.concatenate([self._g_key, (new_code % n_keys).astype(np.intp)])
            self._g_start = np.concatenate(
                [self._g_start, (new_code // n_keys) * self.every + base])
            self._states = [
                concat_states([state, spec.agg.initial(len(new_code))]) if s
                else spec.agg.initial(len(new_code))
                for spec, state in zip(self._plain, self._states, strict=True)
            ]
        values: dict[str, npt.NDArray[np.float64]] = {}
        for c in {spec.column for spec in self._plain} | set(self._raw_columns):
            v = self._values(batch, c)
            values[c] = v if rows is None else v[rows]
        for i, spec in enumerate(self._plain):
            agg, state = spec.agg, self._states[i]
            if agg.accumulates:
                self._states[i] = agg.on_new(state, target, values[spec.column], t, seq)
            else:  # fold into fresh groups, then merge with the open state
                part = agg.on_new(agg.initial(m), target, values[spec.column], t, seq)
                both = np.concatenate([np.arange(m), np.arange(m)])
                self._states[i] = agg.merge(concat_states([state, part]), both, m)
        if self._holistic:
            self._raw_key = np.concatenate([self._raw_key, key])
            self._raw_start = np.concatenate([self._raw_start, starts])
            for c in self._raw_columns:
                self._raw_values[c] = np.concatenate([self._raw_values[c], values[c]])
        self._touched = np.zeros(m, dtype=bool)
        self._touched[target] = True

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
        wanted = (start - base) // self.every * n_keys + key
        raw = (self._raw_start - base) // self.every * n_keys + self._raw_key
        return self._holistic_from_rows(_positions(wanted, raw), self._raw_values, len(start))


def _table_fits(codes: int, items: int) -> bool:
    """Whether a lookup table over ``codes`` slots costs about what ``items`` lookups do."""
    return codes <= 8 * items + 4096


def _positions(wanted: npt.NDArray[np.int64], codes: npt.NDArray[np.int64]
               ) -> npt.NDArray[np.intp]:
    """Position of every code among the distinct ``wanted`` codes (-1: not wanted).

    ``pd.Index(wanted).get_indexer(codes)`` without building an Index per emission. Codes
    are >= 0; a small code range (the usual case: a few windows x the keys) uses a direct
    lookup table, a large one a binary search in the sorted wanted codes.
    """
    if not len(wanted) or not len(codes):
        return np.full(len(codes), -1, dtype=np.intp)
    hi = max(int(wanted.max()), int(codes.max())) + 1
    if _table_fits(hi, len(wanted) + len(codes)):
        table = np.full(hi, -1, dtype=np.intp)
        table[wanted] = np.arange(len(wanted))
        return table[codes]
    order = np.argsort(wanted)
    ordered = wanted[order]
    at = np.minimum(np.searchsorted(ordered, codes), len(ordered) - 1)
    return np.where(ordered[at] == codes, order[at], -1).astype(np.intp, copy=False)


def _assign(code: npt.NDArray[np.int64], open_code: npt.NDArray[np.int64]
            ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """Position of every ``code`` among ``open_code`` followed by the new codes (sorted).

    Returns the positions and the new codes. Codes are >= 0; a small code range uses a
    direct lookup table, a large one a binary search in the sorted open codes.
    """
    s = len(open_code)
    hi = int(code.max()) + 1
    if s:
        hi = max(hi, int(open_code.max()) + 1)
    if _table_fits(hi, len(code) + s):
        table = np.full(hi, -1, dtype=np.intp)
        table[open_code] = np.arange(s)
        target = table[code]
        missing = target < 0
        if not missing.any():
            return target, np.zeros(0, dtype=np.int64)
        mark = np.zeros(hi, dtype=bool)
        mark[code[missing]] = True
        new_code = np.flatnonzero(mark)
        table[new_code] = np.arange(s, s + len(new_code))
        return table[code], new_code.astype(np.int64)
    order = np.argsort(open_code)
    ordered = open_code[order]
    pos = np.minimum(np.searchsorted(ordered, code), max(s - 1, 0))
    found = (ordered[pos] == code) if s else np.zeros(len(code), dtype=bool)
    target = np.where(found, order[pos] if s else 0, -1).astype(np.intp)
    missing = ~found
    new_code = np.unique(code[missing])
    target[missing] = s + np.searchsorted(new_code, code[missing])
    return target.astype(np.intp, copy=False), new_code.astype(np.int64)
