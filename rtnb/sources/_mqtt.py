"""``rtnb.sources.mqtt``: MQTT topics, with QoS 1 acknowledged after processing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import socket
import ssl
import struct
import threading
import time as _clock
import uuid
from collections import Counter, deque
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import pandas as pd

from rtnb._net import mask_url, require, secret
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError, SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._options import DecoderLike, Policy, SourceOptions, TlsOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["MqttPartitionReader", "MqttSource", "mqtt"]

log = logging.getLogger(__name__)

DROPPED = b"$SYS/broker/publish/messages/dropped"  # Mosquitto's count of dropped messages
BARRIER = "$rtnb/ack-barrier"  # never subscribed: UNSUBSCRIBE from it is a no-op round trip
AUTH_FAILED = {4, 5, 134, 135}  # bad user name or password / not authorized (3.1.1 and 5)
DRAIN = 200  # messages taken from aiomqtt's queue between two yields to the loop
_PUBACK = 0x40  # MQTT packet type, in the first byte


class MqttSource(BufferedSource):
    """Reads MQTT topics; with ``qos=1`` every message is acknowledged after processing.

    With ``qos=1`` the client sends PUBACK only once the batch holding the message went
    through the pipeline (paho's manual acks), then a no-op UNSUBSCRIBE whose answer
    confirms (in the background) that the broker has the acks. The broker sends at most
    ``max_inflight`` messages that are not acknowledged yet (MQTT 5 Receive Maximum): that
    is the prefetch, and when the pipeline is slow the broker holds the rest in the client's
    session.

    With ``clean_session=False`` (the default) that session outlives the connection
    (``session_expiry``, MQTT 5): after a reconnect the broker resends what was not
    acknowledged (flagged DUP, with the same packet id) and then what it queued meanwhile.
    A resent message the source holds already is skipped (its ack goes out when the first
    copy is processed); one it processed but whose ack may not have reached the broker is
    recognised by packet id and payload and only acknowledged. Within a run every message
    is therefore processed once, as long as the broker keeps the session: a broker queues
    a bounded number of messages per session (Mosquitto: ``max_queued_messages``, 1000 by
    default) and drops the rest, and a broker restart loses what it had not saved.

    ``qos=0`` is live-only: nothing is acknowledged, and a full buffer drops by ``policy``.

    With checkpoints (``defer_acks``) a handled message is acknowledged only by :meth:`ack`,
    after the checkpoint holding its effects is durable; its position is ``(run id,
    counter, packet id, payload digest)``. Packet ids die with the connection: an ack after
    the run resumes the session on a short connection of its own and acknowledges the
    resent copies of exactly those messages. After a crash the broker resends everything
    not acknowledged (flagged DUP), the last barrier's messages included; the next run
    skips (and acknowledges) a resent message whose payload digest is one of theirs
    (:meth:`resume_acks`), so equal payloads on both sides of the barrier are the one case
    that is at least once. ``max_inflight`` (MQTT 5 Receive Maximum) caps what waits for a
    checkpoint: when it is full the source sets :attr:`window_full` so the runtime
    checkpoints at once (with MQTT 3.1.1 the broker's own limit applies, Mosquitto: 20).
    """

    def resume_kind(self) -> str:
        """A persistent session with qos > 0: ``"broker"``; else ``"live"``."""
        return "broker" if self.qos > 0 and not self.clean_session else "live"

    def __init__(self, host: str, port: int, topics: list[str], *, url: str, qos: int,
                 client_id: str, clean_session: bool, protocol: Literal["5", "3.1.1"],
                 session_expiry_s: int, max_inflight: int, keepalive: int,
                 username: str | None, password: str | None,
                 ssl_context: ssl.SSLContext | None, partitions: int | None = None,
                 **options: Any) -> None:
        self.replayable = qos > 0
        super().__init__(**options)
        self._aiomqtt = require("aiomqtt", "mqtt")
        self._exceptions = require("aiomqtt.exceptions", "mqtt")
        self.retry_on = (OSError, asyncio.TimeoutError, self._aiomqtt.MqttError)
        self.host, self.port, self.topics, self.url = host, port, topics, url
        self.qos, self.client_id, self.clean_session = qos, client_id, clean_session
        self.protocol, self.session_expiry_s = protocol, session_expiry_s
        self.max_inflight, self.keepalive = max_inflight, keepalive
        self._username, self._password = username, password
        self._ssl = ssl_context
        self._client: Any = None
        self._gen = 0  # connection generation: packet ids are only valid on their connection
        self._position = 0
        self._held: dict[int, tuple[int, int, int]] = {}  # position -> (gen, mid, digest)
        self._old: dict[int, int] = {}  # mid -> position: held from an earlier connection
        self._twin: dict[int, tuple[int, int]] = {}  # position -> its resent copy (mid, digest)
        self._old_done: dict[int, int] = {}  # mid -> digest: processed, ack maybe not received
        self._uncertain: dict[int, int] = {}  # mid -> digest: acked, not confirmed yet
        self._dup: dict[int, bool] = {}  # mid -> DUP flag of the message being delivered
        self.duplicates = 0  # messages resent by the broker and skipped (held or processed)
        self.reclaimed = 0  # acks lost with a connection, sent again at the end of the run
        self.settle_timeout = 10.0  # seconds for that
        self._lost = False  # the last connection dropped: its unconfirmed acks may be lost
        self._barriers: set[asyncio.Task[None]] = set()  # confirmations being waited for
        self._run_id = uuid.uuid4().hex[:12]  # deferred positions of other runs are not ours
        self._skip: dict[int, int] = {}  # resume_acks(): payload digest -> count to skip
        #: The TLS options it was built with (a partition reader on a worker needs them).
        self.tls_options: TlsOptions | None = None
        #: With ``partitions=N``: the N topics ``{topic}/0`` .. ``{topic}/{N-1}``, each read
        #: with its own session ``{client_id}-{p}``.
        self.partitions = partitions
        self.streams = list(topics) if partitions is None else \
            [f"{topics[0]}/{p}" for p in range(partitions)]
        self.align_partitions = partitions  # rows aligned in event time across them
        self._readers: list[MqttPartitionReader] | None = None  # partitions, during a run
        self._resume_parts: dict[int, list[Any]] = {}  # resume_acks() by partition
        self._stray: dict[int, list[tuple[bytes, Any]]] = {}  # read by a cancelled task
        self._ack_later: list[Any] = []  # partitions: acks a lost connection kept back

    def __repr__(self) -> str:
        topics = self.topics[0] if len(self.topics) == 1 else self.topics
        parts = f" x{self.partitions} partitions" if self.partitions is not None else ""
        return (f"<MqttSource {self.name!r} {mask_url(self.url)} {topics!r} qos={self.qos} "
                f"client_id={self.client_id!r}{parts}>")

    def partition_reader(self, partition: int) -> MqttPartitionReader:
        """A reader of one partition, to run on a Dask worker (:mod:`rtnb.distributed`).

        It is picklable (its connection opens on first use, where it runs) and reads the
        topic ``{topic}/{partition}`` with the session ``{client_id}-{partition}``, as this
        source does in one process.
        """
        tls = self._reader_tls(partition)
        return self._make_reader(partition, tls, None)

    def _make_reader(self, partition: int, tls: TlsOptions | None,
                context: ssl.SSLContext | None) -> MqttPartitionReader:
        return MqttPartitionReader(
            url=self.url, topic=str(self.streams[partition]), partition=partition,
            client_id=f"{self.client_id}-{partition}", session_expiry_s=self.session_expiry_s,
            max_inflight=self.max_inflight, keepalive=self.keepalive, username=self._username,
            password=self._password, tls=tls, owner=self.name, context=context)

    def _partition(self, position: Any) -> int:
        return int(position[0])

    def _make_client(self, first: bool) -> Any:
        aiomqtt = self._aiomqtt
        kwargs: dict[str, Any] = {
            "identifier": self.client_id, "keepalive": self.keepalive, "timeout": 10,
            "username": self._username, "password": self._password,
            "tls_context": self._ssl,
            # paho writes every PUBACK as its own segment: without TCP_NODELAY, Nagle holds
            # them for the broker's delayed ACK (~40 ms a batch)
            "socket_options": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]}
        if self.protocol == "5":
            packet_types = require("paho.mqtt.packettypes", "mqtt")
            properties = require("paho.mqtt.properties", "mqtt")  # untyped: used as Any
            props = properties.Properties(packet_types.PacketTypes.CONNECT)
            props.ReceiveMaximum = self.max_inflight
            if not self.clean_session:
                props.SessionExpiryInterval = self.session_expiry_s
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, properties=props,
                          clean_start=self.clean_session and first)
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311,
                          clean_session=self.clean_session)
        return aiomqtt.Client(self.host, self.port, **kwargs)

    async def _read(self, stop: asyncio.Event) -> None:
        if self.partitions is not None:
            await self._read_partitions(stop)
            return
        first = self._gen == 0
        client = self._make_client(first)
        paho = client._client  # aiomqtt 2 has no manual acks: paho's client has them
        paho.manual_ack_set(self.qos > 0)
        session: list[bool] = []
        on_connect, on_message = paho.on_connect, paho.on_message

        def connected(c: Any, userdata: Any, flags: Any, *args: Any) -> None:
            session.append(bool(flags.session_present))
            on_connect(c, userdata, flags, *args)

        def received(c: Any, userdata: Any, message: Any) -> None:
            self._dup[message.mid] = bool(message.dup)  # aiomqtt's Message has no DUP flag
            on_message(c, userdata, message)

        paho.on_connect, paho.on_message = connected, received
        try:
            async with client:
                self._lost = True  # until the connection is closed by this side
                self._gen += 1
                present = bool(session and session[0])
                self._resume(present, first)
                if first or not present:
                    await self._subscribe(client)
                self._client = client
                self._connected()
                try:
                    queue = client._queue
                    async for message in client.messages:
                        await self._receive(message)
                        # What has arrived meanwhile, without aiomqtt's task and wait per
                        # message (bench: 0.77x -> 0.89x of the raw client's rate); the next
                        # wait yields to the loop at least every DRAIN messages.
                        for _ in range(min(queue.qsize(), DRAIN)):
                            await self._receive(queue.get_nowait())
                except asyncio.CancelledError:  # the run is over: the last acks first
                    await self._settle()
                    self._lost = not paho.is_connected()
                    raise
            if not stop.is_set():
                msg = "the broker closed the connection"
                raise ConnectionError(msg)
        except self._exceptions.MqttConnectError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            if code in AUTH_FAILED:
                msg = (f"source {self.name!r}: {mask_url(self.url)} refused the connection "
                       f"({exc}); check the user name and password")
                raise SourceError(msg, source=self.name) from exc
            raise
        finally:
            self._client = None

    async def _subscribe(self, client: Any) -> None:
        for topic in self.topics:
            if self.protocol == "5":
                from paho.mqtt.subscribeoptions import SubscribeOptions

                # retain handling 1: retained messages only for a new subscription
                result = await client.subscribe(
                    topic, options=SubscribeOptions(qos=self.qos, retainHandling=1))
            else:
                result = await client.subscribe(topic, qos=self.qos)
            code = getattr(result[0], "value", result[0])
            if code >= 0x80:
                msg = (f"source {self.name!r}: the broker refused the subscription to "
                       f"{topic!r} (reason {result[0]})")
                raise SourceError(msg, source=self.name)

    def _resume(self, session_present: bool, first: bool) -> None:
        """After a reconnect: which held messages the broker will send again."""
        self._twin = {}
        if first or not session_present:  # a new session: nothing will be resent
            self._old, self._old_done = {}, {}
        else:
            self._old = {mid: pos for pos, (_, mid, _) in self._held.items()}
            self._old_done = dict(self._uncertain)
        self._uncertain = {}

    async def _receive(self, message: Any) -> None:
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        if message.qos == 0:
            self._position += 1
            await self._put(payload, self._position)
            return
        mid, digest = int(message.mid), _digest(bytes(payload))
        if self._skip:
            if self._dup.get(mid, False) and self._skip.get(digest, 0) > 0:
                del self._dup[mid]  # the restored barrier's: acknowledged, never emitted
                self._skip[digest] -= 1
                self._client._client.ack(mid, 1)
                self.duplicates += 1
                return
            if not self._dup.get(mid, False):  # resent messages come first: that was all
                self._skip = {}
        if self._dup.pop(mid, False):
            if mid in self._old:  # resent while the first copy waits to be processed
                self._twin[self._old.pop(mid)] = (mid, digest)
                self.duplicates += 1
                return
            if self._old_done.get(mid) == digest:  # processed: its ack was lost
                del self._old_done[mid]
                self._uncertain[mid] = digest
                self._client._client.ack(mid, 1)
                self.duplicates += 1
                return
        else:
            self._old_done.pop(mid, None)  # the broker reused the id: our ack had arrived
        self._position += 1
        self._held[self._position] = (self._gen, mid, digest)
        await self._put(payload, self._position)
        # No early cut when max_inflight messages are held (as AMQP does at its prefetch):
        # with it, a connection cut mid-stream left acknowledgements unsent in one run of
        # three (tests/integration/test_broker_sources.py); batches wait max_delay instead.

    # -- partitions: one MqttPartitionReader per partition, run in threads -----------------
    async def _in_thread(self, call: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, call, *args)

    async def _read_partitions(self, stop: asyncio.Event) -> None:
        """Read every partition topic with its reader (blocking paho calls in threads)."""
        n = int(self.partitions or 0)
        if self._readers is None:
            self._readers = [self._make_reader(p, None, self._ssl) for p in range(n)]
            for p, positions in self._resume_parts.items():
                self._readers[p].ack(positions)  # skipped (and acked) when resent
            self._resume_parts = {}
        readers = self._readers
        for reader in readers:
            await self._in_thread(reader.read, 0, None)  # connect, resume the session
        self._connected()

        async def consume(p: int) -> None:
            reader = readers[p]
            while not stop.is_set():
                items, self._stray[p] = self._stray.get(p, []), []
                if not items:
                    if self._ahead(p):  # max_drift: the others catch up first
                        await asyncio.sleep(0.02)
                        continue
                    future = asyncio.ensure_future(
                        self._in_thread(reader.read, self.max_batch, 20))
                    try:
                        items = await asyncio.shield(future)
                    except asyncio.CancelledError:  # the read goes on: keep what it returns
                        future.add_done_callback(functools.partial(self._keep_stray, p))
                        raise
                for payload, position in items:
                    await self._put(payload, (p, position))
                if not items or self._window_blocked():
                    self._drained()

        tasks = [asyncio.ensure_future(consume(p)) for p in range(n)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the first partition's error
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    def _keep_stray(self, partition: int, future: asyncio.Future[Any]) -> None:
        """What a read returned after its task was cancelled: the next task's first.

        Not once the readers are closed (the source stopped): the broker sends those
        messages again to the next run (they were not acknowledged), which must not also
        find them here.
        """
        if self._readers is not None and not future.cancelled() and \
                future.exception() is None:
            self._stray[partition] = list(future.result())

    async def _ack_partitions(self, positions: list[Any]) -> None:
        by_part: dict[int, list[Any]] = {}
        positions, self._ack_later = self._ack_later + list(positions), []
        for p, position in positions:
            by_part.setdefault(int(p), []).append(position)
        readers = self._readers
        for p, mine in by_part.items():
            if readers is not None:
                try:
                    await self._in_thread(readers[p].ack, mine)
                except _ConnectionLost as exc:  # held by the reader: sent after its reconnect
                    self._ack_later += [(p, position) for position in mine]
                    log.warning("source %r: %s; the acknowledgements go with the next ones",
                                self.name, exc)
                continue
            # after the run: a short connection acknowledges their resent copies
            reader = self._make_reader(p, None, self._ssl)
            try:
                reader.ack(mine)  # known by their payloads: acked when resent
                await self._in_thread(reader.read, len(mine), None)
            except SourceError as exc:
                log.warning("source %r could not resume the session of %r to acknowledge "
                            "%d messages (%s); the run resuming from the checkpoint skips "
                            "them", self.name, reader.topic, len(mine), exc)
            finally:
                await self._in_thread(reader.close)

    def _defer(self, positions: list[Any]) -> list[Any]:
        if self.partitions is not None:
            return list(positions)
        if self.qos == 0:
            return []
        return [(self._run_id, pos, self._held[pos][1], self._held[pos][2])
                for pos in positions if pos in self._held]

    def _window_blocked(self) -> bool:
        if self._readers is not None:
            return any(r.held() >= self.max_inflight for r in self._readers)
        return self.qos > 0 and len(self._held) >= self.max_inflight

    def resume_acks(self, positions: list[Any]) -> None:
        """Skip (and acknowledge) the resent messages of the restored barrier."""
        super().resume_acks(positions)
        self._skip = {}
        if self.partitions is not None:
            self._resume_parts = {}
            for p, position in positions:
                self._resume_parts.setdefault(int(p), []).append(position)
            return
        for _, _, _, digest in positions:
            self._skip[int(digest)] = self._skip.get(int(digest), 0) + 1

    async def _ack(self, positions: list[Any]) -> None:
        if self.qos == 0 or not positions:
            return
        if self.partitions is not None:
            await self._ack_partitions(positions)
            return
        if isinstance(positions[0], tuple):  # deferred: (run id, pos, packet id, digest)
            positions = [pos for run, pos, _, _ in positions if run == self._run_id]
            if not self._in_run:  # the connection is gone: resume the session to ack them
                await self._ack_after_run(positions)
                return
        gen, client = self._gen, self._client
        acks: list[tuple[int, int]] = []
        for pos in positions:
            entry = self._held.pop(pos, None)
            if entry is None:
                continue
            held_gen, mid, digest = entry
            if held_gen == gen:
                acks.append((mid, digest))
            elif pos in self._twin:  # ack the resent copy on this connection
                acks.append(self._twin.pop(pos))
            else:  # processed before the broker resent it: acknowledge the copy on arrival
                if self._old.get(mid) == pos:
                    del self._old[mid]
                self._old_done[mid] = digest
        if not acks:
            return
        self._uncertain.update(acks)  # until the broker confirms them (or a reconnect)
        if client is None:
            return
        _send_pubacks(client._client, [mid for mid, _ in acks])
        # The broker answers UNSUBSCRIBE after it read our acks. The answer queues behind
        # the messages it is sending, so wait for it in the background, not here.
        task = asyncio.ensure_future(self._confirm(client, acks, gen))
        self._barriers.add(task)
        task.add_done_callback(self._barriers.discard)

    async def _confirm(self, client: Any, acks: list[tuple[int, int]], gen: int) -> None:
        with contextlib.suppress(Exception):
            await client.unsubscribe(BARRIER, timeout=60)
            if self._gen == gen:  # after a reconnect they were taken as uncertain already
                for mid, digest in acks:
                    if self._uncertain.get(mid) == digest:
                        del self._uncertain[mid]

    async def _settle(self) -> None:
        """Wait (a few seconds at most) until the broker confirmed the acks sent so far."""
        if self._barriers:
            await asyncio.wait(set(self._barriers), timeout=5)

    async def _finish(self) -> None:
        """Acknowledge the resent copies of processed messages whose acks were lost.

        A connection that drops takes with it the acks it had not delivered; the broker
        then resends those messages on the next connection, where they are recognised and
        acknowledged without being processed again. A run that ends before that resend
        (``max_events`` reached while the reader still worked through what the dropped
        connection had delivered) would leave them in the session, so the next run would
        process them twice. Here a short connection resumes the session, acknowledges the
        resent copies of exactly those messages (packet id and payload) and leaves every
        other message in the session.
        """
        if self.partitions is not None:
            if self._ack_later and self._readers is not None:  # a last try, readers open
                await self._ack_partitions([])
            return
        if self.qos == 0 or self.clean_session:
            return
        at_risk = {**self._uncertain, **self._old_done} if self._lost else dict(self._old_done)
        if not at_risk:
            return
        try:
            async with asyncio.timeout(self.settle_timeout):
                self.reclaimed += await self._reclaim(at_risk)
        except (OSError, TimeoutError, self._aiomqtt.MqttError) as exc:
            log.warning("source %r could not resume its session to acknowledge messages "
                        "already processed (%s: %s); the broker may deliver up to %d of them "
                        "again", self.name, type(exc).__name__, exc, len(at_risk))

    async def _reclaim(self, at_risk: dict[int, int]) -> int:
        client = self._make_client(first=False)
        paho = client._client
        paho.manual_ack_set(True)
        arrived: list[tuple[int, int]] = []

        def received(c: Any, userdata: Any, message: Any) -> None:  # not queued: not processed
            if message.dup and message.qos == 1:
                arrived.append((int(message.mid), _digest(bytes(message.payload))))

        paho.on_message = received
        acked = 0
        async with client:
            # Answered after the broker resent what it had in flight for the session.
            await client.unsubscribe(BARRIER)
            for mid, digest in arrived:
                if at_risk.get(mid) == digest:
                    paho.ack(mid, 1)
                    acked += 1
            if acked:
                await client.unsubscribe(BARRIER)  # answered after the broker read the acks
        self._old_done, self._uncertain, self._lost = {}, {}, False
        return acked

    async def _ack_after_run(self, positions: list[Any]) -> None:
        """Acknowledge handled messages once the run's connection is closed (see _finish)."""
        at_risk = {}
        for pos in positions:
            entry = self._held.pop(pos, None)
            if entry is not None:
                at_risk[entry[1]] = entry[2]
        if not at_risk or self.clean_session:
            return
        try:
            async with asyncio.timeout(self.settle_timeout):
                await self._reclaim(at_risk)
        except (OSError, TimeoutError, self._aiomqtt.MqttError) as exc:
            log.warning("source %r could not resume its session to acknowledge %d messages "
                        "(%s: %s); the run resuming from the checkpoint skips them", self.name,
                        len(at_risk), type(exc).__name__, exc)

    async def _close(self) -> None:
        for task in list(self._barriers):
            task.cancel()
        readers, self._readers = self._readers, None
        self._stray = {}
        for reader in readers or []:  # the sessions stay: what is not acked is kept
            await self._in_thread(reader.close)


def _digest(payload: bytes) -> int:
    """A payload's digest, the same in every process (resume_acks compares across runs)."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "big")


def _send_pubacks(paho: Any, mids: list[int]) -> None:
    """PUBACK every message id in ``mids``, in one socket write.

    paho's ``ack(mid, 1)`` logs, queues and writes each PUBACK on its own (one ``send``
    each; ~14 us per message in the ingestion bench's profile of the raw client). Here the
    same 4-byte packets (type, remaining length 2, packet id: valid in MQTT 3.1.1 and, with
    the success reason omitted, in MQTT 5) go out as one queued write.
    """
    queue = getattr(paho, "_packet_queue", None)
    if queue is None or not mids:  # another paho: one at a time through its public call
        for mid in mids:
            paho.ack(mid, 1)
        return
    blob = b"".join(struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids)
    queue(_PUBACK, blob, 0, 1)


def _host_port(url: str) -> tuple[str, int, str | None, str | None, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        msg = f"mqtt url must be mqtt://host[:port] or mqtts://host[:port]; got {mask_url(url)!r}"
        raise ConfigError(msg)
    tls = parts.scheme == "mqtts"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, parts.port or (8883 if tls else 1883), user, password, tls


def mqtt(
    topic: str | list[str],
    url: str = "mqtt://127.0.0.1:1883",
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    partitions: int | None = None,
    idle_timeout: DurationLike = "5s",
    max_drift: DurationLike | None = None,
    qos: int = 1,
    client_id: str | None = None,
    clean_session: bool = False,
    protocol: Literal["5", "3.1.1"] = "5",
    session_expiry: DurationLike = "1h",
    max_inflight: int = 10_000,
    keepalive: int = 30,
    decoder: DecoderLike = "json",
    username: str | None = None,
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
    name: str = "mqtt",
) -> StreamingFrame:
    """An MQTT topic (or several) as a StreamingFrame of micro-batches.

    Parameters
    ----------
    topic
        A topic filter (``sensors/+/temp``, ``sensors/#``) or a list of them.
    url
        ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (TLS, port 8883 by default); a
        password in the URL is never shown, but prefer ``password_env``.
    example, time
        The records' schema and the event-time column (see
        :class:`~rtnb.sources.SourceOptions`).
    partitions
        Read the ``N`` topics ``{topic}/0`` .. ``{topic}/{N-1}`` as one source, each with a
        persistent session of its own (client id ``{client_id}-{p}``; ``client_id`` is
        required, ``qos=1`` and MQTT 5). A producer publishes a key's rows to
        ``{topic}/{rtnb.partition_of(key, N)}`` with QoS 1. Each topic keeps its order and
        is acknowledged on its own (PUBACK once the rows went through the pipeline, or
        once a checkpoint holds them). Rows are aligned in event time across the
        topics, as :func:`redis_stream` does: a row goes on once every partition has sent
        rows at least as new (or has been silent for ``idle_timeout``). On a Dask cluster
        (``pipeline.run(cluster=...)``) each topic is read on a worker by an
        :class:`MqttPartitionReader`. See "Partitions" below for what the broker must keep.
    idle_timeout
        With ``partitions``: how long a silent partition holds the others back. After a
        quiet spell of every partition, each has it anew from the first message that comes
        (so the partitions a producer writes a moment later are not taken for idle).
    max_drift
        With ``partitions``: how far (in event time) a partition may run ahead of the
        others before it is not read until they catch up (the broker keeps its messages).
    qos
        ``1`` (default): at least once from the broker, acknowledged after processing and
        duplicates skipped within a run. ``0``: at most once, live-only. QoS 2 is refused:
        its receipt (PUBREC) is sent before processing, so it would promise less than 1.
    client_id, clean_session, session_expiry
        The session: with ``clean_session=False`` the broker keeps the subscription and
        the unacknowledged and queued messages between connections (for ``session_expiry``
        after a disconnect, MQTT 5); reuse ``client_id`` to resume it in a later run. By
        default the id is made up once per source (``rtnb-<name>-<random>``).
    protocol
        ``"5"`` (default) or ``"3.1.1"`` (then the broker decides how many messages are in
        flight: Mosquitto allows 20, which limits batches and throughput).
    max_inflight
        MQTT 5 Receive Maximum: messages the broker sends before it waits for acks.
    keepalive
        Seconds between keep-alive pings; a broker that does not answer is a lost
        connection.
    username, password, password_env
        Credentials; ``password_env`` names the environment variable holding the password.

    Other Parameters
    ----------------
    decoder, time_unit, max_batch, max_delay, buffer, policy, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions`. With ``qos=1``
        a full buffer blocks (the broker holds the rest); with ``qos=0`` it may
        ``"drop_oldest"`` or ``"sample"``.
    tls, ca, cert, key
        TLS (``mqtts://`` uses it by default): :class:`~rtnb.sources.TlsOptions`.

    Notes
    -----
    **Partitions: what the broker must keep.** Exactness (nothing lost, nothing twice,
    after a reconnect, a moved or a killed worker) rests on the sessions: a message read
    is acknowledged (PUBACK) only once it is handled, or once a checkpoint holds it, and
    until then the broker keeps it in the partition's session and sends it again (flagged
    DUP, first and in order) to the next connection of that client id, while it queues
    what is published meanwhile. So the broker must

    - accept MQTT 5 with QoS 1 subscriptions, ``clean_start`` false and the session
      expiry asked (``session_expiry``: longer than any outage or restart of a reader);
    - never drop a session's queued messages: Mosquitto queues at most
      ``max_queued_messages`` per session (1000 by default) and drops the rest *silently*,
      so set ``max_queued_messages 0`` (no limit; ``max_queued_bytes`` 0 too); the
      messages waiting for a checkpoint count against MQTT 5 Receive Maximum
      (``max_inflight``), not against that limit, once sent;
    - keep sessions across its own restarts (Mosquitto: ``persistence true``) if a
      restart must not lose them.

    A reader whose broker answers without the session it had (expired, dropped by a
    restart) fails with a :class:`~rtnb.SourceError` saying so, as does a partition
    rebuilt on a cluster that finds no session, and one whose unacknowledged messages do
    not come back. A drop of queued messages is not told to the client: each reader reads
    Mosquitto's count (``$SYS/broker/publish/messages/dropped``, for all clients) when it
    connects and logs a warning naming the partition and the setting when it grew.
    Payloads are what a rebuilt reader knows the messages by: keep the rows in flight in
    one partition distinct (an id or a timestamp per row).

    Examples
    --------
    >>> import rtnb
    >>> rtnb.sources.mqtt("sensors/+/temp", example={"t": "datetime64[ns]", "temp": "float64"},
    ...                   time="t", client_id="dash-1", password_env="HOME")
    <StreamingFrame 'mqtt' [t: datetime64[ns], temp: float64], time='t'>

    Four partition topics ``metrics/0`` .. ``metrics/3`` (nothing connects before a run):

    >>> src = rtnb.sources.mqtt("metrics", partitions=4, client_id="dash", time="t",
    ...                         example={"t": "datetime64[ns]", "host": "str"})
    >>> src.source.streams, src.source.partition_reader(3)
    (['metrics/0', 'metrics/1', 'metrics/2', 'metrics/3'], <MqttPartitionReader \
mqtt://127.0.0.1:1883 'metrics/3' client_id='dash-3'>)
    """
    schema = as_example(example, f"mqtt {name!r}")
    host, port, url_user, url_password, url_tls = _host_port(url)
    topics = [topic] if isinstance(topic, str) else list(topic)
    if not topics or not all(isinstance(t, str) and t for t in topics):
        msg = f"mqtt topic must be a topic filter or a list of them; got {topic!r}"
        raise ConfigError(msg)
    if qos not in (0, 1):
        msg = (f"mqtt qos must be 0 or 1; got {qos!r} (QoS 2 confirms receipt before the "
               f"pipeline ran; with qos=1 rtnb acknowledges after processing and skips the "
               f"duplicates of a run)")
        raise ConfigError(msg)
    if protocol not in ("5", "3.1.1"):
        msg = f"mqtt protocol must be '5' or '3.1.1'; got {protocol!r}"
        raise ConfigError(msg)
    if isinstance(max_inflight, bool) or not isinstance(max_inflight, int) or \
            not 0 < max_inflight <= 65_535:
        msg = f"mqtt `max_inflight` must be an int in 1..65535; got {max_inflight!r}"
        raise ConfigError(msg)
    if partitions is not None:
        _check_partitions(name, partitions, topic, qos=qos, client_id=client_id,
                          clean_session=clean_session, protocol=protocol)
    context = TlsOptions.of(locals()).context(default=url_tls, owner=f"mqtt {name!r}")
    source = MqttSource(
        host, port, topics, url=url, qos=qos,
        client_id=client_id or f"rtnb-{name}-{uuid.uuid4().hex[:8]}",
        clean_session=clean_session, protocol=protocol,
        session_expiry_s=int(to_ns(session_expiry, name="session_expiry") // 1_000_000_000),
        max_inflight=max_inflight, keepalive=keepalive, username=username or url_user,
        password=secret(password, password_env, f"mqtt {name!r}") or url_password,
        ssl_context=context, partitions=partitions, name=name, example=schema,
        options=SourceOptions.of(locals()))
    source.tls_options = TlsOptions.of(locals())
    if partitions is not None:
        source.idle_timeout_s = to_ns(idle_timeout, name="idle_timeout") / 1e9
        if max_drift is not None:
            source.max_drift_ns = to_ns(max_drift, name="max_drift")
    return attach(source, time)


def _check_partitions(name: str, partitions: object, topic: object, *, qos: int,
                      client_id: str | None, clean_session: bool, protocol: str) -> None:
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        msg = f"mqtt {name!r}: partitions must be a positive int; got {partitions!r}"
        raise ConfigError(msg)
    if not isinstance(topic, str) or "+" in topic or "#" in topic:
        msg = (f"mqtt {name!r}: partitions are the topics '<topic>/<p>': give one topic "
               f"name without wildcards; got {topic!r}")
        raise ConfigError(msg)
    if client_id is None or qos != 1 or clean_session or protocol != "5":
        msg = (f"mqtt {name!r}: partitions need persistent MQTT 5 sessions with QoS 1 (one "
               f"per partition, client id '<client_id>-<p>'): give client_id=... with "
               f"qos=1, clean_session=False, protocol='5' (got client_id={client_id!r}, "
               f"qos={qos!r}, clean_session={clean_session!r}, protocol={protocol!r})")
        raise ConfigError(msg)


class MqttPartitionReader:
    """One partition topic of a partitioned ``MqttSource``, read blocking (a Dask worker).

    Made by ``MqttSource.partition_reader`` and sent to a worker, where :meth:`read` opens
    the connection on first use: paho's client driven from the caller's thread (no thread
    or event loop of its own), MQTT 5, QoS 1, with the partition's persistent session
    (client id ``{client_id}-{p}``, ``clean_start`` false, ``session_expiry``) subscribed to
    ``{topic}/{p}``. Acknowledgements are manual: a message read stays unacknowledged
    (no PUBACK) until :meth:`ack` (a checkpoint holds it), which returns once the broker
    has the acks (an UNSUBSCRIBE of a topic never subscribed is answered after them). The
    broker keeps what is not acknowledged in the session and sends at most
    ``max_inflight`` (MQTT 5 Receive Maximum) unacknowledged messages.

    Positions are ``(reader id, number, payload digest)``: the message's place as this
    reader (and the copies Dask makes of it by pickling, which go on with its numbers)
    counts it, and what the message is known by on every delivery. Packet ids die with the
    connection; after a reconnect (a lost connection, or a copy moved to another worker,
    whose pickling shuts the original's socket) the broker resends the unacknowledged
    messages first, flagged DUP and in order: the copy takes back those it read (their new
    packet ids) and does not read them twice. A new reader (a partition rebuilt after its
    worker was killed) reads the session's resent head (what the dead reader had not
    acknowledged) first, in order, and :meth:`order` puts a dead reader's position at the
    place of the same message in that head, or before everything when the message is no
    longer in the session (acknowledged). That is exact when the messages in flight in a
    partition have distinct payloads (rows with an id or a distinct timestamp) and while
    the broker keeps the session whole (see :func:`~rtnb.sources.mqtt`, "Partitions": no
    limit on queued messages, a session expiry longer than any outage). A session the
    broker no longer has, where this reader or a dead one had one, and messages read but
    not resent unacknowledged, are a :class:`~rtnb.SourceError`: they are lost. A rise of
    Mosquitto's count of dropped messages is logged as a warning. The password travels inside the
    pickled reader to the worker (Dask's connections; use TLS between scheduler and
    workers when that network is not trusted) and is never shown.

    Examples
    --------
    >>> import pickle
    >>> r = MqttPartitionReader(url="mqtt://app:s3cret@127.0.0.1:1883", topic="m/3",
    ...                         partition=3, client_id="dash-3", session_expiry_s=3600,
    ...                         max_inflight=10_000, keepalive=30, username="app",
    ...                         password="s3cret", tls=None, owner="mqtt")
    >>> copy = pickle.loads(pickle.dumps(r))
    >>> copy, "s3cret" in repr(copy), copy.order((copy.uid, 42, 7)), copy.order(("x", 7, 7))
    (<MqttPartitionReader mqtt://app:***@127.0.0.1:1883 'm/3' client_id='dash-3'>, False, 42, 0)
    """

    #: How long a reply of the broker is waited for at most.
    TIMEOUT_S = 10.0

    def __init__(self, *, url: str, topic: str, partition: int, client_id: str,
                 session_expiry_s: int, max_inflight: int, keepalive: int,
                 username: str | None, password: str | None, tls: TlsOptions | None,
                 owner: str, context: ssl.SSLContext | None = None) -> None:
        self.url, self.topic, self.partition = url, topic, partition
        self.client_id, self.owner = client_id, owner
        self.session_expiry_s, self.max_inflight = session_expiry_s, max_inflight
        self.keepalive = keepalive
        self.host, self.port, _, _, scheme_tls = _host_port(url)
        self._username, self._password = username, password
        self._tls, self._tls_default = tls, scheme_tls
        self._context = context  # in one process only (an SSLContext does not pickle)
        #: Who numbers the positions (kept by the copies pickling makes).
        self.uid = uuid.uuid4().hex[:12]
        self._count = 0  # the number of the last message read
        self._held: dict[int, int] = {}  # number -> digest: read, not acknowledged
        self._mids: dict[int, int] = {}  # number -> packet id on the current connection
        #: digest -> number of the messages resent at the head of the session when this
        #: reader first opened (a dead reader's unacknowledged ones); None: not opened
        self._head: dict[int, int] | None = None
        #: the broker had no session at the first opening (a rebuilt reader must find one)
        self._fresh = False
        self._had_session = False  # a session was held: losing it loses messages
        self._skip: Counter[int] = Counter()  # digests of resent messages to ack, not read
        self._sent: set[int] = set()  # numbers whose PUBACK went out, not confirmed yet
        self._sys: dict[bytes, bytes] = {}  # $SYS values received (Mosquitto's counters)
        #: The broker's count of dropped messages (Mosquitto's
        #: ``$SYS/broker/publish/messages/dropped``, all clients) at the last opening.
        self.broker_dropped: int | None = None
        self._client: Any = None
        self._inbox: deque[_Delivery] = deque()  # delivered, not read yet
        self._acks: set[int] = set()  # UNSUBACK / SUBACK packet ids received
        self._granted: dict[int, Any] = {}  # SUBACK reason codes by packet id
        self._connack: list[Any] = []
        self._lock = threading.RLock()  # one caller at a time (paho is not thread-safe)
        #: Connections opened so far (a moved copy, a lost connection: one more each).
        self.connects = 0

    def __repr__(self) -> str:
        return (f"<MqttPartitionReader {mask_url(self.url)} {self.topic!r} "
                f"client_id={self.client_id!r}>")

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with a live connection: Dask moves (or spills) this reader and the copy
        # resumes the session on a connection of its own. Shut this one's socket now, so
        # it cannot act on the session any more (the broker then resends the unacked).
        self._shut()
        state = self.__dict__.copy()
        state.update(_client=None, _inbox=deque(), _mids={}, _acks=set(), _granted={},
                     _connack=[], _lock=None, _context=None, _sys={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # -- the connection ----------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException | str, *, lost: bool = False
              ) -> SourceError:
        why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        msg = f"source {self.owner!r}: {what} {self.topic!r} on {mask_url(self.url)}: {why}"
        return (_ConnectionLost if lost else SourceError)(msg, source=self.owner)

    def _shut(self) -> None:
        client = self._client
        sock = None if client is None else client.socket()
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)

    def _drop(self) -> None:
        client, self._client = self._client, None
        self._inbox.clear()  # their packet ids die with the connection: resent on the next
        self._mids = {}
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
            with contextlib.suppress(Exception):
                client.loop_write()
            with contextlib.suppress(Exception):
                sock = client.socket()
                if sock is not None:
                    sock.close()

    def _make(self) -> Any:
        paho = require("paho.mqtt.client", "mqtt")
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5)
        client.manual_ack_set(True)  # PUBACK only in ack(): what is not acked is resent
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        context = self._context
        if context is None and self._tls is not None:
            context = self._tls.context(default=self._tls_default,
                                        owner=f"mqtt {self.owner!r}")
        elif context is None and self._tls_default:
            context = ssl.create_default_context()
        if context is not None:
            client.tls_set_context(context)
        inbox, acks, granted, connack = self._inbox, self._acks, self._granted, self._connack

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            connack.append((flags, reason))

        sys_values = self._sys

        def on_message(c: Any, userdata: Any, message: Any) -> None:
            if message.topic.startswith("$"):
                sys_values[message.topic.encode()] = bytes(message.payload)
                return
            inbox.append(_Delivery(int(message.mid), bool(message.dup), int(message.qos),
                                   bytes(message.payload)))

        def on_ack(c: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
            acks.add(mid)
            granted[mid] = reasons

        client.on_connect, client.on_message = on_connect, on_message
        client.on_subscribe = client.on_unsubscribe = on_ack
        if callable(getattr(client, "_handle_publish", None)) and \
                isinstance(getattr(client, "_in_packet", None), dict):
            client._handle_publish = functools.partial(_lean_publish, client, inbox,
                                                       sys_values)
        return client

    def _pump(self, client: Any, wait_s: float, enough: Any) -> None:
        """Read what has arrived; wait up to ``wait_s`` until ``enough()``."""
        import select

        deadline = _clock.monotonic() + wait_s
        while True:
            while True:  # everything readable now
                sock = client.socket()
                if sock is None:
                    msg = "the connection is closed"
                    raise ConnectionError(msg)
                pending = sock.pending() if hasattr(sock, "pending") else 0
                if not pending and not select.select([sock], [], [], 0)[0]:
                    break
                if client.loop_read() != 0:
                    msg = "the broker closed the connection"
                    raise ConnectionError(msg)
            if client.want_write() and client.loop_write() != 0:
                msg = "the connection broke while writing"
                raise ConnectionError(msg)
            client.loop_misc()  # keep-alive pings
            left = deadline - _clock.monotonic()
            if enough() or left <= 0:
                return
            select.select([client.socket()], [], [], min(left, 0.05))

    def _barrier(self, client: Any) -> None:
        """Returns once the broker handled everything sent before (and resent its head)."""
        rc, mid = client.unsubscribe(BARRIER)
        if rc != 0:
            msg = f"UNSUBSCRIBE not sent (paho error {rc})"
            raise ConnectionError(msg)
        self._pump(client, self.TIMEOUT_S, lambda: mid in self._acks)
        if mid not in self._acks:
            msg = f"no answer from the broker within {self.TIMEOUT_S:g} s"
            raise ConnectionError(msg)
        self._acks.discard(mid)

    def _open(self) -> Any:
        """The connection with the session resumed (held messages taken back)."""
        client = self._client
        if client is not None and client.is_connected():
            return client
        self._drop()
        pp = require("paho.mqtt.properties", "mqtt")
        pt = require("paho.mqtt.packettypes", "mqtt")
        client = self._make()
        props = pp.Properties(pt.PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.max_inflight
        self._connack.clear()
        self.connects += 1
        try:
            client.connect(self.host, self.port, self.keepalive, clean_start=False,
                           properties=props)
            self._pump(client, self.TIMEOUT_S, lambda: bool(self._connack))
        except (OSError, ssl.SSLError) as exc:
            error = self._fail("could not connect to read", exc, lost=True)
            raise error from None
        if not self._connack:
            error = self._fail("could not connect to read", "no CONNACK", lost=True)
            raise error
        flags, reason = self._connack[0]
        if reason.is_failure:
            hint = "; check the user name and password" if \
                getattr(reason, "value", 0) in AUTH_FAILED else ""
            error = self._fail("the broker refused the connection to read",
                               f"{reason}{hint}")
            raise error
        self._client = client
        present = bool(flags.session_present)
        if not present and (self._had_session or self._held):
            self._drop()
            error = self._fail("the broker lost the session of", _LOST_SESSION.format(
                client_id=self.client_id, n=len(self._held)))
            raise error
        try:
            if not present:
                self._subscribe(client)
            self._sys.pop(DROPPED, None)
            client.subscribe(DROPPED.decode(), qos=0)  # retained: here before the barrier
            self._barrier(client)  # the session's resent messages are all in the inbox
            client.unsubscribe(DROPPED.decode())
        except (OSError, ssl.SSLError) as exc:
            self._drop()
            error = self._fail("lost the connection reading", exc, lost=True)
            raise error from None
        if self._head is None:
            self._fresh = not present
        self._check_dropped(present)
        self._had_session = True
        if self._held:  # a moved copy, or a lost connection: take back what it read
            self._take_back()
        elif self._head is None:  # a new reader: what a dead one held comes first
            self._head = {}
            for i, message in enumerate(self._inbox):
                if not message.dup:
                    break
                self._head.setdefault(_digest(message.payload), self._count + i + 1)
        return client

    def _check_dropped(self, resumed: bool) -> None:
        """Say so when the broker's count of dropped messages grew (Mosquitto's ``$SYS``).

        A broker drops what a session queues beyond its limits without telling the client;
        Mosquitto counts them (for all clients, refreshed every ``sys_interval``). A rise
        since this reader last connected, or any drop when it resumes a session it did not
        see before (a partition rebuilt on another worker), may be this partition's
        messages: logged as a warning with the setting that prevents it.
        """
        raw = self._sys.get(DROPPED)
        with contextlib.suppress(ValueError):
            now = None if raw is None else int(raw)
            before = self.broker_dropped
            if now is not None and resumed and now > (before or 0):
                log.warning(
                    "source %r, partition %r (client id %r): the broker reports %d messages "
                    "dropped (all clients) %s; if they were this partition's, they are lost "
                    "(Mosquitto drops what a session queues beyond max_queued_messages / "
                    "max_queued_bytes: set both to 0 for partitions)", self.owner, self.topic,
                    self.client_id, now - (before or 0),
                    "since this reader last connected" if before is not None
                    else "since it started")
            if now is not None:
                self.broker_dropped = now

    def _subscribe(self, client: Any) -> None:
        from paho.mqtt.subscribeoptions import SubscribeOptions

        rc, mid = client.subscribe(self.topic, options=SubscribeOptions(qos=1))
        if rc != 0:
            msg = f"SUBSCRIBE not sent (paho error {rc})"
            raise ConnectionError(msg)
        self._pump(client, self.TIMEOUT_S, lambda: mid in self._acks)
        reasons = self._granted.pop(mid, None)
        self._acks.discard(mid)
        if not reasons or getattr(reasons[0], "value", 0x80) != 1:
            error = self._fail("the broker did not grant QoS 1 on", f"SUBACK {reasons}")
            raise error

    def _take_back(self) -> None:
        """The held messages resent first (DUP) and in order: their new packet ids.

        Those the broker does not resend had been acknowledged (the ack arrived before the
        connection was lost): they are done.
        """
        held = list(self._held.items())
        k = 0
        taken = 0
        gone: list[int] = []  # not resent: acknowledged before the connection was lost
        for message in self._inbox:
            if not message.dup:
                break
            digest = _digest(message.payload)
            at = next((j for j in range(k, len(held)) if held[j][1] == digest), None)
            if at is None:
                break  # delivered to the lost connection, never read: new here
            gone += [number for number, _ in held[k:at]]
            self._mids[held[at][0]] = message.mid
            k = at + 1
            taken += 1
        gone += [number for number, _ in held[k:]]
        lost = [n for n in gone if n not in self._sent]
        if lost:  # never acknowledged, yet not resent: the broker dropped them
            error = self._fail("the broker did not resend", (
                f"{len(lost)} messages read and never acknowledged did not come back with "
                f"the session of client id {self.client_id!r} (they are lost; does the "
                f"broker drop in-flight messages, or was the partition read by another "
                f"client with this id?)"))
            raise error
        for number in gone:
            del self._held[number]
            self._sent.discard(number)
        for _ in range(taken):
            self._inbox.popleft()

    def _call(self, what: str, work: Any) -> Any:
        """``work(client)`` on the open connection; once more after a lost connection."""
        for attempt in (0, 1):
            client = self._open()
            try:
                return work(client)
            except (OSError, ssl.SSLError) as exc:
                self._drop()  # what is held comes back on the next opening
                if attempt:
                    error = self._fail(what, exc, lost=True)
                    raise error from None
        raise AssertionError  # pragma: no cover - the loop returns or raises

    # -- the reader protocol -----------------------------------------------------------------
    def read(self, count: int, block_ms: int | None) -> list[tuple[bytes, Any]]:
        """Up to ``count`` messages as ``(payload, position)``; waits up to ``block_ms``.

        ``block_ms=None``: what the broker has delivered now, without waiting for more;
        else returns as soon as something arrived.
        """
        with self._lock:
            def take(client: Any) -> list[tuple[bytes, Any]]:
                self._pump(client, (block_ms or 0) / 1000, lambda: bool(self._inbox))
                out: list[tuple[bytes, Any]] = []
                inbox, skip = self._inbox, self._skip
                while inbox and len(out) < count:
                    mid, dup, qos, payload = inbox.popleft()
                    digest = _digest(payload)
                    self._count += 1
                    if skip:
                        if dup and skip[digest] > 0:  # acknowledged at a barrier
                            skip[digest] -= 1
                            client.ack(mid, 1)
                            continue
                        if not dup:  # the resent ones come first: that was all
                            skip.clear()
                    if qos:  # a QoS 0 publication arrives as QoS 0: nothing to acknowledge
                        self._held[self._count] = digest
                        self._mids[self._count] = mid
                    out.append((payload, (self.uid, self._count, digest)))
                return out

            result: list[tuple[bytes, Any]] = self._call("lost the connection reading", take)
            return result

    def order(self, position: Any) -> int:
        """A position's place in the partition (a dead reader's: see the class docstring)."""
        uid, number, digest = position
        if uid == self.uid:
            return int(number)
        if self._fresh:
            error = self._fail("found no session of the partition it resumes,",
                               _LOST_SESSION.format(client_id=self.client_id, n="its"))
            raise error
        return (self._head or {}).get(int(digest), 0)

    def ack(self, positions: list[Any]) -> None:
        """Acknowledge messages read; returns once the broker has the acks.

        Positions of another reader (an earlier run's, in one process) are acknowledged
        when their resent copy is read (and not returned).
        """
        with self._lock:
            for uid, _, digest in positions:
                if uid != self.uid:
                    self._skip[int(digest)] += 1
            numbers = sorted(int(n) for uid, n, _ in positions
                             if uid == self.uid and int(n) in self._held)
            if not numbers:
                return

            def send(client: Any) -> None:
                for n in numbers:
                    mid = self._mids.get(n)
                    if mid is not None:  # else acknowledged before a lost connection
                        self._sent.add(n)
                        client.ack(mid, 1)
                self._barrier(client)

            self._call("could not acknowledge messages of", send)
            for n in numbers:
                self._held.pop(n, None)
                self._mids.pop(n, None)
                self._sent.discard(n)

    def held(self) -> int:
        """Messages read and not acknowledged yet."""
        return len(self._held)

    def lag(self) -> int | None:
        """Always ``None``: an MQTT broker does not tell how many messages a session queues."""
        return None

    def close(self) -> None:
        """Close the connection (the session stays; a later read opens a new one).

        The acknowledgements sent so far are confirmed first: a socket closed while the
        broker still sends (its receive buffer not empty) is reset, and a reset may
        discard the acks the broker has not read yet.
        """
        with self._lock:
            client = self._client
            if client is not None and client.is_connected():
                with contextlib.suppress(Exception):
                    self._barrier(client)
            self._drop()


class _ConnectionLost(SourceError, ConnectionError):
    """A partition reader could not reach its broker (a source in one process reconnects)."""


class _Delivery(NamedTuple):
    """A PUBLISH received by a partition reader."""

    mid: int
    dup: bool
    qos: int
    payload: bytes


def _lean_publish(client: Any, inbox: deque[_Delivery], sys_values: dict[bytes, bytes]
                  ) -> int:
    """A partition reader's ``_handle_publish`` (paho's): the packet into ``inbox``.

    paho builds an ``MQTTMessage`` (a lock inside), decodes every MQTT 5 property and logs
    each message: ~0.5 ms a message on this machine, most of a partition reader's time.
    A reader needs the packet id, the DUP and QoS bits and the payload (manual acks: no
    PUBACK is sent here). Installed only where paho has the internals it reads. A broker
    counter (a ``$SYS`` topic) goes to ``sys_values`` instead.
    """
    header = client._in_packet["command"]
    packet = client._in_packet["packet"]
    qos = (header & 0x06) >> 1
    (length,) = struct.unpack_from("!H", packet, 0)
    at = 2 + length
    mid = 0
    if qos:
        (mid,) = struct.unpack_from("!H", packet, at)
        at += 2
    if client._protocol == 5:  # properties: a variable byte integer length, then skipped
        size, shift = 0, 0
        while True:
            byte = packet[at]
            at += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        at += size
    if packet[2:3] == b"$":
        sys_values[bytes(packet[2:2 + length])] = bytes(packet[at:])
        return 0
    inbox.append(_Delivery(mid, bool(header & 0x08), qos, bytes(packet[at:])))
    return 0


_LOST_SESSION = (
    "the broker has no session for client id {client_id!r} any more ({n} messages read and "
    "not acknowledged, and everything published meanwhile, are lost). Partitions need the "
    "broker to keep each session whole: a session_expiry longer than any outage, a broker "
    "that does not drop queued messages (Mosquitto: max_queued_messages 0) and keeps "
    "sessions across restarts (persistence true)")
