"""Live views: deltas only, one comm message per flush, bounded memory, dashboards, honest values.

The views are built without a running event loop, so nothing flushes on a timer; ``max_fps`` is
tiny so a batch never flushes by itself either: every update happens when a test calls
``flush()`` (or the stream ends).
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sys
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from bokeh.models import ColumnDataSource, DatetimeAxis, LinearAxis
from bokeh.plotting import figure

import rtnb
from rtnb import ConfigError, Param
from rtnb.testing import assert_frame_equal_unordered, pandas_windows
from rtnb.viz import Dashboard, LineView
from rtnb.viz._bokeh import BatchedBokehModel

T0 = pd.Timestamp("2026-01-01")
NEVER = 1e-9  # max_fps: one update every 30 years, i.e. only when flush() is called


def example() -> pd.DataFrame:
    return pd.DataFrame({
        "t": pd.Series([], dtype="datetime64[ns]"),
        "host": pd.Series([], dtype=str),
        "cpu": pd.Series([], dtype=float),
        "requests": pd.Series([], dtype="int64"),
    })


def batch(secs: list[float], hosts: list[str | None],
          cpu: list[float] | None = None) -> pd.DataFrame:
    n = len(secs)
    return pd.DataFrame({
        "t": (T0 + pd.to_timedelta(secs, unit="s")).astype("datetime64[ns]"),
        "host": pd.Series(hosts, dtype=str),
        "cpu": pd.Series(cpu if cpu is not None else np.arange(n) * 10.0, dtype=float),
        "requests": np.arange(n, dtype=np.int64),
    })


@pytest.fixture
def sdf() -> rtnb.StreamingFrame:
    return rtnb.StreamingFrame(example(), time="t", name="metrics")


def lengths(view: LineView) -> dict[Any, int]:
    return {key: len(source.data["y"]) for key, source in view.sources.items()}


class PerUpdate(list):
    """Rows sent per key, one dict per view update (an update may span several messages)."""


def streamed(view: LineView, monkeypatch: pytest.MonkeyPatch) -> PerUpdate:
    """Record, per view update, how many rows each key's ColumnDataSource was sent."""
    messages = PerUpdate()
    key_of = {}

    def send(content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        payload = content.get("payload", "")
        if not payload.startswith('{"events"'):
            return
        key_of.update({source.id: key for key, source in view.sources.items()})
        while len(messages) <= view.updates:
            messages.append({})
        rows = messages[view.updates]
        for event in json.loads(payload)["events"]:
            if event["kind"] == "ColumnsStreamed":
                shapes = {name: value["shape"][0] for name, value in event["data"]["entries"]}
                assert shapes["x"] == shapes["y"]
                rows[key_of[event["model"]["id"]]] = shapes["y"]

    monkeypatch.setattr(view.widget, "send", send)
    return messages


# -- one line per key, deltas only -----------------------------------------------------------
def test_one_column_data_source_per_key(sdf):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    sdf.emit(batch([1, 2, 3, 4], ["a", "b", "a", "c"]))
    assert view.sources == {}  # nothing sent before the flush
    view.flush()
    assert list(view.sources) == ["a", "b", "c"]
    assert all(isinstance(s, ColumnDataSource) for s in view.sources.values())
    assert [s.name for s in view.sources.values()] == ["metrics:a", "metrics:b", "metrics:c"]
    assert lengths(view) == {"a": 2, "b": 1, "c": 1}
    labels = [item.label.value for item in view.figure.legend[0].items]
    assert labels == ["a", "b", "c"]
    colors = [r.glyph.line_color for r in view.figure.renderers]
    assert len(set(colors)) == 3


def test_without_by_there_is_one_line_named_after_y(sdf):
    view = sdf.plot.line(x="t", y="cpu", max_fps=NEVER)
    sdf.emit(batch([1, 2, 3], ["a", "b", "a"]))
    view.flush()
    assert lengths(view) == {"cpu": 3}
    assert [item.label.value for item in view.figure.legend[0].items] == ["cpu"]


def test_flush_appends_only_the_rows_since_the_last_flush(sdf):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    first = batch([1, 2, 3], ["a", "b", "a"], [1.0, 2.0, 3.0])
    sdf.emit(first)
    view.flush()
    assert (lengths(view), view.rows_sent, view.updates) == ({"a": 2, "b": 1}, 3, 1)

    sdf.emit(batch([4], ["a"], [4.0]))
    sdf.emit(batch([5, 6], ["c", "c"], [5.0, 6.0]))
    view.flush()
    assert (lengths(view), view.rows_sent, view.updates) == ({"a": 3, "b": 1, "c": 2}, 6, 2)

    result = pd.Series(view.sources["a"].data["y"])
    expected = pd.Series([1.0, 3.0, 4.0])
    tm.assert_series_equal(result, expected)
    result_x = view.sources["a"].data["x"]
    expected_x = (T0 + pd.to_timedelta([1, 3, 4], unit="s")).to_numpy(dtype="datetime64[ns]")
    np.testing.assert_array_equal(result_x, expected_x)


def test_only_the_new_rows_travel(sdf, monkeypatch):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    messages = streamed(view, monkeypatch)
    sdf.emit(batch([1, 2, 3], ["a", "b", "a"]))
    view.flush()
    sdf.emit(batch([4, 5, 6], ["a", "b", "b"]))
    view.flush()
    assert messages == [{"a": 2, "b": 1}, {"a": 1, "b": 2}]


def test_rollover_bounds_every_line(sdf):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER, rollover=3)
    sdf.emit(batch([1, 2, 3, 4, 5], ["a"] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]))
    sdf.emit(batch([6], ["b"], [6.0]))
    view.flush()
    assert lengths(view) == {"a": 3, "b": 1}
    assert view.sources["a"].data["y"].tolist() == [3.0, 4.0, 5.0]
    sdf.emit(batch([7, 8], ["a", "b"], [7.0, 8.0]))
    view.flush()
    assert lengths(view) == {"a": 3, "b": 2}
    assert view.sources["a"].data["y"].tolist() == [4.0, 5.0, 7.0]


def test_rollover_bounds_what_is_sent_too(sdf, monkeypatch):
    view = sdf.plot.line(x="t", y="cpu", max_fps=NEVER, rollover=10)
    messages = streamed(view, monkeypatch)
    sdf.emit(batch(list(range(1000)), ["a"] * 1000))
    view.flush()
    assert messages == [{"cpu": 10}]
    assert view.rows_sent == 10


def test_integer_y_and_missing_values_are_plotted_as_float(sdf):
    view = sdf.plot.line(x="t", y="requests", max_fps=NEVER)
    sdf.emit(batch([1, 2, 3], ["a", "a", "a"]))
    view.flush()
    assert view.sources["requests"].data["y"].dtype == np.float64
    assert view.sources["requests"].data["y"].tolist() == [0.0, 1.0, 2.0]

    view2 = sdf.plot.line(x="t", y="cpu", max_fps=NEVER)
    sdf.emit(batch([4, 5], ["a", "a"], [np.nan, 1.0]))
    view2.flush()
    result = view2.sources["cpu"].data["y"]
    assert np.isnan(result[0]) and result[1] == 1.0


def test_rows_with_a_missing_key_share_one_line(sdf):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    for second in range(3):
        sdf.emit(batch([second, second], ["a", None]))
        view.flush()
    assert len(view.sources) == 2
    assert sum(lengths(view).values()) == 6


def test_missing_keys_from_an_object_column_share_one_line(sdf):
    # Decoded JSON gives object columns: here every row of a batch lacks its host.
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    for second in range(3):
        sdf.emit(batch([second], ["a"]).assign(host=pd.Series([None], dtype=object)))
        view.flush()
    assert len(view.sources) == 1
    assert sum(lengths(view).values()) == 3


# -- one comm message per flush ------------------------------------------------------------------
def test_one_flush_sends_one_message_per_changed_line(sdf):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    assert view.model is None  # no widget until the view is displayed
    view.widget  # noqa: B018 - displaying creates it
    hosts = [f"h{i:02d}" for i in range(10)]
    sdf.emit(batch(list(range(10)), hosts))
    view.flush()
    assert len(view.sources) == 10
    first = view.model.messages_sent
    assert first > 10  # the new lines (renderers, legend items), then each line's rows

    sdf.emit(batch(list(range(10, 30)), hosts[:4] * 5))
    view.flush()
    # Only the 4 lines that got rows change: one PATCH-DOC each (BokehJS applies just the
    # first ColumnsStreamed of a multi-event PATCH-DOC, so they are not merged).
    assert view.model.messages_sent == first + 4
    assert view.model.bytes_sent > 0


def test_no_message_when_nothing_is_pending(sdf):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    view.widget  # noqa: B018
    view.flush()
    assert (view.model.messages_sent, view.updates) == (0, 0)
    sdf.emit(batch([1], ["a"]))
    view.flush()
    sent = view.model.messages_sent
    view.flush()
    sdf.emit(batch([], []))  # an empty batch is not an update
    view.flush()
    assert (view.model.messages_sent, view.updates) == (sent, 1)


def test_batch_coalesces_document_changes():
    a = ColumnDataSource({"x": [1.0], "y": [1.0]})
    b = ColumnDataSource({"x": [1.0], "y": [1.0]})
    fig = figure()
    fig.line("x", "y", source=a)
    fig.line("x", "y", source=b)
    model = BatchedBokehModel(fig)
    a.stream({"x": [2.0], "y": [2.0]})
    b.stream({"x": [2.0], "y": [2.0]})
    assert model.messages_sent == 2  # outside batch(): one message per change
    with model.batch():
        a.stream({"x": [3.0], "y": [3.0]})
        with model.batch():  # nested blocks join the outer one
            b.stream({"x": [3.0], "y": [3.0]})
        fig.title.text = "both"
        assert model.messages_sent == 2  # held until the block ends
    # one PATCH-DOC per change: the jupyter_bokeh front end applies only the first event
    # of a multi-event PATCH-DOC
    assert model.messages_sent == 5
    with model.batch():
        pass
    assert model.messages_sent == 5
    model.close()


# -- closing -------------------------------------------------------------------------------------
def test_close_detaches_the_view(sdf):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    view.widget  # noqa: B018
    sdf.emit(batch([1, 2], ["a", "b"]))
    view.flush()
    sdf.emit(batch([3], ["a"]))  # pending when the view closes: dropped with it
    before_close = view.model.messages_sent
    view.close()
    sdf.emit(batch([4, 5], ["a", "c"]))
    view.flush()
    sdf.close()
    assert lengths(view) == {"a": 1, "b": 1}
    assert view.model.messages_sent == before_close  # nothing left the kernel after close
    assert view.model.comm is None


def test_close_twice_and_garbage_collection_are_harmless(sdf):
    unraisable = []
    view = sdf.plot.line(x="t", y="cpu", max_fps=NEVER)
    model = view.widget
    view.close()
    view.close()
    model.close()  # what ipywidgets' Widget.__del__ does again later
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        del view, model
        gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    assert unraisable == []


def test_stream_end_flushes_the_last_rows(sdf):
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    sdf.emit(batch([1, 2], ["a", "b"]))
    sdf.close()
    assert lengths(view) == {"a": 1, "b": 1}


# -- axes ----------------------------------------------------------------------------------------
def test_datetime_x_gives_a_time_axis(sdf):
    view = sdf.plot.line(x="t", y="cpu", max_fps=NEVER)
    assert isinstance(view.figure.xaxis[0], DatetimeAxis)
    assert view.figure.xaxis[0].axis_label == "t"
    assert view.figure.yaxis[0].axis_label == "cpu"
    sdf.emit(batch([1], ["a"]))
    view.flush()
    assert view.sources["cpu"].data["x"].dtype == np.dtype("datetime64[ns]")


def test_numeric_x_gives_a_linear_axis(sdf):
    view = sdf.plot.line(x="requests", y="cpu", max_fps=NEVER)
    assert isinstance(view.figure.xaxis[0], LinearAxis)
    assert not isinstance(view.figure.xaxis[0], DatetimeAxis)


def test_title_and_size(sdf):
    view = sdf.plot.line(x="t", y="cpu", title="CPU %", height=200, width=500, max_fps=NEVER)
    assert (view.figure.title.text, view.figure.height, view.figure.width) == ("CPU %", 200, 500)
    assert sdf.plot.line(x="t", y="cpu").figure.title.text == "cpu"


def test_repr(sdf):
    assert repr(sdf.plot.line(x="t", y="cpu", by="host")) == \
        "<XYView line 'cpu' vs 't' by 'host' of 'metrics'>"


# -- bad arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"x": "time", "y": "cpu"}, {"x": "t", "y": "mem"},
                                    {"x": "t", "y": "cpu", "by": "region"}])
def test_unknown_column(sdf, kwargs):
    missing = ({"time", "mem", "region"} & set(kwargs.values())).pop()
    with pytest.raises(ConfigError, match=re.escape(
            f"plot of 'metrics': no column {missing!r}; columns: ['t', 'host', 'cpu', "
            "'requests']")):
        sdf.plot.line(**kwargs)


@pytest.mark.parametrize("max_fps", [0, -1.0])
def test_max_fps_must_be_positive(sdf, max_fps):
    with pytest.raises(ConfigError,
                       match=f"`max_fps` must be a positive number; got {max_fps!r}"):
        sdf.plot.line(x="t", y="cpu", max_fps=max_fps)


@pytest.mark.parametrize("rollover", [0, -10, 2.5, True])
def test_rollover_must_be_a_positive_int(sdf, rollover):
    with pytest.raises(ConfigError, match=re.escape(
            f"`max_points` must be a positive int; got {rollover!r}")):
        sdf.plot.line(x="t", y="cpu", rollover=rollover)
    with pytest.raises(ConfigError, match=re.escape(
            f"`max_points` must be a positive int; got {rollover!r}")):
        sdf.plot.line(x="t", y="cpu", max_points=rollover)


# -- dashboard -----------------------------------------------------------------------------------
def test_dashboard_lays_out_controls_then_plots(sdf):
    size = Param("10s", min="1s", max="1min", name="window")
    threshold = Param(80.0, min=0.0, max=100.0, name="threshold")
    extra = widgets.Button(description="reset")
    agg = sdf.window(rtnb.tumbling(size), by="host").agg(mean=("cpu", "mean"))
    v1 = agg.plot.line(x="window_start", y="mean", by="host", max_fps=NEVER)
    v2 = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    board = rtnb.dashboard(size, v1, threshold, v2, extra, share_x=False)
    assert isinstance(board, Dashboard)
    assert board.controls == [size, threshold, extra]
    assert board.views == [v1, v2]
    box = board.widget
    assert isinstance(box, widgets.VBox)
    controls, plots = box.children
    assert controls.children == (size.widget, threshold.widget, extra)
    # One Bokeh document for every plot: one widget, and both views send through it.
    assert plots is board.model
    assert v1.model is board.model and v2.model is board.model
    assert board.widget is box


def test_dashboard_ncols(sdf):
    views = [sdf.plot.line(x="t", y="cpu", max_fps=NEVER) for _ in range(3)]
    board = rtnb.dashboard(*views, ncols=2, share_x=False)
    (plots,) = board.widget.children  # no controls row without controls
    grid = plots._model
    assert sorted((row, col) for _, row, col in grid.children) == [(0, 0), (0, 1), (1, 0)]
    assert [child for child, _, _ in grid.children] == [v.figure for v in views]


def test_dashboard_shares_the_x_range(sdf):
    v1, v2, v3 = (sdf.plot.line(x="t", y=y, max_fps=NEVER) for y in ("cpu", "requests", "cpu"))
    board = rtnb.dashboard(v1, v2, v3)
    assert v2.figure.x_range is v1.figure.x_range
    assert v3.figure.x_range is v1.figure.x_range
    assert isinstance(board.widget, widgets.VBox)


def test_dashboard_shares_the_x_range_only_between_plots_of_the_same_span(sdf):
    """Issue 18, defect 5: a shared x range squeezed a span="1h" plot into a tenth of its
    width beside 6-minute plots."""
    hour, hour2 = (sdf.plot.line(x="t", y="cpu", span="1h", max_fps=NEVER) for _ in range(2))
    short = sdf.plot.line(x="t", y="cpu", span="6min", max_fps=NEVER)
    plain = sdf.plot.line(x="t", y="cpu", max_fps=NEVER)
    rtnb.dashboard(hour, short, plain, hour2)
    assert hour2.figure.x_range is hour.figure.x_range
    assert short.figure.x_range is not hour.figure.x_range
    assert plain.figure.x_range is not hour.figure.x_range
    assert plain.figure.x_range is not short.figure.x_range


def test_dashboard_can_keep_x_ranges_apart(sdf):
    v1, v2 = (sdf.plot.line(x="t", y=y, max_fps=NEVER) for y in ("cpu", "requests"))
    rtnb.dashboard(v1, v2, share_x=False)
    assert v2.figure.x_range is not v1.figure.x_range


@pytest.mark.parametrize("item", ["cpu", 3])
def test_dashboard_refuses_other_things(item):
    with pytest.raises(ConfigError, match="dashboard\\(\\) takes views, Params and ipywidgets; "
                                          "got"):
        rtnb.dashboard(item)


def test_dashboard_refuses_a_frame_instead_of_a_view(sdf):
    with pytest.raises(ConfigError, match="dashboard\\(\\) takes views, Params and ipywidgets"):
        rtnb.dashboard(Param(1, min=0, max=2), sdf)


def test_a_view_shown_alone_cannot_join_a_dashboard(sdf):
    view = sdf.plot.line(x="t", y="cpu", max_fps=NEVER)
    view.widget  # noqa: B018
    with pytest.raises(ConfigError, match="already displayed on its own"):
        rtnb.dashboard(view)


def test_dashboard_ncols_must_be_positive(sdf):
    view = sdf.plot.line(x="t", y="cpu", max_fps=NEVER)
    with pytest.raises(ConfigError, match="ncols"):
        rtnb.dashboard(view, ncols=0).widget  # noqa: B018


def test_dashboard_close_closes_every_view(sdf):
    views = [sdf.plot.line(x="t", y="cpu", max_fps=NEVER) for _ in range(2)]
    rtnb.dashboard(*views, share_x=False).close()
    sdf.emit(batch([1], ["a"]))
    for view in views:
        view.flush()
        assert view.sources == {}


# -- the honest end-to-end check -----------------------------------------------------------------
@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    """Ten minutes of four hosts of the bundled sample (1 s), some cpu values missing."""
    df = pd.read_parquet(rtnb.datasets.metrics_path(), columns=["timestamp", "host", "cpu"],
                         filters=[("timestamp", "<", pd.Timestamp("2026-01-05 00:10"))])
    df = df[df["host"].isin(["batch-01", "db-01", "web-01", "web-02"])].reset_index(drop=True)
    df.loc[df.index % 89 == 0, "cpu"] = np.nan
    return df


def assert_plotted_window_means(view: LineView, df: pd.DataFrame, size: str) -> None:
    """The view's lines are pandas' tumbling-window cpu means, per host."""
    result = view.data().rename(columns={"x": "window_start", "y": "cpu"})
    result = result.astype({"window_start": "datetime64[ns]", "host": object})
    expected = pandas_windows(df, time="timestamp", size=size, by="host",
                              aggs={"cpu": ("cpu", "mean")})
    expected = expected[["host", "window_start", "cpu"]].astype({"host": object})
    assert_frame_equal_unordered(result, expected, by=["host", "window_start"])


def test_plotted_window_means_equal_pandas(metrics):
    sdf = rtnb.StreamingFrame(metrics.iloc[:0], time="timestamp", name="metrics")
    agg = sdf.window(rtnb.tumbling("1min"), by="host").agg(mean=("cpu", "mean"))
    view = agg.plot.line(x="window_start", y="mean", by="host", max_fps=NEVER)
    for i, rows in enumerate(np.array_split(np.arange(len(metrics)), 7)):
        sdf.emit(metrics.iloc[rows].sample(frac=1, random_state=i))  # disorder inside batches
        view.flush()
    sdf.close()
    assert_plotted_window_means(view, metrics, "1min")
    assert len(view.sources) == 4


def test_plotted_values_in_a_running_notebook_loop_equal_pandas(metrics):
    # As in a notebook: the view is created on the running loop and updated by its own timer;
    # wait() returns once the last windows have been sent.
    result: dict[str, Any] = {}

    async def main() -> None:
        src = rtnb.sources.replay(metrics, batch_size=500, name="src")
        agg = src.window(rtnb.tumbling("30s"), by="host").agg(mean=("cpu", "mean"))
        view = agg.plot.line(x="window_start", y="mean", by="host", max_fps=50)
        view.widget  # noqa: B018
        src.start()
        await src.wait()
        result["view"] = view

    asyncio.run(main())
    view = result["view"]
    # per update, one message per line that got rows, plus the few that add each line
    assert view.model.messages_sent <= (view.updates + 6) * len(view.sources)
    assert_plotted_window_means(view, metrics, "30s")


# -- colours: one per key, the same in every view ------------------------------------------
def test_thirteen_keys_get_thirteen_colours_and_keep_them_across_views(sdf):
    """Issue 18, defect 6: hosts 6 and 11 shared a colour; bars took colours by bar order,
    so after the bars changed order they no longer matched the lines."""
    hosts = [f"host-{i:02d}" for i in range(13)]
    lines = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    bars = sdf.plot.bar(y="cpu", by="host", max_fps=NEVER)
    sdf.emit(batch(list(range(13)), hosts))
    lines.flush()
    bars.flush()
    line_colour = {item.label.value: item.renderers[0].glyph.line_color
                   for item in lines.figure.legend[0].items}
    assert len(set(line_colour.values())) == 13
    bar_colour = dict(zip(bars.source.data["key"], bars.source.data["color"], strict=True))
    assert bar_colour == line_colour
    # the same keys in another order, in a new view: the same colours
    again = sdf.plot.bar(y="cpu", by="host", max_fps=NEVER)
    sdf.emit(batch(list(range(13, 26)), hosts[::-1]))
    again.flush()
    assert dict(zip(again.source.data["key"], again.source.data["color"],
                    strict=True)) == line_colour


def test_alert_marks_are_named_as_the_user_named_the_alert(sdf):
    """Issue 18, defect 7: the legend read the node path, not the alert's name."""
    hot = rtnb.alert(sdf, sdf["cpu"] > 90, on="cpu", by="host", name="host_anomaly")
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER).mark(hot)
    assert hot.name == "metrics.host_anomaly"
    labels = [item.label.value for item in view.figure.legend[0].items]
    assert labels == ["host_anomaly"]
    view.close()


def test_title_names_the_window_drawn_after_the_stream_ended(sdf):
    """Issue 18, defect 8: after stop the title said "3min" while 1-minute windows were
    still drawn (nothing recomputed them)."""
    size = Param("1min", min="10s", max="10min", name="size")
    agg = sdf.window(rtnb.tumbling(size)).agg(n=("cpu", "count"))
    kept = sdf.window(rtnb.tumbling(size), retain="1h").agg(n=("cpu", "count"))
    view = agg.plot.line(x="window_start", y="n", max_fps=NEVER)
    redrawn = kept.plot.line(x="window_start", y="n", max_fps=NEVER)
    sdf.emit(batch(list(range(0, 600, 30)), ["a"] * 20))
    assert "1min" in view.figure.title.text
    size.value = "2min"  # while the stream runs: the new size applies from now on
    assert "2min" in view.figure.title.text
    sdf.close()
    size.value = "3min"  # after the end: nothing is recomputed for `agg`
    assert "2min" in view.figure.title.text and "3min" not in view.figure.title.text
    assert "3min" in redrawn.figure.title.text  # `kept` recomputes its history: redrawn


def test_every_xy_view_has_hover_values_on_its_own_lines(sdf):
    """Issue 18, defect 9: no hover tooltips. Time, key and value, on the lines only (not
    on watermark or alert marks)."""
    view = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    sdf.emit(batch([1, 2, 3], ["a", "b", "a"]))
    view.flush()
    hover = view.hover
    assert hover in view.figure.tools
    assert hover.tooltips == [("host", "$name"), ("t", "@x{%F %T}"), ("cpu", "@y{0,0.[000]}")]
    assert hover.formatters == {"@x": "datetime"}
    assert [r.name for r in hover.renderers] == ["a", "b"]
    assert all(r.data_source is view.sources[r.name] for r in hover.renderers)
    band = sdf.plot.band(x="t", lower="cpu", upper="requests", max_fps=NEVER)
    assert [name for name, _ in band.hover.tooltips] == ["t", "cpu", "requests"]
    numeric = sdf.plot.scatter(x="requests", y="cpu", max_fps=NEVER)
    assert numeric.hover.tooltips[0] == ("requests", "@x{0,0.[000]}")
    assert numeric.hover.formatters == {}


def test_status_speaks_plain_words_with_the_figures_one_click_away():
    """Issue 18, defect 9: the status widget spoke internals ("held 211 · ack timeouts 1")."""
    from rtnb.viz.status import Status

    snap = {"state": "running", "error": None, "events_in": 5000, "events_in_per_s": 250.0,
            "latency_p50_s": 1.5, "late": 3, "dead_letters": 0, "page_lag_updates": 4}
    assert Status.summary(snap) == ("Running: 5,000 events so far, 250/s; plots follow 1.5 s "
                                    "behind the data; 3 rows came too late; the page is 4 "
                                    "updates behind.")
    assert Status.summary({**snap, "state": "finished", "late": 0, "page_lag_updates": None}) \
        == "Finished: 5,000 events; no late rows."
    # the last refresh at the end may catch the page a few updates behind: not worth saying
    # once nothing more is coming (a screenshot of notebook 03 said "10 updates behind")
    assert Status.summary({**snap, "state": "finished", "late": 0}) \
        == "Finished: 5,000 events; no late rows."
    assert Status.summary({**snap, "state": "failed", "error": "SourceError: reset"}) == \
        "Failed: SourceError: reset"
    src = rtnb.sources.replay(pd.DataFrame({"timestamp": pd.date_range("2026", periods=3,
                                                                       freq="s"),
                                            "x": [1.0, 2.0, 3.0]}))
    status = src.status()
    shown = status.html(status.snapshot())
    status.close()
    assert shown.startswith('<div class="rtnb-status-summary">Not started: 0 events;')
    assert "<details>" in shown and 'class="rtnb-status"' in shown  # the table, folded
    assert "held" not in shown.split("<details>")[0]


def test_status_shows_a_finite_replays_progress_and_time_left():
    """Issue 18, defect 9: a finite replay showed no progress."""
    data = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=400, freq="s"),
                         "x": np.arange(400.0)})

    async def scenario() -> tuple[dict[str, Any], str, dict[str, Any]]:
        src = rtnb.sources.replay(data, speed=200, interval="20ms")  # ~2 s of replay
        status = src.status()
        src.start()
        await asyncio.sleep(0.5)
        status.snapshot()  # the widget refreshes every second: rates come from two samples
        await asyncio.sleep(0.5)
        during = status.snapshot()
        said = status.summary(during)
        await src.wait()
        after = status.snapshot()
        status.close()
        return during, said, after

    during, said, after = asyncio.run(scenario())
    assert 0.1 < during["progress"] < 0.9
    assert during["eta_s"] is not None and 0 < during["eta_s"] < 10
    assert f"{during['progress']:.0%} of the replay (about " in said
    assert after["progress"] == 1.0 and after["eta_s"] is None


def test_dashboard_saves_a_standalone_html_snapshot(sdf, tmp_path):
    """Issue 18, "Share": a board as a file a colleague opens without a kernel."""
    size = Param("30s", min="10s", max="5min", name="window")
    lines = sdf.plot.line(x="t", y="cpu", by="host", max_fps=NEVER)
    board = rtnb.dashboard(size, lines)
    sdf.emit(batch([1, 2, 3], ["web-01", "web-02", "web-01"], [11.5, 22.5, 33.5]))
    out = board.save(tmp_path / "board.html", title="CPU board")
    page = out.read_text()
    assert "<title>CPU board</title>" in page
    assert "cdn.bokeh.org" not in page and "Bokeh" in page  # BokehJS inline
    assert '<p class="rtnb-params">window = 30s</p>' in page
    assert "web-01" in page and "web-02" in page  # the lines' data, as they were
    assert lines.sources["web-01"].data["y"].tolist() == [11.5, 33.5]  # flushed first
    sdf.emit(batch([4], ["web-01"], [44.0]))
    lines.flush()  # the live board goes on after the snapshot
    assert len(lines.sources["web-01"].data["y"]) == 3
    board.close()
    with pytest.raises(ConfigError, match="at least one plot"):
        rtnb.dashboard(size).save(tmp_path / "empty.html")


def test_a_long_legend_wraps_into_columns_that_fit_the_plot(sdf):
    """Issue 18, defect 7: 13 entries did not fit a 280-300 px plot and ran over what was
    below. The legend holds as many rows as the height allows, then wraps."""
    view = sdf.plot.line(x="t", y="cpu", by="host", height=280, max_fps=NEVER)
    sdf.emit(batch(list(range(13)), [f"h{i:02d}" for i in range(13)]))
    view.flush()
    legend = view.figure.legend[0]
    assert len(legend.items) == 13
    assert legend.nrows == 12 and legend.nrows * 16 <= 280 - 80  # 2 columns: 12 + 1
    assert sdf.plot.line(x="t", y="cpu", by="host", height=120).figure.legend[0].nrows == 2
