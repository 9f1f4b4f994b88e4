"""MQTT partition topics read on a Dask ``LocalCluster`` (issue 19), against a private
Mosquitto (``max_queued_messages 0``: mqtt_helpers.py): each topic ``name/{p}`` read on a
worker by ``MqttPartitionReader`` with its persistent session, acknowledged (PUBACK) only
once a checkpoint holds it; windows merged on the driver and compared with the same
pipeline in one process (fed the rows in order) and with pandas."""

from __future__ import annotations

import json
import pickle
from typing import Any

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
from mqtt_helpers import Mosquitto, fresh, left, make_sessions, mosquitto, publish

import rtnb

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

__all__ = ["mosquitto"]  # the module's private broker (a fixture)

N = 4


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    # one row in 8 of the shared two hours (~1,550: test time; every host keeps a row
    # every ~56 s)
    return metrics_rows().iloc[::8].reset_index(drop=True)


def light(sdf: rtnb.StreamingFrame) -> list[rtnb.StreamingFrame]:
    """Tumbling per host, the exact aggregations (count/sum/min/max): the kill -9 test's."""
    return [sdf.window(rtnb.tumbling("1min"), by="host").agg(
        n=("cpu", "count"), total=("cpu", "sum"), low=("latency_ms", "min"),
        high=("latency_ms", "max"))]


def payload(r: Any) -> bytes:
    return json.dumps({"timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
                       "latency_ms": r.latency_ms, "seq": int(r.seq)}).encode()


def produce(broker: Mosquitto, topic: str, rows: pd.DataFrame, parts: np.ndarray) -> None:
    """Row ``i`` to ``topic/{parts[i]}``, in order, QoS 1."""
    publish(broker.port, [(f"{topic}/{p}", payload(r))
                          for r, p in zip(rows.itertuples(index=False), parts, strict=True)])


def source(broker: Mosquitto, topic: str, client_id: str, n: int | None, **kw: Any
           ) -> rtnb.StreamingFrame:
    return rtnb.sources.mqtt(topic, broker.url, example=EXAMPLE, time="timestamp",
                             partitions=N, client_id=client_id, max_events=n, **kw)


def spread(rows: pd.DataFrame) -> np.ndarray:
    # by seq, whatever the host: each key's windows are partial on several workers and
    # merged on the driver (producers use rtnb.partition_of on their key)
    parts = np.asarray(rtnb.partition_of(rows["seq"].astype(str), N))
    assert len(set(parts.tolist())) == N
    return parts


def seqs(items: list[tuple[bytes, Any]]) -> list[int]:
    return [json.loads(p)["seq"] for p, _ in items]


def test_a_partition_reader_reads_acks_moves_and_a_new_one_gets_the_unacked_first(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    topic, cid = fresh("dask")
    make_sessions(mosquitto.port, cid, topic, N)
    produce(mosquitto, topic, rows.iloc[:40], np.array([i % 2 for i in range(40)]))
    src = source(mosquitto, topic, cid, None).source
    reader = pickle.loads(pickle.dumps(src.partition_reader(1)))  # as on a worker
    first = reader.read(8, None)
    assert seqs(first) == [int(s) for s in rows["seq"].iloc[1:17:2]]  # topic /1, in order
    assert [reader.order(p) for _, p in first] == list(range(1, 9))
    reader.ack([p for _, p in first[:5]])
    moved = pickle.loads(pickle.dumps(reader))  # Dask moving the task: the old socket is shut
    reader.close()
    again = moved.read(100, None)  # goes on after what it read; the held ones stay held
    assert seqs(again) == [int(s) for s in rows["seq"].iloc[17:40:2]]
    assert [moved.order(p) for _, p in again] == list(range(9, 21))
    assert moved.read(100, None) == []
    moved.ack([p for _, p in first[5:6]])  # held across the move: acked on the new connection
    moved.close()  # 2 + 12 read and not acknowledged: kept in the session
    assert left(mosquitto.port, cid, topic, N) == [20, 14, 0, 0][:N]
    # a new reader (a partition rebuilt after its worker died): the unacknowledged ones
    # come first, in order, then the new ones; the dead reader's positions are placed by
    # their payload (an acknowledged one before everything)
    produce(mosquitto, topic, rows.iloc[41:44:2], np.array([1, 1]))
    fresh_reader = pickle.loads(pickle.dumps(src.partition_reader(1)))
    got = fresh_reader.read(100, None)
    assert seqs(got) == [int(s) for s in rows["seq"].iloc[[13, 15, *range(17, 40, 2), 41, 43]]]
    assert fresh_reader.order(first[6][1]) == 1 and fresh_reader.order(again[0][1]) == 3
    assert fresh_reader.order(first[0][1]) == 0 and fresh_reader.order(first[5][1]) == 0
    fresh_reader.ack([p for _, p in got])
    fresh_reader.close()
    assert left(mosquitto.port, cid, topic, N)[1] == 0


def test_windows_over_the_partitions_equal_one_process_and_pandas(
        mosquitto: Mosquitto, rows: pd.DataFrame, cluster2: Any) -> None:
    topic, cid = fresh("dask")
    make_sessions(mosquitto.port, cid, topic, N)
    produce(mosquitto, topic, rows, spread(rows))
    src = source(mosquitto, topic, cid, len(rows))
    outputs = windows(src)
    pipeline, got = run_on(cluster2, outputs, max_rows=200)
    assert [f.counters.late for f in outputs] == [0, 0, 0]
    assert_same(got, one_process(rows, src.example, windows))
    busy = rows[rows["cpu"] > 5]
    ref = busy.groupby([busy["timestamp"].dt.floor("1min").rename("window_start"),
                        "host"]).agg(n=("cpu", "count"), total=("cpu", "sum"),
                                     low=("cpu", "min"), high=("cpu", "max"))
    mine = got[0].set_index(["window_start", "host"])[["n", "total", "low", "high"]]
    pd.testing.assert_frame_equal(mine.sort_index(), ref.sort_index(), check_dtype=False,
                                  check_names=False, rtol=1e-9)
    stats = src.source.stats
    assert stats.events == stats.messages == len(rows) and stats.dead_letters == 0
    assert sorted(stats.partition_worker) == [f"{topic}/{p}" for p in range(N)]
    assert len(set(stats.partition_worker.values())) == 2
    assert pipeline.runner.workers.keys() == set(range(N))
    # nothing pending: every message delivered and acknowledged
    assert left(mosquitto.port, cid, topic, N) == [0] * N


@pytest.mark.faults  # kill -9: runs with the fault tests (tools/run_tests.sh)
def test_a_worker_killed_mid_run_loses_and_repeats_nothing(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    """kill -9 of the worker holding partition 0, a third of the way through, two ticks after
    a checkpoint: its partitions are rebuilt on the other worker, whose new readers resume
    the dead readers' sessions, get what those had not acknowledged first (resent, in order)
    and place the dead readers' positions by payload; the windows equal the one-process run
    and nothing is left in the sessions at the end."""
    topic, cid = fresh("kill")
    make_sessions(mosquitto.port, cid, topic, N)
    produce(mosquitto, topic, rows, spread(rows))

    got, _, src = killing_a_worker(
        lambda: source(mosquitto, topic, cid, len(rows)), light, max_rows=40)
    assert_same(got, one_process(rows, src.example, light))
    expected = rows.groupby([rows["timestamp"].dt.floor("1min").rename("window_start"),
                             "host"]).agg(n=("cpu", "count"), total=("cpu", "sum"),
                                          low=("latency_ms", "min"),
                                          high=("latency_ms", "max"))
    mine = got[0].set_index(["window_start", "host"])[["n", "total", "low", "high"]]
    pd.testing.assert_frame_equal(mine.sort_index(), expected.sort_index(),
                                  check_dtype=False, check_names=False, rtol=1e-9)
    assert src.source.stats.events == len(rows)
    assert left(mosquitto.port, cid, topic, N) == [0] * N
