"""The per-batch shortcuts of issue 16's last round, each against the slow path or pandas:
the root's schema check that reads the time column in the same step, frames built without
pandas' Python constructors, the key count the engines compare with their per-key arrays,
and the window engines' arrays passed to the kernels without a contiguous copy."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from pandas._libs.internals import BlockPlacement  # type: ignore[import-not-found]
from pandas.arrays import DatetimeArray
from pandas.core.internals.blocks import (  # type: ignore[import-not-found]
    DatetimeLikeBlock,
    NumpyBlock,
    new_block,
)
from pandas.core.internals.managers import BlockManager  # type: ignore[import-not-found]

import rtnb
from rtnb import _frames
from rtnb.aggregations import make_aggregation
from rtnb.windows.base import NOTHING, AggSpec
from rtnb.windows.engine import WindowAggregator
from rtnb.windows.keys import KeyRegistry
from rtnb.windows.session_engine import SessionAggregator

S = 1_000_000_000
T0 = pd.Timestamp("2026-01-01").value


def frame(n: int, seed: int, keys: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = T0 + np.cumsum(rng.integers(1, 300_000_000, n))
    cpu = rng.normal(50, 5, n)
    cpu[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({"timestamp": pd.to_datetime(t),
                         "host": np.array([f"h{i}" for i in rng.integers(0, keys, n)]),
                         "cpu": cpu})


# -- the root's schema check ----------------------------------------------------------------
def test_known_times_equals_matches_and_times_ns() -> None:
    df = frame(50, 1)
    schema = _frames.Schema(df.iloc[:0], time="timestamp")
    assert schema.known_times(df.iloc[:5]) is None  # no layout accepted yet
    assert schema.matches(df.iloc[:5])
    for part in (df.iloc[5:20], df.iloc[20:21], df.iloc[30:30]):
        got = schema.known_times(part)
        assert got is not None and schema.matches(part)
        np.testing.assert_array_equal(got, schema.times_ns(part))
        np.testing.assert_array_equal(got, part["timestamp"].to_numpy().astype(np.int64))
    # another dtype or column order: no shortcut, and matches refuses
    for other in (df.astype({"cpu": "float32"}), df[["host", "timestamp", "cpu"]]):
        assert schema.known_times(other) is None
        assert not schema.matches(other)
    copy = df.copy()  # same labels and placements: the shortcut may answer, and agrees
    got = schema.known_times(copy)
    assert schema.matches(copy)
    assert got is None or (got == schema.times_ns(copy)).all()
    aware = df.assign(timestamp=df["timestamp"].dt.tz_localize("UTC"))
    tz_schema = _frames.Schema(aware.iloc[:0], time="timestamp")
    assert tz_schema.matches(aware) and tz_schema.known_times(aware) is None


def test_emit_through_the_shortcut_still_dead_letters_missing_times() -> None:
    df = frame(40, 2)
    df.loc[[3, 25], "timestamp"] = pd.NaT
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="timestamp")
    out, dead = sdf.collect(), sdf.dead_letters.collect()
    for i in range(0, 40, 10):
        sdf.emit(df.iloc[i:i + 10])  # slices of one frame: the shortcut after the first
    got = pd.concat(out)
    tm.assert_frame_equal(got, df.dropna(subset=["timestamp"]))
    assert sum(len(d) for d in dead) == 2
    with pytest.raises(rtnb.errors.SchemaError, match="column 'cpu' must be float64"):
        sdf.emit(df.iloc[:3].astype({"cpu": "float32"}))


# -- frames built without pandas' Python constructors -------------------------------------
def test_from_manager_and_manager_equal_pandas_constructors() -> None:
    df = frame(20, 3)
    mgr = df._mgr
    built = _frames.manager(mgr.blocks, list(mgr.axes))
    want = BlockManager(mgr.blocks, list(mgr.axes), verify_integrity=False)
    assert type(built) is BlockManager and built.blocks == want.blocks
    assert all(a.equals(b) for a, b in zip(built.axes, want.axes, strict=True))
    got = _frames.from_manager(built)
    expected = pd.DataFrame._from_mgr(want, axes=want.axes)  # type: ignore[attr-defined]
    tm.assert_frame_equal(got, expected)
    assert vars(got.flags).keys() == vars(expected.flags).keys()
    assert got.flags._obj() is got and got.flags.allows_duplicate_labels
    got.flags.allows_duplicate_labels = False  # flags of its own, usable as pandas' are
    assert expected.flags.allows_duplicate_labels
    assert pickle.loads(pickle.dumps(got)).equals(df)


# -- the key count the engines compare with their per-key arrays --------------------------
def test_key_registry_size_is_the_number_of_keys() -> None:
    reg = KeyRegistry(["host"], frame(1, 0).iloc[:0])
    assert len(reg) == reg.size == 0
    for n, seed in ((5, 1), (50, 2), (500, 3)):
        reg.codes(frame(n, seed, keys=30))
        assert reg.size == len(reg) == len(reg.snapshot()["lookup"])
    again = KeyRegistry(["host"], frame(1, 0).iloc[:0])
    again.restore(pickle.loads(pickle.dumps(reg.snapshot())))
    assert again.size == reg.size
    assert KeyRegistry([], frame(1, 0).iloc[:0]).size == 1
    state = {k: v for k, v in vars(reg).items() if k != "size"}  # saved before ``size``
    older = KeyRegistry.__new__(KeyRegistry)
    older.__setstate__(state)
    assert len(older) == reg.size


# -- window engines: arrays passed to the kernels as they are -----------------------------
def strided(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus two columns, its time and value columns each sharing a Fortran-ordered
    2-d block with one of them: a column is then a strided (not contiguous) row."""
    n = len(df)
    times = np.asfortranarray(np.stack([df["timestamp"].to_numpy()] * 2))  # (2, n)
    values = np.asfortranarray(np.stack([df["cpu"].to_numpy()] * 2))
    blocks = [
        DatetimeLikeBlock(DatetimeArray._simple_new(  # type: ignore[attr-defined]
            times, dtype=times.dtype),
                          BlockPlacement(np.array([0, 3])), 2),
        NumpyBlock(values, BlockPlacement(np.array([2, 4])), 2),
        new_block(df["host"].array, BlockPlacement(slice(1, 2)), ndim=2),
    ]
    columns = pd.Index(["timestamp", "host", "cpu", "t2", "c2"])
    out = _frames.from_manager(_frames.manager(blocks, [columns, pd.RangeIndex(n)]))
    assert not _frames.ColumnReader("cpu")(out).flags.c_contiguous
    assert not _frames.ColumnReader("timestamp", times=True)(out).flags.c_contiguous
    return out


AGGS = [("n", "count"), ("mean", "mean"), ("lo", "min"), ("hi", "max"), ("p90", "quantile")]


def pandas_windows(df: pd.DataFrame, size: str) -> pd.DataFrame:
    g = df.groupby(["host", pd.Grouper(key="timestamp", freq=size)])["cpu"]
    out = pd.DataFrame({"n": g.count(), "mean": g.mean(), "lo": g.min(), "hi": g.max(),
                        "p90": g.quantile(0.9)}).reset_index()
    return out.rename(columns={"timestamp": "window_start"})


def engine_windows(cls: type, spec: object, batches: list[pd.DataFrame]) -> pd.DataFrame:
    aggs = [AggSpec(name, "cpu", make_aggregation(how, *((0.9,) if how == "quantile" else ())))
            for name, how in AGGS if cls is WindowAggregator or how != "quantile"]
    eng = cls(spec, time="timestamp", by=["host"], aggs=aggs, example=batches[0].iloc[:0])
    outs = []
    for b in batches:
        o = eng.process(b)
        if o.windows is None and o.late is None:
            assert o is NOTHING
        if o.windows is not None:
            outs.append(o.windows)
    outs.append(eng.flush().windows)
    got = pd.concat([o for o in outs if o is not None], ignore_index=True)
    tidy: pd.DataFrame = got.assign(host=got["host"].astype(str)).sort_values(
        ["host", "window_start"], ignore_index=True)
    return tidy


@pytest.mark.parametrize("layout", ["plain", "strided"])
@pytest.mark.parametrize("rows", [1, 7, 100])
def test_tumbling_windows_of_any_layout_equal_pandas(layout: str, rows: int) -> None:
    df = frame(700, 4)
    src = strided(df) if layout == "strided" else df
    got = engine_windows(WindowAggregator, rtnb.tumbling("2s"),
                         [src.iloc[i:i + rows] for i in range(0, len(src), rows)])
    want = pandas_windows(df, "2s")
    want = want[want.set_index(["host", "window_start"]).index.isin(
        got.set_index(["host", "window_start"]).index)]  # pandas also lists empty bins
    assert len(want) == len(got)
    tm.assert_frame_equal(got[["host", "window_start", "n", "lo", "hi"]],
                          want[["host", "window_start", "n", "lo", "hi"]].reset_index(drop=True),
                          check_dtype=False)
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12)
    np.testing.assert_allclose(got["p90"], want["p90"], rtol=1e-12)


@pytest.mark.parametrize("layout", ["plain", "strided"])
def test_sessions_of_any_layout_and_late_keys_equal_the_general_path(layout: str) -> None:
    df = frame(600, 5, keys=3)
    later = frame(600, 6, keys=12)  # keys h3..h11 appear only in the second half
    shift = df["timestamp"].iloc[-1] - later["timestamp"].iloc[0] + pd.Timedelta("1s")
    later["timestamp"] = later["timestamp"] + shift
    whole = pd.concat([df, later], ignore_index=True)
    src = strided(whole) if layout == "strided" else whole
    batches = [src.iloc[i:i + 9] for i in range(0, len(src), 9)]
    fast = engine_windows(SessionAggregator, rtnb.session("600ms"), batches)
    aggs = [AggSpec(name, "cpu", make_aggregation(how)) for name, how in AGGS[:4]]
    slow = SessionAggregator(rtnb.session("600ms"), time="timestamp", by=["host"], aggs=aggs,
                             example=whole.iloc[:0])
    slow._fast = False
    slow._reset_state()
    outs = [o.windows for o in (*(slow.process(b) for b in batches), slow.flush())
            if o.windows is not None]
    want = pd.concat(outs, ignore_index=True)
    want = want.assign(host=want["host"].astype(str)).sort_values(
        ["host", "window_start"], ignore_index=True)
    tm.assert_frame_equal(fast, want, check_exact=False, rtol=1e-12)
