"""``rtnb.sources.nats`` / ``.mqtt`` / ``.amqp`` against real brokers on this machine.

The shared brokers (NATS with JetStream on 4222, Mosquitto on 1883, RabbitMQ on 5672) serve
the functional tests, each on a fresh subject/topic/queue. The NATS fault test starts its own
``nats-server -js`` on a spare port, kills it with SIGKILL mid-stream and starts it again on
the same store. The MQTT and AMQP fault tests cut the client's TCP connections through a
small proxy (the shared broker keeps running, as after a network failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiomqtt
import nats
import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from integration_helpers import free_port, service_or_skip, until
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import rtnb

pytestmark = pytest.mark.integration

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64", "seq": "int64"}
BAD = b'{"timestamp": "2026-01-05T00:00:00Z", "host": "x", "cpu": "n/a", "seq": 1}'
NOT_JSON = b"not json"
CPU_REASON = "column 'cpu' (float64): 'n/a' is not a number"


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:3_000][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(len(df), dtype=np.int64)).reset_index(drop=True)


def encode(r: Any) -> bytes:
    """Every field as a string: the source coerces them to the schema."""
    return json.dumps({"timestamp": r.timestamp.isoformat(), "host": r.host,
                       "cpu": str(r.cpu), "seq": str(int(r.seq))}).encode()


def payloads(rows: pd.DataFrame) -> list[bytes]:
    return [encode(r) for r in rows.itertuples(index=False)]


def collected(out: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def uid() -> str:
    return uuid.uuid4().hex[:10]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                     what: str = "") -> None:
    """Poll an async broker-side ``check`` (every 50 ms) until it holds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            msg = f"not reached in {timeout} s: {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.05)


class Proxy:
    """A TCP proxy on 127.0.0.1 whose connections can be cut (a network failure)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Close every connection now (both directions); new ones are accepted."""
        self.cuts += 1
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def windows_equal_pandas(windows: pd.DataFrame, rows: pd.DataFrame) -> None:
    expected = rows.groupby(["host", pd.Grouper(key="timestamp", freq="1min")]).agg(
        n=("cpu", "count"), s=("seq", "sum")).reset_index()
    got = windows.rename(columns={"window_start": "timestamp"})[["host", "timestamp", "n", "s"]]
    tm.assert_frame_equal(got.sort_values(["host", "timestamp"]).reset_index(drop=True),
                          expected.sort_values(["host", "timestamp"]).reset_index(drop=True),
                          check_dtype=False)


# == NATS ======================================================================================
NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def subject() -> Any:
    """A fresh subject in a fresh JetStream stream (deleted afterwards)."""
    service_or_skip(4222, "NATS")
    name = f"rtnb-test-{uid()}"
    subj = f"rtnb.test.{name}"

    async def create() -> None:
        nc = await nats.connect(NATS_URL)
        await nc.jetstream().add_stream(name=name, subjects=[subj])
        await nc.close()

    async def delete() -> None:
        nc = await nats.connect(NATS_URL)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(create())
    yield subj, name
    asyncio.run(delete())


async def js_publish(url: str, subject: str, messages: list[bytes]) -> list[int]:
    """Publish to JetStream, every message stored (PubAck); returns the stream sequences."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    seqs = []
    for i in range(0, len(messages), 200):
        acks = await asyncio.gather(*(js.publish(subject, m) for m in messages[i:i + 200]))
        seqs += [a.seq for a in acks]
    await nc.close()
    return seqs


async def consumer_info(url: str, stream: str, durable: str) -> Any:
    nc = await nats.connect(url)
    try:
        return await nc.jetstream().consumer_info(stream, durable)
    finally:
        await nc.close()


async def all_acked(url: str, stream: str, durable: str) -> bool:
    info = await consumer_info(url, stream, durable)
    return info.num_ack_pending == 0 and info.num_pending == 0


def test_nats_jetstream_durable_in_order_coerced_dead_letters_and_all_acked(subject, rows):
    subj, stream = subject

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, list[int], Any]:
        seqs = await js_publish(NATS_URL, subj, payloads(rows.iloc[:1000]))
        seqs += await js_publish(NATS_URL, subj, [BAD, NOT_JSON])
        seqs += await js_publish(NATS_URL, subj, payloads(rows.iloc[1000:]))
        src = rtnb.sources.nats(subj, example=EXAMPLE, time="timestamp", durable="d1",
                                max_events=len(rows))
        out, dead = src.collect(), src.dead_letters.collect()
        await src.arun()
        await eventually(lambda: all_acked(NATS_URL, stream, "d1"), what="all acked")
        return collected(out), collected(dead), seqs[1000:1002], src.source

    got, dead, bad_seqs, source = asyncio.run(scenario())
    tm.assert_frame_equal(got, rows)  # in order, strings coerced to the schema's dtypes
    assert dead["dead_letter_position"].tolist() == [str(s) for s in bad_seqs]
    assert dead["dead_letter_raw"].tolist() == [BAD, NOT_JSON]
    assert dead["dead_letter_reason"].iloc[0] == CPU_REASON
    assert dead["dead_letter_reason"].iloc[1].startswith("json decode failed")
    assert source.stats.acked == len(rows) + 2 and source.stats.reconnects == 0
    assert "password" not in repr(source)


def test_nats_durable_consumer_resumes_in_the_next_run_without_duplicates(subject, rows):
    subj, stream = subject

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, Any]:
        await js_publish(NATS_URL, subj, payloads(rows))
        first = rtnb.sources.nats(subj, example=EXAMPLE, durable="d", max_events=1000,
                                  count=300, max_batch=256)
        out1 = first.collect()
        await first.arun()
        second = rtnb.sources.nats(subj, example=EXAMPLE, durable="d",
                                   max_events=len(rows) - 1000)
        out2 = second.collect()
        await asyncio.wait_for(second.arun(), 20)
        await eventually(lambda: all_acked(NATS_URL, stream, "d"), what="all acked")
        return collected(out1), collected(out2), await consumer_info(NATS_URL, stream, "d")

    one, two, info = asyncio.run(scenario())
    assert one["seq"].tolist() == list(range(1000))
    assert two["seq"].tolist() == list(range(1000, len(rows)))
    # the ones fetched beyond max_events were NAKed, so the second run got them at once
    assert info.delivered.consumer_seq > len(rows)


def test_nats_deliver_by_sequence_and_by_time_replay_part_of_the_stream(subject, rows):
    subj, stream = subject

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame]:
        seqs = await js_publish(NATS_URL, subj, payloads(rows.iloc[:500]))
        await asyncio.sleep(0.05)
        since = pd.Timestamp.now("UTC")
        await asyncio.sleep(0.05)
        await js_publish(NATS_URL, subj, payloads(rows.iloc[500:800]))
        by_seq = rtnb.sources.nats(subj, example=EXAMPLE, stream=stream, deliver=seqs[200],
                                   max_events=600)
        by_time = rtnb.sources.nats(subj, example=EXAMPLE, stream=stream, deliver=since,
                                    max_events=300)
        out1, out2 = by_seq.collect(), by_time.collect()
        await asyncio.wait_for(asyncio.gather(by_seq.arun(), by_time.arun()), 20)
        return collected(out1), collected(out2)

    from_seq, from_time = asyncio.run(scenario())
    assert from_seq["seq"].tolist() == list(range(200, 800))
    assert from_time["seq"].tolist() == list(range(500, 800))


def test_nats_core_subscription_is_live(rows):
    service_or_skip(4222, "NATS")
    subj = f"rtnb.core.{uid()}"

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, Any]:
        src = rtnb.sources.nats(subj, example=EXAMPLE, time="timestamp", max_events=1000)
        out, dead = src.collect(), src.dead_letters.collect()
        src.start()
        await until(lambda: src.source.stats.connected, what="subscribed")
        nc = await nats.connect(NATS_URL)
        for p in [*payloads(rows.iloc[:500]), BAD, *payloads(rows.iloc[500:1000])]:
            await nc.publish(subj, p)
        await nc.flush()
        await asyncio.wait_for(src.wait(), 20)
        await nc.close()
        return collected(out), collected(dead), src.source

    got, dead, source = asyncio.run(scenario())
    tm.assert_frame_equal(got, rows.iloc[:1000])
    assert dead["dead_letter_position"].tolist() == ["501"]  # core NATS: a message counter
    assert source.stats.dropped == 0 and source.stats.lag is None


def test_nats_slow_pipeline_pauses_reading_and_the_stream_keeps_the_data(subject, rows):
    subj, stream = subject

    async def scenario() -> tuple[int, Any, int]:
        await js_publish(NATS_URL, subj, payloads(rows))
        src = rtnb.sources.nats(subj, example=EXAMPLE, durable="slow", buffer=200, count=50,
                                max_batch=100, max_events=len(rows))
        out = src.collect()
        src.pause()
        src.start()
        await asyncio.sleep(1.0)
        read_while_paused = src.source.stats.messages
        info = await consumer_info(NATS_URL, stream, "slow")
        src.resume()
        await asyncio.wait_for(src.wait(), 30)
        await eventually(lambda: all_acked(NATS_URL, stream, "slow"), what="all acked")
        return read_while_paused, info, len(collected(out))

    read_while_paused, info, n = asyncio.run(scenario())
    # buffer + one batch taken before the pause was seen + one fetch in the reader's hands
    assert read_while_paused <= 200 + 100 + 50
    assert info.num_pending >= len(rows) - read_while_paused - 50  # the stream keeps them
    assert info.num_ack_pending <= 200 + 100 + 50
    assert n == len(rows)


@pytest.mark.skipif(shutil.which("nats-server") is None, reason="needs nats-server")
def test_nats_server_killed_mid_stream_every_message_processed_exactly_once(tmp_path: Path,
                                                                             rows):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    cmd = ["nats-server", "-js", "-sd", str(tmp_path), "-p", str(port), "-a", "127.0.0.1"]

    async def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                nc = await nats.connect(url, allow_reconnect=False, connect_timeout=1)
                await nc.close()
                return proc
            except Exception:
                await asyncio.sleep(0.05)
        proc.kill()
        raise AssertionError("nats-server did not start")

    procs: list[subprocess.Popen[bytes]] = []

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, Any, Any]:
        procs.append(await start())
        nc = await nats.connect(url)
        await nc.jetstream().add_stream(name="m", subjects=["m.>"])
        await nc.close()
        await js_publish(url, "m.cpu", payloads(rows.iloc[:2000]))
        src = rtnb.sources.nats("m.cpu", url, example=EXAMPLE, time="timestamp", durable="g",
                                count=100, max_batch=200, fetch_wait="100ms", ack_wait="2s",
                                max_events=len(rows))
        src.source.backoff.cap = 0.5
        counts = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"),
                                                                   s=("seq", "sum"))
        out, windows = src.collect(), counts.collect()
        src.start()
        await until(lambda: sum(len(b) for b in out) >= 500, what="500 rows")
        procs[-1].kill()  # SIGKILL mid-stream
        procs[-1].wait()
        await asyncio.sleep(0.3)
        procs.append(await start())
        await js_publish(url, "m.cpu", payloads(rows.iloc[2000:]))
        await asyncio.wait_for(src.wait(), 60)
        await eventually(lambda: all_acked(url, "m", "g"), what="all acked")
        return (collected(out), collected(windows), src.source,
                await consumer_info(url, "m", "g"))

    try:
        got, windows, source, info = asyncio.run(scenario())
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert source.stats.reconnects >= 1
    assert got["seq"].is_unique and sorted(got["seq"]) == list(range(len(rows)))
    windows_equal_pandas(windows, rows)
    assert info.num_ack_pending == 0 and info.num_pending == 0


# == MQTT ======================================================================================
@pytest.fixture
def topic() -> str:
    service_or_skip(1883, "Mosquitto")
    return f"rtnb/test/{uid()}"


async def mqtt_publish(topic: str, messages: list[bytes], port: int = 1883) -> None:
    """Publish with QoS 1, in order, each message confirmed (PUBACK) by the broker."""
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=200) as client:
        client.pending_calls_threshold = len(messages)
        for i in range(0, len(messages), 200):  # each publish is sent when its call starts
            await asyncio.gather(*(client.publish(topic, m, qos=1)
                                   for m in messages[i:i + 200]))


async def left_in_session(client_id: str) -> int:
    """Resume the source's session and count what the broker still has for it, then end it.

    The broker resends every message not acknowledged and sends every queued one when the
    session is resumed: nothing arriving means nothing was left unacknowledged.
    """
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0  # the session ends with this connection
    n = 0
    async with aiomqtt.Client("127.0.0.1", identifier=client_id, clean_start=False,
                              protocol=aiomqtt.ProtocolVersion.V5, properties=props) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for _ in client.messages:
                    n += 1
    return n


def test_mqtt_qos1_in_order_coerced_dead_letters_and_nothing_left_unacknowledged(topic, rows):
    client_id = f"rtnb-test-{uid()}"

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, Any, int]:
        src = rtnb.sources.mqtt(topic, example=EXAMPLE, time="timestamp", client_id=client_id,
                                max_events=2000)
        out, dead = src.collect(), src.dead_letters.collect()
        src.start()
        await until(lambda: src.source.stats.connected, what="subscribed")
        await mqtt_publish(topic, [*payloads(rows.iloc[:1000]), BAD, NOT_JSON,
                                   *payloads(rows.iloc[1000:2000])])
        await asyncio.wait_for(src.wait(), 30)
        return collected(out), collected(dead), src.source, await left_in_session(client_id)

    got, dead, source, left = asyncio.run(scenario())
    tm.assert_frame_equal(got, rows.iloc[:2000])
    assert dead["dead_letter_position"].tolist() == ["1001", "1002"]  # the message counter
    assert dead["dead_letter_raw"].tolist() == [BAD, NOT_JSON]
    assert dead["dead_letter_reason"].iloc[0] == CPU_REASON
    assert source.stats.acked == 2002 and left == 0


def test_mqtt_session_resumes_in_the_next_run_without_duplicates(topic, rows):
    client_id = f"rtnb-test-{uid()}"

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, int]:
        first = rtnb.sources.mqtt(topic, example=EXAMPLE, client_id=client_id, max_events=300,
                                  max_batch=64)
        out1 = first.collect()
        first.start()
        await until(lambda: first.source.stats.connected, what="subscribed")
        await mqtt_publish(topic, payloads(rows.iloc[:600]))
        await asyncio.wait_for(first.wait(), 20)
        # the broker resends what the first run left unacknowledged, then what it queued
        second = rtnb.sources.mqtt(topic, example=EXAMPLE, client_id=client_id,
                                   max_events=300)
        out2 = second.collect()
        await asyncio.wait_for(second.arun(), 20)
        return collected(out1), collected(out2), await left_in_session(client_id)

    one, two, left = asyncio.run(scenario())
    assert one["seq"].tolist() == list(range(300))
    assert two["seq"].tolist() == list(range(300, 600))
    assert left == 0


def test_mqtt_qos0_is_live_and_unacknowledged(topic, rows):
    async def scenario() -> pd.DataFrame:
        src = rtnb.sources.mqtt(topic, example=EXAMPLE, qos=0, max_events=300,
                                policy="drop_oldest", clean_session=True)
        out = src.collect()
        src.start()
        await until(lambda: src.source.stats.connected, what="subscribed")
        await mqtt_publish(topic, payloads(rows.iloc[:300]))
        await asyncio.wait_for(src.wait(), 20)
        return collected(out)

    tm.assert_frame_equal(asyncio.run(scenario()), rows.iloc[:300])


def test_mqtt_protocol_311(topic, rows):
    client_id = f"rtnb-test-{uid()}"

    async def scenario() -> tuple[pd.DataFrame, int]:
        src = rtnb.sources.mqtt(topic, example=EXAMPLE, protocol="3.1.1", client_id=client_id,
                                clean_session=True, max_events=300)
        out = src.collect()
        src.start()
        await until(lambda: src.source.stats.connected, what="subscribed")
        await mqtt_publish(topic, payloads(rows.iloc[:300]))
        await asyncio.wait_for(src.wait(), 20)
        return collected(out), src.source.stats.acked

    got, acked = asyncio.run(scenario())
    tm.assert_frame_equal(got, rows.iloc[:300])
    assert acked == 300


def test_mqtt_slow_pipeline_pauses_reading_and_the_broker_keeps_the_data(topic, rows):
    client_id = f"rtnb-test-{uid()}"
    n = 800  # Mosquitto keeps max_queued_messages (1000) per session beyond those in flight

    async def scenario() -> tuple[int, int, int]:
        src = rtnb.sources.mqtt(topic, example=EXAMPLE, client_id=client_id, buffer=50,
                                max_batch=20, max_inflight=100, max_events=n)
        out = src.collect()
        src.pause()
        src.start()
        await until(lambda: src.source.stats.connected, what="subscribed")
        await mqtt_publish(topic, payloads(rows.iloc[:n]))
        await asyncio.sleep(1.0)
        read_while_paused = src.source.stats.messages
        src.resume()
        await asyncio.wait_for(src.wait(), 30)
        return read_while_paused, len(collected(out)), await left_in_session(client_id)

    read_while_paused, got, left = asyncio.run(scenario())
    # buffer + one batch taken before the pause was seen + one in the reader's hands
    assert read_while_paused <= 50 + 20 + 1
    assert got == n and left == 0


def test_mqtt_connection_cut_mid_stream_every_message_processed_exactly_once(topic, rows):
    client_id = f"rtnb-test-{uid()}"
    # The shared Mosquitto keeps at most 1,000 messages (queued and unacknowledged) for an
    # offline session and drops what comes beyond: the whole run stays below that.
    n = 900

    async def scenario() -> tuple[pd.DataFrame, Any, int]:
        proxy = await Proxy(1883).start()
        try:
            src = rtnb.sources.mqtt(topic, f"mqtt://127.0.0.1:{proxy.port}", example=EXAMPLE,
                                    client_id=client_id, max_batch=100, max_events=n)
            src.source.backoff.cap = 0.5
            out = src.collect()
            src.start()
            await until(lambda: src.source.stats.connected, what="subscribed")
            await mqtt_publish(topic, payloads(rows.iloc[:500]))
            await until(lambda: sum(len(b) for b in out) >= 250, what="250 rows")
            proxy.cut()  # the connection breaks mid-stream; the broker keeps the session
            await mqtt_publish(topic, payloads(rows.iloc[500:n]))  # while it may be away
            await asyncio.wait_for(src.wait(), 30)
        finally:
            await proxy.stop()
        return collected(out), src.source, await left_in_session(client_id)

    got, source, left = asyncio.run(scenario())
    assert source.stats.reconnects >= 1
    assert got["seq"].is_unique and sorted(got["seq"]) == list(range(n))
    assert left == 0


def test_mqtt_acks_lost_with_the_connection_are_sent_again_when_the_run_ends(topic, rows):
    """The connection drops after it delivered every message but before any was processed.

    The source still works through what the dropped connection delivered and reaches
    ``max_events`` before it reconnects (its backoff is long), so every ack it sent went
    into a closed socket. At the end of the run it resumes the session once and
    acknowledges the broker's resent copies of exactly those messages: the next run of the
    session gets nothing twice.
    """
    client_id = f"rtnb-test-{uid()}"
    n, buffer = 600, 50

    async def scenario() -> tuple[pd.DataFrame, Any, int, int]:
        proxy = await Proxy(1883).start()
        try:
            src = rtnb.sources.mqtt(topic, f"mqtt://127.0.0.1:{proxy.port}", example=EXAMPLE,
                                    client_id=client_id, max_batch=buffer, buffer=buffer,
                                    max_events=n)
            src.source.backoff = rtnb._net.Backoff(base=60, cap=60)  # no reconnect
            out = src.collect()
            src.start()
            await until(lambda: src.source.stats.connected, what="subscribed")
            src.pause()  # the pipeline holds: the buffer fills, the rest waits in the client
            await mqtt_publish(topic, payloads(rows.iloc[:n]))
            mqtt_client = src.source._client
            # every message delivered: what the reader took before the pause (buffer, one
            # batch, one in its hands: 100 or 101, by timing) plus what waits in the client
            await until(lambda: mqtt_client._queue.qsize() + src.source.stats.messages >= n,
                        what="the client holds the messages")
            held = mqtt_client._queue.qsize()
            proxy.cut()
            await until(lambda: not mqtt_client._client.is_connected(), what="disconnected")
            src.resume()
            await asyncio.wait_for(src.wait(), 30)
        finally:
            await proxy.stop()
        return collected(out), src.source, held, await left_in_session(client_id)

    got, source, held, left = asyncio.run(scenario())
    assert got["seq"].is_unique and sorted(got["seq"]) == list(range(n))
    assert source._gen == 1  # the run itself never reconnected
    assert left == 0
    assert held >= n - 2 * buffer - 1
    assert source.reclaimed >= held  # at least every ack sent after the cut was reclaimed


# == AMQP ======================================================================================
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def queue() -> Any:
    service_or_skip(5672, "RabbitMQ")
    name = f"rtnb-test-{uid()}"
    yield name

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)

    asyncio.run(delete())


async def amqp_publish(messages: list[bytes], *, queue: str | None = None,
                       exchange: str = "", routing_key: str | None = None) -> None:
    """Publish persistent messages with publisher confirms (each confirmed)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        if queue is not None:
            await channel.declare_queue(queue, durable=True)
        target = channel.default_exchange if not exchange else \
            await channel.get_exchange(exchange)
        key = routing_key or queue or ""
        for i in range(0, len(messages), 200):
            await asyncio.gather(*(target.publish(
                aio_pika.Message(m, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), key)
                for m in messages[i:i + 200]))


async def ready(queue: str) -> int:
    """Messages in the queue (a passive declare)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count)


def test_amqp_queue_in_order_coerced_dead_letters_and_nothing_left_unacknowledged(queue, rows):
    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, Any, int]:
        await amqp_publish([*payloads(rows.iloc[:1000]), BAD, NOT_JSON,
                            *payloads(rows.iloc[1000:])], queue=queue)
        src = rtnb.sources.amqp(AMQP_URL, queue=queue, example=EXAMPLE, time="timestamp",
                                max_events=len(rows))
        out, dead = src.collect(), src.dead_letters.collect()
        await asyncio.wait_for(src.arun(), 30)
        # the source's connection is closed: anything not acknowledged would be back
        return collected(out), collected(dead), src.source, await ready(queue)

    got, dead, source, left = asyncio.run(scenario())
    tm.assert_frame_equal(got, rows)
    assert dead["dead_letter_position"].tolist() == ["1001", "1002"]
    assert dead["dead_letter_raw"].tolist() == [BAD, NOT_JSON]
    assert dead["dead_letter_reason"].iloc[0] == CPU_REASON
    assert source.stats.acked == len(rows) + 2 and left == 0
    assert "guest:***@" in repr(source) and "guest:guest" not in repr(source)


def test_amqp_unprocessed_messages_go_back_to_the_queue_for_the_next_run(queue, rows):
    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, int]:
        await amqp_publish(payloads(rows), queue=queue)
        first = rtnb.sources.amqp(AMQP_URL, queue=queue, example=EXAMPLE, max_events=1000,
                                  max_batch=256)
        out1 = first.collect()
        await asyncio.wait_for(first.arun(), 20)
        second = rtnb.sources.amqp(AMQP_URL, queue=queue, example=EXAMPLE,
                                   max_events=len(rows) - 1000)
        out2 = second.collect()
        await asyncio.wait_for(second.arun(), 20)
        return collected(out1), collected(out2), await ready(queue)

    one, two, left = asyncio.run(scenario())
    assert one["seq"].tolist() == list(range(1000))
    assert two["seq"].tolist() == list(range(1000, len(rows)))  # requeued in their place
    assert left == 0


def test_amqp_slow_pipeline_pauses_reading_and_the_queue_keeps_the_data(queue, rows):
    rows = rows.iloc[:1500]

    async def scenario() -> tuple[int, int, int, int]:
        await amqp_publish(payloads(rows), queue=queue)
        src = rtnb.sources.amqp(AMQP_URL, queue=queue, example=EXAMPLE, prefetch=100,
                                buffer=50, max_batch=20, max_events=len(rows))
        out = src.collect()
        src.pause()
        src.start()
        await asyncio.sleep(1.0)
        read_while_paused = src.source.stats.messages
        in_queue = await ready(queue)
        src.resume()
        await asyncio.wait_for(src.wait(), 30)
        return read_while_paused, in_queue, len(collected(out)), await ready(queue)

    read_while_paused, in_queue, got, left = asyncio.run(scenario())
    # buffer + one batch taken before the pause was seen + one in the reader's hands
    assert read_while_paused <= 50 + 20 + 1
    assert in_queue >= len(rows) - 100 - 20  # beyond the prefetch, the queue keeps them
    assert got == len(rows) and left == 0


def test_amqp_exclusive_queue_bound_to_an_exchange_is_live(rows):
    service_or_skip(5672, "RabbitMQ")
    key = f"rtnb.{uid()}"

    async def scenario() -> pd.DataFrame:
        src = rtnb.sources.amqp(AMQP_URL, exchange="amq.topic", routing_key=f"{key}.#",
                                example=EXAMPLE, max_events=500)
        out = src.collect()
        src.start()
        await until(lambda: src.source.stats.connected, what="bound")
        await amqp_publish(payloads(rows.iloc[:500]), exchange="amq.topic",
                           routing_key=f"{key}.cpu")
        await asyncio.wait_for(src.wait(), 20)
        return collected(out)

    tm.assert_frame_equal(asyncio.run(scenario()), rows.iloc[:500])


def test_amqp_connection_cut_mid_stream_every_message_processed_exactly_once(queue, rows):
    async def scenario() -> tuple[pd.DataFrame, Any, int]:
        await amqp_publish(payloads(rows), queue=queue)
        proxy = await Proxy(5672).start()
        src = rtnb.sources.amqp(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", queue=queue,
                                example=EXAMPLE, prefetch=500, max_batch=100,
                                max_events=len(rows))
        src.source.backoff.cap = 0.5
        out = src.collect()
        src.start()
        await until(lambda: sum(len(b) for b in out) >= 500, what="500 rows")
        proxy.cut()  # the broker requeues what was not acknowledged
        await asyncio.wait_for(src.wait(), 30)
        await proxy.stop()
        return collected(out), src.source, await ready(queue)

    got, source, left = asyncio.run(scenario())
    assert source.stats.reconnects >= 1
    assert got["seq"].is_unique and sorted(got["seq"]) == list(range(len(rows)))
    assert left == 0


# == arguments (no broker needed) ==============================================================
def test_replayable_broker_sources_refuse_a_dropping_policy():
    with pytest.raises(rtnb.ConfigError, match="policy 'drop_oldest' would lose data"):
        rtnb.sources.nats("s", example=EXAMPLE, durable="d", policy="drop_oldest")
    with pytest.raises(rtnb.ConfigError, match="policy 'sample' would lose data"):
        rtnb.sources.mqtt("t", example=EXAMPLE, policy="sample")
    with pytest.raises(rtnb.ConfigError, match="policy 'drop_oldest' would lose data"):
        rtnb.sources.amqp(queue="q", example=EXAMPLE, policy="drop_oldest")
    # live-only flavours may drop
    rtnb.sources.nats("s", example=EXAMPLE, policy="drop_oldest")
    rtnb.sources.mqtt("t", example=EXAMPLE, qos=0, policy="sample")
    rtnb.sources.amqp(exchange="amq.topic", example=EXAMPLE, policy="drop_oldest")


def test_broker_source_arguments_are_checked():
    with pytest.raises(rtnb.ConfigError, match="QoS 2 confirms receipt before the pipeline"):
        rtnb.sources.mqtt("t", example=EXAMPLE, qos=2)
    with pytest.raises(rtnb.ConfigError, match="nats deliver must be 'all'"):
        rtnb.sources.nats("s", example=EXAMPLE, durable="d", deliver="first")
    with pytest.raises(rtnb.ConfigError, match="needs a `queue` to consume, or an `exchange`"):
        rtnb.sources.amqp(example=EXAMPLE)
    with pytest.raises(rtnb.ConfigError, match="mqtt url must be mqtt://host"):
        rtnb.sources.mqtt("t", "tcp://127.0.0.1:1883", example=EXAMPLE)
    with pytest.raises(rtnb.ConfigError, match="environment variable 'RTNB_NO_SUCH_VAR'"):
        rtnb.sources.nats("s", example=EXAMPLE, token_env="RTNB_NO_SUCH_VAR")


def test_passwords_never_appear_in_reprs(monkeypatch):
    monkeypatch.setenv("RTNB_TEST_SECRET", "s3cret")
    sources = [
        rtnb.sources.nats("s", "nats://u:s3cret@127.0.0.1:4222", example=EXAMPLE),
        rtnb.sources.mqtt("t", "mqtt://u:s3cret@127.0.0.1", example=EXAMPLE),
        rtnb.sources.amqp(queue="q", example=EXAMPLE, password_env="RTNB_TEST_SECRET"),
    ]
    for frame in sources:
        assert "s3cret" not in repr(frame.source) and "s3cret" not in frame.describe_source()
    assert "u:***@" in repr(sources[0].source) and "guest:***@" in repr(sources[2].source)
