"""StreamingFrame: schema checks, dead letters, selection, masks, derived frames, sources."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb import ConfigError, Param, RtnbError, SchemaError, SourceError, StreamingSeries
from rtnb.testing import collect, feed

T0 = pd.Timestamp("2026-01-01")


def example() -> pd.DataFrame:
    return pd.DataFrame({
        "t": pd.Series([], dtype="datetime64[ns]"),
        "host": pd.Series([], dtype=str),
        "cpu": pd.Series([], dtype=float),
    })


def batch(secs: list[float], hosts: list[str | None], cpu: list[float]) -> pd.DataFrame:
    return pd.DataFrame({
        "t": (T0 + pd.to_timedelta(secs, unit="s")).astype("datetime64[ns]"),
        "host": pd.Series(hosts, dtype=str),
        "cpu": pd.Series(cpu, dtype=float),
    })


def frame(name: str = "metrics") -> rtnb.StreamingFrame:
    return rtnb.StreamingFrame(example(), time="t", name=name)


@pytest.fixture
def sdf() -> rtnb.StreamingFrame:
    return frame()


@pytest.fixture
def data() -> pd.DataFrame:
    return batch([1, 2, 3, 4, 5, 6],
                 ["a", "b", "a", "c", "b", "a"],
                 [10.0, 60.0, 75.0, np.nan, 50.0, 95.0])


# -- construction ------------------------------------------------------------------------------
def test_example_must_be_a_dataframe():
    with pytest.raises(ConfigError,
                       match="`example` of frame 'metrics' must be a pandas DataFrame"):
        rtnb.StreamingFrame({"cpu": []}, name="metrics")  # type: ignore[arg-type]


def test_time_column_must_exist():
    with pytest.raises(ConfigError, match="time column 'ts' of frame 'metrics' is not in the "):
        rtnb.StreamingFrame(example(), time="ts", name="metrics")


def test_time_column_must_be_datetime():
    with pytest.raises(ConfigError,
                       match="time column 'host' of frame 'metrics' must be datetime64; the "
                             "example has str"):
        rtnb.StreamingFrame(example(), time="host", name="metrics")


def test_example_datetime_columns_are_kept_as_ns():
    ex = example().assign(t=pd.Series([], dtype="datetime64[us]"))
    sdf = rtnb.StreamingFrame(ex, time="t")
    assert sdf.dtypes["t"] == np.dtype("datetime64[ns]")


def test_columns_dtypes_and_repr(sdf):
    assert list(sdf.columns) == ["t", "host", "cpu"]
    assert sdf.dtypes["cpu"] == np.dtype("float64")
    assert repr(sdf) == "<StreamingFrame 'metrics' [t: datetime64[ns], host: str, cpu: float64], " \
                        "time='t'>"


# -- schema validation -------------------------------------------------------------------------
def test_missing_column_is_a_schema_error(sdf, data):
    with pytest.raises(SchemaError, match=re.escape("frame 'metrics': missing column(s) ['cpu']")):
        sdf.emit(data[["t", "host"]])


def test_extra_column_is_a_schema_error(sdf, data):
    with pytest.raises(SchemaError,
                       match=re.escape("frame 'metrics': unexpected column(s) ['mem']")):
        sdf.emit(data.assign(mem=1.0))


def test_missing_and_extra_columns_are_both_named(sdf, data):
    with pytest.raises(SchemaError, match=re.escape(
            "frame 'metrics': missing column(s) ['cpu'] and unexpected column(s) ['load']")):
        sdf.emit(data.rename(columns={"cpu": "load"}))


def test_wrong_dtype_names_frame_column_and_dtypes(sdf, data):
    with pytest.raises(SchemaError,
                       match="frame 'metrics': column 'cpu' must be float64; got int64"):
        sdf.emit(data.assign(cpu=np.arange(len(data))))


def test_timezone_aware_time_is_not_silently_converted(sdf, data):
    with pytest.raises(SchemaError, match=re.escape(
            "frame 'metrics': column 't' must be datetime64[ns]; got datetime64[ns, UTC]")):
        sdf.emit(data.assign(t=data["t"].dt.tz_localize("UTC")))


@pytest.mark.parametrize("bad, kind", [([1, 2], "list"), (pd.Series([1.0]), "Series"),
                                       (None, "NoneType")])
def test_non_dataframe_batch_is_a_schema_error(sdf, bad, kind):
    with pytest.raises(SchemaError,
                       match=f"frame 'metrics' takes pandas DataFrame micro-batches; got {kind}"):
        sdf.emit(bad)


def test_refused_batch_reaches_nobody_and_is_not_counted(sdf, data):
    out = sdf.collect()
    with pytest.raises(SchemaError):
        sdf.emit(data[["t", "host"]])
    assert out == []
    assert sdf.counters.batches == 0
    assert sdf.counters.events == 0


def test_datetime64_us_batch_is_converted_to_ns(sdf, data):
    out = collect(sdf)
    sdf.emit(data.assign(t=data["t"].astype("datetime64[us]")))
    result = out.frame(ignore_index=False)
    expected = data
    tm.assert_frame_equal(result, expected)
    assert result["t"].dtype == np.dtype("datetime64[ns]")


def test_columns_in_another_order_are_reordered(sdf, data):
    out = collect(sdf)
    sdf.emit(data[["cpu", "t", "host"]])
    result = out.frame(ignore_index=False)
    expected = data
    tm.assert_frame_equal(result, expected)


def test_validate_returns_batch_in_example_order(sdf, data):
    result = sdf.validate(data[["host", "cpu", "t"]])
    expected = data
    tm.assert_frame_equal(result, expected)


def test_counters_count_batches_and_events(sdf, data):
    sdf.emit(data)
    sdf.emit(data.iloc[:2])
    assert (sdf.counters.batches, sdf.counters.events) == (2, len(data) + 2)


# -- dead letters ------------------------------------------------------------------------------
def test_rows_without_event_time_go_to_dead_letters(sdf, data):
    data.loc[[1, 4], "t"] = pd.NaT
    out = collect(sdf)
    dead = collect(sdf.dead_letters)
    sdf.emit(data)

    result = out.frame(ignore_index=False)
    expected = data.drop(index=[1, 4])
    tm.assert_frame_equal(result, expected)

    result = dead.frame(ignore_index=False)
    expected = data.loc[[1, 4]].assign(
        dead_letter_reason=pd.Series(["missing event time in column 't'"] * 2, index=[1, 4],
                                     dtype=str),
        dead_letter_node=pd.Series(["metrics"] * 2, index=[1, 4], dtype=str),
        dead_letter_raw=pd.Series([None] * 2, index=[1, 4], dtype=object),
        dead_letter_position=pd.Series([None] * 2, index=[1, 4], dtype=str),
    )
    tm.assert_frame_equal(result, expected)
    assert sdf.counters.dead_letters == 2
    assert sdf.counters.events == len(data) - 2


def test_dead_letters_are_counted_without_a_subscriber(sdf, data):
    data.loc[0, "t"] = pd.NaT
    sdf.emit(data)
    assert sdf.counters.dead_letters == 1


def test_dead_letters_schema_adds_reason_and_node(sdf):
    dead = sdf.dead_letters
    assert dead.name == "metrics.dead_letters"
    assert list(dead.columns) == ["t", "host", "cpu", "dead_letter_reason", "dead_letter_node",
                                  "dead_letter_raw", "dead_letter_position"]
    assert dead.time is None
    assert sdf.dead_letters is dead


# -- emit restrictions ---------------------------------------------------------------------------
def test_emit_into_a_derived_frame_raises(sdf, data):
    busy = sdf[["host", "cpu"]]
    with pytest.raises(RtnbError, match=re.escape(
            "emit() into the root frame, not into 'metrics.select', which is derived from "
            "'metrics'")):
        busy.emit(data[["host", "cpu"]])


def test_emit_into_dead_letters_raises(sdf, data):
    with pytest.raises(RtnbError, match="which is derived from 'metrics'"):
        sdf.dead_letters.emit(data)


def test_emit_after_close_raises(sdf, data):
    sdf.close()
    with pytest.raises(RtnbError, match=re.escape(
            "frame 'metrics' is closed (end of stream); build a new one to emit again")):
        sdf.emit(data)


def test_closing_a_derived_frame_closes_the_graph_once(sdf, data):
    agg = sdf.window(rtnb.tumbling("10s")).agg(n=("cpu", "count"))
    out = agg.collect()
    sdf.emit(data)
    sdf[["cpu"]].close()
    sdf.close()
    assert sdf.closed and agg.closed
    assert len(out) == 1  # the open window was emitted exactly once


# -- column selection ----------------------------------------------------------------------------
def test_select_columns(sdf, data):
    sel = sdf[["host", "cpu"]]
    out = collect(sel)
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = data[["host", "cpu"]]
    tm.assert_frame_equal(result, expected)
    assert sel.time is None
    assert list(sel.columns) == ["host", "cpu"]


def test_select_keeps_time_column_when_selected(sdf):
    assert sdf[["t", "cpu"]].time == "t"


def test_unknown_column_raises(sdf):
    with pytest.raises(ConfigError, match=re.escape(
            "frame 'metrics' has no column 'mem'; columns: ['t', 'host', 'cpu']")):
        sdf["mem"]


def test_unknown_columns_in_list_raise(sdf):
    with pytest.raises(ConfigError, match=re.escape("frame 'metrics' has no column(s) ['mem']")):
        sdf[["cpu", "mem"]]


def test_indexing_by_something_else_raises(sdf):
    with pytest.raises(ConfigError, match="can be indexed by a column name, a list of names or a "
                                          "boolean StreamingSeries; got int"):
        sdf[0]


def test_attribute_column_access(sdf, data):
    assert isinstance(sdf.cpu, StreamingSeries)
    assert sdf.cpu.name == "cpu"
    out = collect(sdf[sdf.cpu > 50])
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = data[data.cpu > 50]
    tm.assert_frame_equal(result, expected)


def test_attribute_access_to_unknown_column_raises_attribute_error(sdf):
    with pytest.raises(AttributeError, match="mem"):
        sdf.mem  # noqa: B018


def test_series_collect(sdf, data):
    out = (sdf["cpu"] * 2).collect()
    sdf.emit(data)
    result = out[0]
    expected = data["cpu"] * 2
    tm.assert_series_equal(result, expected)


# -- boolean masks -------------------------------------------------------------------------------
@pytest.mark.parametrize("build, pandas_mask", [
    (lambda s: s["cpu"] > 50, lambda d: d.cpu > 50),
    (lambda s: s["cpu"] >= 60, lambda d: d.cpu >= 60),
    (lambda s: s["cpu"] < 60, lambda d: d.cpu < 60),
    (lambda s: s["cpu"] <= 50, lambda d: d.cpu <= 50),
    (lambda s: s["host"] == "a", lambda d: d.host == "a"),
    (lambda s: s["host"] != "a", lambda d: d.host != "a"),
    (lambda s: (s["cpu"] > 50) & (s["host"] == "a"), lambda d: (d.cpu > 50) & (d.host == "a")),
    (lambda s: (s["cpu"] > 90) | (s["host"] == "b"), lambda d: (d.cpu > 90) | (d.host == "b")),
    (lambda s: ~(s["cpu"] > 50), lambda d: ~(d.cpu > 50)),
    (lambda s: s["host"].isin(["b", "c"]), lambda d: d.host.isin(["b", "c"])),
    (lambda s: s["cpu"].between(50, 75), lambda d: d.cpu.between(50, 75)),
    (lambda s: s["cpu"].isna(), lambda d: d.cpu.isna()),
    (lambda s: s["cpu"].notna() & ~s["host"].isin(["a"]),
     lambda d: d.cpu.notna() & ~d.host.isin(["a"])),
    (lambda s: s["cpu"] * 2 + 10 > 130, lambda d: d.cpu * 2 + 10 > 130),
    (lambda s: 100 - s["cpu"] < 30, lambda d: 100 - d.cpu < 30),
], ids=[">", ">=", "<", "<=", "==", "!=", "&", "|", "~", "isin", "between", "isna", "notna&~",
        "arith", "rsub"])
def test_mask_matches_pandas(sdf, data, build, pandas_mask):
    out = collect(sdf[build(sdf)])
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = data[pandas_mask(data)]
    tm.assert_frame_equal(result, expected)


def test_between_includes_both_ends(sdf, data):
    out = collect(sdf[sdf["cpu"].between(60, 95)])
    sdf.emit(data)
    assert out.frame()["cpu"].tolist() == [60.0, 75.0, 95.0]


def test_mask_expression_name(sdf):
    expr = (sdf["cpu"] > 50) & ~sdf["host"].isin(["a"])
    assert expr.name == "((cpu > 50) & ~host.isin(['a']))"
    assert sdf[expr].name == "metrics.filter[((cpu > 50) & ~host.isin(['a']))]"


def test_missing_values_in_a_nullable_mask_count_as_false():
    ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                       "ok": pd.Series([], dtype="boolean"),
                       "cpu": pd.Series([], dtype="Float64")})
    sdf = rtnb.StreamingFrame(ex, time="t")
    data = pd.DataFrame({"t": pd.date_range(T0, periods=4, freq="s"),
                         "ok": pd.array([True, None, False, True], dtype="boolean"),
                         "cpu": pd.array([70.0, 80.0, None, 10.0], dtype="Float64")})
    kept, dropped, hot = (collect(sdf[sdf["ok"]]), collect(sdf[~sdf["ok"]]),
                          collect(sdf[sdf["cpu"] > 50]))
    sdf.emit(data)
    assert kept.frame(ignore_index=False).index.tolist() == [0, 3]
    assert dropped.frame(ignore_index=False).index.tolist() == [2]
    assert hot.frame(ignore_index=False).index.tolist() == [0, 1]


def test_mask_with_nan_float_values_drops_them(sdf, data):
    out = collect(sdf[(sdf["cpu"] > 0) | (sdf["cpu"] < 0)])
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = data.dropna(subset=["cpu"])
    tm.assert_frame_equal(result, expected)


def test_mask_threshold_can_be_a_param(sdf, data):
    threshold = Param(50.0, min=0.0, max=100.0, name="threshold")
    out = sdf[sdf["cpu"] > threshold].collect()
    sdf.emit(data)
    threshold.value = 90.0
    sdf.emit(data)
    assert out[0]["cpu"].tolist() == [60.0, 75.0, 95.0]
    assert out[1]["cpu"].tolist() == [95.0]


def test_mask_from_another_frame_raises(sdf):
    other = frame("other")
    with pytest.raises(ConfigError, match=re.escape(
            "a boolean mask for frame 'metrics' must be computed from it (got one from 'other')")):
        sdf[other["cpu"] > 50]


def test_expression_across_frames_raises(sdf):
    other = frame("other")
    with pytest.raises(ConfigError, match="both sides of an expression must come from the same"):
        (sdf["cpu"] > 50) & (other["cpu"] > 50)


def test_non_boolean_mask_raises(sdf):
    with pytest.raises(ConfigError, match="a mask for frame 'metrics' must be boolean; 'cpu' has "
                                          "dtype float64"):
        sdf[sdf["cpu"]]


def test_series_is_unhashable_because_eq_builds_an_expression(sdf):
    with pytest.raises(TypeError, match="unhashable"):
        {sdf["cpu"] == 50}


def test_series_truth_value_is_ambiguous(sdf, data):
    # pandas raises "The truth value of a Series is ambiguous"; here `(x > 50) and (h == "a")`
    # evaluates to `h == "a"` and `50 < cpu < 90` to `cpu < 90`: a silently wrong filter.
    with pytest.raises(ValueError):
        bool(sdf["cpu"] > 50)


# -- query, assign, map_batches --------------------------------------------------------------
def test_query(sdf, data):
    out = collect(sdf.query("cpu > 50 and host == 'a'"))
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = data.query("cpu > 50 and host == 'a'")
    tm.assert_frame_equal(result, expected)


def test_invalid_query_raises_at_construction(sdf):
    with pytest.raises(ConfigError, match="query 'mem > 1' on frame 'metrics' is invalid"):
        sdf.query("mem > 1")


def test_assign_callable_and_series(sdf, data):
    out_frame = sdf.assign(load=lambda df: df["cpu"] / 100, double=sdf["cpu"] * 2)
    out = collect(out_frame)
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = data.assign(load=data["cpu"] / 100, double=data["cpu"] * 2)
    tm.assert_frame_equal(result, expected)
    assert list(out_frame.columns) == ["t", "host", "cpu", "load", "double"]
    assert out_frame.time == "t"


def test_assign_replaces_a_column(sdf, data):
    out = collect(sdf.assign(cpu=sdf["cpu"] / 100))
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = data.assign(cpu=data["cpu"] / 100)
    tm.assert_frame_equal(result, expected)


def test_assign_rejects_a_plain_value(sdf):
    with pytest.raises(ConfigError, match=re.escape(
            "assign(load=...) on frame 'metrics' takes a callable or a StreamingSeries; got int")):
        sdf.assign(load=1)  # type: ignore[arg-type]


def test_assign_rejects_a_series_of_another_frame(sdf):
    other = frame("other")
    with pytest.raises(ConfigError, match="column 'load' must be computed from frame 'metrics'"):
        sdf.assign(load=other["cpu"] * 2)


def test_assign_that_fails_on_the_example_raises_at_construction(sdf):
    with pytest.raises(ConfigError, match="assign on frame 'metrics' fails on the example"):
        sdf.assign(load=lambda df: df["mem"])


def test_map_batches(sdf, data):
    def top2(df: pd.DataFrame) -> pd.DataFrame:
        return df.nlargest(2, "cpu")

    node = sdf.map_batches(top2)
    out = collect(node)
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = data.nlargest(2, "cpu")
    tm.assert_frame_equal(result, expected)
    assert node.name == "metrics.top2"
    assert node.time == "t"


def test_map_batches_with_explicit_example_and_time(sdf, data):
    def per_host(df: pd.DataFrame) -> pd.DataFrame:
        return df.groupby("host", as_index=False).agg(last=("t", "max"), cpu=("cpu", "mean"))

    ex = pd.DataFrame({"host": pd.Series([], dtype=str),
                       "last": pd.Series([], dtype="datetime64[ns]"),
                       "cpu": pd.Series([], dtype=float)})
    node = sdf.map_batches(per_host, example=ex, time="last", name="per_host")
    out = collect(node)
    sdf.emit(data)
    result = out.frame(ignore_index=False)
    expected = per_host(data)
    tm.assert_frame_equal(result, expected)
    assert (node.name, node.time) == ("metrics.per_host", "last")


def test_error_in_a_node_names_node_and_batch(sdf, data):
    def explode(df: pd.DataFrame) -> pd.DataFrame:
        raise ValueError("boom")

    node = sdf.map_batches(explode, example=example())
    out = node.collect()
    with pytest.raises(RtnbError, match=re.escape(
            "node 'metrics.explode' failed on a batch of 6 rows (columns ['t', 'host', 'cpu']): "
            "ValueError: boom")):
        sdf.emit(data)
    assert out == []


# -- window configuration errors ---------------------------------------------------------------
def test_window_needs_a_time_column(sdf):
    with pytest.raises(ConfigError,
                       match=re.escape("frame 'metrics.select' has no event-time column")):
        sdf[["host", "cpu"]].window(rtnb.tumbling("10s"))


def test_window_needs_a_window_spec(sdf):
    with pytest.raises(ConfigError,
                       match=re.escape("window spec must be rtnb.tumbling/sliding/session/rows(...)"
                                       "; got '10s'")):
        sdf.window("10s")  # type: ignore[arg-type]


def test_window_unknown_by(sdf):
    with pytest.raises(ConfigError, match="`by` column 'region' is not in frame 'metrics'"):
        sdf.window(rtnb.tumbling("10s"), by="region")


def test_window_unknown_emit_mode(sdf):
    with pytest.raises(ConfigError, match="`emit` must be 'final' or 'update'; got 'append'"):
        sdf.window(rtnb.tumbling("10s"), emit="append")  # type: ignore[arg-type]


def test_window_bad_lateness(sdf):
    with pytest.raises(ConfigError, match="`allowed_lateness` must be a duration with a unit"):
        sdf.window(rtnb.tumbling("10s"), allowed_lateness=5)  # type: ignore[arg-type]


def test_agg_unknown_aggregation(sdf):
    with pytest.raises(ConfigError, match="unknown aggregation 'average'; use one of count"):
        sdf.window(rtnb.tumbling("10s")).agg(m=("cpu", "average"))


def test_agg_mean_of_a_non_numeric_column(sdf):
    with pytest.raises(ConfigError, match=re.escape(
            "agg(m=...) of 'metrics.window': 'mean' needs a numeric column; 'host' is str")):
        sdf.window(rtnb.tumbling("10s")).agg(m=("host", "mean"))


def test_agg_count_of_a_non_numeric_column_is_allowed(sdf, data):
    agg = sdf.window(rtnb.tumbling("10s")).agg(n=("host", "count"))
    out = collect(agg)
    feed(sdf, data)
    assert out.frame()["n"].tolist() == [6]


@pytest.mark.parametrize("out_name", ["host", "window_start", "window_end"])
def test_agg_output_name_clashing_with_key_or_window_column(sdf, out_name):
    with pytest.raises(ConfigError, match=f"output name '{out_name}' of 'metrics.window' clashes "
                                          "with a key/window column"):
        sdf.window(rtnb.tumbling("10s"), by="host").agg(**{out_name: ("cpu", "mean")})


def test_agg_unknown_column(sdf):
    with pytest.raises(ConfigError, match="no column 'mem' in frame 'metrics'"):
        sdf.window(rtnb.tumbling("10s")).agg(m=("mem", "mean"))


def test_agg_needs_an_output(sdf):
    with pytest.raises(ConfigError,
                       match=re.escape("agg() on 'metrics.window' needs at least one output")):
        sdf.window(rtnb.tumbling("10s")).agg()


def test_agg_spec_must_be_a_tuple(sdf):
    with pytest.raises(ConfigError, match="must be a tuple \\(column, how, \\*args\\); got 'cpu'"):
        sdf.window(rtnb.tumbling("10s")).agg(m="cpu")  # type: ignore[arg-type]


def test_windowed_mean_matches_pandas(sdf, data):
    agg = sdf.window(rtnb.tumbling("2s"), by="host").agg(mean=("cpu", "mean"),
                                                          n=("cpu", "count"))
    out = collect(agg)
    feed(sdf, data, splits=[3])
    result = out.frame()
    g = data.assign(window_start=data["t"].dt.floor("2s")).groupby(["window_start", "host"])
    expected = g["cpu"].agg(mean="mean", n="count").reset_index()
    expected.insert(1, "window_end", expected["window_start"] + pd.Timedelta("2s"))
    expected["n"] = expected["n"].astype("int64")
    tm.assert_frame_equal(result, expected)


# -- node names --------------------------------------------------------------------------------
def test_node_names_are_unique_in_a_graph(sdf):
    names = [sdf[["cpu"]].name, sdf[["cpu"]].name, sdf.query("cpu > 1").name,
             sdf.query("cpu > 2").name, sdf.query("cpu > 3", name="busy").name,
             sdf.query("cpu > 4", name="busy").name]
    assert names == ["metrics.select", "metrics.select_2", "metrics.query", "metrics.query_2",
                     "metrics.busy", "metrics.busy_2"]


def test_window_names_are_unique(sdf):
    a = sdf.window(rtnb.tumbling("10s")).agg(n=("cpu", "count"))
    b = sdf.window(rtnb.tumbling("20s")).agg(n=("cpu", "count"))
    c = sdf.window(rtnb.tumbling("20s"), name="cpu_20s").agg(n=("cpu", "count"))
    assert [a.name, b.name, c.name, a.late.name] == [
        "metrics.window", "metrics.window_2", "cpu_20s", "metrics.window.late"]


def test_separate_graphs_may_reuse_a_name():
    assert frame("metrics").name == frame("metrics").name == "metrics"


# -- collect ------------------------------------------------------------------------------------
def test_collect_sees_every_batch_from_now_on(sdf, data):
    sdf.emit(data.iloc[:1])
    out = sdf.collect()
    sdf.emit(data.iloc[1:3])
    sdf.emit(data.iloc[3:])
    assert [len(b) for b in out] == [2, 3]
    tm.assert_frame_equal(pd.concat(out), data.iloc[1:])


def test_sink_calls_a_function_per_batch(sdf, data):
    sizes: list[int] = []
    node = sdf.sink(lambda b: sizes.append(len(b)))
    sdf.emit(data)
    node.destroy()
    sdf.emit(data)
    assert sizes == [len(data)]


# -- running a source --------------------------------------------------------------------------
class FailingSource:
    """Emits one batch, then fails as a broken feed would."""

    name = "feed"

    def __init__(self, first: pd.DataFrame) -> None:
        self.first = first

    async def run(self, frame: rtnb.StreamingFrame, stop: asyncio.Event) -> None:
        frame.emit(self.first)
        await asyncio.sleep(0)
        raise SourceError("feed 'feed' went away: connection reset", source="feed")


def test_run_inside_a_running_loop_raises(data):
    src = rtnb.sources.replay(data, time="t", name="src")

    async def main() -> None:
        src.run()

    with pytest.raises(RtnbError, match=re.escape(
            "run() blocks, so it cannot be used inside a running event loop (a notebook): use "
            "src.start(), or `await src.arun()`")):
        asyncio.run(main())
    assert not src.closed


def test_start_without_a_running_loop_raises(data):
    src = rtnb.sources.replay(data, time="t", name="src")
    with pytest.raises(RtnbError, match=re.escape(
            "start() needs a running event loop (as in a notebook); in a script call src.run() "
            "instead")):
        src.start()


def test_start_without_a_source_raises(sdf):
    with pytest.raises(RtnbError, match="frame 'metrics' has no source to start; feed it with "
                                        "emit\\(\\)"):
        sdf.start()


def test_wait_before_start_raises(data):
    src = rtnb.sources.replay(data, time="t", name="src")
    with pytest.raises(RtnbError, match="the source of frame 'src' was not started; call "
                                        "start\\(\\) first"):
        asyncio.run(src.wait())


def test_start_twice_raises(data):
    src = rtnb.sources.replay(data, time="t", name="src")

    async def main() -> None:
        src.start()
        with pytest.raises(RtnbError, match="the source of frame 'src' is already running"):
            src.start()
        await src.wait()

    asyncio.run(main())


def test_run_replays_everything_and_closes(data):
    src = rtnb.sources.replay(data, time="t", name="src", batch_size=4)
    out = collect(src)
    src.run()
    result = out.frame()
    expected = data
    tm.assert_frame_equal(result, expected)
    assert src.closed


def test_source_error_surfaces_from_wait_and_closes_the_frame(data, caplog):
    sdf = frame()
    sdf.attach_source(FailingSource(data.iloc[:2]))
    agg = sdf.window(rtnb.tumbling("1min")).agg(n=("cpu", "count"))
    out = collect(agg)

    async def main() -> None:
        sdf.start()
        await sdf.wait()

    with pytest.raises(SourceError, match="feed 'feed' went away: connection reset") as info:
        asyncio.run(main())
    assert info.value.source == "feed"
    assert sdf.closed
    assert out.frame()["n"].tolist() == [2]  # what arrived before the failure is not lost
    assert sdf.graph.state == "failed" and isinstance(sdf.graph.error, SourceError)
    assert "source of 'metrics' failed: SourceError: feed 'feed' went away" in caplog.text


def test_pipeline_error_surfaces_from_wait(data):
    src = rtnb.sources.replay(data, time="t", name="src")

    def explode(df: pd.DataFrame) -> pd.DataFrame:
        raise KeyError("gpu")

    out = src.map_batches(explode, example=example()).collect()

    async def main() -> None:
        await src.arun()

    with pytest.raises(RtnbError,
                       match=re.escape("node 'src.explode' failed on a batch of 6 rows")):
        asyncio.run(main())
    assert src.closed
    assert out == []
