"""Decoders: one payload (or a batch of them) into records; a payload that fails is reported.

A decoder never raises for a bad payload in :meth:`Decoder.decode_batch`: whatever
:meth:`Decoder.decode` raises for one payload makes it a ``(index, reason)`` failure, which
the source sends to the dead letters with the raw payload.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, cast

import pandas as pd

from rtnb import _formats
from rtnb._net import require
from rtnb.errors import ConfigError

__all__ = ["CsvDecoder", "Decoder", "FunctionDecoder", "JsonDecoder", "MsgpackDecoder",
           "Payload", "Record", "make_decoder"]

Payload: TypeAlias = bytes | str
Record: TypeAlias = dict[str, Any]
#: A batch's records (dicts, or :class:`~rtnb._formats.Columns` from a binary format), the
#: payload index of each record, and ``(payload index, reason)`` of the payloads that failed.
Decoded: TypeAlias = tuple[_formats.Records, list[int], list[tuple[int, str]]]
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
    r"""JSON objects (or arrays of objects); several JSON lines in one payload are fine.

    As most JSON parsers do, a leading UTF-8 byte order mark is ignored (RFC 8259 8.1 lets
    a parser ignore it; some producers write one), and a key given twice in one object
    takes its last value. A payload must be UTF-8.

    Examples
    --------
    >>> JsonDecoder().decode(b'\xef\xbb\xbf{"a": 1, "a": 2}')
    [{'a': 2}]
    """

    name = "json"

    def decode(self, payload: Payload) -> list[Record]:
        text = payload.decode() if isinstance(payload, bytes | bytearray) else payload
        text = text.removeprefix("\ufeff").strip()
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
    """CSV lines without a header, in the example's column order (or ``columns``).

    An empty field is a missing value, as in ``pandas.read_csv`` (``None``: NaN in a float
    or string column; a missing time or integer makes the row a dead letter). A line with
    another number of fields is a dead letter.

    Examples
    --------
    >>> CsvDecoder(["t", "cpu"]).decode("2026-01-01,")
    [{'t': '2026-01-01', 'cpu': None}]
    """

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
            out.append({c: v if v else None for c, v in zip(self.columns, row, strict=True)})
        return out


class FunctionDecoder(Decoder):
    """A user function: payload -> dict or list of dicts."""

    def __init__(self, func: Callable[[Payload], Any]) -> None:
        self.func = func
        self.name = getattr(func, "__name__", "function")

    def decode(self, payload: Payload) -> list[Record]:
        return _records(self.func(payload), f"the result of {self.name}()")


def make_decoder(decoder: str | Decoder | _formats.Format | Callable[[Payload], Any],
                 example: pd.DataFrame) -> Decoder | _formats.Format:
    """``"json"``, ``"msgpack"``, ``"csv"``, ``"arrow"``, ``"avro"``, a decoder or a function.

    A binary format (:mod:`rtnb.formats`) is checked against ``example`` here: a schema
    that cannot hold the example's columns is a :class:`~rtnb.ConfigError` when the source
    is built. ``"arrow"`` reads Arrow IPC streams or files; ``"avro"`` Avro object
    containers (the schema travels with the data); schemaless Avro and Protobuf need
    their schema: ``rtnb.formats.avro(schema)``, ``rtnb.formats.protobuf(MessageClass)``.

    Examples
    --------
    >>> import pandas as pd
    >>> ex = pd.DataFrame({"a": pd.Series([], dtype=float)})
    >>> make_decoder("json", ex).decode(b'{"a": 1}')
    [{'a': 1}]
    >>> make_decoder("csv", ex).decode("2.5")
    [{'a': '2.5'}]
    >>> make_decoder("arrow", ex)
    <arrow format>
    """
    if isinstance(decoder, Decoder):
        return decoder
    if isinstance(decoder, _formats.Format):
        return decoder.bind(example)
    if callable(decoder):
        return FunctionDecoder(decoder)
    if decoder == "json":
        return JsonDecoder()
    if decoder == "msgpack":
        return MsgpackDecoder()
    if decoder == "csv":
        return CsvDecoder([str(c) for c in example.columns])
    if decoder == "arrow":
        return _formats.ArrowFormat().bind(example)
    if decoder == "avro":
        return _formats.AvroFormat().bind(example)
    msg = (f"decoder must be 'json', 'msgpack', 'csv', 'arrow', 'avro', a format of "
           f"rtnb.formats (protobuf(MessageClass), avro(schema)) or a function; "
           f"got {decoder!r}")
    raise ConfigError(msg)
