"""Re-arming alerts (``cooldown``) and the alert defaults on an already debounced condition
such as ``is_anomaly`` of ``rtnb.detect.Anomaly`` (issue 17, defect 11): one page per
incident."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb import ConfigError, Param
from rtnb.detect import AlertRule

T0 = pd.Timestamp("2026-01-01")


def run(flags, *, splits=(), seconds=None, keys=None, **rule):
    """Rows 1 s apart (or at ``seconds``) with a boolean ``hot``; ``[(state, second)]``."""
    n = len(flags)
    at = np.arange(n) if seconds is None else np.asarray(seconds)
    df = pd.DataFrame({"t": T0 + pd.to_timedelta(at, unit="s"),
                       "host": keys if keys is not None else ["a"] * n,
                       "hot": np.asarray(flags, dtype=bool)})
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    out = rtnb.alert(sdf, "hot", by="host", **rule).collect()
    for lo, hi in itertools.pairwise([0, *splits, n]):
        sdf.emit(df.iloc[lo:hi].reset_index(drop=True))
    sdf.close()
    got = pd.concat(out, ignore_index=True)
    return [(r.host, r.state, int((r.time - T0).total_seconds())) for r in got.itertuples()]


def states(events):
    return [(state, second) for _, state, second in events]


Y, N = True, False

CASES = {
    # name: (flags, rule, expected [(state, second)])
    "without cooldown every rise fires": (
        [Y, N, Y, N, N, Y], {}, [("firing", 0), ("resolved", 1), ("firing", 2),
                                 ("resolved", 3), ("firing", 5)]),
    "within the cooldown a rise does not fire": (
        [Y, N, Y, Y, N, N], {"cooldown": "3s"}, [("firing", 0), ("resolved", 1)]),
    "re-armed exactly at the cooldown": (
        [Y, N, N, N, Y, N], {"cooldown": "3s"},
        [("firing", 0), ("resolved", 1), ("firing", 4), ("resolved", 5)]),
    "a condition still true when the cooldown ends fires then": (
        [Y, N, Y, Y, Y, Y], {"cooldown": "3s"}, [("firing", 0), ("resolved", 1),
                                                 ("firing", 4)]),
    "no pending in the cooldown; for_ counts from after it": (
        [Y, Y, N, Y, Y, Y, Y, Y], {"for_": "1s", "cooldown": "3s"},
        [("pending", 0), ("firing", 1), ("resolved", 2), ("pending", 5), ("firing", 6)]),
    "cooldown counts from the resolution, after keep_firing_for": (
        [Y, N, N, Y, Y, N, N], {"keep_firing_for": "1s", "cooldown": "2s"},
        [("firing", 0), ("resolved", 2), ("firing", 4), ("resolved", 6)]),
    "a cancelled pending does not start a cooldown": (
        [Y, N, Y, Y], {"for_": "1s", "cooldown": "10s"},
        [("pending", 0), ("inactive", 1), ("pending", 2), ("firing", 3)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cooldown(name):
    flags, rule, expected = CASES[name]
    assert states(run(flags, **rule)) == expected
    for splits in ([1], [2, 3], list(range(1, len(flags)))):
        assert states(run(flags, splits=splits, **rule)) == expected


def test_cooldown_is_per_key():
    flags = [Y, Y, N, Y, N, N, Y, Y]
    keys = ["a", "b", "a", "b", "a", "b", "a", "b"]
    # a resolves at 2 s and is re-armed at 5 s; b resolves at 5 s, still cooling down at 7 s
    events = run(flags, keys=keys, cooldown="3s")
    assert [e for e in events if e[0] == "a"] == [("a", "firing", 0), ("a", "resolved", 2),
                                                 ("a", "firing", 6)]
    assert [e for e in events if e[0] == "b"] == [("b", "firing", 1), ("b", "resolved", 5)]


def test_cooldown_as_a_param_and_its_errors():
    cooldown = Param("1min", min="0s", max="1h", name="cooldown")
    flags = [Y, N, Y, N, Y, N]
    assert states(run(flags, cooldown=cooldown)) == [("firing", 0), ("resolved", 1)]
    cooldown.value = "0s"
    assert len(run(flags, cooldown=cooldown)) == 6
    with pytest.raises(ConfigError, match="alert `cooldown` must not be negative"):
        AlertRule(cooldown="-1s")
    df = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                       "hot": pd.Series([], dtype=bool)})
    with pytest.raises(ConfigError, match="alert `cooldown` must not be negative"):
        rtnb.alert(rtnb.StreamingFrame(df, time="t"), "hot", cooldown="-5s")


def test_a_checkpoint_in_the_cooldown_keeps_it():
    rule = AlertRule(cooldown="5s")
    t = np.arange(8, dtype=np.int64) * 10**9
    flags = np.array([Y, N, Y, Y, Y, Y, Y, Y])
    first = rule.process(np.zeros(3, dtype=np.intp), t[:3], flags[:3], np.zeros(3))
    assert [e[1] for e in first] == ["firing", "resolved"]
    again = AlertRule(cooldown="5s")
    again.restore(pickle.loads(pickle.dumps(rule.snapshot())))
    rest = again.process(np.zeros(5, dtype=np.intp), t[3:], flags[3:], np.zeros(5))
    assert [(e[1], e[2] // 10**9) for e in rest] == [("firing", 6)]


def test_snapshots_from_before_cooldown_restore():
    rule = AlertRule(cooldown="5s")
    rule.restore({0: ("firing", 0, None), 1: ("inactive", 0, None)})  # 3-tuples
    t = np.array([1, 2], dtype=np.int64) * 10**9
    events = rule.process(np.array([0, 1]), t, np.array([N, Y]), np.zeros(2))
    assert [(e[0], e[1]) for e in events] == [(0, "resolved"), (1, "firing")]
    assert rule.snapshot()[0] == ("inactive", 0, None, 1 * 10**9)


# -- defaults on a likelihood: one page per incident --------------------------------------

def incidents(n=400, spans=((50, 80), (200, 260), (330, 340))):
    """``is_anomaly`` as a debounced detector gives it: true from each onset to its end."""
    flag = np.zeros(n, dtype=bool)
    for lo, hi in spans:
        flag[lo:hi] = True
    return flag


def test_a_debounced_condition_pages_once_per_incident_with_the_defaults():
    events = run(incidents(), splits=range(100, 400, 100))
    assert states(events) == [("firing", 50), ("resolved", 80), ("firing", 200),
                              ("resolved", 260), ("firing", 330), ("resolved", 340)]


def test_a_flickering_condition_pages_once_with_keep_firing_for_or_cooldown():
    rng = np.random.default_rng(3)
    flag = incidents()
    flicker = flag & (rng.random(len(flag)) < 0.6)  # true on ~60% of each incident's rows
    assert len([e for e in run(flicker) if e[1] == "firing"]) > 10
    # keep_firing_for bridges the dips; a cooldown longer than an incident mutes the rest of
    # it (a shorter one would page again within the 60 s incident at 200 s)
    for rule in ({"keep_firing_for": "15s"}, {"cooldown": "90s"}):
        fired = [second for _, state, second in run(flicker, **rule) if state == "firing"]
        assert len(fired) == 3, rule
        assert all(lo <= s < lo + 5 for s, lo in zip(fired, (50, 200, 330), strict=True))


def test_anomaly_is_anomaly_pages_once_per_incident_with_the_alert_defaults():
    anomaly = pytest.importorskip("rtnb.detect.anomaly")
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.normal(100.0, 5.0, n)
    onsets = (1000, 1800, 2500)
    for s in onsets:
        x[s:s + 30] += 60 + rng.normal(0, 20, 30)  # a noisy incident: the score flickers
    df = pd.DataFrame({"t": pd.date_range("2026-01-01", periods=n, freq="min"), "value": x})
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    out = rtnb.alert(sdf.detect(anomaly.Anomaly(), on="value"), "is_anomaly").collect()
    for lo in range(0, n, 100):
        sdf.emit(df.iloc[lo:lo + 100].reset_index(drop=True))
    sdf.close()
    got = pd.concat(out, ignore_index=True)
    fired = got.loc[got["state"] == "firing", "time"]
    assert got["state"].tolist() == ["firing", "resolved"] * 3  # one page per incident
    for when, onset in zip(fired, onsets, strict=True):  # during the incident
        assert pd.Timedelta(0) <= when - df["t"].iloc[onset] < pd.Timedelta("30min")
