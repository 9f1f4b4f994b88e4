"""Every detector on many keys and small batches: random batch splits give the scores of one
batch and of pandas per key; a snapshot taken mid-stream (pickled) resumes exactly; the
one-value verbs leave the state as it was; any integer key codes."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from detector_oracles import random_split, robust_scale, run

import rtnb
from rtnb.detect import EWMA, MAD, RateOfChange, RollingQuantile, Threshold, ZScore

MAKERS = {
    "zscore": lambda: ZScore("30s", threshold=2.5, min_periods=3),
    "mad": lambda: MAD("30s", threshold=3, min_periods=3),
    "quantile": lambda: RollingQuantile("30s", q=0.9, factor=1.1, min_periods=3),
    "ewma": lambda: EWMA(alpha=0.2, threshold=2.5, min_periods=3),
    "rate": lambda: RateOfChange(threshold=20),
    "threshold": lambda: Threshold(upper=60, lower=40),
    "zscore_rows": lambda: ZScore(rtnb.rows(20), threshold=2.5, min_periods=3),
    "mad_rows": lambda: MAD(rtnb.rows(20), threshold=3, min_periods=3),
    "quantile_rows": lambda: RollingQuantile(rtnb.rows(20), q=0.9, factor=1.1, min_periods=3),
    "ewma_default": EWMA,
    "rate_robust": RateOfChange,
}


def many_keys(n: int, keys: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values with spikes, missing values and ties; key codes; increasing ns times (~0.1 s
    apart, so a 30 s window holds ~300 rows over all keys)."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(50, 5, n), 1)
    x[rng.random(n) < 0.02] += 60
    x[rng.random(n) < 0.01] = np.nan
    codes = rng.integers(0, keys, n)
    t = np.cumsum(rng.integers(1, 200_000_000, n))
    return x, codes, t


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("protect", [False, True])
def test_small_random_batches_equal_one_batch(name, protect):
    """60 keys, batches of 1 to 20 rows: the same scores as the whole stream at once."""
    x, codes, t = many_keys(4000, 60, 3)
    whole = run(MAKERS[name](), x, codes, t, [slice(0, len(x))], protect)
    got = run(MAKERS[name](), x, codes, t, random_split(len(x), 4, 20), protect)
    np.testing.assert_array_equal(got, whole)


def by_key(x, codes, t, func) -> np.ndarray:
    df = pd.DataFrame({"t": t.view("datetime64[ns]"), "x": x, "k": codes})
    out = np.full(len(x), np.nan)
    for _, g in df.groupby("k"):
        out[g.index.to_numpy()] = func(g.set_index("t")["x"])
    return out


def test_many_keys_equal_pandas_per_key():
    """ZScore, MAD and RollingQuantile against pandas' rolling(closed="left") per key."""
    x, codes, t = many_keys(5000, 80, 5)
    parts = random_split(len(x), 6, 50)

    def rolling(s: pd.Series) -> pd.core.window.Rolling:
        return s.rolling("30s", closed="left", min_periods=3)

    def zscore(s: pd.Series) -> np.ndarray:
        r = rolling(s)
        return ((s - r.mean()) / r.std()).to_numpy()

    def mad(s: pd.Series) -> np.ndarray:
        r = rolling(s)
        return ((s - r.median()).abs() / r.apply(robust_scale, raw=True)).to_numpy()

    def quantile(s: pd.Series) -> np.ndarray:
        return (s / (1.1 * rolling(s).quantile(0.9))).to_numpy()

    with np.errstate(divide="ignore", invalid="ignore"):
        for name, func, rtol in (("zscore", zscore, 1e-7), ("mad", mad, 1e-12),
                                 ("quantile", quantile, 1e-12)):
            expected = by_key(x, codes, t, func)
            got = run(MAKERS[name](), x, codes, t, parts)
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("name", list(MAKERS))
def test_snapshot_mid_stream_pickles_and_resumes(name):
    """Restored into a new detector from a pickled snapshot, it goes on exactly as the
    uninterrupted one; the snapshot is not changed by what the first detector does after."""
    x, codes, t = many_keys(3000, 40, 7)
    parts = random_split(len(x), 8, 30)
    half = len(parts) // 2
    det = MAKERS[name]()
    run(det, x, codes, t, parts[:half], protect=True)
    saved = pickle.dumps(det.snapshot())
    rest = slice(parts[half].start, len(x))
    expected = det.process(x[rest], codes[rest], t[rest], protect=True)[0]
    resumed = MAKERS[name]()
    resumed.restore(pickle.loads(saved))
    got = resumed.process(x[rest], codes[rest], t[rest], protect=True)[0]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", list(MAKERS))
def test_score_and_score_one_change_nothing(name):
    x, codes, t = many_keys(2000, 30, 9)
    det, twin = MAKERS[name](), MAKERS[name]()
    for d in (det, twin):
        d.process(x[:1500], codes[:1500], t[:1500])
    at = pd.Timestamp(int(t[1500]))
    for key in (0, 7, 999):  # known keys and a new one
        first = det.score_one(80.0, key=key, t=at)
        assert det.score_one(80.0, key=key, t=at) == first or np.isnan(first)
    det.score(x[1500:1700], codes[1500:1700], t[1500:1700])
    got = det.process(x[1500:], codes[1500:], t[1500:])[0]
    np.testing.assert_array_equal(got, twin.process(x[1500:], codes[1500:], t[1500:])[0])


@pytest.mark.parametrize("name", ["zscore", "mad", "quantile", "ewma", "rate", "zscore_rows",
                                  "mad_rows", "quantile_rows", "rate_robust"])
def test_any_integer_key_codes(name):
    """Codes beyond the slot table and negative ones give the scores of small codes."""
    x, codes, t = many_keys(2000, 12, 10)
    expected = MAKERS[name]().process(x, codes, t)[0]
    for codes_as in (codes * 1_000_003, codes - 6, codes + (1 << 40)):
        np.testing.assert_array_equal(MAKERS[name]().process(x, codes_as, t)[0], expected)


def test_windows_grow_and_move():
    """Keys whose windows fill at very different rates (rings and blocks grow and the pools
    are packed many times) keep pandas' scores; a long window against a short one."""
    rng = np.random.default_rng(12)
    n = 20_000
    codes = np.where(rng.random(n) < 0.7, 0, rng.integers(1, 300, n))
    t = np.cumsum(rng.integers(1, 20_000_000, n))
    x = rng.normal(0, 1, n)
    for det, window in ((MAD("10min", threshold=3, min_periods=1), "10min"),
                        (RollingQuantile("10min", q=0.25, min_periods=1), "10min")):
        got = run(det, x, codes, t, random_split(n, 13, 400))
        rows = codes == 0
        s = pd.Series(x[rows], index=pd.DatetimeIndex(t[rows].view("datetime64[ns]")))
        r = s.rolling(window, closed="left", min_periods=1)
        if isinstance(det, MAD):
            expected = ((s - r.median()).abs() / r.apply(robust_scale, raw=True)).to_numpy()
        else:  # 1 + (x - q) / |q|: x / q for q > 0, sign-safe for negative quantiles
            q = r.quantile(0.25)
            expected = (1 + (s - q) / q.abs()).to_numpy()
        np.testing.assert_allclose(got[rows], expected, rtol=1e-12, err_msg=repr(det))


def test_old_per_key_snapshots_restore():
    """The per-key dicts earlier versions saved (checkpoints on disk) are still taken."""
    t = pd.date_range("2026-01-01", periods=4, freq="s").to_numpy().view(np.int64)
    x = np.array([1.0, 2.0, np.nan, 4.0])
    z = ZScore("1min", min_periods=2)
    z.restore({3: (t[:3], x[:3])})
    expected = ZScore("1min", min_periods=2)
    expected.process(x[:3], [3, 3, 3], t[:3])
    assert z.score_one(4.0, key=3, t=pd.Timestamp(int(t[3]))) == \
        expected.score_one(4.0, key=3, t=pd.Timestamp(int(t[3])))
    e = EWMA(alpha=0.5, min_periods=1)
    e.restore({5: (2.0, 1.0, 3)})
    assert e.score_one(4.0, key=5) == 2.0
    r = RateOfChange(threshold=1)
    r.restore({1: (0, 1.0)})
    assert r.score_one(3.0, key=1, t=pd.Timestamp(2 * 10**9)) == 1.0
