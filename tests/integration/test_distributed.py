"""Partitioned pipelines on a Dask ``LocalCluster`` (issue 19): each Redis partition read and
pre-aggregated on a worker, windows merged on the driver. Every result is compared with the
same pipeline run in one process on the same rows (itself checked against pandas by the
window and detector property tests), and the tumbling windows with pandas directly."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from distributed_helpers import (
    EXAMPLE,
    assert_same,
    collected,
    killing_a_worker,
    metrics_rows,
    one_process,
    run_on,
    until,
    windows,
)
from integration_helpers import service_or_skip

import rtnb
from rtnb.detect import ZScore
from rtnb.errors import ConfigError, SourceError
from rtnb.testing import assert_frame_equal_unordered
from rtnb.windows.base import NO_WATERMARK

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return metrics_rows()


@pytest.fixture(scope="module")
def cluster1() -> Iterator[Any]:
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


@pytest.fixture
def shared() -> redis.Redis:
    service_or_skip(6379, "Redis")
    return redis.Redis(host="127.0.0.1", port=6379)


@pytest.fixture
def stream(shared: redis.Redis) -> Iterator[str]:
    name = f"rtnb-dask-{uuid.uuid4().hex[:10]}"
    yield name
    shared.delete(*[f"{name}:{p}" for p in range(16)])


def produce(client: redis.Redis, stream: str, rows: pd.DataFrame, parts: np.ndarray,
            extra: dict[int, list[bytes]] | None = None) -> None:
    """Row ``i`` into ``stream:{parts[i]}``, in order; ``extra[p]``: raw payloads appended to
    partition ``p`` halfway through."""
    pipe = client.pipeline(transaction=False)
    half = len(rows) // 2
    for i, (r, p) in enumerate(zip(rows.itertuples(index=False), parts, strict=True)):
        if i == half and extra:
            for q, payloads in extra.items():
                for payload in payloads:
                    pipe.xadd(f"{stream}:{q}", {"data": payload})
        pipe.xadd(f"{stream}:{p}", {"data": json.dumps({
            "timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
            "latency_ms": r.latency_ms, "seq": int(r.seq)})})
    pipe.execute()


def source(stream: str, n: int, partitions: int, **kw: Any) -> rtnb.StreamingFrame:
    return rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                     partitions=partitions, group=f"g{uuid.uuid4().hex[:6]}",
                                     max_events=n, **kw)


@pytest.mark.parametrize(("partitions", "workers"), [(1, 1), (4, 2), (8, 1), (8, 2)])
def test_windows_over_partitions_equal_one_process_and_pandas(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster1: Any, cluster2: Any,
        partitions: int, workers: int) -> None:
    # rows spread over the partitions whatever their host: each key's windows are partial
    # on several workers and merged on the driver
    parts = rtnb.partition_of(rows["seq"].astype(str), partitions)
    assert len(set(parts.tolist())) == partitions
    produce(shared, stream, rows, parts)
    src = source(stream, len(rows), partitions, count=500)
    pipeline, got = run_on(cluster1 if workers == 1 else cluster2, windows(src), max_rows=900)
    want = one_process(rows, src.example, windows)
    assert_same(got, want)
    # pandas on the whole input: the tumbling minute per host
    busy = rows[rows["cpu"] > 5]
    ref = busy.groupby([busy["timestamp"].dt.floor("1min").rename("window_start"),
                        "host"]).agg(n=("cpu", "count"), mean=("cpu", "mean"),
                                     p90=("latency_ms", lambda v: v.quantile(0.9)))
    mine = got[0].set_index(["window_start", "host"])[["n", "mean", "p90"]].sort_index()
    pd.testing.assert_frame_equal(mine, ref.sort_index(), check_dtype=False, check_names=False,
                                  rtol=1e-9)
    stats = src.source.stats
    assert stats.events == len(rows) and stats.dead_letters == 0
    assert len(set(stats.partition_worker.values())) == workers
    assert sorted(stats.partition_worker) == [f"{stream}:{p}" for p in range(partitions)]
    assert pipeline.runner.workers.keys() == set(range(partitions))
    assert shared.xinfo_groups(f"{stream}:0")[0]["pending"] == 0  # everything acknowledged


def per_key(sdf: rtnb.StreamingFrame) -> list[rtnb.StreamingFrame]:
    rolling = sdf.rolling("2min", by="host")["latency_ms"].agg("mean", "max")
    scored = sdf.detect(ZScore("10min"), on="cpu", by="host")
    sessions = sdf[sdf["cpu"] > 60].window(rtnb.session("30s"), by="host").agg(
        n=("cpu", "count"), mean=("cpu", "mean"))
    return [rolling, scored, sessions]


def test_rolling_detectors_and_sessions_run_per_partition_of_their_keys(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any) -> None:
    parts = rtnb.partition_of(rows["host"], 4)  # a host's rows all in one partition
    assert len(set(parts.tolist())) == 4
    produce(shared, stream, rows, parts)
    src = source(stream, len(rows), 4, count=300)
    _, got = run_on(cluster2, per_key(src), max_rows=500)
    want = one_process(rows, src.example, per_key)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w) and len(g)
        assert_frame_equal_unordered(g, w, rtol=1e-9)
    assert got[1]["is_anomaly"].any()  # the detector saw something to flag


def test_malformed_messages_become_dead_letters_and_the_rest_is_exact(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any) -> None:
    parts = rtnb.partition_of(rows["seq"].astype(str), 4)
    bad = [b"{not json", json.dumps({"timestamp": "2026-01-05T00:10:00", "host": "x",
                                     "cpu": "hot", "latency_ms": 1.0, "seq": 1}).encode()]
    produce(shared, stream, rows, parts, extra={2: bad})
    src = source(stream, len(rows), 4)
    dead = src.dead_letters.collect()
    _, got = run_on(cluster2, windows(src))
    want = one_process(rows, src.example, windows)
    for g, w in zip(got, want, strict=True):
        assert_frame_equal_unordered(g, w, rtol=1e-9)
    letters = pd.concat(dead, ignore_index=True)
    assert len(letters) == 2 and src.source.stats.dead_letters == 2
    assert letters["dead_letter_raw"].tolist() == [b.decode() if isinstance(
        letters["dead_letter_raw"].iloc[0], str) else b for b in bad]
    assert letters["dead_letter_reason"].str.contains("cpu").iloc[1]
    assert letters["dead_letter_position"].str.len().gt(0).all()


def test_an_idle_partition_does_not_hold_windows_back(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any) -> None:
    head = rows.iloc[:3_000]
    produce(shared, stream, head, np.array([p % 3 for p in range(len(head))]))  # 3 of 4

    async def windows_before_stop(idle: str) -> int:
        src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                        partitions=4, idle_timeout=idle)
        counts = src.window(rtnb.tumbling("1min")).agg(n=("cpu", "count"))
        out = counts.collect()
        pipeline = rtnb.Pipeline(counts)
        pipeline.start(cluster=cluster2)
        for _ in range(100):  # until the 3 partitions are read
            await asyncio.sleep(0.1)
            if src.source.stats.events == len(head):
                break
        await asyncio.sleep(1.0)
        emitted = sum(len(b) for b in out)
        pipeline.stop()
        await src.wait()
        assert sum(int(b["n"].sum()) for b in out) == len(head)  # all there at the end
        return emitted

    # partition 3 never sends: after idle_timeout the others' time closes windows ...
    assert asyncio.run(windows_before_stop("300ms")) > 0
    # ... while a partition not yet idle holds every window open
    assert asyncio.run(windows_before_stop("1h")) == 0


def test_after_a_quiet_spell_each_partition_has_idle_timeout_to_bring_its_part(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any) -> None:
    """The first half is read and every partition goes quiet (idle); then the second half
    arrives one partition at a time, 0.15 s apart (a producer writing its partitions in
    turn; idle_timeout 1 s). The first partition read again must not make the others'
    rows late (they were idle a moment ago): the windows equal the one-process run."""
    parts = rtnb.partition_of(rows["seq"].astype(str), 4)
    half = len(rows) // 2
    produce(shared, stream, rows.iloc[:half], parts[:half])

    src = source(stream, len(rows), 4, idle_timeout="1s")

    async def run() -> list[pd.DataFrame]:
        outputs = windows(src)
        got = [f.collect() for f in outputs]
        pipeline = rtnb.Pipeline(*outputs)
        pipeline.start(cluster=cluster2)
        await until(src, lambda: src.source.stats.events == half and pipeline.runner.quiet)
        later, later_parts = rows.iloc[half:], parts[half:]
        for p in range(4):
            produce(shared, stream, later[later_parts == p], later_parts[later_parts == p])
            await asyncio.sleep(0.15)
        await src.wait()
        return [collected(g, f) for g, f in zip(got, outputs, strict=True)]

    assert_same(asyncio.run(run()), one_process(rows, src.example, windows))


def test_a_partition_10x_faster_in_event_time_is_held_within_max_drift(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any) -> None:
    """The hosts of partition 0 cover 10 times the event time of the others (20 h against
    2 h, in as many rows): with ``max_drift`` the driver stops reading it while it is more
    than that ahead of the frontier, so the event time the workers hold open stays within
    the drift and one step; without it, partition 0 runs hours ahead. Outputs equal the
    one-process run either way."""
    parts = rtnb.partition_of(rows["host"], 4)
    start = rows["timestamp"].min()
    fast = rows.assign(timestamp=np.where(
        parts == 0, start + (rows["timestamp"] - start) * 10, rows["timestamp"]))
    fast = fast.sort_values("timestamp", kind="stable").reset_index(drop=True)
    parts = rtnb.partition_of(fast["host"], 4)
    drift = pd.Timedelta("2h")
    max_rows = 50
    # the most event time one step of partition 0 can add beyond the drift
    times0 = fast["timestamp"][parts == 0].to_numpy()
    step_span = pd.Timedelta(int((times0[max_rows:] - times0[:-max_rows]).max()))

    async def run(max_drift: str | None) -> tuple[list[pd.DataFrame], pd.Timedelta, int]:
        name = f"{stream}-{max_drift}"
        produce(shared, name, fast, parts)
        kw: dict[str, Any] = {} if max_drift is None else {"max_drift": max_drift}
        src = source(name, len(fast), 4, idle_timeout="300ms", **kw)
        outputs = windows(src)
        got = [f.collect() for f in outputs]
        pipeline = rtnb.Pipeline(*outputs)
        pipeline.start(cluster=cluster2, max_rows=max_rows)
        runner = pipeline.runner
        spread, held_ticks, last_tick = pd.Timedelta(0), 0, -1
        try:
            while src.graph.state == "running":
                if runner.ticks != last_tick:
                    last_tick = runner.ticks
                    held_ticks += 0 in runner.held
                    if runner.frontier != NO_WATERMARK and runner.newest:
                        spread = max(spread, pd.Timedelta(
                            max(runner.newest.values()) - runner.frontier))
                await asyncio.sleep(0.001)
            await src.wait()
        finally:
            shared.delete(*[f"{name}:{p}" for p in range(4)])
        return [collected(g, f) for g, f in zip(got, outputs, strict=True)], spread, \
            held_ticks

    want = one_process(fast, rtnb.sources.redis_stream(stream, example=EXAMPLE).example,
                       windows)
    got, spread, held_ticks = asyncio.run(run("2h"))
    assert_same(got, want)
    assert held_ticks > 0  # the driver did hold partition 0 back
    assert spread <= drift + step_span, (spread, step_span)
    got, spread, held_ticks = asyncio.run(run(None))
    assert_same(got, want)
    assert held_ticks == 0 and spread > 5 * (drift + step_span), spread


def test_a_node_failing_on_a_worker_fails_the_run_naming_partition_and_node(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any) -> None:
    produce(shared, stream, rows.iloc[:2_000], rtnb.partition_of(rows["host"].iloc[:2_000], 4))

    def explode(df: pd.DataFrame) -> pd.DataFrame:
        if (df["cpu"] > 25).any():
            msg = "a value over 25"
            raise ValueError(msg)
        return df

    src = source(stream, 2_000, 4)
    counts = src.map_batches(explode, name="explode").window(rtnb.tumbling("1min")).agg(
        n=("cpu", "count"))
    with pytest.raises(SourceError, match=r"partition '.*:\d' failed.*explode.*over 25"):
        rtnb.Pipeline(counts).run(cluster=cluster2)
    assert src.graph.state == "failed"


def both(sdf: rtnb.StreamingFrame) -> list[rtnb.StreamingFrame]:
    return [windows(sdf)[0], per_key(sdf)[1]]


@pytest.mark.faults  # kill -9: runs with the fault tests (tools/run_tests.sh)
def test_a_worker_killed_mid_run_loses_and_repeats_nothing(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    """kill -9 of the worker holding partition 0, a third of the way through: its partitions
    are rebuilt on the other worker from their last checkpoint and re-read what came after
    it; windows (merged) and ZScore (whole on the workers) equal the one-process run."""

    parts = rtnb.partition_of(rows["host"], 4)
    produce(shared, stream, rows, parts)

    got, _, src = killing_a_worker(
        lambda: source(stream, len(rows), 4), both, max_rows=60, timeout=240)
    want = one_process(rows, src.example, both)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w)
        assert_frame_equal_unordered(g, w, rtol=1e-9)
    assert src.source.stats.events == len(rows)
    for p in range(4):  # everything acknowledged at the end
        assert shared.xinfo_groups(f"{stream}:{p}")[0]["pending"] == 0


@pytest.mark.faults  # kill -9: runs with the fault tests (tools/run_tests.sh)
def test_a_second_worker_lost_while_a_partition_re_reads_repeats_no_window(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    """Two workers killed one after the other: the second once the first one's partition
    is lost, before its windows merge (the other partitions' parts of the windows closed in
    that tick wait on the driver). A partition rebuilt then must not send again its part of
    windows it had sent into that wait: it re-reads at the frontier of its own last handled
    step, not at that of the last complete merge (which sent those parts twice: windows
    counted rows twice, as in one run in 18 of the scaling test)."""
    import os
    import signal

    parts = rtnb.partition_of(rows["seq"].astype(str), 4)
    produce(shared, stream, rows, parts)
    kills: list[tuple[str, int]] = []

    async def main() -> tuple[list[pd.DataFrame], rtnb.StreamingFrame, Any]:
        async with distributed.LocalCluster(
                n_workers=3, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", asynchronous=True) as cluster, \
                distributed.Client(cluster, asynchronous=True) as client:
            pids = await client.run(os.getpid)
            src = source(stream, len(rows), 4)
            outputs = windows(src)
            got = [f.collect() for f in outputs]
            pipeline = rtnb.Pipeline(*outputs)
            # checkpoints rare enough that the second kill comes before the next one
            pipeline.start(cluster=cluster, max_rows=60, checkpoint_every="1500ms")
            runner = pipeline.runner
            handle = runner._handle
            minute = pd.Timedelta("1min").value
            merged = [NO_WATERMARK, 0]  # the frontier and tick of the last complete merge

            def watched(results: list[Any], complete: bool = True) -> int:
                read = handle(results, complete)
                if complete:
                    merged[:] = [runner.frontier, runner.ticks]
                elif len(kills) == 1 and runner.frontier // minute > merged[0] // minute and \
                        (runner.checkpoint_tick or 0) <= merged[1] and \
                        all(out.snapshot is None for out in results):
                    # a partition is lost: the windows closed since the last merge wait,
                    # and the last checkpoint is older than them; kill the worker of
                    # another partition, which sent its part of them (its rebuild
                    # re-reads the rows of those parts)
                    victim = next((w for _, w in sorted(runner.workers.items())
                                   if w != kills[0][0]), None)
                    if victim is not None:  # else no second kill: the test fails below
                        kills.append((victim, runner.ticks))
                        os.kill(pids[victim], signal.SIGKILL)
                return read

            runner._handle = watched  # type: ignore[method-assign]
            total = len(rows)
            await until(src, lambda: src.source.stats.events >= total // 3
                        and runner.checkpoint_tick is not None
                        and runner.ticks - runner.checkpoint_tick >= 3, every=0.002)
            victim = runner.workers[1]
            kills.append((victim, runner.ticks))
            os.kill(pids[victim], signal.SIGKILL)
            await asyncio.wait_for(src.wait(), 240)
            return [collected(g, f) for g, f in zip(got, outputs, strict=True)], src, runner

    got, src, runner = asyncio.run(main())
    assert len(kills) == 2, kills  # the second kill came before the windows merged
    assert runner.recoveries >= 2
    want = one_process(rows, src.example, windows)
    for g, w in zip(got, want, strict=True):
        assert_frame_equal_unordered(g, w, rtol=1e-9)
    assert src.source.stats.events == len(rows)
    for p in range(4):  # everything acknowledged at the end
        assert shared.xinfo_groups(f"{stream}:{p}")[0]["pending"] == 0


async def _scaled(cluster: Any, n: int) -> None:
    result = cluster.scale(n)
    if inspect.isawaitable(result):
        await result


def test_scaling_mid_run_moves_partitions_and_changes_no_output(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    """scale(1) -> scale(2) -> scale(1) during a run: partitions move to the new worker and
    back (handed over between workers, or rebuilt from their checkpoint when a retired
    worker took them along), and the windows equal the one-process run.

    The first third of the rows is produced before the run, the rest once the second
    worker holds partitions (so that move is certain whatever the machine's speed): the
    partitions go idle in between, and their tasks move while idle. Dask keeps no lineage
    of the steps: its scheduler holds a few tasks however long the run (a chain of step
    futures kept every step, and a retired worker made Dask re-run a partition's steps from
    its first one on the other worker, reading and acknowledging entries nobody handled:
    this run then hung with a third of two partitions unread).
    """
    parts = rtnb.partition_of(rows["seq"].astype(str), 4)
    third = len(rows) // 3
    produce(shared, stream, rows.iloc[:third], parts[:third])
    seen: set[str] = set()
    held: list[int] = []

    async def main() -> tuple[list[pd.DataFrame], rtnb.StreamingFrame]:
        async with distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", asynchronous=True) as cluster:
            src = source(stream, len(rows), 4, idle_timeout="1s")
            outputs = windows(src)
            got = [f.collect() for f in outputs]
            pipeline = rtnb.Pipeline(*outputs)
            pipeline.start(cluster=cluster, max_rows=150, checkpoint_every="1s")
            runner, stats = pipeline.runner, src.source.stats
            await until(src, lambda: stats.events >= third)
            start = runner.ticks
            for n in (40, 80):  # the scheduler's tasks, twice, 40 idle ticks apart
                await until(src, lambda n=n: runner.ticks >= start + n)
                held.append(len(cluster.scheduler.tasks))
            await _scaled(cluster, 2)
            await until(src, lambda: len(set((stats.partition_worker or {}).values())) >= 2)
            seen.update((stats.partition_worker or {}).values())
            produce(shared, stream, rows.iloc[third:], parts[third:])
            await until(src, lambda: stats.events >= 2 * len(rows) // 3)
            await _scaled(cluster, 1)
            await asyncio.wait_for(src.wait(), 240)
            return [collected(g, f) for g, f in zip(got, outputs, strict=True)], src

    got, src = asyncio.run(main())
    assert len(seen) == 2  # the partitions were spread over both workers
    # no lineage: per partition its lease, its step in flight and a step being released
    # (the chain of futures held 2 more per partition every tick: hundreds here)
    assert max(held) <= 4 * 4, held
    want = one_process(rows, src.example, windows)
    for g, w in zip(got, want, strict=True):
        assert_frame_equal_unordered(g, w, rtol=1e-9)
    for p in range(4):  # everything acknowledged at the end
        assert shared.xinfo_groups(f"{stream}:{p}")[0]["pending"] == 0


def test_lag_adaptive_scales_up_on_a_backlog_and_down_when_caught_up(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    from rtnb.distributed import LagAdaptive

    parts = rtnb.partition_of(rows["seq"].astype(str), 4)
    produce(shared, stream, rows, parts)  # a backlog of ~12,300 entries
    sizes: list[int] = []

    async def main() -> tuple[list[pd.DataFrame], rtnb.StreamingFrame]:
        async with distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", asynchronous=True) as cluster:
            src = source(stream, len(rows), 4)
            outputs = windows(src)
            got = [f.collect() for f in outputs]
            pipeline = rtnb.Pipeline(*outputs)
            cluster.adapt(Adaptive=LagAdaptive, pipeline=pipeline, lag_per_worker=3_000,
                          minimum=1, maximum=2, interval="100ms", wait_count=3)
            pipeline.start(cluster=cluster, max_rows=150)
            while not src.graph.closed:
                sizes.append(len(cluster.scheduler_info["workers"]))
                await asyncio.sleep(0.05)
            await src.wait()
            for _ in range(300):  # caught up: lag 0, back to the minimum
                sizes.append(len(cluster.scheduler_info["workers"]))
                if sizes[-1] == 1:
                    break
                await asyncio.sleep(0.1)
            return [collected(g, f) for g, f in zip(got, outputs, strict=True)], src

    got, src = asyncio.run(main())
    assert max(sizes) == 2 and sizes[-1] == 1
    assert src.source.stats.lag == 0
    want = one_process(rows, src.example, windows)
    for g, w in zip(got, want, strict=True):
        assert_frame_equal_unordered(g, w, rtol=1e-9)


def test_what_cannot_run_on_a_cluster_is_refused_with_the_reason(
        stream: str, cluster2: Any) -> None:
    plain = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp")
    counts = plain.window(rtnb.tumbling("1min")).agg(n=("cpu", "count"))
    with pytest.raises(ConfigError, match="not partitioned"):
        rtnb.Pipeline(counts).start(cluster=cluster2)
    src = source(stream, 10, 2)
    live = src.window(rtnb.tumbling("1min"), emit="update").agg(n=("cpu", "count"))
    with pytest.raises(ConfigError, match="emit='update'"):
        rtnb.Pipeline(live).start(cluster=cluster2)
    src = source(stream, 10, 2)
    busy = src[src["cpu"] > 5]
    busy.collect()
    with pytest.raises(ConfigError, match=r"frame 'redis.filter.*' runs on the Dask workers"):
        rtnb.Pipeline(busy.window(rtnb.tumbling("1min")).agg(n=("cpu", "count"))).start(
            cluster=cluster2)


def test_a_local_cluster_by_name_is_started_and_closed(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    head = rows.iloc[:1_000]
    produce(shared, stream, head, rtnb.partition_of(head["host"], 2))
    src = source(stream, len(head), 2)
    counts = src.window(rtnb.tumbling("10min")).agg(n=("cpu", "count"))
    pipeline, (got,) = run_on("local:1", [counts])
    assert int(got["n"].sum()) == len(head)
    assert pipeline.runner.dashboard_link is not None


def test_checkpoints_that_cannot_be_written_acknowledge_nothing_and_a_stop_still_ends(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any) -> None:
    """With a durable checkpoint (``durable=``, what ``--checkpoint`` gives), entries are
    acknowledged only once a checkpoint holding them was written: when none can be written,
    every entry read stays pending in its group (the restart reads it again from the last
    checkpoint that was), and the run still ends at its stop, without flushing the open
    windows (they belong to a checkpoint), instead of waiting for a write."""
    head = rows.iloc[:2_000]
    produce(shared, stream, head, rtnb.partition_of(head["host"], 2))
    attempts: list[int] = []

    async def cannot_write(state: dict[str, Any]) -> bool:
        attempts.append(len(state["partitions"]))
        return False

    src = source(stream, len(head), 2)
    counts = src.window(rtnb.tumbling("10min")).agg(n=("cpu", "count"))
    pipeline, (got,) = run_on(cluster2, [counts], max_rows=300, checkpoint_every="100ms",
                              durable=cannot_write)
    assert attempts and set(attempts) == {2}  # each with both partitions' state
    assert pipeline.runner.suspended
    assert src.source.stats.events == len(head)
    # the windows that closed went on; the last ones were neither flushed nor lost: their
    # entries are all still pending, as is every entry read
    assert int(got["n"].sum()) < len(head)
    pending = sum(shared.xinfo_groups(f"{stream}:{p}")[0]["pending"] for p in range(2))
    assert pending == len(head)


def test_param_changes_reach_the_workers_and_structural_ones_are_refused(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any) -> None:
    """A filter's and a detector's Params moved mid-run (widgets drawn, as in a notebook):
    the rows read after the change use the new values on every worker, as in one process
    where the values change between the same two halves of the input. A Param that
    reconfigures a window running on the workers is refused, and keeps its value."""
    from rtnb.detect import Threshold

    def build(busy: rtnb.Param, limit: rtnb.Param, size: rtnb.Param
              ) -> Callable[[rtnb.StreamingFrame], list[rtnb.StreamingFrame]]:
        def outputs(sdf: rtnb.StreamingFrame) -> list[rtnb.StreamingFrame]:
            counts = sdf[sdf["cpu"] > busy].window(rtnb.tumbling(size), by="host").agg(
                n=("cpu", "count"), high=("cpu", "max"))
            flagged = sdf.detect(Threshold(upper=limit), on="latency_ms", by="host")
            return [counts, flagged]
        return outputs

    def params() -> tuple[rtnb.Param, rtnb.Param, rtnb.Param]:
        return (rtnb.Param(5.0, min=0.0, max=100.0, name="busy"),
                rtnb.Param(120.0, min=0.0, max=1e4, name="limit"),
                rtnb.Param("1min", min="30s", max="10min", name="size"))

    parts = rtnb.partition_of(rows["host"], 4)
    half = len(rows) // 2
    produce(shared, stream, rows.iloc[:half], parts[:half])
    busy, limit, size = params()
    drawn = busy.widget, limit.widget  # a Param with its widget still travels to workers
    assert all(w is not None for w in drawn)

    async def main() -> tuple[list[pd.DataFrame], rtnb.StreamingFrame]:
        src = source(stream, len(rows), 4)
        outputs = build(busy, limit, size)(src)
        got = [f.collect() for f in outputs]
        pipeline = rtnb.Pipeline(*outputs)
        pipeline.start(cluster=cluster2, max_rows=200)
        await until(src, lambda: src.source.stats.events >= half)
        busy.value, limit.value = 40.0, 300.0
        with pytest.raises(ConfigError, match=r"'size'.*Dask workers"):
            size.value = "2min"
        # a change reaches each partition with its next step: the steps already submitted
        # (which could read rows produced now) ran with the old values, as the batch being
        # handled in one process does
        tick = pipeline.runner.ticks
        await until(src, lambda: pipeline.runner.ticks >= tick + 2)
        produce(shared, stream, rows.iloc[half:], parts[half:])
        await asyncio.wait_for(src.wait(), 240)
        return [collected(g, f) for g, f in zip(got, outputs, strict=True)], src

    got, src = asyncio.run(main())
    assert size.value == pd.Timedelta("1min")
    # one process: the same values change between the same two halves
    ref_busy, ref_limit, ref_size = params()
    sdf = rtnb.StreamingFrame(src.example, time="timestamp")
    outputs = build(ref_busy, ref_limit, ref_size)(sdf)
    outs = [f.collect() for f in outputs]
    typed = rows.astype(src.example.dtypes.to_dict())
    sdf.emit(typed.iloc[:half].reset_index(drop=True))
    ref_busy.value, ref_limit.value = 40.0, 300.0
    sdf.emit(typed.iloc[half:].reset_index(drop=True))
    sdf.close()
    want = [collected(o, f) for o, f in zip(outs, outputs, strict=True)]
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w) and len(g)
        assert_frame_equal_unordered(g, w, rtol=1e-9)
    # each half flagged with its own limit
    latency = rows["latency_ms"]
    flagged = (latency.iloc[:half] > 120.0).sum() + (latency.iloc[half:] > 300.0).sum()
    assert got[1]["is_anomaly"].sum() == flagged != (latency > 120.0).sum()


@pytest.mark.parametrize(("partitions", "max_rows", "n", "idle"), [
    (16, 1, 1_500, "20ms"), (2, 100_000, None, "200ms")])
def test_extreme_steps_and_many_partitions_equal_one_process(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any,
        partitions: int, max_rows: int, n: int | None, idle: str) -> None:
    """16 partitions read one message per step (most steps read nothing: the frontier
    crawls), and 2 partitions each read whole in one step of up to 100,000 messages: the
    windows equal the one-process run either way. The 16 partitions' idle_timeout (20 ms)
    is shorter than any tick (a loaded machine's ticks are longer than a quiet one's): a
    partition left out of the last events' shares, or whose read has not come back yet,
    must not be taken for idle; only a read that found nothing makes it idle."""
    rows = rows.iloc[:n]
    parts = rtnb.partition_of(rows["seq"].astype(str), partitions)
    assert len(set(parts.tolist())) == partitions
    produce(shared, stream, rows, parts)
    src = source(stream, len(rows), partitions, idle_timeout=idle)
    _, got = run_on(cluster2, windows(src), max_rows=max_rows)
    assert_same(got, one_process(rows, src.example, windows))
    assert src.source.stats.events == len(rows)
    for p in range(partitions):
        assert shared.xinfo_groups(f"{stream}:{p}")[0]["pending"] == 0


def _live_tasks() -> int:
    from rtnb.distributed._worker import _LIVE

    return len(_LIVE)


@pytest.mark.faults  # kill -9: runs with the fault tests (tools/run_tests.sh)
def test_a_driver_killed_mid_run_leaves_no_partition_task_on_the_workers(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, cluster2: Any,
        tmp_path: Any) -> None:
    """kill -9 of the driver against a long-lived cluster: the scheduler drops its client,
    the workers release the partitions' leases and their tasks (and connections) go; a
    task left behind would keep its reader connected (an AMQP partition's exclusive
    consumer would refuse the restarted driver's)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    parts = rtnb.partition_of(rows["seq"].astype(str), 4)
    produce(shared, stream, rows, parts)
    script = tmp_path / "driver.py"
    script.write_text(
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import rtnb\n"
        "from test_distributed import source, windows\n"
        f"src = source({stream!r}, {len(rows)}, 4)\n"
        "outputs = windows(src)\n"
        "async def main():\n"
        f"    rtnb.Pipeline(*outputs).start(cluster={cluster2.scheduler_address!r}, "
        "max_rows=20)\n"
        "    while src.source.stats.events < 200:\n"
        "        await asyncio.sleep(0.02)\n"
        "    print('running', flush=True)\n"
        "    await src.wait()\n"
        "asyncio.run(main())\n")
    with distributed.Client(cluster2.scheduler_address) as client:
        assert sum(client.run(_live_tasks).values()) == 0
        driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                  cwd=tmp_path, start_new_session=True)
        try:
            assert driver.stdout is not None
            assert driver.stdout.readline().strip() == b"running"
            assert sum(client.run(_live_tasks).values()) == 4  # the run's partition tasks
        finally:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(30)
            if driver.stdout is not None:
                driver.stdout.close()
        deadline = time.monotonic() + 30
        while sum(client.run(_live_tasks).values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.run(_live_tasks) == dict.fromkeys(client.run(_live_tasks), 0)
