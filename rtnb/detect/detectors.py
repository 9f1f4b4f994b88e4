"""The detectors. Each scores a row against its key's state *before* the row, then learns it.

Rows of one key are taken in arrival order, which for these detectors must also be event-time
order per key (as a source delivers them, or after a window); the scores then equal pandas
computing the same statistic on the whole series, whatever the batch split.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve

__all__ = ["EWMA", "Detector", "RateOfChange", "RollingQuantile", "Threshold", "ZScore"]

Floats = npt.NDArray[np.float64]


def _groups(keys: npt.NDArray[np.intp]) -> list[tuple[int, npt.NDArray[np.intp]]]:
    """Row positions per key, each in arrival order."""
    if len(keys) == 0:
        return []
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    return [(int(keys[g[0]]), g) for g in np.split(order, bounds)]


class Detector:
    """Base class: per-key state, ``process`` = score every row against what came before it.

    Subclasses implement ``_process_key(key, t, x, protect) -> scores`` for the rows of one
    key (in order) and ``_limit()`` (the score above which, in absolute value, a row is
    anomalous).
    """

    #: Whether ``protect`` changes anything (stateless detectors ignore it).
    stateful = True

    def _limit(self) -> float:
        raise NotImplementedError

    def _process_key(self, key: int, t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        raise NotImplementedError

    def process(self, x: Any, keys: Any = None, times: Any = None, *,
                protect: bool = False) -> tuple[Floats, npt.NDArray[np.bool_]]:
        """Score each row against its key's earlier rows, learn it; return (score, anomaly).

        ``keys`` are integer key codes (default: one key); ``times`` are int64 nanoseconds or
        datetimes (needed by time-windowed detectors).
        """
        values = np.asarray(x, dtype=np.float64)
        n = len(values)
        codes = np.zeros(n, dtype=np.intp) if keys is None else np.asarray(keys, dtype=np.intp)
        if times is None:
            t = np.zeros(n, dtype=np.int64)
        else:
            raw = np.asarray(times)
            t = raw.astype("datetime64[ns]").view(np.int64) if raw.dtype.kind == "M" else \
                raw.astype(np.int64)
        scores = np.full(n, np.nan)
        self._begin()
        for key, rows in _groups(codes):
            scores[rows] = self._process_key(key, t[rows], values[rows], protect)
        return scores, self._flag(scores)

    def _begin(self) -> None:
        """Read the Params once per batch (subclasses)."""

    def _flag(self, scores: Floats) -> npt.NDArray[np.bool_]:
        with np.errstate(invalid="ignore"):
            return np.asarray(np.abs(scores) > self._limit(), dtype=bool)

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


class ZScore(Detector):
    """``(x - mean) / std`` of the key's values in the ``window`` of event time before the row.

    The window is ``[t - window, t)`` (the row itself excluded), as pandas'
    ``rolling(window, closed="left")``; fewer than ``min_periods`` values give ``NaN``.
    ``|score| > threshold`` is an anomaly.

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
        if to_ns(resolve(window), name="window") <= 0:
            msg = f"ZScore window must be positive; got {resolve(window)!r}"
            raise ConfigError(msg)
        if isinstance(min_periods, bool) or not isinstance(min_periods, int) or min_periods < 2:
            msg = f"ZScore min_periods must be an int >= 2; got {min_periods!r}"
            raise ConfigError(msg)
        self.window, self.threshold, self.min_periods = window, threshold, min_periods
        self._per_key: dict[int, tuple[npt.NDArray[np.int64], Floats]] = {}
        self._w_ns = to_ns(resolve(window), name="window")

    def _limit(self) -> float:
        return float(resolve(self.threshold))

    def _begin(self) -> None:
        self._w_ns = to_ns(resolve(self.window), name="window")

    def _process_key(self, key: int, t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        w = self._w_ns
        ht, hx = self._per_key.get(key, (np.zeros(0, dtype=np.int64), np.zeros(0)))
        if protect:
            scores, ht, hx = self._sequential(ht, hx, t, x, w)
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

    def _sequential(self, ht: npt.NDArray[np.int64], hx: Floats, t: npt.NDArray[np.int64],
                    x: Floats, w: int) -> tuple[Floats, npt.NDArray[np.int64], Floats]:
        window: deque[tuple[int, float]] = deque(zip(ht.tolist(), hx.tolist(), strict=True))
        scores = np.full(len(x), np.nan)
        limit = self._limit()
        for i, (ti, xi) in enumerate(zip(t.tolist(), x.tolist(), strict=True)):
            while window and window[0][0] < ti - w:
                window.popleft()
            vals = np.array([v for _, v in window if v == v])
            if len(vals) >= self.min_periods:
                std = float(vals.std(ddof=1))
                with np.errstate(invalid="ignore", divide="ignore"):
                    scores[i] = (xi - float(vals.mean())) / std
            if not abs(scores[i]) > limit:  # anomalous rows stay out of the state: protect
                window.append((ti, xi))
        return (scores, np.array([a for a, _ in window], dtype=np.int64),
                np.array([b for _, b in window], dtype=np.float64))

    def __repr__(self) -> str:
        return f"ZScore(window={self.window!r}, threshold={self.threshold!r})"


class EWMA(Detector):
    """``(x - mean) / std`` against exponentially weighted mean and variance of earlier rows.

    ``mean_t = (1 - alpha) mean_{t-1} + alpha x_t`` (pandas ``ewm(alpha, adjust=False)``) and
    ``var_t = (1 - alpha) (var_{t-1} + alpha (x_t - mean_{t-1})^2)``; ``halflife`` (rows)
    gives ``alpha = 1 - exp(-ln 2 / halflife)``. Rows before ``min_periods`` score ``NaN``.

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

    def _process_key(self, key: int, t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        a = float(resolve(self.alpha))
        mean, var, n = self._per_key.get(key, (np.nan, 0.0, 0))
        scores = np.full(len(x), np.nan)
        limit = self._limit()
        if protect or np.isnan(x).any():
            for i, xi in enumerate(x.tolist()):
                if xi != xi:
                    continue
                if n >= self.min_periods and var > 0:
                    scores[i] = (xi - mean) / np.sqrt(var)
                if protect and abs(scores[i]) > limit:
                    continue
                if n == 0:
                    mean, var = xi, 0.0
                else:
                    d = xi - mean
                    mean += a * d
                    var = (1 - a) * (var + a * d * d)
                n += 1
            self._per_key[key] = (mean, var, n)
            return scores
        # vectorised: both recursions are linear, y_t = (1 - a) y_{t-1} + a z_t
        k = len(x)
        if n == 0:
            means = _ewm(x, a, first=x[0], skip_first=True)
            prev_mean = np.concatenate([[x[0]], means[:-1]])
        else:
            means = _ewm(x, a, first=mean, skip_first=False)
            prev_mean = np.concatenate([[mean], means[:-1]])
        d = x - prev_mean
        z = (1 - a) * d * d
        if n == 0:
            z[0] = 0.0
            variances = _ewm(z, a, first=0.0, skip_first=True)
            prev_var = np.concatenate([[0.0], variances[:-1]])
        else:
            variances = _ewm(z, a, first=var, skip_first=False)
            prev_var = np.concatenate([[var], variances[:-1]])
        seen = n + np.arange(k)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.where((seen >= self.min_periods) & (prev_var > 0),
                              d / np.sqrt(prev_var), np.nan)
        self._per_key[key] = (float(means[-1]), float(variances[-1]), n + k)
        return np.asarray(scores, dtype=np.float64)

    def __repr__(self) -> str:
        return f"EWMA(alpha={self.alpha!r}, threshold={self.threshold!r})"


def _ewm(z: Floats, a: float, *, first: float, skip_first: bool) -> Floats:
    """``y_i = (1 - a) y_{i-1} + a z_i`` from ``y_{-1} = first`` (or ``y_0 = first``)."""
    if skip_first:
        series = pd.Series(np.concatenate([[first], z[1:]]))
        return series.ewm(alpha=a, adjust=False).mean().to_numpy()
    series = pd.Series(np.concatenate([[first], z]))
    return series.ewm(alpha=a, adjust=False).mean().to_numpy()[1:]


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

    def _process_key(self, key: int, t: npt.NDArray[np.int64], x: Floats,
                     protect: bool) -> Floats:
        lt, lx = self._per_key.get(key, (0, np.nan))
        if protect:
            scores = np.full(len(x), np.nan)
            limit = self._limit()
            for i, (ti, xi) in enumerate(zip(t.tolist(), x.tolist(), strict=True)):
                if ti != lt and lx == lx:
                    scores[i] = (xi - lx) / (ti - lt) * self.per_ns
                if not abs(scores[i]) > limit:
                    lt, lx = ti, xi
            self._per_key[key] = (lt, lx)
            return scores
        at = np.concatenate([[lt], t])
        ax = np.concatenate([[lx], x])
        with np.errstate(invalid="ignore", divide="ignore"):
            dt = np.diff(at).astype(np.float64)
            scores = np.where(dt != 0, np.diff(ax) / dt * self.per_ns, np.nan)
        self._per_key[key] = (int(t[-1]), float(x[-1]))
        return np.asarray(scores, dtype=np.float64)

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
