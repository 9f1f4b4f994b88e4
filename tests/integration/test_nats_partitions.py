"""``rtnb.sources.nats(..., partitions=N, durable=...)`` against the shared NATS server
(JetStream): the N subjects ``name.0`` .. ``name.{N-1}`` that ``rtnb.partition_of`` fills,
each read by its own durable consumer ``{durable}-{p}``, as one source aligned in event time
(issue 19: partitions come from the broker)."""

from __future__ import annotations

import asyncio
import json
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from integration_helpers import service_or_skip

import rtnb
from rtnb.testing import assert_frame_equal_unordered

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64", "seq": "int64"}
URL = "nats://127.0.0.1:4222"
N = 4


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = rtnb.datasets.metrics().iloc[:6_000][["timestamp", "host", "cpu"]]
    return df.assign(seq=np.arange(len(df), dtype=np.int64)).reset_index(drop=True)


@pytest.fixture
def subject() -> Iterator[str]:
    """A fresh stream capturing ``{subject}.*``, deleted at the end."""
    service_or_skip(4222, "NATS")
    name = f"rtnbpart{uuid.uuid4().hex[:10]}"

    async def make() -> None:
        nc = await nats.connect(URL)
        await nc.jetstream().add_stream(name=name, subjects=[f"{name}.*"])
        await nc.close()

    async def drop() -> None:
        nc = await nats.connect(URL)
        await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(make())
    yield name
    asyncio.run(drop())


def as_json(r: Any) -> bytes:
    return json.dumps({"timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
                       "seq": int(r.seq)}).encode()


def produce(subject: str, rows: pd.DataFrame, *, skip: int | None = None) -> pd.Series:
    """Each row to ``subject.{partition_of(host, N)}``, in order (but partition ``skip``)."""
    parts = pd.Series(rtnb.partition_of(rows["host"], N), index=rows.index)

    async def main() -> None:
        nc = await nats.connect(URL)
        js = nc.jetstream()
        todo = [(f"{subject}.{p}", as_json(r)) for r, p in
                zip(rows.itertuples(index=False), parts, strict=True) if p != skip]
        for i in range(0, len(todo), 500):
            await asyncio.gather(*(js.publish(s, m) for s, m in todo[i:i + 500]))
        await nc.close()

    asyncio.run(main())
    return parts


def consumers(subject: str, durable: str) -> list[Any]:
    async def main() -> list[Any]:
        nc = await nats.connect(URL)
        js = nc.jetstream()
        out = [await js.consumer_info(subject, f"{durable}-{p}") for p in range(N)]
        await nc.close()
        return out

    return asyncio.run(main())


def per_minute(kept: pd.DataFrame) -> pd.DataFrame:
    return kept.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"].agg(
        n="count", mean="mean", hi="max").reset_index()


def test_partitions_read_as_one_source_every_row_once_acked_and_in_partition_order(
        subject: str, rows: pd.DataFrame) -> None:
    parts = produce(subject, rows)
    assert parts.nunique() == N  # the 12 hosts spread over all 4 partitions
    src = rtnb.sources.nats(subject, example=EXAMPLE, time="timestamp", durable="d",
                            partitions=N, count=250, max_events=len(rows))
    out = src.collect()
    src.run()
    got = pd.concat(out, ignore_index=True)
    tm.assert_frame_equal(got.sort_values("seq", ignore_index=True), rows, check_dtype=False)
    for p in range(N):  # each partition in its own order
        seq = got.loc[rtnb.partition_of(got["host"], N) == p, "seq"]
        assert seq.is_monotonic_increasing and len(seq) == (parts == p).sum()
    # each partition's own consumer acknowledged exactly its messages
    infos = consumers(subject, "d")
    assert [i.config.filter_subject for i in infos] == [f"{subject}.{p}" for p in range(N)]
    assert [i.num_ack_pending for i in infos] == [0] * N
    assert [i.num_pending for i in infos] == [0] * N
    assert [i.delivered.consumer_seq for i in infos] == [(parts == p).sum() for p in range(N)]
    stats = src.source.stats
    assert stats.acked == len(rows)
    # each partition's lag, as polled (every second, the first poll at the start)
    assert stats.partition_lag is not None
    assert sorted(stats.partition_lag) == [f"{subject}.{p}" for p in range(N)]
    assert sum(stats.partition_lag.values()) == stats.lag
    assert all(0 <= stats.partition_lag[f"{subject}.{p}"] <= (parts == p).sum()
               for p in range(N))


def test_windows_over_partitions_equal_pandas_and_the_unpartitioned_run(
        subject: str, rows: pd.DataFrame) -> None:
    """Rows aligned in event time across the partitions: windows with no allowed lateness
    equal pandas and the same pipeline reading every partition's subject as one
    (``{subject}.*`` with one consumer)."""
    produce(subject, rows)

    def run(src: rtnb.StreamingFrame) -> tuple[pd.DataFrame, int]:
        per_host = src.window(rtnb.tumbling("1min"), by="host").agg(
            n=("cpu", "count"), mean=("cpu", "mean"), hi=("cpu", "max"))
        out = per_host.collect()
        src.run()
        got = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
        return got[["host", "timestamp", "n", "mean", "hi"]], per_host.counters.late

    got, late = run(rtnb.sources.nats(subject, example=EXAMPLE, time="timestamp",
                                      durable="w", partitions=N, count=200,
                                      max_events=len(rows)))
    assert late == 0
    assert_frame_equal_unordered(got, per_minute(rows), check_dtype=False, check_exact=False,
                                 rtol=1e-9)
    whole, late = run(rtnb.sources.nats(f"{subject}.*", example=EXAMPLE, time="timestamp",
                                        durable="one", max_events=len(rows)))
    assert late == 0
    assert_frame_equal_unordered(got, whole, rtol=1e-9)


def test_a_silent_partition_holds_the_others_back_only_for_idle_timeout(
        subject: str, rows: pd.DataFrame) -> None:
    parts = produce(subject, rows, skip=3)  # partition 3 never sends anything
    kept = rows[(parts != 3).to_numpy()].reset_index(drop=True)
    src = rtnb.sources.nats(subject, example=EXAMPLE, time="timestamp", durable="i",
                            partitions=N, idle_timeout="300ms", max_events=len(kept))
    per_host = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"))
    out = per_host.collect()
    src.run()  # ends: the silent partition stops holding the rows back after 300 ms
    got = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
    assert per_host.counters.late == 0
    assert_frame_equal_unordered(got[["host", "timestamp", "n"]],
                                 per_minute(kept)[["host", "timestamp", "n"]],
                                 check_dtype=False)


def test_a_second_run_of_the_same_durables_continues_without_duplicates(
        subject: str, rows: pd.DataFrame) -> None:
    produce(subject, rows)
    first = rtnb.sources.nats(subject, example=EXAMPLE, time="timestamp", durable="r",
                              partitions=N, count=100, max_events=2_500)
    out = first.collect()
    first.run()
    assert first.source.stats.acked == 2_500
    second = rtnb.sources.nats(subject, example=EXAMPLE, time="timestamp", durable="r",
                               partitions=N, count=100, max_events=len(rows) - 2_500)
    more = second.collect()
    second.run()
    got = pd.concat(out + more, ignore_index=True).sort_values("seq", ignore_index=True)
    tm.assert_frame_equal(got, rows, check_dtype=False)  # nothing lost, nothing twice
    assert [i.num_ack_pending for i in consumers(subject, "r")] == [0] * N


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_partition_counts_are_refused(bad: object) -> None:
    with pytest.raises(rtnb.ConfigError, match="partitions must be a positive int"):
        rtnb.sources.nats("s", example=EXAMPLE, durable="d",
                          partitions=bad)  # type: ignore[arg-type]


def test_partitions_need_a_durable_and_a_partition_number_in_range() -> None:
    with pytest.raises(rtnb.ConfigError, match=r"partitions need JetStream durable consumers "
                                               r"\(one per partition, '<durable>-<p>'\)"):
        rtnb.sources.nats("s", example=EXAMPLE, stream="S", partitions=4)
    src = rtnb.sources.nats("s", example=EXAMPLE, durable="d", partitions=4, name="orders")
    for bad in (4, -1, True, "1"):
        with pytest.raises(rtnb.ConfigError,
                           match=r"source 'orders' has no partition .* \(partitions=4\)"):
            src.source.partition_reader(bad)  # type: ignore[arg-type]
    unpartitioned = rtnb.sources.nats("s", example=EXAMPLE, durable="d")
    with pytest.raises(rtnb.ConfigError, match=r"has no partition 0 \(partitions=None\)"):
        unpartitioned.source.partition_reader(0)


def test_tls_and_secrets_carry_over_to_the_reader_never_shown(
        certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    monkeypatch.setenv("RTNB_TEST_NATS_TOKEN", "t0k-en")
    src = rtnb.sources.nats("m", "tls://app:pa55@127.0.0.1:4443", example=EXAMPLE,
                            durable="d", partitions=2, ca=str(certs.ca),
                            token_env="RTNB_TEST_NATS_TOKEN", user="u", password="pa55",
                            name="orders").source
    reader = src.partition_reader(1)
    copy = pickle.loads(pickle.dumps(reader))  # what Dask sends to a worker
    assert (copy.subject, copy.consumer) == ("m.1", "d-1")
    assert copy._token == "t0k-en" and copy._password == "pa55" and copy._tls.ca == str(
        certs.ca)
    assert copy._nc is None and copy._loop is None
    shown = repr(copy) + repr(reader) + repr(src)
    assert "pa55" not in shown and "t0k-en" not in shown
    with_context = rtnb.sources.nats("m", example=EXAMPLE, durable="d", partitions=2,
                                     tls=ssl.create_default_context(), name="orders").source
    with pytest.raises(rtnb.ConfigError, match=r"source 'orders': an ssl\.SSLContext cannot "
                                               r"be sent to Dask workers; give tls=True with "
                                               r"ca=/cert=/key= files"):
        with_context.partition_reader(0)


def test_max_drift_stops_pulling_a_partition_far_ahead_in_event_time(subject: str) -> None:
    """Partition 0's rows cover 10x the event time of the others' at the same count: read
    side by side it runs ahead, and the alignment holds its rows back. With ``max_drift``
    its consumer is not pulled while it is ahead, so what is held stays small and windows
    equal pandas with no late row; without it, with the same small buffer, what is held
    overflows the buffer, goes on at once, and the others' rows turn late."""
    start = pd.Timestamp("2026-01-05")
    n = 3_000
    frames = []
    for p, host in enumerate(["a", "b", "c", "d"]):
        step = "10s" if p == 0 else "1s"
        frames.append(pd.DataFrame({
            "timestamp": pd.date_range(start, periods=n, freq=step), "host": host,
            "cpu": np.arange(n, dtype="float64"), "p": p}))
    rows = pd.concat(frames, ignore_index=True)
    rows["seq"] = np.arange(len(rows), dtype=np.int64)

    async def publish() -> None:
        nc = await nats.connect(URL)
        js = nc.jetstream()
        todo = [(f"{subject}.{r.p}", as_json(r)) for r in rows.itertuples(index=False)]
        for i in range(0, len(todo), 500):
            await asyncio.gather(*(js.publish(s, m) for s, m in todo[i:i + 500]))
        await nc.close()

    asyncio.run(publish())
    expected = per_minute(rows)[["host", "timestamp", "n"]]
    held: dict[str | None, int] = {}

    def run(max_drift: str | None) -> tuple[pd.DataFrame, int]:
        src = rtnb.sources.nats(subject, example=EXAMPLE, time="timestamp",
                                durable=f"d{max_drift is None}", partitions=N, count=50,
                                buffer=2_000, max_batch=250, max_drift=max_drift,
                                idle_timeout="500ms",
                                max_events=len(rows))
        source = src.source
        align = source._align
        most = [0]

        def watched(*args: Any, **kwargs: Any) -> Any:
            out = align(*args, **kwargs)
            most[0] = max(most[0], len(source._aligned))
            return out

        source._align = watched  # type: ignore[method-assign]
        per_host = src.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count"))
        out = per_host.collect()
        src.run()
        held[max_drift] = most[0]
        got = pd.concat(out, ignore_index=True).rename(columns={"window_start": "timestamp"})
        return got[["host", "timestamp", "n"]], per_host.counters.late

    got, late = run("2min")
    assert late == 0
    assert_frame_equal_unordered(got, expected, check_dtype=False)
    _, late = run(None)
    assert late > 0
    # with max_drift: a few pulls' worth; without: most of the buffer before it overflows
    assert held["2min"] <= 1_000 < held[None], held
