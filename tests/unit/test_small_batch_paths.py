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
