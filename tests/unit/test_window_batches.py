"""Window engines on small batches: every key dtype gives the same windows, random small
batch splits give what one whole batch gives, and the fast frame builder equals pandas."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rtnb
from rtnb.aggregations import make_aggregation
from rtnb.windows import AggSpec, WindowAggregator
from rtnb.windows.base import build_frame
from rtnb.windows.keys import KeyRegistry
from rtnb.windows.rolling import RollingAggregator
from rtnb.windows.session_engine import SessionAggregator

S = 1_000_000_000
BASE = pd.Timestamp("2026-01-05").value
HOSTS = np.array(["web-01", "web-02", "db-01", "db-02", "cache"], dtype=object)
KEY_DTYPES = ["str", "object", "string[python]", "string[pyarrow]", "category", "int64"]
AGGS = {"n": ("cpu", "count"), "mean": ("cpu", "mean"), "lo": ("cpu", "min"),
        "hi": ("cpu", "max"), "p90": ("cpu", "quantile", 0.9)}


def events(n: int, seed: int = 0, nulls: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hosts = HOSTS[rng.integers(0, len(HOSTS), n)].copy()
    if nulls:
        hosts[rng.random(n) < 0.1] = None
    return pd.DataFrame({
        "timestamp": (BASE + np.sort(rng.integers(0, 30 * S, n))).astype("datetime64[ns]"),
        "host": pd.Series(hosts, dtype=object),
        "cpu": np.where(rng.random(n) < 0.05, np.nan, rng.normal(50, 5, n)),
    })


def with_key_dtype(df: pd.DataFrame, dtype: str) -> pd.DataFrame:
    out = df.copy()
    if dtype == "int64":
        out["host"] = pd.Series(pd.factorize(df["host"], use_na_sentinel=False)[0],
                                dtype="int64")
    elif dtype == "category":
        out["host"] = df["host"].astype(pd.CategoricalDtype(sorted(HOSTS)))
    elif dtype != "object":
        out["host"] = df["host"].astype(dtype)
    return out


def as_text(frame: pd.DataFrame, df: pd.DataFrame, dtype: str) -> pd.DataFrame:
    """The windows with the key column spelled as the original host names."""
    out = frame.copy()
    if dtype == "int64":
        names = pd.factorize(df["host"], use_na_sentinel=False)[1]
        out["host"] = [names[i] for i in out["host"]]
    out["host"] = out["host"].astype(object).where(out["host"].notna(), None)
    return out.sort_values(["window_start", "host"]).reset_index(drop=True)


def run_windows(spec: object, batches: list[pd.DataFrame], example: pd.DataFrame
                ) -> pd.DataFrame:
    sdf = rtnb.StreamingFrame(example=example, time="timestamp")
    out = sdf.window(spec, by="host").agg(**AGGS).collect()
    for b in batches:
        sdf.emit(b)
    sdf.close()
    return pd.concat([p for p in out if len(p)], ignore_index=True)


@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize("spec", [rtnb.tumbling("1s"), rtnb.sliding("4s", every="1s"),
                                  rtnb.session("300ms")], ids=["tumbling", "sliding", "session"])
def test_every_key_dtype_gives_the_same_windows(spec: object, nulls: bool) -> None:
    df = events(600, seed=1, nulls=nulls)
    expected = None
    for dtype in KEY_DTYPES:
        if nulls and dtype == "int64":
            continue
        typed = with_key_dtype(df, dtype)
        batches = [typed.iloc[i:i + 37] for i in range(0, len(typed), 37)]
        result = run_windows(spec, batches, typed.iloc[:0])
        if dtype != "int64":
            assert result["host"].dtype == typed["host"].dtype, dtype
        result = as_text(result, df, dtype)
        if expected is None:
            expected = result
        tm.assert_frame_equal(result, expected, obj=dtype)


@pytest.mark.parametrize("dtype", KEY_DTYPES)
def test_key_codes_are_stable_across_batches_and_nulls(dtype: str) -> None:
    df = with_key_dtype(events(400, seed=2, nulls=dtype != "int64"), dtype)
    reg = KeyRegistry(["host"], df.iloc[:0])
    seen: dict[object, int] = {}
    for start in range(0, len(df), 23):
        part = df.iloc[start:start + 23]
        codes = reg.codes(part)
        for value, code in zip(part["host"].astype(object), codes, strict=True):
            key = None if pd.isna(value) else value
            assert seen.setdefault(key, int(code)) == code
    again = KeyRegistry(["host"], df.iloc[:0])
    again.restore(reg.snapshot())
    np.testing.assert_array_equal(again.codes(df), reg.codes(df))


@st.composite
def splits(draw: st.DrawFn) -> list[int]:
    n = 300
    return sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=40))))


def _cut(df: pd.DataFrame, cuts: list[int]) -> list[pd.DataFrame]:
    bounds = [0, *cuts, len(df)]
    return [df.iloc[a:b] for a, b in itertools.pairwise(bounds)]


def _engine_windows(make: object, batches: list[pd.DataFrame]) -> pd.DataFrame:
    eng = make()  # type: ignore[operator]
    parts = [eng.process(b).rows for b in batches] + [eng.flush().rows]
    out = pd.concat([p for p in parts if p is not None and len(p)], ignore_index=True)
    keys = [c for c in ("window_start", "timestamp", "host") if c in out.columns]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=splits())
def test_small_batch_splits_equal_one_batch(cuts: list[int]) -> None:
    df = with_key_dtype(events(300, seed=3, nulls=True), "str")
    example = df.iloc[:0]
    specs = [AggSpec(name, col, make_aggregation(how, *args))
             for name, (col, how, *args) in AGGS.items()]
    engines = [
        lambda: WindowAggregator(rtnb.tumbling("1s"), time="timestamp", by=["host"],
                                 aggs=specs, example=example),
        lambda: WindowAggregator(rtnb.sliding("3s", every="1s"), time="timestamp",
                                 by=["host"], aggs=specs, example=example),
        lambda: SessionAggregator(rtnb.session("200ms"), time="timestamp", by=["host"],
                                  aggs=specs, example=example),
        lambda: RollingAggregator(2 * S, time="timestamp", by=["host"], column="cpu",
                                  hows=["count", "mean", "std", "min", "max"],
                                  example=example),
    ]
    for make in engines:
        result = _engine_windows(make, _cut(df, cuts))
        expected = _engine_windows(make, [df])
        tm.assert_frame_equal(result, expected, rtol=1e-9, atol=1e-9)


def test_build_frame_equals_pandas_on_every_column_kind() -> None:
    n = 4
    columns = {
        "start": np.arange(n).view("datetime64[ns]"),
        "host": pd.array(["a", "b", None, "a"], dtype=str),
        "cat": pd.Categorical(["x", "y", "x", "x"]),
        "n": np.arange(n),
        "mean": np.array([1.0, np.nan, 2.0, 3.0]),
        "flag": np.array([True, False, True, True]),
        "nullable": pd.array([1, None, 3, 4], dtype="Int64"),
        "f32": np.ones(n, dtype=np.float32),
    }
    result = build_frame(columns, n)
    expected = pd.DataFrame(columns)
    tm.assert_frame_equal(result, expected)
    assert build_frame({"k": pd.array(["a"], dtype=object)}, 1)["k"].dtype == object


@pytest.mark.parametrize("scale", [1.0, 1e9])
def test_rolling_prefix_sums_stay_exact_over_long_streams_and_jumps(scale: float) -> None:
    # > 4096 rows, so the running prefix sums are rebuilt several times; values that jump
    # by `scale` make a window's sum small next to the prefix before it (the full pass then)
    n = 12_000
    rng = np.random.default_rng(4)
    df = events(n, seed=4)
    df["cpu"] = np.where(np.arange(n) < n // 2, scale, 0.0) + rng.normal(0, 1, n)
    df.loc[rng.random(n) < 0.05, "cpu"] = np.nan
    df["host"] = df["host"].astype(str)
    eng = RollingAggregator(S // 2, time="timestamp", by=["host"], column="cpu",
                            hows=["count", "sum", "mean"], example=df.iloc[:0])
    parts = [eng.process(b).rows for b in _cut(df, list(range(97, n, 97)))]
    parts.append(eng.flush().rows)
    result = pd.concat([p for p in parts if p is not None], ignore_index=True)
    result = result.sort_values(["host", "timestamp"], kind="stable").reset_index(drop=True)
    rolled = df.groupby("host").rolling("500ms", on="timestamp")["cpu"]
    expected = pd.DataFrame({"count": rolled.count(), "sum": rolled.sum(),
                             "mean": rolled.mean()}).reset_index(drop=True)
    tm.assert_frame_equal(result[["cpu_count", "cpu_sum", "cpu_mean"]].set_axis(
        ["count", "sum", "mean"], axis=1), expected, rtol=1e-9, atol=1e-9 * scale)
