"""A partitioned run on a Dask cluster whose broker connections fail (issue 19).

The workers read 4 Redis partitions through a TCP proxy that, mid-run, holds Redis' replies
for a moment and then resets every connection, several times: requests that reached Redis
lose their replies (entries delivered to the consumer that never arrived there). The run must go on
(the source says it is reconnecting; nothing fails silently), and its windows and detector
output must equal one process reading the same rows, each row once, everything
acknowledged at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from broker_helpers import Proxy

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from distributed_helpers import (
    EXAMPLE,
    assert_same,
    collected,
    metrics_rows,
    one_process,
    until,
    windows,
)

import rtnb
from rtnb.detect import ZScore

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

@pytest.fixture
def stream(redis_client: Any) -> Iterator[str]:
    name = f"rtnb-faults-dask-{uuid.uuid4().hex[:10]}"
    yield name
    redis_client.delete(*[f"{name}:{p}" for p in range(4)])


def outputs(sdf: rtnb.StreamingFrame) -> list[rtnb.StreamingFrame]:
    return [windows(sdf)[0], sdf.detect(ZScore("10min"), on="cpu", by="host")]


def test_connections_cut_mid_run_lose_and_repeat_nothing(redis_client: Any,
                                                         stream: str) -> None:
    rows = metrics_rows().iloc[:6000]
    parts = rtnb.partition_of(rows["host"], 4)
    pipe = redis_client.pipeline(transaction=False)
    for r, p in zip(rows.itertuples(index=False), parts, strict=True):
        pipe.xadd(f"{stream}:{p}", {"data": json.dumps({
            "timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
            "latency_ms": r.latency_ms, "seq": int(r.seq)})})
    pipe.execute()
    proxy = Proxy(6379)

    async def main() -> tuple[list[pd.DataFrame], rtnb.StreamingFrame]:
        async with distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", asynchronous=True) as cluster:
            src = rtnb.sources.redis_stream(
                stream, url=f"redis://127.0.0.1:{proxy.port}", example=EXAMPLE,
                time="timestamp", partitions=4, group=f"g{uuid.uuid4().hex[:6]}",
                max_events=len(rows))
            frames = outputs(src)
            got = [f.collect() for f in frames]
            rtnb.Pipeline(*frames).start(cluster=cluster, max_rows=100, checkpoint_every="1s")
            stats = src.source.stats
            for k in range(1, 4):  # three outages, spread over the run
                await until(src, lambda k=k: stats.events >= k * len(rows) // 5)
                await asyncio.to_thread(proxy.lose_replies, 0.4)
            await asyncio.wait_for(src.wait(), 240)
            return [collected(g, f) for g, f in zip(got, frames, strict=True)], src

    try:
        got, src = asyncio.run(main())
        cuts = proxy.cuts
    finally:
        proxy.close()
    stats = src.source.stats
    assert stats.reconnects >= 1 and cuts == 3 and proxy.accepted > 4
    # the status says which partition lost its connection, and why
    assert stats.last_error is not None and "partition" in stats.last_error
    assert "Error" in stats.last_error
    assert stats.events == len(rows)
    want = one_process(rows, src.example, outputs)
    assert_same(got, want)
    for p in range(4):
        assert redis_client.xinfo_groups(f"{stream}:{p}")[0]["pending"] == 0


def test_a_reply_lost_with_the_connection_is_read_again_once(redis_client: Any,
                                                             stream: str) -> None:
    """One partition's steps, as a worker runs them, with no cluster around: a read whose
    reply is lost (Redis delivered the entries to the consumer; they never arrived) fails
    that step only, visibly; after the backoff the entries come back from the consumer's
    pending list, each once, and everything is acknowledged at the end."""
    import threading
    import time

    from rtnb.distributed._worker import make_task, step, take_output
    from rtnb.windows.base import NO_WATERMARK

    rows = metrics_rows().iloc[:600]
    for r in rows.itertuples(index=False):
        redis_client.xadd(f"{stream}:0", {"data": json.dumps({
            "timestamp": r.timestamp.isoformat(), "host": r.host, "cpu": r.cpu,
            "latency_ms": r.latency_ms, "seq": int(r.seq)})})
    proxy = Proxy(6379)
    src = rtnb.sources.redis_stream(stream, url=f"redis://127.0.0.1:{proxy.port}",
                                    example=EXAMPLE, time="timestamp", partitions=1,
                                    group=f"g{uuid.uuid4().hex[:6]}")
    task = make_task(0, src.source.partition_reader(0),
                     src.source.partition_decoder("timestamp"), "timestamp", [])
    outs = []

    def run(**kw: Any) -> Any:
        number = len(outs)
        out = take_output(step(task, number, NO_WATERMARK, 50, kw.get("final", False),
                               kw.get("checkpoint", False)), number)
        outs.append(out)
        return out

    try:
        for _ in range(3):
            run()
        outage = threading.Thread(target=proxy.lose_replies, args=(0.3,))
        outage.start()
        time.sleep(0.05)
        failed = run()  # its read reaches Redis; the reply is held, then cut
        outage.join()
        assert failed.error is not None and failed.failed and failed.rows == 0
        deadline = time.monotonic() + 30
        while sum(o.rows for o in outs) < len(rows) and time.monotonic() < deadline:
            if run().error is not None:
                time.sleep(0.05)  # backing off
        run(checkpoint=True, final=True)
    finally:
        task.reader.close()
        proxy.close()
    assert sum(o.rows for o in outs) == len(rows)  # nothing lost, nothing read twice
    assert redis_client.xinfo_groups(f"{stream}:0")[0]["pending"] == 0
