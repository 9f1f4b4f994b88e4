"""Poison messages through real servers: dead letters, acknowledged, and the source goes on.

A Redis stream read by a consumer group (127.0.0.1:6379) and a WebSocket feed
(``rtnb.demo.FeedServer``) carry good records mixed with an event time after 2262, JSON
nested 5,000 deep and -Infinity/1e400 values. Each run is bounded by ``wait_for``: a
stalled source fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pandas as pd
import pandas.testing as tm
import pytest
import redis
from integration_helpers import service_or_skip

import rtnb
from rtnb.demo import FeedServer

pytestmark = pytest.mark.integration

EXAMPLE = {"t": "datetime64[ns]", "host": "str", "cpu": "float64"}
TIME_RANGE = "is out of range for datetime64[ns] (1677-09-21 .. 2262-04-11)"


def good(i: int) -> dict[str, Any]:
    return {"t": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z", "host": f"h{i % 3}",
            "cpu": i / 4}


def messages(n: int) -> tuple[list[str], dict[int, str], list[dict[str, Any]]]:
    """``n`` messages with poison at fixed places; the poison reasons; the good records."""
    poison = {
        3: (json.dumps({**good(3), "t": "9999-12-31T00:00:00Z"}),
            f"column 't' (datetime64[ns]): '9999-12-31T00:00:00Z' {TIME_RANGE}"),
        10: (json.dumps(good(10))[:-1] + ', "x": ' + "[" * 5_000 + "]" * 5_000 + "}",
             "json decode failed: RecursionError: "),
        11: ('{"t": "2026-01-01T00:00:11Z", "host": "h2", "cpu": -Infinity}',
             "column 'cpu' (float64): -inf is not a finite number"),
        25: ('{"t": "2026-01-01T00:00:25Z", "host": "h1", "cpu": 1e400}',
             "column 'cpu' (float64): inf is not a finite number"),
        n - 5: (json.dumps({**good(n - 5), "t": 253402214400}),
                f"column 't' (datetime64[ns]): 253402214400 {TIME_RANGE}"),
    }
    lines = [poison[i][0] if i in poison else json.dumps(good(i)) for i in range(n)]
    kept = [good(i) for i in range(n) if i not in poison]
    return lines, {i: reason for i, (_, reason) in poison.items()}, kept


def expected(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    return df.assign(t=pd.to_datetime(df["t"]).dt.tz_localize(None)).astype(EXAMPLE)


def check_dead(dead: pd.DataFrame, lines: list[str], reasons: dict[int, str]) -> None:
    assert dead["dead_letter_raw"].map(
        lambda p: p.decode() if isinstance(p, bytes) else p).tolist() == \
        [lines[i] for i in sorted(reasons)]
    for got, i in zip(dead["dead_letter_reason"], sorted(reasons), strict=True):
        assert got.startswith(reasons[i]), (i, got)


def test_a_redis_consumer_group_dead_letters_poison_acks_it_and_reads_on():
    service_or_skip(6379, "Redis")
    client = redis.Redis(host="127.0.0.1", port=6379)
    stream = f"rtnb-poison-{uuid.uuid4().hex[:10]}"
    lines, reasons, kept = messages(2_000)
    try:
        pipe = client.pipeline()
        for line in lines:
            pipe.xadd(stream, {"data": line.encode()})
        ids = [i.decode() for i in pipe.execute()]
        src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="t", group="g",
                                        count=100, max_events=len(kept))
        out, dead = src.collect(), src.dead_letters.collect()
        asyncio.run(asyncio.wait_for(src.arun(), 60))

        tm.assert_frame_equal(pd.concat(out, ignore_index=True), expected(kept))
        d = pd.concat(dead, ignore_index=True)
        check_dead(d, lines, reasons)
        assert d["dead_letter_position"].tolist() == [ids[i] for i in sorted(reasons)]
        assert client.xpending(stream, "g")["pending"] == 0  # no restart stalls on them
        stats = src.source.stats
        assert (stats.events, stats.dead_letters, stats.acked) == (len(kept), 5, 2_000)
        assert src.graph.state == "finished"
    finally:
        client.delete(stream)


def test_a_websocket_feed_dead_letters_poison_and_reads_on():
    lines, reasons, kept = messages(300)

    async def scenario() -> tuple[pd.DataFrame, pd.DataFrame, rtnb.StreamingFrame]:
        feed = FeedServer(pd.DataFrame({"x": range(len(lines))}), rate=None)
        feed._lines = lines  # the raw messages, as a misbehaving producer sends them
        await feed.start()
        try:
            src = rtnb.sources.websocket(feed.ws_url, time="t", example=EXAMPLE,
                                         max_events=len(kept))
            out, dead = src.collect(), src.dead_letters.collect()
            await asyncio.wait_for(src.arun(), 60)
        finally:
            await feed.stop()
        return pd.concat(out, ignore_index=True), pd.concat(dead, ignore_index=True), src

    got, dead, src = asyncio.run(scenario())
    tm.assert_frame_equal(got, expected(kept))
    check_dead(dead, lines, reasons)
    assert src.source.stats.dead_letters == 5 == src.counters.dead_letters
    assert src.graph.state == "finished"
