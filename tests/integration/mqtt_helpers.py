"""A private Mosquitto for the MQTT partition tests (test_mqtt_partitions.py,
test_mqtt_distributed.py), and paho helpers: sessions, publishing, what a session still holds.

The shared Mosquitto (1883) keeps at most 1,000 queued messages per offline session
(``max_queued_messages``, its default) and drops the rest: the partitions' sessions hold
thousands while they wait for a run, or while a killed worker's partition is rebuilt. This
one is configured as ``rtnb.sources.mqtt(partitions=...)`` documents: no limit on queued or
in-flight messages.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from integration_helpers import free_port, listening, require_binary

CONF = """\
# run as the user that started it (`mosquitto` cannot read the test's temporary directory)
user root
listener {port} 127.0.0.1
allow_anonymous true
persistence false
# what the partitions need: the broker never drops a session's queued messages
max_queued_messages 0
max_inflight_messages 0
sys_interval 1
log_dest file {log}
"""


class Mosquitto:
    """``/usr/sbin/mosquitto -c CONF`` on a free loopback port; :meth:`stop` kills it by PID."""

    def __init__(self, folder: Path, *, max_queued: int = 0) -> None:
        self.folder = folder
        self.port = free_port()
        self.log = folder / "mosquitto.log"
        self.conf = folder / "mosquitto.conf"
        conf = CONF.format(port=self.port, log=self.log)
        self.conf.write_text(conf.replace("max_queued_messages 0",
                                          f"max_queued_messages {max_queued}"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], cwd=self.folder,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                pytest.fail(f"mosquitto did not start on {self.port}: {log[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A private Mosquitto for the module's tests, killed at the end."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield broker
    finally:
        broker.stop()


def fresh(prefix: str) -> tuple[str, str]:
    """A new topic and client id."""
    tag = uuid.uuid4().hex[:10]
    return f"{prefix}/{tag}", f"{prefix}-{tag}"


def _client(port: int, client_id: str = "", *, session: bool = False, inflight: int = 20
            ) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600 if session else 0
    props.ReceiveMaximum = 65_535
    client.max_inflight_messages_set(inflight)
    client.connect("127.0.0.1", port, clean_start=not session, properties=props)
    return client


def make_sessions(port: int, client_id: str, topic: str, n: int) -> None:
    """The partitions' persistent sessions ``{client_id}-{p}`` subscribed to ``{topic}/{p}``
    (QoS 1), as a first run makes them: the broker queues what is published from now on."""
    for p in range(n):
        make_session(port, f"{client_id}-{p}", f"{topic}/{p}")


def make_session(port: int, client_id: str, topic: str) -> None:
    """A persistent session ``client_id`` subscribed to ``topic`` with QoS 1."""
    done: list[int] = []
    client = _client(port, client_id, session=True)
    client.on_subscribe = lambda *a: done.append(1)
    client.loop_start()
    client.subscribe(topic, qos=1)
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done, "no SUBACK"
    client.disconnect()
    client.loop_stop()


def publish(port: int, messages: Sequence[tuple[str, bytes]]) -> None:
    """Each ``(topic, payload)`` with QoS 1, in order, all acknowledged by the broker.

    Raw MQTT 3.1.1 packets written in chunks of 1,000 (paho's publisher takes ~1 ms a
    message here, which would dominate these tests)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        client_id = f"pub-{uuid.uuid4().hex[:8]}".encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(client_id)) + \
            client_id
        sock.sendall(b"\x10" + _length(len(body)) + body)
        assert _recv(sock, 4)[:2] == b"\x20\x02", "no CONNACK"
        for lo in range(0, len(messages), 1_000):
            chunk = messages[lo:lo + 1_000]
            out = bytearray()
            for i, (topic, payload) in enumerate(chunk):
                name = topic.encode()
                rest = struct.pack("!H", len(name)) + name + struct.pack("!H", i + 1) + \
                    payload
                out += b"\x32" + _length(len(rest)) + rest
            sock.sendall(out)
            acks = _recv(sock, 4 * len(chunk))  # PUBACKs: 0x40 0x02 packet id
            assert acks[::4] == b"\x40" * len(chunk), "not every message acknowledged"
        sock.sendall(b"\xe0\x00")  # DISCONNECT


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _recv(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            msg = "the broker closed the connection"
            raise ConnectionError(msg)
        data += more
    return bytes(data)


def left(port: int, client_id: str, topic: str, n: int, *, ack: bool = False) -> list[int]:
    """Messages each partition's session still holds (resent or queued): the session is
    resumed without acknowledging anything, so it keeps them (``ack``: acknowledged, as
    another client with the same id would)."""
    counts = []
    for p in range(n):
        got: list[Any] = []
        acks: list[int] = []
        client = _client(port, f"{client_id}-{p}", session=True)
        client.manual_ack_set(not ack)
        client.on_message = lambda c, u, m, g=got: g.append(m)
        client.on_unsubscribe = lambda *a, d=acks: d.append(1)
        client.loop_start()
        time.sleep(0.05)
        client.unsubscribe("$rtnb/barrier")  # answered after the session's messages
        deadline = time.monotonic() + 10
        while not acks and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        client.disconnect()
        client.loop_stop()
        counts.append(len(got))
    return counts


class Proxy:
    """127.0.0.1:``port`` -> 127.0.0.1:``target`` in threads; :meth:`cut` drops every
    connection (as a network failure) and new ones are accepted."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.cuts = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            self.cuts += 1
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._server.close()
        self.cut()
