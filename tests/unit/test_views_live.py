"""Issue 4 views: every plot kind against pandas, patches for updated windows, decimation,
watermark drawing, what-if recomputation, the status widget, pause/resume/stop, cell re-runs.

Views are built without a running loop and with a tiny ``max_fps``, so they update only when
a test calls ``flush()``; the tests that need the notebook's loop run one with asyncio.
"""

from __future__ import annotations

import asyncio
import json
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb import ConfigError, Param, _cells
from rtnb.testing import assert_frame_equal_unordered, collect, feed, pandas_windows
from rtnb.viz import BarView, Status, TableView, XYView
from rtnb.viz.plots import m4

NEVER = 1e-9


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    """The first 40 minutes of the bundled data: 12 hosts, 1 s apart."""
    df = rtnb.datasets.metrics()
    return df[df["timestamp"] < df["timestamp"].iloc[0] + pd.Timedelta("40min")].reset_index(
        drop=True)


def root_of(df: pd.DataFrame) -> rtnb.StreamingFrame:
    return rtnb.StreamingFrame(df.iloc[:0], time="timestamp", name="metrics")


def drawn_window_means(df: pd.DataFrame, size: str) -> pd.DataFrame:
    """Each host's tumbling-window cpu means as a line view draws them (x: window start)."""
    means = pandas_windows(df, time="timestamp", size=size, by="host", aggs={"y": ("cpu", "mean")})
    return means.rename(columns={"window_start": "x"})[["host", "x", "y"]]


def events_sent(view: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the kind of every document event the view's widget sends."""
    kinds: list[str] = []

    def send(content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        payload = content.get("payload", "")
        if payload.startswith('{"events"'):
            kinds.extend(e["kind"] for e in json.loads(payload)["events"])

    monkeypatch.setattr(view.widget, "send", send)
    return kinds


# -- emit="update": windows that change are patched, not appended ----------------------------
def test_updated_windows_are_patched_and_the_plot_equals_pandas(metrics, monkeypatch):
    sdf = root_of(metrics)
    agg = sdf.window(rtnb.tumbling("1min"), by="host", emit="update").agg(cpu=("cpu", "mean"))
    view = agg.plot.line(x="window_start", y="cpu", by="host", max_fps=NEVER)
    kinds = events_sent(view, monkeypatch)
    for lo in range(0, len(metrics), 240):  # 20 s of data per batch: windows update 3 times
        sdf.emit(metrics.iloc[lo:lo + 240].reset_index(drop=True))
        view.flush()
    got = view.data()
    assert not got.duplicated(["host", "x"]).any()
    assert_frame_equal_unordered(got, drawn_window_means(metrics, "1min"), by=["host", "x"],
                                 check_exact=False, rtol=1e-12, check_dtype=False)
    assert "ColumnsPatched" in kinds and "ColumnsStreamed" in kinds
    # a patch carries the changed windows only: far fewer points than were drawn
    assert view.rows_sent < len(metrics) / 10


def test_a_window_older_than_the_drawn_ones_is_put_in_order(monkeypatch):
    ex = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns]"),
                       "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(ex, time="timestamp")
    agg = sdf.window(rtnb.tumbling("10s"), by="host", emit="update",
                     allowed_lateness="1min").agg(cpu=("cpu", "sum"))
    view = agg.plot.line(x="window_start", y="cpu", by="host", max_fps=NEVER)
    t0 = pd.Timestamp("2026-01-01")
    rows = [(35, 1.0), (5, 2.0), (36, 4.0), (15, 8.0)]  # 0:05 and 0:15 come after 0:35
    for sec, cpu in rows:
        sdf.emit(pd.DataFrame({"timestamp": [t0 + pd.Timedelta(sec, "s")], "host": ["a"],
                               "cpu": [cpu]}))
        view.flush()
    got = view.data()
    assert got["x"].tolist() == [t0, t0 + pd.Timedelta("10s"), t0 + pd.Timedelta("30s")]
    assert got["y"].tolist() == [2.0, 8.0, 5.0]


# -- kinds -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["line", "step", "scatter"])
def test_every_xy_kind_plots_the_rows_it_was_given(metrics, kind):
    sdf = root_of(metrics)
    view = getattr(sdf.plot, kind)(x="timestamp", y="cpu", by="host", max_points=100_000,
                                   max_fps=NEVER)
    feed(sdf, metrics, batch_size=1000, close=False)
    view.flush()
    expected = metrics.rename(columns={"timestamp": "x", "cpu": "y"})[["host", "x", "y"]]
    assert_frame_equal_unordered(view.data(), expected, by=["host", "x"], check_dtype=False)
    glyphs = {type(r.glyph).__name__ for r in view.figure.renderers}
    assert glyphs == {"line": {"Line"}, "step": {"Step"}, "scatter": {"Scatter"}}[kind]


def test_band_plots_lower_upper_and_a_line(metrics):
    sdf = root_of(metrics)
    agg = sdf.window(rtnb.tumbling("1min"), by="host").agg(
        lo=("cpu", "min"), hi=("cpu", "max"), mid=("cpu", "mean"))
    view = agg.plot.band(x="window_start", lower="lo", upper="hi", y="mid", by="host",
                         max_fps=NEVER)
    feed(sdf, metrics, batch_size=500)
    view.flush()
    got = view.data()
    g = metrics.groupby(["host", pd.Grouper(key="timestamp", freq="1min")])["cpu"]
    expected = pd.DataFrame({"y": g.mean(), "lower": g.min(), "upper": g.max()}
                            ).reset_index().rename(columns={"timestamp": "x"})
    assert_frame_equal_unordered(got, expected[got.columns], by=["host", "x"],
                                 check_exact=False, rtol=1e-12, check_dtype=False)
    glyphs = sorted(type(r.glyph).__name__ for r in view.figure.renderers)
    assert glyphs == ["Line"] * 12 + ["VArea"] * 12


def test_band_needs_both_edges(metrics):
    with pytest.raises(ConfigError, match="a band needs `lower` and `upper`"):
        XYView(root_of(metrics), "band", x="timestamp", lower="cpu")


def test_bar_shows_each_keys_latest_value(metrics, monkeypatch):
    sdf = root_of(metrics)
    bars = sdf.plot.bar(y="cpu", by="host", max_fps=NEVER)
    kinds = events_sent(bars, monkeypatch)
    feed(sdf, metrics.iloc[:6000], batch_size=700, close=False)
    bars.flush()
    feed(sdf, metrics.iloc[6000:12000], batch_size=700, close=False)
    bars.flush()
    expected = metrics.iloc[:12000].groupby("host", sort=False)["cpu"].last().reset_index()
    tm.assert_frame_equal(bars.data(), expected, check_dtype=False)
    assert list(bars.figure.x_range.factors) == expected["host"].tolist()
    # the second update only patched: the same 12 keys
    assert kinds.count("ColumnsStreamed") == 1 and kinds.count("ColumnsPatched") == 1


def test_table_keeps_the_latest_rows(metrics):
    sdf = root_of(metrics)
    table = sdf.plot.table(["timestamp", "host", "cpu"], rows=7, max_fps=NEVER)
    feed(sdf, metrics.iloc[:5000], batch_size=999, close=False)
    table.flush()
    feed(sdf, metrics.iloc[5000:5003], batch_size=999, close=False)
    table.flush()
    expected = metrics.iloc[5003 - 7:5003][["timestamp", "host", "cpu"]].reset_index(drop=True)
    tm.assert_frame_equal(table.data(), expected, check_dtype=False)


def test_table_by_key_patches_each_keys_row(metrics):
    sdf = root_of(metrics)
    table = sdf.plot.table(["timestamp", "cpu", "requests"], by="host", max_fps=NEVER)
    feed(sdf, metrics.iloc[:3000], batch_size=500, close=False)
    table.flush()
    feed(sdf, metrics.iloc[3000:7000], batch_size=500, close=False)
    table.flush()
    expected = metrics.iloc[:7000].groupby("host", sort=False)[
        ["timestamp", "cpu", "requests"]].last().reset_index()
    tm.assert_frame_equal(table.data(), expected, check_dtype=False)


def test_views_name_what_they_cannot_plot(metrics):
    sdf = root_of(metrics)
    with pytest.raises(ConfigError, match="no column 'nope'"):
        sdf.plot.bar(y="nope", by="host")
    with pytest.raises(ConfigError, match="y column 'host' must be numeric"):
        sdf.plot.line(x="timestamp", y="host")
    with pytest.raises(ConfigError, match="`rows` must be a positive int"):
        sdf.plot.table(rows=0)
    with pytest.raises(ConfigError, match="plot kind must be"):
        XYView(sdf, "pie", x="timestamp", y="cpu")


# -- decimation ------------------------------------------------------------------------------
def test_m4_keeps_first_last_min_and_max_of_every_bucket():
    rng = np.random.default_rng(7)
    x = np.sort(rng.integers(0, 10_000, 5_000)).astype(np.int64)
    y = rng.normal(size=5_000)
    y[rng.integers(0, 5_000, 50)] = np.nan
    keep = m4(x, y, 250)
    frame = pd.DataFrame({"b": x // 250, "y": y, "i": np.arange(len(x))})
    g = frame.groupby("b")
    expected = set(g["i"].first()) | set(g["i"].last()) | \
        set(frame.loc[g["y"].idxmin().dropna().astype(int), "i"]) | \
        set(frame.loc[g["y"].idxmax().dropna().astype(int), "i"])
    assert set(keep.tolist()) == expected
    assert len(keep) <= 4 * frame["b"].nunique()


def test_span_decimates_a_fast_feed_and_keeps_the_extremes(metrics):
    sdf = root_of(metrics)
    view = sdf.plot.line(x="timestamp", y="cpu", by="host", span="40min", max_points=200,
                         max_fps=NEVER)
    feed(sdf, metrics, batch_size=2000, close=False)
    view.flush()
    got = view.data()
    per_key = got.groupby("host").size()
    assert (per_key <= 200).all()
    assert per_key.min() > 100  # 40 minutes in 50 buckets of 48 s: 2-4 points each
    # every host's spikes survive: the plotted max/min equal the data's
    tm.assert_series_equal(got.groupby("host")["y"].max(),
                           metrics.groupby("host")["cpu"].max(), check_names=False)
    tm.assert_series_equal(got.groupby("host")["y"].min(),
                           metrics.groupby("host")["cpu"].min(), check_names=False)
    # and the time span covered is the whole 40 minutes, not the last 200 seconds
    assert (got.groupby("host")["x"].min() - metrics["timestamp"].min()).max() < \
        pd.Timedelta("1min")


def test_span_needs_a_time_axis(metrics):
    sdf = root_of(metrics)
    with pytest.raises(ConfigError, match="`span` needs a time x axis"):
        sdf.plot.line(x="requests", y="cpu", span="1min")


# -- watermark, window boundaries, late events -----------------------------------------------
def test_show_watermark_draws_watermark_bounds_and_late_rows():
    ex = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns]"),
                       "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(ex, time="timestamp")
    agg = sdf.window(rtnb.tumbling("10s"), allowed_lateness="5s").agg(n=("cpu", "count"))
    raw = sdf.plot.scatter(x="timestamp", y="cpu", max_fps=NEVER, show_watermark=agg)
    own = agg.plot.line(x="window_start", y="n", max_fps=NEVER, show_watermark=True)
    t0 = pd.Timestamp("2026-01-01")
    secs = [1, 4, 12, 27, 3, 31, 45, 20]  # 3 s (at 27) and 20 s (at 45) are late
    for s in secs:
        sdf.emit(pd.DataFrame({"timestamp": [t0 + pd.Timedelta(s, "s")], "host": ["a"],
                               "cpu": [float(s)]}))
    raw.flush()
    own.flush()
    late = sorted(np.asarray(raw._late.data["y"]).tolist())
    assert late == [3.0, 20.0]
    assert agg.counters.late == 2
    assert raw._wm_span.location == (t0 + pd.Timedelta("40s")).value / 1e6
    bounds = pd.to_datetime(np.asarray(raw._bounds.data["x"]))
    assert bounds.tolist() == [t0 + pd.Timedelta(s, "s") for s in (10, 20, 30, 40)]
    assert own._wm_span.location == raw._wm_span.location


def test_few_window_boundaries_and_marks_go_with_their_lines():
    """Issue 18, defect 5: every window boundary was drawn (a grey mesh of ~1,000 lines),
    and alert marks and late crosses outlived the lines that rolled over."""
    from rtnb.viz._overlays import BOUNDS_SHOWN

    ex = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns]"),
                       "cpu": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(ex, time="timestamp")
    agg = sdf.window(rtnb.tumbling("1s")).agg(cpu=("cpu", "max"))
    hot = rtnb.alert(agg, agg["cpu"] > 90, on="cpu", name="hot")
    view = agg.plot.line(x="window_start", y="cpu", max_fps=NEVER, rollover=50,
                         show_watermark=True).mark(hot)
    t0 = pd.Timestamp("2026-01-01")
    for second in range(300):  # an alert at 10 s, then nothing: it rolls over with its line
        cpu = 99.0 if second == 10 else 10.0
        sdf.emit(pd.DataFrame({"timestamp": [t0 + pd.Timedelta(second, "s")], "cpu": [cpu]}))
        if second in (20, 299):
            view.flush()
            if second == 20:
                assert len(view._fired.data["x"]) == 1  # drawn while its line is
    assert len(view._bounds.data["x"]) == BOUNDS_SHOWN
    newest = pd.to_datetime(np.asarray(view._bounds.data["x"]))[-1]
    assert newest == t0 + pd.Timedelta("299s")  # the windows closing near the watermark
    oldest_line_x = pd.to_datetime(np.asarray(view.sources["cpu"].data["x"]))[0]
    assert oldest_line_x > t0 + pd.Timedelta("10s")
    assert len(view._fired.data["x"]) == 0 and len(view._bands.data["x0"]) == 0
    view.close()


def test_show_watermark_needs_a_window(metrics):
    sdf = root_of(metrics)
    with pytest.raises(ConfigError, match="show_watermark needs a windowed frame"):
        sdf.plot.line(x="timestamp", y="cpu", show_watermark=True)


# -- what-if: a Param change recomputes the retained history ---------------------------------
def test_what_if_recomputes_the_visible_history_at_the_new_size(metrics):
    sdf = root_of(metrics)
    size = Param("30s", min="10s", max="10min", name="size")
    agg = sdf.window(rtnb.tumbling(size), by="host", retain="2h").agg(cpu=("cpu", "mean"))
    view = agg.plot.line(x="window_start", y="cpu", by="host", max_fps=NEVER)
    feed(sdf, metrics, batch_size=1000, close=False)
    view.flush()
    size.value = "2min"
    view.flush()
    # every window that the retained rows complete, at the new size (the last one is open)
    expected = drawn_window_means(metrics, "2min")
    expected = expected[expected["x"] + pd.Timedelta("2min") <= metrics["timestamp"].max()]
    assert_frame_equal_unordered(view.data(), expected, by=["host", "x"], check_exact=False,
                                 rtol=1e-12, check_dtype=False)
    assert agg.counters.recomputes == 1
    assert "2min" in view.figure.title.text


def test_what_if_keeps_only_the_retained_span(metrics):
    sdf = root_of(metrics)
    size = Param("1min", min="10s", max="10min", name="size")
    agg = sdf.window(rtnb.tumbling(size), retain="10min").agg(n=("cpu", "count"))
    feed(sdf, metrics, batch_size=1200, close=False)
    assert agg.retained.rows < len(metrics) / 2
    start = agg.retained.start
    size.value = "5min"
    out = agg.recompute()
    assert out["window_start"].min() >= start
    # windows that start inside the retained span are complete: they equal pandas
    expected = metrics.groupby(pd.Grouper(key="timestamp", freq="5min")).size()
    for _, row in out.iterrows():
        assert row["n"] == expected[row["window_start"]]


def test_what_if_on_rolling_smoothing(metrics):
    sdf = root_of(metrics)
    smooth = Param("30s", min="5s", max="5min", name="smoothing")
    roll = sdf.rolling(smooth, by="host", retain="1h")["cpu"].mean()
    view = roll.plot.line(x="timestamp", y="cpu", by="host", max_points=10_000,
                          max_fps=NEVER)
    feed(sdf, metrics, batch_size=1000, close=False)
    smooth.value = "2min"
    view.flush()
    ordered = metrics.sort_values("timestamp", kind="stable")
    expected = (ordered.groupby("host").rolling("2min", on="timestamp")["cpu"].mean()
                .reset_index().rename(columns={"timestamp": "x", "cpu": "y"})[["host", "x", "y"]])
    assert_frame_equal_unordered(view.data(), expected, by=["host", "x"], check_exact=False,
                                 rtol=1e-9, check_dtype=False)


def test_without_retain_a_change_applies_from_then_on(metrics):
    sdf = root_of(metrics)
    smooth = Param("30s", min="5s", max="5min", name="smoothing")
    roll = sdf.rolling(smooth, by="host")["cpu"].mean()
    out = roll.collect()
    feed(sdf, metrics.iloc[:6000], batch_size=1000, close=False)
    smooth.value = "1min"
    feed(sdf, metrics.iloc[6000:], batch_size=1000, close=False)
    assert sum(len(b) for b in out) == len(metrics)  # nothing lost, nothing repeated
    with pytest.raises(ConfigError, match="keeps no history to recompute from"):
        roll.recompute()


# -- status ----------------------------------------------------------------------------------
def test_status_counts_what_flowed_and_what_was_lost():
    ex = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns]"),
                       "cpu": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(ex, time="timestamp")
    agg = sdf.window(rtnb.tumbling("10s")).agg(n=("cpu", "count"))
    view = agg.plot.line(x="window_start", y="n", max_fps=NEVER)
    status = sdf.status()
    t0 = pd.Timestamp("2026-01-01")
    sdf.emit(pd.DataFrame({"timestamp": [t0 + pd.Timedelta(s, "s") for s in (1, 25)],
                           "cpu": [1.0, 2.0]}))
    # a row for the closed window [0 s, 10 s) and a row without a time
    sdf.emit(pd.DataFrame({"timestamp": [t0 + pd.Timedelta(3, "s"), pd.NaT],
                           "cpu": [3.0, 4.0]}))
    view.flush()
    snap = status.snapshot()
    assert (snap["events_in"], snap["late"], snap["dead_letters"]) == (3, 1, 1)
    assert snap["rows_out"] == 1 and snap["updates"] == 1  # the window [0 s, 10 s)
    assert snap["watermark"] == t0 + pd.Timedelta("25s")
    assert snap["state"] == "not started"
    assert snap["latency_p50_s"] is not None and snap["latency_p50_s"] >= 0
    html = status.widget.children[0].value
    assert 'data-events-in="3"' in html and "3 / 1" not in html and "1 / 1" in html


def test_pause_resume_and_stop_in_the_notebook_loop(metrics):
    async def scenario() -> dict[str, Any]:
        sdf = rtnb.sources.replay(metrics, speed=600, interval="20ms", batch_size=500)
        status = sdf.status(interval=0.05)
        status.widget  # noqa: B018 - builds the buttons
        sdf.start()
        await asyncio.sleep(0.3)
        status._pause.click()
        await asyncio.sleep(0.1)
        paused_at = sdf.counters.events
        state_paused = status.snapshot()["state"]
        buttons = (status._pause.disabled, status._resume.disabled)
        await asyncio.sleep(0.4)
        still = sdf.counters.events
        status._resume.click()
        await asyncio.sleep(0.3)
        resumed = sdf.counters.events
        status._stop.click()
        await sdf.wait()
        return {"paused_at": paused_at, "still": still, "resumed": resumed,
                "state_paused": state_paused, "buttons": buttons,
                "final": status.snapshot()["state"], "closed": sdf.closed,
                "total": sdf.counters.events}

    r = asyncio.run(scenario())
    assert r["paused_at"] > 0 and r["still"] == r["paused_at"]
    assert r["state_paused"] == "paused" and r["buttons"] == (True, False)
    assert r["resumed"] > r["still"]
    assert r["final"] == "stopped" and r["closed"]
    assert r["total"] < len(metrics)


def test_a_status_button_is_answered_at_once_not_at_the_next_refresh(metrics):
    async def scenario() -> list[tuple[str, bool, bool]]:
        sdf = rtnb.sources.replay(metrics, speed=600, interval="20ms", batch_size=500)
        status = sdf.status(interval=3600)  # no periodic refresh within the test
        status.widget  # noqa: B018 - builds the buttons
        sdf.start()
        await asyncio.sleep(0.2)
        shown = []
        for button in (status._pause, status._resume):
            button.click()
            html = status._html_widget.value
            shown.append((re.search(r'data-state="(\w+)"', html).group(1),
                          status._pause.disabled, status._resume.disabled))
        sdf.stop()
        await sdf.wait()
        return shown

    assert asyncio.run(scenario()) == [("paused", True, False), ("running", False, True)]


def test_paused_replay_does_not_burst_on_resume(metrics):
    async def scenario() -> tuple[int, int]:
        sdf = rtnb.sources.replay(metrics, speed=120, interval="20ms", batch_size=10_000)
        sdf.start()
        await asyncio.sleep(0.3)
        sdf.pause()
        before = sdf.counters.events
        await asyncio.sleep(1.0)
        sdf.resume()
        await asyncio.sleep(0.05)
        after = sdf.counters.events
        sdf.stop()
        await sdf.wait()
        return before, after

    before, after = asyncio.run(scenario())
    # 120 x real time, 12 rows per event-second: 0.05 s after resuming is ~72 rows, whereas
    # replaying the paused second would emit ~1,440 rows at once
    assert after - before < 600


def test_status_refuses_a_bad_interval(metrics):
    with pytest.raises(ConfigError, match="status `interval`"):
        Status(root_of(metrics), interval=0)


# -- dashboards with every kind, and cell re-runs --------------------------------------------
def test_dashboard_holds_every_kind_and_the_status(metrics):
    sdf = root_of(metrics)
    agg = sdf.window(rtnb.tumbling("1min"), by="host").agg(cpu=("cpu", "mean"))
    views = [agg.plot.line(x="window_start", y="cpu", by="host"),
             sdf.plot.scatter(x="timestamp", y="cpu", by="host"),
             agg.plot.bar(y="cpu", by="host"), agg.plot.table(rows=5)]
    status = sdf.status()
    board = rtnb.dashboard(status, *views, ncols=2)
    assert board.views == views and board.controls == [status]
    assert views[0].figure.x_range is views[1].figure.x_range
    assert board.widget.children[0].children == (status.widget,)
    board.close()
    assert all(v.closed for v in views) and status._closed


def test_rerunning_a_cell_tears_down_what_it_built(metrics, monkeypatch):
    monkeypatch.setattr(_cells, "_install", lambda: True)
    monkeypatch.setattr(_cells, "_by_cell", {})
    cell = {"id": "cell-1"}
    monkeypatch.setattr(_cells, "_cell_id", lambda: cell["id"])
    sdf = root_of(metrics)
    first = sdf.plot.line(x="timestamp", y="cpu", by="host", max_fps=NEVER)
    status = sdf.status()
    cell["id"] = "cell-2"
    other = sdf.plot.bar(y="cpu", by="host", max_fps=NEVER)
    _cells._pre_run_cell(SimpleNamespace(cell_id="cell-1"))  # cell 1 runs again
    assert first.closed and status._closed and not other.closed
    assert list(sdf.graph.views) == [other]
    feed(sdf, metrics.iloc[:100], batch_size=100, close=False)
    other.flush()
    assert first.sources == {} and len(other.data()) == 12


def test_rerunning_the_cell_that_built_a_source_stops_it(metrics, monkeypatch):
    monkeypatch.setattr(_cells, "_install", lambda: True)
    monkeypatch.setattr(_cells, "_by_cell", {})
    monkeypatch.setattr(_cells, "_cell_id", lambda: "cell-1")

    async def scenario() -> tuple[bool, bool, int]:
        sdf = rtnb.sources.replay(metrics, speed=60, interval="20ms")
        view = sdf.plot.line(x="timestamp", y="cpu", by="host")
        sdf.start()
        await asyncio.sleep(0.2)
        _cells._pre_run_cell(SimpleNamespace(cell_id="cell-1"))
        await asyncio.wait_for(sdf.wait(), 5)
        return sdf.closed, view.closed, sdf.counters.events

    closed, view_closed, events = asyncio.run(scenario())
    assert closed and view_closed and events < len(metrics)


def test_closed_view_sends_nothing_more(metrics, monkeypatch):
    sdf = root_of(metrics)
    view = sdf.plot.line(x="timestamp", y="cpu", by="host", max_fps=NEVER)
    kinds = events_sent(view, monkeypatch)
    feed(sdf, metrics.iloc[:100], batch_size=100, close=False)
    view.flush()
    sent = len(kinds)
    view.close()
    feed(sdf, metrics.iloc[100:200], batch_size=100, close=False)
    view.flush()
    assert len(kinds) == sent and view not in sdf.graph.views


@pytest.mark.parametrize("view_type", [BarView, TableView])
def test_bar_and_table_are_views(metrics, view_type):
    sdf = root_of(metrics)
    view = sdf.plot.bar(y="cpu", by="host") if view_type is BarView else sdf.plot.table()
    assert isinstance(view, view_type) and view in sdf.graph.views


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", ["tumbling", "session", "rolling"])
def test_what_if_equals_a_fresh_run_with_the_new_setting_on_a_disordered_feed(
        metrics, seed, kind):
    """The recompute merges batches where that is exact; it must equal batch-by-batch."""
    rng = np.random.default_rng(seed)
    df = metrics.iloc[:12_000]
    delay = rng.exponential(0.5, len(df)) + rng.uniform(5, 40, len(df)) * (
        rng.random(len(df)) < 0.02)
    feed_df = df.assign(arrival=df["timestamp"] + pd.to_timedelta(delay, unit="s")) \
        .sort_values("arrival", kind="stable").drop(columns="arrival").reset_index(drop=True)
    splits = np.sort(rng.choice(np.arange(1, len(feed_df)), 300, replace=False)).tolist()

    def build(sdf: rtnb.StreamingFrame, lateness: Any, setting: Any, retain: Any) -> Any:
        if kind == "rolling":
            return sdf.rolling(setting, by="host", allowed_lateness=lateness,
                               retain=retain)["cpu"].mean()
        spec = rtnb.tumbling(setting) if kind == "tumbling" else rtnb.session(setting)
        return sdf.window(spec, by="host", allowed_lateness=lateness, retain=retain).agg(
            cpu=("cpu", "mean"), n=("cpu", "count"))

    first, second = {"tumbling": ("10s", "1min"), "session": ("2s", "20s"),
                     "rolling": ("10s", "1min")}[kind]
    lateness = Param("2s", min="0s", max="1min", name="lateness")
    setting = Param(first, min="1s", max="10min", name="setting")
    sdf = root_of(metrics)
    live = build(sdf, lateness, setting, "1h")
    feed(sdf, feed_df, splits=splits, close=False)
    lateness.value = "10s"
    setting.value = second
    sdf.close()
    got = live.recompute()

    fresh_root = root_of(metrics)
    fresh = build(fresh_root, "10s", second, None)
    out = collect(fresh)
    feed(fresh_root, feed_df, splits=splits)
    expected = out.frame()
    assert len(expected) > 0
    keys = [c for c in ("window_start", "timestamp", "host") if c in expected.columns]
    assert_frame_equal_unordered(got, expected, by=keys)
    assert live.counters.recomputes == 3  # two Param changes and the explicit call


def test_watermark_lag_stands_still_while_paused(metrics):
    async def scenario() -> tuple[float, float, str]:
        src = rtnb.sources.replay(metrics, speed=300, interval="20ms")
        src.window(rtnb.tumbling("30s")).agg(n=("cpu", "count"))
        status = src.status()
        src.start()
        await asyncio.sleep(0.5)
        src.pause()
        await asyncio.sleep(0.2)
        first = status.snapshot()["watermark_lag_s"]
        await asyncio.sleep(1.0)
        second = status.snapshot()["watermark_lag_s"]
        html = status.html(status.snapshot())
        src.stop()
        await src.wait()
        return first, second, html

    first, second, html = asyncio.run(scenario())
    assert first is not None and second == pytest.approx(first)
    assert "e+" not in html and "lag " in html  # a readable duration, not 1.2e+08us
