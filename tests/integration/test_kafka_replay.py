"""``rtnb replay --to kafka://...``: the bundled data into a real (mock) Kafka cluster, keyed
by host so Kafka's default partitioner puts every host's rows in ``partition_of(host, 4)``,
then read back by ``rtnb.sources.kafka``: every row once, windows equal pandas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from kafka_helpers import PARTITIONS, MockKafka, kafka_cluster

import rtnb
from rtnb.testing import assert_frame_equal_unordered

__all__ = ["kafka_cluster"]  # the session fixture, imported for pytest

pytestmark = pytest.mark.integration

RTNB = Path(sys.executable).with_name("rtnb")
ROWS = 3_000
EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64",
           "latency_ms": "float64", "requests": "int64"}


def test_replay_into_kafka_keyed_by_host_and_back(kafka_cluster: MockKafka) -> None:
    topic = kafka_cluster.topic("replay")
    done = subprocess.run(
        [str(RTNB), "replay", str(rtnb.datasets.metrics_path()), "--max-events", str(ROWS),
         "--to", f"kafka://{kafka_cluster.bootstrap}", "--topic", topic, "--key", "host"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"delivered {ROWS}, undeliverable 0" in done.stderr
    assert sum(kafka_cluster.ends(topic).values()) == ROWS  # nothing twice

    # every message keyed by its host, in the host's partition_of partition
    consumer = kafka_cluster.consumer("replay-check")
    consumer.assign([kafka_cluster._ck.TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen: dict[str, set[int]] = {}
    got = 0
    while got < ROWS:
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None, msg and msg.error()
        host = json.loads(msg.value())["host"]
        assert msg.key().decode() == host
        seen.setdefault(host, set()).add(msg.partition())
        got += 1
    consumer.close()
    assert {h: p for h, ps in seen.items() for p in ps} == {
        h: rtnb.partition_of(h, PARTITIONS) for h in seen}
    assert all(len(ps) == 1 for ps in seen.values())

    src = rtnb.sources.kafka(topic, kafka_cluster.bootstrap, example=EXAMPLE, time="timestamp",
                             max_events=ROWS)
    per_host = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"),
                                                               hi=("cpu", "max"))
    out = per_host.collect()
    src.run()
    rows = rtnb.datasets.metrics().iloc[:ROWS]
    expected = rows.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"].agg(
        n="count", hi="max").reset_index()
    got_windows = pd.concat(out, ignore_index=True).rename(
        columns={"window_start": "timestamp"})[["host", "timestamp", "n", "hi"]]
    assert_frame_equal_unordered(got_windows, expected, check_dtype=False)


def test_partitions_filled_one_after_another_are_aligned_in_event_time(
        kafka_cluster: MockKafka) -> None:
    """A backlog whose partitions hold very different stretches of event time at the front
    (one partition's whole day before the next's): the source aligns the partitions in event
    time, so windows with no allowed lateness equal pandas with no late row."""
    topic = kafka_cluster.topic("aligned")
    rows = rtnb.datasets.metrics().iloc[:ROWS].reset_index(drop=True)
    parts = rtnb.partition_of(rows["host"], PARTITIONS)
    order = pd.Series(parts).sort_values(kind="stable").index
    values = [json.dumps({"timestamp": t.isoformat(), "host": h, "cpu": c,
                          "latency_ms": lat, "requests": int(r)}).encode()
              for t, h, c, lat, r in rows.loc[order].itertuples(index=False)]
    kafka_cluster.produce(topic, values, partition=lambda i: int(parts[order[i]]))
    src = rtnb.sources.kafka(topic, kafka_cluster.bootstrap, example=EXAMPLE,
                             time="timestamp", max_events=ROWS, max_batch=200)
    per_host = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"))
    out = per_host.collect()
    src.run()
    expected = rows.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"].agg(
        n="count").reset_index()
    got = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
    assert per_host.counters.late == 0
    assert_frame_equal_unordered(got[["host", "timestamp", "n"]], expected, check_dtype=False)
