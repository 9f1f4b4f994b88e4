"""The per-batch shortcuts of small micro-batches (issue 16) give what the general paths give:
the remembered schema layout, the time column read from it, column labels compared by
identity, Arrow key buffers kept for the last parent, output frames built from blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import rtnb
from rtnb import _frames
from rtnb.detect import EWMA, Threshold
from rtnb.errors import SchemaError
from rtnb.windows.keys import KeyRegistry


def _frame(n: int, seed: int = 0, tz: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = pd.to_datetime(np.sort(rng.integers(0, 10**12, n)))
    return pd.DataFrame({
        "timestamp": t.tz_localize(tz) if tz else t,
        "host": pd.Series([f"h{i}" for i in rng.integers(0, 7, n)], dtype=str),
        "cpu": rng.normal(50, 5, n),
    })


def test_schema_accepts_slices_and_refuses_other_dtypes_and_orders() -> None:
    df = _frame(50)
    schema = _frames.Schema(df.iloc[:0], time="timestamp")
    for i in range(0, 50, 10):  # the first accepted slice makes the layout known
        part = df.iloc[i:i + 10]
        assert schema.matches(part)
        np.testing.assert_array_equal(schema.times_ns(part),
                                      _frames.times_ns(part, "timestamp"))
    assert not schema.matches(df.astype({"cpu": "float32"}))
    assert not schema.matches(df[["host", "timestamp", "cpu"]])
    assert not schema.matches(df.rename(columns={"cpu": "load"}))
    assert schema.matches(df.iloc[3:9])  # a refused batch forgets no accepted layout
    # a batch built on its own (no shared labels or placements) takes the full check
    fresh = pd.DataFrame({c: df[c].to_numpy()[:5] for c in df.columns}).astype(
        {"host": str})
    assert schema.matches(fresh)
    np.testing.assert_array_equal(schema.times_ns(fresh), _frames.times_ns(fresh, "timestamp"))
    # and the slices of the first frame still match (by the full check, then remembered)
    assert schema.matches(df.iloc[20:30])


def test_schema_times_of_a_tz_aware_column_are_utc_instants() -> None:
    df = _frame(20, tz="Europe/Paris")
    schema = _frames.Schema(df.iloc[:0], time="timestamp")
    part = df.iloc[5:15]
    assert schema.matches(part)
    np.testing.assert_array_equal(schema.times_ns(part), _frames.times_ns(part, "timestamp"))


def test_emit_of_batches_cut_from_several_frames() -> None:
    """Batches alternate between parents (different labels arrays and block placements),
    with a bad batch and missing event times among them: the output is the input, the bad
    batch refused and the rows without a time dead-lettered."""
    a, b = _frame(300, seed=1), _frame(300, seed=2)
    b.loc[[7, 8], "timestamp"] = pd.NaT
    sdf = rtnb.StreamingFrame(a.iloc[:0], time="timestamp")
    out = sdf.collect()
    dead = sdf.dead_letters.collect()
    sent = []
    for i in range(0, 300, 50):
        for part in (a.iloc[i:i + 50], b.iloc[i:i + 50]):
            sdf.emit(part)
            sent.append(part.dropna(subset=["timestamp"]))
        if i == 100:
            with pytest.raises(SchemaError, match="must be float64"):
                sdf.emit(a.iloc[i:i + 50].astype({"cpu": "float32"}))
    pd.testing.assert_frame_equal(pd.concat(out), pd.concat(sent))
    assert sum(len(d) for d in dead) == 2


@pytest.mark.parametrize("detector", [EWMA(alpha=0.2, min_periods=2), Threshold(upper=52.0)])
def test_detect_on_small_slices_equals_one_batch(detector: object) -> None:
    df = _frame(400, seed=3)
    whole = rtnb.StreamingFrame(df.iloc[:0], time="timestamp")
    expected_out = whole.detect(type(detector)(**_args(detector)), on="cpu", by="host").collect()
    whole.emit(df)
    sdf = rtnb.StreamingFrame(df.iloc[:0], time="timestamp")
    out = sdf.detect(detector, on="cpu", by="host").collect()
    for i in range(0, 400, 30):
        sdf.emit(df.iloc[i:i + 30])
    result = pd.concat(out)
    expected = expected_out[0]
    pd.testing.assert_frame_equal(result, expected)
    result.loc[result.index[0], "cpu"] = -1.0  # the output's blocks are shared Copy-on-Write
    assert df["cpu"].min() > -1.0


def _args(detector: object) -> dict[str, object]:
    if isinstance(detector, EWMA):
        return {"alpha": detector.alpha, "min_periods": detector.min_periods}
    assert isinstance(detector, Threshold)
    return {"upper": detector.upper}


def test_same_labels_by_identity_and_by_value() -> None:
    df = _frame(10)
    a, b = df.iloc[:5].columns, df.iloc[5:].columns
    assert a is not b and _frames.same_labels(a, b)
    assert _frames.same_labels(a, pd.Index(["timestamp", "host", "cpu"]))
    assert not _frames.same_labels(a, pd.Index(["timestamp", "cpu", "host"]))


@pytest.mark.parametrize("arrow", [pa.string(), pa.large_string()])
def test_arrow_keys_of_alternating_parents(arrow: pa.DataType) -> None:
    """Slices of two parents in turn: the buffers kept for the last parent are never
    used for the other's rows."""
    rng = np.random.default_rng(11)
    dtype = pd.StringDtype("pyarrow", na_value=np.nan) if arrow == pa.large_string() \
        else "string[pyarrow]"
    words = [f"key-{i}" for i in range(40)]
    parents = [pd.DataFrame({"k": pd.array(pa.array([words[j] for j in rng.integers(
        0, 40, 1000)], type=arrow), dtype=dtype)}) for _ in range(2)]
    reg = KeyRegistry(["k"], parents[0].iloc[:0])
    known: dict[str, int] = {}
    for i in range(0, 1000, 100):
        for p in parents:
            part = p.iloc[i:i + 100]
            want = [known.setdefault(v, len(known)) for v in part["k"].tolist()]
            assert reg.codes(part).tolist() == want


def test_column_reader_equals_column_on_every_layout() -> None:
    df = pd.DataFrame({
        "t": pd.to_datetime(np.arange(30) * 10**9),
        "tz": pd.date_range("2026-01-01", periods=30, freq="s", tz="UTC"),
        "x": np.arange(30.0), "y": np.arange(30.0) * 2, "i": np.arange(30),
        "s": pd.Series([f"k{i % 4}" for i in range(30)], dtype=str),
        "c": pd.Categorical([f"c{i % 3}" for i in range(30)]),
    })
    readers = {c: _frames.ColumnReader(c) for c in df.columns}
    times = {c: _frames.ColumnReader(c, times=True) for c in ("t", "tz")}
    parts = [df.iloc[i:i + 7] for i in range(0, 30, 7)]
    parts += [df[df.columns[::-1]], df.assign(x=-df["x"]), pd.concat([df, df]), df.iloc[:0]]
    for part in parts * 2:  # every layout after another one, and again
        for c, read in readers.items():
            got, want = read(part), _frames.column(part, c)
            pd.testing.assert_series_equal(pd.Series(got), pd.Series(want))
        for c, read in times.items():
            np.testing.assert_array_equal(read(part), _frames.times_ns(part, c))
    import pickle
    again = pickle.loads(pickle.dumps(readers["x"]))  # pandas' placements do not pickle
    np.testing.assert_array_equal(again(parts[1]), parts[1]["x"].to_numpy())


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]", "string[python]", "category",
                                   "object"])
def test_key_array_equals_take_of_the_known_keys(dtype: str) -> None:
    keys = pd.Series(["b", "ü-ß", "", "web-01", "a" * 40, "b"], dtype=dtype)
    reg = KeyRegistry(["k"], pd.DataFrame({"k": keys.iloc[:0]}))
    reg.codes(pd.DataFrame({"k": keys}))
    known = pd.array(["b", "ü-ß", "", "web-01", "a" * 40], dtype=keys.dtype)
    for codes in ([0, 4, 4, 2, 1, 3], [], [3]):
        idx = np.array(codes, dtype=np.intp)
        result = reg.array("k", idx)
        expected = known.take(idx)
        assert result.dtype == expected.dtype
        pd.testing.assert_extension_array_equal(result, expected)
        if dtype in ("str", "string[pyarrow]"):  # built from the keys' bytes, not by take
            assert reg._plan is not None
            assert reg._plan.gather(reg._table, known, idx) is not None
    # a null key among the known ones: pandas' take
    reg.codes(pd.DataFrame({"k": pd.Series([None, "b"], dtype=dtype)}))
    result = reg.array("k", np.array([5, 0], dtype=np.intp))
    assert pd.isna(result[0]) and result[1] == "b"


@pytest.mark.parametrize("lean", [False, True])
def test_lean_emit_calls_downstreams_as_streamz_does(lean: bool) -> None:
    """Order of downstreams, results, a destroyed downstream and metadata (refs released)."""
    from streamz import RefCounter, Stream

    from rtnb.stateful import LeanMap, LeanStream

    source = LeanStream() if lean else Stream()
    seen: list[tuple[str, int]] = []
    doubled = LeanMap(source, lambda x: 2 * x) if lean else source.map(lambda x: 2 * x)
    doubled.sink(lambda x: seen.append(("a", x)))
    gone = source.sink(lambda x: seen.append(("gone", x)))
    source.sink(lambda x: seen.append(("b", x)))
    source.emit(1)
    gone.destroy()
    source.emit(2)
    ref = RefCounter()
    source.emit(3, metadata=[{"ref": ref}])
    assert seen == [("a", 2), ("gone", 1), ("b", 1), ("a", 4), ("b", 2), ("a", 6), ("b", 3)]
    assert ref.count == 0  # every downstream released the batch's reference


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]"])
def test_take_of_arrow_strings_without_nulls_equals_pandas(dtype: str) -> None:
    """Strings gathered from their Arrow buffers: slices at an offset, any order of
    positions, empty strings and multi-byte characters, the empty take."""
    rng = np.random.default_rng(3)
    words = np.array(["", "a", "ü-ß", "日本", "x" * 70, "web-01"], dtype=object)
    df = pd.DataFrame({"s": pd.Series(words[rng.integers(0, 6, 300)], dtype=dtype),
                       "x": np.arange(300.0)})
    for part in (df, df.iloc[37:251]):
        mask = rng.random(len(part)) < 0.4
        pd.testing.assert_frame_equal(_frames.take(part, mask), part[mask])
        positions = rng.permutation(len(part))[:50]
        pd.testing.assert_frame_equal(_frames.take(part, positions), part.take(positions))
        pd.testing.assert_frame_equal(_frames.take(part, np.array([-1, 0])),
                                      part.take([-1, 0]))  # negative: pandas' take
    none = np.zeros(len(df), dtype=bool)
    pd.testing.assert_frame_equal(_frames.take(df, none), df[none])
