"""``rtnb.sources.amqp``: an AMQP 0-9-1 queue (RabbitMQ), acknowledged after processing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import time as _clock
import uuid
from collections import Counter, deque
from typing import Any

import pandas as pd

from rtnb._net import mask_url, require, secret
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._loop import LoopReader
from rtnb.sources._options import DecoderLike, Policy, SourceOptions, TlsOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["AmqpPartitionReader", "AmqpSource", "amqp"]

log = logging.getLogger(__name__)


def _key(body: bytes, message_id: str | None) -> str:
    """What a message is known by across deliveries: its ``message_id``, else a body digest."""
    return message_id or hashlib.blake2b(body, digest_size=16).hexdigest()


def _number(position: Any) -> int:
    """The source's counter in a position: ``n``, or ``(partition, n)`` with partitions."""
    return int(position[1]) if isinstance(position, tuple) else int(position)


class AmqpSource(BufferedSource):
    """Consumes an AMQP queue; acknowledges each batch after processing.

    With ``queue`` the named queue is consumed (declared durable if it does not exist, and
    bound to ``exchange`` when one is given): the broker keeps what is not acknowledged, so
    the source is replayable (a full buffer blocks). Without ``queue`` an exclusive,
    server-named queue bound to ``exchange`` lives as long as the connection: live-only.

    ``prefetch`` (``basic.qos``) caps the messages delivered and not yet acknowledged: that
    is how far the source reads ahead, so a slow pipeline leaves the rest in the queue. A
    batch is acknowledged with one ``basic.ack`` (``multiple``) once it went through the
    pipeline; a ``basic.qos`` round trip then confirms (in the background) that the broker
    has the ack.

    A lost connection makes the broker requeue what was not acknowledged and deliver it
    again (``redelivered``). Delivery tags do not survive the channel, so the source knows
    a message by its ``message_id`` or, without one, by a digest of its body: a redelivered
    message it still holds is skipped (and acknowledged when the first copy is processed),
    one it processed just before the connection broke is only acknowledged. Within a run
    every message is processed once (publishers that set ``message_id`` make this exact;
    without it, two different messages with equal bodies, both redelivered after a lost
    connection, could be taken for one).

    With checkpoints (``defer_acks``) a handled message stays unacknowledged on the live
    channel until :meth:`ack` (after the checkpoint holding its effects is durable); its
    position is ``(run id, counter, message_id or body digest)``. Delivery tags die with the
    connection: after a crash or a stop the broker requeues everything not acknowledged,
    the last barrier's messages included, and the next run skips those
    (:meth:`resume_acks`: a redelivered message whose id is one of theirs is acknowledged,
    not emitted). Exactly once when publishers set ``message_id``; without it, by body
    digest (two equal bodies, one before and one after the barrier, keep their queue
    order, so the right one is skipped). ``prefetch`` caps what waits for a checkpoint:
    when it is full the source sets :attr:`window_full` so the runtime checkpoints at once.

    With ``partitions=N`` it consumes the N queues ``{queue}.0`` .. ``{queue}.{N-1}`` (one
    consumer each, ``prefetch`` each) and aligns their rows in event time (``idle_timeout``,
    ``max_drift``) as :func:`~rtnb.sources.redis_stream` does; acknowledgements are then sent
    one by one, since messages held back by the alignment stay unacknowledged while later
    deliveries of the channel go on. On a Dask cluster each queue is read on a worker by an
    :class:`AmqpPartitionReader` (:meth:`partition_reader`).
    """

    def resume_kind(self) -> str:
        """A named queue keeps what was not acknowledged: ``"broker"``; else ``"live"``."""
        return "broker" if self.queue is not None else "live"

    def __init__(self, url: str, *, queue: str | None, exchange: str | None,
                 routing_key: str, prefetch: int, ssl_context: ssl.SSLContext | None,
                 partitions: int | None = None, **options: Any) -> None:
        self.replayable = queue is not None
        super().__init__(**options)
        self._aio_pika = require("aio_pika", "amqp")
        exc = self._aio_pika.exceptions
        self._exc = exc
        self.retry_on = (OSError, asyncio.TimeoutError, exc.AMQPConnectionError,
                         exc.ChannelClosed, exc.ChannelInvalidStateError)
        self.url, self.queue, self.exchange = url, queue, exchange
        self.routing_key, self.prefetch = routing_key, prefetch
        self._ssl = ssl_context
        #: The TLS options it was built with (a partition reader on a worker needs them).
        self.tls_options: TlsOptions | None = None
        #: With ``partitions=N``: the N queues ``{queue}.0`` .. ``{queue}.{N-1}``.
        self.partitions = partitions
        self.streams = [queue] if partitions is None or queue is None else \
            [f"{queue}.{p}" for p in range(partitions)]
        self.align_partitions = partitions  # rows aligned in event time across them
        self._channel: Any = None  # aio-pika channel of the current connection
        self._gen = 0  # connection generation: delivery tags are only valid on their channel
        self._position = 0
        self._held: dict[int, tuple[int, int, str]] = {}  # position -> (gen, tag, key)
        self._old: dict[str, deque[int]] = {}  # key -> positions held from a lost channel
        self._twin: dict[int, int] = {}  # position -> tag of its redelivered copy
        self._old_done: Counter[str] = Counter()  # processed; the ack may not have arrived
        self._uncertain: Counter[str] = Counter()  # acked on this channel, not confirmed
        self._barriers: set[asyncio.Task[None]] = set()  # confirmations being waited for
        self.duplicates = 0  # redeliveries skipped: held or processed already
        self._run_id = uuid.uuid4().hex[:12]  # deferred positions of other runs are not ours
        self._skip: Counter[str] = Counter()  # resume_acks(): ids acknowledged at the barrier

    def __repr__(self) -> str:
        what = (f" queue {self.queue!r}" if self.queue else "") + \
            (f" exchange {self.exchange!r} {self.routing_key!r}" if self.exchange else "")
        parts = f" x{self.partitions} partitions" if self.partitions is not None else ""
        return f"<AmqpSource {self.name!r} {mask_url(self.url)}{what}{parts}>"

    def partition_reader(self, partition: int) -> AmqpPartitionReader:
        """A reader of one partition, to run on a Dask worker (:mod:`rtnb.distributed`).

        It is picklable (its connection opens on first use, where it runs) and reads the
        queue ``{queue}.{partition}`` as this source does in one process.
        """
        tls = self._reader_tls(partition)
        return AmqpPartitionReader(url=self.url, queue=str(self.streams[partition]),
                                   partition=partition, prefetch=self.prefetch, tls=tls,
                                   owner=self.name)

    def _partition(self, position: Any) -> int:
        return int(position[0])

    async def _read(self, stop: asyncio.Event) -> None:
        exc = self._exc
        try:
            connection = await self._aio_pika.connect(self.url, ssl_context=self._ssl,
                                                      timeout=10)
        except (exc.ProbableAuthenticationError, exc.AuthenticationError) as error:
            msg = (f"source {self.name!r}: {mask_url(self.url)} refused the login ({error});"
                   f" check the user and password")
            raise SourceError(msg, source=self.name) from error
        lag: asyncio.Task[None] | None = None
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            if self.partitions is None:
                queues = [await self._declare(connection, channel)]
            else:
                queues = [await self._declare(connection, channel, str(name))
                          for name in self.streams]
            self._gen += 1
            self._resume()
            self._channel = channel
            self._connected()
            lag = asyncio.ensure_future(self._poll_lag(channel, [q.name for q in queues]))

            async def consume(index: int) -> None:
                async with queues[index].iterator() as messages:
                    async for message in messages:
                        while self.partitions is not None and self._ahead(index) and \
                                not stop.is_set():
                            await asyncio.sleep(0.02)  # max_drift: the others catch up
                        await self._receive(channel, message,
                                            None if self.partitions is None else index)

            readers = [asyncio.ensure_future(consume(i)) for i in range(len(queues))]
            try:
                try:
                    done, _ = await asyncio.wait(readers,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # raises the first consumer's error
                finally:
                    for task in readers:
                        task.cancel()
                    for task in readers:
                        with contextlib.suppress(BaseException):
                            await task
            except asyncio.CancelledError:  # the run is over: the last acks first
                if self._barriers:
                    await asyncio.wait(set(self._barriers), timeout=5)
                raise
            if not stop.is_set():
                msg = "the broker closed the channel"
                raise ConnectionError(msg)
        finally:
            self._channel = None
            if lag is not None:
                lag.cancel()
            with contextlib.suppress(Exception):
                await connection.close()

    async def _declare(self, connection: Any, channel: Any, name: str | None = None) -> Any:
        exc = self._exc
        name = self.queue if name is None else name
        if name is None:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        else:
            probe = await connection.channel()  # a failed passive declare closes its channel
            try:
                await probe.declare_queue(name, passive=True)
                queue = await channel.get_queue(name)
            except exc.ChannelNotFoundEntity:
                queue = await channel.declare_queue(name, durable=True)
            finally:
                with contextlib.suppress(Exception):
                    await probe.close()
        if self.exchange is not None:
            probe = await connection.channel()
            try:
                await probe.get_exchange(self.exchange)
            except exc.ChannelNotFoundEntity:
                msg = (f"source {self.name!r}: exchange {self.exchange!r} does not exist on "
                       f"{mask_url(self.url)}")
                raise SourceError(msg, source=self.name) from None
            finally:
                with contextlib.suppress(Exception):
                    await probe.close()
            await queue.bind(self.exchange, routing_key=self.routing_key)
        return queue

    async def _poll_lag(self, channel: Any, names: list[str]) -> None:
        while True:
            with contextlib.suppress(Exception):
                lags = {}
                for name in names:
                    declared = await channel.declare_queue(name, passive=True)
                    lags[name] = int(declared.declaration_result.message_count)
                self.stats.lag = sum(lags.values())
                if self.partitions is not None:
                    self.stats.partition_lag = lags
            await asyncio.sleep(1.0)

    def _resume(self) -> None:
        """A new channel: what the broker will redeliver is what we held or just acked."""
        self._twin = {}
        self._old = {}
        for pos, (_, _, key) in self._held.items():
            self._old.setdefault(key, deque()).append(pos)
        self._old_done = self._uncertain
        self._uncertain = Counter()

    async def _receive(self, channel: Any, message: Any, partition: int | None = None) -> None:
        body = bytes(message.body)
        key = _key(body, message.message_id)
        tag = int(message.delivery_tag)
        if self._skip:
            if message.redelivered and self._skip[key] > 0:  # the restored barrier's
                self._skip[key] -= 1
                self.duplicates += 1
                underlay = await channel.get_underlay_channel()
                await underlay.basic_ack(tag)
                return
            if not message.redelivered:  # the requeued messages come first: that was all
                self._skip = Counter()
        if message.redelivered:
            held = self._old.get(key)
            if held:  # the first copy waits to be processed: ack this one with it
                self._twin[held.popleft()] = tag
                self.duplicates += 1
                return
            if self._old_done[key] > 0:  # processed before the connection broke
                self._old_done[key] -= 1
                self.duplicates += 1
                underlay = await channel.get_underlay_channel()
                await underlay.basic_ack(tag)
                return
        self._position += 1
        self._held[self._position] = (self._gen, tag, key)
        await self._put(body, self._position if partition is None else
                        (partition, self._position))
        if self._window_blocked():  # the broker sends no more before our acks
            self._drained()

    def _defer(self, positions: list[Any]) -> list[Any]:
        numbers = [_number(pos) for pos in positions]
        return [(self._run_id, n, self._held[n][2]) for n in numbers if n in self._held]

    def _window_blocked(self) -> bool:
        return len(self._held) >= self.prefetch * (self.partitions or 1)

    def resume_acks(self, positions: list[Any]) -> None:
        """Skip (and acknowledge) the redelivered messages of the restored barrier."""
        super().resume_acks(positions)
        self._skip = Counter(str(key) for _, _, key in positions)

    async def _ack(self, positions: list[Any]) -> None:
        if positions and isinstance(positions[0], tuple) and len(positions[0]) == 3:
            # deferred: (run id, pos, key)
            positions = [pos for run, pos, _ in positions if run == self._run_id]
        else:
            positions = [_number(pos) for pos in positions]
        gen, channel = self._gen, self._channel
        tags: list[int] = []
        keys: list[str] = []
        for pos in positions:
            entry = self._held.pop(pos, None)
            if entry is None:
                continue
            held_gen, tag, key = entry
            if held_gen == gen:
                tags.append(tag)
            elif pos in self._twin:
                tags.append(self._twin.pop(pos))
            else:  # its redelivery has not arrived: acknowledge it when it does
                with contextlib.suppress(ValueError):
                    self._old.get(key, deque()).remove(pos)
                self._old_done[key] += 1
                continue
            keys.append(key)
        if not tags:
            return
        self._uncertain.update(keys)  # until the broker confirms them (or a reconnect)
        if channel is None:
            return
        try:
            underlay = await channel.get_underlay_channel()
            if self._twin or self.partitions is not None:
                # a redelivered copy waits for its first copy, or the alignment holds later
                # deliveries back: ack one by one
                for tag in tags:
                    await underlay.basic_ack(tag)
            else:  # every earlier delivery of this channel is acked: one ack for the batch
                await underlay.basic_ack(max(tags), multiple=True)
        except self.retry_on:
            return
        # basic.qos is answered after the broker handled our acks; the answer queues behind
        # the deliveries it is sending, so wait for it in the background, not here.
        task = asyncio.ensure_future(self._confirm(channel, keys, gen))
        self._barriers.add(task)
        task.add_done_callback(self._barriers.discard)

    async def _confirm(self, channel: Any, keys: list[str], gen: int) -> None:
        with contextlib.suppress(Exception):
            await channel.set_qos(prefetch_count=self.prefetch)
            if self._gen == gen:  # after a reconnect they were taken as uncertain already
                self._uncertain.subtract(keys)
                self._uncertain = +self._uncertain  # drop the zeros

    async def _close(self) -> None:
        for task in list(self._barriers):
            task.cancel()


class AmqpPartitionReader(LoopReader):
    """One partition queue of a partitioned ``AmqpSource``, read blocking on a Dask worker.

    Made by ``AmqpSource.partition_reader`` and sent to a worker, where :meth:`read` opens
    the connection on first use, on an event loop of the reader's own (aio-pika is
    asyncio-only; the loop runs only inside the reader's calls, in the worker's thread, and
    is closed by :meth:`close`). It consumes ``queue`` (``{queue}.{p}``) as its only
    consumer (``exclusive``: opening waits until the consumer of a dead or moved reader is
    gone, so the broker has requeued what that one held), with ``prefetch`` deliveries
    ahead. A message read stays unacknowledged until :meth:`ack` (a checkpoint holds it),
    which waits until the broker has the acks.

    Positions are ``(reader id, number, key)``: the message's place as this reader (and the
    copies Dask makes of it by pickling, which go on with its numbers) counts it, and what
    the message is known by on every delivery: its ``message_id``, else a digest of its
    body. Delivery tags die with their channel; a copy moved to another worker (its
    connection is shut when it is pickled, so the broker requeues its messages) gets what
    it read and holds delivered again first, in order, takes their new tags and does not
    read them twice. A new reader (a partition rebuilt after its worker was killed) reads
    the queue's requeued head (what the dead reader held) first, in order, and knows the
    dead reader's positions by their key: :meth:`order` puts one of them at the place of
    the same message in that head, or before everything when the message is no longer in
    the queue (acknowledged). That is exact when the messages of a partition have distinct
    keys (publishers that set ``message_id``, as :func:`rtnb.sinks.to_amqp` does; without
    it two equal bodies in flight together could be taken for one another) and once the
    broker has noticed the dead connection (a killed process: at once; a vanished host:
    after the heartbeat timeout). The password in ``url`` travels inside the pickled
    reader to the worker (Dask's connections; use TLS between scheduler and workers when
    that network is not trusted) and is never shown.

    Examples
    --------
    >>> import pickle
    >>> r = AmqpPartitionReader(url="amqp://app:s3cret@127.0.0.1:5672/", queue="metrics.3",
    ...                         partition=3, prefetch=1000, tls=None, owner="amqp")
    >>> copy = pickle.loads(pickle.dumps(r))
    >>> copy, "s3cret" in repr(copy), copy.order((copy.uid, 42, "k")), copy.order(("x", 7, "k"))
    (<AmqpPartitionReader amqp://app:***@127.0.0.1:5672/ 'metrics.3'>, False, 42, 0)
    """

    #: How long a reply of the broker is waited for at most.
    TIMEOUT_S = 10.0
    #: How long opening waits for the queue's previous consumer (a dead or moved reader).
    EXCLUSIVE_WAIT_S = 60.0

    def __init__(self, *, url: str, queue: str, partition: int, prefetch: int,
                 tls: TlsOptions | None, owner: str) -> None:
        self.url, self.queue, self.partition = url, queue, partition
        self.prefetch, self.owner = prefetch, owner
        self._tls = tls
        #: Who numbers the positions (kept by the copies pickling makes).
        self.uid = uuid.uuid4().hex[:12]
        self._count = 0  # the number of the last message read
        self._held: dict[int, str] = {}  # number -> key: read, not acknowledged
        #: key -> number of the messages redelivered at the head of the queue when this
        #: reader first opened (a dead reader's unacknowledged messages); None: not opened
        self._head: dict[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Any = None
        self._channel: Any = None  # the aiormq channel
        self._transport: Any = None  # the connection's socket transport (shut on pickling)
        self._aio_channel: Any = None  # aio-pika's channel around ``_channel``
        self._inbox: deque[Any] = deque()  # delivered, not read yet
        self._tags: dict[int, int] = {}  # number -> delivery tag on the current channel

    def __repr__(self) -> str:
        return f"<AmqpPartitionReader {mask_url(self.url)} {self.queue!r}>"

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with a live connection: Dask moves (or spills) this reader, and the copy
        # consumes on a connection of its own. The broker requeues what this one holds only
        # once its connection is gone, and the copy's exclusive consumer waits for that:
        # shut the socket now (the loop is not running here; the copy takes over).
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        state = self.__dict__.copy()
        state.update(_loop=None, _connection=None, _channel=None, _transport=None,
                     _aio_channel=None, _inbox=deque(), _tags={})
        return state

    # -- the private loop ------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException) -> SourceError:
        msg = (f"source {self.owner!r}: {what} {self.queue!r} on {mask_url(self.url)}: "
               f"{type(exc).__name__}: {exc}")
        return SourceError(msg, source=self.owner)

    def _live(self) -> bool:
        return self._connection is not None and not self._connection.is_closed and \
            self._channel is not None and not self._channel.is_closed

    async def _open(self) -> Any:
        """The channel, consuming the queue (opened, and the held messages taken back)."""
        if self._live():
            return self._channel
        await self._drop()
        aio_pika = require("aio_pika", "amqp")
        context = None if self._tls is None else self._tls.context(
            owner=f"amqp {self.owner!r}")
        loop = asyncio.get_running_loop()
        known = set(getattr(loop, "_transports", {}))
        try:
            connection = await aio_pika.connect(self.url, ssl_context=context,
                                                timeout=self.TIMEOUT_S)
        except Exception as exc:
            error = self._fail("could not connect for", exc)
            raise error from None
        self._connection = connection
        transports = getattr(loop, "_transports", {})
        self._transport = next((t for fd, t in list(transports.items()) if fd not in known),
                               None)
        await self._consume(aio_pika)
        if self._held:  # a moved copy, or a lost connection: they are delivered again first
            await self._take_back()
        elif self._head is None:  # a new reader: what a dead one held comes first
            self._head = {}
            await self._gather_head()
            for i, message in enumerate(self._inbox):
                if not message.delivery.redelivered:
                    break
                self._head.setdefault(self._message_key(message), self._count + i + 1)
        else:
            self._head = self._head or {}
        return self._channel

    async def _consume(self, aio_pika: Any) -> None:
        """The only consumer of the queue: waits until a previous one is gone."""
        exc = aio_pika.exceptions
        refused = require("aiormq.exceptions", "amqp").ChannelAccessRefused
        deadline = _clock.monotonic() + self.EXCLUSIVE_WAIT_S
        while True:
            channel = await self._connection.channel()
            try:
                await channel.set_qos(prefetch_count=self.prefetch)
                probe = await self._connection.channel()
                try:
                    await probe.declare_queue(self.queue, passive=True)
                except exc.ChannelNotFoundEntity:
                    await channel.declare_queue(self.queue, durable=True)
                finally:
                    with contextlib.suppress(Exception):
                        await probe.close()
                underlay = await channel.get_underlay_channel()
                await underlay.basic_consume(self.queue, self._deliver, exclusive=True)
                self._channel = underlay
                self._aio_channel = channel
                return
            except refused:  # the previous reader's consumer is still there
                with contextlib.suppress(Exception):
                    await channel.close()
                if _clock.monotonic() > deadline:
                    msg = (f"source {self.owner!r}: queue {self.queue!r} still has another "
                           f"consumer after {self.EXCLUSIVE_WAIT_S:g} s; a partition is "
                           f"read by one reader only")
                    raise SourceError(msg, source=self.owner) from None
                await asyncio.sleep(0.05)
            except SourceError:
                raise
            except Exception as error:
                failure = self._fail("could not consume", error)
                raise failure from None

    async def _deliver(self, message: Any) -> None:
        self._inbox.append(message)

    @staticmethod
    def _message_key(message: Any) -> str:
        return _key(bytes(message.body), message.header.properties.message_id)

    async def _settle(self) -> None:
        """Let the deliveries the broker sent before its last reply reach the inbox."""
        for _ in range(5):
            await asyncio.sleep(0)

    async def _gather_head(self) -> None:
        """Take delivery of the queue's redelivered head (up to ``prefetch`` messages)."""
        deadline = _clock.monotonic() + self.TIMEOUT_S
        while _clock.monotonic() < deadline:
            if len(self._inbox) >= self.prefetch or any(
                    not m.delivery.redelivered for m in self._inbox):
                return
            declared = await self._channel.queue_declare(self.queue, passive=True)
            # basic.qos is answered after the deliveries the broker sent before it
            await self._channel.basic_qos(prefetch_count=self.prefetch)
            await self._settle()
            if not declared.message_count:
                return  # everything in the queue has been delivered to this reader
            await asyncio.sleep(0.005)
        msg = (f"source {self.owner!r}: the head of queue {self.queue!r} did not arrive "
               f"within {self.TIMEOUT_S:g} s")
        raise SourceError(msg, source=self.owner)

    async def _take_back(self) -> None:
        """The held messages, delivered again first and in order: their new tags."""
        deadline = _clock.monotonic() + self.TIMEOUT_S
        for number, key in list(self._held.items()):
            while not self._inbox:
                if _clock.monotonic() > deadline:
                    msg = (f"source {self.owner!r}: {len(self._held)} messages read from "
                           f"{self.queue!r} did not come back after the reconnect within "
                           f"{self.TIMEOUT_S:g} s")
                    raise SourceError(msg, source=self.owner)
                await asyncio.sleep(0.005)
            message = self._inbox.popleft()
            if self._message_key(message) != key or not message.delivery.redelivered:
                msg = (f"source {self.owner!r}: queue {self.queue!r} delivered another "
                       f"message where message {number} read before was expected (was the "
                       f"queue read by someone else?)")
                raise SourceError(msg, source=self.owner)
            self._tags[number] = int(message.delivery.delivery_tag)

    async def _drop(self) -> None:
        connection = self._connection
        self._connection = self._channel = self._transport = self._aio_channel = None
        self._inbox.clear()  # their tags die with the channel: the broker requeues them
        self._tags = {}
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self.TIMEOUT_S)

    # -- the reader protocol ---------------------------------------------------------------
    def read(self, count: int, block_ms: int | None) -> list[tuple[bytes, Any]]:
        """Up to ``count`` messages as ``(payload, position)``; waits up to ``block_ms``.

        ``block_ms=None``: what the broker has delivered now, without waiting for more.
        """
        return self._run(self._read(count, block_ms))

    async def _read(self, count: int, block_ms: int | None) -> list[tuple[bytes, Any]]:
        channel = await self._open()
        deadline = _clock.monotonic() + (block_ms or 20) / 1000
        while len(self._inbox) < count and \
                len(self._inbox) + len(self._held) < self.prefetch:
            declared = await channel.queue_declare(self.queue, passive=True)
            # basic.qos is answered after the deliveries the broker sent before it
            await channel.basic_qos(prefetch_count=self.prefetch)
            await self._settle()
            if _clock.monotonic() >= deadline or (
                    not declared.message_count and (self._inbox or block_ms is None)):
                break  # everything the queue had is here (or the time is up)
            await asyncio.sleep(0.002)
        out: list[tuple[bytes, Any]] = []
        inbox = self._inbox
        while inbox and len(out) < count:
            message = inbox.popleft()
            body = bytes(message.body)
            key = _key(body, message.header.properties.message_id)
            self._count += 1
            self._held[self._count] = key
            self._tags[self._count] = int(message.delivery.delivery_tag)
            out.append((body, (self.uid, self._count, key)))
        return out

    def order(self, position: Any) -> int:
        """A position's place in the partition (a dead reader's: see the class docstring)."""
        uid, number, key = position
        if uid == self.uid:
            return int(number)
        return (self._head or {}).get(key, 0)

    def ack(self, positions: list[Any]) -> None:
        """Acknowledge messages read; returns once the broker has the acks."""
        numbers = sorted(int(n) for uid, n, _ in positions
                         if uid == self.uid and int(n) in self._held)
        if numbers:
            self._run(self._ack(numbers))

    async def _ack(self, numbers: list[int]) -> None:
        try:
            channel = await self._open()
            tags = sorted(self._tags[n] for n in numbers)
            taken = set(numbers)
            top = tags[-1]
            if all(n in taken for n, tag in self._tags.items() if tag <= top):
                await channel.basic_ack(top, multiple=True)
            else:
                for tag in tags:
                    await channel.basic_ack(tag)
            # answered once the broker handled the acks before it
            await asyncio.wait_for(channel.basic_qos(prefetch_count=self.prefetch),
                                   self.TIMEOUT_S)
        except SourceError:
            raise
        except Exception as exc:
            await self._drop()  # the held ones come back on the next opening
            error = self._fail("could not acknowledge messages of", exc)
            raise error from None
        for n in numbers:
            self._held.pop(n, None)
            self._tags.pop(n, None)

    def lag(self) -> int | None:
        """Messages of the queue not read yet (``None``: unknown)."""
        async def waiting() -> int:
            channel = await self._open()
            declared = await channel.queue_declare(self.queue, passive=True)
            return int(declared.message_count) + len(self._inbox)

        with contextlib.suppress(Exception):
            return self._run(waiting())
        return None


def amqp(
    url: str = "amqp://guest@127.0.0.1:5672/",
    *,
    queue: str | None = None,
    exchange: str | None = None,
    routing_key: str = "#",
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    partitions: int | None = None,
    idle_timeout: DurationLike = "5s",
    max_drift: DurationLike | None = None,
    prefetch: int = 1_000,
    decoder: DecoderLike = "json",
    password: str | None = None,
    password_env: str | None = None,
    tls: bool | ssl.SSLContext | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 100_000,
    policy: Policy | None = None,
    time_unit: TimeUnit = "s",
    max_events: int | None = None,
    max_reconnects: int | None = None,
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "amqp",
) -> StreamingFrame:
    """An AMQP 0-9-1 queue (RabbitMQ) as a StreamingFrame of micro-batches.

    Parameters
    ----------
    url
        ``amqp://user@host:port/vhost`` or ``amqps://`` (TLS); a password in the URL is
        never shown, but prefer ``password_env``.
    queue
        The queue to consume (declared durable if missing): what is not acknowledged stays
        in it. ``None``: an exclusive queue of this connection bound to ``exchange``
        (live-only: messages published while disconnected are not kept).
    exchange, routing_key
        Bind the queue to this existing exchange with this routing key (``#``: everything
        on a topic exchange).
    example, time
        The records' schema and the event-time column (see
        :class:`~rtnb.sources.SourceOptions`).
    partitions
        Read the ``N`` queues ``{queue}.0`` .. ``{queue}.{N-1}`` (declared durable if
        missing) as one source. A producer publishes a key's rows to the queue
        ``{queue}.{rtnb.partition_of(key, N)}`` (the default exchange routes by queue
        name), with a distinct ``message_id`` per message (what a reader on a Dask worker
        knows a message by after a crash; :func:`rtnb.sinks.to_amqp` sets one). Each queue
        keeps its order and is acknowledged on its own. Rows are aligned in event time
        across the queues, as :func:`redis_stream` does: a row goes on once every
        partition has sent rows at least as new (or has been silent for
        ``idle_timeout``). On a Dask cluster (``pipeline.run(cluster=...)``) each queue is
        read on a worker by an :class:`AmqpPartitionReader`, its only consumer.
    idle_timeout
        With ``partitions``: how long a silent partition holds the others back. After a
        quiet spell of every partition, each has it anew from the first message that comes
        (so the partitions a producer writes a moment later are not taken for idle).
    max_drift
        With ``partitions``: how far (in event time) a partition may run ahead of the
        others before its deliveries wait until they catch up (``None``: only the buffer
        bounds what the alignment holds back; ``prefetch`` bounds what waits per queue).
    prefetch
        ``basic.qos`` prefetch count: messages delivered ahead of the acknowledgements (per
        queue with ``partitions``). On a cluster, what a partition reads between two
        checkpoints waits for its acknowledgement: choose it above a partition's messages
        per ``checkpoint_every``, or reading pauses until the next checkpoint.
    password, password_env
        The password (else the URL's); ``password_env`` names the environment variable.

    Other Parameters
    ----------------
    decoder, time_unit, max_batch, max_delay, buffer, policy, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions` (``prefetch``
        keeps the buffer below ``buffer``). A named queue always blocks; the live exclusive
        queue may ``"drop_oldest"`` or ``"sample"``.
    tls, ca, cert, key
        TLS for ``amqps://``: :class:`~rtnb.sources.TlsOptions`.

    Examples
    --------
    >>> import rtnb
    >>> rtnb.sources.amqp(queue="metrics", example={"t": "datetime64[ns]", "cpu": "float64"},
    ...                   time="t", password_env="HOME")
    <StreamingFrame 'amqp' [t: datetime64[ns], cpu: float64], time='t'>

    Four partition queues ``metrics.0`` .. ``metrics.3`` (nothing connects before a run):

    >>> src = rtnb.sources.amqp(queue="metrics", partitions=4, time="t",
    ...                         example={"t": "datetime64[ns]", "host": "str"})
    >>> src.source.streams, src.source.partition_reader(3)
    (['metrics.0', 'metrics.1', 'metrics.2', 'metrics.3'], <AmqpPartitionReader \
amqp://guest@127.0.0.1:5672/ 'metrics.3'>)
    """
    schema = as_example(example, f"amqp {name!r}")
    if not url.startswith(("amqp://", "amqps://")):
        msg = f"amqp url must start with amqp:// or amqps://; got {mask_url(url)!r}"
        raise ConfigError(msg)
    if queue is None and exchange is None:
        msg = (f"amqp {name!r} needs a `queue` to consume, or an `exchange` to bind an "
               f"exclusive queue to")
        raise ConfigError(msg)
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or \
            not 0 < prefetch <= 65_535:
        msg = f"amqp `prefetch` must be an int in 1..65535; got {prefetch!r}"
        raise ConfigError(msg)
    if partitions is not None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            msg = f"amqp {name!r}: partitions must be a positive int; got {partitions!r}"
            raise ConfigError(msg)
        if queue is None or exchange is not None:
            msg = (f"amqp {name!r}: partitions are the queues '<queue>.<p>' (producers "
                   f"publish to them by name): give queue=... and no exchange")
            raise ConfigError(msg)
    pw = secret(password, password_env, f"amqp {name!r}")
    if pw is not None:
        from yarl import URL

        url = str(URL(url).with_password(pw))
    source = AmqpSource(
        url, queue=queue, exchange=exchange, routing_key=routing_key, prefetch=prefetch,
        ssl_context=TlsOptions.of(locals()).context(owner=f"amqp {name!r}"), name=name,
        partitions=partitions, example=schema,
        options=SourceOptions.of(locals()))
    source.tls_options = TlsOptions.of(locals())
    if partitions is not None:
        source.idle_timeout_s = to_ns(idle_timeout, name="idle_timeout") / 1e9
        if max_drift is not None:
            source.max_drift_ns = to_ns(max_drift, name="max_drift")
    return attach(source, time)
