"""Aggregations for windows: small objects vectorised over groups.

An aggregation keeps, per group (one open window of one key), a *state*: a dict of numpy
arrays of equal length, one element per group. The window engine never looks inside; it
only calls the five methods of :class:`Aggregation`:

``initial(n)``
    the identity state of ``n`` empty groups;
``on_new(state, groups, values, times, seq)``
    fold rows into their groups (``groups[i]`` indexes the state) and return the state;
``on_old(state, groups, values, times, seq)``
    remove rows again (per-event rolling windows); optional;
``merge(state, groups, n)``
    reduce several partial states into ``n`` groups (``groups[i]`` says where partial ``i``
    goes): how batches, and Dask partitions, are combined;
``result(state)``
    the final value of each group.

``times`` are int64 nanoseconds and ``seq`` the int64 arrival order; only order-aware
aggregations (``first``/``last``) use them. NaN values are skipped, as pandas does.

A new aggregation is a few lines and needs no window code:

>>> import numpy as np
>>> class SumOfSquares(Aggregation):
...     fields = ("ss",)
...     def initial(self, n): return {"ss": np.zeros(n)}
...     def on_new(self, state, groups, values, times, seq):
...         np.add.at(state["ss"], groups, np.nan_to_num(values) ** 2)
...         return state
...     def merge(self, state, groups, n):
...         return {"ss": np.bincount(groups, state["ss"], minlength=n)}
...     def result(self, state): return state["ss"]
>>> agg = SumOfSquares()
>>> s = agg.on_new(agg.initial(2), np.array([0, 1, 1]), np.array([1.0, 2.0, 3.0]), None, None)
>>> agg.result(s)
array([ 1., 13.])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeAlias

import numpy as np
import numpy.typing as npt

from rtnb.errors import ConfigError

__all__ = [
    "Aggregation",
    "Count",
    "First",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Quantile",
    "State",
    "Std",
    "Sum",
    "Var",
    "concat_states",
    "make_aggregation",
    "take_state",
]

State: TypeAlias = dict[str, npt.NDArray[Any]]
IntArray: TypeAlias = npt.NDArray[np.intp]


class Aggregation:
    """Base class of window aggregations (see the module docstring for the protocol).

    Subclasses set ``fields`` (the state's array names). ``holistic = True`` marks an
    aggregation that needs every value of a group at once (exact quantiles): the engine keeps
    the raw values of open windows for it and calls :meth:`result_sorted` when a window is
    emitted.
    """

    fields: ClassVar[tuple[str, ...]] = ()
    holistic: ClassVar[bool] = False
    #: ``True`` when :meth:`on_new` adds the rows to the state it is given (every built-in
    #: does): the engine then folds a batch straight into the open windows' state, with no
    #: partial state and no :meth:`merge`. Leave ``False`` if ``on_new`` expects the identity
    #: state; the engine then folds into fresh groups and merges.
    accumulates: ClassVar[bool] = False
    #: result dtype when ``holistic`` or when the engine must build an empty result
    dtype: ClassVar[str] = "float64"

    def initial(self, n: int) -> State:
        """Return the identity state of ``n`` empty groups."""
        raise NotImplementedError

    def on_new(
        self,
        state: State,
        groups: IntArray,
        values: npt.NDArray[Any],
        times: npt.NDArray[np.int64] | None,
        seq: npt.NDArray[np.int64] | None,
    ) -> State:
        """Fold ``values`` into the groups ``groups`` indexes and return the state."""
        raise NotImplementedError

    def on_old(
        self,
        state: State,
        groups: IntArray,
        values: npt.NDArray[Any],
        times: npt.NDArray[np.int64] | None,
        seq: npt.NDArray[np.int64] | None,
    ) -> State:
        """Remove ``values`` from their groups again (for per-event rolling windows)."""
        msg = f"{type(self).__name__} cannot remove values, so it cannot be used in rolling()"
        raise ConfigError(msg)

    def merge(self, state: State, groups: IntArray, n: int) -> State:
        """Reduce partial states into ``n`` groups; ``groups[i]`` is where partial ``i`` goes."""
        raise NotImplementedError

    def result(self, state: State) -> npt.NDArray[Any]:
        """Return the value of every group."""
        raise NotImplementedError

    def result_sorted(self, values: npt.NDArray[np.float64], starts: IntArray,
                      counts: IntArray) -> npt.NDArray[Any]:
        """Holistic aggregations: values sorted within groups, group ``i`` at ``starts[i]``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _nan_to(values: npt.NDArray[Any], fill: float) -> npt.NDArray[np.float64]:
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(v), fill, v)


def _reduce_by(ufunc: np.ufunc, values: npt.NDArray[Any], groups: IntArray, n: int,
               fill: float) -> npt.NDArray[np.float64]:
    """Vectorised ``ufunc`` reduction of ``values`` into ``n`` groups (``fill`` where empty)."""
    out = np.full(n, fill, dtype=np.float64)
    ufunc.at(out, groups, np.asarray(values, dtype=np.float64))
    return out


class Count(Aggregation):
    """Number of non-NaN values (``pandas.core.groupby.GroupBy.count``)."""

    fields = ("n",)
    dtype = "int64"
    accumulates = True

    def initial(self, n: int) -> State:
        return {"n": np.zeros(n, dtype=np.int64)}

    def on_new(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        ok = ~np.isnan(np.asarray(values, dtype=np.float64))
        state["n"] += np.bincount(groups[ok], minlength=len(state["n"]))
        return state

    def on_old(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        ok = ~np.isnan(np.asarray(values, dtype=np.float64))
        state["n"] -= np.bincount(groups[ok], minlength=len(state["n"]))
        return state

    def merge(self, state: State, groups: IntArray, n: int) -> State:
        return {"n": np.bincount(groups, state["n"], minlength=n).astype(np.int64)}

    def result(self, state: State) -> npt.NDArray[Any]:
        return state["n"]


class Sum(Aggregation):
    """Sum of the non-NaN values; 0 for a window with none (as pandas)."""

    fields = ("s",)
    accumulates = True

    def initial(self, n: int) -> State:
        return {"s": np.zeros(n)}

    def on_new(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        state["s"] += np.bincount(groups, _nan_to(values, 0.0), minlength=len(state["s"]))
        return state

    def on_old(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        state["s"] -= np.bincount(groups, _nan_to(values, 0.0), minlength=len(state["s"]))
        return state

    def merge(self, state: State, groups: IntArray, n: int) -> State:
        return {"s": np.bincount(groups, state["s"], minlength=n)}

    def result(self, state: State) -> npt.NDArray[Any]:
        return state["s"]


class Var(Aggregation):
    """Sample variance (``ddof=1``), merged with Chan et al.'s parallel formula.

    The state is (count, mean, M2): numerically stable, unlike a running sum of squares.
    """

    fields = ("n", "mean", "m2")
    accumulates = True

    def __init__(self, ddof: int = 1) -> None:
        self.ddof = ddof

    def initial(self, n: int) -> State:
        return {"n": np.zeros(n), "mean": np.zeros(n), "m2": np.zeros(n)}

    def on_new(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        v = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(v)
        g, v = groups[ok], v[ok]
        size = len(state["n"])
        n_b = np.bincount(g, minlength=size).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.bincount(g, v, minlength=size) / n_b
        mean_b = np.where(n_b > 0, mean_b, 0.0)
        m2_b = np.bincount(g, (v - mean_b[g]) ** 2, minlength=size)
        return _chan(state, {"n": n_b, "mean": mean_b, "m2": m2_b})

    def merge(self, state: State, groups: IntArray, n: int) -> State:
        cnt = np.bincount(groups, state["n"], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(groups, state["n"] * state["mean"], minlength=n) / cnt
        mean = np.where(cnt > 0, mean, 0.0)
        dev = state["mean"] - mean[groups]
        m2 = np.bincount(groups, state["m2"] + state["n"] * dev * dev, minlength=n)
        return {"n": cnt, "mean": mean, "m2": m2}

    def on_old(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        # Remove values one group-batch at a time: reverse of Chan's formula.
        v = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(v)
        g, v = groups[ok], v[ok]
        size = len(state["n"])
        n_b = np.bincount(g, minlength=size).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(n_b > 0, np.bincount(g, v, minlength=size) / n_b, 0.0)
        m2_b = np.bincount(g, (v - mean_b[g]) ** 2, minlength=size)
        n_a = state["n"] - n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_a = np.where(n_a > 0, (state["n"] * state["mean"] - n_b * mean_b) / n_a, 0.0)
        delta = mean_b - mean_a
        with np.errstate(invalid="ignore", divide="ignore"):
            m2_a = state["m2"] - m2_b - np.where(
                state["n"] > 0, delta * delta * n_a * n_b / state["n"], 0.0)
        m2_a = np.where(n_a > 0, np.maximum(m2_a, 0.0), 0.0)
        return {"n": n_a, "mean": mean_a, "m2": m2_a}

    def result(self, state: State) -> npt.NDArray[Any]:
        n = state["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = state["m2"] / (n - self.ddof)
        return np.where(n > self.ddof, out, np.nan)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ddof={self.ddof})"


def _chan(a: State, b: State) -> State:
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n > 0, b["n"] / n, 0.0)
    mean = a["mean"] + delta * frac
    m2 = a["m2"] + b["m2"] + delta * delta * a["n"] * frac
    return {"n": n, "mean": mean, "m2": m2}


class Std(Var):
    """Sample standard deviation (``ddof=1``); see :class:`Var`."""

    def result(self, state: State) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = np.sqrt(super().result(state))
        return out


class Mean(Aggregation):
    """Mean of the non-NaN values; NaN for a window with none."""

    fields = ("n", "s")
    accumulates = True

    def initial(self, n: int) -> State:
        return {"n": np.zeros(n), "s": np.zeros(n)}

    def on_new(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        v = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(v)
        size = len(state["n"])
        state["n"] += np.bincount(groups[ok], minlength=size)
        state["s"] += np.bincount(groups[ok], v[ok], minlength=size)
        return state

    def on_old(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        v = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(v)
        size = len(state["n"])
        state["n"] -= np.bincount(groups[ok], minlength=size)
        state["s"] -= np.bincount(groups[ok], v[ok], minlength=size)
        return state

    def merge(self, state: State, groups: IntArray, n: int) -> State:
        return {"n": np.bincount(groups, state["n"], minlength=n),
                "s": np.bincount(groups, state["s"], minlength=n)}

    def result(self, state: State) -> npt.NDArray[Any]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(state["n"] > 0, state["s"] / state["n"], np.nan)


class _Extreme(Aggregation):
    fields = ("v",)
    accumulates = True
    _ufunc: ClassVar[np.ufunc]
    _skip_nan: ClassVar[np.ufunc]
    _fill: ClassVar[float]

    def initial(self, n: int) -> State:
        return {"v": np.full(n, self._fill)}

    def on_new(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: Any, seq: Any) -> State:
        # fmin/fmax skip NaN; in place, one pass, no sort.
        self._skip_nan.at(state["v"], groups, np.asarray(values, dtype=np.float64))
        return state

    def merge(self, state: State, groups: IntArray, n: int) -> State:
        return {"v": _reduce_by(self._ufunc, state["v"], groups, n, self._fill)}

    def result(self, state: State) -> npt.NDArray[Any]:
        v = state["v"]
        return np.where(np.isinf(v) & (np.sign(v) == np.sign(self._fill)), np.nan, v)


class Min(_Extreme):
    """Smallest non-NaN value; NaN for a window with none."""

    _ufunc = np.minimum
    _skip_nan = np.fmin
    _fill = np.inf


class Max(_Extreme):
    """Largest non-NaN value; NaN for a window with none."""

    _ufunc = np.maximum
    _skip_nan = np.fmax
    _fill = -np.inf


class First(Aggregation):
    """Non-NaN value with the earliest event time (ties: earliest arrival).

    On a frame sorted by time (stably, in arrival order) this is ``GroupBy.first()``.
    """

    fields = ("t", "q", "v")
    accumulates = True
    _sign: ClassVar[int] = 1

    def initial(self, n: int) -> State:
        big = np.iinfo(np.int64).max * self._sign
        return {"t": np.full(n, big, dtype=np.int64), "q": np.full(n, big, dtype=np.int64),
                "v": np.full(n, np.nan)}

    def on_new(self, state: State, groups: IntArray, values: npt.NDArray[Any],
               times: npt.NDArray[np.int64] | None, seq: npt.NDArray[np.int64] | None) -> State:
        if times is None or seq is None:
            msg = f"{type(self).__name__} needs event times and arrival order"
            raise ConfigError(msg)
        v = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(v)
        part = {"t": times[ok], "q": seq[ok], "v": v[ok]}
        both = concat_states([state, part])
        n = len(state["v"])
        return self.merge(both, np.concatenate([np.arange(n), groups[ok]]), n)

    def merge(self, state: State, groups: IntArray, n: int) -> State:
        out = self.initial(n)
        if len(groups) == 0:
            return out
        s = self._sign
        # Sort by (group, t, q) ascending for First, descending (t, q) for Last; take each head.
        order = np.lexsort((s * state["q"], s * state["t"], groups))
        g = groups[order]
        heads = np.concatenate(([0], np.flatnonzero(np.diff(g)) + 1))
        pick = order[heads]
        for f in ("t", "q", "v"):
            out[f][g[heads]] = state[f][pick]
        return out

    def result(self, state: State) -> npt.NDArray[Any]:
        return state["v"]


class Last(First):
    """Non-NaN value with the latest event time (ties: latest arrival)."""

    _sign = -1


class Quantile(Aggregation):
    """Exact quantile with linear interpolation, as ``Series.quantile(q)`` (NaN skipped).

    Exact, not a sketch: the engine keeps the raw values of open windows only (bounded by the
    windows' size), sorts each window once when it is emitted, and interpolates like pandas.
    """

    holistic = True
    fields = ()

    def __init__(self, q: float) -> None:
        if not 0.0 <= q <= 1.0:
            msg = f"quantile `q` must be between 0 and 1; got {q!r}"
            raise ConfigError(msg)
        self.q = float(q)

    def result_sorted(self, values: npt.NDArray[np.float64], starts: IntArray,
                      counts: IntArray) -> npt.NDArray[Any]:
        out = np.full(len(starts), np.nan)
        has = counts > 0
        pos = self.q * (counts[has] - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, counts[has] - 1)
        frac = pos - lo
        base = starts[has]
        v_lo = values[base + lo]
        v_hi = values[base + hi]
        out[has] = v_lo + (v_hi - v_lo) * frac
        return out

    def __repr__(self) -> str:
        return f"Quantile(q={self.q})"


_BUILTIN: dict[str, Callable[..., Aggregation]] = {
    "count": Count, "sum": Sum, "mean": Mean, "var": Var, "std": Std, "min": Min, "max": Max,
    "first": First, "last": Last, "quantile": Quantile,
    "median": lambda: Quantile(0.5),
}


def make_aggregation(how: str | Aggregation, *args: Any) -> Aggregation:
    """Return the aggregation named ``how`` (``"mean"``, ``"quantile"`` with ``q`` ...).

    Examples
    --------
    >>> make_aggregation("quantile", 0.99)
    Quantile(q=0.99)
    >>> make_aggregation("average")
    Traceback (most recent call last):
    ...
    rtnb.errors.ConfigError: unknown aggregation 'average'; use one of count, first, ... object
    """
    if isinstance(how, Aggregation):
        if args:
            msg = f"extra arguments {args!r} given with the aggregation object {how!r}"
            raise ConfigError(msg)
        return how
    try:
        factory = _BUILTIN[how]
    except (KeyError, TypeError):
        names = ", ".join(sorted(_BUILTIN))
        msg = f"unknown aggregation {how!r}; use one of {names} or an Aggregation object"
        raise ConfigError(msg) from None
    try:
        return factory(*args)
    except TypeError as exc:
        msg = f"aggregation {how!r} got the wrong arguments {args!r}: {exc}"
        raise ConfigError(msg) from None


def take_state(state: State, index: npt.NDArray[Any]) -> State:
    """Select groups of a state (``index`` is an integer or boolean array)."""
    return {k: v[index] for k, v in state.items()}


def concat_states(states: list[State]) -> State:
    """Stack several states group-wise."""
    keys = states[0].keys()
    return {k: np.concatenate([s[k] for s in states]) for k in keys}
