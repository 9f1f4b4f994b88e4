"""Detectors against pandas computing the same statistic on the whole series, for any split
of the stream into batches, per key; protect keeps anomalies out of the state."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from detector_oracles import floored, protected_loop, robust_scale

import rtnb
from rtnb import ConfigError, Param
from rtnb.detect import EWMA, MAD, RateOfChange, Threshold, ZScore


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    """Two hours of 4 hosts with spikes and a few missing values, irregular times."""
    df = rtnb.datasets.metrics()
    df = df[df["host"].isin(["web-01", "web-02", "db-01", "cache-02"])].iloc[:20_000]
    rng = np.random.default_rng(11)
    cpu = df["cpu"].to_numpy().copy()
    cpu[rng.integers(0, len(cpu), 40)] += 60  # spikes
    cpu[rng.integers(0, len(cpu), 20)] = np.nan
    keep = rng.random(len(df)) > 0.1  # gaps: irregular time steps
    return df.assign(cpu=cpu)[keep].reset_index(drop=True)


def stream(df: pd.DataFrame, detector, seed: int, **kw) -> pd.DataFrame:
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="timestamp")
    out = sdf.detect(detector, on="cpu", by="host", **kw).collect()
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(df)), 60, replace=False))
    for lo, hi in zip([0, *cuts], [*cuts, len(df)], strict=True):
        sdf.emit(df.iloc[lo:hi].reset_index(drop=True))
    return pd.concat(out, ignore_index=True)


def per_host(df: pd.DataFrame, func) -> pd.Series:
    parts = [func(g) for _, g in df.groupby("host", sort=False)]
    return pd.concat(parts).reindex(df.index)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_zscore_equals_pandas_rolling_closed_left(data, seed):
    got = stream(data, ZScore(window="5min", threshold=3, min_periods=10), seed)

    def expected(g: pd.DataFrame) -> pd.Series:
        r = g.set_index("timestamp")["cpu"].rolling("5min", closed="left", min_periods=10)
        mean, std = r.mean().to_numpy(), r.std().to_numpy()
        return pd.Series((g["cpu"].to_numpy() - mean) / std, index=g.index)

    exp = per_host(data, expected)
    np.testing.assert_allclose(got["score"], exp, rtol=1e-7, atol=1e-9)
    assert got["is_anomaly"].tolist() == (exp.abs() > 3).tolist()
    assert got["is_anomaly"].sum() > 10  # the spikes are found


@pytest.mark.parametrize("seed", [1, 2])
def test_ewma_equals_the_recursion_on_the_whole_series(data, seed):
    got = stream(data.dropna(subset=["cpu"]).reset_index(drop=True),
                 EWMA(alpha=0.1, threshold=4, min_periods=5), seed)

    def expected(g: pd.DataFrame) -> pd.Series:
        x = g["cpu"].to_numpy()
        mean = pd.Series(x).ewm(alpha=0.1, adjust=False).mean().to_numpy()
        out, var = np.full(len(x), np.nan), 0.0
        for i in range(1, len(x)):
            d = x[i] - mean[i - 1]
            if i >= 5 and var > 0:
                out[i] = d / np.sqrt(var)
            var = 0.9 * (var + 0.1 * d * d)
        return pd.Series(out, index=g.index)

    df = data.dropna(subset=["cpu"]).reset_index(drop=True)
    np.testing.assert_allclose(got["score"], per_host(df, expected), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [1, 2])
def test_rate_of_change_equals_pandas_diff(data, seed):
    got = stream(data, RateOfChange(threshold=20, per="1s"), seed)

    def expected(g: pd.DataFrame) -> pd.Series:
        # a missing value is not learned: the next row compares with the last valid one
        g = g.dropna(subset=["cpu"])
        dt = g["timestamp"].diff().dt.total_seconds()
        return g["cpu"].diff() / dt

    np.testing.assert_allclose(got["score"], per_host(data, expected), rtol=1e-12)


def test_threshold_with_a_param_follows_the_slider(data):
    upper = Param(90.0, min=0.0, max=100.0, name="upper")
    sdf = rtnb.StreamingFrame(data.iloc[:0], time="timestamp")
    out = sdf.detect(Threshold(upper=upper), on="cpu").collect()
    sdf.emit(data.iloc[:1000])
    upper.value = 50.0
    sdf.emit(data.iloc[1000:2000])
    got = pd.concat(out, ignore_index=True)
    tm.assert_series_equal(got["is_anomaly"].iloc[:1000], (data["cpu"].iloc[:1000] > 90),
                           check_names=False)
    tm.assert_series_equal(got["is_anomaly"].iloc[1000:].reset_index(drop=True),
                           (data["cpu"].iloc[1000:2000] > 50).reset_index(drop=True),
                           check_names=False)


def level_shift() -> pd.DataFrame:
    t = pd.date_range("2026-01-01", periods=400, freq="s")
    rng = np.random.default_rng(0)
    x = 10 + rng.normal(0, 1, 400)
    x[200:] += 50
    return pd.DataFrame({"timestamp": t, "host": "a", "cpu": x})


def test_protect_learns_a_lasting_level_shift_for_ewma():
    """Protected, EWMA holds out the first min_periods (5) rows of the shift, then learns
    the flagged rows too: the shift becomes the new normal about as fast as unprotected."""
    df = level_shift()
    plain = stream(df, EWMA(alpha=0.2, threshold=6, min_periods=5), 5)
    guarded = stream(df, EWMA(alpha=0.2, threshold=6, min_periods=5), 5, protect=True)
    assert not plain["is_anomaly"].iloc[:200].any() and not guarded["is_anomaly"].iloc[:200].any()
    assert plain["is_anomaly"].iloc[200:].sum() < 10
    assert guarded["is_anomaly"].iloc[200:205].all()  # held out
    assert guarded["is_anomaly"].iloc[200:].sum() <= plain["is_anomaly"].iloc[200:].sum() + 5


def test_protect_learns_a_lasting_level_shift_for_a_zscore_window():
    """Protected, the 2-minute window holds out the shift's first min_periods (5) rows,
    then learns it: a few more flags than unprotected, not the whole window's worth."""
    df = level_shift()
    plain = stream(df, ZScore("2min", threshold=4, min_periods=5), 5)
    guarded = stream(df, ZScore("2min", threshold=4, min_periods=5), 5, protect=True)
    assert guarded["is_anomaly"].iloc[200:205].all()
    assert plain["is_anomaly"].iloc[200:320].sum() < 20  # the shift itself enters the stats
    assert guarded["is_anomaly"].iloc[200:].sum() <= plain["is_anomaly"].iloc[200:].sum() + 5
    assert not guarded["is_anomaly"].iloc[:200].any()


def test_protect_equals_a_plain_loop(data):
    """protect=True for any batch split equals one pass of the textbook loop."""
    df = data[data["host"] == "web-01"].reset_index(drop=True).iloc[:3000]
    got = stream(df, ZScore("3min", threshold=2.5, min_periods=5), 9, protect=True)
    t = df["timestamp"].to_numpy().view(np.int64)
    x = df["cpu"].to_numpy()
    exp = zscore_protect_loop(x, t, 180 * 10**9, 5, 2.5)
    # atol: a row equal to its window's mean scores 0 in two passes, ~1e-16 from running sums
    np.testing.assert_allclose(got["score"], exp, rtol=1e-9, atol=1e-12)


def zscore_protect_loop(x: np.ndarray, t: np.ndarray, w: int, mp: int,
                        limit: float) -> np.ndarray:
    """ZScore with protect, row by row: mean and std (ddof=1, floored) of the learned rows'
    values in ``[t - w, t)`` (see :func:`detector_oracles.protected_loop`)."""
    return protected_loop(
        x, t, w, mp, limit,
        lambda xi, v: (xi - v.mean()) / floored(v.std(ddof=1), v.mean()), two_sided=True)


def test_zscore_protect_all_keys_equals_the_loop_for_any_split():
    """Several keys, missing values, spikes: the compiled loop gives the textbook scores
    whatever the batches (random cuts, one row, 1,000 rows, all at once)."""
    x, codes, t = keyed_series(2500, 5, 14)
    t = t // 20  # ~50 ms apart: ~250 rows per key in a 1 min window
    w = 60 * 10**9
    expected = np.full(len(x), np.nan)
    for k in np.unique(codes):
        rows = codes == k
        expected[rows] = zscore_protect_loop(x[rows], t[rows], w, 5, 2.5)
    assert np.count_nonzero(np.abs(expected) > 2.5) > 40  # rows held out
    splits = {"random": batches(len(x), 6),
              "1 row": [slice(i, i + 1) for i in range(len(x))],
              "1,000 rows": [slice(i, i + 1000) for i in range(0, len(x), 1000)],
              "whole": [slice(0, len(x))]}
    for split, parts in splits.items():
        det = ZScore("1min", threshold=2.5, min_periods=5)
        got = np.concatenate([det.process(x[s], codes[s], t[s], protect=True)[0]
                              for s in parts])
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=split)


def test_zscore_protect_holding_nothing_out_equals_no_protect():
    """With no row above the threshold, protect changes nothing, to the last bit."""
    x, codes, t = keyed_series(3000, 4, 15)
    cuts = batches(len(x), 8)
    plain = ZScore("2min", threshold=np.inf, min_periods=3)
    guarded = ZScore("2min", threshold=np.inf, min_periods=3)
    for s in cuts:
        expected = plain.process(x[s], codes[s], t[s])[0]
        got = guarded.process(x[s], codes[s], t[s], protect=True)[0]
        np.testing.assert_array_equal(got, expected)


def test_zscore_protect_of_a_flat_window():
    """A window of equal values has std 0, floored at 1e-9 of the mean: another value scores
    large but finite (and is held out), the same value 0, as without protect."""
    t = pd.date_range("2026-01-01", periods=6, freq="s")
    x = [1.0, 1.0, 1.0, 1.0, 2.0, 1.0]
    got = ZScore("1min", min_periods=3).process(x, times=t, protect=True)[0]
    np.testing.assert_allclose(got, [np.nan, np.nan, np.nan, 0.0, 1e9, 0.0], rtol=1e-12)


def test_one_value_verbs():
    z = ZScore("1min", threshold=3, min_periods=3)
    t0 = pd.Timestamp("2026-01-01")
    for i, v in enumerate([1.0, 2.0, 1.0, 2.0]):
        z.learn_one(v, t=t0 + pd.Timedelta(i, "s"))
    before = z.score_one(9.0, t=t0 + pd.Timedelta(5, "s"))
    assert before == z.score_one(9.0, t=t0 + pd.Timedelta(5, "s"))  # score_one learns nothing
    assert before == pytest.approx((9 - 1.5) / np.std([1, 2, 1, 2], ddof=1))


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="Threshold needs `upper`, `lower` or both"):
        Threshold()
    with pytest.raises(ConfigError, match="EWMA takes one of `alpha` and `halflife`, not both"):
        EWMA(alpha=0.1, halflife=3)
    with pytest.raises(ConfigError, match="alpha must be in"):
        EWMA(alpha=1.5)
    with pytest.raises(ConfigError, match="min_periods must be an int >= 2"):
        ZScore(min_periods=1)
    with pytest.raises(ConfigError, match="MAD window must be positive"):
        MAD(window="0s")
    with pytest.raises(ConfigError, match="MAD min_periods must be an int >= 1"):
        MAD(min_periods=0)
    sdf = rtnb.StreamingFrame(pd.DataFrame({"host": pd.Series([], dtype=str)}))
    with pytest.raises(ConfigError, match="no numeric column 'host'"):
        sdf.detect(Threshold(upper=1), on="host")


@pytest.mark.parametrize("batch_rows", [500, 10_000, 200_000])
def test_absence_finds_the_silent_host_whatever_the_batches(batch_rows):
    """cache-02 stops reporting 14:05-14:10 in the bundled day; nothing else is silent."""
    from rtnb.detect import absence

    day = rtnb.datasets.metrics()
    day = day[(day["timestamp"] >= "2026-01-05 13:00") & (day["timestamp"] < "2026-01-05 15:00")]
    sdf = rtnb.StreamingFrame(day.iloc[:0], time="timestamp")
    out = absence(sdf, "1min", by="host").collect()
    for lo in range(0, len(day), batch_rows):
        sdf.emit(day.iloc[lo:lo + batch_rows])
    events = pd.concat(out, ignore_index=True)
    # pandas: per host, consecutive rows 1 min or more apart
    gaps = day.sort_values(["host", "timestamp"]).assign(
        prev=lambda d: d.groupby("host")["timestamp"].shift())
    gaps = gaps[gaps["timestamp"] - gaps["prev"] >= pd.Timedelta("1min")]
    assert len(gaps) == 1 and gaps["host"].iloc[0] == "cache-02"
    expected = pd.DataFrame({
        "time": [gaps["prev"].iloc[0] + pd.Timedelta("1min"), gaps["timestamp"].iloc[0]],
        "host": ["cache-02", "cache-02"], "is_silent": [True, False],
        "last_seen": [gaps["prev"].iloc[0]] * 2})
    tm.assert_frame_equal(events, expected, check_dtype=False)


def test_absence_alerts_fire_and_resolve():
    from rtnb.detect import absence

    day = rtnb.datasets.metrics()
    day = day[(day["timestamp"] >= "2026-01-05 14:00") & (day["timestamp"] < "2026-01-05 14:20")]
    sdf = rtnb.StreamingFrame(day.iloc[:0], time="timestamp")
    silent = absence(sdf, "1min", by="host")
    alerts = rtnb.alert(silent, "is_silent", by="host", name="silent").collect()
    sdf.emit(day)
    got = pd.concat(alerts, ignore_index=True)
    assert got[["host", "state"]].values.tolist() == [["cache-02", "firing"],
                                                      ["cache-02", "resolved"]]
    result = rtnb.evaluate(got, rtnb.datasets.incidents().query("kind == 'host_silent'"))
    assert result.recall == 1.0 and result.precision == 1.0


@pytest.mark.parametrize("seed", [1, 2])
def test_rolling_quantile_equals_pandas(data, seed):
    from rtnb.detect import RollingQuantile

    got = stream(data, RollingQuantile("5min", q=0.95, factor=1.2, min_periods=20), seed)

    def expected(g: pd.DataFrame) -> pd.Series:
        q = g.set_index("timestamp")["cpu"].rolling("5min", closed="left", min_periods=20) \
            .quantile(0.95).to_numpy()
        return pd.Series(g["cpu"].to_numpy() / (1.2 * q), index=g.index)

    exp = per_host(data, expected)
    np.testing.assert_allclose(got["score"], exp, rtol=1e-12)
    assert got["is_anomaly"].tolist() == (exp > 1).tolist()


def test_rolling_quantile_protect_equals_a_plain_loop(data):
    from rtnb.detect import RollingQuantile

    df = data[data["host"] == "web-02"].reset_index(drop=True).iloc[:2000]
    got = stream(df, RollingQuantile("2min", q=0.9, factor=1.1, min_periods=10), 4,
                 protect=True)
    t = df["timestamp"].to_numpy().view(np.int64)
    x = df["cpu"].to_numpy()
    exp = protected_loop(x, t, 120 * 10**9, 10, 1.0,
                         lambda xi, v: xi / (1.1 * np.quantile(v, 0.9)))
    np.testing.assert_allclose(got["score"], exp, rtol=1e-12)


def test_score_one_leaves_every_detector_as_it_was():
    from rtnb.detect import RollingQuantile

    t0 = pd.Timestamp("2026-01-01")
    for det in (ZScore("1min", min_periods=2), EWMA(alpha=0.3, min_periods=2),
                RateOfChange(threshold=1), RollingQuantile("1min", min_periods=2),
                MAD("1min", min_periods=2), Threshold(upper=1)):
        for i, v in enumerate([1.0, 2.0, 1.5]):
            det.learn_one(v, t=t0 + pd.Timedelta(i, "s"))
        at = t0 + pd.Timedelta(5, "s")
        first = det.score_one(9.0, t=at)
        assert det.score_one(9.0, t=at) == first, det


# -- every key of a batch at once: the same scores as the textbook loop per key ---------------
def ewma_loop(x: np.ndarray, a: float, mp: int, limit: float | None = None) -> np.ndarray:
    """The recursion row by row (std floored); with ``limit`` (protect), anomalous rows are
    not learned while the held-out count (+1 each, -1 per normal row) is below ``mp``."""
    mean, var, n, held = np.nan, 0.0, 0, 0
    out = np.full(len(x), np.nan)
    for i, xi in enumerate(x):
        if xi != xi:
            continue
        if n >= max(mp, 1):
            out[i] = (xi - mean) / floored(np.sqrt(var), mean)
        if limit is not None and abs(out[i]) > limit:
            if held < max(mp, 1):
                held += 1
                continue
        else:
            held = max(held - 1, 0)
        if n == 0:
            mean, var = xi, 0.0
        else:
            d = xi - mean
            mean += a * d
            var = (1 - a) * (var + a * d * d)
        n += 1
    return out


def batches(n: int, seed: int, cuts: int = 25) -> list[slice]:
    rng = np.random.default_rng(seed)
    at = np.sort(rng.choice(np.arange(1, n), cuts, replace=False))
    return [slice(lo, hi) for lo, hi in zip([0, *at], [*at, n], strict=True)]


def keyed_series(n: int, keys: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values with spikes and missing values, key codes (uneven: key 0 has half the rows),
    strictly increasing ns times."""
    rng = np.random.default_rng(seed)
    x = rng.normal(50, 5, n)
    x[rng.random(n) < 0.01] += 80
    x[rng.random(n) < 0.01] = np.nan
    codes = np.where(rng.random(n) < 0.5, 0, rng.integers(0, keys, n))
    t = np.cumsum(rng.integers(1, 2_000_000_000, n))
    return x, codes, t


@pytest.mark.parametrize("alpha", [0.001, 0.1, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("protect", [False, True])
def test_ewma_all_keys_at_once_equals_the_loop_per_key(alpha, protect):
    """Many rows per key in a batch (blocks chained), a hot key, every alpha, protect."""
    x, codes, t = keyed_series(6000, 7, 3)
    det = EWMA(alpha=alpha, threshold=3, min_periods=5)
    got = np.concatenate([det.process(x[s], codes[s], t[s], protect=protect)[0]
                          for s in batches(len(x), 4)])
    expected = np.full(len(x), np.nan)
    for k in np.unique(codes):
        rows = codes == k
        expected[rows] = ewma_loop(x[rows], alpha, 5, 3.0 if protect else None)
    np.testing.assert_array_equal(got, expected)


def ewma_state(det: EWMA) -> dict[int, tuple[float, float, int]]:
    """The detector's snapshot as key code -> (mean, var, n)."""
    snap = det.snapshot()
    return {int(k): (m, v, int(n))
            for k, (m, v, n) in zip(snap["keys"].tolist(), snap["ewm"].tolist(), strict=True)}


@pytest.mark.parametrize("protect", [False, True])
def test_ewma_equals_the_per_event_loop_for_any_split(protect):
    """Exactly the per-event recursion, whatever the batches (random cuts, one row, 1,000
    rows, all at once), with the same state after; the state pickles and resumes."""
    x, codes, t = keyed_series(5000, 9, 21)
    codes[4000:4010] = 50  # a new key whose values are all missing: it learns nothing
    x[4000:4010] = np.nan
    limit = 3.0 if protect else None
    expected = np.full(len(x), np.nan)
    for k in np.unique(codes):
        rows = codes == k
        expected[rows] = ewma_loop(x[rows], 0.05, 10, limit)
    splits = {"random": batches(len(x), 5),
              "1 row": [slice(i, i + 1) for i in range(len(x))],
              "1,000 rows": [slice(i, i + 1000) for i in range(0, len(x), 1000)],
              "whole": [slice(0, len(x))]}
    states = []
    for split, parts in splits.items():
        det = EWMA(alpha=0.05, threshold=3, min_periods=10)
        got = np.concatenate([det.process(x[s], codes[s], t[s], protect=protect)[0]
                              for s in parts])
        np.testing.assert_array_equal(got, expected, err_msg=split)
        states.append(ewma_state(det))
    assert all(state == states[0] for state in states)
    assert 50 not in states[0] and len(states[0]) == 9

    half = len(x) // 2
    det = EWMA(alpha=0.05, threshold=3, min_periods=10)
    det.process(x[:half], codes[:half], t[:half], protect=protect)
    resumed = EWMA(alpha=0.05, threshold=3, min_periods=10)
    resumed.restore(pickle.loads(pickle.dumps(det.snapshot())))
    got = resumed.process(x[half:], codes[half:], t[half:], protect=protect)[0]
    np.testing.assert_array_equal(got, expected[half:])


def test_ewma_one_value_verbs_equal_process():
    x, _, _ = keyed_series(300, 1, 2)
    det = EWMA(alpha=0.2, threshold=3, min_periods=5)
    expected = EWMA(alpha=0.2, threshold=3, min_periods=5).process(x)[0]
    got = []
    for xi in x:
        got.append(det.score_one(xi))
        det.learn_one(xi)
    np.testing.assert_array_equal(np.array(got), expected)


def test_ewma_alpha_and_threshold_are_params():
    """A Param is read at every batch: the new alpha and threshold apply from the next one."""
    x, _, _ = keyed_series(400, 1, 3)
    alpha = Param(0.1, min=0.01, max=1.0, name="alpha")
    threshold = Param(3.0, min=0.5, max=10.0, name="threshold")
    det = EWMA(alpha=alpha, threshold=threshold, min_periods=5)
    det.process(x[:200], protect=True)
    alpha.value, threshold.value = 0.3, 1.5
    got = det.process(x[200:], protect=True)[0]
    loop = EWMA(alpha=0.1, threshold=3, min_periods=5)
    loop.process(x[:200], protect=True)
    mean, var, n = ewma_state(loop)[0]
    expected = np.full(200, np.nan)
    held = 0
    for i, xi in enumerate(x[200:]):
        if xi != xi:
            continue
        if n >= 5:
            expected[i] = (xi - mean) / floored(np.sqrt(var), mean)
        if abs(expected[i]) > 1.5:
            if held < 5:
                held += 1
                continue
        else:
            held = max(held - 1, 0)
        d = xi - mean
        mean, var, n = mean + 0.3 * d, (1 - 0.3) * (var + 0.3 * d * d), n + 1
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("halflife", [1.0, 30.0])
def test_ewma_halflife_equals_pandas_ewm_mean(halflife):
    """``halflife`` rows: the mean before each row is pandas ``ewm(halflife, adjust=False)``."""
    x, _, _ = keyed_series(3000, 1, 8)
    x = x[~np.isnan(x)]
    det = EWMA(halflife=halflife, threshold=3, min_periods=2)
    got = np.concatenate([det.process(x[s])[0] for s in batches(len(x), 2)])
    mean = pd.Series(x).ewm(halflife=halflife, adjust=False).mean().to_numpy()
    a = 1 - np.exp(-np.log(2) / halflife)
    var = pd.Series(np.r_[0.0, (1 - a) * (x[1:] - mean[:-1]) ** 2]).ewm(
        alpha=a, adjust=False).mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.r_[np.nan, (x[1:] - mean[:-1]) / np.sqrt(var[:-1])]
    expected[:2] = np.nan
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_rate_of_change_protect_equals_a_plain_loop():
    x, codes, t = keyed_series(4000, 5, 6)
    det = RateOfChange(threshold=30, per="1s")
    got = np.concatenate([det.process(x[s], codes[s], t[s], protect=True)[0]
                          for s in batches(len(x), 7)])
    expected = np.full(len(x), np.nan)
    last: dict[int, tuple[int, float]] = {}
    for i, (xi, k, ti) in enumerate(zip(x, codes, t, strict=True)):
        lt, lx = last.get(k, (0, np.nan))
        if ti != lt:
            expected[i] = (xi - lx) / (ti - lt) * 1e9
        if xi == xi and not abs(expected[i]) > 30:  # a missing value is not learned
            last[k] = (ti, xi)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_rate_of_change_any_key_codes():
    """Key codes beyond 16 bits and negative ones group like small ones."""
    x, codes, t = keyed_series(2000, 4, 1)
    small = RateOfChange(threshold=1).process(x, codes, t)[0]
    for shift in (70_000, -3):
        got = RateOfChange(threshold=1).process(x, codes * shift, t)[0]
        np.testing.assert_array_equal(got, small)


# -- MAD --------------------------------------------------------------------------------------
def pandas_mad(g: pd.DataFrame, window: str, mp: int) -> pd.Series:
    """|x - median| / scale of the window before each row, from pandas' rolling windows
    (scale: :func:`robust_scale`)."""
    r = g.set_index("timestamp")["cpu"].rolling(window, closed="left", min_periods=mp)
    med = r.median().to_numpy()
    scale = r.apply(robust_scale, raw=True).to_numpy()
    return pd.Series(np.abs(g["cpu"].to_numpy() - med) / scale, index=g.index)


@pytest.mark.parametrize("seed", [1, 2])
def test_mad_equals_pandas(data, seed):
    got = stream(data, MAD("5min", threshold=3.5, min_periods=10), seed)
    exp = per_host(data, lambda g: pandas_mad(g, "5min", 10))
    np.testing.assert_allclose(got["score"], exp, rtol=1e-12)
    assert got["is_anomaly"].tolist() == (exp > 3.5).tolist()
    assert got["is_anomaly"].sum() > 10  # the spikes are found


def test_mad_of_a_flat_window_and_ties():
    """Equal values: MAD and mean deviation 0, so the scale is the floor (1e-9 of the
    median): another value scores large but finite, the same value 0; then the window holds
    the 6: MAD 0 but a mean deviation."""
    t = pd.date_range("2026-01-01", periods=8, freq="s")
    x = [5.0, 5.0, 5.0, 5.0, 6.0, 5.0, 5.0, 5.0]
    got, flags = MAD("1min", threshold=3, min_periods=3).process(x, times=t)
    df = pd.DataFrame({"timestamp": t, "cpu": x})
    np.testing.assert_allclose(got, pandas_mad(df, "1min", 3).to_numpy(), rtol=1e-12)
    assert got[4] == pytest.approx(1 / 5e-9) and got[3] == 0.0
    assert got[5] == 0.0 and flags.tolist() == [False] * 4 + [True] + [False] * 3


def test_mad_protect_equals_a_plain_loop(data):
    df = data[data["host"] == "db-01"].reset_index(drop=True).iloc[:2500]
    got = stream(df, MAD("2min", threshold=3, min_periods=10), 4, protect=True)
    t = df["timestamp"].to_numpy().view(np.int64)
    x = df["cpu"].to_numpy()
    exp = protected_loop(x, t, 120 * 10**9, 10, 3.0,
                         lambda xi, v: abs(xi - np.median(v)) / robust_scale(v))
    np.testing.assert_allclose(got["score"], exp, rtol=1e-12)
    assert got["is_anomaly"].sum() > 0


def test_mad_window_is_a_param():
    window = Param("1min", min="10s", max="10min", name="window")
    det = MAD(window, threshold=3, min_periods=3)
    t = pd.date_range("2026-01-01", periods=200, freq="s")
    x = np.random.default_rng(2).normal(size=200)
    det.process(x[:100], times=t[:100])
    window.value = "20s"
    got = det.process(x[100:], times=t[100:])[0]
    df = pd.DataFrame({"timestamp": t, "cpu": x})
    np.testing.assert_allclose(got, pandas_mad(df, "20s", 3).to_numpy()[100:], rtol=1e-12)


def test_batch_verbs_learn_and_score():
    """``score`` gives what ``process`` would and changes nothing; ``learn`` is ``process``."""
    x, codes, t = keyed_series(3000, 4, 5)
    for make in (lambda: ZScore("1min", min_periods=3), lambda: EWMA(alpha=0.2),
                 lambda: RateOfChange(threshold=5), lambda: MAD("1min", min_periods=3)):
        a, b = make(), make()
        a.learn(x[:2000], codes[:2000], t[:2000])
        b.process(x[:2000], codes[:2000], t[:2000])
        first = a.score(x[2000:], codes[2000:], t[2000:])
        np.testing.assert_array_equal(a.score(x[2000:], codes[2000:], t[2000:]), first)
        np.testing.assert_array_equal(b.process(x[2000:], codes[2000:], t[2000:])[0], first)


def mad_by_key(x: np.ndarray, codes: np.ndarray, t: np.ndarray, window: str,
               mp: int) -> np.ndarray:
    """``pandas_mad`` per key of a keyed series, in the rows' order."""
    df = pd.DataFrame({"timestamp": t.view("datetime64[ns]"), "cpu": x, "key": codes})
    expected = np.full(len(x), np.nan)
    for _, g in df.groupby("key"):
        expected[g.index.to_numpy()] = pandas_mad(g, window, mp).to_numpy()
    return expected


@pytest.mark.parametrize(("window", "mp", "decimals"),
                         [("30s", 1, None), ("5min", 10, None), ("5min", 4, 0),
                          ("3h", 2, 1)])
def test_mad_all_keys_equals_pandas_for_any_split(window, mp, decimals):
    """Several keys, missing values, spikes, ties (rounded values), a window longer than
    the series, odd and even counts: the warm-started split search gives pandas' values,
    whatever the batches (random cuts, one row, 1,000 rows, all at once: the sorted windows
    carried from batch to batch)."""
    x, codes, t = keyed_series(2500, 5, 12)
    if decimals is not None:
        x = np.round(x / 5, decimals)
    expected = mad_by_key(x, codes, t, window, mp)
    splits = {"random": batches(len(x), 3),
              "1 row": [slice(i, i + 1) for i in range(len(x))],
              "1,000 rows": [slice(i, i + 1000) for i in range(0, len(x), 1000)],
              "whole": [slice(0, len(x))]}
    for split, parts in splits.items():
        det = MAD(window, threshold=3.5, min_periods=mp)
        got = np.concatenate([det.process(x[s], codes[s], t[s])[0] for s in parts])
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=split)


@pytest.mark.parametrize("protect", [False, True])
def test_mad_checkpoint_mid_stream_resumes_exactly(data, tmp_path, protect):
    """Saved mid-stream (each key's sorted window with it) and restored into a freshly
    built pipeline, MAD goes on exactly as one uninterrupted run."""
    from rtnb.state import Checkpoint

    def build():
        src = rtnb.sources.replay(data, name="m")
        return src, src.detect(MAD("5min", threshold=3.5, min_periods=10), on="cpu",
                               by="host", protect=protect)

    parts = [data.iloc[s].reset_index(drop=True) for s in batches(len(data), 7, cuts=12)]
    src, node = build()
    expected = node.collect()
    for part in parts:
        src.emit(part)
    src.close()

    src_a, node_a = build()
    got = node_a.collect()
    for part in parts[:6]:
        src_a.emit(part)
    Checkpoint(tmp_path / "s.db").save(rtnb.Pipeline(src_a))
    src_b, node_b = build()
    assert Checkpoint(tmp_path / "s.db").restore(rtnb.Pipeline(src_b))
    node_b.stream.sink(got.append)
    for part in parts[6:]:
        src_b.emit(part)
    src_b.close()
    result = pd.concat(got, ignore_index=True)
    tm.assert_frame_equal(result, pd.concat(expected, ignore_index=True))
    assert result["is_anomaly"].sum() > 10


def test_mad_resumes_from_a_state_without_sorted_values():
    """A key's state as checkpoints held it before MAD kept its window sorted,
    ``(times, values)``, goes on as the current state does."""
    x, codes, t = keyed_series(3000, 3, 4)
    det, old = MAD("5min", min_periods=5), MAD("5min", min_periods=5)
    det.process(x[:2000], codes[:2000], t[:2000])
    snap = det.snapshot()
    ends = np.cumsum(snap["count"])
    old.restore({int(k): (snap["times"][e - c:e], snap["values"][e - c:e])
                 for k, c, e in zip(snap["keys"], snap["count"], ends, strict=True)})
    expected = det.process(x[2000:], codes[2000:], t[2000:])[0]
    np.testing.assert_array_equal(old.process(x[2000:], codes[2000:], t[2000:])[0], expected)


def test_kernels_compile_where_no_cache_can_be_written(monkeypatch):
    """Read-only install and home: numba finds no cache directory, so the kernels are
    compiled without one instead of failing at import."""
    import numba.core.caching

    from rtnb._jit import jit

    def read_only(self):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(numba.core.caching._CacheLocator, "ensure_cache_path", read_only)
    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(lambda v: v + 1)
    assert jit(lambda v: v + 1)(1) == 2


def test_mad_min_periods_counts_values_not_rows():
    """Missing values do not count towards min_periods."""
    t = pd.date_range("2026-01-01", periods=6, freq="s")
    x = [1.0, np.nan, 2.0, np.nan, 4.0, 3.0]
    got = MAD("1min", threshold=3, min_periods=3).process(x, times=t)[0]
    df = pd.DataFrame({"timestamp": t, "cpu": x})
    np.testing.assert_array_equal(got, pandas_mad(df, "1min", 3).to_numpy())
    assert np.isnan(got[:5]).all() and got[5] == pytest.approx(1 / 1.4826)


def test_mad_one_value_verbs_equal_process():
    x, _, t = keyed_series(300, 1, 2)
    det = MAD("1min", threshold=3, min_periods=5)
    expected = MAD("1min", threshold=3, min_periods=5).process(x, times=t)[0]
    got = []
    for xi, ti in zip(x, t, strict=True):
        got.append(det.score_one(xi, t=pd.Timestamp(int(ti))))
        det.learn_one(xi, t=pd.Timestamp(int(ti)))
    np.testing.assert_array_equal(np.array(got), expected)
