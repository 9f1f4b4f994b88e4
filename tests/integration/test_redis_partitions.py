"""``rtnb.sources.redis_stream(..., partitions=N)`` against the shared Redis server: the N
streams ``name:0`` .. ``name:{N-1}`` that ``rtnb.partition_of`` fills, read as one source
(issue 19: partitions come from the broker)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
import redis
from integration_helpers import service_or_skip

import rtnb
from rtnb.testing import assert_frame_equal_unordered

pytestmark = pytest.mark.integration

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64", "seq": "int64"}
N = 4


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:6_000][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(len(df), dtype=np.int64)).reset_index(drop=True)


@pytest.fixture
def shared() -> redis.Redis:
    service_or_skip(6379, "Redis")
    return redis.Redis(host="127.0.0.1", port=6379)


@pytest.fixture
def stream(shared: redis.Redis) -> Iterator[str]:
    name = f"rtnb-part-{uuid.uuid4().hex[:10]}"
    yield name
    shared.delete(*[f"{name}:{p}" for p in range(N)])


def produce(client: redis.Redis, stream: str, rows: pd.DataFrame, *,
            one_after_another: bool = False) -> pd.Series:
    """Each row into ``stream:{partition_of(host, N)}``; returns each row's partition.

    ``one_after_another``: partition 0's rows first, then partition 1's ... (a backlog its
    producers filled one partition at a time): by entry id, every row of a partition is
    older than every row of the next.
    """
    parts = pd.Series(rtnb.partition_of(rows["host"], N), index=rows.index)
    order = parts.sort_values(kind="stable").index if one_after_another else parts.index
    pipe = client.pipeline(transaction=False)
    for r, p in zip(rows.loc[order].itertuples(index=False), parts.loc[order], strict=True):
        pipe.xadd(f"{stream}:{p}", {"data": json.dumps({
            "timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
            "seq": int(r.seq)})})
    pipe.execute()
    return parts


def test_partitions_read_as_one_source_every_row_once_in_partition_order(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    parts = produce(shared, stream, rows)
    assert parts.nunique() == N  # the 12 hosts spread over all 4 partitions
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", partitions=N,
                                    count=250, max_events=len(rows))
    out = src.collect()
    src.run()
    got = pd.concat(out, ignore_index=True)
    # every row exactly once ...
    tm.assert_frame_equal(got.sort_values("seq", ignore_index=True), rows, check_dtype=False)
    # ... and each partition in its own order (partitions interleave)
    for p in range(N):
        seq = got.loc[rtnb.partition_of(got["host"], N) == p, "seq"]
        assert seq.is_monotonic_increasing and len(seq) == (parts == p).sum()
    assert not got["seq"].is_monotonic_increasing  # read together, not one after another


def test_a_group_acknowledges_each_partition_and_a_second_run_continues(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    produce(shared, stream, rows)
    first = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                      partitions=N, group="g", count=100, max_events=2_500)
    out = first.collect()
    first.run()
    # what was handled is acknowledged, in each partition's own stream; what was read past
    # max_events stays pending for this consumer (the next run reads it first)
    assert first.source.stats.acked == 2_500
    pending = sum(shared.xpending(f"{stream}:{p}", "g")["pending"] for p in range(N))
    assert pending >= first.source.stats.messages - 2_500 > 0
    second = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                       partitions=N, group="g", count=100,
                                       max_events=len(rows) - 2_500)
    more = second.collect()
    second.run()
    got = pd.concat(out + more, ignore_index=True).sort_values("seq", ignore_index=True)
    tm.assert_frame_equal(got, rows, check_dtype=False)  # nothing lost, nothing twice
    assert second.source.stats.acked == len(rows) - 2_500
    assert sum(shared.xpending(f"{stream}:{p}", "g")["pending"] for p in range(N)) == 0


@pytest.mark.parametrize("one_after_another", [False, True],
                         ids=["interleaved", "one-partition-after-another"])
def test_windows_over_partitions_equal_pandas(
        shared: redis.Redis, stream: str, rows: pd.DataFrame, one_after_another: bool) -> None:
    """Rows are aligned in event time across the partitions (a row goes on once every
    partition has sent rows as new), so windows with no allowed lateness equal pandas: no
    partition read ahead makes another's rows late. The producer adds ~100 rows per
    millisecond, so entry ids alone (the merge) cannot order them across partitions; filled
    one partition after another, entry ids order them wrongly."""
    produce(shared, stream, rows, one_after_another=one_after_another)
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", partitions=N,
                                    group="w", max_events=len(rows))
    per_host = src.window(rtnb.tumbling("1min"), by="host").agg(
        n=("cpu", "count"), mean=("cpu", "mean"), hi=("cpu", "max"))
    out = per_host.collect()
    src.run()
    got = pd.concat(out, ignore_index=True)
    assert per_host.counters.late == 0
    expected = rows.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"].agg(
        n="count", mean="mean", hi="max").reset_index()
    got = got.rename(columns={"window_start": "timestamp"})[["host", "timestamp", "n", "mean",
                                                              "hi"]]
    assert_frame_equal_unordered(got, expected, check_dtype=False,
                                 check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_partition_counts_are_refused(bad: object) -> None:
    with pytest.raises(rtnb.ConfigError, match="partitions must be a positive int"):
        rtnb.sources.redis_stream("s", example=EXAMPLE, partitions=bad)  # type: ignore[arg-type]


def test_a_silent_partition_holds_the_others_back_only_for_idle_timeout(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    parts = produce(shared, stream, rows)
    shared.delete(f"{stream}:3")  # partition 3 never sends anything
    kept = rows[(parts != 3).to_numpy()].reset_index(drop=True)
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", partitions=N,
                                    group="w", idle_timeout="300ms", max_events=len(kept))
    per_host = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"))
    out = per_host.collect()
    src.run()  # ends: the silent partition stops holding the rows back after 300 ms
    got = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
    expected = kept.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"].agg(
        n="count").reset_index()
    assert per_host.counters.late == 0
    assert_frame_equal_unordered(got[["host", "timestamp", "n"]], expected, check_dtype=False)


def test_after_a_quiet_spell_each_partition_has_idle_timeout_to_bring_its_part(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    """The first half is read and every partition goes quiet; then the second half arrives
    one partition at a time, 0.15 s apart (idle_timeout 3 s: with 1 s a fresh make test's
    load once stretched the four writes past it): the first partition heard from again does
    not make the others' rows late. Windows equal pandas, no late row."""
    half = len(rows) // 2
    produce(shared, stream, rows.iloc[:half])
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", partitions=N,
                                    group="q", idle_timeout="3s", max_events=len(rows))
    per_host = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"))
    out = per_host.collect()

    async def run() -> None:
        rtnb.Pipeline(per_host).start()
        while src.source.stats.events < half:
            await asyncio.sleep(0.01)
        await asyncio.sleep(3.5)  # every partition idle
        later = rows.iloc[half:]
        parts = rtnb.partition_of(later["host"], N)
        for p in range(N):
            produce(shared, stream, later[parts == p])
            await asyncio.sleep(0.15)
        await src.wait()

    asyncio.run(run())
    got = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
    expected = rows.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"].agg(
        n="count").reset_index()
    assert per_host.counters.late == 0
    assert_frame_equal_unordered(got[["host", "timestamp", "n"]], expected, check_dtype=False)


def test_each_partitions_lag_in_the_stats_the_status_and_prometheus(
        shared: redis.Redis, stream: str, rows: pd.DataFrame) -> None:
    """The lag of every partition (what a KEDA-style autoscaler reads): XINFO GROUPS per
    partition stream, summed in ``stats.lag``, shown in the status and exported as
    ``rtnb_source_partition_lag{partition=...}``."""
    import urllib.request

    from rtnb.export import runtime

    parts = produce(shared, stream, rows)
    # a small buffer: the source cannot read (deliver to the group) all 6,000 entries ahead
    # of the 400 it emits (with hiredis it read them all at once, and the lag was rightly 0)
    src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp", partitions=N,
                                    group="lag", count=100, max_events=400, buffer=500)
    src.run()
    stats = src.source.stats
    assert stats.partition_lag is not None
    assert sorted(stats.partition_lag) == [f"{stream}:{p}" for p in range(N)]
    assert sum(stats.partition_lag.values()) == stats.lag
    # at most each partition's backlog; read early on (the first poll), some is left
    for p in range(N):
        assert 0 <= stats.partition_lag[f"{stream}:{p}"] <= (parts == p).sum()
    assert stats.lag > 0
    status = src.status()
    shown = status.html(status.snapshot())
    status.close()
    # each partition's rate (messages read, over the status' looks), then its lag
    assert re.search(rf"{stream}:0 [\d.,]+/s lag {stats.partition_lag[f'{stream}:0']:,}",
                     shown), shown
    assert stats.partition_messages is not None
    assert sorted(stats.partition_messages) == sorted(stats.partition_lag)
    # what the pipeline took from the partitions: the 400 events and the rest of their
    # batches, less what was still buffered when max_events stopped the run
    assert stats.events <= sum(stats.partition_messages.values()) <= stats.messages
    pipeline = rtnb.Pipeline(src)
    counts = runtime._Counts(pipeline.frames)
    server, port = runtime.serve_metrics(pipeline, counts, 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    for p in range(N):
        line = next(x for x in text.splitlines() if x.startswith("rtnb_source_partition_lag{")
                    and f'partition="{stream}:{p}"' in x)
        assert float(line.rsplit(" ", 1)[1]) == stats.partition_lag[f"{stream}:{p}"]
        line = next(x for x in text.splitlines()
                    if x.startswith("rtnb_source_partition_messages_total{")
                    and f'partition="{stream}:{p}"' in x)
        assert float(line.rsplit(" ", 1)[1]) == stats.partition_messages[f"{stream}:{p}"]


def test_max_drift_bounds_what_the_alignment_holds_back(
        shared: redis.Redis, stream: str) -> None:
    """Partitions filled one after another: by entry id the first partition's whole backlog
    comes first, and the alignment holds all of it back until the others are heard from.
    With ``max_drift`` a partition that ran ahead is not read until the others catch up, so
    what is held back stays within the buffer (here 2,000 messages) while windows still
    equal pandas with no late row; without it, the held backlog grows with the data."""
    rows = rtnb.datasets.metrics().iloc[:24_000][["timestamp", "host", "cpu"]]
    rows = rows.assign(seq=np.arange(len(rows), dtype=np.int64)).reset_index(drop=True)
    parts = produce(shared, stream, rows, one_after_another=True)
    held: dict[tuple[str | None, bool], int] = {}  # (max_drift, small buffer): most held

    def run(max_drift: str | None, **options: int) -> tuple[pd.DataFrame, int]:
        src = rtnb.sources.redis_stream(stream, example=EXAMPLE, time="timestamp",
                                        partitions=N, group=f"d{max_drift}{len(options)}",
                                        count=100, max_drift=max_drift, max_events=len(rows),
                                        **options)
        source = src.source
        align = source._align
        most = [0]

        def watched(*args: object, **kwargs: object) -> object:
            out = align(*args, **kwargs)  # type: ignore[arg-type]
            most[0] = max(most[0], len(source._aligned))
            return out

        source._align = watched  # type: ignore[method-assign]
        per_host = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"))
        out = per_host.collect()
        src.run()
        held[max_drift, bool(options)] = most[0]
        return pd.concat(out, ignore_index=True), per_host.counters.late

    expected = rows.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"].agg(
        n="count").reset_index()
    small = {"buffer": 2_000, "max_batch": 500}
    for drift, options in ((None, {}), ("30s", small)):
        got, late = run(drift, **options)
        got = got.rename(columns={"window_start": "timestamp"})
        assert late == 0
        assert_frame_equal_unordered(got[["host", "timestamp", "n"]], expected,
                                     check_dtype=False)
    # the same small buffer without max_drift: the held backlog overflows it, everything
    # held goes on at once, and rows turn late
    _, late = run(None, **small)
    assert late > 0
    first = int((parts == parts.sort_values(kind="stable").iloc[0]).sum())
    assert held[None, False] >= first // 2  # about the first partition's whole backlog
    assert held["30s", True] <= 2_000 < held[None, False], held
