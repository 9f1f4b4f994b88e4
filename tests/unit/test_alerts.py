"""The alert state machine, table-driven: every transition, for_ and keep_firing_for edges,
flapping with and without hysteresis, keys independent, any batch split."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb import ConfigError, Param
from rtnb.detect import AlertRule

T0 = pd.Timestamp("2026-01-01")


def run(values, *, threshold=90.0, splits=(), by_key=None, **rule):
    """Rows 1 s apart; condition value > threshold; returns [(state, second, started)]."""
    n = len(values)
    df = pd.DataFrame({"t": T0 + pd.to_timedelta(np.arange(n), unit="s"),
                       "host": by_key if by_key is not None else ["a"] * n,
                       "cpu": np.asarray(values, dtype=float)})
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    out = rtnb.alert(sdf, sdf["cpu"] > threshold, on="cpu", by="host", **rule).collect()
    cuts = [0, *splits, n]
    for lo, hi in itertools.pairwise(cuts):
        sdf.emit(df.iloc[lo:hi].reset_index(drop=True))
    events = pd.concat(out, ignore_index=True)
    return [(r.host, r.state, int((r.time - T0).total_seconds()),
             int((r.started - T0).total_seconds())) for r in events.itertuples()]


HI, LO = 95.0, 50.0

CASES = {
    # name: (values, rule, expected [(state, second, started)])
    "fires at once with for_=0": (
        [LO, HI, HI, LO], {}, [("firing", 1, 1), ("resolved", 3, 1)]),
    "pending then firing after for_": (
        [LO, HI, HI, HI, LO], {"for_": "2s"},
        [("pending", 1, 1), ("firing", 3, 1), ("resolved", 4, 1)]),
    "firing exactly at for_ (not one row later)": (
        [HI, HI, HI], {"for_": "2s"}, [("pending", 0, 0), ("firing", 2, 0)]),
    "pending cancelled when the condition drops before for_": (
        [HI, HI, LO, LO], {"for_": "5s"}, [("pending", 0, 0), ("inactive", 2, 0)]),
    "keep_firing_for bridges a short dip": (
        [HI, HI, LO, HI, LO, LO, LO, LO], {"keep_firing_for": "2s"},
        [("firing", 0, 0), ("resolved", 6, 0)]),
    "keep_firing_for resolves at its edge": (
        [HI, LO, LO, LO], {"keep_firing_for": "2s"}, [("firing", 0, 0), ("resolved", 3, 0)]),
    "flapping without hysteresis: every crossing": (
        [HI, 85.0, HI, 85.0], {}, [("firing", 0, 0), ("resolved", 1, 0), ("firing", 2, 2),
                                   ("resolved", 3, 2)]),
    "flapping with hysteresis: clears only below 80": (
        [HI, 85.0, HI, 85.0, 79.0], {"clear_below": 80.0},
        [("firing", 0, 0), ("resolved", 4, 0)]),
    "hysteresis and keep_firing_for together": (
        [HI, 70.0, 85.0, 70.0, 70.0, 70.0], {"clear_below": 80.0, "keep_firing_for": "2s"},
        [("firing", 0, 0), ("resolved", 5, 0)]),
    "nothing ever true: no events": ([LO, LO, LO], {"for_": "1s"}, []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_transitions(name):
    values, rule, expected = CASES[name]
    assert run(values, **rule) == [("a", *e) for e in expected]


@pytest.mark.parametrize("name", list(CASES))
def test_any_batch_split_gives_the_same_events(name):
    values, rule, expected = CASES[name]
    for splits in ([1], [2, 3], list(range(1, len(values)))):
        splits = [s for s in splits if s < len(values)]
        assert run(values, splits=splits, **rule) == [("a", *e) for e in expected]


def test_keys_are_independent():
    values = [HI, LO, HI, HI, HI, LO]
    keys = ["a", "b", "a", "b", "a", "b"]
    events = run(values, by_key=keys, for_="2s")
    assert [e for e in events if e[0] == "a"] == [("a", "pending", 0, 0), ("a", "firing", 2, 0)]
    assert [e for e in events if e[0] == "b"] == [("b", "pending", 3, 3), ("b", "inactive", 5, 3)]


def test_for_as_a_param_applies_from_the_next_batch():
    for_ = Param("10s", min="0s", max="1min", name="for")
    df = pd.DataFrame({"t": T0 + pd.to_timedelta(np.arange(6), unit="s"), "cpu": HI})
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    out = rtnb.alert(sdf, sdf["cpu"] > 90, for_=for_).collect()
    sdf.emit(df.iloc[:3])
    for_.value = "3s"
    sdf.emit(df.iloc[3:])
    states = pd.concat(out)["state"].tolist()
    assert states == ["pending", "firing"]


def test_boolean_column_condition_and_errors():
    df = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                       "flag": pd.Series([], dtype=bool), "cpu": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(df, time="t")
    rtnb.alert(sdf, "flag")
    with pytest.raises(ConfigError, match="no boolean column 'cpu'"):
        rtnb.alert(sdf, "cpu")
    with pytest.raises(ConfigError, match="clear_below needs `on`"):
        rtnb.alert(sdf, "flag", clear_below=1.0)
    with pytest.raises(ConfigError, match="must not be negative"):
        AlertRule(for_="-1s")


def test_quiet_keys_are_not_walked():
    rule = AlertRule(for_="1s")
    keys = np.arange(100_000) % 100
    t = np.arange(100_000, dtype=np.int64) * 10**7
    events = rule.process(keys, t, np.zeros(100_000, dtype=bool), np.zeros(100_000))
    assert events == [] and rule._keys == {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_disorder_within_the_lateness_gives_the_ordered_transitions(seed):
    rng = np.random.default_rng(seed)
    n = 600
    values = np.where(rng.random(n) < 0.3, HI, LO)
    values[100:160] = HI  # one long episode
    df = pd.DataFrame({"t": T0 + pd.to_timedelta(np.arange(n), unit="s"),
                       "host": np.where(np.arange(n) % 3 == 0, "a", "b"), "cpu": values})

    def transitions(frame: pd.DataFrame, lateness: str) -> pd.DataFrame:
        sdf = rtnb.StreamingFrame(frame.iloc[:0], time="t")
        out = rtnb.alert(sdf, sdf["cpu"] > 90, on="cpu", by="host", for_="3s",
                         keep_firing_for="2s", allowed_lateness=lateness).collect()
        for lo in range(0, len(frame), 37):
            sdf.emit(frame.iloc[lo:lo + 37].reset_index(drop=True))
        sdf.close()
        got = pd.concat(out, ignore_index=True)
        return got.sort_values(["host", "time", "state"]).reset_index(drop=True)

    ordered = transitions(df, "0s")
    # shuffle arrival within 8 s: every row arrives at most 8 s after its event time
    arrival = df["t"] + pd.to_timedelta(rng.uniform(0, 8, n), unit="s")
    shuffled = df.iloc[np.argsort(arrival.to_numpy(), kind="stable")].reset_index(drop=True)
    assert len(ordered) > 20
    pd.testing.assert_frame_equal(transitions(shuffled, "10s"), ordered)


def test_rows_later_than_the_lateness_are_counted_not_evaluated():
    df = pd.DataFrame({"t": T0 + pd.to_timedelta([0, 10, 20, 1], unit="s"),
                       "cpu": [HI, LO, LO, HI]})
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    alerts = rtnb.alert(sdf, sdf["cpu"] > 90, allowed_lateness="5s")
    out = alerts.collect()
    for i in range(4):
        sdf.emit(df.iloc[i:i + 1].reset_index(drop=True))
    sdf.close()
    got = pd.concat(out, ignore_index=True)
    assert got["state"].tolist() == ["firing", "resolved"]
    assert alerts.counters.late == 1  # the row at 1 s came after 20 s had released 0-15 s
