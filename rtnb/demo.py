"""A local demo feed: rows over WebSocket and Server-Sent Events, on 127.0.0.1.

It serves the bundled metrics (or any DataFrame) to notebooks and tests; token and TLS are
optional.

The server numbers every record (``seq``, from 0). The SSE endpoint keeps history: it serves
each connection from the start, or right after the ``Last-Event-ID`` the client sends back,
so a reconnecting client resumes where it was. The WebSocket endpoint is a live feed: a
client joins at the current position, and what was sent while it was away is gone. The
server can be stopped and started again on the same ports, which is how the fault tests cut
a feed mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import ssl as ssl_
from typing import Any

import numpy as np
import pandas as pd

from rtnb.errors import ConfigError

__all__ = ["FeedServer", "serve_feed"]


def _records(data: pd.DataFrame) -> list[str]:
    """Every row as a JSON object, times as ISO 8601 strings (what real feeds send)."""
    frame = data.copy()
    for col, dtype in frame.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            frame[col] = frame[col].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows = frame.to_dict(orient="records")
    return [json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v)
                        for k, v in r.items()}) for r in rows]


class FeedServer:
    """WebSocket and SSE endpoints serving ``data`` row by row at ``rate`` messages a second.

    Parameters
    ----------
    data
        The rows to serve (default: the first 10,000 rows of the bundled metrics); a ``seq``
        column with the row number is added.
    rate
        Messages per second per connection (``None``: as fast as the client reads).
    per_message
        Rows per message (a JSON array when more than one).
    token
        When set, clients must send ``Authorization: Bearer <token>`` (or ``?token=``).
    ssl
        An ``ssl.SSLContext`` with the server certificate: ``wss://`` and ``https://``.
    port
        0 picks a free port (kept across :meth:`stop` / :meth:`start`).

    Examples
    --------
    >>> import asyncio, rtnb
    >>> async def main():
    ...     feed = await rtnb.demo.serve_feed(rate=None)
    ...     src = rtnb.sources.sse(feed.sse_url, example=feed.example, time="timestamp",
    ...                            max_events=50)
    ...     out = src.collect()
    ...     await src.arun()
    ...     await feed.stop()
    ...     return sum(len(b) for b in out)
    >>> asyncio.run(main())
    50
    """

    def __init__(self, data: pd.DataFrame | None = None, *, rate: float | None = 100.0,
                 per_message: int = 1, token: str | None = None,
                 ssl: ssl_.SSLContext | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if data is None:
            from rtnb.datasets import metrics

            data = metrics().iloc[:10_000]
        if rate is not None and not rate > 0:
            msg = f"`rate` must be positive or None; got {rate!r}"
            raise ConfigError(msg)
        self.data = data.reset_index(drop=True).assign(seq=np.arange(len(data), dtype=np.int64))
        self.example = self.data.iloc[:0]
        self._lines = _records(self.data)
        self.rate = rate
        self.per_message = per_message
        self.token = token
        self.ssl = ssl
        self.host = host
        self.port = port
        self.sent = 0
        self.connections = 0
        self._ws: Any = None
        self._http: asyncio.Server | None = None
        self._ws_port = 0
        self._ws_position = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- urls --------------------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        """``ws://`` (or ``wss://``) URL of the WebSocket endpoint."""
        scheme = "wss" if self.ssl else "ws"
        return f"{scheme}://{self.host}:{self._ws_port}/feed"

    @property
    def sse_url(self) -> str:
        """``http://`` (or ``https://``) URL of the SSE endpoint."""
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{self.host}:{self.port}/events"

    def __repr__(self) -> str:
        state = "serving" if self._http is not None else "stopped"
        return (f"<FeedServer {state} {len(self.data):,} rows at "
                f"{'max' if self.rate is None else f'{self.rate:g}/s'}: {self.ws_url} "
                f"{self.sse_url}>")

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> FeedServer:
        """Listen (again) on the same ports."""
        from websockets.asyncio.server import serve

        self._http = await asyncio.start_server(self._sse_client, self.host, self.port,
                                                ssl=self.ssl)
        self.port = self._http.sockets[0].getsockname()[1]
        self._ws = await serve(self._ws_client, self.host, self._ws_port, ssl=self.ssl,
                               process_request=self._ws_auth)
        self._ws_port = next(iter(self._ws.sockets)).getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listeners and every open connection (clients see the feed drop)."""
        if self._ws is not None:
            self._ws.close()
            with contextlib.suppress(Exception):
                await self._ws.wait_closed()
            self._ws = None
        if self._http is not None:
            self._http.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._http.wait_closed()
            self._http = None

    # -- serving ---------------------------------------------------------------------------
    def _authorised(self, header: str | None, query: str) -> bool:
        if self.token is None:
            return True
        offered = ""
        if header and header.startswith("Bearer "):
            offered = header[7:]
        for part in query.split("&"):
            if part.startswith("token="):
                offered = part[6:]
        return hmac.compare_digest(offered, self.token)

    def _ws_auth(self, connection: Any, request: Any) -> Any:
        query = request.path.partition("?")[2]
        if not self._authorised(request.headers.get("Authorization"), query):
            return connection.respond(401, "missing or wrong token\n")
        return None

    def _message(self, start: int) -> tuple[str, int]:
        end = min(start + self.per_message, len(self._lines))
        if self.per_message == 1:
            return self._lines[start], end
        return "[" + ",".join(self._lines[start:end]) + "]", end

    async def _pace(self) -> None:
        if self.rate is not None:
            await asyncio.sleep(1 / self.rate)

    async def _ws_client(self, ws: Any) -> None:
        # A live feed: a client joins at the feed's current position (what was sent while no
        # client was connected, or while the server was down, is not sent again).
        self.connections += 1
        with contextlib.suppress(Exception):
            while self._ws_position < len(self._lines):
                text, end = self._message(self._ws_position)
                await ws.send(text)
                self._ws_position = end
                self.sent += 1
                await self._pace()
            await ws.wait_closed()  # a live feed idles at its end; it does not hang up

    async def _sse_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            request = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            first, *header_lines = request.split("\r\n")
            path = first.split(" ")[1] if " " in first else "/"
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (h.partition(":") for h in header_lines if h)}
            if not path.startswith("/events"):
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            if not self._authorised(headers.get("authorization"), path.partition("?")[2]):
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                return
            last = headers.get("last-event-id")
            i = int(last) + 1 if last and last.isdigit() else 0
            self.connections += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n")
            writer.write(b"retry: 100\n\n")
            while i < len(self._lines):
                start = i
                text, i = self._message(start)
                writer.write(f"id: {i - 1}\ndata: {text}\n\n".encode())
                await writer.drain()
                self.sent += 1
                await self._pace()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


async def serve_feed(data: pd.DataFrame | None = None, **options: Any) -> FeedServer:
    """Start a :class:`FeedServer` on the running loop (a notebook's) and return it.

    Examples
    --------
    >>> import asyncio, rtnb
    >>> async def main():
    ...     feed = await rtnb.demo.serve_feed()
    ...     await feed.stop()
    ...     return feed.sse_url.startswith("http://127.0.0.1:")
    >>> asyncio.run(main())
    True
    """
    return await FeedServer(data, **options).start()
