"""Replay a recorded CSV or Parquet file in event-time order, at a multiple of real time."""

from __future__ import annotations

import asyncio
import os
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.windows.engine import time_ns

__all__ = ["MAX_EVENTS_ENV", "Replay", "replay"]

#: Environment variable that caps every replay's length (rows); tests and CI use it to keep
#: notebooks short without changing their code.
MAX_EVENTS_ENV = "RTNB_REPLAY_MAX_EVENTS"


def _read(path: Path, time: str) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    elif suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
        df = pd.read_csv(path)
    else:
        msg = f"replay reads .parquet or .csv files; got {path.name!r}"
        raise ConfigError(msg)
    if time not in df.columns:
        msg = f"replay: {path.name} has no time column {time!r}; columns: {list(df.columns)}"
        raise ConfigError(msg)
    if not pd.api.types.is_datetime64_any_dtype(df[time].dtype):
        try:
            df[time] = pd.to_datetime(df[time], format="ISO8601")
        except (ValueError, TypeError) as exc:
            msg = f"replay: column {time!r} of {path.name} is not a time: {exc}"
            raise ConfigError(msg) from exc
    if getattr(df[time].dtype, "tz", None) is None:
        df[time] = df[time].astype("datetime64[ns]")
    return df


@dataclass
class Replay:
    """The source behind :func:`replay` (holds the data and the pacing)."""

    name: str
    data: pd.DataFrame
    time: str
    speed: float | None
    batch_size: int
    interval_s: float

    #: Rows of ``data`` skipped (a run resumed from a checkpoint starts there).
    offset: int = field(default=0, init=False)
    #: Rows of the replayed file emitted so far, ``offset`` included: where a checkpoint
    #: resumes (rows are sorted stably by time, so a row's position never changes).
    position: int = field(default=0, init=False)

    _clock: tuple[int, float] | None = field(default=None, init=False, repr=False)
    _frozen: pd.Timestamp | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        #: Rows the replayed data has in all (what reaching the end means).
        self.total_rows = len(self.data)

    def resume_kind(self) -> str:
        """At the first row not emitted yet: ``"replay"``."""
        return "replay"

    @property
    def exhausted(self) -> bool:
        """Whether every row of the data was emitted (not stopped or limited before)."""
        return self.position >= self.total_rows

    def limit(self, max_events: int) -> None:
        """Stop after ``max_events`` rows of this run."""
        self.data = self.data.iloc[:max_events]

    def event_clock(self) -> pd.Timestamp | None:
        """The event time the replay has reached now (``None`` unpaced or not started).

        While the replay is paused its clock stands still.
        """
        if self._frozen is not None:
            return self._frozen
        if self._clock is None or self.speed is None:
            return None
        t0_event, t0_wall = self._clock
        return pd.Timestamp(t0_event + int((_time.monotonic() - t0_wall) * 1e9 * self.speed))

    def __repr__(self) -> str:
        pace = "as fast as possible" if self.speed is None else f"{self.speed:g}x real time"
        return f"<Replay {self.name!r}: {len(self.data)} rows, {pace}>"

    def skip(self, rows: int) -> None:
        """Start at row ``rows`` of the data (resuming from a checkpoint)."""
        if not 0 <= rows <= self.offset + len(self.data):
            msg = (f"replay {self.name!r}: cannot resume at row {rows}; the data has "
                   f"{self.offset + len(self.data)} rows")
            raise ConfigError(msg)
        self.data = self.data.iloc[rows - self.offset:].reset_index(drop=True)
        self.offset = self.position = rows

    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        """Emit the recorded rows into ``frame`` in event-time order."""
        data = self.data
        n = len(data)
        if n == 0:
            return
        graph = frame.graph
        if self.speed is None:
            for lo in range(0, n, self.batch_size):
                await graph.wait_running()
                if stop.is_set():
                    return
                batch = data.iloc[lo:lo + self.batch_size].reset_index(drop=True)
                frame.emit(batch)
                self.position = self.offset + lo + len(batch)
                await asyncio.sleep(0)
            return
        t = time_ns(data[self.time])
        t0_event = int(t[0])
        t0_wall = _time.monotonic()
        self._clock = (t0_event, t0_wall)
        lo = 0
        while lo < n and not stop.is_set():
            if graph.paused or graph.pressure:
                # Event time stands still while paused (or while a sink catches up): shift the
                # replay's clock when going on.
                paused_at = _time.monotonic()
                self._frozen = self.event_clock()
                try:
                    await graph.wait_running()
                finally:
                    self._frozen = None
                t0_wall += _time.monotonic() - paused_at
                self._clock = (t0_event, t0_wall)
                continue
            elapsed_ns = (_time.monotonic() - t0_wall) * 1e9 * self.speed
            hi = int(np.searchsorted(t, t0_event + int(elapsed_ns), side="right"))
            while lo < hi:
                cut = min(hi, lo + self.batch_size)
                frame.emit(data.iloc[lo:cut].reset_index(drop=True))
                lo = cut
                self.position = self.offset + lo
            if lo < n:
                # Sleep until the next tick, or until the next event is due if that is later.
                due = (int(t[lo]) - t0_event) / 1e9 / self.speed
                wait = max(self.interval_s, due - (_time.monotonic() - t0_wall))
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                except TimeoutError:
                    pass


def replay(
    path: str | os.PathLike[str] | pd.DataFrame,
    *,
    time: str = "timestamp",
    speed: float | None = None,
    batch_size: int = 10_000,
    interval: DurationLike = "100ms",
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    max_events: int | None = None,
    name: str = "replay",
) -> StreamingFrame:
    """Replay a recorded file (or DataFrame) as a finite stream of micro-batches.

    Rows are sorted by event time (stably, so equal times keep the file's order) and emitted
    either as fast as possible (``speed=None``) in batches of ``batch_size`` rows, or paced at
    ``speed`` times real time: every ``interval`` of wall time, the rows whose event time has
    come are emitted. When the data is exhausted the frame closes, so every window is emitted.

    A replay has no ``max_future`` guard (the live sources' check of event times against the
    wall clock): a recording's clock is its own event time, so nothing in it is "ahead";
    filter the data (``end=``) to leave out rows dated implausibly far ahead.

    Parameters
    ----------
    path
        A ``.parquet`` or ``.csv`` file, or a DataFrame.
    time
        The event-time column.
    speed
        Multiple of real time (``60`` replays an hour in a minute); ``None`` for no pacing.
    batch_size
        Largest batch emitted at once.
    interval
        Wall-clock tick of a paced replay.
    start, end
        Replay only events in ``[start, end)``.
    max_events
        Replay at most this many rows. If not given, the environment variable
        ``RTNB_REPLAY_MAX_EVENTS`` (when set) caps it: tests use it to shorten notebooks.
    name
        Name of the source frame.

    Returns
    -------
    StreamingFrame
        The source frame; ``start()`` it in a notebook or ``run()`` it in a script.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> df = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=5, freq="s"),
    ...                    "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    >>> src = rtnb.sources.replay(df, batch_size=2)
    >>> out = src.collect()
    >>> src.run()
    >>> [len(b) for b in out]
    [2, 2, 1]
    """
    if speed is not None and (isinstance(speed, bool) or not speed > 0):
        msg = f"replay `speed` must be a positive multiple of real time or None; got {speed!r}"
        raise ConfigError(msg)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        msg = f"replay `batch_size` must be a positive int; got {batch_size!r}"
        raise ConfigError(msg)
    interval_ns = to_ns(interval, name="interval")
    if max_events is not None and (isinstance(max_events, bool) or not isinstance(
            max_events, int) or max_events < 0):
        msg = f"replay `max_events` must be a non-negative int or None; got {max_events!r}"
        raise ConfigError(msg)
    if isinstance(path, pd.DataFrame):
        data = path.copy()
        if time not in data.columns:
            msg = f"replay: the DataFrame has no time column {time!r}; has {list(data.columns)}"
            raise ConfigError(msg)
        if getattr(data[time].dtype, "tz", None) is None:
            data[time] = data[time].astype("datetime64[ns]")
    else:
        p = Path(path)
        if not p.exists():
            msg = f"replay: no such file {str(p)!r}"
            raise SourceError(msg, source=name)
        data = _read(p, time)
    data = data.sort_values(time, kind="stable", ignore_index=True)
    if start is not None:
        data = data[data[time] >= pd.Timestamp(start)]
    if end is not None:
        data = data[data[time] < pd.Timestamp(end)]
    if max_events is None and os.environ.get(MAX_EVENTS_ENV):
        try:
            max_events = int(os.environ[MAX_EVENTS_ENV])
        except ValueError:
            msg = f"{MAX_EVENTS_ENV} must be an integer; got {os.environ[MAX_EVENTS_ENV]!r}"
            raise ConfigError(msg) from None
    if max_events is not None:
        data = data.iloc[:max_events]
    data = data.reset_index(drop=True)
    example = data.iloc[:0]
    # the units (``attrs``) go to the frame, not into every batch: pandas deep-copies a
    # frame's ``attrs`` in nearly every operation on it
    data.attrs = {}
    frame = StreamingFrame(example, time=time, name=name)
    frame.attach_source(Replay(frame.name, data, time, speed, batch_size, interval_ns / 1e9))
    return frame
