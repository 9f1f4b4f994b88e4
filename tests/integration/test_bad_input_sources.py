"""Bad input through real servers on 127.0.0.1: dead letters, and nothing else is lost.

* WebSocket (``rtnb.demo.FeedServer``, the ``websockets`` server): a message over
  ``max_message_bytes`` (16 MiB by default) between good ones is a dead letter with its size
  and the limit, on the same connection; one beyond what the client reads at all closes the
  connection, says so in its dead letter, and the source reconnects.
* SSE (a raw HTTP server in this file, which writes exactly the bytes it is given): an event
  that is not UTF-8 and an event over ``max_event_bytes`` are dead letters and the stream
  goes on; a 32 MB event without its blank line is a dead letter and the events after it
  arrive.
* The watermark guard over both: an event dated 200 years ahead is a dead letter and the
  windows of the good events equal pandas on the good events.

Each run is bounded by ``wait_for``: a stalled source fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb.demo import FeedServer
from rtnb.testing import assert_frame_equal_unordered, pandas_windows

pytestmark = pytest.mark.integration

EXAMPLE = {"t": "datetime64[ns]", "host": "str", "cpu": "float64"}
MiB = 2 ** 20


def good(i: int) -> dict[str, Any]:
    return {"t": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z", "host": f"h{i % 3}",
            "cpu": i / 4}


def expected(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    return df.assign(t=pd.to_datetime(df["t"]).dt.tz_localize(None)).astype(EXAMPLE)


def raw(payload: Any) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


async def collect_run(src: rtnb.StreamingFrame, timeout: float = 60) -> tuple[pd.DataFrame,
                                                                             pd.DataFrame]:
    out, dead = src.collect(), src.dead_letters.collect()
    await asyncio.wait_for(src.arun(), timeout)
    return (pd.concat(out, ignore_index=True) if out else pd.DataFrame(),
            pd.concat(dead, ignore_index=True) if dead else pd.DataFrame())


# -- WebSocket --------------------------------------------------------------------------------
def test_a_websocket_message_over_16_mib_is_a_dead_letter_and_no_other_message_is_lost():
    big = json.dumps({**good(5), "host": "x" * (17 * MiB)})
    lines = [json.dumps(good(i)) for i in range(5)] + [big] + \
        [json.dumps(good(i)) for i in range(6, 12)]
    kept = [good(i) for i in range(12) if i != 5]

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, Any, FeedServer]:
        feed = FeedServer(pd.DataFrame({"x": range(len(lines))}), rate=None)
        feed._lines = lines  # the raw messages, as the producer sends them
        await feed.start()
        try:
            src = rtnb.sources.websocket(feed.ws_url, time="t", example=EXAMPLE,
                                         max_events=len(kept))
            got, dead = await collect_run(src)
        finally:
            await feed.stop()
        return got, dead, src, feed

    got, dead, src, feed = asyncio.run(scenario())
    tm.assert_frame_equal(got, expected(kept))  # the good ones before and after, in order
    assert dead["dead_letter_reason"].tolist() == [
        f"message of {len(big)} bytes is over max_message_bytes=16777216 (16 MiB)"]
    assert raw(dead["dead_letter_raw"].iloc[0]) == big[:1024].encode()
    assert dead["dead_letter_position"].tolist() == ["6"]
    assert src.source.stats.reconnects == 0 and feed.connections == 1  # one connection
    assert src.source.stats.dead_letters == 1 == src.counters.dead_letters


def test_a_websocket_message_beyond_the_read_limit_reconnects_and_says_so():
    """``max_message_bytes=1000``: 2,000 bytes is a dead letter on the same connection;
    10,000 (over 4 x the limit, what the client reads at all) closes it: a dead letter says
    so and the source reconnects (the server paces its messages, so none is in flight)."""
    medium = json.dumps({**good(3), "host": "m" * 2000})
    huge = json.dumps({**good(6), "host": "h" * 10_000})
    lines = [medium if i == 3 else huge if i == 6 else json.dumps(good(i)) for i in range(10)]
    kept = [good(i) for i in range(10) if i not in (3, 6)]

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, Any, FeedServer]:
        feed = FeedServer(pd.DataFrame({"x": range(len(lines))}), rate=10)
        feed._lines = lines
        await feed.start()
        try:
            src = rtnb.sources.websocket(feed.ws_url, time="t", example=EXAMPLE,
                                         max_message_bytes=1000, max_events=len(kept))
            got, dead = await collect_run(src)
        finally:
            await feed.stop()
        return got, dead, src, feed

    got, dead, src, feed = asyncio.run(scenario())
    tm.assert_frame_equal(got, expected(kept))
    reasons = dead["dead_letter_reason"].tolist()
    assert reasons[0] == f"message of {len(medium)} bytes is over max_message_bytes=1000 " \
                         f"(1000 bytes)"
    assert raw(dead["dead_letter_raw"].iloc[0]) == medium[:1024].encode()
    # websockets' own words (compressed frames: the size is not known when it stops)
    assert reasons[1].startswith("message over the client's read limit (frame ")
    assert "exceeds limit of 4000 bytes; max_message_bytes=1000): the client closed the " \
           "connection (1009) and reconnects" in reasons[1]
    assert dead["dead_letter_position"].tolist() == ["4", "7"]
    assert src.source.stats.reconnects == 1 and feed.connections == 2


# -- SSE --------------------------------------------------------------------------------------
class RawSSE:
    """An HTTP/1.1 event-stream server on 127.0.0.1 that writes exactly the given chunks.

    After the last chunk it keeps the connection open (a live feed idles; it does not hang
    up). ``connections`` counts the requests it served.
    """

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/events"

    async def start(self) -> RawSSE:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.connections += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n")
            for chunk in self.chunks:
                writer.write(chunk)
                await writer.drain()
            await reader.read()  # until the client goes
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


def event(i: int, data: bytes | str | None = None) -> bytes:
    body = data if data is not None else json.dumps(good(i))
    return b"id: %d\ndata: %s\n\n" % (i, body.encode() if isinstance(body, str) else body)


async def run_sse(chunks: Sequence[bytes], n: int, **options: Any) -> tuple[
        pd.DataFrame, pd.DataFrame, Any, RawSSE]:
    server = await RawSSE(chunks).start()
    try:
        src = rtnb.sources.sse(server.url, time="t", example=EXAMPLE, max_events=n, **options)
        got, dead = await collect_run(src, timeout=120)
    finally:
        await server.stop()
    return got, dead, src, server


def test_sse_events_not_utf8_or_over_max_event_bytes_are_dead_letters_and_the_stream_goes_on():
    bad_utf8 = b'{"t": "2026-01-01T00:00:02Z", "host": "h\xff2", "cpu": 0.5}'
    over = event(4, json.dumps({**good(4), "host": "o" * 10_000}))
    chunks = [event(0) + event(1), event(2, bad_utf8), event(3)]
    chunks += [over[i:i + 1000] for i in range(0, len(over), 1000)]  # over several writes
    chunks += [event(i) for i in range(5, 10)]
    kept = [good(i) for i in range(10) if i not in (2, 4)]

    got, dead, src, server = asyncio.run(run_sse(chunks, len(kept), max_event_bytes=4096))
    tm.assert_frame_equal(got, expected(kept))
    assert dead["dead_letter_reason"].tolist() == [
        "invalid UTF-8 at byte 52 of the event",
        f"event of {len(over) - 2} bytes is over max_event_bytes=4096 (4 KiB)"]
    assert [raw(p) for p in dead["dead_letter_raw"]] == [b"id: 2\ndata: " + bad_utf8,
                                                          over[:1024]]
    # the invalid event's id was read (a resume starts after it); the big one's was not
    assert dead["dead_letter_position"].tolist() == ["2", "3"]
    assert server.connections == 1 and src.source.stats.reconnects == 0


def test_an_sse_event_of_32_mb_without_its_blank_line_is_a_dead_letter_and_the_stream_goes_on():
    block = b"x" * 65_536
    chunks = [event(0), b"id: 1\ndata: "] + [block] * 512 + [b"\n\n"]
    chunks += [event(i) for i in range(2, 6)]
    kept = [good(i) for i in range(6) if i != 1]

    got, dead, src, server = asyncio.run(run_sse(chunks, len(kept)))
    tm.assert_frame_equal(got, expected(kept))
    size = len(b"id: 1\ndata: ") + 512 * len(block)
    assert dead["dead_letter_reason"].tolist() == [
        f"event of {size} bytes is over max_event_bytes=16777216 (16 MiB)"]
    assert raw(dead["dead_letter_raw"].iloc[0]) == (b"id: 1\ndata: " + block)[:1024]
    assert server.connections == 1 and src.source.stats.reconnects == 0


# -- the watermark guard ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["websocket", "sse"])
def test_an_event_200_years_ahead_is_a_dead_letter_and_the_windows_equal_pandas(kind):
    start = pd.Timestamp.now("UTC").tz_localize(None).floor("10s") - pd.Timedelta("10min")
    records = [{"t": (start + pd.Timedelta(seconds=i)).isoformat(), "host": f"h{i % 3}",
                "cpu": float(i)} for i in range(300)]
    ahead = (start + pd.DateOffset(years=200) + pd.Timedelta(days=30)).floor("D")
    lines = [json.dumps(r) for r in records]
    lines.insert(100, json.dumps({"t": ahead.isoformat(), "host": "h1", "cpu": 1e6}))

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        feed = FeedServer(pd.DataFrame({"x": range(len(lines))}), rate=None)
        feed._lines = lines
        await feed.start()
        try:
            url = feed.ws_url if kind == "websocket" else feed.sse_url
            src = getattr(rtnb.sources, kind)(url, time="t", example=EXAMPLE, max_batch=50,
                                              max_events=len(records))
            windows = src.window(rtnb.tumbling("10s"), by="host").agg(
                n=("cpu", "count"), total=("cpu", "sum"), last=("cpu", "last")).collect()
            got, dead = await collect_run(src)
        finally:
            await feed.stop()
        return got, dead, pd.concat(windows, ignore_index=True)

    got, dead, windows = asyncio.run(scenario())
    assert len(got) == len(records)
    assert dead["dead_letter_reason"].tolist() == [
        f"event time {ahead} is 200 years ahead of the source's clock (max_future=5min)"]
    assert [raw(p) for p in dead["dead_letter_raw"]] == [lines[100].encode()]
    good_rows = pd.DataFrame.from_records(records).assign(t=lambda d: pd.to_datetime(d["t"]))
    assert_frame_equal_unordered(
        windows, pandas_windows(good_rows, time="t", size="10s", by="host",
                                aggs={"n": ("cpu", "count"), "total": ("cpu", "sum"),
                                      "last": ("cpu", "last")}),
        by=["window_start", "host"], check_dtype=False)
