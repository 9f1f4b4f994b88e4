"""The diff of a shadow replay on a plot: what the Bokeh model holds, not how it looks.

A band filter with two threshold Params (``lo <= cpu <= hi``) before 1-minute windows per
host, and an alert on the windows: moving the band adds, removes and changes windows and
alert transitions, and leaves host ``c`` (always inside both bands) unchanged. The mark
sources must hold exactly :meth:`ShadowRun.diff`'s rows (the diff itself is checked against
pandas in test_shadow.py); the lines must hold each run's windows as pandas computes them on
the whole input, and the alert transitions the alert rule written out in plain Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from bokeh.models import ColumnDataSource, GlyphRenderer, HoverTool

import rtnb
from rtnb.errors import ConfigError

START = pd.Timestamp("2026-03-01 10:00:00")
OLD = {"lo": 20.0, "hi": 80.0}
NEW = {"lo": 40.0, "hi": 100.0}
LIMIT = 60.0


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 40  # every 30 s, 20 minutes, 3 hosts
    cpu = rng.uniform(0, 100, (n, 3))
    cpu[:, 2] = rng.uniform(45, 75, n)  # host c: inside both bands, never changes
    return pd.DataFrame({
        "timestamp": (START + pd.to_timedelta(np.arange(n) * 30, unit="s")).repeat(3).astype(
            "datetime64[ns]"),
        "host": np.tile(["a", "b", "c"], n),
        "cpu": cpu.ravel().round(1),
    })


@pytest.fixture(scope="module")
def shadow(events: pd.DataFrame) -> Any:
    src = rtnb.sources.replay(events, name="events", batch_size=16)
    lo = rtnb.Param(OLD["lo"], min=0.0, max=100.0, name="lo")
    hi = rtnb.Param(OLD["hi"], min=0.0, max=100.0, name="hi")
    inside = src[(src["cpu"] >= lo) & (src["cpu"] <= hi)]
    cpu = inside.window(rtnb.tumbling("1min"), by="host", name="cpu").agg(
        cpu=("cpu", "mean"), n=("cpu", "count"))
    hot = rtnb.alert(cpu, cpu["cpu"] > LIMIT, on="cpu", by="host", name="hot")
    run = rtnb.Pipeline(cpu, hot, name="band").replay(NEW)
    run.run()
    yield run
    run.close()


# -- independent oracles ------------------------------------------------------------------------
def pandas_windows(events: pd.DataFrame, lo: float, hi: float) -> pd.DataFrame:
    inside = events[(events["cpu"] >= lo) & (events["cpu"] <= hi)]
    return (inside.assign(window_start=inside["timestamp"].dt.floor("1min"))
            .groupby(["host", "window_start"], sort=True)["cpu"].mean().reset_index())


def pandas_alerts(windows: pd.DataFrame) -> pd.DataFrame:
    """Firing when a host's window goes above LIMIT, resolved when it comes back."""
    rows = []
    for host, g in windows.sort_values("window_start").groupby("host", sort=True):
        firing, started = False, None
        for t, value in zip(g["window_start"], g["cpu"], strict=True):
            if (value > LIMIT) != firing:
                firing = not firing
                started = t if firing else started
                rows.append((host, "firing" if firing else "resolved", t, started, value))
    return pd.DataFrame(rows, columns=["host", "state", "time", "started", "value"])


def frame_of(source: ColumnDataSource, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: source.data[c] for c in columns})


def renderer_of(root: Any, source: ColumnDataSource) -> Any:
    found = [r for r in root.select({"type": GlyphRenderer})
             if r.data_source is source and r.glyph.__class__.__name__ == "Scatter"]
    assert len(found) == 1
    return found[0]


# -- windows ------------------------------------------------------------------------------------
def test_window_marks_hold_exactly_the_diffs_rows(shadow: Any) -> None:
    plot = shadow.plot("cpu")
    diff = shadow.diff("cpu")
    styles = set()
    for change in ("added", "removed", "changed"):
        expected = diff[diff["change"] == change].reset_index(drop=True)
        assert len(expected), f"the data should have {change} windows"
        source = plot.root.select_one({"name": f"cpu:{change}", "type": ColumnDataSource})
        assert source is plot.sources[f"cpu:{change}"]
        tm.assert_frame_equal(frame_of(source, list(diff.columns)), expected, check_dtype=False)
        # drawn at the window's start, at the new value (the old one for a removed window)
        np.testing.assert_array_equal(source.data["x"], expected["window_start"].to_numpy())
        at = expected["old_cpu" if change == "removed" else "new_cpu"].to_numpy()
        np.testing.assert_array_equal(source.data["y"], at)
        glyph = renderer_of(plot.root, source).glyph
        colour = glyph.line_color if change == "removed" else glyph.fill_color
        styles.add((glyph.marker, colour))
    assert len(styles) == 3  # three distinct glyphs and colours
    assert len({marker for marker, _ in styles}) == len({c for _, c in styles}) == 3
    labels = [item.label.value for item in plot.figures["cpu"].legend[0].items]
    counts = diff["change"].value_counts()
    for change in ("added", "removed", "changed"):
        assert f"{change} ({counts[change]})" in labels
    # hovering a mark shows the old and the new value of every value column
    (marks,) = [h for h in plot.root.select({"type": HoverTool})
                if any(r.data_source is source for r in h.renderers)]
    tips = dict(marks.tooltips)
    for column in ("cpu", "n"):
        assert "@{old_" + column + "}" in tips[column] and "@{new_" + column + "}" in tips[column]


def test_lines_hold_each_runs_windows(shadow: Any, events: pd.DataFrame) -> None:
    plot = shadow.plot("cpu", y="cpu", keys=["a", "b", "c"])
    for side, band in (("old", OLD), ("new", NEW)):
        expected = pandas_windows(events, band["lo"], band["hi"])
        for host, rows in expected.groupby("host"):
            source = plot.sources[f"cpu:{side}:{host}"]
            np.testing.assert_array_equal(source.data["x"], rows["window_start"].to_numpy())
            np.testing.assert_allclose(source.data["y"], rows["cpu"].to_numpy(), rtol=1e-12)
    assert "lo 20.0 → 40.0, hi 80.0 → 100.0" in plot.figures["cpu"].title.text


def test_by_default_only_the_keys_that_change(shadow: Any) -> None:
    diff = shadow.diff("cpu")
    assert set(diff["host"]) == {"a", "b"}  # host c stays inside both bands
    plot = shadow.plot("cpu")
    assert sorted(k for k in plot.sources if k.startswith("cpu:old:")) == ["cpu:old:a",
                                                                           "cpu:old:b"]
    assert "2 of 3 keys" in plot.figures["cpu"].title.text
    # keys= picks them: c's lines, and the marks of a only
    plot = shadow.plot("cpu", keys=["a", "c"])
    assert sorted(k for k in plot.sources if ":old:" in k) == ["cpu:old:a", "cpu:old:c"]
    only_a = diff[diff["host"] == "a"]
    assert sum(len(plot.sources[f"cpu:{c}"].data["x"])
               for c in ("added", "removed", "changed")) == len(only_a)
    changed = only_a[only_a["change"] == "changed"].reset_index(drop=True)
    tm.assert_frame_equal(frame_of(plot.sources["cpu:changed"], list(diff.columns)), changed,
                          check_dtype=False)


# -- alerts -------------------------------------------------------------------------------------
def test_alert_transitions_of_both_runs_and_the_diff(shadow: Any, events: pd.DataFrame) -> None:
    plot = shadow.plot("cpu.hot", keys=["a", "b", "c"])
    columns = ["host", "state", "time", "started", "value"]
    sides = {}
    for side, band in (("old", OLD), ("new", NEW)):
        expected = pandas_alerts(pandas_windows(events, band["lo"], band["hi"]))
        source = plot.sources[f"cpu.hot:{side}"]
        result = frame_of(source, columns).sort_values(["host", "time"]).reset_index(drop=True)
        tm.assert_frame_equal(result, expected, check_dtype=False, rtol=1e-12)
        sides[side] = renderer_of(plot.root, source).glyph.y.transform.value
    assert sides["old"] > 0 > sides["new"]  # the old run above each key's line, the new below
    diff = shadow.diff("cpu.hot")
    for change in ("added", "removed", "changed"):
        expected = diff[diff["change"] == change].reset_index(drop=True)
        assert len(expected), f"the data should have {change} alert transitions"
        source = plot.sources[f"cpu.hot:{change}"]
        tm.assert_frame_equal(frame_of(source, list(diff.columns)), expected, check_dtype=False)
        glyph = renderer_of(plot.root, source).glyph
        # ringed on the side of the run that has it (a changed one: the new run's)
        assert glyph.y.transform.value == sides["old" if change == "removed" else "new"]
    assert list(plot.figures["cpu.hot"].y_range.factors) == ["c", "b", "a"]  # a on top


def test_every_node_stacked_on_one_time_axis(shadow: Any) -> None:
    plot = shadow.plot()
    assert list(plot.figures) == ["cpu", "cpu.hot"]
    windows, alerts = plot.figures.values()
    assert plot.root.children == [windows, alerts]
    assert windows.x_range is alerts.x_range  # pan and zoom together
    assert repr(plot) == "<DiffPlot of ['cpu', 'cpu.hot']>"
    from jupyter_bokeh import BokehModel

    assert isinstance(plot.widget, BokehModel)  # how a notebook shows it
    plot.close()


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_node_column_or_key_is_refused_naming_what_exists(shadow: Any) -> None:
    with pytest.raises(ConfigError, match=r"plot\(node='cpu\.window'\): not a window or alert "
                                          r"node of 'band'; those are \['cpu', 'cpu\.hot'\]"):
        shadow.plot("cpu.window")
    with pytest.raises(ConfigError, match=r"plot\(y='mean'\): the window node 'cpu' has no "
                                          r"value column 'mean'; its value columns: "
                                          r"\['cpu', 'n'\]"):
        shadow.plot(y="mean")
    with pytest.raises(ConfigError, match=r"'cpu\.hot' is an alert node"):
        shadow.plot("cpu.hot", y="cpu")
    with pytest.raises(ConfigError, match=r"no key \['d'\] \(host\) in either run of "
                                          r"\['cpu'\]; the keys: \['a', 'b', 'c'\]"):
        shadow.plot("cpu", keys=["a", "d"])
    with pytest.raises(ConfigError, match="at least 100 pixels"):
        shadow.plot(height=10)


def test_an_alert_node_without_changes_shows_both_runs_and_no_marks() -> None:
    from rtnb.viz import DiffPlot

    t = pd.to_datetime(["2026-01-01 00:01", "2026-01-01 00:03"])
    runs = pd.DataFrame({"alert": "hot", "state": ["firing", "resolved"], "time": t,
                         "started": t[:1].repeat(2), "value": [91.0, 80.0]})
    none = pd.DataFrame({"node": pd.Series([], dtype=str), "kind": pd.Series([], dtype=str),
                         "change": pd.Series([], dtype=str), "alert": pd.Series([], dtype=str),
                         "time": t[:0], "state": pd.Series([], dtype=str),
                         "old_started": t[:0], "new_started": t[:0],
                         "old_value": pd.Series([], dtype=float),
                         "new_value": pd.Series([], dtype=float)})
    plot = DiffPlot()
    fig = plot.add_alerts("cpu.hot", runs, runs, none)
    assert list(fig.y_range.factors) == ["hot"]  # no by: one line, the alert's name
    for side in ("old", "new"):
        assert plot.sources[f"cpu.hot:{side}"].data["marker"].tolist() == [
            "triangle", "inverted_triangle"]
    assert all(len(plot.sources[f"cpu.hot:{c}"].data["x"]) == 0
               for c in ("added", "removed", "changed"))
