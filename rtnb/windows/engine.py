"""The event-time window engine: compiled per-batch folds, bounded state, watermarks, late data.

:class:`WindowAggregator` is plain Python over numpy and a few numba kernels
(:mod:`rtnb.windows._kernels`); the streamz node in :mod:`rtnb.frame` only feeds it batches.
Per batch it

1. assigns every row to its windows (a sliding window's row lies in ``size / every`` of
   them, a tumbling one is the case ``every == size``) and finds each (key, window)'s slot
   in a hash table, opening the missing ones, all in one compiled pass over the rows;
2. sends rows one of whose windows already closed (window end <= watermark *before* the
   batch) to the ``late`` output (their open windows still count them);
3. folds the rows into the open windows' state in the same pass: count/sum/mean/min/max as
   one fused update per value column, the values of holistic ones (exact quantiles)
   appended to the open windows' raw rows; other aggregations through
   ``Aggregation.on_new`` on the (row, slot) pairs the pass returns;
4. advances the watermark (max event time folded - allowed lateness) and, in a second
   compiled pass over the open windows, reads the results of those whose end it passed
   and packs the others; the output frame is built from a few blocks planned once.

Only open windows are kept, so memory is bounded by keys x open windows, not stream length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb._frames import take
from rtnb.aggregations import (
    Count,
    Max,
    Mean,
    Min,
    Quantile,
    State,
    Sum,
    concat_states,
    take_state,
)
from rtnb.windows.base import (
    END_OF_STREAM,
    NO_WATERMARK,
    NOTHING,
    AggSpec,
    FrameLayout,
    KeyedEngine,
    WindowOutput,
    build_frame,
    restore_attributes,
    time_ns,
)
from rtnb.windows.specs import Sliding, Tumbling

__all__ = ["NO_WATERMARK", "AggSpec", "WindowAggregator", "WindowOutput", "time_ns"]

#: The aggregations folded by the compiled kernel (exact types: a subclass may change them).
_FUSED: dict[type, str] = {Count: "count", Sum: "sum", Mean: "mean", Min: "min", Max: "max"}
_NO_INTS = np.zeros(0, dtype=np.int64)
_NO_BOOLS = np.zeros(0, dtype=np.bool_)
_NO_FLOATS = np.zeros((0, 0))
_INT64 = np.dtype(np.int64)
_MIN_TABLE = 64


def _power_of_two(n: int) -> int:
    return max(_MIN_TABLE, 1 << (max(n, 1) - 1).bit_length())


def _compiled() -> Any:
    """The engine's numba kernels, imported on first use (``import rtnb`` loads no numba)."""
    from rtnb.windows import _kernels

    return _kernels


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

    Notes
    -----
    The open (key, window) pairs live in *slots* of preallocated arrays (capacity doubled
    when a batch could need more), found through a hash table on (window start, key code);
    see :mod:`rtnb.windows._kernels`. Per batch, one compiled pass over the rows (a sliding
    window's row visits its ``size / every`` windows in the loop, no rows are copied) finds
    or opens every row's slots, marks rows whose window already closed as late, and folds
    the built-in count/sum/mean/min/max of each value column into one fused state per slot
    (count, sum, min, max, in arrival order). Other aggregations (``var``, ``first``, custom
    ones) get the (row, slot) pairs the pass wrote and fold them with
    ``Aggregation.on_new`` on their slot arrays (an aggregation whose ``on_new`` does not
    accumulate gets fresh groups, merged with ``Aggregation.merge``). Holistic ones (exact
    quantiles) keep each folded row's value and slot, appended in the same pass; at
    emission a counting sort by output window and a sort within each window give each
    window's sorted values, interpolated in the kernel for the built-in ``Quantile`` and fed
    to ``Aggregation.result_sorted`` for other holistic aggregations.

    The watermark (max event time folded - allowed lateness) then closes the windows whose
    end it passed: their results are read from the slots, and the open slots are packed to
    the front (the hash table rebuilt from them), so the work per batch follows the rows and
    the open windows, and memory is bounded by keys x open windows, not stream length.

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

    #: What :meth:`snapshot` saves (the open windows as arrays, one entry per open window,
    #: as the slots hold them; see :meth:`snapshot`).
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
        fused_cols: list[str] = []
        self._fused_specs: list[tuple[AggSpec, str, int]] = []
        self._generic: list[AggSpec] = []
        for a in self._plain:
            kind = _FUSED.get(type(a.agg))
            if kind is None:
                self._generic.append(a)
                continue
            if a.column not in fused_cols:
                fused_cols.append(a.column)
            self._fused_specs.append((a, kind, fused_cols.index(a.column)))
        self._fused_cols = fused_cols
        self._generic_cols = sorted({a.column for a in self._generic})
        self._pairs = bool(self._generic)
        self._plan_emission()
        self._configure()

    def _plan_emission(self) -> None:
        """What :func:`~rtnb.windows._kernels.close` computes, and the output's blocks.

        The fused aggregations and exact quantiles come out of the kernel as rows of one
        float64 and one int64 array (in column order); the other aggregations through
        their ``result`` / ``result_sorted``.
        """
        kernels = self._kernels = _compiled()
        kinds = {"count": kernels.COUNT, "sum": kernels.SUM, "mean": kernels.MEAN,
                 "min": kernels.MIN, "max": kernels.MAX}
        fused = {id(spec): (kind, c) for spec, kind, c in self._fused_specs}
        floats: list[str] = []
        ints: list[str] = []
        plan: list[tuple[int, int, int]] = []
        q_plan: list[tuple[int, int]] = []
        quantiles: list[float] = []
        self._sorted_specs: list[AggSpec] = []
        for spec in self.aggs:
            if id(spec) in fused:
                kind, c = fused[id(spec)]
                out = ints if kind == "count" else floats
                plan.append((kinds[kind], c, len(out)))
                out.append(spec.name)
            elif type(spec.agg) is Quantile:
                q_plan.append((self._raw_columns.index(spec.column), len(floats)))
                quantiles.append(spec.agg.q)
                floats.append(spec.name)
            elif spec.agg.holistic:
                self._sorted_specs.append(spec)
        self._plan = np.array(plan, dtype=np.int64).reshape(-1, 3)
        self._q_plan = np.array(q_plan, dtype=np.int64).reshape(-1, 2)
        self._quantiles = np.array(quantiles, dtype=np.float64)
        self._layout = FrameLayout(self.by, [a.name for a in self.aggs], floats, ints)

    # -- configuration ---------------------------------------------------------------------
    def _configure(self) -> None:
        self.size, self.every, self.offset = self.spec.bounds_ns()
        self._copies = -(-self.size // self.every)  # ceil
        self._reset_state()

    def _reset_state(self) -> None:
        self._m = 0  # open slots: 0 .. _m - 1
        self._cap = 0
        self._slot_key = np.zeros(0, dtype=np.int64)
        self._slot_start = np.zeros(0, dtype=np.int64)
        self._fused = np.zeros((4 * len(self._fused_cols), 0))
        self._gstates: list[State] = [
            {f: np.zeros((0, *v.shape[1:]), dtype=v.dtype)
             for f, v in a.agg.initial(0).items()} for a in self._generic]
        self._track = self.emit != "final"
        self._touched_buf = np.zeros(0, dtype=bool)
        self._table = np.full(_MIN_TABLE, -1, dtype=np.int64)
        self._most = 0  # the last batch's bound on new slots (sizes the hash table)
        self._r = 0  # raw rows held for holistic aggregations
        self._raw_slot = np.zeros(0, dtype=np.int64)
        self._raw_vals = np.zeros((len(self._raw_columns), 0))

    def _grow(self, need: int) -> None:
        """Make room for ``need`` slots (capacity at least doubles; open slots kept)."""
        cap = max(need, 2 * self._cap, 16)
        m = self._m

        def regrow(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            out = np.empty((*a.shape[:-1], cap), dtype=a.dtype)
            out[..., :m] = a[..., :m]
            return out

        self._slot_key, self._slot_start = regrow(self._slot_key), regrow(self._slot_start)
        self._fused = regrow(self._fused)
        for st in self._gstates:
            for f, v in st.items():
                out = np.empty((cap, *v.shape[1:]), dtype=v.dtype)
                out[:m] = v[:m]
                st[f] = out
        if self._track:
            touched = np.zeros(cap, dtype=bool)
            touched[:m] = self._touched_buf[:m]
            self._touched_buf = touched
        self._cap = cap

    def _size_table(self, need: int) -> None:
        """A hash table with room for ``need`` slots at load <= 1/2, rebuilt from the slots."""
        size = len(self._table)
        if 2 * need > size or (size > 4 * _power_of_two(4 * need) and size > _MIN_TABLE):
            self._table = np.empty(_power_of_two(4 * need), dtype=np.int64)
        _compiled().rebuild(self._table, self._slot_key, self._slot_start, self._m)

    def reconfigure(self, spec: Tumbling | Sliding) -> pd.DataFrame | None:
        """Switch to a new window spec; open windows are emitted first (nothing is lost).

        Events that arrive later for the windows emitted here count as late.
        """
        m = self._m
        out = None
        if m:
            self._floor = max(self._floor, int(self._slot_start[:m].max()) + self.size)
            out = self._close(everything=True)
        self.spec = spec
        self._configure()
        return out

    @property
    def open_windows(self) -> int:
        """How many (key, window) pairs are open."""
        return self._m

    @property
    def _g_key(self) -> npt.NDArray[np.int64]:
        """The open windows' key codes (a view of the slots)."""
        return self._slot_key[:self._m]

    @property
    def _g_start(self) -> npt.NDArray[np.int64]:
        """The open windows' starts (a view of the slots)."""
        return self._slot_start[:self._m]

    @property
    def _raw_key(self) -> npt.NDArray[np.int64]:
        """The key code of every row held for holistic aggregations."""
        return self._slot_key[self._raw_slot[:self._r]]

    @property
    def _raw_start(self) -> npt.NDArray[np.int64]:
        """The window start of every row held for holistic aggregations."""
        return self._slot_start[self._raw_slot[:self._r]]

    # -- processing ------------------------------------------------------------------------
    def process(self, batch: pd.DataFrame) -> WindowOutput:
        """Fold one micro-batch in; return the windows it closed (or updated) and late rows."""
        t = self._times(batch)
        # the usual arrays (a row of the batch's time block, the codes just made) are passed
        # as they are; anything else is made a contiguous int64 copy
        if type(t) is not np.ndarray or t.dtype != _INT64 or not t.flags.c_contiguous:
            t = np.ascontiguousarray(t, dtype=np.int64)
        n = len(t)  # a numpy length: len(batch) goes through pandas' index (~0.3 us)
        if n == 0:
            return NOTHING
        key = self.keys.codes(batch)
        if type(key) is not np.ndarray or key.dtype != _INT64 or not key.flags.c_contiguous:
            key = np.ascontiguousarray(key, dtype=np.int64)
        values = self._matrix(batch, self._fused_cols, n)
        raw_in = self._matrix(batch, self._raw_columns, n)
        m, r = self._m, self._r
        most = n * self._copies  # a new window per (row, window) at most
        if m + most > self._cap:
            self._grow(m + most)
        self._most = most
        if 2 * (m + most) > len(self._table):
            self._size_table(m + most)
        if self._raw_columns and r + most > self._raw_slot.shape[0]:
            self._grow_raw(r + most)
        if self._pairs:
            pair_row, pair_slot = np.empty(most, dtype=np.int64), np.empty(most, dtype=np.int64)
        else:
            pair_row = pair_slot = _NO_INTS
        late_mask = np.zeros(n, dtype=bool)
        track = self._track
        m_new, p, n_late, t_max, self._r, n_done = self._kernels.fold(
            t, key, self.size, self.every, self.offset, self._copies, self._watermark,
            self._floor, self._table, self._slot_key, self._slot_start, m, values,
            self._fused, self._touched_buf if track else _NO_BOOLS, track, pair_row,
            pair_slot, self._pairs, late_mask, raw_in, self._raw_slot, self._raw_vals, r,
            self.max_time, self.allowed_lateness_ns)
        self._m = m_new
        late = None
        if n_late:
            late = take(batch, late_mask)
            self.late_total += n_late
        if p:
            self._fold_generic(batch, pair_row[:p], pair_slot[:p], t, self._next_seq(n), m,
                               m_new)
        else:
            self._seq += n
        if t_max != NO_WATERMARK:  # the watermark follows the rows folded into some window
            if t_max > self.max_time:
                self.max_time = t_max
            if not self.held and self.max_time - self.allowed_lateness_ns > self._watermark:
                self._watermark = self.max_time - self.allowed_lateness_ns
        if self.held:  # windows close when the driver says (take_closed)
            return WindowOutput(None, late)
        if n_done or (track and m_new):
            return WindowOutput(self._close(), late)
        return NOTHING if late is None else WindowOutput(None, late)

    def _matrix(self, batch: pd.DataFrame, columns: list[str], n: int
                ) -> npt.NDArray[np.float64]:
        """The ``columns`` of ``batch`` as rows of one C-contiguous float64 array."""
        if len(columns) == 1:
            values = self._values(batch, columns[0])
            if not values.flags.c_contiguous:
                values = np.ascontiguousarray(values)
            return values.reshape(1, n)
        if columns:
            return np.vstack([self._values(batch, c) for c in columns])
        return _NO_FLOATS

    def _grow_raw(self, need: int) -> None:
        """Room for ``need`` raw rows (capacity at least doubles; held rows kept)."""
        r = self._r
        cap = max(need, 2 * self._raw_slot.shape[0], 64)
        raw_slot = np.empty(cap, dtype=np.int64)
        raw_slot[:r] = self._raw_slot[:r]
        raw_vals = np.empty((len(self._raw_columns), cap))
        raw_vals[:, :r] = self._raw_vals[:, :r]
        self._raw_slot, self._raw_vals = raw_slot, raw_vals

    def _fold_generic(self, batch: pd.DataFrame, rows: npt.NDArray[np.int64],
                      slots: npt.NDArray[np.int64], t: npt.NDArray[np.int64],
                      seq: npt.NDArray[np.int64], m_old: int, m: int) -> None:
        """The (row, slot) pairs into the aggregations the kernel does not fold."""
        values = {c: self._values(batch, c)[rows] for c in self._generic_cols}
        t_p, seq_p = t[rows], seq[rows]
        for spec, st in zip(self._generic, self._gstates, strict=True):
            agg = spec.agg
            if m > m_old:
                for f, v in agg.initial(m - m_old).items():
                    st[f][m_old:m] = v
            view = {f: v[:m] for f, v in st.items()}
            if agg.accumulates:
                new = agg.on_new(view, slots, values[spec.column], t_p, seq_p)
            else:  # fold into fresh groups, then merge with the open state
                part = agg.on_new(agg.initial(m), slots, values[spec.column], t_p, seq_p)
                both = np.concatenate([np.arange(m), np.arange(m)])
                new = agg.merge(concat_states([view, part]), both, m)
            for f, v in new.items():
                if v is not view.get(f):
                    st[f][:m] = v

    def flush(self) -> WindowOutput:
        """End of stream: the watermark goes to +inf and every open window is emitted."""
        self._watermark = END_OF_STREAM
        if not self._m:
            return WindowOutput(None, None)
        return WindowOutput(self._close(everything=True), None)

    # -- emission --------------------------------------------------------------------------
    def _close(self, everything: bool = False) -> pd.DataFrame | None:
        """Emit the windows the watermark passed (all with ``everything``) and drop them.

        With ``emit="update"`` the windows the last batch touched are reported too. The
        rows come out ordered by (window start, key code); see
        :func:`~rtnb.windows._kernels.close`, which also packs the open slots.
        """
        m, layout = self._m, self._layout
        idx, times, key, floats, ints, vals, starts, counts, m_new, r, kept = \
            self._kernels.close(
                self._slot_key, self._slot_start, m, self.size, self._watermark, everything,
                self._fused, self._plan, len(layout.floats), len(layout.ints),
                self._touched_buf if self._track else _NO_BOOLS, self._track, self._table,
                self._raw_slot, self._raw_vals, self._r, self._quantiles, self._q_plan)
        frame = None
        if len(idx):
            others: dict[str, Any] = {}
            for spec, st in zip(self._generic, self._gstates, strict=True):
                others[spec.name] = spec.agg.result(take_state(st, idx))
            for spec in self._sorted_specs:
                c = self._raw_columns.index(spec.column)
                others[spec.name] = spec.agg.result_sorted(vals, starts[c], counts[c])
            if len(others) > 1:  # in column order
                others = {a.name: others[a.name] for a in self.aggs if a.name in others}
            keys = [self._key_array(c, key) for c in self.by]
            self.emitted_total += len(idx)
            frame = layout.frame(times, keys, floats, ints, others)
        if m_new < m:
            for st in self._gstates:
                for v in st.values():
                    v[:m_new] = v[kept]
            self._m, self._r = m_new, r
            need = m_new + self._most
            size = len(self._table)
            if 2 * need > size or (size > 4 * _power_of_two(4 * need) and size > _MIN_TABLE):
                self._size_table(need)
        return frame

    # -- partitioned execution (rtnb.distributed) -------------------------------------------
    #: ``True`` for a partition's engine on a Dask worker: the watermark is the driver's
    #: (:meth:`advance_to`), and closed windows leave as partial states (:meth:`take_closed`)
    #: that the driver merges with the other partitions' (:meth:`merge_closed`).
    held = False

    def hold(self) -> None:
        """Close windows only when told: :meth:`advance_to`, then :meth:`take_closed`.

        A partition's engine folds its rows and marks as late those whose window the
        driver's watermark (the minimum over the partitions) already closed; its own newest
        event time (``max_time``) goes to the driver, which computes that watermark.
        """
        if self.emit != "final":
            msg = "a window with emit='update' cannot be split over partitions (use 'final')"
            raise ValueError(msg)
        self.held = True

    def advance_to(self, watermark_ns: int) -> None:
        """Move the watermark to ``watermark_ns`` (never backwards)."""
        self._watermark = max(self._watermark, watermark_ns)

    def take_closed(self, everything: bool = False) -> dict[str, Any] | None:
        """The windows the watermark passed (all with ``everything``) as partial states.

        They leave the engine. The partial holds, per closed (key, window): ``start``, the
        key values (``keys``, one array per ``by`` column), every plain aggregation's state
        (``states``, as its class lays it out, for :meth:`Aggregation.merge`) and, for exact
        quantiles, the raw values with their window start and key (``raw_*``).

        Examples
        --------
        >>> from rtnb.aggregations import Mean
        >>> from rtnb.windows.specs import tumbling
        >>> df = pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:01",
        ...     "2026-01-01 00:00:02", "2026-01-01 00:00:12"]), "x": [1.0, 3.0, 5.0]})
        >>> def partition():
        ...     eng = WindowAggregator(tumbling("10s"), time="t", by=[],
        ...                            aggs=[AggSpec("mean", "x", Mean())], example=df.iloc[:0])
        ...     eng.hold()
        ...     return eng
        >>> a, b = partition(), partition()
        >>> _ = a.process(df.iloc[:1]); _ = b.process(df.iloc[1:])
        >>> for eng in (a, b):  # the driver's watermark: the minimum over the partitions
        ...     eng.advance_to(pd.Timestamp("2026-01-01 00:00:10").value)
        >>> merged = a.merge_closed([a.take_closed(), b.take_closed()])
        >>> merged["window_end"].tolist(), merged["mean"].tolist()
        ([Timestamp('2026-01-01 00:00:10')], [2.0])
        >>> b.open_windows  # [00:00:10, 00:00:20) stays open on b
        1
        """
        m, r = self._m, self._r
        if not m:
            return None
        starts = self._slot_start[:m]
        done = np.ones(m, dtype=bool) if everything else starts + self.size <= self._watermark
        idx = np.flatnonzero(done)
        if not len(idx):
            return None
        keep = np.flatnonzero(~done)
        codes = self._slot_key[idx]
        states = self._plain_states(idx)
        raw_slot = self._raw_slot[:r]
        raw_done = done[raw_slot]
        closed_raw = raw_slot[raw_done]
        partial: dict[str, Any] = {
            "start": starts[idx].copy(),
            "keys": {c: self.keys.array(c, codes) for c in self.by},
            "states": states,
            "raw_start": self._slot_start[closed_raw],
            "raw_keys": {c: self.keys.array(c, self._slot_key[closed_raw]) for c in self.by},
            "raw_values": {c: self._raw_vals[i, :r][raw_done]
                           for i, c in enumerate(self._raw_columns)},
        }
        # pack the open windows (and their raw rows) to the front
        n_keep = len(keep)
        self._slot_key[:n_keep] = self._slot_key[keep]
        self._slot_start[:n_keep] = self._slot_start[keep]
        self._fused[:, :n_keep] = self._fused[:, keep]
        for st in self._gstates:
            for v in st.values():
                v[:n_keep] = v[keep]
        if self._track:
            self._touched_buf[:n_keep] = self._touched_buf[keep]
        if r:
            where = np.full(m, -1, dtype=np.int64)
            where[keep] = np.arange(n_keep)
            kept_raw = ~raw_done
            n_raw = int(kept_raw.sum())
            self._raw_slot[:n_raw] = where[raw_slot[kept_raw]]
            self._raw_vals[:, :n_raw] = self._raw_vals[:, :r][:, kept_raw]
            self._r = n_raw
        self._m = n_keep
        self._size_table(n_keep + self._most)
        return partial

    def _plain_states(self, slots: Any) -> list[State]:
        """Copies of every plain aggregation's state for ``slots`` (a slice or indices).

        Laid out as each aggregation's class keeps it (the fused ones from the fused array).
        """
        fused = {id(spec): (kind, c) for spec, kind, c in self._fused_specs}
        generic = {id(spec): st for spec, st in zip(self._generic, self._gstates, strict=True)}
        states: list[State] = []
        for spec in self._plain:
            if id(spec) in fused:
                kind, c = fused[id(spec)]
                states.append(_fused_state(self._fused[:, slots], kind, c))
            else:
                states.append({f: v[slots].copy() for f, v in generic[id(spec)].items()})
        return states

    def merge_closed(self, partials: list[dict[str, Any] | None]) -> pd.DataFrame | None:
        """The windows of several :meth:`take_closed` partials, merged (``None``: none).

        The same (key, window) from several partitions is one row: each aggregation's
        partial states merged with :meth:`Aggregation.merge` (mean as sum and count,
        variance by the parallel formula), exact quantiles over the partitions' raw values
        together. Rows come ordered by (window start, key); columns and dtypes are this
        engine's output.
        """
        parts = [p for p in partials if p is not None and len(p["start"])]
        if not parts:
            return None
        start = np.concatenate([p["start"] for p in parts])
        columns = {"window_start": start, **{c: _concat([p["keys"][c] for p in parts])
                                             for c in self.by}}
        windows = pd.DataFrame(columns, copy=False)
        groups = np.asarray(windows.groupby(list(columns), sort=True, dropna=False).ngroup(),
                            dtype=np.intp)
        n = int(groups.max()) + 1
        first = np.empty(n, dtype=np.intp)
        first[groups[::-1]] = np.arange(len(groups) - 1, -1, -1)
        results: dict[str, Any] = {}
        for i, spec in enumerate(self._plain):
            state = concat_states([p["states"][i] for p in parts])
            results[spec.name] = spec.agg.result(spec.agg.merge(state, groups, n))
        if self._holistic:
            unique = windows.iloc[first].reset_index(drop=True)
            raw = pd.DataFrame({"window_start": np.concatenate([p["raw_start"] for p in parts]),
                                **{c: _concat([p["raw_keys"][c] for p in parts])
                                   for c in self.by}}, copy=False)
            pos = pd.MultiIndex.from_frame(unique).get_indexer(pd.MultiIndex.from_frame(raw)) \
                if self.by else pd.Index(unique["window_start"]).get_indexer(raw["window_start"])
            values = {c: np.concatenate([p["raw_values"][c] for p in parts])
                      for c in self._raw_columns}
            results.update(self._holistic_from_rows(np.asarray(pos, dtype=np.intp), values, n))
        out: dict[str, Any] = {
            "window_start": start[first].view("datetime64[ns]"),
            "window_end": (start[first] + self.size).view("datetime64[ns]"),
        }
        for c in self.by:
            out[c] = columns[c][first]
        for spec in self.aggs:
            out[spec.name] = results[spec.name]
        self.emitted_total += n
        return build_frame(out, n)

    # -- checkpoints -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The engine's data state, for a checkpoint (copies; the engine keeps running).

        The open windows as arrays with one entry per open (key, window): ``_g_key``,
        ``_g_start``, every plain aggregation's state (``_states``, in the order of the
        aggregations; the fused ones as their own classes lay their state out), ``_touched``,
        and the rows held for holistic aggregations (``_raw_key``, ``_raw_start``,
        ``_raw_values``).
        """
        m, r = self._m, self._r
        state: dict[str, Any] = {name: getattr(self, name) for name in KeyedEngine.STATE}
        state["_g_key"] = self._slot_key[:m].astype(np.intp)
        state["_g_start"] = self._slot_start[:m].copy()
        state["_states"] = self._plain_states(slice(0, m))
        state["_touched"] = (self._touched_buf[:m].copy() if self._track
                             else np.zeros(m, dtype=bool))
        raw = self._raw_slot[:r]
        state["_raw_key"] = self._slot_key[raw].astype(np.intp)
        state["_raw_start"] = self._slot_start[raw]
        state["_raw_values"] = {c: self._raw_vals[i, :r].copy()
                                for i, c in enumerate(self._raw_columns)}
        state["keys"] = self.keys.snapshot()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back into this (freshly built, identically configured) engine."""
        missing = [n for n in self.STATE if n not in state]
        if missing:
            msg = f"{type(self).__name__} state lacks {missing!r}"
            raise ValueError(msg)
        restore_attributes(self, KeyedEngine.STATE, state)
        self._key_cache = {}
        self._reset_state()
        g_key = np.asarray(state["_g_key"], dtype=np.int64)
        m = len(g_key)
        self._grow(m)
        self._slot_key[:m] = g_key
        self._slot_start[:m] = state["_g_start"]
        for c in range(len(self._fused_cols)):
            self._fused[4 * c:4 * c + 2, :m] = 0.0
            self._fused[4 * c + 2, :m] = np.inf
            self._fused[4 * c + 3, :m] = -np.inf
        fused = {id(spec): (kind, c) for spec, kind, c in self._fused_specs}
        generic = {id(spec): st for spec, st in zip(self._generic, self._gstates, strict=True)}
        for spec, saved in zip(self._plain, state["_states"], strict=True):
            if id(spec) in fused:
                kind, c = fused[id(spec)]
                _restore_fused(self._fused[:, :m], kind, c, saved)
            else:
                for f, v in generic[id(spec)].items():
                    v[:m] = saved[f]
        if self._track:
            self._touched_buf[:m] = state["_touched"]
        self._m = m
        self._size_table(m)
        if self._holistic and len(state["_raw_key"]):
            where = {(int(k), int(s)): i for i, (k, s) in enumerate(
                zip(g_key.tolist(), self._slot_start[:m].tolist(), strict=True))}
            slots = np.array([where[(k, s)] for k, s in zip(
                np.asarray(state["_raw_key"]).tolist(),
                np.asarray(state["_raw_start"]).tolist(), strict=True)], dtype=np.int64)
            r = len(slots)
            self._raw_slot = slots
            self._raw_vals = np.vstack([np.asarray(state["_raw_values"][c], dtype=np.float64)
                                        for c in self._raw_columns])
            self._r = r


def _concat(arrays: list[Any]) -> Any:
    """Key arrays (numpy or pandas extension arrays of one dtype) end to end."""
    if isinstance(arrays[0], np.ndarray):
        return np.concatenate(arrays)
    return type(arrays[0])._concat_same_type(arrays)


def _fused_result(fused: npt.NDArray[np.float64], kind: str, c: int,
                  idx: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
    """A fused aggregation's result for the slots ``idx`` (as its class's ``result``)."""
    if kind == "count":
        counts: npt.NDArray[np.int64] = fused[4 * c, idx].astype(np.int64)
        return counts
    if kind == "sum":
        sums: npt.NDArray[np.float64] = fused[4 * c + 1, idx]
        return sums
    if kind == "mean":
        n, s = fused[4 * c, idx], fused[4 * c + 1, idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / n, np.nan)
    if kind == "min":
        v = fused[4 * c + 2, idx]
        return np.where(v == np.inf, np.nan, v)
    v = fused[4 * c + 3, idx]
    return np.where(v == -np.inf, np.nan, v)


def _fused_state(fused: npt.NDArray[np.float64], kind: str, c: int) -> State:
    """A fused aggregation's state laid out as its class keeps it (a copy)."""
    if kind == "count":
        return {"n": fused[4 * c].astype(np.int64)}
    if kind == "sum":
        return {"s": fused[4 * c + 1].copy()}
    if kind == "mean":
        return {"n": fused[4 * c].copy(), "s": fused[4 * c + 1].copy()}
    return {"v": fused[4 * c + (2 if kind == "min" else 3)].copy()}


def _restore_fused(fused: npt.NDArray[np.float64], kind: str, c: int, saved: State) -> None:
    if kind in ("count", "mean"):
        fused[4 * c] = saved["n"]
    if kind in ("sum", "mean"):
        fused[4 * c + 1] = saved["s"]
    if kind in ("min", "max"):
        fused[4 * c + (2 if kind == "min" else 3)] = saved["v"]


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
