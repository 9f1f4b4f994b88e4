"""One 100,000-row batch gives what the same rows give in small batches (compiled paths)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import rtnb
from rtnb.detect import EWMA, MAD, RateOfChange, RollingQuantile, ZScore

N, KEYS = 100_000, 500


def _rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    t = pd.Timestamp("2026-01-01").value + np.cumsum(rng.integers(1, 2_000_000, N))
    x = rng.normal(0, 1, N)
    x[rng.random(N) < 0.01] = np.nan
    return t, rng.integers(0, KEYS, N), x


@pytest.mark.parametrize("make", [
    lambda: ZScore("1min", min_periods=3), lambda: MAD("1min", min_periods=3),
    lambda: RollingQuantile("1min", min_periods=3), lambda: EWMA(0.1, min_periods=3),
    lambda: RateOfChange(5)], ids=["zscore", "mad", "quantile", "ewma", "rate"])
def test_a_huge_batch_scores_like_small_ones(make) -> None:
    t, codes, x = _rows()
    whole = make().process(x, codes, t)[0]
    det = make()
    parts = np.concatenate([det.process(x[i:i + 997], codes[i:i + 997], t[i:i + 997])[0]
                            for i in range(0, N, 997)])
    np.testing.assert_allclose(whole, parts, rtol=1e-9, atol=1e-9)
    assert np.isfinite(whole).sum() > N // 2  # most rows scored, not all NaN


def test_a_huge_batch_gives_the_sessions_of_small_ones() -> None:
    t, codes, x = _rows()
    df = pd.DataFrame({"timestamp": pd.to_datetime(t),
                       "host": pd.Series([f"h{c}" for c in codes], dtype="str"), "cpu": x})

    def run(rows: int) -> pd.DataFrame:
        sdf = rtnb.StreamingFrame(df.iloc[:0], time="timestamp")
        out = sdf.window(rtnb.session("20s"), by="host").agg(n=("cpu", "count"),
                                                              m=("cpu", "mean")).collect()
        for i in range(0, N, rows):
            sdf.emit(df.iloc[i:i + rows])
        sdf.close()
        return pd.concat(out).sort_values(["host", "window_start"]).reset_index(drop=True)

    whole = run(N)
    pd.testing.assert_frame_equal(whole, run(333), check_exact=False, rtol=1e-9)
    assert whole["n"].sum() == np.isfinite(x).sum()
