"""``Anomaly``: the recommended detector, no arguments needed.

It combines several kinds of evidence, each measured against the key's own history in units
of that history (so one setting serves a CPU percentage, a latency in seconds and a count
of tweets, sampled every second or every hour), into an anomaly likelihood in [0, 1]:

- **spike / dip**: how far the value is from a fast forecast (an exponentially weighted mean
  with a half-life of one row), in units of the typical forecast error; the log of that
  ratio is compared with its own long-run mean and spread, and beyond two spreads its tail
  is the one the key's own rows show (peaks over a threshold: an exponential tail fitted to
  how often and by how much they passed two spreads, as SPOT), so a heavy-tailed series
  needs a bigger jump than a quiet one;
- **volatility**: the same ratio averaged over the last ~10 rows against its long-run
  distribution (Numenta's anomaly likelihood: a burst of errors, not one of them);
- **level shift up / down**: a short mean (half-life 5 rows, of values clipped at 4 typical
  forecast errors around it, so one outlier moves it little) against the long mean, in
  typical forecast errors, compared with how far apart the two usually are;
- **new high / new low**: a value beyond the key's whole range by more than 20 % of it (as
  Numenta's NAB detector's "spatial anomaly"): the forecast error's tail probability is
  multiplied by ``10 / rows seen`` (a record gets rarer as the range holds more rows);
- **flatline**: the same value repeated more than twice the longest run seen (and at least
  ``min_flat`` rows): a stuck sensor or a dead feed that repeats its last value;
- **above / below the daily pattern**: per hour of the day (UTC), the usual deviation from
  the long mean is learned (each hour over about five days of its rows); the deviation from
  that pattern, clipped at 4 typical deviations and averaged like the level (half-life 5
  rows), against its long-run mean and spread. In use once a key has two days of history
  and the pattern explains at least a third of its spread (a day that stays flat at the
  mean, or runs at the wrong hours, while every value is within the usual range);
- **gap**: event time jumps by more than ``gap_factor`` times the largest gap seen (and the
  usual interval): rows that stopped coming.

Each kind gives a tail probability ``p`` (a normal tail of its z / 1.2 for volatility, level
and the daily pattern: real series have heavier tails than a normal's; a fixed ``1e-7`` for
flatline and gap); the likelihood is ``1 - min(1, 5 min p)`` (a
Bonferroni bound over the kinds). An **incident** starts when the likelihood reaches
``threshold`` and ends once it has stayed below ``clear`` for ``rearm`` rows in a row, so
``is_anomaly`` is true from the onset to the end of one incident and ``rtnb.alert(...,
"is_anomaly")`` pages once for it.

All long-run statistics are exponentially weighted with a half-life of ``memory`` rows and
learned *winsorised* once the key is warmed up (a value beyond 3-4 spreads is learned as if
at that bound), so an incident bends the baseline slowly while a lasting change still becomes
the new normal. Until a key has ``warmup`` rows its rows score ``NaN``. A missing value is
neither scored nor learned; +/-inf is never learned and, once warmed up, starts an incident
(likelihood 1, reason "not a finite number (inf)").
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from rtnb.detect.detectors import Bools, Detector, Floats, Ints, _grown
from rtnb.errors import ConfigError

__all__ = ["Anomaly"]


def _alpha(halflife: float) -> float:
    return 1.0 - math.exp(-math.log(2.0) / halflife)


class Anomaly(Detector):
    """The recommended detector: an anomaly likelihood in [0, 1] with a reason per row.

    Adds ``score`` (the likelihood; ``NaN`` while the key warms up), ``is_anomaly`` (true
    during an incident, see the module docstring) and ``reason`` (for rows scoring at least
    ``clear``: which evidence was strongest and by how much, e.g. ``"spike z=7.2"``,
    ``"flatline 120 rows"``; ``None`` otherwise).

    Parameters
    ----------
    threshold
        Likelihood at which an incident starts (0.9999: a tail probability of 1e-4).
    clear
        An incident ends once the likelihood stays below this for ``rearm`` rows.
    rearm
        Rows below ``clear`` that end an incident.
    memory
        Half-life in rows of the long-run statistics.
    warmup
        Rows of a key before it is scored.
    min_flat
        The fewest repeated values that can be a flatline.
    gap_factor
        A gap in event time this many times the largest seen (and the usual interval).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(100.0, 5.0, 600)
    >>> x[500] = 160.0  # a spike
    >>> t = pd.date_range("2026-01-01", periods=600, freq="min")
    >>> det = Anomaly()
    >>> score, flag = det.process(x, times=t)
    >>> int(np.flatnonzero(flag)[0]), det.last_reasons()[500]
    (500, 'new high (+128% of the range)')
    """

    extra = ("reason",)
    #: The ``reason`` column's dtype: pandas' string dtype (missing: NaN).
    extra_dtypes: ClassVar[dict[str, Any]] = {"reason": pd.StringDtype(na_value=np.nan)}

    def __init__(self, *, threshold: float = 0.9999, clear: float = 0.99, rearm: int = 20,
                 memory: float = 500.0, warmup: int = 300, min_flat: int = 10,
                 gap_factor: float = 3.0) -> None:
        if not 0 < clear <= threshold < 1:
            msg = (f"Anomaly needs 0 < clear <= threshold < 1; got clear={clear!r}, "
                   f"threshold={threshold!r}")
            raise ConfigError(msg)
        for value, name, least in ((rearm, "rearm", 1), (warmup, "warmup", 2),
                                   (min_flat, "min_flat", 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                msg = f"Anomaly {name} must be an int >= {least}; got {value!r}"
                raise ConfigError(msg)
        if not memory >= 2:
            msg = f"Anomaly memory (a half-life in rows) must be >= 2; got {memory!r}"
            raise ConfigError(msg)
        if not gap_factor > 1:
            msg = f"Anomaly gap_factor must be > 1; got {gap_factor!r}"
            raise ConfigError(msg)
        self.threshold, self.clear, self.rearm = threshold, clear, rearm
        self.memory, self.warmup, self.min_flat, self.gap_factor = (
            memory, warmup, min_flat, gap_factor)
        from rtnb.detect import _anomaly_kernels as k  # numba: on first use

        par = np.zeros(k.NPAR)
        par[k.P_PRED] = _alpha(1.0)
        par[k.P_LONG] = _alpha(memory)
        par[k.P_SHORT] = 2.0 / 11.0  # ~10 rows, Numenta's averaging window
        par[k.P_LEVEL] = _alpha(5.0)
        par[k.P_WARM] = warmup
        par[k.P_ON], par[k.P_OFF], par[k.P_REARM] = threshold, clear, rearm
        par[k.P_TOL], par[k.P_FLAT], par[k.P_MINFLAT] = 0.2, 2.0, min_flat
        par[k.P_GAP] = gap_factor
        self._par = par
        self._ncol = k.NCOL
        self._st = np.zeros((0, k.NCOL))
        self._prof = np.zeros((0, k.BINS))  # per key: the daily pattern, by hour of day
        self._hours = np.zeros((0, k.BINS))  # and how many rows each hour has had
        self._why = np.zeros(0, dtype=np.int64)
        self._size = np.zeros(0)
        self._extra_out: list[Any] = []
        self._init_slots()

    def _limit(self) -> float:
        return self.threshold

    def _resize(self, n: int) -> None:
        self._st = _grown(self._st, n, 0.0)
        self._prof = _grown(self._prof, n, 0.0)
        self._hours = _grown(self._hours, n, 0.0)

    def _run(self, slots: npt.NDArray[np.intp], t: Ints, x: Floats,
             protect: bool) -> tuple[Floats, Bools]:
        from rtnb.detect._anomaly_kernels import anomaly_rows

        n = len(x)
        scores = np.empty(n)
        flags = np.empty(n, dtype=np.bool_)
        why = np.empty(n, dtype=np.int64)
        size = np.empty(n)
        anomaly_rows(slots, t, x, self._st, self._prof, self._hours, self._par, scores, flags,
                     why, size)
        self._why, self._size = why, size
        self._extra_out = [self._reasons(why, size)]
        return scores, flags

    @classmethod
    def _reasons(cls, why: Ints, size: Floats) -> Any:
        from rtnb.detect._anomaly_kernels import COMPONENTS

        out = np.full(len(why), None, dtype=object)
        for i in np.flatnonzero(why).tolist():
            name = COMPONENTS[int(why[i]) - 1]
            v = float(size[i])
            if name == "not a finite number":
                out[i] = f"not a finite number ({v})"
            elif name == "flatline":
                out[i] = f"flatline {int(v)} rows"
            elif name == "gap":
                out[i] = f"gap {v:.0f}x the usual interval"
            elif name.startswith("new"):
                out[i] = f"{name} (+{v:.0%} of the range)"
            else:
                out[i] = f"{name} z={v:.1f}"
        # pandas' string dtype whatever the batch holds (a batch of quiet rows too)
        return pd.array(out, dtype=cls.extra_dtypes["reason"])

    def last_reasons(self) -> list[str | None]:
        """The ``reason`` of each row of the last batch processed (``None``: no reason)."""
        if not self._extra_out:
            return []
        return [None if v != v else v for v in self._extra_out[0].tolist()]

    def _state(self) -> dict[str, Any]:
        has = np.flatnonzero(self._st[:self._n, 0] > 0)
        return {"keys": self._codes[has].copy(), "state": self._st[has].copy(),
                "daily": self._prof[has].copy(), "seen": self._hours[has].copy()}

    def _load(self, state: dict[str, Any]) -> None:
        st = np.asarray(state["state"], dtype=np.float64).reshape(-1, self._ncol)
        self._st[:len(st)] = st
        self._prof[:len(st)] = np.asarray(state["daily"], dtype=np.float64).reshape(len(st), -1)
        self._hours[:len(st)] = np.asarray(state["seen"], dtype=np.float64).reshape(len(st), -1)

    def _from_per_key(self, per_key: dict[int, Any]) -> dict[str, Any]:
        msg = "Anomaly snapshots are arrays; this one is not an Anomaly snapshot"
        raise ConfigError(msg)

    def _save_key(self, key: int) -> Any:
        slot = self._slot_of(key)
        if slot < 0:
            return key, slot, None
        return key, slot, (self._st[slot].copy(), self._prof[slot].copy(),
                           self._hours[slot].copy())

    def _restore_key(self, saved: Any) -> None:
        key, slot, rows = saved
        if rows is None:  # a new key: back to no state
            slot = self._slot_of(key)
            self._st[slot], self._prof[slot], self._hours[slot] = 0.0, 0.0, 0.0
        else:
            self._st[slot], self._prof[slot], self._hours[slot] = rows

    def __repr__(self) -> str:
        given = {"threshold": (self.threshold, 0.9999), "clear": (self.clear, 0.99),
                 "rearm": (self.rearm, 20), "memory": (self.memory, 500.0),
                 "warmup": (self.warmup, 300), "min_flat": (self.min_flat, 10),
                 "gap_factor": (self.gap_factor, 3.0)}
        args = ", ".join(f"{k}={v!r}" for k, (v, d) in given.items() if v != d)
        return f"Anomaly({args})"


