"""``rtnb.sources.redis_stream``: Redis Streams, with XREAD or a consumer group and acks."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import pandas as pd

from rtnb._net import mask_url, require, secret
from rtnb._time import DurationLike, to_ns
from rtnb.errors import CheckpointError, ConfigError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._guard import DEFAULT_MAX_FUTURE
from rtnb.sources._options import DecoderLike, SourceOptions, TlsOptions
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["RedisStreamSource", "redis_stream"]

log = logging.getLogger(__name__)


def _start_id(start: str | pd.Timestamp) -> str:
    if isinstance(start, pd.Timestamp):
        return f"{start.value // 1_000_000}-0"
    if start in ("0", "$") or (isinstance(start, str) and "-" in start):
        return start
    msg = f"redis start must be '0' (beginning), '$' (now), an entry id or a Timestamp; " \
          f"got {start!r}"
    raise ConfigError(msg)


class RedisStreamSource(BufferedSource):
    """Reads a Redis stream (or its partitions); with a consumer group, acks after processing.

    With ``partitions=N`` it reads the N streams ``{stream}:0`` .. ``{stream}:{N-1}`` (a
    producer puts a key's rows in ``{stream}:{rtnb.partition_of(key, N)}``) as one source:
    every read asks all of them, each at its own position, and a position is then the pair
    ``(stream, entry id)``. Entries of one partition keep their order; what is said below
    holds per partition.

    Without ``group`` it reads with ``XREAD`` from ``start`` and, after a reconnect, from the
    last id it received. With ``group`` it reads with ``XREADGROUP`` (creating the group at
    ``start`` if needed); an entry is acknowledged (``XACK``) only after the batch holding it
    went through the pipeline. After a reconnect it first reads the group's pending entries
    for this consumer, skipping those it holds already (buffered, or processed with the ack
    not yet confirmed: that ack is sent again), so within a run every entry is processed once.
    A full buffer stops the reads: the stream keeps the data.

    With checkpoints (``defer_acks``) the positions are the entry ids: an entry is
    acknowledged only by :meth:`ack`, after the checkpoint holding its effects is durable.
    A run (with the same group and consumer) first acknowledges the ids of the restored
    checkpoint's barrier (:meth:`resume_acks`, whose ``XACK`` the crash may have lost) and
    skips them, then reads this consumer's pending entries (id ``0``: exactly those read
    after that barrier and never acknowledged), then new ones (``>``): exactly once. The
    group has no delivery window (its pending list is unbounded), so deferred acks never
    stall reading.
    """

    replayable = True

    def resume_kind(self) -> str:
        """With a consumer group, the group's acknowledged entries: ``"broker"``."""
        if self.group is None:
            msg = (f"source {self.name!r}: a Redis stream read without a consumer group starts "
                   "again at `start` on every run, so state restored from a checkpoint would "
                   "count entries twice; read it with group=... to use --checkpoint")
            raise CheckpointError(msg)
        return "broker"

    def __init__(self, url: str, stream: str, *, group: str | None, consumer: str,
                 start: str, field: str | None, count: int, block_ms: int,
                 password: str | None, ssl_context: ssl.SSLContext | None,
                 partitions: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        redis = require("redis.asyncio", "redis")
        exceptions = require("redis.exceptions", "redis")
        self._redis = redis
        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        self.partitions = partitions
        #: The streams read: ``[stream]``, or its partitions ``stream:0`` .. ``stream:{N-1}``.
        self.streams = [stream] if partitions is None else \
            [f"{stream}:{p}" for p in range(partitions)]
        self._index = {st: i for i, st in enumerate(self.streams)}
        self.align_partitions = partitions  # rows aligned in event time across them
        #: Per partition stream: entries the group has not delivered yet (``XINFO GROUPS``
        #: lag; with a group), as last read.
        self.lags: dict[str, int] = {}
        self.start, self.field, self.count, self.block_ms = start, field, count, block_ms
        self._field_key = b"" if field is None else field.encode()
        self._password = password
        self._ssl = ssl_context
        self.retry_on = (OSError, asyncio.TimeoutError, exceptions.ConnectionError,
                         exceptions.TimeoutError)
        self._last_ids: dict[str, str] = {}  # per stream, for a reconnect without a group
        # positions: entry ids, or (stream, id) pairs when partitioned (see _position)
        self._held: set[Any] = set()  # buffered or processed but not acknowledged yet
        self._unacked: list[Any] = []  # processed; the XACK failed and is sent again
        self._skip: set[Any] = set()  # resume_acks(): acknowledged already, never emitted
        self._ack_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._client: Any = None
        #: The TLS options it was built with (a partition reader on a worker needs them).
        self.tls_options: TlsOptions | None = None

    def __repr__(self) -> str:
        group = f" group {self.group!r}" if self.group else ""
        parts = f" x{self.partitions} partitions" if self.partitions is not None else ""
        return (f"<RedisStreamSource {self.name!r} {mask_url(self.url)} {self.stream!r}{parts}"
                f"{group}>")

    def _position(self, stream: str, entry_id: str) -> Any:
        """An entry's position: its id, or ``(stream, id)`` when reading partitions."""
        return entry_id if self.partitions is None else (stream, entry_id)

    def _partition(self, position: Any) -> int:
        return self._index[position[0]]

    def _fetchable(self, merge: _Merge) -> list[str]:
        """The streams to read now: those the merge wants, but none ``max_drift`` ahead.

        A stream left unread for being ahead holds back no release of the others (its next
        entries are later in event time than anything the others may still send).
        """
        wanted = merge.wanted()
        if self.max_drift_ns is None or self.partitions is None:
            return wanted
        ahead = [st for st in wanted if self._ahead(self._index[st])]
        for st in ahead:
            merge.short[st] = True
        return [st for st in wanted if st not in ahead]

    def _by_stream(self, positions: list[Any]) -> dict[str, list[str]]:
        """``positions`` grouped by their stream, in order."""
        if self.partitions is None:
            return {self.stream: list(positions)}
        out: dict[str, list[str]] = {}
        for stream, entry_id in positions:
            out.setdefault(stream, []).append(entry_id)
        return out

    def _connect(self) -> Any:
        kwargs: dict[str, Any] = {"decode_responses": False}
        if self._password is not None:
            kwargs["password"] = self._password
        url = self.url
        if self._ssl is not None and not url.startswith("unix://"):
            # redis-py takes TLS settings as file names, not a context: a connection class
            # that uses ours (a rediss:// URL would pick redis-py's own class instead)
            kwargs["connection_class"] = _context_ssl_connection()
            kwargs["rtnb_ssl_context"] = self._ssl
            url = "redis://" + url.split("://", 1)[1]
        return self._redis.from_url(url, **kwargs)

    def _payload(self, fields: dict[bytes, bytes]) -> bytes:
        return _payload(fields, self.field, self._field_key)

    def partition_reader(self, partition: int) -> RedisPartitionReader:
        """A reader of one partition, to run on a Dask worker (:mod:`rtnb.distributed`).

        It is picklable (its connection opens on first use, where it runs) and reads
        ``{stream}:{partition}`` with blocking calls, as this source's group and consumer.
        """
        tls = self._reader_tls(partition)
        return RedisPartitionReader(
            url=self.url, stream=self.streams[partition], partition=partition,
            group=self.group, consumer=self.consumer, start=self.start, field=self.field,
            password=self._password, tls=tls, owner=self.name)

    @property
    def _acking(self) -> asyncio.Lock:
        """Held while an XACK is in flight, so the reader never closes its client under it."""
        loop = asyncio.get_running_loop()
        if self._ack_lock is None or self._ack_lock[0] is not loop:  # one per event loop
            self._ack_lock = (loop, asyncio.Lock())
        return self._ack_lock[1]

    async def _read(self, stop: asyncio.Event) -> None:
        client = self._connect()
        self._client = client
        try:
            await client.ping()
            self._connected()
            if self.group is None:
                await self._read_plain(client, stop)
            else:
                await self._read_group(client, stop)
        finally:
            self._client = None  # acks from now on take a connection of their own
            async with self._acking:  # an XACK in flight on this client ends first
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _read_plain(self, client: Any, stop: asyncio.Event) -> None:
        last = self._last_ids
        for stream in self.streams:
            if stream in last:
                continue
            if self.start == "$":  # "now": pin it to the last id, so reconnects resume there
                info = await client.xinfo_stream(stream) if await client.exists(
                    stream) else None
                last[stream] = info["last-generated-id"].decode() if info else "0"
            else:
                last[stream] = self.start
        merge = _Merge(self.streams)
        while not stop.is_set():
            wanted = self._fetchable(merge)
            if not wanted:  # every stream to read ran too far ahead: the others catch up
                await asyncio.sleep(0.02)
            reply = await client.xread({st: last[st] for st in wanted}, count=self.count,
                                       block=self.block_ms if merge.empty else None) \
                if wanted else None
            got = _by_key(reply)
            for stream in wanted:
                entries = got.get(stream, [])
                if entries:
                    last[stream] = entries[-1][0].decode()
                merge.add(stream, entries, full=len(entries) >= self.count)
            for stream, eid, fields in merge.release():
                await self._put(self._payload(fields), self._position(stream, eid))
            if merge.empty and merge.all_short:  # nothing more right now
                self._drained()

    async def _read_group(self, client: Any, stop: asyncio.Event) -> None:
        from redis.exceptions import ResponseError

        for stream in self.streams:
            try:
                await client.xgroup_create(stream, self.group, id=self.start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        if self._unacked:
            for stream, ids in self._by_stream(self._unacked).items():
                await client.xack(stream, self.group, *ids)
            self._held.difference_update(self._unacked)
            self._unacked = []
        if self._resumed:  # the restored checkpoint's barrier: its XACK may have been lost
            for stream, ids in self._by_stream(self._resumed).items():
                await client.xack(stream, self.group, *ids)
            self._skip.update(self._resumed)
            self._resumed = []
        # per stream: first this consumer's pending entries (from id 0), then new ones (>)
        cursors = dict.fromkeys(self.streams, "0")
        merge = _Merge(self.streams)
        polls = 0
        while not stop.is_set():
            wanted = self._fetchable(merge)
            if not wanted:  # every stream to read ran too far ahead: the others catch up
                await asyncio.sleep(0.02)
            history = any(cursors[st] != ">" for st in wanted)  # such reads never block
            reply = await client.xreadgroup(
                self.group, self.consumer, {st: cursors[st] for st in wanted},
                count=self.count, block=self.block_ms if merge.empty and not history else None,
            ) if wanted else None
            got = _by_key(reply)
            for stream in wanted:
                entries = got.get(stream, [])
                if cursors[stream] != ">":
                    if not entries:  # this consumer's pending entries are all read
                        cursors[stream] = ">"
                        merge.add(stream, [], full=True)  # read its new entries next
                        continue
                    cursors[stream] = entries[-1][0].decode()
                    merge.add(stream, entries, full=True)
                    continue
                merge.add(stream, entries, full=len(entries) >= self.count)
            for stream, eid, fields in merge.release():
                position = self._position(stream, eid)
                if position in self._held or position in self._skip:
                    continue
                self._held.add(position)
                await self._put(self._payload(fields or {}), position)
            if merge.empty and merge.all_short and all(c == ">" for c in cursors.values()):
                self._drained()  # nothing more right now
            polls += 1
            if polls % 20 == 1:  # the first poll too: the lag is known from the start
                await self._update_lag(client)

    async def _update_lag(self, client: Any) -> None:
        with contextlib.suppress(Exception):
            for stream in self.streams:
                for info in await client.xinfo_groups(stream):
                    if info["name"].decode() == self.group and info.get("lag") is not None:
                        self.lags[stream] = int(info["lag"])
            if self.lags:
                self.stats.lag = sum(self.lags.values())
                if self.partitions is not None:
                    self.stats.partition_lag = dict(self.lags)

    async def _ack(self, positions: list[Any]) -> None:
        if self.group is None or not positions:
            return
        async with self._acking:
            client, own = self._client, False
            if client is None:  # the reader has stopped: ack on a connection of our own
                client, own = self._connect(), True
            try:
                for stream, ids in self._by_stream(positions).items():
                    await client.xack(stream, self.group, *ids)
                self._held.difference_update(positions)
            except self.retry_on:
                self._unacked.extend(positions)  # sent again after the reconnect
                if self.defer_acks:  # and taken by the next barrier (then resume_acks)
                    self._retake(positions)
                    if not self._in_run:  # the last checkpoint holds them: resume_acks
                        log.warning("source %r could not acknowledge %d entries (the broker "
                                    "is unreachable); the run resuming from the checkpoint "
                                    "acknowledges them", self.name, len(positions))
            finally:
                if own:
                    with contextlib.suppress(Exception):
                        await client.aclose()


def _payload(fields: dict[bytes, bytes], field: str | None, field_key: bytes) -> bytes:
    """The encoded record of a stream entry: its ``field``, or all its fields as JSON."""
    if field is None:
        return json.dumps({k.decode(): v.decode() for k, v in fields.items()}).encode()
    value = fields.get(field_key)
    if value is None:
        return json.dumps({"missing field": field}).encode()
    return value


class RedisPartitionReader:
    """One partition stream of a partitioned ``RedisStreamSource``, read blocking.

    Made by ``RedisStreamSource.partition_reader`` and sent to a Dask worker, where
    :meth:`read` opens the connection on first use. With a group it reads this consumer's
    pending entries first (those a previous run read and never acknowledged), then new
    ones; :meth:`ack` acknowledges. Without a group it reads on from the last entry id.
    The password travels inside the pickled reader to the worker (Dask's connections;
    use TLS between scheduler and workers when that network is not trusted) and is never
    shown by ``repr``.
    """

    def __init__(self, *, url: str, stream: str, partition: int, group: str | None,
                 consumer: str, start: str, field: str | None, password: str | None,
                 tls: TlsOptions | None, owner: str) -> None:
        self.url, self.stream, self.partition = url, stream, partition
        self.group, self.consumer, self.field = group, consumer, field
        self.owner = owner
        self._password, self._tls = password, tls
        self._field_key = b"" if field is None else field.encode()
        self._cursor = "0" if group is not None else start  # group: pending entries first
        self._client: Any = None
        self._ready = False

    def __repr__(self) -> str:
        return f"<RedisPartitionReader {mask_url(self.url)} {self.stream!r}>"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"], state["_ready"] = None, False  # a connection stays where it is
        return state

    def _connect(self) -> Any:
        redis = require("redis", "redis")
        kwargs: dict[str, Any] = {"decode_responses": False}
        if self._password is not None:
            kwargs["password"] = self._password
        url = self.url
        context = None if self._tls is None else self._tls.context(
            default=url.startswith("rediss://"), owner=f"redis_stream {self.owner!r}")
        if context is not None and not url.startswith("unix://"):
            kwargs["connection_class"] = _context_ssl_connection(sync=True)
            kwargs["rtnb_ssl_context"] = context
            url = "redis://" + url.split("://", 1)[1]
        return redis.from_url(url, **kwargs)

    def _open(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        if not self._ready and self.group is not None:
            from redis.exceptions import ResponseError

            try:
                self._client.xgroup_create(self.stream, self.group, id=self._start_id(),
                                           mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True
        return self._client

    def _start_id(self) -> str:
        return self._cursor if self.group is None else "0"

    def read(self, count: int, block_ms: int | None) -> list[tuple[bytes, str]]:
        """Up to ``count`` entries as ``(payload, entry id)``; waits up to ``block_ms``."""
        client = self._open()
        if self.group is None:
            reply = client.xread({self.stream: self._cursor}, count=count, block=block_ms)
            entries = _by_key(reply).get(self.stream, [])
            if entries:
                self._cursor = entries[-1][0].decode()
        else:
            pending = self._cursor != ">"
            reply = client.xreadgroup(self.group, self.consumer, {self.stream: self._cursor},
                                      count=count, block=None if pending else block_ms)
            entries = _by_key(reply).get(self.stream, [])
            if pending:
                if entries:
                    self._cursor = entries[-1][0].decode()
                else:
                    self._cursor = ">"
                    return self.read(count, block_ms)
        return [(_payload(fields or {}, self.field, self._field_key), eid.decode())
                for eid, fields in entries]

    @property
    def retry_on(self) -> tuple[type[BaseException], ...]:
        """The errors that mean "Redis cannot be reached now": the step retries later."""
        exceptions = require("redis.exceptions", "redis")
        return (OSError, exceptions.ConnectionError, exceptions.TimeoutError)

    def reconnect(self) -> None:
        """Drop the connection; read the unacknowledged entries first again.

        Those are the entries Redis delivered to this consumer and nobody acknowledged: a
        reply lost with the connection is among them.
        """
        self.close()
        if self.group is not None:
            self._cursor = "0"

    @staticmethod
    def order(position: str) -> tuple[int, int]:
        """A position's place in the partition (entry ids compare as (ms, seq))."""
        return _id_key(position.encode())

    def ack(self, ids: list[str]) -> None:
        """Acknowledge entries to the group (nothing without one)."""
        if self.group is not None and ids:
            self._open().xack(self.stream, self.group, *ids)

    def lag(self) -> int | None:
        """Entries of the partition the group has not delivered yet (``None``: unknown)."""
        if self.group is None:
            return None
        with contextlib.suppress(Exception):
            for info in self._open().xinfo_groups(self.stream):
                if info["name"].decode() == self.group and info.get("lag") is not None:
                    return int(info["lag"])
        return None

    def close(self) -> None:
        """Close the connection (a later :meth:`read` opens a new one)."""
        client, self._client, self._ready = self._client, None, False
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def _by_key(reply: Any) -> dict[str, list[Any]]:
    """An XREAD / XREADGROUP reply as ``{stream: entries}``."""
    return {(k.decode() if isinstance(k, bytes) else str(k)): list(es) for k, es in reply or []}


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class _Merge:
    """Entries of several streams, released in entry-id order (a k-way merge).

    Redis gives every entry an id of the server's clock when it was added, so releasing the
    partitions' entries by id gives them in the order they reached the server, as one
    stream would: a producer that writes in event-time order (``rtnb replay``) keeps event
    time in order across partitions, and no partition's rows turn late because another
    partition was read ahead. An entry is released only when every stream that may still
    hold an older one has been read past it: a stream whose queue ran empty is read again
    first, unless its last read was short (it has nothing more for now; what it gets later
    has later ids).
    """

    def __init__(self, streams: list[str]) -> None:
        self.queues: dict[str, collections.deque[tuple[tuple[int, int], str, Any]]] = {
            st: collections.deque() for st in streams}
        self.short = dict.fromkeys(streams, False)
        # one stream: nothing to merge, its entries go out as read (no id parsing)
        self._single: list[Any] | None = [] if len(streams) == 1 else None
        self._stream = streams[0]

    @property
    def empty(self) -> bool:
        """No entry waits to be released."""
        if self._single is not None:
            return not self._single
        return not any(self.queues.values())

    @property
    def all_short(self) -> bool:
        """Every stream's last read was short: the server has nothing more for now."""
        return all(self.short.values())

    def wanted(self) -> list[str]:
        """The streams to read now: those with no entry waiting."""
        if self._single is not None:
            return [] if self._single else [self._stream]
        return [st for st, q in self.queues.items() if not q]

    def add(self, stream: str, entries: list[Any], *, full: bool) -> None:
        """What a read of ``stream`` returned (``full``: it may have more right away)."""
        if self._single is not None:
            self._single.extend(entries)
            self.short[stream] = not full
            return
        queue = self.queues[stream]
        for entry_id, fields in entries:
            queue.append((_id_key(entry_id), entry_id.decode(), fields))
        self.short[stream] = not full

    def release(self) -> Iterator[tuple[str, str, Any]]:
        """``(stream, id, fields)`` of every entry that no unread entry can precede."""
        if self._single is not None:
            entries, self._single = self._single, []
            for entry_id, fields in entries:
                yield self._stream, entry_id.decode(), fields
            return
        queues = self.queues
        while True:
            if any(not q and not self.short[st] for st, q in queues.items()):
                return  # that stream may hold an older entry: read it first
            best: str | None = None
            for st, q in queues.items():
                if q and (best is None or q[0][0] < queues[best][0][0]):
                    best = st
            if best is None:
                return
            _, eid, fields = queues[best].popleft()
            yield best, eid, fields


def _context_ssl_connection(*, sync: bool = False) -> type:
    """redis-py's TLS connection (asyncio, or blocking with ``sync``) with rtnb's context."""
    if sync:
        from redis.connection import SSLConnection as SyncSSLConnection

        class SyncContextSSLConnection(SyncSSLConnection):
            def __init__(self, *, rtnb_ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.rtnb_ssl_context = rtnb_ssl_context

            def _wrap_socket_with_ssl(self, sock: Any) -> Any:
                return self.rtnb_ssl_context.wrap_socket(sock, server_hostname=self.host)

        return SyncContextSSLConnection
    from redis.asyncio.connection import SSLConnection

    class ContextSSLConnection(SSLConnection):
        def __init__(self, *, rtnb_ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.ssl_context.context = rtnb_ssl_context  # what ssl_context.get() returns

    return ContextSSLConnection


def redis_stream(
    stream: str,
    url: str = "redis://127.0.0.1:6379/0",
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    partitions: int | None = None,
    idle_timeout: DurationLike = "5s",
    max_drift: DurationLike | None = None,
    group: str | None = None,
    consumer: str = "rtnb",
    start: str | pd.Timestamp = "0",
    field: str | None = "data",
    decoder: DecoderLike = "json",
    password: str | None = None,
    password_env: str | None = None,
    tls: bool | ssl.SSLContext | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    count: int = 1_000,
    block: DurationLike = "500ms",
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 100_000,
    time_unit: TimeUnit = "s",
    max_events: int | None = None,
    max_reconnects: int | None = None,
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "redis",
) -> StreamingFrame:
    """A Redis stream as a StreamingFrame of micro-batches.

    Parameters
    ----------
    stream
        The stream key.
    partitions
        Read the ``N`` streams ``{stream}:0`` .. ``{stream}:{N-1}`` as one source (a
        producer puts each key's rows in ``{stream}:{rtnb.partition_of(key, N)}``, as
        ``rtnb replay --partitions N`` does). Each partition keeps its order; a group
        acknowledges each partition's entries in its own stream. Rows are aligned in event
        time across the partitions: a row goes on once every partition has sent rows at
        least as new (or has been silent for ``idle_timeout``), so no partition's rows turn
        late because another was read ahead (Flink's minimum watermark over its inputs).
    idle_timeout
        With ``partitions``: how long a silent partition holds the others back. After a
        quiet spell of every partition, each has it anew from the first message that comes
        (so the partitions a producer writes a moment later are not taken for idle).
    max_drift
        With ``partitions``: how far (in event time) a partition may run ahead of the
        others before it is no longer read until they catch up; it bounds what the
        alignment holds back (``None``: only the buffer bounds it).
    url
        ``redis://[user@]host:port/db`` or ``rediss://`` (TLS); a password in the URL is
        never shown, but prefer ``password_env``.
    group, consumer
        Read as ``consumer`` of consumer group ``group`` (created at ``start`` if missing)
        and acknowledge entries after processing; without a group, plain ``XREAD``.
    start
        ``"0"`` (the beginning: a replay), ``"$"`` (only new entries), an entry id, or a
        Timestamp (entries from that time on).
    field
        The entry field holding the encoded record (default ``"data"``); ``None`` takes the
        entry's fields themselves as the record (values arrive as strings and are coerced).
    count, block
        Entries per read and how long a read waits for new entries.
    password, password_env
        The password (else the URL's); ``password_env`` names the environment variable
        holding it (never logged or shown).

    Other Parameters
    ----------------
    decoder, time_unit, max_batch, max_delay, buffer, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions` (a full buffer
        stops the reads: the stream keeps the data).
    tls, ca, cert, key
        TLS (``rediss://`` uses it by default): :class:`~rtnb.sources.TlsOptions`.

    Examples
    --------
    >>> import rtnb
    >>> rtnb.sources.redis_stream("metrics", example={"t": "datetime64[ns]", "cpu": "float64"},
    ...                           time="t", group="dash")
    <StreamingFrame 'redis' [t: datetime64[ns], cpu: float64], time='t'>
    """
    schema = as_example(example, f"redis_stream {name!r}")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        msg = f"redis url must start with redis://, rediss:// or unix://; got {mask_url(url)!r}"
        raise ConfigError(msg)
    if partitions is not None and (isinstance(partitions, bool) or not isinstance(
            partitions, int) or partitions < 1):
        msg = f"redis_stream {name!r}: partitions must be a positive int; got {partitions!r}"
        raise ConfigError(msg)
    context = TlsOptions.of(locals()).context(owner=f"redis_stream {name!r}")
    source = RedisStreamSource(
        url, stream, group=group, consumer=consumer, start=_start_id(start), field=field,
        partitions=partitions,
        count=count, block_ms=max(1, to_ns(block) // 1_000_000),
        password=secret(password, password_env, f"redis_stream {name!r}"),
        ssl_context=context, name=name, example=schema, options=SourceOptions.of(locals()))
    source.tls_options = TlsOptions.of(locals())
    if partitions is not None:
        source.idle_timeout_s = to_ns(idle_timeout, name="idle_timeout") / 1e9
        if max_drift is not None:
            source.max_drift_ns = to_ns(max_drift, name="max_drift")
    return attach(source, time)
