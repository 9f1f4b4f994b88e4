"""Ingestion benchmark (issue 5): events/s of every source next to its raw client library.

Same data, same run, interleaved:

* data: the first ``n`` rows of the bundled metrics, columns ``timestamp, host, cpu,
  latency_ms, requests``, one record per message, encoded as JSON (time as an ISO 8601
  string, as real feeds send it) or MessagePack (time as float epoch seconds); ``n`` is
  ``Entry.share`` x ``N`` (200,000; 20,000 with ``--quick``, a smoke run whose short runs
  are dominated by connection set-up), so every source's runs take a few seconds: Python
  broker clients read a few thousand to a few ten thousand messages a second;
* for every source and payload, (a) the **raw client**: the client library rtnb itself uses
  reads the same messages and turns them into pandas DataFrames of the same schema, 10,000
  rows at a time (rtnb's default ``max_batch``; fewer where the protocol caps what is
  unacknowledged): decode every message, ``pd.DataFrame.from_records``, the same dtype
  conversion, and the same acknowledgements as rtnb; (b) **rtnb**: the source with
  ``max_events=n``, started with ``frame.arun()``. Both feed the same sink, which only
  checksums the frames;
* the rate is ``n`` / the time from the start to the sink holding the ``n``-th row (what
  happens after that, connections closing, is not throughput); separately, the table says
  how long ``frame.arun()`` took to return after the last row, and whether it returned at
  all (after ``END_WAIT_S`` the bench calls ``frame.stop()``);
* 3 repetitions of each, raw and rtnb alternating (who goes first swaps every repetition),
  after one untimed warm-up of each on a separate pre-load of ``WARMUP`` events (so no
  warm-up stops in the middle of the data); medians, and the ratio is
  median(rtnb) / median(raw). Every run's output is checked against the data (rows, sums of
  every numeric column and of the event times, dtypes), so the table never shows a fast
  wrong answer;
* WebSocket and SSE are served by a minimal server in a child process (``python
  bench/sources.py --serve DIR``) that writes pre-encoded frames in ~1 MiB chunks: it never
  competes with the clients for this process's CPU and is never the bottleneck, and it keeps
  the connection open after the last message (rtnb treats a live feed that closes as a lost
  connection). ``rtnb.demo.FeedServer`` is not used: it runs on the client's loop, drains
  after every message and closes at the end of its data. MQTT runs on a private Mosquitto
  (child process, free port) whose persistent sessions may queue every message (the shared
  broker queues at most 1,000 per session);
* once per source, rtnb with ``max_events`` below what is loaded: does ``frame.arun()``
  return by itself, after ``frame.stop()``, or not at all (a run is abandoned after
  ``STOP_WAIT_S``, never blocks the benchmark);
* a cell whose ratio is below the target gets one pyinstrument profile of its rtnb run
  (not in ``--quick`` runs).

Every source is one :class:`Entry` in ``ENTRIES``: how to pre-load the data, how the raw
client reads it, how rtnb reads it. A source not in ``rtnb.sources`` yet is reported as not
measurable.

Run through ``bench/run.py`` (``make bench``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import msgpack
import pandas as pd

import rtnb
import rtnb.sources

TITLE = "Ingestion: events/s per source and payload vs the raw client library (issue 5)"

N_FULL = 200_000
N_QUICK = 20_000
REPEATS = 3
WARMUP = 1_000  # events read once by each contender before the timed runs
BATCH = 10_000  # rows per DataFrame for the raw client: rtnb's default max_batch
TARGET = 0.7  # rtnb >= TARGET x the raw client's rate
RUN_TIMEOUT_S = 120.0
END_WAIT_S = 1.0  # how long frame.arun() may take to return after the last row
STOP_WAIT_S = 2.0  # and then after frame.stop()
CHUNK = 1 << 20  # bytes per write of the feed server
REPO = Path(__file__).resolve().parent.parent
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
AMQP_PREFETCH = 1_000  # rtnb.sources.amqp's default prefetch
RUNS_PER_TARGET = 2 * REPEATS + 2  # timed runs, the stop check, one profile

COLUMNS = ["timestamp", "host", "cpu", "latency_ms", "requests"]
DTYPES: dict[str, Any] = {"timestamp": "datetime64[ns]", "host": str, "cpu": "float64",
                          "latency_ms": "float64", "requests": "int64"}
EXAMPLE = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in DTYPES.items()})
PAYLOADS = ("json", "msgpack")
_NAMES = count()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}-{next(_NAMES)}"


# -- data ------------------------------------------------------------------------------------
@dataclass
class Feed:
    """The ``n`` records, encoded both ways, and the files the child server and tail read."""

    n: int
    truth: pd.DataFrame
    messages: dict[str, list[bytes]]
    folder: Path
    urls: dict[str, str] = field(default_factory=dict)  # filled once the server runs

    @property
    def jsonl(self) -> Path:
        return self.folder / "feed.jsonl"


def make_feed(n: int, folder: Path) -> Feed:
    """The first ``n`` metrics rows as JSON and MessagePack messages (written to ``folder``)."""
    truth = rtnb.datasets.metrics().iloc[:n].reset_index(drop=True).astype(DTYPES)
    iso = truth["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").tolist()
    epoch = (truth["timestamp"].to_numpy().view("int64") / 1e9).tolist()
    rows = list(zip(truth["host"].tolist(), truth["cpu"].tolist(),
                    truth["latency_ms"].tolist(), truth["requests"].tolist(), strict=True))
    as_json = [json.dumps({"timestamp": t, "host": h, "cpu": c, "latency_ms": la,
                           "requests": r}).encode()
               for t, (h, c, la, r) in zip(iso, rows, strict=True)]
    as_msgpack = [msgpack.packb({"timestamp": t, "host": h, "cpu": c, "latency_ms": la,
                                 "requests": r})
                  for t, (h, c, la, r) in zip(epoch, rows, strict=True)]
    feed = Feed(n, truth, {"json": as_json, "msgpack": as_msgpack}, folder)
    feed.jsonl.write_bytes(b"\n".join(as_json) + b"\n")
    with (folder / "feed.msgpack").open("wb") as fh:  # each message as a msgpack bin
        for m in as_msgpack:
            fh.write(msgpack.packb(m, use_bin_type=True))
    return feed


# -- what every contender feeds: a checksumming sink -------------------------------------------
class Tally:
    """A sink that only checksums the batches it gets; notes when it holds ``n`` rows."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rows = 0
        self.requests = 0
        self.time_ms = 0
        self.cpu = 0.0
        self.latency = 0.0
        self.dtypes: list[Any] | None = None
        self.done_at: float | None = None
        self.finished = asyncio.Event()

    def __call__(self, batch: pd.DataFrame) -> None:
        if self.dtypes is None:
            self.dtypes = batch.dtypes.tolist()
        self.rows += len(batch)
        self.requests += int(batch["requests"].sum())
        self.time_ms += int((batch["timestamp"].to_numpy().view("int64") // 1_000_000).sum())
        self.cpu += float(batch["cpu"].sum())
        self.latency += float(batch["latency_ms"].sum())
        if self.done_at is None and self.rows >= self.n:
            self.done_at = time.perf_counter()
            self.finished.set()

    def mismatch(self, want: Tally) -> str | None:
        """Why this differs from ``want`` (``None`` if it matches)."""
        if self.rows != want.rows:
            return f"{self.rows:,} rows, expected {want.rows:,}"
        if self.dtypes != want.dtypes:
            return f"dtypes {self.dtypes}, expected {want.dtypes}"
        if (self.requests, self.time_ms) != (want.requests, want.time_ms):
            return "sums of requests / timestamps differ"
        if not (math.isclose(self.cpu, want.cpu, rel_tol=1e-9)
                and math.isclose(self.latency, want.latency, rel_tol=1e-9)):
            return "sums of cpu / latency_ms differ"
        return None


# -- the raw client's decoding: what a user would write ------------------------------------------
def json_frame(messages: list[Any]) -> pd.DataFrame:
    """JSON messages -> DataFrame of the example's schema."""
    df = pd.DataFrame.from_records([json.loads(m) for m in messages], columns=COLUMNS)
    df["timestamp"] = pd.to_datetime(df["timestamp"], format="ISO8601",
                                     utc=True).dt.tz_localize(None)
    return df.astype(DTYPES)


def msgpack_frame(messages: list[Any]) -> pd.DataFrame:
    """MessagePack messages -> DataFrame of the example's schema."""
    df = pd.DataFrame.from_records([msgpack.unpackb(m) for m in messages], columns=COLUMNS)
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s")
    return df.astype(DTYPES)


TO_FRAME = {"json": json_frame, "msgpack": msgpack_frame}


class RawBatcher:
    """Collects messages; every ``batch`` of them becomes one DataFrame for the sink."""

    def __init__(self, payload: str, sink: Tally, batch: int = BATCH) -> None:
        self.to_frame = TO_FRAME[payload]
        self.sink = sink
        self.batch = batch
        self.messages: list[Any] = []
        self.positions: list[Any] = []

    def add(self, message: Any, position: Any = None) -> list[Any] | None:
        """Add one message; returns the positions of a batch it completed (to acknowledge)."""
        self.messages.append(message)
        self.positions.append(position)
        return self.flush() if len(self.messages) >= self.batch else None

    def flush(self) -> list[Any] | None:
        """The collected messages as one frame into the sink; their positions."""
        if not self.messages:
            return None
        self.sink(self.to_frame(self.messages))
        done = self.positions
        self.messages, self.positions = [], []
        return done


# -- the table of sources --------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One source of the table.

    ``load(feed, payload, n)`` pre-loads the first ``n`` messages and returns a target (a
    stream key, a URL, a path, ...); ``unload(target)`` cleans up. ``raw(target, payload, n,
    sink)`` reads ``n`` messages with the raw client; ``frame(target, payload, n)`` builds
    the rtnb frame with ``max_events=n``. Every read starts from the first message again.
    """

    name: str
    attr: str  # rtnb.sources.<attr>
    payloads: tuple[str, ...] = PAYLOADS
    load: Callable[[Feed, str, int], Any] | None = None
    raw: Callable[[Any, str, int, Tally], Awaitable[None]] | None = None
    frame: Callable[[Any, str, int], rtnb.StreamingFrame] | None = None
    unload: Callable[[Any], None] | None = None
    share: float = 1.0  # a slow broker reads share x N events
    needs: str | None = None  # "host:port" that must accept connections
    raw_code: str = ""
    rtnb_code: str = ""
    not_applicable: dict[str, str] = field(default_factory=dict)  # payload -> why


# Redis Streams -------------------------------------------------------------------------------
def redis_load(feed: Feed, payload: str, n: int) -> str:
    import redis

    key = _unique("rtnb-bench")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        messages = feed.messages[payload][:n]
        for start in range(0, n, 5_000):
            pipe = client.pipeline(transaction=False)
            for m in messages[start:start + 5_000]:
                pipe.xadd(key, {"data": m})
            pipe.execute()
        got = client.xlen(key)
    finally:
        client.close()
    if got != n:
        msg = f"redis stream {key} holds {got:,} entries after loading {n:,}"
        raise RuntimeError(msg)
    return key


def redis_unload(key: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(key)
    finally:
        client.close()


async def redis_raw(key: str, payload: str, n: int, sink: Tally) -> None:
    import redis.asyncio

    client = redis.asyncio.from_url(REDIS_URL)
    batcher = RawBatcher(payload, sink)
    last: Any = "0"
    got = 0
    try:
        while got < n:
            reply = await client.xread({key: last}, count=1_000, block=500)
            for _, entries in reply:
                for entry_id, fields in entries[:n - got]:
                    batcher.add(fields[b"data"])
                    last = entry_id
                    got += 1
        batcher.flush()
    finally:
        await client.aclose()


async def redis_group_raw(key: str, payload: str, n: int, sink: Tally) -> None:
    import redis.asyncio

    client = redis.asyncio.from_url(REDIS_URL)
    group = _unique("raw")
    batcher = RawBatcher(payload, sink)
    got = 0
    try:
        await client.xgroup_create(key, group, id="0")
        while got < n:
            reply = await client.xreadgroup(group, "raw", {key: ">"}, count=1_000, block=500)
            for _, entries in reply:
                for entry_id, fields in entries[:n - got]:
                    got += 1
                    done = batcher.add(fields[b"data"], entry_id)
                    if done is None and got == n:
                        done = batcher.flush()
                    if done:
                        await client.xack(key, group, *done)
    finally:
        await client.aclose()


def redis_frame(key: str, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.redis_stream(key, REDIS_URL, example=EXAMPLE, time="timestamp",
                                     decoder=payload, max_events=n)


def redis_group_frame(key: str, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.redis_stream(key, REDIS_URL, example=EXAMPLE, time="timestamp",
                                     group=_unique("rtnb"), decoder=payload, max_events=n)


# WebSocket and SSE (served by the child process) -------------------------------------------------
def served(kind: str) -> Callable[[Feed, str, int], str]:
    """The child server's URL for the first ``n`` messages."""
    def load(feed: Feed, payload: str, n: int) -> str:
        return f"{feed.urls[f'{kind}/{payload}']}/{n}"
    return load


async def websocket_raw(url: str, payload: str, n: int, sink: Tally) -> None:
    from websockets.asyncio.client import connect

    batcher = RawBatcher(payload, sink)
    async with connect(url, max_size=2 ** 24) as ws:
        for _ in range(n):
            batcher.add(await ws.recv())
        batcher.flush()


def websocket_frame(url: str, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.websocket(url, example=EXAMPLE, time="timestamp", decoder=payload,
                                  max_events=n)


async def sse_raw(url: str, payload: str, n: int, sink: Tally) -> None:
    import httpx

    batcher = RawBatcher(payload, sink)
    got = 0
    data: list[str] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client, \
            client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        async for line in response.aiter_lines():
            if line == "":
                if data:
                    batcher.add("\n".join(data))
                    data = []
                    got += 1
                    if got == n:
                        break
            elif line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
        batcher.flush()


def sse_frame(url: str, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.sse(url, example=EXAMPLE, time="timestamp", decoder=payload,
                            max_events=n)


# tail: a file of JSON lines -------------------------------------------------------------------
def tail_load(feed: Feed, payload: str, n: int) -> Path:
    if n >= feed.n:
        return feed.jsonl
    path = feed.folder / f"feed-{n}.jsonl"
    path.write_bytes(b"\n".join(feed.messages["json"][:n]) + b"\n")
    return path


async def tail_raw(path: Path, payload: str, n: int, sink: Tally) -> None:
    batcher = RawBatcher(payload, sink)
    got = 0
    pending = b""
    with path.open("rb") as fh:
        while got < n:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines[:n - got]:
                if line:
                    batcher.add(line)
                    got += 1
    batcher.flush()


def tail_frame(path: Path, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.tail(path, example=EXAMPLE, time="timestamp", follow=False,
                             max_events=n)


# NATS JetStream ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    """A JetStream stream holding the messages on one subject."""

    name: str
    subject: str


def nats_load(feed: Feed, payload: str, n: int) -> Stream:
    async def load() -> Stream:
        import nats

        tag = uuid.uuid4().hex[:10]
        target = Stream(f"RTNB_BENCH_{tag}", f"rtnb-bench.{tag}")
        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            await js.add_stream(name=target.name, subjects=[target.subject])
            for i, m in enumerate(feed.messages[payload][:n]):
                await nc.publish(target.subject, m)
                if i % 10_000 == 9_999:
                    await nc.flush()
            await nc.flush()
            held = 0
            for _ in range(200):
                held = int((await js.stream_info(target.name)).state.messages)
                if held >= n:
                    break
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
        if held != n:
            msg = f"JetStream stream {target.name} holds {held:,} messages after loading {n:,}"
            raise RuntimeError(msg)
        return target

    return asyncio.run(load())


def nats_unload(target: Stream) -> None:
    async def unload() -> None:
        import nats

        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_stream(target.name)
        finally:
            await nc.close()

    asyncio.run(unload())


async def _nats_raw(target: Stream, payload: str, n: int, sink: Tally, *, acks: bool) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(NATS_URL)
    batcher = RawBatcher(payload, sink)
    got = 0
    try:
        js = nc.jetstream()
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0,
                                ack_policy=AckPolicy.EXPLICIT if acks else AckPolicy.NONE)
        if acks:
            config.max_ack_pending = 100_000 + BATCH + 1_000  # rtnb's default
        psub = await js.pull_subscribe(target.subject, durable=_unique("raw") if acks else None,
                                       stream=target.name, config=config,
                                       pending_msgs_limit=2_000)
        while got < n:
            try:
                msgs = await psub.fetch(min(1_000, n - got), timeout=0.5)
            except TimeoutError:
                continue
            for m in msgs:
                got += 1
                done = batcher.add(m.data, m.reply)
                if done is None and got == n:
                    done = batcher.flush()
                if done and acks:
                    for reply in done:
                        await nc.publish(reply, b"+ACK")
                    await nc.flush()
    finally:
        await nc.close()


async def nats_raw(target: Stream, payload: str, n: int, sink: Tally) -> None:
    await _nats_raw(target, payload, n, sink, acks=False)


async def nats_durable_raw(target: Stream, payload: str, n: int, sink: Tally) -> None:
    await _nats_raw(target, payload, n, sink, acks=True)


def nats_frame(target: Stream, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.nats(target.subject, NATS_URL, example=EXAMPLE, time="timestamp",
                             stream=target.name, decoder=payload, max_events=n)


def nats_durable_frame(target: Stream, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.nats(target.subject, NATS_URL, example=EXAMPLE, time="timestamp",
                             stream=target.name, durable=_unique("rtnb"), decoder=payload,
                             max_events=n)


# AMQP (RabbitMQ): one queue per run, all filled by one fanout exchange ---------------------------
@dataclass
class Queues:
    """Queues holding the same messages (a queue is consumed once: one per run)."""

    exchange: str
    names: list[str]
    used: int = 0

    def take(self) -> str:
        if self.used >= len(self.names):
            msg = f"all {len(self.names)} pre-loaded AMQP queues are used up"
            raise RuntimeError(msg)
        self.used += 1
        return self.names[self.used - 1]


def amqp_load(feed: Feed, payload: str, n: int) -> Queues:
    async def load() -> Queues:
        import aio_pika

        exchange_name = _unique("rtnb-bench")
        target = Queues(exchange_name,
                        [f"{exchange_name}-{i}" for i in range(RUNS_PER_TARGET)])
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel(publisher_confirms=False)
            exchange = await channel.declare_exchange(exchange_name,
                                                      aio_pika.ExchangeType.FANOUT)
            queues = []
            for name in target.names:
                queue = await channel.declare_queue(name, durable=False)
                await queue.bind(exchange)
                queues.append(queue)
            for m in feed.messages[payload][:n]:
                await exchange.publish(aio_pika.Message(m), routing_key="")
            held = 0
            for _ in range(600):
                counts = [(await channel.declare_queue(q, passive=True))
                          .declaration_result.message_count for q in target.names]
                held = min(counts)
                if held >= n:
                    break
                await asyncio.sleep(0.05)
        finally:
            await connection.close()
        if held != n:
            msg = f"AMQP queues of {exchange_name} hold {held:,} messages after loading {n:,}"
            raise RuntimeError(msg)
        return target

    return asyncio.run(load())


def amqp_unload(target: Queues) -> None:
    async def unload() -> None:
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            for name in target.names:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.exchange_delete(target.exchange)
        finally:
            await connection.close()

    asyncio.run(unload())


async def amqp_raw(target: Queues, payload: str, n: int, sink: Tally) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    # prefetch caps the unacknowledged messages: a batch can't be larger (rtnb's neither)
    batcher = RawBatcher(payload, sink, min(BATCH, AMQP_PREFETCH))
    got = 0
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=AMQP_PREFETCH)
        queue = await channel.get_queue(target.take())
        async with queue.iterator() as messages:
            async for message in messages:
                got += 1
                done = batcher.add(message.body, message)
                if done is None and got == n:
                    done = batcher.flush()
                if done:
                    await done[-1].ack(multiple=True)
                if got == n:
                    break
    finally:
        await connection.close()


def amqp_frame(target: Queues, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.amqp(AMQP_URL, queue=target.take(), example=EXAMPLE, time="timestamp",
                             decoder=payload, max_events=n)


# MQTT: a private Mosquitto whose persistent sessions each queue every message -------------------
@dataclass
class Broker:
    """A private Mosquitto (child process) with one persistent session per run."""

    proc: subprocess.Popen[bytes]
    port: int
    folder: Path
    topic: str
    clients: list[str]
    used: int = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def take(self) -> str:
        if self.used >= len(self.clients):
            msg = f"all {len(self.clients)} pre-loaded MQTT sessions are used up"
            raise RuntimeError(msg)
        self.used += 1
        return self.clients[self.used - 1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _mqtt_client(client_id: str | None = None) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                         protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return client, props


def mqtt_load(feed: Feed, payload: str, n: int) -> Broker:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    folder = Path(tempfile.mkdtemp(prefix="rtnb-bench-mqtt-"))
    port = _free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n")
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    broker = Broker(proc, port, folder, f"rtnb-bench/{uuid.uuid4().hex[:10]}",
                    [_unique("bench") for _ in range(RUNS_PER_TARGET)])
    try:
        deadline = time.monotonic() + 5
        while not _listening("127.0.0.1", port):
            if time.monotonic() > deadline or proc.poll() is not None:
                msg = f"the private mosquitto did not start on port {port}"
                raise RuntimeError(msg)
            time.sleep(0.02)
        for client_id in broker.clients:  # the sessions that will queue the messages
            client, props = _mqtt_client(client_id)
            client.connect("127.0.0.1", port, clean_start=False, properties=props)
            client.loop_start()
            _, mid = client.subscribe(broker.topic, qos=1)
            deadline = time.monotonic() + 5
            while mid in getattr(client, "_in_messages", {}) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            client.disconnect()
            client.loop_stop()
        publisher, props = _mqtt_client()
        publisher.max_inflight_messages_set(1_000)
        publisher.max_queued_messages_set(0)
        publisher.connect("127.0.0.1", port, properties=props)
        publisher.loop_start()
        info = None
        for m in feed.messages[payload][:n]:
            info = publisher.publish(broker.topic, m, qos=1)
        if info is not None:
            info.wait_for_publish(timeout=120)
        publisher.disconnect()
        publisher.loop_stop()
    except BaseException:
        mqtt_unload(broker)
        raise
    return broker


def mqtt_unload(broker: Broker) -> None:
    broker.proc.terminate()
    try:
        broker.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        broker.proc.kill()
        broker.proc.wait()
    shutil.rmtree(broker.folder, ignore_errors=True)


async def mqtt_raw(broker: Broker, payload: str, n: int, sink: Tally) -> None:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 10_000  # rtnb's default max_inflight
    client = aiomqtt.Client("127.0.0.1", broker.port, identifier=broker.take(),
                            protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                            properties=props, timeout=10)
    paho = client._client  # aiomqtt has no manual acks; paho has (rtnb does the same)
    paho.manual_ack_set(True)
    batcher = RawBatcher(payload, sink)
    got = 0
    async with client:
        async for message in client.messages:
            got += 1
            done = batcher.add(message.payload, message.mid)
            if done is None and got == n:
                done = batcher.flush()
            if done:
                for mid in done:
                    paho.ack(mid, 1)
            if got == n:
                break


def mqtt_frame(broker: Broker, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.mqtt(broker.topic, broker.url, example=EXAMPLE, time="timestamp",
                             qos=1, client_id=broker.take(), clean_session=False,
                             decoder=payload, max_events=n)


# Kafka: librdkafka's mock cluster (inside the confluent-kafka wheel), started by the bench --
KAFKA_PARTITIONS = 4  # what the mock cluster gives a topic it creates


@dataclass
class KafkaTopic:
    """A topic of the bench's mock Kafka cluster holding the first ``n`` messages."""

    bootstrap: str
    topic: str
    n: int


_kafka_mock: dict[str, Any] = {}  # "producer": the cluster lives as long as this object


def _kafka_cluster() -> Any:
    """The mock cluster (3 brokers on 127.0.0.1), started on first use, for the process."""
    if "producer" not in _kafka_mock:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": "", "test.mock.num.brokers": 3,
                             "log_level": 3, "linger.ms": 5})
        brokers = producer.list_topics(timeout=10).brokers
        _kafka_mock["producer"] = producer
        _kafka_mock["bootstrap"] = ",".join(f"{b.host}:{b.port}" for b in brokers.values())
    return _kafka_mock["producer"]


def kafka_load(feed: Feed, payload: str, n: int) -> KafkaTopic:
    producer = _kafka_cluster()
    topic = _unique("rtnb-bench")
    producer.list_topics(topic, timeout=10)  # created with KAFKA_PARTITIONS partitions
    for i, m in enumerate(feed.messages[payload][:n]):
        while True:
            try:
                producer.produce(topic, value=m, partition=i % KAFKA_PARTITIONS)
                break
            except BufferError:
                producer.poll(0.01)
    left = producer.flush(60)
    if left:
        msg = f"{left:,} of {n:,} messages were not delivered to the mock Kafka cluster"
        raise RuntimeError(msg)
    _kafka_mock["topics"] = _kafka_mock.get("topics", 0) + 1
    return KafkaTopic(_kafka_mock["bootstrap"], topic, n)


def kafka_unload(target: KafkaTopic) -> None:
    """The last topic unloaded stops the mock cluster."""
    _kafka_mock["topics"] -= 1
    if _kafka_mock["topics"] == 0:
        _kafka_mock.pop("producer").close()


async def kafka_raw(target: KafkaTopic, payload: str, n: int, sink: Tally) -> None:
    """aiokafka (what rtnb uses): every partition assigned, offsets committed per batch."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=target.bootstrap, group_id=_unique("raw"),
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    tps = [TopicPartition(target.topic, p) for p in range(KAFKA_PARTITIONS)]
    consumer.assign(tps)
    batcher = RawBatcher(payload, sink)
    got = 0
    try:
        while got < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            for tp, messages in batches.items():
                for message in messages:
                    got += 1
                    done = batcher.add(message.value, (tp.partition, message.offset))
                    if done is None and got == n:
                        done = batcher.flush()
                    if done:
                        last: dict[int, int] = {}
                        for p, o in done:
                            last[p] = max(last.get(p, -1), o)
                        await consumer.commit({TopicPartition(target.topic, p): o + 1
                                               for p, o in last.items()})
    finally:
        await consumer.stop()


async def kafka_librdkafka_raw(target: KafkaTopic, payload: str, n: int, sink: Tally) -> None:
    """confluent-kafka's Consumer (librdkafka, C), its blocking calls in a thread."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": target.bootstrap, "group.id": _unique("raw"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "log_level": 3})
    consumer.assign([TopicPartition(target.topic, p) for p in range(KAFKA_PARTITIONS)])
    loop = asyncio.get_running_loop()
    batcher = RawBatcher(payload, sink)
    got = 0
    try:
        while got < n:
            messages = await loop.run_in_executor(None, consumer.consume, BATCH, 0.2)
            for message in messages:
                if message.error() is not None:
                    raise RuntimeError(str(message.error()))
                got += 1
                done = batcher.add(message.value(), (message.partition(), message.offset()))
                if done is None and got == n:
                    done = batcher.flush()
                if done:
                    last: dict[int, int] = {}
                    for p, o in done:
                        last[p] = max(last.get(p, -1), o)
                    offsets = [TopicPartition(target.topic, p, o + 1) for p, o in last.items()]
                    await loop.run_in_executor(
                        None, lambda offsets=offsets: consumer.commit(offsets=offsets,
                                                                      asynchronous=False))
    finally:
        await loop.run_in_executor(None, consumer.close)


def kafka_frame(target: KafkaTopic, payload: str, n: int) -> rtnb.StreamingFrame:
    return rtnb.sources.kafka(target.topic, target.bootstrap, example=EXAMPLE,
                              time="timestamp", group=_unique("rtnb"), decoder=payload,
                              max_events=n)


BINARY_OVER_TEXT = "MessagePack is binary; this transport carries text lines"

ENTRIES: list[Entry] = [
    Entry("redis", "redis_stream", PAYLOADS, redis_load, redis_raw, redis_frame, redis_unload,
          share=0.15, needs="127.0.0.1:6379",
          raw_code="redis-py asyncio `XREAD count=1000` from id 0",
          rtnb_code="`redis_stream(key, decoder=...)`: XREAD"),
    Entry("redis group", "redis_stream", PAYLOADS, redis_load, redis_group_raw,
          redis_group_frame, redis_unload, share=0.15, needs="127.0.0.1:6379",
          raw_code="redis-py asyncio `XREADGROUP count=1000`, one `XACK` per 10,000 rows",
          rtnb_code="`redis_stream(key, group=..., decoder=...)`: XREADGROUP, XACK after "
                    "each batch"),
    Entry("websocket", "websocket", PAYLOADS, served("ws"), websocket_raw, websocket_frame,
          share=0.35,
          raw_code="websockets asyncio client, `await ws.recv()` per message",
          rtnb_code="`websocket(url, decoder=...)`"),
    Entry("sse", "sse", ("json",), served("sse"), sse_raw, sse_frame, share=0.5,
          raw_code="httpx `AsyncClient.stream` + `aiter_lines()`, `data:` lines joined per "
                   "event",
          rtnb_code="`sse(url)`", not_applicable={"msgpack": BINARY_OVER_TEXT}),
    Entry("tail", "tail", ("json",), tail_load, tail_raw, tail_frame, share=0.75,
          raw_code="`open(path, 'rb').read(1 MiB)`, split on newlines",
          rtnb_code="`tail(path, follow=False)`", not_applicable={"msgpack": BINARY_OVER_TEXT}),
    Entry("nats jetstream", "nats", PAYLOADS, nats_load, nats_raw, nats_frame, nats_unload,
          share=0.15, needs="127.0.0.1:4222",
          raw_code="nats-py ephemeral pull consumer (ack policy none), `fetch(1000)`",
          rtnb_code="`nats(subject, stream=...)`: ephemeral consumer, no acks"),
    Entry("nats durable", "nats", PAYLOADS, nats_load, nats_durable_raw, nats_durable_frame,
          nats_unload, share=0.075, needs="127.0.0.1:4222",
          raw_code="nats-py durable pull consumer, `fetch(1000)`, `+ACK` per message and one "
                   "flush per 10,000 rows",
          rtnb_code="`nats(subject, stream=..., durable=...)`: explicit acks after each "
                    "batch"),
    Entry("mqtt", "mqtt", PAYLOADS, mqtt_load, mqtt_raw, mqtt_frame, mqtt_unload, share=0.03,
          raw_code="aiomqtt (MQTT 5, QoS 1, persistent session, Receive Maximum 10,000), "
                   "paho manual `ack` per message after each 10,000 rows",
          rtnb_code="`mqtt(topic, qos=1, client_id=..., clean_session=False)`"),
    Entry("amqp", "amqp", PAYLOADS, amqp_load, amqp_raw, amqp_frame, amqp_unload,
          share=0.04, needs="127.0.0.1:5672",
          raw_code=f"aio-pika, prefetch {AMQP_PREFETCH:,}, `queue.iterator()`, one "
                   f"`ack(multiple=True)` per {AMQP_PREFETCH:,} rows (a batch can't exceed "
                   "the prefetch)",
          rtnb_code="`amqp(queue=...)` (default prefetch 1,000)"),
    Entry("kafka", "kafka", PAYLOADS, kafka_load, kafka_raw, kafka_frame, kafka_unload,
          share=0.5,
          raw_code="aiokafka, the 4 partitions `assign()`ed, `getmany(max_records=10000)`, "
                   "one `commit` per 10,000 rows; librdkafka's mock cluster (3 brokers, "
                   "started by the bench in this process)",
          rtnb_code="`kafka(topic, servers, group=...)`: every partition assigned, commit "
                    "after each batch"),
    Entry("kafka (librdkafka)", "kafka", PAYLOADS, kafka_load, kafka_librdkafka_raw,
          kafka_frame, kafka_unload, share=0.5,
          raw_code="confluent-kafka `Consumer` (librdkafka), the 4 partitions `assign()`ed, "
                    "`consume(10000)` in a thread, one synchronous `commit` per 10,000 rows",
          rtnb_code="the same as `kafka`: is librdkafka a faster client to build on?"),
]


# -- the feed server (child process) ---------------------------------------------------------
def _ws_frame(payload: bytes, opcode: int) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def _chunks(frames: list[bytes]) -> list[bytes]:
    """Whole frames joined into ~``CHUNK``-byte writes (so a pong fits between two writes)."""
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for f in frames:
        part.append(f)
        size += len(f)
        if size >= CHUNK:
            out.append(b"".join(part))
            part, size = [], 0
    if part:
        out.append(b"".join(part))
    return out


async def _ws_control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      closing: asyncio.Event) -> None:
    """Answer the client's pings and its close frame."""
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await reader.readexactly(8), "big")
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(n)))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                writer.write(_ws_frame(data, 0xA))
            elif opcode == 0x8:
                closing.set()
                writer.write(_ws_frame(data[:2], 0x8))
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        closing.set()


async def _serve_client(chunks: dict[str, list[bytes]], reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        path = head[0].split(" ")[1] if " " in head[0] else "/"
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (h.partition(":") for h in head[1:] if h)}
        if path not in chunks:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        closing = asyncio.Event()
        if path.startswith("/ws/"):
            accept = base64.b64encode(hashlib.sha1(
                (headers["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                          ).encode())
            control = asyncio.ensure_future(_ws_control(reader, writer, closing))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n")
            control = asyncio.ensure_future(reader.read())  # EOF: the client left
            control.add_done_callback(lambda _: closing.set())
        for chunk in chunks[path]:
            if closing.is_set():
                break
            writer.write(chunk)
            await writer.drain()
        await control  # keep the connection open until the client closes it
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(folder: Path, counts: list[int]) -> None:
    """Serve ``/ws/<payload>/<count>`` and ``/sse/json/<count>``: the first ``count``
    messages, built before the port is announced (so no run waits for it)."""
    json_msgs = (folder / "feed.jsonl").read_bytes().splitlines()
    with (folder / "feed.msgpack").open("rb") as fh:
        msgpack_msgs = list(msgpack.Unpacker(fh, raw=False))
    chunks: dict[str, list[bytes]] = {}
    for k in counts:
        chunks[f"/ws/json/{k}"] = _chunks([_ws_frame(m, 0x1) for m in json_msgs[:k]])
        chunks[f"/ws/msgpack/{k}"] = _chunks([_ws_frame(m, 0x2) for m in msgpack_msgs[:k]])
        chunks[f"/sse/json/{k}"] = _chunks([b"id: %d\ndata: %s\n\n" % (i, m)
                                            for i, m in enumerate(json_msgs[:k])])
    server = await asyncio.start_server(lambda r, w: _serve_client(chunks, r, w),
                                        "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    # serve until the parent closes our stdin
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@contextlib.contextmanager
def feed_server(feed: Feed, counts: list[int]) -> Any:
    """Run the child server on ``feed``'s files (first ``counts`` messages); fills
    ``feed.urls``."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(feed.folder),
                             ",".join(str(k) for k in sorted(set(counts)))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        base = f"127.0.0.1:{port}"
        feed.urls = {"ws/json": f"ws://{base}/ws/json", "ws/msgpack": f"ws://{base}/ws/msgpack",
                     "sse/json": f"http://{base}/sse/json"}
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- measuring -------------------------------------------------------------------------------
@dataclass
class Run:
    """One read: seconds to the last row, what arrived, and (rtnb) how ``arun()`` ended."""

    seconds: float
    sink: Tally
    ended_s: float | None = None  # arun() returned this long after the last row, by itself
    after_stop_s: float | None = None  # else: this long after frame.stop()
    stuck: bool = False  # not even frame.stop() ended it (the bench cancelled the task)

    @property
    def ending(self) -> str:
        if self.ended_s is not None:
            return f"returned {self.ended_s * 1e3:.0f} ms after the last row"
        if self.after_stop_s is not None:
            return (f"did not return within {END_WAIT_S:g} s; returned "
                    f"{self.after_stop_s * 1e3:.0f} ms after `frame.stop()`")
        return f"did not return, not even within {STOP_WAIT_S:g} s of `frame.stop()`"


@dataclass
class Cell:
    """One source x payload: timed runs of both contenders."""

    entry: Entry
    payload: str
    n: int = 0
    raw: list[Run] = field(default_factory=list)
    ours: list[Run] = field(default_factory=list)
    stop_check: Run | None = None
    problem: str | None = None  # n/a or error text
    rtnb_failed: bool = False
    checks: list[str] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)

    def rate(self, runs: list[Run]) -> float | None:
        return self.n / statistics.median(r.seconds for r in runs) if runs else None

    @property
    def ratio(self) -> float | None:
        raw, ours = self.rate(self.raw), self.rate(self.ours)
        return ours / raw if raw and ours else None

    @property
    def paired(self) -> list[float]:
        return [r.seconds / o.seconds for r, o in zip(self.raw, self.ours, strict=False)]


async def _run_raw(entry: Entry, target: Any, payload: str, n: int) -> Run:
    assert entry.raw is not None
    sink = Tally(n)
    started = time.perf_counter()
    async with asyncio.timeout(RUN_TIMEOUT_S):
        await entry.raw(target, payload, n, sink)
    if sink.done_at is None:
        msg = f"the raw client delivered {sink.rows:,} of {n:,} rows"
        raise RuntimeError(msg)
    return Run(sink.done_at - started, sink)


async def _run_rtnb(entry: Entry, target: Any, payload: str, n: int) -> Run:
    """rtnb with ``max_events=n`` until the sink holds ``n`` rows; then how arun() ends."""
    assert entry.frame is not None
    sink = Tally(n)
    frame = entry.frame(target, payload, n)
    frame.sink(sink)
    started = time.perf_counter()
    task = asyncio.ensure_future(frame.arun())
    last_row = asyncio.ensure_future(sink.finished.wait())
    try:
        await asyncio.wait({task, last_row}, timeout=RUN_TIMEOUT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        if sink.done_at is None:
            msg = (f"rtnb delivered {sink.rows:,} of {n:,} rows and "
                   + ("ended" if task.done() else
                      f"was still running after {RUN_TIMEOUT_S:.0f} s"))
            raise RuntimeError(msg)
        run = Run(sink.done_at - started, sink)
        await asyncio.wait({task}, timeout=END_WAIT_S)  # does arun() return by itself?
        if task.done():
            run.ended_s = time.perf_counter() - sink.done_at
        else:
            stopped = time.perf_counter()
            frame.stop()
            await asyncio.wait({task}, timeout=STOP_WAIT_S)
            if task.done():
                run.after_stop_s = time.perf_counter() - stopped
            else:
                run.stuck = True
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        return run
    finally:
        last_row.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)


def warm_n(n: int) -> int:
    """Events of a warm-up (read from a separate, small pre-load)."""
    return min(WARMUP, n // 2)


def _in_new_loop(job: Callable[[], Awaitable[Run]], *, collect: bool = True) -> Run:
    """``asyncio.run(job())``, except that tasks ignoring cancellation are abandoned after a
    moment instead of blocking the benchmark forever."""
    if collect:
        gc.collect()
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(job())  # type: ignore[arg-type]
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), 1.0))
        loop.close()


def measure(cell: Cell, target: Any, warm_target: Any, want: Tally, stop_check: bool,
            log: Callable[[str], None]) -> None:
    """Warm up on ``warm_target``; interleave the timed runs; check every output."""
    entry, payload, n = cell.entry, cell.payload, cell.n
    warm = warm_n(n)
    who = "raw"
    try:
        _in_new_loop(lambda: _run_raw(entry, warm_target, payload, warm))
        who = "rtnb"
        _in_new_loop(lambda: _run_rtnb(entry, warm_target, payload, warm))
        for rep in range(REPEATS):
            for who in ("raw", "rtnb") if rep % 2 == 0 else ("rtnb", "raw"):
                if who == "raw":
                    run = _in_new_loop(lambda: _run_raw(entry, target, payload, n))
                    cell.raw.append(run)
                else:
                    run = _in_new_loop(lambda: _run_rtnb(entry, target, payload, n))
                    cell.ours.append(run)
                bad = run.sink.mismatch(want)
                if bad:
                    cell.checks.append(f"{who}: {bad}")
                log(f"    {who:4s} rep {rep + 1}: {n / run.seconds:10,.0f} events/s"
                    + ("" if who == "raw" else f"; arun() {run.ending}")
                    + (f"  WRONG: {bad}" if bad else ""))
        if stop_check:
            who = "rtnb"
            k = warm_n(n)
            cell.stop_check = _in_new_loop(lambda: _run_rtnb(entry, target, payload, k))
            log(f"    rtnb max_events={k:,} of {n:,}: arun() {cell.stop_check.ending}")
    except Exception as exc:
        cell.problem = f"{who} run: {type(exc).__name__}: {exc}"
        cell.rtnb_failed = who == "rtnb"
        log(f"    error: {cell.problem}")
        traceback.print_exc()


def profile_rtnb(cell: Cell, target: Any, log: Callable[[str], None]) -> list[str]:
    """The top frames of one rtnb run under pyinstrument (self time, rtnb inclusive)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return ["pyinstrument is not installed: `.venv/bin/pip install pyinstrument`."]
    entry, payload, n = cell.entry, cell.payload, cell.n
    log(f"    profile: rtnb {entry.name} {payload} (pyinstrument) ...")
    profiler = Profiler(interval=0.001, async_mode="disabled")
    gc.collect()
    profiler.start()
    try:
        run = _in_new_loop(lambda: _run_rtnb(entry, target, payload, n), collect=False)
    finally:
        profiler.stop()
    session = profiler.last_session
    root = session.root_frame() if session is not None else None
    if root is None or session is None:
        return ["pyinstrument recorded no samples."]
    total = root.time
    inclusive: dict[str, float] = {}
    self_time: dict[str, float] = {}

    def name(frame: Any) -> str:
        return f"{frame.function} ({_short(frame.file_path)}:{frame.line_no})"

    def walk(frame: Any, active: frozenset[str]) -> None:
        if frame.is_synthetic:
            return
        key = name(frame)
        if key not in active:
            inclusive[key] = inclusive.get(key, 0.0) + frame.time
        self_time[key] = self_time.get(key, 0.0) + frame.total_self_time
        for child in frame.children:
            walk(child, active | {key})

    walk(root, frozenset())
    ours = sorted(((t, k) for k, t in inclusive.items()
                   if k.rsplit("(", 1)[1].startswith("rtnb/")), reverse=True)[:8]
    leaves = sorted(((t, k) for k, t in self_time.items()), reverse=True)[:8]
    lines = [f"**rtnb {entry.name}, {payload}**: {n:,} events, {session.duration:.2f} s "
             f"under the profiler ({session.sample_count:,} samples; "
             f"{n / run.seconds:,.0f} events/s to the last row).", "",
             "| self % | where the CPU is | incl. % | rtnb function |",
             "| ---: | --- | ---: | --- |"]
    for i in range(max(len(ours), len(leaves))):
        left = (f"{100 * leaves[i][0] / total:.1f} | `{leaves[i][1]}`" if i < len(leaves)
                else " | ")
        right = (f"{100 * ours[i][0] / total:.1f} | `{ours[i][1]}`" if i < len(ours)
                 else " | ")
        lines.append(f"| {left} | {right} |")
    return [*lines, ""]


def _short(path: str | None) -> str:
    if not path:
        return "?"
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def unavailable(entry: Entry) -> str | None:
    """Why ``entry`` cannot be measured now (``None`` if it can)."""
    if not hasattr(rtnb.sources, entry.attr):
        return "source not written yet"
    if entry.needs is not None:
        host, _, port = entry.needs.rpartition(":")
        if not _listening(host, int(port)):
            return f"nothing listens on {entry.needs}"
    if entry.load is None or entry.raw is None or entry.frame is None:
        return f"`rtnb.sources.{entry.attr}` exists; its bench entry is not written yet"
    return None


# -- report ----------------------------------------------------------------------------------
def _fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    return f"{rate / 1e6:.2f} M" if rate >= 1e6 else f"{rate / 1e3:.1f} k"


def _fmt_end(runs: list[Run]) -> str:
    """The median end time of the runs that returned by themselves; how many did not."""
    done = [r.ended_s for r in runs if r.ended_s is not None]
    text = f"{statistics.median(done) * 1e3:.0f} ms" if done else ""
    if len(done) < len(runs):
        text += f"{'; ' if text else ''}**{len(runs) - len(done)} of {len(runs)} did not**"
    return text


def table(cells: list[Cell]) -> list[str]:
    lines = ["| source | payload | events | raw client events/s | rtnb events/s | rtnb / raw | "
             "paired ratios | arun() returned after the last row | checked |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for c in cells:
        if not c.raw and not c.ours:
            lines.append(f"| {c.entry.name} | {c.payload} | | | | | | | {c.problem} |")
            continue
        ratio = c.ratio
        shown = "n/a" if ratio is None else (f"**{ratio:.2f}**" if ratio < TARGET
                                             else f"{ratio:.2f}")
        pairs = ", ".join(f"{p:.2f}" for p in sorted(c.paired))
        check = "; ".join(c.checks) if c.checks else "ok"
        if c.problem:
            check += f"; {c.problem}"
        lines.append(f"| {c.entry.name} | {c.payload} | {c.n:,} | {_fmt_rate(c.rate(c.raw))} "
                     f"| {_fmt_rate(c.rate(c.ours))} | {shown} | {pairs} | {_fmt_end(c.ours)} "
                     f"| {check} |")
    return lines


def stop_table(cells: list[Cell]) -> list[str]:
    checked = [c for c in cells if c.stop_check is not None]
    if not checked:
        return []
    lines = ["| source | `max_events` / loaded | `frame.arun()` |", "| --- | --- | --- |"]
    for c in checked:
        assert c.stop_check is not None
        run = c.stop_check
        text = run.ending if run.ended_s is not None else f"**{run.ending}**"
        lines.append(f"| {c.entry.name} | {run.sink.n:,} / {c.n:,} | {text} |")
    return lines


def target_rows(cells: list[Cell]) -> list[tuple[str, str, str]]:
    rows = []
    for c in cells:
        if c.payload in c.entry.not_applicable:
            continue
        what = f"ingestion {c.entry.name} {c.payload}: rtnb >= {TARGET} x raw client"
        ratio = c.ratio
        if c.checks:
            rows.append((what, f"wrong output ({c.checks[0]})", "FAIL"))
        elif c.rtnb_failed:
            rows.append((what, f"rtnb failed: {c.problem}", "FAIL"))
        elif ratio is None:
            rows.append((what, c.problem or "n/a", "n/a"))
        else:
            rows.append((what, f"{ratio:.2f}x", "PASS" if ratio >= TARGET else "FAIL"))
    return rows


def _measure_cell(cell: Cell, feed: Feed, loaded: dict[tuple[Any, str, int], Any],
                  stop_check: bool, profile: bool, log: Callable[[str], None]) -> None:
    entry, payload, n = cell.entry, cell.payload, cell.n
    assert entry.load is not None
    log(f"  {entry.name} / {payload}: {n:,} events, {REPEATS} x raw and rtnb, "
        "interleaved ...")
    targets = []
    for k in (n, warm_n(n)):
        key = (entry.load, payload, k)
        if key not in loaded:
            started = time.perf_counter()
            loaded[key] = entry.load(feed, payload, k)
            if k == n and time.perf_counter() - started > 0.5:
                log(f"    pre-loaded in {time.perf_counter() - started:.1f} s")
        targets.append(loaded[key])
    want = Tally(n)
    want(feed.truth.iloc[:n])
    measure(cell, targets[0], targets[1], want, stop_check, log)
    if profile and cell.ratio is not None and cell.ratio < TARGET:
        cell.profile = profile_rtnb(cell, targets[0], log)


@contextlib.contextmanager
def _loaded_targets() -> Iterator[dict[tuple[Any, str, int], Any]]:
    loaded: dict[tuple[Any, str, int], Any] = {}
    try:
        yield loaded
    finally:
        for (load, _, _), target in loaded.items():
            unload = next((e.unload for e in ENTRIES if e.load is load), None)
            if unload is not None:
                with contextlib.suppress(Exception):
                    unload(target)


NOTES = f"""\
**raw client**: the client library rtnb uses, reading the same messages and building
DataFrames of the same schema every {BATCH:,} rows (decode each message,
`pd.DataFrame.from_records`, `pd.to_datetime` of the time column, `astype` to the example's
dtypes), with the same acknowledgements as rtnb; both contenders feed the same checksumming
sink. **events/s**: events / time until the sink holds the last row (median of {REPEATS}).
**paired ratios**: rtnb / raw in each repetition; their spread is the noise of this shared
machine. **arun() returned after the last row**: median over the timed runs, which read
everything that was loaded; a run that did not return within {END_WAIT_S:g} s is counted
(the bench then calls `frame.stop()`). Time is ISO 8601 text in JSON and float epoch seconds
in MessagePack. A broker with a slow Python client reads a share of the records (column
`events`), so the section stays within its time budget.""".replace("\n", " ")


def run(quick: bool, log: Callable[[str], None]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Run the ingestion benchmark; return (markdown lines, target rows)."""
    n_all = N_QUICK if quick else N_FULL
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="rtnb-bench-") as tmp:
        log(f"ingestion benchmark: encoding {n_all:,} records as JSON and MessagePack ...")
        feed = make_feed(n_all, Path(tmp))
        counts = [warm_n(int(n_all * e.share)) for e in ENTRIES]
        counts += [int(n_all * e.share) for e in ENTRIES]
        with feed_server(feed, counts), _loaded_targets() as loaded:
            for entry in ENTRIES:
                why = unavailable(entry)
                first = True
                for payload in PAYLOADS:
                    cell = Cell(entry, payload, n=int(n_all * entry.share))
                    cells.append(cell)
                    if payload in entry.not_applicable:
                        cell.problem = f"n/a: {entry.not_applicable[payload]}"
                    elif why is not None:
                        cell.problem = f"n/a ({why})"
                    else:
                        try:
                            _measure_cell(cell, feed, loaded, first, not quick, log)
                        except Exception as exc:
                            cell.problem = f"error: {type(exc).__name__}: {exc}"
                            log(f"    {cell.problem}")
                            traceback.print_exc()
                        first = False
    elapsed = time.perf_counter() - started

    md = [f"## {TITLE}", "",
          f"Records of the bundled metrics (`timestamp, host, cpu, latency_ms, requests`), one "
          f"per message; {REPEATS} interleaved runs of each contender, medians; this section "
          f"took {elapsed:.0f} s (1-minute load average {load_before:.1f} at its start, "
          f"{os.getloadavg()[0]:.1f} at its end, on {os.cpu_count()} cores)."
          + (" Quick run: too few events for a verdict, and no profiles." if quick else ""),
          "", *table(cells), "", NOTES, "",
          "| source | raw client | rtnb |", "| --- | --- | --- |"]
    md += [f"| {e.name} | {e.raw_code} | {e.rtnb_code} |" for e in ENTRIES if e.raw_code]
    stops = stop_table(cells)
    if stops:
        md += ["", "### Stopping at `max_events` while more data is there", "",
               f"One rtnb run per source (JSON) with `max_events` below what was loaded: does "
               f"`frame.arun()` return by itself (waited {END_WAIT_S:g} s), after "
               f"`frame.stop()` (waited {STOP_WAIT_S:g} s), or not at all?", "", *stops]
    profiles = [line for c in cells for line in c.profile]
    if profiles:
        md += ["", f"### Where rtnb spends its time (cells below {TARGET} x raw)", "",
               "One rtnb run per cell under pyinstrument (1 ms sampling, async mode off: "
               "time the loop waits for the network shows as `select`/`epoll.poll`). Left: "
               "self time, where the CPU is; right: inclusive time of rtnb functions.", "",
               *profiles]
    return md, target_rows(cells)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        asyncio.run(_serve(Path(sys.argv[2]), [int(k) for k in sys.argv[3].split(",")]))
        os._exit(0)
    print("run the benchmark with `make bench` (bench/run.py)", file=sys.stderr)
    sys.exit(2)
