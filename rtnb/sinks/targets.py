"""The sinks: files (Parquet, JSON log lines), HTTP webhooks and Redis Streams."""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rtnb._net import mask_url, require, secret, tls_context
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.sinks._core import Sink

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = ["LogSink", "ParquetSink", "RedisStreamSink", "WebhookSink", "records",
           "to_log", "to_parquet", "to_redis_stream", "to_webhook"]


def records(batch: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: times as ISO 8601 strings, missing values as ``None``.

    Examples
    --------
    >>> import pandas as pd
    >>> records(pd.DataFrame({"t": pd.to_datetime(["2026-01-01"]), "x": [float("nan")]}))
    [{'t': '2026-01-01T00:00:00.000000000', 'x': None}]
    """
    frame = batch.copy()
    for col, dtype in frame.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            frame[col] = np.datetime_as_string(frame[col].to_numpy(), unit="ns")
    frame = frame.astype(object).where(frame.notna(), None)
    out: list[dict[str, Any]] = frame.to_dict(orient="records")  # type: ignore[assignment]
    return out


# -- files -----------------------------------------------------------------------------------
class ParquetSink(Sink):
    """Rolling Parquet files ``part-000000.parquet``, ... in a folder, each written atomically."""

    kind = "parquet"

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

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        self._parts.append(batch)
        self._rows += len(batch)
        if self._rows >= self.rotate_rows or \
                time.monotonic() - self._opened >= self.rotate_every_s:
            self._roll()

    def _roll(self) -> None:
        if not self._parts:
            return
        path = self.folder / f"part-{len(self.files):06d}.parquet"
        tmp = path.with_suffix(".tmp")
        pd.concat(self._parts, ignore_index=True).to_parquet(tmp, index=False)
        os.replace(tmp, path)
        self.files.append(path)
        self._parts, self._rows, self._opened = [], 0, time.monotonic()

    async def _close_target(self) -> None:
        self._roll()


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
    """One JSON object per row, with the node name, to a file or a text stream."""

    kind = "log"

    def __init__(self, frame: StreamingFrame, target: Path | IO[str] | None,
                 **options: Any) -> None:
        super().__init__(frame, **options)
        self.target = target

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
    answer), which turns at-least-once delivery into exactly-once processing.
    """

    kind = "webhook"

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
        response = await self._client.post(self.url, json=records(batch),
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
    """``XADD`` of every row (field ``data``: the JSON record), pipelined per batch."""

    kind = "redis"

    def __init__(self, frame: StreamingFrame, stream: str, url: str, *, field: str,
                 maxlen: int | None, password: str | None, **options: Any) -> None:
        super().__init__(frame, **options)
        self._redis = require("redis.asyncio", "redis")
        self.stream, self.url, self.field, self.maxlen = stream, url, field, maxlen
        self._password = password
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<RedisStreamSink {self.name!r} -> {mask_url(self.url)} {self.stream!r}>"

    async def _deliver(self, batch: pd.DataFrame, key: str) -> None:
        if self._client is None:
            kwargs = {"password": self._password} if self._password else {}
            self._client = self._redis.from_url(self.url, **kwargs)
        try:
            pipe = self._client.pipeline(transaction=False)
            for record in records(batch):
                pipe.xadd(self.stream, {self.field: json.dumps(record)}, maxlen=self.maxlen,
                          approximate=self.maxlen is not None)
            await pipe.execute()
        except Exception:
            client, self._client = self._client, None  # reconnect on the next attempt
            await client.aclose()
            raise

    async def _close_target(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def to_redis_stream(frame: StreamingFrame, stream: str, url: str = "redis://127.0.0.1:6379/0",
                    *, field: str = "data", maxlen: int | None = None,
                    password: str | None = None, password_env: str | None = None,
                    name: str | None = None, **options: Any) -> RedisStreamSink:
    """Append every row to a Redis stream as a JSON record in ``field``.

    ``rtnb.sources.redis_stream`` reads it back; ``maxlen`` trims the stream (approximately).

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> sdf = rtnb.StreamingFrame(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    >>> rtnb.sinks.to_redis_stream(sdf, "alerts")
    <RedisStreamSink 'frame.redis' -> redis://127.0.0.1:6379/0 'alerts'>
    """
    return RedisStreamSink(frame, stream, url, field=field, maxlen=maxlen,
                           password=secret(password, password_env, f"redis sink {stream!r}"),
                           name=name or f"{frame.name}.redis", **options)
