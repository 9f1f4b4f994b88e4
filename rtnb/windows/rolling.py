"""Per-event rolling aggregations over event time, as ``groupby(key).rolling(window, on=time)``.

For every input row the output holds the aggregate of the same key's rows in
``(t - window, t]`` that arrived no later than it in event-time order, exactly what pandas
computes on the whole frame sorted by time. Rows wait until the watermark passes their time
(so disorder within the allowed lateness is put right); ready rows always come after every
row their key already has (they are at or after the watermark the earlier rows were released
at), so each key's window only ever gains rows at its end and loses them at its start.

Per key the engine keeps a ring buffer of the rows still in its window, running sums of the
values (and squares) for count/sum/mean/var/std, and monotonic deques for min/max, all in
shared pools (:mod:`rtnb.windows._rolling_kernels`). A batch's ready rows, all keys together,
go through one compiled loop in key, time, arrival order: each row pushes out the rows that
left its window, enters the ring and reads its window's aggregates, so a batch costs its own
rows (amortised), never a pass over the history. The running sums are compensated and
rebuilt exactly from the ring as rows go by (see the kernel module), so results stay within
rounding of pandas'. Memory is bounded by keys x the rows a key has in one window.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb._frames import column, take
from rtnb.errors import ConfigError
from rtnb.windows.base import NO_WATERMARK, build_frame, time_values_ns
from rtnb.windows.keys import KeyRegistry

__all__ = ["ROLLING_AGGS", "RollingAggregator", "RollingOutput"]

ROLLING_AGGS = ("count", "sum", "mean", "var", "std", "min", "max")
_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]
_END = np.iinfo(np.int64).max


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

    Rows leave ordered by key (code: order of first appearance), then event time (arrival
    order for equal times).

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

    #: What a :meth:`snapshot` holds: the scalars, the history (every key's ring, as arrays
    #: sorted by key, time, arrival: ``_h_key, _h_t, _h_seq, _h_v``) and the pending rows.
    #: The same layout as before the rings, so older snapshots restore.
    STATE: ClassVar[tuple[str, ...]] = (
        "max_time", "_watermark", "_seq", "late_total", "_h_key", "_h_t", "_h_seq", "_h_v",
        "_p_key", "_p_t", "_p_seq", "_p_v", "_p_frames")
    _SCALARS: ClassVar[tuple[str, ...]] = ("max_time", "_watermark", "_seq", "late_total")

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
        # pending: accepted rows waiting for the watermark (arrival order)
        self._p_key, self._p_t, self._p_seq, self._p_v = empty_i, empty_i, empty_i, np.zeros(0)
        self._p_frames: list[pd.DataFrame] = []
        self._deques = bool({"min", "max"} & set(hows))
        self._reset_rings()

    def _reset_rings(self) -> None:
        from rtnb.windows import _rolling_kernels as rk  # numba: imported on first use

        self._rk = rk
        self._want = np.array([rk.WANT[h] for h in self.hows], dtype=np.int64)
        self._meta = np.zeros((0, rk.N_META), dtype=np.int64)
        self._fs = np.zeros((0, rk.N_FS))
        q = 1024 if self._deques else 0
        self._pools: tuple[_I64, _F64, _I64, _I64] = (
            np.zeros(1024, dtype=np.int64), np.zeros(1024), np.zeros(q, dtype=np.int64),
            np.zeros(q, dtype=np.int64))
        self._used = np.zeros(1, dtype=np.int64)

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

    # -- checkpoints ---------------------------------------------------------------------------
    def _history(self) -> tuple[_I64, _I64, _I64, _F64]:
        """Every key's ring as arrays sorted by key, then time and arrival."""
        meta = self._meta
        pool_t, pool_v = self._pools[0], self._pools[1]
        cnt = meta[:, self._rk.CNT]
        total = int(cnt.sum())
        key = np.repeat(np.arange(len(meta), dtype=np.int64), cnt)
        first = np.repeat(meta[:, self._rk.TOT] - cnt - np.cumsum(cnt) + cnt, cnt)
        a = first + np.arange(total, dtype=np.int64)  # each row's number within its key
        pos = meta[key, self._rk.OFF] + (a & (meta[key, self._rk.CAP] - 1))
        # history rows came before every pending row: numbered just below them
        low = int(self._p_seq.min()) if len(self._p_seq) else self._seq
        seq = np.arange(low - total, low, dtype=np.int64)
        return key, pool_t[pos].copy(), seq, pool_v[pos].copy()

    def snapshot(self) -> dict[str, Any]:
        """The aggregator's data state (history, pending rows, keys), for a checkpoint."""
        state: dict[str, Any] = {name: getattr(self, name) for name in self._SCALARS}
        state["_h_key"], state["_h_t"], state["_h_seq"], state["_h_v"] = self._history()
        for name in ("_p_key", "_p_t", "_p_seq", "_p_v", "_p_frames"):
            state[name] = getattr(self, name)
        state["keys"] = self.keys.snapshot()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back into this (freshly built, identically configured) one.

        The history rows go into fresh rings in their order (key, time, arrival), as if they
        had arrived again: the running sums and deques are rebuilt from them.
        """
        missing = [n for n in (*self.STATE, "keys") if n not in state]
        if missing:
            msg = f"{type(self).__name__} state lacks {missing!r}"
            raise ValueError(msg)
        for name in (*self._SCALARS, "_p_key", "_p_t", "_p_seq", "_p_v", "_p_frames"):
            setattr(self, name, state[name])
        self.keys.restore(state["keys"])
        self._reset_rings()
        key = np.asarray(state["_h_key"], dtype=np.int64)
        t = np.asarray(state["_h_t"], dtype=np.int64)
        v = np.asarray(state["_h_v"], dtype=np.float64)
        if len(key):
            o = np.lexsort((np.asarray(state["_h_seq"]), t, key))
            key, t, v = key[o], t[o], v[o]
            self._grow(int(key.max()) + 1)
            self._pools = self._rk.load_rows(key, t, v, self._meta, self._fs, self._pools,
                                             self._used, self.window_ns, self._deques)

    # -- batches -------------------------------------------------------------------------------
    def process(self, batch: pd.DataFrame) -> RollingOutput:
        """Accept one batch; return the rows the advanced watermark made final."""
        n = len(batch)
        if n == 0:
            return RollingOutput(None, None)
        t = time_values_ns(column(batch, self.time))
        key = self.keys.codes(batch)
        values = column(batch, self.column)
        if isinstance(values, np.ndarray) and values.dtype == np.float64:
            v = values  # NaN is float64's own missing value: no conversion
        else:
            v = pd.Series(values, copy=False).to_numpy(dtype=np.float64, na_value=np.nan)
        first_seq = self._seq
        self._seq += n
        late = None
        t_max = int(t.max())
        if int(t.min()) < self._watermark:
            late_mask = t < self._watermark
            late = take(batch, late_mask)
            self.late_total += int(late_mask.sum())
            keep = np.flatnonzero(~late_mask)
            t, key, v = t[keep], key[keep], v[keep]
            seq = first_seq + keep.astype(np.int64)
            t_max = int(t.max()) if len(t) else NO_WATERMARK
        else:
            seq = None
        if len(t):
            self.max_time = max(self.max_time, t_max)
            self._watermark = max(self._watermark, self.max_time - self.allowed_lateness_ns)
        if not len(self._p_t) and (not len(t) or t_max <= self._watermark):
            # nothing waits and every row is ready (always so without allowed lateness)
            return RollingOutput(self._compute(key, t, v) if len(t) else None, late)
        if seq is None:
            seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
        self._p_key = np.concatenate([self._p_key, key])
        self._p_t = np.concatenate([self._p_t, t])
        self._p_seq = np.concatenate([self._p_seq, seq])
        self._p_v = np.concatenate([self._p_v, v])
        return RollingOutput(self._release(self._p_t <= self._watermark), late)

    def flush(self) -> RollingOutput:
        """End of stream: every pending row is computed and emitted; the history is dropped."""
        self._watermark = _END
        rows = self._release(np.ones(len(self._p_t), dtype=bool))
        self._reset_rings()
        return RollingOutput(rows, None)

    def _release(self, ready: npt.NDArray[np.bool_]) -> pd.DataFrame | None:
        if not ready.any():
            return None
        r_key, r_t, r_v = self._p_key[ready], self._p_t[ready], self._p_v[ready]
        wait = ~ready
        self._p_key, self._p_t = self._p_key[wait], self._p_t[wait]
        self._p_seq, self._p_v = self._p_seq[wait], self._p_v[wait]
        return self._compute(r_key, r_t, r_v)  # pending rows are in arrival order

    def _grow(self, n_keys: int) -> None:
        have = len(self._meta)
        if n_keys > have:
            rk = self._rk
            self._meta = np.concatenate(
                [self._meta, np.zeros((n_keys - have, rk.N_META), dtype=np.int64)])
            self._fs = np.concatenate([self._fs, np.tile(rk.FS_INIT, (n_keys - have, 1))])

    def _compute(self, key: npt.NDArray[Any], t: _I64, v: _F64) -> pd.DataFrame:
        """Ready rows (in arrival order) through their keys' windows: the output frame."""
        rk = self._rk
        key = key.astype(np.int64, copy=False)
        n_keys = len(self.keys)
        self._grow(n_keys)
        order = rk.group_rows(key, t, n_keys)
        out = np.empty((len(self.hows), len(t)))
        self._pools = rk.roll_rows(order, key, t, np.ascontiguousarray(v), self._meta,
                                   self._fs, self._pools, self._used, self.window_ns,
                                   self.min_periods, self._want, self._deques, out)
        o_key = key[order]
        cols: dict[str, Any] = {self.time: t[order].view("datetime64[ns]")}
        for c in self.by:
            cols[c] = self.keys.array(c, o_key)
        for j, how in enumerate(self.hows):
            cols[self.names[how]] = out[j]
        return build_frame(cols, len(t))
