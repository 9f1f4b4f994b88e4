"""Deferred acknowledgements (checkpoint barriers) of the broker sources, on real brokers.

With ``defer_acks`` a source acknowledges nothing by itself: the runtime takes the handled
positions at a barrier (``take_acks``), makes the checkpoint durable, then ``ack``s them; a run
resuming from a checkpoint gets that barrier's positions (``resume_acks``). These tests play
the runtime's part: barriers in the middle of a run, an ack of the first barrier only, then a
"crash" (the run ends without acknowledging anything more) and a new source with the same
group/consumer/durable that must re-deliver exactly what came after the last barrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import aiomqtt
import nats
import pandas as pd
import pytest
import redis
from integration_helpers import service_or_skip
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import rtnb

pytestmark = pytest.mark.integration

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64", "seq": "int64"}
N = 500


def uid() -> str:
    return uuid.uuid4().hex[:10]


def payload(i: int) -> bytes:
    return json.dumps({"timestamp": f"2026-01-05T00:{i // 60 % 60:02d}:{i % 60:02d}",
                       "host": f"h{i % 3}", "cpu": i / 10, "seq": i}).encode()


def seqs(out: list[pd.DataFrame]) -> list[int]:
    return [int(s) for frame in out for s in frame["seq"]]


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            msg = f"not reached in {timeout} s: {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.005)


async def barriers(src: Any, at: list[int]) -> list[tuple[list[Any], int]]:
    """Take the acks at a barrier once ``src`` emitted ``at[i]`` events: (positions, rows)."""
    taken = []
    for n in at:
        await until(lambda n=n: src.counters.events >= n, what=f"{n} events")
        positions = src.source.take_acks()  # synchronously, between two batches
        taken.append((positions, src.counters.events))
    return taken


# == Redis consumer group ======================================================================
@pytest.fixture
def shared() -> redis.Redis:
    service_or_skip(6379, "Redis")
    return redis.Redis(host="127.0.0.1", port=6379)


@pytest.fixture
def stream(shared: redis.Redis) -> Any:
    name = f"rtnb-defer-{uid()}"
    yield name
    shared.delete(name)


def redis_source(stream: str, max_events: int) -> Any:
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", group="g",
                                    consumer="c", max_events=max_events, max_batch=40,
                                    count=40, block="50ms")
    src.source.defer_acks = True
    return src


def test_redis_acks_wait_for_ack_and_take_acks_returns_entry_ids_in_order(shared, stream):
    pipe = shared.pipeline()
    for i in range(N):
        pipe.xadd(stream, {"data": payload(i)})
    ids = [i.decode() for i in pipe.execute()]

    async def scenario() -> tuple[list[int], list[Any], int, int]:
        src = redis_source(stream, 300)
        out = src.collect()
        await asyncio.wait_for(src.arun(), 30)
        pending_before = shared.xpending(stream, "g")["pending"]
        taken = src.source.take_acks()
        assert src.source.take_acks() == []  # taken once
        await src.source.ack(taken)
        await src.source.ack(taken)  # idempotent
        return seqs(out), taken, pending_before, src.source.stats.acked

    emitted, taken, pending_before, acked = asyncio.run(scenario())
    assert emitted == list(range(300))
    assert taken == ids[:300]
    assert pickle.loads(pickle.dumps(taken)) == taken
    read = pending_before  # everything read is pending: nothing was acknowledged by the run
    assert read >= 300
    pending = shared.xpending_range(stream, "g", "-", "+", N)
    assert [p["message_id"].decode() for p in pending] == ids[300:read]
    assert acked == 600


def test_redis_crash_after_a_barrier_redelivers_exactly_what_came_after_it(shared, stream):
    pipe = shared.pipeline()
    for i in range(N):
        pipe.xadd(stream, {"data": payload(i)})
    ids = [i.decode() for i in pipe.execute()]

    async def scenario() -> tuple[list[Any], list[int], list[int], list[Any]]:
        first = redis_source(stream, 300)
        out1 = first.collect()
        first.start()
        (taken1, rows1), (taken2, rows2) = await barriers(first, [100, 200])
        assert len(taken1) == rows1 and len(taken1) + len(taken2) == rows2  # no dead letters
        await first.source.ack(taken1)  # checkpoint 1 durable and acknowledged
        # checkpoint 2 is durable, then the process dies: its ack and the rest are lost
        await asyncio.wait_for(first.wait(), 30)
        pending = shared.xpending(stream, "g")["pending"]
        assert pending >= 300 - len(taken1)
        second = redis_source(stream, N - rows2)
        second.source.resume_acks(pickle.loads(pickle.dumps(taken2)))
        out2 = second.collect()
        await asyncio.wait_for(second.arun(), 30)
        await second.source.ack(second.source.take_acks())
        return [taken1, taken2], seqs(out1), seqs(out2), [rows2]

    (taken1, taken2), one, two, (rows2,) = asyncio.run(scenario())
    assert taken1 + taken2 == ids[:rows2]
    assert one == list(range(300))
    assert two == list(range(rows2, N))  # after the barrier, each once, in order
    assert shared.xpending(stream, "g")["pending"] == 0


# == NATS JetStream durable ====================================================================
NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def subject() -> Any:
    service_or_skip(4222, "NATS")
    name = f"rtnb-defer-{uid()}"
    subj = f"rtnb.defer.{name}"

    async def create() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        await js.add_stream(name=name, subjects=[subj])
        for i in range(0, N, 100):
            await asyncio.gather(*(js.publish(subj, payload(j)) for j in range(i, i + 100)))
        await nc.close()

    async def delete() -> None:
        nc = await nats.connect(NATS_URL)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(create())
    yield subj, name
    asyncio.run(delete())


async def consumer_info(stream: str, durable: str) -> Any:
    nc = await nats.connect(NATS_URL)
    try:
        return await nc.jetstream().consumer_info(stream, durable)
    finally:
        await nc.close()


async def settled_info(stream: str, durable: str, floor: int, timeout: float = 5.0) -> Any:
    """The consumer's info once its ack floor reached ``floor`` (or at ``timeout``).

    Acks are published without a reply: the server applies them a moment after it has
    received them, so reading the floor right after acking races that.
    """
    deadline = time.monotonic() + timeout
    info = await consumer_info(stream, durable)
    while info.ack_floor.stream_seq < floor and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        info = await consumer_info(stream, durable)
    return info


def replies(taken: list[Any]) -> list[str]:
    """A NATS barrier's reply subjects (without its ``("floor", n)`` position)."""
    return [t for t in taken if isinstance(t, str)]


def nats_source(subj: str, max_events: int, **kwargs: Any) -> Any:
    src = rtnb.sources.nats(subj, example=EXAMPLE, time="timestamp", durable="d",
                            max_events=max_events, max_batch=40, count=40, ack_wait="60s",
                            **kwargs)
    src.source.defer_acks = True
    return src


def test_nats_acks_wait_for_ack_by_reply_subject_even_after_the_run(subject):
    subj, stream = subject

    async def scenario() -> tuple[list[int], list[Any], Any, Any]:
        src = nats_source(subj, 300)
        out = src.collect()
        await asyncio.wait_for(src.arun(), 30)
        before = await consumer_info(stream, "d")
        taken = src.source.take_acks()
        await src.source.ack(taken)  # the run is over: on a connection of its own
        await src.source.ack(taken)  # idempotent
        after = await consumer_info(stream, "d")
        return seqs(out), taken, before, after

    emitted, taken, before, after = asyncio.run(scenario())
    assert emitted == list(range(300))
    assert len(replies(taken)) == 300 and taken[-1] == ("floor", 300)  # 1..300 handled
    assert pickle.loads(pickle.dumps(taken)) == taken
    assert before.ack_floor.stream_seq == 0  # nothing acknowledged by the run itself
    delivered = before.delivered.stream_seq
    assert delivered >= 300 and before.num_ack_pending == delivered
    assert after.ack_floor.stream_seq == 300
    assert after.num_ack_pending == delivered - 300  # the leftovers, NAKed for the next run


def test_nats_crash_after_a_barrier_redelivers_exactly_what_came_after_it_at_once(subject):
    subj, stream = subject

    async def scenario() -> tuple[list[int], list[int], int, Any, float]:
        first = nats_source(subj, 300)
        out1 = first.collect()

        async def killed(nc: Any) -> None:  # kill -9: nothing NAKed, nothing acknowledged
            return None

        first.source._nak_leftovers = killed
        first.start()
        (taken1, _), (taken2, rows2) = await barriers(first, [100, 200])
        await first.source.ack(taken1)
        await asyncio.wait_for(first.wait(), 30)
        crashed = await settled_info(stream, "d", len(replies(taken1)))
        assert crashed.ack_floor.stream_seq == len(replies(taken1))
        assert crashed.num_ack_pending == crashed.delivered.stream_seq - len(replies(taken1))
        started = time.monotonic()
        second = nats_source(subj, N - rows2)
        second.source.resume_acks(pickle.loads(pickle.dumps(taken2)))
        out2 = second.collect()
        await asyncio.wait_for(second.arun(), 20)  # well before ack_wait (60 s)
        elapsed = time.monotonic() - started
        await second.source.ack(second.source.take_acks())
        info = await settled_info(stream, "d", N)
        return seqs(out1), seqs(out2), rows2, info, elapsed

    one, two, rows2, info, elapsed = asyncio.run(scenario())
    assert one == list(range(300))
    assert two == list(range(rows2, N))  # after the barrier, each once, in order
    assert elapsed < 20
    assert info.ack_floor.stream_seq == N and info.num_ack_pending == 0


def test_nats_full_window_sets_window_full_and_acks_release_it(subject):
    """max_ack_pending=100, acks deferred: the source stops at 100 unacked and says so."""
    subj, stream = subject

    async def scenario() -> tuple[list[int], list[int], list[int], list[Any]]:
        src = nats_source(subj, N, max_ack_pending=100)
        out = src.collect()
        run = src.start()
        sizes, unacked, final = [], [], []
        while not run.done():  # the runtime: checkpoint as soon as the window is full
            full = asyncio.ensure_future(src.source.window_full.wait())
            await asyncio.wait({full, run}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            full.cancel()
            if run.done():
                break
            assert src.source.window_full.is_set(), "stalled: no full window, no end"
            unacked.append((await consumer_info(stream, "d")).num_ack_pending)
            taken = src.source.take_acks()
            assert not src.source.window_full.is_set()
            sizes.append(len(replies(taken)))
            await src.source.ack(taken)
        final = replies(src.source.take_acks())
        await src.source.ack(final)
        return seqs(out), sizes, unacked, final

    emitted, sizes, unacked, final = asyncio.run(scenario())
    assert emitted == list(range(N))
    assert sum(sizes) + len(final) == N
    assert len(sizes) >= N // 100 - 1 and all(0 < n <= 100 for n in sizes)
    assert unacked and all(n == 100 for n in unacked)  # blocked exactly at the window


# == AMQP named queue ==========================================================================
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def queue() -> Any:
    service_or_skip(5672, "RabbitMQ")
    name = f"rtnb-defer-{uid()}"

    async def publish() -> None:  # persistent, confirmed, each with a message_id
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(name, durable=True)
            for i in range(0, N, 100):
                await asyncio.gather(*(channel.default_exchange.publish(aio_pika.Message(
                    payload(j), message_id=f"m{j}",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT), name)
                    for j in range(i, i + 100)))

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)

    asyncio.run(publish())
    yield name
    asyncio.run(delete())


async def in_queue(name: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(name, passive=True)
        return int(declared.declaration_result.message_count)


def amqp_source(name: str, max_events: int | None) -> Any:
    src = rtnb.sources.amqp(AMQP_URL, queue=name, example=EXAMPLE, time="timestamp",
                            max_events=max_events, max_batch=40, prefetch=1000)
    src.source.defer_acks = True
    return src


def test_amqp_crash_after_a_barrier_redelivers_and_skips_the_barrier_by_message_id(queue):
    async def scenario() -> tuple[list[int], list[int], int, int, int, int]:
        first = amqp_source(queue, 300)
        out1 = first.collect()
        first.start()
        (taken1, _), (taken2, rows2) = await barriers(first, [100, 200])
        assert [key for _, _, key in taken1 + taken2] == [f"m{i}" for i in range(rows2)]
        await first.source.ack(taken1)  # on the live channel
        await asyncio.wait_for(first.wait(), 30)  # then the connection closes: a crash
        requeued = await in_queue(queue)
        second = amqp_source(queue, None)
        second.source.resume_acks(pickle.loads(pickle.dumps(taken2)))
        out2 = second.collect()
        second.start()
        await until(lambda: second.counters.events >= N - rows2, what="the rest")
        await asyncio.sleep(0.2)  # nothing more comes
        events = second.counters.events
        await second.source.ack(second.source.take_acks())  # on the live channel
        await asyncio.sleep(0.2)
        second.stop()
        await asyncio.wait_for(second.wait(), 20)
        return seqs(out1), seqs(out2), rows2, requeued, events, await in_queue(queue)

    one, two, rows2, requeued, events, left = asyncio.run(scenario())
    assert one == list(range(300))
    assert requeued == N - 100 or requeued > N - rows2  # nothing after barrier 1 was acked
    assert two == list(range(rows2, N)) and events == N - rows2  # each once, in order
    assert left == 0


# == MQTT persistent session ===================================================================
def test_mqtt_deferred_acks_after_the_run_and_a_crash_skips_the_barrier(subject_free_topic):
    topic, client_id = subject_free_topic

    async def scenario() -> tuple[list[int], list[int], int, int, int, int]:
        first = rtnb.sources.mqtt(topic, example=EXAMPLE, client_id=client_id,
                                  max_events=300, max_batch=40)
        first.source.defer_acks = True
        out1 = first.collect()
        first.start()
        await until(lambda: first.source.stats.connected, what="subscribed")
        await mqtt_publish(topic, [payload(i) for i in range(N)])
        (taken1, _), (taken2, rows2) = await barriers(first, [100, 200])
        await first.source.ack(taken1)  # on the live connection
        await asyncio.wait_for(first.wait(), 30)  # no more acks: a crash for the broker
        second = rtnb.sources.mqtt(topic, example=EXAMPLE, client_id=client_id,
                                   max_events=N - rows2, max_batch=40)
        second.source.defer_acks = True
        second.source.resume_acks(pickle.loads(pickle.dumps(taken2)))
        out2 = second.collect()
        await asyncio.wait_for(second.arun(), 30)
        duplicates = second.source.duplicates
        await second.source.ack(second.source.take_acks())  # after the run: session resumed
        return (seqs(out1), seqs(out2), rows2, len(taken2), duplicates,
                await left_in_session(client_id))

    one, two, rows2, last_barrier, duplicates, left = asyncio.run(scenario())
    assert one == list(range(300))
    assert two == list(range(rows2, N))  # after the barrier, each once, in order
    assert duplicates == last_barrier  # the barrier's messages came again and were skipped
    assert left == 0


@pytest.fixture
def subject_free_topic() -> Any:
    service_or_skip(1883, "Mosquitto")
    return f"rtnb/defer/{uid()}", f"rtnb-defer-{uid()}"


async def mqtt_publish(topic: str, messages: list[bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", 1883, max_inflight_messages=200) as client:
        client.pending_calls_threshold = len(messages)
        for i in range(0, len(messages), 200):
            await asyncio.gather(*(client.publish(topic, m, qos=1)
                                   for m in messages[i:i + 200]))


async def left_in_session(client_id: str) -> int:
    """What the broker still has for the session (then it ends)."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    n = 0
    async with aiomqtt.Client("127.0.0.1", identifier=client_id, clean_start=False,
                              protocol=aiomqtt.ProtocolVersion.V5, properties=props) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for _ in client.messages:
                    n += 1
    return n
