"""``rtnb.sources.websocket``: a WebSocket client feed (ws:// and wss://)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import pandas as pd

from rtnb._net import mask_url, require, secret, tls_context
from rtnb._time import DurationLike, to_ns
from rtnb.errors import SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._decode import Decoder, Payload
from rtnb.sources._runner import BufferedSource, Policy, attach

__all__ = ["WebSocketSource", "websocket"]


class WebSocketSource(BufferedSource):
    """Reads every message of a WebSocket; reconnects with backoff when the connection drops.

    A WebSocket feed is live-only: messages sent while disconnected are gone. A full buffer
    blocks reading (``policy="block"``, TCP then slows the sender) or drops by policy.
    """

    def __init__(self, url: str, *, headers: dict[str, str], ssl_context: ssl.SSLContext | None,
                 ping_interval: float | None, subscribe: str | None, **options: Any) -> None:
        super().__init__(**options)
        self.url = url
        self._headers = headers
        self._ssl = ssl_context
        self.ping_interval = ping_interval
        self.subscribe = subscribe
        exceptions = require("websockets.exceptions", "ws")
        self.retry_on = (OSError, asyncio.TimeoutError, exceptions.ConnectionClosed,
                         exceptions.InvalidMessage)
        self._position = 0

    def __repr__(self) -> str:
        return f"<WebSocketSource {self.name!r} {mask_url(self.url)}>"

    async def _read(self, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosedOK, InvalidStatus

        try:
            # close_timeout: when stopping with frames still in flight, do not wait 10 s for
            # the closing handshake behind them
            async with connect(self.url, additional_headers=self._headers, ssl=self._ssl,
                               ping_interval=self.ping_interval, close_timeout=1,
                               max_size=2 ** 24) as ws:
                self._connected()
                if self.subscribe is not None:
                    await ws.send(self.subscribe)
                recv, offer = ws.recv, self._offer
                while True:  # not `async for`: no async generator step per message
                    try:
                        message = await recv()
                    except ConnectionClosedOK:  # how `async for` ends
                        break
                    self._position += 1
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
    decoder: str | Decoder | Callable[[Payload], Any] = "json",
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
    name: str = "websocket",
) -> StreamingFrame:
    """A WebSocket client feed as a StreamingFrame of micro-batches.

    Parameters
    ----------
    url
        ``ws://`` or ``wss://`` URL.
    example
        The records' schema: an empty DataFrame or ``{"column": dtype}``; records are coerced
        to it, and those that do not fit go to ``frame.dead_letters`` with the raw message.
    time
        The event-time column.
    decoder
        ``"json"`` (objects, arrays of objects or JSON lines), ``"msgpack"``, ``"csv"`` or a
        function ``payload -> dict | list[dict]``.
    headers, token, token_env
        Extra handshake headers; a bearer token (or the environment variable holding it: the
        token is never logged or shown).
    tls, ca, cert, key
        TLS for ``wss://``: a custom CA file, a client certificate and key, or a context.
    subscribe
        A message sent after every (re)connection, for feeds that need one.
    ping_interval
        Keep-alive pings (``None`` disables them); a missing pong counts as a lost connection.
    max_batch, max_delay
        A batch is cut at ``max_batch`` messages or ``max_delay`` after its first message.
    buffer, policy
        Messages held between the socket and processing; when full: ``"block"`` (stop
        reading), ``"drop_oldest"`` or ``"sample"`` (counted in ``source.stats.dropped``).
    max_events, max_reconnects
        Stop after that many rows; give up after that many reconnects (default: never).

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
    all_headers = dict(headers or {})
    bearer = secret(token, token_env, f"websocket {name!r}")
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    context = tls_context(tls, ca=ca, cert=cert, key=key)
    if context is None and url.startswith("wss://"):
        context = tls_context(True)
    source = WebSocketSource(
        url, headers=all_headers, ssl_context=context,
        ping_interval=None if ping_interval is None else to_ns(ping_interval) / 1e9,
        subscribe=subscribe, name=name, decoder=decoder, example=schema, max_batch=max_batch,
        max_delay=max_delay, buffer=buffer, policy=policy, time_unit=time_unit,
        max_events=max_events, max_reconnects=max_reconnects)
    return attach(source, time)
