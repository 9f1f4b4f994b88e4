"""Issue 16's per-batch fast paths in rtnb._frames give exactly what pandas gives: the
planned column append (``Appender``) and the frame constructor every helper shares."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from rtnb import _frames

N = 30


def _batch(n: int = N, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array(["a", "b", None], dtype=object)[rng.integers(0, 3, n)]
    return pd.DataFrame({
        "t": pd.to_datetime(rng.integers(0, 10**12, n)),
        "tz": pd.date_range("2026-01-01", periods=n, freq="s", tz="UTC"),
        "x": rng.normal(0, 1, n),
        "i": rng.integers(-5, 5, n),
        "ni": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(-5, 5, n)),
                       dtype="Int64"),
        "s": pd.Series(words, dtype="str"),
        "o": pd.Series(words, dtype=object),
        "c": pd.Categorical(words),
    })


def test_from_manager_is_what_from_mgr_builds() -> None:
    df = _batch()
    got = _frames.from_manager(df._mgr)
    expected = pd.DataFrame._from_mgr(df._mgr, axes=df._mgr.axes)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(got, expected)
    assert set(vars(got)) == set(vars(expected))
    assert got.attrs == {} and got.flags.allows_duplicate_labels
    assert got.flags._obj() is got  # the flags belong to the new frame
    got.attrs["units"] = {"x": "%"}  # attrs of its own
    assert expected.attrs == {}


@pytest.mark.parametrize("cut", ["whole", "slices", "labels"])
def test_appender_equals_assign_on_every_slice(cut: str) -> None:
    df = _batch()
    if cut == "labels":
        df = df.set_index("s", drop=False)
    append = _frames.Appender(["score", "flag"])
    spans = [(0, N)] if cut == "whole" else [(0, 7), (7, 8), (8, 8), (8, N)]
    for lo, hi in spans:  # slices share the labels array: planned once, reused
        part = df.iloc[lo:hi]
        score = np.arange(hi - lo, dtype=np.float64) * 1.5
        flag = score > 3
        got = append(part, [score, flag])
        pd.testing.assert_frame_equal(got, part.assign(score=score, flag=flag))


def test_appender_keeps_copy_on_write_both_ways() -> None:
    df = _batch()
    score = np.zeros(N)
    got = _frames.Appender(["score"])(df, [score])
    got.loc[0, "x"] = 1e9  # writing into the result copies first
    got.loc[1, "score"] = -1.0
    assert df["x"].max() < 1e9
    df.loc[2, "i"] = 99  # and writing into the input does not reach the result
    assert got.loc[2, "i"] != 99


def test_appender_other_layouts_and_arrays_take_with_columns() -> None:
    df = _batch()
    append = _frames.Appender(["score", "reason"])
    score = np.linspace(0, 1, N)
    reasons = pd.array(["spike", None] * (N // 2), dtype=pd.StringDtype(na_value=np.nan))
    pd.testing.assert_frame_equal(append(df, [score, reasons]),
                                  df.assign(score=score, reason=reasons))
    # another layout (columns in another order) is planned again
    other = df[df.columns[::-1]]
    pd.testing.assert_frame_equal(append(other, [score, reasons]),
                                  other.assign(score=score, reason=reasons))
    # object arrays and 2-D arrays are not appended as blocks: assign decides
    words = np.array(["w"] * N, dtype=object)
    pd.testing.assert_frame_equal(append(df, [score, words]),
                                  df.assign(score=score, reason=words))
    # a name the batch has already replaces that column, as assign does
    replace = _frames.Appender(["x"])
    pd.testing.assert_frame_equal(replace(df, [score]), df.assign(x=score))
    with pytest.raises(ValueError, match="3 values"):
        append(df, [np.zeros(3), reasons])
    with pytest.raises(ValueError, match="1 arrays for the 2 columns"):
        append(df, [score])


def test_appender_pickles_without_its_plan() -> None:
    append = _frames.Appender(["score"])
    df = _batch()
    append(df, [np.zeros(N)])
    again = pickle.loads(pickle.dumps(append))
    pd.testing.assert_frame_equal(again(df, [np.ones(N)]), df.assign(score=np.ones(N)))
