"""Binary record formats: Arrow IPC, Protobuf and Avro, each a decoder and an encoder.

The public face is :mod:`rtnb.formats`. A format object is given to a source as
``decoder=`` and to a broker sink as ``encoder=``: the same object reads what it writes. A
decoder returns the records of a batch of payloads as :class:`Columns` (one array per field,
no dict per record), which :func:`rtnb.sources._coerce.coerce` converts column by column;
a payload that does not decode is a ``(index, reason)`` failure, which the source sends to
the dead letters with the raw payload while the rest of the batch goes on.

This module is the bottom layer the sources and sinks share: it imports neither.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

from rtnb.errors import ConfigError, MissingExtraError

__all__ = ["ArrowFormat", "AvroFormat", "Columns", "Decoded", "Format", "ProtobufFormat",
           "Records", "failure", "records"]

Payload: TypeAlias = bytes | str
Record: TypeAlias = dict[str, Any]
TimeUnit: TypeAlias = Literal["s", "ms", "us", "ns"]
_UNITS = ("s", "ms", "us", "ns")
_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
#: The extra that installs the format libraries (pyarrow is a core dependency).
EXTRA = "formats"


def _require(module: str, package: str) -> Any:
    """Import a format's library or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(package, extra=EXTRA) from exc


def records(batch: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: times as ISO 8601 strings, missing values as ``None``.

    A zone-aware time is written in UTC with a ``Z``; a missing time (NaT) is ``None``.

    Examples
    --------
    >>> import pandas as pd
    >>> records(pd.DataFrame({"t": pd.to_datetime(["2026-01-01"]), "x": [float("nan")]}))
    [{'t': '2026-01-01T00:00:00.000000000', 'x': None}]
    >>> records(pd.DataFrame({"t": pd.to_datetime(["2026-01-01T01:00+01:00", None])}))
    [{'t': '2026-01-01T00:00:00.000000000Z'}, {'t': None}]
    """
    present = batch.notna()
    frame = batch.copy()
    for col, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.DatetimeTZDtype):  # the instant in UTC, marked Z
            naive = frame[col].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
            frame[col] = np.datetime_as_string(naive, unit="ns", timezone="UTC")
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            frame[col] = np.datetime_as_string(frame[col].to_numpy(), unit="ns")
    frame = frame.astype(object).where(present, None)
    out: list[dict[str, Any]] = frame.to_dict(orient="records")  # type: ignore[assignment]
    return out


class Columns:
    """Decoded records held as the columns of a DataFrame (a binary decoder's result).

    ``len()`` is the number of records; :meth:`records` gives them as dicts for the
    row-by-row path of coercion, which names every value that does not fit.

    Examples
    --------
    >>> import pandas as pd
    >>> cols = Columns(pd.DataFrame({"t": pd.to_datetime([0], unit="s"), "x": [None]}))
    >>> len(cols), cols.records()
    (1, [{'t': '1970-01-01T00:00:00.000000000', 'x': None}])
    """

    __slots__ = ("frame",)

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"<Columns {list(self.frame.columns)!r} x {len(self.frame)} records>"

    def records(self) -> list[Record]:
        """The records as dicts: times as ISO 8601 text (UTC), missing values ``None``."""
        frame = self.frame.copy()
        for col, dtype in frame.dtypes.items():
            if isinstance(dtype, pd.DatetimeTZDtype):
                frame[col] = frame[col].dt.tz_convert("UTC").dt.tz_localize(None)
            if pd.api.types.is_datetime64_any_dtype(frame[col].dtype):
                text = np.datetime_as_string(frame[col].to_numpy(), unit="ns")
                frame[col] = pd.Series(text, dtype=object).where(frame[col].notna().to_numpy(),
                                                                 None)
            elif isinstance(dtype, pd.CategoricalDtype):
                frame[col] = frame[col].astype(object)
        return records(frame)


Records: TypeAlias = list[Record] | Columns
Decoded: TypeAlias = tuple[Records, list[int], list[tuple[int, str]]]


def failure(decoder: str, exc: BaseException) -> str:
    """The dead-letter reason for a payload ``decoder`` could not decode.

    The error's own words for a malformed payload; with its type for anything else.

    Examples
    --------
    >>> failure("avro", EOFError("no more bytes"))
    'avro decode failed: EOFError: no more bytes'
    """
    if type(exc) in (ValueError, UnicodeDecodeError, TypeError):
        return f"{decoder} decode failed: {exc}"
    return f"{decoder} decode failed: {type(exc).__name__}: {exc}"


def _head(payload: Payload) -> str:
    """How a payload that did not decode starts: its length and first bytes."""
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    more = "..." if len(data) > 16 else ""
    return f"{len(data)} bytes {data[:16]!r}{more}"


def _why(exc: BaseException) -> str:
    """What went wrong reading a payload, in words (an EOF is a truncated payload)."""
    if isinstance(exc, EOFError | StopIteration):
        return f"truncated: it ends before the record does ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _as_bytes(payload: Payload) -> bytes:
    if isinstance(payload, str):
        msg = (f"got text ({len(payload)} characters {payload[:16]!r}), not bytes: a binary "
               "format needs the raw message")
        raise TypeError(msg)
    return payload


class Format:
    """A record format: decodes payloads into records, encodes a frame's rows into payloads.

    Subclasses set ``name`` and implement ``_decode_one`` (one payload into a DataFrame of
    its records) and :meth:`encode`. ``per_row`` says whether :meth:`encode`
    makes one message per row (``True``) or one per batch.
    """

    name = "format"
    #: The MIME type of a message (AMQP ``content_type``).
    content_type = "application/octet-stream"
    #: One message per row (True), or one per batch (Arrow, an Avro object container).
    per_row = True

    def _load(self) -> None:
        """Import the format's library into attributes (again after unpickling)."""

    def __getstate__(self) -> dict[str, Any]:
        # the libraries are imported again where the format is unpickled (a Dask worker)
        return {k: v for k, v in self.__dict__.items() if k not in self._libraries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load()

    #: The attributes :meth:`_load` sets (not pickled).
    _libraries: tuple[str, ...] = ()

    def bind(self, example: pd.DataFrame) -> Format:
        """Return the format checked against the frame's ``example`` (as a source or sink does).

        Raises :class:`~rtnb.ConfigError` when the schema cannot hold the example's columns.
        """
        return self

    def _decode_one(self, payload: Payload) -> pd.DataFrame:
        raise NotImplementedError

    def decode(self, payload: Payload) -> list[Record]:
        """The records of one payload as dicts (raises ``ValueError`` if malformed)."""
        return Columns(self._decode_one(payload)).records()

    def decode_batch(self, payloads: Sequence[Payload]) -> Decoded:
        """``(columns, owners, failed)``: the records of all payloads, as for every decoder.

        ``owners[j]`` is the index of the payload record ``j`` came from; ``failed`` the
        ``(index, reason)`` of each payload that did not decode.
        """
        frames: list[pd.DataFrame] = []
        counts: list[int] = []
        kept: list[int] = []
        failed: list[tuple[int, str]] = []
        for i, payload in enumerate(payloads):
            try:
                frame = self._decode_one(payload)
            except Exception as exc:  # this payload's problem: its dead letter says which
                failed.append((i, failure(self.name, exc)))
                continue
            frames.append(frame)
            counts.append(len(frame))
            kept.append(i)
        return _joined(frames), np.repeat(kept, counts).tolist(), failed

    def encode(self, batch: pd.DataFrame) -> list[bytes]:
        """The messages of ``batch``: one per row, or one for the batch (``per_row``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.name} format>"


def _joined(frames: list[pd.DataFrame]) -> Columns:
    if not frames:
        return Columns(pd.DataFrame())
    if len(frames) == 1:
        return Columns(frames[0])
    return Columns(pd.concat(frames, ignore_index=True))


# -- Arrow IPC ---------------------------------------------------------------------------------
_ARROW_FILE = b"ARROW1"


class ArrowFormat(Format):
    """Arrow IPC: each payload an IPC stream (or file) of record batches.

    Decoding reads every payload of a batch with ``pyarrow.ipc`` and converts the columns
    at once: no Python object per record. Encoding writes one IPC stream per batch (per key
    or partition where the sink splits by one).
    """

    name = "arrow"
    content_type = "application/vnd.apache.arrow.stream"
    per_row = False

    _libraries = ("_pa", "_ipc")

    def __init__(self) -> None:
        self._load()
        self.columns: list[str] | None = None

    def _load(self) -> None:
        self._pa = _require("pyarrow", "pyarrow")
        self._ipc = _require("pyarrow.ipc", "pyarrow")

    def bind(self, example: pd.DataFrame) -> ArrowFormat:
        bound = ArrowFormat()
        bound.columns = [str(c) for c in example.columns]
        return bound

    def _table(self, payload: Payload) -> Any:
        data = _as_bytes(payload)
        try:
            if data[:6] == _ARROW_FILE:
                return self._ipc.open_file(self._pa.BufferReader(data)).read_all()
            return self._ipc.open_stream(data).read_all()
        except Exception as exc:
            msg = f"not an Arrow IPC stream or file ({_head(data)}): {_why(exc)}"
            raise ValueError(msg) from exc

    def _checked(self, table: Any) -> Any:
        if self.columns is None:
            return table
        names = table.schema.names
        missing = [c for c in self.columns if c not in names]
        if missing:
            msg = (f"the Arrow schema has no column {', '.join(map(repr, missing))} of the "
                   f"example (it has {', '.join(map(repr, names))})")
            raise ValueError(msg)
        return table.select(self.columns)

    def _pandas(self, table: Any) -> pd.DataFrame:
        pa = self._pa

        def nullable(kind: Any) -> Any:  # ints and booleans with nulls stay exact
            if pa.types.is_integer(kind):
                return pd.api.types.pandas_dtype(str(kind).replace("int", "Int")
                                                 .replace("uInt", "UInt"))
            if pa.types.is_boolean(kind):
                return pd.BooleanDtype()
            return None

        frame: pd.DataFrame = table.to_pandas(types_mapper=nullable)
        return frame

    def _decode_one(self, payload: Payload) -> pd.DataFrame:
        return self._pandas(self._checked(self._table(payload)))

    def decode_batch(self, payloads: Sequence[Payload]) -> Decoded:
        tables: list[Any] = []
        counts: list[int] = []
        kept: list[int] = []
        failed: list[tuple[int, str]] = []
        for i, payload in enumerate(payloads):
            try:
                table = self._checked(self._table(payload))
            except Exception as exc:
                failed.append((i, failure(self.name, exc)))
                continue
            tables.append(table)
            counts.append(table.num_rows)
            kept.append(i)
        owners = np.repeat(kept, counts).tolist()
        if not tables:
            return Columns(pd.DataFrame()), owners, failed
        try:  # one conversion for the whole batch
            whole = self._pa.concat_tables(tables, promote_options="permissive")
        except Exception:  # schemas that do not unify: converted one by one
            return _joined([self._pandas(t) for t in tables]), owners, failed
        return Columns(self._pandas(whole)), owners, failed

    def encode(self, batch: pd.DataFrame) -> list[bytes]:
        pa = self._pa
        table = pa.Table.from_pandas(batch, preserve_index=False)
        sink = pa.BufferOutputStream()
        with self._ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return [sink.getvalue().to_pybytes()]


# -- the schema-typed formats (Protobuf, Avro) -------------------------------------------------
Kind: TypeAlias = Literal["int", "float", "bool", "str", "time", "epoch", "other"]


def _column(values: list[Any], kind: Kind, unit: TimeUnit) -> Any:
    """One decoded field of every record as an array (``None``: a missing value)."""
    if kind == "time":  # nanoseconds since the epoch, None when not set
        if None in values:
            return pd.array(values, dtype="Int64").astype("datetime64[ns]")
        return np.array(values, dtype="int64").view("datetime64[ns]")
    if kind == "epoch":  # an integer field holding times in ``unit``
        ints = pd.array(values, dtype="Int64") if None in values else \
            np.array(values, dtype="int64")
        return pd.to_datetime(ints, unit=unit)
    if kind == "int":
        return pd.array(values, dtype="Int64") if None in values else \
            np.array(values, dtype="int64")
    if kind == "float":
        return np.array(values, dtype="float64")
    if kind == "bool":
        return pd.array(values, dtype="boolean") if None in values else \
            np.array(values, dtype=bool)
    return np.array(values, dtype=object)


def _time_ints(values: pd.Series, unit: TimeUnit) -> list[int | None]:
    """A time column as integers since the epoch in ``unit`` (missing: ``None``)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    ns = values.astype("datetime64[ns]")
    ints = ns.to_numpy().view("int64") // _NS[unit]
    missing = ns.isna().to_numpy()
    out: list[int | None] = ints.tolist()
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            out[i] = None
    return out


def _plain(values: pd.Series) -> list[Any]:
    """A column as Python values, a missing value as ``None`` (NaN in a float column)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind == "f":
        out_floats: list[Any] = values.tolist()
        return out_floats
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    missing = values.isna().to_numpy()
    out: list[Any] = values.tolist()
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            out[i] = None
    return out


def _check_unit(time_unit: Any, where: str) -> None:
    if time_unit not in _UNITS:
        msg = f"{where}: `time_unit` must be one of {_UNITS}; got {time_unit!r}"
        raise ConfigError(msg)


# -- Protobuf ----------------------------------------------------------------------------------
_TIMESTAMP = "google.protobuf.Timestamp"


def _message_class(message: Any) -> Any:
    if isinstance(message, str):
        module, _, name = message.replace(":", ".").rpartition(".")
        try:
            message = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            msg = f"protobuf format: cannot import the message class {message!r}: {exc}"
            raise ConfigError(msg) from exc
    descriptor = getattr(message, "DESCRIPTOR", None)
    if not isinstance(message, type) or not hasattr(descriptor, "fields_by_name"):
        msg = (f"protobuf format needs a generated message class (e.g. metrics_pb2.Sample, or "
               f"'metrics_pb2.Sample'); got {message!r:.80}")
        raise ConfigError(msg)
    return message


class ProtobufFormat(Format):
    """Protocol Buffers: one message of ``message`` per row (the upb C backend parses).

    A field maps to the column of its name. Times: a ``google.protobuf.Timestamp`` field
    (exact to the nanosecond), or an integer field holding epoch ``time_unit``. A field with
    presence (proto3 ``optional``, a message) that is not set is a missing value; a plain
    proto3 scalar that is not set reads as its default (0, "", false), as protobuf defines.
    A payload carrying fields the message does not define (a message of another type) is a
    dead letter.
    """

    name = "protobuf"
    content_type = "application/x-protobuf"

    _libraries = ("_unknown",)

    def __init__(self, message: Any, *, time_unit: TimeUnit = "ns") -> None:
        self._load()
        self.message = _message_class(message)
        _check_unit(time_unit, f"protobuf format of {self.message.__name__}")
        self.time_unit: TimeUnit = time_unit
        self._fields: list[tuple[str, Kind, bool]] = []  # (name, kind, has presence)

    def _load(self) -> None:
        self._unknown = _require("google.protobuf.unknown_fields", "protobuf").UnknownFieldSet

    def __repr__(self) -> str:
        return f"<protobuf format {self.message.DESCRIPTOR.full_name}>"

    def bind(self, example: pd.DataFrame) -> ProtobufFormat:
        bound = ProtobufFormat(self.message, time_unit=self.time_unit)
        fields = self.message.DESCRIPTOR.fields_by_name
        where = f"protobuf format of {self.message.DESCRIPTOR.full_name}"
        for col, dtype in example.dtypes.items():
            name = str(col)
            field = fields.get(name)
            if field is None:
                msg = (f"{where}: the message has no field {name!r} for the example's column; "
                       f"its fields: {', '.join(fields)}")
                raise ConfigError(msg)
            if field.is_repeated:
                msg = f"{where}: field {name!r} is repeated; a column holds one value per row"
                raise ConfigError(msg)
            bound._fields.append((name, _pb_kind(field, dtype, where), field.has_presence))
        return bound

    def _decode_one(self, payload: Payload) -> pd.DataFrame:
        return self._frame([self._parse(payload)])

    def _parse(self, payload: Payload) -> Any:
        data = _as_bytes(payload)
        try:
            message = self.message.FromString(data)
        except Exception as exc:
            msg = f"not a {self.message.DESCRIPTOR.full_name} message ({_head(data)}): {_why(exc)}"
            raise ValueError(msg) from exc
        unknown = self._unknown(message)
        if len(unknown):
            numbers = sorted({f.field_number for f in unknown})
            msg = (f"not a {self.message.DESCRIPTOR.full_name} message ({_head(data)}): it "
                   f"carries field numbers {numbers} the message does not define "
                   "(another message type?)")
            raise ValueError(msg)
        return message

    def _columns(self) -> list[tuple[str, Kind, bool]]:
        """The fields read and written: the example's once bound, else every scalar one."""
        if not self._fields:
            where = f"protobuf format of {self.message.DESCRIPTOR.full_name}"
            for field in self.message.DESCRIPTOR.fields:
                try:
                    kind = _pb_kind(field, np.dtype(object), where)
                except ConfigError:
                    continue  # bytes, enums, messages: not a column
                if not field.is_repeated:
                    self._fields.append((field.name, kind, field.has_presence))
        return self._fields

    def _frame(self, messages: list[Any]) -> pd.DataFrame:
        columns: dict[str, Any] = {}
        for name, kind, presence in self._columns():
            if kind == "time":
                values = [m.__getattribute__(name) for m in messages]
                seconds = np.array([v.seconds for v in values], dtype="int64")
                nanos = np.array([v.nanos for v in values], dtype="int64")
                stamps: list[Any] = (seconds * 10**9 + nanos).tolist()
                if presence:
                    for i, m in enumerate(messages):
                        if not m.HasField(name):
                            stamps[i] = None
                columns[name] = _column(stamps, kind, self.time_unit)
                continue
            got = [m.__getattribute__(name) for m in messages]
            if presence:
                got = [v if m.HasField(name) else None
                       for m, v in zip(messages, got, strict=True)]
            columns[name] = _column(got, kind, self.time_unit)
        return pd.DataFrame(columns)

    def decode_batch(self, payloads: Sequence[Payload]) -> Decoded:
        messages: list[Any] = []
        owners: list[int] = []
        failed: list[tuple[int, str]] = []
        for i, payload in enumerate(payloads):
            try:
                messages.append(self._parse(payload))
            except Exception as exc:
                failed.append((i, failure(self.name, exc)))
                continue
            owners.append(i)
        return Columns(self._frame(messages)), owners, failed

    def encode(self, batch: pd.DataFrame) -> list[bytes]:
        cls = self.message
        where = f"protobuf format of {cls.DESCRIPTOR.full_name}"
        columns: list[tuple[str, Kind, list[Any]]] = []
        for name, kind, presence in self._columns():
            if name not in batch.columns:
                continue
            values = _time_ints(batch[name], "ns" if kind == "time" else self.time_unit) \
                if kind in ("time", "epoch") else _plain(batch[name])
            if not presence and None in values:
                msg = (f"{where}: column {name!r} has a missing value, which field {name!r} "
                       "cannot hold (no presence: declare it `optional` in the .proto)")
                raise ValueError(msg)
            columns.append((name, kind, values))
        out = []
        for i in range(len(batch)):
            message = cls()
            for name, kind, values in columns:
                value = values[i]
                if value is None:
                    continue
                if kind == "time":
                    stamp = message.__getattribute__(name)
                    stamp.seconds, stamp.nanos = divmod(value, 10**9)
                else:
                    setattr(message, name, value)
            out.append(message.SerializeToString())
        return out


def _pb_kind(field: Any, dtype: Any, where: str) -> Kind:
    """How a protobuf field is read into a column of ``dtype``."""
    timed = pd.api.types.is_datetime64_any_dtype(dtype)
    if field.message_type is not None:
        if field.message_type.full_name == _TIMESTAMP:
            return "time"
        msg = (f"{where}: field {field.name!r} is a {field.message_type.full_name} message; "
               f"a column takes scalars or a google.protobuf.Timestamp")
        raise ConfigError(msg)
    cpp = field.cpp_type
    if cpp in (field.CPPTYPE_INT32, field.CPPTYPE_INT64, field.CPPTYPE_UINT32,
               field.CPPTYPE_UINT64):
        return "epoch" if timed else "int"
    if timed:
        msg = (f"{where}: column {field.name!r} is a time ({dtype}); its field must be a "
               "google.protobuf.Timestamp or an integer (epoch time_unit)")
        raise ConfigError(msg)
    if cpp in (field.CPPTYPE_DOUBLE, field.CPPTYPE_FLOAT):
        return "float"
    if cpp == field.CPPTYPE_BOOL:
        return "bool"
    if cpp == field.CPPTYPE_STRING and field.type == field.TYPE_STRING:
        return "str"
    msg = f"{where}: field {field.name!r} (bytes or an enum) cannot be a column"
    raise ConfigError(msg)


# -- Avro ---------------------------------------------------------------------------------------
_AVRO_MAGIC = b"Obj\x01"
_AVRO_TIMES = {"timestamp-millis": "ms", "timestamp-micros": "us", "timestamp-nanos": "ns",
               "local-timestamp-millis": "ms", "local-timestamp-micros": "us",
               "local-timestamp-nanos": "ns"}


def _avro_type(dtype: Any) -> Any:
    """The Avro type of a column of ``dtype`` (every column nullable but numpy ints/bools)."""
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return ["null", {"type": "long", "logicalType": "timestamp-nanos"}]
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean" if isinstance(dtype, np.dtype) else ["null", "boolean"]
    if pd.api.types.is_integer_dtype(dtype):
        return "long" if isinstance(dtype, np.dtype) else ["null", "long"]
    if pd.api.types.is_float_dtype(dtype):  # NaN, or null for a nullable Float64's <NA>
        return "double" if isinstance(dtype, np.dtype) else ["null", "double"]
    return ["null", "string"]


def schema_of(example: pd.DataFrame, name: str = "Row") -> dict[str, Any]:
    """An Avro record schema holding the columns of ``example``.

    Times are ``timestamp-nanos`` (UTC, exact), strings and categories ``string``; every
    column but numpy ints, booleans and floats (NaN) may be null (nullable ``Int64``,
    ``boolean`` and ``Float64`` columns too).

    Examples
    --------
    >>> import pandas as pd
    >>> schema_of(pd.DataFrame({"n": pd.Series([], dtype="int64")}))["fields"]
    [{'name': 'n', 'type': 'long'}]
    """
    return {"type": "record", "name": name,
            "fields": [{"name": str(c), "type": _avro_type(t)} for c, t in example.dtypes.items()]}


def _avro_field_kind(ftype: Any) -> tuple[Kind, str | None]:
    """The kind of an Avro field type, and the time unit of a timestamp logical type."""
    if isinstance(ftype, list):  # a union: its non-null branch
        branches = [b for b in ftype if b != "null"]
        ftype = branches[0] if len(branches) == 1 else "other"
    if isinstance(ftype, dict):
        unit = _AVRO_TIMES.get(str(ftype.get("logicalType")))
        if unit is not None:
            return "time", unit
        ftype = ftype.get("type")
    kinds: dict[Any, Kind] = {"long": "int", "int": "int", "double": "float", "float": "float",
                              "boolean": "bool", "string": "str"}
    return kinds.get(ftype, "other"), None


#: logical types read as the primitive under them: the timestamps (made times by the
#: column's unit), ``date`` (days since the epoch, an int), ``time-millis`` /
#: ``time-micros`` (since midnight, an int) and ``uuid`` (its text). fastavro would make
#: Python objects of them (``datetime.date``, ``datetime.time``, ``uuid.UUID``), one per
#: value, that no column dtype holds.
_AVRO_PLAIN = {*_AVRO_TIMES, "date", "time-millis", "time-micros", "uuid"}


def _strip_logical(schema: Any) -> Any:
    """``schema`` without the logical types of ``_AVRO_PLAIN``: read as their primitives."""
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    if isinstance(schema, dict):
        if schema.get("logicalType") in _AVRO_PLAIN and isinstance(schema.get("type"), str):
            return schema["type"]
        return {k: _strip_logical(v) for k, v in schema.items()}
    return schema


class AvroFormat(Format):
    """Avro through fastavro: schemaless records of ``schema``, or object containers.

    With ``schema``, each message is one record written without a header (Avro's "single
    object" body, as Kafka-style producers send it), one message per row. Without, each
    message is an Avro object container (the file format: its schema embedded, any number
    of records), one per batch; the encoder's schema comes from the frame's example
    (:func:`schema_of`). Timestamp logical types (millis, micros, nanos) become times
    exactly; a plain ``long`` for a time column is epoch ``time_unit``.
    """

    name = "avro"

    def __init__(self, schema: dict[str, Any] | str | None = None, *,
                 time_unit: TimeUnit = "ns") -> None:
        self._load()
        _check_unit(time_unit, "avro format")
        self.time_unit: TimeUnit = time_unit
        if isinstance(schema, str):
            try:
                schema = dict(json.loads(schema))
            except (ValueError, TypeError) as exc:
                msg = f"avro format: `schema` is not a JSON object: {exc}"
                raise ConfigError(msg) from exc
        self.schema = schema
        self.per_row = schema is not None
        self.content_type = "application/avro" if schema is None else "avro/binary"
        self._parsed: Any = None
        self._raw: Any = None
        self._fields: dict[str, tuple[Kind, str | None]] = {}
        self.columns: list[str] = []
        if schema is not None:
            self._parse_schema(schema)

    _libraries = ("_fastavro",)

    def _load(self) -> None:
        self._fastavro = _require("fastavro", "fastavro")

    def __repr__(self) -> str:
        what = self.schema.get("name", "record") if isinstance(self.schema, dict) else None
        return f"<avro format {what}>" if what else "<avro format (object containers)>"

    def _parse_schema(self, schema: Any) -> None:
        try:
            self._parsed = self._fastavro.parse_schema(schema)
            self._raw = self._fastavro.parse_schema(_strip_logical(schema))
        except Exception as exc:
            msg = f"avro format: not an Avro schema: {type(exc).__name__}: {exc}"
            raise ConfigError(msg) from exc
        if not isinstance(schema, dict) or schema.get("type") != "record":
            msg = f"avro format: the schema must be a record; got {schema!r:.80}"
            raise ConfigError(msg)
        self._fields = {f["name"]: _avro_field_kind(f["type"]) for f in schema["fields"]}

    def bind(self, example: pd.DataFrame) -> AvroFormat:
        bound = AvroFormat(self.schema, time_unit=self.time_unit)
        bound.columns = [str(c) for c in example.columns]
        bound._time_columns = frozenset(str(c) for c, t in example.dtypes.items()
                                        if pd.api.types.is_datetime64_any_dtype(t))
        if self.schema is None:  # the encoder writes the example's own schema
            bound._container_schema = bound._fastavro.parse_schema(schema_of(example))
            return bound
        missing = [c for c in bound.columns if c not in bound._fields]
        if missing:
            msg = (f"avro format: the schema {self.schema.get('name')!r} has no field "
                   f"{', '.join(map(repr, missing))} for the example's columns; its fields: "
                   f"{', '.join(bound._fields)}")
            raise ConfigError(msg)
        return bound

    _container_schema: Any = None

    def _frame(self, recs: list[dict[str, Any]],
               fields: dict[str, tuple[Kind, str | None]]) -> pd.DataFrame:
        columns: dict[str, Any] = {}
        for name in self.columns or list(fields):
            kind, unit = fields[name]
            values = [r[name] for r in recs]
            if kind == "time":
                columns[name] = _column(values, "epoch", unit)  # type: ignore[arg-type]
            elif kind == "int" and name in self._time_columns:  # a plain long: time_unit
                columns[name] = _column(values, "epoch", self.time_unit)
            else:
                columns[name] = _column(values, kind, self.time_unit)
        return pd.DataFrame(columns)

    _time_columns: frozenset[str] = frozenset()

    def _read_one(self, data: bytes) -> list[dict[str, Any]]:
        stream = io.BytesIO(data)
        record = self._fastavro.schemaless_reader(stream, self._raw)
        if stream.tell() != len(data):
            msg = (f"not one record of Avro schema {self.schema.get('name')!r} "  # type: ignore[union-attr]
                   f"({_head(data)}): {len(data) - stream.tell()} bytes left after the "
                   "record (another schema?)")
            raise ValueError(msg)
        return [record]

    def _container(self, data: bytes) -> tuple[list[dict[str, Any]],
                                               dict[str, tuple[Kind, str | None]]]:
        if data[:4] != _AVRO_MAGIC:
            msg = f"not an Avro object container ({_head(data)}): no 'Obj\\x01' header"
            raise ValueError(msg)
        reader = self._fastavro.reader(io.BytesIO(data))
        writer = reader.writer_schema
        fields = {f["name"]: _avro_field_kind(f["type"]) for f in writer.get("fields", [])}
        missing = [c for c in self.columns if c not in fields]
        if missing:
            msg = (f"the Avro schema {writer.get('name')!r} of this container has no field "
                   f"{', '.join(map(repr, missing))} of the example (it has "
                   f"{', '.join(map(repr, fields))})")
            raise ValueError(msg)
        if any(unit in ("ms", "us") for kind, unit in fields.values() if kind == "time"):
            # fastavro would make datetime objects of these: read their longs instead
            reader = self._fastavro.reader(io.BytesIO(data), reader_schema=_strip_logical(writer))
        return list(reader), fields

    def _records(self, payload: Payload) -> tuple[list[dict[str, Any]],
                                                  dict[str, tuple[Kind, str | None]]]:
        """The records of one payload and the kinds of their fields."""
        data = _as_bytes(payload)
        try:
            if self.schema is None:
                return self._container(data)
            return self._read_one(data), self._fields
        except ValueError:
            raise
        except Exception as exc:
            what = "an Avro object container" if self.schema is None else \
                f"a record of Avro schema {self.schema.get('name')!r}"
            msg = f"not {what} ({_head(data)}): {_why(exc)}"
            raise ValueError(msg) from exc

    def _decode_one(self, payload: Payload) -> pd.DataFrame:
        return self._frame(*self._records(payload))

    def decode_batch(self, payloads: Sequence[Payload]) -> Decoded:
        if self.schema is None or not payloads:
            return super().decode_batch(payloads)  # containers: a frame per container
        recs: list[dict[str, Any]] = []
        if all(type(p) is bytes for p in payloads):
            # all records read from one buffer, each checked to end where its payload ends
            joined = io.BytesIO(b"".join(payloads))  # type: ignore[arg-type]
            read, raw = self._fastavro.schemaless_reader, self._raw
            end = 0
            with contextlib.suppress(Exception):  # then one by one: which payload, and why
                for payload in payloads:
                    recs.append(read(joined, raw))
                    end += len(payload)
                    if joined.tell() != end:
                        break
            if len(recs) == len(payloads) and joined.tell() == end:
                return self._columns(recs, list(range(len(recs))), [])
            recs = []
        owners: list[int] = []
        failed: list[tuple[int, str]] = []
        for i, payload in enumerate(payloads):
            try:
                (record,), _ = self._records(payload)
            except Exception as exc:  # this payload's problem: its dead letter says which
                failed.append((i, failure(self.name, exc)))
                continue
            recs.append(record)
            owners.append(i)
        return self._columns(recs, owners, failed)

    def _columns(self, recs: list[dict[str, Any]], owners: list[int],
                 failed: list[tuple[int, str]],
                 ) -> tuple[Columns, list[int], list[tuple[int, str]]]:
        """The records as columns, their owners and the failed payloads.

        Values no column can hold (a ``decimal``, an ``enum`` symbol where a number is
        expected) make every record of the batch a dead letter with the reason, instead of
        failing the source.
        """
        try:
            return Columns(self._frame(recs, self._fields)), owners, failed
        except Exception as exc:
            reason = failure(self.name, exc)
            dead = sorted([*failed, *((i, reason) for i in owners)])
            return Columns(self._frame([], self._fields)), [], dead

    def encode(self, batch: pd.DataFrame) -> list[bytes]:
        fa = self._fastavro
        if self.schema is None:
            schema = self._container_schema
            if schema is None:
                msg = "avro format used before bind(example)"
                raise RuntimeError(msg)
            # the container's header holds the schema with its logical types; the times are
            # given as the longs they are written as
            fields = {f["name"]: _avro_field_kind(f["type"]) for f in schema["fields"]}
            raw = schema
        else:
            fields, raw = self._fields, self._raw
        names = [str(c) for c in batch.columns if str(c) in fields]
        nullable = {f["name"] for f in raw["fields"]
                    if isinstance(f["type"], list) and "null" in f["type"]}
        columns = []
        for name in names:
            _kind, unit = fields[name]
            values = batch[name]
            if pd.api.types.is_datetime64_any_dtype(values.dtype):
                columns.append(_time_ints(values, unit or self.time_unit))  # type: ignore[arg-type]
            elif _kind == "float" and name not in nullable:  # <NA> as NaN: no null there
                columns.append(values.to_numpy(dtype=np.float64, na_value=np.nan).tolist())
            else:
                columns.append(_plain(values))
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        if self.schema is None:
            out = io.BytesIO()
            fa.writer(out, raw, rows)
            return [out.getvalue()]
        messages = []
        for row in rows:
            out = io.BytesIO()
            fa.schemaless_writer(out, raw, row)
            messages.append(out.getvalue())
        return messages

