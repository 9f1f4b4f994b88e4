"""What message sources share: decoding, schema, batching, backpressure, acks, reconnects, TLS.

A source is split in two tasks on the running loop:

* the **reader** (one per protocol) receives messages and puts ``(payload, position)`` into a
  bounded :class:`Buffer`; a full buffer makes it wait (``"block"``: replayable sources then
  simply stop reading from the broker, which keeps the data) or drops by policy
  (``"drop_oldest"``, ``"sample"``: live-only feeds, counted exactly);
* the **batcher** takes up to ``max_batch`` messages or whatever arrived within ``max_delay``,
  decodes them, coerces them to the frame's ``example`` schema, emits the good rows, sends the
  bad ones to the frame's dead letters with the raw payload, the reason and the position, and
  only then acknowledges the positions (so nothing accepted is lost if the process dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import logging
import math
import os
import random
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from rtnb._time import DurationLike, to_ns
from rtnb.errors import ConfigError, MissingExtraError

if TYPE_CHECKING:
    from rtnb.frame import StreamingFrame

__all__ = [
    "Backoff",
    "Buffer",
    "BufferedSource",
    "Decoder",
    "Policy",
    "SourceStats",
    "as_example",
    "attach",
    "coerce",
    "make_decoder",
    "mask_url",
    "secret",
    "tls_context",
]

Policy: TypeAlias = Literal["block", "drop_oldest", "sample"]
TimeUnit: TypeAlias = Literal["s", "ms", "us", "ns"]
Payload: TypeAlias = bytes | str
Record: TypeAlias = dict[str, Any]

log = logging.getLogger(__name__)


def require(module: str, extra: str) -> Any:
    """Import an optional client library or say which extra installs it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise MissingExtraError(module, extra=extra) from exc


# -- secrets and TLS -------------------------------------------------------------------------
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


# -- decoding and schema ---------------------------------------------------------------------
def as_example(example: pd.DataFrame | dict[str, Any], what: str) -> pd.DataFrame:
    """An empty frame with the schema: a DataFrame, or ``{"column": dtype}``.

    Examples
    --------
    >>> as_example({"t": "datetime64[ns]", "host": "str", "cpu": "float64"}, "feed").dtypes
    t       datetime64[ns]
    host               str
    cpu            float64
    dtype: object
    """
    if isinstance(example, pd.DataFrame):
        return example.iloc[:0]
    if isinstance(example, dict) and example:
        try:
            return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in example.items()})
        except (TypeError, ValueError) as exc:
            msg = f"{what}: bad schema {example!r}: {exc}"
            raise ConfigError(msg) from exc
    msg = (f"{what} needs `example`: an empty DataFrame with the columns and dtypes of the "
           f"records, or a dict such as {{'timestamp': 'datetime64[ns]', 'cpu': 'float64'}}; "
           f"got {example!r}")
    raise ConfigError(msg)


def attach(source: BufferedSource, time: str | None) -> StreamingFrame:
    """The root frame fed by ``source``."""
    from rtnb.frame import StreamingFrame

    frame = StreamingFrame(source.example, time=time, name=source.name)
    frame.attach_source(source)
    return frame

Decoded: TypeAlias = tuple[list[Record], list[int], list[tuple[int, str]]]
DECODE_ERRORS = (ValueError, UnicodeDecodeError, TypeError)


def _failure(decoder: str, exc: Exception) -> str:
    """The dead-letter reason for a payload ``decoder`` could not decode.

    The error's own words for a malformed payload; with its type for anything else (a
    ``RecursionError`` on JSON nested too deep, a bug in a user's function).
    """
    if isinstance(exc, DECODE_ERRORS):
        return f"{decoder} decode failed: {exc}"
    return f"{decoder} decode failed: {type(exc).__name__}: {exc}"


class Decoder:
    """Turns one payload into records (a dict, or a list of dicts for a payload with many)."""

    name = "decoder"

    def decode(self, payload: Payload) -> list[Record]:
        """The records of ``payload``; raise ``ValueError`` (with the reason) if malformed.

        Whatever it raises for a payload makes that payload a dead letter with the error as
        the reason (so does a ``RecursionError`` on JSON nested too deep); the other
        payloads of the batch go on.
        """
        raise NotImplementedError

    def decode_batch(self, payloads: Sequence[Payload]) -> Decoded:
        """The records of many payloads: ``(records, owners, failed)``.

        ``owners[j]`` is the index of the payload record ``j`` came from; ``failed`` lists
        ``(index, reason)`` of the payloads that could not be decoded (any exception of
        :meth:`decode` for that payload). The result equals calling :meth:`decode` on every
        payload; subclasses override it to go faster.

        Examples
        --------
        >>> JsonDecoder().decode_batch([b'{"a": 1}', b"oops", b'[{"a": 2}, {"a": 3}]'])[1:]
        ([0, 2, 2], [(1, 'json decode failed: Expecting value: line 1 column 1 (char 0)')])
        """
        records: list[Record] = []
        owners: list[int] = []
        failed: list[tuple[int, str]] = []
        for i, payload in enumerate(payloads):
            try:
                recs = self.decode(payload)
            except Exception as exc:  # one payload's problem: its dead letter says which
                failed.append((i, _failure(self.name, exc)))
                continue
            records.extend(recs)
            owners.extend([i] * len(recs))
        return records, owners, failed

    def __repr__(self) -> str:
        return f"<{self.name} decoder>"


def _records(value: Any, what: str) -> list[Record]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    msg = f"{what} must be an object or a list of objects; got {type(value).__name__}"
    raise ValueError(msg)


class JsonDecoder(Decoder):
    """JSON objects (or arrays of objects); several JSON lines in one payload are fine."""

    name = "json"

    def decode(self, payload: Payload) -> list[Record]:
        text = payload.decode() if isinstance(payload, bytes | bytearray) else payload
        text = text.strip()
        if "\n" in text and not text.startswith("["):
            out: list[Record] = []
            for line in text.splitlines():
                if line.strip():
                    out.extend(_records(json.loads(line), "a JSON line"))
            return out
        return _records(json.loads(text), "a JSON payload")

    def decode_batch(self, payloads: Sequence[Payload]) -> Decoded:
        """All payloads parsed from one text, each checked to be exactly one JSON object.

        The payloads are joined with spaces and decoded once (no per-message ``json.loads``
        overhead); json's scanner parses each payload at its own offset and must end exactly
        at the payload's end, so a payload is never read together with its neighbour. Any
        payload that is not a single-line object (arrays, JSON lines, whitespace around it,
        malformed text) takes :meth:`decode`, so the result is the same as decoding one by
        one.
        """
        n = len(payloads)
        text = _joined_text(payloads)
        if text is None:
            return super().decode_batch(payloads)
        joined, lengths = text
        scan = _JSON_SCAN
        starts = list(itertools.accumulate((k + 1 for k in lengths[:-1]), initial=0))
        try:
            parsed = [scan(joined, i) for i in starts]
        except Exception:  # malformed or too deep: decode() says which payload, and why
            return super().decode_batch(payloads)
        ends = [e for _, e in parsed]
        values = [v for v, _ in parsed]
        if ends != [i + k for i, k in zip(starts, lengths, strict=True)]:
            return super().decode_batch(payloads)
        if all(type(v) is dict for v in values):
            return values, list(range(n)), []
        records: list[Record] = []
        owners: list[int] = []
        failed: list[tuple[int, str]] = []
        for i, value in enumerate(values):
            if type(value) is dict:
                records.append(value)
                owners.append(i)
                continue
            try:  # arrays, and whatever is not an object: the one-by-one way
                recs = self.decode(payloads[i])
            except Exception as exc:
                failed.append((i, _failure(self.name, exc)))
                continue
            records.extend(recs)
            owners.extend([i] * len(recs))
        return records, owners, failed


# json's scanner (C): parses one value at an offset and returns it with its end
_JSON_SCAN: Callable[[str, int], tuple[Any, int]] = cast(Any, json.JSONDecoder()).scan_once


def _joined_text(payloads: Sequence[Payload]) -> tuple[str, list[int]] | None:
    """The payloads as one text joined by spaces, and each payload's length in it.

    ``None`` when that text would not parse like the payloads one by one: mixed or other
    types, invalid UTF-8, or a newline anywhere (JSON lines are decoded line by line).
    """
    if not payloads:
        return None
    kinds = {type(p) for p in payloads}
    if kinds == {bytes}:
        raw = b" ".join(payloads)  # type: ignore[arg-type]
        if b"\n" in raw:
            return None
        try:
            joined = raw.decode()
        except UnicodeDecodeError:
            return None
        if len(joined) == len(raw):  # ASCII: characters are bytes
            return joined, [len(p) for p in payloads]
        texts = [p.decode() for p in payloads if isinstance(p, bytes)]
    elif kinds == {str}:
        texts = list(payloads)  # type: ignore[arg-type]
        joined = " ".join(texts)
        if "\n" in joined:
            return None
        return joined, [len(t) for t in texts]
    else:
        return None
    return " ".join(texts), [len(t) for t in texts]


class MsgpackDecoder(Decoder):
    """MessagePack maps (or arrays of maps)."""

    name = "msgpack"

    def __init__(self) -> None:
        self._msgpack = require("msgpack", "msgpack")

    def decode(self, payload: Payload) -> list[Record]:
        data = payload.encode() if isinstance(payload, str) else payload
        try:
            value = self._msgpack.unpackb(data, raw=False, timestamp=3)
        except Exception as exc:
            msg = f"not MessagePack: {type(exc).__name__}: {exc}"
            raise ValueError(msg) from exc
        return _records(value, "a MessagePack payload")

    def decode_batch(self, payloads: Sequence[Payload]) -> Decoded:
        """All payloads unpacked in one pass.

        Any failure or non-map falls back to :meth:`decode` one by one (same result).
        """
        unpack = self._msgpack.unpackb
        if payloads and all(type(p) is bytes for p in payloads):
            try:
                values = [unpack(p, raw=False, timestamp=3) for p in payloads]
            except Exception:  # decode() says why, payload by payload
                values = None
            if values is not None and all(type(v) is dict for v in values):
                return values, list(range(len(values))), []
        return super().decode_batch(payloads)


class CsvDecoder(Decoder):
    """CSV lines without a header, in the example's column order (or ``columns``)."""

    name = "csv"

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)

    def decode(self, payload: Payload) -> list[Record]:
        text = payload.decode() if isinstance(payload, bytes | bytearray) else payload
        out = []
        for row in csv.reader(io.StringIO(text)):
            if not row:
                continue
            if len(row) != len(self.columns):
                msg = f"CSV line has {len(row)} fields; expected {len(self.columns)}"
                raise ValueError(msg)
            out.append(dict(zip(self.columns, row, strict=True)))
        return out


class FunctionDecoder(Decoder):
    """A user function: payload -> dict or list of dicts."""

    def __init__(self, func: Callable[[Payload], Any]) -> None:
        self.func = func
        self.name = getattr(func, "__name__", "function")

    def decode(self, payload: Payload) -> list[Record]:
        return _records(self.func(payload), f"the result of {self.name}()")


def make_decoder(decoder: str | Decoder | Callable[[Payload], Any],
                 example: pd.DataFrame) -> Decoder:
    """``"json"``, ``"msgpack"``, ``"csv"``, a :class:`Decoder` or a function.

    Examples
    --------
    >>> import pandas as pd
    >>> ex = pd.DataFrame({"a": pd.Series([], dtype=float)})
    >>> make_decoder("json", ex).decode(b'{"a": 1}')
    [{'a': 1}]
    >>> make_decoder("csv", ex).decode("2.5")
    [{'a': '2.5'}]
    """
    if isinstance(decoder, Decoder):
        return decoder
    if callable(decoder):
        return FunctionDecoder(decoder)
    if decoder == "json":
        return JsonDecoder()
    if decoder == "msgpack":
        return MsgpackDecoder()
    if decoder == "csv":
        return CsvDecoder([str(c) for c in example.columns])
    msg = f"decoder must be 'json', 'msgpack', 'csv' or a function; got {decoder!r}"
    raise ConfigError(msg)


# What datetime64[ns] holds; pandas parses times beyond it (microseconds), rtnb keeps ns.
_TIME_MIN, _TIME_MAX = pd.Timestamp.min, pd.Timestamp.max
TIME_RANGE = f"{_TIME_MIN:%Y-%m-%d} .. {_TIME_MAX:%Y-%m-%d}"
_UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def _outside_ns(times: pd.Series) -> np.ndarray[Any, Any]:
    """Where a parsed (naive) time is outside what ``datetime64[ns]`` holds."""
    return ((times < _TIME_MIN) | (times > _TIME_MAX)).to_numpy()


def _to_time(values: pd.Series,
             time_unit: TimeUnit) -> tuple[pd.Series, np.ndarray[Any, Any]]:
    """Times as ``datetime64[ns]`` (NaT where not a time), and where a time was out of range.

    Numbers are epoch ``time_unit``; other values are parsed as ISO 8601. A time that is
    one but does not fit in ``datetime64[ns]`` (``"9999-12-31"``, ``2**40`` seconds) is NaT
    with ``True`` in the mask.
    """
    numeric, huge = _to_number(values)
    as_number = numeric.notna() | huge
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    outside = huge.copy()
    if as_number.any():
        numbers = numeric[as_number]
        floats = numbers.to_numpy(dtype=float, na_value=np.nan)
        scale = _UNIT_NS[time_unit]
        beyond = np.isfinite(floats) & ((floats < _TIME_MIN.value / scale) |
                                        (floats > _TIME_MAX.value / scale))
        parsed = pd.Series(pd.to_datetime(numbers.where(~beyond), unit=time_unit,
                                          errors="coerce"), index=numbers.index)
        beyond = beyond | _outside_ns(parsed)
        out[as_number] = parsed.where(~beyond).astype("datetime64[ns]")
        outside[np.flatnonzero(as_number.to_numpy())] |= beyond
    rest = values.notna() & ~as_number
    if rest.any():
        parsed = pd.to_datetime(pd.Series(values[rest].astype(str)), format="ISO8601",
                                errors="coerce", utc=True).dt.tz_localize(None)
        beyond = _outside_ns(parsed)
        out[rest] = parsed.where(~beyond).astype("datetime64[ns]")
        outside[np.flatnonzero(rest.to_numpy())] |= beyond
    return out, outside


def _to_number(values: pd.Series) -> tuple[pd.Series, np.ndarray[Any, Any]]:
    """``pd.to_numeric(errors="coerce")`` as float or int, and where a value overflowed.

    An integer too large for a float (JSON allows any) makes ``pd.to_numeric`` raise; such
    values come back as NaN with ``True`` in the mask, every other value as pandas gives it.
    """
    try:
        return pd.to_numeric(values, errors="coerce"), np.zeros(len(values), dtype=bool)
    except OverflowError:
        pass
    huge = np.array([isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2 ** 1023
                     for v in values], dtype=bool)
    rest = values.where(~huge, None)
    return pd.to_numeric(rest, errors="coerce").astype(float), huge


def _exact_int(value: Any) -> int | None:
    """The integer a number (or a numeric string) stands for, without a float's rounding.

    ``None`` for an infinity.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    elif isinstance(value, int | np.integer):
        return int(value)
    number = float(value)
    return int(number) if math.isfinite(number) else None


_ABSENT = object()  # a field a record does not have
_ISO_HEADS = re.compile(r"(?:[0-9]{4}-)*")  # "YYYY-" x n: never a number


def _fast_column(values: list[Any], dtype: Any, time_unit: TimeUnit) -> pd.Series | None:
    """One column of clean values converted to ``dtype`` without a per-row Python step.

    ``None`` when the column needs the general path (other types, anything bad).
    """
    kinds = set(map(type, values))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if kinds == {str}:
            # to_numeric would try every string first; "YYYY-..." can't be a number
            heads = "".join([v[:5] for v in values])
            if len(heads) != 5 * len(values) or not _ISO_HEADS.fullmatch(heads):
                return None
            parsed = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601",
                                    errors="coerce", utc=True).dt.tz_localize(None)
        elif kinds and kinds <= {int, float}:
            numbers = np.array(values)
            if numbers.dtype.kind not in "if" or (numbers.dtype.kind == "f"
                                                  and np.isnan(numbers).any()):
                return None
            parsed = pd.Series(pd.to_datetime(numbers, unit=time_unit, errors="coerce"))
        else:
            return None
        # NaT, or a time beyond datetime64[ns]: the general path names the values
        if parsed.isna().any() or _outside_ns(parsed).any():
            return None
        return parsed.astype("datetime64[ns]").astype(dtype)
    if pd.api.types.is_bool_dtype(dtype):
        return pd.Series(np.array(values, dtype=bool)).astype(dtype) if kinds == {bool} \
            else None
    if pd.api.types.is_integer_dtype(dtype):
        if kinds != {int}:
            return None
        try:
            ints = np.array(values, dtype=np.int64)
        except OverflowError:
            return None
        limits = np.iinfo(dtype)
        if len(ints) and (ints.min() < limits.min or ints.max() > limits.max):
            return None  # the general path names the values out of range
        return pd.Series(ints).astype(dtype)
    if pd.api.types.is_float_dtype(dtype):
        if not kinds or not kinds <= {int, float, type(None)}:
            return None
        try:
            floats = np.array(values, dtype=np.float64)
        except OverflowError:
            return None
        if not np.isfinite(floats).all() and (
                np.isinf(floats).any() or np.isnan(floats).sum() != values.count(None)):
            return None  # a NaN or an infinity that arrived as a value: the general path
        return pd.Series(floats).astype(dtype)
    if kinds == {str}:
        return pd.Series(values, dtype=object).astype(dtype)
    return None


def coerce(records: list[Record], example: pd.DataFrame, *,
           time_unit: TimeUnit = "s") -> tuple[pd.DataFrame, np.ndarray[Any, Any], list[str]]:
    """Build the example's columns from decoded records; say which rows do not fit and why.

    Numbers arriving as strings are converted; a value that cannot be converted, a missing
    value in an integer or boolean column, or a missing field, makes its row bad. Datetime
    columns accept ISO 8601 strings and numbers (epoch ``time_unit``) within what
    ``datetime64[ns]`` holds (1677-09-21 .. 2262-04-11); a missing time is left to the frame
    (its rows go to the dead letters there). In float columns ``None`` or no field is a
    missing value (NaN), while a NaN or an infinity that arrived as the value (JSON's
    ``NaN``, ``Infinity``, ``1e400``) is not a measurement: its row is bad. Returns the
    coerced frame of the good rows, the boolean mask of bad rows (over ``records``) and the
    reason for each bad row.

    Examples
    --------
    >>> import pandas as pd
    >>> ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]"),
    ...                    "n": pd.Series([], dtype="int64")})
    >>> good, bad, reasons = coerce([{"t": "2026-01-01T00:00:00Z", "n": "3"},
    ...                              {"t": 0, "n": "x"}], ex)
    >>> good
               t  n
    0 2026-01-01  3
    >>> bad.tolist(), reasons
    ([False, True], ["column 'n' (int64): 'x' is not a number"])
    """
    n = len(records)
    if n:
        columns: dict[str, pd.Series] = {}
        for col, dtype in example.dtypes.items():
            name = str(col)
            column = _fast_column([r.get(name, _ABSENT) for r in records], dtype, time_unit)
            if column is None:
                break
            columns[name] = column
        else:  # every column clean and every row good
            return pd.DataFrame(columns), np.zeros(n, dtype=bool), []
    return _coerce_general(records, example, time_unit)


def _coerce_general(records: list[Record], example: pd.DataFrame,
                    time_unit: TimeUnit) -> tuple[pd.DataFrame, np.ndarray[Any, Any], list[str]]:
    """:func:`coerce` for any records: row by row where needed, with the reasons."""
    n = len(records)
    raw = pd.DataFrame.from_records(records, columns=list(example.columns)) if n else \
        pd.DataFrame(columns=list(example.columns))
    raw.index = pd.RangeIndex(n)
    bad = np.zeros(n, dtype=bool)
    why: dict[int, str] = {}
    out: dict[str, Any] = {}

    def mark(mask: Any, col: str, dtype: Any, problem: str) -> None:
        idx = np.flatnonzero(np.asarray(mask, dtype=bool) & ~bad)
        for i in idx:
            value = records[int(i)].get(col)  # as it arrived, not as pandas inferred it
            if isinstance(value, np.generic):  # the reason shows 2.5, not np.float64(2.5)
                value = value.item()
            text = repr(value)
            if len(text) > 60:
                text = f"{text[:40]}...({len(text)} characters)"
            why[int(i)] = (f"column {col!r} ({dtype}): missing" if problem == "missing" else
                           f"column {col!r} ({dtype}): {text} {problem}")
        bad[idx] = True

    present = {c for r in records for c in r} if n else set()
    for col, dtype in example.dtypes.items():
        name = str(col)
        values = raw[name]
        if name not in present:
            values = pd.Series([None] * n, index=raw.index, dtype=object)
        missing = values.isna().to_numpy()
        if pd.api.types.is_datetime64_any_dtype(dtype):
            conv, outside = _to_time(values, time_unit)
            mark(outside, name, dtype, f"is out of range for datetime64[ns] ({TIME_RANGE})")
            mark(conv.isna().to_numpy() & ~missing, name, dtype, "is not a time")
            out[name] = conv.astype(dtype)
        elif pd.api.types.is_bool_dtype(dtype):
            # True == 1 and False == 0 as dict keys, so the booleans cover the ints 1 and 0
            mapping = {True: True, False: False, "true": True, "false": False, "True": True,
                       "False": False, "1": True, "0": False}
            conv = values.map(lambda v, m=mapping: m.get(v) if isinstance(v, bool | int | str)
                              else None)
            mark(missing, name, dtype, "missing")
            mark(conv.isna().to_numpy(), name, dtype, "is not a boolean")
            out[name] = conv
        elif pd.api.types.is_integer_dtype(dtype):
            conv, huge = _to_number(values)
            mark(missing, name, dtype, "missing")
            limits = np.iinfo(dtype)
            as_float = conv.fillna(0).to_numpy(dtype=float)
            if conv.dtype.kind in "iu":
                outside = (conv.to_numpy() < limits.min) | (conv.to_numpy() > limits.max)
            else:  # beyond 2**53 a float is not the integer that arrived: take it exactly
                outside = (as_float < limits.min) | (as_float > limits.max)
                big = np.flatnonzero(np.abs(as_float) >= 2 ** 53)
                if len(big):
                    conv = conv.astype(object)
                    for i in big.tolist():
                        exact = _exact_int(values.iloc[i])
                        conv.iloc[i] = exact
                        outside[i] = exact is None or not limits.min <= exact <= limits.max
            mark(huge | outside, name, dtype, f"is out of range for {dtype}")
            mark(conv.isna().to_numpy(), name, dtype, "is not a number")
            finite = np.where(np.isfinite(as_float), as_float, 0.0)  # infinities: above
            mark(conv.notna().to_numpy() & (np.mod(finite, 1) != 0), name, dtype,
                 "is not an integer")
            out[name] = conv
        elif pd.api.types.is_float_dtype(dtype):
            conv, huge = _to_number(values)
            mark(huge, name, dtype, f"is out of range for {dtype}")
            mark(conv.isna().to_numpy() & ~missing, name, dtype, "is not a number")
            # None (or no field) is a missing value; a NaN or an infinity that arrived (JSON's
            # NaN, Infinity, 1e400; "inf") is not a measurement
            floats = conv.to_numpy(dtype=float, na_value=np.nan)
            nonfinite = np.isinf(floats)
            for i in np.flatnonzero(np.isnan(floats) & missing).tolist():
                value = records[i].get(name)
                nonfinite[i] = isinstance(value, float | np.floating) and math.isnan(value)
            mark(nonfinite, name, dtype, "is not a finite number")
            out[name] = conv
        else:
            out[name] = values.map(lambda v: v if v is None or isinstance(v, str)
                                   or (isinstance(v, float) and np.isnan(v)) else str(v))
    good = ~bad
    frame = pd.DataFrame({c: pd.Series(v).iloc[np.flatnonzero(good)].reset_index(drop=True)
                          for c, v in out.items()})
    for col, dtype in example.dtypes.items():
        frame[col] = frame[col].astype(dtype)
    return frame, bad, [why[i] for i in sorted(why)]


# -- buffering and backpressure --------------------------------------------------------------
@dataclass
class SourceStats:
    """What a source counts; rates are derived by the status widget and metrics."""

    messages: int = 0
    events: int = 0
    bytes: int = 0
    batches: int = 0
    dead_letters: int = 0
    dropped: int = 0
    reconnects: int = 0
    acked: int = 0
    lag: int | None = None
    connected: bool = False
    last_error: str | None = None
    started: float = field(default_factory=time.monotonic)


class Buffer:
    """A bounded FIFO of ``(payload, position)`` between a reader and the batcher.

    ``policy`` says what a full buffer does to the reader: ``"block"`` makes ``put`` wait
    (the reader stops reading: right for replayable sources, nothing is lost);
    ``"drop_oldest"`` drops the oldest message; ``"sample"`` keeps a uniform sample of the
    messages that arrived while full (reservoir sampling). Dropped messages are counted.

    Examples
    --------
    >>> import asyncio
    >>> buf = Buffer(2, policy="drop_oldest")
    >>> for i in range(5):
    ...     asyncio.run(buf.put(str(i), i))
    >>> buf.take(10), buf.dropped
    ([('3', 3), ('4', 4)], 3)
    """

    def __init__(self, capacity: int, policy: Policy = "block") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            msg = f"buffer capacity must be a positive int; got {capacity!r}"
            raise ConfigError(msg)
        if policy not in ("block", "drop_oldest", "sample"):
            msg = f"backpressure policy must be 'block', 'drop_oldest' or 'sample'; got {policy!r}"
            raise ConfigError(msg)
        self.capacity = capacity
        self.policy = policy
        self._items: deque[tuple[Payload, Any]] = deque()
        self.dropped = 0
        self._overflow_seen = 0
        self._not_full: asyncio.Event | None = None
        self._not_empty: asyncio.Event | None = None
        self._rng = random.Random(0)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def fill(self) -> float:
        """How full the buffer is (0..1)."""
        return len(self._items) / self.capacity

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._not_full is None or self._not_empty is None:
            self._not_full, self._not_empty = asyncio.Event(), asyncio.Event()
            self._not_full.set()
        return self._not_full, self._not_empty

    async def put(self, payload: Payload, position: Any = None) -> None:
        """Add a message; wait, drop or sample when full, by policy."""
        not_full, not_empty = self._events()
        if len(self._items) >= self.capacity:
            if self.policy == "block":
                while len(self._items) >= self.capacity:
                    not_full.clear()
                    await not_full.wait()
            elif self.policy == "drop_oldest":
                self._items.popleft()
                self.dropped += 1
            else:
                self._overflow_seen += 1
                self.dropped += 1
                slot = self._rng.randrange(self.capacity + self._overflow_seen)
                if slot < self.capacity:
                    self._items[slot] = (payload, position)
                return
        else:
            self._overflow_seen = 0
        self._items.append((payload, position))
        not_empty.set()

    def offer(self, payload: Payload, position: Any = None) -> bool:
        """Add a message if there is room (``False``: full, :meth:`put` decides)."""
        items = self._items
        if len(items) >= self.capacity:
            return False
        self._overflow_seen = 0
        items.append((payload, position))
        if self._not_empty is not None and len(items) == 1:
            self._not_empty.set()
        return True

    def take(self, n: int) -> list[tuple[Payload, Any]]:
        """Up to ``n`` messages, oldest first."""
        k = min(n, len(self._items))
        out = [self._items.popleft() for _ in range(k)]
        not_full, not_empty = self._events()
        if len(self._items) < self.capacity:
            not_full.set()
        if not self._items:
            not_empty.clear()
        return out

    async def wait_not_empty(self, timeout: float | None = None) -> bool:
        """Wait until something is buffered (``False`` on timeout)."""
        _, not_empty = self._events()
        if self._items:
            return True
        try:
            await asyncio.wait_for(not_empty.wait(), timeout)
        except TimeoutError:
            return False
        return True


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


# -- the source ------------------------------------------------------------------------------
class BufferedSource:
    """Base class of the message sources: a reader task, a buffer, a batcher, acks.

    Subclasses implement :meth:`_read` (connect, read, ``await self._put(payload, position)``
    for every message, raise on a lost connection) and, when the protocol has them,
    :meth:`_ack` (called with the positions of a batch once it was processed). Connection
    errors (``OSError``, and the protocol's own errors listed in ``retry_on``) reconnect with
    :class:`Backoff`; other errors stop the source and are re-raised by ``frame.wait()``.

    Both tasks are supervised. Whatever goes wrong with one message (it does not decode,
    for any reason, or does not fit the schema) makes it a dead letter with the reason and
    the raw payload, and the rest of its batch goes on; a batch that fails as a whole is
    processed again one message at a time, so only the messages at fault are dead letters.
    Any other error of the reader or of the batcher stops the run and is re-raised: the
    graph's state becomes ``failed``, with the error logged and in ``graph.error``.
    """

    name: str = "source"
    replayable = False
    retry_on: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)

    def resume_kind(self) -> str:
        """How a run from a checkpoint resumes this source (see :mod:`rtnb.state`).

        ``"replay"`` / ``"recorded"``: at the source's own saved position; ``"broker"``: the
        broker keeps the acknowledged consumer position; ``"live"``: nothing to resume, the
        feed goes on from what it sends now. Raises :class:`~rtnb.CheckpointError` for a
        source whose restored state would be wrong (it would re-read data it already
        counted). This default is for sources that only deliver what is sent from now on.
        """
        return "live"

    def __init__(self, *, name: str, decoder: str | Decoder | Callable[[Payload], Any],
                 example: pd.DataFrame, max_batch: int = 10_000,
                 max_delay: DurationLike = "50ms", buffer: int = 100_000,
                 policy: Policy | None = None, time_unit: TimeUnit = "s",
                 backoff: Backoff | None = None, max_reconnects: int | None = None,
                 max_events: int | None = None) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch <= 0:
            msg = f"`max_batch` must be a positive int; got {max_batch!r}"
            raise ConfigError(msg)
        self.name = name
        self.example = example
        self.decoder = make_decoder(decoder, example)
        self.max_batch = max_batch
        self.max_delay_s = to_ns(max_delay, name="max_delay") / 1e9
        if policy is None:
            policy = "block"
        if self.replayable and policy != "block":
            msg = (f"{name}: a replayable source pauses reading when downstream is slow; "
                   f"policy {policy!r} would lose data it could keep (use 'block')")
            raise ConfigError(msg)
        self.buffer = Buffer(buffer, policy)
        self.time_unit = time_unit
        self.backoff = backoff or Backoff()
        self.max_reconnects = max_reconnects
        if max_events is not None and (isinstance(max_events, bool) or
                                       not isinstance(max_events, int) or max_events < 0):
            msg = f"`max_events` must be a non-negative int or None; got {max_events!r}"
            raise ConfigError(msg)
        self.max_events = max_events
        self.stats = SourceStats()
        self._enough = asyncio.Event()
        self._draining = False
        self._wake = asyncio.Event()  # the batcher: a batch is full, or the reader drained
        self._cut = False  # the reader drained: cut the batch now

    # -- to implement ----------------------------------------------------------------------
    async def _read(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    async def _ack(self, positions: list[Any]) -> None:
        """Acknowledge processed messages (protocols with acks)."""

    async def _close(self) -> None:
        """Release connections (called once at the end)."""

    # -- shared ----------------------------------------------------------------------------
    def _offer(self, payload: Payload, position: Any = None) -> bool:
        """:meth:`_put` without waiting: ``False`` (nothing done) when the buffer is full.

        Readers call it per message on their hot path (no coroutine per message) and
        ``await self._put(...)`` only when it returns ``False``.
        """
        buffer = self.buffer
        if not buffer.offer(payload, position):
            return False
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(payload)
        if len(buffer) >= self.max_batch:
            self._wake.set()
        return True

    async def _put(self, payload: Payload, position: Any = None) -> None:
        if self._offer(payload, position):  # the common case: room, nothing to wait for
            return
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(payload)
        buffer = self.buffer
        await buffer.put(payload, position)
        stats.dropped = buffer.dropped
        if len(buffer) >= self.max_batch:
            self._wake.set()

    async def _put_many(self, messages: Sequence[tuple[Payload, Any]]) -> None:
        """:meth:`_put` for each ``(payload, position)``."""
        for payload, position in messages:
            await self._put(payload, position)

    def _drained(self) -> None:
        """The reader has everything the broker will send for now.

        Call it when the broker has no more messages at the moment (a short read, the end
        of a file) or the delivery window is used up (prefetch, receive maximum, unacked
        limit: the broker waits for acks, which come only after the batch). The batcher
        then cuts the batch at once instead of waiting ``max_delay`` for messages that
        cannot come.
        """
        if len(self.buffer):
            self._cut = True
            self._wake.set()

    async def _reader(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._read(stop)
                return
            except asyncio.CancelledError:
                raise
            except self.retry_on as exc:
                self.stats.connected = False
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if self.max_reconnects is not None and \
                        self.stats.reconnects >= self.max_reconnects:
                    raise
                self.stats.reconnects += 1
                delay = self.backoff.next()
                log.warning("source %r lost its connection (%s); reconnecting in %.2f s",
                            self.name, self.stats.last_error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _finish(self) -> None:
        """After a run's last batch, with the reader stopped: settle what is left over."""

    def _connected(self) -> None:
        """Call after a successful (re)connection."""
        self.stats.connected = True
        self.backoff.reset()

    def _convert(self, payloads: Sequence[Payload]) -> tuple[pd.DataFrame, list[int],
                                                              list[tuple[int, str]]]:
        """Decode and coerce: the good rows, the payload of each row, ``(payload, reason)``."""
        records, owners, dead = self.decoder.decode_batch(payloads)
        good, bad, reasons = coerce(records, self.example, time_unit=self.time_unit)
        if not reasons:
            return good, owners, dead
        dead.extend(zip([owners[j] for j in np.flatnonzero(bad)], reasons, strict=True))
        return good, [owners[j] for j in np.flatnonzero(~bad)], dead

    def _convert_each(self, payloads: Sequence[Payload],
                      error: Exception) -> tuple[pd.DataFrame, list[int], list[tuple[int, str]]]:
        """:meth:`_convert` one payload at a time, after it failed for the whole batch.

        A payload it still fails for is a dead letter with the error; the others go on.
        """
        log.warning("source %r: a batch of %d messages failed (%s: %s); processing it one "
                    "message at a time", self.name, len(payloads), type(error).__name__, error)
        frames: list[pd.DataFrame] = []
        owners: list[int] = []
        dead: list[tuple[int, str]] = []
        for i, payload in enumerate(payloads):
            try:
                good, _, failed = self._convert([payload])
            except Exception as exc:  # this message's own problem: its dead letter says what
                dead.append((i, f"{self.name} could not process the message: "
                                f"{type(exc).__name__}: {exc}"))
                continue
            dead.extend((i, reason) for _, reason in failed)
            if len(good):
                frames.append(good)
                owners.extend([i] * len(good))
        good = pd.concat(frames, ignore_index=True) if frames else \
            coerce([], self.example, time_unit=self.time_unit)[0]
        return good, owners, dead

    async def _process(self, frame: StreamingFrame, items: list[tuple[Payload, Any]]) -> None:
        payloads = [payload for payload, _ in items]
        try:
            good, good_owner, dead = self._convert(payloads)
        except Exception as exc:  # which message(s): found out one by one
            good, good_owner, dead = self._convert_each(payloads, exc)
        if dead:
            dead.sort(key=lambda d: d[0])  # in arrival order
            self.stats.dead_letters += len(dead)
            frame.dead_letter_messages([items[i][0] for i, _ in dead], [r for _, r in dead],
                                   [items[i][1] for i, _ in dead], node=self.name)
        done = len(items)  # messages fully handled (emitted or dead-lettered): acknowledged
        if self.max_events is not None and len(good) > self.max_events - self.stats.events:
            keep = max(0, self.max_events - self.stats.events)
            # the messages whose rows were cut off stay unacknowledged (read again next run)
            done = good_owner[keep] if keep < len(good_owner) else len(items)
            good = good.iloc[:keep]
        if len(good):
            await frame.graph.wait_running()
            frame.emit(good)
            self.stats.events += len(good)
        self.stats.batches += 1
        await self._ack([p for _, p in items[:done]])
        self.stats.acked += done
        # Only now: the run then stops the reader, whose connection the acks may travel on.
        if self.max_events is not None and self.stats.events >= self.max_events:
            self._enough.set()

    async def _batcher(self, frame: StreamingFrame, reader: asyncio.Task[None]) -> None:
        buf = self.buffer
        drain_left: int | None = None
        while not self._enough.is_set():
            if self._draining:  # stopping: what is buffered now (not what keeps coming)
                drain_left = len(buf) if drain_left is None else drain_left
                if drain_left > 0:
                    items = buf.take(min(drain_left, self.max_batch))
                    drain_left -= len(items)
                    await self._process(frame, items)
                    continue
                return
            if not await buf.wait_not_empty(timeout=0.2):
                if reader.done():
                    return
                continue
            # Cut at max_batch, at max_delay, or as soon as the reader says the broker has
            # nothing more for now (no waiting for messages that cannot come).
            deadline = time.monotonic() + self.max_delay_s
            while len(buf) < self.max_batch and not self._cut and not reader.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, 0.005))
            self._cut = False
            await self._process(frame, buf.take(self.max_batch))

    async def run(self, frame: StreamingFrame, stop: asyncio.Event) -> None:
        """Read until ``stop`` (or the end of a finite source); flush what is buffered."""
        self.stats.started = time.monotonic()
        self._enough = asyncio.Event()
        self._draining = False
        if self.max_events == 0:
            return
        # The readers' loops watch `halt`: set by the caller's stop or by max_events, so a
        # reader whose client swallows a cancellation (redis-py's wait_for on Python 3.11)
        # still ends after its current read.
        halt = asyncio.Event()
        self._wake, self._cut = asyncio.Event(), False
        reader = asyncio.ensure_future(self._reader(halt))
        reader.add_done_callback(lambda _: self._wake.set())
        batcher = asyncio.ensure_future(self._batcher(frame, reader))
        stopper = asyncio.ensure_future(stop.wait())
        enough = asyncio.ensure_future(self._enough.wait())
        try:
            # Both tasks are watched: whichever fails first stops the run with its error.
            await asyncio.wait({reader, batcher, stopper, enough},
                               return_when=asyncio.FIRST_COMPLETED)
            halt.set()
            self._wake.set()
            if batcher.done():  # it only ends on its own when the reader did, or on a bug
                await self._stop_reader(reader)
                batcher.result()  # raises the batcher's error
            # Process what is buffered while the reader's connection is still open (acks
            # travel on it), then stop the reader.
            self._draining = True
            await batcher
            await self._stop_reader(reader)
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
            await self._finish()
        finally:
            for task in (reader, batcher, stopper, enough):
                task.cancel()
            await self._close()

    @staticmethod
    async def _stop_reader(reader: asyncio.Task[None]) -> None:
        """Cancel the reader until it is done (a client may swallow a cancellation)."""
        for _ in range(50):
            if reader.done():
                return
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 0.2)

    def event_clock(self) -> pd.Timestamp:
        """Live sources: event time now is the wall clock (UTC, naive)."""
        return pd.Timestamp.now("UTC").tz_localize(None)
