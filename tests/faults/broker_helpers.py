"""Brokers for the fault suite: publishing, probing, private servers, a cuttable proxy, a
slow webhook receiver.

The shared brokers (NATS JetStream on 4222, Mosquitto on 1883, RabbitMQ on 5672, Redis on
6379) are only published to and probed, each test on a stream/subject/queue/session of its
own. Broker kills use :class:`PrivateBroker`: a ``redis-server`` or ``nats-server`` this
module starts on a free port with its own data directory, and SIGKILLs and restarts on the
same port and directory. :class:`Proxy` is a TCP forwarder on 127.0.0.1 (threads: the test
process has no event loop) whose connections can be cut or stalled. :class:`Receiver` is an
HTTP server that answers slowly and records every request's ``Idempotency-Key`` and rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd

NATS_URL = "nats://127.0.0.1:4222"
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: The exported scripts read the AMQP password from here (never written into a script).
AMQP_PASSWORD_ENV = "RTNB_FAULTS_AMQP_PASSWORD"


def payloads(events: pd.DataFrame) -> list[bytes]:
    """One JSON message per event (``timestamp`` as ISO text, ``key``, ``v``)."""
    stamps = events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return [json.dumps({"timestamp": t, "key": k, "v": v}).encode()
            for t, k, v in zip(stamps, events["key"], events["v"], strict=True)]


def with_flush(events: pd.DataFrame, window: str) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The events and one flush event per key a minute after them (a live source never
    ends: the flush closes every window of the data); returns the flush time too."""
    flush_at = events["timestamp"].max().ceil(window) + pd.Timedelta("60s")
    flush = pd.DataFrame({"timestamp": flush_at, "key": sorted(events["key"].unique()),
                          "v": 0.0})
    return pd.concat([events, flush], ignore_index=True), flush_at


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(cond: Callable[[], bool], timeout: float, what: str,
               every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            msg = f"not reached in {timeout} s: {what}"
            raise AssertionError(msg)
        time.sleep(every)


# -- NATS JetStream ----------------------------------------------------------------------
async def nats_create(url: str, stream: str, subject: str, messages: Sequence[bytes]) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        for i in range(0, len(messages), 500):
            await asyncio.gather(*(js.publish(subject, m) for m in messages[i:i + 500]))
    finally:
        await nc.close()


async def nats_delete(url: str, stream: str) -> None:
    import nats

    with contextlib.suppress(Exception):
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()


async def nats_consumer(url: str, stream: str, durable: str) -> dict[str, int] | None:
    """What the durable holds: ``pending`` (not delivered yet), ``unacked``, ``floor``."""
    import nats

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        try:
            info = await nc.jetstream().consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            return None
        return {"pending": int(info.num_pending or 0),
                "unacked": int(info.num_ack_pending or 0),
                "floor": int(info.ack_floor.stream_seq) if info.ack_floor else 0}
    finally:
        await nc.close()


# -- MQTT ------------------------------------------------------------------------------------
def _mqtt_props(expiry: int) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    return props


async def mqtt_session(client_id: str, topic: str, *, port: int = MQTT_PORT) -> None:
    """Create the persistent session (subscribed, qos 1) that the script will resume."""
    import aiomqtt

    async with aiomqtt.Client(MQTT_HOST, port, identifier=client_id, clean_start=False,
                              protocol=aiomqtt.ProtocolVersion.V5,
                              properties=_mqtt_props(3600)) as client:
        await client.subscribe(topic, qos=1)


async def mqtt_publish(topic: str, messages: Sequence[bytes], *, port: int = MQTT_PORT) -> None:
    import aiomqtt

    async with aiomqtt.Client(MQTT_HOST, port, max_inflight_messages=100) as client:
        client.pending_calls_threshold = len(messages) + 1
        for i in range(0, len(messages), 100):
            await asyncio.gather(*(client.publish(topic, m, qos=1)
                                   for m in messages[i:i + 100]))


async def mqtt_left(client_id: str, *, port: int = MQTT_PORT) -> int:
    """What the broker still holds for the session (delivered to us now); the session ends."""
    import aiomqtt

    n = 0
    async with aiomqtt.Client(MQTT_HOST, port, identifier=client_id, clean_start=False,
                              protocol=aiomqtt.ProtocolVersion.V5,
                              properties=_mqtt_props(0)) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for _ in client.messages:
                    n += 1
    return n


# -- AMQP ------------------------------------------------------------------------------------
async def amqp_create(queue: str, messages: Sequence[bytes]) -> None:
    """A durable queue holding ``messages`` (persistent, confirmed, ``message_id`` m<i>)."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        for i in range(0, len(messages), 500):
            await asyncio.gather(*(channel.default_exchange.publish(aio_pika.Message(
                m, message_id=f"m{i + j}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                queue) for j, m in enumerate(messages[i:i + 500])))


async def amqp_count(queue: str) -> int:
    """Messages ready in the queue (with no consumer: everything not acknowledged)."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count)


async def amqp_delete(queue: str) -> None:
    import aio_pika

    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)


# -- private brokers -------------------------------------------------------------------------
class PrivateBroker:
    """A broker process of this test: its own free port and data directory.

    ``kill()`` is kill -9; ``start()`` starts it again on the same port and directory.
    """

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    @property
    def url(self) -> str:
        return (f"redis://127.0.0.1:{self.port}/0" if self.kind == "redis"
                else f"nats://127.0.0.1:{self.port}")

    def _command(self) -> list[str]:
        if self.kind == "redis":
            return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "yes", "--dir", str(self.folder)]
        return ["nats-server", "-js", "-sd", str(self.folder), "-p", str(self.port),
                "-a", "127.0.0.1"]

    def start(self, timeout: float = 20.0) -> PrivateBroker:
        log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_until(lambda: listening(self.port) or self.proc is None
                   or self.proc.poll() is not None, timeout, f"{self.kind} on {self.port}")
        assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-2000:]
        if self.kind == "nats":  # JetStream answers once the store is recovered
            wait_until(self._jetstream_ready, timeout, "JetStream ready")
        else:  # Redis answers LOADING until it has read its append-only file
            wait_until(self._redis_ready, timeout, "Redis loaded")
        return self

    def _redis_ready(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()

    def _jetstream_ready(self) -> bool:
        async def probe() -> bool:
            import nats

            try:
                nc = await nats.connect(self.url, connect_timeout=1, allow_reconnect=False)
            except Exception:
                return False
            try:
                await nc.jetstream().account_info()
            except Exception:
                return False
            finally:
                await nc.close()
            return True

        return asyncio.run(probe())

    def kill(self) -> None:
        """kill -9, and wait for the port to be free."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1
        self.proc = None

    def stop(self) -> None:
        self.kill()


# -- a TCP proxy -----------------------------------------------------------------------------
class Proxy:
    """A TCP forwarder 127.0.0.1:``port`` -> 127.0.0.1:``target``, in threads.

    ``cut()`` closes every connection (both directions, as a network failure: the broker
    sees a reset); new ones are accepted. ``stall(seconds)`` stops forwarding for a while
    (the connections stay open, bytes wait), then lets them through.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.cuts = 0
        self.stalls = 0
        self.accepted = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._replies = threading.Event()  # the server -> client direction alone
        self._replies.set()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._conns |= {client, upstream}
            for a, b, gate in ((client, upstream, None), (upstream, client, self._replies)):
                threading.Thread(target=self._pump, args=(a, b, gate), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket,
              gate: threading.Event | None = None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                if gate is not None:
                    gate.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._conns.discard(s)
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns) // 2

    def cut(self) -> int:
        """Close every connection now; returns how many there were."""
        self.cuts += 1
        with self._lock:
            conns = list(self._conns)
        self._drop(*conns)
        return len(conns) // 2

    def stall(self, seconds: float) -> None:
        """Forward nothing for ``seconds`` (blocks the caller as long)."""
        self.stalls += 1
        self._flowing.clear()
        try:
            time.sleep(seconds)
        finally:
            self._flowing.set()

    def lose_replies(self, seconds: float) -> int:
        """Let requests through but hold the server's replies for ``seconds``, then cut
        every connection: the requests took effect on the server and their replies are
        lost (a network failure at the worst moment). Returns how many were cut."""
        self.stalls += 1
        self._replies.clear()
        try:
            time.sleep(seconds)
            return self.cut()
        finally:
            self._replies.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._replies.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self.cut()


# -- a slow webhook receiver -----------------------------------------------------------------
class Receiver:
    """An HTTP receiver that records each POST (``Idempotency-Key``, rows) as soon as it has
    read it, then answers 200 after ``delay`` seconds (a slow target: the script may be
    killed before the answer, and then sends the same windows again)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests: list[tuple[str | None, list[dict[str, Any]]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size)
                rows = json.loads(body) if body else []
                with outer._lock:
                    outer.requests.append((self.headers.get("Idempotency-Key"), rows))
                time.sleep(outer.delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def snapshot(self) -> list[tuple[str | None, list[dict[str, Any]]]]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
