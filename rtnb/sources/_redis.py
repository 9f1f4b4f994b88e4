"""``rtnb.sources.redis_stream``: Redis Streams, with XREAD or a consumer group and acks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
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
    """Reads one Redis stream; with a consumer group, acknowledges entries after processing.

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
                 **options: Any) -> None:
        super().__init__(**options)
        redis = require("redis.asyncio", "redis")
        exceptions = require("redis.exceptions", "redis")
        self._redis = redis
        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        self.start, self.field, self.count, self.block_ms = start, field, count, block_ms
        self._field_key = b"" if field is None else field.encode()
        self._password = password
        self._ssl = ssl_context
        self.retry_on = (OSError, asyncio.TimeoutError, exceptions.ConnectionError,
                         exceptions.TimeoutError)
        self._last_id: str | None = None
        self._held: set[str] = set()  # ids buffered or processed but not acknowledged yet
        self._unacked: list[str] = []  # processed; the XACK failed and is sent again
        self._skip: set[str] = set()  # resume_acks(): acknowledged already, never emitted
        self._ack_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._client: Any = None

    def __repr__(self) -> str:
        group = f" group {self.group!r}" if self.group else ""
        return f"<RedisStreamSource {self.name!r} {mask_url(self.url)} {self.stream!r}{group}>"

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
        if self.field is None:
            return json.dumps({k.decode(): v.decode() for k, v in fields.items()}).encode()
        value = fields.get(self._field_key)
        if value is None:
            return json.dumps({"missing field": self.field}).encode()
        return value

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
        last = self._last_id or self.start
        if last == "$":  # "now": pin it to the stream's last id, so reconnects resume there
            info = await client.xinfo_stream(self.stream) if await client.exists(
                self.stream) else None
            last = info["last-generated-id"].decode() if info else "0"
            self._last_id = last
        while not stop.is_set():
            reply = await client.xread({self.stream: last}, count=self.count,
                                       block=self.block_ms)
            got = 0
            for _, entries in reply or []:
                got += len(entries)
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    await self._put(self._payload(fields), last)
                    self._last_id = last
            if got < self.count:  # a short read: the stream has nothing more right now
                self._drained()

    async def _read_group(self, client: Any, stop: asyncio.Event) -> None:
        from redis.exceptions import ResponseError

        try:
            await client.xgroup_create(self.stream, self.group, id=self.start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if self._unacked:
            await client.xack(self.stream, self.group, *self._unacked)
            self._held.difference_update(self._unacked)
            self._unacked = []
        if self._resumed:  # the restored checkpoint's barrier: its XACK may have been lost
            await client.xack(self.stream, self.group, *self._resumed)
            self._skip.update(self._resumed)
            self._resumed = []
        cursor = "0"  # first this consumer's pending entries, then new ones
        polls = 0
        while not stop.is_set():
            reply = await client.xreadgroup(self.group, self.consumer, {self.stream: cursor},
                                            count=self.count, block=self.block_ms)
            entries = [e for _, es in reply or [] for e in es]
            if cursor != ">" and not entries:
                cursor = ">"
                continue
            for entry_id, fields in entries:
                eid = entry_id.decode()
                if cursor != ">":
                    cursor = eid
                if eid in self._held or eid in self._skip:
                    continue
                self._held.add(eid)
                await self._put(self._payload(fields or {}), eid)
            if cursor == ">" and len(entries) < self.count:  # nothing more right now
                self._drained()
            polls += 1
            if polls % 20 == 0:
                await self._update_lag(client)

    async def _update_lag(self, client: Any) -> None:
        with contextlib.suppress(Exception):
            for info in await client.xinfo_groups(self.stream):
                if info["name"].decode() == self.group and info.get("lag") is not None:
                    self.stats.lag = int(info["lag"])

    async def _ack(self, positions: list[Any]) -> None:
        if self.group is None or not positions:
            return
        async with self._acking:
            client, own = self._client, False
            if client is None:  # the reader has stopped: ack on a connection of our own
                client, own = self._connect(), True
            try:
                await client.xack(self.stream, self.group, *positions)
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


def _context_ssl_connection() -> type:
    """redis-py's asyncio TLS connection, with an :class:`ssl.SSLContext` given by rtnb."""
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
    context = TlsOptions.of(locals()).context()
    source = RedisStreamSource(
        url, stream, group=group, consumer=consumer, start=_start_id(start), field=field,
        count=count, block_ms=max(1, to_ns(block) // 1_000_000),
        password=secret(password, password_env, f"redis_stream {name!r}"),
        ssl_context=context, name=name, example=schema, options=SourceOptions.of(locals()))
    return attach(source, time)
