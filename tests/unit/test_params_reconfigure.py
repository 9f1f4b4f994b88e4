"""A Param moved while the stream runs reconfigures the window: nothing is lost or counted twice."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb import ConfigError, Param
from rtnb.testing import collect

T0 = pd.Timestamp("2026-01-01")


def example() -> pd.DataFrame:
    return pd.DataFrame({
        "t": pd.Series([], dtype="datetime64[ns]"),
        "host": pd.Series([], dtype=str),
        "cpu": pd.Series([], dtype=float),
    })


def batch(secs: list[float], host: str = "a", cpu: list[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame({
        "t": (T0 + pd.to_timedelta(secs, unit="s")).astype("datetime64[ns]"),
        "host": pd.Series([host] * len(secs), dtype=str),
        "cpu": pd.Series(cpu if cpu is not None else [1.0] * len(secs), dtype=float),
    })


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    """Ten minutes of the sample data (12 hosts, 1 s), with some cpu values missing."""
    df = pd.read_parquet(rtnb.datasets.metrics_path(), columns=["timestamp", "host", "cpu"],
                         filters=[("timestamp", "<", pd.Timestamp("2026-01-05 00:10"))])
    assert len(df) == 12 * 600
    df.loc[df.index % 97 == 0, "cpu"] = np.nan
    return df


def size_param(value: str = "10s") -> Param:
    return Param(value, min="1s", max="5min", name="size")


# -- window size -------------------------------------------------------------------------------
def test_changing_the_size_emits_the_open_windows_at_once():
    size = size_param("10s")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling(size), by="host").agg(n=("cpu", "count"))
    out = agg.collect()
    sdf.emit(batch([1, 5, 12]))
    assert len(out) == 1  # [0s, 10s) closed by the watermark
    size.value = "5s"
    assert len(out) == 2
    result = out[1]
    expected = pd.DataFrame({
        "window_start": pd.Series([T0 + pd.Timedelta("10s")], dtype="datetime64[ns]"),
        "window_end": pd.Series([T0 + pd.Timedelta("20s")], dtype="datetime64[ns]"),
        "host": pd.Series(["a"], dtype=str),
        "n": np.array([1], dtype=np.int64),
    })
    tm.assert_frame_equal(result, expected)


def test_windows_after_the_change_use_the_new_size():
    size = size_param("10s")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling(size)).agg(n=("cpu", "count"))
    out = collect(agg)
    sdf.emit(batch([1, 5, 12]))
    size.value = "5s"
    assert out, "no window was emitted"
    before = len(out.frame())
    sdf.emit(batch([21, 22, 26, 33, 41]))
    sdf.close()
    after = out.frame().iloc[before:]
    assert (after["window_end"] - after["window_start"] == pd.Timedelta("5s")).all()
    assert after["window_start"].tolist() == [T0 + pd.Timedelta(s, unit="s")
                                              for s in (20, 25, 30, 40)]
    assert after["n"].tolist() == [2, 1, 1, 1]


def test_reconfigure_keeps_the_watermark_and_notifies_listeners():
    size = size_param("10s")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling(size)).agg(n=("cpu", "count"))
    calls = []
    agg.on_reconfigure(calls.append)
    sdf.emit(batch([1, 12]))
    watermark = agg.watermark
    size.value = "30s"
    assert agg.watermark == watermark == T0 + pd.Timedelta("12s")
    assert calls == [agg]
    assert agg.describe() == "tumbling 30s"


@pytest.mark.parametrize("sizes", [["30s", "1min", "5s", "10s"], ["1min", "1s", "5min"]],
                         ids=["grow-shrink", "extremes"])
def test_nothing_is_lost_or_counted_twice_across_changes(metrics, sizes):
    size = size_param("10s")
    sdf = rtnb.StreamingFrame(metrics.iloc[:0], time="timestamp")
    agg = sdf.window(rtnb.tumbling(size), by="host").agg(n=("cpu", "count"),
                                                         total=("cpu", "sum"))
    out = collect(agg)
    late = collect(agg.late)
    chunks = np.array_split(np.arange(len(metrics)), len(sizes) + 1)
    for i, rows in enumerate(chunks):
        sdf.emit(metrics.iloc[rows])
        if i < len(sizes):
            size.value = sizes[i]
    sdf.close()
    result = out.frame()
    assert late == []
    assert result["n"].sum() == metrics["cpu"].notna().sum()
    assert result["total"].sum() == pytest.approx(metrics["cpu"].sum())
    per_host = result.groupby("host")["n"].sum()
    expected = metrics.groupby("host")["cpu"].count()
    tm.assert_series_equal(per_host, expected, check_names=False)


def test_change_from_the_widget_while_a_replay_runs(metrics):
    # The notebook case: the slider moves between two batches of a running source.
    size = size_param("10s")
    src = rtnb.sources.replay(metrics, batch_size=600, name="src")
    agg = src.window(rtnb.tumbling(size), by="host").agg(n=("cpu", "count"))
    out = collect(agg)
    seen = []

    def move_slider(b: pd.DataFrame) -> None:
        seen.append(len(b))
        if len(seen) == 4:
            size.widget.value = pd.Timedelta("1min")

    src.sink(move_slider)
    asyncio.run(src.arun())
    result = out.frame()
    assert size.value == pd.Timedelta("1min")
    assert src.closed
    assert result["n"].sum() == metrics["cpu"].notna().sum()
    last = result.iloc[-12:]
    assert (last["window_end"] - last["window_start"] == pd.Timedelta("1min")).all()


def test_rows_for_an_already_closed_window_stay_late_after_a_change():
    size = size_param("10s")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling(size)).agg(n=("cpu", "count"))
    out = collect(agg)
    late = collect(agg.late)
    sdf.emit(batch([1, 12]))  # [0s, 10s) closed before the change
    size.value = "5s"
    sdf.emit(batch([3]))
    result = late.frame()
    expected = batch([3])
    tm.assert_frame_equal(result, expected)
    assert agg.counters.late == 1
    assert out.frame()["n"].sum() == 2


def test_rows_for_a_window_flushed_by_the_change_go_to_late():
    size = size_param("10s")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling(size)).agg(n=("cpu", "count"))
    out = collect(agg)
    late = collect(agg.late)
    sdf.emit(batch([1, 5, 12]))  # watermark 12s; [10s, 20s) is open
    size.value = "5s"  # [10s, 20s) is emitted with the row at 12s
    sdf.emit(batch([11]))  # behind the watermark, inside the flushed [10s, 20s)
    sdf.close()
    result = late.frame()
    expected = batch([11])
    tm.assert_frame_equal(result, expected)
    assert out, "no window was emitted"
    emitted = out.frame()
    # Tumbling windows never overlap: [10s, 20s) and [10s, 15s) must not both be emitted.
    assert not (emitted["window_start"].iloc[1:].to_numpy()
                < emitted["window_end"].iloc[:-1].to_numpy()).any()


def test_a_refused_size_loses_nothing():
    size = Param("1min", min="1s", max="5min", name="size")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.sliding(size, "10s")).agg(n=("cpu", "count"))
    out = collect(agg)
    sdf.emit(batch([1, 2, 3]))
    with pytest.raises(ConfigError, match="sliding window `every` \\(10s\\) can't be longer "
                                          "than `size` \\(5s\\)"):
        size.value = "5s"
    sdf.emit(batch([4]))
    sdf.close()
    result = out.frame()
    # The rows at 1s, 2s and 3s were in the open windows when the slider moved.
    assert result.loc[result["window_start"] == T0, "n"].tolist() == [4]


# -- allowed lateness ----------------------------------------------------------------------------
def test_allowed_lateness_param_keeps_windows_open_longer():
    lateness = Param("0s", min="0s", max="1min", name="lateness")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling("10s"), allowed_lateness=lateness).agg(n=("cpu", "count"))
    out = collect(agg)
    late = collect(agg.late)
    lateness.value = "15s"
    sdf.emit(batch([1, 25]))  # watermark 10s: only [0s, 10s) closes
    assert agg.watermark == T0 + pd.Timedelta("10s")
    sdf.emit(batch([12]))  # accepted: [10s, 20s) is still open
    assert late == []
    assert out.frame()["window_start"].tolist() == [T0]

    lateness.value = "0s"
    sdf.emit(batch([26]))  # watermark 26s: [10s, 20s) closes now
    assert agg.watermark == T0 + pd.Timedelta("26s")
    result = out.frame()
    assert result["window_start"].tolist() == [T0, T0 + pd.Timedelta("10s")]
    assert result["n"].tolist() == [1, 1]
    sdf.emit(batch([15]))
    tm.assert_frame_equal(late.frame(), batch([15]))


def test_raising_the_lateness_never_moves_the_watermark_back():
    lateness = Param("0s", min="0s", max="1min", name="lateness")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling("10s"), allowed_lateness=lateness).agg(n=("cpu", "count"))
    late = collect(agg.late)
    sdf.emit(batch([25]))
    lateness.value = "30s"
    sdf.emit(batch([26]))
    assert agg.watermark == T0 + pd.Timedelta("25s")
    sdf.emit(batch([5]))  # its window closed before the change: still late
    tm.assert_frame_equal(late.frame(), batch([5]))


def test_lateness_change_notifies_listeners_and_describe():
    lateness = Param("0s", min="0s", max="1min", name="lateness")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling("10s"), by="host", allowed_lateness=lateness).agg(
        n=("cpu", "count"))
    calls = []
    agg.on_reconfigure(calls.append)
    assert agg.describe() == "tumbling 10s per host"
    lateness.value = "5s"
    assert calls == [agg]
    assert agg.describe() == "tumbling 10s per host, lateness 5s"


# -- plot titles ---------------------------------------------------------------------------------
def test_plot_title_follows_the_params():
    size = size_param("10s")
    lateness = Param("0s", min="0s", max="1min", name="lateness")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling(size), by="host", allowed_lateness=lateness).agg(
        mean=("cpu", "mean"))
    view = agg.plot.line(x="window_start", y="mean", by="host", max_fps=1e-9)
    assert view.figure.title.text == "mean — tumbling 10s per host"
    size.value = "30s"
    assert view.figure.title.text == "mean — tumbling 30s per host"
    lateness.value = "5s"
    assert view.figure.title.text == "mean — tumbling 30s per host, lateness 5s"


def test_fixed_plot_title_does_not_follow_the_params():
    size = size_param("10s")
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling(size)).agg(mean=("cpu", "mean"))
    view = agg.plot.line(x="window_start", y="mean", title="CPU", max_fps=1e-9)
    size.value = "30s"
    assert view.figure.title.text == "CPU"
