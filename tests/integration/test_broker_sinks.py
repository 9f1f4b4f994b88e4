"""Broker sinks against the real NATS, Mosquitto and RabbitMQ servers on this machine: every
row published once, in order, read back with each broker's own client.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from integration_helpers import service_or_skip

import rtnb

pytestmark = pytest.mark.integration

N = 1_500


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:N][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(N, dtype=np.int64)).reset_index(drop=True)


def decoded(messages: list[bytes]) -> pd.DataFrame:
    got = pd.DataFrame([json.loads(m) for m in messages])
    got["timestamp"] = pd.to_datetime(got["timestamp"]).astype("datetime64[ns]")
    return got


async def wait_len(items: list[Any], n: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(items) < n and loop.time() < deadline:
        await asyncio.sleep(0.02)


def test_nats_core_and_jetstream(rows):
    service_or_skip(4222, "NATS")
    import nats

    subject = f"rtnb.test.{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[bytes], int]:
        nc = await nats.connect("nats://127.0.0.1:4222")
        got: list[bytes] = []

        async def on_message(message: Any) -> None:
            got.append(message.data)

        sub = await nc.subscribe(subject, cb=on_message)
        js = nc.jetstream()
        stream = f"RTNB_{uuid.uuid4().hex[:8]}"
        await js.add_stream(name=stream, subjects=[f"{subject}.js"])
        src = rtnb.sources.replay(rows, batch_size=300)
        rtnb.sinks.to_nats(src, subject)
        rtnb.sinks.to_nats(src, f"{subject}.js", jetstream=True, name="js")
        await src.arun()
        await wait_len(got, N)
        info = await js.stream_info(stream)
        await js.delete_stream(stream)
        await sub.unsubscribe()
        await nc.close()
        return got, info.state.messages

    got, stored = asyncio.run(scenario())
    tm.assert_frame_equal(decoded(got), rows, check_dtype=False)
    assert stored == N


def test_mqtt_qos1(rows):
    service_or_skip(1883, "Mosquitto")
    import aiomqtt

    topic = f"rtnb/test/{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[bytes]:
        got: list[bytes] = []
        async with aiomqtt.Client("127.0.0.1", 1883) as client:
            await client.subscribe(topic, qos=1)

            async def listen() -> None:
                async for message in client.messages:
                    got.append(bytes(message.payload))  # type: ignore[arg-type]
                    if len(got) == N:
                        return

            listener = asyncio.ensure_future(listen())
            src = rtnb.sources.replay(rows, batch_size=300)
            rtnb.sinks.to_mqtt(src, topic, qos=1)
            await src.arun()
            await asyncio.wait_for(listener, 30)
        return got

    got = asyncio.run(scenario())
    tm.assert_frame_equal(decoded(got), rows, check_dtype=False)


def test_amqp_default_exchange_to_a_queue(rows):
    service_or_skip(5672, "RabbitMQ")
    import aio_pika

    queue_name = f"rtnb-test-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[bytes]:
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, auto_delete=False)
        src = rtnb.sources.replay(rows, batch_size=300)
        rtnb.sinks.to_amqp(src, "amqp://guest:guest@127.0.0.1:5672/", routing_key=queue_name)
        await src.arun()
        got: list[bytes] = []
        async with queue.iterator() as it:
            async for message in it:
                async with message.process():
                    got.append(message.body)
                if len(got) == N:
                    break
        await queue.delete()
        await connection.close()
        return got

    got = asyncio.run(asyncio.wait_for(scenario(), 60))
    tm.assert_frame_equal(decoded(got), rows, check_dtype=False)
