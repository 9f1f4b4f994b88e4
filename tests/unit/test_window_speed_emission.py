"""The compiled emission of the tumbling/sliding engine (issue 16): exact against pandas.

Emission reads the closed windows' results in one kernel (fused aggregations, exact
quantiles), builds the frame from a few planned blocks and reuses key arrays; these tests
check the frame against pandas and against the generic paths: column order with holistic
and fused columns interleaved, several raw columns, a custom holistic aggregation (its
``result_sorted`` is still called), ``emit="update"``, and every key dtype.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb.aggregations import Aggregation, make_aggregation
from rtnb.windows import AggSpec, WindowAggregator


class Spread(Aggregation):
    """A holistic aggregation that is not a Quantile: largest - smallest value."""

    holistic = True

    def result_sorted(self, values: npt.NDArray[np.float64], starts: npt.NDArray[np.intp],
                      counts: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        out = np.full(len(starts), np.nan)
        has = counts > 0
        out[has] = values[starts[has] + counts[has] - 1] - values[starts[has]]
        return out


def events(n: int, keys: int, seed: int = 0, key_dtype: str = "str") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 20 * 10**9, n))
    cpu = rng.normal(50, 10, n)
    cpu[rng.random(n) < 0.05] = np.nan
    mem = rng.normal(10, 2, n)
    mem[rng.random(n) < 0.05] = np.nan
    codes = rng.integers(0, keys, n)
    host: object
    if key_dtype == "int64":
        host = codes.astype(np.int64)
    else:
        host = pd.array([f"h{k}" for k in codes], dtype=key_dtype)
    return pd.DataFrame({"timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(t),
                         "host": host, "cpu": cpu, "mem": mem})


AGGS: dict[str, tuple[object, ...]] = {
    "p90": ("cpu", "quantile", 0.9), "n": ("cpu", "count"), "spread": ("mem", Spread()),
    "mean": ("mem", "mean"), "med": ("mem", "median"), "var": ("cpu", "var"),
    "hi": ("cpu", "max"), "p0": ("cpu", "quantile", 0.0), "p1": ("mem", "quantile", 1.0)}


def engine(df: pd.DataFrame, spec: object, emit: str = "final") -> WindowAggregator:
    specs = [AggSpec(name, col, make_aggregation(how, *args))  # type: ignore[arg-type]
             for name, (col, how, *args) in AGGS.items()]
    return WindowAggregator(spec, time="timestamp", by=["host"], aggs=specs,  # type: ignore[arg-type]
                            example=df.iloc[:0], emit=emit)


def expected(df: pd.DataFrame, size: str) -> pd.DataFrame:
    g = df.groupby([pd.Grouper(key="timestamp", freq=size), "host"])
    out = pd.DataFrame({
        "p90": g["cpu"].quantile(0.9), "n": g["cpu"].count(),
        "spread": g["mem"].max() - g["mem"].min(), "mean": g["mem"].mean(),
        "med": g["mem"].median(), "var": g["cpu"].var(), "hi": g["cpu"].max(),
        "p0": g["cpu"].quantile(0.0), "p1": g["mem"].quantile(1.0)})
    out = out[g.size() > 0].reset_index().rename(columns={"timestamp": "window_start"})
    out.insert(1, "window_end", out["window_start"] + pd.Timedelta(size))
    return out


def collect(eng: WindowAggregator, df: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    parts = []
    for i in range(0, len(df), rows):
        out = eng.process(df.iloc[i:i + rows]).windows
        if out is not None:
            parts.append(out)
    end = eng.flush().windows
    if end is not None:
        parts.append(end)
    return parts


@pytest.mark.parametrize("key_dtype", ["str", "object", "string[python]", "category",
                                       "int64"])
@pytest.mark.parametrize("rows", [7, 100, 1000])
def test_emitted_frames_equal_pandas(key_dtype: str, rows: int) -> None:
    df = events(3000, 12, key_dtype=key_dtype)
    parts = collect(engine(df, rtnb.tumbling("1s")), df, rows)
    for part in parts:  # each emission ordered by (window start, key code), default index
        assert list(part.columns) == ["window_start", "window_end", "host", *AGGS]
        tm.assert_index_equal(part.index, pd.RangeIndex(len(part)))
        assert part["host"].dtype == df["host"].dtype
        assert part["n"].dtype == np.int64
    result = pd.concat(parts, ignore_index=True).sort_values(
        ["window_start", "host"], kind="stable").reset_index(drop=True)
    want = expected(df, "1s")
    want["host"] = want["host"].astype(df["host"].dtype)
    if key_dtype == "category":
        result["host"] = result["host"].astype(str)
        want["host"] = want["host"].astype(str)
    exact = ["window_start", "window_end", "host", "n", "hi", "p0", "p1", "spread"]
    tm.assert_frame_equal(result[exact], want[exact])
    tm.assert_frame_equal(result, want, rtol=1e-12, atol=1e-12)


def test_update_mode_reports_each_touched_window_with_its_current_value() -> None:
    df = events(2000, 5, seed=3)
    eng = engine(df, rtnb.sliding("3s", "1s"), emit="update")
    parts = collect(eng, df, 50)
    last = pd.concat(parts, ignore_index=True).drop_duplicates(
        ["window_start", "host"], keep="last").sort_values(
        ["window_start", "host"]).reset_index(drop=True)
    final = pd.concat(collect(engine(df, rtnb.sliding("3s", "1s")), df, 50),
                      ignore_index=True).sort_values(["window_start", "host"]
                                                     ).reset_index(drop=True)
    tm.assert_frame_equal(last, final)


def test_frames_do_not_share_key_arrays() -> None:
    """A repeated key sequence comes from a cache: writing into one frame's key column
    changes no later frame."""
    df = events(4000, 3, seed=5)
    parts = collect(engine(df, rtnb.tumbling("1s")), df, 100)
    assert len(parts) > 3
    parts[0].loc[0, "host"] = "changed"
    assert "changed" not in set(pd.concat(parts[1:])["host"])


@pytest.mark.parametrize("n_starts", [1, 2, 8, 9, 40])
@pytest.mark.parametrize("n_keys", [1, 5, 5000])
def test_emission_order_is_by_start_then_key(n_starts: int, n_keys: int) -> None:
    """The counting sort (few starts, a small key range) and its fallback both give
    ``np.lexsort((key, start))``'s order."""
    from rtnb.windows._kernels import _by_start_and_key

    rng = np.random.default_rng(n_starts * 7 + n_keys)
    pairs = {(int(s), int(k)) for s, k in zip(
        rng.integers(0, n_starts, 300) * 10**9 - 5 * 10**9, rng.integers(0, n_keys, 300),
        strict=True)}
    slot_start = np.array([s for s, _ in pairs], dtype=np.int64)
    slot_key = np.array([k for _, k in pairs], dtype=np.int64)
    idx = rng.permutation(len(pairs)).astype(np.int64)
    result = _by_start_and_key(idx, slot_key, slot_start)
    expected = idx[np.lexsort((slot_key[idx], slot_start[idx]))]
    np.testing.assert_array_equal(result, expected)
