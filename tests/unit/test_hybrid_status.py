"""The status of a ``rtnb.sources.hybrid`` source: "backfilling 63 % (ETA 40 s)", then "live".

One test drives the figures with a fake clock (the share from the history's length, the
seconds left from the rate so far); one reads the widget's text during a small real run
in both phases.
"""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

import rtnb
from rtnb import metrics
from rtnb.viz import Status


def rows(n: int, start: str = "2026-01-01", freq: str = "10ms") -> pd.DataFrame:
    t = pd.date_range(start, periods=n, freq=freq)
    return pd.DataFrame({"timestamp": t, "x": range(n)}).astype({"x": "float64"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_share_and_eta_from_the_history_length_and_the_rate_with_a_fake_clock() -> None:
    data = rows(1_000)
    src = rtnb.sources.hybrid(history=rtnb.sources.replay(data.iloc[:800]),
                              live=rtnb.sources.replay(data.iloc[800:]))
    hybrid = src.source
    clock = FakeClock()
    hybrid.clock = clock
    assert hybrid.phase == "history"
    assert hybrid.backfill() == (0.0, None)  # not started: no rate yet
    hybrid._started = (clock.now, 0.0)  # what run() records when the backfill starts
    hybrid.history.position = 504  # 63 % of the 800 rows read ...
    clock.now += 68.0  # ... in 68 s: 37 % left at that rate is 40 s
    share, eta = hybrid.backfill()
    assert share == pytest.approx(0.63)
    assert eta == pytest.approx(0.37 * 68.0 / 0.63)
    snap = metrics.snapshot(src.graph)
    assert (snap.phase, snap.backfill, snap.backfill_eta_s) == ("history", share, eta)
    status = Status(src)
    figures = {**status.snapshot(), "state": "running"}
    assert (figures["phase"], figures["progress"], figures["eta_s"]) == ("history", share, eta)
    assert Status.summary(figures).startswith("Running: backfilling 63 % (ETA 40 s); ")
    assert '<td class="rtnb-status-phase">backfilling 63 % (ETA 40 s)</td>' in \
        status.html(figures)
    hybrid._phase = "live"
    figures = {**status.snapshot(), "state": "running"}
    assert (figures["phase"], figures["progress"], figures["eta_s"]) == ("live", None, None)
    assert Status.summary(figures).startswith("Running: live; ")
    assert "of the replay" not in Status.summary(figures)
    status.close()


def test_a_source_without_phase_shows_none() -> None:
    src = rtnb.sources.replay(rows(10))
    status = Status(src)
    figures = {**status.snapshot(), "state": "running"}
    assert figures["phase"] is None
    assert "backfilling" not in Status.summary(figures) and "live" not in status.html(figures)
    status.close()


def test_status_text_in_both_phases_of_a_real_run() -> None:
    """History paced to last about 1 s, then a paced live replay, stopped once it is live."""
    data = rows(500)
    src = rtnb.sources.hybrid(history=rtnb.sources.replay(data.iloc[:200], speed=2.0,
                                                          interval="20ms"),
                              live=rtnb.sources.replay(data.iloc[200:], speed=1.0,
                                                       interval="20ms"))
    seen: dict[str, list[str]] = {"history": [], "live": []}

    async def main() -> None:
        status = Status(src)
        src.start()
        for _ in range(400):
            await asyncio.sleep(0.02)
            snap = status.snapshot()
            if snap["phase"] is not None and snap["state"] == "running":
                seen[snap["phase"]].append(Status.summary(snap))
            if len(seen["live"]) >= 3:
                break
        src.stop()
        await src.wait()
        status.close()

    asyncio.run(main())
    history, live = seen["history"], seen["live"]
    assert history and live, seen
    assert all(text.startswith("Running: backfilling") for text in history), history
    # once some of the history was read, the share and the time left are shown
    assert any(" % (ETA " in text for text in history), history
    assert all(text.startswith("Running: live; ") for text in live), live


class Chunks:
    """A finite source of its own (only ``run`` and ``progress``), as a history."""

    name = "chunks"

    def __init__(self, data: pd.DataFrame, parts: int) -> None:
        self.data, self.parts, self.done = data, parts, 0

    def progress(self) -> float:
        return self.done / self.parts

    async def run(self, frame: rtnb.StreamingFrame, stop: asyncio.Event) -> None:
        size = -(-len(self.data) // self.parts)
        for i in range(self.parts):
            await frame.graph.wait_running()
            frame.emit(self.data.iloc[i * size:(i + 1) * size].reset_index(drop=True))
            self.done = i + 1


def test_any_finite_source_is_a_history_and_its_own_progress_is_the_share() -> None:
    data = rows(100)
    history = rtnb.StreamingFrame(data.iloc[:0], time="timestamp", name="mine")
    chunks = Chunks(data.iloc[:60], parts=4)
    history.attach_source(chunks)
    src = rtnb.sources.hybrid(history=history, live=rtnb.sources.replay(data.iloc[55:]))
    shares: list[float | None] = []
    out = src.collect()
    src.sink(lambda _: shares.append(src.source.backfill()[0]))
    src.run()
    assert pd.concat(out)["x"].tolist() == list(range(100))
    assert shares[:4] == [0.0, 0.25, 0.5, 0.75]  # read before `done` moves on
    assert shares[4:] == [1.0]


def test_an_exported_script_exports_the_phase_and_the_share_as_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from rtnb.export.runtime import _Collector, _Counts

    data = rows(100)
    src = rtnb.sources.hybrid(history=rtnb.sources.replay(data.iloc[:60]),
                              live=rtnb.sources.replay(data.iloc[60:]), name="events")
    pipeline = rtnb.Pipeline(src)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(pipeline, _Counts(pipeline.frames)))

    def scraped() -> dict[str, float]:
        text = generate_latest(registry).decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(("rtnb_source_phase", "rtnb_source_backfill"))}

    src.source.history.position = 15
    assert scraped() == {
        'rtnb_source_phase{node="events",phase="history",pipeline="events"}': 1.0,
        'rtnb_source_phase{node="events",phase="live",pipeline="events"}': 0.0,
        'rtnb_source_backfill_progress{node="events",pipeline="events"}': 0.25}
    src.run()
    assert scraped() == {
        'rtnb_source_phase{node="events",phase="history",pipeline="events"}': 0.0,
        'rtnb_source_phase{node="events",phase="live",pipeline="events"}': 1.0,
        'rtnb_source_backfill_progress{node="events",pipeline="events"}': 1.0}
