"""The alert state machine, table-driven: every transition, for_ and keep_firing_for edges,
flapping with and without hysteresis, keys independent, any batch split; event time that steps
back gives the same transitions and late rows however the stream is cut into batches."""

from __future__ import annotations

import itertools
import logging
import pickle
import warnings

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
    with pytest.warns(UserWarning, match="allowed_lateness='5s'.*up to 19s"):
        for i in range(4):
            sdf.emit(df.iloc[i:i + 1].reset_index(drop=True))
    sdf.close()
    got = pd.concat(out, ignore_index=True)
    assert got["state"].tolist() == ["firing", "resolved"]
    assert alerts.counters.late == 1  # the row at 1 s came after 20 s had released 0-15 s


# -- event time that steps back: the batch split never matters (issue 17, defect 7) -----------

def forty_rows() -> pd.DataFrame:
    """A signal that goes on (10 s to 29 s) then off, 1 s apart, arriving with 10 steps back.

    The rows of seconds 1-2, 5-6, ..., 37-38 arrive swapped, so 2, 6, ... 38 come before the
    second they follow: 10 s (the onset) before 9 s, 30 s (the first off) before 29 s.
    """
    seconds = np.arange(40)
    for i in range(1, 40, 4):
        seconds[[i, i + 1]] = seconds[[i + 1, i]]
    return pd.DataFrame({"t": T0 + pd.to_timedelta(seconds, unit="s"),
                         "cpu": np.where((seconds >= 10) & (seconds < 30), HI, LO)})


def split_run(df: pd.DataFrame, cuts, **rule) -> tuple[list[tuple], int, list[str]]:
    """Transitions ``(host, state, time, started, value)``, late count and warnings."""
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    by = "host" if "host" in df.columns else None
    alerts = rtnb.alert(sdf, sdf["cpu"] > 90, on="cpu", by=by, name="cpu_high", **rule)
    out = alerts.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for lo, hi in itertools.pairwise([0, *cuts, len(df)]):
            sdf.emit(df.iloc[lo:hi].reset_index(drop=True))
        sdf.close()
    got = pd.concat(out, ignore_index=True)
    events = [(getattr(r, "host", "-"), r.state, r.time, r.started, r.value)
              for r in got.itertuples()]
    return events, alerts.counters.late, [str(w.message) for w in caught]


def outcome(df: pd.DataFrame, cuts, **rule) -> tuple[list[tuple], int, int]:
    """Transitions, late count and the number of warnings (their text names a batch's rows)."""
    events, late, said = split_run(df, cuts, **rule)
    return events, late, len(said)


def test_forty_rows_every_two_batch_split_gives_the_one_batch_transitions():
    df = forty_rows()
    assert (np.diff(df["t"].to_numpy()) < np.timedelta64(0)).sum() == 10
    expected = outcome(df, [])
    assert [e[1:3] for e in expected[0]] == [("firing", T0 + pd.Timedelta("10s")),
                                             ("resolved", T0 + pd.Timedelta("30s"))]
    assert expected[1:] == (10, 1)  # 10 rows late, one warning
    for cut in range(1, len(df)):
        assert outcome(df, [cut]) == expected, cut
    assert outcome(df, list(range(1, len(df)))) == expected


def test_forty_rows_within_the_lateness_give_the_ordered_transitions():
    df = forty_rows()
    ordered = df.sort_values("t", kind="stable").reset_index(drop=True)
    expected, _, _ = split_run(ordered, [])
    assert [e[1:3] for e in expected] == [("firing", T0 + pd.Timedelta("10s")),
                                          ("resolved", T0 + pd.Timedelta("30s"))]
    for cuts in ([], *([c] for c in range(1, len(df))), list(range(1, len(df)))):
        assert outcome(df, cuts, allowed_lateness="1s") == (expected, 0, 0), cuts


def test_the_late_warning_names_the_alert_and_the_lateness_that_keeps_the_rows(caplog):
    with caplog.at_level(logging.WARNING, logger="rtnb"):
        _, late, said = split_run(forty_rows(), [7, 23])
    assert late == 10 and len(said) == 1  # once, although rows were late in three batches
    assert said[0].startswith("alert 'cpu_high': 2 row(s) arrived more than "
                              "allowed_lateness='0s' behind the newest event time (up to 1s)")
    assert "counters.late" in said[0] and "allowed_lateness='1s'" in said[0]
    assert [r.getMessage() for r in caplog.records] == said


def test_each_key_is_late_only_behind_its_own_evaluated_rows():
    # host b's clock runs 5 s behind host a's: at lateness 0 nothing is late, every key's
    # rows are in order, and the transitions are those of each host alone
    n = 40
    on = (np.arange(n) % 20 >= 5) & (np.arange(n) % 20 < 12)
    a = pd.DataFrame({"t": T0 + pd.to_timedelta(np.arange(n), unit="s"), "host": "a",
                      "cpu": np.where(on, HI, LO)})
    b = a.assign(t=a["t"] - pd.Timedelta("5s"), host="b", cpu=np.where(on[::-1], HI, LO))
    both = pd.concat([a, b]).sort_index(kind="stable").reset_index(drop=True)
    got, late, said = split_run(both, [13, 50])
    assert late == 0 and said == []
    for host, alone in (("a", a), ("b", b)):
        expected, _, _ = split_run(alone, [])
        assert [e for e in got if e[0] == host] == expected


def row_by_row(df: pd.DataFrame, *, allowed_lateness: str, **settings) -> tuple[list, int]:
    """The documented semantics, one row at a time in plain Python (the reference)."""
    rule, lateness = AlertRule(**settings), pd.Timedelta(allowed_lateness).value
    held: list[tuple[int, int, str, float]] = []  # (time, arrival, host, cpu)
    newest, done, late, events = None, {}, 0, []

    def evaluate(rows):
        for t, _, host, cpu in sorted(rows):
            done[host] = t
            events.extend((host, *e[1:]) for e in rule.process(
                np.array([ord(host)]), np.array([t]), np.array([cpu > 90]), np.array([cpu])))

    for arrival, (t, host, cpu) in enumerate(zip(df["t"], df["host"], df["cpu"],
                                                strict=True)):
        t = t.value
        if t < done.get(host, t):
            late += 1
            continue
        held.append((t, arrival, host, cpu))
        newest = t if newest is None else max(newest, t)
        evaluate([r for r in held if r[0] <= newest - lateness])
        held = [r for r in held if r[0] > newest - lateness]
    evaluate(held)
    as_times = [(h, state, pd.Timestamp(t), pd.Timestamp(s), v)
                for h, state, t, s, v in events]
    return as_times, late


@pytest.mark.parametrize("seed", range(6))
def test_any_disorder_and_any_split_give_the_one_batch_transitions(seed):
    # rows arrive up to 6 s after their event time, some 30 s late; three keys; lateness
    # 0 s (most steps back are late), 3 s (some are) or 10 s (only the 30 s ones)
    rng = np.random.default_rng(seed)
    n = 300
    values = np.where(rng.random(n) < 0.35, HI, LO)
    values[50:90] = HI
    df = pd.DataFrame({"t": T0 + pd.to_timedelta(np.arange(n), unit="s"),
                       "host": rng.choice(["a", "b", "c"], n), "cpu": values})
    delay = rng.uniform(0, 6, n) + np.where(rng.random(n) < 0.03, 30, 0)
    arrival = np.argsort(np.arange(n) + delay, kind="stable")
    df = df.iloc[arrival].reset_index(drop=True)
    rule = {"for_": "2s", "keep_firing_for": "1s", "cooldown": "3s",
            "allowed_lateness": ["0s", "3s", "10s"][seed % 3]}
    expected = outcome(df, [], **rule)
    assert expected[0] and expected[1] > 0 and expected[2] == 1
    assert expected[:2] == row_by_row(df, **rule)
    assert outcome(df, list(range(1, n)), **rule) == expected
    for _ in range(3):
        cuts = sorted(rng.choice(np.arange(1, n), size=int(rng.integers(1, 40)), replace=False))
        assert outcome(df, cuts, **rule) == expected


def test_a_checkpoint_between_batches_resumes_exactly():
    rng = np.random.default_rng(7)
    n = 200
    df = pd.DataFrame({"t": T0 + pd.to_timedelta(np.arange(n), unit="s"),
                       "host": rng.choice(["a", "b"], n),
                       "cpu": np.where(rng.random(n) < 0.4, HI, LO)})
    df = df.iloc[np.argsort(np.arange(n) + rng.uniform(0, 8, n), kind="stable")]
    df = df.reset_index(drop=True)
    rule = {"for_": "2s", "cooldown": "4s", "allowed_lateness": "3s"}
    expected, late, _ = split_run(df, [], **rule)

    def build():
        sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
        alerts = rtnb.alert(sdf, sdf["cpu"] > 90, on="cpu", by="host", name="cpu_high",
                            **rule)
        return sdf, alerts, alerts.collect()

    sdf, alerts, out = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdf.emit(df.iloc[:117].reset_index(drop=True))
        saved = pickle.loads(pickle.dumps(alerts.snapshot()))
        sdf2, alerts2, out2 = build()
        alerts2.restore(saved)
        late_before = alerts.counters.late
        sdf2.emit(df.iloc[117:].reset_index(drop=True))
        sdf2.close()
    got = pd.concat(out + out2, ignore_index=True)
    assert [(r.host, r.state, r.time, r.started, r.value)
            for r in got.itertuples()] == expected
    assert late_before + alerts2.counters.late == late


def test_a_snapshot_from_before_per_key_times_restores():
    df = pd.DataFrame({"t": T0 + pd.to_timedelta([0, 1, 2, 3], unit="s"),
                       "cpu": [HI, HI, LO, HI]})
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    alerts = rtnb.alert(sdf, sdf["cpu"] > 90, on="cpu")
    out = alerts.collect()
    # the format of snapshots before cooldown and per-key evaluated times
    t0, t1 = T0.value, T0.value + 10**9
    alerts.restore({"logic": {"rule": {0: ("firing", t0, None)},
                              "keys": alerts.logic.keys.snapshot(),
                              "held": {"rows": None, "max": t1, "done": t1}}})
    with pytest.warns(UserWarning, match="1 row"):
        sdf.emit(df.iloc[[0, 2, 3]].reset_index(drop=True))
    got = pd.concat(out, ignore_index=True)
    assert got["state"].tolist() == ["resolved", "firing"]  # the row at 0 s is late
    assert alerts.counters.late == 1


def test_a_what_if_upstream_is_not_late_and_does_not_page_again():
    # windows that keep their history: a Param change re-emits it all, older than what the
    # alert evaluated; the alert skips it (no late rows, no warning) and goes on
    size = Param("10s", min="5s", max="1min", name="size")
    n = 120
    df = pd.DataFrame({"t": T0 + pd.to_timedelta(np.arange(n), unit="s"),
                       "cpu": np.where((np.arange(n) // 30) % 2 == 1, HI, LO)})
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    windows = sdf.window(rtnb.tumbling(size), retain="10min").agg(cpu=("cpu", "max"))
    alerts = rtnb.alert(windows, windows["cpu"] > 90, on="cpu", name="hot")
    out = alerts.collect()
    sdf.emit(df.iloc[:100])  # 30-59 s and from 90 s on: high
    assert pd.concat(out)["state"].tolist() == ["firing", "resolved"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        size.value = "20s"  # the retained 100 s again, in 20 s windows
        sdf.emit(df.iloc[100:])
        sdf.close()
    assert windows.counters.recomputes == 1 and caught == []
    got = pd.concat(out, ignore_index=True)
    assert got["state"].tolist() == ["firing", "resolved", "firing"]
    assert got["time"].iloc[-1] == T0 + pd.Timedelta("80s")  # the new window 80-100 s
    assert alerts.counters.late == 0
