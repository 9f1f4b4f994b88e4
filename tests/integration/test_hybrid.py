"""``rtnb.sources.hybrid``: a Parquet history, then a live Redis stream (shared Redis, 6379).

Every test uses a fresh stream. The data are events of 20 keys at 100 events/s of event
time with times rounded to 100 ms, so about ten events share each instant and a history can
end in the middle of one (what the boundary rule must handle). What is checked against an
independent oracle (the input itself, and pandas' windows on the whole input): every event
reaches the root frame exactly once across the switch, the tumbling windows (those spanning
the switch included) equal pandas, and the watermark never goes back (read after every batch).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from integration_helpers import service_or_skip

import rtnb
from rtnb.testing import assert_frame_equal_unordered, pandas_windows

pytestmark = pytest.mark.integration

EXAMPLE = {"timestamp": "datetime64[ns]", "key": "str", "v": "float64", "eid": "int64"}
AGGS = {"n": ("v", "count"), "s": ("v", "sum")}
COLUMNS = ["timestamp", "key", "v", "eid"]


def make_events(n: int, seed: int) -> pd.DataFrame:
    """``n`` events in time order, ~10 per 100 ms instant, each with a unique ``eid``."""
    rng = np.random.default_rng(seed)
    ms = np.sort(np.round(np.arange(n) * 10 + rng.uniform(0, 500, n), -2)).astype("int64")
    keys = np.array([f"k{i:02d}" for i in range(20)])
    return pd.DataFrame({
        "timestamp": pd.Timestamp("2026-03-01") + pd.to_timedelta(ms, unit="ms"),
        "key": pd.Series(keys[rng.integers(0, 20, n)], dtype="str"),
        "v": np.round(rng.normal(50.0, 10.0, n), 3),
        "eid": np.arange(n, dtype=np.int64),
    })


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    service_or_skip(6379, "Redis")
    c = redis.Redis(host="127.0.0.1", port=6379)
    yield c
    c.close()


@pytest.fixture
def stream(client: redis.Redis) -> Iterator[str]:
    name = f"rtnb-test-hybrid-{uuid.uuid4().hex[:10]}"
    yield name
    client.delete(name)


def produce(client: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    pipe = client.pipeline(transaction=False)
    for r in rows.itertuples(index=False):
        pipe.xadd(stream, {"data": json.dumps({
            "timestamp": r.timestamp.isoformat(), "key": r.key, "v": r.v, "eid": int(r.eid)})})
    pipe.execute()


def build(path: Path, stream: str, live_rows: int, **options: Any) -> rtnb.StreamingFrame:
    history = rtnb.sources.replay(str(path), batch_size=700, name="past")
    live = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", group="g",
                                     count=300, max_events=live_rows, name="now")
    return rtnb.sources.hybrid(history=history, live=live, name="events", **options)


class Watched:
    """Every root batch and, after each one, the window node's watermark."""

    def __init__(self, src: rtnb.StreamingFrame) -> None:
        self.windows = src.window(rtnb.tumbling("10s"), by="key", allowed_lateness="2s",
                                  emit="final").agg(**AGGS)
        self.out = self.windows.collect()
        self.late = self.windows.late.collect()
        self.batches: list[pd.DataFrame] = []
        self.marks: list[pd.Timestamp] = []
        self.phases: list[str] = []
        src.sink(self._seen)
        self.src = src

    def _seen(self, batch: pd.DataFrame) -> None:
        self.batches.append(batch)
        self.phases.append(self.src.source.phase)
        wm = self.windows.watermark
        if wm is not None:
            self.marks.append(wm)

    def check(self, events: pd.DataFrame) -> None:
        rows = pd.concat(self.batches, ignore_index=True)
        assert rows["eid"].is_unique, f"{rows['eid'].duplicated().sum()} events twice"
        assert_frame_equal_unordered(rows[COLUMNS], events[COLUMNS], by="eid",
                                     check_dtype=False)
        marks = np.array([m.value for m in self.marks])
        assert len(marks) == len(self.batches) >= 5, (len(marks), len(self.batches))
        assert (np.diff(marks) >= 0).all(), f"the watermark went back: {marks}"
        result = pd.concat(self.out, ignore_index=True)
        expected = pandas_windows(events, time="timestamp", size="10s", by="key", aggs=AGGS)
        assert_frame_equal_unordered(result, expected, check_dtype=False, rtol=1e-9)
        assert not self.late or not len(pd.concat(self.late))
        assert {"history", "live"} <= set(self.phases)


def split(events: pd.DataFrame, at: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return events.iloc[:at].reset_index(drop=True), events.iloc[at:].reset_index(drop=True)


def test_parquet_then_live_redis_every_event_once_and_windows_equal_pandas(
        tmp_path: Path, client: redis.Redis, stream: str) -> None:
    """History to a time boundary, live from just after it: half in the stream before the
    run, half produced once the hybrid has switched to live."""
    events = make_events(6_000, seed=1)
    cut = int(np.searchsorted(events["timestamp"], events["timestamp"].iloc[3_000],
                              side="right"))  # after every event of that instant
    past, now = split(events, cut)
    past.to_parquet(tmp_path / "past.parquet", index=False)
    produce(client, stream, now.iloc[:1_000])
    src = build(tmp_path / "past.parquet", stream, len(now))
    watched = Watched(src)
    switches: list[dict[str, Any]] = []
    src.source.on_switch(switches.append)

    async def main() -> None:
        src.start()
        while src.source.phase != "live":
            await asyncio.sleep(0.01)
        await asyncio.to_thread(produce, client, stream, now.iloc[1_000:])
        await asyncio.wait_for(src.wait(), 30)

    asyncio.run(main())
    watched.check(events)
    assert switches == [{"boundary": past["timestamp"].max().isoformat(),
                         "history_rows": len(past), "source": repr(src.source.live)}]
    assert src.source.duplicates == 0
    assert client.xpending(stream, "g")["pending"] == 0
    # windows holding rows of both sides of the switch were compared too
    boundary = past["timestamp"].max()
    assert (boundary.floor("10s") < boundary) and (events["timestamp"] > boundary).any()


@pytest.mark.parametrize("rule", ["time", "id"])
def test_history_overlapping_the_live_streams_first_rows_is_deduplicated(
        tmp_path: Path, client: redis.Redis, stream: str, rule: str) -> None:
    """The history ends in the middle of an instant's events; the live stream starts 400
    events earlier (two seconds of overlap): each event still arrives once."""
    events = make_events(5_000, seed=2)
    cut = 2_500
    t = events["timestamp"]
    assert t.iloc[cut - 1] == t.iloc[cut], "the cut must fall inside one instant"
    past = events.iloc[:cut]
    now = events.iloc[cut - 400:]
    past.to_parquet(tmp_path / "past.parquet", index=False)
    produce(client, stream, now)
    options = {"id": "eid", "overlap": "1min"} if rule == "id" else {}
    src = build(tmp_path / "past.parquet", stream, len(now), **options)
    watched = Watched(src)
    asyncio.run(asyncio.wait_for(src.arun(), 30))
    watched.check(events)
    assert src.source.duplicates == 400
    assert src.counters.late == 0 and src.counters.dead_letters == 0


def test_id_rule_keeps_live_rows_the_history_lacked(
        tmp_path: Path, client: redis.Redis, stream: str) -> None:
    """With ``id=``, a live event before the boundary that the history does not hold is
    kept (the history lost it); the time rule would drop it."""
    events = make_events(3_000, seed=3)
    past = events.iloc[:1_500].drop(index=[1_490, 1_495])  # lost by the history
    now = events.iloc[1_400:]
    past.to_parquet(tmp_path / "past.parquet", index=False)
    produce(client, stream, now)
    src = build(tmp_path / "past.parquet", stream, len(now), id="eid", overlap="5s")
    rows = src.collect()
    asyncio.run(asyncio.wait_for(src.arun(), 30))
    got = pd.concat(rows, ignore_index=True)
    assert sorted(got["eid"]) == list(range(3_000))
    assert src.source.duplicates == 98
    # the live source went on beyond the boundary + overlap: the ids were let go
    assert len(src.source.position.tail) == 0


def test_refusals_name_the_hybrid_and_what_arrived(tmp_path: Path) -> None:
    events = make_events(10, seed=4)
    events.to_parquet(tmp_path / "p.parquet", index=False)
    live = rtnb.sources.replay(events.drop(columns="eid"))
    with pytest.raises(rtnb.ConfigError, match="hybrid 'h': the history has columns"):
        rtnb.sources.hybrid(history=str(tmp_path / "p.parquet"), live=live, name="h")
    with pytest.raises(rtnb.ConfigError, match="`live` must be a source's frame"):
        rtnb.sources.hybrid(history=str(tmp_path / "p.parquet"),
                            live=live[live["v"] > 0], name="h")
    other = rtnb.sources.replay(events.assign(v=events["eid"]))
    with pytest.raises(rtnb.ConfigError, match="column 'v' is float64 in the history and int64"):
        rtnb.sources.hybrid(history=str(tmp_path / "p.parquet"), live=other, name="h")
    live = rtnb.sources.replay(events, name="now")
    live.window(rtnb.tumbling("10s")).agg(n=("v", "count"))
    with pytest.raises(rtnb.ConfigError, match=r"the live frame 'now' has nodes \['now.window', "
                       r"'now.window.late'\] built on it; they would receive nothing"):
        rtnb.sources.hybrid(history=str(tmp_path / "p.parquet"), live=live)
    live = rtnb.sources.replay(events)
    with pytest.raises(rtnb.ConfigError, match="`id` column 'nope' is not a column"):
        rtnb.sources.hybrid(history=str(tmp_path / "p.parquet"), live=live, id="nope")
    with pytest.raises(rtnb.SourceError, match="no such history file or folder"):
        rtnb.sources.hybrid(history=str(tmp_path / "missing"), live=live)


def test_a_folder_of_parquet_as_history(tmp_path: Path) -> None:
    events = make_events(900, seed=5)
    folder = tmp_path / "days"
    folder.mkdir()
    for i in range(3):
        events.iloc[i * 200:(i + 1) * 200].to_parquet(folder / f"part-{i}.parquet", index=False)
    src = rtnb.sources.hybrid(history=str(folder), live=rtnb.sources.replay(
        events.iloc[500:], batch_size=128))
    rows = src.collect()
    src.run()
    assert pd.concat(rows)["eid"].tolist() == list(range(900))


def test_export_writes_both_inner_sources_and_no_source_option(tmp_path: Path) -> None:
    """The hybrid is recorded like any source; ``--source`` would be ambiguous between its
    history's file and its live source's URL, so its script has none."""
    events = make_events(50, seed=6)
    events.to_parquet(tmp_path / "p.parquet", index=False)
    history = rtnb.sources.replay(str(tmp_path / "p.parquet"), name="past")
    live = rtnb.sources.redis_stream("s", "redis://127.0.0.1:6379/0", example=EXAMPLE,
                                     time="timestamp", group="g", name="now")
    src = rtnb.sources.hybrid(history=history, live=live, id="eid", name="events")
    src.window(rtnb.tumbling("10s")).agg(n=("v", "count"))
    code = rtnb.Pipeline(src).export(tmp_path / "job.py").read_text()
    assert f"rtnb.sources.replay({str(tmp_path / 'p.parquet')!r}, name='past')" in code
    assert "rtnb.sources.redis_stream('s', 'redis://127.0.0.1:6379/0'," in code
    assert "rtnb.sources.hybrid(past, now, id='eid', name='events')" in code
    assert "source or" not in code and "--source" not in code


def test_a_bounded_broker_stream_as_history_each_group_acknowledged(
        client: redis.Redis, stream: str) -> None:
    """Any finite source is a history: here a Redis stream read from its beginning by a
    consumer group, bounded with ``max_events``; its acks and the live one's go each to
    their own group."""
    events = make_events(3_000, seed=7)
    old = f"{stream}-old"
    try:
        produce(client, old, events.iloc[:1_800])
        produce(client, stream, events.iloc[1_500:])
        history = rtnb.sources.redis_stream(old, example=EXAMPLE, time="timestamp",
                                            group="h", max_events=1_800, max_batch=300,
                                            name="past")
        live = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                         group="g", max_events=1_500, max_batch=300,
                                         name="now")
        src = rtnb.sources.hybrid(history=history, live=live, id="eid", overlap="1min")
        watched = Watched(src)
        asyncio.run(asyncio.wait_for(src.arun(), 30))
        watched.check(events)
        assert src.source.duplicates == 300
        assert client.xpending(old, "h")["pending"] == 0
        assert client.xpending(stream, "g")["pending"] == 0
    finally:
        client.delete(old)


@pytest.mark.parametrize("rule", ["time", "id"])
@pytest.mark.parametrize(("stop_after", "phase"), [(1_300, "history"), (2_900, "live")])
def test_a_checkpoint_in_either_phase_resumes_exactly(
        tmp_path: Path, rule: str, stop_after: int, phase: str) -> None:
    """In one process, as the exported runtime does it: a run stopped (the windows left
    open) in the history or in the live phase, saved, restored into a fresh pipeline and
    run to the end, emits each window once, equal to pandas."""
    from rtnb.state import Checkpoint

    events = make_events(4_000, seed=8)
    cut = 2_500
    assert events["timestamp"].iloc[cut - 1] == events["timestamp"].iloc[cut]
    options = {"id": "eid", "overlap": "1min"} if rule == "id" else {}

    def build() -> tuple[rtnb.Pipeline, rtnb.StreamingFrame, list[pd.DataFrame]]:
        src = rtnb.sources.hybrid(
            history=rtnb.sources.replay(events.iloc[:cut], batch_size=200),
            live=rtnb.sources.replay(events.iloc[cut - 300:], batch_size=200),
            name="events", **options)
        out = src.window(rtnb.tumbling("10s"), by="key", allowed_lateness="2s",
                         emit="final").agg(**AGGS).collect()
        return rtnb.Pipeline(src), src, out

    first, src, before = build()
    src.source.limit(stop_after)
    asyncio.run(src.source.run(src, asyncio.Event()))  # stopped: the graph stays open
    assert src.source.phase == phase
    Checkpoint(tmp_path / "state.db").save(first)
    second, src, after = build()
    assert Checkpoint(tmp_path / "state.db").restore(second)
    assert src.source.phase == phase
    src.run()
    result = pd.concat(before + after, ignore_index=True)
    expected = pandas_windows(events, time="timestamp", size="10s", by="key", aggs=AGGS)
    assert_frame_equal_unordered(result, expected, check_dtype=False, rtol=1e-9)
    assert src.source.history_rows == cut


@pytest.mark.skipif(shutil.which("prometheus") is None and os.environ.get("CI") != "true",
                    reason="needs Debian's prometheus (tools/ensure-prometheus.sh); under CI "
                           "it runs and fails without it, as test_prometheus_source.py does")
def test_a_prometheus_range_then_prometheus_live_each_evaluation_once(tmp_path: Path) -> None:
    """A private Prometheus scraping itself every second: the history is a range query up
    to a time T (bounded with ``until=``), the live source instant queries from two steps
    before T. Each (series, evaluation time) arrives once, with no step missing."""
    from prometheus_helpers import free_port as prometheus_port
    from prometheus_helpers import start_prometheus

    port = prometheus_port()
    server = start_prometheus(tmp_path / "server", [port], port=port)
    try:
        server.wait_for_sample("up")
        time.sleep(4)  # a few seconds of samples for the history
        first = pd.Timestamp.now("UTC").tz_localize(None).floor("1s") - pd.Timedelta("3s")
        until = first + pd.Timedelta("3s")
        history = rtnb.sources.prometheus("up", url=server.url, step="1s", since=first,
                                          until=until, delay="1s", name="past")
        live = rtnb.sources.prometheus("up", url=server.url, step="1s",
                                       since=until - pd.Timedelta("2s"), delay="1s",
                                       name="now")
        src = rtnb.sources.hybrid(history=history, live=live, name="up")
        out = src.collect()

        async def main() -> None:
            src.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                got = pd.concat(out) if out else None
                if got is not None and got["time"].max() >= until + pd.Timedelta("3s"):
                    break
            src.stop()
            await src.wait()

        asyncio.run(main())
    finally:
        server.stop()
    got = pd.concat(out, ignore_index=True)
    assert not got.duplicated(["time", "instance", "job"]).any(), got
    steps = pd.date_range(first, got["time"].max(), freq="1s")
    assert got["time"].tolist() == list(steps), got["time"].tolist()
    assert src.source.duplicates == 3  # the live source's T - 2 s, T - 1 s and T
    assert (got["value"] == 1.0).all()
