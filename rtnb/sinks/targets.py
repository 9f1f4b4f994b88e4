"""The sinks: files (Parquet, JSON log lines), HTTP webhooks and Redis Streams."""

from __future__ import annotations

import json
import logging
import os
import ssl
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from rtnb._formats import Format, records
from rtnb._net import mask_url, require, secret, tls_context
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError, SchemaError
from rtnb.partitions import partition_of
from rtnb.sinks._core import Sink, make_encoder

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["LogSink", "ParquetSink", "RedisStreamSink", "WebhookSink", "records",
           "to_log", "to_parquet", "to_redis_stream", "to_webhook"]

log = logging.getLogger("rtnb")


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- files -----------------------------------------------------------------------------------
class ParquetSink(Sink):
    """Rolling Parquet files ``part-000000.parquet``, ... in a folder, each written atomically.

    With checkpoints (transactional) every file written between two checkpoints is first a
    hidden ``.part-NNNNNN.parquet.pending`` (readers such as ``pd.read_parquet(folder)``
    skip hidden files) and becomes ``part-NNNNNN.parquet`` by an atomic rename once the
    checkpoint that holds it is durable; a restart removes what no checkpoint committed.
    """

    kind = "parquet"
    delivery = "exactly-once"

    def __init__(self, frame: StreamingFrame, folder: Path, *, rotate_rows: int,
                 rotate_every_s: float, **options: Any) -> None:
        super().__init__(frame, **options)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.rotate_rows, self.rotate_every_s = rotate_rows, rotate_every_s
        self._parts: list[pd.DataFrame] = []
        self._rows = 0
        self._opened = time.monotonic()
        self.files: list[Path] = sorted(folder.glob("part-*.parquet"))
        self._pending: list[Path] = []  # written, waiting for their checkpoint (transactional)

    def _next_path(self) -> Path:
        index = len(self.files) + len(self._pending)
        return self.folder / f"part-{index:06d}.parquet"

    @staticmethod
    def _pending_name(path: Path) -> Path:
        return path.with_name(f".{path.name}.pending")

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        self._parts.append(batch)
        self._rows += len(batch)
        if self._rows >= self.rotate_rows or \
                time.monotonic() - self._opened >= self.rotate_every_s:
            self._roll()

    def _roll(self) -> None:
        if not self._parts:
            return
        path = self._next_path()
        tmp = path.with_name(f".{path.name}.tmp")  # hidden: readers of the folder skip it
        pd.concat(self._parts, ignore_index=True).to_parquet(tmp, index=False)
        _fsync(tmp)
        if self.transactional:
            os.replace(tmp, self._pending_name(path))
            self._pending.append(path)
        else:
            os.replace(tmp, path)
            self.files.append(path)
        self._parts, self._rows, self._opened = [], 0, time.monotonic()

    async def _close_target(self) -> None:
        self._roll()

    async def _pre_commit(self) -> Any:
        self._roll()
        _fsync(self.folder)
        return {"files": [p.name for p in self.files], "pending": [p.name for p in self._pending]}

    async def commit(self, state: Any) -> None:
        """Rename the checkpoint's pending files to their final names."""
        for name in state["pending"]:
            path = self.folder / name
            pending = self._pending_name(path)
            if pending.exists():
                os.replace(pending, path)
            if path in self._pending:
                self._pending.remove(path)
                self.files.append(path)
        _fsync(self.folder)

    async def recover(self, state: Any) -> None:
        """Keep exactly the checkpoint's files (its pending ones committed); remove the rest."""
        if state is None:
            return
        keep = set(state["files"]) | set(state["pending"])
        for name in state["pending"]:
            pending = self._pending_name(self.folder / name)
            if pending.exists():
                os.replace(pending, self.folder / name)
        for path in self.folder.iterdir():
            hidden = path.name.startswith(".part-")
            final = path.name.startswith("part-") and path.suffix == ".parquet"
            if hidden or (final and path.name not in keep):
                path.unlink()
                log.warning("sink %r removed %s, written after the checkpoint", self.name,
                            path.name)
        _fsync(self.folder)
        self.files = sorted(self.folder / n for n in keep)
        self._pending = []


def to_parquet(frame: StreamingFrame, folder: str | os.PathLike[str], *,
               rotate_rows: int = 1_000_000, rotate_every: DurationLike = "1h",
               name: str | None = None, **options: Any) -> ParquetSink:
    """Write the frame's batches to rolling Parquet files in ``folder``.

    A file is closed (written to ``.tmp``, then renamed) every ``rotate_rows`` rows or
    ``rotate_every`` of wall time, and at the end of the stream; ``pd.read_parquet(folder)``
    reads them back as one frame. ``options`` as for every sink (``retries``, ``max_queue``,
    ``spool`` ...).

    Examples
    --------
    >>> import tempfile, pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    >>> folder = tempfile.mkdtemp()
    >>> sink = rtnb.sinks.to_parquet(sdf, folder, rotate_rows=2)
    >>> for v in range(5):
    ...     sdf.emit(pd.DataFrame({"x": [float(v)]}))
    >>> len(sink.files), pd.read_parquet(folder)["x"].tolist()
    (2, [0.0, 1.0, 2.0, 3.0])
    """
    if isinstance(rotate_rows, bool) or not isinstance(rotate_rows, int) or rotate_rows < 1:
        msg = f"`rotate_rows` must be a positive int; got {rotate_rows!r}"
        raise ConfigError(msg)
    return ParquetSink(frame, Path(folder), rotate_rows=rotate_rows,
                       rotate_every_s=to_ns(rotate_every, name="rotate_every") / 1e9,
                       name=name or f"{frame.name}.parquet", **options)


class LogSink(Sink):
    """One JSON object per row, with the node name, to a file or a text stream.

    To a file with checkpoints: exactly-once (a checkpoint records the file's length after
    an fsync; a restart truncates the file to it). To a stream: at-least-once.
    """

    kind = "log"

    def __init__(self, frame: StreamingFrame, target: Path | IO[str] | None,
                 **options: Any) -> None:
        super().__init__(frame, **options)
        self.target = target

    @property
    def delivery(self) -> str:  # type: ignore[override]  # per target
        """``"exactly-once"`` to a file, ``"at-least-once"`` to a stream."""
        return "exactly-once" if isinstance(self.target, Path) else "at-least-once"

    async def _pre_commit(self) -> Any:
        if not isinstance(self.target, Path):
            return None
        if not self.target.exists():
            return {"offset": 0}
        with self.target.open("rb") as f:
            os.fsync(f.fileno())
            return {"offset": f.seek(0, os.SEEK_END)}

    async def recover(self, state: Any) -> None:
        """Cut the file back to the checkpoint's length (what came after is written again)."""
        if state is None or not isinstance(self.target, Path) or not self.target.exists():
            return
        size = self.target.stat().st_size
        if size > state["offset"]:
            with self.target.open("r+b") as f:
                f.truncate(state["offset"])
                os.fsync(f.fileno())
            log.warning("sink %r cut %s back to %d bytes (%d written after the checkpoint)",
                        self.name, self.target, state["offset"], size - state["offset"])

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        lines = "".join(json.dumps({"node": self.frame.name, **r}) + "\n"
                        for r in records(batch))
        if isinstance(self.target, Path):
            with self.target.open("a") as f:
                f.write(lines)
        else:
            stream = self.target if self.target is not None else sys.stderr
            stream.write(lines)
            stream.flush()


def to_log(frame: StreamingFrame, target: str | os.PathLike[str] | IO[str] | None = None, *,
           name: str | None = None, **options: Any) -> LogSink:
    r"""Log every row as a JSON line (``{"node": ..., <columns>}``) to a file or stderr.

    Examples
    --------
    >>> import io, pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}), name="cpu")
    >>> out = io.StringIO()
    >>> _ = rtnb.sinks.to_log(sdf, out)
    >>> sdf.emit(pd.DataFrame({"x": [1.5]}))
    >>> out.getvalue()
    '{"node": "cpu", "x": 1.5}\n'
    """
    resolved: Path | IO[str] | None
    resolved = Path(target) if isinstance(target, str | os.PathLike) else target
    return LogSink(frame, resolved, name=name or f"{frame.name}.log", **options)


# -- HTTP ------------------------------------------------------------------------------------
class WebhookSink(Sink):
    """POSTs each batch as a JSON array of records; a non-2xx answer is a failed delivery.

    Each batch carries an ``Idempotency-Key`` header, the same on every retry: a receiver
    that saw the key already can answer 2xx and drop the repeat (a retry after a lost
    answer). Each record also carries ``rtnb_id``, its row's id (:meth:`Sink.row_ids`), the
    same in every run: after a restart from a checkpoint the rows sent again may come in
    batches cut differently (other keys), so de-duplicate on ``rtnb_id`` for exactly-once
    processing.
    """

    kind = "webhook"
    uses_key = True

    def __init__(self, frame: StreamingFrame, url: str, *, headers: dict[str, str],
                 ssl_context: ssl.SSLContext | None, timeout_s: float, **options: Any) -> None:
        super().__init__(frame, **options)
        self.url = url
        self._headers = headers
        self._ssl = ssl_context
        self.timeout_s = timeout_s
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<WebhookSink {self.name!r} -> {mask_url(self.url)}>"

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        httpx = require("httpx", "sse")
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self._ssl if self._ssl is not None else True, timeout=self.timeout_s)
        body = [{**record, "rtnb_id": row_id}
                for row_id, record in zip(self.row_ids(batch), records(batch), strict=True)]
        response = await self._client.post(self.url, json=body,
                                           headers={**self._headers, "Idempotency-Key": key})
        if not 200 <= response.status_code < 300:
            msg = f"HTTP {response.status_code} from {mask_url(self.url)}"
            raise OSError(msg)

    async def _close_target(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def to_webhook(frame: StreamingFrame, url: str, *, headers: dict[str, str] | None = None,
               token: str | None = None, token_env: str | None = None,
               tls: bool | ssl.SSLContext | None = None, ca: str | None = None,
               cert: str | None = None, key: str | None = None,
               timeout: DurationLike = "10s", name: str | None = None,
               **options: Any) -> WebhookSink:
    """POST every batch to ``url`` as JSON, with retries, a circuit breaker and a spool.

    ``token`` / ``token_env`` send ``Authorization: Bearer ...`` (never logged); ``spool=``
    a folder keeps what could not be delivered and sends it, oldest first, when the target
    answers again. See :class:`rtnb.sinks.Sink` for ``retries``, ``failures``,
    ``reset_after`` and ``max_queue``.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    >>> rtnb.sinks.to_webhook(sdf, "https://hooks.example/alerts?token=abc", retries=5)
    <WebhookSink 'frame.webhook' -> https://hooks.example/alerts?token=***>
    """
    if not url.startswith(("http://", "https://")):
        msg = f"webhook url must start with http:// or https://; got {mask_url(url)!r}"
        raise ConfigError(msg)
    all_headers = dict(headers or {})
    bearer = secret(token, token_env, f"webhook of {frame.name!r}")
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    return WebhookSink(frame, url, headers=all_headers,
                       ssl_context=tls_context(tls, ca=ca, cert=cert, key=key),
                       timeout_s=to_ns(timeout, name="timeout") / 1e9,
                       name=name or f"{frame.name}.webhook", **options)


# -- Redis -----------------------------------------------------------------------------------
class RedisStreamSink(Sink):
    """``XADD`` of every row (field ``data``: the encoded record), pipelined per batch.

    With ``partitions=N`` each row goes to ``{stream}:{partition_of(row[key], N)}``, the
    streams ``rtnb.sources.redis_stream(stream, partitions=N)`` reads (one pipeline per batch
    over all of them). With checkpoints: exactly-once, provided this sink is the only writer
    of its stream(s) (a checkpoint records each stream's last entry id; a restart deletes the
    entries after it).
    """

    kind = "redis"
    delivery = "exactly-once"

    def __init__(self, frame: StreamingFrame, stream: str, url: str, *, field: str,
                 maxlen: int | None, password: str | None, partitions: int | None = None,
                 key: str | None = None, encoder: str | Format = "json",
                 **options: Any) -> None:
        super().__init__(frame, **options)
        self.encoder = make_encoder(encoder, frame.example, f"redis sink {self.name!r}")
        self._redis = require("redis.asyncio", "redis")
        self.stream, self.url, self.field, self.maxlen = stream, url, field, maxlen
        self.partitions, self.key = partitions, key
        #: The streams written: ``[stream]``, or ``stream:0`` .. ``stream:{N-1}``.
        self.streams = [stream] if partitions is None else \
            [f"{stream}:{p}" for p in range(partitions)]
        self._password = password
        self._client: Any = None

    def __repr__(self) -> str:
        parts = f" x{self.partitions} partitions by {self.key!r}" if self.partitions else ""
        return (f"<RedisStreamSink {self.name!r} -> {mask_url(self.url)} "
                f"{self.stream!r}{parts}>")

    def _enqueue(self, batch: pd.DataFrame) -> None:
        # A row without a key has no partition: refused as it arrives (a delivery that
        # failed on it would be retried forever).
        if self.key is not None and len(batch) and batch[self.key].isna().any():
            missing = int(batch[self.key].isna().sum())
            msg = (f"sink {self.name!r}: {missing} of {len(batch)} rows have no {self.key!r} "
                   f"(None or NaN); with partitions={self.partitions} every row needs a key "
                   "to have a partition: fill or filter them first")
            raise SchemaError(msg)
        super()._enqueue(batch)

    def _targets(self, batch: pd.DataFrame) -> list[str]:
        """The stream of each row."""
        if self.partitions is None or self.key is None:
            return [self.stream] * len(batch)
        return [self.streams[p] for p in partition_of(batch[self.key], self.partitions).tolist()]

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        client = self._connection()
        try:
            pipe = client.pipeline(transaction=False)
            targets = self._targets(batch)
            for message in self.messages(batch, by=targets):
                pipe.xadd(targets[message.first], {self.field: message.payload, "id": message.id},
                          maxlen=self.maxlen, approximate=self.maxlen is not None)
            await pipe.execute()
        except Exception:
            client, self._client = self._client, None  # reconnect on the next attempt
            await client.aclose()
            raise

    async def _close_target(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _connection(self) -> Any:
        if self._client is None:
            kwargs = {"password": self._password} if self._password else {}
            self._client = self._redis.from_url(self.url, **kwargs)
        return self._client

    async def _pre_commit(self) -> Any:
        client = self._connection()
        last_ids: dict[str, str] = {}
        for stream in self.streams:
            last = await client.xrevrange(stream, count=1)
            entry = last[0][0] if last else b"0-0"
            last_ids[stream] = entry.decode() if isinstance(entry, bytes) else str(entry)
        if self.partitions is None:
            return {"last_id": last_ids[self.stream]}
        return {"last_ids": last_ids}

    async def recover(self, state: Any) -> None:
        """Delete the entries written after the checkpoint's last entry (of each partition)."""
        if state is None:
            return
        last_ids = state.get("last_ids") or {self.stream: state["last_id"]}
        client = self._connection()
        for stream, last_id in last_ids.items():
            removed = 0
            while True:
                after = await client.xrange(stream, min=f"({last_id}", count=1000)
                if not after:
                    break
                removed += await client.xdel(stream, *[entry for entry, _ in after])
            if removed:
                log.warning("sink %r deleted %d entries of %r written after the checkpoint",
                            self.name, removed, stream)


def to_redis_stream(frame: StreamingFrame, stream: str, url: str = "redis://127.0.0.1:6379/0",
                    *, field: str = "data", maxlen: int | None = None,
                    partitions: int | None = None, key: str | None = None,
                    password: str | None = None, password_env: str | None = None,
                    encoder: str | Format = "json", name: str | None = None,
                    **options: Any) -> RedisStreamSink:
    """Append every row to a Redis stream as a JSON record in ``field`` (or ``encoder``).

    ``rtnb.sources.redis_stream`` reads it back; ``maxlen`` trims the stream (approximately).
    Each entry also carries ``id``, the row's id (:meth:`Sink.row_ids`), the same on a retry
    and in every run.

    Parameters
    ----------
    partitions
        Write the N streams ``{stream}:0`` .. ``{stream}:{N-1}``: each row goes to
        ``{stream}:{rtnb.partition_of(row[key], N)}`` (Kafka's default partitioner), so
        every row of a key lands in the same partition, where
        ``rtnb.sources.redis_stream(stream, partitions=N)`` reads them. Needs ``key``. A row
        whose key is missing (None, NaN) is a ``SchemaError``. Ids, retries, spool and
        checkpoints (each partition's last entry) as for one stream.
    key
        The column that picks a row's partition (with ``partitions`` only).
    encoder
        ``"json"`` (default), ``"msgpack"``, ``"arrow"`` / ``"avro"`` (one entry per batch
        and partition: an Arrow IPC stream, an Avro object container; its ``id`` made of
        its rows'), or a format of :mod:`rtnb.formats` (one entry per row);
        ``rtnb.sources.redis_stream(..., decoder=)`` with the same format reads it back.

    Raises
    ------
    ConfigError
        ``partitions`` not a positive int, ``key`` missing, not a column of the frame or
        given without ``partitions``.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    >>> rtnb.sinks.to_redis_stream(sdf, "alerts")
    <RedisStreamSink 'frame.redis' -> redis://127.0.0.1:6379/0 'alerts'>
    >>> hosts = rtnb.StreamingFrame(pd.DataFrame({"host": pd.Series([], dtype=str)}))
    >>> sink = rtnb.sinks.to_redis_stream(hosts, "metrics", partitions=4, key="host")
    >>> sink.streams
    ['metrics:0', 'metrics:1', 'metrics:2', 'metrics:3']
    """
    sink_name = name or f"{frame.name}.redis"
    if partitions is not None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            msg = (f"redis sink {sink_name!r}: `partitions` must be a positive int; "
                   f"got {partitions!r}")
            raise ConfigError(msg)
        if key is None:
            msg = (f"redis sink {sink_name!r}: partitions={partitions} needs `key`, the column "
                   f"whose value picks a row's partition (one of {list(frame.columns)!r})")
            raise ConfigError(msg)
        if key not in frame.columns:
            msg = (f"redis sink {sink_name!r}: key {key!r} is not a column of frame "
                   f"{frame.name!r}; columns {list(frame.columns)!r}")
            raise ConfigError(msg)
    elif key is not None:
        msg = (f"redis sink {sink_name!r}: `key` picks a row's partition and needs "
               f"`partitions` (e.g. partitions=4, key={key!r})")
        raise ConfigError(msg)
    return RedisStreamSink(frame, stream, url, field=field, maxlen=maxlen,
                           partitions=partitions, key=key, encoder=encoder,
                           password=secret(password, password_env, f"redis sink {stream!r}"),
                           name=sink_name, **options)
