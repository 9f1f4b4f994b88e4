"""The window engine equals pandas on the whole frame, for any batch split and any disorder
within the allowed lateness (hypothesis)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rtnb
from rtnb.testing import collect, feed, pandas_windows

S = 1_000_000_000  # ns per second
BASE = pd.Timestamp("2026-01-05").value

AGGS = {
    "n": ("cpu", "count"),
    "total": ("cpu", "sum"),
    "mean": ("cpu", "mean"),
    "var": ("cpu", "var"),
    "std": ("cpu", "std"),
    "lo": ("cpu", "min"),
    "hi": ("cpu", "max"),
    "first": ("cpu", "first"),
    "last": ("cpu", "last"),
    "p90": ("cpu", "quantile", 0.9),
    "med": ("cpu", "median"),
}
EXACT = ["n", "lo", "hi", "first", "last"]
CLOSE = ["total", "mean", "var", "std", "p90", "med"]


@st.composite
def streams(draw: st.DrawFn) -> tuple[pd.DataFrame, list[pd.DataFrame], int]:
    """Data in arrival order, its split into batches, and the allowed lateness (ns)."""
    n = draw(st.integers(0, 120))
    lateness = draw(st.sampled_from([0, 2 * S, 5 * S]))
    # Coarse times (many duplicates) over ~a minute, sorted = event-time order.
    secs = np.sort(np.array(draw(st.lists(st.integers(0, 60), min_size=n, max_size=n)),
                            dtype=np.int64))
    sub = np.array(draw(st.lists(st.sampled_from([0, 250_000_000, 500_000_000]),
                                 min_size=n, max_size=n)), dtype=np.int64)
    times = np.sort(secs * S + sub)
    hosts = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
    values = draw(st.lists(st.one_of(st.floats(-1e3, 1e3, allow_nan=False),
                                     st.just(np.nan)), min_size=n, max_size=n))
    # Disorder within the lateness: arrival order sorts by time + a delay in [0, lateness].
    delays = np.array(draw(st.lists(st.integers(0, lateness // (S // 4)) if lateness else
                                    st.just(0), min_size=n, max_size=n)), dtype=np.int64)
    arrival = np.argsort(times + delays * (S // 4), kind="stable")
    df = pd.DataFrame({
        "timestamp": (BASE + times[arrival]).astype("datetime64[ns]"),
        "host": pd.Series(np.array(hosts, dtype=object)[arrival], dtype="str"),
        "cpu": np.array(values, dtype=np.float64)[arrival] if n else np.array([], np.float64),
    })
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    batches = [df.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(bounds)]
    return df, batches, lateness


def run_stream(spec: object, batches: list[pd.DataFrame], example: pd.DataFrame,
               lateness_ns: int, by: str | None = "host"):
    sdf = rtnb.StreamingFrame(example=example, time="timestamp")
    agg = sdf.window(spec, by=by, allowed_lateness=pd.Timedelta(lateness_ns)).agg(**AGGS)
    out = collect(agg)
    late = collect(agg.late)
    feed(sdf, batches)
    return out.frame(), late


def reference(df: pd.DataFrame, size: str, every: str | None = None,
              by: str | None = "host") -> pd.DataFrame:
    """pandas on the whole frame: every window [s, s + size) with s a multiple of ``every``."""
    return pandas_windows(df, time="timestamp", size=size, every=every, by=by, aggs=AGGS)


def canonical(frame: pd.DataFrame, by: str | None = "host") -> pd.DataFrame:
    keys = ["window_start"] + ([by] if by else [])
    out = frame.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)
    out["n"] = out["n"].astype("int64")
    for c in ["window_start", "window_end"]:
        out[c] = out[c].astype("datetime64[ns]")
    for c in [*EXACT, *CLOSE]:
        if c != "n":
            out[c] = out[c].astype("float64")
    if by:
        out[by] = out[by].astype("str")
    return out


def assert_windows_equal(result: pd.DataFrame, expected: pd.DataFrame,
                         by: str | None = "host") -> None:
    result, expected = canonical(result, by), canonical(expected, by)
    exact = ["window_start", "window_end", *([by] if by else []), *EXACT]
    tm.assert_frame_equal(result[exact], expected[exact])
    tm.assert_frame_equal(result[CLOSE], expected[CLOSE], rtol=1e-9, atol=1e-9)


SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(data=streams(), size=st.sampled_from(["1s", "5s", "10s"]))
def test_tumbling_equals_pandas_grouper(data, size) -> None:
    df, batches, lateness = data
    result, late = run_stream(rtnb.tumbling(size), batches, df.iloc[:0], lateness)
    assert late == []  # disorder stayed within the lateness: nothing is late
    expected = reference(df, size)
    assert_windows_equal(result, expected)


@SETTINGS
@given(data=streams(), shape=st.sampled_from([("10s", "5s"), ("6s", "4s"), ("3s", "1s"),
                                              ("5s", "5s")]))
def test_sliding_equals_pandas_masks(data, shape) -> None:
    df, batches, lateness = data
    result, late = run_stream(rtnb.sliding(*shape), batches, df.iloc[:0], lateness)
    assert late == []
    expected = reference(df, *shape)
    assert_windows_equal(result, expected)


@SETTINGS
@given(data=streams())
def test_unkeyed_tumbling_with_offset(data) -> None:
    df, batches, lateness = data
    result, late = run_stream(rtnb.tumbling("10s", offset="3s"), batches, df.iloc[:0],
                              lateness, by=None)
    assert late == []
    t = df["timestamp"].astype("int64")
    shifted = df.assign(timestamp=(t - 3 * S).astype("datetime64[ns]"))
    expected = reference(shifted, "10s", by=None)
    for c in ["window_start", "window_end"]:
        expected[c] = expected[c] + pd.Timedelta("3s")
    assert_windows_equal(result, expected, by=None)


@SETTINGS
@given(data=streams(), size=st.sampled_from(["1s", "5s"]))
def test_update_mode_last_value_of_each_window_is_final(data, size) -> None:
    """emit="update": the last update of every window equals the final result."""
    df, batches, lateness = data
    sdf = rtnb.StreamingFrame(example=df.iloc[:0], time="timestamp")
    upd = collect(sdf.window(rtnb.tumbling(size), by="host",
                             allowed_lateness=pd.Timedelta(lateness), emit="update").agg(**AGGS))
    feed(sdf, batches)
    if not upd:
        assert reference(df, size).empty
        return
    last = upd.frame().drop_duplicates(["window_start", "host"], keep="last")
    assert_windows_equal(last, reference(df, size))


@SETTINGS
@given(data=streams(), size=st.sampled_from(["1s", "5s"]), late_by=st.integers(1, 30))
def test_late_events_go_to_late_output_and_nothing_is_lost(data, size, late_by) -> None:
    """Events beyond the lateness go to .late; accepted + late = every input row once."""
    df, batches, lateness = data
    if df.empty:
        return
    # A straggler far behind the newest event, arriving last.
    straggler = df.iloc[[0]].assign(
        timestamp=df["timestamp"].max() - pd.Timedelta(lateness) - pd.Timedelta(seconds=late_by)
        - pd.Timedelta(size), cpu=1.0)
    result, late = run_stream(rtnb.tumbling(size), [*batches, straggler], df.iloc[:0], lateness)
    tm.assert_frame_equal(late.frame(), straggler.reset_index(drop=True))
    assert_windows_equal(result, reference(df, size))


def test_within_lateness_updates_window_before_it_closes() -> None:
    ex = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns]"),
                       "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(example=ex, time="timestamp")
    agg = sdf.window(rtnb.tumbling("10s"), by="host", allowed_lateness="5s").agg(
        n=("cpu", "count"))
    out, late = agg.collect(), agg.late.collect()

    def batch(*secs: float) -> pd.DataFrame:
        return pd.DataFrame({"timestamp": [pd.Timestamp("2026-01-01") + pd.Timedelta(seconds=s)
                                           for s in secs], "host": "a", "cpu": 1.0})

    sdf.emit(batch(1, 12))  # watermark 7s: window [0, 10) still open
    assert out == []
    sdf.emit(batch(3))  # 3s is 9s behind the newest event but its window is open: counted
    sdf.emit(batch(16))  # watermark 11s: [0, 10) closes with its 2 events (1s and 3s)
    assert [len(o) for o in out] == [1]
    assert out[0]["n"].tolist() == [2]
    sdf.emit(batch(9.5))  # its window closed: late, not lost
    assert len(late) == 1
    assert late[0]["timestamp"].tolist() == [pd.Timestamp("2026-01-01 00:00:09.5")]
    assert agg.counters.late == 1
    sdf.close()
    assert [o["n"].tolist() for o in out] == [[2], [2]]


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_batches_with_other_datetime_units_are_normalised(unit: str) -> None:
    ex = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns]"),
                       "cpu": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(example=ex, time="timestamp")
    out = sdf.window(rtnb.tumbling("1s")).agg(n=("cpu", "count")).collect()
    ts = pd.Series(pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:01"])).astype(
        f"datetime64[{unit}]")
    sdf.emit(pd.DataFrame({"timestamp": ts, "cpu": [1.0, 2.0]}))
    sdf.close()
    result = pd.concat(out, ignore_index=True)
    assert result["n"].tolist() == [1, 1]
    assert result["window_start"].tolist() == list(pd.to_datetime(ts))


def test_state_is_bounded_by_open_windows() -> None:
    """Memory does not grow with the stream: open windows stay at keys x windows in flight."""
    ex = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns]"),
                       "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(example=ex, time="timestamp")
    agg = sdf.window(rtnb.sliding("10s", "2s"), by="host", allowed_lateness="3s").agg(
        n=("cpu", "count"), p=("cpu", "quantile", 0.5))
    rng = np.random.default_rng(0)
    peak = 0
    for i in range(200):
        t = pd.Timestamp("2026-01-01") + pd.to_timedelta(i * 1000 + np.arange(1000), unit="ms")
        sdf.emit(pd.DataFrame({"timestamp": t, "host": rng.choice(list("abcd"), 1000),
                               "cpu": rng.random(1000)}))
        peak = max(peak, agg.engine.open_windows, len(agg.engine._raw_start))
    # 4 keys x (10s + 3s lateness + one 1s batch) / 2s slide -> at most ~4 x 8 open windows,
    # and the raw values kept for the exact quantile are those windows' rows only.
    assert agg.engine.open_windows <= 4 * 8
    assert peak <= 4 * 8 + 5 * 14_000


def pandas_sessions(df: pd.DataFrame, gap: str) -> pd.DataFrame:
    """Reference: sort by key and time, a new session where the gap to the previous event of
    the key is at least ``gap``."""
    s = df.sort_values("timestamp", kind="stable")
    s = s.assign(hk=s["host"].fillna("\0")).sort_values(["hk", "timestamp"], kind="stable")
    diff = s.groupby("hk")["timestamp"].diff()
    sid = (diff.isna() | (diff >= pd.Timedelta(gap))).cumsum()
    grouped = s.assign(sid=sid.to_numpy()).groupby("sid", sort=False)
    res = grouped["cpu"].agg(
        n="count", total="sum", mean="mean", var="var", std="std", lo="min", hi="max",
        first="first", last="last", p90=lambda x: x.quantile(0.9), med="median")
    res["window_start"] = grouped["timestamp"].min()
    res["window_end"] = grouped["timestamp"].max() + pd.Timedelta(gap)
    res["host"] = grouped["host"].first()
    return res.reset_index(drop=True)[["window_start", "window_end", "host", *AGGS]]


def pandas_rows(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Reference: number each key's rows in time order, every ``n`` form a window."""
    s = df.sort_values("timestamp", kind="stable")
    s = s.assign(hk=s["host"].fillna("\0"))
    s = s.assign(w=s.groupby("hk").cumcount() // n)
    grouped = s.groupby(["hk", "w"], sort=False)
    res = grouped["cpu"].agg(
        n="count", total="sum", mean="mean", var="var", std="std", lo="min", hi="max",
        first="first", last="last", p90=lambda x: x.quantile(0.9), med="median")
    res["window_start"] = grouped["timestamp"].min()
    res["window_end"] = grouped["timestamp"].max()
    res["host"] = grouped["host"].first()
    return res.reset_index(drop=True)[["window_start", "window_end", "host", *AGGS]]


@SETTINGS
@given(data=streams(), gap=st.sampled_from(["1s", "3s", "10s"]))
def test_session_equals_pandas_gap_grouping(data, gap) -> None:
    df, batches, lateness = data
    result, late = run_stream(rtnb.session(gap), batches, df.iloc[:0], lateness)
    assert late == []
    assert_windows_equal(result, pandas_sessions(df, gap))


@SETTINGS
@given(data=streams(), n=st.sampled_from([1, 2, 5]))
def test_rows_windows_equal_pandas_cumcount(data, n) -> None:
    df, batches, lateness = data
    result, late = run_stream(rtnb.rows(n), batches, df.iloc[:0], lateness)
    assert late == []
    expected = pandas_rows(df, n)
    result = result.sort_values(["window_start", "window_end"], kind="stable")
    assert_windows_equal(result, expected)


ROLLING = ["count", "sum", "mean", "var", "std", "min", "max"]


@SETTINGS
@given(data=streams(), window=st.sampled_from(["1s", "2500ms", "10s"]),
)
def test_rolling_equals_pandas_groupby_rolling(data, window) -> None:
    """Rolling var/std come from prefix sums, pandas' from add/remove updates: on
    ill-conditioned data (a window spread of 1e-3 next to values of 1e3 in the same key)
    both lose digits differently. The values here are measurements with one decimal, as
    metrics are, where both agree to 1e-9."""
    df, batches, lateness = data
    df = df.assign(cpu=(df["cpu"] % 100).round(1))
    batches = [b.assign(cpu=(b["cpu"] % 100).round(1)) for b in batches]
    sdf = rtnb.StreamingFrame(example=df.iloc[:0], time="timestamp")
    roll = sdf.rolling(window, by="host", allowed_lateness=pd.Timedelta(lateness))["cpu"]
    out = roll.agg(*ROLLING).collect()
    feed(sdf, batches)
    ordered = df.sort_values("timestamp", kind="stable").assign(
        host=lambda d: d["host"].fillna("\0"))
    r = ordered.groupby("host", sort=False).rolling(window, on="timestamp")["cpu"]
    expected = pd.DataFrame({f"cpu_{h}": getattr(r, h)().to_numpy() for h in ROLLING})
    expected.insert(0, "host", r.count().index.get_level_values("host"))
    expected.insert(0, "timestamp", r.count().index.get_level_values("timestamp"))
    result = (pd.concat(out, ignore_index=True) if out else
              pd.DataFrame(columns=expected.columns))
    result = result.assign(host=result["host"].fillna("\0").astype("str"))
    # pandas lists each key's rows in time order; so does rtnb within a key.
    result = result.sort_values("host", kind="stable").reset_index(drop=True)
    expected = expected.sort_values("host", kind="stable").reset_index(drop=True)
    assert len(result) == len(df)
    tm.assert_series_equal(result["timestamp"].astype("datetime64[ns]"),
                           expected["timestamp"].astype("datetime64[ns]"))
    tm.assert_series_equal(result["host"], expected["host"].astype("str"))
    others = [f"cpu_{h}" for h in ROLLING if h != "std"]
    tm.assert_frame_equal(result[others].astype("float64"), expected[others].astype("float64"),
                          rtol=1e-9, atol=1e-9)
    # A window of equal values has variance 0; pandas' add/remove updates can leave ~1e-11 of
    # rounding there (or report 0 where prefix sums leave it), which the square root turns into
    # ~3e-6. So std gets the absolute tolerance of var, through the square root.
    tm.assert_series_equal(result["cpu_std"].astype("float64"),
                           expected["cpu_std"].astype("float64"), rtol=1e-9, atol=1e-9**0.5)


@settings(max_examples=200, deadline=None)
@given(wanted=st.lists(st.integers(0, 2**40), unique=True, max_size=50),
       codes=st.lists(st.integers(0, 2**40), max_size=200),
       dense=st.booleans())
def test_window_positions_equal_pandas_get_indexer(wanted, codes, dense) -> None:
    """Where every raw row's (window, key) code sits among the emitted ones, by the lookup
    table (small code range) or the binary search (large range): as ``Index.get_indexer``."""
    from rtnb.windows.engine import _positions

    if dense:  # a small range: the lookup-table path
        wanted, codes = sorted({w % 97 for w in wanted}), [c % 101 for c in codes]
    codes = codes + wanted[::2]  # some wanted ones among them, found however large
    w, c = np.array(wanted, dtype=np.int64), np.array(codes, dtype=np.int64)
    np.testing.assert_array_equal(_positions(w, c), pd.Index(w).get_indexer(c))
    if len(w) > 1:  # wanted in any order
        rev = w[::-1].copy()
        np.testing.assert_array_equal(_positions(rev, c), pd.Index(rev).get_indexer(c))
