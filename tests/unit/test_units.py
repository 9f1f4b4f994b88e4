"""Units on axes (issue 18): where the schema (``example.attrs["units"]``) or the user
(``frame.units = ...``) gives a column's unit, plots, bars, tables and tooltips say it, and
derived frames pass it on as the computation implies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import rtnb
from rtnb.errors import ConfigError

DATA = Path(__file__).resolve().parents[2] / "data" / "metrics.parquet"


def example() -> pd.DataFrame:
    ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                       "host": pd.Series([], dtype=str),
                       "lat": pd.Series([], dtype=float), "cpu": pd.Series([], dtype=float)})
    ex.attrs["units"] = {"lat": "ms", "cpu": "%"}
    return ex


def test_a_root_frame_takes_its_example_units_and_filters_keep_them() -> None:
    sdf = rtnb.StreamingFrame(example(), time="t")
    assert sdf.units == {"lat": "ms", "cpu": "%"}
    assert sdf[sdf["lat"] > 1].units == {"lat": "ms", "cpu": "%"}
    assert sdf[["t", "lat"]].units == {"lat": "ms"}


def test_window_aggregations_give_the_unit_their_computation_implies() -> None:
    sdf = rtnb.StreamingFrame(example(), time="t")
    agg = sdf.window(rtnb.tumbling("1min"), by="host").agg(
        n=("lat", "count"), mean=("lat", "mean"), p99=("lat", "quantile", 0.99),
        hi=("cpu", "max"), sd=("lat", "std"), var=("lat", "var"), total=("cpu", "sum"))
    assert agg.units == {"mean": "ms", "p99": "ms", "hi": "%", "sd": "ms", "var": "ms²",
                         "total": "%"}
    # the late rows are the input's rows, with the input's units
    assert agg.late.units == {"lat": "ms", "cpu": "%"}
    rolled = sdf.rolling("10s", by="host")["lat"].agg("mean", "count", "var")
    assert rolled.units == {"lat_mean": "ms", "lat_var": "ms²"}
    assert sdf.rolling("10s", by="host")["lat"].mean().units == {"lat": "ms"}


def test_units_set_on_a_frame_apply_to_it_and_what_is_derived_after() -> None:
    ex = example()
    ex.attrs.clear()
    sdf = rtnb.StreamingFrame(ex, time="t")
    assert sdf.units == {}
    busy = sdf[sdf["lat"] > 100]
    later = busy.window(rtnb.tumbling("1min")).agg(mean=("lat", "mean"))
    busy.units = {"lat": "s"}
    assert busy.units == {"lat": "s"}
    assert later.units == {"mean": "s"}
    assert sdf.units == {}  # upstream unchanged


@pytest.mark.parametrize(("units", "message"), [
    ({"nope": "ms"}, "does not have"),
    ({"lat": 3}, "must be strings"),
    (["lat"], "must be a dict"),
])
def test_bad_units_are_refused_naming_the_frame(units: object, message: str) -> None:
    sdf = rtnb.StreamingFrame(example(), time="t", name="metrics")
    with pytest.raises(ConfigError, match=message) as err:
        sdf.units = units  # type: ignore[assignment]
    assert "'metrics'" in str(err.value)


def test_views_label_axes_tooltips_and_columns_with_units() -> None:
    sdf = rtnb.StreamingFrame(example(), time="t")
    line = sdf.plot.line(x="t", y="lat", by="host")
    assert line.figure.yaxis[0].axis_label == "lat (ms)"
    assert line.figure.xaxis[0].axis_label == "t"
    assert ("lat", "@y{0,0.[000]} ms") in line.hover.tooltips
    band = sdf.plot.band(x="t", lower="lat", upper="lat")
    assert band.figure.yaxis[0].axis_label == "lat - lat (ms)"
    bars = sdf.plot.bar(y="cpu", by="host")
    assert bars.figure.yaxis[0].axis_label == "cpu (%)"
    table = sdf.plot.table(["host", "lat", "cpu"])
    assert [c.title for c in table.table.columns] == ["host", "lat (ms)", "cpu (%)"]
    plain = sdf.plot.line(x="t", y="lat")
    sdf.units = {}
    assert sdf.plot.line(x="t", y="lat").figure.yaxis[0].axis_label == "lat"
    for view in (line, band, bars, table, plain):
        view.close()


def test_the_bundled_replay_has_the_units_of_its_data_readme() -> None:
    src = rtnb.sources.replay(DATA, max_events=10)
    assert src.units == {"cpu": "%", "latency_ms": "ms", "requests": "req/s"}
    p99 = src.window(rtnb.tumbling("1min"), by="host").agg(p99=("latency_ms", "quantile", 0.99))
    view = p99.plot.line(x="window_start", y="p99", by="host")
    assert view.figure.yaxis[0].axis_label == "p99 (ms)"
    view.close()


def test_units_of_columns_a_selection_dropped_are_ignored() -> None:
    # pandas keeps ``attrs`` through ``frame[cols]``: the dropped columns' units do not apply
    data = example()[["t", "host", "cpu"]]
    assert data.attrs["units"] == {"lat": "ms", "cpu": "%"}
    assert rtnb.StreamingFrame(data, time="t").units == {"cpu": "%"}
