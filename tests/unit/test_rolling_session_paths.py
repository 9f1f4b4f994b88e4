"""The rolling engine's per-key rings and the session engine's incremental paths, vs pandas.

Rolling: ring growth and pool reallocation, keys silent for longer than the window, NaN
values, out-of-order rows within the allowed lateness, huge value jumps for the running sums,
snapshots restored mid-stream (including snapshots in the layout written before the rings).
Sessions: many open sessions extended, bridged and closed over small batches.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb.aggregations import make_aggregation
from rtnb.windows.base import AggSpec
from rtnb.windows.rolling import ROLLING_AGGS, RollingAggregator
from rtnb.windows.session_engine import SessionAggregator

S = 1_000_000_000
HOWS = list(ROLLING_AGGS)
T0 = pd.Timestamp("2026-01-01")


def frame(t_ns: np.ndarray, host: list[str] | np.ndarray, cpu: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": T0 + pd.to_timedelta(np.asarray(t_ns), "ns"),
                         "host": pd.array(list(host), dtype="str"),
                         "cpu": np.asarray(cpu, dtype=np.float64)})


def engine(df: pd.DataFrame, window_ns: int, lateness_ns: int = 0, min_periods: int = 1,
           hows: list[str] | None = None) -> RollingAggregator:
    return RollingAggregator(window_ns, time="timestamp", by=["host"], column="cpu",
                             hows=hows or HOWS, example=df.iloc[:0],
                             allowed_lateness_ns=lateness_ns, min_periods=min_periods)


def run(eng: RollingAggregator, batches: list[pd.DataFrame], flush: bool = True
        ) -> pd.DataFrame:
    parts = [eng.process(b).rows for b in batches]
    if flush:
        parts.append(eng.flush().rows)
    got = [p for p in parts if p is not None]
    return pd.concat(got, ignore_index=True) if got else pd.DataFrame()


def expected(df: pd.DataFrame, window_ns: int, min_periods: int = 1,
             hows: list[str] | None = None) -> pd.DataFrame:
    ordered = df.sort_values("timestamp", kind="stable")
    r = ordered.groupby("host", sort=False).rolling(pd.Timedelta(window_ns, "ns"),
                                                    on="timestamp", min_periods=min_periods)
    col = r["cpu"]
    out = pd.DataFrame({f"cpu_{h}": getattr(col, h)().to_numpy() for h in hows or HOWS})
    out.insert(0, "host", col.count().index.get_level_values("host").astype("str"))
    out.insert(0, "timestamp", col.count().index.get_level_values("timestamp"))
    return out


def check(result: pd.DataFrame, df: pd.DataFrame, window_ns: int, min_periods: int = 1,
          hows: list[str] | None = None, rtol: float = 1e-9, atol: float = 1e-9) -> None:
    want = expected(df, window_ns, min_periods, hows)
    got = result.assign(host=result["host"].astype("str"))
    # rtnb: per batch by key, then time; pandas: per key in time order
    got = got.sort_values(["host", "timestamp"], kind="stable").reset_index(drop=True)
    want = want.sort_values(["host", "timestamp"], kind="stable").reset_index(drop=True)
    assert len(got) == len(df)
    tm.assert_series_equal(got["timestamp"].astype("datetime64[ns]"),
                           want["timestamp"].astype("datetime64[ns]"))
    tm.assert_series_equal(got["host"], want["host"])
    cols = [c for c in want.columns if c.startswith("cpu_")]
    tm.assert_frame_equal(got[cols].astype("float64"), want[cols].astype("float64"),
                          rtol=rtol, atol=atol)


def cut(df: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [df.iloc[i:i + size] for i in range(0, len(df), size)]


def stream(n: int, keys: int, seed: int, gap_ms: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_ms * 1e6, n)).astype(np.int64)
    host = np.array([f"h{i}" for i in range(keys)])[rng.integers(0, keys, n)]
    return frame(t, host, np.round(rng.normal(50, 15, n), 1))


# -- rolling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 7, 100, 5000])
def test_rings_grow_and_pools_reallocate(size: int) -> None:
    # one hot key with ~3,000 rows in its window (its ring doubles from 8 to 4,096, the
    # pools are reallocated several times) next to 20 cold ones
    rng = np.random.default_rng(1)
    n = 6000
    t = np.cumsum(rng.exponential(1e6, n)).astype(np.int64)
    host = np.where(rng.random(n) < 0.8, "hot", np.array([f"c{i}" for i in range(20)])[
        rng.integers(0, 20, n)])
    df = frame(t, host, np.round(rng.normal(0, 10, n), 1))
    eng = engine(df, 4 * S)
    check(run(eng, cut(df, size)), df, 4 * S)


def test_key_silent_for_longer_than_the_window() -> None:
    t = np.array([0, 1, 2, 3, 30, 31, 32, 100, 100, 101], dtype=np.int64) * S // 10
    host = ["a", "a", "b", "a", "a", "b", "a", "b", "a", "a"]
    df = frame(t, host, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    for size in (1, 3, 10):
        check(run(engine(df, S), cut(df, size)), df, S)
    eng = engine(df, S)
    out = run(eng, [df])
    a = out[out["host"] == "a"]
    assert a["cpu_count"].tolist() == [1, 2, 3, 1, 2, 1, 2]  # history gone after the gap


@pytest.mark.parametrize("min_periods", [0, 1, 3])
def test_nan_values_and_min_periods(min_periods: int) -> None:
    df = stream(3000, 7, seed=2, gap_ms=3.0)
    rng = np.random.default_rng(2)
    cpu = df["cpu"].to_numpy().copy()
    cpu[rng.random(len(cpu)) < 0.3] = np.nan
    cpu[1000:1400] = np.nan  # whole windows without a value
    df["cpu"] = cpu
    check(run(engine(df, S // 2, min_periods=min_periods), cut(df, 37)), df, S // 2,
          min_periods)


def test_out_of_order_rows_within_the_allowed_lateness() -> None:
    df = stream(4000, 10, seed=3)
    rng = np.random.default_rng(3)
    # arrival order: event time plus up to 200 ms of jitter (lateness 250 ms: none late)
    arrival = np.argsort(df["timestamp"].to_numpy().astype(np.int64)
                         + rng.integers(0, 200_000_000, len(df)), kind="stable")
    shuffled = df.iloc[arrival].reset_index(drop=True)
    for size in (1, 50, 333):
        eng = engine(df, 2 * S, lateness_ns=250_000_000)
        result = run(eng, cut(shuffled, size))
        assert eng.late_total == 0
        check(result, shuffled, 2 * S)
        # each key's rows leave in time order
        for _, rows in result.groupby("host"):
            assert rows["timestamp"].is_monotonic_increasing


def test_equal_times_keep_arrival_order() -> None:
    t = np.array([0, 0, 0, 1, 1], dtype=np.int64) * S
    df = frame(t, ["a"] * 5, [5.0, 1.0, 3.0, 2.0, 4.0])
    out = run(engine(df, S // 2), [df.iloc[:2], df.iloc[2:]])
    assert out["cpu_max"].tolist() == [5.0, 5.0, 5.0, 2.0, 4.0]
    assert out["cpu_count"].tolist() == [1, 2, 3, 1, 2]


@pytest.mark.parametrize("jump", [1e9, 1e15])
def test_running_sums_survive_huge_value_jumps(jump: float) -> None:
    # a key's window goes from values around `jump` to values around 1 (and back): the running
    # sums must not keep the rounding of the huge values once they left the window
    rng = np.random.default_rng(5)
    n = 8000
    t = np.arange(n, dtype=np.int64) * 10_000_000
    host = np.where(np.arange(n) % 2 == 0, "a", "b")
    phase = (np.arange(n) // 1500) % 2 == 0
    cpu = np.where(phase, jump, 0.0) + rng.normal(0, 1, n)
    df = frame(t, host, cpu)
    result = run(engine(df, S), cut(df, 97))
    got = result.sort_values(["host", "timestamp"], kind="stable").reset_index(drop=True)
    # exact reference: math.fsum per window
    ref_sum, ref_var = [], []
    for _, g in df.groupby("host", sort=True):
        ts, xs = g["timestamp"].to_numpy().astype(np.int64), g["cpu"].to_numpy()
        lo = np.searchsorted(ts, ts - S, side="right")
        for i in range(len(ts)):
            w = xs[lo[i]:i + 1]
            m = math.fsum(w) / len(w)
            ref_sum.append(math.fsum(w))
            ref_var.append(math.fsum((w - m) ** 2) / (len(w) - 1) if len(w) > 1 else np.nan)
    scale = np.where(got["cpu_max"].abs() > 1e3, jump, 1.0)
    assert np.all(np.abs(got["cpu_sum"] - ref_sum) <= 1e-12 * scale * got["cpu_count"] + 1e-9)
    var_ok = np.isclose(got["cpu_var"], ref_var, rtol=1e-6, equal_nan=True)
    small = scale == 1.0  # windows of values around 1: exact to 1e-6 of the variance
    assert var_ok[small].all()


def test_equal_values_have_variance_zero_and_their_own_mean() -> None:
    t = np.arange(50, dtype=np.int64) * S // 10
    df = frame(t, ["a"] * 50, [0.1] * 20 + [1e6 + 0.3] * 30)
    out = run(engine(df, S), [df])
    last = out.iloc[-1]
    assert last["cpu_var"] == 0.0 and last["cpu_std"] == 0.0
    assert last["cpu_mean"] == 1e6 + 0.3
    check(out, df, S)


@pytest.mark.parametrize("lateness", [0, 300_000_000])
def test_restore_mid_stream_equals_uninterrupted(lateness: int) -> None:
    df = stream(5000, 30, seed=6)
    df.loc[df.index % 11 == 0, "cpu"] = np.nan
    batches = cut(df, 83)
    whole = run(engine(df, 2 * S, lateness), batches)
    first = engine(df, 2 * S, lateness)
    head = run(first, batches[:25], flush=False)
    state = pickle.loads(pickle.dumps(first.snapshot()))
    second = engine(df, 2 * S, lateness)
    second.restore(state)
    tail = run(second, batches[25:])
    tm.assert_frame_equal(pd.concat([head, tail], ignore_index=True), whole,
                          rtol=1e-12, atol=1e-12)
    # the snapshot holds no more than the windows' rows and the pending ones
    assert len(state["_h_t"]) <= len(df) and len(state["_p_t"]) <= len(df)


def test_old_snapshot_layout_restores() -> None:
    """A snapshot written before the rings: history sorted by key, time, arrival, with stale
    rows the old engine had not pruned yet; pending rows in arrival order."""
    df = stream(600, 5, seed=7)
    first, rest = df.iloc[:400], df.iloc[400:]
    eng = engine(df, S, lateness_ns=50_000_000)
    reg_codes = eng.keys.codes(df)  # register keys as the old engine did
    ready = first["timestamp"].to_numpy().astype(np.int64) <= (
        first["timestamp"].to_numpy().astype(np.int64).max() - 50_000_000)
    t_ns = df["timestamp"].to_numpy().astype(np.int64)
    seq = np.arange(len(df), dtype=np.int64)
    hk, ht, hs, hv = (reg_codes[:400][ready].astype(np.int64), t_ns[:400][ready],
                      seq[:400][ready], df["cpu"].to_numpy()[:400][ready])
    o = np.lexsort((hs, ht, hk))
    state = {"max_time": int(t_ns[:400].max()), "_watermark": int(t_ns[:400].max()) - 50_000_000,
             "_seq": 400, "late_total": 0, "_h_key": hk[o], "_h_t": ht[o], "_h_seq": hs[o],
             "_h_v": hv[o], "_p_key": reg_codes[:400][~ready].astype(np.int64),
             "_p_t": t_ns[:400][~ready], "_p_seq": seq[:400][~ready],
             "_p_v": df["cpu"].to_numpy()[:400][~ready], "_p_frames": [],
             "keys": eng.keys.snapshot()}
    fresh = engine(df, S, lateness_ns=50_000_000)
    fresh.restore(state)
    tail = run(fresh, cut(rest, 50))
    whole = run(engine(df, S, lateness_ns=50_000_000), [first, *cut(rest, 50)])
    done_before = int(ready.sum())
    tm.assert_frame_equal(tail.sort_values(["host", "timestamp"], ignore_index=True),
                          whole.iloc[done_before:].sort_values(["host", "timestamp"],
                                                               ignore_index=True),
                          rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="lacks"):
        engine(df, S).restore({"max_time": 0})


def test_through_the_frame_with_integer_keys() -> None:
    df = stream(2000, 9, seed=8).assign(host=lambda d: d["host"].str[1:].astype("int64"))
    sdf = rtnb.StreamingFrame(example=df.iloc[:0], time="timestamp")
    out = sdf.rolling("1500ms", by="host")["cpu"].agg(*HOWS).collect()
    for b in cut(df, 64):
        sdf.emit(b)
    result = pd.concat(out, ignore_index=True)
    check(result.assign(host=result["host"].astype(str)),
          df.assign(host=df["host"].astype(str)), 1_500_000_000)


# -- sessions --------------------------------------------------------------------------------
def _sessions(df: pd.DataFrame, gap_ns: int) -> pd.DataFrame:
    rows = []
    for host, g in df.sort_values("timestamp", kind="stable").groupby("host"):
        ts = g["timestamp"].to_numpy().astype(np.int64)
        xs = g["cpu"].to_numpy()
        new = np.concatenate(([True], np.diff(ts) >= gap_ns))
        sid = np.cumsum(new)
        for s in np.unique(sid):
            sel = sid == s
            rows.append((T0 + pd.Timedelta(int(ts[sel][0] - T0.value), "ns"), host,
                         int(sel.sum()), float(np.nanmean(xs[sel])), float(np.nanmax(xs[sel]))))
    return pd.DataFrame(rows, columns=["window_start", "host", "n", "mean", "hi"])


@pytest.mark.parametrize(("size", "lateness"), [(1, 0), (10, 0), (100, 0), (100, S), (997, 0)])
def test_sessions_over_small_batches_equal_gap_grouping(size: int, lateness: int) -> None:
    df = stream(3000, 40, seed=9, gap_ms=2.0)
    rng = np.random.default_rng(9)
    if lateness:  # out of order within the lateness
        order = np.argsort(df["timestamp"].to_numpy().astype(np.int64)
                           + rng.integers(0, lateness // 2, len(df)), kind="stable")
        df = df.iloc[order].reset_index(drop=True)
    gap = 60_000_000
    specs = [AggSpec("n", "cpu", make_aggregation("count")),
             AggSpec("mean", "cpu", make_aggregation("mean")),
             AggSpec("hi", "cpu", make_aggregation("max"))]
    eng = SessionAggregator(rtnb.session(pd.Timedelta(gap, "ns")), time="timestamp",
                            by=["host"], aggs=specs, example=df.iloc[:0],
                            allowed_lateness_ns=lateness)
    parts = [eng.process(b) for b in cut(df, size)]
    assert all(p.late is None for p in parts)
    outs = [p.windows for p in parts if p.windows is not None]
    final = eng.flush().windows
    if final is not None:
        outs.append(final)
    got = pd.concat(outs, ignore_index=True)
    got = got.assign(host=got["host"].astype(str))[["window_start", "host", "n", "mean", "hi"]]
    want = _sessions(df, gap)
    key = ["host", "window_start"]
    tm.assert_frame_equal(got.sort_values(key, ignore_index=True),
                          want.sort_values(key, ignore_index=True),
                          check_dtype=False, rtol=1e-9)


# -- key coding ------------------------------------------------------------------------------
def test_object_keys_are_probed_as_they_are_and_match_the_general_path() -> None:
    from rtnb.windows.keys import KeyRegistry

    values = pd.Series(["a", None, np.nan, "b", 1, 1.0, "a", pd.NA], dtype=object)
    df = pd.DataFrame({"host": values})
    reg = KeyRegistry(["host"], df.iloc[:0])
    first = reg.codes(df)
    assert first.tolist() == [0, 1, 1, 2, 3, 3, 0, 1]  # nulls one key, as groupby(dropna=False)
    known = pd.DataFrame({"host": pd.Series(["b", "a", 1, "b"], dtype=object)})
    assert reg.codes(known).tolist() == [2, 0, 3, 2]  # the probe (every key known)
    assert reg.codes(df.iloc[[1, 2, 0]]).tolist() == [1, 1, 0]  # nulls: the general path
    assert reg.codes(pd.DataFrame({"host": pd.Series(["c", "a"], dtype=object)})).tolist() \
        == [4, 0]
    assert reg.array("host", np.array([4, 1, 0])).tolist() == ["c", None, "a"]
