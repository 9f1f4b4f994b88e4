"""NATS JetStream partitions read on a Dask ``LocalCluster`` (issue 19), against the shared
NATS server: each subject ``name.{p}`` read on a worker by ``NatsPartitionReader`` with its
own durable consumer, windows merged on the driver; every result is compared with the same
pipeline in one process (fed the rows in order) and the tumbling windows with pandas."""

from __future__ import annotations

import asyncio
import json
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import nats
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

URL = "nats://127.0.0.1:4222"
N = 4


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return metrics_rows()


@pytest.fixture
def subject() -> Iterator[str]:
    """A fresh stream capturing ``{subject}.*``, deleted at the end."""
    service_or_skip(4222, "NATS")
    name = f"rtnbdask{uuid.uuid4().hex[:10]}"

    async def make() -> None:
        nc = await nats.connect(URL)
        await nc.jetstream().add_stream(name=name, subjects=[f"{name}.*"])
        await nc.close()

    async def drop() -> None:
        nc = await nats.connect(URL)
        await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(make())
    yield name
    asyncio.run(drop())


def produce(subject: str, rows: pd.DataFrame, parts: np.ndarray) -> None:
    """Row ``i`` to ``subject.{parts[i]}``, in order."""
    todo = [(f"{subject}.{p}", json.dumps({
        "timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
        "latency_ms": r.latency_ms, "seq": int(r.seq)}).encode())
        for r, p in zip(rows.itertuples(index=False), parts, strict=True)]

    async def main() -> None:
        nc = await nats.connect(URL)
        js = nc.jetstream()
        for i in range(0, len(todo), 500):
            await asyncio.gather(*(js.publish(s, m) for s, m in todo[i:i + 500]))
        await nc.close()

    asyncio.run(main())


def consumers(subject: str, durable: str) -> list[Any]:
    async def main() -> list[Any]:
        nc = await nats.connect(URL)
        js = nc.jetstream()
        out = [await js.consumer_info(subject, f"{durable}-{p}") for p in range(N)]
        await nc.close()
        return out

    return asyncio.run(main())


def source(subject: str, n: int | None, durable: str, **kw: Any) -> rtnb.StreamingFrame:
    return rtnb.sources.nats(subject, URL, example=EXAMPLE, time="timestamp", durable=durable,
                             partitions=N, max_events=n, **kw)


def spread(rows: pd.DataFrame) -> np.ndarray:
    # by seq, whatever the host: each key's windows are partial on several workers and
    # merged on the driver (producers use rtnb.partition_of on their key)
    parts = np.asarray(rtnb.partition_of(rows["seq"].astype(str), N))
    assert len(set(parts.tolist())) == N
    return parts


def test_a_partition_reader_reads_acks_and_a_new_one_gets_the_unacked_first(
        subject: str, rows: pd.DataFrame) -> None:
    head = rows.iloc[:40]
    produce(subject, head, np.array([i % 2 for i in range(40)]))  # 20 each to .0 and .1
    src = source(subject, None, "r", ack_wait="30s").source
    reader = pickle.loads(pickle.dumps(src.partition_reader(1)))  # as on a worker
    first = reader.read(8, None)
    seqs = [position for _, position in first]
    assert seqs == list(range(2, 17, 2))  # stream sequences of subject.1, in order
    assert json.loads(first[0][0])["seq"] == 1
    assert reader.order(seqs[3]) == seqs[3] and reader.lag() == 12
    reader.ack(seqs[:5])
    moved = pickle.loads(pickle.dumps(reader))  # Dask moving the task to another worker
    reader.close()
    again = moved.read(100, None)  # goes on after what it read; the held ones stay held
    assert [p for _, p in again] == list(range(18, 41, 2))
    assert moved.read(100, None) == [] and moved.lag() == 0
    moved.close()  # 3 + 12 read and not acknowledged: pending on the server
    assert consumers_of(subject, "r", 1).num_ack_pending == 15
    # a new reader (a partition rebuilt after its worker died): the unacknowledged ones
    # come at once (not after ack_wait) and first, in order, then the new ones
    produce(subject, rows.iloc[40:42], np.array([1, 1]))  # sequences 41, 42
    fresh = pickle.loads(pickle.dumps(src.partition_reader(1)))
    got = fresh.read(100, None)
    assert [p for _, p in got] == [*seqs[5:], *range(18, 41, 2), 41, 42]
    fresh.ack([p for _, p in got])
    fresh.close()
    info = consumers_of(subject, "r", 1)
    assert info.num_ack_pending == 0 and info.num_pending == 0


def consumers_of(subject: str, durable: str, p: int) -> Any:
    async def main() -> Any:
        nc = await nats.connect(URL)
        info = await nc.jetstream().consumer_info(subject, f"{durable}-{p}")
        await nc.close()
        return info

    return asyncio.run(main())


def test_windows_over_the_partitions_equal_one_process_and_pandas(
        subject: str, rows: pd.DataFrame, cluster2: Any) -> None:
    produce(subject, rows, spread(rows))
    src = source(subject, len(rows), "w", count=500)
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
    assert sorted(stats.partition_worker) == [f"{subject}.{p}" for p in range(N)]
    assert len(set(stats.partition_worker.values())) == 2
    assert stats.partition_lag == {f"{subject}.{p}": 0 for p in range(N)}
    assert pipeline.runner.workers.keys() == set(range(N))
    # nothing left pending on the consumers: every message delivered and acknowledged
    infos = consumers(subject, "w")
    assert [(i.num_pending, i.num_ack_pending) for i in infos] == [(0, 0)] * N
    assert sum(i.delivered.consumer_seq for i in infos) == len(rows)


@pytest.mark.faults  # kill -9: runs with the fault tests (tools/run_tests.sh)
def test_a_worker_killed_mid_run_loses_and_repeats_nothing(
        subject: str, rows: pd.DataFrame) -> None:
    """kill -9 of the worker holding partition 0, a third of the way through, two ticks after
    a checkpoint: its partitions are rebuilt on the other worker, whose new readers get the
    messages their dead readers had not acknowledged at once and in order (not after
    ack_wait); the windows equal the one-process run and nothing is pending at the end."""

    produce(subject, rows, spread(rows))

    got, _, src = killing_a_worker(
        lambda: source(subject, len(rows), "k"), windows, max_rows=60)
    assert_same(got, one_process(rows, src.example, windows))
    assert src.source.stats.events == len(rows)
    infos = consumers(subject, "k")
    assert [(i.num_pending, i.num_ack_pending) for i in infos] == [(0, 0)] * N
