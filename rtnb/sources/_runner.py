"""The buffered runner of the message sources: reader, buffer, batcher, acks, supervision.

A source is split in two tasks on the running loop:

* the **reader** (one per protocol) receives messages and puts ``(payload, position)`` into a
  bounded :class:`Buffer`; a full buffer makes it wait (``"block"``: replayable sources then
  simply stop reading from the broker, which keeps the data) or drops by policy
  (``"drop_oldest"``, ``"sample"``: live-only feeds, counted exactly);
* the **batcher** takes up to ``max_batch`` messages or whatever arrived within ``max_delay``,
  decodes them, coerces them to the frame's ``example`` schema, emits the good rows, sends the
  bad ones to the frame's dead letters with the raw payload, the reason and the position, and
  only then acknowledges the positions (so nothing accepted is lost if the process dies).

With checkpoints (``defer_acks``, set by the exported runtime) a batch is not acknowledged
after it was emitted: its positions wait in :meth:`BufferedSource.take_acks` for the next
checkpoint barrier, and the runtime calls :meth:`BufferedSource.ack` once the checkpoint that
holds their effects is durable (Flink's model: nothing acknowledged before its effects are
saved, nothing saved whose acknowledgement could be lost without a trace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rtnb import _frames
from rtnb._net import Backoff
from rtnb.errors import ConfigError, SourceError
from rtnb.sources._coerce import coerce
from rtnb.sources._decode import Payload, make_decoder
from rtnb.sources._guard import future_guard
from rtnb.sources._options import Policy, SourceOptions, check_capacity, check_policy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from rtnb.frame import StreamingFrame

__all__ = ["Buffer", "BufferedSource", "PartitionDecoder", "Policy", "SourceStats", "attach",
           "convert", "convert_each"]

log = logging.getLogger(__name__)


def attach(source: BufferedSource, time: str | None) -> StreamingFrame:
    """The root frame fed by ``source``."""
    from rtnb.frame import StreamingFrame

    frame = StreamingFrame(source.example, time=time, name=source.name)
    frame.attach_source(source)
    return frame


# -- decoding ---------------------------------------------------------------------------------
Converted = tuple[pd.DataFrame, list[int], list[tuple[int, str]]]


def convert(decoder: Any, example: pd.DataFrame, time_unit: Any,
            payloads: Sequence[Payload]) -> Converted:
    """Decode and coerce ``payloads``.

    Returns the good rows, the payload index of each row, and ``(payload index, reason)``
    of every message that became a dead letter.
    """
    records, owners, dead = decoder.decode_batch(payloads)
    good, bad, reasons = coerce(records, example, time_unit=time_unit)
    if not reasons:
        return good, owners, dead
    dead.extend(zip([owners[j] for j in np.flatnonzero(bad)], reasons, strict=True))
    return good, [owners[j] for j in np.flatnonzero(~bad)], dead


def convert_each(decoder: Any, example: pd.DataFrame, time_unit: Any,
                 payloads: Sequence[Payload], error: Exception, name: str) -> Converted:
    """:func:`convert` one payload at a time, after it failed for the whole batch.

    A payload it still fails for is a dead letter with the error; the others go on.
    """
    log.warning("source %r: a batch of %d messages failed (%s: %s); processing it one "
                "message at a time", name, len(payloads), type(error).__name__, error)
    frames: list[pd.DataFrame] = []
    owners: list[int] = []
    dead: list[tuple[int, str]] = []
    for i, payload in enumerate(payloads):
        try:
            good, _, failed = convert(decoder, example, time_unit, [payload])
        except Exception as exc:  # this message's own problem: its dead letter says what
            dead.append((i, f"{name} could not process the message: "
                            f"{type(exc).__name__}: {exc}"))
            continue
        dead.extend((i, reason) for _, reason in failed)
        if len(good):
            frames.append(good)
            owners.extend([i] * len(good))
    good = pd.concat(frames, ignore_index=True) if frames else \
        coerce([], example, time_unit=time_unit)[0]
    return good, owners, dead


class _WallClock:
    """The watermark guard's view of a source on a worker: wall clock and ``max_future``."""

    def __init__(self, max_future_ns: int | None) -> None:
        self.max_future_ns = max_future_ns

    @staticmethod
    def event_clock() -> pd.Timestamp:
        return pd.Timestamp.now("UTC").tz_localize(None)


class PartitionDecoder:
    """A source's decoding of one partition's messages, for a Dask worker (picklable).

    Called with ``(payload, position)`` pairs, returns the good rows and the dead letters as
    ``(payload, reason, position)``, as the source's own batcher would: decoded and coerced
    together (one message at a time when the batch fails as a whole), rows without an event
    time or beyond ``max_future`` of the wall clock refused.
    """

    def __init__(self, *, name: str, decoder: Any, example: pd.DataFrame, time: str | None,
                 time_unit: Any, max_future_ns: int | None) -> None:
        self.name, self.decoder, self.example = name, decoder, example
        self.time, self.time_unit = time, time_unit
        self.max_future_ns = max_future_ns

    def __call__(self, items: Sequence[tuple[Payload, Any]]
                 ) -> tuple[pd.DataFrame, list[tuple[Payload, str, Any]]]:
        payloads = [payload for payload, _ in items]
        try:
            good, owners, dead = convert(self.decoder, self.example, self.time_unit, payloads)
        except Exception as exc:  # which message(s): found out one by one
            good, owners, dead = convert_each(self.decoder, self.example, self.time_unit,
                                              payloads, exc, self.name)
        good, owners = future_guard(_WallClock(self.max_future_ns), self.time, good, owners,
                                    dead)
        dead.sort(key=lambda d: d[0])
        return good, [(items[i][0], reason, items[i][1]) for i, reason in dead]


# -- buffering and backpressure --------------------------------------------------------------
@dataclass
class SourceStats:
    """What a source counts; rates are derived by the status widget and metrics."""

    messages: int = 0
    events: int = 0
    bytes: int = 0
    batches: int = 0
    dead_letters: int = 0
    dropped: int = 0
    reconnects: int = 0
    acked: int = 0
    lag: int | None = None
    #: A partitioned source's lag by partition (``{"metrics:0": 120, ...}``; ``None``:
    #: not partitioned or not known yet); ``lag`` is their sum.
    partition_lag: dict[str, int] | None = None
    #: On a Dask cluster (:mod:`rtnb.distributed`): the worker reading each partition.
    partition_worker: dict[str, str] | None = None
    #: A partitioned source's messages taken from each partition by the pipeline so far
    #: (decoded; not those still buffered): the status widget shows each one's rate,
    #: metrics export the counter.
    partition_messages: dict[str, int] | None = None
    connected: bool = False
    last_error: str | None = None
    started: float = field(default_factory=time.monotonic)


class Buffer:
    """A bounded FIFO of ``(payload, position)`` between a reader and the batcher.

    ``policy`` says what a full buffer does to the reader: ``"block"`` makes ``put`` wait
    (the reader stops reading: right for replayable sources, nothing is lost);
    ``"drop_oldest"`` drops the oldest message; ``"sample"`` keeps a uniform sample of the
    messages that arrived while full (reservoir sampling). Dropped messages are counted.

    Examples
    --------
    >>> import asyncio
    >>> buf = Buffer(2, policy="drop_oldest")
    >>> for i in range(5):
    ...     asyncio.run(buf.put(str(i), i))
    >>> buf.take(10), buf.dropped
    ([('3', 3), ('4', 4)], 3)
    """

    def __init__(self, capacity: int, policy: Policy = "block") -> None:
        check_capacity(capacity)
        check_policy(policy)
        self.capacity = capacity
        self.policy = policy
        self._items: deque[tuple[Payload, Any]] = deque()
        self.dropped = 0
        self._overflow_seen = 0
        self._not_full: asyncio.Event | None = None
        self._not_empty: asyncio.Event | None = None
        self._rng = random.Random(0)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def fill(self) -> float:
        """How full the buffer is (0..1)."""
        return len(self._items) / self.capacity

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._not_full is None or self._not_empty is None:
            self._not_full, self._not_empty = asyncio.Event(), asyncio.Event()
            self._not_full.set()
        return self._not_full, self._not_empty

    async def put(self, payload: Payload, position: Any = None) -> None:
        """Add a message; wait, drop or sample when full, by policy."""
        not_full, not_empty = self._events()
        if len(self._items) >= self.capacity:
            if self.policy == "block":
                while len(self._items) >= self.capacity:
                    not_full.clear()
                    await not_full.wait()
            elif self.policy == "drop_oldest":
                self._items.popleft()
                self.dropped += 1
            else:
                self._overflow_seen += 1
                self.dropped += 1
                slot = self._rng.randrange(self.capacity + self._overflow_seen)
                if slot < self.capacity:
                    self._items[slot] = (payload, position)
                return
        else:
            self._overflow_seen = 0
        self._items.append((payload, position))
        not_empty.set()

    def offer(self, payload: Payload, position: Any = None) -> bool:
        """Add a message if there is room (``False``: full, :meth:`put` decides)."""
        items = self._items
        if len(items) >= self.capacity:
            return False
        self._overflow_seen = 0
        items.append((payload, position))
        if self._not_empty is not None and len(items) == 1:
            self._not_empty.set()
        return True

    def take(self, n: int) -> list[tuple[Payload, Any]]:
        """Up to ``n`` messages, oldest first."""
        k = min(n, len(self._items))
        out = [self._items.popleft() for _ in range(k)]
        not_full, not_empty = self._events()
        if len(self._items) < self.capacity:
            not_full.set()
        if not self._items:
            not_empty.clear()
        return out

    async def wait_not_empty(self, timeout: float | None = None) -> bool:
        """Wait until something is buffered (``False`` on timeout)."""
        _, not_empty = self._events()
        if self._items:
            return True
        try:
            await asyncio.wait_for(not_empty.wait(), timeout)
        except TimeoutError:
            return False
        return True


# -- the source ------------------------------------------------------------------------------
class BufferedSource:
    """Base class of the message sources: a reader task, a buffer, a batcher, acks.

    Subclasses implement :meth:`_read` (connect, read, ``await self._put(payload, position)``
    for every message, raise on a lost connection) and, when the protocol has them,
    :meth:`_ack` (called with the positions of a batch once it was processed). Connection
    errors (``OSError``, and the protocol's own errors listed in ``retry_on``) reconnect with
    :class:`Backoff`; other errors stop the source and are re-raised by ``frame.wait()``.

    Both tasks are supervised. Whatever goes wrong with one message (it does not decode,
    for any reason, or does not fit the schema) makes it a dead letter with the reason and
    the raw payload, and the rest of its batch goes on; a batch that fails as a whole is
    processed again one message at a time, so only the messages at fault are dead letters.
    Any other error of the reader or of the batcher stops the run and is re-raised: the
    graph's state becomes ``failed``, with the error logged and in ``graph.error``.
    """

    name: str = "source"
    replayable = False
    retry_on: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)

    #: A feed never ends by itself (a finite one ends the run; it is not "exhausted").
    exhausted = False
    #: Stop after this many events (``None``: never); :meth:`limit` lowers it.
    max_events: int | None
    #: The watermark guard (``None``: none); :func:`~rtnb.sources._guard.set_max_future`.
    max_future_ns: int | None
    #: Set by the runtime before run() when it checkpoints: acknowledgements wait for the
    #: checkpoint that holds the messages' effects (:meth:`take_acks`, :meth:`ack`).
    defer_acks: bool = False
    #: Set by the runtime when it checkpoints: awaited once a stopped run has handled its
    #: last batch, while the reader's connection is still open (the stop's checkpoint, whose
    #: acks can then travel on it: AMQP delivery tags die with their channel).
    before_close: Callable[[], Awaitable[None]] | None = None
    #: The number of partitions of a partitioned source (``None``: one ordered feed): its
    #: rows are aligned in event time across them (:meth:`_align`); :meth:`_partition` maps
    #: a position to its partition.
    align_partitions: int | None = None
    #: Seconds without a message after which a partition no longer holds the others back.
    idle_timeout_s: float = 5.0
    #: Nanoseconds of event time a partition may run ahead of the others before its reader
    #: stops fetching it (:meth:`_ahead`; ``None``: no limit but the buffer).
    max_drift_ns: int | None = None

    def limit(self, max_events: int) -> None:
        """Stop after ``max_events`` events (the smaller of this and any earlier limit)."""
        current = self.max_events
        self.max_events = max_events if current is None else min(current, max_events)

    def resume_kind(self) -> str:
        """How a run from a checkpoint resumes this source (see :mod:`rtnb.state`).

        ``"replay"`` / ``"recorded"``: at the source's own saved position; ``"broker"``: the
        broker keeps the acknowledged consumer position; ``"live"``: nothing to resume, the
        feed goes on from what it sends now. Raises :class:`~rtnb.CheckpointError` for a
        source whose restored state would be wrong (it would re-read data it already
        counted). This default is for sources that only deliver what is sent from now on.
        """
        return "live"

    def __init__(self, *, name: str, example: pd.DataFrame,
                 options: SourceOptions | None = None, **given: Any) -> None:
        """A source called ``name`` of records shaped like ``example``, with ``options``.

        ``given`` keywords are options one by one (fields of :class:`SourceOptions`), over
        ``options`` or the defaults.
        """
        if options is None:
            options = SourceOptions(**given)
        elif given:
            options = replace(options, **given)
        self.name = name
        self.example = example
        #: What the source was built with (``max_events`` and ``max_future_ns`` may change).
        self.options = options
        self.decoder = make_decoder(options.decoder, example)
        self.max_batch = options.max_batch
        self.max_delay_s = options.max_delay_s
        policy = options.policy or "block"
        if self.replayable and policy != "block":
            msg = (f"{name}: a replayable source pauses reading when downstream is slow; "
                   f"policy {policy!r} would lose data it could keep (use 'block')")
            raise ConfigError(msg)
        self.buffer = Buffer(options.buffer, policy)
        self.time_unit = options.time_unit
        self.backoff = options.backoff or Backoff()
        self.max_reconnects = options.max_reconnects
        self.max_events = options.max_events
        self.max_future_ns = options.max_future_ns
        self.stats = SourceStats()
        self._enough = asyncio.Event()
        self._draining = False
        self._wake = asyncio.Event()  # the batcher: a batch is full, or the reader drained
        self._cut = False  # the reader drained: cut the batch now
        self._taken: list[Any] = []  # deferred acks: handled since the last take_acks()
        self._resumed: list[Any] = []  # resume_acks(): acknowledged on connecting, skipped
        self._in_run = False  # between run()'s start and its end (the reader may reconnect)
        # event-time alignment of partitions (_align): messages held back, each partition's
        # newest event time (ns) and when it last sent something (monotonic s)
        self._aligned: list[tuple[Payload, Any]] = []
        self._newest: dict[int, int] = {}
        self._bound: int | None = None  # the last alignment bound (ns), for _ahead
        self._heard: dict[int, float] = {}
        # when the held messages of each partition last went on because all were quiet
        self._released: dict[int, float] = {}
        self._aligning_since = 0.0
        #: With deferred acks: set when the broker's delivery window (prefetch, unacked
        #: limit, receive maximum) is full and part of it waits for a checkpoint; the broker
        #: sends no more until those are acknowledged, so the runtime should checkpoint now
        #: rather than at its next tick (``await source.window_full.wait()``). Cleared by
        #: :meth:`take_acks`. Without it the source does not deadlock (the periodic
        #: checkpoint acknowledges the window), it only reads one window per interval.
        self.window_full = asyncio.Event()

    def partition_decoder(self, time: str | None) -> PartitionDecoder:
        """How this source decodes a partition's messages, to run on a Dask worker."""
        return PartitionDecoder(name=self.name, decoder=self.decoder, example=self.example,
                                time=time, time_unit=self.time_unit,
                                max_future_ns=self.max_future_ns)

    # -- to implement ----------------------------------------------------------------------
    async def _read(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    async def _ack(self, positions: list[Any]) -> None:
        """Acknowledge processed messages (protocols with acks)."""

    async def _close(self) -> None:
        """Release connections (called once at the end)."""

    def _defer(self, positions: list[Any]) -> list[Any]:
        """Deferred acks: ``positions`` were handled; what :meth:`take_acks` returns for them.

        Called synchronously right after the batch was emitted. Protocols whose buffer
        positions are not what an ack after a restart needs return their own (picklable)
        positions and remember that these messages wait for a checkpoint.
        """
        return positions

    def _reader_tls(self, partition: object) -> Any:
        """Check ``partition`` for :meth:`partition_reader`; the TLS settings a reader takes.

        A partition out of range (or not an int) and an ``ssl.SSLContext`` (it cannot be
        pickled to a Dask worker) are a :class:`ConfigError` naming the source.
        """
        partitions = getattr(self, "partitions", None)
        if partitions is None or isinstance(partition, bool) or \
                not isinstance(partition, int) or not 0 <= partition < partitions:
            msg = (f"source {self.name!r} has no partition {partition!r} (partitions="
                   f"{partitions!r})")
            raise ConfigError(msg)
        tls = getattr(self, "tls_options", None)
        if tls is not None and isinstance(tls.tls, ssl.SSLContext):
            msg = (f"source {self.name!r}: an ssl.SSLContext cannot be sent to Dask workers; "
                   "give tls=True with ca=/cert=/key= files to run on a cluster")
            raise ConfigError(msg)
        return tls

    def partition_name(self, partition: int) -> str:
        """The name of a partition: its stream, subject or ``topic:p``.

        As in :attr:`SourceStats.partition_lag`.
        """
        streams = getattr(self, "streams", None)
        if streams is not None and 0 <= partition < len(streams):
            return str(streams[partition])
        return f"{self.name}:{partition}"

    def _partition(self, position: Any) -> int:
        """The partition (``0 .. partitions - 1``) of a message's position."""
        raise NotImplementedError

    def _ahead(self, partition: int) -> bool:
        """Whether ``partition`` ran more than ``max_drift_ns`` ahead of the alignment bound.

        Readers stop fetching such a partition (the broker keeps its messages) until the
        others catch up, so what the alignment holds back stays bounded.
        """
        drift = self.max_drift_ns
        if drift is None or self._bound is None:
            return False
        newest = self._newest.get(partition)
        if newest is None:
            return False
        # the bound as of now, not as of the last batch: a partition behind that went silent
        # since (it ended) must stop holding this one back even when no batch comes (this
        # one is not read meanwhile, so none would)
        now = time.monotonic()
        active = [p for p in range(int(self.align_partitions or 1))
                  if now - self._heard.get(p, self._aligning_since) < self.idle_timeout_s]
        if not active:
            return False
        bound = min(self._newest.get(p, np.iinfo(np.int64).min) for p in active)
        # a partition still to be heard from (not idle yet) holds the bound at the start of
        # time: every partition that sent something is ahead of it
        return bound <= np.iinfo(np.int64).min or newest - bound > drift

    def _window_blocked(self) -> bool:
        """Whether the broker waits for acks before it sends more (deferred acks)."""
        return False

    def _retake(self, positions: list[Any]) -> None:
        """An :meth:`ack` that could not be sent: the next barrier takes these again.

        They are sent again after the reconnect; should the process die first, the next
        checkpoint holds them, so :meth:`resume_acks` sends them in the next run.
        """
        have = set(self._taken)  # positions are hashable (ids, strings, tuples)
        self._taken[:0] = [p for p in positions if p not in have]

    # -- checkpoint barriers ---------------------------------------------------------------
    def take_acks(self) -> list[Any]:
        """Positions of every message fully handled since the last call, in order.

        Handled: emitted or dead-lettered. The runtime calls it synchronously at a
        checkpoint barrier, between batches. Positions are picklable (they are stored in the
        checkpoint). Positions whose :meth:`ack` could not be sent (a lost connection) are
        taken again by the next call, first.
        """
        taken, self._taken = self._taken, []
        self.window_full.clear()
        return taken

    async def ack(self, positions: list[Any]) -> None:
        """Acknowledge ``positions`` now (the checkpoint holding their effects is durable).

        Idempotent: acknowledging twice, or after a reconnect, is harmless. During a run
        the acks travel on the reader's connection (or wait for its reconnect); after the
        run, protocols whose positions outlive a connection open one of their own.
        """
        positions = list(positions)
        if not positions:
            return
        await self._ack(positions)
        self.stats.acked += len(positions)

    def resume_acks(self, positions: list[Any]) -> None:
        """Acknowledge the restored checkpoint's barrier positions first; never emit them.

        Called before run() with the positions the restored checkpoint took at its barrier
        (whose ack may have been lost in a crash): once connected, the source acknowledges
        them before reading, and never emits them if the broker delivers them again.
        """
        self._resumed = list(positions)

    # -- shared ----------------------------------------------------------------------------
    def _offer(self, payload: Payload, position: Any = None) -> bool:
        """:meth:`_put` without waiting: ``False`` (nothing done) when the buffer is full.

        Readers call it per message on their hot path (no coroutine per message) and
        ``await self._put(...)`` only when it returns ``False``.
        """
        buffer = self.buffer
        if not buffer.offer(payload, position):
            return False
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(payload)
        if len(buffer) >= self.max_batch:
            self._wake.set()
        return True

    async def _put(self, payload: Payload, position: Any = None) -> None:
        if self._offer(payload, position):  # the common case: room, nothing to wait for
            return
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(payload)
        buffer = self.buffer
        await buffer.put(payload, position)
        stats.dropped = buffer.dropped
        if len(buffer) >= self.max_batch:
            self._wake.set()

    async def _put_many(self, messages: Sequence[tuple[Payload, Any]]) -> None:
        """:meth:`_put` for each ``(payload, position)``."""
        for payload, position in messages:
            await self._put(payload, position)

    def _drained(self) -> None:
        """The reader has everything the broker will send for now.

        Call it when the broker has no more messages at the moment (a short read, the end
        of a file) or the delivery window is used up (prefetch, receive maximum, unacked
        limit: the broker waits for acks, which come only after the batch). The batcher
        then cuts the batch at once instead of waiting ``max_delay`` for messages that
        cannot come.
        """
        if len(self.buffer):
            self._cut = True
            self._wake.set()

    async def _reader(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._read(stop)
                return
            except asyncio.CancelledError:
                raise
            except self.retry_on as exc:
                self.stats.connected = False
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if self.max_reconnects is not None and \
                        self.stats.reconnects >= self.max_reconnects:
                    raise
                self.stats.reconnects += 1
                delay = self.backoff.next()
                log.warning("source %r lost its connection (%s); reconnecting in %.2f s",
                            self.name, self.stats.last_error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _finish(self) -> None:
        """After a run's last batch, with the reader stopped: settle what is left over."""

    def _connected(self) -> None:
        """Call after a successful (re)connection."""
        self.stats.connected = True
        self.backoff.reset()

    def _convert(self, payloads: Sequence[Payload]) -> tuple[pd.DataFrame, list[int],
                                                              list[tuple[int, str]]]:
        """Decode and coerce: the good rows, the payload of each row, ``(payload, reason)``."""
        return convert(self.decoder, self.example, self.time_unit, payloads)

    def _convert_each(self, payloads: Sequence[Payload],
                      error: Exception) -> tuple[pd.DataFrame, list[int], list[tuple[int, str]]]:
        """:meth:`_convert` one payload at a time, after it failed for the whole batch."""
        return convert_each(self.decoder, self.example, self.time_unit, payloads, error,
                            self.name)

    def _align(self, frame: StreamingFrame, items: list[tuple[Payload, Any]],
               good: pd.DataFrame, good_owner: list[int], dead: list[tuple[int, str]],
               *, flush: bool, held: int = 0) -> tuple[list[tuple[Payload, Any]],
                                                       pd.DataFrame, list[int],
                                                       list[tuple[int, str]]]:
        """Event time across partitions, as Flink aligns its inputs' watermarks.

        Each partition is in event-time order by itself, but they are read side by side: one
        read ahead of another would make the other's rows late for every window. So a message
        goes on only once its event time is at most the *bound*: the smallest newest event
        time over the partitions, leaving out those silent for ``idle_timeout_s`` (an idle
        partition holds nothing back). Later messages are held (decoded again with the next
        batch, not acknowledged) until the bound passes them. ``flush`` (the end of a run)
        and more held messages than the buffer holds (one partition far behind the others)
        release everything held. Returns the messages that go on and their rows. The first
        ``held`` items are messages held back before: they do not count as the partition
        being heard from (a partition that only holds messages goes idle like any other;
        counting them kept each one active until its own release, and a finite stream of N
        partitions ended after N - 1 idle timeouts in a row). Messages after a spell where
        every partition was quiet give each partition a fresh ``idle_timeout``, unless they
        come only from partitions whose held messages went on at the end of that spell.
        """
        now = time.monotonic()
        if not self._aligning_since:
            self._aligning_since = now
        n = int(self.align_partitions or 1)
        part = np.fromiter((self._partition(p) for _, p in items), dtype=np.int64,
                           count=len(items))
        times = _frames.times_ns(good, frame.time) if frame.time is not None and len(good) \
            else np.zeros(len(good), dtype=np.int64)
        owner = np.asarray(good_owner, dtype=np.intp)
        row_part = part[owner] if len(owner) else np.zeros(0, dtype=np.int64)
        fresh = np.bincount(part[held:], minlength=n)
        if fresh.any() and not held and self._heard and not any(
                now - self._heard.get(p, self._aligning_since) < self.idle_timeout_s
                for p in range(n)) and not all(
                now - self._released.get(int(p), -np.inf) < self.idle_timeout_s
                for p in np.flatnonzero(fresh)):
            # messages again after every partition went quiet (none held back, all silent
            # for idle_timeout): each one gets a whole idle_timeout from now to bring its
            # part (a producer writes the partitions one after the other; the first one
            # read must not make the others' rows late). Not when they come only from
            # partitions whose held messages just went on: those were silent because they
            # were held (a broker that pushes, AMQP, sends no more of a queue while its
            # prefetch window is held); holding their next window for a whole idle_timeout
            # again made such a partition advance one window per idle_timeout once the
            # others were done
            self._heard.update(dict.fromkeys(range(n), now))
        counts = dict(self.stats.partition_messages or {})
        for p in np.flatnonzero(fresh):
            self._heard[int(p)] = now
            name = self.partition_name(int(p))
            counts[name] = counts.get(name, 0) + int(fresh[p])
        self.stats.partition_messages = counts
        for p in np.unique(row_part):
            newest = int(times[row_part == p].max())
            if newest > self._newest.get(int(p), np.iinfo(np.int64).min):
                self._newest[int(p)] = newest
        active = [p for p in range(n)
                  if now - self._heard.get(p, self._aligning_since) < self.idle_timeout_s]
        if flush or len(items) > self.buffer.capacity or not active:
            bound = np.iinfo(np.int64).max
            if not active and held:
                for p in np.unique(part[:held]):  # see the quiet-spell reset above
                    self._released[int(p)] = now
        else:
            bound = min(self._newest.get(p, np.iinfo(np.int64).min) for p in active)
        self._bound = bound
        late_owner = np.zeros(len(items), dtype=bool)
        if len(owner):
            np.logical_or.at(late_owner, owner, times > bound)
        # a partition goes on in its order: from its first message held back, all its later
        # ones wait too (an offset-committing broker would otherwise skip the held one)
        for p in np.unique(part[late_owner]):
            mine = np.flatnonzero(part == p)
            late_owner[mine[np.argmax(late_owner[mine]):]] = True
        if not late_owner.any():
            self._aligned = []
            return items, good, good_owner, dead
        keep = np.flatnonzero(~late_owner)
        self._aligned = [items[i] for i in np.flatnonzero(late_owner)]
        renumber = np.full(len(items), -1, dtype=np.intp)
        renumber[keep] = np.arange(len(keep))
        rows = ~late_owner[owner]
        good = _frames.take(good, rows)
        good_owner = renumber[owner[rows]].tolist()
        dead = [(int(renumber[i]), reason) for i, reason in dead if not late_owner[i]]
        return [items[i] for i in keep], good, good_owner, dead

    async def _process(self, frame: StreamingFrame, items: list[tuple[Payload, Any]],
                       *, flush: bool = False) -> None:
        held = 0
        if self.align_partitions is not None:  # the messages held back go first (_align)
            held = len(self._aligned)
            items = self._aligned + items
        payloads = [payload for payload, _ in items]
        try:
            good, good_owner, dead = self._convert(payloads)
        except Exception as exc:  # which message(s): found out one by one
            good, good_owner, dead = self._convert_each(payloads, exc)
        if self.align_partitions is not None:
            items, good, good_owner, dead = self._align(frame, items, good, good_owner, dead,
                                                        flush=flush or self._draining,
                                                        held=held)
            if not items:
                return
        # rows dated beyond max_future of the source's clock: dead letters, not the watermark
        good, good_owner = future_guard(self, frame.time, good, good_owner, dead)
        defer = self.defer_acks
        if dead:
            dead.sort(key=lambda d: d[0])  # in arrival order
            self.stats.dead_letters += len(dead)
            if not defer:
                frame.dead_letter_messages([items[i][0] for i, _ in dead],
                                           [r for _, r in dead],
                                           [items[i][1] for i, _ in dead], node=self.name)
        done = len(items)  # messages fully handled (emitted or dead-lettered): acknowledged
        if self.max_events is not None and len(good) > self.max_events - self.stats.events:
            keep = max(0, self.max_events - self.stats.events)
            # the messages whose rows were cut off stay unacknowledged (read again next run)
            done = good_owner[keep] if keep < len(good_owner) else len(items)
            good = good.iloc[:keep]
        if len(good):
            await frame.graph.wait_running()
        if defer and dead:  # with the rows, no await in between: a barrier sees both or none
            frame.dead_letter_messages([items[i][0] for i, _ in dead], [r for _, r in dead],
                                       [items[i][1] for i, _ in dead], node=self.name)
        if len(good):
            frame.emit(good)
            self.stats.events += len(good)
        self.stats.batches += 1
        if defer:  # acknowledged once a checkpoint holds the effects (take_acks, ack)
            self._taken.extend(self._defer([p for _, p in items[:done]]))
            if self._taken and self._window_blocked():
                self.window_full.set()
        else:
            await self._ack([p for _, p in items[:done]])
            self.stats.acked += done
        # Only now: the run then stops the reader, whose connection the acks may travel on.
        if self.max_events is not None and self.stats.events >= self.max_events:
            self._enough.set()

    async def _batcher(self, frame: StreamingFrame, reader: asyncio.Task[None]) -> None:
        buf = self.buffer
        drain_left: int | None = None
        while not self._enough.is_set():
            if self._draining:  # stopping: what is buffered now (not what keeps coming)
                drain_left = len(buf) if drain_left is None else drain_left
                if drain_left > 0:
                    items = buf.take(min(drain_left, self.max_batch))
                    drain_left -= len(items)
                    await self._process(frame, items)
                    continue
                if self._aligned:  # held back for alignment: the run ends, they go on
                    await self._process(frame, [], flush=True)
                return
            if not await buf.wait_not_empty(timeout=0.2):
                if self._aligned:  # a partition may have gone idle (or the reader ended)
                    await self._process(frame, [], flush=reader.done())
                    continue
                if reader.done():
                    return
                continue
            # Cut at max_batch, at max_delay, or as soon as the reader says the broker has
            # nothing more for now (no waiting for messages that cannot come).
            # The reader sets `_wake` on each of those; no polling, so a full batch goes on
            # at once instead of at the next tick of a timer.
            deadline = time.monotonic() + self.max_delay_s
            wake = self._wake
            while True:
                wake.clear()
                if len(buf) >= self.max_batch or self._cut or reader.done():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(wake.wait(), left)
                except TimeoutError:
                    break
            self._cut = False
            await self._process(frame, buf.take(self.max_batch))

    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        """Read until ``stop`` (or the end of a finite source); flush what is buffered."""
        self.stats.started = time.monotonic()
        self._enough = asyncio.Event()
        self._draining = False
        if self.max_events == 0:
            return
        self._in_run = True
        # The readers' loops watch `halt`: set by the caller's stop or by max_events, so a
        # reader whose client swallows a cancellation (redis-py's wait_for on Python 3.11)
        # still ends after its current read.
        halt = asyncio.Event()
        self._wake, self._cut = asyncio.Event(), False
        reader = asyncio.ensure_future(self._reader(halt))
        reader.add_done_callback(lambda _: self._wake.set())
        # a reader cancelled before the run asked it to stop: a client let a cancellation
        # of its own escape (it is no end of the feed: the run fails, never "finishes")
        asked = [False]
        unasked = [False]
        reader.add_done_callback(lambda t: unasked.__setitem__(0, t.cancelled() and not asked[0]))
        batcher = asyncio.ensure_future(self._batcher(frame, reader))
        stopper = asyncio.ensure_future(stop.wait())
        enough = asyncio.ensure_future(self._enough.wait())
        try:
            # Both tasks are watched: whichever fails first stops the run with its error.
            await asyncio.wait({reader, batcher, stopper, enough},
                               return_when=asyncio.FIRST_COMPLETED)
            halt.set()
            self._wake.set()
            if batcher.done():  # it only ends on its own when the reader did, or on a bug
                asked[0] = True
                await self._stop_reader(reader)
                batcher.result()  # raises the batcher's error
            # Process what is buffered while the reader's connection is still open (acks
            # travel on it), then stop the reader.
            self._draining = True
            await batcher
            failed = reader.done() and not reader.cancelled() and reader.exception() is not None
            if self.before_close is not None and not failed and not unasked[0]:
                await self.before_close()
            asked[0] = True
            await self._stop_reader(reader)
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
            if unasked[0]:
                msg = (f"source {self.name!r}: its reader was cancelled while nobody asked it "
                       f"to stop (its client let a cancellation escape; last error: "
                       f"{self.stats.last_error or 'none'}); the feed did not end")
                raise SourceError(msg, source=self.name)
            await self._finish()
        finally:
            self._in_run = False
            for task in (reader, batcher, stopper, enough):
                task.cancel()
            await self._close()

    @staticmethod
    async def _stop_reader(reader: asyncio.Task[None]) -> None:
        """Cancel the reader until it is done (a client may swallow a cancellation)."""
        for _ in range(50):
            if reader.done():
                return
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 0.2)

    def event_clock(self) -> pd.Timestamp:
        """Live sources: event time now is the wall clock (UTC, naive)."""
        return pd.Timestamp.now("UTC").tz_localize(None)
