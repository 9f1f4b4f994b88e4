"""kill -9 of an exported script running ``rtnb.sources.hybrid``, in each phase.

The pipeline: a Parquet history (the events up to a time boundary, replayed paced so the
backfill lasts about 8 s) then a live Redis stream read by a consumer group (the events
after the boundary, in arrival order, produced in three parts while the job runs), into
``window(tumbling("10s"), by="key").agg(n=count, s=sum)`` and a ``to_log`` sink; the script
runs with ``--checkpoint``. Run 1 is SIGKILLed during the backfill (after some periodic
checkpoints, before the switch); run 2 restarts from the checkpoint in the history, switches
to live and is SIGKILLed there; run 3 restarts in the live phase, reads the rest and is
stopped with SIGTERM once the group has read and acknowledged everything. What the sink
holds must be what pandas computes on the whole input, each window once.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fault_helpers import (
    AGGS,
    LATENESS,
    REDIS_URL,
    WINDOW,
    Job,
    expected_windows,
    is_checkpoint,
    make_events,
    read_log,
    tally,
)

import rtnb
from rtnb.testing import assert_frame_equal_unordered

pytestmark = [pytest.mark.faults, pytest.mark.integration]

EXAMPLE = {"timestamp": "datetime64[ns]", "key": "str", "v": "float64"}
EVERY = "200ms"


def fill(client: Any, stream: str, events: pd.DataFrame) -> None:
    pipe = client.pipeline(transaction=False)
    stamps = events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    for t, key, v in zip(stamps, events["key"], events["v"], strict=True):
        pipe.xadd(stream, {"data": json.dumps({"timestamp": t, "key": key, "v": v})})
    pipe.execute()


def export(folder: Path, history: Path, stream: str, log: Path) -> Path:
    past = rtnb.sources.replay(str(history), speed=5.0, interval="20ms", batch_size=200,
                               name="past")
    now = rtnb.sources.redis_stream(stream, REDIS_URL, example=EXAMPLE, time="timestamp",
                                    group="job", consumer="job", count=200, name="now")
    src = rtnb.sources.hybrid(history=past, live=now, name="events")
    windows = src.window(rtnb.tumbling(WINDOW), by="key", allowed_lateness=LATENESS,
                         emit="final").agg(**AGGS)
    rtnb.sinks.to_log(windows, str(log))
    return rtnb.Pipeline(src).export(folder / "job.py")


def saved_in(phase: str) -> Callable[[dict[str, Any]], bool]:
    """A periodic checkpoint saved in ``phase`` (in the history: after its first rows)."""
    def match(e: dict[str, Any]) -> bool:
        where = str(e.get("position"))
        return is_checkpoint("saved")(e) and e.get("reason") == "periodic" and \
            where.startswith(f"<HybridPosition {phase}") and \
            (phase != "history" or history_row(where) > 0)
    return match


def is_switch(e: dict[str, Any]) -> bool:
    return e.get("event") == "source" and e.get("action") == "switch"


def history_row(position: Any) -> int:
    """The history row of a ``<HybridPosition history at N, ...>`` (as logged)."""
    return int(str(position).split(" at ", 1)[1].split(",", 1)[0])


def group_state(client: Any, stream: str) -> dict[str, Any]:
    for info in client.xinfo_groups(stream):
        if info["name"].decode() == "job":
            return {"pending": int(info["pending"]), "read": info.get("entries-read"),
                    "length": client.xlen(stream)}
    return {"pending": None, "read": None, "length": client.xlen(stream)}


@pytest.mark.timeout(60)
def test_hybrid_killed_during_backfill_and_during_live_equals_pandas(
        tmp_path: Path, redis_client: Any, stream_names: Callable[[str], str]) -> None:
    events = make_events(8_000, seed=20)  # 80 s of event time, a little out of order
    boundary = events["timestamp"].sort_values().iloc[3_999]
    past = events[events["timestamp"] <= boundary]
    now = events[events["timestamp"] > boundary].reset_index(drop=True)
    flush_at = events["timestamp"].max().ceil(WINDOW) + pd.Timedelta("60s")
    flush = pd.DataFrame({"timestamp": flush_at, "key": sorted(events["key"].unique()),
                          "v": 0.0})
    parts = [now.iloc[:1_500], now.iloc[1_500:3_000],
             pd.concat([now.iloc[3_000:], flush], ignore_index=True)]
    history = tmp_path / "past.parquet"
    past.to_parquet(history, index=False)
    stream = stream_names("hybrid")
    fill(redis_client, stream, parts[0])
    script = export(tmp_path, history, stream, tmp_path / "out.jsonl")
    args = ["--checkpoint", str(tmp_path / "state.db"), "--checkpoint-every", EVERY]
    report: list[str] = []
    t0 = time.monotonic()

    # run 1: killed during the backfill, after two periodic checkpoints in the history
    job = Job(script, args)
    try:
        got = job.wait_for(saved_in("history"), count=2, timeout=30)
        assert got is not None, job.tail()
        assert job.kill(), job.tail()
    finally:
        job.close()
    assert job.wait_for(is_switch, timeout=0) is None, "run 1 reached the live phase"
    last = job.checkpoints("saved")[-1]["position"]
    report.append(f"run 1 killed in the backfill at {time.monotonic() - t0:.1f} s, last saved "
                  f"{last}")
    assert 0 < history_row(last) < len(past), last

    # run 2: resumes in the history, switches, killed while reading the live stream
    job = Job(script, args)
    try:
        restored = job.wait_for(is_checkpoint("restored"), timeout=30)
        assert restored is not None, job.tail()
        start_at = job.events[restored][1]["position"]
        assert history_row(start_at) == history_row(last), (start_at, last)
        switched = job.wait_for(is_switch, timeout=30)
        assert switched is not None, job.tail()
        switch = job.events[switched][1]
        fill(redis_client, stream, parts[1])
        got = job.wait_for(lambda e: saved_in("live")(e) and e.get("acks", 0) > 0,
                           after=switched, timeout=20)
        assert got is not None, job.tail()
        time.sleep(0.1)  # between two checkpoints: entries read and not acknowledged
        assert job.kill(), job.tail()
    finally:
        job.close()
    assert switch["history_rows"] == len(past), switch  # each history row counted once
    assert switch["boundary"] == boundary.isoformat(), switch
    report.append(f"run 2 from {start_at}, switched at {switch['boundary']} after "
                  f"{switch['history_rows']} history rows, killed in live at "
                  f"{time.monotonic() - t0:.1f} s: "
                  f"{group_state(redis_client, stream)}")

    # run 3: resumes in the live phase, reads the rest, stopped once all is acknowledged
    fill(redis_client, stream, parts[2])
    job = Job(script, args)
    try:
        restored = job.wait_for(is_checkpoint("restored"), timeout=30)
        assert restored is not None, job.tail()
        assert str(job.events[restored][1]["position"]).startswith("<HybridPosition live")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = group_state(redis_client, stream)
            if state["pending"] == 0 and state["read"] == state["length"]:
                break
            time.sleep(0.1)
        time.sleep(0.6)  # a checkpoint (and its commits) after the last batch
        assert not job.done, job.tail()
        job.proc.send_signal(signal.SIGTERM)
        assert job.finish(timeout=20) == 0, job.tail()
    finally:
        job.close()
    assert job.wait_for(is_switch, timeout=0) is None, "run 3 read the history again"
    report.append(f"run 3 stopped at {time.monotonic() - t0:.1f} s: "
                  f"{group_state(redis_client, stream)}")

    expected = expected_windows(events)
    out = read_log(tmp_path / "out.jsonl")
    got_windows = out[out["window_start"] < flush_at].reset_index(drop=True)
    counts = tally(got_windows, expected)
    print(f"hybrid -> to_log: {counts}\n" + "\n".join(report))
    assert counts.exact, f"{counts}\n" + "\n".join(report)
    assert_frame_equal_unordered(got_windows, expected, check_exact=False, rtol=1e-9)
    assert redis_client.xpending(stream, "job")["pending"] == 0
    # windows spanning the switch were among them
    assert ((expected["window_start"] <= boundary) & (expected["window_end"] > boundary)).any()
    assert np.isclose(got_windows["n"].sum(), len(events))
