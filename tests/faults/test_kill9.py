"""Exactly-once across kill -9: exported scripts SIGKILLed at random moments and restarted.

Each test builds a pipeline as a user writes it (a replay of a Parquet or CSV file, or a Redis
consumer group; ``window(tumbling("10s"), by="key").agg(n=count, s=sum)``; a sink), exports
it with ``rtnb.Pipeline(...).export``, runs the script as a subprocess with ``--checkpoint
state.db --checkpoint-every 200ms``, SIGKILLs it 5 times at moments a seeded RNG picks (a
random delay, right after a ``"checkpoint"`` ``"saved"`` line, or inside a checkpoint save),
restarting it from the checkpoint each time, and lets the last run finish. What the sink holds
after all of that must be what pandas computes on the whole input, and what an uninterrupted
run of the same pipeline writes: nothing lost, nothing duplicated, nothing wrong. The
assertion messages count lost / duplicated / wrong windows, as issue #15's table does.

The killed runs replay at ``speed=SPEED`` (the whole input in about 8 s of wall time) so that
every run between two kills makes progress; the uninterrupted reference run is unpaced (the
same windows, sooner).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    Kill,
    describe,
    expected_windows,
    is_checkpoint,
    kill_and_restart,
    make_events,
    read_log,
    read_parquet_folder,
    read_redis_stream,
    tally,
)

import rtnb
from rtnb.testing import assert_frame_equal_unordered

pytestmark = pytest.mark.faults

EVENTS = 40_000  # 20 keys, 100 events/s of event time: 400 s, 820 windows of 10 s
SPEED = 50.0  # a killed run replays the 400 s in about 8 s
EVERY = "200ms"
EVERY_S = 0.2
MODES = ("random", "after_saved", "during_save", "random", "after_saved")


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return make_events(EVENTS, seed=15)


@pytest.fixture(scope="module")
def expected(events: pd.DataFrame) -> pd.DataFrame:
    out = expected_windows(events)
    assert len(out) > 800
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, events: pd.DataFrame) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    events.to_parquet(folder / "events.parquet", index=False)
    csv = events.assign(timestamp=events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f"))
    csv.to_csv(folder / "events.csv", index=False)
    return {"parquet": folder / "events.parquet", "csv": folder / "events.csv"}


def windows_of(src: rtnb.StreamingFrame) -> rtnb.StreamingFrame:
    return src.window(rtnb.tumbling(WINDOW), by="key", allowed_lateness=LATENESS,
                      emit="final").agg(**AGGS)


# -- sinks: how to attach one to the windows, and how to read back what it holds -------------
@dataclass
class SinkCase:
    name: str
    attach: Callable[[rtnb.StreamingFrame, Any], object]
    read: Callable[[Any], pd.DataFrame]
    target: Callable[[Path, str], Any]  # (folder, "clean"/"killed") -> what attach takes


def log_case() -> SinkCase:
    return SinkCase("to_log", lambda w, path: rtnb.sinks.to_log(w, str(path)), read_log,
                    lambda folder, run: folder / f"{run}.jsonl")


def parquet_case() -> SinkCase:
    return SinkCase("to_parquet", lambda w, path: rtnb.sinks.to_parquet(w, str(path)),
                    read_parquet_folder, lambda folder, run: folder / f"{run}-parquet")


def redis_case(client: Any, stream_names: Callable[[str], str]) -> SinkCase:
    streams: dict[str, str] = {}

    def target(folder: Path, run: str) -> str:
        return streams.setdefault(run, stream_names(f"out-{run}"))

    return SinkCase("to_redis_stream",
                    lambda w, stream: rtnb.sinks.to_redis_stream(w, stream, REDIS_URL),
                    lambda stream: read_redis_stream(client, stream), target)


def export_replay(folder: Path, data: Path, sink: SinkCase, target: Any, *,
                  speed: float | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    src = rtnb.sources.replay(str(data), batch_size=500, speed=speed, interval="20ms",
                              name="events")
    sink.attach(windows_of(src), target)
    return rtnb.Pipeline(src).export(folder / "job.py")


def checked(what: str, got: pd.DataFrame, expected: pd.DataFrame, history: list[Kill],
            reference: pd.DataFrame) -> None:
    """Assert ``got`` is ``expected`` exactly; the message counts what is not, per run."""
    counts = tally(got, expected)
    print(f"{what}: {counts}\n{describe(history)}")  # shown by -rP, and on a failure
    assert counts.exact, (
        f"{what}: after {sum(k.killed for k in history)} kill -9 and restarts: {counts}\n"
        f"uninterrupted run: {tally(reference, expected)}\n{describe(history)}")
    assert_frame_equal_unordered(got, expected, check_exact=False, rtol=1e-9, obj=what)
    assert_frame_equal_unordered(got, reference, check_exact=False, rtol=1e-9, obj=what)


def kills_landed(history: list[Kill]) -> None:
    """The test tested something: the runs were killed, one inside a save, after progress."""
    assert sum(k.killed for k in history) >= 4, describe(history)
    assert any(k.during_save for k in history), describe(history)
    progressed = [k for k in history if isinstance(k.last_saved, int)
                  and k.last_saved > (k.restored or 0)]
    if any(k.last_saved is not None for k in history):  # a replay: positions in the log
        assert len(progressed) >= 3, describe(history)


def finish(script: Path, args: list[str], timeout: float = 40) -> Job:
    job = Job(script, args)
    code = job.finish(timeout=timeout)
    assert code == 0, job.tail()
    return job


# -- replays -------------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("source", "sink_kind", "seed"), [
    ("parquet", "log", 1),
    ("csv", "log", 2),
    ("parquet", "redis", 3),
    ("parquet", "parquet", 4),
])
def test_replay_killed_5_times_equals_pandas_and_an_uninterrupted_run(
        request: pytest.FixtureRequest, tmp_path: Path, inputs: dict[str, Path],
        expected: pd.DataFrame, source: str, sink_kind: str, seed: int) -> None:
    if sink_kind == "redis":
        sink = redis_case(request.getfixturevalue("redis_client"),
                          request.getfixturevalue("stream_names"))
    else:
        sink = log_case() if sink_kind == "log" else parquet_case()
    what = f"{source} replay -> {sink.name}"
    # the uninterrupted reference: the same pipeline, one run to the end
    clean = export_replay(tmp_path / "clean", inputs[source], sink,
                          sink.target(tmp_path, "clean"), speed=None)
    finish(clean, ["--checkpoint", str(tmp_path / "clean" / "state.db")])
    reference = sink.read(sink.target(tmp_path, "clean"))
    counts = tally(reference, expected)
    assert counts.exact, f"{what}, uninterrupted: {counts}"

    target = sink.target(tmp_path, "killed")
    script = export_replay(tmp_path / "killed", inputs[source], sink, target, speed=SPEED)
    db = tmp_path / "killed" / "state.db"
    args = ["--checkpoint", str(db), "--checkpoint-every", EVERY]
    rng = np.random.default_rng(seed)
    history = kill_and_restart(script, args, list(rng.permutation(MODES)), rng, db=db,
                               every=EVERY_S)
    last = finish(script, args)
    assert last.checkpoints("saved")[-1].get("finished") is True, last.tail()
    kills_landed(history)
    checked(what, sink.read(target), expected, history, reference)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sink_kind", ["log", "parquet"])
def test_kill_inside_checkpoint_saves_loses_and_repeats_nothing(
        tmp_path: Path, inputs: dict[str, Path], expected: pd.DataFrame,
        sink_kind: str) -> None:
    """Checkpoints every 50 ms; every kill is aimed inside a save.

    Half the kills come while a save is blocked on the checkpoint file's write lock (held
    by the test, so the run is certainly inside the save: the sink's epoch is flushed but
    the checkpoint is not durable), the others right after a ``saved`` line, when the next
    save is at most 50 ms away (some of those leave a hot SQLite journal behind).
    """
    sink = log_case() if sink_kind == "log" else parquet_case()
    what = f"parquet replay -> {sink.name}, kills inside checkpoint saves"
    reference_folder = tmp_path / "clean"
    clean = export_replay(reference_folder, inputs["parquet"], sink,
                          sink.target(tmp_path, "clean"), speed=None)
    finish(clean, [])
    reference = sink.read(sink.target(tmp_path, "clean"))

    target = sink.target(tmp_path, "killed")
    script = export_replay(tmp_path / "killed", inputs["parquet"], sink, target, speed=SPEED)
    db = tmp_path / "killed" / "state.db"
    args = ["--checkpoint", str(db), "--checkpoint-every", "50ms"]
    rng = np.random.default_rng(50)
    modes = ["during_save", "after_saved"] * 3
    history = kill_and_restart(script, args, modes, rng, db=db, every=0.05, max_delay=1.2)
    finish(script, args)
    kills_landed(history)
    assert sum(k.during_save for k in history) >= 2, describe(history)
    checked(what, sink.read(target), expected, history, reference)


# -- a Redis consumer group ------------------------------------------------------------------
EXAMPLE = {"timestamp": "datetime64[ns]", "key": "str", "v": "float64"}


def fill(client: Any, stream: str, events: pd.DataFrame) -> None:
    pipe = client.pipeline(transaction=False)
    stamps = events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    for t, key, v in zip(stamps, events["key"], events["v"], strict=True):
        pipe.xadd(stream, {"data": json.dumps({"timestamp": t, "key": key, "v": v})})
    pipe.execute()


def export_group(folder: Path, stream: str, group: str, log: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    src = rtnb.sources.redis_stream(stream, REDIS_URL, example=EXAMPLE, time="timestamp",
                                    group=group, consumer="job", count=200, name="events")
    rtnb.sinks.to_log(windows_of(src), str(log))
    return rtnb.Pipeline(src).export(folder / "job.py")


def group_state(client: Any, stream: str, group: str) -> dict[str, Any]:
    for info in client.xinfo_groups(stream):
        if info["name"].decode() == group:
            return {"pending": int(info["pending"]), "lag": info.get("lag"),
                    "read": info.get("entries-read"), "length": client.xlen(stream)}
    return {"pending": None, "lag": None, "read": None, "length": client.xlen(stream)}


def drain_then_stop(script: Path, args: list[str], client: Any, stream: str, group: str,
                    *, timeout: float = 40) -> tuple[Job, dict[str, Any]]:
    """Run until the group has read every entry and nothing is pending, then SIGTERM."""
    job = Job(script, args)
    deadline = time.monotonic() + timeout
    try:
        # the run has started (its SIGTERM handler is in place) and saved a checkpoint
        start = job.wait_for(lambda e: e.get("event") == "start", timeout=timeout)
        assert start is not None, job.tail()
        job.wait_for(is_checkpoint("saved"), after=start, timeout=timeout)
        while time.monotonic() < deadline and not job.done:
            state = group_state(client, stream, group)
            if state["pending"] == 0 and state["read"] == state["length"]:
                break
            time.sleep(0.1)
        time.sleep(3 * EVERY_S)  # a checkpoint (and its commits) after the last batch
        assert not job.done, f"the run ended by itself:\n{job.tail()}"
        job.proc.send_signal(signal.SIGTERM)
        code = job.finish(timeout=30)
    finally:
        job.close()
    assert code == 0, job.tail()
    return job, group_state(client, stream, group)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_redis_group_killed_5_times_equals_pandas_and_leaves_nothing_pending(
        tmp_path: Path, redis_client: Any,
        stream_names: Callable[[str], str]) -> None:
    """The stream is filled before the first run; one flush event per key, a minute after the
    data, closes every window of the data (a live source never ends: the last run is stopped
    with SIGTERM once the group has read everything, and its PEL must then be empty)."""
    # the group reads faster than a paced replay (with hiredis, 50,000 events were read and
    # acknowledged before the third of five kills): enough work for the kills to land in
    # the middle of it
    events = make_events(150_000, seed=16)
    stream = stream_names("in")
    flush_at = events["timestamp"].max().ceil(WINDOW) + pd.Timedelta("60s")
    flush = pd.DataFrame({"timestamp": flush_at, "key": sorted(events["key"].unique()),
                          "v": 0.0})
    fill(redis_client, stream, pd.concat([events, flush], ignore_index=True))
    expected = expected_windows(events)

    def data_windows(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["window_start"] < flush_at].reset_index(drop=True)

    clean = export_group(tmp_path / "clean", stream, "clean", tmp_path / "clean.jsonl")
    _, state = drain_then_stop(clean, ["--checkpoint", str(tmp_path / "clean" / "state.db"),
                                       "--checkpoint-every", EVERY],
                               redis_client, stream, "clean")
    reference = data_windows(read_log(tmp_path / "clean.jsonl"))
    counts = tally(reference, expected)
    assert counts.exact, f"redis group -> to_log, uninterrupted: {counts}"
    assert state["pending"] == 0, state

    script = export_group(tmp_path / "killed", stream, "job", tmp_path / "killed.jsonl")
    db = tmp_path / "killed" / "state.db"
    args = ["--checkpoint", str(db), "--checkpoint-every", EVERY]
    rng = np.random.default_rng(6)
    history = kill_and_restart(script, args, list(rng.permutation(MODES)), rng, db=db,
                               every=EVERY_S, max_delay=0.6,
                               probe=lambda: group_state(redis_client, stream, "job"))
    _, state = drain_then_stop(script, args, redis_client, stream, "job")
    kills_landed(history)
    # most kills interrupted work: entries were read and not yet acknowledged
    assert sum(bool(k.after["pending"]) for k in history) >= 3, describe(history)
    pel = redis_client.xpending(stream, "job")
    got = data_windows(read_log(tmp_path / "killed.jsonl"))
    counts = tally(got, expected)
    print(f"redis group -> to_log: {counts}; PEL {pel['pending']}\n{describe(history)}")
    assert counts.exact and pel["pending"] == 0, (
        f"redis group -> to_log: after {sum(k.killed for k in history)} kill -9 and restarts: "
        f"{counts}; {pel['pending']} entries still pending in the group (XPENDING), "
        f"group state {state}\n{describe(history)}")
    assert_frame_equal_unordered(got, expected, check_exact=False, rtol=1e-9)
