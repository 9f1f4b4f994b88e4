"""Alert rules with Prometheus semantics: inactive -> pending -> firing -> resolved, per key.

A rule watches a boolean condition per key, row by row in event time:

* condition true while inactive: **pending** (``started`` = that row's time); with
  ``for_=0`` it fires at once;
* still true ``for_`` after ``started``: **firing**;
* false while pending: back to **inactive** (the pending alert is cancelled);
* while firing, the rule stays active as long as the condition holds, or, with
  ``clear_below``, as long as the value stays at or above it (hysteresis: fire above 90,
  clear only below 80); once it is not, it is **resolved** when it has stayed so for
  ``keep_firing_for`` (default at once); a return within that time keeps it firing;
* after a resolution the key re-arms only ``cooldown`` later (default at once): rows in
  between are evaluated but cannot start a new episode (neither pending nor firing).

Every transition is one event (no repeats): the output frame has columns ``alert``, the
``by`` keys, ``state``, ``time`` (of the transition), ``started`` (of the episode) and
``value``. Keys with no active condition cost nothing: only rows of keys that are pending,
firing, or whose condition holds in the batch are walked through.

Order and lateness (:class:`AlertLogic`): the watermark is the newest event time seen, row by
row in arrival order, minus ``allowed_lateness``. A row is held until the watermark reaches
it, then evaluated; rows released together are evaluated in event-time order, so disorder
within the lateness gives the transitions of ordered input (with the default ``0s`` every
row is evaluated as it arrives). A row older than a row of the *same key* that was already
evaluated is **late**: it is counted in ``counters.late``, not evaluated, and the first
time it happens a warning says which lateness would have kept it. Because the watermark
moves row by row, the transitions and the late rows do not depend on how the stream is cut
into batches. History that a frame upstream re-emits (a what-if recompute) is not evaluated
again: its rows older than what was evaluated are skipped, not late.
"""

from __future__ import annotations

import logging
import math
import warnings
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

log = logging.getLogger(__name__)

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"
_LOWEST = int(np.iinfo(np.int64).min)


@dataclass
class _KeyState:
    state: str = INACTIVE
    started: int = 0
    clear_since: int | None = None
    resolved: int | None = None  # time of the last resolution (for ``cooldown``)


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

    With ``cooldown`` a resolved key cannot fire again until that much event time has passed:

    >>> rule = AlertRule(cooldown="3s")
    >>> events = rule.process(np.zeros(6, dtype=np.intp), t,
    ...                       np.array([1, 0, 1, 0, 1, 1], dtype=bool), np.arange(6.0))
    >>> [(state, time // 10**9) for _, state, time, _, _ in events]
    [('firing', 0), ('resolved', 1), ('firing', 4)]
    """

    def __init__(self, *, for_: DurationLike | Param = "0s",
                 keep_firing_for: DurationLike | Param = "0s",
                 clear_below: float | Param | None = None,
                 cooldown: DurationLike | Param = "0s") -> None:
        for value, what in ((for_, "for_"), (keep_firing_for, "keep_firing_for"),
                            (cooldown, "cooldown")):
            if to_ns(resolve(value), name=what) < 0:
                msg = f"alert `{what}` must not be negative; got {resolve(value)!r}"
                raise ConfigError(msg)
        self.for_, self.keep_firing_for, self.clear_below = for_, keep_firing_for, clear_below
        self.cooldown = cooldown
        self._keys: dict[int, _KeyState] = {}
        # the keys not inactive (pending or firing), kept up to date by process(): only their
        # rows and the rows whose condition holds are walked
        self._active: set[int] = set()
        self._parsed: tuple[tuple[Any, ...], tuple[int, int, int]] | None = None

    def _durations(self) -> tuple[int, int, int]:
        """``for_``, ``keep_firing_for``, ``cooldown`` in ns (parsed again after a Param change)."""
        now = (resolve(self.for_), resolve(self.keep_firing_for), resolve(self.cooldown))
        cached = self._parsed
        if cached is None or cached[0] != now:
            cached = self._parsed = (now, (to_ns(now[0]), to_ns(now[1]), to_ns(now[2])))
        return cached[1]

    def state(self, key: int = 0) -> str:
        """The current state of ``key``."""
        return self._keys.get(key, _KeyState()).state

    def snapshot(self) -> dict[int, tuple[str, int, int | None, int | None]]:
        """Every key's ``(state, started, clear_since, resolved)``, for a checkpoint."""
        return {k: (s.state, s.started, s.clear_since, s.resolved)
                for k, s in self._keys.items()}

    def restore(self, state: dict[int, tuple[Any, ...]]) -> None:
        """Put a :meth:`snapshot` back (also the 3-tuples of snapshots before ``cooldown``)."""
        self._keys = {k: _KeyState(*v) for k, v in state.items()}
        self._active = {k for k, st in self._keys.items() if st.state != INACTIVE}

    def process(self, keys: np.ndarray[Any, Any], t: np.ndarray[Any, Any],
                cond: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
                ) -> list[tuple[int, str, int, int, float]]:
        """Walk the rows; return the transitions ``(key, state, time, started, value)``."""
        for_ns, keep_ns, cool_ns = self._durations()
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
                if ci and (st.resolved is None or ti - st.resolved >= cool_ns):
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
                    st.clear_since, st.resolved = None, ti
        return events


@_record.function
def alert(frame: StreamingFrame, condition: StreamingSeries | str, *,
          on: str | None = None, by: str | list[str] | None = None,
          for_: DurationLike | Param = "0s", keep_firing_for: DurationLike | Param = "0s",
          clear_below: float | Param | None = None, cooldown: DurationLike | Param = "0s",
          allowed_lateness: DurationLike = "0s", name: str = "alert") -> StreamingFrame:
    """A stream of alert transitions for a condition on ``frame`` (Prometheus semantics).

    Which setting for what (all default to off, as in Prometheus):

    * **debounce** a condition that must last before anyone is paged: ``for_`` (pending
      until the condition has held that long; a shorter blip is cancelled, never fires);
    * **flapping** around the limit while an incident goes on: ``keep_firing_for`` (a dip
      shorter than it does not resolve) and/or ``clear_below`` (hysteresis on ``on``);
    * **re-arm**: ``cooldown`` (after a resolution the key cannot fire again until that
      much event time has passed: at most one page per ``cooldown``; the rows in between
      are evaluated but cannot start an episode). Longer than an incident lasts, it also
      mutes a flapping condition; ``keep_firing_for`` does that with one resolution at the
      real end instead.

    A condition that is already debounced, as ``is_anomaly`` of
    :class:`rtnb.detect.Anomaly` (true from an incident's onset until it ends), pages once
    per incident with the defaults: ``rtnb.alert(sdf.detect(Anomaly(), on="value"),
    "is_anomaly")``. A raw per-row condition (``sdf["cpu"] > 90``, a detector's
    ``is_anomaly`` at a fixed threshold) flickers within one incident and fires at every
    rise unless ``keep_firing_for`` or ``cooldown`` is set.

    Parameters
    ----------
    condition
        A boolean expression on the frame (``sdf["cpu"] > 90``) or the name of a boolean
        column (``"is_anomaly"`` after ``sdf.detect(...)``).
    on
        The value column reported with each transition (and compared with ``clear_below``).
    by
        One alert per key.
    for_, keep_firing_for, clear_below, cooldown
        See above and :mod:`rtnb.detect.alerts`; each may be a :class:`~rtnb.Param`.
        Durations are of event time.
    allowed_lateness
        How far event time may step back and still be evaluated in event-time order. The
        watermark (newest time seen minus this, row by row in arrival order) releases rows;
        rows released together are evaluated in event-time order, so disorder within the
        lateness gives the transitions of ordered input; with ``0s`` every row is evaluated
        as it arrives. A row older than an already evaluated row of its key is late:
        counted in ``counters.late``, not evaluated, and warned about once (the warning says
        which lateness would have kept it). The end of the stream evaluates what is held.
        Transitions and late rows do not depend on how the stream is cut into batches.
        When a frame upstream re-emits its history (a what-if after a Param change with
        ``retain=``), rows of it older than what the alert already evaluated are skipped,
        not late: the alert goes on from its state and does not page for the past again.

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

    A condition that flickers during one incident pages at every rise; ``cooldown`` (or
    ``keep_firing_for``) makes it one page:

    >>> flicker = pd.DataFrame({"t": pd.date_range("2026-01-01", periods=8, freq="min"),
    ...                         "hot": [True, False, True, True, False, True, False, False]})
    >>> def states(**settings):
    ...     sdf = rtnb.StreamingFrame(flicker.iloc[:0], time="t")
    ...     out = rtnb.alert(sdf, "hot", **settings).collect()
    ...     sdf.emit(flicker)
    ...     return out[0]["state"].tolist()
    >>> states()
    ['firing', 'resolved', 'firing', 'resolved', 'firing', 'resolved']
    >>> states(cooldown="10min")
    ['firing', 'resolved']
    >>> states(keep_firing_for="1min")
    ['firing', 'resolved']
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
    lateness_ns = to_ns(allowed_lateness, name="allowed_lateness")
    if lateness_ns < 0:
        msg = f"alert {name!r}: `allowed_lateness` must not be negative; got " \
              f"{allowed_lateness!r}"
        raise ConfigError(msg)
    keys = frame.key_columns(by)
    registry = KeyRegistry(keys, frame.example)
    rule = AlertRule(for_=for_, keep_firing_for=keep_firing_for, clear_below=clear_below,
                     cooldown=cooldown)
    time_col = frame.time
    cols: dict[str, pd.Series] = {"alert": pd.Series([], dtype=str)}
    for k in keys:
        cols[k] = frame.example[k].iloc[:0]
    cols.update(state=pd.Series([], dtype=str), time=pd.Series([], dtype="datetime64[ns]"),
                started=pd.Series([], dtype="datetime64[ns]"),
                value=pd.Series([], dtype="float64"))
    example = pd.DataFrame(cols)

    logic = AlertLogic(rule, registry, evaluate, name=name, on=on, time=str(time_col),
                       allowed_lateness_ns=lateness_ns, example=example)
    derived = frame.process(logic, example=logic.example, name=name, time="time")
    derived.rule = rule  # type: ignore[attr-defined]
    upstream = tuple(frame.lineage())

    def on_reset(node: StreamingFrame) -> None:
        if any(node is f for f in upstream):
            logic.replay()

    frame.graph.on_reset(on_reset)  # unsubscribed when the graph closes
    return derived


_UNITS = (("h", 3600 * 10**9), ("min", 60 * 10**9), ("s", 10**9), ("ms", 10**6))


def _readable(ns: int, *, exact: bool = False) -> str:
    """A duration that :func:`rtnb._time.to_ns` reads, rounded up to a whole unit.

    >>> _readable(2_500_000_000), _readable(90 * 10**9), _readable(1)
    ('3s', '2min', '1ms')
    >>> _readable(90 * 10**9, exact=True), _readable(0, exact=True)
    ('90s', '0s')
    """
    if exact:
        whole = [f"{ns // size}{unit}" for unit, size in _UNITS if ns and not ns % size]
        return whole[0] if whole else f"{ns}ns" if ns else "0s"
    for unit, size in _UNITS[:-1]:
        if ns >= size:
            return f"{math.ceil(ns / size)}{unit}"
    return f"{math.ceil(ns / 10**6)}ms"


class AlertLogic:
    """The logic of an :func:`alert` node (see :mod:`rtnb.stateful`).

    Row by row in arrival order, the watermark is the newest time seen minus
    ``allowed_lateness``; a row is released once the watermark reaches it, and rows
    released at the same row are run through the rule in event-time order. A row older than
    a released row of its key is late (counted, warned about once, not evaluated). This is
    computed with arrays over each batch, and gives the same transitions however the stream
    is cut into batches. :meth:`replay` announces a batch that re-emits history upstream.
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
        self._warned = False
        self._replaying = False
        # rows: the held rows (codes, t, cond, values) in arrival order; max: newest time
        # seen; done: newest time evaluated; key_done: newest time evaluated per key code;
        # floor: where key_done starts for a new code (after restoring a snapshot from
        # before key_done, the one evaluated time it had for every key)
        self.held: dict[str, Any] = {"rows": None, "max": _LOWEST, "done": _LOWEST,
                                     "key_done": np.empty(0, dtype=np.int64),
                                     "floor": _LOWEST}

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

    def _key_done(self, size: int) -> np.ndarray[Any, Any]:
        """The newest evaluated time per key code, for codes ``0 .. size - 1`` at least."""
        held = self.held
        done: np.ndarray[Any, Any] = held["key_done"]
        if len(done) < size:
            grown = np.full(max(size, 2 * len(done)), held["floor"], dtype=np.int64)
            grown[:len(done)] = done
            done = held["key_done"] = grown
        return done

    def _evaluate(self, rows: tuple[np.ndarray[Any, Any], ...],
                  order: np.ndarray[Any, Any] | slice) -> pd.DataFrame:
        """Run the rule over ``rows`` taken in ``order``; note what is now evaluated."""
        codes, t, cond, values = (a[order] for a in rows)
        if not len(t):
            return _frames.empty(self.example)
        events = self.rule.process(codes, t, cond, values)
        held = self.held
        held["done"] = max(held["done"], int(t.max()))
        np.maximum.at(self._key_done(int(codes.max()) + 1), codes, t)
        return self._to_frame(events)

    def _late(self, codes: np.ndarray[Any, Any], t: np.ndarray[Any, Any],
              every_codes: np.ndarray[Any, Any], every_t: np.ndarray[Any, Any],
              release: np.ndarray[Any, Any], suspects: np.ndarray[Any, Any]
              ) -> np.ndarray[Any, Any]:
        """Which ``suspects`` (batch rows behind the watermark) are behind their key.

        Suspect ``j`` is late when an evaluated row of its key is newer: one released in an
        earlier batch (``key_done``) or in this one at an earlier row (``release < j``) of
        ``every_*``, the held rows followed by the batch's.
        """
        n = len(t)
        qk, qt = codes[suspects], t[suspects]
        done = self._key_done(int(max(codes.max(), every_codes.max())) + 1)[qk]
        now = np.flatnonzero(release < n)
        if len(now):
            # the running newest time per key over (key, release row) order ...
            by = np.lexsort((release[now], every_codes[now]))
            ck, cr, ct = every_codes[now][by], release[now][by], every_t[now][by]
            uniq, rank = np.unique(ct, return_inverse=True)
            group = np.cumsum(np.r_[0, ck[1:] != ck[:-1]])
            running = uniq[np.maximum.accumulate(group * len(uniq) + rank) - group * len(uniq)]
            # ... read at the last row of the suspect's key released before it arrived
            stride = np.int64(n + 1)
            at = np.searchsorted(ck.astype(np.int64) * stride + cr,
                                 qk.astype(np.int64) * stride + suspects - 1, side="right") - 1
            hit = (at >= 0) & (ck[np.maximum(at, 0)] == qk)
            done = np.where(hit, np.maximum(done, running[np.maximum(at, 0)]), done)
        late: np.ndarray[Any, Any] = qt < done
        return late

    def _warn_late(self, count: int, behind_ns: int) -> None:
        self._warned = True
        lateness = _readable(self.allowed_lateness_ns, exact=True)
        msg = (f"alert {self.name!r}: {count} row(s) arrived more than allowed_lateness="
               f"{lateness!r} behind the newest event time (up to {_readable(behind_ns)}), "
               f"after newer rows of their key had been evaluated; they are counted in "
               f"`counters.late` and not evaluated (this warning is shown once). To evaluate "
               f"such rows in event-time order, pass rtnb.alert(..., allowed_lateness="
               f"{_readable(behind_ns)!r}) or more; alerts then wait that long.")
        log.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)

    def replay(self) -> None:
        """The next batch re-emits history upstream (a what-if): skip its old rows, uncounted."""
        self._replaying = True

    def process(self, batch: pd.DataFrame) -> Output:
        """Hold the batch's rows; run the rule over those the watermark releases.

        Every batch gives a frame of transitions downstream (empty when nothing changed).
        """
        held = self.held
        replaying, self._replaying = self._replaying, False
        n = len(batch)
        if not n:
            return Output(_frames.empty(self.example))
        codes = self.keys.codes(batch)
        t = _frames.times_ns(batch, self.time)
        values = _frames.floats(batch, self.on) if self.on is not None else \
            np.full(n, np.nan)
        cond = self.condition(batch)
        new = (codes, t, cond, values)
        before = held["rows"]
        rows = new if before is None else tuple(
            np.concatenate([a, b]) for a, b in zip(before, new, strict=True))
        h = len(rows[1]) - n
        # the watermark after each row of the batch, and the row at which each held and new
        # row is released: the first at which the watermark reaches it, not before it came
        newest = np.maximum.accumulate(t)
        np.maximum(newest, held["max"], out=newest)
        mark = newest - self.allowed_lateness_ns
        release = np.searchsorted(mark, rows[1], side="left")
        release[h:] = np.maximum(release[h:], np.arange(n))
        held["max"] = int(newest[-1])
        late_rows = None
        behind = t < mark
        if behind.any():
            suspects = np.flatnonzero(behind)
            late = suspects[self._late(codes, t, rows[0], rows[1], release, suspects)]
            if len(late):
                keep = np.ones(h + n, dtype=bool)
                keep[h + late] = False
                rows = tuple(a[keep] for a in rows)
                release = release[keep]
                if replaying:  # history re-emitted upstream: evaluated before
                    log.debug("alert %r: %d replayed row(s) skipped", self.name, len(late))
                else:
                    late_rows = _frames.take(batch, late)
                    if not self._warned:
                        self._warn_late(len(late), int((newest[late] - t[late]).max()))
        now = release < n
        if now.all():
            held["rows"] = None
        else:
            held["rows"] = tuple(a[~now] for a in rows)
            rows = tuple(a[now] for a in rows)
            release = release[now]
        t_now = rows[1]
        ordered = len(t_now) < 2 or (bool((t_now[1:] >= t_now[:-1]).all())
                                     and bool((release[1:] >= release[:-1]).all()))
        order = slice(None) if ordered else np.lexsort((t_now, release))
        return Output(self._evaluate(rows, order), late_rows)

    def flush(self) -> Output:
        """End of stream: evaluate every held row (in event-time order)."""
        rows = self.held["rows"]
        if rows is None:
            return Output(None)
        self.held["rows"] = None
        out = self._evaluate(rows, np.argsort(rows[1], kind="stable"))
        return Output(out if len(out) else None)

    def snapshot(self) -> dict[str, Any]:
        """The rule's state per key, the key codes, the held rows and the evaluated times."""
        held = dict(self.held)
        held["key_done"] = held["key_done"].copy()
        return {"rule": self.rule.snapshot(), "keys": self.keys.snapshot(), "held": held}

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back (also one from before per-key evaluated times)."""
        self.rule.restore(state["rule"])
        self.keys.restore(state["keys"])
        held = dict(state["held"])
        if "key_done" not in held:  # older snapshots: one evaluated time for every key
            held["key_done"] = np.empty(0, dtype=np.int64)
            held["floor"] = held["done"]
        held["key_done"] = np.array(held["key_done"], dtype=np.int64)
        self.held.clear()
        self.held.update(held)
