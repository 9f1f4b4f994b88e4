"""Binary formats through a real broker (issue 20): rtnb.sinks.to_redis_stream(encoder=fmt)
writes a frame of every dtype, rtnb.sources.redis_stream(decoder=fmt) reads it back equal;
an entry that does not decode is a dead letter with its reason, the others go on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
import redis
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from integration_helpers import service_or_skip

import rtnb
import rtnb.formats

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"
EXAMPLE = pd.DataFrame({
    "t": pd.Series([], dtype="datetime64[ns, UTC]"),  # the event time
    "n": pd.Series([], dtype="int64"),
    "x": pd.Series([], dtype="float64"),
    "ok": pd.Series([], dtype=bool),
    "s": pd.Series([], dtype="str"),
    "k": pd.Series([], dtype=pd.CategoricalDtype(["web-1", "db-2", "cache"])),
    "m": pd.Series([], dtype="Int64"),
})


def rows(n: int) -> pd.DataFrame:
    base = 1_767_225_600_000_000_000
    i = np.arange(n)
    return pd.DataFrame({
        "t": pd.to_datetime(base + i * 1_000_000_007, utc=True).as_unit("ns"),
        "n": i * 2**40,
        "x": np.where(i % 5 == 1, np.nan, i / 7),
        "ok": i % 2 == 0,
        "s": pd.Series([None if j % 4 == 3 else f"é-{j}" for j in i], dtype="str"),
        "k": pd.Categorical(np.array(["web-1", "db-2", "cache"])[i % 3],
                            categories=["web-1", "db-2", "cache"]),
        "m": pd.array([None if j % 2 else int(j) for j in i], dtype="Int64"),
    })


def row_class(optional: tuple[str, ...] = ("s", "m"), name: str = "Row") -> type:
    """EXAMPLE's message class, built from a descriptor (no protoc); ``optional``: the
    fields that may be missing (proto3 ``optional``)."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"rtnb_brokers_{name.lower()}.proto", package="rtnbbrokers", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    message = proto.message_type.add(name=name)
    types = {"t": field.TYPE_MESSAGE, "n": field.TYPE_INT64, "x": field.TYPE_DOUBLE,
             "ok": field.TYPE_BOOL, "s": field.TYPE_STRING, "k": field.TYPE_STRING,
             "m": field.TYPE_INT64}
    for number, (col, kind) in enumerate(types.items(), 1):
        f = message.field.add(name=col, number=number, type=kind)
        if col == "t":
            f.type_name = ".google.protobuf.Timestamp"
        if col in optional:
            f.proto3_optional = True
            f.oneof_index = len(message.oneof_decl)
            message.oneof_decl.add(name=f"_{col}")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    cls: type = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"rtnbbrokers.{name}"))
    return cls


FORMATS = {
    "arrow": lambda: "arrow",
    "avro": lambda: "avro",
    "avro-schemaless": lambda: rtnb.formats.avro(rtnb.formats.schema_of(EXAMPLE)),
    "protobuf": lambda: rtnb.formats.protobuf(row_class()),
}


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    service_or_skip(6379, "Redis")
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def stream(shared: redis.Redis) -> Iterator[str]:
    name = f"rtnb-formats-{uuid.uuid4().hex[:10]}"
    yield name
    shared.delete(name)


@pytest.mark.parametrize("name", FORMATS)
def test_sink_and_source_round_trip_every_dtype_through_redis(
        name: str, shared: redis.Redis, stream: str) -> None:
    fmt = FORMATS[name]()
    data = rows(1_000)

    async def write() -> rtnb.sinks.Sink:
        sdf = rtnb.StreamingFrame(EXAMPLE, time="t", name="out")
        sink = rtnb.sinks.to_redis_stream(sdf, stream, URL, encoder=fmt)
        for lo in range(0, 600, 150):  # four batches, then a bad entry, then the rest
            sdf.emit(data.iloc[lo:lo + 150].reset_index(drop=True))
        await sink.flush()
        shared.xadd(stream, {"data": b"\x00garbage\xff", "id": "bad"})
        sdf.emit(data.iloc[600:].reset_index(drop=True))
        await sink.flush()
        return sink

    sink = asyncio.run(write())
    per_row = name in ("avro-schemaless", "protobuf")
    assert shared.xlen(stream) == (1_000 if per_row else 5) + 1
    assert sink.stats.delivered_rows == 1_000

    src = rtnb.sources.redis_stream(stream, URL, example=EXAMPLE, time="t", decoder=fmt,
                                    max_events=1_000, block="50ms")
    out, dead = src.collect(), src.dead_letters.collect()
    src.run()
    result = pd.concat(out, ignore_index=True)
    tm.assert_frame_equal(result, data)
    letters = pd.concat(dead, ignore_index=True)
    assert len(letters) == 1
    assert letters["dead_letter_raw"].iloc[0] == b"\x00garbage\xff"
    reason = letters["dead_letter_reason"].iloc[0]
    words = {"arrow": "arrow decode failed: not an Arrow IPC stream or file (9 bytes",
             "avro": "avro decode failed: not an Avro object container (9 bytes",
             "avro-schemaless": "avro decode failed: not a record of Avro schema 'Row' (9 bytes",
             "protobuf": "protobuf decode failed: not a rtnbbrokers.Row message (9 bytes"}
    assert reason.startswith(words[name]), reason


@pytest.mark.parametrize(("name", "content_type"), [
    ("arrow", "application/vnd.apache.arrow.stream"), ("protobuf", "application/x-protobuf")])
def test_amqp_sink_sends_the_format_with_its_content_type(name: str, content_type: str) -> None:
    """The other broker sinks take the same encoder=: AMQP messages carry the format's MIME
    type; decoded with the same format object they are the frame."""
    service_or_skip(5672, "RabbitMQ")
    import aio_pika

    from rtnb.sources._decode import make_decoder
    from rtnb.sources._runner import convert

    fmt = FORMATS[name]()
    data = rows(300)
    queue_name = f"rtnb-formats-{uuid.uuid4().hex[:8]}"
    url = "amqp://guest:guest@127.0.0.1:5672/"

    async def scenario() -> list[tuple[bytes, str | None]]:
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, auto_delete=False)
        sdf = rtnb.StreamingFrame(EXAMPLE, time="t", name="out")
        sink = rtnb.sinks.to_amqp(sdf, url, routing_key=queue_name, encoder=fmt)
        for lo in range(0, 300, 100):
            sdf.emit(data.iloc[lo:lo + 100].reset_index(drop=True))
        await sink.flush()
        expected = 300 if name == "protobuf" else 3
        got: list[tuple[bytes, str | None]] = []
        async with queue.iterator() as it:
            async for message in it:
                async with message.process():
                    got.append((message.body, message.content_type))
                if len(got) == expected:
                    break
        await queue.delete()
        await connection.close()
        return got

    got = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert {kind for _, kind in got} == {content_type}
    good, _, dead = convert(make_decoder(fmt, EXAMPLE), EXAMPLE, "s", [body for body, _ in got])
    tm.assert_frame_equal(good, data)
    assert dead == []


def test_a_batch_the_encoder_cannot_encode_fails_the_pipeline_at_once(
        shared: redis.Redis, stream: str) -> None:
    """A missing value in a field the Protobuf message cannot leave out ('m' without
    ``optional``) is no delivery failure: it is not retried (the sink would otherwise hold
    the sources forever, as for a broker that is down); the pipeline fails with an error
    naming the sink, what arrived and the field, and nothing is written."""
    fmt = rtnb.formats.protobuf(row_class(optional=("s",), name="Strict"))

    async def write() -> tuple[rtnb.StreamingFrame, rtnb.sinks.Sink]:
        sdf = rtnb.StreamingFrame(EXAMPLE, time="t", name="out")
        sink = rtnb.sinks.to_redis_stream(sdf, stream, URL, encoder=fmt)
        sdf.emit(rows(10))
        with pytest.raises(rtnb.SchemaError) as info:
            await asyncio.wait_for(sink.flush(), 30)
        message = str(info.value)
        assert message.startswith("sink 'out.redis' cannot encode a batch of 10 rows")
        assert "m: Int64" in message and "column 'm' has a missing value" in message
        return sdf, sink

    sdf, sink = asyncio.run(write())
    assert sdf.graph.state == "failed"
    assert sink.stats.failed_attempts == 0  # not retried
    assert shared.xlen(stream) == 0
