"""The session engine's compiled path (count/sum/mean/min/max) against the general
(interval-union) path and a direct gap grouping: small splits, late rows, bridging rows,
many keys, emit modes, gap changes and snapshots through pickle."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb.aggregations import make_aggregation
from rtnb.windows.base import AggSpec
from rtnb.windows.session_engine import SessionAggregator

MS = 1_000_000
S = 1_000 * MS
T0 = pd.Timestamp("2026-01-01").value
SPECS = [("n", "count"), ("total", "sum"), ("mean", "mean"), ("lo", "min"), ("hi", "max")]


def stream(n: int, keys: int, seed: int, step_ms: float, jitter_ns: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = T0 + np.cumsum(rng.exponential(step_ms * MS, n)).astype(np.int64)
    if jitter_ns:  # out of order by up to jitter_ns
        t = t[np.argsort(t + rng.integers(0, jitter_ns, n), kind="stable")]
    cpu = rng.normal(50, 5, n)
    cpu[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({"timestamp": pd.to_datetime(t),
                         "host": np.array([f"h{i}" for i in rng.integers(0, keys, n)]),
                         "cpu": cpu})


def engine(df: pd.DataFrame, gap: int, *, fast: bool = True, lateness: int = 0,
           emit: str = "final") -> SessionAggregator:
    aggs = [AggSpec(name, "cpu", make_aggregation(how)) for name, how in SPECS]
    eng = SessionAggregator(rtnb.session(pd.Timedelta(gap, "ns")), time="timestamp",
                            by=["host"], aggs=aggs, example=df.iloc[:0],
                            allowed_lateness_ns=lateness, emit=emit)
    assert eng._fast
    if not fast:  # the general path, as every non-fused aggregation takes it
        eng._fast = False
        eng._reset_state()
    return eng


def cut(df: pd.DataFrame, rng: np.random.Generator, most: int) -> list[pd.DataFrame]:
    out, i = [], 0
    while i < len(df):
        k = int(rng.integers(1, most + 1))
        out.append(df.iloc[i:i + k])
        i += k
    return out


def run(eng: SessionAggregator, batches: list[pd.DataFrame]) -> tuple[pd.DataFrame, int]:
    outs = []
    for b in batches:
        o = eng.process(b)
        if o.windows is not None:
            outs.append(o.windows)
    final = eng.flush().windows
    if final is not None:
        outs.append(final)
    got = pd.concat(outs, ignore_index=True) if outs else pd.DataFrame()
    return got, eng.late_total


def gap_grouping(df: pd.DataFrame, gap: int) -> pd.DataFrame:
    d = df.assign(t=df["timestamp"].to_numpy().astype(np.int64)).sort_values(
        ["host", "t"], kind="stable")
    new = (d["host"] != d["host"].shift()) | (d["t"].diff() >= gap)
    g = d.groupby(new.cumsum().to_numpy())
    out = pd.DataFrame({
        "window_start": pd.to_datetime(g["t"].min().to_numpy()),
        "window_end": pd.to_datetime(g["t"].max().to_numpy() + gap),
        "host": g["host"].first().to_numpy(), "n": g["cpu"].count().to_numpy(),
        "total": g["cpu"].sum().to_numpy(), "mean": g["cpu"].mean().to_numpy(),
        "lo": g["cpu"].min().to_numpy(), "hi": g["cpu"].max().to_numpy()})
    return out.sort_values(["host", "window_start"], ignore_index=True)


def tidy(got: pd.DataFrame) -> pd.DataFrame:
    got = got.assign(host=got["host"].astype(str))
    return got.sort_values(["host", "window_start"], ignore_index=True)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gap_ms", [50, 5_000])
def test_random_small_splits_equal_one_batch_and_gap_grouping(seed: int, gap_ms: int) -> None:
    df = stream(3000, 30, seed, step_ms=1.0)
    rng = np.random.default_rng(seed)
    split, _ = run(engine(df, gap_ms * MS), cut(df, rng, 150))
    whole, _ = run(engine(df, gap_ms * MS), [df])
    tm.assert_frame_equal(tidy(split), tidy(whole), rtol=1e-12, check_dtype=False)
    tm.assert_frame_equal(tidy(split), gap_grouping(df, gap_ms * MS), rtol=1e-12,
                          check_dtype=False)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("emit", ["final", "update"])
def test_out_of_order_and_late_rows_equal_the_general_path(seed: int, emit: str) -> None:
    # rows out of order by up to 300 ms, lateness 100 ms, gap 80 ms: sessions bridge and
    # rows arrive late
    df = stream(4000, 20, seed, step_ms=0.5, jitter_ns=300 * MS)
    rng = np.random.default_rng(seed)
    batches = cut(df, rng, 80)
    fast = engine(df, 80 * MS, lateness=100 * MS, emit=emit)
    slow = engine(df, 80 * MS, fast=False, lateness=100 * MS, emit=emit)
    for b in batches:
        a, w = fast.process(b), slow.process(b)
        for x, y in ((a.windows, w.windows), (a.late, w.late)):
            assert (x is None) == (y is None)
            if x is not None:
                tm.assert_frame_equal(x, y, rtol=1e-12, check_dtype=False)
        assert fast.open_windows == slow.open_windows
    assert fast.late_total == slow.late_total > 0
    tm.assert_frame_equal(fast.flush().windows, slow.flush().windows, rtol=1e-12,
                          check_dtype=False)


def test_a_late_row_within_the_lateness_bridges_two_sessions() -> None:
    t = T0 + np.array([0, 10 * S, 5 * S, 30 * S])
    df = pd.DataFrame({"timestamp": pd.to_datetime(t), "host": ["a"] * 4,
                       "cpu": [1.0, 2.0, 4.0, 8.0]})
    eng = engine(df, 6 * S, lateness=20 * S)
    assert eng.process(df.iloc[:2]).windows is None
    assert eng.open_windows == 2
    assert eng.process(df.iloc[2:3]).windows is None
    assert eng.open_windows == 1  # 0 s and 10 s joined by 5 s
    out = eng.process(df.iloc[3:]).windows
    assert out is None
    out = eng.flush().windows
    assert out["n"].tolist() == [3, 1]
    assert out["total"].tolist() == [7.0, 8.0]
    assert out["lo"].tolist() == [1.0, 8.0]
    assert out["window_end"].tolist() == [pd.Timestamp(T0 + 16 * S), pd.Timestamp(T0 + 36 * S)]


def test_many_keys_grow_the_slots() -> None:
    df = stream(20_000, 5_000, 3, step_ms=0.2)
    rng = np.random.default_rng(3)
    got, late = run(engine(df, 2 * S), cut(df, rng, 700))
    assert late == 0
    tm.assert_frame_equal(tidy(got), gap_grouping(df, 2 * S), rtol=1e-12, check_dtype=False)


@pytest.mark.parametrize(("src_fast", "dst_fast"), [(True, True), (False, True), (True, False)])
def test_snapshot_restore_mid_stream_through_pickle(src_fast: bool, dst_fast: bool) -> None:
    df = stream(4000, 25, 7, step_ms=1.0, jitter_ns=60 * MS)
    rng = np.random.default_rng(7)
    batches = cut(df, rng, 120)
    ref, _ = run(engine(df, 50 * MS, lateness=80 * MS), batches)
    half = len(batches) // 2
    first = engine(df, 50 * MS, fast=src_fast, lateness=80 * MS)
    outs = [o.windows for o in (first.process(b) for b in batches[:half])
            if o.windows is not None]
    blob = pickle.dumps(first.snapshot())
    second = engine(df, 50 * MS, fast=dst_fast, lateness=80 * MS)
    second.restore(pickle.loads(blob))
    assert second.open_windows == first.open_windows
    rest, _ = run(second, batches[half:])
    got = pd.concat([*outs, rest], ignore_index=True)
    tm.assert_frame_equal(got, ref, rtol=1e-12, check_dtype=False)


def test_a_gap_change_mid_stream_equals_the_general_path() -> None:
    df = stream(3000, 10, 11, step_ms=2.0)
    outs, late = [], []
    for fast in (True, False):
        eng = engine(df, 50 * MS, fast=fast)
        parts = [eng.process(df.iloc[:1500]).windows,
                 eng.reconfigure(rtnb.session("20ms")),
                 eng.process(df.iloc[1500:]).windows, eng.flush().windows]
        outs.append(pd.concat([p for p in parts if p is not None], ignore_index=True))
        late.append(eng.late_total)  # rows before the flushed sessions' ends are late
    assert late[0] == late[1]
    tm.assert_frame_equal(outs[0], outs[1], rtol=1e-12, check_dtype=False)
