"""What sources and sinks share on the network: optional clients, secrets, TLS, backoff."""

from __future__ import annotations

import os
import random
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rtnb.errors import ConfigError, MissingExtraError

__all__ = ["Backoff", "mask_url", "require", "secret", "tls_context"]


def require(module: str, extra: str) -> Any:
    """Import an optional client library or say which extra installs it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise MissingExtraError(module, extra=extra) from exc


def secret(value: str | None, env: str | None, what: str) -> str | None:
    """A secret from an argument or, when ``env`` names a variable, from the environment."""
    if value is not None:
        return value
    if env is None:
        return None
    found = os.environ.get(env)
    if found is None:
        msg = f"{what}: environment variable {env!r} is not set"
        raise ConfigError(msg)
    return found


def mask_url(url: str) -> str:
    """The URL with any password (and token query values) replaced by ``***``.

    Examples
    --------
    >>> mask_url("redis://user:s3cret@127.0.0.1:6379/0")
    'redis://user:***@127.0.0.1:6379/0'
    >>> mask_url("wss://feed.example/ws?token=abc&x=1")
    'wss://feed.example/ws?token=***&x=1'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:***@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() in ("token", "password", "key", "secret", "access_token")
        else f"{k}={v}" if sep else k
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def tls_context(tls: bool | ssl.SSLContext | None = None, *, ca: str | None = None,
                cert: str | None = None, key: str | None = None,
                verify: bool = True) -> ssl.SSLContext | None:
    """An SSL context from a CA file and an optional client certificate (mutual TLS).

    ``tls=None`` with no files gives ``None`` (plain text, or the scheme's default); passing
    a context returns it unchanged.

    Examples
    --------
    >>> tls_context() is None
    True
    >>> tls_context(True).verify_mode == ssl.CERT_REQUIRED
    True
    """
    if isinstance(tls, ssl.SSLContext):
        return tls
    if not tls and ca is None and cert is None:
        return None
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**n))``.

    Examples
    --------
    >>> b = Backoff(base=0.1, cap=1.0, seed=1)
    >>> delays = [b.next() for _ in range(6)]
    >>> all(0 <= d <= 1.0 for d in delays), b.attempt
    (True, 6)
    >>> b.reset(); b.attempt
    0
    """

    def __init__(self, base: float = 0.1, cap: float = 10.0, seed: int | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = random.Random(seed)

    def next(self) -> float:
        """The next delay (seconds)."""
        ceiling = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt += 1
        return self._rng.uniform(ceiling / 10, ceiling)

    def reset(self) -> None:
        """After a good connection: start again from ``base``."""
        self.attempt = 0
