"""rtnb.detect.Anomaly: the recommended detector, with its defaults, as a user runs it."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb.detect import Anomaly
from rtnb.errors import ConfigError
from rtnb.testing import collect, feed, random_splits


def _series(n: int, seed: int, kind: str = "white") -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "white":
        return rng.normal(100.0, 5.0, n)
    if kind == "ar1":
        x = np.zeros(n)
        e = rng.normal(0.0, 1.0, n)
        for i in range(1, n):
            x[i] = 0.9 * x[i - 1] + e[i]
        return 50.0 + x
    if kind == "walk":
        return 1000.0 + np.cumsum(rng.normal(0.0, 1.0, n))
    if kind == "counts":
        return rng.poisson(4.0, n).astype(float)
    raise AssertionError(kind)


def _times(n: int, freq: str = "min") -> np.ndarray:
    return pd.date_range("2026-01-01", periods=n, freq=freq).to_numpy()


def _onsets(flags: np.ndarray) -> list[int]:
    return np.flatnonzero(flags & ~np.r_[False, flags[:-1]]).tolist()


def test_no_argument_needed_and_scores_are_likelihoods():
    x = _series(2000, 1)
    score, flag = Anomaly().process(x, times=_times(2000))
    assert np.isnan(score[:300]).all()  # warming up: the first 300 rows of a key
    assert np.isfinite(score[300:]).all()
    assert ((score[300:] >= 0) & (score[300:] <= 1)).all()
    assert flag.dtype == bool


@pytest.mark.parametrize("kind", ["white", "ar1", "walk", "counts"])
def test_quiet_series_of_every_kind_raise_almost_nothing(kind):
    """20,000 rows with no anomaly: at most three incidents (fewer than one false alarm per
    5,000 rows), whatever the kind of noise."""
    x = _series(20_000, 7, kind)
    _, flag = Anomaly().process(x, times=_times(20_000))
    assert len(_onsets(flag)) <= 3


def test_same_flags_at_any_scale_offset_and_sampling_rate():
    """Scale-free: the data's units and its sampling interval do not matter."""
    x = _series(3000, 3)
    x[2000] += 60.0
    x[2500:] += 25.0
    base_score, base_flag = Anomaly().process(x, times=_times(3000, "min"))
    for factor, offset, freq in ((1e-3, 0.0, "s"), (1e6, -5e7, "h"), (1.0, 1e4, "5min")):
        score, flag = Anomaly().process(x * factor + offset, times=_times(3000, freq))
        np.testing.assert_array_equal(flag, base_flag)
        np.testing.assert_allclose(score, base_score, atol=1e-6)
    assert 2000 in _onsets(base_flag)


def test_each_kind_of_evidence_is_found_and_named():
    n = 6000
    x = _series(n, 11)
    t = _times(n)
    x[1500] = 170.0  # spike
    x[2500:2700] += np.random.default_rng(1).normal(0.0, 25.0, 200)  # volatility
    x[3500:] += 30.0  # level shift
    x[4500:4600] = x[4499]  # flatline
    det = Anomaly()
    _, flag = det.process(x, times=t)
    reasons = det.last_reasons()
    onsets = _onsets(flag)
    found = {o: reasons[o] for o in onsets}
    assert 1500 in found and found[1500].startswith(("spike", "new high"))
    assert any(2500 <= o < 2510 for o in onsets)
    assert any(3500 <= o < 3510 for o in onsets)
    assert 4508 in found and found[4508] == "flatline 10 rows"
    assert len(onsets) <= 6  # nothing else
    assert reasons[100] is None  # quiet rows have no reason


def test_a_day_that_breaks_the_daily_pattern_is_an_incident():
    """5-minute data with a daily cycle; day 15 stays flat at the mean (a holiday): the
    values are all within the usual range, only the hour of day makes them wrong."""
    per_day = 288
    n = 20 * per_day
    t = _times(n, "5min")
    hours = (np.arange(n) % per_day) / per_day * 24
    x = 100.0 + 30.0 * np.sin(2 * np.pi * hours / 24) \
        + np.random.default_rng(8).normal(0.0, 3.0, n)
    flat = slice(15 * per_day, 16 * per_day)
    x[flat] = 100.0 + np.random.default_rng(9).normal(0.0, 3.0, per_day)
    det = Anomaly()
    _, flag = det.process(x, times=t)
    reasons = det.last_reasons()
    onsets = _onsets(flag)
    inside = [o for o in onsets if flat.start <= o < flat.stop]
    assert inside and inside[0] < flat.start + 36  # within 3 hours of the day
    assert "the daily pattern z=" in reasons[inside[0]]
    assert len(onsets) - len(inside) <= 2  # the other 19 days: at most two false alarms
    plain = Anomaly()
    plain.process(x[:2 * per_day - 1], times=t[:2 * per_day - 1])
    assert not any(r and "daily" in r for r in plain.last_reasons())  # needs two days


def test_a_gap_in_event_time_is_an_incident():
    n = 1000
    t = _times(n).copy()
    t[800:] += np.timedelta64(2, "h")  # 120 rows' worth of silence
    det = Anomaly()
    _, flag = det.process(_series(n, 5), times=t)
    assert 800 in _onsets(flag)
    assert det.last_reasons()[800] == "gap 121x the usual interval"


def test_an_incident_stays_on_until_rearm_rows_below_clear():
    x = _series(1500, 2)
    x[1000:1100] += 40.0  # a 100-row excursion
    _, flag = Anomaly(rearm=20).process(x, times=_times(1500))
    assert _onsets(flag) == [1000] or _onsets(flag)[0] in range(1000, 1005)
    assert flag[1000:1100].all()  # one incident, not a flicker


def test_missing_values_are_not_scored_or_learned():
    x = _series(1200, 4)
    gaps = x.copy()
    gaps[[300, 301, 700]] = np.nan
    s1, _ = Anomaly().process(np.delete(x, [300, 301, 700]))
    s2, _ = Anomaly().process(gaps)
    assert np.isnan(s2[[300, 301, 700]]).all()
    np.testing.assert_array_equal(np.delete(s2, [300, 301, 700]), s1)


def test_keys_are_independent_and_batches_do_not_matter():
    """Interleaved keys score as each key alone; any batch split gives the same output."""
    n = 3000
    frames = []
    for i, host in enumerate(["a", "b", "c"]):
        x = _series(n, 20 + i) * (10.0 ** i)
        x[1500 + 100 * i] *= 3
        frames.append(pd.DataFrame({"time": pd.date_range("2026-01-01", periods=n, freq="s"),
                                    "host": host, "value": x}))
    data = pd.concat(frames).sort_values("time", kind="stable").reset_index(drop=True)

    def run(splits: list[int] | None) -> pd.DataFrame:
        sdf = rtnb.StreamingFrame(data.iloc[:0], name="m", time="time")
        out = collect(sdf.detect(Anomaly(), on="value", by="host"))
        feed(sdf, data, splits=splits)
        return out.frame()

    whole = run(None)
    assert list(whole.columns) == ["time", "host", "value", "score", "is_anomaly", "reason"]
    pd.testing.assert_frame_equal(run(random_splits(len(data), 3, 40)), whole)
    for host, g in whole.groupby("host"):
        alone = frames["abc".index(host)]
        score, flag = Anomaly().process(alone["value"].to_numpy(),
                                        times=alone["time"].to_numpy())
        np.testing.assert_array_equal(g["score"].to_numpy(), score)
        np.testing.assert_array_equal(g["is_anomaly"].to_numpy(), flag)


def test_snapshot_restore_continues_exactly():
    x = _series(4000, 9)
    x[3000:] += 30.0
    keys = np.arange(4000) % 3
    t = _times(4000)
    whole = Anomaly().process(x, keys, t)
    first = Anomaly()
    first.process(x[:2500], keys[:2500], t[:2500])
    saved = pickle.loads(pickle.dumps(first.snapshot()))
    second = Anomaly()
    second.restore(saved)
    rest = second.process(x[2500:], keys[2500:], t[2500:])
    np.testing.assert_array_equal(rest[0], whole[0][2500:])
    np.testing.assert_array_equal(rest[1], whole[1][2500:])


def test_alert_with_defaults_pages_once_per_incident():
    n = 6000
    x = _series(n, 13)
    x[2000:2050] += 40.0
    x[3500] = 200.0
    x[5000:] -= 30.0
    data = pd.DataFrame({"time": pd.date_range("2026-01-01", periods=n, freq="min"),
                         "value": x})
    sdf = rtnb.StreamingFrame(data.iloc[:0], name="m", time="time")
    events = collect(rtnb.alert(sdf.detect(Anomaly(), on="value"), "is_anomaly", by=[]))
    feed(sdf, data, batch_size=100)
    fired = events.frame()
    fired = fired[fired["state"] == "firing"]
    minutes = ((fired["time"] - data["time"].iloc[0]) / pd.Timedelta("1min")).to_numpy()
    for start, end in ((2000, 2050), (3500, 3501), (5000, 6000)):  # each incident: one page
        assert ((minutes >= start) & (minutes < end + 20)).sum() == 1
        assert ((minutes >= start) & (minutes < start + 10)).sum() == 1  # within 10 rows
    assert len(fired) <= 4  # and at most one false alarm in the 6,000 rows


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"threshold": 1.0}, "clear <= threshold < 1"),
    ({"clear": 0.99999}, "clear <= threshold"),
    ({"rearm": 0}, "rearm must be an int >= 1"),
    ({"warmup": 1.5}, "warmup must be an int"),
    ({"memory": 1}, "memory"),
    ({"gap_factor": 1}, "gap_factor must be > 1"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Anomaly(**kwargs)


def test_repr_shows_what_differs_from_the_defaults():
    assert repr(Anomaly()) == "Anomaly()"
    assert repr(Anomaly(threshold=0.999, rearm=5)) == "Anomaly(threshold=0.999, rearm=5)"


def test_two_anomaly_detectors_on_one_frame_name_their_columns():
    n = 1000
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"time": pd.date_range("2026-01-01", periods=n, freq="s"),
                         "cpu": rng.normal(50.0, 5.0, n), "lat": rng.normal(10.0, 1.0, n)})
    data.loc[700, "lat"] = 40.0
    sdf = rtnb.StreamingFrame(data.iloc[:0], name="m", time="time")
    both = (sdf.detect(Anomaly(), on="cpu", score="cpu_score", anomaly="cpu_anomaly",
                       rename={"reason": "cpu_reason"})
            .detect(Anomaly(), on="lat"))
    out = collect(both)
    feed(sdf, data, batch_size=100)
    frame = out.frame()
    assert list(frame.columns[3:]) == ["cpu_score", "cpu_anomaly", "cpu_reason", "score",
                                       "is_anomaly", "reason"]
    assert frame["reason"].dtype == frame["cpu_reason"].dtype == "str"
    assert frame.loc[700, "reason"].startswith(("spike", "new high"))
    with pytest.raises(ConfigError, match="already has; pass rename"):
        sdf.detect(Anomaly(), on="cpu").detect(Anomaly(), on="lat", score="s2",
                                               anomaly="a2")
    with pytest.raises(ConfigError, match="has no extra column 'why'"):
        sdf.detect(Anomaly(), on="cpu", rename={"why": "x"})


def test_batches_of_one_row_and_one_batch_of_100_000_rows_score_alike():
    """The extremes of batch size: 1-row batches equal one batch; one 100,000-row batch of
    500 interleaved keys equals each key run alone (checked on 20 of them)."""
    x = _series(3000, 17)
    x[2000:2040] += 35.0
    t = _times(3000)
    whole = Anomaly().process(x, times=t)
    one = Anomaly()
    rows = [one.process(x[i:i + 1], times=t[i:i + 1]) for i in range(3000)]
    np.testing.assert_array_equal(np.concatenate([r[0] for r in rows]), whole[0])
    np.testing.assert_array_equal(np.concatenate([r[1] for r in rows]), whole[1])

    rng = np.random.default_rng(4)
    n, keys = 100_000, 500
    codes = rng.integers(0, keys, n)
    values = rng.normal(0.0, 1.0, n) * (1 + codes % 7) + codes
    values[rng.random(n) < 0.001] += 50.0
    times = np.sort(rng.integers(0, 10**13, n))
    big = Anomaly().process(values, codes, times)
    for key in range(0, keys, 25):
        mine = codes == key
        alone = Anomaly().process(values[mine], times=times[mine])
        np.testing.assert_array_equal(big[0][mine], alone[0])
        np.testing.assert_array_equal(big[1][mine], alone[1])
