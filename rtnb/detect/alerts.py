"""Alert rules with Prometheus semantics: inactive -> pending -> firing -> resolved, per key.

A rule watches a boolean condition per key, row by row in event time:

* condition true while inactive: **pending** (``started`` = that row's time); with
  ``for_=0`` it fires at once;
* still true ``for_`` after ``started``: **firing**;
* false while pending: back to **inactive** (the pending alert is cancelled);
* while firing, the rule stays active as long as the condition holds, or, with
  ``clear_below``, as long as the value stays at or above it (hysteresis: fire above 90,
  clear only below 80); once it is not, it is **resolved** when it has stayed so for
  ``keep_firing_for`` (default at once); a return within that time keeps it firing.

Every transition is one event (no repeats): the output frame has columns ``alert``, the
``by`` keys, ``state``, ``time`` (of the transition), ``started`` (of the episode) and
``value``. Keys with no active condition cost nothing: only rows of keys that are pending,
firing, or whose condition holds in the batch are walked through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rtnb import _frames, _record
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve
from rtnb.series import StreamingSeries
from rtnb.stateful import Output
from rtnb.windows.keys import KeyRegistry

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["AlertLogic", "AlertRule", "alert"]

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"


@dataclass
class _KeyState:
    state: str = INACTIVE
    started: int = 0
    clear_since: int | None = None


class AlertRule:
    """The state machine of one rule, for every key (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> rule = AlertRule(for_="2s")
    >>> t = (np.arange(6) * 10**9).astype(np.int64)
    >>> events = rule.process(np.zeros(6, dtype=np.intp), t,
    ...                       np.array([0, 1, 1, 1, 0, 0], dtype=bool), np.arange(6.0))
    >>> [(state, time // 10**9) for _, state, time, _, _ in events]
    [('pending', 1), ('firing', 3), ('resolved', 4)]
    """

    def __init__(self, *, for_: DurationLike | Param = "0s",
                 keep_firing_for: DurationLike | Param = "0s",
                 clear_below: float | Param | None = None) -> None:
        for value, what in ((for_, "for_"), (keep_firing_for, "keep_firing_for")):
            if to_ns(resolve(value), name=what) < 0:
                msg = f"alert `{what}` must not be negative; got {resolve(value)!r}"
                raise ConfigError(msg)
        self.for_, self.keep_firing_for, self.clear_below = for_, keep_firing_for, clear_below
        self._keys: dict[int, _KeyState] = {}
        # the keys not inactive (pending or firing), kept up to date by process(): only their
        # rows and the rows whose condition holds are walked
        self._active: set[int] = set()
        self._parsed: tuple[tuple[Any, Any], tuple[int, int]] | None = None

    def _durations(self) -> tuple[int, int]:
        """``for_`` and ``keep_firing_for`` in ns (parsed again only when a Param changed)."""
        now = (resolve(self.for_), resolve(self.keep_firing_for))
        cached = self._parsed
        if cached is None or cached[0] != now:
            cached = self._parsed = (now, (to_ns(now[0]), to_ns(now[1])))
        return cached[1]

    def state(self, key: int = 0) -> str:
        """The current state of ``key``."""
        return self._keys.get(key, _KeyState()).state

    def snapshot(self) -> dict[int, tuple[str, int, int | None]]:
        """Every key's ``(state, started, clear_since)``, for a checkpoint."""
        return {k: (s.state, s.started, s.clear_since) for k, s in self._keys.items()}

    def restore(self, state: dict[int, tuple[str, int, int | None]]) -> None:
        """Put a :meth:`snapshot` back."""
        self._keys = {k: _KeyState(*v) for k, v in state.items()}
        self._active = {k for k, st in self._keys.items() if st.state != INACTIVE}

    def process(self, keys: np.ndarray[Any, Any], t: np.ndarray[Any, Any],
                cond: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
                ) -> list[tuple[int, str, int, int, float]]:
        """Walk the rows; return the transitions ``(key, state, time, started, value)``."""
        for_ns, keep_ns = self._durations()
        clear = None if self.clear_below is None else float(resolve(self.clear_below))
        events: list[tuple[int, str, int, int, float]] = []
        if len(keys) == 0:
            return events
        active = self._active
        # the keys pending or firing, and those whose condition holds in the batch: all
        # their rows (the others stay inactive whatever happens)
        starting = cond.any()
        if not active and not starting:
            return events
        busy = np.fromiter(active, dtype=np.intp, count=len(active))
        if starting:
            busy = np.union1d(busy, keys[cond])
        rows = np.flatnonzero(np.isin(keys, busy))
        for i in rows.tolist():
            key, ti, ci, vi = int(keys[i]), int(t[i]), bool(cond[i]), float(values[i])
            st = self._keys.get(key)
            if st is None:
                st = self._keys[key] = _KeyState()
            if st.state == INACTIVE:
                if ci:
                    st.started, st.clear_since = ti, None
                    active.add(key)
                    if for_ns == 0:
                        st.state = FIRING
                        events.append((key, FIRING, ti, ti, vi))
                    else:
                        st.state = PENDING
                        events.append((key, PENDING, ti, ti, vi))
            elif st.state == PENDING:
                if not ci:
                    st.state = INACTIVE
                    active.discard(key)
                    events.append((key, INACTIVE, ti, st.started, vi))
                elif ti - st.started >= for_ns:
                    st.state = FIRING
                    events.append((key, FIRING, ti, st.started, vi))
            else:  # firing
                holds = ci if clear is None else (ci or vi >= clear)
                if holds:
                    st.clear_since = None
                    continue
                if st.clear_since is None:
                    st.clear_since = ti
                if ti - st.clear_since >= keep_ns:
                    st.state = INACTIVE
                    active.discard(key)
                    events.append((key, "resolved", ti, st.started, vi))
                    st.clear_since = None
        return events


@_record.function
def alert(frame: StreamingFrame, condition: StreamingSeries | str, *,
          on: str | None = None, by: str | list[str] | None = None,
          for_: DurationLike | Param = "0s", keep_firing_for: DurationLike | Param = "0s",
          clear_below: float | Param | None = None, allowed_lateness: DurationLike = "0s",
          name: str = "alert") -> StreamingFrame:
    """A stream of alert transitions for a condition on ``frame`` (Prometheus semantics).

    Parameters
    ----------
    condition
        A boolean expression on the frame (``sdf["cpu"] > 90``) or the name of a boolean
        column (``"is_anomaly"`` after ``sdf.detect(...)``).
    on
        The value column reported with each transition (and compared with ``clear_below``).
    by
        One alert per key.
    for_, keep_firing_for, clear_below
        See :mod:`rtnb.detect.alerts`; each may be a :class:`~rtnb.Param`.
    allowed_lateness
        Rows are held until the newest time seen is this far past them, then evaluated in
        event-time order, so disorder within the lateness gives the same transitions as
        ordered input. Rows older than that when they arrive are late: counted in
        ``counters.late`` and not evaluated. The end of the stream evaluates what is held.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
    ...                    "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    >>> sdf = rtnb.StreamingFrame(ex, time="t")
    >>> alerts = rtnb.alert(sdf, sdf["cpu"] > 90, on="cpu", by="host", for_="2s",
    ...                     name="cpu_high")
    >>> out = alerts.collect()
    >>> sdf.emit(pd.DataFrame({"t": pd.date_range("2026-01-01", periods=5, freq="s"),
    ...                        "host": "a", "cpu": [50.0, 95.0, 96.0, 97.0, 60.0]}))
    >>> out[0][["host", "state", "time", "value"]]
      host     state                time  value
    0    a   pending 2026-01-01 00:00:01   95.0
    1    a    firing 2026-01-01 00:00:03   97.0
    2    a  resolved 2026-01-01 00:00:04   60.0
    """
    if frame.time is None:
        msg = f"alert {name!r}: frame {frame.name!r} has no event-time column"
        raise ConfigError(msg)
    if isinstance(condition, str):
        if condition not in frame.columns or not pd.api.types.is_bool_dtype(
                frame.example[condition].dtype):
            msg = f"alert {name!r}: {frame.name!r} has no boolean column {condition!r}"
            raise ConfigError(msg)
        column = condition

        def evaluate(batch: pd.DataFrame) -> np.ndarray[Any, Any]:
            values = _frames.column(batch, column)
            if isinstance(values, np.ndarray) and values.dtype == bool:
                return values
            return np.asarray(values.to_numpy(dtype=bool, na_value=False), dtype=bool)
    elif isinstance(condition, StreamingSeries):
        evaluate = condition.mask_of
    else:
        msg = f"alert {name!r}: condition must be an expression or a column name; got " \
              f"{condition!r}"
        raise ConfigError(msg)
    if on is not None and on not in frame.columns:
        msg = f"alert {name!r}: no column {on!r} in {frame.name!r}"
        raise ConfigError(msg)
    if clear_below is not None and on is None:
        msg = f"alert {name!r}: clear_below needs `on`, the column it applies to"
        raise ConfigError(msg)
    keys = frame.key_columns(by)
    registry = KeyRegistry(keys, frame.example)
    rule = AlertRule(for_=for_, keep_firing_for=keep_firing_for, clear_below=clear_below)
    time_col = frame.time
    cols: dict[str, pd.Series] = {"alert": pd.Series([], dtype=str)}
    for k in keys:
        cols[k] = frame.example[k].iloc[:0]
    cols.update(state=pd.Series([], dtype=str), time=pd.Series([], dtype="datetime64[ns]"),
                started=pd.Series([], dtype="datetime64[ns]"),
                value=pd.Series([], dtype="float64"))
    example = pd.DataFrame(cols)

    logic = AlertLogic(rule, registry, evaluate, name=name, on=on, time=str(time_col),
                       allowed_lateness_ns=to_ns(allowed_lateness, name="allowed_lateness"),
                       example=example)
    derived = frame.process(logic, example=logic.example, name=name, time="time")
    derived.rule = rule  # type: ignore[attr-defined]
    return derived


class AlertLogic:
    """The logic of an :func:`alert` node (see :mod:`rtnb.stateful`).

    Rows are held until the newest time seen is ``allowed_lateness`` past them, then run
    through the rule in event-time order; older rows are late (counted, not evaluated).
    """

    def __init__(self, rule: AlertRule, keys: Any,
                 condition: Callable[[pd.DataFrame], np.ndarray[Any, Any]], *, name: str,
                 on: str | None, time: str, allowed_lateness_ns: int,
                 example: pd.DataFrame) -> None:
        self.rule, self.keys, self.condition = rule, keys, condition
        self.name, self.on, self.time = name, on, time
        self.allowed_lateness_ns = allowed_lateness_ns
        self.example = example
        self._name_array: Any = None
        self._dtypes: dict[str, Any] = {c: example[c].dtype for c in ("alert", "state")}
        lowest = np.iinfo(np.int64).min
        self.held: dict[str, Any] = {"rows": None, "max": lowest, "done": lowest}

    #: Alert transitions carry their own times; the pipeline's watermark comes from windows.
    watermark = None

    def _to_frame(self, events: list[tuple[int, str, int, int, float]]) -> pd.DataFrame:
        if not events:
            return _frames.empty(self.example)
        k, state, when, started, value = zip(*events, strict=True)
        n = len(events)
        arrays: list[Any] = [self._constant_name(n)]
        codes = np.asarray(k, dtype=np.intp)
        arrays += [self.keys.array(col, codes) for col in self.keys.by]
        arrays += [pd.array(list(state), dtype=self._dtypes["state"]),
                   np.asarray(when, dtype=np.int64).view("datetime64[ns]"),
                   np.asarray(started, dtype=np.int64).view("datetime64[ns]"),
                   np.asarray(value, dtype=np.float64)]
        return _frames.from_arrays(self.example.columns, arrays)

    def _constant_name(self, n: int) -> Any:
        """The ``alert`` column: this rule's name ``n`` times, with the example's dtype."""
        one = self._name_array
        if one is None:
            one = self._name_array = pd.array([self.name], dtype=self._dtypes["alert"])
        return one.take(np.zeros(n, dtype=np.intp))

    def _release(self, everything: bool) -> pd.DataFrame:
        """Run the rule over the held rows the lateness lets go; their transitions."""
        held = self.held
        rows = held["rows"]
        if rows is None or not len(rows[0]):
            return _frames.empty(self.example)
        codes, t, cond, values = rows
        ready: np.ndarray[Any, Any] | None = None  # None: every held row
        if not everything:
            ready = t <= held["max"] - self.allowed_lateness_ns
            if ready.all():  # the usual case with no lateness allowed
                ready = None
            elif not ready.any():
                return _frames.empty(self.example)
        if ready is None:
            order = np.argsort(t, kind="stable") if len(t) > 1 and bool(
                (t[1:] < t[:-1]).any()) else slice(None)
            held["rows"] = None
        else:
            order = np.flatnonzero(ready)[np.argsort(t[ready], kind="stable")]
            held["rows"] = tuple(a[~ready] for a in rows)
        t_sorted = t[order]
        events = self.rule.process(codes[order], t_sorted, cond[order], values[order])
        held["done"] = max(held["done"], int(t_sorted[-1]))
        return self._to_frame(events)

    def process(self, batch: pd.DataFrame) -> Output:
        """Hold the batch's rows; run the rule over those the lateness lets go.

        Every batch gives a frame of transitions downstream (empty when nothing changed).
        """
        held = self.held
        n = len(batch)
        if not n:
            return Output(_frames.empty(self.example))
        codes = self.keys.codes(batch)
        t = _frames.times_ns(batch, self.time)
        values = _frames.floats(batch, self.on) if self.on is not None else \
            np.full(n, np.nan)
        cond = self.condition(batch)
        late = t < held["done"]
        late_rows = None
        if late.any():
            late_rows = _frames.take(batch, late)
            keep = ~late
            codes, t, cond, values = codes[keep], t[keep], cond[keep], values[keep]
            if not len(t):
                return Output(_frames.empty(self.example), late_rows)
        held["max"] = max(held["max"], int(t.max()))
        new = (codes, t, cond, values)
        rows = held["rows"]
        held["rows"] = new if rows is None else tuple(
            np.concatenate([a, b]) for a, b in zip(rows, new, strict=True))
        return Output(self._release(everything=False), late_rows)

    def flush(self) -> Output:
        """End of stream: evaluate every held row."""
        if self.held["rows"] is None:
            return Output(None)
        out = self._release(everything=True)
        return Output(out if len(out) else None)

    def snapshot(self) -> dict[str, Any]:
        """The rule's state per key, the key codes and the held rows."""
        return {"rule": self.rule.snapshot(), "keys": self.keys.snapshot(),
                "held": dict(self.held)}

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back."""
        self.rule.restore(state["rule"])
        self.keys.restore(state["keys"])
        self.held.clear()
        self.held.update(state["held"])
