"""``rtnb.sources.sse``: a Server-Sent Events client that resumes with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from rtnb._net import mask_url, require, secret, tls_context
from rtnb._time import DurationLike
from rtnb.errors import SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._decode import Decoder, Payload
from rtnb.sources._runner import BufferedSource, Policy, attach

__all__ = ["SSESource", "sse"]


class EventBlocks:
    r"""Cuts a ``text/event-stream`` into events: the lines between two blank lines.

    Events are cut from text chunks as they arrive (not read line by line: most events are
    one ``data:`` line, taken whole); line ends (``\r\n``, ``\r``, ``\n``) become ``\n``.

    Examples
    --------
    >>> blocks = EventBlocks()
    >>> blocks.feed("data: 1\r\n\r"), blocks.feed("\nid: 7\ndata: 2\n\ndata: 3")
    (['data: 1'], ['id: 7\ndata: 2'])
    """

    def __init__(self) -> None:
        self.rest = ""
        self._after_cr = False  # the last chunk ended with "\r": a "\n" next is its half

    def feed(self, chunk: str) -> list[str]:
        """The events completed by ``chunk`` (possibly empty strings: extra blank lines)."""
        if not chunk:
            return []
        if self._after_cr and chunk.startswith("\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith("\r")
        text = self.rest + chunk
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        *blocks, self.rest = text.split("\n\n")
        return blocks


class SSESource(BufferedSource):
    """Reads ``text/event-stream`` and resumes after a reconnect.

    It sends back the last event id it received, so a server that keeps history resumes
    right after it (nothing lost, nothing repeated).
    """

    def __init__(self, url: str, *, headers: dict[str, str], ssl_context: ssl.SSLContext | None,
                 event: str | None, last_event_id: str | None, **options: Any) -> None:
        super().__init__(**options)
        httpx = require("httpx", "sse")
        self.url = url
        self._headers = headers
        self._ssl = ssl_context
        self.event = event
        self.last_event_id = last_event_id
        self.retry_on = (OSError, asyncio.TimeoutError, httpx.TransportError)

    def __repr__(self) -> str:
        return f"<SSESource {self.name!r} {mask_url(self.url)}>"

    async def _read(self, stop: asyncio.Event) -> None:
        import httpx

        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **self._headers}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        verify: Any = self._ssl if self._ssl is not None else True
        timeout = httpx.Timeout(10.0, read=None)
        async with httpx.AsyncClient(verify=verify, timeout=timeout) as client, \
                client.stream("GET", self.url, headers=headers) as response:
            if response.status_code in (401, 403, 404):
                msg = (f"source {self.name!r}: {mask_url(self.url)} answered HTTP "
                       f"{response.status_code}; check the URL and the token")
                raise SourceError(msg)
            if response.status_code != 200:
                msg = f"HTTP {response.status_code}"
                raise OSError(msg)
            self._connected()
            events = EventBlocks()
            async for chunk in response.aiter_text():
                for payload in self._payloads(events.feed(chunk)):
                    if not self._offer(payload, self.last_event_id):
                        await self._put(payload, self.last_event_id)
        msg = "the server closed the event stream"
        raise OSError(msg)

    def _payloads(self, blocks: list[str]) -> Iterator[str]:
        """The data of the events to read; ``last_event_id`` follows them as they are taken."""
        any_kind = self.event is None
        for block in blocks:
            if any_kind and block.startswith("data: ") and "\n" not in block:
                yield block[6:]  # the usual event: one data line
            else:
                payload = self._event(block)
                if payload is not None:
                    yield payload

    def _event(self, block: str) -> str | None:
        """The data of one event (its lines, between two blank lines), if it is to be read.

        The event's id, if it has one, becomes ``last_event_id``.
        """
        data: list[str] = []
        event_id, kind = None, "message"
        for line in block.split("\n"):
            if not line or line.startswith(":"):  # a blank or a comment line
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
            elif field == "event":
                kind = value
        if not data or (self.event is not None and kind != self.event):
            return None
        if event_id is not None:
            self.last_event_id = event_id
        return "\n".join(data)


def sse(
    url: str,
    *,
    example: pd.DataFrame | dict[str, Any],
    time: str | None = None,
    decoder: str | Decoder | Callable[[Payload], Any] = "json",
    event: str | None = None,
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = None,
    token_env: str | None = None,
    tls: bool | ssl.SSLContext | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    max_batch: int = 10_000,
    max_delay: DurationLike = "50ms",
    buffer: int = 100_000,
    policy: Policy = "block",
    time_unit: TimeUnit = "s",
    max_events: int | None = None,
    max_reconnects: int | None = None,
    name: str = "sse",
) -> StreamingFrame:
    """A Server-Sent Events feed as a StreamingFrame of micro-batches.

    Each event's ``data`` is decoded (JSON by default); ``event=`` keeps one event type.
    The client resumes with ``Last-Event-ID`` after a reconnect (start from
    ``last_event_id``). Options as for :func:`rtnb.sources.websocket`; ``https://`` with a
    custom CA or client certificate through ``tls``/``ca``/``cert``/``key``.

    Examples
    --------
    >>> import rtnb
    >>> rtnb.sources.sse("http://127.0.0.1:8000/events", example={"cpu": "float64"})
    <StreamingFrame 'sse' [cpu: float64]>
    """
    if not url.startswith(("http://", "https://")):
        msg = f"sse url must start with http:// or https://; got {mask_url(url)!r}"
        raise SourceError(msg)
    schema = as_example(example, f"sse {name!r}")
    all_headers = dict(headers or {})
    bearer = secret(token, token_env, f"sse {name!r}")
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    source = SSESource(
        url, headers=all_headers, ssl_context=tls_context(tls, ca=ca, cert=cert, key=key),
        event=event, last_event_id=last_event_id, name=name, decoder=decoder, example=schema,
        max_batch=max_batch, max_delay=max_delay, buffer=buffer, policy=policy,
        time_unit=time_unit, max_events=max_events, max_reconnects=max_reconnects)
    return attach(source, time)
