"""Binary formats through the other brokers (issue 20): what test_formats_brokers.py proves
for Redis, here for NATS JetStream, MQTT and Kafka. Each broker's sink writes a frame of every
dtype with ``encoder=fmt`` and the same broker's source reads it back with ``decoder=fmt``:
the frame that comes out equals the one that went in (values, dtypes, missing values)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pandas as pd
import pandas.testing as tm
import pytest
from integration_helpers import service_or_skip, until
from kafka_helpers import MockKafka, kafka_cluster
from test_formats_brokers import EXAMPLE, FORMATS, rows

import rtnb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
__all__ = ["kafka_cluster"]  # the session fixture, imported for pytest

N = 600
BATCH = 150
#: Every format of test_formats_brokers.py: a batch per message (arrow, avro) or a row per
#: message (avro-schemaless, protobuf).
NAMES = list(FORMATS)
#: Formats that write one message per row (the others: one per batch).
PER_ROW = ("avro-schemaless", "protobuf")
NATS_URL = "nats://127.0.0.1:4222"
MQTT_URL = "mqtt://127.0.0.1:1883"


def uid() -> str:
    return uuid.uuid4().hex[:10]


def collected(out: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(out, ignore_index=True) if out else EXAMPLE.iloc[:0]


def reasons(dead: list[pd.DataFrame]) -> list[str]:
    """The reasons of the dead letters collected (messages the decoder could not read)."""
    return [str(r) for d in dead for r in d["dead_letter_reason"]]


async def write(sdf: rtnb.StreamingFrame, sink: rtnb.sinks.Sink, data: pd.DataFrame) -> None:
    """``data`` through ``sdf`` in batches of ``BATCH`` rows, then every batch delivered."""
    for lo in range(0, len(data), BATCH):
        sdf.emit(data.iloc[lo:lo + BATCH].reset_index(drop=True))
    await asyncio.wait_for(sink.flush(), 30)


async def bounded(aw: Awaitable[None], what: Callable[[], str], timeout: float = 30.0) -> None:
    """Await ``aw`` for ``timeout`` seconds at most; past that, fail saying ``what()``."""
    try:
        await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        msg = f"not done in {timeout} s: {what()}"
        raise AssertionError(msg) from None


# == NATS JetStream ============================================================================
@pytest.fixture
def jetstream() -> Iterator[tuple[str, str]]:
    """A fresh subject in a fresh JetStream stream (deleted afterwards)."""
    service_or_skip(4222, "NATS")
    import nats

    stream = f"rtnb-formats-{uid()}"
    subject = f"rtnb.formats.{stream}"

    async def create() -> None:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().add_stream(name=stream, subjects=[subject])
        finally:
            await nc.close()

    async def delete() -> None:
        nc = await nats.connect(NATS_URL)
        try:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(asyncio.wait_for(create(), 20))
    yield subject, stream
    asyncio.run(asyncio.wait_for(delete(), 20))


@pytest.mark.parametrize("name", NAMES)
def test_nats_jetstream_sink_and_source_round_trip_every_dtype(
        name: str, jetstream: tuple[str, str]) -> None:
    """A user who publishes a frame to JetStream with ``to_nats(jetstream=True,
    encoder=fmt)`` reads the very same frame back, every dtype and missing value intact,
    with ``rtnb.sources.nats(durable=..., decoder=fmt)``; the stream stored one message per
    batch (Arrow, Avro) or per row (schemaless Avro, Protobuf)."""
    import nats

    subject, stream = jetstream
    fmt = FORMATS[name]()
    data = rows(N)

    async def scenario() -> tuple[rtnb.sinks.Sink, int, pd.DataFrame, list[str]]:
        sdf = rtnb.StreamingFrame(EXAMPLE, time="t", name="out")
        sink = rtnb.sinks.to_nats(sdf, subject, NATS_URL, jetstream=True, encoder=fmt)
        await write(sdf, sink, data)
        nc = await nats.connect(NATS_URL)
        try:
            stored = (await nc.jetstream().stream_info(stream)).state.messages
        finally:
            await nc.close()
        src = rtnb.sources.nats(subject, NATS_URL, example=EXAMPLE, time="t", stream=stream,
                                durable="formats", decoder=fmt, max_events=N)
        out, dead = src.collect(), src.dead_letters.collect()
        await asyncio.wait_for(src.arun(), 30)
        return sink, stored, collected(out), reasons(dead)

    sink, stored, result, dead = asyncio.run(scenario())
    assert sink.stats.delivered_rows == N
    assert stored == (N if name in PER_ROW else N // BATCH)
    assert dead == []  # no message the decoder could not read
    # one stream, one consumer: the messages come back in the order they were published
    tm.assert_frame_equal(result, data)


# == MQTT ======================================================================================
@pytest.mark.parametrize("name", NAMES)
def test_mqtt_sink_and_source_round_trip_every_dtype(name: str) -> None:
    """A user who publishes a frame with ``to_mqtt(encoder=fmt)`` to a topic that
    ``rtnb.sources.mqtt(decoder=fmt)`` subscribes to gets the very same frame, every dtype
    and missing value intact. MQTT keeps nothing for a subscriber that is not there yet, so
    the source subscribes (QoS 1) before the sink publishes."""
    service_or_skip(1883, "Mosquitto")
    topic = f"rtnb/formats/{uid()}"
    fmt = FORMATS[name]()
    data = rows(N)

    async def scenario() -> tuple[rtnb.sinks.Sink, pd.DataFrame, list[str]]:
        # a clean session: the broker keeps nothing for this client once the test is over
        src = rtnb.sources.mqtt(topic, MQTT_URL, example=EXAMPLE, time="t", qos=1,
                                client_id=f"rtnb-formats-{uid()}", clean_session=True,
                                decoder=fmt, max_events=N)
        out, dead = src.collect(), src.dead_letters.collect()
        task = src.start()
        try:
            await until(lambda: src.source.stats.connected, what="subscribed")
            sdf = rtnb.StreamingFrame(EXAMPLE, time="t", name="out")
            sink = rtnb.sinks.to_mqtt(sdf, topic, MQTT_URL, qos=1, encoder=fmt)
            await bounded(write(sdf, sink, data),
                          lambda: f"the sink delivered {sink.stats.delivered_rows} of {N} rows")
            await bounded(src.wait(), lambda: (f"the source read {sum(map(len, out))} of {N} "
                                               f"rows; {src.source.stats}"))
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        return sink, collected(out), reasons(dead)

    sink, result, dead = asyncio.run(scenario())
    assert sink.stats.delivered_rows == N
    assert dead == []  # no message the decoder could not read
    # one publisher, one topic, QoS 1: the broker delivers in the order it was sent
    tm.assert_frame_equal(result, data)


# == Kafka =====================================================================================
@pytest.mark.parametrize("name", NAMES)
def test_kafka_sink_and_source_round_trip_every_dtype(
        name: str, kafka_cluster: MockKafka) -> None:
    """A user who produces a frame with ``to_kafka(encoder=fmt)`` reads the very same rows
    back with ``rtnb.sources.kafka(decoder=fmt)``, every dtype and missing value intact, and
    every offset committed for the group."""
    topic = kafka_cluster.topic("rtnb-formats")
    fmt = FORMATS[name]()
    data = rows(N)

    async def produce() -> rtnb.sinks.Sink:
        sdf = rtnb.StreamingFrame(EXAMPLE, time="t", name="out")
        sink = rtnb.sinks.to_kafka(sdf, topic, kafka_cluster.bootstrap, encoder=fmt)
        await write(sdf, sink, data)
        return sink

    sink = asyncio.run(produce())
    assert sink.stats.delivered_rows == N
    ends = kafka_cluster.ends(topic)
    assert sum(ends.values()) == (N if name in PER_ROW else N // BATCH)

    async def consume() -> tuple[pd.DataFrame, list[str]]:
        src = rtnb.sources.kafka(topic, kafka_cluster.bootstrap, example=EXAMPLE, time="t",
                                 group="formats", decoder=fmt, max_events=N,
                                 # a partition that got no message holds the others back
                                 # (event-time alignment) this long, not the default 5 s
                                 idle_timeout="500ms")
        out, dead = src.collect(), src.dead_letters.collect()
        await asyncio.wait_for(src.arun(), 30)
        return collected(out), reasons(dead)

    result, dead = asyncio.run(consume())
    assert dead == []  # no message the decoder could not read
    # without a key the sink spreads its messages over the topic's 4 partitions, and Kafka
    # keeps order only within a partition: compare in the order of column "n" (unique)
    result = result.sort_values("n", kind="stable", ignore_index=True)
    tm.assert_frame_equal(result, data)
    # every message's offset committed for the group (a partition that got no message has
    # nothing to commit: librdkafka reports -1001 for it)
    committed = kafka_cluster.committed(topic, "formats")
    assert {p: max(offset, 0) for p, offset in committed.items()} == ends
