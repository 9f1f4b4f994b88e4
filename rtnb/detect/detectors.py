"""The detectors. Each scores a row against its key's state *before* the row, then learns it.

Rows of one key are taken in arrival order. For the windowed detectors (ZScore, MAD,
RollingQuantile) the window is either the key's last ``n`` learned values
(``window=rtnb.rows(n)``, the default: the same detector serves 1-second and 1-hour
sampling) or a duration of event time (``window="30min"``). The scores equal pandas
computing the same statistic on the whole series, whatever the batch split: per key,
``shift(1).rolling(n)`` over the non-missing values for a row window, and
``rolling(window, closed="left")`` for a duration (rows of the same time do not see each
other) when the rows come in event-time order per key. A row whose time is before its
key's latest learned time is taken as if it came at that latest time (scored against the
window as it stands, learned with that time) and counted in the detector's ``out_of_order``
attribute.

Scales are floored (standard deviation, MAD, quantile: at least ``1e-9 * |level|`` and
``1e-12``), so after a perfectly flat history a departure scores large but finite and the
flat value itself scores 0. With ``protect=True`` (ZScore, MAD, RollingQuantile, EWMA and
RateOfChange's robust score) a flagged row is not learned while its key's held-out count is
below ``min_periods`` (at least 1); the count goes up by one per held-out row and down by
one per normal row (never below 0). Once it reaches ``min_periods``, flagged rows are
learned too: a lasting shift becomes the new normal, while isolated spikes and short
incidents stay out of the state.

A detector that has taken 10,000 rows of one key and scored none (every score ``NaN``, for
instance a duration window too short for the data's sampling) warns once
(:class:`WarmUpWarning`, also logged).

A batch is scored in one compiled call over its rows in arrival order (numba,
:mod:`rtnb.detect._kernels`), every key at once: each key code has a *slot*, and the state
of every key lives in arrays indexed by slot (an EWMA's mean, variance and count; the last
row for RateOfChange; for the windowed detectors a ring buffer of the window's values in
shared pools, with running sums or the values sorted), so a batch costs time in proportion
to its rows, not to its keys or to the window's length.

A value of +/-inf is scored (its score is +/-inf: anomalous) and never learned, so one bad
value cannot poison a key's state; a missing value (NaN) is neither scored nor learned.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb import _frames, _record
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve
from rtnb.stateful import Output
from rtnb.windows.specs import Rows

__all__ = ["EWMA", "MAD", "Detector", "DetectorLogic", "RateOfChange", "RollingQuantile",
           "Threshold", "WarmUpWarning", "ZScore"]

log = logging.getLogger(__name__)

#: A detector that has taken this many rows (with a value) of one key and scored none warns.
WARM_UP_ROWS = 10_000
#: The default window of ZScore, MAD and RollingQuantile: a key's last 1,000 values.
DEFAULT_ROWS = 1000


class WarmUpWarning(RuntimeWarning):
    """A detector has taken many rows of a key and still scores only ``NaN``."""

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_FLOAT = np.dtype(np.float64)
_INDEX: Any = pd.Index  # a plain Index (its labels array is compared by identity)
_DIRECT = 1 << 22  # key codes in [0, _DIRECT) find their slot in a table, others in a dict


_KERNELS: Any = None


def _k() -> Any:
    """:mod:`rtnb.detect._kernels`, imported on first use (numba takes ~0.3 s to import)."""
    global _KERNELS
    if _KERNELS is None:
        from rtnb.detect import _kernels

        _KERNELS = _kernels
    return _KERNELS


def _times(times: Any, n: int) -> Ints:
    """Event times as int64 nanoseconds (zeros when there are none)."""
    if times is None:
        return np.zeros(n, dtype=np.int64)
    if isinstance(times, np.ndarray):
        raw = times
    elif isinstance(getattr(times, "dtype", None), pd.DatetimeTZDtype):  # UTC instants
        return np.asarray(pd.DatetimeIndex(times).as_unit("ns").asi8, dtype=np.int64)
    else:
        raw = np.asarray(times)
    if raw.dtype.kind == "M":
        if raw.dtype != "datetime64[ns]":
            raw = raw.astype("datetime64[ns]")
        return np.ascontiguousarray(raw).view(np.int64)
    return np.ascontiguousarray(raw, dtype=np.int64)


def _grown(a: npt.NDArray[Any], n: int, fill: Any) -> npt.NDArray[Any]:
    """``a`` with ``n`` rows (its first ones), the new ones set to ``fill``."""
    out = np.empty((n, *a.shape[1:]), dtype=a.dtype)
    kept = min(n, len(a))
    out[:kept] = a[:kept]
    out[kept:] = fill
    return out


class Detector(_record.Recorded):
    """Base class: per-key state in arrays by key slot; ``process`` scores, then learns.

    Each row is scored against what came before it in its key, then learned.

    Subclasses implement ``_run(slots, t, x, protect) -> (scores, flags)`` (one batch, every
    key: ``slots[r]`` is row r's key slot), ``_resize(n)`` (room for ``n`` slots),
    ``_state()`` / ``_load(state)`` (the per-slot data for :meth:`snapshot` / :meth:`restore`)
    and ``_limit()`` (the score above which, in absolute value, a row is anomalous).

    A subclass may add output columns: it names them in ``extra`` and sets
    ``self._extra_out`` (one array per name, as long as the batch) in ``_run``;
    :class:`DetectorLogic` appends them after the score and anomaly columns.

    ``out_of_order`` counts the rows that came before their key's latest learned time;
    ``needs_time`` says whether ``process`` needs event times (it raises ``ValueError``
    without them), ``uses_time`` whether it reads them at all (EWMA and Threshold do not:
    ``sdf.detect`` then leaves the frame's time column unread).

    Examples
    --------
    >>> z = ZScore(window="1min", threshold=3, min_periods=2)
    >>> z.learn([1.0, 2.0, 1.0], times=pd.date_range("2026-01-01", periods=3, freq="s"))
    ZScore(window='1min', threshold=3)
    >>> z.score([9.0], times=pd.to_datetime(["2026-01-01 00:00:05"])).round(2).tolist()
    [13.28]
    """

    #: Whether ``protect`` changes anything (stateless detectors ignore it).
    stateful = True
    #: Names of the output columns after score and anomaly (see ``_extra_out``).
    extra: tuple[str, ...] = ()
    _extra_out: list[npt.NDArray[Any]]
    #: Rows that came before their key's latest learned time (taken at that time).
    out_of_order: int = 0
    #: Whether ``process`` needs event times (a duration window, a rate per time).
    needs_time = False
    #: Whether ``process`` reads event times at all (when given).
    uses_time = True
    _warm_done = False  # a score was given, or the warm-up warning was
    _seen: Ints | None = None  # rows with a value per slot, until then
    _probing = False  # score / score_one: no warm-up counting

    # key codes -> slots -------------------------------------------------------------------
    _table: npt.NDArray[np.intp]  # code -> slot (-1: none) for codes in [0, _DIRECT)
    _other: dict[int, int]  # code -> slot for the other codes
    _codes: Ints  # slot -> code
    _n: int  # slots in use

    def _init_slots(self) -> None:
        self._table = np.full(0, -1, dtype=np.intp)
        self._other = {}
        self._codes = np.zeros(0, dtype=np.int64)
        self._n = 0
        self._resize(0)

    def _slots(self, codes: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
        """The slot of each row's key code, new codes getting new slots."""
        n = len(codes)
        if n == 0:
            return np.zeros(0, dtype=np.intp)
        if codes.dtype == np.intp and codes.ndim == 1:  # known keys: one compiled pass
            codes = np.ascontiguousarray(codes)
            known = np.empty(n, dtype=np.intp)
            if _k().lookup(codes, self._table, known) == n:
                return known
        lo, hi = int(codes.min()), int(codes.max())
        if lo >= 0 and hi < _DIRECT:
            table = self._table
            if hi >= len(table):
                self._table = table = _grown(table, max(2 * len(table), hi + 1, 64), -1)
            slots = table[codes]
            if slots.min() >= 0:
                return np.asarray(slots, dtype=np.intp)
            self._add(np.unique(codes[slots < 0]))
            return np.asarray(self._table[codes], dtype=np.intp)
        uniq, inverse = np.unique(codes, return_inverse=True)
        found = [self._slot_of(int(c)) for c in uniq.tolist()]
        missing = [int(c) for c, s in zip(uniq.tolist(), found, strict=True) if s < 0]
        if missing:
            self._add(np.asarray(missing, dtype=np.int64))
            found = [self._slot_of(int(c)) for c in uniq.tolist()]
        return np.asarray(found, dtype=np.intp)[inverse.reshape(-1)]

    def _slot_of(self, code: int) -> int:
        if 0 <= code < _DIRECT:
            return int(self._table[code]) if code < len(self._table) else -1
        return self._other.get(code, -1)

    def _add(self, codes: npt.NDArray[Any]) -> None:
        """New slots for new key codes."""
        n = self._n + len(codes)
        if n > len(self._codes):
            size = max(2 * len(self._codes), n, 16)
            self._codes = _grown(self._codes, size, 0)
            self._resize(size)
        self._codes[self._n:n] = codes
        slots = np.arange(self._n, n, dtype=np.intp)
        direct = (codes >= 0) & (codes < _DIRECT)
        if direct.any():
            top = int(codes[direct].max())
            if top >= len(self._table):
                self._table = _grown(self._table, max(2 * len(self._table), top + 1), -1)
            self._table[codes[direct]] = slots[direct]
        for c, s in zip(codes[~direct].tolist(), slots[~direct].tolist(), strict=True):
            self._other[int(c)] = int(s)
        self._n = n

    def _resize(self, n: int) -> None:
        """Make room for ``n`` slots in the state arrays (subclasses)."""

    # the hooks ------------------------------------------------------------------------------
    def _limit(self) -> float:
        raise NotImplementedError

    def _run(self, slots: npt.NDArray[np.intp], t: Ints, x: Floats,
             protect: bool) -> tuple[Floats, Bools]:
        raise NotImplementedError

    def process(self, x: Any, keys: Any = None, times: Any = None, *,
                protect: bool = False) -> tuple[Floats, Bools]:
        """Score each row against its key's earlier rows, learn it; return (score, anomaly).

        ``keys`` are integer key codes (default: one key); ``times`` are int64 nanoseconds or
        datetimes (needed by time-windowed detectors).
        """
        values = np.ascontiguousarray(x, dtype=np.float64)
        n = len(values)
        if times is None and self.needs_time:
            msg = (f"{self!r} needs event times: pass times= (for a frame, give it a time "
                   f"column), or use a row window such as window=rtnb.rows({DEFAULT_ROWS})")
            raise ValueError(msg)
        if keys is None:
            if self._slot_of(0) < 0:
                self._add(np.zeros(1, dtype=np.int64))
            slots = np.full(n, self._slot_of(0), dtype=np.intp)
        else:
            slots = self._slots(np.asarray(keys))
        scores, flags = self._run(slots, _times(times, n), values, protect)
        if not self._warm_done:
            self._warm_up(slots, values, scores)
        return scores, flags

    def _warm_up(self, slots: npt.NDArray[np.intp], x: Floats, scores: Floats) -> None:
        """Count rows per key until a score is given; warn once at :data:`WARM_UP_ROWS`."""
        if self._probing:
            return
        if not np.isnan(scores).all():
            self._warm_done, self._seen = True, None
            return
        seen = self._seen
        if seen is None or len(seen) < self._n:
            seen = self._seen = _grown(np.zeros(0, dtype=np.int64) if seen is None else seen,
                                       max(self._n, 16), 0)
        valid = slots[x == x]
        if not len(valid):
            return
        np.add.at(seen, valid, 1)
        most = int(seen[valid].max())
        if most >= WARM_UP_ROWS:
            self._warm_done, self._seen = True, None
            msg = (f"{self!r} has taken {most:,} rows of one key and scored none of them "
                   f"(every score NaN): {self._warm_up_hint()}")
            log.warning(msg)
            warnings.warn(msg, WarmUpWarning, stacklevel=3)

    def _warm_up_hint(self) -> str:
        return "check min_periods against the data"

    # River's verbs for a batch --------------------------------------------------------------
    def learn(self, x: Any, keys: Any = None, times: Any = None, *,
              protect: bool = False) -> Detector:
        """Fold a batch into the state (``process`` without its output); return ``self``."""
        self.process(x, keys, times, protect=protect)
        return self

    def score(self, x: Any, keys: Any = None, times: Any = None) -> Floats:
        """The scores ``process`` would give the batch; the state is not changed."""
        saved, counted = self.snapshot(), self.out_of_order
        self._probing = True
        try:
            return self.process(x, keys, times)[0]
        finally:
            self.restore(saved)
            self._probing, self.out_of_order = False, counted

    # River's verbs, for one value (key and time optional) ---------------------------------
    def score_one(self, x: float, key: int = 0, t: Any = None) -> float:
        """The score ``x`` would get now (the state is not changed)."""
        saved, counted = self._save_key(int(key)), self.out_of_order
        self._probing = True
        try:
            return float(self.process([float(x)], [int(key)], self._t_one(t))[0][0])
        finally:
            self._restore_key(saved)
            self._probing, self.out_of_order = False, counted

    def learn_one(self, x: float, key: int = 0, t: Any = None) -> None:
        """Fold ``x`` into the key's state."""
        self.process([float(x)], [int(key)], self._t_one(t))

    @staticmethod
    def _t_one(t: Any) -> Ints:
        return np.array([0 if t is None else pd.Timestamp(t).value], dtype=np.int64)

    def _save_key(self, key: int) -> Any:
        """What :meth:`_restore_key` needs to undo one row of ``key`` (default: everything)."""
        return self.snapshot()

    def _restore_key(self, saved: Any) -> None:
        self.restore(saved)

    # checkpoints --------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _from_per_key(self, per_key: dict[int, Any]) -> dict[str, Any]:
        """A snapshot from the per-key dict earlier versions saved (subclasses)."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any] | None:
        """The data state, as new arrays (``None`` for a stateless detector).

        ``"keys"`` holds the key codes that have state, the other entries their state in the
        same order; settings (Params) are not part of it. It pickles, and :meth:`restore`
        takes it back.

        Examples
        --------
        >>> z = ZScore(window="1min", min_periods=2)
        >>> times = pd.date_range("2026-01-01", periods=3, freq="s")
        >>> z.learn([1.0, 2.0, 1.0], times=times).snapshot()["keys"].tolist()
        [0]
        """
        if not self.stateful:
            return None
        return self._state()

    def restore(self, state: dict[Any, Any] | None) -> None:
        """Put a :meth:`snapshot` back (into a detector built with the same settings).

        Also takes the per-key dicts that earlier versions' snapshots held (key code ->
        that key's state as a tuple), as older checkpoints have them.
        """
        if not self.stateful or state is None:
            return
        if "keys" not in state:
            state = self._from_per_key(state)
        self._init_slots()
        keys = np.asarray(state["keys"], dtype=np.int64)
        self._add(keys)
        self._load(state)


class Threshold(Detector):
    """Anomalous above ``upper`` or below ``lower``; the score is the excess (<= 0 inside).

    Unlike the other detectors, Threshold has no default: its bounds are in the data's
    units (a limit you know, such as 90 % CPU), which is its purpose; for a scale-free
    detector see :class:`ZScore`, :class:`MAD` or :class:`EWMA`.

    Examples
    --------
    >>> s, a = Threshold(upper=90).process([50.0, 95.0])
    >>> s.tolist(), a.tolist()
    ([-40.0, 5.0], [False, True])
    """

    stateful = False
    uses_time = False

    def __init__(self, upper: float | Param | None = None,
                 lower: float | Param | None = None) -> None:
        if upper is None and lower is None:
            msg = "Threshold needs `upper`, `lower` or both"
            raise ConfigError(msg)
        self.upper, self.lower = upper, lower

    def _limit(self) -> float:
        return 0.0

    def process(self, x: Any, keys: Any = None, times: Any = None, *,
                protect: bool = False) -> tuple[Floats, Bools]:
        """Score every row at once (no state, so keys do not matter)."""
        # a float64 array (what the detect node passes) as it is: asarray's dtype check and
        # resolve's call cost more than the arithmetic on a 100-row batch
        values = x if type(x) is np.ndarray and x.dtype == _FLOAT else \
            np.asarray(x, dtype=np.float64)
        upper, lower = self.upper, self.lower
        if lower is None:
            scores = values - (upper if type(upper) is float else float(resolve(upper)))
        elif upper is None:
            scores = (lower if type(lower) is float else float(resolve(lower))) - values
        else:
            scores = np.maximum(values - float(resolve(upper)), float(resolve(lower)) - values)
        return scores, scores > 0

    def score_one(self, x: float, key: int = 0, t: Any = None) -> float:
        """The score of ``x``."""
        return float(self.process([float(x)])[0][0])

    def learn_one(self, x: float, key: int = 0, t: Any = None) -> None:
        """Nothing to learn."""

    def __repr__(self) -> str:
        return f"Threshold(upper={self.upper!r}, lower={self.lower!r})"


WindowLike = DurationLike | Rows | Param


class _EventTimeWindow(Detector):
    """A detector scoring each row against its key's window: last ``n`` values or a duration.

    Shared: the settings are checked once, the window is resolved at the start of every
    batch (it may be a Param, of a duration or of ``rtnb.rows(n)``; ``rows(Param)`` too),
    and the state: per key slot a ring buffer of the learned values (and their times) the
    next window can hold, in shared pools (:func:`rtnb.detect._kernels.window_rows`), with
    ZScore's running sums or MAD's and RollingQuantile's values kept sorted.
    """

    window: WindowLike
    min_periods: int
    _kind: int  # the kernel's detector kind
    _sorted = True  # whether the kernel keeps the window's values sorted

    def _setup_window(self, window: WindowLike, min_periods: int, *, least: int) -> None:
        name = type(self).__name__
        self.window = window
        self._w_of: tuple[Any, int] = (None, 0)  # (duration value, its ns) last resolved
        w, nrows = self._window()
        if nrows == 0 and w <= 0:
            msg = f"{name} window must be positive; got {resolve(window)!r}"
            raise ConfigError(msg)
        if isinstance(min_periods, bool) or not isinstance(min_periods, int) or \
                min_periods < least:
            msg = f"{name} min_periods must be an int >= {least}; got {min_periods!r}"
            raise ConfigError(msg)
        if nrows and min_periods > nrows:
            msg = (f"{name} min_periods ({min_periods}) is more than the window's {nrows} "
                   f"rows: no row would ever be scored")
            raise ConfigError(msg)
        self.min_periods = min_periods
        self._counters = np.zeros(1, dtype=np.int64)
        self._pools()
        self._init_slots()

    @property
    def needs_time(self) -> bool:  # type: ignore[override]
        """Whether the window is a duration (then ``process`` needs event times)."""
        return self._window()[1] == 0

    def _window(self) -> tuple[int, int]:
        """(duration in ns, 0) or (0, rows) of the window as it is now."""
        value = resolve(self.window)
        if isinstance(value, Rows):
            value.check()
            return 0, int(resolve(value.n))
        if value is not self._w_of[0]:
            self._w_of = (value, to_ns(value, name="window"))
        return self._w_of[1], 0

    def _pools(self) -> None:
        from rtnb.detect import _kernels as k

        self._pool_t = np.zeros(0, dtype=np.int64)
        self._pool_x = np.zeros(0, dtype=np.float64)
        self._pool_s = np.zeros(0, dtype=np.float64)  # sorted values (blocks)
        self._pool_i = np.zeros(0, dtype=np.int64)  # their block bookkeeping
        self._used = np.zeros(3, dtype=np.int64)  # used lengths: rings, _pool_s, _pool_i
        self._meta = np.zeros((0, k.META), dtype=np.int64)
        self._fm = np.zeros((0, 3), dtype=np.float64)

    def _resize(self, n: int) -> None:
        from rtnb.detect._kernels import LAST, NO_TIME

        old = len(self._meta)
        self._meta = _grown(self._meta, n, 0)
        self._meta[old:, LAST] = NO_TIME
        self._fm = _grown(self._fm, n, 0.0)

    def _params(self) -> tuple[float, float, float]:
        return self._limit(), 0.0, 1.0

    def _patience(self) -> int:
        return max(self.min_periods, 1)

    def _warm_up_hint(self) -> str:
        _, nrows = self._window()
        if nrows:
            return f"min_periods={self.min_periods} is more than the window's {nrows} rows"
        return (f"its {resolve(self.window)!r} window never holds min_periods="
                f"{self.min_periods} values of a key at this sampling; use a row window "
                f"(window=rtnb.rows({DEFAULT_ROWS}), the default) or a longer duration")

    def _run(self, slots: npt.NDArray[np.intp], t: Ints, x: Floats,
             protect: bool) -> tuple[Floats, Bools]:
        n = len(x)
        scores = np.empty(n)
        flags = np.empty(n, dtype=np.bool_)
        limit, q, factor = self._params()
        w, nrows = self._window()
        counters = self._counters
        counters[0] = 0
        self._pool_t, self._pool_x, self._pool_s, self._pool_i = _k()._window_rows(
            self._kind, slots, t, x, self._meta, self._fm, self._pool_t, self._pool_x,
            self._pool_s, self._pool_i, self._used, w, nrows, self.min_periods,
            limit, q, factor, protect, self._patience(), scores, flags, counters)
        if counters[0]:
            self.out_of_order += int(counters[0])
        return scores, flags

    # state ----------------------------------------------------------------------------------
    def _rows(self, slot: int) -> npt.NDArray[np.intp]:
        """Pool positions of a slot's values, oldest first."""
        off, cap, head, cnt = (int(v) for v in self._meta[slot, :4])
        return np.asarray(off + (head + np.arange(cnt)) % max(cap, 1), dtype=np.intp)

    def _state(self) -> dict[str, Any]:
        from rtnb.detect._kernels import HELD, LAST, PEND

        meta = self._meta[:self._n]
        has = np.flatnonzero((meta[:, 3] > 0) | (meta[:, HELD] > 0))
        rows = [self._rows(int(s)) for s in has.tolist()]
        at = np.concatenate(rows) if rows else np.zeros(0, dtype=np.intp)
        return {"keys": self._codes[has].copy(), "count": meta[has, 3].copy(),
                "times": self._pool_t[at], "values": self._pool_x[at],
                "aux": meta[has, 4].copy(), "sums": self._fm[has].copy(),
                "pending": meta[has, PEND].copy(), "held": meta[has, HELD].copy(),
                "last_t": meta[has, LAST].copy()}

    def _load(self, state: dict[str, Any]) -> None:
        from rtnb.detect._kernels import HELD, LAST, NO_TIME, PEND

        count = np.asarray(state["count"], dtype=np.int64)
        k = len(count)
        cap = np.maximum(8, 1 << np.ceil(np.log2(np.maximum(count, 1))).astype(np.int64))
        off = np.cumsum(cap) - cap
        size = max(int(cap.sum()) * 2, 1024)
        self._pool_t = np.zeros(size, dtype=np.int64)
        self._pool_x = np.zeros(size, dtype=np.float64)
        self._pool_s = np.zeros(0, dtype=np.float64)  # sorted on each key's next row
        self._pool_i = np.zeros(0, dtype=np.int64)
        self._used[:] = (int(cap.sum()), 0, 0)
        at = np.repeat(off - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        self._pool_t[at] = np.asarray(state["times"], dtype=np.int64)
        self._pool_x[at] = np.asarray(state["values"], dtype=np.float64)
        meta = self._meta
        meta[:k, 0], meta[:k, 1], meta[:k, 2], meta[:k, 3] = off, cap, 0, count
        meta[:k, 4] = np.asarray(state["aux"], dtype=np.int64)
        self._fm[:k] = np.asarray(state["sums"], dtype=np.float64)
        # format 3 snapshots before these fields: nothing pending or held out, the latest
        # time that of the last value
        zeros = np.zeros(k, dtype=np.int64)
        meta[:k, PEND] = np.asarray(state.get("pending", zeros), dtype=np.int64)
        meta[:k, HELD] = np.asarray(state.get("held", zeros), dtype=np.int64)
        if "last_t" in state:
            meta[:k, LAST] = np.asarray(state["last_t"], dtype=np.int64)
        else:
            ends = np.cumsum(count) - 1
            times = np.asarray(state["times"], dtype=np.int64)
            meta[:k, LAST] = np.where(count > 0, times[np.maximum(ends, 0)] if len(times)
                                      else NO_TIME, NO_TIME)

    def _from_per_key(self, per_key: dict[int, Any]) -> dict[str, Any]:
        # earlier versions: per key (times, values[, sorted values]) in arrival order,
        # missing values included
        keys, count, times, values, sums = [], [], [], [], []
        for code, saved in per_key.items():
            ht, hx = np.asarray(saved[0], dtype=np.int64), np.asarray(saved[1], dtype=float)
            valid = hx == hx
            if not valid.any():
                continue
            ht, hx = ht[valid], hx[valid]
            keys.append(int(code))
            count.append(len(hx))
            times.append(ht)
            values.append(hx)
            d = hx - hx[0]
            sums.append((hx[0], float(d.sum()), float((d * d).sum())))
        return {"keys": np.asarray(keys, dtype=np.int64),
                "count": np.asarray(count, dtype=np.int64),
                "times": np.concatenate(times) if times else np.zeros(0, dtype=np.int64),
                "values": np.concatenate(values) if values else np.zeros(0),
                "aux": np.zeros(len(keys), dtype=np.int64),
                "sums": np.asarray(sums, dtype=np.float64).reshape(-1, 3)}

    def _save_key(self, key: int) -> Any:
        from rtnb.detect._kernels import PEND

        slot = self._slot_of(key)
        if slot < 0:
            return ("all", self.snapshot())
        off, cap, _, cnt, _, fo, fi, bc, ph = (int(v) for v in self._meta[slot, :9])
        pend = int(self._meta[slot, PEND])
        if cnt == cap or (self._sorted and (ph == 0 or
                                            self._pool_i[fi + 3 * ph + 2] <= pend)):
            # a full ring or too few free blocks: the row may move the key's regions
            return ("all", self.snapshot())
        rings, floats, ints = slice(off, off + cap), slice(fo, fo + ph * (bc + 2)), \
            slice(fi, fi + 3 * ph + 3)
        return ("key", slot, self._meta[slot].copy(), self._fm[slot].copy(),
                rings, self._pool_t[rings].copy(), self._pool_x[rings].copy(),
                floats, self._pool_s[floats].copy(), ints, self._pool_i[ints].copy())

    def _restore_key(self, saved: Any) -> None:
        if saved[0] == "all":
            self.restore(saved[1])
            return
        _, slot, meta, fm, rings, pt, px, floats, ps, ints, pi = saved
        self._meta[slot], self._fm[slot] = meta, fm
        self._pool_t[rings], self._pool_x[rings] = pt, px
        self._pool_s[floats], self._pool_i[ints] = ps, pi


class ZScore(_EventTimeWindow):
    """``(x - mean) / std`` of the key's values in the window before the row.

    ``window`` is the key's last ``n`` learned values (``rtnb.rows(n)``; default
    ``rows(1000)``: a long enough sample for a steady mean and standard deviation, and the
    same detector serves any sampling, 1,000 rows being 17 minutes at 1 s and 42 days at
    1 h) or a duration of event time, ``[t - window, t)`` (``"30min"``), as pandas'
    ``rolling(window, closed="left")``: rows of the same time do not see each other. Either
    may be a Param. The row itself is excluded; missing values are skipped and fewer than
    ``min_periods`` values give ``NaN``. ``|score| > threshold`` is an anomaly. The standard
    deviation is floored at ``1e-9 * |mean|`` (and ``1e-12``): after a flat history a new
    value scores large but finite, the same value 0.

    A row whose time is before its key's latest learned time is scored against the window
    as it stands and learned with that latest time; ``out_of_order`` counts such rows. With
    ``protect=True`` a flagged row is not learned while its key's held-out count (+1 per
    held-out row, -1 per normal row, never below 0) is below ``min_periods``; from there
    flagged rows are learned too, so a lasting shift becomes the new normal.

    Per key, the window's values are kept in a ring buffer with running sums of their
    deviations from a reference value (the oldest value when the sums were last rebuilt)
    and of their squares: a value entering or leaving the window adds or subtracts its
    terms, and the sums are rebuilt from the ring once as many values have left as the
    window holds (amortised O(1) per row), so rounding does not build up over a long stream.
    All keys' rows of a batch are taken in one compiled loop (numba: compiled on the first
    batch in a process, or read from numba's cache); with no row held out, ``protect``
    gives the scores without it to the last bit.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.date_range("2026-01-01", periods=6, freq="s")
    >>> z = ZScore(window="10s", threshold=3, min_periods=3)
    >>> s, a = z.process([1.0, 2.0, 1.0, 2.0, 1.0, 9.0], times=t)
    >>> s.round(2).tolist(), a.tolist()
    ([nan, nan, nan, 1.15, -0.87, 13.88], [False, False, False, False, False, True])

    Rows of the same time do not see each other (pandas: 10.61 for the 9):

    >>> t = pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:05", "2026-01-01 00:10",
    ...                     "2026-01-01 00:10", "2026-01-01 00:15"])
    >>> ZScore("1h", min_periods=2).process([1.0, 2.0, 1.0, 9.0, 2.0], times=t)[0].round(3)
    array([   nan,    nan, -0.707, 10.607, -0.324])

    The default window is the last 1,000 values, whatever the times:

    >>> ZScore(min_periods=2).process([1.0, 2.0, 1.0, 9.0])[0].round(3).tolist()
    [nan, nan, -0.707, 13.279]
    """

    _kind = 0
    _sorted = False

    def __init__(self, window: WindowLike | None = None, threshold: float | Param = 3.0,
                 min_periods: int = 10) -> None:
        self.threshold = threshold
        self._setup_window(Rows(DEFAULT_ROWS) if window is None else window, min_periods,
                           least=2)

    def _limit(self) -> float:
        return float(resolve(self.threshold))

    def __repr__(self) -> str:
        return f"ZScore(window={self.window!r}, threshold={self.threshold!r})"


class EWMA(Detector):
    """``(x - mean) / std`` against exponentially weighted mean and variance of earlier rows.

    ``mean_t = (1 - alpha) mean_{t-1} + alpha x_t`` (pandas ``ewm(alpha, adjust=False)``) and
    ``var_t = (1 - alpha) (var_{t-1} + alpha (x_t - mean_{t-1})^2)``; ``halflife`` (rows)
    gives ``alpha = 1 - exp(-ln 2 / halflife)``; with neither, ``halflife=100`` rows (about
    the weight of a 140-row window, in rows so that it suits any sampling). A key's first
    value seeds its mean; until ``min_periods`` values are learned, rows score ``NaN``.
    Missing values score ``NaN`` and are not learned. The standard deviation is floored at
    ``1e-9 * |mean|`` (and ``1e-12``): after a flat history a new value scores large but
    finite, the same value 0. With ``protect=True`` a flagged row is not learned while its
    key's held-out count (+1 per held-out row, -1 per normal row, never below 0) is below
    ``min_periods`` (at least 1): a lasting shift becomes the new normal.

    The batch's rows are taken one by one in a compiled loop (numba: compiled on the first
    batch in a process, or read from numba's cache), each carrying its key's
    ``(mean, var, n)``, so the scores are those of the per-row recursion whatever the batch
    split, and ``protect`` costs nothing more.

    Examples
    --------
    >>> e = EWMA(alpha=0.5, threshold=3, min_periods=2)
    >>> s, a = e.process([10.0, 12.0, 11.0, 30.0])
    >>> s.round(2).tolist(), a.tolist()
    ([nan, nan, 0.0, 26.87], [False, False, False, True])
    >>> EWMA(min_periods=2).process([5.0, 5.0, 5.0, 6.0])[0].tolist()  # a flat history
    [nan, nan, 0.0, 200000000.0]
    """

    uses_time = False

    def __init__(self, alpha: float | Param | None = None, *, halflife: float | None = None,
                 threshold: float | Param = 3.0, min_periods: int = 10) -> None:
        if alpha is not None and halflife is not None:
            msg = "EWMA takes one of `alpha` and `halflife`, not both"
            raise ConfigError(msg)
        if alpha is None and halflife is None:
            halflife = 100.0
        if halflife is not None:
            if not halflife > 0:
                msg = f"EWMA halflife must be positive; got {halflife!r}"
                raise ConfigError(msg)
            alpha = 1 - float(np.exp(-np.log(2) / halflife))
        a = float(resolve(alpha))
        if not 0 < a <= 1:
            msg = f"EWMA alpha must be in (0, 1]; got {a!r}"
            raise ConfigError(msg)
        self.alpha, self.threshold, self.min_periods = alpha, threshold, min_periods
        self.halflife = halflife
        self._ewm = np.zeros((0, 3))  # per slot: mean, var, n
        self._held = np.zeros(0, dtype=np.int64)  # per slot: rows held out in a row
        self._init_slots()

    def _limit(self) -> float:
        return float(resolve(self.threshold))

    def _resize(self, n: int) -> None:
        self._ewm = _grown(self._ewm, n, _EWMA_NEW)
        self._held = _grown(self._held, n, 0)

    def _run(self, slots: npt.NDArray[np.intp], t: Ints, x: Floats,
             protect: bool) -> tuple[Floats, Bools]:
        scores = np.empty(len(x))
        flags = np.empty(len(x), dtype=np.bool_)
        _k()._ewma_rows(slots, x, self._ewm, self._held, float(resolve(self.alpha)),
                        self.min_periods, self._limit(), protect, max(self.min_periods, 1),
                        scores, flags)
        return scores, flags

    def _state(self) -> dict[str, Any]:
        # keys that learned a value (or held rows out)
        has = np.flatnonzero((self._ewm[:self._n, 2] > 0) | (self._held[:self._n] > 0))
        return {"keys": self._codes[has].copy(), "ewm": self._ewm[has].copy(),
                "held": self._held[has].copy()}

    def _load(self, state: dict[str, Any]) -> None:
        ewm = np.asarray(state["ewm"], dtype=np.float64).reshape(-1, 3)
        self._ewm[:len(ewm)] = ewm
        if "held" in state:  # not in snapshots before protect gave way
            self._held[:len(ewm)] = np.asarray(state["held"], dtype=np.int64)

    def _from_per_key(self, per_key: dict[int, Any]) -> dict[str, Any]:
        # earlier versions: per key (mean, var, n)
        return {"keys": np.asarray(list(per_key), dtype=np.int64),
                "ewm": np.asarray(list(per_key.values()), dtype=np.float64).reshape(-1, 3)}

    def _save_key(self, key: int) -> Any:
        slot = self._slot_of(key)
        if slot < 0:
            return key, slot, None, 0
        return key, slot, self._ewm[slot].copy(), int(self._held[slot])

    def _restore_key(self, saved: Any) -> None:
        key, slot, row, held = saved
        if row is None:  # a new key: back to no state
            self._ewm[self._slot_of(key)] = _EWMA_NEW
            self._held[self._slot_of(key)] = 0
        else:
            self._ewm[slot], self._held[slot] = row, held

    def __repr__(self) -> str:
        if self.halflife is not None:
            return f"EWMA(halflife={self.halflife!r}, threshold={self.threshold!r})"
        return f"EWMA(alpha={self.alpha!r}, threshold={self.threshold!r})"


_EWMA_NEW = (np.nan, 0.0, 0.0)  # a key's EWMA state before its first value


class RateOfChange(Detector):
    """Change per ``per`` of event time since the key's previous row, raw or robust.

    It needs event times (``times=``, or a frame with a time column).

    The rate is ``dx / dt * per`` against the key's latest learned row; a row of that same
    time is compared with the latest learned row of an earlier time (a repeated timestamp
    does not hide a spike). A missing value scores ``NaN`` and is not learned (the next row
    compares with the last valid one). A row before its key's latest learned time scores
    ``NaN``, is not learned and is counted in ``out_of_order``.

    With a ``threshold`` (the rate's units), the score is the rate and ``|rate| > threshold``
    is an anomaly; with ``protect=True`` a flagged row does not become the previous row.

    With no ``threshold`` (or ``robust=True``), the score is scale-free: the rate's robust
    z-score against the key's last 1,000 rates, ``(rate - median) / scale`` with the scale of
    :class:`MAD` (``1.4826 MAD``, else ``1.2533`` times the mean absolute deviation, floored;
    at least 10 rates), and ``|score| > threshold`` (default 3.5) is an anomaly; with
    ``protect=True`` a flagged rate is not learned into the rates' window (the row still
    becomes the previous row).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:02",
    ...                     "2026-01-01 00:00:03"])
    >>> s, a = RateOfChange(threshold=5, per="1s").process([1.0, 3.0, 10.0], times=t)
    >>> s.tolist(), a.tolist()
    ([nan, 1.0, 7.0], [False, False, True])
    >>> t = pd.date_range("2026-01-01", periods=14, freq="min")
    >>> x = [0.0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 60]  # +1, +2, ... a minute
    >>> RateOfChange().process(x, times=t)[0][-4:].round(2).tolist()  # robust z of the rate
    [nan, -0.67, 1.76, 54.63]
    """

    needs_time = True

    def __init__(self, threshold: float | Param | None = None, per: DurationLike = "1s", *,
                 robust: bool | None = None) -> None:
        self.robust = threshold is None if robust is None else bool(robust)
        self.threshold = threshold
        self.per = per
        self.per_ns = to_ns(per, name="per")
        self._last_t = np.zeros(0, dtype=np.int64)  # per slot: the latest learned row
        self._last_x = np.zeros(0, dtype=np.float64)
        self._prev_t = np.zeros(0, dtype=np.int64)  # and the latest one of an earlier time
        self._prev_x = np.zeros(0, dtype=np.float64)
        self._counters = np.zeros(1, dtype=np.int64)
        # robust: the rates' window per key slot (the slots are its key codes)
        self._rates = _RateWindow(self._limit()) if self.robust else None
        if self._rates is not None:
            self._rates._warm_done = True  # RateOfChange itself warns
        self._init_slots()

    def _limit(self) -> float:
        return 3.5 if self.threshold is None else float(resolve(self.threshold))

    def _resize(self, n: int) -> None:
        self._last_t = _grown(self._last_t, n, 0)
        self._last_x = _grown(self._last_x, n, np.nan)
        self._prev_t = _grown(self._prev_t, n, 0)
        self._prev_x = _grown(self._prev_x, n, np.nan)

    def _run(self, slots: npt.NDArray[np.intp], t: Ints, x: Floats,
             protect: bool) -> tuple[Floats, Bools]:
        scores = np.empty(len(x))
        flags = np.empty(len(x), dtype=np.bool_)
        counters = self._counters
        counters[0] = 0
        rates = self._rates
        _k()._rate_rows(slots, t, x, self._last_t, self._last_x, self._prev_t,
                        self._prev_x, float(self.per_ns),
                        np.inf if rates is not None else self._limit(),
                        protect and rates is None, scores, flags, counters)
        if counters[0]:
            self.out_of_order += int(counters[0])
        if rates is None:
            return scores, flags
        rates.threshold = self._limit()
        return rates.process(scores, slots, None, protect=protect)

    def _warm_up_hint(self) -> str:
        return "a key needs 11 rows of increasing times before its rates are scored"

    def _state(self) -> dict[str, Any]:
        n = self._n
        state: dict[str, Any] = {"keys": self._codes[:n].copy(), "last_t": self._last_t[:n].copy(),
                 "last_x": self._last_x[:n].copy(), "prev_t": self._prev_t[:n].copy(),
                 "prev_x": self._prev_x[:n].copy()}
        if self._rates is not None:
            state["rates"] = self._rates.snapshot()
        return state

    def _load(self, state: dict[str, Any]) -> None:
        k = len(state["keys"])
        self._last_t[:k] = np.asarray(state["last_t"], dtype=np.int64)
        self._last_x[:k] = np.asarray(state["last_x"], dtype=np.float64)
        if "prev_t" in state:  # not in snapshots before repeated times were handled
            self._prev_t[:k] = np.asarray(state["prev_t"], dtype=np.int64)
            self._prev_x[:k] = np.asarray(state["prev_x"], dtype=np.float64)
        if self._rates is not None:
            self._rates.restore(state.get("rates") or _RateWindow(3.5).snapshot())

    def _from_per_key(self, per_key: dict[int, Any]) -> dict[str, Any]:
        # earlier versions: per key (time, value) of the previous row
        return {"keys": np.asarray(list(per_key), dtype=np.int64),
                "last_t": np.asarray([v[0] for v in per_key.values()], dtype=np.int64),
                "last_x": np.asarray([v[1] for v in per_key.values()], dtype=np.float64)}

    def _save_key(self, key: int) -> Any:
        slot = self._slot_of(key)
        if slot < 0 or self._rates is not None:
            return ("all", self.snapshot())
        return ("key", slot, int(self._last_t[slot]), float(self._last_x[slot]),
                int(self._prev_t[slot]), float(self._prev_x[slot]))

    def _restore_key(self, saved: Any) -> None:
        if saved[0] == "all":
            self.restore(saved[1])
            return
        _, slot, lt, lx, pt, px = saved
        self._last_t[slot], self._last_x[slot] = lt, lx
        self._prev_t[slot], self._prev_x[slot] = pt, px

    def __repr__(self) -> str:
        if self.robust:
            return f"RateOfChange(threshold={self.threshold!r}, robust=True)"
        return f"RateOfChange(threshold={self.threshold!r})"


class RollingQuantile(_EventTimeWindow):
    """``1 + (x - f q) / |f q|``: ``x`` against ``factor`` times the window's ``q``-quantile.

    Above 1 is anomalous: ``x`` is more than ``f q`` (``f = factor``, ``q`` the quantile of
    the key's window before the row). For ``q > 0`` the score is ``x / (f q)``; the form
    above keeps its meaning when the quantile is negative (with a history of -10, -100
    scores -8 and +50 scores 7); ``|f q|`` is floored at ``1e-12``, so a quantile of 0
    gives large finite scores.

    ``window`` as :class:`ZScore`'s: the key's last ``n`` values (``rtnb.rows(n)``, default
    ``rows(1000)``) or ``[t - window, t)`` of event time (rows of the same time do not see
    each other), a Param of either; out-of-order rows, ``out_of_order`` and ``protect``
    (flagged rows held out while the key's held-out count is below ``min_periods``, at
    least 1) as :class:`ZScore`. The quantile is pandas'
    ``rolling(window, closed="left").quantile(q)`` (linear interpolation between the two
    nearest ranks, missing values skipped). Per key, the window's values are kept sorted
    from batch to batch, in blocks of about ``2 sqrt(n)`` values (a value in or out shifts
    one block's values), and all keys' rows of a batch are taken in one compiled loop
    (numba: compiled on the first batch in a process, or read from numba's cache).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.date_range("2026-01-01", periods=6, freq="s")
    >>> d = RollingQuantile(window="1min", q=0.5, factor=2.0, min_periods=3)
    >>> s, a = d.process([10.0, 12.0, 11.0, 13.0, 30.0, 11.0], times=t)
    >>> s.round(3).tolist(), a.tolist()
    ([nan, nan, nan, 0.591, 1.304, 0.458], [False, False, False, False, True, False])
    >>> d = RollingQuantile(q=0.5, min_periods=3)  # the last 1,000 values
    >>> d.process([-10.0, -10.0, -10.0, -100.0, 50.0])[0].tolist()
    [nan, nan, nan, -8.0, 7.0]
    """

    _kind = 2

    def __init__(self, window: WindowLike | None = None, q: float | Param = 0.99,
                 factor: float | Param = 1.0, min_periods: int = 10) -> None:
        if not 0 <= float(resolve(q)) <= 1:
            msg = f"RollingQuantile q must be in [0, 1]; got {resolve(q)!r}"
            raise ConfigError(msg)
        self.q, self.factor = q, factor
        self._setup_window(Rows(DEFAULT_ROWS) if window is None else window, min_periods,
                           least=0)

    def _limit(self) -> float:
        return 1.0

    def _params(self) -> tuple[float, float, float]:
        return 1.0, float(resolve(self.q)), float(resolve(self.factor))

    def __repr__(self) -> str:
        return f"RollingQuantile(window={self.window!r}, q={self.q!r}, factor={self.factor!r})"


class MAD(_EventTimeWindow):
    """``|x - median| / scale`` of the key's values in the window before the row.

    The median and the median absolute deviation (MAD, the median of ``|v - median|``) are
    those of the key's window before the row (the row itself excluded): its last ``n``
    values (``rtnb.rows(n)``, default ``rows(1000)``) or ``[t - window, t)`` of event time
    as pandas' ``rolling(window, closed="left")`` (rows of the same time do not see each
    other), a Param of either. Missing values are skipped and fewer than ``min_periods``
    values give ``NaN``. The scale is ``1.4826 * MAD``, which estimates the standard
    deviation of normal data, so the score reads like a z-score that one outlier in the
    window cannot inflate. When more than half the window equals the median (a quantised
    or mostly idle metric) the MAD is 0 and the scale is ``1.2533`` times the mean absolute
    deviation from the median instead (Iglewicz and Hoaglin's modified z-score); either is
    floored at ``1e-9 * |median|`` (and ``1e-12``), so a window of equal values gives any
    other value a large finite score and the same value 0. ``score > threshold`` is an
    anomaly. Out-of-order rows, ``out_of_order`` and ``protect`` as :class:`ZScore`.

    Per key, the window's values are kept sorted from batch to batch, in blocks of about
    ``2 sqrt(n)`` values with their sums (a value in or out shifts one block's values); all
    keys' rows of a batch are taken in one compiled loop (numba: compiled on the first batch
    in a process, or read from numba's cache). The median is read off, and the MAD's split
    (how many of the ``k`` smallest deviations lie below the median) is searched from the
    key's previous split, which it rarely leaves by more than one; the mean absolute
    deviation is the sum of the larger half minus that of the smaller half (O(sqrt n)).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.date_range("2026-01-01", periods=6, freq="s")
    >>> d = MAD(window="1min", threshold=3.5, min_periods=3)
    >>> s, a = d.process([10.0, 12.0, 11.0, 13.0, 30.0, 11.0], times=t)
    >>> s.round(3).tolist(), a.tolist()
    ([nan, nan, nan, 1.349, 12.478, 0.674], [False, False, False, False, True, False])
    >>> t = pd.date_range("2026-01-01", periods=8, freq="min")
    >>> MAD("1h", min_periods=5).process([0, 0, 0, 5, 7, 0, 0, 1], times=t)[0].round(3)
    array([  nan,   nan,   nan,   nan,   nan, 0.   , 0.   , 0.465])
    """

    _kind = 1

    def __init__(self, window: WindowLike | None = None, threshold: float | Param = 3.5,
                 min_periods: int = 10) -> None:
        self.threshold = threshold
        self._setup_window(Rows(DEFAULT_ROWS) if window is None else window, min_periods,
                           least=1)

    def _limit(self) -> float:
        return float(resolve(self.threshold))

    def __repr__(self) -> str:
        return f"MAD(window={self.window!r}, threshold={self.threshold!r})"


class _RateWindow(MAD):
    """RateOfChange's robust z-score: a signed MAD score over the key's last 1,000 rates."""

    _kind = 3

    def __init__(self, threshold: float) -> None:
        super().__init__(Rows(DEFAULT_ROWS), threshold, min_periods=10)


class DetectorLogic:
    """A detector run on a frame's batches: the logic of ``sdf.detect`` (:mod:`rtnb.stateful`).

    It adds the ``score`` and ``anomaly`` columns, per key, then the detector's ``extra``
    columns (:attr:`Detector.extra`, from the arrays its ``_run`` leaves in ``_extra_out``).
    The positions of the ``on`` and time columns and the output's column index are worked
    out on the first batch and kept while the batches have the same columns.

    Parameters
    ----------
    detector
        The detector (its per-key state is this logic's state).
    on
        The numeric column scored.
    keys
        The key registry mapping the ``by`` columns to integer codes.
    time
        The event-time column (``None``: detectors that need no time).
    protect, score, anomaly, rename
        As in :meth:`rtnb.StreamingFrame.detect` (``rename``: output names of the
        detector's extra columns).
    """

    watermark = None

    def __init__(self, detector: Detector, *, on: str, keys: Any, time: str | None,
                 protect: bool = False, score: str = "score",
                 anomaly: str = "is_anomaly", rename: Mapping[str, str] | None = None) -> None:
        self.detector, self.on, self.keys, self.time = detector, on, keys, time
        self.protect, self.score, self.anomaly = protect, score, anomaly
        self._plan: tuple[Any, bool] | None = None  # (labels array, whether time is a column)
        self._read_on = _frames.ColumnReader(on)
        self._read_time = _frames.ColumnReader(time, times=True)
        named = dict(rename or {})
        self._names = [score, anomaly, *(named.get(e, e) for e in detector.extra)]
        self._append = _frames.Appender(self._names)

    def _has_time(self, batch: pd.DataFrame) -> bool:
        """Whether the batch has the time column; checked once per column layout.

        A batch with ``on`` or the time column twice is refused.
        """
        cols: Any = batch.columns
        plan = self._plan
        if plan is not None and type(cols) is _INDEX and cols._data is plan[0]:
            return plan[1]
        on = cols.get_loc(self.on)
        at = cols.get_loc(self.time) if self.time is not None else -1
        if not isinstance(on, int) or not isinstance(at, int):
            msg = (f"detect(on={self.on!r}): the batch has several columns named "
                   f"{self.on!r} or {self.time!r}")
            raise ValueError(msg)
        labels = cols._data if type(cols) is _INDEX else None
        self._plan = (labels, at >= 0) if labels is not None else None
        return at >= 0

    def process(self, batch: pd.DataFrame) -> Any:
        """Score and learn the batch; the rows go on with the score, anomaly and extra columns."""
        has_time = self._has_time(batch)
        x = self._read_on(batch)
        if type(x) is not np.ndarray or x.dtype != _FLOAT:
            x = batch[self.on].to_numpy(dtype=np.float64, na_value=np.nan)
        detector = self.detector
        times = self._read_time(batch) if has_time and detector.uses_time else None
        # a stateless detector (Threshold) scores every row alike: no key coding to pay for
        codes = self.keys.codes(batch) if detector.stateful else None
        s, a = detector.process(x, codes, times, protect=self.protect)
        values = [s, a, *detector._extra_out] if detector.extra else [s, a]
        return Output(self._append(batch, values))

    def flush(self) -> Any:
        """Nothing is held back."""
        return Output(None)

    def snapshot(self) -> dict[str, Any]:
        """The detector's per-key state and the key codes."""
        return {"detector": self.detector.snapshot(), "keys": self.keys.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back."""
        self.detector.restore(state["detector"])
        self.keys.restore(state["keys"])
