"""``rtnb.sinks.to_kafka`` against a Kafka-protocol broker: librdkafka's mock cluster.

The cluster runs in the test process (``kafka_helpers.MockKafka``: three brokers on
127.0.0.1; a topic is created on first use with 4 partitions). What the sink produced is
read back with confluent-kafka's Consumer, assigned every partition from the start, and
compared with pandas on the whole input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from kafka_helpers import PARTITIONS, MockKafka, kafka_cluster, mock_kafka

import rtnb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
__all__ = ["kafka_cluster"]  # the session fixture, imported for pytest

N = 1_500
SECRET = "s3cr3t-kafka"


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:N][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(N, dtype=np.int64)).reset_index(drop=True)


def consume(cluster: MockKafka, topic: str, n: int, timeout: float = 20.0) -> list[Any]:
    """The first ``n`` messages of every partition of ``topic`` (fails after ``timeout``)."""
    import confluent_kafka as ck

    consumer = cluster.consumer("rtnb-sink-test")
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)
                     for p in range(PARTITIONS)])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                assert message.error() is None, message.error()
                got.append(message)
    finally:
        consumer.close()
    assert len(got) == n, f"{len(got)} of {n} messages read back from {topic!r}"
    return got


def decoded(messages: list[Any], decode: Any = json.loads) -> pd.DataFrame:
    got = pd.DataFrame([decode(m.value()) for m in messages])
    got["timestamp"] = pd.to_datetime(got["timestamp"]).astype("datetime64[ns]")
    return got.sort_values("seq", kind="stable").reset_index(drop=True)


def header(message: Any) -> str:
    (name, value), = message.headers()
    assert name == "rtnb_id"
    return bytes(value).decode()


def test_every_row_delivered_once_with_its_id_header(kafka_cluster: MockKafka,
                                                     rows: pd.DataFrame) -> None:
    as_json, as_msgpack = kafka_cluster.topic(), kafka_cluster.topic()
    src = rtnb.sources.replay(rows, batch_size=300, name="metrics")
    sink = rtnb.sinks.to_kafka(src, as_json, kafka_cluster.bootstrap)
    packed = rtnb.sinks.to_kafka(src, as_msgpack, kafka_cluster.bootstrap, encoder="msgpack",
                                 name="packed")
    src.run()

    messages = consume(kafka_cluster, as_json, N)
    tm.assert_frame_equal(decoded(messages), rows, check_dtype=False)
    tm.assert_frame_equal(decoded(consume(kafka_cluster, as_msgpack, N), msgpack.unpackb),
                          rows, check_dtype=False)
    # each row's id, the same however the stream was cut into batches
    ids = [header(m) for m in messages]
    assert sorted(ids) == sorted(sink.row_ids(rows)) and len(set(ids)) == N
    for s in (sink, packed):
        assert (s.stats.delivered_rows, s.acknowledged_messages, s.failed_messages) == (N, N, 0)
        assert s.stats.failed_attempts == 0 and s.stats.undeliverable_rows == 0
    assert sum(kafka_cluster.ends(as_json).values()) == N  # nothing produced twice


def test_keyed_rows_land_in_partition_of_their_key_in_order(kafka_cluster: MockKafka,
                                                             rows: pd.DataFrame) -> None:
    topic = kafka_cluster.topic()
    src = rtnb.sources.replay(rows, batch_size=250)
    rtnb.sinks.to_kafka(src, topic, kafka_cluster.bootstrap, key="host")
    src.run()

    messages = consume(kafka_cluster, topic, N)
    got = pd.DataFrame({"host": [json.loads(m.value())["host"] for m in messages],
                        "key": [m.key().decode() for m in messages],
                        "partition": [m.partition() for m in messages],
                        "seq": [json.loads(m.value())["seq"] for m in messages]})
    assert (got["key"] == got["host"]).all()
    expected = rtnb.partition_of(got["host"], PARTITIONS)
    np.testing.assert_array_equal(got["partition"].to_numpy(), expected)
    assert got["partition"].nunique() > 1  # the hosts spread over partitions
    # a partition is read in order: each host's rows arrive in the order they were sent
    assert got.groupby("host")["seq"].apply(lambda s: s.is_monotonic_increasing).all()
    tm.assert_series_equal(got["seq"].sort_values(ignore_index=True), rows["seq"],
                           check_names=False, check_dtype=False)


def test_a_broker_going_away_counts_failed_reports_retries_and_undeliverable_rows(
        rows: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    example = rows.iloc[:0]
    with mock_kafka() as cluster:
        topic = cluster.topic()

        async def scenario() -> tuple[Any, Any]:
            sdf = rtnb.StreamingFrame(example, name="orders")
            common: dict[str, Any] = {"timeout": "1s", "retries": 1, "failures": 3}
            dropping = rtnb.sinks.to_kafka(sdf, topic, cluster.bootstrap, on_failure="drop",
                                           reset_after="60s", **common)
            # flush() tries the spool again after reset_after (and fails again)
            spooling = rtnb.sinks.to_kafka(sdf, topic, cluster.bootstrap, name="spooled",
                                           spool=tmp_path / "spool", reset_after="1s",
                                           **common)
            sdf.emit(rows.iloc[:500])
            await asyncio.wait_for(dropping.flush(), 20)
            await asyncio.wait_for(spooling.flush(), 20)
            assert dropping.stats.delivered_rows == spooling.stats.delivered_rows == 500
            cluster.close()  # every broker gone
            for start in (500, 1000):
                sdf.emit(rows.iloc[start:start + 500])
            await asyncio.wait_for(dropping.flush(), 20)
            await asyncio.wait_for(spooling.flush(), 20)
            return dropping, spooling

        with caplog.at_level(logging.ERROR, logger="rtnb"):
            dropping, spooling = asyncio.run(scenario())
    for sink in (dropping, spooling):
        stats = sink.stats
        assert sink.acknowledged_messages == 500 and sink.failed_messages >= 500, sink
        # retried (retries=1), until the circuit opened after 3 failed attempts in a row
        assert stats.failed_attempts >= 3 and sink.breaker.state == "open"
        assert f"kafka sink {sink.name!r}: 500 of 500 messages to topic {topic!r}" in \
            stats.last_error
        assert "not delivered: Local: Message timed out (_MSG_TIMED_OUT)" in stats.last_error
        assert "; librdkafka: " in stats.last_error  # e.g. a connection refused
    # 3 failed attempts open the circuit; on a loaded machine its half-open probe may come
    # due before the stream ends and fail once more (4 in a fresh make test)
    assert dropping.stats.failed_attempts in (3, 4)
    assert dropping.stats.undeliverable_rows == 1000 and dropping.stats.spooled_rows == 0
    assert "sink 'orders.kafka' dropped 500 rows it could not deliver" in caplog.text
    # the spooling sink kept them for the next run, counted
    assert spooling.stats.spooled_rows == 1000 and spooling.stats.undeliverable_rows == 0
    spooled = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "spool").iterdir())])
    tm.assert_frame_equal(spooled.reset_index(drop=True), rows.iloc[500:].reset_index(drop=True))


def test_bad_parameters_are_config_errors_naming_the_sink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    sdf = rtnb.StreamingFrame(pd.DataFrame({"host": pd.Series([], dtype=str)}), name="cpu")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"key": "hots"}, r"kafka sink 'cpu.kafka': key 'hots' is not a column of frame "
                          r"'cpu'; columns \['host'\]"),
        ({"encoder": "xml"}, r"kafka sink 'cpu.kafka': `encoder` must be 'json', "
                             r"'msgpack', 'arrow', 'avro' or a format of rtnb.formats"),
        ({"tls": ssl.create_default_context(), "name": "out"},
         r"kafka sink 'out': `tls` must be True or False .*pass them as ca=, cert=, tls_key="),
        ({"ca": str(tmp_path / "nothing.pem")},
         r"kafka sink 'cpu.kafka': the TLS CA file '.*nothing\.pem' does not exist"),
        ({"password_env": "RTNB_NO_SUCH_VARIABLE", "username": "u"},
         r"kafka sink 'cpu.kafka': environment variable 'RTNB_NO_SUCH_VARIABLE' is not set"),
        ({"password": "x"}, r"kafka sink 'cpu.kafka': a password needs `username`"),
        ({"sasl_mechanism": "GSSAPI", "username": "u"},
         r"`sasl_mechanism` must be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
        ({"timeout": "0s"}, r"kafka sink 'cpu.kafka': `timeout` must be at least 1 ms"),
        ({"retries": -1}, r"sink 'cpu.kafka': `retries` must be a non-negative int"),
    ]
    monkeypatch.delenv("RTNB_NO_SUCH_VARIABLE", raising=False)
    for kwargs, message in cases:
        with pytest.raises(rtnb.ConfigError, match=message):
            rtnb.sinks.to_kafka(sdf, "out", "127.0.0.1:9092", **kwargs)
    with pytest.raises(rtnb.ConfigError, match=r"kafka sink 'cpu.kafka': `topic` must be"):
        rtnb.sinks.to_kafka(sdf, "")


def test_exported_script_writes_to_kafka_and_holds_no_secret(
        kafka_cluster: MockKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = kafka_cluster.topic()
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics")
    rtnb.sinks.to_kafka(src, topic, kafka_cluster.bootstrap, key="host", name="out")
    script = rtnb.Pipeline(src).export(tmp_path / "job.py")
    assert "rtnb.sinks.to_kafka(" in script.read_text()
    done = subprocess.run([sys.executable, "-I", str(script), "--max-events", str(N)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=40,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    messages = consume(kafka_cluster, topic, N)
    expected = rtnb.datasets.metrics().iloc[:N]
    got = pd.DataFrame([json.loads(m.value()) for m in messages])
    assert sorted(got["cpu"]) == sorted(expected["cpu"])
    partitions = np.array([m.partition() for m in messages])
    np.testing.assert_array_equal(partitions, rtnb.partition_of(got["host"], PARTITIONS))

    # a SASL password: read from the environment by the script, never written into it
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics")
    rtnb.sinks.to_kafka(src, topic, kafka_cluster.bootstrap, username="svc",
                        password=SECRET, name="out")
    script = rtnb.Pipeline(src).export(tmp_path / "secret.py")
    text = script.read_text()
    assert SECRET not in text and "rtnb.sinks.to_kafka(" in text
    assert "password_env='RTNB_OUT_PASSWORD'" in text
    monkeypatch.setenv("RTNB_OUT_PASSWORD", SECRET)
    pipeline = runpy.run_path(str(script), run_name="rtnb_kafka_sink_test")["build"]()
    (sink,) = pipeline.sinks
    assert sink._config["sasl.password"] == SECRET and sink._config["sasl.username"] == "svc"
    assert os.environ["RTNB_OUT_PASSWORD"] == SECRET
