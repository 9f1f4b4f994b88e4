"""``rtnb.sources.nats``: NATS subjects, live (core NATS) or replayable (JetStream, with acks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time as _clock
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import pandas as pd

from rtnb._net import mask_url, require, secret
from rtnb._time import DurationLike, to_ns
from rtnb.errors import CheckpointError, ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._loop import LoopReader
from rtnb.sources._options import DecoderLike, Policy, SourceOptions, TlsOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["NatsPartitionReader", "NatsSource", "nats"]

Deliver = str | int | pd.Timestamp
ACK = b"+ACK"
NAK = b"-NAK"
NAK_SPAN = 200_000  # at most this many stream sequences are negatively acknowledged at once
T = TypeVar("T")
log = logging.getLogger(__name__)


def _sequence(reply: str) -> int:
    """The stream sequence in a JetStream ack subject (``-1`` if it is not one).

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>``, or with domain
    and account hash after ``$JS.ACK`` (12 tokens or more, servers 2.10+).
    """
    tokens = reply.split(".")
    index = 5 if len(tokens) == 9 else 7 if len(tokens) >= 11 else -1
    try:
        return int(tokens[index]) if index > 0 else -1
    except ValueError:
        return -1


def _check_deliver(deliver: Deliver) -> Deliver:
    if isinstance(deliver, pd.Timestamp) or deliver in ("all", "new"):
        return deliver
    if isinstance(deliver, int) and not isinstance(deliver, bool) and deliver >= 1:
        return deliver
    msg = (f"nats deliver must be 'all' (the whole stream: a replay), 'new' (only new "
           f"messages), a stream sequence >= 1 or a Timestamp; got {deliver!r}")
    raise ConfigError(msg)


class _Pull:
    """A consumer's pull requests: the inbox their messages land in, and what is still due."""

    def __init__(self, reply: str, inbox: asyncio.Queue[Any]) -> None:
        self.reply, self.inbox = reply, inbox
        self.left = 0  # messages the last pull request may still deliver ...
        self.deadline = 0.0  # ... until then

    @classmethod
    async def open(cls, nc: Any) -> _Pull:
        """A new inbox subscribed on ``nc``."""
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        async def deliver(msg: Any) -> None:
            inbox.put_nowait(msg)

        reply = nc.new_inbox()
        await nc.subscribe(reply, cb=deliver)
        return cls(reply, inbox)


class NatsSource(BufferedSource):
    """Reads a NATS subject: a core subscription, or a JetStream pull consumer with acks.

    **Core NATS** (no ``stream``, no ``durable``) is live-only: what is published while
    disconnected is gone, and NATS has no flow control: when the buffer is full (policy
    ``"block"``) messages wait in the client's subscription queue (as many as ``buffer``),
    beyond that the client drops them and counts them in ``stats.dropped``.

    **JetStream** reads with a pull consumer: a durable one (``durable``, created at
    ``deliver`` if missing, otherwise resumed where it stands) or, with only ``stream``, an
    ephemeral one that is re-created after a reconnect from the last sequence received.
    Messages are fetched only while the buffer has room (the stream keeps the rest), and a
    durable consumer's messages are acknowledged (``+ACK``, explicit ack policy) only after
    the batch holding them went through the pipeline. Within a run every stream sequence is
    processed once: a message the server delivers again (after a reconnect, a restart that
    lost recent acks, or ``ack_wait``) is skipped if it is buffered, and acknowledged again
    if it was processed. Messages left over when the run stops (``max_events``) are
    negatively acknowledged so the next run gets them at once.

    Reconnects use rtnb's :class:`~rtnb._net.Backoff`, not nats-py's own reconnect
    logic (``allow_reconnect=False``): every lost connection is counted in
    ``stats.reconnects``, re-creates the subscription and resends acks that did not make it.

    With checkpoints (``defer_acks``) a durable consumer's positions are the messages' ack
    reply subjects (strings: an ack can be sent on any connection, after a restart too):
    a message is acknowledged only by :meth:`ack`, after the checkpoint holding its effects
    is durable. A run first acknowledges the restored checkpoint's barrier
    (:meth:`resume_acks`) and skips those messages if they come again; then, on every
    (re)connection, it negatively acknowledges (``-NAK``) what the consumer delivered and
    this run does not hold (in flight at a crash or a cut), so the server sends it again at
    once and before newer messages, not ``ack_wait`` later as late events. That assumes
    the source is the durable's only consumer, as checkpoints do. ``max_ack_pending`` (by
    default ``buffer + max_batch + count``) bounds what waits for a checkpoint: when it is
    full the source sets :attr:`window_full` so the runtime checkpoints at once; keep
    ``ack_wait`` above the checkpoint interval (a message redelivered meanwhile is skipped).
    A barrier's positions also carry ``("floor", n)``: every stream sequence up to ``n`` was
    handled (the consumer's ack floor when the run connected, then this run's messages
    without a gap). A server killed with kill -9 can lose its consumer's most recent acks
    and deliver those messages again; a run resuming from the checkpoint skips (and
    acknowledges) every sequence up to the restored floor, so that is exact too, also when
    the script died while the server was down (gaps in the stream's sequences, e.g. other
    subjects of the stream, stop the floor: what lies beyond is at least once).
    """

    #: Deferred acks: every stream sequence up to this one was handled (see take_acks).
    _done_floor = 0
    _done_above: set[int] | None = None  # handled sequences above the floor

    def resume_kind(self) -> str:
        """A durable JetStream consumer: ``"broker"``; core NATS: ``"live"``."""
        if self.durable is not None:
            return "broker"
        if self.stream is not None:
            msg = (f"source {self.name!r}: an ephemeral JetStream consumer starts again from its "
                   "deliver policy on every run, so restored state would count messages "
                   "twice; give it durable=... to use --checkpoint")
            raise CheckpointError(msg)
        return "live"

    def __init__(self, url: str, subject: str, *, stream: str | None, durable: str | None,
                 deliver: Deliver, user: str | None, password: str | None,
                 token: str | None, ssl_context: ssl.SSLContext | None, count: int,
                 fetch_wait_s: float, ack_wait_s: float, max_ack_pending: int | None,
                 partitions: int | None = None, **options: Any) -> None:
        self.replayable = stream is not None or durable is not None
        super().__init__(**options)
        self._nats = require("nats", "nats")
        errors = require("nats.errors", "nats")
        js_errors = require("nats.js.errors", "nats")
        self.retry_on = (OSError, asyncio.TimeoutError, errors.ConnectionClosedError,
                         errors.NoServersError, errors.StaleConnectionError,
                         errors.NoRespondersError, errors.OutboundBufferLimitError,
                         js_errors.ServiceUnavailableError)
        self.url, self.subject, self.stream, self.durable = url, subject, stream, durable
        self.deliver = deliver
        self.count, self.fetch_wait_s, self.ack_wait_s = count, fetch_wait_s, ack_wait_s
        self.max_ack_pending = max_ack_pending
        self._user, self._password, self._token = user, password, token
        self._ssl = ssl_context
        #: The TLS options it was built with (a partition reader on a worker needs them).
        self.tls_options: TlsOptions | None = None
        #: With ``partitions=N``: the N subjects ``{subject}.0`` .. ``{subject}.{N-1}``, each
        #: read by its own durable consumer ``{durable}-{p}``; ``None``: one subject.
        self.partitions = partitions
        self.streams = [subject] if partitions is None else \
            [f"{subject}.{p}" for p in range(partitions)]
        self.align_partitions = partitions  # rows aligned in event time across them
        self._nc: Any = None
        self._ephemeral: tuple[str, str] | None = None  # (stream, consumer) to delete
        self._pulls: list[_Pull] = []  # the pull requests' inboxes (one per consumer)
        self._short: list[bool] = []  # per partition: its last delivery left nothing pending
        self._position = 0  # core NATS: a message counter
        self._last_seq: int | None = None  # JetStream: the last stream sequence received
        self._held: dict[int, str] = {}  # sequence -> reply subject: received, not acked yet
        self._seen: set[int] = set()  # sequences received in this run (above the ack floor)
        self._floor = 0  # the consumer's ack floor at the previous lag poll
        self._unacked: list[str] = []  # reply subjects of processed messages not yet acked
        self._pending: dict[int, str] = {}  # deferred acks: handled, waiting for a checkpoint
        self._skip: set[int] = set()  # resume_acks(): acknowledged already, never emitted
        self.duplicates = 0  # deliveries skipped: the sequence was held or processed already

    def __repr__(self) -> str:
        where = (f" durable {self.durable!r}" if self.durable else
                 f" stream {self.stream!r}" if self.stream else "")
        parts = f" x{self.partitions} partitions" if self.partitions is not None else ""
        return (f"<NatsSource {self.name!r} {mask_url(self.url)} {self.subject!r}{parts}"
                f"{where}>")

    @property
    def acks(self) -> bool:
        """Whether messages are acknowledged (a durable JetStream consumer)."""
        return self.durable is not None

    def partition_reader(self, partition: int) -> NatsPartitionReader:
        """A reader of one partition, to run on a Dask worker (:mod:`rtnb.distributed`).

        It is picklable (its connection opens on first use, where it runs) and reads
        ``{subject}.{partition}`` with partition ``partition``'s durable consumer
        ``{durable}-{partition}``, as this source does in one process.
        """
        tls = self._reader_tls(partition)
        return NatsPartitionReader(
            url=self.url, subject=self.streams[partition], partition=partition,
            stream=self.stream, consumer=f"{self.durable}-{partition}", deliver=self.deliver,
            ack_wait_s=self.ack_wait_s, max_ack_pending=self.max_ack_pending,
            user=self._user, password=self._password, token=self._token, tls=tls,
            owner=self.name)

    async def _connect(self) -> Any:
        async def error_cb(exc: Exception) -> None:
            if type(exc).__name__ == "SlowConsumerError":
                self.buffer.dropped += 1  # the client's queue was full: dropped, and counted
                self.stats.dropped = self.buffer.dropped
            else:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"

        kwargs: dict[str, Any] = {
            "servers": [self.url], "allow_reconnect": False, "connect_timeout": 5,
            "ping_interval": 20, "max_outstanding_pings": 3, "error_cb": error_cb,
            "name": f"rtnb {self.name}"}
        for key, value in (("user", self._user), ("password", self._password),
                           ("token", self._token), ("tls", self._ssl)):
            if value is not None:
                kwargs[key] = value
        return await self._nats.connect(**kwargs)

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        """Await a nats-py call so that cancelling the reader always stops it.

        nats-py waits with ``asyncio.wait_for``, which on Python 3.11 returns the result instead
        of raising ``CancelledError`` when the cancel and a message arrive together: the
        reader would never stop. The call runs in a task of its own; a cancel ends the wait.
        """
        task = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise

    async def _read(self, stop: asyncio.Event) -> None:
        nc = await self._connect()
        self._nc = nc
        try:
            if self.stream is None and self.durable is None:
                await self._read_core(nc, stop)
            else:
                await self._read_jetstream(nc, stop)
        except asyncio.CancelledError:
            await self._nak_leftovers(nc)  # the run is over: let the next one have them now
            if self._ephemeral is not None:  # would otherwise linger until inactive_threshold
                with contextlib.suppress(Exception):
                    await nc.jetstream().delete_consumer(*self._ephemeral)
            raise
        finally:
            self._nc = None
            with contextlib.suppress(Exception):
                await nc.close()

    async def _read_core(self, nc: Any, stop: asyncio.Event) -> None:
        errors = self._nats.errors
        capacity = self.buffer.capacity
        sub = await nc.subscribe(self.subject, pending_msgs_limit=capacity,
                                 pending_bytes_limit=max(capacity * 4096, 64 * 2 ** 20))
        await nc.flush()
        self._connected()
        while not stop.is_set() and not self._draining:
            try:
                msg = await self._guard(sub.next_msg(timeout=1.0))
            except errors.TimeoutError:
                if nc.is_closed:
                    raise errors.ConnectionClosedError from None
                continue
            self._position += 1
            await self._put(msg.data, self._position)

    async def _consumer(self, js: Any, stream: str, partition: int | None = None) -> str:
        """The durable consumer (created if missing) or a new ephemeral one: its name.

        ``partition``: partition ``p``'s durable consumer ``{durable}-{p}`` of subject
        ``{subject}.{p}``.
        """
        api = self._nats.js.api
        durable = self.durable if partition is None else f"{self.durable}-{partition}"
        if durable is not None:
            try:
                await self._guard(js.consumer_info(stream, durable))
                return durable  # it exists: it keeps its position and settings
            except self._nats.js.errors.NotFoundError:
                pass
        subject = self.subject if partition is None else self.streams[partition]
        config = api.ConsumerConfig(filter_subject=subject)
        start: Deliver = self.deliver
        if self.durable is None and self._last_seq is not None:
            start = self._last_seq + 1  # an ephemeral consumer resumes after what we have
        if start == "new" and self.durable is None:
            info = await self._guard(js.stream_info(stream))  # pin "now" for reconnects
            start = int(info.state.last_seq) + 1
            self._last_seq = start - 1
        if isinstance(start, pd.Timestamp):
            when = start.tz_localize("UTC") if start.tzinfo is None else start
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = when.to_pydatetime()
        elif isinstance(start, int):
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start
        else:
            config.deliver_policy = api.DeliverPolicy(start)
        if self.durable is None:
            config.name = f"rtnb-{uuid.uuid4().hex[:12]}"
            config.ack_policy = api.AckPolicy.NONE
            config.inactive_threshold = 300.0
        else:
            config.name = config.durable_name = durable
            config.ack_policy = api.AckPolicy.EXPLICIT
            config.ack_wait = self.ack_wait_s
            config.max_ack_pending = self.max_ack_pending
        info = await self._guard(js.add_consumer(stream, config=config))
        return str(info.name)

    async def _find_stream(self, js: Any) -> str:
        """The stream read: ``stream``, or the one capturing the subject (every partition's)."""
        if self.stream is not None:
            return self.stream
        found: set[str] = set()
        for subject in self.streams:
            try:
                found.add(str(await self._guard(js.find_stream_name_by_subject(subject))))
            except self._nats.js.errors.NotFoundError:
                msg = (f"source {self.name!r}: no JetStream stream captures subject "
                       f"{subject!r} on {mask_url(self.url)}; create one, or drop "
                       f"`durable`/`stream` for a core NATS subscription")
                raise SourceError(msg, source=self.name) from None
        if len(found) > 1:
            msg = (f"source {self.name!r}: the partitions of {self.subject!r} are in several "
                   f"streams ({sorted(found)}); put them in one (subjects "
                   f"['{self.subject}.*'])")
            raise SourceError(msg, source=self.name)
        return found.pop()

    async def _read_jetstream(self, nc: Any, stop: asyncio.Event) -> None:
        js = nc.jetstream()
        stream = await self._find_stream(js)
        parts: list[int | None] = [None] if self.partitions is None else \
            list(range(self.partitions))
        consumers = [await self._consumer(js, stream, p) for p in parts]
        self._ephemeral = None if self.durable else (stream, consumers[0])
        # Pull requests are ours (not nats-py's fetch): every message the server sends lands
        # in a queue (one per consumer), including late ones, so none is left unseen when
        # the run stops.
        self._pulls = [await _Pull.open(nc) for _ in parts]
        self._short = [False] * len(parts)
        self._floor = 0  # a restarted server may have lost the last acks: trust no old floor
        if self._unacked:
            for subject in self._unacked:
                await nc.publish(subject, ACK)
            await nc.flush()
            self._unacked = []
        if self.acks and self._resumed:  # the restored checkpoint's barrier: acks maybe lost
            for subject in self._resumed:
                await nc.publish(subject, ACK)
            await nc.flush()
            self._skip.update(_sequence(subject) for subject in self._resumed)
            self._resumed = []
        if self.acks and self.defer_acks:
            lows = [await self._nak_in_flight(nc, js, stream, consumer, raise_floor=p is None)
                    for p, consumer in zip(parts, consumers, strict=True)]
            if self.partitions is not None:  # every partition handled up to the lowest floor
                self._raise_floor(min(lows))
        self._connected()
        request = json.dumps({"batch": self.count,
                              "expires": int(self.fetch_wait_s * 1e9)}).encode()

        async def read(index: int) -> None:
            pull = self._pulls[index]
            next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumers[index]}"
            while not stop.is_set():
                if self._draining or (self.partitions is not None and self._ahead(index)):
                    # stopping: pull no more, keep the connection for the acks; or this
                    # partition ran max_drift ahead: the others catch up first
                    await asyncio.sleep(0.02)
                    continue
                await nc.publish(next_subject, request, reply=pull.reply)
                await self._pull(nc, pull, index)

        async def poll() -> None:
            while not stop.is_set():
                await self._poll(js, stream, consumers)
                await asyncio.sleep(1.0)

        readers = [asyncio.ensure_future(read(i)) for i in range(len(parts))]
        readers.append(asyncio.ensure_future(poll()))
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the first reader's error
        finally:
            for task in readers:
                task.cancel()
            for task in readers:
                with contextlib.suppress(BaseException):
                    await task

    async def _pull(self, nc: Any, pull: _Pull, index: int) -> None:
        """Handle the messages of one pull request (until it is filled or expires)."""
        pull.left = self.count
        pull.deadline = _clock.monotonic() + self.fetch_wait_s + 2.0
        inbox = pull.inbox
        while pull.left > 0:
            try:
                async with asyncio.timeout(max(0.0, pull.deadline - _clock.monotonic())):
                    msg = await inbox.get()
            except TimeoutError:
                pull.left = 0
                if nc.is_closed:
                    raise self._nats.errors.ConnectionClosedError from None
                return
            status = (msg.headers or {}).get("Status")
            if status is None:
                pull.left -= 1
                await self._receive(nc, msg, index)
            elif status == "100":  # idle heartbeat
                continue
            elif status == "503":
                raise self._nats.js.errors.ServiceUnavailableError
            elif status == "409":
                pull.left = 0
                why = str(msg.headers.get("Description", ""))
                if "deleted" in why.lower():
                    text = f"the consumer was deleted ({why})"
                    raise ConnectionError(text)  # re-created after the reconnect
                if "push based" in why or "Exceeded MaxRequest" in why:
                    text = (f"source {self.name!r}: the server refused the pull request: "
                            f"{why} (check the consumer's settings, or lower `count`)")
                    raise SourceError(text, source=self.name)
                await asyncio.sleep(0.1)  # e.g. a leadership change: try again shortly
                return
            else:  # 404 no messages, 408 request expired: this request is over
                pull.left = 0
                self._short[index] = True
                if all(self._short):
                    self._drained()
                return

    async def _receive(self, nc: Any, msg: Any, index: int = 0) -> None:
        seq = int(msg.metadata.sequence.stream)
        if self.acks and (seq in self._seen or seq in self._skip or seq <= self._done_floor):
            self.duplicates += 1
            if seq in self._pending:  # waits for its checkpoint: acknowledged with it
                self._pending[seq] = msg.reply
            elif seq not in self._held:  # processed already: acknowledge this delivery
                await nc.publish(msg.reply, ACK)
            return
        self._last_seq = seq if self._last_seq is None else max(self._last_seq, seq)
        if self.acks:
            self._seen.add(seq)
            self._held[seq] = msg.reply
        await self._put(msg.data, seq if self.partitions is None else (index, seq))
        self._short[index] = msg.metadata.num_pending == 0
        if all(self._short) or self._window_blocked():
            self._drained()  # the stream has no more now, or the server waits for acks

    async def _poll(self, js: Any, stream: str, consumers: list[str]) -> None:
        """Lag (messages not delivered yet) and forgetting sequences below the ack floor."""
        lags: dict[str, int] = {}
        floors: list[int] = []
        for subject, consumer in zip(self.streams, consumers, strict=True):
            try:
                info = await self._guard(js.consumer_info(stream, consumer))
            except self._nats.errors.Error:
                return
            if info.num_pending is not None:
                lags[subject] = int(info.num_pending)
            floors.append(int(info.ack_floor.stream_seq) if info.ack_floor else 0)
        if len(lags) == len(consumers):
            self.stats.lag = sum(lags.values())
            if self.partitions is not None:
                self.stats.partition_lag = lags
        if not self.acks:
            return
        # Trim below the floor seen one poll ago: the server has stored that one by now (it
        # writes consumer state within ~100 ms), so a restart cannot send those again.
        # Partitions: every partition's sequences up to the lowest of their floors.
        if self._floor:
            self._seen = {s for s in self._seen if s > self._floor}
        self._floor = min(floors)

    def _partition(self, position: Any) -> int:
        return int(position[0])

    def _window_blocked(self) -> bool:
        return self.acks and self.max_ack_pending is not None and \
            len(self._held) + len(self._pending) >= self.max_ack_pending

    def _defer(self, positions: list[Any]) -> list[Any]:
        """Handled messages wait for a checkpoint: their reply subjects."""
        if not self.acks:
            return []  # nothing to acknowledge (core NATS, an ephemeral consumer)
        replies = []
        above = self._done_above if self._done_above is not None else set()
        floor = self._done_floor
        for position in positions:
            seq = position[1] if isinstance(position, tuple) else position
            reply = self._held.pop(seq, None)
            if reply is not None:
                self._pending[seq] = reply
                replies.append(reply)
                if seq > floor:
                    above.add(seq)
        while floor + 1 in above:  # in place: no copy of the set per batch
            floor += 1
            above.discard(floor)
        self._done_floor, self._done_above = floor, above
        return replies

    def take_acks(self) -> list[Any]:
        """The barrier's reply subjects, and ``("floor", n)``: sequences up to n handled."""
        taken = super().take_acks()
        if self.acks and self._done_floor:
            taken.append(("floor", self._done_floor))
        return taken

    def resume_acks(self, positions: list[Any]) -> None:
        """Acknowledge and skip the barrier's messages, and every sequence to its floor."""
        for p in positions:
            if isinstance(p, tuple | list) and len(p) == 2 and p[0] == "floor":
                self._done_floor = max(self._done_floor, int(p[1]))
        super().resume_acks([p for p in positions if isinstance(p, str)])

    async def _ack(self, positions: list[Any]) -> None:
        if not self.acks or not positions:
            return
        replies: list[str] = []
        for position in positions:
            if isinstance(position, str):  # deferred: a reply subject (maybe of a past run)
                replies.append(position)
                newest = self._pending.pop(_sequence(position), None)
                if newest is not None and newest != position:  # delivered again meanwhile
                    replies.append(newest)
            else:
                seq = position[1] if isinstance(position, tuple) else position
                if seq in self._held:
                    replies.append(self._held.pop(seq))
        nc = self._nc
        if nc is None or nc.is_closed:
            if not self._in_run:  # the run is over: on a connection of our own
                await self._ack_alone(replies)
                return
            self._unacked.extend(replies)  # reconnecting: sent once the connection is back
            if self.defer_acks:
                self._retake([p for p in positions if isinstance(p, str)])
            return
        try:  # no flush: one lost with the connection is redelivered, then skipped and acked
            for reply in replies:
                await nc.publish(reply, ACK)
        except self.retry_on:
            self._unacked.extend(replies)
            if self.defer_acks:
                self._retake([p for p in positions if isinstance(p, str)])

    async def _ack_alone(self, replies: list[str]) -> None:
        """Acknowledge after the run, on a connection of its own (reply subjects outlive one)."""
        if not replies:
            return
        try:
            nc = await self._connect()
            try:
                for reply in replies:
                    await nc.publish(reply, ACK)
                await nc.flush(timeout=5)
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()
        except (*self.retry_on, self._nats.errors.Error) as exc:
            self._retake(replies)
            log.warning("source %r could not acknowledge %d messages (%s: %s); the run "
                        "resuming from the checkpoint acknowledges them", self.name,
                        len(replies), type(exc).__name__, exc)

    def _raise_floor(self, low: int) -> None:
        """Every stream sequence up to ``low`` was handled (acknowledged to the server)."""
        if low > self._done_floor:
            self._done_floor = low
            if self._done_above is not None:
                self._done_above = {s for s in self._done_above if s > low}

    async def _nak_in_flight(self, nc: Any, js: Any, stream: str, consumer: str, *,
                             raise_floor: bool = True) -> int:
        """Ask the server to send again, now, what it delivered that this run does not hold.

        Messages delivered to a process that died (or lost with a cut connection) would
        otherwise come back only after ``ack_wait``, behind newer ones (late events). The
        server takes a ``-NAK`` on the ack subject of the message's stream sequence; their
        delivery sequence only needs to be one the consumer has delivered, so the subjects
        are made from the consumer's state (the ack-subject form every 2.x server accepts).
        Sequences the stream does not hold for this consumer are ignored by the server.
        Returns the consumer's ack floor; ``raise_floor``: every stream sequence up to it
        was handled (one consumer of the stream's subject: not a partition's).
        """
        try:
            info = await self._guard(js.consumer_info(stream, consumer))
        except self._nats.errors.Error:
            return 0
        low = int(info.ack_floor.stream_seq) if info.ack_floor else 0
        if raise_floor:  # acknowledged: handled by this run or an earlier one
            self._raise_floor(low)
        if not info.num_ack_pending or info.delivered is None:
            return low
        high, dseq = int(info.delivered.stream_seq), int(info.delivered.consumer_seq)
        if high - low > NAK_SPAN:  # too many to ask for one by one: they come at ack_wait
            log.warning("source %r: %d messages in flight are redelivered after ack_wait",
                        self.name, int(info.num_ack_pending))
            return low
        prefix = f"$JS.ACK.{stream}.{consumer}.1"
        subjects: list[str] = []
        for seq in range(low + 1, high + 1):
            if seq in self._held or seq in self._pending:
                continue  # acknowledged once a checkpoint holds it
            if seq in self._seen or seq in self._skip or seq <= self._done_floor:
                # handled and acknowledged, but a restarted server lost the ack: it would
                # hold the message (and its max_ack_pending window) until ack_wait
                await nc.publish(f"{prefix}.{seq}.{dseq}.0.0", ACK)
            else:  # in flight at a crash or a cut, not held by this run
                subjects.append(f"{prefix}.{seq}.{dseq}.0.0")
        if not subjects:
            with contextlib.suppress(self._nats.errors.TimeoutError):
                await nc.flush(timeout=2)
            return low
        for subject in subjects[:-1]:
            await nc.publish(subject, NAK)
        # The server handles a consumer's acks in order, apart from pull requests: the answer
        # to the last one says all were handled, so the first pull gets them, first.
        with contextlib.suppress(self._nats.errors.TimeoutError):
            await self._guard(nc.request(subjects[-1], NAK, timeout=2))
        return low

    async def _nak_leftovers(self, nc: Any) -> None:
        """Received but not processed when the run stops: ask the server to redeliver now."""
        if not self.acks or nc.is_closed:
            return
        done = set(self._unacked)
        with contextlib.suppress(Exception):
            for reply in self._unacked:
                await nc.publish(reply, ACK)
            self._unacked = []
            for reply in self._held.values():
                if reply not in done:
                    await nc.publish(reply, NAK)
            for pull in self._pulls:
                inbox = pull.inbox
                while pull.left > 0 or not inbox.empty():
                    # delivered and never looked at, or still on the way for the last request
                    try:
                        async with asyncio.timeout(max(0.0,
                                                       pull.deadline - _clock.monotonic())):
                            msg = await inbox.get()
                    except TimeoutError:
                        break
                    status = (msg.headers or {}).get("Status")
                    if status is None:
                        pull.left -= 1
                        await nc.publish(msg.reply, NAK)
                    elif status != "100":
                        pull.left = 0
            await nc.flush(timeout=2)


class NatsPartitionReader(LoopReader):
    """One partition subject of a partitioned ``NatsSource``, read blocking on a Dask worker.

    Made by ``NatsSource.partition_reader`` and sent to a worker, where :meth:`read`
    opens the connection on first use, on an event loop of the reader's own (nats-py is
    asyncio-only; the loop runs only inside the reader's calls, in the worker's thread, and
    is closed by :meth:`close`). It reads ``subject`` (``{subject}.{p}``) with the durable
    pull consumer ``consumer`` (``{durable}-{p}``, created at ``deliver`` if missing).
    Positions are stream sequences, increasing within the partition. A message read stays
    unacknowledged (its reply subject kept by sequence, so the reader can be pickled and
    moved) until :meth:`ack`, which sends ``+ACK`` as ``msg.ack()`` does. A message the
    server delivers again (``ack_wait`` passed while it waited for a checkpoint) is
    skipped: every sequence is read once per reader.

    On opening (a new reader, or one rebuilt from a checkpoint after its worker died), it
    asks the server to send again at once (``-NAK``) what the consumer delivered and this
    reader does not hold (read by a reader that died): those come first, in order, before
    newer messages, instead of ``ack_wait`` later, so the reader reads exactly the
    unacknowledged messages of its partition in order, as a rebuilt partition needs. That
    assumes the reader is the consumer's only client, as a partition is. The password or
    token travels inside the pickled reader to the worker (Dask's connections; use TLS
    between scheduler and workers when that network is not trusted) and is never shown.

    Examples
    --------
    >>> import pickle
    >>> r = NatsPartitionReader(url="nats://app:s3cret@127.0.0.1:4222", subject="metrics.3",
    ...                         partition=3, stream=None, consumer="dash-3", deliver="all",
    ...                         ack_wait_s=30.0, max_ack_pending=1000, user=None,
    ...                         password=None, token="t0ken", tls=None, owner="nats")
    >>> copy = pickle.loads(pickle.dumps(r))
    >>> copy, "s3cret" in repr(copy) or "t0ken" in repr(copy), copy.order(42)
    (<NatsPartitionReader nats://app:***@127.0.0.1:4222 'metrics.3' consumer 'dash-3'>, False, 42)
    """

    #: How long a reply of the server (a pull's end, an API call) is waited for at most.
    TIMEOUT_S = 10.0

    def __init__(self, *, url: str, subject: str, partition: int, stream: str | None,
                 consumer: str, deliver: Deliver, ack_wait_s: float,
                 max_ack_pending: int | None, user: str | None, password: str | None,
                 token: str | None, tls: TlsOptions | None, owner: str) -> None:
        self.url, self.subject, self.partition = url, subject, partition
        self.stream, self.consumer, self.deliver = stream, consumer, deliver
        self.ack_wait_s, self.max_ack_pending = ack_wait_s, max_ack_pending
        self.owner = owner
        self._user, self._password, self._token, self._tls = user, password, token, tls
        self._replies: dict[int, str] = {}  # sequence -> reply subject: read, not acked
        self._last = 0  # the highest sequence read
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: Any = None
        self._pull: _Pull | None = None

    def __repr__(self) -> str:
        return (f"<NatsPartitionReader {mask_url(self.url)} {self.subject!r} consumer "
                f"{self.consumer!r}>")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_loop=None, _nc=None, _pull=None)  # a connection stays where it is
        return state

    # -- the private loop ------------------------------------------------------------------
    async def _open(self) -> tuple[Any, _Pull]:
        """The connection and the pull inbox (opened, the consumer made, if not yet)."""
        if self._nc is not None and not self._nc.is_closed and self._pull is not None:
            return self._nc, self._pull
        await self._drop()
        nats = require("nats", "nats")
        kwargs: dict[str, Any] = {
            "servers": [self.url], "allow_reconnect": False, "connect_timeout": 5,
            "name": f"rtnb {self.owner} {self.subject}"}
        context = None if self._tls is None else self._tls.context(
            default=self.url.startswith("tls://"), owner=f"nats {self.owner!r}")
        if context is None and self.url.startswith("tls://"):
            context = ssl.create_default_context()
        for key, value in (("user", self._user), ("password", self._password),
                           ("token", self._token), ("tls", context)):
            if value is not None:
                kwargs[key] = value
        try:
            nc = await nats.connect(**kwargs)
        except Exception as exc:
            msg = (f"source {self.owner!r}: could not connect to {mask_url(self.url)} for "
                   f"{self.subject!r}: {type(exc).__name__}: {exc}")
            raise SourceError(msg, source=self.owner) from None
        self._nc = nc
        js = nc.jetstream(timeout=self.TIMEOUT_S)
        if self.stream is None:
            try:
                self.stream = str(await js.find_stream_name_by_subject(self.subject))
            except require("nats.js.errors", "nats").NotFoundError:
                msg = (f"source {self.owner!r}: no JetStream stream captures subject "
                       f"{self.subject!r} on {mask_url(self.url)}")
                raise SourceError(msg, source=self.owner) from None
        await self._ensure_consumer(js)
        self._pull = await _Pull.open(nc)
        await self._resend(js)
        return nc, self._pull

    async def _ensure_consumer(self, js: Any) -> None:
        api = require("nats.js.api", "nats")
        try:
            await js.consumer_info(self.stream, self.consumer)
            return  # it exists: it keeps its position and settings
        except require("nats.js.errors", "nats").NotFoundError:
            pass
        config = api.ConsumerConfig(
            name=self.consumer, durable_name=self.consumer, filter_subject=self.subject,
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending)
        start = self.deliver
        if isinstance(start, pd.Timestamp):
            when = start.tz_localize("UTC") if start.tzinfo is None else start
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = when.to_pydatetime()
        elif isinstance(start, int):
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start
        else:
            config.deliver_policy = api.DeliverPolicy(start)
        await js.add_consumer(self.stream, config=config)

    async def _resend(self, js: Any) -> None:
        """Ask for what the consumer delivered and this reader does not hold, at once.

        Delivered messages this reader read and still holds wait for :meth:`ack`; those it
        read and acknowledged (the server lost the ack) are acknowledged again; the rest
        (delivered to a reader that died, or lost with a connection) are sent again first.
        """
        info = await js.consumer_info(self.stream, self.consumer)
        if not info.num_ack_pending or info.delivered is None:
            return
        low = int(info.ack_floor.stream_seq) if info.ack_floor else 0
        high, dseq = int(info.delivered.stream_seq), int(info.delivered.consumer_seq)
        if high - low > NAK_SPAN:
            log.warning("source %r: %d messages in flight on %r are redelivered after "
                        "ack_wait", self.owner, int(info.num_ack_pending), self.subject)
            return
        nc = self._nc
        prefix = f"$JS.ACK.{self.stream}.{self.consumer}.1"
        last = ""
        for seq in range(low + 1, high + 1):  # the server ignores sequences not pending
            if seq in self._replies:
                continue
            subject = f"{prefix}.{seq}.{dseq}.0.0"
            if seq <= self._last:
                await nc.publish(subject, ACK)
            else:
                if last:
                    await nc.publish(last, NAK)
                last = subject
        if last:  # the reply says the server handled them all: the next pull gets them first
            await nc.request(last, NAK, timeout=self.TIMEOUT_S)
        else:
            await nc.flush(timeout=self.TIMEOUT_S)

    async def _drop(self) -> None:
        nc, self._nc, self._pull = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    # -- the reader protocol ---------------------------------------------------------------
    def read(self, count: int, block_ms: int | None) -> list[tuple[bytes, int]]:
        """Up to ``count`` messages as ``(payload, stream sequence)``; waits up to ``block_ms``.

        ``block_ms=None``: what the server has now, without waiting for more.
        """
        return self._run(self._read(count, block_ms))

    async def _read(self, count: int, block_ms: int | None) -> list[tuple[bytes, int]]:
        nc, pull = await self._open()
        deadline = _clock.monotonic() + (block_ms or 0) / 1000
        while True:
            out = await self._fetch(nc, pull, count)
            if out or block_ms is None or _clock.monotonic() >= deadline:
                return out
            await asyncio.sleep(min(0.05, max(0.0, deadline - _clock.monotonic())))

    async def _fetch(self, nc: Any, pull: _Pull, count: int) -> list[tuple[bytes, int]]:
        """One ``no_wait`` pull request: it ends full, or with a status (404, 408)."""
        request = json.dumps({"batch": count, "no_wait": True}).encode()
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}", request,
                         reply=pull.reply)
        out: list[tuple[bytes, int]] = []
        left = count
        while left > 0:
            try:
                async with asyncio.timeout(self.TIMEOUT_S):
                    msg = await pull.inbox.get()
            except TimeoutError:
                await self._drop()  # what may still come is sent again by the next _resend
                msg = (f"source {self.owner!r}: the server sent no answer to a pull request "
                       f"of {self.subject!r} within {self.TIMEOUT_S:g} s")
                raise SourceError(msg, source=self.owner) from None
            status = (msg.headers or {}).get("Status")
            if status is None:
                left -= 1
                seq = int(msg.metadata.sequence.stream)
                if seq <= self._last:  # delivered again (ack_wait passed): read already
                    if seq not in self._replies:  # acknowledged: the ack was lost
                        await nc.publish(msg.reply, ACK)
                    continue
                self._replies[seq] = msg.reply
                self._last = seq
                out.append((msg.data, seq))
            elif status == "100":
                continue
            elif status in ("404", "408") or (status == "409" and "MaxAckPending" in str(
                    msg.headers.get("Description", ""))):
                break  # no more now (or the consumer waits for acks)
            else:
                why = msg.headers.get("Description", "")
                text = (f"source {self.owner!r}: the server refused a pull request of "
                        f"{self.subject!r} (consumer {self.consumer!r}): {status} {why}")
                raise SourceError(text, source=self.owner)
        return out

    @staticmethod
    def order(position: int) -> int:
        """A position's place in the partition: its stream sequence."""
        return int(position)

    def ack(self, positions: list[int]) -> None:
        """Acknowledge messages read (``+ACK`` on their reply subjects, flushed)."""
        taken = {int(p): self._replies.pop(int(p)) for p in positions
                 if int(p) in self._replies}
        if not taken:
            return
        try:
            self._run(self._ack(list(taken.values())))
        except BaseException:
            self._replies.update(taken)  # acknowledged by the next ack() or after a reopen
            raise

    async def _ack(self, replies: list[str]) -> None:
        nc, _ = await self._open()
        for reply in replies:
            await nc.publish(reply, ACK)
        await nc.flush(timeout=self.TIMEOUT_S)

    def lag(self) -> int | None:
        """Messages of the partition the consumer has not delivered yet (``None``: unknown)."""
        async def pending() -> int | None:
            nc, _ = await self._open()
            info = await nc.jetstream(timeout=self.TIMEOUT_S).consumer_info(
                self.stream, self.consumer)
            return None if info.num_pending is None else int(info.num_pending)

        with contextlib.suppress(Exception):
            return self._run(pending())
        return None


def nats(
    subject: str,
    url: str = "nats://127.0.0.1:4222",
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    stream: str | None = None,
    durable: str | None = None,
    partitions: int | None = None,
    idle_timeout: DurationLike = "5s",
    max_drift: DurationLike | None = None,
    deliver: str | int | pd.Timestamp = "all",
    decoder: DecoderLike = "json",
    user: str | None = None,
    password: str | None = None,
    password_env: str | None = None,
    token: str | None = None,
    token_env: str | None = None,
    tls: bool | ssl.SSLContext | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    count: int = 1_000,
    fetch_wait: DurationLike = "500ms",
    ack_wait: DurationLike = "30s",
    max_ack_pending: int | None = None,
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 100_000,
    policy: Policy | None = None,
    time_unit: TimeUnit = "s",
    max_events: int | None = None,
    max_reconnects: int | None = None,
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "nats",
) -> StreamingFrame:
    """A NATS subject as a StreamingFrame of micro-batches (core NATS or JetStream).

    Parameters
    ----------
    subject
        The subject; wildcards (``metrics.*``, ``metrics.>``) are fine.
    url
        ``nats://host:port`` or ``tls://host:port``; a password in the URL is never shown,
        but prefer ``password_env`` or ``token_env``.
    example, time
        The records' schema and the event-time column (see
        :class:`~rtnb.sources.SourceOptions`).
    stream, durable
        Neither: a core NATS subscription (live-only; a full buffer drops by ``policy``).
        ``durable``: a durable JetStream pull consumer of that name (in ``stream``, or the
        stream that captures ``subject``); messages are acknowledged after processing, and
        the next run resumes where this one stopped. Only ``stream``: an ephemeral consumer
        (no acks; a replay from ``deliver``).
    partitions
        Read the ``N`` subjects ``{subject}.0`` .. ``{subject}.{N-1}`` as one source, each
        with its own durable consumer ``{durable}-{p}`` (``durable`` is required; the
        subjects must be in one stream, e.g. with subjects ``["{subject}.*"]``). A
        producer publishes a key's rows to ``{subject}.{rtnb.partition_of(key, N)}``.
        Each partition keeps its order (its stream sequences) and acknowledges its own
        messages. Rows are aligned in event time across the partitions, as
        :func:`redis_stream` does: a row goes on once every partition has sent rows at
        least as new (or has been silent for ``idle_timeout``). On a Dask cluster
        (``pipeline.run(cluster=...)``) each partition is read on a worker by a
        :class:`NatsPartitionReader`.
    idle_timeout
        With ``partitions``: how long a silent partition holds the others back. After a
        quiet spell of every partition, each has it anew from the first message that comes
        (so the partitions a producer writes a moment later are not taken for idle).
    max_drift
        With ``partitions``: how far (in event time) a partition may run ahead of the
        others before it is no longer pulled until they catch up (``None``: only the
        buffer bounds what the alignment holds back).
    deliver
        Where a new JetStream consumer starts: ``"all"`` (the whole stream), ``"new"``, a
        stream sequence, or a Timestamp (messages stored from then on). An existing durable
        consumer keeps its position and settings.
    user, password, password_env, token, token_env
        Credentials; ``*_env`` names the environment variable holding the secret.
    count, fetch_wait
        Messages per JetStream pull request, and how long a request waits for new ones.
    ack_wait, max_ack_pending
        How long the server waits for an ack before it redelivers (choose more than a
        message can spend in the buffer), and how many unacknowledged messages it lets out
        (default: ``buffer + max_batch + count``, so the buffer is what limits reading).

    Other Parameters
    ----------------
    decoder, time_unit, max_batch, max_delay, buffer, policy, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions`. A full buffer
        of a JetStream source always blocks (the stream keeps the data); core NATS may
        ``"drop_oldest"`` or ``"sample"``.
    tls, ca, cert, key
        TLS (``tls://`` uses it by default): :class:`~rtnb.sources.TlsOptions`.

    Examples
    --------
    >>> import rtnb
    >>> rtnb.sources.nats("metrics.cpu", example={"t": "datetime64[ns]", "cpu": "float64"},
    ...                   time="t", durable="dashboard", deliver="new", token_env="HOME")
    <StreamingFrame 'nats' [t: datetime64[ns], cpu: float64], time='t'>

    Four partitions ``metrics.0`` .. ``metrics.3`` (nothing connects before a run):

    >>> src = rtnb.sources.nats("metrics", example={"t": "datetime64[ns]", "host": "str"},
    ...                         time="t", durable="dash", partitions=4)
    >>> src.source.streams, src.source.partition_reader(3)
    (['metrics.0', 'metrics.1', 'metrics.2', 'metrics.3'], <NatsPartitionReader \
nats://127.0.0.1:4222 'metrics.3' consumer 'dash-3'>)
    """
    schema = as_example(example, f"nats {name!r}")
    if not url.startswith(("nats://", "tls://")):
        msg = f"nats url must start with nats:// or tls://; got {mask_url(url)!r}"
        raise ConfigError(msg)
    for arg, value in (("count", count), ("max_ack_pending", max_ack_pending)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            msg = f"nats `{arg}` must be a positive int; got {value!r}"
            raise ConfigError(msg)
    if partitions is not None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            msg = f"nats {name!r}: partitions must be a positive int; got {partitions!r}"
            raise ConfigError(msg)
        if durable is None:
            msg = (f"nats {name!r}: partitions need JetStream durable consumers (one per "
                   f"partition, '<durable>-<p>'); give durable=...")
            raise ConfigError(msg)
    context = TlsOptions.of(locals()).context(default=url.startswith("tls://"),
                                              owner=f"nats {name!r}")
    source = NatsSource(
        url, subject, stream=stream, durable=durable, deliver=_check_deliver(deliver),
        user=user, password=secret(password, password_env, f"nats {name!r}"),
        token=secret(token, token_env, f"nats {name!r}"), ssl_context=context, count=count,
        fetch_wait_s=to_ns(fetch_wait, name="fetch_wait") / 1e9,
        ack_wait_s=to_ns(ack_wait, name="ack_wait") / 1e9,
        max_ack_pending=max_ack_pending or buffer + max_batch + count, name=name,
        partitions=partitions, example=schema, options=SourceOptions.of(locals()))
    source.tls_options = TlsOptions.of(locals())
    if partitions is not None:
        source.idle_timeout_s = to_ns(idle_timeout, name="idle_timeout") / 1e9
        if max_drift is not None:
            source.max_drift_ns = to_ns(max_drift, name="max_drift")
    return attach(source, time)
