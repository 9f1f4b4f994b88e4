"""A malformed message is a dead letter with its reason; it never stops or stalls a source.

Every source runs under ``asyncio.wait_for``: a stalled source fails the test instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rtnb
from rtnb.sources import _runner
from rtnb.sources._coerce import _coerce_general, coerce
from rtnb.sources._decode import Decoder, make_decoder
from rtnb.sources._runner import BufferedSource, attach

EXAMPLE = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                        "host": pd.Series([], dtype="str"),
                        "cpu": pd.Series([], dtype="float64")})
TIME_RANGE = "is out of range for datetime64[ns] (1677-09-21 .. 2262-04-11)"
DEEP = "[" * 5_000 + "]" * 5_000  # json's decoder raises RecursionError on it


class Feed(BufferedSource):
    """The payloads, read once as if from a broker; then waits (a live feed) until stopped."""

    def __init__(self, payloads: Sequence[bytes | str], **options: Any) -> None:
        options = {"name": "feed", "decoder": "json", "example": EXAMPLE, **options}
        super().__init__(**options)
        self.payloads = list(payloads)

    async def _read(self, stop: asyncio.Event) -> None:
        self._connected()
        for i, payload in enumerate(self.payloads):
            await self._put(payload, i)
        self._drained()
        await stop.wait()


def run(source: BufferedSource, timeout: float = 20) -> tuple[pd.DataFrame, pd.DataFrame,
                                                               rtnb.StreamingFrame]:
    frame = attach(source, "t")
    out, dead = frame.collect(), frame.dead_letters.collect()
    asyncio.run(asyncio.wait_for(frame.arun(), timeout))
    rows = pd.concat(out, ignore_index=True) if out else EXAMPLE.copy()
    dead_rows = pd.concat(dead, ignore_index=True) if dead else pd.DataFrame(
        {"dead_letter_raw": [], "dead_letter_reason": [], "dead_letter_position": []})
    return rows, dead_rows, frame


def good(i: int) -> dict[str, Any]:
    return {"t": f"2026-01-01T00:00:{i:02d}Z", "host": f"h{i % 3}", "cpu": i / 4}


def expected_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    return df.assign(t=pd.to_datetime(df["t"]).dt.tz_localize(None)).astype(
        EXAMPLE.dtypes.to_dict())


# -- coercion: times outside datetime64[ns], non-finite floats --------------------------------
@pytest.mark.parametrize(("t", "unit", "shown"), [
    ("9999-12-31T00:00:00Z", "s", "'9999-12-31T00:00:00Z'"),
    ("1500-01-01", "s", "'1500-01-01'"),
    (253402214400, "s", "253402214400"),
    (253402214400.5, "s", "253402214400.5"),
    (253402214400000, "ms", "253402214400000"),
    (-10**12, "s", "-1000000000000"),
    (10**30, "s", "1000000000000000000000000000000"),
])
def test_a_time_outside_datetime64_ns_is_a_bad_row_with_the_reason(t, unit, shown):
    records = [{"t": "2026-01-01T00:00:00Z" if unit == "s" else 1767225600000, "host": "a",
                "cpu": 1.0},
               {"t": t, "host": "b", "cpu": 2.0}]
    expected = pd.DataFrame({"t": pd.to_datetime(["2026-01-01"]), "host": ["a"], "cpu": [1.0]}
                            ).astype(EXAMPLE.dtypes.to_dict())
    for batch, bad_rows in ((records, [False, True]), (records[1:], [True])):
        good_rows, bad, reasons = coerce(batch, EXAMPLE, time_unit=unit)
        tm.assert_frame_equal(good_rows, expected.iloc[:len(batch) - 1])
        assert bad.tolist() == bad_rows
        assert reasons == [f"column 't' (datetime64[ns]): {shown} {TIME_RANGE}"]
        # the same through the general path, and with another column bad too
        general = _coerce_general(batch, EXAMPLE, unit)
        tm.assert_frame_equal(general[0], good_rows)
        assert general[2] == reasons
    mixed = [*records, {"t": "2026-01-01T00:00:01Z", "host": "c", "cpu": "high"}]
    assert coerce(mixed, EXAMPLE, time_unit=unit)[2][0].endswith(TIME_RANGE)


def test_a_nan_value_is_a_missing_value_like_none():
    records = [{"t": 0, "host": "a", "cpu": float("nan")}, {"t": 1, "host": "b", "cpu": None},
               {"t": 2, "host": "c", "cpu": 2.5}]
    good_rows, bad, reasons = coerce(records, EXAMPLE)
    expected = pd.DataFrame({"t": pd.to_datetime([0, 1, 2], unit="s"), "host": ["a", "b", "c"],
                             "cpu": [np.nan, np.nan, 2.5]}).astype(EXAMPLE.dtypes.to_dict())
    tm.assert_frame_equal(good_rows, expected)
    assert not bad.any() and reasons == []
    tm.assert_frame_equal(_coerce_general(records, EXAMPLE, "s")[0], expected)


@pytest.mark.parametrize(("cpu", "shown"), [
    (float("inf"), "inf"), (float("-inf"), "-inf"), ("inf", "'inf'"),
    ("-Infinity", "'-Infinity'"),
])
def test_an_infinite_float_is_a_bad_row_and_none_stays_missing(cpu, shown):
    records = [{"t": 0, "host": "a", "cpu": 1.5}, {"t": 1, "host": "b", "cpu": cpu},
               {"t": 2, "host": "c", "cpu": None}, {"t": 3, "host": "d"}]
    good_rows, bad, reasons = coerce(records, EXAMPLE)
    expected = pd.DataFrame({"t": pd.to_datetime([0, 2, 3], unit="s"), "host": ["a", "c", "d"],
                             "cpu": [1.5, np.nan, np.nan]}).astype(EXAMPLE.dtypes.to_dict())
    tm.assert_frame_equal(good_rows, expected)
    assert bad.tolist() == [False, True, False, False]
    assert reasons == [f"column 'cpu' (float64): {shown} is not a finite number"]
    for record in records:  # alone in a batch (the fast path) the same as the general path
        fast, general = coerce([record], EXAMPLE), _coerce_general([record], EXAMPLE, "s")
        tm.assert_frame_equal(fast[0], general[0])
        assert fast[2] == general[2]


POISON_TIMES = ["2026-01-01T00:00:00Z", "9999-12-31T00:00:00Z", "1500-01-01", 1767225600,
                253402214400, -(10**12), 10**30, float("inf"), None]
POISON_CPUS = [1.5, 2, None, float("nan"), float("inf"), float("-inf"), "inf", "NaN", 10**400]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({"t": st.sampled_from(POISON_TIMES), "host": st.just("a"),
                                       "cpu": st.sampled_from(POISON_CPUS)}), max_size=6))
def test_the_fast_path_equals_the_general_path_on_poison(records):
    result, expected = coerce(records, EXAMPLE), _coerce_general(records, EXAMPLE, "s")
    tm.assert_frame_equal(result[0], expected[0])
    assert result[1].tolist() == expected[1].tolist() and result[2] == expected[2]


def test_decoders_turn_any_error_of_one_payload_into_its_dead_letter():
    deep = json.dumps(good(1))[:-1] + f', "x": {DEEP}}}'
    payloads = [json.dumps(good(0)).encode(), deep.encode(), json.dumps(good(2)).encode()]
    for batch in (payloads, [p.decode() for p in payloads], payloads[1:2]):
        records, owners, failed = make_decoder("json", EXAMPLE).decode_batch(batch)
        assert [i for i, _ in failed] == [1 if len(batch) == 3 else 0]
        assert failed[0][1].startswith("json decode failed: RecursionError: maximum recursion")
        assert records == [good(0), good(2)][:len(batch) - 1]

    def parse(payload: bytes | str) -> Any:
        if payload == b"boom":
            raise KeyError("boom")
        return json.loads(payload)

    records, owners, failed = make_decoder(parse, EXAMPLE).decode_batch(
        [b'{"a": 1}', b"boom", b'{"a": 2}'])
    assert records == [{"a": 1}, {"a": 2}] and owners == [0, 2]
    assert failed == [(1, "parse decode failed: KeyError: 'boom'")]


# -- a source keeps going past poison ---------------------------------------------------------
def test_poison_messages_are_dead_letters_and_the_source_goes_on():
    records = [good(i) for i in range(12)]
    poison = {
        2: json.dumps({**good(2), "t": "9999-12-31T00:00:00Z"}),
        3: json.dumps({**good(3), "t": 253402214400}),
        5: json.dumps(good(5))[:-1] + f', "x": {DEEP}}}',
        8: '{"t": "2026-01-01T00:00:08Z", "host": "h2", "cpu": Infinity}',
        9: '{"t": "2026-01-01T00:00:09Z", "host": "h0", "cpu": 1e400}',
    }
    payloads = [poison.get(i, json.dumps(r)).encode() for i, r in enumerate(records)]
    payloads[7] = b'{"t": "2026-01-01T00:00:07Z", "host": "h1", "cpu": NaN}'  # missing
    records[7] = {**records[7], "cpu": None}
    payloads.append(json.dumps({**good(12), "cpu": None}).encode())  # missing: kept as NaN
    kept = [r for i, r in enumerate(records) if i not in poison] + [{**good(12), "cpu": None}]
    for max_batch in (4, 10_000):  # poison in several batches, or all in one
        source = Feed(payloads, max_batch=max_batch, max_events=len(kept))
        rows, dead, frame = run(source)

        tm.assert_frame_equal(rows, expected_frame(kept))
        assert dead["dead_letter_raw"].tolist() == [payloads[i] for i in sorted(poison)]
        assert dead["dead_letter_position"].tolist() == [str(i) for i in sorted(poison)]
        reasons = dead["dead_letter_reason"].tolist()
        assert reasons[0] == f"column 't' (datetime64[ns]): '9999-12-31T00:00:00Z' {TIME_RANGE}"
        assert reasons[1] == f"column 't' (datetime64[ns]): 253402214400 {TIME_RANGE}"
        assert reasons[2].startswith("json decode failed: RecursionError: ")
        assert reasons[3:] == [f"column 'cpu' (float64): {v} is not a finite number"
                               for v in ("inf", "inf")]
        stats = source.stats
        assert (stats.messages, stats.events, stats.dead_letters, stats.acked) == \
            (13, 8, 5, 13)
        assert frame.counters.dead_letters == 5
        assert frame.graph.state == "finished" and frame.graph.error is None


class BatchBug(Decoder):
    """A decoder whose fast path fails for a whole batch holding one bad payload."""

    name = "batchbug"

    def decode(self, payload: bytes | str) -> list[dict[str, Any]]:
        if payload == b"boom":
            raise LookupError("no such field")
        return [json.loads(payload)]

    def decode_batch(self, payloads: Sequence[bytes | str]) -> Any:
        if b"boom" in payloads and len(payloads) > 1:
            raise LookupError("no such field")
        return super().decode_batch(payloads)


def test_a_batch_that_fails_as_a_whole_is_processed_one_message_at_a_time(monkeypatch, caplog):
    records = [good(i) for i in range(6)]
    payloads = [json.dumps(r).encode() for r in records]
    payloads[1] = b"boom"
    payloads[4] = json.dumps({**good(4), "host": "kaboom"}).encode()
    real_coerce = _runner.coerce

    def fragile_coerce(batch: list[dict[str, Any]], example: pd.DataFrame,
                       **kwargs: Any) -> Any:
        if any(r.get("host") == "kaboom" for r in batch):
            msg = "coercion bug"
            raise ZeroDivisionError(msg)
        return real_coerce(batch, example, **kwargs)

    monkeypatch.setattr(_runner, "coerce", fragile_coerce)
    source = Feed(payloads, decoder=BatchBug(), max_events=4)
    rows, dead, _ = run(source)
    tm.assert_frame_equal(rows, expected_frame([records[i] for i in (0, 2, 3, 5)]))
    assert dead["dead_letter_raw"].tolist() == [payloads[1], payloads[4]]
    assert dead["dead_letter_reason"].tolist() == [
        "batchbug decode failed: LookupError: no such field",
        "feed could not process the message: ZeroDivisionError: coercion bug"]
    assert source.stats.acked == 6 and source.stats.dead_letters == 2
    assert "one message at a time" in caplog.text


# -- supervision: an unexpected error fails the source, never stalls it -----------------------
def test_a_bug_in_the_batcher_fails_the_source_instead_of_stalling_it(monkeypatch, caplog):
    async def broken(self: BufferedSource, frame: Any, items: Any) -> None:
        msg = "bug in the batcher"
        raise RuntimeError(msg)

    monkeypatch.setattr(Feed, "_process", broken)
    source = Feed([json.dumps(good(i)).encode() for i in range(3)])  # a live feed: no end
    frame = attach(source, "t")

    async def scenario() -> None:
        frame.start()
        with pytest.raises(RuntimeError, match="bug in the batcher"):
            await asyncio.wait_for(frame.wait(), 10)

    asyncio.run(scenario())
    assert frame.graph.state == "failed"
    assert isinstance(frame.graph.error, RuntimeError)
    assert "source of 'feed' failed: RuntimeError: bug in the batcher" in caplog.text


class Cancelled(Feed):
    """A client that lets a cancellation of its own task escape (aiokafka's ``stop()`` did):
    nobody asked the reader to stop."""

    async def _read(self, stop: asyncio.Event) -> None:
        self._connected()
        for i, payload in enumerate(self.payloads):
            await self._put(payload, i)
        await asyncio.sleep(0.05)
        raise asyncio.CancelledError


def test_a_reader_cancelled_by_its_client_fails_the_source_instead_of_finishing(caplog):
    """No failure is silent: the run used to end as ``finished`` (nothing said) when a
    client's own cancellation escaped the reader."""
    source = Cancelled([json.dumps(good(i)) for i in range(5)])
    frame = attach(source, "t")
    out = frame.collect()

    async def scenario() -> None:
        frame.start()
        with pytest.raises(rtnb.SourceError, match="source 'feed': its reader was cancelled"):
            await asyncio.wait_for(frame.wait(), 10)

    asyncio.run(scenario())
    assert frame.graph.state == "failed"
    assert isinstance(frame.graph.error, rtnb.SourceError)
    assert sum(len(b) for b in out) == 5  # what was read before went through
