"""``rtnb.sources.websocket``: a WebSocket client feed (ws:// and wss://)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pandas as pd

from rtnb._net import mask_url, require
from rtnb._time import DurationLike, to_ns
from rtnb.errors import SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._decode import Payload
from rtnb.sources._guard import DEFAULT_MAX_FUTURE, RefusingSource, bytes_text, size_limit
from rtnb.sources._options import (
    DecoderLike,
    Policy,
    SourceOptions,
    TlsOptions,
    bearer_headers,
)
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["WebSocketSource", "websocket"]


class WebSocketSource(RefusingSource, BufferedSource):
    """Reads every message of a WebSocket; reconnects with backoff when the connection drops.

    A WebSocket feed is live-only: messages sent while disconnected are gone. A full buffer
    blocks reading (``policy="block"``, TCP then slows the sender) or drops by policy.

    A message over ``max_message_bytes`` is a dead letter (its first 1,024 bytes, or
    characters for a text message, and the reason) and the connection goes on: the client
    itself accepts messages up to ``READ_LIMIT_FACTOR`` x ``max_message_bytes``, so that it
    never closes the connection (and loses what the server sent after the message) for one
    it can still hold. A message larger still would have to be held whole: the client
    closes the connection (code 1009), the dead letter says so, and the source reconnects.
    """

    #: The client reads messages up to this many times ``max_message_bytes`` (to refuse
    #: them without losing the connection); larger ones close it.
    READ_LIMIT_FACTOR = 4

    def __init__(self, url: str, *, headers: dict[str, str], ssl_context: ssl.SSLContext | None,
                 ping_interval: float | None, subscribe: str | None,
                 max_message_bytes: int | None = 2 ** 24, **options: Any) -> None:
        super().__init__(**options)
        self.url = url
        self._headers = headers
        self._ssl = ssl_context
        self.ping_interval = ping_interval
        self.subscribe = subscribe
        self.max_message_bytes = size_limit(max_message_bytes, "max_message_bytes")
        exceptions = require("websockets.exceptions", "ws")
        self.retry_on = (OSError, asyncio.TimeoutError, exceptions.ConnectionClosed,
                         exceptions.InvalidMessage)
        self._position = 0

    def __repr__(self) -> str:
        return f"<WebSocketSource {self.name!r} {mask_url(self.url)}>"

    def _too_large(self, message: Payload) -> Payload | None:
        """The dead letter standing for ``message`` if it is over ``max_message_bytes``."""
        limit = self.max_message_bytes
        assert limit is not None
        size = len(message.encode()) if isinstance(message, str) else len(message)
        if size <= limit:
            return None
        return self._refuse(message, f"message of {size} bytes is over max_message_bytes="
                                     f"{limit} ({bytes_text(limit)})")

    def _closed_for_size(self, exc: Exception) -> Payload | None:
        """The dead letter of a message so large that the client closed the connection."""
        sent = getattr(exc, "sent", None)
        if sent is None or getattr(sent, "code", None) != 1009:  # 1009: message too big
            return None
        return self._refuse(b"", f"message over the client's read limit ({sent.reason}; "
                                 f"max_message_bytes={self.max_message_bytes}): the client "
                                 f"closed the connection (1009) and reconnects; what the "
                                 f"server sent after it on that connection is lost")

    async def _read(self, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

        limit = self.max_message_bytes
        # Below `check`, no message can be over the limit (a character is at most 4 bytes).
        check = None if limit is None else limit // 4
        try:
            # close_timeout: when stopping with frames still in flight, do not wait 10 s for
            # the closing handshake behind them
            async with connect(self.url, additional_headers=self._headers, ssl=self._ssl,
                               ping_interval=self.ping_interval, close_timeout=1,
                               max_size=None if limit is None else
                               limit * self.READ_LIMIT_FACTOR) as ws:
                self._connected()
                if self.subscribe is not None:
                    await ws.send(self.subscribe)
                recv, offer = ws.recv, self._offer
                while True:  # not `async for`: no async generator step per message
                    try:
                        message = await recv()
                    except ConnectionClosedOK:  # how `async for` ends
                        break
                    except ConnectionClosedError as exc:
                        letter = self._closed_for_size(exc)
                        if letter is not None:
                            self._position += 1
                            await self._put(letter, self._position)
                        raise
                    self._position += 1
                    if check is not None and len(message) > check:
                        message = self._too_large(message) or message
                    if not offer(message, self._position):
                        await self._put(message, self._position)
            if not stop.is_set():
                # A live feed has no end: a server closing the socket is a lost connection.
                msg = "the server closed the connection"
                raise ConnectionError(msg)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403, 404):
                msg = (f"source {self.name!r}: {mask_url(self.url)} refused the connection "
                       f"(HTTP {status}); check the URL and the token")
                raise SourceError(msg) from exc
            msg = f"HTTP {status}"
            raise OSError(msg) from exc


def websocket(
    url: str,
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    decoder: DecoderLike = "json",
    headers: dict[str, str] | None = None,
    token: str | None = None,
    token_env: str | None = None,
    tls: bool | ssl.SSLContext | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    subscribe: str | None = None,
    ping_interval: DurationLike | None = "20s",
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 100_000,
    policy: Policy = "block",
    time_unit: TimeUnit = "s",
    max_events: int | None = None,
    max_reconnects: int | None = None,
    max_message_bytes: int | None = 2 ** 24,
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "websocket",
) -> StreamingFrame:
    """A WebSocket client feed as a StreamingFrame of micro-batches.

    Parameters
    ----------
    url
        ``ws://`` or ``wss://`` URL.
    example, time
        The records' schema and the event-time column (see
        :class:`~rtnb.sources.SourceOptions`).
    headers, token, token_env
        Extra handshake headers; a bearer token (or the environment variable holding it: the
        token is never logged or shown).
    subscribe
        A message sent after every (re)connection, for feeds that need one.
    ping_interval
        Keep-alive pings (``None`` disables them); a missing pong counts as a lost connection.
    max_message_bytes
        A message larger than this (default 16 MiB) is a dead letter: its first 1,024 bytes
        (characters, for a text message) and the reason (its size and the limit); the
        connection and the messages after it go on.
        The client reads messages of up to 4 x ``max_message_bytes`` to refuse them; a
        larger one closes the connection (a dead letter says so) and the source reconnects:
        what the server sent after it on that connection is lost. ``None``: no limit (a
        message is held whole, however large).

    Other Parameters
    ----------------
    decoder, time_unit, max_batch, max_delay, buffer, policy, max_events, max_reconnects, max_future
        Decoding, batching, backpressure (a full buffer blocks reading, TCP then slows the
        sender, or drops by ``policy``), limits and the watermark guard, as for every
        message source: :class:`~rtnb.sources.SourceOptions`.
    tls, ca, cert, key
        TLS (``wss://`` uses it by default): :class:`~rtnb.sources.TlsOptions`.

    Examples
    --------
    >>> import rtnb
    >>> feed = rtnb.sources.websocket("ws://127.0.0.1:8765/feed", time="t",
    ...     example={"t": "datetime64[ns]", "cpu": "float64"}, token_env="HOME")
    >>> feed
    <StreamingFrame 'websocket' [t: datetime64[ns], cpu: float64], time='t'>
    """
    if not url.startswith(("ws://", "wss://")):
        msg = f"websocket url must start with ws:// or wss://; got {mask_url(url)!r}"
        raise SourceError(msg)
    schema = as_example(example, f"websocket {name!r}")
    all_headers = bearer_headers(headers, token, token_env, f"websocket {name!r}")
    context = TlsOptions.of(locals()).context(default=url.startswith("wss://"),
                                              owner=f"websocket {name!r}")
    source = WebSocketSource(
        url, headers=all_headers, ssl_context=context,
        ping_interval=None if ping_interval is None else to_ns(ping_interval) / 1e9,
        subscribe=subscribe, max_message_bytes=max_message_bytes, name=name, example=schema,
        options=SourceOptions.of(locals()))
    return attach(source, time)
