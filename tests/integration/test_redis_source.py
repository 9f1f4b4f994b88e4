"""``rtnb.sources.redis_stream`` against real Redis servers on this machine.

The shared server (127.0.0.1:6379) serves the functional tests, each on a fresh stream. The
fault test starts its own ``redis-server`` (append-only file, fsync always) on a spare port,
kills it with SIGKILL mid-stream and starts it again on the same files.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
import redis
from integration_helpers import free_port, service_or_skip

import rtnb

pytestmark = pytest.mark.integration

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64", "seq": "int64"}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:4_000][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(len(df), dtype=np.int64)).reset_index(drop=True)


@pytest.fixture
def shared() -> redis.Redis:
    service_or_skip(6379, "Redis")
    return redis.Redis(host="127.0.0.1", port=6379)


@pytest.fixture
def stream(shared: redis.Redis) -> Any:
    name = f"rtnb-test-{uuid.uuid4().hex[:10]}"
    yield name
    shared.delete(name)


def encode(r: Any) -> bytes:
    return json.dumps({"timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
                       "seq": int(r.seq)}).encode()


def produce(client: redis.Redis, stream: str, rows: pd.DataFrame) -> list[str]:
    pipe = client.pipeline()
    for r in rows.itertuples(index=False):
        pipe.xadd(stream, {"data": encode(r)})
    return [i.decode() for i in pipe.execute()]


def collected(out: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(out, ignore_index=True)


def test_xread_replays_the_stream_in_order_with_the_schema(shared, stream, rows):
    produce(shared, stream, rows)
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                    max_events=len(rows))
    out = src.collect()
    src.run()
    tm.assert_frame_equal(collected(out), rows, check_dtype=False)
    assert collected(out)["timestamp"].dtype == "datetime64[ns]"


def test_consumer_group_acks_after_processing_and_dead_letters_bad_entries(
        shared, stream, rows):
    ids = produce(shared, stream, rows.iloc[:1000])
    bad_id = shared.xadd(stream, {"data": b'{"timestamp": "2026-01-05", "host": "x", '
                                          b'"cpu": "n/a", "seq": 1}'}).decode()
    no_field = shared.xadd(stream, {"other": b"1"}).decode()
    ids += produce(shared, stream, rows.iloc[1000:2000])
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", group="g1",
                                    max_events=2000)
    out, dead = src.collect(), src.dead_letters.collect()
    src.run()
    tm.assert_frame_equal(collected(out), rows.iloc[:2000], check_dtype=False)
    d = collected(dead)
    assert d["dead_letter_position"].tolist() == [bad_id, no_field]
    assert d["dead_letter_reason"].iloc[0] == "column 'cpu' (float64): 'n/a' is not a number"
    pending = shared.xpending(stream, "g1")
    assert pending["pending"] == 0  # every entry, good or bad, was acknowledged
    assert src.source.stats.acked == 2002


def test_entry_fields_as_the_record(shared, stream, rows):
    for r in rows.iloc[:50].itertuples(index=False):
        shared.xadd(stream, {"timestamp": r.timestamp.isoformat(), "host": r.host,
                             "cpu": str(r.cpu), "seq": str(r.seq)})
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", field=None,
                                    max_events=50)
    out = src.collect()
    src.run()
    tm.assert_frame_equal(collected(out), rows.iloc[:50], check_dtype=False)


def test_start_now_reads_only_new_entries(shared, stream, rows):
    produce(shared, stream, rows.iloc[:100])

    async def scenario() -> pd.DataFrame:
        src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                        start="$", max_events=100, block="50ms")
        out = src.collect()
        src.start()
        for _ in range(3000):  # until the source has pinned "now" (under load it takes a while)
            if src.source._last_ids:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(produce, shared, stream, rows.iloc[100:200])
        await asyncio.wait_for(src.wait(), 60)
        return collected(out)

    got = asyncio.run(scenario())
    assert got["seq"].tolist() == list(range(100, 200))


def test_slow_pipeline_pauses_reading_and_the_stream_keeps_the_data(shared, stream, rows):
    produce(shared, stream, rows)

    async def scenario() -> tuple[int, int, int | None, int]:
        src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", group="g",
                                        buffer=200, count=50, max_batch=100,
                                        max_events=len(rows))
        out = src.collect()
        src.pause()
        src.start()
        await asyncio.sleep(1.0)
        source = src.source
        read_while_paused = source.stats.messages
        lag_before = shared.xinfo_groups(stream)[0]["lag"]
        src.resume()
        await asyncio.wait_for(src.wait(), 90)
        return read_while_paused, lag_before, source.stats.lag, len(collected(out))

    read_while_paused, lag_before, _, n = asyncio.run(scenario())
    # buffer + one batch taken before the pause was seen + one read in the reader's hands
    assert read_while_paused <= 200 + 100 + 50
    assert lag_before >= len(rows) - read_while_paused - 50
    assert n == len(rows)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_server_killed_mid_stream_nothing_lost_or_duplicated(tmp_path: Path, rows):
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path)]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                return proc
            except redis.ConnectionError:
                import time

                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    proc = start()
    client = redis.Redis(port=port)
    produce(client, "m", rows.iloc[:2000])

    async def scenario() -> tuple[pd.DataFrame, Any]:
        nonlocal proc
        src = rtnb.sources.redis_stream("m", f"redis://127.0.0.1:{port}/0", example=EXAMPLE,
                                        time="timestamp", group="g", count=100,
                                        max_events=len(rows), block="100ms")
        counts = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"),
                                                                   s=("seq", "sum"))
        out, windows = src.collect(), counts.collect()
        src.start()
        while sum(len(b) for b in out) < 500:
            await asyncio.sleep(0.01)
        proc.kill()  # SIGKILL mid-stream
        proc.wait()
        await asyncio.sleep(0.3)
        proc = start()
        await asyncio.to_thread(produce, redis.Redis(port=port), "m", rows.iloc[2000:])
        await asyncio.wait_for(src.wait(), 60)
        return collected(out), (collected(windows), src.source)

    try:
        got, (windows, source) = asyncio.run(scenario())
        assert source.stats.reconnects >= 1
        assert got["seq"].is_unique and sorted(got["seq"]) == list(range(len(rows)))
        expected = rows.groupby(["host", pd.Grouper(key="timestamp", freq="1min")]).agg(
            n=("cpu", "count"), s=("seq", "sum")).reset_index()
        got_w = windows.rename(columns={"window_start": "timestamp"})[
            ["host", "timestamp", "n", "s"]]
        tm.assert_frame_equal(got_w.sort_values(["host", "timestamp"]).reset_index(drop=True),
                              expected.sort_values(["host", "timestamp"]).reset_index(drop=True),
                              check_dtype=False)
        assert redis.Redis(port=port).xpending("m", "g")["pending"] == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("group", [None, "g"])
def test_max_events_below_what_the_stream_holds_ends_the_run(shared, stream, rows, group):
    """redis-py swallows one cancellation inside its reads (Python 3.11): the run must end."""
    produce(shared, stream, rows)

    async def scenario() -> tuple[int, Any]:
        src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                        group=group, max_events=1000)
        await asyncio.wait_for(src.arun(), 30)
        return src.counters.events, src.source.stats

    events, stats = asyncio.run(scenario())
    assert events == 1000
    if group is not None:  # exactly the emitted entries were acknowledged; the rest pending
        assert stats.acked == 1000
        assert shared.xpending(stream, group)["pending"] == stats.messages - 1000
