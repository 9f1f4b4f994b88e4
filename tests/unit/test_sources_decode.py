"""Batch decoding and coercion of source messages: the fast paths equal the one-by-one way."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtnb.sources._coerce import _coerce_general, coerce
from rtnb.sources._decode import Decoder, make_decoder

EXAMPLE = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                        "host": pd.Series([], dtype="str"),
                        "cpu": pd.Series([], dtype="float64"),
                        "n": pd.Series([], dtype="int64"),
                        "up": pd.Series([], dtype="bool")})


def one_by_one(decoder: Decoder, payloads: list[Any]) -> tuple[list[Any], list[int],
                                                               list[tuple[int, str]]]:
    return Decoder.decode_batch(decoder, payloads)


# -- decoding ------------------------------------------------------------------------------
JSON_PAYLOADS = [
    b'{"a": 1}', '{"a": "x"}', b'[{"a": 2}, {"a": 3}]', b"[]", b"not json", b"",
    b'{"a": 1}\n{"a": 2}', b'{\n "a": 1\n}', b' {"a": 4} ', b"1", b"[1, 2]", b'"s"',
    b'{"a": 1}, {"b": 2}', b"[1", b"2]", '{"h": "h\u00e9llo"}'.encode(), b"\xff\xfe",
    b'{"a": 1e400}', b"null", b'{"a": {"b": [1, 2]}}', b"12", b"3.5e-1",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(JSON_PAYLOADS), max_size=12))
def test_json_batch_decoding_equals_one_by_one(payloads):
    decoder = make_decoder("json", EXAMPLE)
    assert decoder.decode_batch(payloads) == one_by_one(decoder, payloads)


def test_json_batch_decoding_takes_the_fast_path_for_clean_objects(monkeypatch):
    decoder = make_decoder("json", EXAMPLE)
    payloads = [json.dumps({"a": i, "s": "\u00e9" * (i % 3)}).encode() for i in range(50)]
    monkeypatch.setattr(type(decoder), "decode", lambda *_: pytest.fail("one by one"))
    records, owners, failed = decoder.decode_batch(payloads)
    assert records == [json.loads(p) for p in payloads]
    assert owners == list(range(50)) and failed == []


MSGPACK_PAYLOADS = [msgpack.packb({"a": 1}), msgpack.packb([{"a": 2}, {"a": 3}]),
                    msgpack.packb(5), b"\xc1", msgpack.packb({"a": 1}) * 2, b"",
                    '{"a": 1}', msgpack.packb({"t": 1.5, "h": "x"})]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(MSGPACK_PAYLOADS), max_size=10))
def test_msgpack_batch_decoding_equals_one_by_one(payloads):
    decoder = make_decoder("msgpack", EXAMPLE)
    assert decoder.decode_batch(payloads) == one_by_one(decoder, payloads)


# -- coercion ------------------------------------------------------------------------------
TIMES = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01.5+02:00", "2026-01-01", 1767225600,
         1767225600.25, "1767225601", "20260101", "yesterday", None, float("nan"), True,
         "2026-13-01T00:00:00", 10**30, 10**400]
HOSTS = ["a", "b", 7, None, 1.5, float("nan")]
CPUS = [1.5, 2, "3.25", "high", None, float("nan"), True, 2**70, -(10**400)]
NS = [1, 2, "3", 4.0, 4.5, None, "x", True, 2**64, 2**63, 2**63 - 1, -(2**63), "inf",
      float("inf")]
UPS = [True, False, "true", 1, 0, "maybe", None]
MISSING = object()


def record(t: Any, host: Any, cpu: Any, n: Any, up: Any) -> dict[str, Any]:
    fields = {"t": t, "host": host, "cpu": cpu, "n": n, "up": up}
    return {k: v for k, v in fields.items() if v is not MISSING}


@settings(max_examples=400, deadline=None)
@given(st.lists(st.builds(record, st.sampled_from([*TIMES, MISSING]),
                          st.sampled_from([*HOSTS, MISSING]), st.sampled_from([*CPUS, MISSING]),
                          st.sampled_from([*NS, MISSING]), st.sampled_from([*UPS, MISSING])),
                max_size=8),
       st.sampled_from(["s", "ms"]))
def test_coerce_equals_the_general_path(records, unit):
    result = coerce(records, EXAMPLE, time_unit=unit)
    expected = _coerce_general(records, EXAMPLE, unit)
    tm.assert_frame_equal(result[0], expected[0])
    assert result[1].tolist() == expected[1].tolist()
    assert result[2] == expected[2]


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_clean_records_take_the_fast_path_with_the_example_dtypes(unit):
    scale = 1 if unit == "s" else 1000
    records = [{"t": "2026-01-01T00:00:00.5Z", "host": "a", "cpu": 1, "n": 3, "up": True},
               {"t": "2026-01-01T01:00:00.5+01:00", "host": "b", "cpu": 2.5, "n": -1,
                "up": False}]
    numeric = [{**r, "t": 1767225600.5 * scale} for r in records]
    expected = pd.DataFrame({"t": pd.to_datetime(["2026-01-01 00:00:00.5"] * 2),
                             "host": ["a", "b"], "cpu": [1.0, 2.5], "n": [3, -1],
                             "up": [True, False]}).astype(EXAMPLE.dtypes.to_dict())
    for batch in (records, numeric):
        good, bad, reasons = coerce(batch, EXAMPLE, time_unit=unit)
        tm.assert_frame_equal(good, expected)
        assert not bad.any() and reasons == []


def test_an_unclean_column_falls_back_with_the_reason():
    records = [{"t": 0, "host": "a", "cpu": 1.0, "n": 1, "up": True},
               {"t": 1, "host": "b", "cpu": 2.0, "n": 2.5, "up": True}]
    good, bad, reasons = coerce(records, EXAMPLE)
    assert len(good) == 1 and bad.tolist() == [False, True]
    assert len(reasons) == 1 and reasons[0].startswith("column 'n' (int64): ")
    assert reasons[0] == "column 'n' (int64): 2.5 is not an integer"  # not np.float64(2.5)
    assert good["t"].dtype == np.dtype("datetime64[ns]")


def test_numbers_out_of_range_are_bad_rows_not_errors_or_wrapped_values():
    """JSON has integers of any size: too large for the column is a reason, not a crash."""
    example = pd.DataFrame({"x": pd.Series([], dtype="float64"),
                            "n": pd.Series([], dtype="int64"),
                            "m": pd.Series([], dtype="int32"),
                            "u": pd.Series([], dtype="uint64")})
    ok = {"x": 1.5, "n": 2**63 - 1, "m": -(2**31), "u": 2**64 - 1}
    records = [ok, {**ok, "x": 10**400}, {**ok, "n": 2**63}, {**ok, "m": 2**31},
               {**ok, "u": -1}, {**ok, "n": "-9223372036854775809"}, {**ok, "n": "1e400"},
               {**ok, "m": float("-inf")}]
    good, bad, reasons = coerce(records, example)
    assert bad.tolist() == [False, True, True, True, True, True, True, True]
    assert good.to_dict("records") == [ok]
    assert reasons[0] == ("column 'x' (float64): 1000000000000000000000000000000000000000"
                          "...(401 characters) is out of range for float64")
    assert reasons[1:] == ["column 'n' (int64): 9223372036854775808 is out of range for int64",
                           "column 'm' (int32): 2147483648 is out of range for int32",
                           "column 'u' (uint64): -1 is out of range for uint64",
                           "column 'n' (int64): '-9223372036854775809' is out of range for "
                           "int64",
                           "column 'n' (int64): '1e400' is out of range for int64",
                           "column 'm' (int32): -inf is out of range for int32"]
    # alone in its batch (the per-column fast path) the same
    for i, record in enumerate(records[1:]):
        assert coerce([record], example)[2] == [reasons[i]]


# -- server-sent events ----------------------------------------------------------------------
SSE_LINES = ["data: {\"a\": 1}", "data:{\"a\": 2}", "data: x", "data", "data: ", ": comment",
             "id: 7", "id: 8", "event: tick", "event: other", "retry: 10", "data: two words",
             "id:9"]


def sse_reference(text: str, event: str | None) -> list[tuple[str, str | None]]:
    """The event-stream parser rtnb had before (line by line, as httpx splits lines)."""
    out: list[tuple[str, str | None]] = []
    last_id: str | None = None
    data: list[str] = []
    event_id, kind = None, "message"
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[:-1]:
        if line == "":
            if data and (event is None or kind == event):
                if event_id is not None:
                    last_id = event_id
                out.append(("\n".join(data), last_id))
            data, event_id, kind = [], None, "message"
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
        elif field == "event":
            kind = value
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(SSE_LINES), max_size=4), max_size=12),
       st.sampled_from(["\n", "\r\n", "\r"]), st.lists(st.integers(1, 40), max_size=30),
       st.sampled_from([None, "tick"]))
def test_sse_events_cut_from_chunks_equal_a_line_by_line_parser(events, eol, cuts, event):
    """Whatever the chunking and the line ends, the same payloads and last event ids."""
    import rtnb
    from rtnb.sources._sse import EventBlocks

    text = "".join(eol.join(lines) + eol + eol for lines in events)
    source = rtnb.sources.sse("http://127.0.0.1:1/", example={"a": "float64"},
                              event=event).source
    blocks, got, at = EventBlocks(), [], 0
    for size in [*cuts, len(text)]:
        chunk, at = text[at:at + size], at + size
        for payload in source._payloads(blocks.feed(chunk)):
            got.append((payload, source.last_event_id))
    assert got == sse_reference(text, event)


WIDE = pd.DataFrame({
    "t": pd.Series([], dtype="datetime64[ns]"),
    "tz": pd.Series([], dtype="datetime64[ns, Europe/Paris]"),
    "us": pd.Series([], dtype="datetime64[us]"),
    "s": pd.Series([], dtype="str"), "sp": pd.Series([], dtype="string[python]"),
    "o": pd.Series([], dtype=object), "c": pd.Series([], dtype=pd.CategoricalDtype(["a", "b"])),
    "f": pd.Series([], dtype="float64"), "f32": pd.Series([], dtype="float32"),
    "nf": pd.Series([], dtype="Float64"), "i32": pd.Series([], dtype="int32"),
    "ni": pd.Series([], dtype="Int64"), "b": pd.Series([], dtype=bool),
    "nb": pd.Series([], dtype="boolean")})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "t": st.sampled_from(["2026-01-01T00:00:00.5Z", 1767225600, 1767225600.25]),
    "tz": st.sampled_from(["2026-01-01T00:00:00Z", "2026-06-01T12:00:00+02:00"]),
    "us": st.sampled_from(["2026-01-01T00:00:00.000001Z", 1767225600]),
    "s": st.sampled_from(["a", "b"]), "sp": st.sampled_from(["a", "b"]),
    "o": st.sampled_from(["a", "b"]), "c": st.sampled_from(["a", "b", "zz"]),
    "f": st.sampled_from([1.5, 2, None]), "f32": st.sampled_from([0.25, 3]),
    "nf": st.sampled_from([0.5, 1]), "i32": st.sampled_from([1, -7, 2**31]),
    "ni": st.sampled_from([1, 5]), "b": st.booleans(), "nb": st.booleans()}),
    min_size=1, max_size=6))
def test_every_example_dtype_takes_the_array_path_as_the_general_one(records):
    """The array fast path builds exactly the frame the general path builds, for every dtype
    an example can declare (times with a zone or in us, nullable numbers, categories)."""
    result = coerce(records, WIDE)
    expected = _coerce_general(records, WIDE, "s")
    tm.assert_frame_equal(result[0], expected[0])
    assert result[1].tolist() == expected[1].tolist()
    assert result[2] == expected[2]
    assert result[0].dtypes.tolist() == WIDE.dtypes.tolist()


def test_a_value_outside_the_categories_is_a_bad_row_not_a_silent_nan():
    records = [{"c": "a"}, {"c": "zz"}, {"c": "b"}]
    example = WIDE[["c"]]
    good, bad, reasons = coerce(records, example)
    assert good["c"].tolist() == ["a", "b"] and bad.tolist() == [False, True, False]
    assert reasons == ["column 'c' (category): 'zz' is not one of the column's categories"]


def test_a_categorical_example_without_categories_is_refused():
    from rtnb.errors import ConfigError
    from rtnb.sources._coerce import as_example

    with pytest.raises(ConfigError, match="categorical with no categories"):
        as_example({"host": "category"}, "feed 'x'")
    with pytest.raises(ConfigError, match="categorical with no categories"):
        as_example(pd.DataFrame({"host": pd.Series([], dtype="category")}), "feed 'x'")
