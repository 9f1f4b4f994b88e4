"""Bad input before decoding and events from the future: dead letters, and the stream goes on.

* SSE (the real ``EventBlocks`` parser and ``SSESource._payloads``): an event that is not
  UTF-8 and an event over ``max_event_bytes`` are dead letters with the reason; an event
  without its blank line is parsed in linear time, holding only a prefix once over the cap.
* WebSocket: a message over ``max_message_bytes`` is refused with its size and the limit.
* The watermark guard (``max_future``): a row dated 200 years ahead of the source's clock is
  a dead letter, and the windows of the good rows equal pandas on the good rows.

Every source runs under ``asyncio.wait_for``: a stalled source fails the test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rtnb
from rtnb.sources._guard import RefusingSource, set_max_future
from rtnb.sources._runner import BufferedSource, attach
from rtnb.sources._sse import EventBlocks
from rtnb.testing import assert_frame_equal_unordered, pandas_windows

EXAMPLE = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
                        "host": pd.Series([], dtype="str"),
                        "cpu": pd.Series([], dtype="float64")})
MiB = 2 ** 20


def sse_source(**options: Any) -> Any:
    return rtnb.sources.sse("http://127.0.0.1:1/", example={"a": "float64"}, **options).source


def payloads(source: Any, blocks: EventBlocks, chunks: Sequence[bytes]) -> list[tuple[Any, Any]]:
    """What the source buffers for these chunks: ``(payload, position)``."""
    out = []
    for chunk in chunks:
        out.extend((p, source.last_event_id) for p in source._payloads(blocks.feed(chunk)))
    return out


def reason(payload: Any) -> str | None:
    return getattr(payload, "reason", None)


# -- SSE: invalid UTF-8 ----------------------------------------------------------------------
@pytest.mark.parametrize("cut", [1, 3, 7, 1000])
def test_an_sse_event_that_is_not_utf8_is_a_dead_letter_and_the_stream_goes_on(cut):
    stream = (b"id: 1\ndata: {\"a\": 1}\n\n"
              + b"id: 2\ndata: {\"a\": \"\xff\xfe\"}\n\n"
              + "id: 3\ndata: {\"a\": 3, \"s\": \"h\u00e9\u20ac\"}\n\n".encode()
              + b"id: 4\nevent: other\ndata: \xc3\n\n"  # not UTF-8, but not ours
              + b"data: {\"a\": 5}\n\n")
    source = sse_source(event=None)
    chunks = [stream[i:i + cut] for i in range(0, len(stream), cut)]  # cuts inside characters
    got = payloads(source, EventBlocks(), chunks)
    assert [(p, pos) for p, pos in got if reason(p) is None] == [
        ('{"a": 1}', "1"), ('{"a": 3, "s": "h\u00e9\u20ac"}', "3"), ('{"a": 5}', "4")]
    refused = [(bytes(p), pos, reason(p)) for p, pos in got if reason(p) is not None]
    assert refused[0] == (b'id: 2\ndata: {"a": "\xff\xfe"}', "2",
                          "invalid UTF-8 at byte 19 of the event")
    # the last one is of type "other": a dead letter only for a source reading every type
    assert refused[1:] == [(b"id: 4\nevent: other\ndata: \xc3", "4",
                            "invalid UTF-8 at byte 25 of the event")]
    typed = sse_source(event="message")
    assert [reason(p) for p, _ in payloads(typed, EventBlocks(), chunks)] == [
        None, "invalid UTF-8 at byte 19 of the event", None, None]


def test_invalid_utf8_events_become_dead_letters_through_the_batcher():
    source = sse_source()
    got = payloads(source, EventBlocks(), [b'data: {"a": 1}\n\ndata: {"a": "\xe9"}\n\n',
                                           b'data: {"a": 2}\n\n'])
    good, owners, dead = source._convert([p for p, _ in got])
    assert good["a"].tolist() == [1.0, 2.0] and owners == [0, 2]
    assert dead == [(1, "invalid UTF-8 at byte 13 of the event")]


# -- SSE: the size cap and linear time --------------------------------------------------------
@pytest.mark.parametrize("chunk", [5, 64, 4096])
def test_an_sse_event_over_max_event_bytes_is_a_dead_letter_with_a_prefix(chunk):
    big = b"id: 2\ndata: " + b"x" * 5000
    stream = b'id: 1\ndata: {"a": 1}\n\n' + big + b'\n\nid: 3\ndata: {"a": 3}\n\n'
    source = sse_source(max_event_bytes=4096)
    blocks = EventBlocks(source.max_event_bytes)
    got = payloads(source, blocks, [stream[i:i + chunk] for i in range(0, len(stream), chunk)])
    assert [(p, pos) for p, pos in got if reason(p) is None] == [('{"a": 1}', "1"),
                                                                 ('{"a": 3}', "3")]
    [(letter, position)] = [(p, pos) for p, pos in got if reason(p) is not None]
    assert bytes(letter) == big[:1024] and position == "1"  # its own id was not read
    assert reason(letter) == (f"event of {len(big)} bytes is over max_event_bytes=4096 "
                              f"(4 KiB)")
    # an event of exactly the cap is read
    exact = b"data: " + b"1" * 4090 + b"\n\n"
    assert EventBlocks(4096).feed(exact) == ["data: " + "1" * 4090]


def test_an_unterminated_32_mb_event_holds_a_prefix_and_the_stream_goes_on():
    """An event without its blank line: linear time, bounded memory, then the next event."""
    blocks = EventBlocks()  # the default cap: 16 MiB
    chunk = b"x" * 65_536
    held = []
    out: list[Any] = blocks.feed(b'data: {"a": 0}\n\ndata: ')
    for _ in range(512):  # 32 MiB of one data line, no blank line
        out += blocks.feed(chunk)
        held.append(sum(map(len, blocks._parts)))
    assert out == ['data: {"a": 0}']
    assert max(held) <= 16 * MiB and held[-1] <= 1024  # over the cap: only the prefix is kept
    out = blocks.feed(b'\n\ndata: {"a": 1}\n\ndata: {"a": 2}\n\n')
    assert [bytes(out[0])] == [(b"data: " + chunk)[:1024]]
    assert reason(out[0]) == (f"event of {6 + 512 * 65_536} bytes is over "
                              f"max_event_bytes=16777216 (16 MiB)")
    assert out[1:] == ['data: {"a": 1}', 'data: {"a": 2}']


def test_the_parser_never_joins_an_event_in_progress_again():
    """Linear time, checked by what is done and not by a clock: a chunk that ends no event is
    appended to a list (not concatenated with the event so far), whatever the event's size."""
    blocks = EventBlocks(max_event_bytes=None)
    blocks.feed(b"data: ")
    for _ in range(1000):
        blocks.feed(b"y" * 1000)
    assert len(blocks._parts) == 1001 and blocks._size == 1_000_006
    assert blocks.feed(b"\n\n") == ["data: " + "y" * 1_000_000]


SSE_LINES = ['data: {"a": 1}', "data:{\"a\": 2}", "data: x", "data", "data: ", ": comment",
             "id: 7", "id: 8", "event: tick", "data: caf\u00e9 \u20ac \U0001f600", "id:9"]


def sse_reference(text: str) -> list[str]:
    """The events cut from the whole text at once (what the parser did before, quadratic when
    fed chunk by chunk)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n\n")[:-1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(SSE_LINES), max_size=4), max_size=12),
       st.sampled_from(["\n", "\r\n", "\r"]), st.lists(st.integers(1, 40), max_size=30),
       st.sampled_from([None, 16, 10_000]))
def test_events_cut_from_byte_chunks_equal_a_line_by_line_parser(events, eol, cuts, cap):
    """Whatever the byte cuts (inside characters too), line ends and cap: the same events,
    and those over the cap refused with their size."""
    data = "".join(eol.join(lines) + eol + eol for lines in events).encode()
    blocks, got, at = EventBlocks(cap), [], 0
    for size in [*cuts, len(data)]:
        chunk, at = data[at:at + size], at + size
        got.extend(blocks.feed(chunk))
    expected = sse_reference(data.decode())
    assert len(got) == len(expected)
    for block, want in zip(got, expected, strict=True):
        size = len(want.encode())
        if cap is not None and size > cap:
            assert bytes(block) == want.encode()[:1024]
            assert reason(block).startswith(f"event of {size} bytes is over")
        else:
            assert block == want


# -- WebSocket: the size limit ----------------------------------------------------------------
def test_a_websocket_message_over_max_message_bytes_is_refused_with_size_and_limit():
    source = rtnb.sources.websocket("ws://127.0.0.1:1/", example=EXAMPLE,
                                    max_message_bytes=1000).source
    assert source._too_large("x" * 1000) is None
    letter = source._too_large("\u20ac" * 400)  # 400 characters, 1,200 bytes
    assert letter == "\u20ac" * 400 and reason(letter) == (
        "message of 1200 bytes is over max_message_bytes=1000 (1000 bytes)")
    letter = source._too_large(b"y" * 5000)
    assert letter == b"y" * 1024 and reason(letter).startswith("message of 5000 bytes")
    assert rtnb.sources.websocket("ws://h/", example=EXAMPLE).source.max_message_bytes == \
        16 * MiB
    with pytest.raises(rtnb.ConfigError, match="max_message_bytes"):
        rtnb.sources.websocket("ws://h/", example=EXAMPLE, max_message_bytes=0)
    with pytest.raises(rtnb.ConfigError, match="max_event_bytes"):
        rtnb.sources.sse("http://h/", example=EXAMPLE, max_event_bytes=-1)


# -- refused messages and the watermark guard through the batcher ------------------------------
class Feed(RefusingSource, BufferedSource):
    """The payloads, read once as if from a broker (a refused one stands for ``None``)."""

    def __init__(self, payloads: Sequence[bytes | str | None], **options: Any) -> None:
        options = {"name": "feed", "decoder": "json", "example": EXAMPLE, **options}
        super().__init__(**options)
        self.payloads = list(payloads)

    async def _read(self, stop: asyncio.Event) -> None:
        self._connected()
        for i, payload in enumerate(self.payloads):
            if payload is None:
                payload = self._refuse(b"z" * 3000, "too large")
            await self._put(payload, i)
        self._drained()
        await stop.wait()


def run(source: BufferedSource, *, windows: bool = False) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                   pd.DataFrame | None]:
    frame = attach(source, "t")
    out, dead = frame.collect(), frame.dead_letters.collect()
    agg = frame.window(rtnb.tumbling("10s"), by="host").agg(
        n=("cpu", "count"), total=("cpu", "sum"), last=("cpu", "last")) if windows else None
    win = agg.collect() if agg is not None else None
    asyncio.run(asyncio.wait_for(frame.arun(), 20))
    rows = pd.concat(out, ignore_index=True) if out else EXAMPLE.copy()
    dead_rows = pd.concat(dead, ignore_index=True) if dead else pd.DataFrame(
        {"dead_letter_raw": [], "dead_letter_reason": [], "dead_letter_position": []})
    return rows, dead_rows, (pd.concat(win, ignore_index=True) if win else None)


def now_record(i: int, seconds: float) -> dict[str, Any]:
    t = pd.Timestamp.now("UTC").tz_localize(None) + pd.Timedelta(seconds=seconds)
    return {"t": t.isoformat(), "host": f"h{i % 3}", "cpu": float(i)}


def test_refused_messages_are_dead_letters_in_arrival_order_between_good_ones():
    records = [now_record(i, -100 + i) for i in range(8)]
    lines: list[str | None] = [json.dumps(r) for r in records]
    lines[2], lines[5] = None, "not json"
    rows, dead, _ = run(Feed(lines, max_batch=3, max_events=6))
    assert rows["cpu"].tolist() == [0.0, 1.0, 3.0, 4.0, 6.0, 7.0]
    assert dead["dead_letter_position"].tolist() == ["2", "5"]
    assert dead["dead_letter_reason"].iloc[0] == "too large"
    assert dead["dead_letter_raw"].iloc[0] == b"z" * 1024
    assert dead["dead_letter_reason"].iloc[1].startswith("json decode failed")


def test_an_event_200_years_ahead_is_a_dead_letter_and_the_windows_are_pandas_on_the_rest():
    start = pd.Timestamp.now("UTC").tz_localize(None).floor("10s") - pd.Timedelta("10min")
    records = [{"t": (start + pd.Timedelta(seconds=i)).isoformat(), "host": f"h{i % 3}",
                "cpu": float(i)} for i in range(300)]
    ahead = (start + pd.DateOffset(years=200) + pd.Timedelta(days=30)).floor("D")
    future = {"t": ahead.isoformat(), "host": "h1", "cpu": 1e6}
    lines = [json.dumps(r) for r in records]
    lines.insert(100, json.dumps(future))
    rows, dead, windows = run(Feed(lines, max_batch=50, max_events=300), windows=True)
    assert len(rows) == 300
    assert dead["dead_letter_raw"].tolist() == [lines[100]]
    assert dead["dead_letter_position"].tolist() == ["100"]
    assert dead["dead_letter_reason"].iloc[0].startswith(
        f"event time {ahead} is 200 years ahead of the source's clock (max_future=5min)")
    good = pd.DataFrame.from_records(records).assign(t=lambda d: pd.to_datetime(d["t"]))
    expected = pandas_windows(good, time="t", size="10s", by="host",
                              aggs={"n": ("cpu", "count"), "total": ("cpu", "sum"),
                                    "last": ("cpu", "last")})
    assert windows is not None
    assert_frame_equal_unordered(windows, expected, by=["window_start", "host"],
                                 check_dtype=False)


def test_max_future_bounds_and_none():
    records = [now_record(0, -5), now_record(1, 50), now_record(2, 3 * 3600), now_record(3, 0)]
    lines = [json.dumps(r) for r in records]
    rows, dead, _ = run(Feed(lines, max_events=3))  # the default: 5 minutes
    assert rows["cpu"].tolist() == [0.0, 1.0, 3.0]
    assert dead["dead_letter_reason"].str.match(
        r"event time \S+ \S+ is 3 hours ahead of the source's clock \(max_future=5min\)").all()
    rows, dead, _ = run(set_max_future(Feed(lines, max_events=2), "10s"))
    assert rows["cpu"].tolist() == [0.0, 3.0] and len(dead) == 2
    assert dead["dead_letter_reason"].str.endswith("(max_future=10s)").all()
    rows, dead, _ = run(set_max_future(Feed(lines, max_events=4), None))
    assert rows["cpu"].tolist() == [0.0, 1.0, 2.0, 3.0] and dead.empty


def test_max_future_is_an_option_of_every_live_source():
    ws = rtnb.sources.websocket("ws://h/", example=EXAMPLE, time="t", max_future="1h")
    assert ws.source.max_future_ns == 3600 * 10**9
    assert rtnb.sources.sse("http://h/", example=EXAMPLE, max_future=None).source \
        .max_future_ns is None
    assert rtnb.sources.tail("/nonexistent/x.log", example=EXAMPLE).source.max_future_ns \
        == 300 * 10**9
    with pytest.raises(rtnb.ConfigError, match="max_future"):
        rtnb.sources.websocket("ws://h/", example=EXAMPLE, max_future="-1min")
    with pytest.raises(rtnb.ConfigError, match="max_future"):
        rtnb.sources.websocket("ws://h/", example=EXAMPLE, max_future=300)  # type: ignore[arg-type]
