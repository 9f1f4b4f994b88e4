"""The runtime graph (rtnb.graph) and the stateful-node protocol (rtnb.stateful)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb import metrics
from rtnb.errors import SourceError
from rtnb.state import Checkpoint
from rtnb.stateful import Output
from rtnb.testing import collect


def data(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"t": pd.date_range("2026-01-01", periods=n, freq="s"),
                         "host": rng.choice(["a", "b", "c"], n),
                         "x": rng.normal(size=n)})


class RunningTotal:
    """A user-written logic object: the running total of ``x`` per host, one row per batch."""

    watermark = None

    def __init__(self) -> None:
        self.total: dict[str, float] = {}

    def process(self, batch: pd.DataFrame) -> Output:
        for host, x in batch.groupby("host")["x"].sum().items():
            self.total[str(host)] = self.total.get(str(host), 0.0) + float(x)
        hosts = sorted(self.total)
        return Output(pd.DataFrame({"host": pd.Series(hosts, dtype=str),
                                    "total": [self.total[h] for h in hosts]}))

    def flush(self) -> Output:
        return Output(None)

    def snapshot(self) -> dict[str, float]:
        return dict(self.total)

    def restore(self, state: dict[str, float]) -> None:
        self.total = dict(state)


EXAMPLE = pd.DataFrame({"host": pd.Series([], dtype=str), "total": pd.Series([], dtype=float)})


def test_topology_is_the_nodes_and_their_inputs():
    src = rtnb.StreamingFrame(data().iloc[:0], time="t", name="src")
    big = src[src["x"] > 0]
    agg = big.window(rtnb.tumbling("10s"), by="host").agg(n=("x", "count"))
    graph = src.graph
    assert agg.graph is graph and big.root is src and agg.parent is big
    window = "src.filter[(x > 0)].window"
    assert [n.name for n in graph.nodes] == ["src", "src.filter[(x > 0)]", window,
                                             f"{window}.late"]
    assert graph.inputs(agg) == [big] and graph.outputs(big) == [agg]
    assert ("src.filter[(x > 0)]", window) in graph.edges()
    assert [n.name for n in graph.stateful()] == [window]
    assert graph.node(window) is agg
    with pytest.raises(KeyError, match="no node 'nope'"):
        graph.node("nope")


def test_hooks_return_handles_that_unsubscribe():
    sdf = rtnb.StreamingFrame(data().iloc[:0], time="t")
    calls: list[str] = []
    first = sdf.graph.on_close(lambda: calls.append("first"))
    sdf.graph.on_close(lambda: calls.append("second"))
    first()
    first()  # twice does nothing
    sdf.close()
    assert calls == ["second"]


def test_a_user_logic_runs_through_one_node_and_is_checkpointed_without_new_code(tmp_path: Path):
    df = data()

    def build() -> rtnb.Pipeline:
        src = rtnb.sources.replay(df, time="t", name="feed")
        src.process(RunningTotal(), example=EXAMPLE, name="total")
        return rtnb.Pipeline(src)

    whole = build()
    expected = collect(whole.node("feed.total"))
    whole.root.emit(df)
    whole.root.close()

    first = build()
    first.root.emit(df.iloc[:25])
    Checkpoint(tmp_path / "state.db").save(first)
    second = build()
    assert Checkpoint(tmp_path / "state.db").restore(second)
    result = collect(second.node("feed.total"))
    second.root.emit(df.iloc[25:])
    second.root.close()
    tm.assert_frame_equal(result.frame(), expected.frame())  # the totals went on, not restarted
    truth = df.groupby("host")["x"].sum()
    last = result.frame().set_index("host")["total"]
    tm.assert_series_equal(last, truth.rename("total"), check_names=False)


def test_a_failing_source_makes_the_graph_failed_and_wait_raises(caplog):
    class Broken:
        name = "broken"

        async def run(self, frame: rtnb.StreamingFrame, stop: asyncio.Event) -> None:
            frame.emit(data(3))
            raise SourceError("connection reset", source="broken")

    sdf = rtnb.StreamingFrame(data().iloc[:0], time="t", name="feed")
    sdf.attach_source(Broken())
    out = collect(sdf)
    assert sdf.graph.state == "idle"

    async def main() -> None:
        sdf.start()
        await sdf.wait()

    with pytest.raises(SourceError, match="connection reset"):
        asyncio.run(main())
    assert sdf.graph.state == "failed" and isinstance(sdf.graph.error, SourceError)
    assert len(out.frame()) == 3  # what came before the failure went through
    assert "source of 'feed' failed: SourceError" in caplog.text
    status = sdf.status()
    shown = status.snapshot()
    status.close()
    assert shown["state"] == "failed" and "connection reset" in shown["error"]
    assert "failed: SourceError: connection reset" in status.html(shown)


def test_metrics_snapshot_is_what_the_status_widget_shows():
    sdf = rtnb.sources.replay(data(), time="t", batch_size=7)
    agg = sdf.window(rtnb.tumbling("5s")).agg(n=("x", "count"))
    status = sdf.status()
    sdf.run()
    snap, shown = metrics.snapshot(sdf.graph), status.snapshot()
    status.close()
    assert snap.events_in == shown["events_in"] == 40
    assert snap.late == shown["late"] and snap.dead_letters == shown["dead_letters"]
    assert snap.state == shown["state"] == "finished"
    assert snap.nodes[agg.name].events == 40


def test_a_sink_writer_that_dies_fails_the_pipeline_visibly(caplog):
    sdf = rtnb.sources.replay(data(), time="t", batch_size=5)
    sink = rtnb.sinks.to_log(sdf, "/dev/null")

    async def broken(key: str, batch: pd.DataFrame) -> None:
        raise RuntimeError("spool unreadable")

    sink._handle = broken  # type: ignore[method-assign]  # a bug outside delivery attempts

    async def main() -> None:
        await asyncio.wait_for(sdf.arun(), 10)

    with pytest.raises(RuntimeError, match="spool unreadable"):
        asyncio.run(main())
    assert sdf.graph.state == "failed" and isinstance(sdf.graph.error, RuntimeError)
    assert "sink 'replay.log' failed: RuntimeError: spool unreadable" in caplog.text
