"""``rtnb.partition_of``: Kafka's default partitioner, checked against Kafka's own vectors and
against librdkafka's ``murmur2`` partitioner producing to a real (mock) Kafka cluster."""

from __future__ import annotations

import confluent_kafka  # a test dependency (the kafka tests' mock cluster)
import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb.errors import ConfigError
from rtnb.partitions import murmur2

# kafka-python's test vectors, from Java's org.apache.kafka.common.utils.Utils.murmur2 and
# its DefaultPartitioner over 1,000 partitions
HASHES = {b"": 275646681, b"hello": 2132663229, b"kafka": 3496464228, b"test": 716234879,
          b"a": 2731586172}
PARTITIONS_OF_1000 = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566,
                      b"\x00 ": 742}


def test_murmur2_and_partitions_equal_javas() -> None:
    assert {k: murmur2(k) for k in HASHES} == HASHES
    assert {k: rtnb.partition_of(k, 1000) for k in PARTITIONS_OF_1000} == PARTITIONS_OF_1000


def test_an_array_gives_each_row_its_keys_partition() -> None:
    keys = pd.Series([f"host-{i % 37}" for i in range(1000)])
    got = rtnb.partition_of(keys, 8)
    assert got.dtype == np.int64 and got.tolist() == [rtnb.partition_of(k, 8) for k in keys]
    assert set(got) == set(range(8))  # 37 keys over 8 partitions: every one used here
    assert rtnb.partition_of(pd.array(keys, dtype="category"), 8).tolist() == got.tolist()
    assert rtnb.partition_of(7, 8) == rtnb.partition_of("7", 8)  # keys by their text


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_bad_partition_counts_are_refused(n: object) -> None:
    with pytest.raises(ConfigError, match="positive int"):
        rtnb.partition_of("a", n)  # type: ignore[call-overload]


def test_a_missing_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="missing"):
        rtnb.partition_of(pd.Series(["a", None]), 4)


def test_librdkafka_puts_each_key_where_partition_of_says() -> None:
    """Keyed messages produced with librdkafka's murmur2 partitioner (Kafka's Java default)
    to a topic of librdkafka's mock cluster (auto-created with 4 partitions; the mock has no
    controller for CreateTopics) land in ``partition_of(key, 4)``."""
    cluster = confluent_kafka.Producer({"bootstrap.servers": "", "test.mock.num.brokers": 1})
    brokers = ",".join(f"{b.host}:{b.port}" for b in cluster.list_topics(timeout=10)
                       .brokers.values())
    producer = confluent_kafka.Producer({"bootstrap.servers": brokers,
                                         "partitioner": "murmur2"})
    n = len(producer.list_topics("keys", timeout=10).topics["keys"].partitions)
    assert n == 4
    landed: dict[str, int] = {}

    def delivered(err: object, msg: object) -> None:
        assert err is None, err
        landed[msg.key().decode()] = msg.partition()  # type: ignore[attr-defined]

    keys = [f"web-{i:02d}" for i in range(40)] + ["db-01", "cache-02", "ü-ß", ""]
    for key in keys:
        producer.produce("keys", key=key.encode(), value=b"x", on_delivery=delivered)
    assert producer.flush(10) == 0
    assert landed == {k: rtnb.partition_of(k, n) for k in keys}
    assert len(set(landed.values())) == n
    del producer, cluster
