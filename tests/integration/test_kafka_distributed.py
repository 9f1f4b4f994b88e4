"""A Kafka topic's partitions read on a Dask ``LocalCluster`` (issue 19), against librdkafka's
mock cluster.

The mock brokers run inside the test process (``kafka_helpers.MockKafka``) and listen on
127.0.0.1 TCP ports: the worker processes of the ``LocalCluster`` connect to them there, as
they would to any broker (``test_a_worker_process_reaches_the_mock_brokers`` checks it
first). Each partition is read on a worker by ``KafkaPartitionReader`` (confluent-kafka,
assigned by the driver), windows are merged on the driver; every result is compared with the
same pipeline in one process (fed the rows in order, and the aiokafka source itself) and the
tumbling windows with pandas directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import uuid
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
from kafka_helpers import PARTITIONS, MockKafka, kafka_cluster

import rtnb
from rtnb.errors import ConfigError, SourceError

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["kafka_cluster"]  # the session fixture, imported for pytest

@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return metrics_rows()


def as_json(rows: pd.DataFrame) -> list[bytes]:
    return [json.dumps({"timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
                        "latency_ms": r.latency_ms, "seq": int(r.seq)}).encode()
            for r in rows.itertuples(index=False)]


def group() -> str:
    return f"g{uuid.uuid4().hex[:8]}"


def counts(sdf: rtnb.StreamingFrame) -> list[rtnb.StreamingFrame]:
    return [sdf.window(rtnb.tumbling("10min")).agg(n=("cpu", "count"), total=("seq", "sum"))]


def run(outputs: list[rtnb.StreamingFrame], cluster: Any = None, **kw: Any
        ) -> tuple[rtnb.Pipeline, list[pd.DataFrame]]:
    return run_on(cluster, outputs, **kw)


def source(cluster: MockKafka, topic: str, n: int | None, **kw: Any) -> rtnb.StreamingFrame:
    return rtnb.sources.kafka(topic, cluster.bootstrap, example=EXAMPLE, time="timestamp",
                              max_events=n, **kw)


def _reach(bootstrap: str, topic: str) -> int:
    """In a worker process: the topic's partitions, from the mock brokers' metadata."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "probe",
                                         "log_level": 3})
    try:
        return len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    finally:
        consumer.close()


def test_a_worker_process_reaches_the_mock_brokers(kafka_cluster: MockKafka,
                                                   cluster2: Any) -> None:
    topic = kafka_cluster.topic()
    with distributed.Client(cluster2) as client:
        workers = sorted(client.scheduler_info()["workers"])
        found = [client.submit(_reach, kafka_cluster.bootstrap, topic, workers=[w],
                               pure=False).result(timeout=30) for w in workers]
    assert found == [PARTITIONS] * len(workers) and len(workers) == 2


def test_a_partition_reader_reads_commits_and_resumes_from_the_committed_offset(
        kafka_cluster: MockKafka) -> None:
    topic = kafka_cluster.topic()
    kafka_cluster.produce(topic, [f"m{i}".encode() for i in range(100)])  # 25 per partition
    g = group()
    src = source(kafka_cluster, topic, None, group=g, partitions=[2]).source
    reader = pickle.loads(pickle.dumps(src.partition_reader(0)))  # as on a worker
    first = reader.read(10, None)  # non-blocking, yet the first fetch is waited for
    assert first == [(f"m{4 * i + 2}".encode(), (2, i)) for i in range(10)]
    assert reader.lag() == 15 and reader.order((2, 7)) == 7
    reader.ack([position for _, position in first[4::-1]])  # 0 .. 4, in any order
    assert kafka_cluster.committed(topic, g)[2] == 5  # the offset after the highest
    reader.ack([(2, 3)])  # older: no step back
    assert kafka_cluster.committed(topic, g)[2] == 5
    moved = pickle.loads(pickle.dumps(reader))  # Dask moving the task to another worker
    reader.close()
    again = moved.read(100, None)  # goes on after what it read: 10 .. 24
    assert [position[1] for _, position in again] == list(range(10, 25))
    assert moved.read(100, 100) == [] and moved.lag() == 0
    moved.ack([again[-1][1]])
    moved.close()
    assert kafka_cluster.committed(topic, g) == {0: -1001, 1: -1001, 2: 25, 3: -1001}
    # a new reader of the group (a partition rebuilt after its worker died): from the
    # committed offset, so what was read and not committed comes again
    kafka_cluster.produce(topic, [b"x"] * 8)  # 2 more per partition: offsets 25, 26
    fresh = src.partition_reader(0)
    reader = pickle.loads(pickle.dumps(fresh))
    assert [position for _, position in reader.read(1, None)] == [(2, 25)]
    reader.close()
    reader = pickle.loads(pickle.dumps(fresh))
    assert [position for _, position in reader.read(10, None)] == [(2, 25), (2, 26)]
    reader.close()
    # acknowledged before being read (what a checkpoint covered): reading goes on after them
    other = source(kafka_cluster, topic, None, group=group(), partitions=[1]).source
    reader = other.partition_reader(0)
    reader.ack([(1, 19)])
    assert [position for _, position in reader.read(100, None)] == [(1, i) for i in range(20, 27)]
    reader.close()


def test_windows_over_the_topics_partitions_equal_one_process_and_pandas(
        kafka_cluster: MockKafka, rows: pd.DataFrame, cluster2: Any) -> None:
    topic = kafka_cluster.topic()
    kafka_cluster.produce(topic, as_json(rows))  # message i to partition i % 4: hosts spread
    g = group()
    src = source(kafka_cluster, topic, len(rows), group=g)
    assert src.source.partitions == PARTITIONS  # partitions=None: from the brokers' metadata
    assert src.source.streams == [f"{topic}:{p}" for p in range(PARTITIONS)]
    outputs = windows(src)
    pipeline, got = run(outputs, cluster2, max_rows=900)
    assert [f.counters.late for f in outputs] == [0, 0, 0]
    want = one_process(rows, src.example, windows)
    assert_same(got, want)
    # the aiokafka source in one process, on a group of its own
    _, alone = run(windows(source(kafka_cluster, topic, len(rows), group=group())))
    assert_same(got, alone)
    # pandas on the whole input: the tumbling minute per host
    busy = rows[rows["cpu"] > 5]
    ref = busy.groupby([busy["timestamp"].dt.floor("1min").rename("window_start"),
                        "host"]).agg(n=("cpu", "count"), mean=("cpu", "mean"),
                                     p90=("latency_ms", lambda v: v.quantile(0.9)))
    mine = got[0].set_index(["window_start", "host"])[["n", "mean", "p90"]].sort_index()
    pd.testing.assert_frame_equal(mine, ref.sort_index(), check_dtype=False, check_names=False,
                                  rtol=1e-9)
    stats = src.source.stats
    assert stats.events == stats.messages == len(rows) and stats.dead_letters == 0
    assert sorted(stats.partition_worker) == src.source.streams
    assert len(set(stats.partition_worker.values())) == 2
    assert stats.partition_lag == dict.fromkeys(src.source.streams, 0)
    assert pipeline.runner.workers.keys() == set(range(PARTITIONS))
    ends = kafka_cluster.ends(topic)
    assert sum(ends.values()) == len(rows)
    assert kafka_cluster.committed(topic, g) == ends  # every offset committed for the group

    # the same group again, nothing new: nothing is read
    async def idle_run() -> int:
        again = source(kafka_cluster, topic, None, group=g)
        out = counts(again)[0]
        pipeline = rtnb.Pipeline(out)
        pipeline.start(cluster=cluster2)
        for _ in range(100):  # until every partition reported its lag (read nothing)
            await asyncio.sleep(0.1)
            if len(again.source.stats.partition_lag or {}) == PARTITIONS:
                break
        await asyncio.sleep(0.5)
        pipeline.stop()
        await again.wait()
        assert again.source.stats.partition_lag == dict.fromkeys(again.source.streams, 0)
        return int(again.source.stats.messages)

    assert asyncio.run(idle_run()) == 0
    # ... and with 40 new messages, exactly those (a re-read would read up to 4 x 40)
    later = rows.iloc[:40].assign(timestamp=rows["timestamp"].iloc[:40] + pd.Timedelta("3h"),
                                  seq=np.arange(len(rows), len(rows) + 40))
    kafka_cluster.produce(topic, as_json(later))
    again = source(kafka_cluster, topic, 40, group=g)
    _, (tail,) = run(counts(again), cluster2)
    assert again.source.stats.messages == 40
    assert int(tail["n"].sum()) == 40 and int(tail["total"].sum()) == int(later["seq"].sum())
    assert kafka_cluster.committed(topic, g) == kafka_cluster.ends(topic)


def test_partitions_asked_for_are_the_ones_read_and_committed_with_dead_letters(
        kafka_cluster: MockKafka, rows: pd.DataFrame, cluster2: Any) -> None:
    topic = kafka_cluster.topic()
    head = rows.iloc[:4_000]
    bad = [b"{not json", json.dumps({"timestamp": "2026-01-05T00:10:00", "host": "x",
                                     "cpu": "hot", "latency_ms": 1.0, "seq": 1}).encode()]
    # first, at offsets 0 and 1: a run stops after exactly max_events rows, so messages
    # after the last row would not be read
    kafka_cluster.produce(topic, bad, partition=lambda i: 1)
    kafka_cluster.produce(topic, as_json(head))
    mine = head[head["seq"] % PARTITIONS % 2 == 1]  # partitions 1 and 3
    g = group()
    src = source(kafka_cluster, topic, len(mine), group=g, partitions=[3, 1])
    assert src.source.partitions == 2 and src.source.streams == [f"{topic}:1", f"{topic}:3"]
    dead = src.dead_letters.collect()
    _, got = run(windows(src), cluster2, max_rows=700)
    assert_same(got, one_process(mine, src.example, windows))
    letters = pd.concat(dead, ignore_index=True)
    assert letters["dead_letter_raw"].map(
        lambda v: v.encode() if isinstance(v, str) else v).tolist() == bad
    assert letters["dead_letter_position"].tolist() == ["(1, 0)", "(1, 1)"]
    assert letters["dead_letter_reason"].str.contains("cpu").iloc[1]
    assert sorted(src.source.stats.partition_worker) == src.source.streams
    committed, ends = kafka_cluster.committed(topic, g), kafka_cluster.ends(topic)
    assert [committed[1], committed[3]] == [ends[1], ends[3]] == [1_002, 1_000]
    assert committed[0] < 0 and committed[2] < 0  # never assigned: nothing committed


def test_a_missing_topic_partition_or_tls_context_is_refused_naming_the_source(
        kafka_cluster: MockKafka, cluster2: Any) -> None:
    topic = kafka_cluster.topic()
    src = rtnb.sources.kafka("no-such-topic", kafka_cluster.bootstrap, example=EXAMPLE,
                             time="timestamp", name="orders")
    with pytest.raises(SourceError, match=r"source 'orders': topic 'no-such-topic' does not "
                                          r"exist on 127\.0\.0\.1:"):
        rtnb.Pipeline(counts(src)[0]).run(cluster=cluster2)
    src = source(kafka_cluster, topic, 10, partitions=[0, 9])
    with pytest.raises(SourceError, match=rf"partition '{topic}:9' failed on worker .*has "
                                          r"partitions \[0, 1, 2, 3\]; asked for \[9\]"):
        rtnb.Pipeline(counts(src)[0]).run(cluster=cluster2)
    assert src.graph.state == "failed"
    import ssl

    src = source(kafka_cluster, topic, 10, tls=ssl.create_default_context())
    with pytest.raises(ConfigError, match=r"an ssl\.SSLContext cannot be used by a partition "
                                          r"reader .* give tls=True with ca="):
        rtnb.Pipeline(counts(src)[0]).run(cluster=cluster2)


def test_tls_and_sasl_carry_over_to_the_reader_without_showing_the_password(
        kafka_cluster: MockKafka, monkeypatch: pytest.MonkeyPatch, certs: Any,
        client_cert: Any, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("RTNB_TEST_KAFKA_PW", "pa55-word")
    src = rtnb.sources.kafka("metrics", "broker:9093", example=EXAMPLE, group="billing",
                             username="svc", password_env="RTNB_TEST_KAFKA_PW",
                             ca=str(certs.ca), cert=str(client_cert.cert),
                             key=str(client_cert.key), partitions=[0, 2], name="orders").source
    config = src.librdkafka_config()
    assert config == {
        "bootstrap.servers": "broker:9093", "group.id": "billing", "client.id": "rtnb-orders",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest", "allow.auto.create.topics": False,
        "ssl.ca.location": str(certs.ca), "ssl.certificate.location": str(client_cert.cert),
        "ssl.key.location": str(client_cert.key), "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN", "sasl.username": "svc"}
    reader = src.partition_reader(1)
    assert (reader.partition, reader.stream) == (2, "metrics:2")
    copy = pickle.loads(pickle.dumps(reader))  # what Dask sends to a worker
    assert copy._password == "pa55-word" and copy._consumer is None
    assert "pa55" not in repr(copy) + repr(src) + str(config)
    with pytest.raises(ConfigError, match=r"has no partition 2 \(it reads 2: "):
        src.partition_reader(2)
    # a reader whose brokers refuse it: the error names the source, never the password
    plain = rtnb.sources.kafka("metrics", kafka_cluster.bootstrap, example=EXAMPLE,
                               username="svc", password="pa55-word", partitions=[0],
                               name="orders").source
    reader = plain.partition_reader(0)
    reader._config = {**reader._config, "socket.timeout.ms": 2000}
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceError) as failed:
        import rtnb.sources._kafka as kafka_module

        monkeypatch.setattr(kafka_module, "METADATA_TIMEOUT_S", 3.0)
        reader.read(10, None)
    assert "source 'orders'" in str(failed.value)
    assert "pa55" not in str(failed.value) + caplog.text


@pytest.mark.faults  # kill -9: runs with the fault tests (tools/run_tests.sh)
def test_a_worker_killed_mid_run_loses_and_repeats_nothing(
        kafka_cluster: MockKafka, rows: pd.DataFrame) -> None:
    """kill -9 of the worker holding partition 0, a third of the way through, two ticks after
    a checkpoint: its partitions are rebuilt on the other worker and their new readers start
    at the group's committed offsets (what the checkpoint covered); the windows equal the
    one-process run and every offset is committed at the end."""

    topic = kafka_cluster.topic()
    kafka_cluster.produce(topic, as_json(rows))
    g = group()

    got, _, src = killing_a_worker(
        lambda: source(kafka_cluster, topic, len(rows), group=g), windows, max_rows=60)
    assert_same(got, one_process(rows, src.example, windows))
    assert src.source.stats.events == len(rows)
    assert kafka_cluster.committed(topic, g) == kafka_cluster.ends(topic)
