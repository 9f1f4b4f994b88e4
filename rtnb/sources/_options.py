"""The options every message source shares: declared, checked and documented once.

The source functions (:func:`rtnb.sources.websocket`, ``sse``, ``tail``, ``redis_stream``,
``nats``, ``mqtt``, ``amqp``, ``kafka``) keep these options in their own keyword signatures
(tab completion and exported scripts name them), and gather them with
``SourceOptions.of(locals())`` instead of forwarding each one by hand: a
:class:`SourceOptions` goes to :class:`~rtnb.sources._runner.BufferedSource`, a
:class:`TlsOptions` makes the network sources' SSL context.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeAlias, TypeVar

from rtnb._formats import Format
from rtnb._net import Backoff, secret, tls_context
from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError
from rtnb.sources._coerce import TimeUnit
from rtnb.sources._decode import Decoder, Payload
from rtnb.sources._guard import DEFAULT_MAX_FUTURE, future_ns

__all__ = ["DecoderLike", "Policy", "SourceOptions", "TlsOptions", "bearer_headers",
           "check_capacity", "check_policy"]

Policy: TypeAlias = Literal["block", "drop_oldest", "sample"]
DecoderLike: TypeAlias = str | Decoder | Format | Callable[[Payload], Any]
_O = TypeVar("_O", "SourceOptions", "TlsOptions")


def check_capacity(capacity: object) -> None:
    """Refuse a buffer capacity that is not a positive int."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
        msg = f"buffer capacity must be a positive int; got {capacity!r}"
        raise ConfigError(msg)


def check_policy(policy: object) -> None:
    """Refuse a backpressure policy other than ``"block"``, ``"drop_oldest"``, ``"sample"``."""
    if policy not in ("block", "drop_oldest", "sample"):
        msg = f"backpressure policy must be 'block', 'drop_oldest' or 'sample'; got {policy!r}"
        raise ConfigError(msg)


def bearer_headers(headers: Mapping[str, str] | None, token: str | None,
                   token_env: str | None, what: str) -> dict[str, str]:
    """``headers`` and, given a token (or the variable holding it), its ``Authorization``.

    Examples
    --------
    >>> bearer_headers({"X-Feed": "cpu"}, "s3cret", None, "websocket 'w'")
    {'X-Feed': 'cpu', 'Authorization': 'Bearer s3cret'}
    """
    out = dict(headers or {})
    bearer = secret(token, token_env, what)
    if bearer is not None:
        out["Authorization"] = f"Bearer {bearer}"
    return out


def _of(cls: type[_O], args: Mapping[str, Any], given: Mapping[str, Any]) -> _O:
    picked = {f.name: args[f.name] for f in fields(cls) if f.name in args}
    return cls(**{**picked, **given})


@dataclass(frozen=True)
class SourceOptions:
    """The options every message source takes: decoding, batching, backpressure, limits.

    Every source function (``rtnb.sources.websocket``, ``sse``, ``tail``, ``redis_stream``,
    ``nats``, ``mqtt``, ``amqp``, ``kafka``) takes these as keyword arguments of the same
    names, besides its own (``tail`` calls ``decoder`` ``format`` and has no ``policy`` or
    ``max_reconnects``; ``backoff`` is for sources built in code). They also all take
    ``example``, the records' schema (an empty DataFrame or ``{"column": dtype}``), and
    ``time``, the event-time column: records are decoded, coerced to ``example``, and
    what does not decode or fit goes to ``frame.dead_letters`` with the raw payload, the
    reason and the position. Checked when the source is built (:class:`~rtnb.ConfigError`).

    Parameters
    ----------
    decoder
        How a payload becomes records: ``"json"`` (an object, an array of objects or JSON
        lines; the default), ``"msgpack"``, ``"csv"`` (fields in the example's column
        order), a ``Decoder`` or a function ``payload -> dict | list[dict]``. Binary:
        ``"arrow"`` (Arrow IPC), ``"avro"`` (Avro object containers) or a format of
        :mod:`rtnb.formats` (``protobuf(MessageClass)``, ``avro(schema)``).
    time_unit
        The epoch unit of numeric times (``"s"``, the default, ``"ms"``, ``"us"``,
        ``"ns"``); strings are parsed as ISO 8601.
    max_batch, max_delay
        A batch is cut at ``max_batch`` messages (a positive int, default 10,000), at
        ``max_delay`` after its first message (default ``"50ms"``), or as soon as the broker
        has nothing more to send for now.
    buffer, policy
        ``buffer`` messages (default 100,000) are held between the connection and the
        pipeline. When it is full, ``policy`` says what happens: ``"block"`` stops reading
        (the default; a replayable source, whose broker keeps what is not read, always
        blocks), ``"drop_oldest"`` or ``"sample"`` (a uniform sample of what arrived while
        full) drop messages of a live feed, counted in ``source.stats.dropped``.
    backoff
        Delays between reconnects (default: a new :class:`~rtnb._net.Backoff` per source,
        exponential with full jitter, 0.1 s to 10 s).
    max_reconnects
        Give up (the error stops the run) after that many reconnects; ``None`` (default):
        never.
    max_events
        Stop after that many rows (a non-negative int); ``None`` (default): never.
    max_future
        Rows whose event time is more than this ahead of the source's clock (the wall
        clock, UTC; default ``"5min"``) are dead letters with the reason, so that one event
        from the far future does not move the watermark and make every later event late.
        ``None`` disables it.

    Examples
    --------
    >>> options = SourceOptions(max_batch=500, max_delay="10ms", max_future=None)
    >>> options.max_delay_s, options.max_future_ns, options.policy
    (0.01, None, None)
    >>> SourceOptions(max_batch=0)
    Traceback (most recent call last):
    ...
    rtnb.errors.ConfigError: `max_batch` must be a positive int; got 0
    """

    decoder: DecoderLike = "json"
    time_unit: TimeUnit = "s"
    max_batch: int = 10_000
    max_delay: DurationLike = "50ms"
    buffer: int = 100_000
    policy: Policy | None = None
    backoff: Backoff | None = None
    max_reconnects: int | None = None
    max_events: int | None = None
    max_future: DurationLike | None = DEFAULT_MAX_FUTURE

    def __post_init__(self) -> None:
        max_batch = self.max_batch
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch <= 0:
            msg = f"`max_batch` must be a positive int; got {max_batch!r}"
            raise ConfigError(msg)
        to_ns(self.max_delay, name="max_delay")
        check_capacity(self.buffer)
        if self.policy is not None:
            check_policy(self.policy)
        max_events = self.max_events
        if max_events is not None and (isinstance(max_events, bool) or
                                       not isinstance(max_events, int) or max_events < 0):
            msg = f"`max_events` must be a non-negative int or None; got {max_events!r}"
            raise ConfigError(msg)
        future_ns(self.max_future)

    @classmethod
    def of(cls, args: Mapping[str, Any], **given: Any) -> SourceOptions:
        """The options among a source function's arguments (its ``locals()``), by name.

        Names that are not options are left out, options that are not there keep their
        default, and ``given`` keywords win over ``args``.

        Examples
        --------
        >>> def source(url, *, max_batch=10_000, max_delay="50ms"):
        ...     return SourceOptions.of(locals())
        >>> source("ws://h/", max_batch=5).max_batch
        5
        """
        return _of(cls, args, given)

    @property
    def max_delay_s(self) -> float:
        """``max_delay`` in seconds."""
        return to_ns(self.max_delay, name="max_delay") / 1e9

    @property
    def max_future_ns(self) -> int | None:
        """``max_future`` in nanoseconds (``None``: no guard)."""
        return future_ns(self.max_future)


@dataclass(frozen=True)
class TlsOptions:
    """The TLS options of the network sources (``tls``, ``ca``, ``cert``, ``key``).

    Without any of them a source uses TLS where its URL's scheme says so (``wss://``,
    ``https://``, ``rediss://``, ``tls://``, ``mqtts://``, ``amqps://``), verifying the
    server with the system's CAs.

    Parameters
    ----------
    tls
        ``True``: TLS, whatever the scheme; an :class:`ssl.SSLContext`: that context, as it
        is (the files are then not read).
    ca
        A CA file (PEM) to verify the server with, instead of the system's CAs.
    cert, key
        A client certificate and its private key (PEM files): mutual TLS.

    Examples
    --------
    >>> TlsOptions().context() is None, TlsOptions().context(default=True) is not None
    (True, True)
    """

    tls: bool | ssl.SSLContext | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def of(cls, args: Mapping[str, Any], **given: Any) -> TlsOptions:
        """The TLS options among a source function's arguments (see :meth:`SourceOptions.of`)."""
        return _of(cls, args, given)

    def context(self, *, default: bool = False, owner: str | None = None
                ) -> ssl.SSLContext | None:
        """The SSL context (``None``: no TLS); ``default``: the URL's scheme asks for TLS.

        ``owner`` (the source, ``"redis_stream 'metrics'"``) is named in a file's error.
        """
        context = tls_context(self.tls, ca=self.ca, cert=self.cert, key=self.key, owner=owner)
        if context is None and default:
            context = tls_context(True)
        return context
