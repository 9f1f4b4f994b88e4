"""rtnb.testing: feeding, collecting, and the pandas reference windows checked against pandas
written the two other ways a user would (``pd.Grouper`` and boolean masks)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rtnb
from rtnb import ConfigError
from rtnb.testing import (
    assert_frame_equal_unordered,
    collect,
    collect_all,
    feed,
    pandas_windows,
    random_splits,
)

T0 = pd.Timestamp("2026-01-01")
AGGS = {"n": ("cpu", "count"), "mean": ("cpu", "mean"), "first": ("cpu", "first"),
        "last": ("cpu", "last"), "p90": ("cpu", "quantile", 0.9)}


def frame(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({"t": pd.date_range(T0, periods=n, freq="s").as_unit("ns"),
                         "host": pd.Series(["a", "b"] * (n // 2) + ["a"] * (n % 2), dtype=str),
                         "cpu": np.arange(n, dtype=float)})


def root(df: pd.DataFrame) -> rtnb.StreamingFrame:
    return rtnb.StreamingFrame(df.iloc[:0], time="t", name="metrics")


# -- feed ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "sizes"), [
    ({}, [10]),
    ({"batch_size": 4}, [4, 4, 2]),
    ({"batch_size": 20}, [10]),
    ({"splits": []}, [10]),
    ({"splits": [0, 3, 3, 10]}, [0, 3, 0, 7, 0]),
])
def test_feed_cuts_the_frame_and_closes(kwargs, sizes):
    df = frame()
    sdf = root(df)
    out = collect(sdf)
    feed(sdf, df, **kwargs)
    assert [len(b) for b in out] == sizes
    assert all(b.index.equals(pd.RangeIndex(len(b))) for b in out)
    tm.assert_frame_equal(out.frame(), df)
    assert sdf.closed


def test_feed_emits_a_list_of_batches_as_they_are_and_can_leave_the_stream_open():
    df = frame()
    sdf = root(df)
    out = collect(sdf)
    feed(sdf, [df.iloc[:3], df.iloc[3:]], close=False)
    assert [b.index.tolist()[:1] for b in out] == [[0], [3]]
    assert not sdf.closed


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 2, "splits": [1]}, "give `batch_size` or `splits`, not both"),
    ({"batch_size": 0}, "`batch_size` must be a positive int; got 0"),
    ({"splits": [5, 2]}, "`splits` must be row positions in order, between 0 and 10"),
    ({"splits": [11]}, "`splits` must be row positions in order, between 0 and 10"),
])
def test_feed_refuses_bad_cuts(kwargs, message):
    df = frame()
    with pytest.raises(ConfigError, match=f"feed\\(\\) into 'metrics': {message}"):
        feed(root(df), df, **kwargs)


def test_feed_refuses_cuts_of_a_list_and_a_list_of_something_else():
    df = frame()
    with pytest.raises(ConfigError, match="a list of batches is emitted as it is"):
        feed(root(df), [df], batch_size=2)
    with pytest.raises(ConfigError, match="takes a DataFrame or a list of DataFrames; got a list "
                                          "of \\['dict'\\]"):
        feed(root(df), [{"t": T0}])  # type: ignore[list-item]


def test_feed_into_a_derived_frame_says_where_to_emit():
    df = frame()
    sdf = root(df)
    with pytest.raises(rtnb.RtnbError, match="emit\\(\\) into the root frame"):
        feed(sdf[["cpu"]], df)


def test_random_splits_are_sorted_positions_and_repeat_with_the_seed():
    splits = random_splits(50, seed=3, cuts=8)
    assert len(splits) == 8 and splits == sorted(splits) and 0 <= min(splits) <= max(splits) <= 50
    assert random_splits(50, seed=3, cuts=8) == splits
    assert random_splits(0, seed=1, cuts=3) == [0, 0, 0]
    with pytest.raises(ConfigError, match="`n` and `cuts` must be >= 0"):
        random_splits(-1, seed=1, cuts=2)


# -- collect ---------------------------------------------------------------------------------
def test_collect_of_nothing_is_the_empty_example():
    df = frame()
    sdf = root(df)
    agg = sdf.window(rtnb.tumbling("10s"), by="host").agg(n=("cpu", "count"))
    out = collect(agg)
    assert out == []
    tm.assert_frame_equal(out.frame(), agg.example)
    with pytest.raises(ConfigError, match="collect\\(\\) takes a StreamingFrame; got list"):
        collect([])  # type: ignore[arg-type]


def test_collect_all_collects_every_node_by_name():
    df = frame()
    sdf = root(df)
    busy = sdf[sdf["cpu"] > 4]
    agg = busy.window(rtnb.tumbling("5s")).agg(n=("cpu", "count"))
    outs = collect_all(agg)  # a node of the pipeline is enough
    assert list(outs) == rtnb.Pipeline(agg).node_names() == [sdf.name, busy.name, agg.name]
    feed(sdf, df, batch_size=3)
    tm.assert_frame_equal(outs[sdf.name].frame(), df)
    assert outs[busy.name].frame()["cpu"].tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert outs[agg.name].frame()["n"].tolist() == [5]
    with pytest.raises(ConfigError, match="takes a Pipeline or a StreamingFrame; got DataFrame"):
        collect_all(df)  # type: ignore[arg-type]


# -- assert_frame_equal_unordered --------------------------------------------------------------
def test_unordered_comparison_ignores_row_order_and_index_only():
    expected = pd.DataFrame({"host": ["a", "a", None], "x": [2.0, 1.0, np.nan]})
    result = expected.iloc[[2, 0, 1]].set_axis([9, 8, 7])
    assert_frame_equal_unordered(result, expected)
    assert_frame_equal_unordered(result, expected, by=["host", "x"])
    with pytest.raises(AssertionError, match="column name=\"x\""):
        assert_frame_equal_unordered(result.assign(x=[np.nan, 2.0, 1.5]), expected)
    with pytest.raises(AssertionError, match="dtype"):
        assert_frame_equal_unordered(result.astype({"x": "float32"}), expected)
    assert_frame_equal_unordered(result.astype({"x": "float32"}), expected, check_dtype=False)


def test_unordered_comparison_names_a_missing_sort_column():
    expected = pd.DataFrame({"host": ["a"], "x": [1.0]})
    with pytest.raises(AssertionError, match="result has no column\\(s\\) \\['host'\\] to sort by"):
        assert_frame_equal_unordered(expected[["x"]], expected)


# -- pandas_windows against pandas written two other ways --------------------------------------
def grouper_windows(df: pd.DataFrame, size: str) -> pd.DataFrame:
    """Tumbling windows the way a pandas user writes them."""
    ordered = df.sort_values("t", kind="stable")
    grouped = ordered.groupby(["host", pd.Grouper(key="t", freq=size, origin="epoch")],
                              dropna=False)
    res = grouped["cpu"].agg(rows="size", n="count", mean="mean", first="first", last="last",
                             p90=lambda x: x.quantile(0.9))
    res = res[res["rows"] > 0].drop(columns="rows").reset_index()
    res = res.rename(columns={"t": "window_start"})
    res.insert(1, "window_end", res["window_start"] + pd.Timedelta(size))
    return res[["window_start", "window_end", "host", *AGGS]]


def masked_windows(df: pd.DataFrame, size: str, every: str) -> pd.DataFrame:
    """Sliding windows with boolean masks, one window start at a time."""
    ordered = df.sort_values("t", kind="stable")
    t = ordered["t"].astype("int64").to_numpy()
    length, step = pd.Timedelta(size).value, pd.Timedelta(every).value
    frames = []
    for s in np.arange((t.min() - length) // step * step + step, t.max() + 1, step):
        rows = ordered[(t >= s) & (t < s + length)]
        if len(rows):
            res = rows.groupby("host", dropna=False, sort=False)["cpu"].agg(
                n="count", mean="mean", first="first", last="last",
                p90=lambda x: x.quantile(0.9)).reset_index()
            res.insert(0, "window_end", pd.Timestamp(int(s + length)))
            res.insert(0, "window_start", pd.Timestamp(int(s)))
            frames.append(res)
    return pd.concat(frames, ignore_index=True)[["window_start", "window_end", "host", *AGGS]]


@st.composite
def data(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 60))
    secs = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    return pd.DataFrame({
        "t": (T0 + pd.to_timedelta(secs, unit="s")).as_unit("ns"),
        "host": pd.Series(draw(st.lists(st.sampled_from(["a", "b", None]), min_size=n,
                                        max_size=n)), dtype=str),
        "cpu": draw(st.lists(st.one_of(st.floats(-100, 100), st.just(np.nan)), min_size=n,
                             max_size=n)),
    })


@settings(max_examples=40, deadline=None)
@given(df=data(), size=st.sampled_from(["1s", "3s", "10s"]))
def test_tumbling_reference_equals_pandas_grouper(df, size):
    result = pandas_windows(df, time="t", size=size, by="host", aggs=AGGS)
    assert_frame_equal_unordered(result, grouper_windows(df, size), by=["window_start", "host"],
                                 check_dtype=False)


@settings(max_examples=40, deadline=None)
@given(df=data(), shape=st.sampled_from([("10s", "5s"), ("6s", "4s"), ("3s", "1s")]))
def test_sliding_reference_equals_boolean_masks(df, shape):
    result = pandas_windows(df, time="t", size=shape[0], every=shape[1], by="host", aggs=AGGS)
    assert_frame_equal_unordered(result, masked_windows(df, *shape), by=["window_start", "host"],
                                 check_dtype=False)


def test_reference_equals_the_engine_with_its_column_names_and_dtypes():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"t": T0 + pd.to_timedelta(np.sort(rng.integers(0, 300_000, 2_000)),
                                                 unit="ms"),
                       "host": pd.Series(rng.choice(["a", "b", "c"], 2_000), dtype=str),
                       "cpu": rng.normal(50, 10, 2_000)})
    sdf = root(df)
    out = collect(sdf.window(rtnb.sliding("10s", "4s"), by="host").agg(**AGGS))
    feed(sdf, df, splits=random_splits(len(df), seed=1, cuts=30))
    expected = pandas_windows(df, time="t", size="10s", every="4s", by="host", aggs=AGGS)
    assert_frame_equal_unordered(out.frame(), expected, by=["window_start", "host"], rtol=1e-9)


def test_reference_of_no_rows_has_the_columns_and_refuses_what_it_cannot_compute():
    result = pandas_windows(frame(0), time="t", size="5s", by="host", aggs=AGGS)
    assert list(result.columns) == ["window_start", "window_end", "host", *AGGS]
    assert result.empty
    with pytest.raises(ConfigError, match="aggs\\['s'\\] = \\('cpu', 'skew'\\) has no pandas "
                                          "reference"):
        pandas_windows(frame(), time="t", size="5s", aggs={"s": ("cpu", "skew")})
    with pytest.raises(ConfigError, match="`size` and `every` must be positive"):
        pandas_windows(frame(), time="t", size="0s", aggs=AGGS)


def test_importing_the_helpers_does_not_import_pytest():
    code = "import sys, rtnb.testing; print('pytest' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "False"
