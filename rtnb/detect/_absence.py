"""Absence: notice keys that stopped sending (a silent host produces no rows to score)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rtnb import _frames, _record
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.params import Param, resolve
from rtnb.stateful import Output
from rtnb.windows.keys import KeyRegistry

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["AbsenceLogic", "absence"]


class _Silence:
    """Per key: newest event time and whether the key is silent; the newest time overall."""

    def __init__(self) -> None:
        self.last = np.zeros(0, dtype=np.int64)
        self.silent = np.zeros(0, dtype=bool)
        self.now = int(np.iinfo(np.int64).min)

    def snapshot(self) -> dict[str, Any]:
        """The per-key state, for a checkpoint."""
        return {"last": self.last, "silent": self.silent, "now": self.now}

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back."""
        self.last, self.silent, self.now = state["last"], state["silent"], int(state["now"])


@_record.function
def absence(frame: StreamingFrame, timeout: DurationLike | Param, *, by: str | list[str],
            name: str = "absence") -> StreamingFrame:
    """Rows when a key goes silent for ``timeout`` of event time, and when it is back.

    Event time advances with every row of any key: a key whose newest row is ``timeout``
    older than the newest row of all keys is silent from ``last_seen + timeout``. The output
    has one row per change: ``time`` (when the key went silent, or its first row back), the
    ``by`` keys, ``is_silent`` and ``last_seen``. ``rtnb.alert(out, "is_silent", by=...)``
    turns it into alerts. A key is only known once it has sent a row. Gaps inside a batch
    count too (a key's consecutive rows ``timeout`` or more apart), so the result does not
    depend on how the stream was cut into batches.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
    ...                    "host": pd.Series([], dtype=str)})
    >>> sdf = rtnb.StreamingFrame(ex, time="t")
    >>> out = rtnb.detect.absence(sdf, "30s", by="host").collect()
    >>> t = pd.Timestamp("2026-01-01")
    >>> for secs, hosts in [(0, ["a", "b"]), (10, ["a"]), (20, ["a"]), (30, ["a"]),
    ...                     (40, ["a"]), (50, ["a", "b"])]:
    ...     sdf.emit(pd.DataFrame({"t": [t + pd.Timedelta(secs, "s")] * len(hosts),
    ...                            "host": hosts}))
    >>> pd.concat(out, ignore_index=True)[["time", "host", "is_silent"]]
                     time host  is_silent
    0 2026-01-01 00:00:30    b       True
    1 2026-01-01 00:00:50    b      False
    """
    if frame.time is None:
        msg = f"absence of {frame.name!r}: the frame has no event-time column"
        raise ConfigError(msg)
    if to_ns(resolve(timeout), name="timeout") <= 0:
        msg = f"absence timeout must be positive; got {resolve(timeout)!r}"
        raise ConfigError(msg)
    keys = frame.key_columns(by)
    if not keys:
        msg = "absence needs `by`: the keys that are expected to keep sending"
        raise ConfigError(msg)
    cols: dict[str, pd.Series] = {"time": pd.Series([], dtype="datetime64[ns]")}
    for k in keys:
        cols[k] = frame.example[k].iloc[:0]
    cols.update(is_silent=pd.Series([], dtype=bool),
                last_seen=pd.Series([], dtype="datetime64[ns]"))
    logic = AbsenceLogic(KeyRegistry(keys, frame.example), timeout, time=str(frame.time),
                         example=pd.DataFrame(cols))
    return frame.process(logic, example=logic.example, name=name, time="time")


class AbsenceLogic:
    """The logic of an :func:`absence` node (see :mod:`rtnb.stateful`)."""

    watermark = None

    def __init__(self, keys: KeyRegistry, timeout: DurationLike | Param, *, time: str,
                 example: pd.DataFrame) -> None:
        self.keys, self.timeout, self.time, self.example = keys, timeout, time, example
        self.state = _Silence()

    def flush(self) -> Output:
        """Nothing is held back."""
        return Output(None)

    def snapshot(self) -> dict[str, Any]:
        """The per-key silence state and the key codes."""
        return {"silence": self.state.snapshot(), "keys": self.keys.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back."""
        self.state.restore(state["silence"])
        self.keys.restore(state["keys"])

    def process(self, batch: pd.DataFrame) -> Output:
        """Changes of silence the batch shows, in time order."""
        return Output(self._run(batch))

    def _run(self, batch: pd.DataFrame) -> pd.DataFrame:
        example, registry, state, keys = self.example, self.keys, self.state, self.keys.by
        if not len(batch):
            return _frames.empty(example)
        lowest = int(np.iinfo(np.int64).min)
        codes = registry.codes(batch)
        t = _frames.times_ns(batch, self.time)
        n = len(registry)
        last, silent = state.last, state.silent
        if len(last) < n:  # new keys
            last = np.concatenate([last, np.full(n - len(last), lowest)])
            silent = np.concatenate([silent, np.zeros(n - len(silent), dtype=bool)])
        wait = to_ns(resolve(self.timeout))
        # gaps between a key's consecutive rows (the first one against its previous batch)
        order = np.lexsort((t, codes))
        sc, st = codes[order], t[order]
        first = np.r_[True, sc[1:] != sc[:-1]]
        prev = np.r_[lowest, st[:-1]]
        prev[first] = last[sc[first]]
        gap = (prev > lowest) & (st - prev >= wait)
        reported = first & silent[sc]  # its silence was reported in an earlier batch
        go = np.flatnonzero(gap & ~reported)
        back = np.flatnonzero(gap | reported)
        ev_key = [sc[go], sc[back]]
        ev_time = [prev[go] + wait, st[back]]
        ev_silent = [np.ones(len(go), dtype=bool), np.zeros(len(back), dtype=bool)]
        ev_last = [prev[go], prev[back]]
        np.maximum.at(last, codes, t)
        silent = silent.copy()
        silent[np.unique(codes)] = False
        now = max(state.now, int(t.max()))
        quiet = np.flatnonzero((last > lowest) & ~silent & (now - last >= wait))
        silent[quiet] = True
        ev_key.append(quiet)
        ev_time.append(last[quiet] + wait)
        ev_silent.append(np.ones(len(quiet), dtype=bool))
        ev_last.append(last[quiet])
        state.last, state.silent, state.now = last, silent, now
        keys_out = np.concatenate(ev_key).astype(np.intp)
        if not len(keys_out):
            return _frames.empty(example)
        when = np.concatenate(ev_time).astype(np.int64)
        order = np.argsort(when, kind="stable")
        codes_out = keys_out[order]
        arrays = [when[order].view("datetime64[ns]"),
                  *(registry.array(k, codes_out) for k in keys),
                  np.concatenate(ev_silent)[order],
                  np.asarray(np.concatenate(ev_last), dtype=np.int64)[order].view(
                      "datetime64[ns]")]
        return _frames.from_arrays(example.columns, arrays)
