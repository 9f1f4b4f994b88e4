"""49 kinds of bad JSON (16 MessagePack, 15 CSV) between good ones, over six sources.

Issue #15: every bad message is a dead letter (or, where it is legal input, a row), no bad
message stops or stalls a source, and nothing else is lost, duplicated or wrong. Each test
sends one stream per source and decoder through a real server or broker on 127.0.0.1: two
good messages, then every kind of the decoder with a good message after each, then five
good ones. It asserts, against pandas on the whole input:

* the rows equal, in order, the frame pandas builds from the good records and the rows the
  legal kinds stand for (``numeric strings``, ``NaN``, an extra field, ...);
* every bad message is one dead letter, in arrival order, with its raw payload, its
  position and a reason that names the column and what arrived (or the decoder's error);
* ``source.stats.dead_letters`` and ``frame.counters.dead_letters`` both count them;
* the source read on to the end (the last good rows are there) within ``wait_for``;
* the broker holds nothing unacknowledged (Redis pending list, the JetStream durable's
  ack-pending and pending counts, the MQTT session, the AMQP queue).

The WebSocket server is ``rtnb.demo.FeedServer``; the SSE server below writes exactly the
bytes of each event. Redis (6379), NATS with JetStream (4222), Mosquitto (1883) and RabbitMQ
(5672, guest/guest) are the shared servers; each test uses its own stream, subject, topic
and queue. Kinds that a protocol cannot carry are left out for it: a text protocol (SSE)
carries no MessagePack, NATS refuses payloads over its ``max_payload`` (1 MiB) when they
are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest

import rtnb
from rtnb.demo import FeedServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from integration_helpers import service_or_skip  # type: ignore[import-not-found]

pytestmark = [pytest.mark.faults, pytest.mark.integration]

SCHEMA = {"t": "datetime64[ns]", "host": "str", "cpu": "float64", "n": "int64"}
EXAMPLE = pd.DataFrame({c: pd.Series([], dtype=d) for c, d in SCHEMA.items()})
T0 = pd.Timestamp("2026-01-01")
MiB = 2 ** 20
RUN_S = 45.0  # one run (all kinds of one decoder over one source) takes 0.1-3 s: bounded
TIME_RANGE = "is out of range for datetime64[ns] (1677-09-21 .. 2262-04-11)"
SOURCES = ("websocket", "sse", "redis_stream", "nats", "mqtt", "amqp")
Row = dict[str, Any]


def col(name: str, text: str) -> str:
    """A coercion reason: ``column 'cpu' (float64): <text>``."""
    return f"column {name!r} ({EXAMPLE[name].dtype}): {text}"


def record(i: int) -> Row:
    """Good record ``i`` as a producer sends it: ISO time, a float, an int."""
    return {"t": (T0 + pd.Timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host": f"h{i % 3}", "cpu": i / 4, "n": i}


def row(i: int, **changes: Any) -> Row:
    """Record ``i`` as the frame holds it (what a legal kind must become)."""
    return {"t": T0 + pd.Timedelta(seconds=i), "host": f"h{i % 3}", "cpu": i / 4, "n": i,
            **changes}


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def swap(i: int, key: str, literal: str) -> bytes:
    """Record ``i`` as JSON text with ``key``'s value written as ``literal`` (any text)."""
    marker = "\u0001marker\u0001"
    text = json.dumps({**record(i), key: marker})
    return text.replace(json.dumps(marker), literal).encode("utf-8", "surrogateescape")


def without(i: int, key: str) -> bytes:
    rec = record(i)
    del rec[key]
    return js(rec)


@dataclass(frozen=True)
class Kind:
    """One kind of message: bad (``reason``) or legal (``rows``: what it stands for).

    ``i`` numbers the record it is built from (its event time, so rows are told apart).
    ``prefix``: the reason starts with ``reason`` (the rest is the library's own words).
    ``raw``: the dead letter's raw payload when it is not the message (a refused prefix).
    ``where``: ``{source: Kind}`` overrides for protocols that treat it otherwise;
    ``skip``: sources that cannot carry it.
    """

    name: str
    i: int
    payload: bytes
    reason: str | None = None
    rows: tuple[Row, ...] = ()
    prefix: bool = False
    raw: bytes | None = None
    where: dict[str, Kind] = field(default_factory=dict)
    skip: frozenset[str] = frozenset()

    def on(self, source: str) -> Kind:
        return self.where.get(source, self)


def bad(name: str, i: int, payload: bytes, reason: str, **kw: Any) -> Kind:
    return Kind(name, i, payload, reason=reason, **kw)


def legal(name: str, i: int, payload: bytes, *rows: Row, **kw: Any) -> Kind:
    return Kind(name, i, payload, rows=rows, **kw)


def json_error(payload: bytes) -> str:
    """What ``json`` says about a payload (the decoder's dead-letter reason)."""
    try:
        json.loads(payload.decode().strip())
    except (ValueError, UnicodeDecodeError) as exc:
        return f"json decode failed: {exc}"
    raise AssertionError(payload)


def sse_refused_utf8(payload: bytes, event_id: int) -> Kind:
    event = b"id: %d\ndata: " % event_id + payload
    try:
        event.decode()
    except UnicodeDecodeError as exc:
        at = exc.start
    return Kind("", 0, payload, reason=f"invalid UTF-8 at byte {at} of the event", raw=event)


def huge(i: int) -> Kind:
    """A valid record of 20 MiB: over the WebSocket and SSE limits (16 MiB), legal elsewhere."""
    host = "x" * (20 * MiB)
    payload = js({**record(i), "host": host})
    ws = Kind("", i, payload, reason=f"message of {len(payload)} bytes is over "
                                     f"max_message_bytes=16777216 (16 MiB)",
              raw=payload[:1024])
    event = b"id: %d\ndata: " % i + payload
    sse = Kind("", i, payload, reason=f"event of {len(event)} bytes is over "
                                      f"max_event_bytes=16777216 (16 MiB)", raw=event[:1024])
    return legal("20 MiB payload", i, payload, row(i, host=host),
                 where={"websocket": ws, "sse": sse}, skip=frozenset({"nats"}))


def json_kinds() -> list[Kind]:
    """The kinds of bad (and odd but legal) JSON message, numbered from 100 on."""
    k: list[Kind] = []
    n = iter(range(100, 1000))

    def add(make: Callable[[int], Kind]) -> None:
        k.append(make(next(n)))

    def with_json_error(name: str, payload: Callable[[int], bytes]) -> Callable[[int], Kind]:
        return lambda i: bad(name, i, payload(i), json_error(payload(i)))

    add(with_json_error("invalid JSON", lambda i: js(record(i))[:-1].replace(b'"h', b"h")
                        + b"}"))
    add(with_json_error("truncated JSON", lambda i: js(record(i))[:30]))
    add(lambda i: bad("JSON nested 10,000 deep", i,
                      js(record(i))[:-1] + b', "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
                      "json decode failed: RecursionError: ", prefix=True))
    shape = "json decode failed: a JSON payload must be an object or a list of objects; got "
    add(lambda i: bad("array of non-objects", i, b"[1, 2, 3]", shape + "list"))
    add(lambda i: bad("array with a non-object", i, b"[" + js(record(i)) + b", 1]",
                      shape + "list"))
    add(lambda i: bad("bare string", i, b'"hello"', shape + "str"))
    add(lambda i: bad("bare number", i, b"42", shape + "int"))
    add(lambda i: bad("null", i, b"null", shape + "NoneType"))
    add(lambda i: bad("true", i, b"true", shape + "bool"))
    add(with_json_error("empty payload", lambda i: b""))
    add(with_json_error("whitespace", lambda i: b" \t  "))

    def invalid_utf8(i: int) -> Kind:
        payload = js(record(i)).replace(b'"h', b'"h\xff', 1)
        at = payload.index(b"\xff")
        error = f"'utf-8' codec can't decode byte 0xff in position {at}: invalid start byte"
        return bad("invalid UTF-8", i, payload, f"json decode failed: {error}",
                   where={"sse": sse_refused_utf8(payload, i)})
    add(invalid_utf8)
    add(lambda i: legal("UTF-8 BOM", i, b"\xef\xbb\xbf" + js(record(i)), row(i)))
    add(with_json_error("NUL byte", lambda i: js(record(i)).replace(b'"h', b'"h\x00', 1)))
    add(lambda i: legal("escaped NUL (\\u0000)", i, js({**record(i), "host": "h\x00x"}),
                        row(i, host="h\x00x")))
    add(huge)
    missing_time = "missing event time in column 't'"
    add(lambda i: bad("time missing", i, without(i, "t"), missing_time))
    add(lambda i: bad("time null", i, swap(i, "t", "null"), missing_time))
    add(lambda i: bad("time NaN", i, swap(i, "t", "NaN"), missing_time))
    add(lambda i: bad("time garbage", i, swap(i, "t", '"half past ten"'),
                      col("t", "'half past ten' is not a time")))
    add(lambda i: bad("time empty string", i, swap(i, "t", '""'), col("t", "'' is not a time")))
    add(lambda i: bad("time in 1500", i, swap(i, "t", '"1500-01-01T00:00:00Z"'),
                      col("t", f"'1500-01-01T00:00:00Z' {TIME_RANGE}")))
    add(lambda i: bad("time in 9999", i, swap(i, "t", '"9999-12-31T00:00:00Z"'),
                      col("t", f"'9999-12-31T00:00:00Z' {TIME_RANGE}")))
    add(lambda i: bad("time in 2200 (watermark guard)", i, swap(i, "t", '"2200-01-01T00:00:00Z"'),
                      "event time 2200-01-01 00:00:00 is ", prefix=True))
    epoch = int((T0 - pd.Timestamp(0)).total_seconds())
    add(lambda i: bad("epoch in ms, seconds expected", i, swap(i, "t", str((epoch + i) * 1000)),
                      col("t", f"{(epoch + i) * 1000} {TIME_RANGE}")))
    add(lambda i: legal("epoch in seconds", i, swap(i, "t", str(epoch + i)), row(i)))
    add(lambda i: legal("time with an offset", i,
                        swap(i, "t", json.dumps((T0 + pd.Timedelta(seconds=i, hours=2))
                                                .strftime("%Y-%m-%dT%H:%M:%S+02:00"))),
                        row(i)))
    add(lambda i: bad("time true", i, swap(i, "t", "true"), col("t", "True is not a time")))
    add(lambda i: legal("numeric strings", i, js({**record(i), "cpu": "2.5", "n": "7"}),
                        row(i, cpu=2.5, n=7)))
    add(lambda i: bad("number as string '1e400'", i, swap(i, "cpu", '"1e400"'),
                      col("cpu", "'1e400' is not a finite number")))
    add(lambda i: bad("number 1e400", i, swap(i, "cpu", "1e400"),
                      col("cpu", "inf is not a finite number")))
    add(lambda i: bad("Infinity", i, swap(i, "cpu", "Infinity"),
                      col("cpu", "inf is not a finite number")))
    add(lambda i: bad("-Infinity", i, swap(i, "cpu", "-Infinity"),
                      col("cpu", "-inf is not a finite number")))
    add(lambda i: legal("NaN (a missing value)", i, swap(i, "cpu", "NaN"), row(i, cpu=np.nan)))
    add(lambda i: legal("null number (a missing value)", i, swap(i, "cpu", "null"),
                        row(i, cpu=np.nan)))
    add(lambda i: bad("not a number", i, swap(i, "cpu", '"abc"'),
                      col("cpu", "'abc' is not a number")))
    add(lambda i: bad("bool for a float", i, swap(i, "cpu", "true"),
                      col("cpu", "True is not a number")))
    add(lambda i: bad("bool for an int", i, swap(i, "n", "false"),
                      col("n", "False is not a number")))
    add(lambda i: bad("list for a number", i, swap(i, "cpu", "[1, 2]"),
                      col("cpu", "[1, 2] is not a number")))
    add(lambda i: bad("object for a string", i, swap(i, "host", '{"a": 1}'),
                      col("host", "{'a': 1} is not a string")))
    add(lambda i: legal("number for a string", i, swap(i, "host", "12"), row(i, host="12")))
    add(lambda i: bad("2**70 for an int", i, swap(i, "n", str(2 ** 70)),
                      col("n", f"{2 ** 70} is out of range for int64")))
    add(lambda i: bad("2.5 for an int", i, swap(i, "n", "2.5"),
                      col("n", "2.5 is not an integer")))
    add(lambda i: bad("int missing", i, without(i, "n"), col("n", "missing")))
    add(lambda i: legal("negative zero", i, js({**record(i), "cpu": -0.0, "n": -0}),
                        row(i, cpu=-0.0, n=0)))
    add(lambda i: legal("unknown extra field (ignored)", i,
                        js({**record(i), "extra": {"x": [1, 2]}}), row(i)))
    add(lambda i: legal("duplicate key (the last wins)", i,
                        js(record(i))[:-1] + b', "cpu": 99.5}', row(i, cpu=99.5)))
    add(lambda i: legal("two JSON lines in one message", i,
                        js(record(i)) + b"\n" + js(record(i + 500)), row(i), row(i + 500)))
    add(lambda i: legal("empty array (no record)", i, b"[]"))
    return k


def msgpack_kinds() -> list[Kind]:
    pack: Callable[[Any], bytes] = msgpack.packb
    not_mp = "msgpack decode failed: not MessagePack: "
    shape = "msgpack decode failed: a MessagePack payload must be an object or a list of " \
            "objects; got "
    return [
        bad("garbage", 100, b"\xc1\xc1\xc1", not_mp, prefix=True),
        bad("truncated", 101, pack(record(101))[:-5], not_mp, prefix=True),
        bad("extra bytes", 102, pack(record(102)) + b"\x01", not_mp, prefix=True),
        bad("empty payload", 103, b"", not_mp, prefix=True),
        bad("nested 10,000 deep", 104, b"\x91" * 10_000 + b"\x01", not_mp, prefix=True),
        bad("an int", 105, pack(42), shape + "int"),
        bad("array of ints", 106, pack([1, 2]), shape + "list"),
        bad("JSON instead", 107, js(record(107)), not_mp, prefix=True),
        bad("string for a float", 108, pack({**record(108), "cpu": "x"}),
            col("cpu", "'x' is not a number")),
        bad("bytes for a float", 109, pack({**record(109), "cpu": b"\x01"}),
            col("cpu", "b'\\x01' is not a number")),
        bad("uint64 for an int64", 110, pack({**record(110), "n": 2 ** 64 - 1}),
            col("n", f"{2 ** 64 - 1} is out of range for int64")),
        bad("inf", 111, pack({**record(111), "cpu": float("inf")}),
            col("cpu", "inf is not a finite number")),
        legal("nan (a missing value)", 112, pack({**record(112), "cpu": float("nan")}),
              row(112, cpu=np.nan)),
        legal("Timestamp extension for the time", 113,
              pack({**record(113), "t": msgpack.Timestamp(int(
                  (T0 - pd.Timestamp(0)).total_seconds()) + 113)}), row(113)),
        bad("time missing", 114, pack({k: v for k, v in record(114).items() if k != "t"}),
            "missing event time in column 't'"),
        legal("array of two maps", 115, pack([record(115), record(615)]), row(115), row(615)),
    ]


def csv_line(rec: Row) -> bytes:
    return f"{rec['t']},{rec['host']},{rec['cpu']},{rec['n']}".encode()


def csv_kinds() -> list[Kind]:
    def fields(n: int) -> str:
        return f"csv decode failed: CSV line has {n} fields; expected 4"

    def invalid_utf8(i: int) -> Kind:
        payload = csv_line(record(i)).replace(b",h", b",h\xff", 1)
        at = payload.index(b"\xff")
        error = f"'utf-8' codec can't decode byte 0xff in position {at}: invalid start byte"
        return bad("invalid UTF-8", i, payload, f"csv decode failed: {error}",
                   where={"sse": sse_refused_utf8(payload, i)})

    line = csv_line
    return [
        bad("too many fields", 100, line(record(100)) + b",extra", fields(5)),
        bad("too few fields", 101, line(record(101)).rsplit(b",", 1)[0], fields(3)),
        bad("unclosed quote", 102, line(record(102)).replace(b",h", b',"h', 1), fields(2)),
        bad("header line", 103, b"t,host,cpu,n", col("t", "'t' is not a time")),
        bad("not a number", 104, line({**record(104), "cpu": "abc"}),
            col("cpu", "'abc' is not a number")),
        bad("2**70 for an int", 105, line({**record(105), "n": 2 ** 70}),
            col("n", f"'{2 ** 70}' is out of range for int64")),
        bad("Infinity", 106, line({**record(106), "cpu": "inf"}),
            col("cpu", "'inf' is not a finite number")),
        invalid_utf8(107),
        bad("time in 9999", 108, line({**record(108), "t": "9999-12-31T00:00:00Z"}),
            col("t", f"'9999-12-31T00:00:00Z' {TIME_RANGE}")),
        bad("empty time field", 109, line({**record(109), "t": ""}),
            "missing event time in column 't'"),
        bad("empty int field", 110, line({**record(110), "n": ""}), col("n", "missing")),
        legal("empty float field (a missing value)", 111, line({**record(111), "cpu": ""}),
              row(111, cpu=np.nan)),
        legal("quoted comma", 112, line({**record(112), "host": '"h,1"'}), row(112, host="h,1")),
        legal("empty payload (no record)", 113, b""),
        legal("two lines in one message", 114, line(record(114)) + b"\n" + line(record(614)),
              row(114), row(614)),
    ]


KINDS: dict[str, Callable[[], list[Kind]]] = {"json": json_kinds, "msgpack": msgpack_kinds,
                                              "csv": csv_kinds}
ENCODE: dict[str, Callable[[Row], bytes]] = {"json": js, "msgpack": msgpack.packb,
                                             "csv": csv_line}


@dataclass
class Plan:
    """The messages of one run and what each must become."""

    payloads: list[bytes]
    ids: list[int]  # each message's record number (the SSE event id)
    kinds: list[Kind | None]  # None: a good message
    rows: list[Row]  # the expected rows, in order


def plan(decoder: str, source: str) -> Plan:
    payloads: list[bytes] = []
    ids: list[int] = []
    kinds: list[Kind | None] = []
    rows: list[Row] = []
    encode = ENCODE[decoder]

    def good(i: int) -> None:
        payloads.append(encode(record(i)))
        ids.append(i)
        kinds.append(None)
        rows.append(row(i))

    good(0)
    good(1)
    for j, kind in enumerate(k for k in KINDS[decoder]() if source not in k.skip):
        payloads.append(kind.payload)
        ids.append(kind.i)
        kinds.append(kind)
        rows.extend(kind.on(source).rows if kind.on(source).reason is None else ())
        good(2 + j)
    for i in range(90, 95):
        good(i)
    return Plan(payloads, ids, kinds, rows)


def expected_frame(rows: list[Row]) -> pd.DataFrame:
    """The rows as pandas builds them from the records."""
    return pd.DataFrame.from_records(rows, columns=list(SCHEMA)).astype(SCHEMA)


def as_bytes(value: Any) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


# -- servers and brokers ------------------------------------------------------------------------
class EventStream:
    """An SSE server on 127.0.0.1 writing each payload as one event, with its ``id``.

    A payload's lines become ``data:`` lines (the client joins them with ``\\n``), bytes as
    they are, not necessarily UTF-8. It keeps the connection open after the last event.
    """

    def __init__(self, payloads: Sequence[bytes], ids: Sequence[int]) -> None:
        self.events = [b"id: %d\n" % i + b"".join(b"data: %s\n" % line
                                                   for line in p.split(b"\n")) + b"\n"
                       for i, p in zip(ids, payloads, strict=True)]
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/events"

    async def start(self) -> EventStream:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.connections += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n")
            for chunk in self.events:
                writer.write(chunk)
                await writer.drain()
            await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


NATS_URL = "nats://127.0.0.1:4222"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
PORTS = {"redis_stream": (6379, "Redis"), "nats": (4222, "NATS"), "mqtt": (1883, "Mosquitto"),
         "amqp": (5672, "RabbitMQ")}


async def until(check: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


@dataclass
class Outcome:
    got: pd.DataFrame
    dead: pd.DataFrame
    frame: rtnb.StreamingFrame
    unacked: int | None = None  # what the broker still holds for the consumer
    stalled: bool = False  # the run did not end within RUN_S


async def bounded(run: Any) -> bool:
    """Await a run for at most ``RUN_S``; ``True`` if it had to be cancelled (a stall, or
    fewer rows than ``max_events``: the source waits for more)."""
    try:
        await asyncio.wait_for(run, RUN_S)
    except TimeoutError:
        return True
    return False


def frames(out: list[pd.DataFrame], dead: list[pd.DataFrame]) -> tuple[pd.DataFrame,
                                                                       pd.DataFrame]:
    return (pd.concat(out, ignore_index=True) if out else EXAMPLE.copy(),
            pd.concat(dead, ignore_index=True) if dead else pd.DataFrame())


async def collect_run(src: rtnb.StreamingFrame) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    out, dead = src.collect(), src.dead_letters.collect()
    stalled = await bounded(src.arun())
    return (*frames(out, dead), stalled)


async def run_websocket(payloads: list[bytes], ids: list[int], decoder: str,
                    n: int) -> Outcome:
    feed = FeedServer(pd.DataFrame({"x": range(len(payloads))}), rate=None)
    # text frames for UTF-8 payloads (as most producers send JSON), binary frames otherwise
    lines: list[Any] = []
    for p in payloads:
        try:
            lines.append(p.decode() if decoder != "msgpack" else p)
        except UnicodeDecodeError:
            lines.append(p)
    feed._lines = lines
    await feed.start()
    try:
        src = rtnb.sources.websocket(feed.ws_url, time="t", example=SCHEMA, decoder=decoder,
                                     max_events=n)
        got, dead, stalled = await collect_run(src)
    finally:
        await feed.stop()
    return Outcome(got, dead, src, stalled=stalled)


async def run_sse(payloads: list[bytes], ids: list[int], decoder: str,
                    n: int) -> Outcome:
    server = await EventStream(payloads, ids).start()
    try:
        src = rtnb.sources.sse(server.url, time="t", example=SCHEMA, decoder=decoder,
                               max_events=n)
        got, dead, stalled = await collect_run(src)
    finally:
        await server.stop()
    return Outcome(got, dead, src, stalled=stalled)


async def run_redis(payloads: list[bytes], ids: list[int], decoder: str,
                    n: int) -> Outcome:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379)
    stream = f"rtnb-bad-{uuid.uuid4().hex[:10]}"
    try:
        for p in payloads:
            await client.xadd(stream, {"data": p})
        src = rtnb.sources.redis_stream(stream, example=SCHEMA, time="t", group="g",
                                        decoder=decoder, max_events=n)
        got, dead, stalled = await collect_run(src)
        pending = (await client.xpending(stream, "g"))["pending"]
    finally:
        await client.delete(stream)
        await client.aclose()
    return Outcome(got, dead, src, int(pending), stalled)


async def run_nats(payloads: list[bytes], ids: list[int], decoder: str,
                    n: int) -> Outcome:
    import nats

    name = f"rtnb-bad-{uuid.uuid4().hex[:10]}"
    subject = f"rtnb.bad.{name}"
    nc = await nats.connect(NATS_URL)
    js_ = nc.jetstream()
    try:
        await js_.add_stream(name=name, subjects=[subject])
        for p in payloads:
            await js_.publish(subject, p)
        src = rtnb.sources.nats(subject, example=SCHEMA, time="t", durable="d", decoder=decoder,
                                max_events=n)
        got, dead, stalled = await collect_run(src)
        info = await js_.consumer_info(name, "d")
        unacked = int(info.num_ack_pending or 0) + int(info.num_pending or 0)
    finally:
        with contextlib.suppress(Exception):
            await js_.delete_stream(name)
        await nc.close()
    return Outcome(got, dead, src, unacked, stalled)


async def run_mqtt(payloads: list[bytes], ids: list[int], decoder: str,
                    n: int) -> Outcome:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topic = f"rtnb/bad/{uuid.uuid4().hex[:10]}"
    client_id = f"rtnb-bad-{uuid.uuid4().hex[:10]}"
    src = rtnb.sources.mqtt(topic, example=SCHEMA, time="t", client_id=client_id, qos=1,
                            decoder=decoder, max_events=n)
    out, dead = src.collect(), src.dead_letters.collect()
    src.start()
    source: Any = src.source
    await until(lambda: bool(source.stats.connected))
    async with aiomqtt.Client("127.0.0.1", 1883, max_inflight_messages=20) as client:
        for p in payloads:  # in order, each confirmed
            await client.publish(topic, p, qos=1)
    stalled = await bounded(src.wait())
    if stalled:
        src.stop()
        await bounded(src.wait())
    # resume the session: whatever was not acknowledged comes back
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    left = 0
    async with aiomqtt.Client("127.0.0.1", identifier=client_id, clean_start=False,
                              protocol=aiomqtt.ProtocolVersion.V5, properties=props) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for _ in client.messages:
                    left += 1
    return Outcome(*frames(out, dead), src, left, stalled)


async def run_amqp(payloads: list[bytes], ids: list[int], decoder: str,
                    n: int) -> Outcome:
    import aio_pika

    queue = f"rtnb-bad-{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        for p in payloads:
            await channel.default_exchange.publish(
                aio_pika.Message(p, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), queue)
        try:
            src = rtnb.sources.amqp(AMQP_URL, queue=queue, example=SCHEMA, time="t",
                                    decoder=decoder, max_events=n)
            got, dead, stalled = await collect_run(src)
            # the source's connection is closed: anything it did not acknowledge is back
            declared = await channel.declare_queue(queue, passive=True)
            left = int(declared.declaration_result.message_count or 0)
        finally:
            await channel.queue_delete(queue)
    return Outcome(got, dead, src, left, stalled)


RUN: dict[str, Callable[[list[bytes], list[int], str, int], Any]] = {
    "websocket": run_websocket, "sse": run_sse, "redis_stream": run_redis, "nats": run_nats,
    "mqtt": run_mqtt, "amqp": run_amqp}


# -- the matrix ---------------------------------------------------------------------------------
def problems(p: Plan, out: Outcome, source: str) -> list[str]:
    """What is wrong, kind by kind (empty: all as expected)."""
    found: list[str] = []
    expected = expected_frame(p.rows)
    try:
        tm.assert_frame_equal(out.got.reset_index(drop=True), expected)
    except AssertionError as exc:
        got = out.got
        have = set(map(tuple, got.astype(str).to_numpy().tolist()))
        missing = [r for r in expected.astype(str).to_numpy().tolist() if tuple(r) not in have]
        found.append(f"rows differ ({len(got)} rows, {len(expected)} expected; "
                     f"missing {[[*r[:2], str(r[2])[:20]] for r in missing][:8]}): "
                     f"{str(exc)[:600]}")
    bad_kinds = [(i, k) for i, k in enumerate(p.kinds) if k is not None
                 and k.on(source).reason is not None]
    dead = out.dead
    reasons = dead["dead_letter_reason"].tolist() if len(dead) else []
    raws = [None if r is None else as_bytes(r) for r in dead["dead_letter_raw"]] \
        if len(dead) else []
    positions = dead["dead_letter_position"].tolist() if len(dead) else []
    # match each bad message to its dead letter by raw payload, in arrival order
    j = 0
    for _, kind in bad_kinds:
        want = kind.on(source)
        raw = want.raw if want.raw is not None else kind.payload
        at = next((m for m in range(j, len(raws)) if raws[m] == raw), None)
        if at is None:
            near = [r for r in reasons if want.reason and r.startswith(want.reason[:25])]
            found.append(f"{kind.name}: no dead letter with its raw payload"
                         f"{f' (reasons like it: {near[:2]})' if near else ''}")
            continue
        if at != j:
            found.append(f"{kind.name}: dead letters {reasons[j:at]} before it are unexpected")
        j = at + 1
        reason = reasons[at]
        assert want.reason is not None
        if not (reason.startswith(want.reason) if want.prefix else reason == want.reason):
            found.append(f"{kind.name}: reason {reason!r}, expected {want.reason!r}")
        if positions[at] is None:
            found.append(f"{kind.name}: no position")
    if j < len(reasons):
        found.append(f"unexpected dead letters: {reasons[j:]}")
    reader: Any = out.frame.source
    stats = reader.stats
    n_bad = len(bad_kinds)
    if (stats.dead_letters, out.frame.counters.dead_letters) != (n_bad, n_bad):
        found.append(f"counters: source.stats.dead_letters={stats.dead_letters}, "
                     f"frame.counters.dead_letters={out.frame.counters.dead_letters}, "
                     f"{n_bad} bad messages")
    if stats.reconnects:
        found.append(f"{stats.reconnects} reconnects (a bad message cost the connection)")
    if out.stalled:
        found.append(f"the run did not end within {RUN_S:g} s (a stall, or fewer rows than "
                     f"expected)")
    elif out.frame.graph.state != "finished":
        found.append(f"graph state {out.frame.graph.state!r}: {out.frame.graph.error!r}")
    if out.unacked:
        found.append(f"{out.unacked} messages left unacknowledged on the broker")
    if out.unacked is not None and stats.acked != len(p.payloads):
        found.append(f"acked {stats.acked} of {len(p.payloads)} messages")
    return found


CASES = [(d, s) for d in KINDS for s in SOURCES if not (d == "msgpack" and s == "sse")]


@pytest.mark.parametrize(("decoder", "source"), CASES, ids=[f"{d}-{s}" for d, s in CASES])
def test_bad_messages_are_dead_letters_and_the_rest_equals_pandas(decoder: str,
                                                                   source: str) -> None:
    if source in PORTS:
        service_or_skip(*PORTS[source])
    p = plan(decoder, source)
    out = asyncio.run(RUN[source](p.payloads, p.ids, decoder, len(p.rows)))
    found = problems(p, out, source)
    assert not found, f"{decoder} over {source}:\n  " + "\n  ".join(found)


def test_the_matrix_has_49_kinds_of_json_and_each_kind_once() -> None:
    assert len(json_kinds()) >= 30
    for make in KINDS.values():
        names = [k.name for k in make()]
        assert len(names) == len(set(names))
