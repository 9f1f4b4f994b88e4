"""What sources and sinks share on the network: optional clients, secrets, TLS, backoff."""

from __future__ import annotations

import os
import random
import re
import ssl
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from rtnb.errors import ConfigError, MissingExtraError

__all__ = ["SECRET_PARAMS", "Backoff", "mask_url", "require", "secret", "secret_header",
           "secret_param", "tls_context", "token_user"]


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


#: Query parameters that hold credentials (compared lower-case, ``-`` read as ``_``).
SECRET_PARAMS = frozenset({
    "token", "access_token", "api_key", "apikey", "key", "password", "passwd", "pwd", "secret",
    "sig", "signature", "auth", "client_secret", "refresh_token", "id_token", "jwt",
    "access_key", "secret_key", "private_key", "subscription_key"})
#: ... and any parameter whose name ends like one of these (``auth_token``, ``x-amz-signature``).
_SECRET_PARAM_ENDS = ("_token", "_secret", "_password", "_passwd", "_signature", "_sig",
                      "_apikey", "_api_key", "_auth")
_SECRET_HEADER = re.compile(r"auth|token|key|secret|passw|cookie|session|signature", re.I)
#: Schemes whose URLs may carry a token as the user name (``nats://TOKEN@host``).
_TOKEN_USER_SCHEMES = ("nats", "tls")


def secret_param(name: str) -> bool:
    """Whether the URL query parameter ``name`` (raw or decoded) holds a credential.

    Examples
    --------
    >>> [secret_param(n) for n in ("token", "API_KEY", "api-key", "X-Amz-Signature", "x")]
    [True, True, True, True, False]
    >>> secret_param("api%5Fkey"), secret_param("keyword"), secret_param("auth_token")
    (True, False, True)
    """
    normal = unquote_plus(name).strip().lower().replace("-", "_")
    return normal in SECRET_PARAMS or normal.endswith(_SECRET_PARAM_ENDS)


def secret_header(name: str) -> bool:
    """Whether the HTTP header ``name`` holds a credential (``Authorization``, ``X-Api-Key``).

    Examples
    --------
    >>> [secret_header(n) for n in ("Authorization", "X-Auth", "X-Api-Key", "Cookie",
    ...                             "X-Session-Id", "Accept", "Content-Type")]
    [True, True, True, True, True, False, False]
    """
    return _SECRET_HEADER.search(name) is not None


def token_user(url: str) -> bool:
    """Whether the user name of ``url`` is a token (``nats://TOKEN@host``, no password)."""
    try:
        parts = urlsplit(url)
        return (parts.scheme.lower() in _TOKEN_USER_SCHEMES and parts.password is None
                and bool(parts.username))
    except ValueError:
        return False


def _mask_pairs(text: str) -> str:
    return "&".join(
        f"{k}=***" if v and secret_param(k) else f"{k}{sep}{v}"
        for k, sep, v in (item.partition("=") for item in text.split("&")))


def mask_url(url: str) -> str:
    """The URL with any password and credential query values replaced by ``***``.

    Used wherever a URL is shown: reprs, log lines and error messages.

    Examples
    --------
    >>> mask_url("redis://user:s3cret@127.0.0.1:6379/0")
    'redis://user:***@127.0.0.1:6379/0'
    >>> mask_url("wss://feed.example/ws?token=abc&x=1")
    'wss://feed.example/ws?token=***&x=1'
    >>> mask_url("https://hooks.example/in?API_KEY=abc&apikey=d&Sig=e&signature=f&passwd=g")
    'https://hooks.example/in?API_KEY=***&apikey=***&Sig=***&signature=***&passwd=***'
    >>> mask_url("https://h.example/x?auth=a&access_token=b&secret=c&key=d&keys=e&page=2")
    'https://h.example/x?auth=***&access_token=***&secret=***&key=***&keys=e&page=2'
    >>> mask_url("https://h.example/cb#access_token=abc&state=1")
    'https://h.example/cb#access_token=***&state=1'
    >>> mask_url("nats://s3cret@127.0.0.1:4222"), mask_url("amqp://guest@127.0.0.1/")
    ('nats://***@127.0.0.1:4222', 'amqp://guest@127.0.0.1/')
    >>> mask_url("ws://[::1/?token=abc")  # not a URL urlsplit accepts: masked all the same
    'ws://[::1/?token=***'
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return re.sub(r"(?<=[?&#;])([^=&#;]*)=([^&#;]*)",
                      lambda m: f"{m[1]}=***" if secret_param(m[1]) else m[0],
                      re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", url))
    netloc = parts.netloc
    if password is not None:
        user = netloc.rsplit("@", 1)[0].split(":", 1)[0]
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:***@{host}"
    elif token_user(url):
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = _mask_pairs(parts.query) if parts.query else ""
    fragment = _mask_pairs(parts.fragment) if "=" in parts.fragment else parts.fragment
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def mask_urls(text: str) -> str:
    """``text`` (an error message) with every URL in it masked as :func:`mask_url` does.

    HTTP clients put the request's URL in their errors (httpx: ``for url '...'``); a token
    given in the query must not reach a log or a traceback through them.

    Examples
    --------
    >>> mask_urls("Client error '401 Unauthorized' for url 'http://h:9100/m?token=abc'")
    "Client error '401 Unauthorized' for url 'http://h:9100/m?token=***'"
    """
    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+", lambda m: mask_url(m[0]), text)


def tls_context(tls: bool | ssl.SSLContext | None = None, *, ca: str | None = None,
                cert: str | None = None, key: str | None = None,
                verify: bool = True, owner: str | None = None) -> ssl.SSLContext | None:
    """An SSL context from a CA file and an optional client certificate (mutual TLS).

    ``tls=None`` with no files gives ``None`` (plain text, or the scheme's default); passing
    a context returns it unchanged. A file that cannot be read is a ConfigError naming it
    (and ``owner``, the node, when given).

    Examples
    --------
    >>> tls_context() is None
    True
    >>> tls_context(True).verify_mode == ssl.CERT_REQUIRED
    True
    >>> tls_context(ca="/no/such/ca.pem")
    Traceback (most recent call last):
    ...
    rtnb.errors.ConfigError: the TLS CA file '/no/such/ca.pem' could not be read: ...
    """
    if isinstance(tls, ssl.SSLContext):
        return tls
    if not tls and ca is None and cert is None:
        return None
    who = f"{owner}: " if owner else ""
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:  # a missing file, not a certificate
        msg = f"{who}the TLS CA file {ca!r} could not be read: {exc}"
        raise ConfigError(msg) from None
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            msg = (f"{who}the TLS client certificate {cert!r}"
                   + (f" with key {key!r}" if key is not None else "")
                   + f" could not be loaded: {exc}")
            raise ConfigError(msg) from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Backoff:
    """Exponential backoff with jitter: ``uniform(c / 10, c)``, ``c = min(cap, base * 2**n)``.

    Any number of attempts is fine (a source that retries forever through a long outage).

    Examples
    --------
    >>> b = Backoff(base=0.1, cap=1.0, seed=1)
    >>> delays = [b.next() for _ in range(6)]
    >>> all(0 <= d <= 1.0 for d in delays), b.attempt
    (True, 6)
    >>> b.attempt = 5_000  # a day of failed reconnects
    >>> 0.1 <= b.next() <= 1.0
    True
    >>> b.reset(); b.attempt
    0
    """

    def __init__(self, base: float = 0.1, cap: float = 10.0, seed: int | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = random.Random(seed)

    def next(self) -> float:
        """The next delay (seconds)."""
        # 2.0 ** 1024 overflows a float: past ~60 doublings every base has reached its cap
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 60))
        self.attempt += 1
        return self._rng.uniform(ceiling / 10, ceiling)

    def reset(self) -> None:
        """After a good connection: start again from ``base``."""
        self.attempt = 0
