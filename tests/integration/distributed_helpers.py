"""What the tests of partitioned runs on Dask share: the rows, the pipelines, the one-process
reference and the comparison (tests/integration/test_distributed.py and
test_kafka_distributed.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb.testing import assert_frame_equal_unordered

EXAMPLE = {"timestamp": "datetime64[ns]", "host": "str", "cpu": "float64",
           "latency_ms": "float64", "seq": "int64"}

Build = Callable[[rtnb.StreamingFrame], list[rtnb.StreamingFrame]]


def metrics_rows() -> pd.DataFrame:
    """Two hours of the bundled day, 1 row in 7 (its rows cycle through the 12 hosts, so
    every host keeps a row every 7 s): ~12,300 real rows, in time order, with ``seq``."""
    df = rtnb.datasets.metrics()
    df = df[df["timestamp"] < df["timestamp"].min() + pd.Timedelta("2h")].iloc[::7]
    df = df[["timestamp", "host", "cpu", "latency_ms"]].reset_index(drop=True)
    assert df["host"].nunique() == 12
    return df.assign(seq=np.arange(len(df), dtype=np.int64))


def collected(batches: list[pd.DataFrame], frame: rtnb.StreamingFrame) -> pd.DataFrame:
    """A frame's collected batches as one frame (its empty example if none)."""
    return pd.concat(batches, ignore_index=True) if batches else frame.example.copy()


def one_process(rows: pd.DataFrame, example: pd.DataFrame, build: Build,
                batch: int = 700) -> list[pd.DataFrame]:
    """The same pipeline in one process, fed the rows in order."""
    sdf = rtnb.StreamingFrame(example, time="timestamp")
    frames = build(sdf)
    outs = [f.collect() for f in frames]
    typed = rows.astype(example.dtypes.to_dict())
    for lo in range(0, len(typed), batch):
        sdf.emit(typed.iloc[lo:lo + batch].reset_index(drop=True))
    sdf.close()
    return [collected(o, f) for o, f in zip(outs, frames, strict=True)]


def windows(sdf: rtnb.StreamingFrame) -> list[rtnb.StreamingFrame]:
    """Tumbling per host (every fused and generic aggregation, an exact quantile, a column
    from ``assign`` after a filter), sliding per host, and an unkeyed tumbling window."""
    busy = sdf[sdf["cpu"] > 5].assign(load=lambda df: df["cpu"] * df["latency_ms"])
    tumbling = busy.window(rtnb.tumbling("1min"), by="host").agg(
        n=("cpu", "count"), total=("cpu", "sum"), mean=("cpu", "mean"), low=("cpu", "min"),
        high=("cpu", "max"), sd=("latency_ms", "std"), p90=("latency_ms", "quantile", 0.9),
        load=("load", "mean"))
    sliding = sdf.window(rtnb.sliding("5min", "1min"), by="host").agg(
        n=("cpu", "count"), mean=("latency_ms", "mean"))
    overall = sdf.window(rtnb.tumbling("10min")).agg(n=("cpu", "count"),
                                                      high=("latency_ms", "max"))
    return [tumbling, sliding, overall]


def run_on(cluster: Any, outputs: list[rtnb.StreamingFrame], **kw: Any
           ) -> tuple[rtnb.Pipeline, list[pd.DataFrame]]:
    """Run the pipeline of ``outputs`` on ``cluster``; the pipeline and each output."""
    got = [f.collect() for f in outputs]
    pipeline = rtnb.Pipeline(*outputs)
    pipeline.run(cluster=cluster, **kw)
    return pipeline, [collected(g, f) for g, f in zip(got, outputs, strict=True)]


def assert_same(got: list[pd.DataFrame], want: list[pd.DataFrame]) -> None:
    """Each output equals the reference: same columns and dtypes, rows in any order, floats
    to rtol 1e-9 (ints exact)."""
    for g, w in zip(got, want, strict=True):
        assert len(g) and list(g.columns) == list(w.columns)
        assert g.dtypes.to_dict() == w.dtypes.to_dict()
        assert_frame_equal_unordered(g, w, rtol=1e-9)


async def until(src: rtnb.StreamingFrame, done: Callable[[], bool], every: float = 0.01,
                ) -> None:
    """Wait for ``done()``; a run that failed or ended first fails the test with its error
    (instead of waiting for the test's timeout)."""
    while not done():
        if src.graph.state != "running":
            await src.wait()  # re-raises the run's error
            pytest.fail(f"the run ended ({src.graph.state}) before the awaited moment")
        await asyncio.sleep(every)


def killing_a_worker(make_source: Callable[[], rtnb.StreamingFrame], build: Build, *,
                     max_rows: int, timeout: float = 180,
                     ) -> tuple[list[pd.DataFrame], rtnb.Pipeline, rtnb.StreamingFrame]:
    """Run ``build(make_source())`` on a LocalCluster of its own (2 single-threaded worker
    processes); a third of the way through, two ticks or more after a checkpoint (so that the
    rebuilt partitions restore state and re-read entries whose output was already sent),
    kill -9 the worker reading partition 0. Returns each output, the pipeline and the
    source's frame, once the run has ended."""
    import os
    import signal

    import distributed

    async def main() -> tuple[list[pd.DataFrame], rtnb.Pipeline, rtnb.StreamingFrame]:
        async with distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", asynchronous=True) as cluster, \
                distributed.Client(cluster, asynchronous=True) as client:
            src = make_source()
            outputs = build(src)
            got = [f.collect() for f in outputs]
            pipeline = rtnb.Pipeline(*outputs)
            # checkpoints often enough that one is taken before a fast run ends (with one a
            # second, an MQTT run read everything first in a fresh make test)
            pipeline.start(cluster=cluster, max_rows=max_rows, checkpoint_every="300ms")
            runner = pipeline.runner
            total = src.source.max_events
            # (two thirds through without two ticks after a checkpoint, a loaded machine
            # checkpointing every tick: the kill comes then, still mid-run)
            await until(src, lambda: src.source.stats.events >= total // 3
                        and runner.checkpoint_tick is not None
                        and (runner.ticks - runner.checkpoint_tick >= 2
                             or src.source.stats.events >= 2 * total // 3), every=0.002)
            victim = runner.workers[0]
            pid = (await client.run(os.getpid, workers=[victim]))[victim]
            os.kill(pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(src.wait(), timeout)
            except TimeoutError:  # say where the run stood (a slow machine, or a hang)
                stats = src.source.stats
                pytest.fail(f"the run did not end {timeout:.0f} s after the kill: "
                            f"{stats.events}/{total} events, {runner.ticks} ticks, "
                            f"{runner.recoveries} recoveries, held {sorted(runner.held)}, "
                            f"frontier {runner.frontier}, newest {runner.newest}, workers "
                            f"{runner.workers}")
            return [collected(x, f) for x, f in zip(got, outputs, strict=True)], pipeline, src

    got, pipeline, src = asyncio.run(main())
    assert pipeline.runner.recoveries >= 1  # partition 0 at least was rebuilt
    return got, pipeline, src
