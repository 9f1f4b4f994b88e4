"""``rtnb.sources.hybrid``: backfill a finite history, then go on live (Lambda in a notebook)."""

from __future__ import annotations

import asyncio
import os
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pandas as pd

from rtnb import _frames
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources.base import source_kind

if TYPE_CHECKING:
    from rtnb.graph import Unsubscribe

__all__ = ["HybridPosition", "HybridSource", "hybrid"]

Phase = Literal["history", "live"]

_NO_NS = np.zeros(0, dtype=np.int64)
_NO_HASHES = np.zeros(0, dtype=np.uint64)


@dataclass(frozen=True)
class HybridPosition:
    """Where a hybrid source is: its phase, the position in that phase, the boundary state.

    What a checkpoint saves (:attr:`HybridSource.position`) and :meth:`HybridSource.skip`
    resumes from. ``position`` is the history's own position (history phase) or the live
    source's when it has one (a replay; ``None`` for a broker, which keeps the consumer
    position itself). ``boundary`` is the largest history event time so far (ns, ``None``
    before any row); ``tail_ns``/``tail`` what de-duplicates the live rows at the boundary
    (64-bit hashes and event times): of the ids of the history rows within ``overlap``
    before it (with ``id=``), or of the history rows at exactly the boundary (without).
    """

    phase: Phase
    position: Any
    boundary: int | None
    tail_ns: np.ndarray[Any, Any]
    tail: np.ndarray[Any, Any]
    history_rows: int

    def __repr__(self) -> str:
        at = "-" if self.boundary is None else str(pd.Timestamp(self.boundary))
        where = "" if self.position is None else f" at {self.position!r}"
        return (f"<HybridPosition {self.phase}{where}, boundary {at}, "
                f"{len(self.tail)} boundary rows kept>")


class _Tail:
    """What de-duplicates live rows: history rows near the boundary, hashed when needed.

    Without an id column: the rows at exactly the boundary time; with one: the ids of the
    rows within ``overlap`` before it. Batches are kept as they came (a reference, no copy)
    and hashed only when asked (a checkpoint, the first live rows at or before the
    boundary), each batch once, so the backfill costs no hashing per batch.
    """

    def __init__(self, id: str | None, overlap_ns: int) -> None:
        self.id, self.overlap_ns = id, overlap_ns
        # (newest ns, times ns, rows or ids not hashed yet | None, hashes | None)
        self.chunks: list[list[Any]] = []
        self.boundary: int | None = None
        self._sorted: np.ndarray[Any, Any] | None = None  # the hashes sorted (contains)

    def add(self, batch: pd.DataFrame, times: np.ndarray[Any, Any]) -> None:
        self._sorted = None
        newest = int(times.max())
        old = self.boundary
        boundary = newest if old is None else max(old, newest)
        self.boundary = boundary
        if self.id is not None:
            self.chunks.append([newest, times, batch[self.id], None])
            lowest = boundary - self.overlap_ns
            while self.chunks and self.chunks[0][0] < lowest:
                self.chunks.pop(0)
            return
        if old is not None and boundary > old:
            self.chunks = []
        at = times == boundary
        if not at.any():  # an older batch (a history not in time order)
            return
        if not at[-1] or not at[int(at.argmax()):].all():  # not a run at the end: take
            rows = _frames.take(batch, at)
        else:
            rows = batch.iloc[int(at.argmax()):]
        self.chunks.append([boundary, times[at], rows, None])

    def hashed(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Event times and hashes of what is kept (hashing what was not yet)."""
        if not self.chunks:
            return _NO_NS, _NO_HASHES
        for chunk in self.chunks:
            if chunk[3] is None:
                chunk[3], chunk[2] = _hashes(chunk[2]), None
        if len(self.chunks) > 1:
            self.chunks = [[max(c[0] for c in self.chunks),
                            np.concatenate([c[1] for c in self.chunks]),
                            None, np.concatenate([c[3] for c in self.chunks])]]
        _, times, _, hashes = self.chunks[0]
        if self.id is not None and self.boundary is not None:
            keep = times >= self.boundary - self.overlap_ns
            if not keep.all():
                times, hashes = times[keep], hashes[keep]
                self.chunks[0][1], self.chunks[0][3] = times, hashes
        return times, hashes

    def contains(self, hashes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Which of ``hashes`` are kept.

        A binary search in the sorted hashes: ``np.isin`` hashes the whole table on every
        call (0.84 s for 600,000 ids here).

        >>> tail = _Tail("id", 10)
        >>> tail.set(np.array([5, 5, 5]), np.array([7, 3, 9], dtype=np.uint64))
        >>> tail.contains(np.array([3, 4, 9, 10], dtype=np.uint64)).tolist()
        [True, False, True, False]
        """
        if self._sorted is None:
            self._sorted = np.sort(self.hashed()[1])
        table = self._sorted
        if not len(table):
            return np.zeros(len(hashes), dtype=bool)
        at = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
        found: np.ndarray[Any, Any] = table[at] == hashes
        return found

    def set(self, times: np.ndarray[Any, Any], hashes: np.ndarray[Any, Any]) -> None:
        """Keep exactly these (a restored checkpoint's, or what is left after matching)."""
        self._sorted = None
        self.chunks = [[int(times.max()), times, None, hashes]] if len(times) else []


class _Feed:
    """The hybrid's root frame as an inner source sees it: ``emit`` goes through a filter."""

    def __init__(self, frame: StreamingFrame, emit: Callable[[pd.DataFrame], None]) -> None:
        self._frame = frame
        self.emit = emit
        self.graph = frame.graph
        self.time = frame.time
        self.name = frame.name
        self.example = frame.example

    def __getattr__(self, name: str) -> Any:
        return getattr(self._frame, name)  # dead letters, validate ...


class HybridSource:
    """The source behind :func:`hybrid`: the history's source to its end, then the live one.

    Attributes read by the runtime, the status widget and metrics: :attr:`phase`,
    :meth:`backfill` (share done, seconds left), :attr:`stats` (the running source's),
    :attr:`position` (a :class:`HybridPosition`), :attr:`duplicates` (live rows dropped as
    already read from the history).
    """

    def __init__(self, name: str, history: Any, live: Any, *, time: str, example: pd.DataFrame,
                 id: str | None, overlap_ns: int | None,
                 clock: Callable[[], float] = _time.monotonic) -> None:
        self.name = name
        self.history = history
        self.live = live
        self.time = time
        self.example = example
        self.id = id
        self.overlap_ns = overlap_ns
        self.clock = clock
        self._phase: Phase = "history"
        self._tail = _Tail(id, int(overlap_ns or 0))
        #: History rows emitted (this run and the runs it resumes).
        self.history_rows = 0
        #: Live rows dropped because the history held them already (the boundary rule).
        self.duplicates = 0
        self.max_events: int | None = None
        self._sent = 0  # rows emitted by this run (for max_events)
        self._switch_hooks: list[Callable[[dict[str, Any]], None]] = []
        self._started: tuple[float, float] | None = None  # (clock, share done) at the start
        self._before_close: Any = None
        self._stop: asyncio.Event | None = None
        self._finished = False

    def __repr__(self) -> str:
        return (f"<Hybrid {self.name!r}: {self._phase}; history {self.history!r}, "
                f"live {self.live!r}>")

    # -- phase and progress ---------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        """``"history"`` while backfilling, then ``"live"``."""
        return self._phase

    @property
    def boundary(self) -> pd.Timestamp | None:
        """The largest event time read from the history (``None`` before any row)."""
        return None if self._boundary is None else pd.Timestamp(self._boundary)

    def _share(self) -> float | None:
        """How much of the history was read (0..1), from its length or its time span."""
        if self._phase == "live":
            return 1.0
        src = self.history
        own = getattr(src, "progress", None)
        if callable(own):
            done = own()
            return None if done is None else float(min(1.0, max(0.0, done)))
        position, data = getattr(src, "position", None), getattr(src, "data", None)
        if isinstance(position, int | np.integer) and data is not None:
            end = int(getattr(src, "offset", 0)) + len(data)
            return min(1.0, int(position) / end) if end > 0 else 1.0
        start = next((getattr(src, a) for a in ("start",) if getattr(src, a, None) is not None),
                     None)
        end_t = next((getattr(src, a) for a in ("until", "end")
                      if getattr(src, a, None) is not None), None)
        if start is None or end_t is None or self._boundary is None:
            return None
        try:
            t0, t1 = pd.Timestamp(start).value, pd.Timestamp(end_t).value
        except (TypeError, ValueError):
            return None
        return float(min(1.0, max(0.0, (self._boundary - t0) / (t1 - t0)))) if t1 > t0 else None

    def backfill(self) -> tuple[float | None, float | None]:
        """The share of the history read (0..1) and the seconds left at the rate so far.

        ``(None, None)`` when the history's length and time span are unknown; the seconds
        left are ``None`` until some progress was made in this run. In the live phase:
        ``(1.0, 0.0)``.
        """
        if self._phase == "live":
            return 1.0, 0.0
        share = self._share()
        if share is None or self._started is None:
            return share, None
        t0, share0 = self._started
        elapsed = self.clock() - t0
        if share >= 1.0:
            return share, 0.0
        if share <= share0 or elapsed <= 0:
            return share, None
        return share, (1.0 - share) * elapsed / (share - share0)

    def on_switch(self, callback: Callable[[dict[str, Any]], None]) -> Unsubscribe:
        """Call ``callback(info)`` when the history ends and the live source starts.

        ``info``: ``boundary`` (ISO time), ``history_rows``, ``source`` (the live one).
        Returns the handle that unsubscribes.
        """
        self._switch_hooks.append(callback)

        def unsubscribe() -> None:
            if callback in self._switch_hooks:
                self._switch_hooks.remove(callback)

        return unsubscribe

    # -- what the runtime and the status widget read ------------------------------------------
    @property
    def running_source(self) -> Any:
        """The source of the current phase."""
        return self.history if self._phase == "history" else self.live

    @property
    def stats(self) -> Any:
        """The current phase's source counters (``None`` for a replay)."""
        return getattr(self.running_source, "stats", None)

    @property
    def buffer(self) -> Any:
        """The current phase's source buffer (``None`` for a replay)."""
        return getattr(self.running_source, "buffer", None)

    def event_clock(self) -> pd.Timestamp | None:
        """Event time reached: the history's clock (else its last row), then the live one's."""
        own = getattr(self.running_source, "event_clock", None)
        clock = own() if callable(own) else None
        if clock is None and self._phase == "history" and self._boundary is not None:
            return pd.Timestamp(self._boundary)
        return clock

    @property
    def exhausted(self) -> bool:
        """Whether the live source ended by itself too (a feed never does)."""
        return self._finished and bool(getattr(self.live, "exhausted", False))

    def resume_kind(self) -> str:
        """``"replay"``: at its own saved position (``rtnb.sources._hybrid.HybridPosition``).

        Both inner sources must be able to resume (the live one's kind is checked: a Redis
        stream without a consumer group is refused, as on its own).
        """
        source_kind(self.history)
        source_kind(self.live)
        return "replay"

    @property
    def position(self) -> HybridPosition:
        """Where a checkpoint resumes: phase, position in it, boundary state."""
        inner = self.running_source
        where = getattr(inner, "position", None)
        if self._phase == "live" and source_kind(self.live) not in ("replay", "recorded"):
            where = None
        tail_ns, tail = self._tail.hashed()
        return HybridPosition(self._phase, where, self._boundary, tail_ns, tail,
                              self.history_rows)

    def skip(self, position: HybridPosition) -> None:
        """Resume at ``position`` (a restored checkpoint's)."""
        if not isinstance(position, HybridPosition):
            msg = (f"hybrid {self.name!r} resumes from a HybridPosition; got "
                   f"{type(position).__name__} {position!r:.80}")
            raise ConfigError(msg)
        self._phase = position.phase
        self._tail.boundary = position.boundary
        self._tail.set(position.tail_ns, position.tail)
        self.history_rows = position.history_rows
        if position.position is not None:
            getattr(self.running_source, "skip")(position.position)  # noqa: B009

    def limit(self, max_events: int) -> None:
        """Stop after ``max_events`` rows of this run, history and live together.

        The live source is bounded by what is left after the history; the live rows it
        reads that are dropped as duplicates count against that bound too.
        """
        current = self.max_events
        self.max_events = max_events if current is None else min(current, max_events)

    # -- checkpoints: acks travel to the source that read the message -------------------------
    @property
    def defer_acks(self) -> bool:
        """Whether acknowledgements wait for checkpoints (set by the runtime)."""
        return bool(getattr(self.live, "defer_acks", False))

    @defer_acks.setter
    def defer_acks(self, value: bool) -> None:
        for src in (self.history, self.live):
            if hasattr(src, "defer_acks"):
                src.defer_acks = value

    @property
    def before_close(self) -> Any:
        """Awaited by the live source once a stopped run handled its last batch."""
        return self._before_close

    @before_close.setter
    def before_close(self, callback: Any) -> None:
        self._before_close = callback
        if hasattr(self.live, "before_close"):
            self.live.before_close = callback
        if hasattr(self.history, "before_close"):
            async def history_stopped() -> None:  # only a stop, not the history's end
                if callback is not None and self._stop is not None and self._stop.is_set():
                    await callback()

            self.history.before_close = history_stopped if callback is not None else None

    @property
    def window_full(self) -> asyncio.Event | None:
        """The live source's "delivery window full of unacknowledged messages" event."""
        event: asyncio.Event | None = getattr(self.live, "window_full", None)
        return event

    def take_acks(self) -> list[Any]:
        """Positions handled since the last call, tagged with the phase that read them."""
        out: list[Any] = []
        for tag, src in (("history", self.history), ("live", self.live)):
            take = getattr(src, "take_acks", None)
            if take is not None:
                out.extend((tag, p) for p in take())
        return out

    async def ack(self, positions: list[Any]) -> None:
        """Acknowledge ``positions`` (from :meth:`take_acks`) at the source that read them."""
        for tag, src in (("history", self.history), ("live", self.live)):
            mine = [p for t, p in positions if t == tag]
            ack = getattr(src, "ack", None)
            if mine and ack is not None:
                await ack(mine)

    def resume_acks(self, positions: list[Any]) -> None:
        """The restored checkpoint's barrier positions, to each source that read them."""
        for tag, src in (("history", self.history), ("live", self.live)):
            mine = [p for t, p in positions if t == tag]
            resume = getattr(src, "resume_acks", None)
            if mine and resume is not None:
                resume(mine)

    # -- the boundary ---------------------------------------------------------------------------
    @property
    def _boundary(self) -> int | None:
        return self._tail.boundary

    def _on_history(self, frame: StreamingFrame, batch: pd.DataFrame) -> None:
        capped = self._capped(batch)
        if capped is None:
            return
        batch = frame.validate(capped)
        if len(batch):
            times = _frames.times_ns(batch, self.time)
            valid = times != np.iinfo(np.int64).min
            if valid.any():
                self._tail.add(_frames.take(batch, valid) if not valid.all() else batch,
                               times[valid])
        self.history_rows += len(batch)
        self._sent += len(batch)
        frame.emit(batch)

    def _on_live(self, frame: StreamingFrame, batch: pd.DataFrame) -> None:
        batch = frame.validate(batch)
        boundary = self._boundary
        if boundary is not None and len(batch):
            times = _frames.times_ns(batch, self.time)
            before = times <= boundary
            before &= times != np.iinfo(np.int64).min  # missing times: the frame's dead letters
            if before.any():
                drop = np.zeros(len(batch), dtype=bool)
                idx = np.flatnonzero(before)
                tail_ns, tail = self._tail.hashed()
                if self.id is not None:
                    old = times[idx] < boundary - int(self.overlap_ns or 0)
                    seen = self._tail.contains(_hashes(batch[self.id].iloc[idx]))
                    drop[idx] = old | seen
                else:
                    drop[idx] = times[idx] < boundary
                    at = idx[times[idx] == boundary]
                    if len(at) and len(tail):
                        hit, left = _match(_hashes(batch.iloc[at]), tail)
                        self._tail.set(tail_ns[:len(left)], left)
                        drop[at[hit]] = True
                if drop.any():
                    self.duplicates += int(drop.sum())
                    batch = _frames.take(batch, ~drop)
            if self.id is not None and self._tail.chunks and \
                    int(times.max()) > boundary + int(self.overlap_ns or 0):
                # the live source is past the overlap: the ids are let go (checkpoints stay
                # small); live rows before the boundary are still dropped
                self._tail.set(_NO_NS, _NO_HASHES)
        capped = self._capped(batch)
        if capped is None:
            return
        self._sent += len(capped)
        if len(capped):
            frame.emit(capped)

    def _capped(self, batch: pd.DataFrame) -> pd.DataFrame | None:
        if self.max_events is None:
            return batch
        left = self.max_events - self._sent
        if left <= 0:
            return None
        return batch if len(batch) <= left else batch.iloc[:left]

    # -- running ------------------------------------------------------------------------------
    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        """Run the history's source to its end, then the live one, into ``frame``."""
        self._stop = stop
        if self._phase == "history":
            if self.max_events is not None:
                _limit(self.history, self.max_events)
            self._started = (self.clock(), self._share() or 0.0)
            feed = _Feed(frame, lambda b: self._on_history(frame, b))
            await self.history.run(cast("StreamingFrame", feed), stop)
            if stop.is_set():
                return
            if self.max_events is not None and self._sent >= self.max_events:
                return
            self._phase = "live"
            info = {"boundary": None if self._boundary is None
                    else pd.Timestamp(self._boundary).isoformat(),
                    "history_rows": self.history_rows, "source": repr(self.live)}
            for hook in list(self._switch_hooks):
                hook(info)
        if self.max_events is not None:
            left = self.max_events - self._sent
            if left <= 0:
                return
            _limit(self.live, left)
        feed = _Feed(frame, lambda b: self._on_live(frame, b))
        await self.live.run(cast("StreamingFrame", feed), stop)
        self._finished = not stop.is_set()


def _limit(source: Any, n: int) -> None:
    bound = getattr(source, "limit", None)
    if bound is not None:
        bound(n)


def _hashes(rows: pd.DataFrame | pd.Series) -> np.ndarray[Any, Any]:
    """One uint64 per row, equal for rows equal in every column (or for equal values)."""
    return pd.util.hash_pandas_object(rows, index=False).to_numpy(dtype=np.uint64)


def _match(hashes: np.ndarray[Any, Any], pool: np.ndarray[Any, Any]
           ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Which of ``hashes`` find a partner in ``pool`` (each item used once); what is left.

    >>> hit, left = _match(np.array([1, 2, 2, 3], dtype=np.uint64),
    ...                    np.array([2, 3, 3], dtype=np.uint64))
    >>> hit.tolist(), left.tolist()
    ([False, True, False, True], [3])
    """
    count: dict[int, int] = {}
    for h in pool.tolist():
        count[h] = count.get(h, 0) + 1
    hit = np.zeros(len(hashes), dtype=bool)
    for i, h in enumerate(hashes.tolist()):
        if count.get(h, 0) > 0:
            count[h] -= 1
            hit[i] = True
    left = [h for h, n in count.items() for _ in range(n)]
    return hit, np.asarray(left, dtype=np.uint64)


def _history_frame(history: str | os.PathLike[str] | StreamingFrame, time: str | None,
                   name: str) -> StreamingFrame:
    if isinstance(history, StreamingFrame):
        return history
    from rtnb.sources._replay import replay

    path = Path(history)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq"))
        if not files:
            msg = f"hybrid {name!r}: the history folder {str(path)!r} holds no .parquet file"
            raise ConfigError(msg)
        data = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
        return replay(data, time=time or "timestamp", name=f"{name}.history")
    if not path.exists():
        msg = f"hybrid {name!r}: no such history file or folder {str(path)!r}"
        raise SourceError(msg, source=name)
    return replay(path, time=time or "timestamp", name=f"{name}.history")


def _compatible(a: Any, b: Any) -> bool:
    if a == b:
        return True
    if pd.api.types.is_datetime64_any_dtype(a) and pd.api.types.is_datetime64_any_dtype(b):
        return getattr(a, "tz", None) == getattr(b, "tz", None)
    return bool(pd.api.types.is_string_dtype(a) and pd.api.types.is_string_dtype(b))


def hybrid(
    history: str | os.PathLike[str] | StreamingFrame,
    live: StreamingFrame,
    *,
    id: str | None = None,
    overlap: DurationLike = "10min",
    name: str = "hybrid",
) -> StreamingFrame:
    """Backfill from a finite history, then continue live from where it stopped (Lambda).

    The history's source runs to its end (as fast as it goes: an unpaced replay reads a
    week in seconds), then the live source runs, into one root frame: windows, detectors,
    views, sinks and exports work on it as on any source. Event time and the watermark are
    continuous across the switch (windows spanning it hold rows of both), and the watermark
    never goes back. The status widget shows ``backfilling 63 % (ETA 40 s)`` (the share
    from the history's length, or its time span, and the seconds left at the rate so far)
    and then ``live``; an exported script logs the switch (``{"event": "source", "action":
    "switch", ...}``) and exports the phase as the ``rtnb_source_phase`` metric.

    **The boundary rule** (no gap, no overlap). Let *B* be the largest event time of the
    history rows (an empty history has none: every live row goes on). A live row later
    than *B* always goes on. Without ``id``: a live row
    earlier than *B* is dropped (the history holds it), and a live row at exactly *B* is
    dropped when a history row at *B* equal in every column was not matched yet (each
    history row at *B* cancels one live row), so a history cut between two rows of the same
    time loses and repeats nothing. With ``id``: a live row within ``overlap`` before *B*
    (``B - overlap <= t <= B``) is dropped when a history row of that time range had the
    same ``id``; earlier live rows are dropped. Dropped rows are counted
    (``frame.source.duplicates``) and are neither late nor dead letters; a row the live
    source brings that the history lacked (``id`` rule) is an ordinary row (late only if
    its window already closed).

    What you must guarantee: the history holds *every* event up to *B* (without ``id``: up
    to the last instant before *B*, and the rows at *B* it has are the first ones of that
    instant), the live source delivers every event after the history's end (start it at or
    before that point: a Redis stream or JetStream from an id/time before *B*, a Kafka
    topic from an offset before it) and keeps what arrives during the backfill (the live
    source starts when the history ends), and, with ``id``, that a live row repeating a
    history row is at most ``overlap`` older than *B*. The ids of the history rows within
    ``overlap`` are kept (and saved in checkpoints) until the live source delivers a row
    more than ``overlap`` after *B*; a repeat arriving after that is not recognised.

    With ``--checkpoint`` the position saved is the phase, the position in it and the
    boundary state (a ``HybridPosition``): a restart during the backfill resumes the history
    where it was; during the live phase the live source resumes as it does alone (a consumer group:
    from what was acknowledged, acknowledgements only after the checkpoint).

    Parameters
    ----------
    history
        A finite source's frame (``rtnb.sources.replay(...)``, a Prometheus range query, a
        broker source bounded with ``max_events=``), or a ``.parquet``/``.csv`` file or a
        folder of ``.parquet`` files (replayed as fast as possible with ``time`` as the
        event-time column).
    live
        The frame of the source to continue with (same columns, compatible dtypes, same
        event-time column).
    id
        A column identifying an event; de-duplicates on it instead of the time boundary.
    overlap
        With ``id``: how far before the boundary live rows may repeat history rows.
    name
        Name of the root frame.

    Returns
    -------
    StreamingFrame
        The root frame of the hybrid (``start()`` it in a notebook, ``run()`` in a script).

    Raises
    ------
    ConfigError
        ``live`` or ``history`` is not a source's root frame (or has nodes built on it, or
        runs already), the columns or event-time columns differ, ``id`` is not a column, or
        ``overlap`` is not a positive duration.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> t = pd.date_range("2026-01-01", periods=6, freq="s")
    >>> df = pd.DataFrame({"timestamp": t, "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    >>> old = rtnb.sources.replay(df.iloc[:4])            # history: rows 0-3
    >>> new = rtnb.sources.replay(df.iloc[2:])            # live: repeats rows 2 and 3
    >>> src = rtnb.sources.hybrid(history=old, live=new)
    >>> out = src.collect()
    >>> src.run()
    >>> pd.concat(out)["x"].tolist(), src.source.duplicates, src.source.phase
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 'live')
    """
    if not isinstance(live, StreamingFrame) or not live.is_root or live.source is None:
        msg = (f"hybrid {name!r}: `live` must be a source's frame (rtnb.sources.redis_stream"
               f"(...), ...); got {type(live).__name__} {live!r:.80}")
        raise ConfigError(msg)
    if live.time is None:
        msg = f"hybrid {name!r}: the live frame {live.name!r} has no event-time column (time=)"
        raise ConfigError(msg)
    if isinstance(history, StreamingFrame) and (not history.is_root or history.source is None):
        msg = (f"hybrid {name!r}: `history` must be a source's frame, a file or a folder; "
               f"got the derived frame {history.name!r}")
        raise ConfigError(msg)
    past = _history_frame(history, live.time, name)
    for role, inner in (("history", past), ("live", live)):
        derived = [n.name for n in inner.graph.nodes if n is not inner]
        if derived or inner.running:
            what = f"nodes {derived!r} built on it" if derived else "its source running"
            msg = (f"hybrid {name!r}: the {role} frame {inner.name!r} has {what}; they would "
                   "receive nothing (the hybrid's frame gets the rows): pass a source's "
                   "frame as it was created and build the pipeline on the hybrid")
            raise ConfigError(msg)
    if past.time != live.time:
        msg = (f"hybrid {name!r}: the history's event-time column is {past.time!r} and the "
               f"live one's {live.time!r}; they must be the same column")
        raise ConfigError(msg)
    h, lv = past.example.dtypes, live.example.dtypes
    if set(h.index) != set(lv.index):
        msg = (f"hybrid {name!r}: the history has columns {list(h.index)!r} and the live "
               f"source {list(lv.index)!r}; they must be the same")
        raise ConfigError(msg)
    for col in h.index:
        if not _compatible(h[col], lv[col]):
            msg = (f"hybrid {name!r}: column {col!r} is {h[col]} in the history and "
                   f"{lv[col]} in the live source")
            raise ConfigError(msg)
    if id is not None and id not in h.index:
        msg = f"hybrid {name!r}: `id` column {id!r} is not a column: {list(h.index)!r}"
        raise ConfigError(msg)
    overlap_ns = to_ns(overlap, name="overlap")
    if overlap_ns <= 0:
        msg = f"hybrid {name!r}: `overlap` must be a positive duration; got {overlap!r}"
        raise ConfigError(msg)
    frame = StreamingFrame(past.example, time=past.time, name=name)
    frame.attach_source(HybridSource(frame.name, past.graph.source, live.graph.source,
                                     time=live.time, example=frame.example, id=id,
                                     overlap_ns=overlap_ns if id is not None else None))
    return frame
