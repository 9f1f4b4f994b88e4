"""AMQP partition queues read on a Dask ``LocalCluster`` (issue 19), against the shared
RabbitMQ: each queue ``name.{p}`` consumed on a worker by ``AmqpPartitionReader``, windows
merged on the driver; every result is compared with the same pipeline in one process (fed the
rows in order) and the tumbling windows with pandas."""

from __future__ import annotations

import asyncio
import json
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import numpy as np
import pandas as pd
import pytest
from distributed_helpers import (
    EXAMPLE,
    assert_same,
    killing_a_worker,
    metrics_rows,
    one_process,
    run_on,
    windows,
)
from integration_helpers import service_or_skip

import rtnb

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

URL = "amqp://guest:guest@127.0.0.1:5672/"
N = 4


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return metrics_rows()


@pytest.fixture
def queue() -> Iterator[str]:
    """A fresh queue name; its partition queues deleted at the end."""
    service_or_skip(5672, "RabbitMQ")
    name = f"rtnbdask{uuid.uuid4().hex[:10]}"
    yield name

    async def drop() -> None:
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel()
            for p in range(N):
                await channel.queue_delete(f"{name}.{p}")

    asyncio.run(drop())


def produce(queue: str, rows: pd.DataFrame, parts: np.ndarray) -> None:
    """Row ``i`` to ``queue.{parts[i]}``, in order, persistent, its seq as message_id."""
    todo = [(f"{queue}.{p}", str(r.seq), json.dumps({
        "timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
        "latency_ms": r.latency_ms, "seq": int(r.seq)}).encode())
        for r, p in zip(rows.itertuples(index=False), parts, strict=True)]

    async def main() -> None:
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            for p in range(N):
                await channel.declare_queue(f"{queue}.{p}", durable=True)
            exchange = channel.default_exchange
            for i in range(0, len(todo), 500):
                await asyncio.gather(*(exchange.publish(aio_pika.Message(
                    m, message_id=mid, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), q)
                    for q, mid, m in todo[i:i + 500]))

    asyncio.run(main())


def counts(queue: str) -> list[tuple[int, int]]:
    """(ready, consumers) of each partition queue: what a closed consumer did not
    acknowledge is ready again."""
    async def main() -> list[tuple[int, int]]:
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel()
            out = []
            for p in range(N):
                d = (await channel.declare_queue(f"{queue}.{p}", passive=True)
                     ).declaration_result
                out.append((int(d.message_count), int(d.consumer_count)))
            return out

    return asyncio.run(main())


def source(queue: str, n: int | None, **kw: Any) -> rtnb.StreamingFrame:
    return rtnb.sources.amqp(URL, queue=queue, example=EXAMPLE, time="timestamp",
                             partitions=N, max_events=n, **kw)


def spread(rows: pd.DataFrame) -> np.ndarray:
    # by seq, whatever the host: each key's windows are partial on several workers and
    # merged on the driver (producers use rtnb.partition_of on their key)
    parts = np.asarray(rtnb.partition_of(rows["seq"].astype(str), N))
    assert len(set(parts.tolist())) == N
    return parts


def seqs(items: list[tuple[bytes, Any]]) -> list[int]:
    return [json.loads(payload)["seq"] for payload, _ in items]


def test_a_partition_reader_reads_acks_moves_and_a_new_one_gets_the_unacked_first(
        queue: str, rows: pd.DataFrame) -> None:
    produce(queue, rows.iloc[:40], np.array([i % 2 for i in range(40)]))  # 20 each to .0, .1
    src = source(queue, None).source
    reader = pickle.loads(pickle.dumps(src.partition_reader(1)))  # as on a worker
    first = reader.read(8, None)
    assert seqs(first) == list(range(1, 17, 2))  # queue .1, in order
    assert [reader.order(p) for _, p in first] == list(range(1, 9))
    assert reader.lag() == 12
    reader.ack([p for _, p in first[:5]])
    moved = pickle.loads(pickle.dumps(reader))  # Dask moving the task: the old socket is shut
    reader.close()
    again = moved.read(100, None)  # goes on after what it read; the held ones stay held
    assert seqs(again) == list(range(17, 40, 2))
    assert [moved.order(p) for _, p in again] == list(range(9, 21))
    assert moved.read(100, None) == [] and moved.lag() == 0
    moved.ack([p for _, p in first[5:6]])  # held across the move: acknowledged on the new channel
    moved.close()  # 2 + 12 read and not acknowledged: back in the queue
    assert counts(queue)[1] == (14, 0)
    # a new reader (a partition rebuilt after its worker died): the unacknowledged ones
    # come first, in order, then the new ones; the dead reader's positions are placed by
    # their message (an acknowledged one before everything)
    produce(queue, rows.iloc[41:44:2], np.array([1, 1]))
    fresh = pickle.loads(pickle.dumps(src.partition_reader(1)))
    got = fresh.read(100, None)
    assert seqs(got) == [13, 15, *range(17, 40, 2), 41, 43]
    assert fresh.order(first[6][1]) == 1 and fresh.order(again[0][1]) == 3
    assert fresh.order(first[0][1]) == 0 and fresh.order(first[5][1]) == 0
    fresh.ack([p for _, p in got])
    fresh.close()
    assert counts(queue)[1] == (0, 0)


def test_windows_over_the_partitions_equal_one_process_and_pandas(
        queue: str, rows: pd.DataFrame, cluster2: Any) -> None:
    produce(queue, rows, spread(rows))
    src = source(queue, len(rows), prefetch=5_000)
    outputs = windows(src)
    pipeline, got = run_on(cluster2, outputs, max_rows=900)
    assert [f.counters.late for f in outputs] == [0, 0, 0]
    assert_same(got, one_process(rows, src.example, windows))
    busy = rows[rows["cpu"] > 5]
    ref = busy.groupby([busy["timestamp"].dt.floor("1min").rename("window_start"),
                        "host"]).agg(n=("cpu", "count"), mean=("cpu", "mean"),
                                     p90=("latency_ms", lambda v: v.quantile(0.9)))
    mine = got[0].set_index(["window_start", "host"])[["n", "mean", "p90"]].sort_index()
    pd.testing.assert_frame_equal(mine, ref.sort_index(), check_dtype=False, check_names=False,
                                  rtol=1e-9)
    stats = src.source.stats
    assert stats.events == stats.messages == len(rows) and stats.dead_letters == 0
    assert sorted(stats.partition_worker) == [f"{queue}.{p}" for p in range(N)]
    assert len(set(stats.partition_worker.values())) == 2
    assert stats.partition_lag == {f"{queue}.{p}": 0 for p in range(N)}
    assert pipeline.runner.workers.keys() == set(range(N))
    # nothing left in the queues: every message delivered and acknowledged, consumers gone
    assert counts(queue) == [(0, 0)] * N


@pytest.mark.faults  # kill -9: runs with the fault tests (tools/run_tests.sh)
def test_a_worker_killed_mid_run_loses_and_repeats_nothing(
        queue: str, rows: pd.DataFrame) -> None:
    """kill -9 of the worker holding partition 0, a third of the way through, two ticks after
    a checkpoint: its partitions are rebuilt on the other worker, whose new readers get the
    messages the broker requeued for the dead ones first, in order, and place the dead
    readers' positions by message id; the windows equal the one-process run and nothing is
    left in the queues at the end."""

    produce(queue, rows, spread(rows))

    got, _, src = killing_a_worker(
        lambda: source(queue, len(rows), prefetch=2_000), windows, max_rows=60)
    assert_same(got, one_process(rows, src.example, windows))
    assert src.source.stats.events == len(rows)
    assert counts(queue) == [(0, 0)] * N
