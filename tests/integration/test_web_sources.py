"""WebSocket, SSE and file-tail sources against real servers and files on this machine.

The feed server (``rtnb.demo.FeedServer``) is real: it listens on 127.0.0.1, speaks the
WebSocket protocol (``websockets``) and HTTP/1.1 SSE, and is stopped and restarted mid-stream
by the fault tests. Every test compares what came out with the rows that went in.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb import SourceError
from rtnb.demo import FeedServer

pytestmark = pytest.mark.integration

N = 3_000


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return rtnb.datasets.metrics().iloc[:N].reset_index(drop=True)


def expected_rows(feed: FeedServer) -> pd.DataFrame:
    return feed.data.reset_index(drop=True)


def collected(out: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


async def run_until(src: rtnb.StreamingFrame, cond: Any, timeout: float = 30.0) -> None:
    """Start ``src``, wait until ``cond()`` holds, stop it and wait for the end."""
    src.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            src.stop()
            await src.wait()
            msg = "condition not reached in time"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)
    src.stop()
    await src.wait()


# -- records in = records out ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["websocket", "sse"])
@pytest.mark.parametrize("per_message", [1, 50])
def test_every_record_arrives_once_in_order_with_the_schema(data, kind, per_message):
    async def scenario() -> tuple[pd.DataFrame, Any, Any]:
        feed = await rtnb.demo.serve_feed(data, rate=None, per_message=per_message)
        url = feed.ws_url if kind == "websocket" else feed.sse_url
        src = getattr(rtnb.sources, kind)(url, example=feed.example, time="timestamp",
                                          max_events=N)
        out = src.collect()
        await src.arun()
        await feed.stop()
        return collected(out), feed, src.source

    got, feed, source = asyncio.run(scenario())
    tm.assert_frame_equal(got, expected_rows(feed))
    assert source.stats.events == N and source.stats.dead_letters == 0
    assert source.stats.batches < N / per_message  # micro-batched, not one row per batch


def test_strings_are_coerced_to_the_schema_and_bad_records_dead_lettered():
    good = [{"t": "2026-01-01T00:00:00Z", "host": "a", "cpu": "1.5", "n": 1},
            {"t": 1767225601, "host": "b", "cpu": 2, "n": "2"}]
    bad = ["not json", json.dumps({"t": "2026-01-01T00:00:03", "host": "c", "cpu": "high",
                                   "n": 3}),
           json.dumps({"t": "2026-01-01T00:00:04", "host": "d", "cpu": 1.0}),  # n missing
           json.dumps([1, 2])]
    lines = [json.dumps(good[0]), bad[0], bad[1], json.dumps(good[1]), bad[2], bad[3]]

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, Any]:
        feed = FeedServer(pd.DataFrame({"x": range(len(lines))}), rate=None)
        feed._lines = lines  # the raw messages, as a misbehaving producer sends them
        await feed.start()
        src = rtnb.sources.websocket(feed.ws_url, time="t", example={
            "t": "datetime64[ns]", "host": "str", "cpu": "float64", "n": "int64"},
            max_events=2)
        out, dead = src.collect(), src.dead_letters.collect()
        await src.arun()
        await feed.stop()
        return collected(out), collected(dead), src

    got, dead, src = asyncio.run(scenario())
    expected = pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:01"]),
                             "host": ["a", "b"], "cpu": [1.5, 2.0], "n": [1, 2]})
    tm.assert_frame_equal(got, expected, check_dtype=False)
    assert got["n"].dtype == np.int64 and got["t"].dtype == "datetime64[ns]"
    assert dead["dead_letter_raw"].tolist() == bad
    reasons = dead["dead_letter_reason"].tolist()
    assert reasons[0].startswith("json decode failed")
    assert reasons[1] == "column 'cpu' (float64): 'high' is not a number"
    assert reasons[2] == "column 'n' (int64): missing"
    assert "must be an object or a list of objects" in reasons[3]
    assert dead["dead_letter_position"].tolist() == ["2", "3", "5", "6"]
    assert set(dead["dead_letter_node"]) == {"websocket"}
    assert src.counters.dead_letters == 4 == src.source.stats.dead_letters


# -- auth, secrets and TLS -------------------------------------------------------------------
def test_token_from_the_environment_and_a_clear_refusal(data, monkeypatch, capsys):
    monkeypatch.setenv("RTNB_TEST_FEED_TOKEN", "s3cret-token")

    async def scenario() -> tuple[int, str, str]:
        feed = await rtnb.demo.serve_feed(data, rate=None, token="s3cret-token")
        ok = rtnb.sources.sse(feed.sse_url, example=feed.example, time="timestamp",
                              token_env="RTNB_TEST_FEED_TOKEN", max_events=100)
        out = ok.collect()
        await ok.arun()
        wrong = rtnb.sources.websocket(feed.ws_url, example=feed.example, token="nope")
        with pytest.raises(SourceError) as refused:
            await wrong.arun()
        await feed.stop()
        return len(collected(out)), str(refused.value), repr(ok.source) + repr(ok)

    n, message, reprs = asyncio.run(scenario())
    assert n == 100
    assert "refused the connection (HTTP 401)" in message and "nope" not in message
    assert "s3cret" not in reprs + capsys.readouterr().err


def test_missing_token_variable_is_named():
    with pytest.raises(rtnb.ConfigError, match="'RTNB_NO_SUCH_VAR' is not set"):
        rtnb.sources.websocket("ws://127.0.0.1:1/x", example={"x": "float64"},
                               token_env="RTNB_NO_SUCH_VAR")


@pytest.mark.parametrize("kind", ["websocket", "sse"])
def test_tls_with_a_ca_made_by_the_test(data, certs, kind):
    async def scenario() -> tuple[int, str]:
        feed = await rtnb.demo.serve_feed(data, rate=None, ssl=certs.server_context())
        url = feed.ws_url if kind == "websocket" else feed.sse_url
        assert url.startswith(("wss://", "https://"))
        src = getattr(rtnb.sources, kind)(url, example=feed.example, time="timestamp",
                                          ca=str(certs.ca), max_events=500)
        out = src.collect()
        await src.arun()
        # without the CA the certificate is not trusted: the source keeps retrying
        untrusted = getattr(rtnb.sources, kind)(url, example=feed.example, max_reconnects=0)
        with pytest.raises(Exception) as refused:  # ssl or httpx error type
            await untrusted.arun()
        await feed.stop()
        return len(collected(out)), f"{type(refused.value).__name__}: {refused.value}"

    n, refusal = asyncio.run(scenario())
    assert n == 500
    assert "CERTIFICATE_VERIFY_FAILED" in refusal or "certificate verify failed" in refusal


# -- faults: the server goes away mid-stream -------------------------------------------------
def test_sse_resumes_after_the_server_restarts_nothing_lost_or_repeated(data):
    async def scenario() -> tuple[pd.DataFrame, Any, FeedServer]:
        feed = await rtnb.demo.serve_feed(data, rate=2_000, per_message=5)
        src = rtnb.sources.sse(feed.sse_url, example=feed.example, time="timestamp",
                               max_events=N)
        out = src.collect()
        src.start()
        await wait_rows(out, N // 3)
        await feed.stop()  # the feed drops mid-stream
        await asyncio.sleep(0.5)
        await feed.start()  # same port
        await asyncio.wait_for(src.wait(), 60)
        await feed.stop()
        return collected(out), src.source, feed

    got, source, feed = asyncio.run(scenario())
    assert source.stats.reconnects >= 1
    assert feed.connections >= 2
    tm.assert_frame_equal(got, expected_rows(feed))  # every row once, in order


def test_websocket_reconnects_with_backoff_and_keeps_order(data):
    async def scenario() -> tuple[pd.DataFrame, Any, FeedServer, int]:
        feed = await rtnb.demo.serve_feed(data, rate=2_000)
        src = rtnb.sources.websocket(feed.ws_url, example=feed.example, time="timestamp")
        status = src.status()
        out = src.collect()
        src.start()
        await wait_rows(out, N // 3)
        await feed.stop()
        sent_before = feed.sent
        await asyncio.sleep(0.5)
        await feed.start()
        await wait_for(lambda: feed._ws_position >= N)
        await asyncio.sleep(0.3)
        src.stop()
        await src.wait()
        await feed.stop()
        snap = status.snapshot()
        assert snap["source_reconnects"] == src.source.stats.reconnects
        assert "reconnects" in status.widget.children[0].value
        return collected(out), src.source, feed, sent_before

    got, source, feed, sent_before = asyncio.run(scenario())
    seq = got["seq"].to_numpy()
    assert source.stats.reconnects >= 1
    assert (np.diff(seq) > 0).all()  # no repeats, order kept
    assert seq[-1] == N - 1  # it was reading the restarted feed to its end
    # a live feed loses at most what was in flight when the connection broke
    assert N - len(seq) <= feed.sent - len(seq) and len(seq) >= sent_before - 50


# -- backpressure ----------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["drop_oldest", "sample"])
def test_live_feed_drop_policies_count_exactly(data, policy):
    async def scenario() -> tuple[int, int, int, int]:
        feed = await rtnb.demo.serve_feed(data, rate=None)
        src = rtnb.sources.websocket(feed.ws_url, example=feed.example, time="timestamp",
                                     buffer=200, policy=policy, max_batch=100)
        out = src.collect()
        src.pause()  # downstream stalls: the buffer fills and the policy drops
        src.start()
        await wait_for(lambda: src.source.stats.messages >= N)
        src.resume()
        await asyncio.sleep(0.5)
        src.stop()
        await src.wait()
        await feed.stop()
        stats = src.source.stats
        return len(collected(out)), stats.dropped, stats.messages, feed.sent

    received, dropped, messages, sent = asyncio.run(scenario())
    assert messages == sent == N
    assert dropped > 0 and received + dropped == N


def test_block_policy_bounds_memory_and_loses_nothing(data):
    async def scenario() -> tuple[int, int, int]:
        feed = await rtnb.demo.serve_feed(data, rate=None)
        src = rtnb.sources.websocket(feed.ws_url, example=feed.example, time="timestamp",
                                     buffer=100, max_batch=50, max_events=N)
        out = src.collect()
        high = 0
        src.pause()
        src.start()
        for _ in range(100):  # stalled for a second: the reader must wait, not buffer
            high = max(high, len(src.source.buffer))
            await asyncio.sleep(0.01)
        stalled_at = src.source.stats.messages
        src.resume()
        await src.wait()
        await feed.stop()
        return len(collected(out)), high, stalled_at

    received, high, stalled_at = asyncio.run(scenario())
    assert received == N
    # the buffer, one batch taken before the stall, one message in the reader's hands
    assert high <= 100 and stalled_at <= 100 + 50 + 1


def test_replayable_sources_refuse_dropping_policies(tmp_path):
    from rtnb.sources._tail import TailSource

    with pytest.raises(rtnb.ConfigError, match="would lose data it could keep"):
        TailSource(tmp_path / "x", from_start=True, poll_s=0.1, header=False, follow=False,
                   name="t", decoder="json", example=pd.DataFrame({"x": []}), policy="sample")


# -- tail ------------------------------------------------------------------------------------
def write_lines(path: Path, rows: pd.DataFrame, mode: str = "a") -> None:
    with path.open(mode) as f:
        for r in rows.itertuples(index=False):
            f.write(json.dumps({"timestamp": r.timestamp.isoformat(), "host": r.host,
                                "cpu": r.cpu, "seq": r.seq}) + "\n")


def test_tail_follows_rotation_truncation_and_partial_lines(tmp_path, data):
    rows = data.iloc[:900].assign(seq=np.arange(900))
    log = tmp_path / "app.log"
    example = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64", "seq": "int64"}

    async def scenario() -> tuple[pd.DataFrame, Any]:
        src = rtnb.sources.tail(log, example=example, time="timestamp", poll="20ms")
        out = src.collect()
        src.start()
        write_lines(log, rows.iloc[:300])
        await wait_rows(out, 300)
        os.rename(log, tmp_path / "app.log.1")  # rotation: renamed, then a new file
        write_lines(tmp_path / "app.log.1", rows.iloc[300:400])  # late writes to the old one
        await asyncio.sleep(0.1)
        write_lines(log, rows.iloc[400:600], mode="w")
        await wait_rows(out, 600)
        with log.open("w"):
            pass  # truncation (copytruncate-style rotation)
        await asyncio.sleep(0.2)
        line = json.dumps({"timestamp": rows.timestamp.iloc[600].isoformat(), "host":
                           rows.host.iloc[600], "cpu": rows.cpu.iloc[600], "seq": 600})
        with log.open("a") as f:
            f.write(line[:20])  # a partial line is held until its newline arrives
            f.flush()
            await asyncio.sleep(0.2)
            f.write(line[20:] + "\n")
        write_lines(log, rows.iloc[601:900])
        await wait_rows(out, 900)
        src.stop()
        await src.wait()
        return collected(out), src.source

    got, source = asyncio.run(scenario())
    assert got["seq"].tolist() == list(range(900))
    tm.assert_frame_equal(got, rows.reset_index(drop=True)[got.columns], check_dtype=False)
    assert source.rotations >= 2


async def wait_for(cond: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            msg = "condition not reached in time"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


async def wait_rows(out: list[pd.DataFrame], n: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(len(b) for b in out) < n:
        if loop.time() > deadline:
            msg = f"only {sum(len(b) for b in out)} of {n} rows arrived"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


def test_tail_csv_with_header_and_bad_lines(tmp_path):
    log = tmp_path / "m.csv"
    log.write_text("timestamp,host,cpu\n2026-01-01T00:00:00,a,1.5\n2026-01-01T00:00:01,b,oops\n"
                   "2026-01-01T00:00:02,c\n2026-01-01T00:00:03,d,4\n")
    src = rtnb.sources.tail(log, format="csv", follow=False, time="timestamp",
                            example={"timestamp": "datetime64[ns]", "host": "str",
                                     "cpu": "float64"})
    out, dead = src.collect(), src.dead_letters.collect()
    src.run()
    got = collected(out)
    assert got["host"].tolist() == ["a", "d"] and got["cpu"].tolist() == [1.5, 4.0]
    d = collected(dead)
    assert d["dead_letter_raw"].tolist() == [b"2026-01-01T00:00:01,b,oops",
                                             b"2026-01-01T00:00:02,c"]
    assert d["dead_letter_reason"].tolist() == [
        "column 'cpu' (float64): 'oops' is not a number",
        "csv decode failed: CSV line has 2 fields; expected 3"]
    inode = log.stat().st_ino
    assert d["dead_letter_position"].tolist() == [f"({inode}, 72)", f"({inode}, 94)"]


def test_kafka_without_a_broker_says_so():
    """No Kafka broker runs here: only the client side is checked (see rtnb/sources/kafka.py)."""
    from integration_helpers import free_port

    src = rtnb.sources.kafka("t", f"127.0.0.1:{free_port()}", example={"x": "float64"},
                             max_reconnects=0)
    assert repr(src.source).startswith("<KafkaSource 'kafka'")
    with pytest.raises(Exception, match=r"(?i)connect|unable|bootstrap"):
        src.run()
    with pytest.raises(rtnb.ConfigError, match="'earliest' or 'latest'"):
        rtnb.sources.kafka("t", example={"x": "float64"}, start="beginning")
