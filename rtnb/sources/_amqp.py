"""``rtnb.sources.amqp``: an AMQP 0-9-1 queue (RabbitMQ), acknowledged after processing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import uuid
from collections import Counter, deque
from typing import Any

import pandas as pd

from rtnb._net import mask_url, require, secret
from rtnb._time import DurationLike
from rtnb.errors import ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._options import DecoderLike, Policy, SourceOptions, TlsOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["AmqpSource", "amqp"]


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
    """

    def resume_kind(self) -> str:
        """A named queue keeps what was not acknowledged: ``"broker"``; else ``"live"``."""
        return "broker" if self.queue is not None else "live"

    def __init__(self, url: str, *, queue: str | None, exchange: str | None,
                 routing_key: str, prefetch: int, ssl_context: ssl.SSLContext | None,
                 **options: Any) -> None:
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
        return f"<AmqpSource {self.name!r} {mask_url(self.url)}{what}>"

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
            queue = await self._declare(connection, channel)
            self._gen += 1
            self._resume()
            self._channel = channel
            self._connected()
            lag = asyncio.ensure_future(self._poll_lag(channel, queue.name))
            try:
                async with queue.iterator() as messages:
                    async for message in messages:
                        await self._receive(channel, message)
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

    async def _declare(self, connection: Any, channel: Any) -> Any:
        exc = self._exc
        if self.queue is None:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        else:
            probe = await connection.channel()  # a failed passive declare closes its channel
            try:
                await probe.declare_queue(self.queue, passive=True)
                queue = await channel.get_queue(self.queue)
            except exc.ChannelNotFoundEntity:
                queue = await channel.declare_queue(self.queue, durable=True)
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

    async def _poll_lag(self, channel: Any, name: str) -> None:
        while True:
            with contextlib.suppress(Exception):
                declared = await channel.declare_queue(name, passive=True)
                self.stats.lag = int(declared.declaration_result.message_count)
            await asyncio.sleep(1.0)

    def _resume(self) -> None:
        """A new channel: what the broker will redeliver is what we held or just acked."""
        self._twin = {}
        self._old = {}
        for pos, (_, _, key) in self._held.items():
            self._old.setdefault(key, deque()).append(pos)
        self._old_done = self._uncertain
        self._uncertain = Counter()

    async def _receive(self, channel: Any, message: Any) -> None:
        body = bytes(message.body)
        key = message.message_id or hashlib.blake2b(body, digest_size=16).hexdigest()
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
        await self._put(body, self._position)
        if len(self._held) >= self.prefetch:  # the broker sends no more before our acks
            self._drained()

    def _defer(self, positions: list[Any]) -> list[Any]:
        return [(self._run_id, pos, self._held[pos][2]) for pos in positions
                if pos in self._held]

    def _window_blocked(self) -> bool:
        return len(self._held) >= self.prefetch

    def resume_acks(self, positions: list[Any]) -> None:
        """Skip (and acknowledge) the redelivered messages of the restored barrier."""
        super().resume_acks(positions)
        self._skip = Counter(str(key) for _, _, key in positions)

    async def _ack(self, positions: list[Any]) -> None:
        if positions and isinstance(positions[0], tuple):  # deferred: (run id, pos, key)
            positions = [pos for run, pos, _ in positions if run == self._run_id]
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
            if self._twin:  # a redelivered copy waits for its first copy: ack one by one
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


def amqp(
    url: str = "amqp://guest@127.0.0.1:5672/",
    *,
    queue: str | None = None,
    exchange: str | None = None,
    routing_key: str = "#",
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
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
    prefetch
        ``basic.qos`` prefetch count: messages delivered ahead of the acknowledgements.
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
    pw = secret(password, password_env, f"amqp {name!r}")
    if pw is not None:
        from yarl import URL

        url = str(URL(url).with_password(pw))
    source = AmqpSource(
        url, queue=queue, exchange=exchange, routing_key=routing_key, prefetch=prefetch,
        ssl_context=TlsOptions.of(locals()).context(owner=f"amqp {name!r}"), name=name,
        example=schema,
        options=SourceOptions.of(locals()))
    return attach(source, time)
