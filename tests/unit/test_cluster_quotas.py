"""How many messages each partition of a cluster run reads per tick (issue 19).

``ClusterRunner._quotas`` runs on the driver, from the partitions' lags as their steps report
them; no cluster and no broker here: a runner that was never started, its lags set as the
driver's tick loop sets them, and the ticks simulated (each partition reads its quota, or
what it has left).
"""

from __future__ import annotations

import math

import rtnb
from rtnb.distributed import ClusterRunner

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64"}
#: the backlogs of bench/scale_out.py's 8 partitions (2,000,000 events by partition_of)
BACKLOGS = [179_805, 319_531, 160_034, 420_301, 180_239, 220_562, 220_023, 299_505]


def runner(partitions: int = 8, max_rows: int = 10_000, max_events: int | None = None
           ) -> ClusterRunner:
    src = rtnb.sources.redis_stream("metrics", example=EXAMPLE, time="timestamp",
                                    partitions=partitions, group="q", max_events=max_events)
    agg = src.window(rtnb.tumbling("1s"), by="host").agg(n=("cpu", "count"))
    return ClusterRunner(rtnb.Pipeline(agg), "local:2", max_rows=max_rows)


def drain(r: ClusterRunner, backlog: list[int], *, max_events: int | None = None,
          lags: dict[int, int] | None = None) -> tuple[list[int], list[list[int]]]:
    """Ticks until every backlog is read: the tick each partition emptied in, and the reads
    of every tick. The lags are reported every tick (the driver's estimate between reports
    is the last report less what was read, the same numbers), or are ``lags`` throughout
    (a stale report)."""
    left = list(backlog)
    done = [0] * len(left)
    reads: list[list[int]] = []
    read_total = 0
    while any(left):
        r._lags = dict(enumerate(left)) if lags is None else dict(lags)
        remaining = None if max_events is None else max_events - read_total
        quota = r._quotas(remaining)
        got = [min(q, n) for q, n in zip(quota, left, strict=True)]
        r.ticks += 1
        reads.append(got)
        read_total += sum(got)
        for p, n in enumerate(got):
            left[p] -= n
            if n and not left[p]:
                done[p] = r.ticks
        assert r.ticks < 10_000, "the backlogs never drain"
    return done, reads


def test_before_any_lag_is_known_every_partition_reads_max_rows():
    r = runner()
    assert r._quotas(None) == [10_000] * 8


def test_caught_up_partitions_each_read_max_rows():
    r = runner(partitions=3)
    r._lags = {0: 10_000, 1: 0, 2: 37}
    assert r._quotas(None) == [10_000] * 3


def test_a_backlog_is_shared_out_by_lag_so_the_partitions_drain_in_the_same_tick():
    r = runner()
    done, reads = drain(r, BACKLOGS)
    fewest = math.ceil(max(BACKLOGS) / 10_000)
    assert max(done) <= fewest + 1  # no slower than the largest backlog at max_rows a tick
    assert max(done) - min(done) <= 1
    # the work of a tick stays even: no tick reads the largest partition alone at the end
    totals = [sum(t) for t in reads[:-1]]
    assert min(totals) >= 0.9 * max(totals)
    assert sum(map(sum, reads)) == sum(BACKLOGS)


def test_without_pacing_the_small_backlogs_finish_first_and_the_largest_reads_alone():
    # what pacing is for: the old rule, max_rows each, empties the partitions at their own
    # pace and the last ticks read one partition (one worker busy)
    r = runner()
    r.pace = False
    done, reads = drain(r, BACKLOGS)
    assert min(done) == math.ceil(min(BACKLOGS) / 10_000)
    assert reads[-2] == [0, 0, 0, 10_000, 0, 0, 0, 0]


def test_a_partition_far_behind_does_not_stall_the_others():
    r = runner(partitions=3)
    r._lags = {0: 1_000_000, 1: 10, 2: 50_000}
    assert r._quotas(None) == [10_000, 2_500, 2_500]  # at least a quarter of max_rows


def test_max_events_is_never_passed_and_its_last_rows_come_from_the_partitions_that_hold_them():
    total = sum(BACKLOGS)
    r = runner(max_events=total)
    done, reads = drain(r, BACKLOGS, max_events=total)
    assert sum(map(sum, reads)) == total
    # the last partition's rest is read at max_rows a tick, not an eighth of it a tick
    assert max(done) <= math.ceil(max(BACKLOGS) / 10_000) + 1
    r2 = runner(max_events=total)
    r2._lags = {p: (10_000 if p == 3 else 0) for p in range(8)}
    quota = r2._quotas(10_000)
    assert sum(quota) == 10_000 and quota[3] >= 9_980


def test_max_events_cuts_a_tick_short_without_reading_past_it():
    r = runner(partitions=4, max_events=25_000)
    r._lags = {0: 30_000, 1: 30_000, 2: 30_000, 3: 30_000}
    quota = r._quotas(25_000)
    assert sum(quota) == 25_000 and max(quota) - min(quota) <= 1
    r._lags = {}  # lags unknown: shared out evenly too
    quota = r._quotas(7)
    assert sum(quota) == 7 and max(quota) - min(quota) <= 1


def test_stale_lags_do_not_leave_the_last_messages_of_max_events_unread():
    # the lags say partition 0 holds the rest; the messages are in partitions 1 and 3 (a
    # report older than a rebuild, or a broker that counts its lag otherwise)
    stale = {0: 1_000, 1: 0, 2: 0, 3: 0}
    for backlog in ([0, 3, 0, 2], [0, 500, 0, 20]):
        r = runner(partitions=4, max_events=sum(backlog))
        done, reads = drain(r, backlog, max_events=sum(backlog), lags=stale)
        assert sum(map(sum, reads)) == sum(backlog)
        assert max(done) <= sum(backlog)  # at least one of them a tick
