"""Sinks against real targets: files, a local HTTP server that fails and slows down on
command, and Redis. What went in must come out, in order, whatever the target did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
import redis
from integration_helpers import service_or_skip

import rtnb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:3_000][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(len(df), dtype=np.int64)).reset_index(drop=True)


class Hook:
    """A webhook target on 127.0.0.1: records every JSON body; can fail, stall or go away."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.keys: set[str] = set()
        self.repeats = 0
        self.requests = 0
        self.fail_next = 0
        self.delay = 0.0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Hook:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):  # open keep-alive connections go too
                writer.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self._serve(reader, writer)
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (h.partition(":") for h in head.split("\r\n")[1:] if h)}
                length = int(headers["content-length"])
                body = await reader.readexactly(length)
                self.requests += 1
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.fail_next > 0:
                    self.fail_next -= 1
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                elif headers["idempotency-key"] in self.keys:
                    self.repeats += 1  # processed before, the answer got lost: drop it
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                else:
                    self.keys.add(headers["idempotency-key"])
                    self.received.extend(json.loads(body))
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()


def received_frame(hook: Hook) -> pd.DataFrame:
    """What the receiver got, as rows of the sent frame (each record's rtnb_id checked, dropped)."""
    got = pd.DataFrame(hook.received)
    assert got["rtnb_id"].is_unique  # every row its own id, none delivered twice
    got = got.drop(columns="rtnb_id")
    got["timestamp"] = pd.to_datetime(got["timestamp"]).astype("datetime64[ns]")
    return got


def test_webhook_retries_opens_the_circuit_spools_and_delivers_everything_in_order(
        rows, tmp_path):
    async def scenario() -> tuple[Hook, Any]:
        hook = await Hook().start()
        src = rtnb.sources.replay(rows, batch_size=100)
        sink = rtnb.sinks.to_webhook(src, hook.url, retries=2, failures=3,
                                     reset_after="200ms", spool=tmp_path / "spool",
                                     max_queue=100)
        hook.fail_next = 2  # a hiccup: retried, delivered
        hook.delay = 0.02  # slow enough to be cut off mid-way
        src.start()
        while hook.requests < 8:
            await asyncio.sleep(0.01)
        await hook.stop()  # the target goes away: retries fail, the circuit opens, spool
        await asyncio.sleep(0.6)
        await hook.start()
        await asyncio.wait_for(src.wait(), 30)
        await hook.stop()
        return hook, sink

    hook, sink = asyncio.run(scenario())
    tm.assert_frame_equal(received_frame(hook), rows, check_dtype=False)
    stats = sink.stats
    assert stats.delivered_rows == len(rows) and stats.undeliverable_rows == 0
    assert stats.failed_attempts >= 3 and sink.breaker.opens >= 1
    assert stats.respooled_rows > 0 and stats.spooled_rows == 0
    assert not list((tmp_path / "spool").glob("*.parquet"))


def test_a_failing_sink_without_a_spool_holds_the_source_and_drops_nothing(rows):
    async def scenario() -> tuple[Any, Hook, int]:
        hook = await Hook().start()
        hook.fail_next = 10**6  # down until told otherwise
        src = rtnb.sources.replay(rows.iloc[:1000], batch_size=100)
        sink = rtnb.sinks.to_webhook(src, hook.url, retries=1, failures=2, reset_after="100ms",
                                     max_queue=2)
        run = asyncio.ensure_future(src.arun())
        await asyncio.sleep(1.5)  # the target stays down: the sink holds the source
        events_while_down = src.counters.events
        assert not run.done()
        hook.fail_next = 0  # back: everything queued and everything after it arrives
        await asyncio.wait_for(run, 60)
        await hook.stop()
        return sink, hook, events_while_down

    sink, hook, events_while_down = asyncio.run(scenario())
    assert events_while_down < 1000  # the source waited for the sink
    assert sink.stats.undeliverable_rows == 0 and sink.stats.delivered_rows == 1000
    assert [r["seq"] for r in hook.received] == list(range(1000))  # all, in order, once


def test_on_failure_drop_counts_what_it_drops(rows):
    async def scenario() -> Any:
        hook = await Hook().start()
        hook.fail_next = 10**6  # never answers well
        src = rtnb.sources.replay(rows.iloc[:500], batch_size=100)
        sink = rtnb.sinks.to_webhook(src, hook.url, retries=1, failures=2, reset_after="10s",
                                     on_failure="drop")
        await src.arun()
        await hook.stop()
        return sink, hook

    sink, hook = asyncio.run(scenario())
    assert sink.stats.undeliverable_rows == 500 and sink.stats.delivered_rows == 0
    assert sink.breaker.state == "open"
    assert hook.requests == 2  # two failures opened the circuit; nothing more was tried


def test_a_slow_sink_bounds_memory_and_pauses_the_source(rows):
    async def scenario() -> tuple[list[int], list[int], Hook, Any]:
        hook = await Hook().start()
        hook.delay = 0.05  # 50 ms per batch: far slower than the replay
        src = rtnb.sources.replay(rows, batch_size=50)  # as fast as possible: 60 batches
        sink = rtnb.sinks.to_webhook(src, hook.url, max_queue=4)
        queued, ahead = [], []
        src.start()
        while not src.closed:
            queued.append(len(sink._queue))
            ahead.append(src.counters.events - sink.stats.delivered_rows)
            await asyncio.sleep(0.01)
        await src.wait()
        await hook.stop()
        return queued, ahead, hook, sink

    queued, ahead, hook, sink = asyncio.run(scenario())
    assert max(queued) <= 4 + 1 and sink.stats.queued_max <= 4 + 1
    # the replay never ran more than the queue (+ the batch in delivery) ahead of the sink;
    # without the pressure it would be done (3,000 rows ahead) after the first sample
    assert max(ahead) <= (4 + 2) * 50
    assert len(ahead) > 20  # the replay took as long as the sink (~3 s), not ~10 ms
    tm.assert_frame_equal(received_frame(hook), rows, check_dtype=False)


def test_parquet_files_roll_and_read_back(rows, tmp_path):
    src = rtnb.sources.replay(rows, batch_size=250)
    sink = rtnb.sinks.to_parquet(src, tmp_path / "out", rotate_rows=1000)
    src.run()
    assert [p.name for p in sink.files] == [f"part-00000{i}.parquet" for i in range(3)]
    back = pd.read_parquet(tmp_path / "out")
    tm.assert_frame_equal(back, rows)


def test_log_lines_are_the_rows(rows, tmp_path):
    src = rtnb.sources.replay(rows.iloc[:100], batch_size=30, name="feed")
    rtnb.sinks.to_log(src, tmp_path / "rows.log")
    src.run()
    lines = [json.loads(line) for line in (tmp_path / "rows.log").read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(100))
    assert {line["node"] for line in lines} == {"feed"}


def test_redis_sink_round_trips_through_the_redis_source(rows):
    service_or_skip(6379, "Redis")
    stream = f"rtnb-sink-{uuid.uuid4().hex[:8]}"
    try:
        src = rtnb.sources.replay(rows, batch_size=500)
        rtnb.sinks.to_redis_stream(src, stream)
        src.run()
        back = rtnb.sources.redis_stream(stream, example=rows.iloc[:0], time="timestamp",
                                         max_events=len(rows))
        out = back.collect()
        back.run()
        tm.assert_frame_equal(pd.concat(out, ignore_index=True), rows)
    finally:
        redis.Redis().delete(stream)


def test_sinks_refuse_bad_settings(rows):
    sdf = rtnb.StreamingFrame(rows.iloc[:0])
    with pytest.raises(rtnb.ConfigError, match="`retries` must be a non-negative int"):
        rtnb.sinks.to_webhook(sdf, "http://127.0.0.1:1/x", retries=-1)
    with pytest.raises(rtnb.ConfigError, match="webhook url must start with http"):
        rtnb.sinks.to_webhook(sdf, "ftp://x")
    with pytest.raises(rtnb.ConfigError, match="`rotate_rows` must be a positive int"):
        rtnb.sinks.to_parquet(sdf, Path("/tmp/never"), rotate_rows=0)
