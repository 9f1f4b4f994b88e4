"""``rtnb.sources.mqtt``: MQTT topics, with QoS 1 acknowledged after processing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import struct
import uuid
from typing import Any, Literal
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

__all__ = ["MqttSource", "mqtt"]

log = logging.getLogger(__name__)

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
                 ssl_context: ssl.SSLContext | None, **options: Any) -> None:
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

    def __repr__(self) -> str:
        topics = self.topics[0] if len(self.topics) == 1 else self.topics
        return (f"<MqttSource {self.name!r} {mask_url(self.url)} {topics!r} qos={self.qos} "
                f"client_id={self.client_id!r}>")

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

    def _defer(self, positions: list[Any]) -> list[Any]:
        if self.qos == 0:
            return []
        return [(self._run_id, pos, self._held[pos][1], self._held[pos][2])
                for pos in positions if pos in self._held]

    def _window_blocked(self) -> bool:
        return self.qos > 0 and len(self._held) >= self.max_inflight

    def resume_acks(self, positions: list[Any]) -> None:
        """Skip (and acknowledge) the resent messages of the restored barrier."""
        super().resume_acks(positions)
        self._skip = {}
        for _, _, _, digest in positions:
            self._skip[int(digest)] = self._skip.get(int(digest), 0) + 1

    async def _ack(self, positions: list[Any]) -> None:
        if self.qos == 0 or not positions:
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

    Examples
    --------
    >>> import rtnb
    >>> rtnb.sources.mqtt("sensors/+/temp", example={"t": "datetime64[ns]", "temp": "float64"},
    ...                   time="t", client_id="dash-1", password_env="HOME")
    <StreamingFrame 'mqtt' [t: datetime64[ns], temp: float64], time='t'>
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
    context = TlsOptions.of(locals()).context(default=url_tls, owner=f"mqtt {name!r}")
    source = MqttSource(
        host, port, topics, url=url, qos=qos,
        client_id=client_id or f"rtnb-{name}-{uuid.uuid4().hex[:8]}",
        clean_session=clean_session, protocol=protocol,
        session_expiry_s=int(to_ns(session_expiry, name="session_expiry") // 1_000_000_000),
        max_inflight=max_inflight, keepalive=keepalive, username=username or url_user,
        password=secret(password, password_env, f"mqtt {name!r}") or url_password,
        ssl_context=context, name=name, example=schema, options=SourceOptions.of(locals()))
    return attach(source, time)
