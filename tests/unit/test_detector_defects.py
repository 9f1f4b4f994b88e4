"""Issue 17: row windows, scale-free defaults, the warm-up warning, the extra-columns hook, and
one test per detector defect (each failed before the fix), against pandas where pandas
computes the same thing."""

from __future__ import annotations

import logging
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from detector_oracles import floored, random_split, robust_scale, run

import rtnb
from rtnb import Param
from rtnb.detect import EWMA, MAD, Detector, RateOfChange, RollingQuantile, ZScore
from rtnb.detect.detectors import DetectorLogic, WarmUpWarning

WINDOWED = {"zscore": ZScore, "mad": MAD, "quantile": RollingQuantile}


def keyed(n: int, keys: int, seed: int, *, repeat: bool = False):
    """Positive values with spikes, ties and missing values; key codes; increasing ns times
    (``repeat``: many rows share a time, within and across keys)."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(50, 5, n), 1)
    x[rng.random(n) < 0.02] += 60
    x[rng.random(n) < 0.02] = np.nan
    codes = rng.integers(0, keys, n)
    steps = rng.integers(0, 3, n) if repeat else rng.integers(1, 3, n)
    t = np.cumsum(steps) * 1_000_000_000
    return x, codes, t


def expected_by_key(kind: str, x, codes, window, mp: int, *, t=None) -> np.ndarray:
    """pandas per key: rows windows over the key's non-missing values (``shift(1).rolling(n,
    min_periods)``), duration windows with ``rolling(window, closed="left")``."""
    out = np.full(len(x), np.nan)
    df = pd.DataFrame({"x": x, "k": codes})
    if t is not None:
        df["t"] = t.view("datetime64[ns]")
    for _, g in df.groupby("k"):
        if t is None:
            g = g.dropna(subset=["x"])
            s = g["x"]
            r = s.shift(1).rolling(window, min_periods=mp)
        else:
            s = g.set_index("t")["x"]
            r = s.rolling(window, closed="left", min_periods=mp)
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "zscore":
                mean = r.mean()
                got = (s - mean) / floored(r.std(), mean)
            elif kind == "mad":
                got = (s - r.median()).abs() / r.apply(robust_scale, raw=True)
            else:
                got = s / (1.1 * r.quantile(0.9))
        out[g.index.to_numpy()] = got.to_numpy()
    out[np.isnan(x)] = np.nan
    return out


def make(kind: str, window, mp: int):
    if kind == "zscore":
        return ZScore(window, threshold=3, min_periods=mp)
    if kind == "mad":
        return MAD(window, threshold=3.5, min_periods=mp)
    return RollingQuantile(window, q=0.9, factor=1.1, min_periods=mp)


# -- 1. row windows ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(WINDOWED))
@pytest.mark.parametrize(("n", "mp"), [(1, 1), (7, 3), (50, 10), (300, 2)])
def test_row_windows_equal_pandas_shift_rolling_for_any_split(kind, n, mp):
    """``window=rtnb.rows(n)``: the key's last n learned values, as pandas
    ``groupby(key).shift(1).rolling(n, min_periods)`` over the non-missing values, whatever
    the batch sizes (1 to 40 rows, or all at once); times play no part."""
    if kind == "zscore" and mp < 2:
        n, mp = 2, 2
    x, codes, t = keyed(4000, 9, n + mp)
    expected = expected_by_key(kind, x, codes, n, mp)
    for parts in (random_split(len(x), n, 40), [slice(0, len(x))]):
        got = run(make(kind, rtnb.rows(n), mp), x, codes, t, parts)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        got = run(make(kind, rtnb.rows(n), mp), x, codes, np.zeros_like(t), parts)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", list(WINDOWED))
def test_row_window_param_and_switch_to_a_duration(kind):
    """A Param of windows (rows or a duration) and ``rows(Param)``: the new window applies
    from the next batch."""
    x, codes, t = keyed(3000, 4, 2)
    size = Param(50, min=2, max=1000, name="rows")
    det = make(kind, rtnb.rows(size), 5)
    first = det.process(x[:1500], codes[:1500], t[:1500])[0]
    size.value = 20
    second = det.process(x[1500:], codes[1500:], t[1500:])[0]
    np.testing.assert_allclose(first, expected_by_key(kind, x, codes, 50, 5)[:1500],
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(second, expected_by_key(kind, x, codes, 20, 5)[1500:],
                               rtol=1e-9, atol=1e-12)
    window = Param(rtnb.rows(30), choices=[rtnb.rows(30), "1min"], name="window")
    det = make(kind, window, 5)
    det.process(x[:1500], codes[:1500], t[:1500])
    window.value = "1min"
    got = det.process(x[1500:], codes[1500:], t[1500:])[0]
    expected = expected_by_key(kind, x, codes, "1min", 5, t=t)[1500:]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", list(WINDOWED))
def test_row_window_snapshot_pickles_and_resumes(kind):
    x, codes, t = keyed(3000, 30, 5)
    parts = random_split(len(x), 6, 30)
    det = make(kind, rtnb.rows(40), 5)
    run(det, x, codes, t, parts[:100], protect=True)
    saved = pickle.dumps(det.snapshot())
    rest = slice(parts[100].start, len(x))
    expected = det.process(x[rest], codes[rest], t[rest], protect=True)[0]
    resumed = make(kind, rtnb.rows(40), 5)
    resumed.restore(pickle.loads(saved))
    np.testing.assert_array_equal(resumed.process(x[rest], codes[rest], t[rest],
                                                  protect=True)[0], expected)


@pytest.mark.parametrize("kind", list(WINDOWED))
def test_format_3_snapshots_without_the_new_fields_restore(kind):
    """A snapshot as format 3 held it (no pending / held / last_t; ZScore's sums over every
    value of the ring) goes on as the current state does."""
    x, codes, t = keyed(3000, 6, 7)
    det = make(kind, "1min", 5)
    det.process(x[:2000], codes[:2000], t[:2000])
    snap = det.snapshot()
    old = {k: v for k, v in snap.items() if k not in ("pending", "held", "last_t")}
    ends = np.cumsum(snap["count"])
    refs = snap["values"][ends - snap["count"]]
    d = snap["values"] - np.repeat(refs, snap["count"])
    old["sums"] = np.column_stack([refs, np.add.reduceat(d, ends - snap["count"]),
                                   np.add.reduceat(d * d, ends - snap["count"])])
    old["aux"] = np.zeros_like(snap["aux"]) if kind == "zscore" else snap["aux"]
    expected = det.process(x[2000:], codes[2000:], t[2000:])[0]
    resumed = make(kind, "1min", 5)
    resumed.restore(old)
    np.testing.assert_allclose(resumed.process(x[2000:], codes[2000:], t[2000:])[0],
                               expected, rtol=1e-9, atol=1e-12)


# -- 2. scale-free defaults -------------------------------------------------------------------
def test_defaults_need_no_argument_and_ignore_the_sampling():
    """ZScore(), MAD(), RollingQuantile(), EWMA(), RateOfChange(): the same scores for the
    same values sampled every second or every hour (RateOfChange: its robust z-score)."""
    x, codes, _ = keyed(5000, 3, 9)
    x = np.where(np.isnan(x), 50.0, x)  # RateOfChange compares neighbours
    fast = np.arange(len(x)) * 10**9
    slow = np.arange(len(x)) * 3600 * 10**9
    for build in (ZScore, MAD, RollingQuantile, EWMA, RateOfChange):
        a, fa = build().process(x, codes, fast)
        b, fb = build().process(x, codes, slow)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=build.__name__)
        assert (~np.isnan(a)).mean() > 0.9, build.__name__
        assert 0 < fa.sum() < 0.1 * len(x), build.__name__  # the spikes, not the noise
        assert fa.tolist() == fb.tolist()
    assert repr(ZScore()) == "ZScore(window=Rows(n=1000), threshold=3.0)"


def test_ewma_default_halflife_is_100_rows():
    x, _, _ = keyed(2000, 1, 3)
    x = x[~np.isnan(x)]
    np.testing.assert_array_equal(EWMA().process(x)[0], EWMA(halflife=100).process(x)[0])


def test_rate_of_change_default_is_a_robust_z_of_the_rate():
    """No threshold: the rate's signed robust z-score against the key's last 1,000 rates
    (median, MAD scale, 10 rates at least) and a threshold of 3.5; an explicit threshold
    keeps the raw rate."""
    rng = np.random.default_rng(4)
    x = np.cumsum(rng.normal(0, 1, 400))
    x[300] += 25
    t = np.arange(400) * 60 * 10**9
    got, flags = RateOfChange().process(x, times=t)
    rate = pd.Series(np.diff(x, prepend=np.nan) / 60)
    past = rate.shift(1).rolling(1000, min_periods=10)
    expected = (rate - past.median()) / past.apply(robust_scale, raw=True)
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=1e-9)
    assert flags[300] and flags[301] and flags.sum() < 10
    raw = RateOfChange(threshold=0.3).process(x, times=t)[0]
    np.testing.assert_allclose(raw, rate.to_numpy(), rtol=1e-12)


# -- 3. warm-up warning -----------------------------------------------------------------------
def test_warm_up_warning_once_when_a_duration_window_never_fills(caplog):
    """ZScore("5min") on 5-minute data never holds min_periods values: after 10,000 rows of
    a key with every score NaN, one WarmUpWarning naming the detector, also logged."""
    t = pd.date_range("2026-01-01", periods=12_000, freq="5min")
    x = np.random.default_rng(1).normal(size=len(t))
    det = ZScore("5min")
    with caplog.at_level(logging.WARNING, logger="rtnb.detect.detectors"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            det.process(x[:9_000], times=t[:9_000])  # not yet
        with pytest.warns(WarmUpWarning, match=r"ZScore\(window='5min'.* 10,000 rows of one "
                                               r"key and scored none"):
            det.process(x[9_000:10_000], times=t[9_000:10_000])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            det.process(x[10_000:], times=t[10_000:])  # once per detector
    assert [r.getMessage() for r in caplog.records if "scored none" in r.getMessage()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ZScore().process(x, times=t)  # the default row window fills: no warning


# -- 4. the defects ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(WINDOWED))
def test_defect_2_time_stepping_back_is_taken_at_the_latest_time_and_counted(kind):
    """A row before its key's latest learned time: no error; scored against the window as
    it stands and learned with the key's latest time, the same for ZScore, MAD and
    RollingQuantile; counted in ``out_of_order``."""
    t = pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:10", "2026-01-01 00:00:20",
                        "2026-01-01 00:00:30", "2026-01-01 00:00:05", "2026-01-01 00:00:40",
                        "2026-01-01 00:01:15"])
    x = [10.0, 12.0, 11.0, 13.0, 30.0, 11.0, 12.0]
    det = make(kind, "1min", 2)
    got = np.concatenate([det.process(x[:3], times=t[:3])[0],
                          det.process(x[3:], times=t[3:])[0]])
    assert det.out_of_order == 1
    as_if = t.where(t != pd.Timestamp("2026-01-01 00:00:05"), pd.Timestamp("2026-01-01 00:00:30"))
    expected = make(kind, "1min", 2).process(x, times=as_if)[0]
    np.testing.assert_array_equal(got, expected)
    assert not np.isnan(got[4])


def test_defect_2_rolling_quantile_does_not_stop_the_pipeline():
    ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"), "v": pd.Series([], dtype=float)})
    sdf = rtnb.StreamingFrame(ex, time="t")
    out = sdf.detect(RollingQuantile("1min", min_periods=1), on="v").collect()
    sdf.emit(pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:10", "2026-01-01 00:00:20"]),
                           "v": [1.0, 2.0]}))
    sdf.emit(pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:05"]), "v": [3.0]}))
    # the late row is taken at 00:00:20: it does not see that time's row, as a row of 00:00:20
    assert pd.concat(out)["score"].round(3).tolist()[1:] == [2.0, 3.0]


def test_defect_3_mad_of_a_mostly_equal_window_is_finite():
    """More than half the window equals the median: MAD 0, the scale is 1.2533 times the
    mean absolute deviation from the median (Iglewicz-Hoaglin), as numpy computes it."""
    t = pd.date_range("2026-01-01", periods=8, freq="min")
    x = np.array([0, 0, 0, 5, 7, 0, 0, 1], dtype=float)
    got = MAD("1h", min_periods=5).process(x, times=t)[0]
    assert np.isfinite(got[-1])
    window = x[:7]
    assert got[-1] == pytest.approx(1 / (1.2533 * np.mean(np.abs(window - 0))), rel=1e-12)
    np.testing.assert_array_equal(got[5:7], [0.0, 0.0])


@pytest.mark.parametrize("build", [lambda: ZScore(min_periods=5), lambda: EWMA(min_periods=5),
                                   lambda: MAD(min_periods=5)])
def test_defect_5_a_departure_from_a_flatline_is_finite_and_flagged(build):
    """After a perfectly flat history the scale is floored (1e-9 of the level): a departure
    is flagged with a large finite score, the flat value scores 0, for all three."""
    x = np.r_[np.full(30, 20.0), 20.0, 21.0, 19.0]
    got, flags = build().process(x)
    assert got[30] == 0.0 and not flags[30]
    assert np.isfinite(got[31]) and got[31] == pytest.approx(1 / (20 * 1e-9), rel=1e-6)
    assert flags[31]
    assert np.isfinite(got[32]) and flags[32]


def test_defect_6_rolling_quantile_of_negative_values():
    """``1 + (x - f q) / |f q|``: with a history of -10, -100 is below (not flagged) and +50
    above (flagged); a quantile of 0 gives a large finite score."""
    for value, flagged in ((-100.0, False), (50.0, True), (-10.0, False)):
        s, a = RollingQuantile(q=0.5, min_periods=3).process([-10.0] * 5 + [value])
        assert bool(a[-1]) is flagged
        assert s[-1] == 1 + (value + 10) / 10
    s, a = RollingQuantile(q=0.5, min_periods=3).process([0.0] * 5 + [1.0, 0.0])
    assert np.isfinite(s[-2]) and a[-2] and s[-1] == 1.0 and not a[-1]


def test_defect_8_rate_of_change_repeated_timestamp_and_missing_values():
    t = pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:01", "2026-01-01 00:00:02",
                        "2026-01-01 00:00:02", "2026-01-01 00:00:03"])
    s, a = RateOfChange(threshold=5).process([0.0, 1.0, 2.0, 50.0, 3.0], times=t)
    # the spike on the repeated time is against 00:00:01; the next row against 00:00:02's last
    np.testing.assert_array_equal(s, [np.nan, 1.0, 1.0, 49.0, -47.0])
    assert a.tolist() == [False, False, False, True, True]
    t = pd.date_range("2026-01-01", periods=5, freq="s")
    s, _ = RateOfChange(threshold=5).process([0.0, 1.0, np.nan, 3.0, 4.0], times=t)
    np.testing.assert_array_equal(s, [np.nan, 1.0, np.nan, 1.0, 1.0])
    det = RateOfChange(threshold=5)
    det.process([0.0, 1.0, 9.0], times=t[[0, 2, 1]])
    assert det.out_of_order == 1


@pytest.mark.parametrize("kind", list(WINDOWED))
def test_defect_9_repeated_timestamps_equal_pandas_closed_left(kind):
    """Rows of the same time do not see each other, as pandas ``rolling(closed="left")``:
    many keys, many repeated times, random batches (1 to 30 rows)."""
    x, codes, t = keyed(4000, 7, 3, repeat=True)
    expected = expected_by_key(kind, x, codes, "20s", 3, t=t)
    got = run(make(kind, "20s", 3), x, codes, t, random_split(len(x), 4, 30))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_defect_9_the_issue_example():
    t = pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:05", "2026-01-01 00:10",
                        "2026-01-01 00:10", "2026-01-01 00:15"])
    x = [1.0, 2.0, 1.0, 9.0, 2.0]
    got = ZScore("1h", min_periods=2).process(x, times=t)[0]
    r = pd.Series(x, index=t).rolling("1h", closed="left", min_periods=2)
    expected = ((pd.Series(x, index=t) - r.mean()) / r.std()).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert round(got[3], 3) == 10.607


@pytest.mark.parametrize("build", [lambda: ZScore(rtnb.rows(200)), lambda: ZScore(),
                                   lambda: ZScore("10min"), lambda: MAD(rtnb.rows(200)),
                                   lambda: EWMA(), lambda: RollingQuantile(rtnb.rows(200),
                                                                          q=0.99, factor=1.5)])
def test_defect_4_protect_learns_a_lasting_level_shift(build):
    """A step from mean 0 to 10 (300 rows each, 1 s apart): with protect the shift is held
    out for min_periods rows, then learned; flags comparable to without protect."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 600)
    x[300:] += 10
    if isinstance(build(), RollingQuantile):
        x += 20  # positive
    t = np.arange(600) * 10**9
    plain = build().process(x, times=t)[1][300:].sum()
    guarded = build().process(x, times=t, protect=True)[1][300:].sum()
    assert guarded <= plain + 15, (plain, guarded)
    assert guarded < 100


# -- 5. extra output columns ------------------------------------------------------------------
class Doubled(Detector):
    """A toy detector with one extra column: the value doubled."""

    extra = ("doubled",)

    def __init__(self) -> None:
        self._init_slots()

    def _limit(self) -> float:
        return 0.0

    def _run(self, slots, t, x, protect):
        self._extra_out = [2 * x]
        return x.copy(), x > 1

    def _state(self):
        return {"keys": self._codes[:self._n].copy()}

    def _load(self, state):
        pass


def test_detector_logic_appends_the_extra_columns():
    from rtnb.windows.keys import KeyRegistry

    batch = pd.DataFrame({"v": [1.0, 2.0]})
    logic = DetectorLogic(Doubled(), on="v", keys=KeyRegistry([], batch), time=None)
    out = logic.process(batch).rows
    assert out.columns.tolist() == ["v", "score", "is_anomaly", "doubled"]
    assert out["doubled"].tolist() == [2.0, 4.0] and out["is_anomaly"].tolist() == [False, True]
    out = logic.process(pd.DataFrame({"v": [3.0]})).rows
    assert out["doubled"].tolist() == [6.0]
    plain = DetectorLogic(ZScore(), on="v", keys=KeyRegistry([], batch), time=None)
    assert plain.process(batch).rows.columns.tolist() == ["v", "score", "is_anomaly"]


def test_duration_windows_and_rates_need_times():
    """Without event times a duration window could never move (every row at time 0): a
    clear error instead of scores that are NaN for ever."""
    for det in (ZScore("5min"), MAD("5min"), RollingQuantile("5min"), RateOfChange()):
        with pytest.raises(ValueError, match=r"needs event times: pass times="):
            det.process([1.0, 2.0])
    assert not ZScore().needs_time and ZScore("5min").needs_time
    assert EWMA().process([1.0, 2.0])[0].shape == (2,)


def test_a_row_window_shorter_than_min_periods_is_refused():
    with pytest.raises(rtnb.ConfigError, match=r"ZScore min_periods \(10\) is more than the "
                                              r"window's 5 rows"):
        ZScore(rtnb.rows(5))


@pytest.mark.parametrize("make", [ZScore, MAD, RollingQuantile, EWMA, RateOfChange,
                                  rtnb.detect.Anomaly])
def test_an_infinite_value_is_flagged_and_never_poisons_the_state(make):
    """One +inf and one -inf (a division by zero upstream): before, ZScore and EWMA scored
    NaN for every later row and missed a spike 1,500 rows on. Now the infinite rows are
    flagged and not learned: every other row scores as if they were not there."""
    rng = np.random.default_rng(5)
    x = rng.normal(100.0, 5.0, 3000)
    x[2500] = 400.0
    t = np.arange(3000) * 1_000_000_000
    bad = [1000, 1700]
    poisoned = x.copy()
    poisoned[bad] = [np.inf, -np.inf]
    det = make()
    score, flag = det.process(poisoned, times=t)
    clean, _ = make().process(np.delete(x, bad), times=np.delete(t, bad))
    np.testing.assert_array_equal(np.delete(score, bad), clean)
    # RollingQuantile watches the upper side only: -inf is below its quantile, not flagged
    assert flag[1000] and flag[2500] and flag[1700] == (make is not RollingQuantile)
    if make is rtnb.detect.Anomaly:
        assert det.last_reasons()[1000] == "not a finite number (inf)"
    else:
        assert np.isinf(score[bad]).all()
