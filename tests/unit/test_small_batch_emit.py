"""The frame's emit path and streamz hops at small batches (issue 16): same results as
streamz's own ``_emit`` and ``sink``, and the root's event-time check."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from streamz import Stream

import rtnb
from rtnb.stateful import LeanMap, LeanSink, LeanStream


@pytest.mark.parametrize("lean", [False, True])
def test_one_downstream_hop_returns_what_streamz_returns(lean: bool) -> None:
    """A chain of single downstreams: the awaitable a sink returns comes back from
    ``emit``'s ``_emit`` (backpressure), a ``None``, a list or another value is dropped."""
    source = LeanStream() if lean else Stream()
    fut: asyncio.Future[None] = asyncio.Future(loop=asyncio.new_event_loop())
    results: list[object] = [None, fut, [None, fut], 7]
    node = LeanMap(source, lambda x: x) if lean else source.map(lambda x: x)
    it = iter(results)
    (LeanSink(node, lambda x: next(it)) if lean else node.sink(lambda x: next(it)))
    got = [source._emit(i) for i in range(4)]
    assert got == [[], [fut], [], []]


def test_hop_to_a_collected_downstream_returns_nothing() -> None:
    source = LeanStream()
    seen: list[int] = []
    LeanSink(source, seen.append)
    gone = LeanSink(source, seen.append)
    gone.destroy()
    assert source._emit(1) == []
    assert seen == [1]


def test_collect_and_sink_are_lean_streamz_sinks() -> None:
    from streamz.sinks import sink

    sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    out = sdf.collect()
    seen: list[int] = []
    node = sdf.sink(lambda b: seen.append(len(b)))
    assert isinstance(node, sink) and isinstance(node, LeanSink)
    sdf.emit(pd.DataFrame({"x": [1.0, 2.0]}))
    assert len(out) == 1 and seen == [2]


def test_emit_sends_rows_without_event_time_to_dead_letters() -> None:
    """NaT anywhere in a batch (first, last, all) goes to the dead letters; the others on."""
    ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"), "x": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(ex, time="t")
    out, dead = sdf.collect(), sdf.dead_letters.collect()
    t = pd.to_datetime([0, 1, 2, 3], unit="s").as_unit("ns")
    full = pd.DataFrame({"t": t, "x": [0.0, 1.0, 2.0, 3.0]})
    sdf.emit(full.iloc[:2])
    with_nat = full.assign(t=pd.Series([pd.NaT, t[1], t[2], pd.NaT], dtype="datetime64[ns]"))
    sdf.emit(with_nat)
    sdf.emit(with_nat.iloc[[0, 3]])
    assert [len(b) for b in out] == [2, 2, 0]  # an all-NaT batch goes on empty, as before
    tm.assert_frame_equal(out[1], with_nat.iloc[[1, 2]])
    assert sum(len(b) for b in dead) == 4
    assert sdf.counters.events == 4 and sdf.counters.batches == 3
    assert sdf.counters.dead_letters == 4


def test_emit_counts_a_frame_without_time() -> None:
    sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=np.int64)}))
    sdf.emit(pd.DataFrame({"x": [1, 2, 3]}))
    assert sdf.counters.events == 3 and sdf.counters.batches == 1
