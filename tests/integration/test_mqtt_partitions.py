"""``rtnb.sources.mqtt(topic, partitions=N, client_id=...)`` against a private Mosquitto
(``max_queued_messages 0``: see mqtt_helpers.py): the N topics ``topic/0`` .. ``topic/{N-1}``
that ``rtnb.partition_of`` fills, each read with its own persistent session
``client_id-{p}`` and acknowledged after processing, consumed as one source aligned in event
time (issue 19: one topic per partition)."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from mqtt_helpers import (
    Mosquitto,
    Proxy,
    fresh,
    left,
    make_session,
    make_sessions,
    mosquitto,
    publish,
)

import rtnb
from rtnb.testing import assert_frame_equal_unordered

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

__all__ = ["mosquitto"]  # the module's private broker (a fixture)

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64", "seq": "int64"}
N = 4
BAD = b'{"timestamp": "2026-01-05T00:00:00", "host": "x", "cpu": "n/a", "seq": -1}'


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:2_000][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(len(df), dtype=np.int64)).reset_index(drop=True)


def as_json(r: Any) -> bytes:
    return json.dumps({"timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
                       "seq": int(r.seq)}).encode()


def produce(port: int, topic: str, rows: pd.DataFrame, *, skip: int | None = None,
            whole: bool = False, bad_at: int | None = None) -> pd.Series:
    """Each row to ``topic/{partition_of(host, N)}``, in order (but partition ``skip``);
    ``whole``: every row to ``topic/whole`` too; ``bad_at``: a bad message after that row."""
    parts = pd.Series(rtnb.partition_of(rows["host"], N), index=rows.index)
    todo = []
    for i, (r, p) in enumerate(zip(rows.itertuples(index=False), parts, strict=True)):
        if p != skip:
            todo.append((f"{topic}/{p}", as_json(r)))
        if i == bad_at:
            todo.append((f"{topic}/{p}", BAD))
    if whole:
        todo += [(f"{topic}/whole", as_json(r)) for r in rows.itertuples(index=False)]
    publish(port, todo)
    return parts


def source(broker: Mosquitto, topic: str, client_id: str, n: int, **kw: Any
           ) -> rtnb.StreamingFrame:
    return rtnb.sources.mqtt(topic, broker.url, example=EXAMPLE, time="timestamp",
                             partitions=N, client_id=client_id, max_events=n, **kw)


def per_minute(kept: pd.DataFrame) -> pd.DataFrame:
    return kept.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"].agg(
        n="count", mean="mean", hi="max").reset_index()


def test_partitions_read_as_one_source_every_row_once_acked_in_order_bad_ones_dead(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    topic, cid = fresh("part")
    make_sessions(mosquitto.port, cid, topic, N)  # what a first run leaves
    parts = produce(mosquitto.port, topic, rows, bad_at=1_234)
    assert parts.nunique() == N  # the 12 hosts spread over all 4 partitions
    src = source(mosquitto, topic, cid, len(rows))
    out, dead = src.collect(), src.dead_letters.collect()
    src.run()
    got = pd.concat(out, ignore_index=True)
    tm.assert_frame_equal(got.sort_values("seq", ignore_index=True), rows, check_dtype=False)
    for p in range(N):  # each partition in its own order
        seq = got.loc[rtnb.partition_of(got["host"], N) == p, "seq"]
        assert seq.is_monotonic_increasing and len(seq) == (parts == p).sum()
    bad = pd.concat(dead, ignore_index=True)
    assert bad["dead_letter_raw"].tolist() == [BAD]
    assert bad["dead_letter_node"].tolist() == ["mqtt"]
    assert bad["dead_letter_reason"].iloc[0] == "column 'cpu' (float64): 'n/a' is not a number"
    stats = src.source.stats
    assert stats.acked == len(rows) + 1 and stats.dead_letters == 1
    assert left(mosquitto.port, cid, topic, N) == [0] * N  # every message acknowledged


def test_windows_over_partitions_equal_pandas_and_the_unpartitioned_run(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    """Rows aligned in event time across the topics: windows with no allowed lateness equal
    pandas and the same pipeline reading every row from one topic. Without the alignment
    (the partitions read side by side as they come) rows turn late."""
    topic, cid = fresh("part")
    make_sessions(mosquitto.port, cid, topic, N)
    make_session(mosquitto.port, f"{cid}-whole", f"{topic}/whole")
    make_sessions(mosquitto.port, f"{cid}-side", topic, N)
    produce(mosquitto.port, topic, rows, whole=True)

    def run(src: rtnb.StreamingFrame) -> tuple[pd.DataFrame, int]:
        per_host = src.window(rtnb.tumbling("1min"), by="host").agg(
            n=("cpu", "count"), mean=("cpu", "mean"), hi=("cpu", "max"))
        out = per_host.collect()
        src.run()
        got = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
        return got[["host", "timestamp", "n", "mean", "hi"]], per_host.counters.late

    got, late = run(source(mosquitto, topic, cid, len(rows)))
    assert late == 0
    assert_frame_equal_unordered(got, per_minute(rows), check_dtype=False, check_exact=False,
                                 rtol=1e-9)
    whole, late = run(rtnb.sources.mqtt(f"{topic}/whole", mosquitto.url, example=EXAMPLE,
                                        time="timestamp", client_id=f"{cid}-whole",
                                        max_events=len(rows)))
    assert late == 0
    assert_frame_equal_unordered(got, whole, rtol=1e-9)
    # the same topics through sessions of their own, without the alignment: rows turn late
    side = source(mosquitto, topic, f"{cid}-side", len(rows), max_batch=50)
    side.source.align_partitions = None
    late_rows = side.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"))
    late_rows.collect()
    side.run()
    assert late_rows.counters.late > 0


def test_a_silent_partition_holds_the_others_back_only_for_idle_timeout(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    topic, cid = fresh("part")
    make_sessions(mosquitto.port, cid, topic, N)
    parts = produce(mosquitto.port, topic, rows, skip=3)  # partition 3 never sends anything
    kept = rows[(parts != 3).to_numpy()].reset_index(drop=True)
    src = source(mosquitto, topic, cid, len(kept), idle_timeout="300ms")
    per_host = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"))
    out = per_host.collect()
    started = time.monotonic()
    src.run()  # ends: the silent partition stops holding the rows back after 300 ms
    assert time.monotonic() - started < 30
    got = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
    assert per_host.counters.late == 0
    assert_frame_equal_unordered(got[["host", "timestamp", "n"]],
                                 per_minute(kept)[["host", "timestamp", "n"]],
                                 check_dtype=False)


def test_a_second_run_of_the_same_sessions_continues_without_duplicates(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    topic, cid = fresh("part")
    make_sessions(mosquitto.port, cid, topic, N)
    produce(mosquitto.port, topic, rows)
    first = source(mosquitto, topic, cid, 700, max_batch=100)
    out = first.collect()
    first.run()
    assert first.source.stats.acked == 700
    second = source(mosquitto, topic, cid, len(rows) - 700)
    more = second.collect()
    second.run()
    got = pd.concat(out + more, ignore_index=True).sort_values("seq", ignore_index=True)
    tm.assert_frame_equal(got, rows, check_dtype=False)  # nothing lost, nothing twice
    assert left(mosquitto.port, cid, topic, N) == [0] * N


def test_connections_cut_mid_stream_every_row_once(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    """Every partition's connection dropped twice while it reads: each reader resumes its
    session, takes back what it held (resent first) and acknowledges it once handled."""
    topic, cid = fresh("cut")
    make_sessions(mosquitto.port, cid, topic, N)
    produce(mosquitto.port, topic, rows)
    proxy = Proxy(mosquitto.port)

    async def main() -> tuple[list[pd.DataFrame], int]:
        src = rtnb.sources.mqtt(topic, f"mqtt://127.0.0.1:{proxy.port}", example=EXAMPLE,
                                time="timestamp", partitions=N, client_id=cid,
                                max_events=len(rows), max_batch=100)
        out = src.collect()
        src.start()
        for at in (len(rows) // 4, len(rows) // 2):
            while src.source.stats.events < at:
                assert src.graph.state == "running"
                await asyncio.sleep(0.002)
            proxy.cut()
        await asyncio.wait_for(src.wait(), 60)
        return out, proxy.cuts

    try:
        out, cuts = asyncio.run(main())
    finally:
        proxy.close()
    got = pd.concat(out, ignore_index=True).sort_values("seq", ignore_index=True)
    tm.assert_frame_equal(got, rows, check_dtype=False)  # every row once
    assert cuts == 2
    assert left(mosquitto.port, cid, topic, N) == [0] * N


def test_checkpoint_acks_live_and_after_the_run_and_a_crash_skips_the_barrier(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    """With checkpoints (``defer_acks``, the runtime's part played here): nothing is
    acknowledged before :meth:`ack`; a first barrier acknowledged on the live connections, a
    second one never (a crash); the next run, given the second barrier's positions, skips
    (and acknowledges) their resent copies and reads every row after it once; its own
    positions acknowledged after its end (a short connection per partition)."""
    topic, cid = fresh("defer")
    make_sessions(mosquitto.port, cid, topic, N)
    produce(mosquitto.port, topic, rows)

    async def until(done: Any) -> None:
        for _ in range(6_000):
            if done():
                return
            await asyncio.sleep(0.005)
        pytest.fail("not reached in 30 s")

    async def scenario() -> tuple[list[int], list[int], int]:
        first = source(mosquitto, topic, cid, 1_200, max_batch=50)
        first.source.defer_acks = True
        out1 = first.collect()
        first.start()
        taken = []
        for n in (400, 800):
            await until(lambda n=n: first.counters.events >= n)
            taken.append((first.source.take_acks(), first.counters.events))
        await first.source.ack(taken[0][0])  # on the live connections
        await asyncio.wait_for(first.wait(), 30)  # no more acks: a crash for the broker
        rows2 = taken[1][1]
        second = source(mosquitto, topic, cid, len(rows) - rows2)
        second.source.defer_acks = True
        second.source.resume_acks(pickle.loads(pickle.dumps(taken[1][0])))
        out2 = second.collect()
        await asyncio.wait_for(second.arun(), 30)
        await second.source.ack(second.source.take_acks())  # after the run
        return ([int(s) for f in out1 for s in f["seq"]],
                [int(s) for f in out2 for s in f["seq"]], rows2)

    one, two, rows2 = asyncio.run(scenario())
    assert len(one) == 1_200
    before = one[:rows2]  # what the second barrier covers
    assert sorted(before + two) == rows["seq"].tolist()  # each row once
    assert left(mosquitto.port, cid, topic, N) == [0] * N


def test_a_session_the_broker_lost_is_an_error_not_a_silent_gap(
        tmp_path: Any, rows: pd.DataFrame) -> None:
    """The broker restarts without persistence: the sessions are gone with what they held.
    A reader that had a session says so (and how to configure the broker) instead of going
    on from what is published next."""
    broker = Mosquitto(tmp_path).start()
    try:
        topic, cid = fresh("lost")
        make_sessions(broker.port, cid, topic, N)
        produce(broker.port, topic, rows.iloc[:200])
        src = source(broker, topic, cid, None)
        reader = src.source.partition_reader(0)
        assert reader.read(10, None)
        broker.stop()
        broker.start()  # the same port, no sessions
        with pytest.raises(rtnb.SourceError, match=r"source 'mqtt': the broker lost the "
                           r"session of '.*/0' .* no session for client id '.*-0' any more "
                           r"\(10 messages read and not acknowledged.*max_queued_messages 0"):
            reader.read(10, None)
        reader.close()
        # a partition rebuilt on a cluster that finds no session: the dead reader's positions
        # cannot be placed
        rebuilt = src.source.partition_reader(1)
        assert rebuilt.read(10, None) == []
        with pytest.raises(rtnb.SourceError, match="found no session of the partition"):
            rebuilt.order(("dead-reader", 3, 12345))
        rebuilt.close()
    finally:
        broker.stop()


def test_messages_read_that_do_not_come_back_unacknowledged_are_an_error(
        mosquitto: Mosquitto, rows: pd.DataFrame) -> None:
    """Read, not acknowledged, and not resent when the reader resumes its session (here:
    another client with the same id took and acknowledged them): lost, and said so."""
    topic, cid = fresh("gone")
    make_sessions(mosquitto.port, cid, topic, N)
    produce(mosquitto.port, topic, rows.iloc[:100])
    reader = source(mosquitto, topic, cid, None).source.partition_reader(0)
    assert len(reader.read(5, None)) == 5
    reader.close()  # the 5 stay in the session, unacknowledged
    assert left(mosquitto.port, cid, topic, 1, ack=True)[0] > 5  # someone else acks them
    with pytest.raises(rtnb.SourceError, match=r"the broker did not resend '.*/0' .*: 5 "
                                               r"messages read and never acknowledged did "
                                               r"not come back"):
        reader.read(5, None)
    reader.close()


def wait_for_dropped(port: int, at_least: int, timeout: float = 30.0) -> None:
    """Wait until Mosquitto's ``$SYS`` count of dropped messages reaches ``at_least``."""
    import paho.mqtt.client as mqtt

    seen: list[int] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sys-{uuid.uuid4().hex}")
    client.on_message = lambda c, u, m: seen.append(int(m.payload))
    client.connect("127.0.0.1", port)
    client.subscribe("$SYS/broker/publish/messages/dropped")
    deadline = time.monotonic() + timeout
    try:
        while not (seen and seen[-1] >= at_least):
            assert time.monotonic() < deadline, f"the broker reported {seen[-1:]} dropped"
            client.loop(timeout=0.2)
    finally:
        client.disconnect()


def test_a_drop_the_broker_reports_is_logged_with_the_setting_to_fix(
        tmp_path: Any, rows: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    """A Mosquitto with the default kind of limit (here 10 queued messages a session): what
    the offline sessions could not queue is dropped, silently for the clients; the reader
    resuming its session reads Mosquitto's count of dropped messages and says so."""
    broker = Mosquitto(tmp_path, max_queued=10).start()
    try:
        topic, cid = fresh("drop")
        make_sessions(broker.port, cid, topic, N)
        reader = source(broker, topic, cid, None).source.partition_reader(0)
        assert reader.read(10, None) == []  # connected once: what the broker counted then
        reader.close()
        parts = produce(broker.port, topic, rows.iloc[:400])
        assert parts.value_counts().min() > 10  # every session had more than it queues
        # Mosquitto refreshes its $SYS counters every sys_interval (1 s): wait until the
        # broker publishes the drops (a loaded machine can take longer than one interval)
        wait_for_dropped(broker.port, 400 - 10 * N)
        with caplog.at_level("WARNING", logger="rtnb.sources._mqtt"):
            assert len(reader.read(1_000, None)) == 10
        reader.close()
    finally:
        broker.stop()
    assert f"the broker reports {400 - 10 * N} messages dropped (all clients)" in caplog.text
    assert "max_queued_messages" in caplog.text and repr(f"{topic}/0") in caplog.text


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_partition_counts_are_refused(bad: object) -> None:
    with pytest.raises(rtnb.ConfigError, match="partitions must be a positive int"):
        rtnb.sources.mqtt("m", example=EXAMPLE, client_id="c",
                          partitions=bad)  # type: ignore[arg-type]


def test_partitions_need_a_topic_name_a_session_and_a_partition_number_in_range() -> None:
    for topic in ("m/+", "m/#", ["a", "b"]):
        with pytest.raises(rtnb.ConfigError, match=r"partitions are the topics "
                                                   r"'<topic>/<p>': give one topic name"):
            rtnb.sources.mqtt(topic, example=EXAMPLE, client_id="c", partitions=2)
    for kw in ({}, {"client_id": "c", "qos": 0}, {"client_id": "c", "clean_session": True},
               {"client_id": "c", "protocol": "3.1.1"}):
        with pytest.raises(rtnb.ConfigError, match=r"partitions need persistent MQTT 5 "
                                                   r"sessions with QoS 1"):
            rtnb.sources.mqtt("m", example=EXAMPLE, partitions=2, **kw)  # type: ignore[arg-type]
    src = rtnb.sources.mqtt("m", example=EXAMPLE, partitions=4, client_id="c", name="orders")
    for bad in (4, -1, True, "1"):
        with pytest.raises(rtnb.ConfigError,
                           match=r"source 'orders' has no partition .* \(partitions=4\)"):
            src.source.partition_reader(bad)  # type: ignore[arg-type]
    unpartitioned = rtnb.sources.mqtt("m", example=EXAMPLE)
    with pytest.raises(rtnb.ConfigError, match=r"has no partition 0 \(partitions=None\)"):
        unpartitioned.source.partition_reader(0)


def test_tls_and_secrets_carry_over_to_the_reader_never_shown(
        certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    monkeypatch.setenv("RTNB_TEST_MQTT_PASSWORD", "pa55-w0rd")
    src = rtnb.sources.mqtt("m", "mqtts://app@127.0.0.1:8883", example=EXAMPLE,
                            partitions=2, client_id="c", ca=str(certs.ca),
                            password_env="RTNB_TEST_MQTT_PASSWORD", name="orders").source
    reader = src.partition_reader(1)
    copy = pickle.loads(pickle.dumps(reader))  # what Dask sends to a worker
    assert copy.topic == "m/1" and copy.partition == 1 and copy.client_id == "c-1"
    assert copy._password == "pa55-w0rd" and copy._tls.ca == str(certs.ca)
    assert copy._client is None
    shown = repr(copy) + repr(reader) + repr(src) + str(vars(src.options))
    assert "pa55-w0rd" not in shown
    with_context = rtnb.sources.mqtt("m", example=EXAMPLE, partitions=2, client_id="c",
                                     tls=ssl.create_default_context(), name="orders").source
    with pytest.raises(rtnb.ConfigError, match=r"source 'orders': an ssl\.SSLContext cannot "
                                               r"be sent to Dask workers"):
        with_context.partition_reader(0)
