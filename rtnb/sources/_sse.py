"""``rtnb.sources.sse``: a Server-Sent Events client that resumes with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import pandas as pd

from rtnb._net import mask_url, require
from rtnb._time import DurationLike
from rtnb.errors import SourceError
from rtnb.frame import StreamingFrame
from rtnb.sources._coerce import TimeUnit, as_example
from rtnb.sources._decode import Payload
from rtnb.sources._guard import (
    DEFAULT_MAX_FUTURE,
    RAW_PREFIX,
    RefusedBytes,
    RefusingSource,
    bytes_text,
    refused,
    size_limit,
)
from rtnb.sources._options import (
    DecoderLike,
    Policy,
    SourceOptions,
    TlsOptions,
    bearer_headers,
)
from rtnb.sources._runner import BufferedSource, attach

__all__ = ["SSESource", "sse"]


class InvalidUtf8(bytes):
    r"""An event (its lines, ``\n`` between them) that is not valid UTF-8, as it arrived."""


class EventBlocks:
    r"""Cuts a ``text/event-stream`` into events: the lines between two blank lines.

    Events are cut from the bytes as they arrive (not read line by line: most events are one
    ``data:`` line, taken whole); line ends (``\r\n``, ``\r``, ``\n``) become ``\n``, and the
    events are decoded as UTF-8 (the format's only encoding). Time and memory are linear in
    the stream, whatever the events' sizes: an event in progress is kept as a list of its
    chunks, not joined again with every chunk. Two kinds of event come back as bytes instead
    of text: an event that is not valid UTF-8 (:class:`InvalidUtf8`), and an event over
    ``max_event_bytes`` (a :func:`~rtnb.sources._guard.refused` prefix of it, the reason
    saying its size: only that prefix is kept while the rest streams past).

    Examples
    --------
    >>> blocks = EventBlocks()
    >>> blocks.feed(b"data: 1\r\n\r"), blocks.feed(b"\nid: 7\ndata: 2\n\ndata: 3")
    (['data: 1'], ['id: 7\ndata: 2'])
    >>> blocks.feed(b"\n\ndata: \xff\n\n")
    ['data: 3', b'data: \xff']
    >>> small = EventBlocks(max_event_bytes=8)
    >>> [(b, b.reason) for b in small.feed(b"data: 123456789\n\ndata: 1\n\n")[:1]]
    [(b'data: 123456789', 'event of 15 bytes is over max_event_bytes=8 (8 bytes)')]
    """

    def __init__(self, max_event_bytes: int | None = 2 ** 24) -> None:
        self.max_event_bytes = max_event_bytes
        self._parts: list[bytes] = []  # the event in progress (its first bytes if over)
        self._size = 0  # its size so far, in bytes
        self._over = False  # over max_event_bytes: only a prefix is kept
        self._after_cr = False  # the last chunk ended with "\r": a "\n" next is its half
        self._last_nl = False  # the stream so far ends with a (normalised) line end

    def feed(self, chunk: bytes | str) -> list[str | bytes]:
        """The events completed by ``chunk`` (possibly empty strings: extra blank lines).

        A ``str`` chunk is taken as its UTF-8 bytes.
        """
        if isinstance(chunk, str):
            chunk = chunk.encode()
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = chunk[-1:] == b"\r"
        if not chunk:
            return []
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[str | bytes] = []
        if self._size and self._last_nl and chunk[0] == 10:  # "\n" + "\n" across the chunks
            out.append(self._complete(b"", drop_last=True))
            chunk = chunk[1:]
            if not chunk:
                return out
        self._last_nl = chunk[-1] == 10
        first = chunk.find(b"\n\n")
        if first < 0:
            self._keep(chunk)
            return out
        out.append(self._complete(chunk[:first]))
        start = first + 2
        last = chunk.rfind(b"\n\n", start)
        if last < 0:
            self._keep(chunk[start:])
            return out
        # The events between the first and the last blank line: decoded and split at once.
        # The split of what ends at the last "\n\n" ends with "" or "\n" (an odd run of
        # line ends: the last one begins the next event).
        region = chunk[start:last + 2]
        text = self._text(region)
        if text is not None:
            *events, tail = text.split("\n\n")
            out.extend(events)
        else:  # one by one: which are not UTF-8, which are over the cap
            *pieces, tail_bytes = region.split(b"\n\n")
            out.extend(self._complete(piece) for piece in pieces)
            tail = tail_bytes.decode()
        self._keep((b"\n" if tail else b"") + chunk[last + 2:])
        return out

    def _text(self, region: bytes) -> str | None:
        """``region`` decoded, if no event in it can be over the cap and it is UTF-8."""
        cap = self.max_event_bytes
        if cap is not None and len(region) > cap:
            return None
        try:
            return region.decode()
        except UnicodeDecodeError:
            return None

    def _keep(self, data: bytes) -> None:
        """Add ``data`` to the event in progress (only a prefix of an event over the cap)."""
        if not data:
            return
        self._size += len(data)
        if self._over:
            prefix = self._parts[0]
            if len(prefix) < RAW_PREFIX:
                self._parts[0] = prefix + data[:RAW_PREFIX - len(prefix)]
            return
        cap = self.max_event_bytes
        # over the cap by more than a last "\n" (which may be half of the blank line): from
        # now on only a prefix is kept
        if cap is not None and self._size > cap + 1:
            self._over = True
            self._parts = [b"".join([*self._parts, data[:RAW_PREFIX]])[:RAW_PREFIX]]
            return
        self._parts.append(data)

    def _complete(self, data: bytes, *, drop_last: bool = False) -> str | bytes:
        """The event in progress, ended by ``data``: text, or bytes if refused or not UTF-8."""
        parts, size, over = self._parts, self._size + len(data), self._over
        self._parts, self._size, self._over = [], 0, False
        if drop_last:  # its last byte is half of the blank line
            size -= 1
            if not over:
                data = parts.pop()[:-1]
        cap = self.max_event_bytes
        if cap is not None and size > cap:
            prefix = b"".join([*parts, data[:RAW_PREFIX]])[:min(RAW_PREFIX, size)]
            return refused(prefix, f"event of {size} bytes is over max_event_bytes={cap} "
                                   f"({bytes_text(cap)})")
        if parts:
            data = b"".join([*parts, data])
        try:
            return data.decode()
        except UnicodeDecodeError:
            return InvalidUtf8(data)


class SSESource(RefusingSource, BufferedSource):
    """Reads ``text/event-stream`` and resumes after a reconnect.

    It sends back the last event id it received, so a server that keeps history resumes
    right after it (nothing lost, nothing repeated). An event that is not valid UTF-8 or is
    over ``max_event_bytes`` is a dead letter; the stream goes on at the next event.
    """

    def __init__(self, url: str, *, headers: dict[str, str], ssl_context: ssl.SSLContext | None,
                 event: str | None, last_event_id: str | None,
                 max_event_bytes: int | None = 2 ** 24, **options: Any) -> None:
        super().__init__(**options)
        self.max_event_bytes = size_limit(max_event_bytes, "max_event_bytes")
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
            events = EventBlocks(self.max_event_bytes)
            async for chunk in response.aiter_bytes():
                for payload in self._payloads(events.feed(chunk)):
                    if not self._offer(payload, self.last_event_id):
                        await self._put(payload, self.last_event_id)
        msg = "the server closed the event stream"
        raise OSError(msg)

    def _payloads(self, blocks: list[str | bytes]) -> Iterator[Payload]:
        """The data of the events to read; ``last_event_id`` follows them as they are taken.

        An event that is not UTF-8 or over the cap (bytes from :class:`EventBlocks`) is a
        :func:`~rtnb.sources._guard.refused` payload: a dead letter with the reason.
        """
        any_kind = self.event is None
        for block in blocks:
            if block.__class__ is not str:
                letter = self._refused_event(block)
                if letter is not None:
                    yield letter
            elif any_kind and block.startswith("data: ") and "\n" not in block:
                yield block[6:]  # the usual event: one data line
            else:
                payload = self._event(block)
                if payload is not None:
                    yield payload

    def _refused_event(self, block: str | bytes) -> Payload | None:
        """The dead letter of an event :class:`EventBlocks` refused (``None``: not ours)."""
        if isinstance(block, RefusedBytes):  # over the cap: what it is is unknown
            self._refused += 1
            return block
        assert isinstance(block, bytes)
        try:
            bytes(block).decode()
        except UnicodeDecodeError as exc:
            at = exc.start
        else:  # pragma: no cover - EventBlocks only hands over bytes that are not UTF-8
            at = -1
        last_id = self.last_event_id
        # Its fields as far as they can be read: another event type is not ours; an id that
        # is text is taken (the stream resumes after this event).
        if self._event(bytes(block).decode("utf-8", "surrogateescape")) is None:
            return None
        if self.last_event_id is not None and self.last_event_id != last_id:
            try:
                self.last_event_id.encode()
            except UnicodeEncodeError:
                self.last_event_id = last_id
        return self._refuse(bytes(block), f"invalid UTF-8 at byte {at} of the event",
                            keep=len(block))

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
    decoder: DecoderLike = "json",
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
    max_event_bytes: int | None = 2 ** 24,
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE,
    name: str = "sse",
) -> StreamingFrame:
    """A Server-Sent Events feed as a StreamingFrame of micro-batches.

    Each event's ``data`` is decoded (JSON by default); ``event=`` keeps one event type.
    The client resumes with ``Last-Event-ID`` after a reconnect (start from
    ``last_event_id``). ``example``, ``time``, ``headers``, ``token`` and ``token_env``
    as for :func:`rtnb.sources.websocket`.

    Parameters
    ----------
    max_event_bytes
        An event (its lines, up to the blank line that ends it) larger than this (default
        16 MiB) is a dead letter with its first KiB and its size, whatever its type; only
        that prefix is held while the rest streams past, and the stream goes on at the next
        event. ``None``: no limit. An event that is not valid UTF-8 is a dead letter too
        ("invalid UTF-8 at byte N of the event", with the event's bytes).

    Other Parameters
    ----------------
    decoder, time_unit, max_batch, max_delay, buffer, policy, max_events, max_reconnects, max_future
        As for every message source: :class:`~rtnb.sources.SourceOptions`.
    tls, ca, cert, key
        TLS for ``https://`` (a custom CA, a client certificate):
        :class:`~rtnb.sources.TlsOptions`.

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
    all_headers = bearer_headers(headers, token, token_env, f"sse {name!r}")
    source = SSESource(
        url, headers=all_headers,
        ssl_context=TlsOptions.of(locals()).context(owner=f"sse {name!r}"), event=event,
        last_event_id=last_event_id, max_event_bytes=max_event_bytes, name=name,
        example=schema, options=SourceOptions.of(locals()))
    return attach(source, time)
