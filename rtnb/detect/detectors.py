"""The detectors. Each scores a row against its key's state *before* the row, then learns it.

Rows of one key are taken in arrival order, which for these detectors must also be event-time
order per key (as a source delivers them, or after a window); the scores then equal pandas
computing the same statistic on the whole series, whatever the batch split.
"""

from __future__ import annotations

from itertools import chain, repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb import _record
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve
from rtnb.stateful import Output

__all__ = ["EWMA", "MAD", "Detector", "DetectorLogic", "RateOfChange", "RollingQuantile",
           "Threshold", "ZScore"]

Floats = npt.NDArray[np.float64]


def _groups(keys: npt.NDArray[np.intp]) -> list[tuple[int, npt.NDArray[np.intp]]]:
    """Row positions per key, each in arrival order."""
    seg = _Segments(keys)
    return [(k, seg.order[s:s + c]) for k, s, c in
            zip(seg.keys, seg.starts.tolist(), seg.counts.tolist(), strict=True)]


class _Segments:
    """The rows of a batch grouped by key code, once, for every key at the same time.

    ``order`` lists row positions key by key (each key's rows in arrival order: a stable
    sort); key ``keys[j]`` holds ``order[starts[j]:starts[j] + counts[j]]``.
    """

    __slots__ = ("counts", "keys", "order", "starts")

    def __init__(self, codes: npt.NDArray[np.intp]) -> None:
        n = len(codes)
        if n == 0:
            self.order = self.starts = self.counts = np.zeros(0, dtype=np.intp)
            self.keys: list[int] = []
            return
        lo, hi = int(codes.min()), int(codes.max())
        if lo >= 0 and hi < 65536:
            # numpy sorts 8- and 16-bit integers with a radix sort (~10x faster than int64),
            # and the keys and their row counts are a bincount
            small = codes.astype(np.uint8 if hi < 256 else np.uint16)
            self.order = np.argsort(small, kind="stable")
            per_code = np.bincount(small)
            present = np.flatnonzero(per_code)
            self.counts = per_code[present]
            self.starts = np.cumsum(self.counts) - self.counts
            self.keys = present.tolist()
            return
        self.order = np.argsort(codes, kind="stable")
        ordered = codes[self.order]
        self.starts = np.concatenate([[0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1])
        self.counts = np.diff(np.append(self.starts, n))
        self.keys = ordered[self.starts].tolist()

    @property
    def ends(self) -> npt.NDArray[np.intp]:
        """Sorted position of each key's last row."""
        return np.asarray(self.starts + self.counts - 1, dtype=np.intp)

    def lockstep(self) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
        """Per row rank r: (slots of the keys that have an r-th row, their sorted positions).

        For rules that depend on the previous row's outcome (``protect``): one step per row
        of the longest key, each step vectorised across the keys.
        """
        by_len = np.argsort(-self.counts, kind="stable")
        lens = self.counts[by_len]
        steps = []
        for r in range(int(lens[0]) if len(lens) else 0):
            live = by_len[:int(np.searchsorted(-lens, -r, side="left"))]
            steps.append((live, self.starts[live] + r))
        return steps


def _times(times: Any, n: int) -> npt.NDArray[np.int64]:
    if times is None:
        return np.zeros(n, dtype=np.int64)
    raw = np.asarray(times)
    return raw.astype("datetime64[ns]", copy=False).view(np.int64) if raw.dtype.kind == "M" \
        else raw.astype(np.int64, copy=False)


class Detector(_record.Recorded):
    """Base class: per-key state, ``process`` = score every row against what came before it.

    Subclasses implement either ``_process_all(codes, t, x, protect) -> scores`` (all keys
    of a batch at once, vectorised) or ``_process_key(key, t, x, protect) -> scores`` (the
    rows of one key, in order; the default ``_process_all`` calls it per key), and
    ``_limit()`` (the score above which, in absolute value, a row is anomalous). Per-key
    state lives in ``_per_key`` (key code -> a value that is replaced, never changed in
    place), which is what ``score``/``score_one`` save and restore.

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

    def _limit(self) -> float:
        raise NotImplementedError

    def _process_key(self, key: int, t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        return self._process_all(np.full(len(x), key, dtype=np.intp), t, x, protect)

    def _process_all(self, codes: npt.NDArray[np.intp], t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        scores = np.full(len(x), np.nan)
        for key, rows in _groups(codes):
            scores[rows] = self._process_key(key, t[rows], x[rows], protect)
        return scores

    def process(self, x: Any, keys: Any = None, times: Any = None, *,
                protect: bool = False) -> tuple[Floats, npt.NDArray[np.bool_]]:
        """Score each row against its key's earlier rows, learn it; return (score, anomaly).

        ``keys`` are integer key codes (default: one key); ``times`` are int64 nanoseconds or
        datetimes (needed by time-windowed detectors).
        """
        values = np.asarray(x, dtype=np.float64)
        n = len(values)
        codes = np.zeros(n, dtype=np.intp) if keys is None else np.asarray(keys, dtype=np.intp)
        self._begin()
        scores = self._process_all(codes, _times(times, n), values, protect)
        return scores, self._flag(scores)

    def _begin(self) -> None:
        """Read the Params once per batch (subclasses)."""

    def _flag(self, scores: Floats) -> npt.NDArray[np.bool_]:
        with np.errstate(invalid="ignore"):
            return np.asarray(np.abs(scores) > self._limit(), dtype=bool)

    # River's verbs for a batch --------------------------------------------------------------
    def learn(self, x: Any, keys: Any = None, times: Any = None, *,
              protect: bool = False) -> Detector:
        """Fold a batch into the state (``process`` without its output); return ``self``."""
        self.process(x, keys, times, protect=protect)
        return self

    def score(self, x: Any, keys: Any = None, times: Any = None) -> Floats:
        """The scores ``process`` would give the batch; the state is not changed."""
        saved = self.snapshot()
        try:
            return self.process(x, keys, times)[0]
        finally:
            self.restore(saved)

    # River's verbs, for one value (key and time optional) ---------------------------------
    def score_one(self, x: float, key: int = 0, t: Any = None) -> float:
        """The score ``x`` would get now (the state is not changed)."""
        self._begin()
        saved = self._save(key)
        score = self._process_key(key, self._t_one(t), np.array([float(x)]), False)
        self._restore(key, saved)
        return float(score[0])

    def learn_one(self, x: float, key: int = 0, t: Any = None) -> None:
        """Fold ``x`` into the key's state."""
        self._begin()
        self._process_key(key, self._t_one(t), np.array([float(x)]), False)

    @staticmethod
    def _t_one(t: Any) -> npt.NDArray[np.int64]:
        return np.array([0 if t is None else pd.Timestamp(t).value], dtype=np.int64)

    #: Each stateful detector's state, per key code (what ``score_one`` saves and restores).
    _per_key: dict[int, Any]

    # checkpoints --------------------------------------------------------------------------
    def snapshot(self) -> dict[int, Any] | None:
        """The per-key data state (``None`` for a stateless detector).

        Values are replaced, never changed in place; settings (Params) are not part of it.

        Examples
        --------
        >>> z = ZScore(window="1min", min_periods=2)
        >>> times = pd.date_range("2026-01-01", periods=3, freq="s")
        >>> z.learn([1.0, 2.0, 1.0], times=times).snapshot().keys()
        dict_keys([0])
        """
        per_key = getattr(self, "_per_key", None)
        return None if per_key is None else dict(per_key)

    def restore(self, state: dict[int, Any] | None) -> None:
        """Put a :meth:`snapshot` back (into a detector built with the same settings)."""
        per_key = getattr(self, "_per_key", None)
        if per_key is None or state is None:
            return
        per_key.clear()
        per_key.update(state)

    def _save(self, key: int) -> Any:
        return getattr(self, "_per_key", {}).get(key)

    def _restore(self, key: int, saved: Any) -> None:
        state = getattr(self, "_per_key", None)
        if state is None:  # stateless (Threshold)
            return
        if saved is None:
            state.pop(key, None)
        else:
            state[key] = saved


class _EventTimeWindow(Detector):
    """A detector scoring each row against its key's rows in ``[t - window, t)``.

    Shared: the settings are checked once, the window is resolved at the start of every batch
    (it may be a Param), and the per-key state is the key's rows the next window can hold,
    ``(times, values)`` in arrival order (MAD adds the values sorted).
    """

    window: DurationLike | Param
    threshold: float | Param
    min_periods: int

    def _setup_window(self, window: DurationLike | Param, threshold: float | Param,
                      min_periods: int, *, least: int) -> None:
        name = type(self).__name__
        if to_ns(resolve(window), name="window") <= 0:
            msg = f"{name} window must be positive; got {resolve(window)!r}"
            raise ConfigError(msg)
        if isinstance(min_periods, bool) or not isinstance(min_periods, int) or \
                min_periods < least:
            msg = f"{name} min_periods must be an int >= {least}; got {min_periods!r}"
            raise ConfigError(msg)
        self.window, self.threshold, self.min_periods = window, threshold, min_periods
        self._per_key: dict[int, tuple[npt.NDArray[Any], ...]] = {}
        self._w_ns = to_ns(resolve(window), name="window")

    def _limit(self) -> float:
        return float(resolve(self.threshold))

    def _begin(self) -> None:
        self._w_ns = to_ns(resolve(self.window), name="window")


class Threshold(Detector):
    """Anomalous above ``upper`` or below ``lower``; the score is the excess (<= 0 inside).

    Examples
    --------
    >>> s, a = Threshold(upper=90).process([50.0, 95.0])
    >>> s.tolist(), a.tolist()
    ([-40.0, 5.0], [False, True])
    """

    stateful = False

    def __init__(self, upper: float | Param | None = None,
                 lower: float | Param | None = None) -> None:
        if upper is None and lower is None:
            msg = "Threshold needs `upper`, `lower` or both"
            raise ConfigError(msg)
        self.upper, self.lower = upper, lower

    def _limit(self) -> float:
        return 0.0

    def process(self, x: Any, keys: Any = None, times: Any = None, *,
                protect: bool = False) -> tuple[Floats, npt.NDArray[np.bool_]]:
        """Score every row at once (no state, so keys do not matter)."""
        scores = self._process_key(0, np.zeros(0, dtype=np.int64),
                                   np.asarray(x, dtype=np.float64), protect)
        return scores, self._flag(scores)

    def _flag(self, scores: Floats) -> npt.NDArray[np.bool_]:
        with np.errstate(invalid="ignore"):
            return np.asarray(scores > 0, dtype=bool)

    def _process_key(self, key: int, t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        parts = []
        if self.upper is not None:
            parts.append(x - float(resolve(self.upper)))
        if self.lower is not None:
            parts.append(float(resolve(self.lower)) - x)
        return np.maximum.reduce(parts) if len(parts) > 1 else parts[0]

    def __repr__(self) -> str:
        return f"Threshold(upper={self.upper!r}, lower={self.lower!r})"


class ZScore(_EventTimeWindow):
    """``(x - mean) / std`` of the key's values in the ``window`` of event time before the row.

    The window is ``[t - window, t)`` (the row itself excluded), as pandas'
    ``rolling(window, closed="left")``; fewer than ``min_periods`` values give ``NaN``.
    ``|score| > threshold`` is an anomaly.

    The mean and variance come from running sums over the key's retained window and the
    batch (vectorised). With ``protect`` (an anomalous row is not learned, so each row's
    window depends on the scores before it), the same sums are carried row by row in a
    compiled loop (numba: compiled on the first protected batch in a process, or read from
    numba's cache); with no row held out, the scores equal those without ``protect``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.date_range("2026-01-01", periods=6, freq="s")
    >>> z = ZScore(window="10s", threshold=3, min_periods=3)
    >>> s, a = z.process([1.0, 2.0, 1.0, 2.0, 1.0, 9.0], times=t)
    >>> s.round(2).tolist(), a.tolist()
    ([nan, nan, nan, 1.15, -0.87, 13.88], [False, False, False, False, False, True])
    """

    def __init__(self, window: DurationLike | Param = "5min",
                 threshold: float | Param = 3.0, min_periods: int = 10) -> None:
        self._setup_window(window, threshold, min_periods, least=2)

    def _process_key(self, key: int, t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        w = self._w_ns
        ht, hx = self._per_key.get(key, (np.zeros(0, dtype=np.int64), np.zeros(0)))
        if protect:  # anomalous rows stay out of the state: row by row, compiled
            from rtnb.detect._kernels import zscore_window  # numba: imported on first use

            scores = np.empty(len(x))
            ht, hx = zscore_window(ht, hx, np.ascontiguousarray(t), np.ascontiguousarray(x), w,
                                   self.min_periods, self._limit(), True, scores)
        else:
            scores = self._vectorised(ht, hx, t, x, w)
            ht, hx = np.concatenate([ht, t]), np.concatenate([hx, x])
        if len(ht):  # what the next row's window [t' - w, t') can still hold
            keep = ht >= ht.max() - w
            ht, hx = ht[keep], hx[keep]
        self._per_key[key] = (ht, hx)
        return scores

    def _vectorised(self, ht: npt.NDArray[np.int64], hx: Floats, t: npt.NDArray[np.int64],
                    x: Floats, w: int) -> Floats:
        at = np.concatenate([ht, t])
        ax = np.concatenate([hx, x])
        valid = ~np.isnan(ax)
        # shift by a value of the data: sums of squares then lose less to rounding
        first = int(np.argmax(valid)) if valid.any() else -1
        ref = float(ax[first]) if first >= 0 else 0.0
        v = np.where(valid, ax - ref, 0.0)
        s1 = np.concatenate([[0.0], np.cumsum(v)])
        s2 = np.concatenate([[0.0], np.cumsum(v * v)])
        cnt = np.concatenate([[0], np.cumsum(valid)])
        right = np.arange(len(ht), len(at))
        left = np.searchsorted(at, t - w, side="left")
        n = (cnt[right] - cnt[left]).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (s1[right] - s1[left]) / n
            var = ((s2[right] - s2[left]) - n * mean * mean) / (n - 1)
            std = np.sqrt(np.maximum(var, 0.0))
            score = (x - ref - mean) / std
        score[n < self.min_periods] = np.nan
        return np.asarray(score, dtype=np.float64)

    def __repr__(self) -> str:
        return f"ZScore(window={self.window!r}, threshold={self.threshold!r})"


class EWMA(Detector):
    """``(x - mean) / std`` against exponentially weighted mean and variance of earlier rows.

    ``mean_t = (1 - alpha) mean_{t-1} + alpha x_t`` (pandas ``ewm(alpha, adjust=False)``) and
    ``var_t = (1 - alpha) (var_{t-1} + alpha (x_t - mean_{t-1})^2)``; ``halflife`` (rows)
    gives ``alpha = 1 - exp(-ln 2 / halflife)``. A key's first value seeds its mean; until
    ``min_periods`` values are learned, rows score ``NaN``. Missing values score ``NaN`` and
    are not learned.

    Each key's rows are taken one by one in a compiled loop (numba: compiled on the first
    batch in a process, or read from numba's cache) carrying the key's ``(mean, var, n)``, so
    the scores are those of the per-row recursion whatever the batch split, and ``protect``
    (a row scored above ``threshold`` is not learned) costs nothing more.

    Examples
    --------
    >>> e = EWMA(alpha=0.5, threshold=3, min_periods=2)
    >>> s, a = e.process([10.0, 12.0, 11.0, 30.0])
    >>> s.round(2).tolist(), a.tolist()
    ([nan, nan, 0.0, 26.87], [False, False, False, True])
    """

    def __init__(self, alpha: float | Param | None = None, *, halflife: float | None = None,
                 threshold: float | Param = 3.0, min_periods: int = 10) -> None:
        if (alpha is None) == (halflife is None):
            msg = "EWMA needs exactly one of `alpha` and `halflife`"
            raise ConfigError(msg)
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
        self._per_key: dict[int, tuple[float, float, int]] = {}  # mean, var, n

    def _limit(self) -> float:
        return float(resolve(self.threshold))

    def _process_all(self, codes: npt.NDArray[np.intp], t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        from rtnb.detect._kernels import ewma_keys  # numba: imported on first use

        seg = _Segments(codes)
        scores = np.empty(len(x))
        if not seg.keys:
            return scores
        state = self._per_key
        keys = seg.keys
        # the keys' (mean, var, n) as rows of one array, changed in place by the kernel
        # (fromiter over the flattened tuples: a third of the time of np.array on a list)
        carried = np.fromiter(chain.from_iterable(map(state.get, keys, repeat(_EWMA_NEW))),
                              dtype=np.float64, count=3 * len(keys)).reshape(-1, 3)
        ewma_keys(np.ascontiguousarray(x), seg.order, seg.starts, seg.counts, carried,
                  float(resolve(self.alpha)), self.min_periods, self._limit(), protect, scores)
        mean, var, _ = carried.T.tolist()
        n = carried[:, 2].astype(np.int64).tolist()
        state.update(zip(keys, zip(mean, var, n, strict=True), strict=True))
        if 0 in n:  # new keys whose values were all missing learned nothing: no state
            for k, learned in zip(keys, n, strict=True):
                if not learned:
                    del state[k]
        return scores

    def __repr__(self) -> str:
        return f"EWMA(alpha={self.alpha!r}, threshold={self.threshold!r})"


_EWMA_NEW = (np.nan, 0.0, 0)  # a key's EWMA state before its first value


class RateOfChange(Detector):
    """Change per ``per`` of event time since the key's previous row: ``dx / dt * per``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:02",
    ...                     "2026-01-01 00:00:03"])
    >>> s, a = RateOfChange(threshold=5, per="1s").process([1.0, 3.0, 10.0], times=t)
    >>> s.tolist(), a.tolist()
    ([nan, 1.0, 7.0], [False, False, True])
    """

    def __init__(self, threshold: float | Param, per: DurationLike = "1s") -> None:
        self.threshold = threshold
        self.per_ns = to_ns(per, name="per")
        self._per_key: dict[int, tuple[int, float]] = {}

    def _limit(self) -> float:
        return float(resolve(self.threshold))

    def _process_all(self, codes: npt.NDArray[np.intp], t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        seg = _Segments(codes)
        scores = np.full(len(x), np.nan)
        if not seg.keys:
            return scores
        state = self._per_key
        last = [state.get(k, (0, np.nan)) for k in seg.keys]
        last_t = np.array([v[0] for v in last], dtype=np.int64)
        last_x = np.array([v[1] for v in last], dtype=np.float64)
        ts, xs = t[seg.order], x[seg.order]
        per = self.per_ns
        if protect:  # a row found anomalous does not become the key's previous row
            limit = self._limit()
            out = np.full(len(x), np.nan)
            for live, rows in seg.lockstep():
                ti, xi, lt, lx = ts[rows], xs[rows], last_t[live], last_x[live]
                with np.errstate(invalid="ignore", divide="ignore"):
                    s = np.where(ti != lt, (xi - lx) / (ti - lt) * per, np.nan)
                    keep = ~(np.abs(s) > limit)
                out[rows] = s
                last_t[live[keep]], last_x[live[keep]] = ti[keep], xi[keep]
            scores[seg.order] = out
        else:  # the previous row: the key's previous row in this batch, or from the state
            prev_t = np.empty_like(ts)
            prev_x = np.empty_like(xs)
            prev_t[1:], prev_x[1:] = ts[:-1], xs[:-1]
            prev_t[seg.starts], prev_x[seg.starts] = last_t, last_x
            with np.errstate(invalid="ignore", divide="ignore"):
                dt = (ts - prev_t).astype(np.float64)
                scores[seg.order] = np.where(dt != 0, (xs - prev_x) / dt * per, np.nan)
            ends = seg.ends
            last_t, last_x = ts[ends], xs[ends]
        state.update(zip(seg.keys, zip(last_t.tolist(), last_x.tolist(), strict=True),
                         strict=True))
        return scores

    def __repr__(self) -> str:
        return f"RateOfChange(threshold={self.threshold!r})"


class RollingQuantile(Detector):
    """``x / (factor * q-quantile)`` of the key's values in ``[t - window, t)``.

    Above 1 is anomalous: ``x`` is more than ``factor`` times the window's ``q``-quantile.

    The quantile is pandas' ``rolling(window, closed="left").quantile(q)`` (linear
    interpolation), computed in C over the key's retained window and the new rows.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.date_range("2026-01-01", periods=6, freq="s")
    >>> d = RollingQuantile(window="1min", q=0.5, factor=2.0, min_periods=3)
    >>> s, a = d.process([10.0, 12.0, 11.0, 13.0, 30.0, 11.0], times=t)
    >>> s.round(3).tolist(), a.tolist()
    ([nan, nan, nan, 0.591, 1.304, 0.458], [False, False, False, False, True, False])
    """

    def __init__(self, window: DurationLike | Param = "10min", q: float | Param = 0.99,
                 factor: float | Param = 1.0, min_periods: int = 10) -> None:
        if to_ns(resolve(window), name="window") <= 0:
            msg = f"RollingQuantile window must be positive; got {resolve(window)!r}"
            raise ConfigError(msg)
        if not 0 <= float(resolve(q)) <= 1:
            msg = f"RollingQuantile q must be in [0, 1]; got {resolve(q)!r}"
            raise ConfigError(msg)
        self.window, self.q, self.factor, self.min_periods = window, q, factor, min_periods
        self._per_key: dict[int, tuple[npt.NDArray[np.int64], Floats]] = {}

    def _limit(self) -> float:
        return 1.0

    def _flag(self, scores: Floats) -> npt.NDArray[np.bool_]:
        with np.errstate(invalid="ignore"):
            return np.asarray(scores > 1.0, dtype=bool)

    def _process_key(self, key: int, t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        w = to_ns(resolve(self.window), name="window")
        ht, hx = self._per_key.get(key, (np.zeros(0, dtype=np.int64), np.zeros(0)))
        at, ax = np.concatenate([ht, t]), np.concatenate([hx, x])
        series = pd.Series(ax, index=pd.DatetimeIndex(at.view("datetime64[ns]")))
        quant = series.rolling(pd.Timedelta(w, "ns"), closed="left",
                               min_periods=self.min_periods).quantile(
            float(resolve(self.q))).to_numpy()[len(ht):]
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = x / (float(resolve(self.factor)) * quant)
        if protect:  # anomalous rows stay out of later windows: recompute without them
            keep_rows = ~(scores > 1.0)
            if not keep_rows.all():
                scores = np.full(len(x), np.nan)
                kt, kx = list(ht), list(hx)
                for i, (ti, xi) in enumerate(zip(t.tolist(), x.tolist(), strict=True)):
                    lo = np.searchsorted(np.asarray(kt, dtype=np.int64), ti - w, side="left")
                    vals = np.asarray(kx[lo:], dtype=np.float64)
                    vals = vals[~np.isnan(vals)]
                    if len(vals) >= self.min_periods:
                        scores[i] = xi / (float(resolve(self.factor)) *
                                          float(np.quantile(vals, float(resolve(self.q)))))
                    if not scores[i] > 1.0:
                        kt.append(ti)
                        kx.append(xi)
                at, ax = np.asarray(kt, dtype=np.int64), np.asarray(kx, dtype=np.float64)
        if len(at):
            keep = at >= at.max() - w
            at, ax = at[keep], ax[keep]
        self._per_key[key] = (at, ax)
        return np.asarray(scores, dtype=np.float64)

    def __repr__(self) -> str:
        return f"RollingQuantile(window={self.window!r}, q={self.q!r}, factor={self.factor!r})"


class MAD(_EventTimeWindow):
    """``|x - median| / (1.4826 * MAD)`` of the key's values in ``[t - window, t)``.

    The median and the median absolute deviation (MAD, the median of ``|v - median|``) are
    those of the key's values in the ``window`` of event time before the row (the row itself
    excluded, as pandas' ``rolling(window, closed="left")``); missing values are skipped and
    fewer than ``min_periods`` values give ``NaN``. ``1.4826 * MAD`` estimates the standard
    deviation of normal data, so the score reads like a z-score that one outlier in the
    window cannot inflate. ``score > threshold`` is an anomaly; a window whose values are all
    equal has MAD 0, and any other value then scores ``inf``.

    Each key's rows are taken one by one in a compiled loop (numba: compiled on the first
    batch in a process, or read from numba's cache): the window's values are kept sorted
    from batch to batch, in blocks (a row in or out shifts the values of one block), the
    median is read off, and the MAD's split (how many of the ``k`` smallest deviations lie
    below the median) is searched from the previous row's split, which it rarely leaves by
    more than one. An exact rolling median of deviations has no vectorised form in numpy: a
    padded (rows x window) matrix with ``nanmedian`` costs O(window) per row.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.date_range("2026-01-01", periods=6, freq="s")
    >>> d = MAD(window="1min", threshold=3.5, min_periods=3)
    >>> s, a = d.process([10.0, 12.0, 11.0, 13.0, 30.0, 11.0], times=t)
    >>> s.round(3).tolist(), a.tolist()
    ([nan, nan, nan, 1.349, 12.478, 0.674], [False, False, False, False, True, False])
    """

    def __init__(self, window: DurationLike | Param = "5min", threshold: float | Param = 3.5,
                 min_periods: int = 10) -> None:
        # per key: (times, values) of the rows the next window can hold, in arrival order,
        # and those values less the missing ones, sorted
        self._setup_window(window, threshold, min_periods, least=1)

    def _process_all(self, codes: npt.NDArray[np.intp], t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        from rtnb.detect._kernels import mad_window  # numba: imported on first use

        seg = _Segments(codes)
        ts, xs = t[seg.order], x[seg.order]  # key by key, each key's rows in arrival order
        out = np.empty(len(x))
        w, mp, limit = self._w_ns, self.min_periods, self._limit()
        state = self._per_key
        for key, start, count in zip(seg.keys, seg.starts.tolist(), seg.counts.tolist(),
                                     strict=True):
            rows = slice(start, start + count)
            ht, hx, hs = _window_state(state.get(key))
            state[key] = mad_window(ht, hx, hs, ts[rows], xs[rows], w, mp, limit, protect,
                                    out[rows])
        scores = np.empty(len(x))
        scores[seg.order] = out
        return scores

    def __repr__(self) -> str:
        return f"MAD(window={self.window!r}, threshold={self.threshold!r})"


def _window_state(saved: tuple[npt.NDArray[Any], ...] | None,
                  ) -> tuple[npt.NDArray[np.int64], Floats, Floats]:
    """A key's :class:`MAD` state as the kernel takes it; ``None`` is an empty window.

    A ``(times, values)`` pair (the state before MAD kept its values sorted, as older
    checkpoints hold it) gets its sorted values computed once.
    """
    if saved is None:
        return _NO_TIMES, _NO_VALUES, _NO_VALUES
    if len(saved) == 2:
        ht, hx = saved
        return ht, hx, np.sort(hx[~np.isnan(hx)])
    ht, hx, hs = saved
    return ht, hx, hs


_NO_TIMES = np.zeros(0, dtype=np.int64)
_NO_VALUES = np.zeros(0, dtype=np.float64)


class DetectorLogic:
    """A detector run on a frame's batches: the logic of ``sdf.detect`` (:mod:`rtnb.stateful`).

    It adds the ``score`` and ``anomaly`` columns, per key.

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
    protect, score, anomaly
        As in :meth:`rtnb.StreamingFrame.detect`.
    """

    watermark = None

    def __init__(self, detector: Detector, *, on: str, keys: Any, time: str | None,
                 protect: bool = False, score: str = "score",
                 anomaly: str = "is_anomaly") -> None:
        self.detector, self.on, self.keys, self.time = detector, on, keys, time
        self.protect, self.score, self.anomaly = protect, score, anomaly

    def process(self, batch: pd.DataFrame) -> Any:
        """Score and learn the batch; the rows go on with two more columns."""
        times = batch[self.time].to_numpy() if self.time is not None else None
        s, a = self.detector.process(
            batch[self.on].to_numpy(dtype=np.float64, na_value=np.nan),
            self.keys.codes(batch), times, protect=self.protect)
        return Output(batch.assign(**{self.score: s, self.anomaly: a}))

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
