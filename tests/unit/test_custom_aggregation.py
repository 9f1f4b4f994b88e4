"""A user-defined aggregation plugs into every window type without touching window code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb.aggregations import Aggregation


class RangeOfValues(Aggregation):
    """max - min of a window, written by a user against the documented protocol only."""

    fields = ("lo", "hi")

    def initial(self, n):
        return {"lo": np.full(n, np.inf), "hi": np.full(n, -np.inf)}

    def on_new(self, state, groups, values, times, seq):
        ok = ~np.isnan(values)
        np.minimum.at(state["lo"], groups[ok], values[ok])
        np.maximum.at(state["hi"], groups[ok], values[ok])
        return state

    def merge(self, state, groups, n):
        out = self.initial(n)
        np.minimum.at(out["lo"], groups, state["lo"])
        np.maximum.at(out["hi"], groups, state["hi"])
        return out

    def result(self, state):
        return np.where(np.isfinite(state["lo"]), state["hi"] - state["lo"], np.nan)


@pytest.fixture
def data() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 3_000
    return pd.DataFrame({
        "timestamp": pd.Timestamp("2026-01-05") + pd.to_timedelta(
            np.sort(rng.integers(0, 600_000, n)), unit="ms"),
        "host": rng.choice(["a", "b", "c"], n),
        "cpu": np.where(rng.random(n) < 0.05, np.nan, rng.normal(50, 10, n)),
    })


@pytest.mark.parametrize("spec", [rtnb.tumbling("30s"), rtnb.sliding("1min", "20s"),
                                  rtnb.session("2s"), rtnb.rows(50)], ids=repr)
def test_user_aggregation_matches_builtin_max_minus_min(data: pd.DataFrame, spec) -> None:
    sdf = rtnb.StreamingFrame(example=data.iloc[:0], time="timestamp")
    out = sdf.window(spec, by="host").agg(
        spread=("cpu", RangeOfValues()), lo=("cpu", "min"), hi=("cpu", "max"),
        n=("cpu", "count")).collect()
    for start in range(0, len(data), 700):
        sdf.emit(data.iloc[start:start + 700])
    sdf.close()
    result = pd.concat(out, ignore_index=True)
    tm.assert_series_equal(result["spread"], result["hi"] - result["lo"], check_names=False)
    # NaN exactly for windows without a value (a session of one NaN row, say)
    tm.assert_series_equal(result["spread"].isna(), result["n"] == 0, check_names=False)
    assert (result["n"] > 0).sum() > 10


def test_empty_batches_change_nothing(data: pd.DataFrame) -> None:
    def run(batches: list[pd.DataFrame]) -> pd.DataFrame:
        sdf = rtnb.StreamingFrame(example=data.iloc[:0], time="timestamp")
        out = sdf.window(rtnb.tumbling("1min"), by="host").agg(n=("cpu", "count")).collect()
        for b in batches:
            sdf.emit(b)
        sdf.close()
        return pd.concat(out, ignore_index=True)

    plain = run([data.iloc[:1500], data.iloc[1500:]])
    with_empty = run([data.iloc[:0], data.iloc[:1500], data.iloc[:0], data.iloc[1500:],
                      data.iloc[:0]])
    tm.assert_frame_equal(with_empty, plain)
