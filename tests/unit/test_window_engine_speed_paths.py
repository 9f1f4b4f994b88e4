"""The tumbling/sliding engine's slot table, fused kernel and holistic sort (issue 16).

Each test compares the engine fed in pieces with the same engine fed in one batch, or with
pandas, so the compiled paths (slot growth, hash table rebuilds, packing, restore) cannot
change a result.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb.aggregations import Aggregation, make_aggregation
from rtnb.windows import AggSpec, WindowAggregator
from rtnb.windows._kernels import group_sort

AGGS = {"n": ("cpu", "count"), "total": ("cpu", "sum"), "mean": ("cpu", "mean"),
        "lo": ("cpu", "min"), "hi": ("cpu", "max"), "var": ("cpu", "var"),
        "first": ("cpu", "first"), "p90": ("cpu", "quantile", 0.9)}
EXAMPLE = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns]"),
                        "host": pd.Series([], dtype=str), "cpu": pd.Series([], dtype=float)})


def events(n: int, keys: int, span_s: float, seed: int = 0, shuffle: float = 0.0
           ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, int(span_s * 1e9), n))
    if shuffle:  # some rows arrive out of order
        swap = rng.random(n) < shuffle
        t[swap] = np.maximum(t[swap] - rng.integers(0, int(3e9), swap.sum()), 0)
    cpu = rng.normal(50, 10, n)
    cpu[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({"timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(t),
                         "host": pd.array([f"h{k}" for k in rng.integers(0, keys, n)],
                                          dtype=str),
                         "cpu": cpu})


def engine(spec: object, aggs: dict[str, tuple[object, ...]] = AGGS, **kw: object
           ) -> WindowAggregator:
    specs = [AggSpec(name, col, make_aggregation(how, *args))
             for name, (col, how, *args) in aggs.items()]
    return WindowAggregator(spec, time="timestamp", by=["host"], aggs=specs,  # type: ignore[arg-type]
                            example=EXAMPLE, **kw)  # type: ignore[arg-type]


def run(eng: WindowAggregator, batches: list[pd.DataFrame]) -> tuple[pd.DataFrame, int]:
    parts, late = [], 0
    for b in batches:
        out = eng.process(b)
        if out.windows is not None:
            parts.append(out.windows)
        if out.late is not None:
            late += len(out.late)
    end = eng.flush().windows
    if end is not None:
        parts.append(end)
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.sort_values(["window_start", "host"], kind="stable").reset_index(drop=True)
    return frame, late


def pieces(df: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [df.iloc[i:i + size] for i in range(0, len(df), size)]


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    exact = ["window_start", "window_end", "host", "n", "lo", "hi", "first"]
    tm.assert_frame_equal(a[exact], b[exact])
    tm.assert_frame_equal(a.drop(columns=exact), b.drop(columns=exact), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spec", [rtnb.tumbling("1s"), rtnb.sliding("3s", "1s")],
                         ids=["tumbling", "sliding"])
def test_slot_growth_with_many_keys_equals_one_batch_and_pandas(spec: object) -> None:
    df = events(6_000, keys=700, span_s=6)
    small, late = run(engine(spec), pieces(df, 7))
    assert late == 0
    whole, _ = run(engine(spec), [df])
    assert_same(small, whole)
    grown = engine(spec)
    for b in pieces(df.iloc[:900], 5):  # ~0.9 s: one window per key, no emission yet
        grown.process(b)
    assert grown._cap >= grown.open_windows > 450
    if isinstance(spec, rtnb.windows.Tumbling):
        g = df.groupby(["host", pd.Grouper(key="timestamp", freq="1s")])["cpu"]
        exp = g.agg(["count", "mean", "min", "max"]).reset_index()
        exp = exp.sort_values(["timestamp", "host"]).reset_index(drop=True)
        np.testing.assert_array_equal(small["n"], exp["count"])
        np.testing.assert_allclose(small["mean"], exp["mean"], rtol=1e-12)
        np.testing.assert_array_equal(small["lo"], exp["min"])
        np.testing.assert_array_equal(small["p90"], g.quantile(0.9).reset_index().sort_values(
            ["timestamp", "host"])["cpu"])


def test_many_windows_open_and_late_rows_split_anyhow() -> None:
    df = events(4_000, keys=5, span_s=40, seed=3, shuffle=0.2)
    spec = rtnb.sliding("10s", "500ms")
    lateness = 2_000_000_000
    whole, late_whole = run(engine(spec, allowed_lateness_ns=lateness), [df])
    eng = engine(spec, allowed_lateness_ns=lateness)
    eng.process(df.iloc[:2_000])
    assert eng.open_windows > 5 * 20  # every key has ~24 windows open
    rng = np.random.default_rng(1)
    cuts = np.unique(np.concatenate([[0, len(df)], rng.integers(0, len(df), 60)]))
    split = [df.iloc[a:b] for a, b in itertools.pairwise(cuts)]
    small, late_small = run(engine(spec, allowed_lateness_ns=lateness), split)
    assert late_small > 0
    # rows count where they still can: every row is in a window or in the late output
    assert int(small["n"].sum()) <= 20 * df["cpu"].notna().sum()
    assert late_whole == 0 or late_whole <= late_small
    # windows nothing late touched are the same however the stream was cut
    both = small.merge(whole, on=["window_start", "window_end", "host"], suffixes=("", "_w"))
    same = both[both["n"] == both["n_w"]]
    assert len(same) > 0.5 * len(whole)
    np.testing.assert_allclose(same["mean"], same["mean_w"], rtol=1e-9)
    np.testing.assert_allclose(same["p90"], same["p90_w"], rtol=1e-9)


def test_late_rows_of_a_sliding_window_still_count_in_their_open_windows() -> None:
    t0 = pd.Timestamp("2026-01-01")
    eng = engine(rtnb.sliding("4s", "1s"), {"n": ("cpu", "count")})
    eng.process(pd.DataFrame({"timestamp": [t0 + pd.Timedelta(seconds=10)], "host": ["a"],
                              "cpu": [1.0]}).astype({"host": str}))
    # watermark 10 s: a row at 7.5 s lies in [4,8) (closed), [5,9), [6,10) (closed), [7,11)
    out = eng.process(pd.DataFrame({"timestamp": [t0 + pd.Timedelta(seconds=7.5)],
                                    "host": ["a"], "cpu": [2.0]}).astype({"host": str}))
    assert out.late is not None and len(out.late) == 1
    flushed = eng.flush().windows
    starts = (flushed["window_start"] - t0).dt.total_seconds().tolist()
    assert dict(zip(starts, flushed["n"].tolist(), strict=True))[7.0] == 2


def test_window_size_param_change_mid_stream_flushes_and_continues() -> None:
    df = events(3_000, keys=4, span_s=30, seed=5)
    size = rtnb.Param("1s", min="1s", max="10s", name="size")
    sdf = rtnb.StreamingFrame(example=EXAMPLE, time="timestamp")
    out = sdf.window(rtnb.tumbling(size), by="host").agg(
        n=("cpu", "count"), mean=("cpu", "mean")).collect()
    sdf.emit(df.iloc[:1_500])
    open_before = int(df.iloc[:1_500]["cpu"].notna().sum()) - sum(int(p["n"].sum())
                                                                    for p in out if len(p))
    assert open_before > 0
    size.value = "5s"  # open 1 s windows are emitted, then 5 s windows follow
    sdf.emit(df.iloc[1_500:2_000])
    sdf.emit(df.iloc[2_000:])
    sdf.close()
    frames = pd.concat([p for p in out if len(p)], ignore_index=True)
    width = frames["window_end"] - frames["window_start"]
    assert set(width) == {pd.Timedelta("1s"), pd.Timedelta("5s")}
    # rows after the change older than the newest flushed window's end are late
    floor = frames.loc[width == pd.Timedelta("1s"), "window_end"].max()
    after = df.iloc[1_500:]
    n_late = int(after.loc[after["timestamp"] < floor, "cpu"].notna().sum())
    assert int(frames["n"].sum()) + n_late == int(df["cpu"].notna().sum())
    later = frames[width == pd.Timedelta("5s")]
    rows = df.iloc[1_500:]
    rows = rows[rows["timestamp"] >= later["window_start"].min()]
    g = rows.groupby(["host", pd.Grouper(key="timestamp", freq="5s")])["cpu"].count()
    assert int(later["n"].sum()) == int(g.sum())


@pytest.mark.parametrize("emit", ["final", "update"])
@pytest.mark.parametrize("spec", [rtnb.tumbling("2s"), rtnb.sliding("4s", "1s")],
                         ids=["tumbling", "sliding"])
def test_snapshot_restore_mid_stream_equals_uninterrupted(spec: object, emit: str) -> None:
    df = events(3_000, keys=30, span_s=20, seed=7, shuffle=0.05)
    batches = pieces(df, 113)
    whole = engine(spec, emit=emit, allowed_lateness_ns=1_000_000_000)
    expected = [whole.process(b) for b in batches] + [whole.flush()]
    eng = engine(spec, emit=emit, allowed_lateness_ns=1_000_000_000)
    got = [eng.process(b) for b in batches[:11]]
    state = pickle.loads(pickle.dumps(eng.snapshot()))
    eng.process(batches[11])  # the snapshot is a copy: later batches do not change it
    again = engine(spec, emit=emit, allowed_lateness_ns=1_000_000_000)
    again.restore(state)
    assert again.open_windows == len(state["_g_key"])
    got += [again.process(b) for b in batches[11:]] + [again.flush()]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        if b.windows is None:
            assert a.windows is None
        else:
            assert a.windows is not None
            assert_same(a.windows, b.windows)
        assert (a.late is None) == (b.late is None)


class Spread(Aggregation):
    """max - min, written against the protocol only (not accumulating: merged)."""

    fields = ("lo", "hi")

    def initial(self, n: int) -> dict[str, np.ndarray]:
        return {"lo": np.full(n, np.inf), "hi": np.full(n, -np.inf)}

    def on_new(self, state, groups, values, times, seq):  # type: ignore[no-untyped-def]
        ok = ~np.isnan(values)
        np.minimum.at(state["lo"], groups[ok], values[ok])
        np.maximum.at(state["hi"], groups[ok], values[ok])
        return state

    def merge(self, state, groups, n):  # type: ignore[no-untyped-def]
        out = self.initial(n)
        np.minimum.at(out["lo"], groups, state["lo"])
        np.maximum.at(out["hi"], groups, state["hi"])
        return out

    def result(self, state):  # type: ignore[no-untyped-def]
        return np.where(np.isfinite(state["lo"]), state["hi"] - state["lo"], np.nan)


def test_custom_aggregation_next_to_fused_ones_through_slot_growth() -> None:
    df = events(5_000, keys=300, span_s=5, seed=9)
    aggs = {"lo": ("cpu", "min"), "hi": ("cpu", "max"), "spread": ("cpu", Spread())}
    got, _ = run(engine(rtnb.tumbling("1s"), aggs), pieces(df, 3))
    np.testing.assert_allclose(got["spread"], got["hi"] - got["lo"], rtol=1e-12)


def test_group_sort_equals_numpy_sort_per_group() -> None:
    rng = np.random.default_rng(0)
    group = rng.integers(-1, 40, 3_000)
    group[:200] = 3  # one group longer than the insertion-sort cut-off
    values = rng.normal(0, 1, 3_000)
    values[rng.random(3_000) < 0.1] = np.nan
    out, starts, counts = group_sort(group, values, 40)
    for g in range(40):
        want = np.sort(values[(group == g) & ~np.isnan(values)])
        np.testing.assert_array_equal(out[starts[g]:starts[g] + counts[g]], want)
