"""rtnb._frames (block-level take / column append) and the array path of StreamingSeries
masks give exactly what pandas gives, on every dtype a batch can hold."""

from __future__ import annotations

import operator

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rtnb
from rtnb import _frames

N = 40


def _every_dtype(n: int = N, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array(["a", "b", "c", None], dtype=object)[rng.integers(0, 4, n)]
    x = rng.normal(0, 1, n)
    x[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame({
        "t": pd.to_datetime(rng.integers(0, 10**12, n)),
        "tz": pd.date_range("2026-01-01", periods=n, freq="s", tz="UTC"),
        "td": pd.to_timedelta(rng.integers(0, 100, n), unit="s"),
        "x": x,
        "i": rng.integers(-5, 5, n),
        "ni": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(-5, 5, n)),
                       dtype="Int64"),
        "b": rng.random(n) < 0.5,
        "nb": pd.array(np.where(rng.random(n) < 0.2, None, rng.random(n) < 0.5),
                       dtype="boolean"),
        "s": pd.Series(words, dtype="str"),
        "sp": pd.Series(words, dtype="string[python]"),
        "sa": pd.Series(words, dtype="string[pyarrow]"),
        "o": pd.Series(words, dtype=object),
        "c": pd.Categorical(words),
        "f32": x.astype(np.float32),
    })


@pytest.mark.parametrize("index", ["default", "offset", "labels", "empty"])
@given(seed=st.integers(0, 2**31), share=st.floats(0, 1))
@settings(max_examples=25, deadline=None)
def test_take_equals_pandas_on_every_dtype(index: str, seed: int, share: float) -> None:
    df = _every_dtype(seed=seed)
    if index == "offset":
        df = df.iloc[7:]
    elif index == "labels":
        df = df.set_index("s", drop=False)
    elif index == "empty":
        df = df.iloc[:0]
    mask = np.random.default_rng(seed).random(len(df)) < share
    pd.testing.assert_frame_equal(_frames.take(df, mask), df[mask])
    positions = np.flatnonzero(mask)[::-1].copy()  # any order, as DataFrame.take
    pd.testing.assert_frame_equal(_frames.take(df, positions), df.take(positions))


def test_take_of_every_row_is_the_frame_and_writes_never_leak() -> None:
    df = _every_dtype()
    assert _frames.take(df, np.ones(len(df), dtype=bool)) is df
    part = _frames.take(df, np.arange(5))
    part.loc[part.index[0], "x"] = 1e9
    assert df["x"].max() < 1e9


def test_take_of_arrow_strings_in_several_chunks_with_nulls_equals_pandas() -> None:
    # a mask takes Arrow strings with Arrow's filter, chunk by chunk (concat leaves two)
    words = pd.concat([pd.Series(["a", None, "ccc"], dtype="str"),
                       pd.Series(["dd", "e", None, "ff"], dtype="str")], ignore_index=True)
    df = pd.DataFrame({"s": words, "sa": words.astype("string[pyarrow]"),
                       "x": np.arange(7.0)}).iloc[1:]
    assert df["s"].array._pa_array.num_chunks == 2
    strided = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1], dtype=bool)[::2]  # a view
    for mask in (np.array([1, 0, 1, 1, 0, 1], dtype=bool), np.zeros(6, dtype=bool), strided):
        got = _frames.take(df, mask)
        pd.testing.assert_frame_equal(got, df[mask])
        assert got["s"].dtype == df["s"].dtype and got["sa"].dtype == df["sa"].dtype
    one = df.iloc[2:3]  # a batch of one row: dropped, then kept
    pd.testing.assert_frame_equal(_frames.take(one, np.zeros(1, dtype=bool)), one.iloc[:0])
    assert _frames.take(one, np.ones(1, dtype=bool)) is one


def test_take_refuses_a_mask_of_another_length() -> None:
    with pytest.raises(IndexError, match="length 3"):
        _frames.take(_every_dtype(), np.ones(3, dtype=bool))


def test_with_columns_equals_assign_and_keeps_copy_on_write() -> None:
    df = _every_dtype()
    score = np.arange(len(df), dtype=np.float64)
    flag = score > 10
    got = _frames.with_columns(df, ["score", "flag"], [score, flag])
    pd.testing.assert_frame_equal(got, df.assign(score=score, flag=flag))
    cached = df.columns.append(pd.Index(["score", "flag"]))
    pd.testing.assert_frame_equal(
        _frames.with_columns(df, ["score", "flag"], [score, flag], columns=cached), got)
    got.loc[0, "x"] = 1e9  # writing into the result copies first (pandas Copy-on-Write)
    got.loc[1, "score"] = -1.0
    assert df["x"].max() < 1e9
    df.loc[2, "i"] = 99  # and writing into the input does not reach the result
    assert got.loc[2, "i"] != 99
    # an existing name replaces the column, other arrays go through assign: same result
    pd.testing.assert_frame_equal(_frames.with_columns(df, ["x"], [score]),
                                  df.assign(x=score))
    words = np.array(["p"] * len(df), dtype=object)
    pd.testing.assert_frame_equal(_frames.with_columns(df, ["w"], [words]),
                                  df.assign(w=words))
    with pytest.raises(ValueError, match="3 values"):
        _frames.with_columns(df, ["short"], [np.zeros(3)])
    # pandas' string arrays (a detector's reason) take the fast path, missing values included
    reasons = pd.array(["spike", None] * (len(df) // 2) + ["dip"] * (len(df) % 2),
                       dtype=pd.StringDtype(na_value=np.nan))
    got = _frames.with_columns(df, ["score", "reason"], [score, reasons])
    pd.testing.assert_frame_equal(got, df.assign(score=score, reason=reasons))
    assert got["reason"].dtype == pd.StringDtype(na_value=np.nan)


def test_column_and_schema() -> None:
    df = _every_dtype()
    for name in df.columns:
        a = _frames.column(df, name)
        b = df[name].array
        assert type(a) is type(b) or isinstance(a, np.ndarray)
        pd.testing.assert_series_equal(pd.Series(a, name=name, dtype=df[name].dtype), df[name],
                                       check_index=False)
    types = _frames.dtypes(df)
    assert types == df.dtypes.tolist()
    assert _frames.same_schema(df, df.columns, types)
    assert not _frames.same_schema(df.astype({"x": "float32"}), df.columns, types)
    assert not _frames.same_schema(df[df.columns[::-1]], df.columns, types)


OPS = [(operator.gt, 0), (operator.le, 0.5), (operator.eq, 1), (operator.ne, 0),
       (operator.lt, -1), (operator.ge, 2)]


@pytest.mark.parametrize("col", ["x", "i", "ni", "f32", "nb", "b"])
@pytest.mark.parametrize(("op", "value"), OPS)
def test_fast_masks_equal_the_series_form(col: str, op: object, value: float) -> None:
    df = _every_dtype()
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    expr = op(sdf[col], value)  # type: ignore[operator]
    compound = [expr, ~expr, expr & (sdf["x"] > -0.5), expr | sdf["b"],
                (sdf[col] * 2 + 1 > value) if col != "nb" and col != "b" else expr,
                sdf[col].isna(), sdf[col].notna()]
    for e in compound:
        assert e.values is not None, e.name
        want = e.func(df).fillna(False).to_numpy(dtype=bool)
        np.testing.assert_array_equal(e.mask_of(df), want, err_msg=e.name)


@pytest.mark.parametrize("col", ["s", "sp", "sa", "o", "c"])
def test_string_masks_equal_the_series_form(col: str) -> None:
    df = _every_dtype()
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    for e in [sdf[col] == "a", sdf[col] != "b", sdf[col].isna(), sdf[col].isin(["a", "c"]),
              (sdf[col] == "a") | (sdf[col] == "c")]:
        want = e.func(df).fillna(False).to_numpy(dtype=bool)
        np.testing.assert_array_equal(e.mask_of(df), want, err_msg=e.name)


def test_filter_through_the_frame_equals_pandas_with_a_param() -> None:
    df = _every_dtype()
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    limit = rtnb.Param(0.0, min=-5.0, max=5.0, name="limit")
    out = sdf[(sdf["x"] > limit) & (sdf["s"] == "a")].collect()
    sdf.emit(df)
    limit.value = -1.0
    sdf.emit(df)
    want0 = df[(df["x"] > 0.0) & (df["s"] == "a")]
    want1 = df[(df["x"] > -1.0) & (df["s"] == "a")]
    pd.testing.assert_frame_equal(out[0], want0)
    pd.testing.assert_frame_equal(out[1], want1)


def test_empty_has_the_schema_and_is_a_new_frame() -> None:
    df = _every_dtype()
    for example in (df, df.iloc[:0]):
        got = _frames.empty(example)
        pd.testing.assert_frame_equal(got, df.iloc[:0].reset_index(drop=True))
        got["extra"] = 1  # the caller's frame is its own
        assert "extra" not in example.columns


def test_times_and_floats_equal_pandas_conversions() -> None:
    df = _every_dtype()
    df.loc[3, "t"] = pd.NaT
    df["us"] = df["t"].astype("datetime64[us]")
    for col in ("t", "us"):
        np.testing.assert_array_equal(_frames.times_ns(df, col),
                                      df[col].astype("datetime64[ns]").to_numpy().view("i8"))
    np.testing.assert_array_equal(_frames.times_ns(df, "tz"),
                                  df["tz"].dt.tz_localize(None).astype("datetime64[ns]")
                                  .to_numpy().view("i8"))
    for col in ("x", "i", "ni", "f32", "b"):
        np.testing.assert_array_equal(_frames.floats(df, col),
                                      df[col].to_numpy(dtype=np.float64, na_value=np.nan))


@pytest.mark.parametrize("col", ["x", "i", "ni", "f32", "b", "nb"])
def test_assign_of_expressions_equals_pandas(col: str) -> None:
    df = _every_dtype()
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    factor = rtnb.Param(2.0, min=0.0, max=10.0, name="factor")
    out = sdf.assign(double=sdf[col] * factor, ratio=sdf["x"] / sdf["i"],
                     flag=sdf[col] > 0, shifted=1 - sdf[col]).collect()
    sdf.emit(df)
    factor.value = 3.0
    sdf.emit(df)
    for got, f in zip(out, (2.0, 3.0), strict=True):
        want = df.assign(double=df[col] * f, ratio=df["x"] / df["i"], flag=df[col] > 0,
                         shifted=1 - df[col])
        pd.testing.assert_frame_equal(got, want)


def test_from_arrays_equals_the_dataframe_constructor() -> None:
    df = _every_dtype()
    arrays = [df[c].array if type(df[c].array) is not pd.arrays.NumpyExtensionArray
              else df[c].to_numpy().copy() for c in df.columns]
    arrays[0] = df["t"].to_numpy().copy()  # datetime64[ns] numpy becomes datetimes
    got = _frames.from_arrays(df.columns, arrays)
    pd.testing.assert_frame_equal(got, df)
    empty = _frames.from_arrays(df.columns, [a[:0] for a in arrays])
    pd.testing.assert_frame_equal(empty, df.iloc[:0])
    with pytest.raises(ValueError, match="3 values"):
        _frames.from_arrays(pd.Index(["a", "b"]), [np.zeros(4), np.zeros(3)])


def test_select_equals_pandas_and_keeps_copy_on_write() -> None:
    df = _every_dtype()
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="t")
    cols = ["x", "t", "sa", "ni", "c", "f32"]
    out = sdf[cols].collect()
    sdf.emit(df)
    sdf.emit(df.iloc[5:9])
    pd.testing.assert_frame_equal(out[0], df[cols])
    pd.testing.assert_frame_equal(out[1], df.iloc[5:9][cols])
    out[0].loc[0, "x"] = 1e9
    assert df["x"].max() < 1e9
    got = _frames.select(df, [3, 0], pd.Index(["x", "t"]))
    df.loc[0, "x"] = -1e9  # a write into the source after the select copies first
    assert got.loc[0, "x"] != -1e9
